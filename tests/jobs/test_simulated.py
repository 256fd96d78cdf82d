"""The Clock-driven simulated unit itself: jobs' hardware calls land, and simulated time moves physics."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs.base import Job
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.registry import Registry

from .simulated import simulated_unit


class Heats(Job):
    job_name = "heats"
    stop_order = 1

    async def on_init(self) -> None:
        await self.hardware.heater.set_duty(50)

    def on_disconnected(self) -> object:
        return self.hardware.heater.off()


class SimulatedUnitTests(TestCase):
    async def test_a_job_heats_the_simulated_vial_in_simulated_time(self) -> None:
        unit = await simulated_unit(self, Registry({"heats": Heats}))
        job = await unit.manager.run(RunRequest("heats", "exp1"))
        before = await unit.hardware.temperature.read_celsius()
        await unit.advance(1800, step=60)
        after = await unit.hardware.temperature.read_celsius()
        self.assertGreater(after, before + 8)
        await job.stop()
        self.assertEqual(unit.hardware.heater.duty, 0)
