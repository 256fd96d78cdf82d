"""PWM outputs, with the safety limits enforced here rather than trusted to the jobs.

Duty cycles are percentages; pigpio's range is set to 10000 so 0.01 % steps map
exactly whatever the frequency. Every output registers its safe state (off)
with the connection, which applies it on each connection and at shutdown.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .connection import PigpioConnection

RANGE = 10000
log = Logger()


class OutputRefused(Exception):
    """A request the output's safety limits do not allow; the message says which."""


class PwmOutput:
    def __init__(self, connection: PigpioConnection, name: str, gpio: int, frequency_hz: int) -> None:
        self.name, self.gpio, self.frequency_hz = name, gpio, frequency_hz
        self._connection = connection
        self.duty = 0.0
        connection.add_safe_state(self._put_off)

    def set_duty(self, percent: float) -> Deferred[None]:
        if not 0.0 <= percent <= 100.0:
            raise OutputRefused(f"{self.name}: duty cycle must be 0-100 %, not {percent}")
        value = round(percent * RANGE / 100)

        def apply(pi: Any) -> None:
            pi.set_PWM_frequency(self.gpio, self.frequency_hz)
            pi.set_PWM_range(self.gpio, RANGE)
            pi.set_PWM_dutycycle(self.gpio, value)

        def applied(_: None) -> None:
            self.duty = percent

        return self._connection.call(apply).addCallback(applied)

    def off(self) -> Deferred[None]:
        return self.set_duty(0.0)

    def _put_off(self, pi: Any) -> None:
        pi.set_PWM_dutycycle(self.gpio, 0)
        self.duty = 0.0


class Heater(PwmOutput):
    """Capped duty, and a latch that cuts heating above the model's limit until the vial cools."""

    def __init__(
        self, connection: PigpioConnection, gpio: int, frequency_hz: int, *, max_duty: float, disable_above: float, resume_below: float
    ) -> None:
        super().__init__(connection, "heater", gpio, frequency_hz)
        self.max_duty, self.disable_above, self.resume_below = max_duty, disable_above, resume_below
        self.cut_off = False

    def set_duty(self, percent: float) -> Deferred[None]:
        if self.cut_off and percent > 0:
            raise OutputRefused(f"heater: cut off above {self.disable_above:g} °C until the vial is below {self.resume_below:g} °C")
        if percent > self.max_duty:
            raise OutputRefused(f"heater: duty {percent:g} % is above the cap of {self.max_duty:g} % ([hardware] heater_max_duty)")
        return super().set_duty(percent)

    def observe_temperature(self, celsius: float) -> Deferred[None] | None:
        """Feed every reading here; above the limit the heater goes off and stays off until it cools."""
        if celsius >= self.disable_above and not self.cut_off:
            self.cut_off = True
            log.error("Heater cut off: the vial is at {celsius:.1f} °C, above {limit:g} °C", celsius=celsius, limit=self.disable_above)
            return PwmOutput.set_duty(self, 0.0)
        if self.cut_off and celsius < self.resume_below:
            self.cut_off = False
            log.info("Heater may run again: the vial is at {celsius:.1f} °C", celsius=celsius)
        return None


class Pump(PwmOutput):
    """Runs only for a bounded time, and always stops on its own."""

    def __init__(self, connection: PigpioConnection, name: str, gpio: int, frequency_hz: int, clock: IReactorTime, *, max_seconds: float) -> None:
        super().__init__(connection, name, gpio, frequency_hz)
        self._clock = clock
        self.max_seconds = max_seconds
        self._stop: IDelayedCall | None = None

    def set_duty(self, percent: float) -> Deferred[None]:
        if percent > 0 and (self._stop is None or not self._stop.active()):
            raise OutputRefused(f"{self.name}: a pump runs only through run_for(seconds), so it always stops")
        return super().set_duty(percent)

    def run_for(self, seconds: float, percent: float = 100.0) -> Deferred[None]:
        """Start, and schedule the stop before the start is even sent."""
        if not 0 < seconds <= self.max_seconds:
            raise OutputRefused(f"{self.name}: a run lasts 0-{self.max_seconds:g} s ([hardware] pump_max_seconds), not {seconds:g}")
        if self._stop is not None and self._stop.active():
            raise OutputRefused(f"{self.name}: already running")
        self._stop = self._clock.callLater(seconds, self._finish)
        return super().set_duty(percent).addErrback(self._abort)

    def stop(self) -> Deferred[None]:
        if self._stop is not None and self._stop.active():
            self._stop.cancel()
        return super().set_duty(0.0)

    def _finish(self) -> None:
        super().set_duty(0.0).addErrback(lambda f: log.failure("{name} did not stop", f, name=self.name))

    def _abort(self, failure: Any) -> Any:
        if self._stop is not None and self._stop.active():
            self._stop.cancel()
        return failure
