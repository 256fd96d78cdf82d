"""The leader's job routes: ``/api/units/<unit>/jobs/...`` and ``/api/workers/<unit>/jobs/...``.

Running, stopping and reading jobs fan out to the units' ``/unit_api``;
stopping one job, changing settings and blinking are MQTT messages the jobs
listen for. Who ``<unit>`` reaches depends on the route, as the reference's
``$broadcast`` table says (docs/api-deviations.md lists where we differ):

- run: the *active* workers assigned to the experiment (every active worker
  for ``$experiment``); a named unit must be one of them, else 404;
- stop by experiment, running jobs: the leader and every worker;
- job settings, bioreactor values: the workers assigned to the experiment;
- MQTT routes: ``$broadcast`` stays literal in the topic.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from klein import Klein
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..descriptors import (
    AutomationDescriptor,
    Descriptors,
    JobDescriptor,
    check_automation_type,
)
from ..errors import ApiError
from ..fanout import FanOut
from ..jobs.payloads import encode
from ..store.database import Database
from ..store.workers import all_workers, experiment_workers
from ..tasks import Accepted, TaskRegistry
from .background import BrokerAway, Publisher, fan_out_logged, publish_within
from .jobs import BioreactorChange, JobSettingsChange, RunJob
from .names import BROADCAST
from .routing import Reply, route
from .shapes import Success
from .targets import cluster_targets, one_worker
from .task_results import run_as_task

ALL_EXPERIMENTS = "$experiment"
PUBLISH_WAIT_SECONDS = (
    2.0  # the reference waits this long for the broker to take a message
)


class Acknowledged(TypedDict):
    """The message went to the broker; the job acts on it on its own."""

    status: Literal["accepted"]


def _not_for_topics(c: str) -> bool:
    """What the broker refuses in a topic: it drops the whole connection for these, not just the message."""
    n = ord(c)
    return (
        n < 0x20
        or 0x7F <= n <= 0x9F
        or 0xD800 <= n <= 0xDFFF
        or 0xFDD0 <= n <= 0xFDEF
        or (n & 0xFFFE) == 0xFFFE
        or c in "+#/"
    )


def check_topic_names(*names: str) -> None:
    """400 for a name that cannot be one level of an MQTT topic, before anything is published."""
    for name in names:
        if not name or any(_not_for_topics(c) for c in name):
            raise ApiError(
                400,
                "Invalid name for an MQTT topic.",
                cause=f"{name!r} is empty or holds +, #, /, a control character or a character MQTT refuses.",
                remediation="Use plain names for units, experiments, jobs and settings.",
            )


def _run_targets(
    conn: sqlite3.Connection, unit: str, experiment: str
) -> list[dict[str, Any]]:
    """The active workers a run reaches, with their models; 404 when there are none."""
    rows = (
        all_workers(conn)
        if experiment == ALL_EXPERIMENTS
        else experiment_workers(conn, experiment)
    )
    active = [row for row in rows if row["is_active"]]
    where = (
        "any experiment"
        if experiment == ALL_EXPERIMENTS
        else f"experiment {experiment}"
    )
    if unit != BROADCAST:
        active = [row for row in active if row["pioreactor_unit"] == unit]
        if not active:
            raise ApiError(
                404,
                f"Worker {unit} is not active and assigned to {experiment}.",
                cause=f"{unit} is not a registered worker, is inactive, or is not assigned to {where}.",
                remediation=f"Assign it with PUT /api/experiments/{experiment}/workers and make it active.",
            )
    elif not active:
        raise ApiError(
            404,
            f"No active workers in {experiment}.",
            cause=f"No active worker is assigned to {where}.",
            remediation=f"Assign workers with PUT /api/experiments/{experiment}/workers.",
        )
    return active


def _experiment_units(conn: sqlite3.Connection, experiment: str) -> list[str]:
    rows = (
        all_workers(conn)
        if experiment == ALL_EXPERIMENTS
        else experiment_workers(conn, experiment)
    )
    return [row["pioreactor_unit"] for row in rows]


def _settings_targets(
    conn: sqlite3.Connection, unit: str, experiment: str
) -> list[str]:
    units = _experiment_units(conn, experiment)
    if unit == BROADCAST:
        return units
    if unit not in units:
        raise ApiError(
            404,
            f"Worker {unit} is not in {experiment}.",
            cause=f"{unit} is not a worker assigned to {experiment}.",
            remediation=f"See GET /api/experiments/{experiment}/workers.",
        )
    return [unit]


def _bioreactor_targets(
    conn: sqlite3.Connection, unit: str, experiment: str
) -> list[str]:
    if unit == BROADCAST:
        return _experiment_units(conn, experiment)
    return [one_worker(conn, unit)]


class UnitJobsApi:
    app = Klein()

    def __init__(
        self,
        db: Database,
        tasks: TaskRegistry,
        fanout: FanOut,
        mqtt: Publisher,
        clock: IReactorTime,
        descriptors: Descriptors,
        leader_hostname: str,
    ) -> None:
        self._db = db
        self._tasks = tasks
        self._fanout = fanout
        self._mqtt = mqtt
        self._clock = clock
        self._descriptors = descriptors
        self._leader = leader_hostname

    def _task(self, work: Callable[[], Any]) -> Reply:
        return run_as_task(self._tasks, work)

    def _fan_out(
        self, method: str, units: list[str], path: str, json: Any = None
    ) -> Reply:
        return self._task(lambda: self._fanout.request(method, units, path, json=json))

    # --- MQTT --------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes | str) -> Deferred[None]:
        """Publish at QoS 1; fails with ValueError for a bad topic, BrokerAway if the broker takes longer than 2 s."""
        return publish_within(self._mqtt, self._clock, topic, payload, 1, PUBLISH_WAIT_SECONDS)

    # --- run -----------------------------------------------------------------

    @route(
        app,
        ("/api/units/<unit>/jobs/run/job_name/<job>/experiments/<experiment>", "/api/workers/<unit>/jobs/run/job_name/<job>/experiments/<experiment>"),
        ["POST", "PATCH"],
        body=RunJob,
        returns=Accepted,
        status=202,
        expensive=True,
    )
    async def run(
        self, request: IRequest, unit: str, job: str, experiment: str, body: RunJob
    ) -> Reply:
        """Run a job on the active workers of an experiment ($broadcast) or on one; the task maps each unit to its envelope."""
        targets = await self._db.read(_run_targets, unit, experiment)
        path = f"/unit_api/jobs/run/job_name/{job}"

        def request_for(worker: dict[str, Any]) -> dict[str, Any]:
            env = dict(body.env)
            env.update(
                EXPERIMENT=experiment,
                HOSTNAME=worker["pioreactor_unit"],
                ACTIVE="1",
                TESTING=body.env.get("TESTING", "0"),
            )
            if worker.get("model_name") and worker.get("model_version"):
                env.update(
                    MODEL_NAME=worker["model_name"],
                    MODEL_VERSION=worker["model_version"],
                )
            return {
                "options": body.options,
                "args": body.args,
                "env": env,
                "config_overrides": body.config_overrides,
            }

        async def work() -> dict[str, Any]:
            calls = [
                self._fanout.request(
                    "POST", [w["pioreactor_unit"]], path, json=request_for(w)
                )
                for w in targets
            ]
            merged: dict[str, Any] = {}
            for envelopes in await gatherResults(calls):
                merged.update(envelopes)
            return dict(sorted(merged.items()))

        return self._task(work)

    # --- stop ----------------------------------------------------------------

    @route(
        app,
        ("/api/units/<unit>/jobs/stop/experiments/<experiment>", "/api/workers/<unit>/jobs/stop/experiments/<experiment>"),
        ["POST", "PATCH"],
        returns=Success,
        status=202,
        expensive=True,
    )
    async def stop_experiment(
        self, request: IRequest, unit: str, experiment: str
    ) -> Reply:
        """Stop every job of an experiment on the unit (or every unit); units that fail are logged on the leader."""
        units = await self._db.read(cluster_targets, unit, self._leader)
        fan_out_logged(
            self._fanout,
            "POST",
            units,
            "/unit_api/jobs/stop",
            {"experiment": experiment},
        )
        return Reply({"status": "success"}, code=202)

    @route(
        app,
        ("/api/units/<unit>/jobs/stop/job_name/<job>/experiments/<experiment>", "/api/workers/<unit>/jobs/stop/job_name/<job>/experiments/<experiment>"),
        ["POST", "PATCH"],
        returns={202: Acknowledged | Accepted},
        status=202,
    )
    async def stop_job(
        self, request: IRequest, unit: str, job: str, experiment: str
    ) -> Reply:
        """Ask a job to stop over MQTT ($state/set disconnected); if the broker is away, through the units' /unit_api as a task."""
        check_topic_names(unit, experiment, job)
        topic = f"pioreactor/{unit}/{experiment}/{job}/$state/set"
        try:
            await self._publish(topic, b"disconnected")
        except ValueError as e:
            raise ApiError(
                400,
                "Invalid job, unit or experiment name.",
                cause=str(e),
                remediation="Names must not contain + # or /.",
            ) from None
        except BrokerAway:
            units = await self._db.read(cluster_targets, unit, self._leader)
            return self._fan_out(
                "POST",
                units,
                "/unit_api/jobs/stop",
                {"job_name": job, "experiment": experiment},
            )
        return Reply({"status": "accepted"}, code=202)

    # --- settings ------------------------------------------------------------

    @route(
        app,
        ("/api/units/<unit>/jobs/update/job_name/<job>/experiments/<experiment>", "/api/workers/<unit>/jobs/update/job_name/<job>/experiments/<experiment>"),
        ["PATCH"],
        body=JobSettingsChange,
        returns=Acknowledged,
        status=202,
    )
    async def update(
        self,
        request: IRequest,
        unit: str,
        job: str,
        experiment: str,
        body: JobSettingsChange,
    ) -> Reply:
        """Change a job's settings: one MQTT /set message per setting (QoS 1). 503 if the broker does not take them."""
        if not body.settings:
            raise ApiError(
                400,
                "Missing settings.",
                cause="The settings object is empty.",
                remediation='Send {"settings": {"<name>": <value>}}.',
            )
        check_topic_names(unit, experiment, job, *body.settings)
        for key, value in body.settings.items():
            try:
                await self._publish(
                    f"pioreactor/{unit}/{experiment}/{job}/{key}/set", encode(value)
                )
            except ValueError as e:
                raise ApiError(
                    400,
                    f"Could not publish setting {key}.",
                    cause=str(e),
                    remediation="Names must not contain + # or /.",
                ) from None
            except BrokerAway as e:
                raise ApiError(
                    503,
                    "The MQTT broker is not reachable.",
                    cause=f"Setting {key} was not published: {e}.",
                    remediation="Retry once the broker is back.",
                ) from None
        return Reply({"status": "accepted"}, code=202)

    @route(
        app,
        "/api/workers/<unit>/jobs/settings/job_name/<job>/experiments/<experiment>",
        ["GET"],
        returns=Accepted,
        status=202,
        expensive=True,
    )
    async def job_settings(
        self, request: IRequest, unit: str, job: str, experiment: str
    ) -> Reply:
        """A job's settings on each worker of the experiment (a unit where it is not running fails with 404)."""
        units = await self._db.read(_settings_targets, unit, experiment)
        return self._fan_out("GET", units, f"/unit_api/jobs/settings/job_name/{job}")

    @route(
        app,
        "/api/workers/<unit>/jobs/settings/job_name/<job>/setting/<setting>/experiments/<experiment>",
        ["GET"],
        returns=Accepted,
        status=202,
        expensive=True,
    )
    async def job_setting(
        self, request: IRequest, unit: str, job: str, setting: str, experiment: str
    ) -> Reply:
        """One setting of a job on each worker of the experiment."""
        units = await self._db.read(_settings_targets, unit, experiment)
        return self._fan_out(
            "GET", units, f"/unit_api/jobs/settings/job_name/{job}/setting/{setting}"
        )

    # --- running jobs ----------------------------------------------------------

    @route(
        app,
        ("/api/units/<unit>/jobs/running", "/api/workers/<unit>/jobs/running"),
        ["GET"],
        returns=Accepted,
        status=202,
        expensive=True,
    )
    async def running(self, request: IRequest, unit: str) -> Reply:
        """The running jobs of the unit (or every unit)."""
        return self._fan_out(
            "GET",
            await self._db.read(cluster_targets, unit, self._leader),
            "/unit_api/jobs/running",
        )

    # --- descriptors -----------------------------------------------------------

    @route(app, "/api/jobs/descriptors", ["GET"], returns=list[JobDescriptor])
    async def job_descriptors(self, request: IRequest) -> Any:
        """How the UI shows each job, from the leader's descriptor files."""
        return await self._descriptors.jobs()

    @route(
        app,
        "/api/automations/descriptors/<automation_type>",
        ["GET"],
        returns=list[AutomationDescriptor],
    )
    async def automation_descriptors(
        self, request: IRequest, automation_type: str
    ) -> Any:
        """The forms for each automation of a type (temperature, dosing or led), from the leader's files."""
        return await self._descriptors.automations(automation_type)

    async def _proxy(self, unit: str, path: str) -> Any:
        await self._db.read(one_worker, unit)
        envelope = (await self._fanout.request("GET", [unit], path))[unit]
        if envelope["ok"]:
            return envelope["value"]
        error = envelope["error"]
        code = envelope["status_code"] if envelope["status_code"] in (400, 404) else 502
        raise ApiError(
            code,
            error["message"],
            cause=error.get("cause") or f"{unit} did not answer: {error['kind']}.",
            remediation=error.get("remediation"),
        )

    @route(
        app,
        "/api/workers/<unit>/jobs/descriptors",
        ["GET"],
        returns=list[JobDescriptor],
    )
    async def worker_job_descriptors(self, request: IRequest, unit: str) -> Any:
        """One worker's job descriptors (502 if it does not answer)."""
        return await self._proxy(unit, "/unit_api/jobs/descriptors")

    @route(
        app,
        "/api/workers/<unit>/automations/descriptors/<automation_type>",
        ["GET"],
        returns=list[AutomationDescriptor],
    )
    async def worker_automation_descriptors(
        self, request: IRequest, unit: str, automation_type: str
    ) -> Any:
        """One worker's automation descriptors of a type (502 if it does not answer)."""
        check_automation_type(automation_type)
        return await self._proxy(
            unit, f"/unit_api/automations/descriptors/{automation_type}"
        )

    # --- bioreactor, blink -------------------------------------------------------

    @route(
        app,
        "/api/workers/<unit>/bioreactor/update/experiments/<experiment>",
        ["PATCH"],
        body=BioreactorChange,
        returns=Accepted,
        status=202,
        expensive=True,
    )
    async def update_bioreactor(
        self, request: IRequest, unit: str, experiment: str, body: BioreactorChange
    ) -> Reply:
        """Edit the bioreactor values on a worker (or every worker of the experiment); the task maps each to its envelope."""
        if not body.values:
            raise ApiError(
                400,
                "Missing bioreactor values.",
                remediation='Send {"values": {"current_volume_ml": 14.0}}.',
            )
        units = await self._db.read(_bioreactor_targets, unit, experiment)
        return self._fan_out(
            "PATCH",
            units,
            f"/unit_api/bioreactor/experiments/{experiment}",
            {"values": body.values},
        )

    @route(app, "/api/workers/<unit>/blink", ["POST"], returns=Acknowledged, status=202)
    async def blink(self, request: IRequest, unit: str) -> Reply:
        """Flash the unit's LED (its monitor answers the MQTT message); the unit is not checked."""
        check_topic_names(unit)
        try:
            await self._publish(
                f"pioreactor/{unit}/$experiment/monitor/flicker_led_response_okay", b"1"
            )
        except ValueError as e:
            raise ApiError(
                400,
                "Invalid unit name.",
                cause=str(e),
                remediation="Use a name from GET /api/workers.",
            ) from None
        except BrokerAway as e:
            raise ApiError(
                503,
                "The MQTT broker is not reachable.",
                cause=str(e),
                remediation="Retry once the broker is back.",
            ) from None
        return Reply({"status": "accepted"}, code=202)
