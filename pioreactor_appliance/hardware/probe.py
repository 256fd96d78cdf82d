"""Does every I2C chip the HAT and the reactor model need answer? The ``/unit_api/hardware/check`` probe.

Each chip is asked for one register, in its own pigpio call on the hardware
thread that opens a handle, reads and closes it, so a probe leaves no handle
behind. A read that fails, for whatever reason, counts the chip as missing.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from twisted.internet.defer import Deferred

from ..models import Model
from .connection import PigpioConnection
from .hat import I2C_BUS, RP2040_ADDRESS, TMP1075_ADDRESS, Hat
from .sensors import Ads1115, Dac43608

# The photodiode ADCs of v1.5 models (the XR has four photodiodes).
ADS1114_V15 = (0x48, 0x49)
ADS1114_XR = (0x48, 0x49, 0x4A, 0x4B)
VERSION_REGISTER = 0x08


def hat_major(hat: Hat) -> str:
    return hat.version.split(".", 1)[0]


def expected_devices(hat: Hat, model: Model) -> dict[int, int]:
    """The chips this HAT and model should have, as {address: register to read}."""
    devices = {TMP1075_ADDRESS: 0x00}
    if hat.has_rp2040:
        devices[RP2040_ADDRESS] = VERSION_REGISTER
    else:
        devices[Ads1115.ADDRESS] = 0x00
        devices[Dac43608.ADDRESS] = 0x08
    if model.version == "1.5":
        for address in ADS1114_XR if model.name.endswith("_XR") else ADS1114_V15:
            devices[address] = 0x00
    return dict(sorted(devices.items()))


def _answers(pi: Any, address: int, register: int) -> bool:
    """On the hardware thread: one 2-byte read, the handle closed whatever happens."""
    try:
        handle = pi.i2c_open(I2C_BUS, address)
    except Exception:
        return False
    try:
        got, _ = pi.i2c_read_i2c_block_data(handle, register, 2)
        return got == 2
    except Exception:
        return False
    finally:
        with suppress(Exception):
            pi.i2c_close(handle)


async def check_i2c(
    connection: PigpioConnection, hat: Hat, model: Model
) -> dict[str, str]:
    """``{"status": "ok"}``, ``{"status": "warning", "reason": ...}`` naming the missing chips, or ``skipped``."""
    if hat_major(hat) != "1":
        return {
            "status": "skipped",
            "reason": "hardware check only applies to HAT v1.x",
        }
    missing = []
    for address, register in expected_devices(hat, model).items():
        answered: Deferred[bool] = connection.call(
            lambda pi, a=address, r=register: _answers(pi, a, r)
        )
        try:
            ok = await answered
        except Exception:
            ok = False
        if not ok:
            missing.append(f"0x{address:02x}")
    if missing:
        return {
            "status": "warning",
            "reason": f"missing I2C devices at {', '.join(missing)}",
        }
    return {"status": "ok"}
