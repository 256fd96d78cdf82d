"""``/unit_api/health`` and ``/unit_api/versions/app``: is this unit up, and what does it run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from .. import __version__
from ..timestamps import iso_utc
from .routing import route


class Part(TypedDict):
    """One connection or store the unit depends on: ``ok``, and in words why not."""

    ok: bool
    state: str


class Health(TypedDict):
    status: str
    pioreactor_unit: str
    utc_time: str
    parts: NotRequired[dict[str, Part]]


def _connection(thing: Any) -> Part:
    return {"ok": True, "state": "connected"} if thing.connected else {"ok": False, "state": "disconnected"}


def _cache(cache: Any) -> Part:
    error = cache.last_write_error
    return {"ok": True, "state": "ok"} if error is None else {"ok": False, "state": f"last write failed: {error}"}


def _ingest(ingest: Any) -> Part:
    part: Part = ingest.part()
    return part


def _database(db: Any) -> Part:
    if db.open_error is not None:
        return {"ok": False, "state": f"failed to open: {db.open_error}"}
    if db.opened is None or not db.opened.called:
        return {"ok": False, "state": "opening"}
    return {"ok": True, "state": "open"}


class AppVersion(TypedDict):
    version: str


class UnitInfoApi:
    app = Klein()

    def __init__(
        self,
        unit: str,
        clock: IReactorTime,
        *,
        broker: Any = None,
        pigpiod: Any = None,
        local_cache: Any = None,
        database: Any = None,
        ingest: Any = None,
    ) -> None:
        """``broker`` and ``pigpiod`` have ``connected``; ``local_cache`` is a PersistentCache, ``database`` a Database,
        ``ingest`` the leader's IngestService."""
        self._unit = unit
        self._clock = clock
        checks: list[tuple[str, Any, Callable[[Any], Part]]] = [
            ("broker", broker, _connection),
            ("pigpiod", pigpiod, _connection),
            ("local_cache", local_cache, _cache),
            ("database", database, _database),
            ("ingest", ingest, _ingest),
        ]
        self._checks = [(name, thing, check) for name, thing, check in checks if thing is not None]

    def _parts(self) -> dict[str, Part]:
        parts = {}
        for name, thing, check in self._checks:
            try:
                parts[name] = check(thing)
            except Exception as e:  # a broken part is reported, never a 500
                parts[name] = {"ok": False, "state": f"unknown: {e}"}
        return parts

    @route(app, "/unit_api/health", ["GET"], returns=Health, public=True)
    def health(self, request: IRequest) -> Health:
        """The unit answers, with its name and its clock (to spot skew across the cluster).

        ``status`` is "ok" whenever the unit answers, as in the reference; ``parts`` says whether
        its broker connection, pigpiod connection and stores work.
        """
        request.setHeader(b"cache-control", b"no-store")
        health: Health = {"status": "ok", "pioreactor_unit": self._unit, "utc_time": iso_utc(self._clock.seconds())}
        if self._checks:
            health["parts"] = self._parts()
        return health

    @route(app, "/unit_api/versions/app", ["GET"], returns=AppVersion)
    def app_version(self, request: IRequest) -> AppVersion:
        """The appliance version this unit runs."""
        return {"version": __version__}
