"""RPM from hall-sensor edges: periods, the tick wrap, and a stalled motor."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from pioreactor_appliance.hardware.tachometer import Tachometer

from .fakes import FakePi, connect_fake


class TachometerTests(TestCase):
    async def tachometer(self) -> tuple[Tachometer, Clock, FakePi]:
        pi, clock = FakePi(), Clock()
        connection = await connect_fake(self, pi)
        tachometer = Tachometer(connection, 21, clock)
        await connection.call(lambda pi: None)
        return tachometer, clock, pi

    async def test_rpm_from_edge_periods(self) -> None:
        tachometer, clock, pi = await self.tachometer()
        self.assertEqual(pi.callbacks[0][:2], (21, 1))  # FALLING_EDGE
        self.assertEqual(tachometer.rpm(), 0.0)
        for i in range(5):
            tachometer._edge(21, 0, 1_000_000 + i * 60_000)  # one revolution every 60 ms
        self.assertAlmostEqual(tachometer.rpm(), 1000.0)

    async def test_tick_wrap(self) -> None:
        tachometer, clock, _ = await self.tachometer()
        tachometer._edge(21, 0, 2**32 - 20_000)
        tachometer._edge(21, 0, 20_000)
        self.assertAlmostEqual(tachometer.rpm(), 1500.0)

    async def test_a_stalled_motor_reads_zero(self) -> None:
        tachometer, clock, _ = await self.tachometer()
        tachometer._edge(21, 0, 0)
        tachometer._edge(21, 0, 50_000)
        clock.advance(0.9)
        self.assertAlmostEqual(tachometer.rpm(), 1200.0)
        clock.advance(0.2)
        self.assertEqual(tachometer.rpm(), 0.0)
        tachometer.reset()
        tachometer._edge(21, 0, 10)
        self.assertEqual(tachometer.rpm(), 0.0)
