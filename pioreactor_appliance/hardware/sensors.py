"""The HAT's I2C devices: the RP2040 (photodiode ADC, LED DAC, firmware version) and the TMP1075.

Each read is one pigpio call on the hardware thread. I2C handles belong to one
pigpio connection, so a device opens its handle again after a reconnection.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred

from .connection import PigpioConnection
from .hat import I2C_BUS, RP2040_ADDRESS, TMP1075_ADDRESS

ADC_FULL_SCALE = 3.3
ADC_COUNTS = 4095


class I2cDevice:
    def __init__(self, connection: PigpioConnection, address: int, bus: int = I2C_BUS) -> None:
        self._connection = connection
        self.address, self.bus = address, bus
        self._handles: tuple[Any, int] | None = None

    def _handle(self, pi: Any) -> int:
        if self._handles is None or self._handles[0] is not pi:
            self._handles = (pi, pi.i2c_open(self.bus, self.address))
        return self._handles[1]

    def read_register(self, register: int, count: int) -> Deferred[bytes]:
        return self._connection.call(lambda pi: self.read_register_on(pi, register, count))

    def read_register_on(self, pi: Any, register: int, count: int) -> bytes:
        """The read itself, for code already on the hardware thread (inside ``connection.call``)."""
        got, data = pi.i2c_read_i2c_block_data(self._handle(pi), register, count)
        if got != count:
            raise OSError(f"I2C 0x{self.address:02x}: read {got} of {count} bytes from register {register}")
        return bytes(data)

    def write_byte(self, register: int, value: int) -> Deferred[None]:
        return self._connection.call(lambda pi: pi.i2c_write_byte_data(self._handle(pi), register, value))


class Rp2040(I2cDevice):
    """The current HAT's microcontroller: ADC channels (pointer channel+4), LED DAC, version at 0x08."""

    def __init__(self, connection: PigpioConnection, *, firmware_scale: int = 32) -> None:
        super().__init__(connection, RP2040_ADDRESS)
        self._scale = firmware_scale

    def read_volts(self, channel: int) -> Deferred[float]:
        return self._connection.call(lambda pi: self.volts_on(pi, channel))

    def volts_on(self, pi: Any, channel: int) -> float:
        """One ADC reading, on the hardware thread."""
        data = self.read_register_on(pi, channel + 4, 2)
        return int.from_bytes(data, "little") / (ADC_COUNTS * self._scale) * ADC_FULL_SCALE

    def firmware_version(self) -> Deferred[tuple[int, int]]:
        return self.read_register(0x08, 2).addCallback(lambda data: (data[1], data[0]))

    def set_led(self, channel: int, percent: float) -> Deferred[None]:
        if channel not in range(4) or not 0 <= percent <= 100:
            raise ValueError(f"LED channel 0-3 and intensity 0-100 %, not {channel} and {percent}")
        return self.write_byte(channel, round(percent * 2.55))


class Tmp1075(I2cDevice):
    def __init__(self, connection: PigpioConnection) -> None:
        super().__init__(connection, TMP1075_ADDRESS)

    def read_celsius(self) -> Deferred[float]:
        return self.read_register(0x00, 2).addCallback(_tmp1075_celsius)

    def read_celsius_mean(self, samples: int, spacing_s: float) -> Deferred[float]:
        """The mean of ``samples`` reads ``spacing_s`` apart, as one short burst on the hardware thread.

        Averaging smooths the sensor's 0.0625 °C steps; keep ``(samples - 1) * spacing_s``
        short (< 0.3 s), since the burst holds the one hardware thread.
        """

        def read(pi: Any) -> float:
            handle, total = self._handle(pi), 0.0
            for i in range(samples):
                if i:
                    time.sleep(spacing_s)  # reactor-safe: runs inside connection.call, on the hardware thread
                got, data = pi.i2c_read_i2c_block_data(handle, 0x00, 2)
                if got != 2:
                    raise OSError(f"I2C 0x{self.address:02x}: read {got} of 2 bytes from register 0")
                total += _tmp1075_celsius(bytes(data))
            return total / samples

        return self._connection.call(read)


def _tmp1075_celsius(data: bytes) -> float:
    return ((data[0] << 4) + (data[1] >> 4)) * 0.0625


# ADS1114 full-scale ranges by PGA setting (config bits 11:9).
ADS_FULL_SCALE = {0: 6.144, 1: 4.096, 2: 2.048, 3: 1.024, 4: 0.512, 5: 0.256}
ADS_CONTINUOUS_128_SPS = 0x0083  # continuous conversion, 128 SPS, comparator off


class Ads1114(I2cDevice):
    """One photodiode's ADC on v1.5 models: config register 0x01, conversion register 0x00 (big-endian, signed)."""

    def __init__(self, connection: PigpioConnection, address: int) -> None:
        super().__init__(connection, address)
        self.gain = 1

    def set_gain(self, gain: int) -> Deferred[None]:
        if gain not in ADS_FULL_SCALE:
            raise ValueError(f"ADS1114 gain setting is 0-5, not {gain}")
        config = (gain << 9) | ADS_CONTINUOUS_128_SPS

        def write(pi: Any) -> None:
            pi.i2c_write_i2c_block_data(self._handle(pi), 0x01, [config >> 8, config & 0xFF])

        def done(_: None) -> None:
            self.gain = gain

        return self._connection.call(write).addCallback(done)

    def read_volts(self) -> Deferred[float]:
        return self._connection.call(self.volts_on)

    def volts_on(self, pi: Any) -> float:
        """One conversion result, on the hardware thread."""
        data = self.read_register_on(pi, 0x00, 2)
        return int.from_bytes(data, "big", signed=True) / 32767 * ADS_FULL_SCALE[self.gain]


class Dac43608(I2cDevice):
    """The LED driver of HATs up to 1.0: channels A-D at registers 8-11, the 8-bit code in bits 11:4 (big-endian)."""

    ADDRESS = 0x49

    def __init__(self, connection: PigpioConnection) -> None:
        super().__init__(connection, self.ADDRESS)

    def set_led(self, channel: int, percent: float) -> Deferred[None]:
        if channel not in range(4) or not 0 <= percent <= 100:
            raise ValueError(f"LED channel 0-3 and intensity 0-100 %, not {channel} and {percent}")
        word = round(percent * 2.55) << 4

        def write(pi: Any) -> None:
            pi.i2c_write_i2c_block_data(self._handle(pi), 8 + channel, [word >> 8, word & 0xFF])

        return self._connection.call(write)


class Ads1115(Ads1114):
    """The four-input ADC of HATs up to 1.0 at 0x48: inputs chosen by the MUX bits 14:12 (single-ended AINx)."""

    ADDRESS = 0x48
    SETTLE_SECONDS = 2 / 128  # a conversion at 128 SPS on the new input, with margin

    def __init__(self, connection: PigpioConnection) -> None:
        super().__init__(connection, self.ADDRESS)

    def read_input(self, channel: int) -> Deferred[float]:
        if channel not in range(4):
            raise ValueError(f"ADS1115 inputs are 0-3, not {channel}")
        config = ((0b100 + channel) << 12) | (self.gain << 9) | ADS_CONTINUOUS_128_SPS
        gain = self.gain

        def read(pi: Any) -> float:
            handle = self._handle(pi)
            pi.i2c_write_i2c_block_data(handle, 0x01, [config >> 8, config & 0xFF])
            time.sleep(self.SETTLE_SECONDS)  # reactor-safe: runs inside connection.call, on the hardware thread
            _, data = pi.i2c_read_i2c_block_data(handle, 0x00, 2)
            return int.from_bytes(bytes(data), "big", signed=True) / 32767 * ADS_FULL_SCALE[gain]

        return self._connection.call(read)
