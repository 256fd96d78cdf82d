"""Dosing automations (``dosing_automation``): silent, chemostat, turbidostat, fed_batch.

They dose by running the pump actions, as the reference does, so every dose
carries its own ``$state`` and ``dosing_events``; an automation waits for each
to end before the next. Before any addition the vial's tracked volume is
checked against the model's max fill: an automation that would reach it goes
to sleep rather than overflow the vial. Sleeping or stopping ends any pump
action under way.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine, Mapping
from typing import Any, ClassVar

from attrs import define
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from zope.interface import provider

from ..calibrations import ACTIVE_NAMESPACE, CalibrationError, active_calibration
from ..hardware.unit import model_of
from ..timestamps import parse_iso
from .automation import Automation, Event
from .base import STATE, JobFailed
from .bioreactor import Bioreactor
from .context import JobContext
from .pumps import MAX_FILL_WARNING, calibration_device
from .registry import IAutomationKind
from .settings import BadOptions, Option, Setting
from .states import State

CONFIG = "dosing_automation.config"
PUMP_ACTIONS = ("add_media", "remove_waste", "add_alt_media")
STALE_SECONDS = 300.0  # inputs older than this are not acted on
STALE_CHECK_SECONDS = 60.0
TURBIDOSTAT_QUIET_SECONDS = 30.0
CHEMOSTAT_FIRST_RUN_SECONDS = 2.0
OD_DEVICES = ("od45", "od90", "od135")
TINY_ML = 1e-9


class AtMaxFill(Exception):
    """An addition would bring the vial to its max fill."""


@define
class Volumes:
    waste_ml: float = 0.0
    media_ml: float = 0.0
    alt_media_ml: float = 0.0


def subdoses(
    waste_ml: float, media_ml: float, alt_media_ml: float, max_subdose: float
) -> list[Volumes]:
    """Equal parts, halving until one part's waste and additions together are at most ``max_subdose``."""
    parts = 1
    while (waste_ml + media_ml + alt_media_ml) / parts > max_subdose and parts < 1024:
        parts *= 2
    return [Volumes(waste_ml / parts, media_ml / parts, alt_media_ml / parts)] * parts


def shielded(d: Deferred[Any]) -> Deferred[Any]:
    """``d``'s result, on a Deferred whose cancelling leaves ``d`` alone.

    Cancelling a pump action's start would fail it half-way; the automation
    stops pump actions itself instead.
    """
    out: Deferred[Any] = Deferred()
    d.addBoth(
        lambda result: (
            out.errback(result) if isinstance(result, Failure) else out.callback(result)
        )
    )
    return out


def positive(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a number above 0, not {value!r}")
    return float(value)


class DosingAutomation(Automation):
    """Shared: the pump sequence of an exchange, the max-fill guard, stopping pumps on sleep and stop."""

    automation_type = "dosing"
    needs_calibrations: ClassVar[tuple[str, ...]] = ()
    # Settable settings whose run option has the same name and must be above 0.
    positive_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, context: JobContext, options: Mapping[str, Any], args: list[str]
    ) -> None:
        super().__init__(context, options, args)
        self.given = dict(options)
        self.model = model_of(self.config)
        self.bioreactor = Bioreactor(
            context.unit_state.cache, self.config, self.model, self.unit
        )
        self._io: Deferred[Any] | None = None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        for name in cls.positive_settings:
            value = options.get(name)
            if value is None:
                raise BadOptions(f"{cls.automation_name} needs option {name}")
            if not value > 0:
                raise BadOptions(f"option {name}: must be above 0, not {value}")

    async def on_init(self) -> None:
        await super().on_init()
        self.max_subdose = self.config.get_float(CONFIG, "max_subdose")
        self.pause_seconds = self.config.get_float(
            CONFIG, "pause_between_subdoses_seconds"
        )
        self.waste_multiplier = self.config.get_float(
            CONFIG, "waste_removal_multiplier"
        )
        if not self.max_subdose > 0:
            raise JobFailed(
                f"[{CONFIG}] max_subdose must be above 0, not {self.max_subdose:g}"
            )
        for pump in self.needs_calibrations:
            device = calibration_device(pump)
            try:
                found = await active_calibration(
                    self.context.data_dir, self.context.unit_state.cache, device
                )
            except CalibrationError as e:
                raise JobFailed(f"{self.automation_name}: {e}") from None
            if found is None:
                raise JobFailed(
                    f"{self.automation_name} needs an active {device} calibration and there is none; "
                    f"calibrate the {pump} pump first"
                )
        for name in self.positive_settings:
            self.publish(name, float(self.given[name]))

    def setting(self, name: str) -> float:
        return float(self.values[name])

    def change_positive(self, name: str, value: Any) -> None:
        self.publish(name, positive(name, value))

    # --- running work, one piece at a time ------------------------------------------

    @property
    def dosing(self) -> bool:
        """True while an exchange (or a single dose) is under way."""
        return self._io is not None

    def start_work(self, work: Coroutine[Any, Any, Event]) -> None:
        """Run ``work`` unless another is under way; record its event, or an ErrorOccurred if it fails."""
        if self._io is not None or self.state is not State.READY:
            work.close()
            return
        self._io = Deferred.fromCoroutine(self._recorded(work))
        self._io.addBoth(self._work_done)

    async def _recorded(self, work: Coroutine[Any, Any, Event]) -> bool:
        try:
            event = await work
        except AtMaxFill as e:
            self.log.warning(f"{self.automation_name}: {e}; going to sleep")
            return True
        except CancelledError:
            raise
        except Exception as e:
            self.log.error(f"{self.automation_name}: {type(e).__name__}: {e}")
            event = Event("ErrorOccurred", str(e))
        self.record_event(event)
        return False

    def _work_done(self, result: Any) -> None:
        self._io = None
        if isinstance(result, Failure):
            if not result.check(CancelledError):
                self.crash(result)
            return
        if result:  # at max fill
            self.set_state(State.SLEEPING)

    def pause(self, seconds: float) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.later(seconds, d.callback, None)
        return d

    async def pump(self, action: str, ml: float) -> float:
        """Run a pump action for ``ml`` and wait for its end; the volume it really moved."""
        starting = self.context.jobs.run_action(
            action,
            self.experiment,
            {"ml": ml, "source_of_event": f"{self.job_name}:{self.automation_name}"},
            self.job_name,
        )
        job = await shielded(starting)
        await job.when_stopped()
        return float(getattr(job, "moved_ml", {}).get(action, 0.0))

    def guard_fill(self, adding_ml: float) -> None:
        volume = self.bioreactor.values(self.experiment)["current_volume_ml"]
        projected, limit = volume + adding_ml, self.model.reactor_max_fill_volume_ml
        if projected >= limit:
            raise AtMaxFill(
                f"adding {adding_ml:.2f} ml would bring the vial to {projected:.2f} ml, "
                f"at or above its max fill of {limit:g} ml"
            )
        if projected >= MAX_FILL_WARNING * limit:
            self.log.warning(
                f"{self.automation_name}: the vial will hold {projected:.2f} ml, near its max fill of {limit:g} ml"
            )

    async def execute_io_action(
        self, waste_ml: float = 0.0, media_ml: float = 0.0, alt_media_ml: float = 0.0
    ) -> Volumes:
        """Additions then waste, in sub-doses, each followed by extra waste so the level settles at the efflux tube."""
        if waste_ml < media_ml + alt_media_ml - TINY_ML:
            raise ValueError(
                f"waste ({waste_ml:g} ml) must be at least the additions ({media_ml + alt_media_ml:g} ml)"
            )
        self.guard_fill(media_ml + alt_media_ml)
        self.record_event(
            Event(
                "DosingStarted",
                "",
                {
                    "waste_ml": waste_ml,
                    "media_ml": media_ml,
                    "alt_media_ml": alt_media_ml,
                },
            )
        )
        moved = Volumes()
        parts = subdoses(waste_ml, media_ml, alt_media_ml, self.max_subdose)
        for i, part in enumerate(parts):
            if part.alt_media_ml > 0:
                moved.alt_media_ml += await self.pump(
                    "add_alt_media", part.alt_media_ml
                )
            if part.media_ml > 0:
                moved.media_ml += await self.pump("add_media", part.media_ml)
            if part.alt_media_ml > 0 or part.media_ml > 0:
                await self.pause(self.pause_seconds)
            if part.waste_ml > 0:
                moved.waste_ml += await self.pump("remove_waste", part.waste_ml)
                if self.waste_multiplier > 0:
                    await self.pump(
                        "remove_waste", part.waste_ml * self.waste_multiplier
                    )
            if i < len(parts) - 1:
                await self.pause(self.pause_seconds)
        self.record_event(
            Event(
                "DosingStopped",
                "",
                {
                    "waste_ml": moved.waste_ml,
                    "media_ml": moved.media_ml,
                    "alt_media_ml": moved.alt_media_ml,
                },
            )
        )
        return moved

    # --- pausing and stopping ------------------------------------------------------

    def stop_pumps(self) -> None:
        """End the work under way and any pump action running, as the reference does: through their $state/set."""
        if self._io is not None:
            self._io.cancel()
        for action in PUMP_ACTIONS:
            self.send(
                f"pioreactor/{self.unit}/{self.experiment}/{action}/{STATE}/set",
                "disconnected",
            )

    def on_sleeping(self) -> None:
        self.stop_pumps()

    def on_disconnected(self) -> Any:
        self.stop_pumps()
        return super().on_disconnected()


@provider(IAutomationKind)
class Silent(DosingAutomation):
    """Doses nothing: keeps the dosing slot filled and the experiment's record honest."""

    automation_name = "silent"
    help = "Never doses"


class Periodic(DosingAutomation):
    """Runs ``execute`` every ``duration`` minutes."""

    first_run_seconds: ClassVar[float | None] = (
        None  # None: after the first full interval
    )

    def on_ready(self) -> None:
        if self.first_run_seconds is None:
            self._start_loop()
        else:
            self.later(self.first_run_seconds, self._first_run)

    def _first_run(self) -> None:
        self._start_loop()
        self.run_once()

    def _start_loop(self) -> None:
        self.loop = self.every(
            self.setting("duration") * 60.0, self.run_once, now=False
        )

    def run_once(self) -> None:
        self.start_work(self.execute())

    async def execute(self) -> Event:
        raise NotImplementedError

    def set_duration(self, value: Any) -> None:
        self.change_positive("duration", value)
        if hasattr(self, "loop"):
            self.loop.change_interval(self.setting("duration") * 60.0)


@provider(IAutomationKind)
class Chemostat(Periodic):
    """Exchanges a fixed volume every ``duration`` minutes: a constant dilution rate."""

    automation_name = "chemostat"
    help = "Exchange exchange_volume_ml every duration minutes"
    needs_calibrations = ("media", "waste")
    positive_settings = ("exchange_volume_ml", "duration")
    first_run_seconds = CHEMOSTAT_FIRST_RUN_SECONDS
    published_settings = {
        "exchange_volume_ml": Setting("float", settable=True, unit="mL"),
        "duration": Setting("float", settable=True, unit="min"),
    }
    options = {
        "exchange_volume_ml": Option(
            "float", default=0.5, help="ml exchanged each run"
        ),
        "duration": Option("float", default=20.0, help="minutes between runs"),
    }

    async def execute(self) -> Event:
        volume = self.setting("exchange_volume_ml")
        moved = await self.execute_io_action(waste_ml=volume, media_ml=volume)
        return Event(
            "DilutionEvent",
            f"exchanged {moved.media_ml:.2f} ml",
            {"exchange_volume_ml": volume, "volume_actually_cycled_ml": moved.media_ml},
        )

    def set_exchange_volume_ml(self, value: Any) -> None:
        self.change_positive("exchange_volume_ml", value)


@provider(IAutomationKind)
class FedBatch(Periodic):
    """Adds ``dosing_volume_ml`` of media every ``duration`` minutes and removes nothing; sleeps at max fill."""

    automation_name = "fed_batch"
    help = "Add dosing_volume_ml of media every duration minutes, without removing any"
    needs_calibrations = ("media",)
    positive_settings = ("dosing_volume_ml", "duration")
    published_settings = {
        "dosing_volume_ml": Setting("float", settable=True, unit="mL"),
        "duration": Setting("float", settable=True, unit="min"),
    }
    options = {
        "dosing_volume_ml": Option(
            "float", default=0.5, help="ml of media added each run"
        ),
        "duration": Option("float", default=20.0, help="minutes between runs"),
    }

    async def execute(self) -> Event:
        volume = self.setting("dosing_volume_ml")
        self.guard_fill(volume)
        added = await self.pump("add_media", volume)
        return Event(
            "AddMediaEvent",
            f"added {added:.2f} ml",
            {"volume_actually_added_ml": added},
        )

    def set_dosing_volume_ml(self, value: Any) -> None:
        self.change_positive("dosing_volume_ml", value)


# biomass signal -> (topic under the experiment, how to read the value from its JSON)
SIGNALS: dict[str, tuple[str, str]] = {
    "normalized_od": ("growth_rate_calculating/od_filtered", "od_filtered"),
    "od_fused": ("od_reading/od_fused", "od_fused"),
    "od": ("od_reading/ods", "ods"),
}


def biomass_of(signal: str, payload: bytes) -> tuple[float, str]:
    """The value and timestamp in a signal's message; ValueError when it has neither."""
    data = json.loads(payload)
    key = SIGNALS[signal][1]
    value = data[key]
    if signal == "od":  # every signal channel's reading: the first channel's
        value = data[key][min(data[key])]["od"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} is not a number")
    return float(value), str(data["timestamp"])


@provider(IAutomationKind)
class Turbidostat(DosingAutomation):
    """Exchanges ``exchange_volume_ml`` whenever the biomass signal reaches ``target_biomass``."""

    automation_name = "turbidostat"
    help = "Exchange exchange_volume_ml each time biomass reaches target_biomass"
    needs_calibrations = ("media", "waste")
    positive_settings = ("target_biomass", "exchange_volume_ml")
    published_settings = {
        "target_biomass": Setting("float", settable=True),
        "exchange_volume_ml": Setting("float", settable=True, unit="mL"),
        "biomass_signal": Setting("string"),
    }
    options = {
        "target_biomass": Option("float", help="exchange when the signal reaches this"),
        "exchange_volume_ml": Option(
            "float", default=1.0, help="ml exchanged each time"
        ),
        "biomass_signal": Option("string", default="auto", choices=("auto", *SIGNALS)),
    }

    async def on_init(self) -> None:
        await super().on_init()
        signal = self.given["biomass_signal"]
        if signal == "auto":
            cache = self.context.unit_state.cache
            calibrated = any(
                cache.get(ACTIVE_NAMESPACE, device) for device in OD_DEVICES
            )
            signal = "od" if calibrated else "normalized_od"
        self.signal = signal
        self.publish("biomass_signal", signal)
        self.latest_biomass: float | None = None
        self._last_input = self.clock.seconds()
        self._quiet_until = 0.0
        self._stale_reported = False
        self.subscribe(
            f"pioreactor/{self.unit}/{self.experiment}/{SIGNALS[signal][0]}",
            self._on_biomass,
        )
        self.every(STALE_CHECK_SECONDS, self._check_fresh, now=False)

    def _on_biomass(self, message: Any) -> None:
        if message.retain:
            return  # an old value, not a fresh measurement
        try:
            value, timestamp = biomass_of(self.signal, message.payload)
            measured = parse_iso(timestamp).timestamp()
        except (ValueError, KeyError, IndexError, TypeError) as e:
            self.log.warning(
                f"{self.automation_name}: ignoring a {self.signal} message it cannot read: {e}"
            )
            return
        now = self.clock.seconds()
        if now - measured > STALE_SECONDS:
            self.record_event(
                Event(
                    "ErrorOccurred",
                    f"the latest {self.signal} is {now - measured:.0f} s old",
                )
            )
            return
        self.latest_biomass, self._last_input, self._stale_reported = value, now, False
        if value >= self.setting("target_biomass") and now >= self._quiet_until:
            self.start_work(self.exchange(value))

    def _check_fresh(self) -> None:
        age = self.clock.seconds() - self._last_input
        if age > STALE_SECONDS and not self._stale_reported:
            self._stale_reported = True
            self.record_event(
                Event("ErrorOccurred", f"no fresh {self.signal} for {age:.0f} s")
            )

    async def exchange(self, latest: float) -> Event:
        volume, target = (
            self.setting("exchange_volume_ml"),
            self.setting("target_biomass"),
        )
        try:
            moved = await self.execute_io_action(waste_ml=volume, media_ml=volume)
        finally:
            self._quiet_until = self.clock.seconds() + TURBIDOSTAT_QUIET_SECONDS
        return Event(
            "DilutionEvent",
            f"latest {self.signal} {latest:.3f} >= target {target:g}; exchanged {moved.media_ml:.2f} ml",
            {
                "latest_biomass": latest,
                "target_biomass": target,
                "resolved_biomass_signal": self.signal,
                "exchange_volume_ml": volume,
                "volume_actually_moved_ml": moved.media_ml,
            },
        )

    def set_target_biomass(self, value: Any) -> None:
        self.change_positive("target_biomass", value)

    def set_exchange_volume_ml(self, value: Any) -> None:
        self.change_positive("exchange_volume_ml", value)
