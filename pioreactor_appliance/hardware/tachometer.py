"""RPM from the stirring motor's hall sensor: one falling edge per revolution."""

from __future__ import annotations

from collections import deque

import pigpio
from twisted.internet.interfaces import IReactorTime

from .connection import PigpioConnection

TICK_WRAP = 1 << 32


class Tachometer:
    """Keeps the last edges' periods; ``rpm()`` averages them.

    Edges arrive on the reactor thread with pigpiod's µs tick, which wraps every
    ~71.6 minutes, so a negative delta gets 2**32 added.
    """

    def __init__(self, connection: PigpioConnection, gpio: int, clock: IReactorTime, window: int = 16, stale_seconds: float = 1.0) -> None:
        self._clock = clock
        self._stale_seconds = stale_seconds
        self._last_tick: int | None = None
        self._last_seen = 0.0
        self._periods: deque[int] = deque(maxlen=window)
        connection.watch(gpio, pigpio.FALLING_EDGE, self._edge)

    def _edge(self, gpio: int, level: int, tick: int) -> None:
        self._last_seen = self._clock.seconds()
        if self._last_tick is not None:
            delta = tick - self._last_tick
            self._periods.append(delta + TICK_WRAP if delta < 0 else delta)
        self._last_tick = tick

    def rpm(self) -> float:
        """The mean RPM over the recent edges; 0 when fewer than two arrived or none for ``stale_seconds`` (a stalled motor)."""
        if not self._periods or self._clock.seconds() - self._last_seen > self._stale_seconds:
            return 0.0
        mean_us = sum(self._periods) / len(self._periods)
        return 60e6 / mean_us if mean_us > 0 else 0.0

    def reset(self) -> None:
        """Forget old edges (after a duty change, or when the motor stopped)."""
        self._last_tick = None
        self._periods.clear()
