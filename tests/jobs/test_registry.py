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
        for job_name in ("od_reading", "growth_rate_calculating", "add_media", "remove_waste", "add_alt_media", "circulate_media", "circulate_alt_media"):
            self.assertIn(job_name, registry.jobs)

    def test_same_named_automations_of_different_types_are_all_found(self) -> None:
        automations = Registry.from_plugins().automations
        self.assertEqual(automations["dosing"]["silent"].automation_type, "dosing")
        self.assertEqual(automations["led"]["silent"].automation_type, "led")
        self.assertEqual(set(automations["temperature"]), {"thermostat", "only_record_temperature"})
        self.assertEqual(set(automations["dosing"]), {"silent", "chemostat", "turbidostat", "fed_batch"})
