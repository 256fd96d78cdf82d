"""The ``experiment_profile`` job: the leader runs a profile's schedule against its workers.

Clients start it as the reference's do, ``execute <profile path> <experiment>``
(with the ``dry-run`` flag to only log what would happen). Every action is a
timer from ``later``, so pausing the job holds nothing back but stopping it
cancels the rest of the schedule; an early stop also stops the jobs this
profile started on the workers. Actions reach the workers through the
leader's fan-out to their ``/unit_api`` job routes; a unit that fails an
action is logged and the schedule goes on.

Expressions are evaluated when their action is due. Their MQTT lookups read
a cache: the job subscribes (on the leader's broker, ending with the job) to
every ``job/setting`` its profile names, for all units, and keeps the latest
payload of each topic, so an evaluation never waits on the network. An
expression that cannot be computed (no value yet, a type mismatch) is
logged as a warning and counts as false: the action is skipped, a ``when``
keeps waiting, a ``repeat`` stops.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from zope.interface import provider

from ..experiment_profiles import (
    Action,
    Condition,
    Profile,
    ProfileError,
    filename_problem,
    parse_profile,
    profile_path,
    profiles_root,
)
from ..profile_expressions import Context, EvaluationError, Expression, Template
from ..resources.background import fan_out_logged
from ..resources.names import experiment_name_problem
from ..store import labels
from ..store.experiments import experiment_exists
from ..store.profile_runs import record_run
from ..store.workers import experiment_workers
from .base import STATE, Job, JobFailed
from .registry import IJobKind
from .settings import BadOptions, Option, Setting

SOURCE = "experiment_profile"  # JOB_SOURCE of the jobs a profile starts, so an early stop finds them
USAGE = "experiment_profile takes: execute <profile path> <experiment>"
SECONDS_PER_HOUR = 3600.0


@provider(IJobKind)
class ExperimentProfile(Job):
    job_name = "experiment_profile"
    help = "Run an experiment profile's schedule on the experiment's workers (leader only)"
    takes_args = True
    published_settings = {
        "experiment_profile_name": Setting("string"),
        "start_time_utc": Setting("string"),
        "profile_filename": Setting("string"),
    }
    options = {"dry_run": Option("boolean", default=False, flag=True, help="log each action instead of performing it")}

    def __init__(self, context: Any, options: Any, args: list[str]) -> None:
        super().__init__(context, options, args)
        self.dry_run = bool(options.get("dry_run"))
        self.profile: Profile | None = None
        self.workers: list[str] = []
        self._in_flight = 0
        self._finished = False
        self._started = 0.0
        self._latest: dict[str, bytes] = {}  # topic -> the latest payload, for expressions' lookups
        self._random = random.Random()
        self.poll_seconds = self.config.get_float("appliance", "profile_when_poll_seconds")

    @classmethod
    def check_args(cls, args: list[str]) -> None:
        if len(args) != 3 or args[0] != "execute":
            raise BadOptions(f"{USAGE}; got {args!r}")
        problem = filename_problem(Path(args[1]).name) or experiment_name_problem(args[2])
        if problem:
            raise BadOptions(f"{USAGE}: {problem}")

    @classmethod
    def experiment_in(cls, args: list[str]) -> str | None:
        return args[2] if len(args) == 3 else None

    # --- starting ------------------------------------------------------------------

    async def on_init(self) -> None:
        services = self.context.leader_services
        if services is None:
            raise JobFailed("experiment_profile runs on the leader only")
        _, given, experiment = self.args
        if experiment != self.experiment:
            raise JobFailed(f"the run's EXPERIMENT {self.experiment} is not the profile's experiment {experiment}")
        path = await self._profile_file(Path(given))
        try:
            text = await deferToThread(path.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise JobFailed(f"cannot read the profile {path.name}: {e}") from None
        try:
            self.profile = parse_profile(text)
        except ProfileError as e:
            raise JobFailed(f"the profile {path.name} is invalid: {e}") from None
        if not await services.database.read(experiment_exists, experiment):
            raise JobFailed(f"there is no experiment {experiment}; create it first")
        rows = await services.database.read(experiment_workers, experiment)
        self.workers = [row["pioreactor_unit"] for row in rows if row["is_active"]]
        started = self.now_iso()
        self._started = self.clock.seconds()
        self._follow_lookups()
        self.publish("experiment_profile_name", self.profile.name)
        self.publish("start_time_utc", started)
        self.publish("profile_filename", str(path))
        if not self.dry_run:
            await services.database.run(record_run, experiment, self.profile.name, started)
            await self._push_labels()
        self.log.notice(
            f"{'Dry run of' if self.dry_run else 'Running'} profile {self.profile.name!r} ({path.name}) "
            f"on {', '.join(self.workers) or 'no active workers'}"
        )

    def _follow_lookups(self) -> None:
        """Subscribe to every setting the profile's expressions read, on every unit."""
        assert self.profile is not None
        topics = set()
        for plans in (self.profile.common, *(unit.jobs for unit in self.profile.units)):
            for plan in plans:
                for expression in _expressions(plan.actions):
                    for lookup in expression.lookups():
                        topics.add(f"pioreactor/+/{self.experiment}/{lookup.job}/{lookup.setting}")
        for topic in sorted(topics):
            self.subscribe(topic, self._remember, qos=1)

    def _remember(self, message: Any) -> None:
        if message.payload:
            self._latest[message.topic] = bytes(message.payload)
        else:
            self._latest.pop(message.topic, None)  # a cleared setting has no value

    def _context(self, unit: str, job: str) -> Context:
        return Context(
            unit=unit,
            job=job,
            experiment=self.experiment,
            hours_elapsed=(self.clock.seconds() - self._started) / SECONDS_PER_HOUR,
            random=self._random.random,
            lookup=lambda u, j, s: self._latest.get(f"pioreactor/{u}/{self.experiment}/{j}/{s}"),
        )

    def _holds(self, condition: Condition, unit: str, job: str, action: Action, name: str, quiet: bool = False) -> bool:
        """A condition's value now; one that cannot be computed is false, with a warning unless ``quiet``."""
        if isinstance(condition, bool):
            return condition
        try:
            value = condition.evaluate(self._context(unit, job))
            if not isinstance(value, bool):
                raise EvaluationError(f"it gave {value!r}, not true or false")
        except EvaluationError as e:
            if not quiet:
                self.log.warning(f"{action.type} {job} on {unit} (line {action.line}): {name} {condition!r} counts as false: {e}")
            return False
        return value

    async def _profile_file(self, given: Path) -> Path:
        root = profiles_root(self.context.data_dir)
        if given.is_absolute() and given.parent.resolve() != root.resolve():
            raise JobFailed(f"the profile must be in {root}, not {given.parent}")
        try:
            return profile_path(self.context.data_dir, given.name)
        except ValueError as e:
            raise JobFailed(f"bad profile path {str(given)!r}: {e}") from None

    async def _push_labels(self) -> None:
        assert self.profile is not None and self.context.leader_services is not None
        db = self.context.leader_services.database
        for plan in self.profile.units:
            if plan.label is None or plan.unit not in self.workers:
                continue
            holder = await db.read(labels.label_holder, self.experiment, plan.label)
            if holder not in (None, plan.unit):
                self.log.warning(f"label {plan.label!r} is already {holder}'s in {self.experiment}; {plan.unit} keeps its own")
                continue
            await db.run(labels.set_unit_label, self.experiment, plan.unit, plan.label, self.now_iso())

    def on_ready(self) -> None:
        assert self.profile is not None
        for plan in self.profile.common:
            for unit in self.workers:
                for action in plan.actions:
                    self._schedule(unit, plan.job_name, action, action.hours)
        for unit_plan in self.profile.units:
            if unit_plan.unit not in self.workers:
                self.log.warning(f"{unit_plan.unit} is not an active worker in {self.experiment}: its part of the profile is skipped")
                continue
            for plan in unit_plan.jobs:
                for action in plan.actions:
                    self._schedule(unit_plan.unit, plan.job_name, action, action.hours)
        self.later(0, self._finish_if_done)

    # --- the schedule ----------------------------------------------------------------

    def _schedule(self, unit: str, job: str, action: Action, hours: float) -> None:
        self.later(hours * SECONDS_PER_HOUR, self._fire, unit, job, action)

    async def _fire(self, unit: str, job: str, action: Action) -> None:
        if not self._holds(action.condition, unit, job, action, "if"):
            self.log.debug(f"skipping {action.type} {job} on {unit} (line {action.line}): its condition is false")
        elif action.type == "repeat":
            self._repeat(unit, job, action, self.clock.seconds())
        elif action.type == "when":
            self._wait(unit, job, action, warned=False)
        else:
            self._in_flight += 1
            try:
                await self._perform(unit, job, action)
            finally:
                self._in_flight -= 1
        self._finish_if_done()

    def _wait(self, unit: str, job: str, action: Action, warned: bool) -> None:
        """A when: its actions once its condition holds, polled every ``poll_seconds`` until then."""
        if action.wait_until is False:  # written as false: it never comes, so nothing waits for it
            self.log.debug(f"skipping when {job} on {unit} (line {action.line}): its wait_until is false")
            return
        if self._holds(action.wait_until, unit, job, action, "wait_until", quiet=warned):
            for inner in action.actions:
                self._schedule(unit, job, inner, inner.hours)
            self._finish_if_done()
            return
        self.later(self.poll_seconds, self._wait, unit, job, action, True)

    def _repeat(self, unit: str, job: str, action: Action, started: float) -> None:
        """One round of a repeat's actions now, and the next round unless it would pass max_time."""
        if not self._holds(action.repeat_while, unit, job, action, "while"):
            self.log.debug(f"repeat {job} on {unit} (line {action.line}) ends: its while is false")
            self._finish_if_done()
            return
        for inner in action.actions:
            self._schedule(unit, job, inner, inner.hours)
        assert action.every_hours is not None
        next_round = (self.clock.seconds() - started) / SECONDS_PER_HOUR + action.every_hours
        if action.max_hours is None or next_round <= action.max_hours + 1e-9:
            self.later(action.every_hours * SECONDS_PER_HOUR, self._repeat, unit, job, action, started)

    def _finish_if_done(self) -> None:
        if not self._calls and not self._in_flight and not self.stopped:
            self._finished = True
            self.log.notice(f"profile {self.profile.name if self.profile else ''!r} finished")
            self.stop()

    async def _perform(self, unit: str, job: str, action: Action) -> None:
        try:
            options = _computed(action.options, self._context(unit, job))
        except EvaluationError as e:
            self.log.warning(f"{action.type} {job} on {unit} (line {action.line}) skipped: an expression in its options: {e}")
            return
        if action.type == "log":
            level = options.get("level", "notice")
            getattr(self.log, level)(str(options["message"]))
            return
        method, path, body = self._request(job, action, options)
        if self.dry_run:
            self.log.info(f"dry run: would {action.type} {job} on {unit} (line {action.line})")
            return
        assert self.context.leader_services is not None
        envelopes = await fan_out_logged(self.context.leader_services.fanout, method, [unit], path, body)
        envelope = envelopes.get(unit) or {}
        if not envelope.get("ok"):
            error = envelope.get("error") or {}
            self.log.warning(f"{action.type} {job} on {unit} (line {action.line}) failed: {error.get('message', 'no answer')}")

    def _request(self, job: str, action: Action, options: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """The ``/unit_api`` call that performs ``action`` on one unit."""
        settings_path = f"/unit_api/jobs/settings/job_name/{job}"
        if action.type == "start":
            return (
                "POST",
                f"/unit_api/jobs/run/job_name/{job}",
                {
                    "options": options,
                    "args": list(action.args),
                    "env": {"EXPERIMENT": self.experiment, "JOB_SOURCE": SOURCE},
                    "config_overrides": [[f"{job}.config", key, value] for key, value in action.config_overrides],
                },
            )
        if action.type == "stop":
            return "POST", "/unit_api/jobs/stop", {"job_name": job, "experiment": self.experiment}
        if action.type in ("pause", "resume"):
            return "PATCH", settings_path, {"settings": {STATE: "sleeping" if action.type == "pause" else "ready"}}
        return "PATCH", settings_path, {"settings": options}  # update

    # --- stopping --------------------------------------------------------------------

    async def on_disconnected(self) -> None:
        """Stopped before the schedule ended: stop what the profile started, as the reference does."""
        services = self.context.leader_services
        if self._finished or self.dry_run or services is None or not self.workers or self.profile is None:
            return
        self.log.notice(f"profile {self.profile.name!r} stopped early: stopping the jobs it started")
        await fan_out_logged(services.fanout, "POST", self.workers, "/unit_api/jobs/stop", {"experiment": self.experiment, "job_source": SOURCE})


def _expressions(actions: tuple[Action, ...]) -> list[Expression | Template]:
    """Every expression in ``actions`` and the actions inside them."""
    found: list[Expression | Template] = []
    for action in actions:
        found.extend(c for c in (action.condition, action.repeat_while, action.wait_until) if isinstance(c, Expression))
        todo: list[Any] = [action.options]
        while todo:
            value = todo.pop()
            if isinstance(value, (Expression, Template)):
                found.append(value)
            elif isinstance(value, dict):
                todo.extend(value.values())
            elif isinstance(value, list):
                todo.extend(value)
        found.extend(_expressions(action.actions))
    return found


def _computed(value: Any, context: Context) -> Any:
    """Options with each expression replaced by its value now."""
    if isinstance(value, (Expression, Template)):
        return value.evaluate(context)
    if isinstance(value, dict):
        return {key: _computed(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_computed(item, context) for item in value]
    return value
