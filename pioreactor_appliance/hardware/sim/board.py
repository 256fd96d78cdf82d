"""The simulated Pi's GPIO block: modes, pulls, levels, software and hardware PWM, tick, watchdogs.

Methods answer pigpio results (a value, 0, or a negative ``Err``) so the daemon can pass them
straight back. Level changes and watchdog expiries go to observers (the notification handles).
"""

from __future__ import annotations

from typing import Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pioreactor_appliance.hardware.sim.protocol import Err

GPIO_COUNT = 54
USER_GPIO_COUNT = 32
INPUT, OUTPUT = 0, 1
MAX_MODE = 7
MAX_PUD = 2

#: Software PWM frequencies at pigpiod's default 5 µs sample rate; a request gets the closest.
SOFT_PWM_FREQUENCIES = (8000, 4000, 2000, 1600, 1000, 800, 500, 400, 320, 250, 200, 160, 100, 80, 50, 40, 20, 10)
SOFT_PWM_BASE_HZ = 200_000  # real range = 200 kHz / frequency
DEFAULT_FREQUENCY = 800
DEFAULT_RANGE = 255
MIN_RANGE, MAX_RANGE = 25, 40000

#: Hardware PWM: GPIO -> channel (12/18 share PWM0, 13/19 share PWM1); duty is out of 1e6.
HARDWARE_PWM_CHANNELS = {12: 0, 18: 0, 13: 1, 19: 1}
HARDWARE_DUTY_RANGE = 1_000_000
HARDWARE_BASE_HZ = 250_000_000
MAX_HARDWARE_FREQUENCY = 187_500_000

MAX_WATCHDOG_MS = 60000
MAX_GLITCH_US = 300000


def quantise_frequency(hz: int) -> int:
    """The software PWM frequency pigpiod picks for a request (closest, ties to the higher)."""
    return min(SOFT_PWM_FREQUENCIES, key=lambda f: (abs(f - hz), -f))


class LevelObserver(Protocol):
    def level_changed(self, tick: int, levels: int, changed: int) -> None: ...

    def watchdog_expired(self, tick: int, gpio: int) -> None: ...


@attrs.define
class SoftPwm:
    duty: int = 0
    range: int = DEFAULT_RANGE
    frequency: int = DEFAULT_FREQUENCY


@attrs.define
class HardwarePwm:
    frequency: int = 0
    duty: int = 0


@attrs.define
class Board:
    """One Pi's GPIO state, timed by an injected clock so tests control ticks."""

    clock: IReactorTime
    modes: list[int] = attrs.field(factory=lambda: [INPUT] * GPIO_COUNT)
    pulls: list[int] = attrs.field(factory=lambda: [0] * GPIO_COUNT)
    levels: list[int] = attrs.field(factory=lambda: [0] * GPIO_COUNT)
    soft_pwm: dict[int, SoftPwm] = attrs.field(factory=dict)
    hardware_channels: dict[int, HardwarePwm] = attrs.field(factory=lambda: {0: HardwarePwm(), 1: HardwarePwm()})
    hardware_gpios: set[int] = attrs.field(factory=set)
    glitch_filters: dict[int, int] = attrs.field(factory=dict)
    observers: list[LevelObserver] = attrs.field(factory=list)
    _watchdogs: dict[int, tuple[float, IDelayedCall]] = attrs.field(factory=dict)

    def tick(self, at: float | None = None) -> int:
        """Microseconds mod 2^32, as pigpiod's TICK: now, or at a clock time ``at``."""
        return int((self.clock.seconds() if at is None else at) * 1_000_000) & 0xFFFFFFFF

    def bank1(self) -> int:
        return sum(level << gpio for gpio, level in enumerate(self.levels[:USER_GPIO_COUNT]))

    # --- modes and levels -------------------------------------------------------------

    def set_mode(self, gpio: int, mode: int) -> int:
        if gpio >= GPIO_COUNT:
            return Err.BAD_GPIO
        if mode > MAX_MODE:
            return Err.BAD_MODE
        self.modes[gpio] = mode
        return 0

    def get_mode(self, gpio: int) -> int:
        return Err.BAD_GPIO if gpio >= GPIO_COUNT else self.modes[gpio]

    def set_pull(self, gpio: int, pud: int) -> int:
        if gpio >= GPIO_COUNT:
            return Err.BAD_GPIO
        if pud > MAX_PUD:
            return Err.BAD_PUD
        self.pulls[gpio] = pud
        return 0

    def read(self, gpio: int) -> int:
        return Err.BAD_GPIO if gpio >= GPIO_COUNT else self.levels[gpio]

    def write(self, gpio: int, level: int) -> int:
        """A client write: the pin becomes an output and any PWM on it stops (as in pigpiod)."""
        if gpio >= GPIO_COUNT:
            return Err.BAD_GPIO
        if level > 1:
            return Err.BAD_LEVEL
        self.modes[gpio] = OUTPUT
        self.soft_pwm.pop(gpio, None)
        self.hardware_gpios.discard(gpio)
        self.drive(gpio, level)
        return 0

    def drive(self, gpio: int, level: int, at: float | None = None) -> None:
        """Set a level from the board side (a sensor, a button); reports it when it changes.

        ``at`` is when the edge really happened, for a generator whose timer fired late."""
        if self.levels[gpio] == level:
            return
        self.levels[gpio] = level
        self._rearm_watchdog(gpio)
        if gpio < USER_GPIO_COUNT:
            tick, levels = self.tick(at), self.bank1()
            for observer in list(self.observers):
                observer.level_changed(tick, levels, 1 << gpio)

    # --- software PWM -----------------------------------------------------------------

    def set_duty(self, gpio: int, duty: int) -> int:
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        pwm = self.soft_pwm.get(gpio) or SoftPwm()
        if duty > pwm.range:
            return Err.BAD_DUTYCYCLE
        pwm.duty = duty
        self.soft_pwm[gpio] = pwm
        self.hardware_gpios.discard(gpio)
        self.modes[gpio] = OUTPUT
        self.drive(gpio, int(duty == pwm.range))
        return 0

    def set_range(self, gpio: int, range_: int) -> int:
        """New range; an active duty is rescaled to keep its fraction. Answers the real range."""
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        if not MIN_RANGE <= range_ <= MAX_RANGE:
            return Err.BAD_DUTYRANGE
        pwm = self.soft_pwm.setdefault(gpio, SoftPwm())
        pwm.duty = pwm.duty * range_ // pwm.range
        pwm.range = range_
        return SOFT_PWM_BASE_HZ // pwm.frequency

    def set_frequency(self, gpio: int, hz: int) -> int:
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        pwm = self.soft_pwm.setdefault(gpio, SoftPwm())
        pwm.frequency = quantise_frequency(hz)
        return pwm.frequency

    def get_duty(self, gpio: int) -> int:
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        if gpio in self.hardware_gpios:
            return self.hardware_channels[HARDWARE_PWM_CHANNELS[gpio]].duty
        pwm = self.soft_pwm.get(gpio)
        return Err.NOT_PWM_GPIO if pwm is None else pwm.duty

    def get_range(self, gpio: int) -> int:
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        if gpio in self.hardware_gpios:
            return HARDWARE_DUTY_RANGE
        return self.soft_pwm.get(gpio, SoftPwm()).range

    def get_real_range(self, gpio: int) -> int:
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        if gpio in self.hardware_gpios:
            return HARDWARE_BASE_HZ // self.hardware_channels[HARDWARE_PWM_CHANNELS[gpio]].frequency
        return SOFT_PWM_BASE_HZ // self.soft_pwm.get(gpio, SoftPwm()).frequency

    def get_frequency(self, gpio: int) -> int:
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        if gpio in self.hardware_gpios:
            return self.hardware_channels[HARDWARE_PWM_CHANNELS[gpio]].frequency
        return self.soft_pwm.get(gpio, SoftPwm()).frequency

    # --- hardware PWM -----------------------------------------------------------------

    def hardware_pwm(self, gpio: int, hz: int, duty: int) -> int:
        """Frequency 0 turns the channel off; every GPIO on a channel shares its setting."""
        if gpio >= GPIO_COUNT:
            return Err.BAD_GPIO
        if gpio not in HARDWARE_PWM_CHANNELS:
            return Err.NOT_HPWM_GPIO
        if hz > MAX_HARDWARE_FREQUENCY:
            return Err.BAD_HPWM_FREQ
        if duty > HARDWARE_DUTY_RANGE:
            return Err.BAD_HPWM_DUTY
        self.hardware_channels[HARDWARE_PWM_CHANNELS[gpio]] = HardwarePwm(hz, duty)
        self.soft_pwm.pop(gpio, None)
        if hz == 0:
            self.hardware_gpios.discard(gpio)
            self.drive(gpio, 0)
        else:
            self.hardware_gpios.add(gpio)
            self.drive(gpio, int(duty == HARDWARE_DUTY_RANGE))
        return 0

    def duty_fraction(self, gpio: int) -> float:
        """How hard a load on this pin is driven, 0..1, whatever drives it (for the physics)."""
        if gpio in self.hardware_gpios:
            channel = self.hardware_channels[HARDWARE_PWM_CHANNELS[gpio]]
            return channel.duty / HARDWARE_DUTY_RANGE
        pwm = self.soft_pwm.get(gpio)
        if pwm is not None:
            return pwm.duty / pwm.range
        return float(self.modes[gpio] == OUTPUT and self.levels[gpio])

    # --- watchdogs and filters --------------------------------------------------------

    def set_watchdog(self, gpio: int, ms: int) -> int:
        """Report a timeout every ``ms`` without a level change on ``gpio``; 0 cancels."""
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        if ms > MAX_WATCHDOG_MS:
            return Err.BAD_WDOG_TIMEOUT
        self._cancel_watchdog(gpio)
        if ms:
            self._schedule_watchdog(gpio, ms / 1000)
        return 0

    def set_glitch_filter(self, gpio: int, steady_us: int) -> int:
        """Recorded only: simulated edges are clean."""
        if gpio >= USER_GPIO_COUNT:
            return Err.BAD_USER_GPIO
        if steady_us > MAX_GLITCH_US:
            return Err.BAD_FILTER
        self.glitch_filters[gpio] = steady_us
        return 0

    def stop(self) -> None:
        """Cancel pending watchdogs so nothing outlives the board."""
        for gpio in list(self._watchdogs):
            self._cancel_watchdog(gpio)

    def _schedule_watchdog(self, gpio: int, seconds: float) -> None:
        self._watchdogs[gpio] = (seconds, self.clock.callLater(seconds, self._watchdog_fired, gpio))

    def _cancel_watchdog(self, gpio: int) -> None:
        entry = self._watchdogs.pop(gpio, None)
        if entry is not None and entry[1].active():
            entry[1].cancel()

    def _rearm_watchdog(self, gpio: int) -> None:
        entry = self._watchdogs.get(gpio)
        if entry is not None:
            entry[1].reset(entry[0])

    def _watchdog_fired(self, gpio: int) -> None:
        self._schedule_watchdog(gpio, self._watchdogs[gpio][0])
        tick = self.tick()
        for observer in list(self.observers):
            observer.watchdog_expired(tick, gpio)
