"""The RP2040 and TMP1075 register conversions, and I2C handles across reconnections."""

from __future__ import annotations

import pigpio
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.sensors import Ads1114, Dac43608, Rp2040, Tmp1075

from .fakes import FakePi, connect_fake


class SensorTests(TestCase):
    async def test_rp2040_adc_volts_version_and_leds(self) -> None:
        raw = round(1.65 / 3.3 * 4095 * 32)
        pi = FakePi({(0x2C, 6): raw.to_bytes(2, "little"), (0x2C, 0x08): bytes([4, 0])})
        rp2040 = Rp2040(await connect_fake(self, pi))
        self.assertAlmostEqual(await rp2040.read_volts(2), 1.65, places=4)
        self.assertEqual(await rp2040.firmware_version(), (0, 4))
        await rp2040.set_led(0, 40)
        self.assertEqual(pi.registers[(0x2C, 0)], bytes([102]))
        await rp2040.set_led(1, 100)
        self.assertEqual(pi.registers[(0x2C, 1)], bytes([255]))
        self.assertEqual(pi.calls.count(("i2c_open", 1, 0x2C)), 1, "one handle per connection")
        with self.assertRaises(ValueError):
            rp2040.set_led(4, 10)
        with self.assertRaises(ValueError):
            rp2040.set_led(0, 101)

    async def test_tmp1075_celsius(self) -> None:
        # 37.5 °C = 600 * 0.0625 -> 600 << 4 = 0x2580
        pi = FakePi({(0x4F, 0): bytes([0x25, 0x80])})
        self.assertEqual(await Tmp1075(await connect_fake(self, pi)).read_celsius(), 37.5)

    async def test_tmp1075_mean_of_quick_samples(self) -> None:
        pi = FakePi()
        words = iter([600 << 4, 602 << 4, 604 << 4, 606 << 4])  # 37.5, 37.625, 37.75, 37.875 °C

        def changing(handle: int, register: int, count: int) -> tuple[int, bytearray]:
            return 2, bytearray(next(words).to_bytes(2, "big"))

        pi.i2c_read_i2c_block_data = changing  # type: ignore[method-assign]
        self.assertEqual(await Tmp1075(await connect_fake(self, pi)).read_celsius_mean(4, 0.0), 37.6875)

    async def test_a_short_read_is_an_error(self) -> None:
        pi = FakePi({(0x4F, 0): bytes([0x25])})
        with self.assertRaisesRegex(OSError, "read 1 of 2 bytes"):
            await Tmp1075(await connect_fake(self, pi)).read_celsius()

    async def test_a_device_error_is_pigpios(self) -> None:
        pi = FakePi()
        pi.fail_with = pigpio.error("I2C read failed")
        connection = await connect_fake(self, pi)
        with self.assertRaises(pigpio.error):
            await Tmp1075(connection).read_celsius()
        self.assertTrue(connection.connected)


class Ads1114Tests(TestCase):
    async def test_gain_config_and_signed_big_endian_conversion(self) -> None:
        pi = FakePi({(0x48, 0x00): (16384).to_bytes(2, "big", signed=True)})
        ads = Ads1114(await connect_fake(self, pi), 0x48)
        await ads.set_gain(2)
        self.assertEqual(pi.registers[(0x48, 0x01)], bytes([0x04, 0x83]))
        self.assertAlmostEqual(await ads.read_volts(), 16384 / 32767 * 2.048)
        pi.registers[(0x48, 0x00)] = (-100).to_bytes(2, "big", signed=True)
        self.assertLess(await ads.read_volts(), 0)
        with self.assertRaises(ValueError):
            ads.set_gain(6)


class Dac43608Tests(TestCase):
    async def test_code_in_bits_11_to_4_of_channel_registers(self) -> None:
        pi = FakePi()
        dac = Dac43608(await connect_fake(self, pi))
        await dac.set_led(1, 100)
        self.assertEqual(pi.registers[(0x49, 9)], bytes([0x0F, 0xF0]))
        await dac.set_led(0, 0)
        self.assertEqual(pi.registers[(0x49, 8)], bytes([0, 0]))
        with self.assertRaises(ValueError):
            dac.set_led(4, 1)
