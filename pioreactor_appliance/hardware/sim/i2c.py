"""I2C buses and pigpio's handles onto them, with every pigpio call reduced to raw writes and reads.

A device only implements ``write(data)`` (the first byte is usually a register pointer) and
``read(count)``; SMBus-style calls are a pointer write followed by a read, as on the wire.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

import attrs

from pioreactor_appliance.hardware.sim.protocol import Err

I2C_BUSES = 2
MAX_ADDRESS = 0x7F
I2C_SLOTS = 512
MAX_BLOCK = 32
MAX_DEVICE_READ = 8192


class I2cNack(Exception):
    """The device refuses this transfer (unknown register, wrong length)."""


class I2cDevice(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, count: int) -> bytes: ...


@attrs.define
class I2cHandle:
    bus: int
    address: int
    owner: Hashable


@attrs.define
class I2c:
    """Devices by (bus, address) and the open handles; failures are pigpio's error codes."""

    devices: dict[tuple[int, int], I2cDevice] = attrs.field(factory=dict)
    handles: dict[int, I2cHandle] = attrs.field(factory=dict)

    def attach(self, bus: int, address: int, device: I2cDevice) -> None:
        self.devices[(bus, address)] = device

    def open(self, bus: int, address: int, flags: int, owner: Hashable) -> int:
        """A handle without probing: like pigpiod, a missing device only fails at transfer time."""
        if bus >= I2C_BUSES:
            return Err.BAD_I2C_BUS
        if address > MAX_ADDRESS:
            return Err.BAD_I2C_ADDR
        if flags:
            return Err.BAD_FLAGS
        free = next((h for h in range(I2C_SLOTS) if h not in self.handles), None)
        if free is None:
            return Err.NO_HANDLE
        self.handles[free] = I2cHandle(bus, address, owner)
        return free

    def close(self, handle: int) -> int:
        return 0 if self.handles.pop(handle, None) is not None else Err.BAD_HANDLE

    def release(self, owner: Hashable) -> None:
        """Close every handle a departed connection left open."""
        for handle in [h for h, entry in self.handles.items() if entry.owner == owner]:
            del self.handles[handle]

    def write(self, handle: int, data: bytes) -> int:
        if handle not in self.handles:
            return Err.BAD_HANDLE
        try:
            self._device(handle).write(data)
        except I2cNack:
            return Err.I2C_WRITE_FAILED
        return 0

    def read(self, handle: int, pointer: bytes, count: int) -> int | bytes:
        """Write ``pointer`` (if any) then read ``count`` bytes: the data, or an error code."""
        if handle not in self.handles:
            return Err.BAD_HANDLE
        try:
            device = self._device(handle)
            if pointer:
                device.write(pointer)
            return device.read(count)
        except I2cNack:
            return Err.I2C_READ_FAILED

    def _device(self, handle: int) -> I2cDevice:
        entry = self.handles[handle]
        device = self.devices.get((entry.bus, entry.address))
        if device is None:
            raise I2cNack(f"nothing answers at bus {entry.bus} address {entry.address:#04x}")
        return device
