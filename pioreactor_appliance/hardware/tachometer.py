"""RPM from the stirring motor's hall sensor: one falling edge per revolution."""

from __future__ import annotations

from collections import deque

import pigpio
from twisted.internet.interfaces import IReactorTime

from .connection import PigpioConnection

TICK_WRAP = 1 << 32


class Tachometer:
    """Counts the edges of the last ``window_seconds`` and times them with pigpiod's µs ticks.

    A window, rather than the last N edges, follows a motor that speeds up or
    slows down, and reads 0 once the motor has stopped. Ticks wrap every ~71.6
    minutes, so a span that comes out negative gets 2**32 added.
    """

    def __init__(self, connection: PigpioConnection, gpio: int, clock: IReactorTime, window_seconds: float = 2.0) -> None:
        self._clock = clock
        self._window = window_seconds
        self._edges: deque[tuple[float, int]] = deque()
        connection.watch(gpio, pigpio.FALLING_EDGE, self._edge)

    def _edge(self, gpio: int, level: int, tick: int) -> None:
        self._edges.append((self._clock.seconds(), tick))
        self._forget_old()

    def _forget_old(self) -> None:
        horizon = self._clock.seconds() - self._window
        while self._edges and self._edges[0][0] < horizon:
            self._edges.popleft()

    def rpm(self) -> float:
        """Revolutions per minute over the window; 0 with fewer than two edges in it."""
        self._forget_old()
        if len(self._edges) < 2:
            return 0.0
        span = self._edges[-1][1] - self._edges[0][1]
        if span < 0:
            span += TICK_WRAP
        return (len(self._edges) - 1) * 60e6 / span if span > 0 else 0.0

    def reset(self) -> None:
        """Forget every edge, to measure only what follows (after a duty change)."""
        self._edges.clear()
