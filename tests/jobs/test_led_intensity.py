"""The led_intensity action: it writes the LED driver, publishes the reference's topics, and stops."""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs.led_intensity import LedIntensity
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.settings import BadOptions

from .simulated import simulated_unit


class LedIntensityTests(TestCase):
    async def test_sets_the_given_channels_and_publishes(self) -> None:
        unit = await simulated_unit(self, Registry({"led_intensity": LedIntensity}))
        job = await unit.manager.run(
            RunRequest(
                "led_intensity",
                "exp1",
                options={"A": 50, "C": "12.5", "source_of_event": "ui"},
            )
        )
        await job.when_stopped()
        self.assertEqual(unit.model.leds, [round(50 * 2.55), 0, round(12.5 * 2.55), 0])
        intensity = unit.broker.published("pioreactor/pio1/exp1/leds/intensity")[-1]
        self.assertEqual((intensity.qos, intensity.retain), (0, True))
        self.assertEqual(
            list(json.loads(intensity.payload).items()),
            [("A", 50.0), ("B", 0.0), ("C", 12.5), ("D", 0.0)],
        )
        events = unit.broker.published("pioreactor/pio1/exp1/led_change_events")
        self.assertEqual([(m.qos, m.retain) for m in events], [(0, False), (0, False)])
        first = json.loads(events[0].payload)
        self.assertEqual(
            list(first), ["channel", "intensity", "source_of_event", "timestamp"]
        )
        self.assertEqual(
            (first["channel"], first["intensity"], first["source_of_event"]),
            ("A", 50.0, "ui"),
        )
        states = [
            m.payload
            for m in unit.broker.published("pioreactor/pio1/exp1/led_intensity/$state")
        ]
        self.assertEqual(states, [b"init", b"ready", b"disconnected"])

        job = await unit.manager.run_action("led_intensity", "exp1", {"C": 0}, "user")
        await job.when_stopped()
        self.assertEqual(
            unit.model.leds,
            [round(50 * 2.55), 0, 0, 0],
            "unset channels are left alone",
        )

    async def test_bad_options_are_refused(self) -> None:
        unit = await simulated_unit(self, Registry({"led_intensity": LedIntensity}))
        for options in ({"A": 101}, {"B": -1}, {"E": 5}, {"A": "bright"}):
            with self.assertRaises(BadOptions):
                unit.manager.prepare(
                    RunRequest("led_intensity", "exp1", options=options)
                )
        self.assertEqual(unit.model.leds, [0, 0, 0, 0])

    async def test_a_held_channel_is_skipped(self) -> None:
        unit = await simulated_unit(self, Registry({"led_intensity": LedIntensity}))
        unit.manager.unit_state.locked_leds["A"] = "od_reading"
        job = await unit.manager.run(
            RunRequest("led_intensity", "exp1", options={"A": 30, "B": 30})
        )
        await job.when_stopped()
        self.assertEqual(unit.model.leds[:2], [0, round(30 * 2.55)])
