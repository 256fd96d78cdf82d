"""PWM outputs and their safety limits: the heater's cap and cut-off, the pumps' bounded runs."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.outputs import Heater, OutputRefused, Pump, PwmOutput

from .fakes import FakePi, connect_fake


class PwmOutputTests(TestCase):
    async def test_percent_maps_onto_range_10000_at_the_channel_frequency(self) -> None:
        pi = FakePi()
        stirring = PwmOutput(await connect_fake(self, pi), "stirring", 17, 200)
        await stirring.set_duty(37.5)
        self.assertEqual(pi.calls[-3:], [("frequency", 17, 200), ("range", 17, 10000), ("duty", 17, 3750)])
        self.assertEqual(stirring.duty, 37.5)
        with self.assertRaisesRegex(OutputRefused, "0-100 %"):
            stirring.set_duty(100.5)
        with self.assertRaisesRegex(OutputRefused, "0-100 %"):
            stirring.set_duty(-1)

    async def test_outputs_are_off_at_connection_and_shutdown(self) -> None:
        pi = FakePi()
        connection = await connect_fake(self, pi)
        stirring = PwmOutput(connection, "stirring", 17, 200)
        await stirring.set_duty(50)
        await connection.stopService()
        self.assertEqual(pi.duty[17], 0)
        self.assertEqual(stirring.duty, 0.0)


class HeaterTests(TestCase):
    async def heater(self) -> tuple[FakePi, Heater]:
        pi = FakePi()
        return pi, Heater(await connect_fake(self, pi), 18, 16, max_duty=60, disable_above=65, resume_below=63)

    async def test_duty_is_capped(self) -> None:
        pi, heater = await self.heater()
        await heater.set_duty(60)
        self.assertEqual(pi.duty[18], 6000)
        with self.assertRaisesRegex(OutputRefused, "cap of 60 %"):
            heater.set_duty(60.5)

    async def test_cut_off_above_the_limit_until_it_cools(self) -> None:
        pi, heater = await self.heater()
        await heater.set_duty(40)
        self.assertIsNone(heater.observe_temperature(64.9))
        await heater.observe_temperature(65.0)
        self.assertEqual(pi.duty[18], 0)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        with self.assertRaisesRegex(OutputRefused, "cut off above 65 °C"):
            heater.set_duty(10)
        await heater.set_duty(0)  # off is always allowed
        heater.observe_temperature(63.5)
        with self.assertRaises(OutputRefused):
            heater.set_duty(10)
        heater.observe_temperature(62.9)
        await heater.set_duty(10)
        self.assertEqual(pi.duty[18], 1000)


class PumpTests(TestCase):
    async def pump(self) -> tuple[FakePi, Pump, Clock]:
        pi, clock = FakePi(), Clock()
        return pi, Pump(await connect_fake(self, pi), "media", 13, 250, clock, max_seconds=30), clock

    async def test_a_run_stops_on_its_own(self) -> None:
        pi, pump, clock = await self.pump()
        await pump.run_for(2.5)
        self.assertEqual(pi.duty[13], 10000)
        clock.advance(2.4)
        self.assertEqual(pi.duty[13], 10000)
        clock.advance(0.1)
        await pump._connection.call(lambda pi: None)  # the stop was queued on the hardware thread
        self.assertEqual(pi.duty[13], 0)

    async def test_runs_are_bounded_and_exclusive(self) -> None:
        pi, pump, clock = await self.pump()
        with self.assertRaisesRegex(OutputRefused, "0-30 s"):
            pump.run_for(31)
        with self.assertRaisesRegex(OutputRefused, "0-30 s"):
            pump.run_for(0)
        with self.assertRaisesRegex(OutputRefused, "only through run_for"):
            pump.set_duty(50)
        await pump.run_for(10)
        with self.assertRaisesRegex(OutputRefused, "already running"):
            pump.run_for(1)
        await pump.stop()
        self.assertEqual(pi.duty[13], 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_a_failed_start_cancels_its_stop(self) -> None:
        pi, pump, clock = await self.pump()
        pi.fail_with = RuntimeError("bad gpio")
        with self.assertRaises(RuntimeError):
            await pump.run_for(5)
        self.assertEqual(clock.getDelayedCalls(), [])
