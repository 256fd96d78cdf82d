"""Temperature automations: the job ``temperature_automation``, which drives the heater under the vial.

The TMP1075 sits on the heating PCB, so while the heater runs it reads the PCB,
not the culture. The culture's temperature is inferred instead: every 200 s
(the first time ~95 s after start) the heater is switched off, the sensor is
read every 5 s, 21 times, the duty cycle is restored, and the temperature is
estimated from that cooling series. The heater is thus on at most ~47 % of the
time. Each new estimate is published as ``temperature`` and runs the
automation's ``execute()`` once.

The estimator is our own, not the reference's regression (whose coefficients
we do not have). The series is fitted with y(t) = A + B·exp(-t/τ). A falling
transient fast enough to have faded by the last samples (τ at most a third of
the window) is the PCB settling onto the vial, and its asymptote A is the
culture's temperature. Without one, the sensor already follows the vial (there
is nothing to remove but the vial's own slow cooling) and the last reading is
the culture's temperature now; as in the reference, so it is when the heater
was at 0 % before the series.

Safety, on a read every 53 s and on every sample of a series, against the
model's limits: above "reduce" the duty cycle drops by 10 %; above "disable"
it goes to 0 and the monitor is asked to blink code 6; above "shutdown" the
same, with an error in the log. The Heater driver caps the duty cycle and
latches its own cut-off; a duty it refuses is logged, not fatal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import provider

from ..hardware.outputs import OutputRefused
from ..hardware.unit import model_of
from .automation import Automation, Event, no_event
from .base import JobFailed
from .context import JobContext
from .pid import Pid
from .registry import IAutomationKind
from .settings import Option, Setting
from .states import State

FIRST_INFERENCE_S = 95.0
INFERENCE_EVERY_S = 200.0
SAMPLE_EVERY_S = 5.0
SAMPLES = 21
SAFETY_EVERY_S = 53.0
RECENTLY_HEATED_S = (
    10.0  # a raw reading at start would be the warm PCB's, not the vial's
)
QUICK_SAMPLES = 6  # one reading is the mean of these...
QUICK_SAMPLE_SPACING_S = (
    0.05  # ...taken this far apart, in one burst on the hardware thread
)
REDUCE_FACTOR = 0.9
OVERHEATED_BLINK = 6
FAST_FRACTION = (
    1 / 3
)  # a transient with τ up to this share of the window has faded by its end
TAU_GRID = 120  # τ values tried by the fit, log-spaced
CACHE_NAMESPACE = "temperature_automation"


@frozen
class Decay:
    """y(t) = asymptote + amplitude·exp(-t/tau_s)."""

    asymptote: float
    amplitude: float
    tau_s: float


def fit_decay(times: Sequence[float], values: Sequence[float]) -> Decay:
    """Least squares over τ on a log grid from 1 s to 100 windows; A and B are linear for each τ."""
    span = times[-1] - times[0]
    ratio = (100 * span) ** (1 / (TAU_GRID - 1))
    mean_y = sum(values) / len(values)
    best: tuple[float, Decay] | None = None
    for k in range(TAU_GRID):
        tau = ratio**k
        xs = [math.exp(-(t - times[0]) / tau) for t in times]
        mean_x = sum(xs) / len(xs)
        sxx = sum((x - mean_x) ** 2 for x in xs)
        if sxx < 1e-12:
            continue
        b = (
            sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True))
            / sxx
        )
        a = mean_y - b * mean_x
        sse = sum((a + b * x - y) ** 2 for x, y in zip(xs, values, strict=True))
        if best is None or sse < best[0]:
            best = (sse, Decay(a, b, tau))
    if best is None:
        raise ValueError("the series is too short to fit")
    return best[1]


def estimate_culture_temperature(
    previous_duty: float, readings: Sequence[float], spacing_s: float
) -> float:
    """The culture's temperature from a cooling series read ``spacing_s`` apart (see the module docstring)."""
    last = readings[-1]
    if previous_duty <= 0 or len(readings) < 4:
        return last
    times = [i * spacing_s for i in range(len(readings))]
    decay = fit_decay(times, readings)
    if decay.amplitude > 0 and decay.tau_s <= FAST_FRACTION * times[-1]:
        return decay.asymptote
    return last


@define
class _Inference:
    """One heater-off series in progress."""

    previous_duty: float
    readings: list[float] = field(factory=list)
    pending: IDelayedCall | None = None


class TemperatureAutomation(Automation):
    """What every temperature automation shares: the inference cycle, the safety checks, the heater."""

    automation_type = "temperature"
    stop_order = 1
    published_settings: ClassVar[Mapping[str, Setting]] = {
        "temperature": Setting("Temperature", unit="℃"),
        "heater_duty_cycle": Setting("float", unit="%"),
    }

    def __init__(
        self, context: JobContext, options: Mapping[str, Any], args: list[str]
    ) -> None:
        super().__init__(context, options, args)
        self.given = options
        self.latest_temperature: float | None = None
        self._duty = 0.0  # what the automation wants; the heater is at 0 while a series is sampled
        self._inference: _Inference | None = None
        self._recently_heated = False

    async def execute(self) -> Event:
        """Runs once per new ``temperature``; subclasses decide the heater here."""
        raise NotImplementedError

    # --- lifecycle -------------------------------------------------------------

    async def on_init(self) -> None:
        await super().on_init()
        if self.hardware is None:
            raise JobFailed(
                f"{self.job_name} needs a heater, and this unit has no hardware"
            )
        self.model = model_of(self.config)
        self.heater, self.sensor = self.hardware.heater, self.hardware.temperature
        off_at = self.context.unit_state.cache.get(CACHE_NAMESPACE, "heater_off_at")
        self._recently_heated = self.heater.duty > 0 or (
            off_at is not None and self.clock.seconds() - off_at < RECENTLY_HEATED_S
        )
        await self._drive(0.0)
        self.every(SAFETY_EVERY_S, self._safety_read, now=False)

    def on_ready(self) -> Deferred[Any]:
        self.later(FIRST_INFERENCE_S, self._start_inferring)
        if self._recently_heated:
            return succeed(None)
        return self.run_guarded(self._first_reading)

    def on_sleeping(self) -> Deferred[None]:
        self._abandon_inference()
        return self._drive(0.0)

    def on_waking(self) -> Deferred[None]:
        return self._drive(self._duty)

    async def on_disconnected(self) -> None:
        super().on_disconnected()
        self._abandon_inference()
        await self._drive(0.0)
        self.context.unit_state.cache.set(
            CACHE_NAMESPACE, "heater_off_at", self.clock.seconds()
        )

    # --- temperature -----------------------------------------------------------

    def _read(self) -> Deferred[float]:
        return self.sensor.read_celsius_mean(QUICK_SAMPLES, QUICK_SAMPLE_SPACING_S)

    async def _first_reading(self) -> None:
        celsius = await self._read()
        self._check_safety(celsius)
        await self._new_temperature(celsius)

    def _start_inferring(self) -> None:
        self.every(INFERENCE_EVERY_S, self._infer)

    async def _infer(self) -> None:
        if self._inference is not None:
            return
        inference = self._inference = _Inference(previous_duty=self._duty)
        await self._drive(0.0)
        if inference is self._inference:
            inference.pending = self.later(SAMPLE_EVERY_S, self._sample, inference)

    async def _sample(self, inference: _Inference) -> None:
        try:
            celsius = await self._read()
        except Exception:
            if (
                inference is self._inference
            ):  # a lost series: the heater stays off until the next one
                self._inference = None
            raise
        if inference is not self._inference:
            return  # abandoned meanwhile (sleeping or stopping)
        inference.readings.append(celsius)
        self._check_safety(celsius)
        if len(inference.readings) < SAMPLES:
            inference.pending = self.later(SAMPLE_EVERY_S, self._sample, inference)
            return
        self._inference = None
        estimate = estimate_culture_temperature(
            inference.previous_duty, inference.readings, SAMPLE_EVERY_S
        )
        await self._drive(self._duty)
        await self._new_temperature(estimate)

    def _abandon_inference(self) -> None:
        inference, self._inference = self._inference, None
        if (
            inference is not None
            and inference.pending is not None
            and inference.pending.active()
        ):
            inference.pending.cancel()

    async def _new_temperature(self, celsius: float) -> None:
        if self.state is not State.READY or self.stopped:
            return
        self.latest_temperature = celsius
        self.publish(
            "temperature",
            {"timestamp": self.now_iso(), "temperature": round(celsius, 2)},
        )
        self.record_event(await self.execute())

    # --- safety ----------------------------------------------------------------

    async def _safety_read(self) -> None:
        self._check_safety(await self._read())

    def _check_safety(self, celsius: float) -> None:
        cutting = self.heater.observe_temperature(celsius)
        if cutting is not None:
            cutting.addErrback(self._heater_failed)
        model = self.model
        if celsius > model.max_temp_to_shutdown:
            # Deliberate deviation: the reference powers the Raspberry Pi off here. We only cut
            # the heater (and the driver latches it off); the power-off is to be wired to a
            # configured command later, rather than hard-coded into a job.
            self.log.error(
                f"The heating PCB is at {celsius:.1f} ℃, above {model.max_temp_to_shutdown:g} ℃: heater off; check the unit now"
            )
            self._blink()
            self._want(0.0)
        elif celsius > model.max_temp_to_disable_heating:
            self.log.warning(
                f"The heating PCB is at {celsius:.1f} ℃, above {model.max_temp_to_disable_heating:g} ℃: heater off"
            )
            self._blink()
            self._want(0.0)
        elif celsius > model.max_temp_to_reduce_heating:
            self.log.info(
                f"The heating PCB is at {celsius:.1f} ℃, above {model.max_temp_to_reduce_heating:g} ℃: heater duty cycle reduced by 10 %"
            )
            self._want(self._duty * REDUCE_FACTOR)

    def _blink(self) -> None:
        self.send(
            f"pioreactor/{self.unit}/$experiment/monitor/flicker_led_with_error_code",
            str(OVERHEATED_BLINK),
        )

    # --- the heater ------------------------------------------------------------

    def _want(self, duty: float) -> Deferred[None]:
        """The duty the automation asks for, within the heater's cap; applied now unless a series is being sampled."""
        self._duty = min(max(duty, 0.0), self.heater.max_duty)
        if self._inference is not None or self.state is not State.READY:
            return succeed(None)
        return self._drive(self._duty)

    def _drive(self, duty: float) -> Deferred[None]:
        """Set the heater; a refusal or a failure is logged, and what the heater does is published."""
        try:
            d = self.heater.set_duty(duty)
        except OutputRefused as e:
            self.log.warning(f"The heater refused {duty:.2f} %: {e}")
            self._duty = (
                self.heater.duty
            )  # the controller goes on from what the heater does
            d = succeed(None)
        return d.addErrback(self._heater_failed).addCallback(self._published_duty)

    def _published_duty(self, _: Any) -> None:
        if not self.stopped:
            self.publish("heater_duty_cycle", round(self.heater.duty, 2))

    def _heater_failed(self, failure: Failure) -> None:
        self.log.error(
            f"Could not set the heater: {failure.getErrorMessage() or failure.type.__name__}"
        )


@provider(IAutomationKind)
class Thermostat(TemperatureAutomation):
    """Holds ``target_temperature`` with a PID on the heater's duty cycle."""

    automation_name = "thermostat"
    published_settings: ClassVar[Mapping[str, Setting]] = {
        **TemperatureAutomation.published_settings,
        "target_temperature": Setting("float", settable=True, unit="℃"),
    }
    options: ClassVar[Mapping[str, Option]] = {
        "target_temperature": Option("float", help="℃ to hold the culture at")
    }
    CONFIG_SECTION = "temperature_automation.thermostat"

    async def on_init(self) -> None:
        await super().on_init()
        if self.given.get("target_temperature") is None:
            raise JobFailed("thermostat needs target_temperature (℃)")
        gains = {
            k: self.config.get_float(self.CONFIG_SECTION, k) for k in ("Kp", "Ki", "Kd")
        }
        target = self._within_limits(self.given["target_temperature"])
        self.pid = Pid(
            gains["Kp"],
            gains["Ki"],
            gains["Kd"],
            setpoint=target,
            output_limits=(-25.0, 25.0),
        )
        self.publish("target_temperature", target)

    def set_target_temperature(self, value: float) -> None:
        target = self._within_limits(value)
        self.pid.setpoint = target
        self.publish("target_temperature", target)

    def _within_limits(self, value: float) -> float:
        high = self.model.max_temp_to_reduce_heating
        target = min(max(value, 0.0), high)
        if target != value:
            self.log.warning(
                f"thermostat: target_temperature {value:g} ℃ is outside 0-{high:g} ℃; using {target:g} ℃"
            )
        return target

    async def execute(self) -> Event:
        latest = self.latest_temperature
        assert latest is not None  # execute runs only on a new temperature
        delta = self.pid.update(latest, dt=1)
        await self._want(self._duty + delta)
        return Event(
            "UpdatedHeaterDC",
            f"delta_dc={delta:.2f}",
            {
                "current_dc": round(self.heater.duty, 2),
                "delta_dc": delta,
                "target_temperature": self.pid.setpoint,
                "latest_temperature": latest,
            },
        )


@provider(IAutomationKind)
class OnlyRecordTemperature(TemperatureAutomation):
    """Keeps the heater off and publishes the culture's temperature."""

    automation_name = "only_record_temperature"

    async def execute(self) -> Event:
        return no_event()
