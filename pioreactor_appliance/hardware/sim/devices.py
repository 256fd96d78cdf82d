"""The Pioreactor's I2C chips, with the register semantics the drivers rely on.

Each device reads its analogue input through a callable (the model), so a reading is taken
when the client reads, and the devices themselves hold no physics.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pioreactor_appliance.hardware.sim.i2c import I2cNack

RP2040_ADDRESS = 0x2C
TMP1075_ADDRESS = 0x4F
DAC43608_ADDRESS = 0x49
#: ADS1114 photodiode ADCs of the 40 mL v1.5 model (pd1, pd2); the XR uses 0x48-0x4B.
ADS1114_ADDRESSES = {"pd1": 0x48, "pd2": 0x49}

ADC_VREF = 3.3
ADC_FULL_SCALE = 4095


@attrs.define
class Rp2040Hat:
    """HAT >= 1.1 microcontroller: 4 ADC channels (pointer channel+4, 2 bytes LE), version at 0x08,
    and a 4-channel LED DAC set by a 2-byte write ``[channel, value]``.

    Raw = V / 3.3 * 4095 * scale (scale 32 from firmware 0.4, else 16), clipped to 16 bits.
    """

    volts: Callable[[int], float]
    version: tuple[int, int] = (4, 0)  # (minor, major): firmware 0.4
    leds: list[int] = attrs.field(factory=lambda: [0, 0, 0, 0])
    pointer: int = 4

    VERSION_POINTER = 0x08
    CHANNELS = 4

    @property
    def scale(self) -> int:
        minor, major = self.version
        return 32 if (major, minor) >= (0, 4) else 16

    def write(self, data: bytes) -> None:
        if len(data) == 2 and data[0] < self.CHANNELS:
            self.leds[data[0]] = data[1]
        elif len(data) == 1 and (data[0] == self.VERSION_POINTER or 4 <= data[0] < 4 + self.CHANNELS):
            self.pointer = data[0]
        else:
            raise I2cNack(f"RP2040 does not take {data.hex()}")

    def read(self, count: int) -> bytes:
        if self.pointer == self.VERSION_POINTER:
            value = bytes(self.version)
        else:
            raw = round(self.volts(self.pointer - 4) / ADC_VREF * ADC_FULL_SCALE * self.scale)
            value = min(max(raw, 0), 0xFFFF).to_bytes(2, "little")
        return _fit(value, count)


@attrs.define(kw_only=True)
class WordRegisters:
    """A chip with 16-bit big-endian registers behind a pointer byte (TI style: TMP1075, ADS1114, DAC43608).

    ``[pointer]`` selects, ``[pointer, msb, lsb]`` writes; a read returns the selected register.
    """

    registers: dict[int, int]
    pointer: int = 0

    def write(self, data: bytes) -> None:
        if not data or data[0] not in self.registers or len(data) not in (1, 3):
            raise I2cNack(f"register write {data.hex()} refused")
        self.pointer = data[0]
        if len(data) == 3:
            self.registers[self.pointer] = data[1] << 8 | data[2]

    def read(self, count: int) -> bytes:
        return _fit(self.read_register(self.pointer).to_bytes(2, "big"), count)

    def read_register(self, pointer: int) -> int:
        return self.registers[pointer]


def _fit(value: bytes, count: int) -> bytes:
    """What a master reading ``count`` bytes gets: the register, then 0xFF once the device stops driving."""
    return (value + b"\xff" * count)[:count]


def tmp1075_word(celsius: float) -> int:
    """12-bit two's complement in steps of 0.0625 °C, left-aligned in 16 bits."""
    steps = min(max(round(celsius / 0.0625), -2048), 2047)
    return (steps & 0xFFF) << 4


def ads1114_fsr(config: int) -> float:
    """Full-scale range in volts from the PGA bits 11:9 of the config register."""
    return (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)[(config >> 9) & 0b111]


@attrs.define(kw_only=True)
class Tmp1075(WordRegisters):
    """Temperature at 0x00; config 0x01 and low/high limits 0x02/0x03 as after power-up; device id 0x0F."""

    celsius: Callable[[], float]
    registers: dict[int, int] = attrs.field(factory=lambda: {0x00: 0, 0x01: 0x00FF, 0x02: 0x4B00, 0x03: 0x5000, 0x0F: 0x7500})

    def read_register(self, pointer: int) -> int:
        return tmp1075_word(self.celsius()) if pointer == 0x00 else self.registers[pointer]


@attrs.define(kw_only=True)
class Ads1114(WordRegisters):
    """Conversion at 0x00 (signed, V = raw / 32767 * FSR, clipped), config 0x01 (reset value 0x8583),
    thresholds 0x02/0x03. Always converting: a read samples the input."""

    volts: Callable[[], float]
    registers: dict[int, int] = attrs.field(factory=lambda: {0x00: 0, 0x01: 0x8583, 0x02: 0x8000, 0x03: 0x7FFF})

    def read_register(self, pointer: int) -> int:
        if pointer != 0x00:
            return self.registers[pointer]
        raw = round(self.volts() / ads1114_fsr(self.registers[0x01]) * 32767)
        return min(max(raw, -32768), 32767) & 0xFFFF


@attrs.define(kw_only=True)
class Ads1115(Ads1114):
    """HAT <= 1.0 four-input ADC: the MUX bits 14:12 pick the input (0b100 + n is AINn against ground)."""

    inputs: Callable[[int], float]
    volts: Callable[[], float] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.volts = lambda: self.inputs(((self.registers[0x01] >> 12) & 0b111) - 0b100)


@attrs.define(kw_only=True)
class Dac43608(WordRegisters):
    """HAT <= 1.0 LED driver: channels A-H at 0x08-0x0F, the 8-bit code in bits 11:4."""

    registers: dict[int, int] = attrs.field(factory=lambda: {0x01: 0x00FF, 0x02: 0, 0x03: 0, **{r: 0 for r in range(0x08, 0x10)}})

    def intensity(self, channel: int) -> float:
        """Channel 0 = A, as a fraction of full scale."""
        return ((self.registers[0x08 + channel] >> 4) & 0xFF) / 255
