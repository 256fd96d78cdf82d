"""The photodiodes' ADCs, behind one small interface: a burst of readings of some channels.

The reference reads the photodiodes through whichever ADC the model has: the
HAT's RP2040 (pd1 on ADC channel 2, pd2 on 3, HAT >= 1.1), or, on v1.5
models, one ADS1114 per photodiode. We follow it: v1.5 models (the default
config's 40 mL v1.5 among them) use the ADS1114s at a fixed 4.096 V range,
wide enough to see the 3.2 V safety limit; other models on a HAT >= 1.1 use the
RP2040. (Its two-byte reading, scaled as the reference does for firmware
>= 0.4, cannot exceed 1.65 V, so the 3.2 V limit never trips there.) HATs up to
1.0 (ADS1115) are not supported yet: a third subclass with its ``volts_on``
would add them.

A burst is one ``connection.call``: the rounds are paced by short sleeps on the
hardware thread, never on the reactor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed

from .connection import PigpioConnection
from .sensors import Ads1114, Rp2040

MAX_BURST_SECONDS = 0.25  # the burst holds the one hardware thread
ADS1114_GAIN = 1  # 4.096 V full scale
# Photodiode channel -> ADS1114 address, by model family (reference hardware map).
ADS1114_ADDRESSES = {
    "v1.5": {1: 0x48, 2: 0x49},
    "XR": {1: 0x49, 2: 0x4A, 3: 0x4B, 4: 0x48},
}
RP2040_ADC_CHANNELS = {1: 2, 2: 3}  # HAT 1.2: version 0, aux 1, pd1 2, pd2 3


class Photodiodes:
    """Subclasses say which channels they have and how one is read on the hardware thread."""

    name = "photodiodes"

    def __init__(self, connection: PigpioConnection, channels: Sequence[int]) -> None:
        self._connection = connection
        self.channels = tuple(channels)

    def prepare(self) -> Deferred[None]:
        """Put the ADCs in the mode bursts expect; called once before the first burst."""
        return succeed(None)

    def volts_on(self, pi: Any, channel: int) -> float:
        raise NotImplementedError

    def burst(
        self, channels: Sequence[int], rounds: int, seconds: float
    ) -> Deferred[dict[int, list[float]]]:
        """``rounds`` readings of every channel, spread evenly over ``seconds`` (a few mains cycles)."""
        unknown = [c for c in channels if c not in self.channels]
        if unknown:
            raise ValueError(
                f"{self.name} has photodiode channels {self.channels}, not {unknown}"
            )
        if rounds < 3 or not 0 <= seconds <= MAX_BURST_SECONDS:
            raise ValueError(
                f"a burst takes 3 or more rounds within {MAX_BURST_SECONDS} s, not {rounds} in {seconds} s"
            )
        spacing = seconds / rounds

        def read(pi: Any) -> dict[int, list[float]]:
            samples: dict[int, list[float]] = {c: [] for c in channels}
            start = time.monotonic()
            for i in range(rounds):
                wait = start + i * spacing - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # reactor-safe: on the hardware thread, inside one short connection.call
                for channel in channels:
                    samples[channel].append(self.volts_on(pi, channel))
            return samples

        return self._connection.call(read)


class HatAdcPhotodiodes(Photodiodes):
    """pd1 and pd2 on the RP2040's ADC (HAT >= 1.1)."""

    name = "the HAT's RP2040 ADC"

    def __init__(self, connection: PigpioConnection, rp2040: Rp2040) -> None:
        super().__init__(connection, RP2040_ADC_CHANNELS)
        self._rp2040 = rp2040

    def volts_on(self, pi: Any, channel: int) -> float:
        return self._rp2040.volts_on(pi, RP2040_ADC_CHANNELS[channel])


class Ads1114Photodiodes(Photodiodes):
    """One ADS1114 per photodiode (v1.5 models), at a fixed gain."""

    name = "the ADS1114 photodiode ADCs"

    def __init__(self, connection: PigpioConnection, addresses: dict[int, int]) -> None:
        super().__init__(connection, sorted(addresses))
        self._adcs = {
            channel: Ads1114(connection, address)
            for channel, address in addresses.items()
        }

    def prepare(self) -> Deferred[None]:
        d: Deferred[None] = succeed(None)
        for adc in self._adcs.values():
            d.addCallback(lambda _, adc=adc: adc.set_gain(ADS1114_GAIN))
        return d

    def volts_on(self, pi: Any, channel: int) -> float:
        return self._adcs[channel].volts_on(pi)


def photodiodes_for(
    connection: PigpioConnection,
    model_name: str,
    model_version: str,
    rp2040: Rp2040 | None,
) -> Photodiodes | None:
    """The model's photodiode ADCs, or None where this appliance cannot read them yet (HAT <= 1.0)."""
    if model_version == "1.5":
        family = "XR" if model_name.endswith("_XR") else "v1.5"
        return Ads1114Photodiodes(connection, ADS1114_ADDRESSES[family])
    if rp2040 is not None:
        return HatAdcPhotodiodes(connection, rp2040)
    return None
