"""The HAT's onboard LED and button."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pigpio
from twisted.internet.defer import Deferred

from .connection import PigpioConnection


class OnboardLed:
    def __init__(self, connection: PigpioConnection, gpio: int) -> None:
        self._connection, self.gpio = connection, gpio
        connection.add_safe_state(self._put_off)

    def set(self, on: bool) -> Deferred[None]:
        def write(pi: Any) -> None:
            pi.set_mode(self.gpio, pigpio.OUTPUT)
            pi.write(self.gpio, 1 if on else 0)

        return self._connection.call(write)

    def _put_off(self, pi: Any) -> None:
        pi.set_mode(self.gpio, pigpio.OUTPUT)
        pi.write(self.gpio, 0)


class Button:
    """Calls ``on_change(pressed)`` on the reactor thread; whoever listens (the monitor job) sets ``on_change``.

    The pin is an input pulled down; pressing the button drives it high (the
    reference's monitor job reads it that way, as far as we know).
    """

    def __init__(self, connection: PigpioConnection, gpio: int, on_change: Callable[[bool], None] | None = None) -> None:
        self.gpio = gpio
        self.on_change = on_change
        connection.add_safe_state(self._as_input)
        connection.watch(gpio, pigpio.EITHER_EDGE, self._edge)

    def _as_input(self, pi: Any) -> None:
        pi.set_mode(self.gpio, pigpio.INPUT)
        pi.set_pull_up_down(self.gpio, pigpio.PUD_DOWN)

    def _edge(self, gpio: int, level: int, tick: int) -> None:
        if self.on_change is not None:
            self.on_change(level == 1)
