"""``/api/.../logs``: reading the cluster's logs, and posting one.

Reads are pages of 100 rows newest first (``skip`` rows in) or, for the
``recent_logs`` views, the last 50 rows of the past day. Posting a log does
not touch the database: it is published over MQTT like any job's log, and
the leader's ingest stores it with the rest.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from attrs import define, field
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..errors import ApiError
from ..store import logs as store
from ..store.database import Database
from ..store.workers import all_workers, experiment_workers
from ..timestamps import iso_utc
from .background import BrokerAway, Publisher, publish_within
from .names import BROADCAST
from .routing import Reply, route
from .unit_jobs import PUBLISH_WAIT_SECONDS, Acknowledged, check_topic_names

DAY = 24 * 3600.0
MAX_SKIP = 10_000_000  # far past any log table; beyond it a page is certainly empty, and OFFSET would scan for nothing


@define
class Page:
    """Which page (``skip`` rows in) and the lowest level shown."""

    skip: int = field(default=0, metadata={"minimum": 0})
    min_level: str = "INFO"


@define
class Recent:
    min_level: str = "INFO"


@define
class NewLog:
    """A log line as the UI posts it; ``source_`` is the topic's source level."""

    message: str
    source: str
    level: str
    timestamp: str
    task: str | None = None
    source_: str = "ui"


def _check_skip(skip: int) -> None:
    if skip > MAX_SKIP:
        raise ApiError(400, f"Bad query parameter skip: {skip} is above {MAX_SKIP}.", remediation=f"Send skip of at most {MAX_SKIP}.")


def _log_units(conn: sqlite3.Connection, unit: str, experiment: str) -> list[str]:
    """Who a posted log goes out for: the unit itself, or for ``$broadcast`` each worker of the experiment."""
    if unit != BROADCAST:
        return [unit]
    rows = all_workers(conn) if experiment == store.SYSTEM else experiment_workers(conn, experiment)
    return sorted(row["pioreactor_unit"] for row in rows)


class LogsApi:
    app = Klein()

    def __init__(self, db: Database, mqtt: Publisher, clock: IReactorTime) -> None:
        self._db = db
        self._mqtt = mqtt
        self._clock = clock

    async def _page(self, read: Any, *args: Any, query: Page) -> Any:
        _check_skip(query.skip)
        return await self._db.read(read, *args, store.levels_from(query.min_level), query.skip)

    @route(app, "/api/logs", ["GET"], query=Page, returns=list[store.LogRow])
    async def all_logs(self, request: IRequest, query: Page) -> Any:
        """Every log, 100 per page, newest first."""
        return await self._page(store.all_logs, query=query)

    @route(app, "/api/experiments/<experiment>/logs", ["GET"], query=Page, returns=list[store.LogRow])
    async def experiment_logs(self, request: IRequest, experiment: str, query: Page) -> Any:
        """The experiment's logs, 100 per page, newest first."""
        return await self._page(store.experiment_logs, experiment, query=query)

    @route(app, "/api/units/<unit>/logs", ["GET"], query=Page, returns=list[store.LogRow])
    async def unit_logs(self, request: IRequest, unit: str, query: Page) -> Any:
        """The unit's logs (and ``$broadcast`` ones) in any experiment, 100 per page."""
        return await self._page(store.unit_logs, unit, query=query)

    @route(app, "/api/units/<unit>/system_logs", ["GET"], query=Page, returns=list[store.LogRow])
    async def system_logs(self, request: IRequest, unit: str, query: Page) -> Any:
        """The unit's logs outside any experiment (``$experiment``), 100 per page."""
        return await self._page(store.system_logs, unit, query=query)

    @route(app, "/api/workers/<unit>/experiments/<experiment>/logs", ["GET"], query=Page, returns=list[store.LogRow])
    async def worker_experiment_logs(self, request: IRequest, unit: str, experiment: str, query: Page) -> Any:
        """The unit's logs in the experiment while it was assigned to it, 100 per page."""
        _check_skip(query.skip)
        now = iso_utc(self._clock.seconds())
        return await self._db.read(
            store.worker_experiment_logs, unit, experiment, store.levels_from(query.min_level), query.skip, now
        )

    @route(app, "/api/experiments/<experiment>/recent_logs", ["GET"], query=Recent, returns=list[store.LogRow])
    async def recent_experiment_logs(self, request: IRequest, experiment: str, query: Recent) -> Any:
        """The experiment's last 50 logs of the past day (or since it began)."""
        day_ago = iso_utc(self._clock.seconds() - DAY)
        return await self._db.read(store.recent_experiment_logs, experiment, store.levels_from(query.min_level), day_ago)

    @route(app, "/api/workers/<unit>/experiments/<experiment>/recent_logs", ["GET"], query=Recent, returns=list[store.LogRow])
    async def recent_worker_logs(self, request: IRequest, unit: str, experiment: str, query: Recent) -> Any:
        """The unit's last 50 logs of the past day in the experiment, with system and ``$broadcast`` ones."""
        day_ago = iso_utc(self._clock.seconds() - DAY)
        return await self._db.read(store.recent_worker_logs, unit, experiment, store.levels_from(query.min_level), day_ago)

    @route(
        app,
        ("/api/units/<unit>/experiments/<experiment>/logs", "/api/workers/<unit>/experiments/<experiment>/logs"),
        ["POST"],
        body=NewLog,
        returns=Acknowledged,
        status=202,
    )
    async def post_log(self, request: IRequest, unit: str, experiment: str, body: NewLog) -> Reply:
        """Publish a log line for the unit (each worker of the experiment for ``$broadcast``); ingest stores it."""
        check_topic_names(unit, experiment, body.source_, body.level)
        payload = json.dumps(
            {
                "message": body.message.strip(),
                "task": body.task or "",
                "source": body.source,
                "level": body.level.upper(),
                "timestamp": body.timestamp,
            }
        )
        units = await self._db.read(_log_units, unit, experiment)
        try:
            for target in units:
                topic = f"pioreactor/{target}/{experiment}/logs/{body.source_}/{body.level.lower()}"
                await publish_within(self._mqtt, self._clock, topic, payload, 2, PUBLISH_WAIT_SECONDS)
        except BrokerAway as e:
            raise ApiError(
                503,
                "The log could not be published.",
                cause=f"The MQTT broker did not take it: {e}.",
                remediation="Check that the broker runs on the leader, then post the log again.",
            ) from None
        return Reply({"status": "accepted"}, 202)

