"""The job: a state machine with published settings, timers and hardware, living in the one reactor.

A job speaks the reference's MQTT contract on its own broker connection, whose
last will marks it ``lost`` if the process or the network dies. Everything a
job schedules goes through ``every``/``later``/``subscribe``, which pause
while it sleeps, stop with it, and turn any exception into a clean stop of
this job alone: the process and the other jobs go on.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..deferreds import follow
from ..hardware.connection import HardwareUnavailable
from ..timestamps import iso_utc
from .context import JobContext
from .payloads import BadPayload, decode, encode
from .settings import Option, Setting
from .states import REQUESTABLE, State, can_move

STATE = "$state"
STOP_PUBLISH_TIMEOUT = 2.0  # seconds a stop waits for the broker to take the goodbye
log = Logger()


class JobFailed(Exception):
    """A job could not start, or stopped on an error; the message says why."""


def _settled(result: Any) -> Deferred[Any]:
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    if isinstance(result, Deferred):
        return result
    return succeed(result)


class _Loop:
    """A LoopingCall that pauses while the job sleeps and ends the job if it raises."""

    def __init__(
        self,
        job: Job,
        interval: float,
        f: Callable[[], Any],
        now: bool,
        pause_when_sleeping: bool,
    ) -> None:
        self.interval, self.now, self.pause_when_sleeping = (
            interval,
            now,
            pause_when_sleeping,
        )
        self._f = f
        self._job = job
        self._call = self._new_call()

    def _new_call(self) -> LoopingCall:
        call = LoopingCall(
            lambda: _settled(self._f()).addErrback(self._job.tolerate_hardware_outage)
        )
        call.clock = self._job.clock
        return call

    def start(self, now: bool | None = None) -> None:
        if not self._call.running:
            # A fresh LoopingCall: a stopped one may still be waiting on its last
            # run, and restarting it then would schedule it twice.
            self._call = self._new_call()
            d = self._call.start(self.interval, now=self.now if now is None else now)
            d.addErrback(self._job.crash)

    def stop(self) -> None:
        if self._call.running:
            self._call.stop()

    def change_interval(self, interval: float) -> None:
        """Takes effect now: the next run is ``interval`` from now."""
        self.interval = interval
        if self._call.running:
            self._call.stop()
            self.start(now=False)


class Job:
    """Subclass, name it, declare its settings and options, and fill in the hooks."""

    job_name: ClassVar[str]
    help: ClassVar[str] = ""
    published_settings: ClassVar[Mapping[str, Setting]] = {}
    options: ClassVar[Mapping[str, Option]] = {}
    takes_args: ClassVar[bool] = False
    is_long_running: ClassVar[bool] = False
    # Stop order in a "stop all": 0 pumps and PWM, 1 heating and temperature, 2 the rest.
    stop_order: ClassVar[int] = 2

    def __init__(
        self, context: JobContext, options: Mapping[str, Any], args: list[str]
    ) -> None:
        self.context = context
        self.unit, self.experiment = context.unit, context.experiment
        self.clock, self.config, self.hardware = (
            context.clock,
            context.config,
            context.hardware,
        )
        self.log = context.log
        self.args = args
        self.state = State.INIT
        self.values: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self._loops: list[_Loop] = []
        self._calls: list[IDelayedCall] = []
        self._subscriptions: list[str] = []
        self._stopping: Deferred[None] | None = None
        self._ended: Deferred[None] = Deferred()
        self._unacknowledged: set[Deferred[None]] = set()

    # --- hooks for subclasses ----------------------------------------------

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Checks across the parsed options that one option's declaration cannot say; raise BadOptions."""

    @classmethod
    def check_args(cls, args: list[str]) -> None:
        """For a job that ``takes_args``: refuse arguments it cannot use by raising BadOptions."""

    @classmethod
    def experiment_in(cls, args: list[str]) -> str | None:
        """The experiment a run's arguments name, for a job told its experiment that way; None otherwise."""
        return None

    async def on_init(self) -> None:
        """Set up: publish the first settings, prepare the hardware. Raise to refuse to start."""

    def on_ready(self) -> Any:
        """Runs once, after ``ready`` is published: start the loops here."""

    def on_sleeping(self) -> Any:
        """Paused: loops are already paused; put actuators in a resting state."""

    def on_waking(self) -> Any:
        """From sleeping back to ready: loops resume after this."""

    def on_disconnected(self) -> Any:
        """Stopping: timers are already cancelled; release the hardware."""

    # --- what subclasses use -------------------------------------------------

    @property
    def topic_prefix(self) -> str:
        return f"pioreactor/{self.unit}/{self.experiment}/{self.job_name}"

    def publish(self, name: str, value: Any) -> None:
        """Set a published setting: retained at QoS 2, as every existing client reads them."""
        if value is None:
            self.values.pop(name, None)
        else:
            self.values[name] = value
        self.send(f"{self.topic_prefix}/{name}", encode(value), qos=2, retain=True)

    def send(
        self, topic: str, payload: bytes | str, qos: int = 2, retain: bool = False
    ) -> Deferred[None]:
        """Publish anything else on the job's connection; a failure is logged, never raised."""
        d = self.context.bus.publish(topic, payload, qos=qos, retain=retain)
        self._unacknowledged.add(d)

        def done(result: Any) -> None:
            self._unacknowledged.discard(d)
            if isinstance(result, Failure):
                log.warn(
                    "{job}: not published to {topic}: {why}",
                    job=self.job_name,
                    topic=topic,
                    why=result.getErrorMessage(),
                )

        d.addBoth(done)
        return d

    def send_json(
        self, topic: str, value: Any, qos: int = 2, retain: bool = False
    ) -> Deferred[None]:
        return self.send(
            topic, json.dumps(value, separators=(",", ":")), qos=qos, retain=retain
        )

    def now_iso(self) -> str:
        return iso_utc(self.clock.seconds())

    def every(
        self,
        interval: float,
        f: Callable[[], Any],
        *,
        now: bool = True,
        pause_when_sleeping: bool = True,
    ) -> _Loop:
        """Run ``f`` every ``interval`` seconds from ``on_ready`` (or now, if already ready)."""
        loop = _Loop(self, interval, f, now, pause_when_sleeping)
        self._loops.append(loop)
        if self.state is State.READY:
            loop.start()
        return loop

    def later(self, delay: float, f: Callable[..., Any], *args: Any) -> IDelayedCall:
        """Run ``f`` once after ``delay`` seconds, unless the job stops first."""

        def run() -> None:
            self._calls.remove(call)
            self.run_guarded(f, *args)

        call = self.clock.callLater(delay, run)
        self._calls.append(call)
        return call

    def subscribe(self, topic: str, f: Callable[[Any], Any], qos: int = 2) -> None:
        """Messages on ``topic`` go to ``f`` until the job stops; an exception in ``f`` stops the job."""
        self._subscriptions.append(topic)
        self.context.bus.subscribe(
            topic, lambda message: self.run_guarded(f, message), qos=qos
        )

    def run_guarded(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Call ``f``; whatever it raises (now or in its Deferred) ends this job alone."""
        if self._stopping is not None:
            return succeed(None)
        d = maybeDeferred(lambda: _settled(f(*args)))
        return d.addErrback(self.tolerate_hardware_outage).addErrback(self.crash)

    def tolerate_hardware_outage(self, failure: Failure) -> None:
        """pigpiod away is not this job's fault: the connection retries, and the next run tries again."""
        failure.trap(HardwareUnavailable)
        log.warn(
            "{job}: skipped a step: {why}",
            job=self.job_name,
            why=failure.getErrorMessage(),
        )

    def crash(self, failure: Failure) -> None:
        """Log and report the error, then stop this job."""
        if self._stopping is not None:
            log.failure("{job}: error while stopping", failure, job=self.job_name)
            return
        reason = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        log.failure(
            "{job} on {unit} failed; stopping it",
            failure,
            job=self.job_name,
            unit=self.unit,
        )
        self.log.error(f"{self.job_name} failed and was stopped: {reason}")
        self.stop(reason)

    # --- lifecycle, driven by the manager and by $state/set --------------------

    async def start(self) -> None:
        """init, set-up, ready. Raises JobFailed (after cleaning up) if the set-up fails."""
        self.publish(STATE, State.INIT.value)
        try:
            await _settled(self.on_init())
        except Exception as e:
            reason = (
                f"{type(e).__name__}: {e}" if not isinstance(e, JobFailed) else str(e)
            )
            if not isinstance(e, JobFailed):
                log.failure("{job} failed to start", Failure(), job=self.job_name)
            await self.stop(reason)
            raise JobFailed(reason) from None
        if self._stopping is not None:
            raise JobFailed(self.stop_reason or "stopped while starting")
        for base in (f"pioreactor/{self.unit}", "pioreactor/$broadcast"):
            self.subscribe(
                f"{base}/{self.experiment}/{self.job_name}/+/set", self._on_set, qos=2
            )
        self.subscribe(f"{self.topic_prefix}/{STATE}", self._on_own_state, qos=2)
        self._move(State.READY)
        await self.run_guarded(self.on_ready)  # an error here stops the job, as in a loop
        if self._stopping is not None:
            raise JobFailed(self.stop_reason or "stopped as it became ready")
        for loop in self._loops:
            loop.start()

    def _move(self, state: State) -> None:
        self.state = state
        self.publish(STATE, state.value)

    def set_state(self, wanted: State) -> Deferred[None]:
        """A requested move: ready <-> sleeping, or disconnected (a clean stop)."""
        if wanted is State.DISCONNECTED:
            return self.stop()
        if not can_move(self.state, wanted) or self._stopping is not None:
            log.info(
                "{job}: ignoring a move from {state} to {wanted}",
                job=self.job_name,
                state=self.state,
                wanted=wanted,
            )
            return succeed(None)
        if wanted is State.SLEEPING:
            for loop in self._loops:
                if loop.pause_when_sleeping:
                    loop.stop()
            self._move(State.SLEEPING)
            return self.run_guarded(self.on_sleeping)
        d = self.run_guarded(self.on_waking)

        def resume(_: Any) -> None:
            if self._stopping is None:
                self._move(State.READY)
                for loop in self._loops:
                    loop.start(now=False)

        return d.addCallback(resume)

    def stop(self, reason: str | None = None) -> Deferred[None]:
        """The clean stop: hardware released, ``disconnected`` and the cleared settings acknowledged."""
        if self._stopping is None:
            self.stop_reason = reason
            # Set before the stop runs: hooks it calls may ask to stop again.
            self._stopping = Deferred()
            Deferred.fromCoroutine(self._stop()).chainDeferred(self._stopping)
        return follow(self._stopping)

    async def _stop(self) -> None:
        for loop in self._loops:
            loop.stop()
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls.clear()
        try:
            await _settled(self.on_disconnected())
        except Exception:
            log.failure(
                "{job}: error while releasing its hardware",
                Failure(),
                job=self.job_name,
            )
        for topic in self._subscriptions:
            self.context.bus.unsubscribe(topic)
        self._subscriptions.clear()
        for name, setting in self.published_settings.items():
            if not setting.persist and name in self.values:
                self.publish(name, None)
        self.state = State.DISCONNECTED
        self.publish(STATE, State.DISCONNECTED.value)
        pending = list(self._unacknowledged)
        if pending:
            waiting = DeferredList(pending, consumeErrors=True)
            waiting.addTimeout(STOP_PUBLISH_TIMEOUT, self.clock)
            try:
                await waiting
            except Exception:
                log.warn(
                    "{job}: the broker did not acknowledge the goodbye in time",
                    job=self.job_name,
                )
        try:
            await _settled(self.context.close())
        finally:
            self._ended.callback(None)

    @property
    def stopped(self) -> bool:
        return self._stopping is not None

    def when_stopped(self) -> Deferred[None]:
        """Fires once the job has stopped, for whatever reason."""
        return follow(self._ended)

    # --- inbound messages ----------------------------------------------------

    def _on_own_state(self, message: Any) -> None:
        """The broker fired our will during a blip: say we are still here."""
        if message.payload == State.LOST.value.encode() and self._stopping is None:
            self.publish(STATE, self.state.value)

    def _on_set(self, message: Any) -> Any:
        if message.retain:
            return None  # a retained /set is a stale command, not a request
        name = message.topic.split("/")[-2]
        if name == STATE:
            try:
                wanted = State(message.payload.decode("utf-8", "replace").strip())
            except ValueError:
                wanted = None
            if wanted not in REQUESTABLE:
                self.log.warning(
                    f"{self.job_name}: $state/set takes ready, sleeping or disconnected, not {message.payload[:40]!r}"
                )
                return None
            return self.set_state(wanted)
        return self.apply_setting(name, message.payload)

    def apply_setting(self, name: str, payload: bytes) -> Deferred[None]:
        """A ``/set`` request: cast it by the setting's datatype, then hand it to ``set_<name>`` or publish it."""
        setting = self.published_settings.get(name)
        if setting is None or not setting.settable:
            self.log.warning(
                f"{self.job_name}: {name} is not a setting that can be changed"
            )
            return succeed(None)
        try:
            value = decode(payload, setting.wire_type)
        except BadPayload as e:
            self.log.warning(f"{self.job_name}: refused {name}={payload[:40]!r}: {e}")
            return succeed(None)
        return self.change_setting(name, value)

    def change_setting(self, name: str, value: Any) -> Deferred[str | None]:
        """Change a settable setting. Fires with None when applied, or with the reason a
        ``set_<name>`` hook refused it (by raising ValueError), which is also logged."""
        hook = getattr(self, f"set_{name}", None)

        def refused(failure: Failure) -> str:
            failure.trap(ValueError)
            reason = failure.getErrorMessage()
            self.log.warning(f"{self.job_name}: refused {name}={value!r}: {reason}")
            return reason

        def apply() -> Any:
            if hook is None:
                self.publish(name, value)
                return None
            return maybeDeferred(lambda: _settled(hook(value))).addCallbacks(lambda _: None, refused)

        return self.run_guarded(apply)
