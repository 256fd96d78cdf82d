"""The unit's jobs: started on request, one of each name at a time, stopped in a safe order.

The reference starts a process per job and keeps rows in a local SQLite table;
here jobs are objects, and the table is this manager's memory (a restart ends
every job anyway). Its rows keep the reference's shape for ``/jobs/running``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attrs import asdict, define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..config import Config
from ..mqtt import Will
from ..timestamps import iso_utc
from .base import STATE, Job, JobFailed
from .context import Bus, JobContext, JobLog, LeaderServices
from .registry import Registry
from .settings import BadOptions, parse_options
from .states import State
from .unit_state import UnitState

LONG_RUNNING_EXPERIMENT = "$experiment"
DEBOUNCE_SECONDS = (
    1.0  # the reference refuses a second run of the same job within a second
)
HISTORY = 500  # finished job rows kept for GET /unit_api/jobs
log = Logger()

# (client id, will) -> (the job's connection, a callable that closes it)
Connector = Callable[[str, Will], tuple[Bus, Callable[[], Any]]]


class UnknownJob(LookupError):
    """No job or automation by that name is installed."""


class AlreadyRunning(Exception):
    """A job of that name already runs on this unit (the reference's JobPresentError)."""


class TooSoon(Exception):
    """The same job was asked to run less than a second ago."""


@define
class JobRecord:
    """A row of the reference's ``pio_job_metadata``."""

    job_id: int
    unit: str
    experiment: str
    job_name: str
    job_source: str
    started_at: str
    is_running: int
    leader: str
    pid: int
    is_long_running_job: int
    ended_at: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@frozen
class RunRequest:
    job_name: str
    experiment: str
    options: dict[str, Any] = field(factory=dict)
    args: list[str] = field(factory=list)
    env: dict[str, str] = field(factory=dict)
    config_overrides: list[tuple[str, str, str]] = field(factory=list)
    source: str = "user"


@define
class _Prepared:
    kind: Any
    request: RunRequest
    options: dict[str, Any]


class JobManager(Service):
    def __init__(
        self,
        registry: Registry,
        clock: IReactorTime,
        unit: str,
        leader: str,
        config: Config,
        hardware: Any,
        unit_state: UnitState,
        data_dir: Path,
        connect: Connector,
        start_at_boot: Iterable[str] = (),
        leader_services: LeaderServices | None = None,
    ) -> None:
        self.registry = registry
        self._clock = clock
        self.unit, self.leader = unit, leader
        self._config = config
        self._hardware = hardware
        self.unit_state = unit_state
        self._data_dir = data_dir
        self._connect = connect
        self._start_at_boot = tuple(start_at_boot)
        self._leader_services = leader_services
        self._running: dict[str, tuple[JobRecord, Job]] = {}
        self._finished: deque[JobRecord] = deque(maxlen=HISTORY)
        self._last_run: dict[str, float] = {}
        self._next_id = 1

    # --- starting ------------------------------------------------------------

    def kind_of(self, job_name: str, options: dict[str, Any]) -> Any:
        """The class that runs ``job_name``: an automation's is picked by its ``automation_name`` option."""
        automation_type = self.registry.automation_type_of(job_name)
        if automation_type is not None:
            name = options.get("automation_name") or options.get("automation-name")
            choices = self.registry.automations[automation_type]
            if name not in choices:
                raise BadOptions(
                    f"option automation_name: {name!r} is not a {automation_type} automation; one of {', '.join(sorted(choices))}"
                )
            return choices[name]
        if job_name not in self.registry.jobs:
            raise UnknownJob(job_name)
        return self.registry.jobs[job_name]

    def prepare(self, request: RunRequest) -> _Prepared:
        """Every check that can be made before anything starts; raises UnknownJob, BadOptions or AlreadyRunning."""
        kind = self.kind_of(request.job_name, request.options)
        options = parse_options(kind.options, request.options)
        kind.check_options(options)
        if request.args and not kind.takes_args:
            raise BadOptions(
                f"{request.job_name} takes no arguments, but was given {len(request.args)}"
            )
        kind.check_args(list(request.args))
        self._check_not_running(request.job_name)
        return _Prepared(kind, request, options)

    def check_debounce(self, job_name: str) -> None:
        """TooSoon if a run of ``job_name`` was accepted less than a second ago: the reference's first check."""
        last = self._last_run.get(job_name)
        if last is not None and self._clock.seconds() - last < DEBOUNCE_SECONDS:
            raise TooSoon(job_name)

    def note_run(self, job_name: str) -> None:
        """A run request passed every check: the next one within a second is TooSoon.

        Only accepted requests count, so a user who fixes a typo is not told to wait.
        """
        self._last_run[job_name] = self._clock.seconds()

    def _check_not_running(self, job_name: str) -> None:
        if job_name in self._running:
            record = self._running[job_name][0]
            raise AlreadyRunning(
                f"{job_name} is already running on {self.unit} (job_id {record.job_id}, experiment {record.experiment})"
            )

    def start(self, prepared: _Prepared) -> Deferred[Job]:
        """Start a prepared job; fires with it once ``ready``, or fails with JobFailed saying why."""
        request, kind = prepared.request, prepared.kind
        self._check_not_running(
            request.job_name
        )  # again: another run may have started since prepare()
        experiment = (
            LONG_RUNNING_EXPERIMENT if kind.is_long_running else request.experiment
        )
        will = Will(
            f"pioreactor/{self.unit}/{experiment}/{request.job_name}/{STATE}",
            State.LOST.value.encode(),
        )
        bus, close = self._connect(f"appliance-{self.unit}-{request.job_name}", will)
        config = (
            self._config.with_overrides(request.config_overrides)
            if request.config_overrides
            else self._config
        )
        context = JobContext(
            unit=self.unit,
            experiment=experiment,
            clock=self._clock,
            bus=bus,
            config=config,
            hardware=self._hardware,
            unit_state=self.unit_state,
            jobs=self,
            data_dir=self._data_dir,
            leader=self.leader,
            log=JobLog(bus, self._clock, self.unit, experiment, task=request.job_name),
            source=request.source,
            env=dict(request.env),
            close=close,
            leader_services=self._leader_services,
        )
        record = JobRecord(
            job_id=self._next_id,
            unit=self.unit,
            experiment=experiment,
            job_name=request.job_name,
            job_source=request.source,
            started_at=iso_utc(self._clock.seconds()),
            is_running=1,
            leader=self.leader,
            pid=os.getpid(),
            is_long_running_job=int(kind.is_long_running),
        )
        self._next_id += 1
        try:
            job = kind(context, prepared.options, list(request.args))
        except Exception as e:
            close()
            log.failure("Could not build {job}", job=request.job_name)
            return fail(
                JobFailed(
                    f"{request.job_name} could not be built: {type(e).__name__}: {e}"
                )
            )
        self._running[request.job_name] = (record, job)
        job.when_stopped().addBoth(self._ended, request.job_name, job)
        d = Deferred.fromCoroutine(job.start())
        return d.addCallback(lambda _: job)

    def run(self, request: RunRequest) -> Deferred[Job]:
        """A run request as a user makes it: the debounce, the checks, then the start."""
        self.check_debounce(request.job_name)
        prepared = self.prepare(request)
        self.note_run(request.job_name)
        return self.start(prepared)

    def run_action(self, job_name: str, experiment: str, options: dict[str, Any], source: str) -> Deferred[Job]:
        """Start an action on behalf of another job (a dosing automation's pump runs): no debounce."""
        return self.start(self.prepare(RunRequest(job_name, experiment, options=options, source=source)))

    def _ended(self, _: Any, job_name: str, job: Job) -> None:
        entry = self._running.get(job_name)
        if entry is None or entry[1] is not job:
            return
        record = entry[0]
        del self._running[job_name]
        record.is_running, record.ended_at = 0, iso_utc(self._clock.seconds())
        self._finished.append(record)

    # --- reading -------------------------------------------------------------

    def get(self, job_name: str) -> Job | None:
        entry = self._running.get(job_name)
        return None if entry is None else entry[1]

    def running_jobs(self) -> list[JobRecord]:
        return [record for record, _ in self._running.values()]

    def history(self) -> list[JobRecord]:
        """Every job this process ran, newest first."""
        return sorted(
            [*self.running_jobs(), *self._finished],
            key=lambda r: r.job_id,
            reverse=True,
        )

    # --- stopping ------------------------------------------------------------

    def matching(
        self,
        *,
        job_name: str | None = None,
        experiment: str | None = None,
        job_source: str | None = None,
        job_id: int | None = None,
    ) -> list[Job]:
        """Running jobs matching every filter given (the reference ANDs them)."""
        found = []
        for record, job in self._running.values():
            if job_name and record.job_name != job_name:
                continue
            if experiment and record.experiment != experiment:
                continue
            if job_source and record.job_source != job_source:
                continue
            if job_id is not None and record.job_id != job_id:
                continue
            found.append(job)
        return found

    async def stop_jobs(self, jobs: list[Job]) -> int:
        """Pumps and PWM first, then heating, then the rest: nothing is left dosing or heating unwatched."""
        for order in sorted({job.stop_order for job in jobs}):
            batch = [job.stop() for job in jobs if job.stop_order == order]
            for d in batch:
                await d
        return len(jobs)

    def stop(self, **filters: Any) -> Deferred[int]:
        return Deferred.fromCoroutine(self.stop_jobs(self.matching(**filters)))

    def stop_all(self) -> Deferred[int]:
        """Every job but the long-running ones (the monitor)."""
        jobs = [
            job
            for record, job in self._running.values()
            if not record.is_long_running_job
        ]
        return Deferred.fromCoroutine(self.stop_jobs(jobs))

    # --- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        for job_name in self._start_at_boot:
            try:
                d = self.run(
                    RunRequest(job_name, LONG_RUNNING_EXPERIMENT, source="boot")
                )
            except Exception as e:
                log.error("Could not start {job} at boot: {why}", job=job_name, why=e)
                continue
            d.addErrback(
                lambda f, name=job_name: log.error(
                    "{job} did not start at boot: {why}",
                    job=name,
                    why=f.getErrorMessage(),
                )
            )

    def stopService(self) -> Deferred[int]:
        super().stopService()
        return Deferred.fromCoroutine(
            self.stop_jobs([job for _, job in self._running.values()])
        )
