"""Temperature automations on a simulated Pioreactor: inference, thermostat, recording, sleeping, safety, MQTT shapes."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs import temperature_automation
from pioreactor_appliance.jobs.base import JobFailed
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.settings import BadOptions
from pioreactor_appliance.jobs.temperature_automation import (
    OnlyRecordTemperature,
    Thermostat,
    estimate_culture_temperature,
    fit_decay,
)

from .simulated import SimulatedUnit, simulated_unit

PREFIX = "pioreactor/pio1/exp1/temperature_automation"
BLINK = "pioreactor/pio1/$experiment/monitor/flicker_led_with_error_code"
REGISTRY = Registry(
    automations={
        "temperature": {
            "thermostat": Thermostat,
            "only_record_temperature": OnlyRecordTemperature,
        }
    }
)


def assert_near(
    case: TestCase, value: float, expected: float, tolerance: float, msg: str = ""
) -> None:
    """trial's assertAlmostEqual takes no ``delta``."""
    case.assertLessEqual(
        abs(value - expected),
        tolerance,
        f"{value} is not within {tolerance} of {expected} {msg}",
    )


def quantized(celsius: float) -> float:
    """As the TMP1075 reports it: steps of 0.0625 °C."""
    return round(celsius / 0.0625) * 0.0625


class EstimatorTests(TestCase):
    def test_the_asymptote_of_a_fast_transient_is_the_culture(self) -> None:
        # The PCB, 4 °C above a 31 °C vial, settles onto it with τ = 15 s, over the vial's slow cooling.
        readings = [
            quantized(31 - 0.004 * t + 4 * math.exp(-t / 15)) for t in range(0, 105, 5)
        ]
        estimate = estimate_culture_temperature(40.0, readings, 5.0)
        self.assertTrue(
            31 - 0.4 - 0.1 <= estimate <= 31, f"{estimate} is not the vial's 30.6-31 °C"
        )
        self.assertGreater(readings[0], 34)

    def test_the_fit_recovers_a_clean_decay(self) -> None:
        times = [5.0 * i for i in range(21)]
        decay = fit_decay(times, [30 + 6 * math.exp(-t / 20) for t in times])
        assert_near(self, decay.asymptote, 30, 0.05)
        assert_near(self, decay.amplitude, 6, 0.1)
        assert_near(self, decay.tau_s, 20, 1.5)

    def test_without_a_fast_transient_or_heating_the_last_reading_is_the_culture(
        self,
    ) -> None:
        slow = [
            quantized(33 * math.exp(-t / 600) + 22 * (1 - math.exp(-t / 600)))
            for t in range(0, 105, 5)
        ]
        self.assertEqual(estimate_culture_temperature(50.0, slow, 5.0), slow[-1])
        fast = [quantized(30 + 5 * math.exp(-t / 10)) for t in range(0, 105, 5)]
        self.assertEqual(estimate_culture_temperature(0.0, fast, 5.0), fast[-1])
        rising = [quantized(30 - 5 * math.exp(-t / 10)) for t in range(0, 105, 5)]
        self.assertEqual(estimate_culture_temperature(50.0, rising, 5.0), rising[-1])


class TemperatureAutomationTests(TestCase):
    def setUp(self) -> None:
        # The quick samples of one reading land at once: a burst of real sleeps per reading
        # would make hours of simulated time take minutes.
        self.patch(temperature_automation, "QUICK_SAMPLE_SPACING_S", 0.0)

    async def start(self, automation: str, **options: Any) -> tuple[SimulatedUnit, Any]:
        unit = await simulated_unit(self, REGISTRY)
        job = await unit.manager.run(
            RunRequest(
                "temperature_automation",
                "exp1",
                options={"automation_name": automation, **options},
            )
        )
        await unit.settle()
        return unit, job

    def temperatures(self, unit: SimulatedUnit) -> list[tuple[str, float]]:
        return [
            (m["timestamp"], m["temperature"])
            for m in (
                json.loads(d.payload)
                for d in unit.broker.published(f"{PREFIX}/temperature")
                if d.payload
            )
        ]

    def logs(self, unit: SimulatedUnit, level: str) -> list[str]:
        return [
            json.loads(m.payload)["message"]
            for m in unit.broker.published(f"pioreactor/pio1/exp1/logs/app/{level}")
        ]

    async def test_the_thermostat_holds_its_target(self) -> None:
        unit, _ = await self.start("thermostat", target_temperature=30)
        published_at: list[
            tuple[float, float]
        ] = []  # (published, the vial's true temperature then)
        unit.broker.client().subscribe(
            f"{PREFIX}/temperature",
            lambda m: (
                published_at.append(
                    (json.loads(m.payload)["temperature"], unit.model.celsius)
                )
                if m.payload
                else None
            ),
        )
        published_at.clear()  # the retained raw reading from the start
        await unit.advance(5400, step=5)
        self.assertGreaterEqual(len(published_at), 26, "an estimate every 200 s")
        settled = published_at[12:]  # after ~45 min
        for published, _ in settled:
            assert_near(self, published, 30.0, 0.5)
        for published, true in published_at:
            assert_near(
                self, published, true, 0.1, "(the estimate is the vial's temperature)"
            )
        self.assertGreater(unit.hardware.heater.duty, 0)
        self.assertLessEqual(
            max(e["data"]["current_dc"] for e in self.events(unit)),
            unit.hardware.heater.max_duty,
        )

    def events(self, unit: SimulatedUnit) -> list[dict[str, Any]]:
        return [
            json.loads(m.payload)
            for m in unit.broker.published(f"{PREFIX}/latest_event")
            if m.payload
        ]

    async def test_the_heater_is_off_while_the_series_is_sampled(self) -> None:
        unit, _ = await self.start("thermostat", target_temperature=35)
        self.assertGreater(
            unit.hardware.heater.duty, 0, "heating from the first raw reading"
        )
        before = unit.hardware.heater.duty
        await unit.advance(95, step=5)
        self.assertEqual(unit.hardware.heater.duty, 0)
        self.assertEqual(unit.broker.value(f"{PREFIX}/heater_duty_cycle"), b"0.0")
        await unit.advance(100, step=5)
        self.assertEqual(unit.hardware.heater.duty, 0, "still sampling")
        self.assertEqual(len(self.temperatures(unit)), 1)
        await unit.advance(10, step=5)
        self.assertEqual(
            len(self.temperatures(unit)), 2, "the estimate after 21 samples"
        )
        self.assertGreater(
            unit.hardware.heater.duty, before, "restored, then raised by the PID"
        )

    async def test_only_record_temperature_never_heats(self) -> None:
        unit, _ = await self.start("only_record_temperature")
        duties: list[float] = []
        for _ in range(60):
            await unit.advance(20, step=5)
            duties.append(unit.hardware.heater.duty)
        self.assertEqual(set(duties), {0.0})
        temperatures = self.temperatures(unit)
        self.assertEqual(
            len(temperatures), 1 + 6, "the raw reading, then one per 200 s"
        )
        for _, celsius in temperatures:
            assert_near(self, celsius, 22.0, 0.1)
        self.assertEqual(
            self.events(unit)[-1],
            {"event_name": "NoEvent", "message": "", "data": None},
        )

    async def test_target_temperature_set_takes_effect_and_bad_values_are_refused_or_clamped(
        self,
    ) -> None:
        unit, job = await self.start("thermostat", target_temperature=30)
        client = unit.broker.client()
        client.publish(f"{PREFIX}/target_temperature/set", b"25.5")
        self.assertEqual(unit.broker.value(f"{PREFIX}/target_temperature"), b"25.5")
        client.publish(f"{PREFIX}/target_temperature/set", b"hot")
        self.assertEqual(unit.broker.value(f"{PREFIX}/target_temperature"), b"25.5")
        client.publish(f"{PREFIX}/target_temperature/set", b"120")
        limit = job.model.max_temp_to_reduce_heating
        self.assertEqual(
            unit.broker.value(f"{PREFIX}/target_temperature"), str(limit).encode()
        )
        client.publish(f"{PREFIX}/target_temperature/set", b"-4")
        self.assertEqual(unit.broker.value(f"{PREFIX}/target_temperature"), b"0.0")
        warnings = self.logs(unit, "warning")
        self.assertTrue(any("not a number" in w for w in warnings), warnings)
        self.assertTrue(any("120" in w and "outside" in w for w in warnings), warnings)
        self.assertTrue(any("-4" in w and "outside" in w for w in warnings), warnings)
        client.publish(f"{PREFIX}/target_temperature/set", b"20")
        heating = unit.hardware.heater.duty
        await unit.advance(205, step=5)
        event = self.events(unit)[-1]
        self.assertEqual(event["data"]["target_temperature"], 20.0)
        self.assertLess(
            event["data"]["delta_dc"], 0, "the vial is warmer than 20 °C: heat less"
        )
        self.assertLess(unit.hardware.heater.duty, heating)

    async def test_sleeping_turns_the_heater_off_and_pauses_the_cycle(self) -> None:
        unit, _ = await self.start("thermostat", target_temperature=35)
        await unit.advance(120, step=5)  # mid-series
        client = unit.broker.client()
        client.publish(f"{PREFIX}/$state/set", b"sleeping")
        await unit.settle()
        count = len(self.temperatures(unit))
        await unit.advance(600, step=5)
        self.assertEqual(unit.hardware.heater.duty, 0)
        self.assertEqual(unit.broker.value(f"{PREFIX}/heater_duty_cycle"), b"0.0")
        self.assertEqual(
            len(self.temperatures(unit)), count, "no readings while asleep"
        )
        client.publish(f"{PREFIX}/$state/set", b"ready")
        await unit.settle()
        self.assertGreater(unit.hardware.heater.duty, 0, "heating again on waking")
        await unit.advance(310, step=5)
        self.assertEqual(
            len(self.temperatures(unit)), count + 1, "a new series 200 s after waking"
        )

    async def test_stopping_turns_the_heater_off(self) -> None:
        unit, job = await self.start("thermostat", target_temperature=35)
        self.assertGreater(unit.hardware.heater.duty, 0)
        await job.stop()
        self.assertEqual(unit.hardware.heater.duty, 0)
        self.assertIsNone(unit.broker.value(f"{PREFIX}/heater_duty_cycle"))
        self.assertEqual(unit.broker.value(f"{PREFIX}/$state"), b"disconnected")

    async def test_a_restart_right_after_heating_skips_the_raw_reading(self) -> None:
        unit, job = await self.start("thermostat", target_temperature=35)
        await job.stop()
        unit.clock.advance(2)
        again = await unit.manager.run(
            RunRequest(
                "temperature_automation",
                "exp1",
                options={"automation_name": "thermostat", "target_temperature": 35},
            )
        )
        await unit.settle()
        self.assertEqual(
            len(self.temperatures(unit)), 1, "the warm PCB is not the vial"
        )
        self.assertEqual(unit.hardware.heater.duty, 0)
        await again.stop()

    async def test_above_reduce_the_duty_cycle_drops_by_a_tenth(self) -> None:
        unit, job = await self.start("thermostat", target_temperature=35)
        duty = unit.hardware.heater.duty
        await unit.advance(50, step=5)
        unit.model.celsius = job.model.max_temp_to_reduce_heating + 0.8
        await unit.advance(5, step=5)  # the safety read at 53 s
        self.assertAlmostEqual(
            unit.hardware.heater.duty, round(duty * 0.9, 2), places=2
        )
        self.assertEqual(unit.broker.published(BLINK), [])
        self.assertTrue(any("reduced" in line for line in self.logs(unit, "info")))

    async def test_above_disable_the_heater_goes_off_and_the_monitor_blinks(
        self,
    ) -> None:
        unit, job = await self.start("thermostat", target_temperature=35)
        await unit.advance(50, step=5)
        unit.model.celsius = job.model.max_temp_to_disable_heating + 0.5
        await unit.advance(5, step=5)
        self.assertEqual(unit.hardware.heater.duty, 0)
        self.assertEqual([m.payload for m in unit.broker.published(BLINK)], [b"6"])
        self.assertTrue(
            unit.hardware.heater.cut_off, "the driver latched its cut-off too"
        )
        self.assertTrue(
            any("heater off" in line for line in self.logs(unit, "warning"))
        )
        await unit.advance(150, step=5)  # the next estimate: still far above the target
        self.assertEqual(unit.hardware.heater.duty, 0)
        self.assertEqual(job.state, "ready")

    async def test_a_duty_the_heater_refuses_is_logged_not_fatal(self) -> None:
        unit = await simulated_unit(self, REGISTRY)
        heater = unit.hardware.heater
        heater.cut_off, heater.resume_below = (
            True,
            0.0,
        )  # latched, and not about to let go
        job = await unit.manager.run(
            RunRequest(
                "temperature_automation",
                "exp1",
                options={"automation_name": "thermostat", "target_temperature": 35},
            )
        )
        await unit.settle()
        self.assertEqual(heater.duty, 0)
        self.assertTrue(
            any(
                "refused" in line and "cut off" in line
                for line in self.logs(unit, "warning")
            ),
            self.logs(unit, "warning"),
        )
        self.assertEqual(unit.broker.value(f"{PREFIX}/heater_duty_cycle"), b"0.0")
        event = json.loads(unit.broker.value(f"{PREFIX}/latest_event") or b"")
        self.assertEqual(
            event["data"]["current_dc"], 0.0, "what the heater does, not what was asked"
        )
        self.assertEqual(job.state, "ready", "a refusal is not a crash")

    async def test_above_shutdown_the_heater_goes_off_with_an_error(self) -> None:
        unit, job = await self.start("only_record_temperature")
        await unit.advance(95 + 15, step=5)  # in a series: every sample is checked
        unit.model.celsius = job.model.max_temp_to_shutdown + 3
        await unit.advance(5, step=5)
        self.assertEqual(unit.hardware.heater.duty, 0)
        self.assertEqual([m.payload for m in unit.broker.published(BLINK)], [b"6"])
        errors = self.logs(unit, "error")
        self.assertTrue(
            any(f"above {job.model.max_temp_to_shutdown:g}" in line for line in errors),
            errors,
        )
        self.assertEqual(job.state, "ready")

    async def test_mqtt_shapes(self) -> None:
        unit, _ = await self.start("thermostat", target_temperature=30)
        broker = unit.broker
        temperature = json.loads(broker.value(f"{PREFIX}/temperature") or b"")
        self.assertEqual(list(temperature), ["timestamp", "temperature"])
        self.assertRegex(
            temperature["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
        )
        self.assertLessEqual(abs(temperature["temperature"] - 22.0), 0.1)
        self.assertEqual(
            broker.value(f"{PREFIX}/heater_duty_cycle"),
            str(round(2.6 * (30 - temperature["temperature"]), 2)).encode(),
        )
        self.assertEqual(broker.value(f"{PREFIX}/automation_name"), b"thermostat")
        self.assertEqual(broker.value(f"{PREFIX}/target_temperature"), b"30.0")
        event = json.loads(broker.value(f"{PREFIX}/latest_event") or b"")
        self.assertEqual(list(event), ["event_name", "message", "data"])
        self.assertEqual(event["event_name"], "UpdatedHeaterDC")
        self.assertEqual(
            list(event["data"]),
            ["current_dc", "delta_dc", "target_temperature", "latest_temperature"],
        )
        self.assertEqual(event["data"]["target_temperature"], 30.0)
        for topic in (
            "temperature",
            "heater_duty_cycle",
            "latest_event",
            "target_temperature",
            "automation_name",
        ):
            (last,) = broker.published(f"{PREFIX}/{topic}")[-1:]
            self.assertEqual((last.qos, last.retain), (2, True), topic)
        record = json.loads(
            broker.published(f"{PREFIX}/temperature_automation_settings")[-1].payload
        )
        self.assertEqual(
            list(record),
            [
                "pioreactor_unit",
                "experiment",
                "started_at",
                "ended_at",
                "automation_name",
                "settings",
            ],
        )
        self.assertEqual(
            json.loads(base64.b64decode(record["settings"])),
            {"target_temperature": 30.0},
        )
        self.assertEqual(
            (
                record["pioreactor_unit"],
                record["experiment"],
                record["automation_name"],
            ),
            ("pio1", "exp1", "thermostat"),
        )
        self.assertFalse(
            broker.published(f"{PREFIX}/temperature_automation_settings")[-1].retain
        )

    async def test_bad_options_are_refused(self) -> None:
        unit = await simulated_unit(self, REGISTRY)
        with self.assertRaisesRegex(BadOptions, "not a temperature automation"):
            await unit.manager.run(
                RunRequest(
                    "temperature_automation",
                    "exp1",
                    options={"automation_name": "sauna"},
                )
            )
        with self.assertRaisesRegex(BadOptions, "target_temperature"):
            await unit.manager.run(
                RunRequest(
                    "temperature_automation",
                    "exp1",
                    options={
                        "automation_name": "thermostat",
                        "target_temperature": "warm",
                    },
                )
            )
        with self.assertRaisesRegex(JobFailed, "needs target_temperature"):
            await unit.manager.run(
                RunRequest(
                    "temperature_automation",
                    "exp1",
                    options={"automation_name": "thermostat"},
                )
            )
        self.assertEqual(unit.hardware.heater.duty, 0)

    def test_the_plugins_register_both_automations(self) -> None:
        found = Registry.from_plugins().automations["temperature"]
        self.assertIs(found.get("thermostat"), Thermostat)
        self.assertIs(found.get("only_record_temperature"), OnlyRecordTemperature)
