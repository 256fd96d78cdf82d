"""A pigpio ``pi`` stand-in that records calls and keeps PWM and I2C state, for driver unit tests.

The drivers' end-to-end tests run the real pigpio client against the simulator;
these cover the drivers' own logic (limits, conversions, reconnection) fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance.hardware.connection import PigpioConnection


class FakePi:
    def __init__(self, registers: dict[tuple[int, int], bytes] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.duty: dict[int, int] = {}
        self.registers = registers or {}
        self.callbacks: list[tuple[int, int, Callable[[int, int, int], None]]] = []
        self.threads: set[str] = set()
        self.fail_with: Exception | None = None
        self.stopped = False

    def _record(self, *call: Any) -> None:
        self.threads.add(threading.current_thread().name)
        self.calls.append(call)
        if self.fail_with is not None:
            raise self.fail_with

    def set_PWM_frequency(self, gpio: int, hz: int) -> int:
        self._record("frequency", gpio, hz)
        return hz

    def set_PWM_range(self, gpio: int, value: int) -> int:
        self._record("range", gpio, value)
        return value

    def set_PWM_dutycycle(self, gpio: int, value: int) -> int:
        self._record("duty", gpio, value)
        self.duty[gpio] = value
        return 0

    def set_mode(self, gpio: int, mode: int) -> int:
        self._record("mode", gpio, mode)
        return 0

    def set_pull_up_down(self, gpio: int, pud: int) -> int:
        self._record("pud", gpio, pud)
        return 0

    def write(self, gpio: int, level: int) -> int:
        self._record("write", gpio, level)
        return 0

    def i2c_write_i2c_block_data(self, handle: int, register: int, data: list[int]) -> int:
        self._record("i2c_write_block", handle, register, list(data))
        self.registers[(handle, register)] = bytes(data)
        return 0

    def callback(self, gpio: int, edge: int, f: Callable[[int, int, int], None]) -> None:
        self._record("callback", gpio, edge)
        self.callbacks.append((gpio, edge, f))

    def i2c_open(self, bus: int, address: int) -> int:
        self._record("i2c_open", bus, address)
        return address

    def i2c_read_i2c_block_data(self, handle: int, register: int, count: int) -> tuple[int, bytearray]:
        self._record("i2c_read", handle, register, count)
        data = self.registers[(handle, register)][:count]
        return len(data), bytearray(data)

    def i2c_write_byte_data(self, handle: int, register: int, value: int) -> int:
        self._record("i2c_write", handle, register, value)
        self.registers[(handle, register)] = bytes([value])
        return 0

    def get_current_tick(self) -> int:
        self._record("tick")
        return 0

    def stop(self) -> None:
        self.stopped = True
        self._record("stop")


async def connect_fake(case: Any, pi: FakePi) -> PigpioConnection:
    """A running PigpioConnection whose daemon is ``pi``; stopped when the test ends."""
    connection = PigpioConnection(reactor, "127.0.0.1", 1, connect=lambda host, port: pi)
    connection.startService()
    case.addCleanup(lambda: connection.stopService() if connection.running else None)
    for _ in range(500):
        if connection.connected:
            return connection
        await deferLater(reactor, 0.005)
    raise AssertionError("the fake pigpiod never connected")
