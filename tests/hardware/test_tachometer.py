"""RPM from hall-sensor edges: a time window, the tick wrap, and a stopped motor."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.tachometer import Tachometer

from .fakes import FakePi, connect_fake


class TachometerTests(TestCase):
    async def tachometer(self) -> tuple[Tachometer, Clock, FakePi]:
        pi, clock = FakePi(), Clock()
        connection = await connect_fake(self, pi)
        tachometer = Tachometer(connection, 21, clock, window_seconds=2.0)
        await connection.call(lambda pi: None)
        return tachometer, clock, pi

    def spin(self, tachometer: Tachometer, clock: Clock, rpm: float, seconds: float, tick: int) -> int:
        """Feed edges at ``rpm`` for ``seconds``, advancing the clock; the last tick."""
        period_us = round(60e6 / rpm)
        for _ in range(int(seconds * rpm / 60)):
            tick = (tick + period_us) % 2**32
            clock.advance(period_us / 1e6)
            tachometer._edge(21, 0, tick)
        return tick

    async def test_rpm_over_the_window(self) -> None:
        tachometer, clock, pi = await self.tachometer()
        self.assertEqual(pi.callbacks[0][:2], (21, 1))  # FALLING_EDGE
        self.assertEqual(tachometer.rpm(), 0.0)
        self.spin(tachometer, clock, 1000, 1.5, 5_000_000)
        self.assertAlmostEqual(tachometer.rpm(), 1000.0, places=1)

    async def test_the_window_follows_a_change(self) -> None:
        tachometer, clock, _ = await self.tachometer()
        tick = self.spin(tachometer, clock, 1200, 3.0, 0)
        self.spin(tachometer, clock, 600, 2.5, tick)
        self.assertAlmostEqual(tachometer.rpm(), 600.0, places=1)

    async def test_tick_wrap(self) -> None:
        tachometer, clock, _ = await self.tachometer()
        self.spin(tachometer, clock, 1500, 1.0, 2**32 - 100_000)
        self.assertAlmostEqual(tachometer.rpm(), 1500.0, places=1)

    async def test_a_stopped_motor_reads_zero(self) -> None:
        tachometer, clock, _ = await self.tachometer()
        self.spin(tachometer, clock, 900, 1.0, 0)
        self.assertGreater(tachometer.rpm(), 0)
        clock.advance(2.1)
        self.assertEqual(tachometer.rpm(), 0.0)
        self.spin(tachometer, clock, 900, 1.0, 0)
        tachometer.reset()
        self.assertEqual(tachometer.rpm(), 0.0)
