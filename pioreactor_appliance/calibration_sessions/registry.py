"""The protocols this unit offers: the reference's core ones for the devices its config has."""

from __future__ import annotations

from ..config import Config
from .od_standards import Standards, od_devices
from .protocol import Protocol
from .pumps import PUMP_DEVICES, DurationBased
from .stirring import DcBased


def core_protocols(config: Config) -> list[Protocol]:
    """Sorted as the reference lists them: by target device, priority, then title."""
    protocols: list[Protocol] = [DurationBased(device) for device in PUMP_DEVICES]
    protocols.append(DcBased("stirring"))
    protocols += [Standards(device) for device in od_devices(config)]
    return sorted(protocols, key=lambda p: (p.target_device, p.priority, p.title))
