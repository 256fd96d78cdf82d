"""The OD reading on the simulated unit: MQTT shapes, tracking the culture, settings, calibration, safety."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from twisted.trial.unittest import TestCase

from pioreactor_appliance.calibrations import ACTIVE_NAMESPACE, calibration_path
from pioreactor_appliance.config import Config
from pioreactor_appliance.hardware.sim.model import PD2_VOLTS_PER_OD, PD_DARK_VOLTS
from pioreactor_appliance.jobs.base import JobFailed
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.od_reading import ODReader
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.settings import BadOptions

from .simulated import SimulatedUnit, simulated_unit

PREFIX = "pioreactor/pio1/exp1/od_reading"
IR_80 = (
    round(80 * 2.55) / 255
)  # the simulator's IR intensity at 80 %, as the LED DAC rounds it
# The simulator's photodiodes have no mains ripple to average over: most tests sample without pacing.
UNPACED = Config.defaults().with_overrides(
    [("od_reading.config", "sampling_seconds", "0")]
)


async def start(unit: SimulatedUnit, **options: Any) -> Any:
    """Start od_reading: its start-up waits on the clock (LED settling), so time must move meanwhile."""
    starting = unit.manager.run(RunRequest("od_reading", "exp1", options=options))
    for _ in range(40):
        if starting.called:
            break
        await unit.advance(0.25)
    return await starting


def readings(unit: SimulatedUnit, topic: str = "od2") -> list[dict[str, Any]]:
    return [
        json.loads(m.payload)
        for m in unit.broker.published(f"{PREFIX}/{topic}")
        if m.payload
    ]


def warnings(unit: SimulatedUnit, level: str = "warning") -> list[str]:
    return [
        json.loads(m.payload)["message"]
        for m in unit.broker.published(f"pioreactor/pio1/exp1/logs/app/{level}")
    ]


class ODReadingTests(TestCase):
    timeout = 30

    def assertClose(self, actual: float, expected: float, tolerance: float) -> None:
        self.assertLessEqual(
            abs(actual - expected),
            tolerance,
            f"{actual} is not within {tolerance} of {expected}",
        )

    async def unit(self, config: Config | None = None) -> SimulatedUnit:
        return await simulated_unit(
            self, Registry({"od_reading": ODReader}), config=config or UNPACED
        )

    async def test_readings_arrive_every_interval_in_the_reference_shapes(self) -> None:
        unit = await self.unit(
            Config.defaults()
        )  # bursts paced over 0.1 s, as on a unit
        job = await start(unit)
        await unit.advance(31, step=0.5)
        ods = [json.loads(m.payload) for m in unit.broker.published(f"{PREFIX}/ods")]
        self.assertEqual(len(ods), 7, "one at start, then every 5 s")
        times = [job_time(o["timestamp"]) for o in ods]
        self.assertEqual({round(b - a, 3) for a, b in pairwise(times)}, {5.0})
        last = ods[-1]
        self.assertEqual(list(last), ["timestamp", "ods"])
        self.assertEqual(list(last["ods"]), ["2"], "REF is never published")
        reading = last["ods"]["2"]
        self.assertEqual(
            list(reading),
            ["calibrated", "timestamp", "angle", "od", "channel", "ir_led_intensity"],
        )
        self.assertEqual(
            (
                reading["calibrated"],
                reading["angle"],
                reading["channel"],
                reading["ir_led_intensity"],
            ),
            (0, "90", "2", 80.0),
        )
        self.assertEqual(readings(unit)[-1], reading)
        self.assertIsNone(unit.broker.value(f"{PREFIX}/od1"))
        self.assertEqual(unit.broker.value(f"{PREFIX}/interval"), b"5.0")
        self.assertEqual(unit.broker.value(f"{PREFIX}/ir_led_intensity"), b"80.0")
        self.assertEqual(
            float(unit.broker.value(f"{PREFIX}/first_od_obs_time") or b""), times[0]
        )
        relative = [
            json.loads(m.payload)
            for m in unit.broker.published(f"{PREFIX}/relative_intensity_of_ir_led")
        ]
        self.assertEqual(
            [r["timestamp"] for r in relative],
            [ods[0]["timestamp"], ods[5]["timestamp"]],
        )
        self.assertAlmostEqual(
            relative[-1]["relative_intensity_of_ir_led"], 1.0, places=2
        )
        for message in unit.broker.published(f"{PREFIX}/+"):
            self.assertEqual((message.qos, message.retain), (2, True), message.topic)
        self.assertEqual(unit.model.leds[0], 0, "the IR LED is dark between readings")
        self.assertEqual(unit.manager.unit_state.locked_leds, {"A": "od_reading"})
        await job.stop()
        self.assertEqual(unit.manager.unit_state.locked_leds, {})
        self.assertIsNone(unit.broker.value(f"{PREFIX}/ods"), "cleared on a clean stop")

    async def test_od_is_proportional_to_the_culture_as_it_grows_and_is_diluted(
        self,
    ) -> None:
        unit = await self.unit()
        job = await start(unit)
        # unity normalisation: OD is the signal in volts at the first reference level
        expected_per_od = PD2_VOLTS_PER_OD * IR_80
        ratios = []
        for od in (0.1, 0.8, 0.2):
            unit.model.od = od
            await unit.advance(60, step=0.5)
            ratios.append(readings(unit)[-1]["od"] / unit.model.od)
        for ratio in ratios:
            self.assertClose(ratio / expected_per_od, 1.0, 0.02)
        unit.broker.client().publish(f"{PREFIX}/interval/set", b"60")
        await unit.advance(120, step=5)
        before, before_od = readings(unit)[-1]["od"], unit.model.od
        await unit.advance(
            1800, step=10
        )  # the simulated culture grows 18 % in half an hour
        grown = unit.model.od / before_od
        self.assertClose(readings(unit)[-1]["od"] / before, grown, 0.02)
        self.assertGreater(grown, 1.1)
        await job.stop()

    async def test_interval_and_intensity_can_be_set_and_bad_values_are_refused(
        self,
    ) -> None:
        unit = await self.unit()
        job = await start(unit)
        client = unit.broker.client()
        client.publish(f"{PREFIX}/interval/set", b"2")
        for bad in (b"fast", b"0.5", b"-1", b"inf"):
            client.publish(f"{PREFIX}/interval/set", bad)
        client.publish(f"{PREFIX}/ir_led_intensity/set", b"50")
        for bad in (b"bright", b"150", b"0"):
            client.publish(f"{PREFIX}/ir_led_intensity/set", bad)
        client.publish(f"{PREFIX}/ods/set", b"{}")
        self.assertEqual(len(warnings(unit)), 8)
        self.assertEqual(unit.broker.value(f"{PREFIX}/interval"), b"2.0")
        self.assertEqual(unit.broker.value(f"{PREFIX}/ir_led_intensity"), b"50.0")
        count = len(readings(unit))
        await unit.advance(41, step=0.5)
        new = [r for r in readings(unit)[count:] if r["ir_led_intensity"] == 50.0]
        times = [job_time(r["timestamp"]) for r in new]
        self.assertEqual(
            {round(b - a, 3) for a, b in pairwise(times)}, {2.0}, "every 2 s now"
        )
        self.assertGreaterEqual(len(new), 20)
        ratio = new[-1]["od"] / unit.model.od
        self.assertClose(
            ratio / (PD2_VOLTS_PER_OD * IR_80), 1.0, 0.03
        )  # OD does not depend on the intensity
        await job.stop()

    async def test_sleeping_takes_no_readings_and_darkens_the_ir_led(self) -> None:
        unit = await self.unit()
        job = await start(unit)
        client = unit.broker.client()
        client.publish(f"{PREFIX}/$state/set", b"sleeping")
        await unit.advance(1, step=0.25)
        count = len(readings(unit))
        await unit.advance(30, step=0.5)
        self.assertEqual(len(readings(unit)), count)
        self.assertEqual(unit.model.leds[0], 0)
        client.publish(f"{PREFIX}/$state/set", b"ready")
        await unit.advance(11, step=0.5)
        self.assertEqual(len(readings(unit)), count + 2)
        await job.stop()

    async def test_bad_options_and_config_refuse_to_start(self) -> None:
        unit = await self.unit()
        with self.assertRaises(BadOptions):
            unit.manager.prepare(
                RunRequest("od_reading", "exp1", options={"interval": 0.5})
            )
        with self.assertRaises(JobFailed) as caught:
            await start(unit, ir_led_intensity="bright")
        self.assertIn("percentage or auto", str(caught.exception))
        unit.clock.advance(2)  # past the manager's debounce
        config = Config.defaults().with_overrides(
            [("od_config.photodiode_channel", "2", "REF")]
        )
        other = await self.unit(config)
        with self.assertRaises(JobFailed) as caught:
            await start(other)
        self.assertIn("one or more angles", str(caught.exception))

    async def test_a_failed_dark_reading_set_up_fails_the_run_with_the_reason(self) -> None:
        config = Config.defaults().with_overrides([("od_config.photodiode_channel", "1", "135")])  # no REF
        unit = await self.unit(config)
        with self.assertRaises(JobFailed) as caught:
            await start(unit, ir_led_intensity="auto")
        self.assertIn("auto needs one signal channel and a REF", str(caught.exception))
        self.flushLoggedErrors(JobFailed)
        states = [m.payload for m in unit.broker.published(f"{PREFIX}/$state")]
        self.assertEqual(states, [b"init", b"ready", b"disconnected"])
        self.assertEqual(unit.manager.running_jobs(), [])

    async def test_auto_intensity_dims_the_ir_led_to_keep_the_reference_in_range(
        self,
    ) -> None:
        unit = await self.unit()
        job = await start(unit, ir_led_intensity="auto")
        # REF reads 0.5 V per unit intensity: at 85 % it is above 0.25 V, so auto dims to the 50 % floor
        self.assertEqual(unit.broker.value(f"{PREFIX}/ir_led_intensity"), b"50.0")
        await unit.advance(5, step=0.5)
        self.assertEqual(readings(unit)[-1]["ir_led_intensity"], 50.0)
        await job.stop()

    async def test_an_active_od_calibration_gives_calibrated_readings(self) -> None:
        unit = await self.unit()
        write_calibration(unit, "od90", "cal1", slope=PD2_VOLTS_PER_OD * IR_80, ir=80)
        job = await start(unit)
        unit.model.od = 0.5
        await unit.advance(60, step=0.5)
        reading = readings(unit)[-1]
        self.assertEqual(
            list(reading),
            [
                "calibrated",
                "timestamp",
                "angle",
                "od",
                "channel",
                "ir_led_intensity",
                "calibration_name",
            ],
        )
        self.assertEqual(
            (reading["calibrated"], reading["calibration_name"]), (1, "cal1")
        )
        self.assertClose(reading["od"], unit.model.od, 0.01)
        raw = readings(unit, "raw_od2")[-1]
        self.assertEqual(raw["calibrated"], 0)
        self.assertClose(raw["od"], unit.model.od * PD2_VOLTS_PER_OD * IR_80, 0.003)
        self.assertEqual(readings(unit, "calibrated_od2")[-1], reading)
        self.assertEqual(
            json.loads(unit.broker.value(f"{PREFIX}/ods") or b"")["ods"]["2"], reading
        )
        unit.model.od = 2.0  # beyond the recorded range, which ends at OD 1
        await unit.advance(60, step=0.5)
        self.assertEqual(readings(unit)[-1]["od"], 1.0)
        out_of_range = [w for w in warnings(unit) if "outside calibration cal1" in w]
        self.assertEqual(len(out_of_range), 1, "warned once, not at every reading")
        client = unit.broker.client()
        client.publish(f"{PREFIX}/ir_led_intensity/set", b"60")
        self.assertIn("made with the IR LED at 80", warnings(unit)[-1])
        await job.stop()

    async def test_a_calibration_made_at_another_intensity_refuses_to_start(
        self,
    ) -> None:
        unit = await self.unit()
        write_calibration(unit, "od90", "dim", slope=0.1, ir=50)
        with self.assertRaises(JobFailed) as caught:
            await start(unit)
        self.assertIn("made with the IR LED at 50 %, not 80 %", str(caught.exception))
        self.assertEqual(unit.manager.unit_state.locked_leds, {})

    async def test_a_photodiode_above_the_limit_darkens_every_led_and_stops_the_job(
        self,
    ) -> None:
        unit = await self.unit()
        job = await start(unit)
        flickers = "pioreactor/pio1/$experiment/monitor/flicker_led_with_error_code"
        unit.model.od = (3.1 - PD_DARK_VOLTS) / (
            PD2_VOLTS_PER_OD * IR_80
        )  # 3.1 V: warn, keep reading
        await unit.advance(20, step=0.5)
        blinks = [m.payload for m in unit.broker.published(flickers)]
        self.assertGreaterEqual(len(blinks), 2)
        self.assertEqual(set(blinks), {b"5"})
        self.assertEqual(
            len([w for w in warnings(unit) if "close to the 3.2 V limit" in w]),
            1,
            "warned once",
        )
        self.assertEqual(job.state, "ready")
        unit.model.od = 20.0  # 4 V
        await unit.advance(5, step=0.5)
        await job.when_stopped()
        self.assertEqual(len(unit.broker.published(flickers)), len(blinks) + 1)
        self.assertIn("above 3.2 V", warnings(unit, "error")[-1])
        self.assertEqual(unit.broker.value(f"{PREFIX}/$state"), b"disconnected")
        self.assertEqual(unit.model.leds, [0, 0, 0, 0])
        self.assertIn("above 3.2 V", job.stop_reason or "")


def job_time(timestamp: str) -> float:
    from pioreactor_appliance.timestamps import parse_iso

    return parse_iso(timestamp).timestamp()


def write_calibration(
    unit: SimulatedUnit, device: str, name: str, *, slope: float, ir: float
) -> None:
    """A straight-line OD calibration (signal = slope x OD) recorded over OD 0-1, made active."""
    path = calibration_path(unit.data_dir, device, name)
    path.parent.mkdir(parents=True)
    path.write_text(
        f"calibration_type: od\ncalibration_name: {name}\nangle: '90'\npd_channel: '2'\n"
        f"ir_led_intensity: {ir}\ncurve_data_:\n  type: poly\n  coefficients: [{slope}, 0.0]\n"
        "recorded_data:\n  x: [0.0, 0.25, 0.5, 1.0]\n  y: [0.0, 0.05, 0.1, 0.2]\n",
        encoding="utf-8",
    )
    unit.manager.unit_state.cache.set(ACTIVE_NAMESPACE, device, name)
