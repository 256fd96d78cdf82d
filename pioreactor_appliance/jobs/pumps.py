"""Pump actions: ``add_media``, ``remove_waste``, ``add_alt_media`` and the ``circulate_*`` pair.

A dose is a chain of bounded pump runs (no run may outlast ``[hardware]
pump_max_seconds``, so a longer dose is several runs back to back). What the
pump moves is reported as it goes: every half second a slice on
``dosing_events``, the last one topping up to the dose, and an early stop
publishing what really moved since the last slice. Each slice is applied to
the bioreactor bookkeeping at once, so the volume the automations read is
current even while a pump runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from attrs import define
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import provider

from ..calibration_files import duty_problem
from ..calibrations import Calibration, CalibrationError, active_calibration
from ..hardware.outputs import Pump
from ..hardware.unit import model_of
from .action import Action
from .base import JobFailed
from .bioreactor import Bioreactor
from .context import JobContext
from .registry import IJobKind
from .settings import BadOptions, Option

DEFAULT_ML_PER_SECOND = (
    0.0911  # the reference's volume for a duration dose on an uncalibrated pump
)
SLICE_SECONDS = 0.5
MAX_FILL_WARNING = 0.95  # of the model's max fill
CIRCULATE_DUTY = 0.85  # share of each second the inflow pump runs while circulating
EVENTS = {"media": "add_media", "alt_media": "add_alt_media", "waste": "remove_waste"}
TINY_ML = 1e-9
log = Logger()


def calibration_device(pump: str) -> str:
    return f"{pump}_pump"


@define(eq=False)
class Flow:
    """One pump's part in an action: its runs so far, and how much of what it moved is published."""

    pump: Pump
    calibration: Calibration | None
    event: str
    planned_ml: float | None = None  # a fixed dose: published in full when its runs end
    stop_at_max_fill: bool = False  # an open-ended inflow, checked as it runs
    ran_seconds: float = 0.0
    run_started: float | None = None
    timer: IDelayedCall | None = None
    published_ml: float = 0.0
    finished: bool = False

    @property
    def adds(self) -> bool:
        return self.event != "remove_waste"

    @property
    def duty_percent(self) -> float:
        """The duty cycle the pump was calibrated at (its ``dc``): the volumes hold only at that duty."""
        return calibrated_duty(self.calibration)

    def ml_for(self, seconds: float) -> float:
        if seconds <= 0:
            return 0.0
        if self.calibration is None:
            return DEFAULT_ML_PER_SECOND * seconds
        return max(self.calibration.x_to_y(seconds), 0.0)

    def moved_ml(self, now: float) -> float:
        running = now - self.run_started if self.run_started is not None else 0.0
        moved = self.ml_for(self.ran_seconds + running)
        return moved if self.planned_ml is None else min(moved, self.planned_ml)


def calibrated_duty(calibration: Calibration | None) -> float:
    """``dc`` of a pump calibration (checked by ``PumpAction.calibration_of``); 100 % as in the reference without one."""
    if calibration is None:
        return 100.0
    return float(calibration.fields.get("dc", 100.0))


def seconds_for(calibration: Calibration, ml: float) -> float:
    """A pump calibration's inverse; the reference's straight line (slope, bias) is inverted exactly."""
    curve = calibration.curve
    if (
        curve.kind == "poly"
        and len(curve.coefficients) == 2
        and curve.coefficients[0] > 0
    ):
        slope, bias = curve.coefficients
        return (ml - bias) / slope
    return calibration.y_to_x(ml)


def bounded_runs(seconds: float, longest: float) -> Iterator[tuple[float, float]]:
    """(run, pause after) pairs covering ``seconds`` with no run longer than ``longest``."""
    left = seconds
    while left > TINY_ML:
        run = min(left, longest)
        left -= run
        yield run, 0.0


def endless_runs(longest: float) -> Iterator[tuple[float, float]]:
    while True:
        yield longest, 0.0


def pulses(seconds: float, on_seconds: float) -> Iterator[tuple[float, float]]:
    """``on_seconds`` of every second over ``seconds``."""
    start = 0.0
    while start < seconds - TINY_ML:
        run = min(on_seconds, seconds - start)
        start += 1.0
        yield run, (1.0 - run if start < seconds else 0.0)


class PumpAction(Action):
    """Runs one or more flows to their end; stopping early halts the pumps and publishes the true volumes."""

    stop_order = 0

    def __init__(
        self, context: JobContext, options: Mapping[str, Any], args: list[str]
    ) -> None:
        super().__init__(context, options, args)
        self.given = dict(options)
        self.source_of_event: str = options["source_of_event"]
        self.flows: list[Flow] = []
        self.model = model_of(self.config)
        self.bioreactor = Bioreactor(
            context.unit_state.cache, self.config, self.model, self.unit
        )
        self._done: Deferred[None] = Deferred()

    @property
    def moved_ml(self) -> dict[str, float]:
        """Published volume per event; once stopped, what this action really moved."""
        return {flow.event: flow.published_ml for flow in self.flows}

    # --- set-up helpers -------------------------------------------------------

    async def calibration_of(self, pump: str) -> Calibration | None:
        device = calibration_device(pump)
        try:
            calibration = await active_calibration(
                self.context.data_dir, self.context.unit_state.cache, device
            )
        except CalibrationError as e:
            raise JobFailed(f"{self.job_name}: {e}") from None
        problem = duty_problem(calibration.fields.get("dc", 100.0)) if calibration else None
        if problem:
            raise JobFailed(
                f"{self.job_name}: the active {device} calibration {calibration.calibration_name!r} has dc "
                f"{calibration.fields['dc']!r}, which {problem}; recalibrate the pump or activate another calibration"
            )
        return calibration

    def flow(
        self,
        pump: str,
        calibration: Calibration | None,
        planned_ml: float | None = None,
    ) -> Flow:
        flow = Flow(self.hardware.pumps[pump], calibration, EVENTS[pump], planned_ml)
        self.flows.append(flow)
        return flow

    @property
    def volume_ml(self) -> float:
        return self.bioreactor.values(self.experiment)["current_volume_ml"]

    @property
    def max_fill_ml(self) -> float:
        return self.model.reactor_max_fill_volume_ml

    def check_fill(self, adding_ml: float) -> None:
        """Refuse an addition that would reach the model's max fill; warn near it."""
        projected = self.volume_ml + adding_ml
        if projected >= self.max_fill_ml:
            raise JobFailed(
                f"{self.job_name}: adding {adding_ml:.2f} ml would bring the vial to {projected:.2f} ml, "
                f"at or above the max fill of {self.max_fill_ml:g} ml ({self.model.display_name}); remove liquid first"
            )
        if projected >= MAX_FILL_WARNING * self.max_fill_ml:
            self.log.warning(
                f"{self.job_name}: the vial will hold {projected:.2f} ml, close to its max fill of {self.max_fill_ml:g} ml"
            )

    # --- running --------------------------------------------------------------

    def run_flows(
        self, runs: Mapping[Flow, Iterator[tuple[float, float]]]
    ) -> Deferred[None]:
        self.every(SLICE_SECONDS, self._publish_progress, now=False)
        for flow, plan in runs.items():
            self._drive(flow, plan)
        return self._done

    def _drive(self, flow: Flow, plan: Iterator[tuple[float, float]]) -> None:
        step = next(plan, None)
        if step is None:
            self.plan_ended(flow)
            return
        if flow.stop_at_max_fill and self.volume_ml >= self.max_fill_ml:
            self.log.warning(
                f"{self.job_name}: the vial is at its max fill of {self.max_fill_ml:g} ml; {flow.event} stops"
            )
            self._finish(flow)
            return
        run, pause = step
        flow.pump.run_for(run, flow.duty_percent).addErrback(self.crash)
        flow.run_started = self.clock.seconds()
        flow.timer = self.later(run, self._run_ended, flow, plan, pause)

    def plan_ended(self, flow: Flow) -> None:
        self._finish(flow)

    def _run_ended(
        self, flow: Flow, plan: Iterator[tuple[float, float]], pause: float
    ) -> None:
        self._halt(flow)
        if pause > 0:
            flow.timer = self.later(pause, self._drive, flow, plan)
        else:
            self._drive(flow, plan)

    def _halt(self, flow: Flow) -> Deferred[None] | None:
        """Stop the pump if this flow runs it, and count the time it ran."""
        if flow.timer is not None and flow.timer.active():
            flow.timer.cancel()
        flow.timer = None
        if flow.run_started is None:
            return None
        flow.ran_seconds += self.clock.seconds() - flow.run_started
        flow.run_started = None
        return flow.pump.stop()

    def _finish(self, flow: Flow, cut_short: bool = False) -> None:
        self._halt(flow)
        self._publish_rest(flow, cut_short)
        flow.finished = True
        if all(f.finished for f in self.flows) and not self._done.called:
            self._done.callback(None)

    def _publish_rest(self, flow: Flow, cut_short: bool = False) -> None:
        """The last slice: up to a fixed dose's total, or, cut short, up to what really moved."""
        if flow.finished:
            return
        if flow.planned_ml is not None and not cut_short:
            total = flow.planned_ml
        else:
            total = flow.moved_ml(self.clock.seconds())
        if abs(total - flow.published_ml) > TINY_ML:
            self._publish_slice(flow, total - flow.published_ml)

    def _publish_progress(self) -> None:
        now = self.clock.seconds()
        for flow in self.flows:
            if flow.finished:
                continue
            change = flow.moved_ml(now) - flow.published_ml
            if change > TINY_ML:
                self._publish_slice(flow, change)
            if flow.stop_at_max_fill and self.volume_ml >= self.max_fill_ml:
                self.log.warning(
                    f"{self.job_name}: the vial reached its max fill of {self.max_fill_ml:g} ml; {flow.event} stops"
                )
                self._finish(flow, cut_short=True)

    def _publish_slice(self, flow: Flow, ml: float) -> None:
        flow.published_ml += ml
        self.send_json(
            f"pioreactor/{self.unit}/{self.experiment}/dosing_events",
            {
                "volume_change": ml,
                "event": flow.event,
                "source_of_event": self.source_of_event,
                "timestamp": self.now_iso(),
            },
            qos=2,
        )
        d = self.bioreactor.dose(self.experiment, flow.event, ml, self.context.bus)
        d.addErrback(
            lambda f: log.failure("{job}: bioreactor not updated", f, job=self.job_name)
        )

    def on_disconnected(self) -> Deferred[Any]:
        """Pumps off at once; a cut-short dose publishes the volume that really moved."""
        stopping = [
            d for d in (self._halt(flow) for flow in self.flows) if d is not None
        ]
        for flow in self.flows:
            self._publish_rest(flow, cut_short=True)
            flow.finished = True
        # _done stays unfired: firing it here would ask for a second stop while this one runs.
        # The bookkeeping is published already; its file write finishes on its own.
        return gatherResults(stopping, consumeErrors=True).addErrback(
            lambda f: log.failure(
                "{job}: error while stopping the pumps", f, job=self.job_name
            )
        )


DOSE_OPTIONS = {
    "ml": Option("float", help="volume to move (needs a pump calibration)", minimum=0),
    "duration": Option("float", help="seconds to run the pump", minimum=0),
    "continuously": Option("boolean", default=False, help="run until stopped"),
    "source_of_event": Option(
        "string", default="user", help="who asked, for the dosing events"
    ),
}


class Dose(PumpAction):
    """One pump: ``ml`` (calibrated), ``duration`` seconds, or ``continuously`` until stopped."""

    pump: ClassVar[str]
    options = DOSE_OPTIONS

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        given = [name for name in ("ml", "duration") if options.get(name) is not None]
        if options.get("continuously"):
            given.append("continuously")
        if len(given) != 1:
            raise BadOptions(
                f"{cls.job_name} takes exactly one of ml, duration or continuously, not "
                + (", ".join(given) if given else "none")
            )
        for name in ("ml", "duration"):
            value = options.get(name)
            if value is not None and not value > 0:
                raise BadOptions(f"option {name}: must be above 0, not {value}")

    async def on_init(self) -> None:
        calibration = await self.calibration_of(self.pump)
        ml, duration = self.given.get("ml"), self.given.get("duration")
        if ml is not None:
            if calibration is None:
                raise JobFailed(
                    f"{self.job_name}: dosing by ml needs an active {calibration_device(self.pump)} calibration "
                    f"and there is none; calibrate the {self.pump} pump first, or dose by duration"
                )
            try:
                seconds: float | None = seconds_for(calibration, ml)
            except CalibrationError as e:
                raise JobFailed(f"{self.job_name}: {e}") from None
            if not seconds or not math.isfinite(seconds) or seconds <= 0:
                raise JobFailed(
                    f"{self.job_name}: the calibration gives no positive run time for {ml:g} ml"
                )
            flow = self.flow(self.pump, calibration, ml)
        elif duration is not None:
            seconds = duration
            flow = self.flow(self.pump, calibration)
            flow.planned_ml = flow.ml_for(duration)
        else:
            seconds = None
            flow = self.flow(self.pump, calibration)
            flow.stop_at_max_fill = flow.adds
        if flow.adds:
            self.check_fill(flow.planned_ml or 0.0)
        self.seconds = seconds

    def act(self) -> Deferred[None]:
        flow = self.flows[0]
        longest = flow.pump.max_seconds
        plan = (
            endless_runs(longest)
            if self.seconds is None
            else bounded_runs(self.seconds, longest)
        )
        return self.run_flows({flow: plan})


@provider(IJobKind)
class AddMedia(Dose):
    job_name = "add_media"
    help = "Pump media into the vial"
    pump = "media"


@provider(IJobKind)
class RemoveWaste(Dose):
    job_name = "remove_waste"
    help = "Pump liquid out of the vial, down to the efflux tube"
    pump = "waste"


@provider(IJobKind)
class AddAltMedia(Dose):
    job_name = "add_alt_media"
    help = "Pump alternative media into the vial"
    pump = "alt_media"


class Circulate(PumpAction):
    """Waste runs throughout while the inflow pump pulses, so liquid cycles at a steady level."""

    inflow: ClassVar[str]
    options = {
        "duration": Option("float", help="seconds to circulate", minimum=0),
        "source_of_event": DOSE_OPTIONS["source_of_event"],
    }

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        duration = options.get("duration")
        if duration is None or not duration > 0:
            raise BadOptions(f"{cls.job_name} needs a duration above 0 seconds")

    async def on_init(self) -> None:
        # Inflow first: each half second's additions are booked before the waste that follows them.
        self.inflow_flow = self.flow(
            self.inflow, await self.calibration_of(self.inflow)
        )
        self.inflow_flow.stop_at_max_fill = True
        self.waste = self.flow("waste", await self.calibration_of("waste"))

    def plan_ended(self, flow: Flow) -> None:
        """The inflow never outlasts the waste: when waste ends, a pulse still running is cut."""
        if flow is self.waste:
            self._finish(self.inflow_flow, cut_short=True)
        self._finish(flow)

    def act(self) -> Deferred[None]:
        duration = self.given["duration"]
        # A faster inflow pump runs for less of each second, so waste keeps up.
        share = CIRCULATE_DUTY * min(
            1.0, self.waste.ml_for(1.0) / max(self.inflow_flow.ml_for(1.0), TINY_ML)
        )
        self.waste.planned_ml = self.waste.ml_for(duration)
        self.inflow_flow.planned_ml = self.inflow_flow.ml_for(
            sum(run for run, _ in pulses(duration, share))
        )
        return self.run_flows(
            {
                self.waste: bounded_runs(duration, self.waste.pump.max_seconds),
                self.inflow_flow: pulses(duration, share),
            }
        )


@provider(IJobKind)
class CirculateMedia(Circulate):
    job_name = "circulate_media"
    help = "Cycle media through the vial at a steady level"
    inflow = "media"


@provider(IJobKind)
class CirculateAltMedia(Circulate):
    job_name = "circulate_alt_media"
    help = "Cycle alternative media through the vial at a steady level"
    inflow = "alt_media"
