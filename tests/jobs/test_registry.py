"""The built-in jobs are found through Twisted's plugin system, as third-party ones are."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.jobs.led_automation import LightDarkCycle, Silent
from pioreactor_appliance.jobs.monitor import Monitor
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.stirring import Stirring


class BuiltInPluginTests(SynchronousTestCase):
    def test_built_in_jobs_and_automations_are_plugins(self) -> None:
        registry = Registry.from_plugins()
        self.assertIs(registry.jobs.get("stirring"), Stirring)
        self.assertIs(registry.jobs.get("monitor"), Monitor)
        self.assertIn("led_intensity", registry.jobs)
        self.assertEqual(
            registry.automations["led"],
            {"silent": Silent, "light_dark_cycle": LightDarkCycle},
        )
        self.assertTrue(registry.knows("led_automation"))
