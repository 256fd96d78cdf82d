"""The I2C chips' register semantics, as the drivers decode them."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.hardware.sim.devices import (
    Ads1114,
    Dac43608,
    Rp2040Hat,
    Tmp1075,
)
from pioreactor_appliance.hardware.sim.i2c import I2cNack


def tmp1075_celsius(data: bytes) -> float:
    """The driver's decoding (sign ignored, as in the reference)."""
    return ((data[0] << 4) + (data[1] >> 4)) * 0.0625


class Rp2040Tests(SynchronousTestCase):
    def setUp(self) -> None:
        self.hat = Rp2040Hat(volts=lambda channel: [0.1, 0.67, 0.5, 1.2][channel])

    def test_adc_channels_read_little_endian_scaled_for_firmware(self) -> None:
        for channel, volts in enumerate([0.1, 0.67, 0.5, 1.2]):
            self.hat.write(bytes([channel + 4]))
            raw = int.from_bytes(self.hat.read(2), "little")
            self.assertAlmostEqual(raw / (4095 * 32) * 3.3, volts, places=4)

    def test_older_firmware_scales_by_16_and_high_volts_clip(self) -> None:
        old = Rp2040Hat(volts=lambda channel: 3.0, version=(3, 0))
        old.write(b"\x04")
        self.assertEqual(int.from_bytes(old.read(2), "little"), round(3.0 / 3.3 * 4095 * 16))
        self.hat.volts = lambda channel: 3.0
        self.hat.write(b"\x04")
        self.assertEqual(self.hat.read(2), b"\xff\xff")

    def test_version_and_led_dac(self) -> None:
        self.hat.write(b"\x08")
        self.assertEqual(self.hat.read(2), bytes([4, 0]))
        self.hat.write(bytes([0, 128]))
        self.hat.write(bytes([3, 255]))
        self.assertEqual(self.hat.leds, [128, 0, 0, 255])

    def test_bad_writes_are_refused(self) -> None:
        for data in [b"", b"\x09", bytes([4, 1]), b"\x00\x01\x02"]:
            self.assertRaises(I2cNack, self.hat.write, data)


class WordRegisterTests(SynchronousTestCase):
    def test_tmp1075_temperature_decodes_to_the_nearest_step(self) -> None:
        celsius = 37.31
        chip = Tmp1075(celsius=lambda: celsius)
        chip.write(b"\x00")
        self.assertLessEqual(abs(tmp1075_celsius(chip.read(2)) - celsius), 0.0625 / 2)
        chip.write(b"\x0f")
        self.assertEqual(chip.read(2), b"\x75\x00")
        self.assertRaises(I2cNack, chip.write, b"\x07")

    def test_ads1114_follows_the_pga_and_clips(self) -> None:
        volts = 1.5
        chip = Ads1114(volts=lambda: volts)
        chip.write(bytes([0x01, 0x83, 0x83]))  # PGA 001: 4.096 V
        chip.write(b"\x00")
        self.assertAlmostEqual(int.from_bytes(chip.read(2), "big", signed=True) / 32767 * 4.096, volts, places=3)
        chip.write(bytes([0x01, 0x8A, 0x83]))  # PGA 101: 0.256 V, over range
        chip.write(b"\x00")
        self.assertEqual(int.from_bytes(chip.read(2), "big", signed=True), 32767)
        volts = -1.0
        self.assertEqual(int.from_bytes(chip.read(2), "big", signed=True), -32768)
        self.assertRaises(I2cNack, chip.write, b"\x01\x02")

    def test_dac43608_channel_code_sits_in_bits_11_to_4(self) -> None:
        chip = Dac43608()
        chip.write(bytes([0x08, 0x0F, 0xF0]))
        chip.write(bytes([0x09, 0x08, 0x00]))
        self.assertEqual(chip.intensity(0), 1.0)
        self.assertAlmostEqual(chip.intensity(1), 128 / 255)
        self.assertRaises(I2cNack, chip.write, b"\x20")
