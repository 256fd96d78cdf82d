"""The heater guard reads the vial while the heater is on and cuts it above the limit on its own."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.outputs import Heater
from pioreactor_appliance.hardware.safety import HeaterGuard
from pioreactor_appliance.hardware.sensors import Tmp1075

from .fakes import FakePi, connect_fake


def word(celsius: float) -> bytes:
    return (round(celsius / 0.0625) << 4).to_bytes(2, "big")


class HeaterGuardTests(TestCase):
    async def test_cuts_the_heater_without_any_job(self) -> None:
        pi, clock = FakePi({(0x4F, 0): word(40.0)}), Clock()
        connection = await connect_fake(self, pi)
        heater = Heater(connection, 18, 16, max_duty=70, disable_above=65, resume_below=63)
        guard = HeaterGuard(heater, Tmp1075(connection), clock, interval=5)
        guard.startService()
        self.addCleanup(guard.stopService)

        clock.advance(5)
        await connection.call(lambda pi: None)
        self.assertNotIn(("i2c_read", 0x4F, 0, 2), pi.calls, "a cold, off heater is not polled")

        await heater.set_duty(50)
        pi.registers[(0x4F, 0)] = word(66.0)
        clock.advance(5)
        for _ in range(3):
            await connection.call(lambda pi: None)
        self.assertTrue(heater.cut_off)
        self.assertEqual(pi.duty[18], 0)

        pi.registers[(0x4F, 0)] = word(50.0)
        clock.advance(5)
        for _ in range(3):
            await connection.call(lambda pi: None)
        self.assertFalse(heater.cut_off)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    async def test_a_failed_read_is_logged_and_the_guard_goes_on(self) -> None:
        pi, clock = FakePi({}), Clock()
        connection = await connect_fake(self, pi)
        heater = Heater(connection, 18, 16, max_duty=70, disable_above=65, resume_below=63)
        guard = HeaterGuard(heater, Tmp1075(connection), clock, interval=5)
        guard.startService()
        self.addCleanup(guard.stopService)
        await heater.set_duty(20)
        clock.advance(5)
        for _ in range(3):
            await connection.call(lambda pi: None)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)  # the fake has no such register
        pi.registers[(0x4F, 0)] = word(70.0)
        clock.advance(5)
        for _ in range(3):
            await connection.call(lambda pi: None)
        self.assertTrue(heater.cut_off)
