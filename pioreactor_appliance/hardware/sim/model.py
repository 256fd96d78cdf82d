"""The physics behind one simulated Pioreactor: stirring motor and hall sensor, heater and vial
temperature, culture growth and dilution, photodiodes. Seeded and clock-injected, so a test with a
``Clock`` and a seed sees the same numbers every run.

``speed`` multiplies the slow processes (growth, heating) for demos. The motor and the pumps run
in real time, because the jobs time them: RPM is measured from tick deltas, doses from pump seconds.
"""

from __future__ import annotations

import math
import random

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall

from pioreactor_appliance.hardware.sim.board import Board
from pioreactor_appliance.hardware.sim.daemon import Daemon
from pioreactor_appliance.hardware.sim.devices import (
    ADS1114_ADDRESSES,
    RP2040_ADDRESS,
    TMP1075_ADDRESS,
    Ads1114,
    Rp2040Hat,
    Tmp1075,
)

I2C_BUS = 1
STEP_SECONDS = 0.1  # real seconds between model updates

# Stirring: RPM = MAX_RPM * (duty - STALL) / (1 - STALL) above the stall duty, with a first-order lag.
MAX_RPM = 1800.0
STALL_DUTY = 0.2
MOTOR_TAU_S = 1.0
RPM_NOISE = 3.0  # standard deviation per update, RPM
HALL_JITTER = 0.005  # relative standard deviation of each half revolution
MIN_RPM = 1.0  # below this the magnet is taken as still

# Heater: the vial settles at AMBIENT + HEATER_GAIN * duty with time constant HEATER_TAU_S.
AMBIENT_C = 22.0
HEATER_GAIN_C = 30.0
HEATER_TAU_S = 600.0

# Culture: logistic growth; pumps move PUMP_ML_PER_S while their duty is above 0.
INITIAL_OD = 0.05
CARRYING_OD = 3.0
DOUBLING_S = 2 * 3600.0
INITIAL_VOLUME_ML = 14.0
CAPACITY_ML = 40.0  # the default model, pioreactor_40ml
WASTE_TUBE_ML = 14.0  # the waste needle's depth: the pump cannot draw below it
PUMP_ML_PER_S = 1.0

# Photodiodes, per unit IR intensity (LED DAC channel A / 255): pd1 is the reference beside the
# LED, pd2 the 90° scatter signal, proportional to OD.
PD1_VOLTS = 0.5
PD2_VOLTS_PER_OD = 0.25
PD_DARK_VOLTS = 0.002
PD_NOISE_VOLTS = 0.0002
AUX_VOLTS = 5.0 * 0.134  # a 5 V PWM rail through the 0.134 divider
VERSION_VOLTS = 0.0  # the HAT version divider is not modelled


@attrs.frozen
class Pins:
    """BCM GPIOs of the default HAT 1.2 layout (section 4 of the hardware reference)."""

    stirring: int = 17
    heater: int = 18
    media: int = 13
    alt_media: int = 16
    waste: int = 12
    hall: int = 21


@attrs.define
class HallSensor:
    """Toggles the hall GPIO once per half revolution, so the falling edges come at RPM/60 per second
    with the tick of the moment they happen."""

    clock: IReactorTime
    board: Board
    gpio: int
    model: PioreactorModel
    _call: IDelayedCall | None = None
    _due: float = 0.0

    def start(self) -> None:
        self.board.drive(self.gpio, 1)
        self._due = self.clock.seconds()
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _schedule(self) -> None:
        """Edges are timed from the previous edge, not from when its timer ran, so ticks stay exact."""
        rpm = self.model.rpm
        now = self.clock.seconds()
        if rpm < MIN_RPM:
            self._due = now
            self._call = self.clock.callLater(STEP_SECONDS, self._schedule)
            return
        self._due = max(self._due + 30.0 / rpm * (1 + self.model.rng.gauss(0, HALL_JITTER)), now - STEP_SECONDS)
        self._call = self.clock.callLater(max(self._due - now, 0.0), self._toggle)

    def _toggle(self) -> None:
        self.board.drive(self.gpio, 1 - self.board.levels[self.gpio], at=self._due)
        self._schedule()


@attrs.define
class PioreactorModel:
    clock: IReactorTime
    board: Board
    rng: random.Random
    speed: float = 1.0
    pins: Pins = Pins()
    leds: list[int] = attrs.field(factory=lambda: [0, 0, 0, 0])
    rpm: float = 0.0
    celsius: float = AMBIENT_C
    od: float = INITIAL_OD
    volume_ml: float = INITIAL_VOLUME_ML
    _last: float = 0.0
    _loop: LoopingCall | None = None
    _hall: HallSensor | None = None

    def start(self) -> None:
        self._last = self.clock.seconds()
        self._loop = LoopingCall(self.step)
        self._loop.clock = self.clock
        self._loop.start(STEP_SECONDS, now=False)
        self._hall = HallSensor(self.clock, self.board, self.pins.hall, self)
        self._hall.start()

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._hall is not None:
            self._hall.stop()

    def step(self) -> None:
        now = self.clock.seconds()
        dt, self._last = now - self._last, now
        self._stir(dt)
        self._heat(dt * self.speed)
        self._grow(dt * self.speed)
        self._pump(dt)

    def _stir(self, dt: float) -> None:
        duty = self.board.duty_fraction(self.pins.stirring)
        target = MAX_RPM * (duty - STALL_DUTY) / (1 - STALL_DUTY) if duty > STALL_DUTY else 0.0
        self.rpm = target + (self.rpm - target) * math.exp(-dt / MOTOR_TAU_S)
        if target:
            self.rpm = max(self.rpm + self.rng.gauss(0, RPM_NOISE), 0.0)

    def _heat(self, dt: float) -> None:
        settled = AMBIENT_C + HEATER_GAIN_C * self.board.duty_fraction(self.pins.heater)
        self.celsius = settled + (self.celsius - settled) * math.exp(-dt / HEATER_TAU_S)

    def _grow(self, dt: float) -> None:
        """The logistic curve's exact step, so a large ``speed`` stays stable."""
        rate = math.log(2) / DOUBLING_S
        self.od = CARRYING_OD / (1 + (CARRYING_OD / self.od - 1) * math.exp(-rate * dt))

    def _pump(self, dt: float) -> None:
        added = PUMP_ML_PER_S * dt * (self._running(self.pins.media) + self._running(self.pins.alt_media))
        if added:
            self.od *= self.volume_ml / (self.volume_ml + added)
            self.volume_ml = min(self.volume_ml + added, CAPACITY_ML)
        if self._running(self.pins.waste):
            self.volume_ml = max(self.volume_ml - PUMP_ML_PER_S * dt, min(self.volume_ml, WASTE_TUBE_ML))

    def _running(self, gpio: int) -> bool:
        return self.board.duty_fraction(gpio) > 0

    def ir_intensity(self) -> float:
        return self.leds[0] / 255

    def pd1_volts(self) -> float:
        return PD_DARK_VOLTS + PD1_VOLTS * self.ir_intensity() + self.rng.gauss(0, PD_NOISE_VOLTS)

    def pd2_volts(self) -> float:
        return PD_DARK_VOLTS + PD2_VOLTS_PER_OD * self.od * self.ir_intensity() + self.rng.gauss(0, PD_NOISE_VOLTS)

    def adc_volts(self, channel: int) -> float:
        """HAT 1.2 ADC channels: version 0, aux 1, pd1 2, pd2 3."""
        return (lambda: VERSION_VOLTS, lambda: AUX_VOLTS, self.pd1_volts, self.pd2_volts)[channel]()


def build_pioreactor(clock: IReactorTime, seed: int = 0, speed: float = 1.0) -> tuple[Daemon, PioreactorModel]:
    """A daemon with a HAT 1.2 (RP2040), a heating PCB (TMP1075) and v1.5 ADS1114 photodiode ADCs,
    all reading one model. Call ``model.start()`` to let time act on it."""
    daemon = Daemon.create(clock)
    model = PioreactorModel(clock, daemon.board, random.Random(seed), speed)
    hat = Rp2040Hat(volts=model.adc_volts, leds=model.leds)
    daemon.i2c.attach(I2C_BUS, RP2040_ADDRESS, hat)
    daemon.i2c.attach(I2C_BUS, TMP1075_ADDRESS, Tmp1075(celsius=lambda: model.celsius))
    daemon.i2c.attach(I2C_BUS, ADS1114_ADDRESSES["pd1"], Ads1114(volts=model.pd1_volts))
    daemon.i2c.attach(I2C_BUS, ADS1114_ADDRESSES["pd2"], Ads1114(volts=model.pd2_volts))
    return daemon, model
