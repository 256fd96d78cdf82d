"""``/api/units``, ``/api/workers...`` and experiment assignments: the cluster's inventory.

A worker is assigned to at most one experiment. Each assignment is also a
retained MQTT message on ``pioreactor/<unit>/$experiment/assignment`` so a
unit that reconnects learns its experiment; unassigning clears it with an
empty retained payload.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from typing import Any, TypedDict

from attrs import define, field
from klein import Klein
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..errors import ApiError, not_found
from ..fanout import UnitAddresses
from ..mdns import Discovery, MdnsUnavailable
from ..store import workers as store
from ..store.database import Database
from ..store.experiments import require_experiment
from ..tasks import Accepted, TaskRegistry
from ..timestamps import iso_utc
from .background import FanOutClient, Publisher, fan_out_logged, publish_logged
from .caching import cache_for
from .names import BROADCAST, UNIT_NAME_SCHEMA, unit_name_problem, valid_unit_name
from .routing import Reply, route
from .shapes import Success


def assignment_topic(unit: str) -> str:
    return f"pioreactor/{unit}/$experiment/assignment"


def _is_0_or_1(instance: Any, attribute: Any, value: int) -> None:
    if value not in (0, 1):
        raise ValueError(f"{attribute.name}: must be 0 or 1, not {value}")


@define
class NewWorker:
    pioreactor_unit: str = field(validator=valid_unit_name, metadata=UNIT_NAME_SCHEMA)
    model_name: str | None = None
    model_version: str | None = None


@define
class WorkerActivity:
    is_active: int = field(validator=_is_0_or_1, metadata={"json_schema": {"enum": [0, 1]}})


@define
class WorkerRef:
    pioreactor_unit: str


class Unit(TypedDict):
    pioreactor_unit: str


class ListedWorker(store.Worker):
    """A worker with the IPv4 address ``[cluster.addresses]`` gives it, if any."""

    ipv4_address: str | None


def _unknown_worker(unit: str) -> ApiError:
    if unit == BROADCAST:
        return ApiError(400, "$broadcast is not accepted here.", cause="This route acts on one worker.", remediation="Name one worker from GET /api/workers.")
    return ApiError(
        400,
        f"Unknown Pioreactor worker: {unit}",
        cause=f"{unit!r} is not a registered worker.",
        remediation="Use a name from GET /api/workers, or add the worker with PUT /api/workers.",
    )


def _worker_not_found(unit: str) -> ApiError:
    return not_found(f"Worker {unit}", "Check the name against GET /api/workers.")


def _require_worker(conn: sqlite3.Connection, unit: str) -> dict[str, Any]:
    worker = store.get_worker(conn, unit)
    if worker is None:
        raise _unknown_worker(unit)
    return worker


def _assign(conn: sqlite3.Connection, experiment: str, unit: str, now: str) -> tuple[dict[str, Any], str | None]:
    require_experiment(conn, experiment)
    _require_worker(conn, unit)
    return store.assign(conn, unit, experiment, now)


def _unassign(conn: sqlite3.Connection, experiment: str, unit: str) -> None:
    _require_worker(conn, unit)
    require_experiment(conn, experiment)
    if not store.unassign(conn, unit, experiment):
        raise ApiError(
            404, f"{unit} is not assigned to {experiment}.", remediation=f"See who is with GET /api/experiments/{experiment}/workers."
        )


def _unassign_experiment(conn: sqlite3.Connection, experiment: str) -> tuple[list[str], list[str]]:
    """The units unassigned, and every worker (whose jobs in the experiment are then stopped)."""
    require_experiment(conn, experiment)
    return store.unassign_experiment(conn, experiment), store.worker_names(conn)


def _unassign_all(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
    return store.unassign_all(conn), store.worker_names(conn)


def _set_active(conn: sqlite3.Connection, unit: str, is_active: int) -> dict[str, Any]:
    _require_worker(conn, unit)
    worker = store.set_active(conn, unit, is_active)
    assert worker is not None
    return worker


def _delete_worker(conn: sqlite3.Connection, unit: str) -> str | None:
    """Delete the worker; the experiment it was assigned to, if any."""
    found = store.worker_assignment(conn, unit)
    if found is None or not store.delete_worker(conn, unit):
        raise _worker_not_found(unit)
    return found["experiment"]


def ipv4_or_none(address: str | None) -> str | None:
    if not address:
        return None
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        return None


class WorkersApi:
    app = Klein()

    def __init__(
        self,
        db: Database,
        clock: IReactorTime,
        tasks: TaskRegistry,
        fanout: FanOutClient,
        mqtt: Publisher,
        leader_hostname: str,
        discovery: Discovery,
        addresses: UnitAddresses,
    ) -> None:
        """``addresses`` is the fan-out's (``[cluster.addresses]``): it gives the ``ipv4_address`` of workers."""
        self._discovery = discovery
        self._db = db
        self._clock = clock
        self._tasks = tasks
        self._fanout = fanout
        self._mqtt = mqtt
        self._leader = leader_hostname
        self._addresses = addresses

    def _now(self) -> str:
        return iso_utc(self._clock.seconds())

    def _clear_assignments(self, units: list[str]) -> Any:
        return gatherResults([publish_logged(self._mqtt, assignment_topic(u), b"", qos=1, retain=True) for u in units])

    # Inventory

    @route(app, "/api/units", ["GET"], returns=list[Unit])
    async def units(self, request: IRequest) -> Any:
        """The leader and every worker."""
        return [{"pioreactor_unit": u} for u in await self._db.read(store.cluster_units, self._leader)]

    @route(app, "/api/workers", ["GET"], returns=list[ListedWorker])
    async def list_workers(self, request: IRequest) -> Any:
        """Every worker, active or not, with its IPv4 address when the config gives one."""
        workers = await self._db.read(store.all_workers)
        return [{**w, "ipv4_address": ipv4_or_none(self._addresses.addresses.get(w["pioreactor_unit"]))} for w in workers]

    @route(app, "/api/workers", ["PUT"], body=NewWorker, returns={201: Success, 200: Success}, status=201)
    async def add_worker(self, request: IRequest, body: NewWorker) -> Reply:
        """Register a worker (201); for a known one, update its model and keep its assignment (200)."""
        created = await self._db.run(store.add_worker, body.pioreactor_unit, body.model_name, body.model_version, self._now())
        return Reply({"status": "success"}, 201 if created else 200)

    @route(app, "/api/workers/discover", ["GET"], returns=list[Unit], expensive=True)
    async def discover(self, request: IRequest) -> Any:
        """Workers that answer an mDNS browse and are not registered yet; 503 when mDNS cannot be sent here."""
        try:
            found = await self._discovery.scan()
        except MdnsUnavailable as e:
            raise ApiError(
                503,
                "Cannot look for workers by mDNS.",
                cause=str(e),
                remediation="Add the worker by name or IPv4 address instead (POST /api/workers/setup), or fix the leader's multicast route.",
            ) from None
        registered = set(await self._db.read(store.worker_names))
        return [{"pioreactor_unit": name} for name in sorted(found - registered) if unit_name_problem(name) is None]

    @route(app, "/api/workers/<unit>", ["GET"], returns=store.Worker)
    async def get_worker(self, request: IRequest, unit: str) -> Any:
        """One worker."""
        worker = await self._db.run(store.get_worker, unit)
        if worker is None:
            raise _worker_not_found(unit)
        return worker

    @route(app, "/api/workers/<unit>", ["DELETE"], returns=Success, status=202)
    async def delete_worker(self, request: IRequest, unit: str) -> Reply:
        """Remove a worker from the inventory and stop all its jobs."""
        experiment = await self._db.run(_delete_worker, unit)
        if experiment is not None:
            publish_logged(self._mqtt, assignment_topic(unit), b"", qos=1, retain=True)
        fan_out_logged(self._fanout, "POST", [unit], "/unit_api/jobs/stop/all")
        if unit != self._leader:
            fan_out_logged(self._fanout, "POST", [unit], "/unit_api/system/remove_file", {"filepath": "$DOT_PIOREACTOR/config.ini"})
        return Reply({"status": "success"}, 202)

    @route(app, "/api/workers/<unit>/is_active", ["PUT"], body=WorkerActivity, returns=store.Worker)
    async def set_active(self, request: IRequest, unit: str, body: WorkerActivity) -> Any:
        """Mark a worker active (1) or inactive (0); going inactive stops all its jobs."""
        worker = await self._db.run(_set_active, unit, body.is_active)
        if body.is_active == 0:
            fan_out_logged(self._fanout, "POST", [unit], "/unit_api/jobs/stop/all")
        return worker

    @route(app, "/api/workers/<unit>/experiment", ["GET"], returns=store.WorkerAssignment)
    async def worker_experiment(self, request: IRequest, unit: str) -> Any:
        """The experiment a worker is assigned to."""
        found = await self._db.run(store.worker_assignment, unit)
        if found is None:
            raise _worker_not_found(unit)
        if found["experiment"] is None:
            raise ApiError(
                404,
                f"Worker {unit} is not assigned to an experiment.",
                remediation=f"Assign it with PUT /api/experiments/<experiment>/workers {{\"pioreactor_unit\": \"{unit}\"}}.",
            )
        cache_for(request, 0)
        return found

    # Assignments

    @route(app, "/api/workers/assignments", ["GET"], returns=list[store.UnitAssignment])
    async def assignments(self, request: IRequest) -> Any:
        """Every worker and its experiment (null when unassigned)."""
        cache_for(request, 2)
        return await self._db.run(store.all_assignments)

    @route(app, "/api/workers/assignments", ["DELETE"], returns=Accepted, status=202, expensive=True)
    async def unassign_all(self, request: IRequest) -> Reply:
        """Unassign every worker now; a task clears their MQTT assignments and stops all jobs on every worker."""
        unassigned, workers = await self._db.run(_unassign_all)

        async def work() -> Any:
            await self._clear_assignments(unassigned)
            return await fan_out_logged(self._fanout, "POST", workers, "/unit_api/jobs/stop/all")

        return Reply(self._tasks.accepted(self._tasks.submit(work)), 202)

    @route(app, "/api/experiments/<experiment>/workers", ["GET"], returns=list[store.ExperimentWorker])
    async def experiment_workers(self, request: IRequest, experiment: str) -> Any:
        """Workers assigned to the experiment, inactive ones included."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            require_experiment(conn, experiment)
            return store.experiment_workers(conn, experiment)

        cache_for(request, 2)
        return await self._db.run(read)

    @route(app, "/api/experiments/<experiment>/workers", ["PUT"], body=WorkerRef, returns=store.Assignment)
    async def assign(self, request: IRequest, experiment: str, body: WorkerRef) -> Any:
        """Assign a worker; if it leaves another experiment, its jobs there are stopped."""
        now = self._now()
        assignment, left = await self._db.run(_assign, experiment, body.pioreactor_unit, now)
        unit = body.pioreactor_unit
        message = json.dumps({**assignment, "updated_at": now})
        publish_logged(self._mqtt, assignment_topic(unit), message, qos=1, retain=True)
        if left is not None:
            fan_out_logged(self._fanout, "POST", [unit], "/unit_api/jobs/stop", {"experiment": left})
        return assignment

    @route(app, "/api/experiments/<experiment>/workers", ["DELETE"], returns=Accepted, status=202, expensive=True)
    async def unassign_experiment(self, request: IRequest, experiment: str) -> Reply:
        """Unassign the experiment's workers now; a task clears their MQTT assignments and stops its jobs."""
        unassigned, workers = await self._db.run(_unassign_experiment, experiment)

        async def work() -> Any:
            await self._clear_assignments(unassigned)
            return await fan_out_logged(self._fanout, "POST", workers, "/unit_api/jobs/stop", {"experiment": experiment})

        return Reply(self._tasks.accepted(self._tasks.submit(work)), 202)

    @route(app, "/api/experiments/<experiment>/workers/<unit>", ["DELETE"], returns=Success)
    async def unassign(self, request: IRequest, experiment: str, unit: str) -> Any:
        """Unassign one worker and stop its jobs in the experiment."""
        await self._db.run(_unassign, experiment, unit)
        publish_logged(self._mqtt, assignment_topic(unit), b"", qos=1, retain=True)
        fan_out_logged(self._fanout, "POST", [unit], "/unit_api/jobs/stop", {"experiment": experiment})
        return {"status": "success"}

    @route(app, "/api/experiments/<experiment>/historical_worker_assignments", ["GET"], returns=list[store.HistoricalAssignment])
    async def history(self, request: IRequest, experiment: str) -> Any:
        """Every worker ever assigned to the experiment, and whether it still is."""
        return await self._db.run(store.historical_assignments, experiment)
