"""``/unit_api/jobs...`` and its neighbours: run, stop, list and tune this unit's jobs.

The checks a client can act on at once (too soon, unknown job, bad options)
answer synchronously, in the reference's order; starting the job is a task
that succeeds once the job is ``ready`` and fails with its reason otherwise.
Settings are read from the running job objects, shaped as the reference's
settings table holds them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from attrs import define, evolve, field
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ..descriptors import AutomationDescriptor, Descriptors, JobDescriptor
from ..errors import ApiError
from ..fanout import FanOut
from ..hardware.hat import Hat
from ..hardware.probe import check_i2c
from ..jobs.base import STATE, Job, JobFailed
from ..jobs.bioreactor import BadValue, Bioreactor
from ..jobs.capabilities import Capability, capabilities
from ..jobs.manager import (
    LONG_RUNNING_EXPERIMENT,
    AlreadyRunning,
    JobManager,
    JobRecord,
    RunRequest,
    TooSoon,
    UnknownJob,
)
from ..jobs.payloads import BadPayload, decode, encode
from ..jobs.settings import BadOptions
from ..jobs.states import REQUESTABLE
from ..models import find_model
from ..tasks import Accepted, TaskRegistry
from .background import Publisher
from .routing import Reply, route
from .shapes import Success
from .task_results import run_as_task

log = Logger()

# Asks the leader which experiment this unit is assigned to: fires with
# GET /api/workers/<unit>/experiment's answer, or fails saying why.
ExperimentLookup = Callable[[], Deferred[dict[str, Any]]]


def _is_override(instance: Any, attribute: Any, value: list[list[str]]) -> None:
    for entry in value:
        if len(entry) != 3:
            raise ValueError(
                f"config_overrides: each entry is [section, key, value], not {entry!r}"
            )


@define
class RunJob:
    """How to run a job: its options (by name, dashes or underscores), arguments, environment and config overrides."""

    options: dict[str, Any] = field(factory=dict)
    args: list[str] = field(factory=list)
    env: dict[str, str] = field(factory=dict)
    config_overrides: list[list[str]] = field(
        factory=list,
        validator=_is_override,
        metadata={
            "json_schema": {
                "items": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 3,
                    "maxItems": 3,
                }
            }
        },
    )


@define
class StopJobs:
    """Filters, ANDed: at least one must be given."""

    job_name: str | None = None
    experiment: str | None = None
    job_source: str | None = None
    job_id: int | None = None


@define
class JobSettingsChange:
    settings: dict[str, Any]


@define
class BioreactorChange:
    values: dict[str, Any]


@define
class HardwareCheck:
    model_name: str
    model_version: str


class RunResult(TypedDict):
    ok: Literal[True]


class JobHistoryRow(TypedDict):
    """The reference's ``/jobs`` row: seven of the job table's columns."""

    job_id: int
    job_name: str
    experiment: str
    job_source: str
    unit: str
    started_at: str
    ended_at: str | None


class JobSettings(TypedDict):
    settings: dict[str, Any]


class BioreactorValues(TypedDict):
    values: dict[str, float]


def table_value(value: Any) -> Any:
    """A setting as the reference's settings table gives it: structs as JSON text, booleans as 0/1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def job_settings(job: Job) -> dict[str, Any]:
    settings = {name: table_value(value) for name, value in job.values.items()}
    settings[STATE] = job.state.value
    return settings


def _no_settings(job_name: str) -> ApiError:
    return ApiError(
        404,
        "No settings found for job.",
        cause=f"{job_name} is not running on this unit.",
        remediation="Check GET /unit_api/jobs/running, or start the job first.",
    )


def cast_setting(job: Job, name: str, value: Any) -> Any:
    """The value a PATCH asks for, cast as an MQTT ``/set`` would be; 400 naming the setting otherwise."""
    if name == STATE:
        wanted = {s.value: s for s in REQUESTABLE}
        if value not in wanted:
            raise ApiError(
                400,
                f"Invalid value for setting {STATE}.",
                cause=f"{STATE} takes {', '.join(sorted(wanted))}, not {value!r}.",
                remediation="Send one of those states.",
            )
        return wanted[value]
    setting = job.published_settings.get(name)
    if setting is None or not setting.settable:
        settable = sorted(
            n for n, s in job.published_settings.items() if s.settable
        ) + [STATE]
        raise ApiError(
            400,
            f"Setting {name} cannot be changed.",
            cause=f"{job.job_name} has {'a read-only' if setting else 'no'} setting {name!r}; settable: {', '.join(settable)}.",
            remediation="Change only the settings GET /unit_api/capabilities lists as settable.",
        )
    if setting.wire_type == "json":
        return value
    if isinstance(value, (dict, list)):
        raise ApiError(
            400,
            f"Invalid value for setting {name}.",
            cause=f"{name} is a {setting.datatype}, not a JSON {type(value).__name__}.",
        )
    try:
        return decode(encode(value), setting.wire_type)
    except BadPayload as e:
        raise ApiError(
            400,
            f"Invalid value for setting {name}.",
            cause=f"{name} is a {setting.datatype}: {e}.",
        ) from None


def leader_experiment(fanout: FanOut, leader: str, unit: str) -> ExperimentLookup:
    """The lookup through the fan-out client, which signs the request when the cluster has a secret."""

    async def lookup() -> dict[str, Any]:
        path = f"/api/workers/{unit}/experiment"
        envelope = (await fanout.request("GET", [leader], path))[leader]
        if not envelope["ok"]:
            raise ApiError(
                500,
                f"The leader did not say which experiment {unit} is assigned to: {envelope['error']['message']}",
                cause=envelope["error"].get("cause") or envelope["error"]["message"],
                remediation="Assign this unit to an experiment on the leader, or send EXPERIMENT in the run's env.",
            )
        return envelope["value"]

    return lambda: Deferred.fromCoroutine(lookup())


class JobsApi:
    app = Klein()

    def __init__(
        self,
        jobs: JobManager,
        tasks: TaskRegistry,
        mqtt: Publisher,
        bioreactor: Bioreactor,
        clock: IReactorTime,
        descriptors: Descriptors,
        unit: str,
        hardware: Any,
        hat: Hat,
        lookup_experiment: ExperimentLookup,
    ) -> None:
        self._jobs = jobs
        self._tasks = tasks
        self._mqtt = mqtt
        self._bioreactor = bioreactor
        self._clock = clock
        self._descriptors = descriptors
        self.unit = unit
        self._hardware = hardware
        self._hat = hat
        self._lookup_experiment = lookup_experiment

    def _accepted(self, work: Callable[[], Any]) -> Reply:
        return run_as_task(self._tasks, work)

    # --- running -------------------------------------------------------------

    @route(
        app,
        "/unit_api/jobs/run/job_name/<job_name>",
        ["POST", "PATCH"],
        body=RunJob,
        returns=Accepted,
        status=202,
    )
    def run(self, request: IRequest, job_name: str, body: RunJob) -> Reply:
        """Start a job; the task succeeds with {"ok": true} once it is ready, or fails saying why.

        The experiment is env EXPERIMENT (else the leader's assignment of this unit),
        the source env JOB_SOURCE (default user); ACTIVE=0 refuses the run.
        """
        run = RunRequest(
            job_name,
            body.env.get("EXPERIMENT", ""),
            options=body.options,
            args=body.args,
            env=body.env,
            config_overrides=[(s, k, v) for s, k, v in body.config_overrides],
            source=body.env.get("JOB_SOURCE") or "user",
        )
        running: AlreadyRunning | None = None
        try:
            self._jobs.check_debounce(job_name)
            try:
                self._jobs.prepare(run)
            except (
                AlreadyRunning
            ) as e:  # as the reference: the job itself refuses, so the task fails
                running = e
            long_running = bool(
                self._jobs.kind_of(job_name, body.options).is_long_running
            )
            self._check_dose(job_name, body)
            self._jobs.note_run(job_name)
        except TooSoon:
            raise ApiError(
                429,
                "Too many requests, please try again later.",
                cause=f"{job_name} was asked to run less than a second ago.",
                remediation="Wait a second before running it again.",
                headers={b"retry-after": b"1"},
            ) from None
        except UnknownJob:
            known = sorted(self._jobs.registry.jobs) + [
                f"{t}_automation" for t in self._jobs.registry.automations
            ]
            raise ApiError(
                404,
                f"Unknown job: {job_name}",
                cause=f"No job named {job_name!r} is installed on {self.unit}; known jobs: {', '.join(sorted(known))}.",
                remediation="Use a job_name from GET /unit_api/capabilities.",
            ) from None
        except BadOptions as e:
            raise ApiError(
                400,
                "Invalid options for this job.",
                cause=str(e),
                remediation="See the job's options in GET /unit_api/capabilities.",
            ) from None

        async def start() -> RunResult:
            if running is not None:
                raise ApiError(
                    409,
                    str(running),
                    cause=str(running),
                    remediation="Stop it first, or change its settings instead.",
                )
            if body.env.get("ACTIVE") == "0":
                raise ApiError(
                    403,
                    "unit is inactive",
                    cause=f"{self.unit} is marked inactive on the leader.",
                    remediation="Mark it active first.",
                )
            full = run
            if long_running:
                full = evolve(run, experiment=LONG_RUNNING_EXPERIMENT)
            elif not run.experiment:
                named = self._jobs.kind_of(job_name, body.options).experiment_in(body.args)
                full = evolve(run, experiment=named or await self._assigned_experiment(body.env))
            try:
                await self._jobs.start(self._jobs.prepare(full))
            except AlreadyRunning as e:
                raise ApiError(
                    409,
                    str(e),
                    cause=str(e),
                    remediation="Stop it first, or change its settings instead.",
                ) from None
            except JobFailed as e:
                raise ApiError(
                    500,
                    f"{job_name} did not start: {e}",
                    cause=str(e),
                    remediation="Check the unit's log, fix the cause and run it again.",
                ) from None
            return {"ok": True}

        return self._accepted(start)

    def _check_dose(self, job_name: str, body: RunJob) -> None:
        """The reference's dosing safety check: an addition in ml that would fill the vial to its threshold is 400."""
        ml = body.options.get("ml")
        experiment = body.env.get("EXPERIMENT")
        if job_name not in ("add_media", "add_alt_media") or not experiment:
            return
        try:
            ml = float(ml)
        except (TypeError, ValueError):
            return  # no volume to check (duration or continuously); parse_options already refused bad values
        model = None
        name, version = body.env.get("MODEL_NAME"), body.env.get("MODEL_VERSION")
        if name and version:
            model = find_model(name, version)
            if model is None:
                raise ApiError(
                    400,
                    "Unknown Pioreactor model.",
                    cause=f"env MODEL_NAME={name!r} MODEL_VERSION={version!r} is not a known model.",
                    remediation="Use a model from GET /api/models, or leave MODEL_NAME/MODEL_VERSION out to use this unit's.",
                )
        problem = self._bioreactor.dose_problem(experiment, ml, model)
        if problem is not None:
            raise ApiError(
                400,
                "Requested dose would meet or exceed the reactor safety threshold.",
                cause=problem,
                remediation="Dose less, remove waste first, or correct current_volume_ml with PATCH /unit_api/bioreactor/experiments/<experiment>.",
            )

    async def _assigned_experiment(self, env: dict[str, str]) -> str:
        assignment = await self._lookup_experiment()
        experiment = (
            assignment.get("experiment") if isinstance(assignment, dict) else None
        )
        if not isinstance(experiment, str) or not experiment:
            raise ApiError(
                500,
                f"No experiment for {self.unit}.",
                cause="The run gave no EXPERIMENT and the leader names none for this unit.",
                remediation="Assign this unit to an experiment, or send EXPERIMENT in the run's env.",
            )
        if "ACTIVE" not in env and assignment.get("is_active") == 0:
            raise ApiError(
                403,
                "unit is inactive",
                cause=f"The leader marks {self.unit} inactive.",
                remediation="Mark it active first.",
            )
        return experiment

    # --- stopping ------------------------------------------------------------

    @route(
        app,
        "/unit_api/jobs/stop",
        ["POST", "PATCH"],
        body=StopJobs,
        returns=Accepted,
        status=202,
    )
    def stop(self, request: IRequest, body: StopJobs) -> Reply:
        """Stop the running jobs matching every filter given (long-running ones too); the task's result is true."""
        if not (
            body.job_name
            or body.experiment
            or body.job_source
            or body.job_id is not None
        ):
            raise ApiError(
                400,
                "No job filter specified",
                cause="None of job_name, experiment, job_source and job_id was given.",
                remediation="Give at least one filter, or use /unit_api/jobs/stop/all.",
            )
        filters = {
            "job_name": body.job_name,
            "experiment": body.experiment,
            "job_source": body.job_source,
            "job_id": body.job_id,
        }
        return self._accepted(
            lambda: self._jobs.stop(**filters).addCallback(lambda _: True)
        )

    @route(
        app, "/unit_api/jobs/stop/all", ["POST", "PATCH"], returns=Accepted, status=202
    )
    def stop_all(self, request: IRequest) -> Reply:
        """Stop every running job except the long-running ones (the monitor); the task's result is true."""
        return self._accepted(lambda: self._jobs.stop_all().addCallback(lambda _: True))

    # --- reading -------------------------------------------------------------

    @route(app, "/unit_api/jobs", ["GET"], returns=list[JobHistoryRow])
    def history(self, request: IRequest) -> list[dict[str, Any]]:
        """Every job this unit ran since it started, newest first."""
        keys = JobHistoryRow.__annotations__
        return [{k: row.as_json()[k] for k in keys} for row in self._jobs.history()]

    @route(app, "/unit_api/jobs/running", ["GET"], returns=list[JobRecord])
    def running(self, request: IRequest) -> list[dict[str, Any]]:
        """The running jobs, as rows of the reference's job table."""
        return [r.as_json() for r in self._jobs.running_jobs()]

    @route(app, "/unit_api/jobs/running/<job_name>", ["GET"], returns=list[JobRecord])
    def running_named(self, request: IRequest, job_name: str) -> list[dict[str, Any]]:
        """The running job of that name (an empty list if it is not running)."""
        return [
            r.as_json() for r in self._jobs.running_jobs() if r.job_name == job_name
        ]

    @route(
        app,
        "/unit_api/jobs/running/experiments/<experiment>",
        ["GET"],
        returns=list[JobRecord],
    )
    def running_in(self, request: IRequest, experiment: str) -> list[dict[str, Any]]:
        """The jobs running in that experiment."""
        return [
            r.as_json() for r in self._jobs.running_jobs() if r.experiment == experiment
        ]

    @route(app, "/unit_api/long_running_jobs/running", ["GET"], returns=list[JobRecord])
    def long_running(self, request: IRequest) -> list[dict[str, Any]]:
        """The running long-running jobs (the monitor)."""
        return [r.as_json() for r in self._jobs.running_jobs() if r.is_long_running_job]

    # --- settings ------------------------------------------------------------

    def _running_job(self, job_name: str) -> Job:
        job = self._jobs.get(job_name)
        if job is None or job.stopped:
            raise _no_settings(job_name)
        return job

    @route(
        app, "/unit_api/jobs/settings/job_name/<job_name>", ["GET"], returns=JobSettings
    )
    def settings(self, request: IRequest, job_name: str) -> JobSettings:
        """The published settings of a running job, $state included."""
        return {"settings": job_settings(self._running_job(job_name))}

    @route(
        app,
        "/unit_api/jobs/settings/job_name/<job_name>/setting/<setting>",
        ["GET"],
        returns=dict[str, Any],
    )
    def setting(self, request: IRequest, job_name: str, setting: str) -> dict[str, Any]:
        """One published setting of a running job ($state for its state)."""
        settings = job_settings(self._running_job(job_name))
        if setting not in settings:
            raise ApiError(
                404,
                "Setting not found.",
                cause=f"{job_name} publishes no {setting!r} now.",
                remediation="See GET /unit_api/jobs/settings/job_name/<job_name>.",
            )
        return {setting: settings[setting]}

    @route(
        app,
        "/unit_api/jobs/settings/job_name/<job_name>",
        ["PATCH"],
        body=JobSettingsChange,
        returns=JobSettings,
    )
    async def change_settings(
        self, request: IRequest, job_name: str, body: JobSettingsChange
    ) -> JobSettings:
        """Change settable settings of a running job, all checked before any is applied; answers its settings after."""
        job = self._running_job(job_name)
        if not body.settings:
            raise ApiError(
                400,
                "Missing settings.",
                cause="The settings object is empty.",
                remediation='Send {"settings": {"<name>": <value>}}.',
            )
        changes = {
            name: cast_setting(job, name, value)
            for name, value in body.settings.items()
        }
        refusals = []
        for name, value in changes.items():
            if name == STATE:
                continue
            reason = await job.change_setting(name, value)
            if reason is not None:
                refusals.append(f"{name}={value!r}: {reason}")
        if refusals:
            applied = [name for name in changes if name != STATE and not any(r.startswith(f"{name}=") for r in refusals)]
            raise ApiError(
                400,
                f"{job_name} refused {'; '.join(refusals)}",
                cause=f"The job checks these values itself; applied: {', '.join(applied) or 'nothing'}.",
                remediation="Send a value the job accepts; see its descriptor for the ranges.",
            )
        if STATE in changes:
            await job.set_state(changes[STATE])
        return {"settings": job_settings(job)}

    # --- descriptors and capabilities ------------------------------------------

    @route(app, "/unit_api/jobs/descriptors", ["GET"], returns=list[JobDescriptor])
    async def job_descriptors(self, request: IRequest) -> Any:
        """How the UI shows each job: the shipped descriptors, overlaid by this unit's and its plugins'."""
        return await self._descriptors.jobs()

    @route(
        app,
        "/unit_api/automations/descriptors/<automation_type>",
        ["GET"],
        returns=list[AutomationDescriptor],
    )
    async def automation_descriptors(
        self, request: IRequest, automation_type: str
    ) -> Any:
        """The forms for starting each automation of a type (temperature, dosing or led)."""
        return await self._descriptors.automations(automation_type)

    @route(app, "/unit_api/capabilities", ["GET"], returns=list[Capability])
    def capabilities(self, request: IRequest) -> list[Capability]:
        """Every job and automation installed here: its options and published settings."""
        return capabilities(self._jobs.registry)

    # --- bioreactor ----------------------------------------------------------

    @route(
        app,
        "/unit_api/bioreactor/experiments/<experiment>",
        ["GET"],
        returns=BioreactorValues,
    )
    def bioreactor(self, request: IRequest, experiment: str) -> BioreactorValues:
        """The vial's liquid bookkeeping in this experiment."""
        return {"values": self._bioreactor.values(experiment)}

    @route(
        app,
        "/unit_api/bioreactor/experiments/<experiment>",
        ["PATCH"],
        body=BioreactorChange,
        returns=Success,
    )
    def change_bioreactor(
        self, request: IRequest, experiment: str, body: BioreactorChange
    ) -> Success:
        """Edit the bookkeeping: every value is checked before any is stored and published."""
        if not body.values:
            raise ApiError(
                400,
                "Missing bioreactor values.",
                remediation='Send {"values": {"current_volume_ml": 14.0}}.',
            )
        try:
            d = self._bioreactor.update(experiment, body.values, self._mqtt)
        except BadValue as e:
            raise ApiError(
                400,
                "Invalid bioreactor value.",
                cause=str(e),
                remediation="Send numbers within each variable's bounds.",
            ) from None
        d.addErrback(
            lambda f: log.warn(  # noqa: G010 (twisted's Logger has warn)
                "Bioreactor values of {experiment} not all stored or published: {why}",
                experiment=experiment,
                why=f.getErrorMessage(),
            )
        )
        return {"status": "success"}

    # --- hardware ------------------------------------------------------------

    @route(
        app,
        "/unit_api/hardware/check",
        ["POST", "PATCH"],
        body=HardwareCheck,
        returns=Accepted,
        status=202,
    )
    def hardware_check(self, request: IRequest, body: HardwareCheck) -> Reply:
        """Probe the I2C chips this HAT and model need; the result is ok, skipped, or a warning naming the missing ones."""
        model = find_model(body.model_name, body.model_version)
        if model is None:
            raise ApiError(
                400,
                "Model name or version not found in available models.",
                cause=f"{body.model_name} {body.model_version} is not a known model.",
                remediation="Use a model from GET /api/models.",
            )
        return self._accepted(lambda: check_i2c(self._hardware, self._hat, model))
