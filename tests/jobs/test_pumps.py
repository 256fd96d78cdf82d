"""Pump actions on the simulated unit: volumes moved, dosing_events slices, refusals, bookkeeping."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from pioreactor_appliance.calibrations import ACTIVE_NAMESPACE, calibration_path
from pioreactor_appliance.config import Config
from pioreactor_appliance.hardware.sim.calibrations import (
    calibration_name,
    pump_calibration_yaml,
)
from pioreactor_appliance.hardware.unit import model_of
from pioreactor_appliance.jobs.base import JobFailed
from pioreactor_appliance.jobs.bioreactor import Bioreactor
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.pumps import (
    DEFAULT_ML_PER_SECOND,
    AddAltMedia,
    AddMedia,
    CirculateMedia,
    RemoveWaste,
)
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.settings import BadOptions

from .simulated import SimulatedUnit, simulated_unit

PUMPS = Registry(
    {k.job_name: k for k in (AddMedia, RemoveWaste, AddAltMedia, CirculateMedia)}
)
EVENTS = "pioreactor/pio1/exp1/dosing_events"
BIOREACTOR = "pioreactor/pio1/exp1/bioreactor"


async def calibrate(unit: SimulatedUnit, *devices: str, dc: str | None = None) -> None:
    """Install and activate the simulator-matching calibration of each pump device (made at ``dc``, if given)."""
    for device in devices:
        name = calibration_name(device)
        path = calibration_path(unit.data_dir, device, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = pump_calibration_yaml(device, "pio1")
        if dc is not None:
            text = text.replace("dc: 100.0\n", f"dc: {dc}\n")
            assert f"dc: {dc}\n" in text
        path.write_text(text)
        await unit.manager.unit_state.cache.set(ACTIVE_NAMESPACE, device, name)


def slices(unit: SimulatedUnit, event: str | None = None) -> list[dict[str, Any]]:
    found = []
    for message in unit.broker.published(EVENTS):
        assert (message.qos, message.retain) == (2, False), message
        payload = json.loads(message.payload)
        if event is None or payload["event"] == event:
            found.append(payload)
    return found


def bioreactor(unit: SimulatedUnit, config: Config | None = None) -> Bioreactor:
    config = config or Config.defaults()
    return Bioreactor(unit.manager.unit_state.cache, config, model_of(config), "pio1")


class PumpTests(TestCase):
    def assertNear(
        self, first: float, second: float, tolerance: float, msg: str = ""
    ) -> None:
        self.assertLessEqual(
            abs(first - second),
            tolerance,
            msg or f"{first} is not within {tolerance} of {second}",
        )

    async def unit(self, *overrides: tuple[str, str, str]) -> SimulatedUnit:
        config = (
            Config.defaults().with_overrides(list(overrides)) if overrides else None
        )
        return await simulated_unit(self, PUMPS, config=config)

    async def test_a_dose_moves_the_volume_and_its_slices_sum_to_it(self) -> None:
        unit = await self.unit()
        await calibrate(unit, "media_pump")
        before = unit.model.volume_ml
        job = await unit.manager.run(
            RunRequest(
                "add_media", "exp1", options={"ml": 2.0, "source_of_event": "test"}
            )
        )
        await unit.advance(3.0, step=0.1)
        self.assertTrue(job.stopped)
        self.assertNear(unit.model.volume_ml - before, 2.0, 0.15)
        events = slices(unit)
        self.assertGreaterEqual(len(events), 4, "a slice every half second")
        for payload in events:
            self.assertEqual(
                list(payload),
                ["volume_change", "event", "source_of_event", "timestamp"],
            )
            self.assertEqual(
                (payload["event"], payload["source_of_event"]), ("add_media", "test")
            )
            self.assertTrue(payload["timestamp"].endswith("Z"))
        self.assertAlmostEqual(sum(p["volume_change"] for p in events), 2.0, places=9)
        states = [
            m.payload
            for m in unit.broker.published("pioreactor/pio1/exp1/add_media/$state")
        ]
        self.assertEqual(states, [b"init", b"ready", b"disconnected"])
        self.assertEqual(unit.broker.value(f"{BIOREACTOR}/current_volume_ml"), b"16.0")
        self.assertEqual(
            unit.broker.value(f"{BIOREACTOR}/cumulative_media_added_ml"), b"2.0"
        )
        self.assertEqual(unit.hardware.pumps["media"].duty, 0)

    async def test_the_pump_runs_at_the_duty_cycle_it_was_calibrated_at(self) -> None:
        unit = await self.unit()
        await calibrate(unit, "media_pump", dc="60.0")
        job = await unit.manager.run(RunRequest("add_media", "exp1", options={"ml": 2.0}))
        await unit.advance(0.5, step=0.1)
        self.assertEqual(unit.hardware.pumps["media"].duty, 60)
        await unit.advance(3.0, step=0.1)
        self.assertTrue(job.stopped)
        self.assertEqual(unit.hardware.pumps["media"].duty, 0)

    async def test_a_calibration_whose_duty_cycle_is_not_one_is_refused(self) -> None:
        unit = await self.unit()
        await calibrate(unit, "media_pump", dc="150.0")
        with self.assertRaises(JobFailed) as caught:
            await unit.manager.run(RunRequest("add_media", "exp1", options={"ml": 2.0}))
        self.assertIn("has dc 150.0, which must be a duty cycle in percent", str(caught.exception))
        self.assertIn("recalibrate the pump", str(caught.exception))
        self.assertEqual(unit.hardware.pumps["media"].duty, 0)

    async def test_an_early_stop_halts_the_pump_and_publishes_what_really_moved(
        self,
    ) -> None:
        unit = await self.unit()
        await calibrate(unit, "media_pump")
        before = unit.model.volume_ml
        job = await unit.manager.run(
            RunRequest("add_media", "exp1", options={"ml": 5.0})
        )
        await unit.advance(1.2, step=0.1)
        self.assertEqual(unit.hardware.pumps["media"].duty, 100)
        unit.broker.client().publish(
            "pioreactor/pio1/exp1/add_media/$state/set", b"disconnected"
        )
        await job.when_stopped()
        await unit.advance(1.0, step=0.1)
        self.assertEqual(unit.hardware.pumps["media"].duty, 0)
        changes = [p["volume_change"] for p in slices(unit)]
        self.assertEqual(len(changes), 3, changes)
        self.assertTrue(
            0 < changes[-1] < 0.5, f"the correction after the last slice: {changes}"
        )
        self.assertAlmostEqual(sum(changes), 1.2, places=4)
        self.assertNear(unit.model.volume_ml - before, 1.2, 0.15)
        self.assertAlmostEqual(
            bioreactor(unit).values("exp1")["current_volume_ml"], 14 + sum(changes)
        )

    async def test_a_volume_without_a_calibration_is_refused_a_duration_is_not(
        self,
    ) -> None:
        unit = await self.unit()
        with self.assertRaisesRegex(
            JobFailed, "needs an active media_pump calibration"
        ):
            await unit.manager.run(RunRequest("add_media", "exp1", options={"ml": 1.0}))
        await unit.advance(1.0, step=0.1)
        self.assertEqual(unit.model.volume_ml, 14.0, "the pump never ran")
        self.assertEqual(slices(unit), [])
        await unit.manager.run(
            RunRequest("add_alt_media", "exp1", options={"duration": 2.0})
        )
        await unit.advance(3.0, step=0.1)
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit, "add_alt_media")),
            2 * DEFAULT_ML_PER_SECOND,
        )
        self.assertNear(unit.model.volume_ml, 16.0, 0.15, msg="the pump ran 2 s")
        fraction = float(unit.broker.value(f"{BIOREACTOR}/alt_media_fraction"))
        self.assertAlmostEqual(fraction, 0.1822 / 14.1822)

    async def test_an_addition_reaching_max_fill_is_refused_and_one_near_it_warned(
        self,
    ) -> None:
        unit = await self.unit()
        await calibrate(unit, "media_pump")
        await bioreactor(unit).update(
            "exp1", {"current_volume_ml": 35.0}, unit.broker.client()
        )
        with self.assertRaisesRegex(JobFailed, "at or above the max fill of 36 ml"):
            await unit.manager.run(RunRequest("add_media", "exp1", options={"ml": 1.0}))
        self.assertEqual(slices(unit), [])
        await unit.advance(1.0)
        job = await unit.manager.run(
            RunRequest("add_media", "exp1", options={"ml": 0.5})
        )
        warnings = unit.broker.published("pioreactor/pio1/exp1/logs/app/warning")
        self.assertIn(b"close to its max fill", warnings[-1].payload)
        await unit.advance(1.5, step=0.1)
        self.assertTrue(job.stopped)
        self.assertEqual(bioreactor(unit).values("exp1")["current_volume_ml"], 35.5)

    async def test_waste_never_draws_the_level_below_the_efflux_tube(self) -> None:
        unit = await self.unit()
        await calibrate(unit, "waste_pump", "media_pump")
        await unit.manager.run(RunRequest("add_media", "exp1", options={"ml": 1.0}))
        await unit.advance(1.5, step=0.1)
        await unit.manager.run(RunRequest("remove_waste", "exp1", options={"ml": 3.0}))
        await unit.advance(3.5, step=0.1)
        values = bioreactor(unit).values("exp1")
        self.assertEqual(values["current_volume_ml"], 14.0)
        self.assertAlmostEqual(values["cumulative_waste_removed_ml"], 3.0)
        self.assertNear(unit.model.volume_ml, 14.0, 0.05)

    async def test_continuously_runs_in_bounded_runs_until_stopped_or_full(
        self,
    ) -> None:
        unit = await self.unit(("hardware", "pump_max_seconds", "2"))
        await calibrate(unit, "waste_pump", "media_pump")
        job = await unit.manager.run(
            RunRequest("remove_waste", "exp1", options={"continuously": "true"})
        )
        await unit.advance(5.0, step=0.1)
        self.assertFalse(job.stopped, "runs past pump_max_seconds, as several runs")
        self.assertEqual(unit.hardware.pumps["waste"].duty, 100)
        await job.stop()
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit)), 5.0, places=4
        )
        self.assertEqual(unit.hardware.pumps["waste"].duty, 0)
        await bioreactor(unit).update(
            "exp1", {"current_volume_ml": 34.8}, unit.broker.client()
        )
        job = await unit.manager.run(
            RunRequest("add_media", "exp1", options={"continuously": True})
        )
        await unit.advance(3.0, step=0.1)
        self.assertTrue(job.stopped, "inflow stops at max fill")
        volume = bioreactor(unit).values("exp1")["current_volume_ml"]
        self.assertGreaterEqual(volume, 36.0)
        self.assertLess(volume, 36.6)

    async def test_circulating_keeps_the_level_and_reports_both_pumps(self) -> None:
        unit = await self.unit()
        await calibrate(unit, "waste_pump", "media_pump")
        job = await unit.manager.run(
            RunRequest("circulate_media", "exp1", options={"duration": 4})
        )
        await unit.advance(5.0, step=0.1)
        self.assertTrue(job.stopped)
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit, "remove_waste")), 4.0, places=6
        )
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit, "add_media")), 3.4, places=6
        )
        self.assertEqual(bioreactor(unit).values("exp1")["current_volume_ml"], 14.0)
        self.assertNear(unit.model.volume_ml, 14.0, 0.2)

    async def test_bad_options_are_refused_before_anything_starts(self) -> None:
        unit = await self.unit()
        for job, options, reason in [
            ("add_media", {}, "exactly one of ml, duration or continuously, not none"),
            ("add_media", {"ml": 1, "duration": 2}, "not ml, duration"),
            ("add_media", {"ml": 1, "continuously": True}, "not ml, continuously"),
            ("add_media", {"ml": 0}, "must be above 0"),
            ("remove_waste", {"duration": "long"}, "not a number"),
            ("remove_waste", {"volume": 3}, "unknown option"),
            ("circulate_media", {}, "needs a duration"),
            ("circulate_media", {"ml": 1}, "unknown option"),
        ]:
            with self.assertRaisesRegex(BadOptions, reason):
                unit.manager.prepare(RunRequest(job, "exp1", options=options))
        self.assertEqual(unit.manager.running_jobs(), [])
