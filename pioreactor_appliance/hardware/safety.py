"""The heater's own watchdog: reads the vial's temperature while the heater may be warm.

The temperature job reads the sensor on its own schedule, or not at all when
nobody started it; the cut-off must not depend on that, so this service feeds
the heater's limit check itself.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .connection import HardwareUnavailable
from .outputs import Heater
from .sensors import Tmp1075

CHECK_SECONDS = 5.0


class HeaterGuard(Service):
    log = Logger()

    def __init__(self, heater: Heater, sensor: Tmp1075, clock: IReactorTime, interval: float = CHECK_SECONDS) -> None:
        self._heater, self._sensor, self._interval = heater, sensor, interval
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> Deferred[None] | None:
        if self._heater.duty == 0 and not self._heater.cut_off:
            return None  # cold and allowed: nothing to guard
        return self._sensor.read_celsius().addCallbacks(self._heater.observe_temperature, self._unread)

    def _unread(self, failure: Failure) -> None:
        """A failed read must not end the loop; the next one tries again."""
        if not failure.check(HardwareUnavailable):  # the connection already says so, and retries
            self.log.failure("Heater guard could not read the vial's temperature", failure)
