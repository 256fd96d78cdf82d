"""LED automations: the light/dark cycle flips the simulated unit's LEDs on time and follows /set."""

from __future__ import annotations

import base64
import json

from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs.led_automation import LightDarkCycle, Silent
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.settings import BadOptions

from .simulated import SimulatedUnit, simulated_unit

PREFIX = "pioreactor/pio1/exp1/led_automation"


def dac(percent: float) -> int:
    return round(percent * 2.55)


class LedAutomationTests(TestCase):
    async def unit(self) -> SimulatedUnit:
        return await simulated_unit(
            self,
            Registry(
                automations={
                    "led": {"silent": Silent, "light_dark_cycle": LightDarkCycle}
                }
            ),
        )

    async def test_light_dark_cycle_flips_at_the_phase_boundaries(self) -> None:
        unit = await self.unit()
        options = {
            "automation_name": "light_dark_cycle",
            "light_duration_minutes": 2,
            "dark_duration_minutes": 1,
        }
        job = await unit.manager.run(
            RunRequest("led_automation", "exp1", options=options)
        )
        await unit.settle()
        self.assertEqual(unit.model.leds, [0, 0, dac(5), dac(5)], "starts lit at 5 %")
        self.assertEqual(
            unit.broker.value(f"{PREFIX}/automation_name"), b"light_dark_cycle"
        )
        event = json.loads(unit.broker.value(f"{PREFIX}/latest_event"))
        self.assertEqual(
            (list(event), event["event_name"]),
            (["event_name", "message", "data"], "ChangedLedIntensity"),
        )
        await unit.advance(119, step=119)
        self.assertEqual(unit.model.leds[2:], [dac(5), dac(5)])
        await unit.advance(1.5, step=1.5)
        self.assertEqual(unit.model.leds[2:], [0, 0], "dark after 2 minutes")
        await unit.advance(58, step=58)
        self.assertEqual(unit.model.leds[2:], [0, 0])
        await unit.advance(2, step=2)
        self.assertEqual(
            unit.model.leds[2:], [dac(5), dac(5)], "lit again after 1 dark minute"
        )
        changes = [
            json.loads(m.payload)
            for m in unit.broker.published("pioreactor/pio1/exp1/led_change_events")
        ]
        self.assertEqual(
            [(c["channel"], c["intensity"]) for c in changes],
            [("C", 5.0), ("D", 5.0), ("C", 0.0), ("D", 0.0), ("C", 5.0), ("D", 5.0)],
        )
        self.assertEqual(
            changes[0]["source_of_event"], "led_automation:light_dark_cycle"
        )
        await job.stop()
        self.assertEqual(
            unit.model.leds[2:],
            [0, 0],
            "the automation turns its channels off when it stops",
        )
        self.assertEqual(
            json.loads(unit.broker.value("pioreactor/pio1/exp1/leds/intensity")),
            {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0},
        )

    async def test_channels_held_by_a_reading_are_lit_once_it_lets_go(self) -> None:
        unit = await self.unit()
        held = unit.manager.unit_state.locked_leds
        held.update({"C": "od_reading", "D": "od_reading"})  # as OD reading holds them while it reads
        await unit.manager.run(RunRequest("led_automation", "exp1", options={"automation_name": "light_dark_cycle"}))
        await unit.settle()
        self.assertEqual(unit.model.leds[2:], [0, 0])
        self.assertIn(b"held by another job", unit.broker.value(f"{PREFIX}/latest_event"))
        await unit.advance(1, step=0.1)
        self.assertEqual(unit.model.leds[2:], [0, 0], "still held")
        del held["D"]
        await unit.advance(0.4, step=0.1)
        self.assertEqual(unit.model.leds[2:], [0, dac(5)], "D as soon as it is free")
        del held["C"]
        await unit.advance(0.4, step=0.1)
        self.assertEqual(unit.model.leds[2:], [dac(5), dac(5)])
        changes = [json.loads(m.payload) for m in unit.broker.published("pioreactor/pio1/exp1/led_change_events")]
        self.assertEqual([(c["channel"], c["intensity"]) for c in changes], [("D", 5.0), ("C", 5.0)])
        await unit.advance(5, step=1)
        self.assertEqual(len(unit.broker.published("pioreactor/pio1/exp1/led_change_events")), 2, "no more tries once lit")

    async def test_set_changes_intensity_and_durations(self) -> None:
        unit = await self.unit()
        job = await unit.manager.run(
            RunRequest(
                "led_automation",
                "exp1",
                options={"automation_name": "light_dark_cycle"},
            )
        )
        await unit.settle()
        client = unit.broker.client()
        client.publish(f"{PREFIX}/light_intensity/set", b"40")
        await unit.settle()
        self.assertEqual(unit.model.leds[2:], [dac(40), dac(40)])
        self.assertEqual(unit.broker.value(f"{PREFIX}/light_intensity"), b"40.0")
        records = unit.broker.published(f"{PREFIX}/led_automation_settings")
        settings = json.loads(
            base64.b64decode(json.loads(records[-1].payload)["settings"])
        )
        self.assertEqual(settings["light_intensity"], 40.0)
        for bad in (b"bright", b"140", b"-3"):
            client.publish(f"{PREFIX}/light_intensity/set", bad)
        client.publish(f"{PREFIX}/dark_duration_minutes/set", b"-1")
        self.assertEqual(unit.broker.value(f"{PREFIX}/light_intensity"), b"40.0")
        self.assertEqual(
            len(unit.broker.published("pioreactor/pio1/exp1/logs/app/warning")), 4
        )
        client.publish(
            f"{PREFIX}/light_duration_minutes/set", b"10"
        )  # the lit phase, under way, now ends at 10 min
        await unit.advance(9 * 60, step=9 * 60)
        self.assertEqual(unit.model.leds[2:], [dac(40), dac(40)])
        await unit.advance(61, step=61)
        self.assertEqual(unit.model.leds[2:], [0, 0])
        self.assertEqual(job.values["dark_duration_minutes"], 480.0)

    async def test_silent_does_nothing_and_bad_options(self) -> None:
        unit = await self.unit()
        await unit.manager.run(
            RunRequest("led_automation", "exp1", options={"automation_name": "silent"})
        )
        await unit.advance(60, step=60)
        self.assertEqual(
            json.loads(unit.broker.value(f"{PREFIX}/latest_event"))["event_name"],
            "NoEvent",
        )
        self.assertEqual(unit.model.leds, [0, 0, 0, 0])
        self.assertEqual(
            unit.broker.published("pioreactor/pio1/exp1/led_change_events"), []
        )
        for options in (
            {"automation_name": "light_dark_cycle", "light_intensity": 120},
            {"automation_name": "disco"},
        ):
            with self.assertRaises(BadOptions):
                unit.manager.prepare(
                    RunRequest("led_automation", "exp2", options=options)
                )
