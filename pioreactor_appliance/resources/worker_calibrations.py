"""``/api/workers/<unit>/calibrations...``, estimators, protocols and calibration sessions: the workers' own, through the leader.

Lists and writes are fanned out to the workers (``$broadcast``: every registered
worker, inactive ones included) and answered with a task whose result maps each
worker to its envelope, so one worker that is off never fails the request. The
five list reads reuse a worker's successful answer for a few seconds (see
``leader_cache``); every write forgets what it changes, before it is sent and again
once the workers answered. A calibration is checked here before it is sent, so a
bad file is a 400 of this request rather than a failed entry per worker.

Sessions are a conversation with one worker: they are relayed synchronously and
the worker's answer, or its 4xx error, is passed through; a worker that does not
answer is a 424 naming it (docs/api-deviations.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..calibration_files import CALIBRATIONS as CALIBRATION_FILES
from ..calibrations import CalibrationError
from ..errors import ApiError
from ..fanout import FanOut
from ..store.database import Database
from ..tasks import Accepted, TaskRegistry
from .calibration_sessions import SessionView, payload_of
from .calibrations import CreateCalibration, checked
from .leader_cache import (
    ACTIVE_CALIBRATIONS,
    ACTIVE_ESTIMATORS,
    CALIBRATION_PROTOCOLS,
    CALIBRATIONS,
    ESTIMATORS,
    LeaderCache,
)
from .relayed import unit_error
from .routing import Reply, route
from .targets import one_worker, worker_targets
from .task_results import run_as_task

CALIBRATION_KINDS = (CALIBRATIONS, ACTIVE_CALIBRATIONS)
ESTIMATOR_KINDS = (ESTIMATORS, ACTIVE_ESTIMATORS)
SESSION_CREATE_TIMEOUT = 30.0  # the reference's
SESSION_INPUTS_TIMEOUT = 300.0  # the reference's: a step may wait on the hardware


def _segment(field: str, value: str) -> str:
    """A checked plain name, quoted for the unit's path (names may hold single spaces)."""
    return quote(checked(field, value), safe="")


class WorkerCalibrationsApi:
    app = Klein()

    def __init__(self, db: Database, tasks: TaskRegistry, fanout: FanOut, cache: LeaderCache) -> None:
        self._db = db
        self._tasks = tasks
        self._fanout = fanout
        self._cache = cache

    async def _targets(self, unit: str) -> list[str]:
        return await self._db.read(worker_targets, unit)

    async def _cached(self, unit: str, kind: str, path: str) -> Reply:
        units = await self._targets(unit)
        return run_as_task(
            self._tasks, lambda: self._cache.read(kind, units, lambda missing: self._fanout.request("GET", missing, path))
        )

    async def _fan_out(self, unit: str, path: str) -> Reply:
        units = await self._targets(unit)
        return run_as_task(self._tasks, lambda: self._fanout.request("GET", units, path))

    def _write(self, method: str, units: list[str], path: str, kinds: Sequence[str], json: Any = None) -> Reply:
        """Forget ``kinds`` of ``units``, send the write, and forget them again once the units answered."""
        self._cache.invalidate(units, kinds)

        async def work() -> dict[str, dict[str, Any]]:
            try:
                return await self._fanout.request(method, units, path, json=json)
            finally:
                self._cache.invalidate(units, kinds)

        return run_as_task(self._tasks, work)

    # --- cached lists ------------------------------------------------------------

    @route(app, "/api/workers/<unit>/calibration_protocols", ["GET"], returns=Accepted, status=202)
    async def protocols(self, request: IRequest, unit: str) -> Reply:
        """Each worker's guided calibration protocols (reused for 10 s)."""
        return await self._cached(unit, CALIBRATION_PROTOCOLS, "/unit_api/calibration_protocols")

    @route(app, "/api/workers/<unit>/calibrations", ["GET"], returns=Accepted, status=202)
    async def calibrations(self, request: IRequest, unit: str) -> Reply:
        """Each worker's calibrations by device, each with is_active and pioreactor_unit (reused for 10 s)."""
        return await self._cached(unit, CALIBRATIONS, "/unit_api/calibrations")

    @route(app, "/api/workers/<unit>/active_calibrations", ["GET"], returns=Accepted, status=202)
    async def active_calibrations(self, request: IRequest, unit: str) -> Reply:
        """The calibration each device of each worker uses (reused for 10 s)."""
        return await self._cached(unit, ACTIVE_CALIBRATIONS, "/unit_api/active_calibrations")

    @route(app, "/api/workers/<unit>/estimators", ["GET"], returns=Accepted, status=202)
    async def estimators(self, request: IRequest, unit: str) -> Reply:
        """Each worker's estimators by device (reused for 10 s)."""
        return await self._cached(unit, ESTIMATORS, "/unit_api/estimators")

    @route(app, "/api/workers/<unit>/active_estimators", ["GET"], returns=Accepted, status=202)
    async def active_estimators(self, request: IRequest, unit: str) -> Reply:
        """The estimator each device of each worker uses (reused for 10 s)."""
        return await self._cached(unit, ACTIVE_ESTIMATORS, "/unit_api/active_estimators")

    # --- uncached reads ----------------------------------------------------------

    @route(app, "/api/workers/<unit>/calibrations/<device>", ["GET"], returns=Accepted, status=202)
    async def device_calibrations(self, request: IRequest, unit: str, device: str) -> Reply:
        """Each worker's calibrations of one device."""
        return await self._fan_out(unit, f"/unit_api/calibrations/{_segment('device', device)}")

    @route(app, "/api/workers/<unit>/calibrations/<device>/<calibration_name>", ["GET"], returns=Accepted, status=202)
    async def calibration(self, request: IRequest, unit: str, device: str, calibration_name: str) -> Reply:
        """One calibration of each worker, with whether its device uses it."""
        path = f"/unit_api/calibrations/{_segment('device', device)}/{_segment('calibration_name', calibration_name)}"
        return await self._fan_out(unit, path)

    @route(app, "/api/workers/<unit>/estimators/<device>", ["GET"], returns=Accepted, status=202)
    async def device_estimators(self, request: IRequest, unit: str, device: str) -> Reply:
        """Each worker's estimators of one device."""
        return await self._fan_out(unit, f"/unit_api/estimators/{_segment('device', device)}")

    @route(app, "/api/workers/<unit>/estimators/<device>/<estimator_name>", ["GET"], returns=Accepted, status=202)
    async def estimator(self, request: IRequest, unit: str, device: str, estimator_name: str) -> Reply:
        """One estimator of each worker, with whether its device uses it."""
        path = f"/unit_api/estimators/{_segment('device', device)}/{_segment('estimator_name', estimator_name)}"
        return await self._fan_out(unit, path)

    # --- calibration writes ------------------------------------------------------

    @route(
        app,
        "/api/workers/<unit>/calibrations/<device>",
        ["POST"],
        body=CreateCalibration,
        returns=Accepted,
        status=202,
        dangerous=True,
    )
    async def create(self, request: IRequest, body: CreateCalibration, unit: str, device: str) -> Reply:
        """Store a calibration on each worker (checked here first); optionally make it the device's active one."""
        segment = _segment("device", device)
        units = await self._targets(unit)
        try:
            await deferToThread(CALIBRATION_FILES.parse, body.calibration_data, device)
        except CalibrationError as e:
            raise ApiError(
                400,
                f"YAML data is not correct, or does not match a known calibration type: {e}",
                cause=str(e),
                remediation="Fix the calibration file and send it again; GET /api/workers/<unit>/calibrations shows working ones.",
            ) from None
        json = {"calibration_data": body.calibration_data, "set_as_active": body.set_as_active}
        return self._write("POST", units, f"/unit_api/calibrations/{segment}", CALIBRATION_KINDS, json)

    @route(
        app,
        "/api/workers/<unit>/active_calibrations/<device>/<calibration_name>",
        ["PATCH"],
        returns=Accepted,
        status=202,
    )
    async def activate(self, request: IRequest, unit: str, device: str, calibration_name: str) -> Reply:
        """Make each worker's device use this calibration from its jobs' next start."""
        path = f"/unit_api/active_calibrations/{_segment('device', device)}/{_segment('calibration_name', calibration_name)}"
        return self._write("PATCH", await self._targets(unit), path, CALIBRATION_KINDS)

    @route(app, "/api/workers/<unit>/active_calibrations/<device>", ["DELETE"], returns=Accepted, status=202)
    async def deactivate(self, request: IRequest, unit: str, device: str) -> Reply:
        """Make each worker's device use no calibration."""
        path = f"/unit_api/active_calibrations/{_segment('device', device)}"
        return self._write("DELETE", await self._targets(unit), path, CALIBRATION_KINDS)

    @route(
        app,
        "/api/workers/<unit>/calibrations/<device>/<calibration_name>",
        ["DELETE"],
        returns=Accepted,
        status=202,
        dangerous=True,
    )
    async def delete(self, request: IRequest, unit: str, device: str, calibration_name: str) -> Reply:
        """Delete a calibration on each worker; a device that used it then uses none."""
        path = f"/unit_api/calibrations/{_segment('device', device)}/{_segment('calibration_name', calibration_name)}"
        return self._write("DELETE", await self._targets(unit), path, CALIBRATION_KINDS)

    # --- estimator writes --------------------------------------------------------

    @route(
        app,
        "/api/workers/<unit>/active_estimators/<device>/<estimator_name>",
        ["PATCH"],
        returns=Accepted,
        status=202,
    )
    async def activate_estimator(self, request: IRequest, unit: str, device: str, estimator_name: str) -> Reply:
        """Make each worker's device use this estimator."""
        path = f"/unit_api/active_estimators/{_segment('device', device)}/{_segment('estimator_name', estimator_name)}"
        return self._write("PATCH", await self._targets(unit), path, ESTIMATOR_KINDS)

    @route(app, "/api/workers/<unit>/active_estimators/<device>", ["DELETE"], returns=Accepted, status=202)
    async def deactivate_estimator(self, request: IRequest, unit: str, device: str) -> Reply:
        """Make each worker's device use no estimator."""
        path = f"/unit_api/active_estimators/{_segment('device', device)}"
        return self._write("DELETE", await self._targets(unit), path, ESTIMATOR_KINDS)

    @route(
        app,
        "/api/workers/<unit>/estimators/<device>/<estimator_name>",
        ["DELETE"],
        returns=Accepted,
        status=202,
        dangerous=True,
    )
    async def delete_estimator(self, request: IRequest, unit: str, device: str, estimator_name: str) -> Reply:
        """Delete an estimator on each worker; a device that used it then uses none."""
        path = f"/unit_api/estimators/{_segment('device', device)}/{_segment('estimator_name', estimator_name)}"
        return self._write("DELETE", await self._targets(unit), path, ESTIMATOR_KINDS)

    # --- sessions: one worker, synchronously -------------------------------------

    async def _relay(self, unit: str, method: str, path: str, json: Any = None, timeout: float | None = None) -> Any:
        """The worker's answer; its 4xx relayed, anything else that is not an answer 424."""
        worker = await self._db.read(one_worker, unit)
        envelope = (await self._fanout.request(method, [worker], path, json=json, timeout=timeout))[worker]
        if not envelope["ok"]:
            raise unit_error(envelope)
        return envelope["value"]

    @route(app, "/api/workers/<unit>/calibrations/sessions", ["POST"], returns=SessionView, status=201)
    async def create_session(self, request: IRequest, unit: str) -> Reply:
        """Start a calibration session on one worker: body {"target_device", "protocol_name"}; its first step."""
        body = payload_of(request)
        value = await self._relay(unit, "POST", "/unit_api/calibrations/sessions", body, SESSION_CREATE_TIMEOUT)
        return Reply(value, code=201)

    @route(app, "/api/workers/<unit>/calibrations/sessions/<session_id>", ["GET"], returns=SessionView)
    async def session(self, request: IRequest, unit: str, session_id: str) -> Any:
        """A session on one worker and its current step."""
        request.setHeader(b"cache-control", b"no-store")
        return await self._relay(unit, "GET", f"/unit_api/calibrations/sessions/{_segment('session_id', session_id)}")

    @route(app, "/api/workers/<unit>/calibrations/sessions/<session_id>/inputs", ["POST"], returns=SessionView)
    async def session_inputs(self, request: IRequest, unit: str, session_id: str) -> Any:
        """Answer a session's current step on one worker: body {"inputs": {field: value}}."""
        path = f"/unit_api/calibrations/sessions/{_segment('session_id', session_id)}/inputs"
        body = payload_of(request, empty={})
        return await self._relay(unit, "POST", path, body, SESSION_INPUTS_TIMEOUT)

    @route(app, "/api/workers/<unit>/calibrations/sessions/<session_id>/abort", ["POST"], returns=SessionView)
    async def abort_session(self, request: IRequest, unit: str, session_id: str) -> Any:
        """End a session on one worker as aborted."""
        path = f"/unit_api/calibrations/sessions/{_segment('session_id', session_id)}/abort"
        return await self._relay(unit, "POST", path)
