"""Dosing automations on the simulated unit: schedules, the turbidostat's hold, refusals, sleep and stop."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.trial.unittest import TestCase

from pioreactor_appliance.jobs.base import JobFailed
from pioreactor_appliance.jobs.dosing_automation import (
    PUMP_ACTIONS,
    Chemostat,
    DosingAutomation,
    FedBatch,
    Silent,
    Turbidostat,
    subdoses,
)
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.pumps import AddAltMedia, AddMedia, RemoveWaste
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.jobs.settings import BadOptions
from pioreactor_appliance.jobs.states import State
from pioreactor_appliance.timestamps import iso_utc, parse_iso

from .simulated import SimulatedUnit, simulated_unit
from .test_pumps import bioreactor, calibrate, slices

REGISTRY = Registry(
    {k.job_name: k for k in (AddMedia, RemoveWaste, AddAltMedia)},
    {
        "dosing": {
            k.automation_name: k for k in (Silent, Chemostat, Turbidostat, FedBatch)
        }
    },
)
JOB = "pioreactor/pio1/exp1/dosing_automation"
OD_FILTERED = "pioreactor/pio1/exp1/growth_rate_calculating/od_filtered"


async def step(
    unit: SimulatedUnit, automation: DosingAutomation, coarse: float
) -> None:
    """Fine steps while a dose runs (pumps are timed to the tenth), coarse otherwise; none while a pump starts.

    A pump action reads its calibration off the reactor thread before it runs:
    simulated time waits for that, so a loaded machine does not shift the doses.
    """
    if any(
        job is not None and job.state is State.INIT
        for job in map(unit.manager.get, PUMP_ACTIONS)
    ):
        await unit.settle()
        return
    seconds = 0.1 if automation.dosing else coarse
    await unit.advance(seconds, step=seconds)


async def run_for(
    unit: SimulatedUnit,
    automation: DosingAutomation,
    seconds: float,
    coarse: float = 5.0,
) -> None:
    end = unit.clock.seconds() + seconds
    while unit.clock.seconds() < end - 1e-6:
        await step(unit, automation, min(coarse, end - unit.clock.seconds()))


def latest_event(unit: SimulatedUnit) -> dict[str, Any]:
    return json.loads(unit.broker.value(f"{JOB}/latest_event"))


def events_named(unit: SimulatedUnit, name: str) -> list[dict[str, Any]]:
    found = [
        json.loads(m.payload)
        for m in unit.broker.published(f"{JOB}/latest_event")
        if m.payload
    ]
    return [e for e in found if e["event_name"] == name]


def publish_od(unit: SimulatedUnit, value: float, age: float = 0.0) -> None:
    payload = {"od_filtered": value, "timestamp": iso_utc(unit.clock.seconds() - age)}
    unit.broker.client().publish(OD_FILTERED, json.dumps(payload).encode(), qos=2)


class DosingAutomationTests(TestCase):
    async def unit(self, *devices: str) -> SimulatedUnit:
        unit = await simulated_unit(self, REGISTRY)
        await calibrate(unit, *devices)
        return unit

    async def start(
        self, unit: SimulatedUnit, name: str, **options: Any
    ) -> DosingAutomation:
        request = RunRequest(
            "dosing_automation", "exp1", options={"automation_name": name, **options}
        )
        return await unit.manager.run(request)  # type: ignore[return-value]

    def test_exchanges_split_in_halves_until_a_subdose_fits(self) -> None:
        self.assertEqual(len(subdoses(0.5, 0.5, 0.0, 1.0)), 1)
        parts = subdoses(1.0, 1.0, 0.0, 1.0)
        self.assertEqual([(p.waste_ml, p.media_ml) for p in parts], [(0.5, 0.5)] * 2)
        self.assertEqual(len(subdoses(3.0, 1.0, 1.0, 1.0)), 8)

    async def test_chemostat_and_turbidostat_need_pump_calibrations(self) -> None:
        unit = await self.unit("media_pump")
        with self.assertRaisesRegex(
            JobFailed, "needs an active waste_pump calibration"
        ):
            await self.start(unit, "chemostat")
        await unit.advance(1.1)
        with self.assertRaisesRegex(
            JobFailed, "needs an active waste_pump calibration"
        ):
            await self.start(unit, "turbidostat", target_biomass=2.0)
        self.assertEqual(slices(unit), [])
        await unit.advance(1.1)
        silent = await self.start(unit, "silent")
        self.assertEqual(unit.broker.value(f"{JOB}/automation_name"), b"silent")
        await run_for(unit, silent, 600)
        self.assertEqual(slices(unit), [], "silent never doses")

    async def test_bad_options_are_refused(self) -> None:
        unit = await self.unit("media_pump", "waste_pump")
        for options, reason in [
            ({"automation_name": "turbidostat"}, "needs option target_biomass"),
            (
                {"automation_name": "turbidostat", "target_biomass": 0},
                "must be above 0",
            ),
            (
                {
                    "automation_name": "turbidostat",
                    "target_biomass": 1,
                    "biomass_signal": "colour",
                },
                "not one of",
            ),
            (
                {"automation_name": "chemostat", "exchange_volume_ml": -1},
                "must be above 0",
            ),
            ({"automation_name": "chemostat", "duration": "soon"}, "not a number"),
            ({"automation_name": "morbidostat"}, "not a dosing automation"),
        ]:
            with self.assertRaisesRegex(BadOptions, reason):
                unit.manager.prepare(
                    RunRequest("dosing_automation", "exp1", options=options)
                )

    async def test_chemostat_exchanges_on_schedule_and_takes_new_settings(self) -> None:
        unit = await self.unit("media_pump", "waste_pump")
        started = unit.clock.seconds()
        before = unit.model.volume_ml
        chemostat = await self.start(unit, "chemostat")
        await run_for(unit, chemostat, 60, coarse=1.0)
        added = slices(unit, "add_media")
        self.assertAlmostEqual(sum(p["volume_change"] for p in added), 0.5)
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit, "remove_waste")), 1.5
        )
        self.assertEqual(added[0]["source_of_event"], "dosing_automation:chemostat")
        first_slice = parse_iso(added[0]["timestamp"]).timestamp() - started
        self.assertTrue(
            2.4 <= first_slice <= 2.7,
            f"the first run 2 s after the start: {first_slice}",
        )
        self.assertLessEqual(abs(unit.model.volume_ml - before), 0.2)
        self.assertEqual(
            latest_event(unit),
            {
                "event_name": "DilutionEvent",
                "message": "exchanged 0.50 ml",
                "data": {"exchange_volume_ml": 0.5, "volume_actually_cycled_ml": 0.5},
            },
        )
        self.assertEqual(len(events_named(unit, "DosingStarted")), 1)
        self.assertEqual(len(events_named(unit, "DosingStopped")), 1)
        states = [
            m.payload
            for m in unit.broker.published("pioreactor/pio1/exp1/remove_waste/$state")
        ]
        self.assertEqual(
            states.count(b"disconnected"), 2, "waste, then the extra waste"
        )

        await run_for(unit, chemostat, 1200 - 60 + 30)
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit, "add_media")), 1.0
        )

        client = unit.broker.client()
        client.publish(f"{JOB}/duration/set", b"-5")
        client.publish(f"{JOB}/exchange_volume_ml/set", b"lots")
        self.assertEqual(unit.broker.value(f"{JOB}/duration"), b"20.0")
        client.publish(f"{JOB}/duration/set", b"10")
        client.publish(f"{JOB}/exchange_volume_ml/set", b"0.25")
        record = json.loads(
            unit.broker.published(f"{JOB}/dosing_automation_settings")[-1].payload
        )
        self.assertEqual(
            json.loads(base64.b64decode(record["settings"])),
            {"exchange_volume_ml": 0.25, "duration": 10.0},
        )
        self.assertEqual(
            (record["automation_name"], record["ended_at"]), ("chemostat", None)
        )
        await run_for(unit, chemostat, 600 + 30)
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit, "add_media")), 1.25
        )

    async def test_turbidostat_holds_the_culture_near_its_target_for_hours(
        self,
    ) -> None:
        unit = await self.unit("media_pump", "waste_pump")
        target = 1.6
        turbidostat = await self.start(unit, "turbidostat", target_biomass=target)
        self.assertEqual(unit.broker.value(f"{JOB}/biomass_signal"), b"normalized_od")
        initial_od = unit.model.od
        publish_every, last_publish = 10.0, unit.clock.seconds()
        held: list[float] = []
        end = unit.clock.seconds() + 5 * 3600
        while unit.clock.seconds() < end:
            await step(unit, turbidostat, publish_every)
            if unit.clock.seconds() - last_publish >= publish_every - 1e-6:
                last_publish = unit.clock.seconds()
                normalized = unit.model.od / initial_od
                publish_od(unit, normalized)
                if held or normalized >= target:
                    held.append(normalized)
        hours_held = len(held) * publish_every / 3600
        self.assertGreater(
            hours_held, 3, "the culture reached its target and was held for hours"
        )
        self.assertLessEqual(max(held), target * 1.02)
        self.assertGreaterEqual(min(held), target * 0.88)
        dilutions = events_named(unit, "DilutionEvent")
        self.assertGreater(len(dilutions), 10)
        data = dilutions[-1]["data"]
        self.assertEqual(
            list(data),
            [
                "latest_biomass",
                "target_biomass",
                "resolved_biomass_signal",
                "exchange_volume_ml",
                "volume_actually_moved_ml",
            ],
        )
        self.assertEqual(
            (
                data["target_biomass"],
                data["resolved_biomass_signal"],
                data["exchange_volume_ml"],
            ),
            (target, "normalized_od", 1.0),
        )
        self.assertGreaterEqual(data["latest_biomass"], target)
        self.assertAlmostEqual(data["volume_actually_moved_ml"], 1.0)
        self.assertEqual(bioreactor(unit).values("exp1")["current_volume_ml"], 14.0)
        self.assertLessEqual(abs(unit.model.volume_ml - 14.0), 0.2)

    async def test_turbidostat_ignores_stale_retained_and_unreadable_inputs(
        self,
    ) -> None:
        unit = await self.unit("media_pump", "waste_pump")
        unit.broker.client().publish(
            OD_FILTERED,
            json.dumps(
                {"od_filtered": 9.0, "timestamp": iso_utc(unit.clock.seconds())}
            ).encode(),
            retain=True,
        )
        turbidostat = await self.start(unit, "turbidostat", target_biomass=2.0)
        self.assertFalse(
            turbidostat.dosing, "a retained value is not a fresh measurement"
        )
        publish_od(unit, 3.0, age=400)
        self.assertFalse(turbidostat.dosing)
        self.assertEqual(latest_event(unit)["event_name"], "ErrorOccurred")
        self.assertIn("400 s old", latest_event(unit)["message"])
        unit.broker.client().publish(OD_FILTERED, b"{not json")
        unit.broker.client().publish(
            OD_FILTERED, b'{"od_filtered": "high", "timestamp": "2024-01-01T00:00:00Z"}'
        )
        warnings = unit.broker.published("pioreactor/pio1/exp1/logs/app/warning")
        self.assertEqual(len(warnings), 2)
        self.assertEqual(turbidostat.state, "ready")
        publish_od(unit, 1.0)
        await run_for(unit, turbidostat, 240)
        self.assertEqual(latest_event(unit)["event_name"], "ErrorOccurred")
        await run_for(unit, turbidostat, 120)
        self.assertIn("no fresh normalized_od", latest_event(unit)["message"])
        self.assertEqual(slices(unit), [])

    async def test_sleeping_stops_a_running_pump_and_waking_resumes(self) -> None:
        unit = await self.unit("media_pump", "waste_pump")
        chemostat = await self.start(unit, "chemostat", exchange_volume_ml=0.8)
        await run_for(unit, chemostat, 2.0, coarse=0.1)
        while chemostat.dosing and unit.manager.get("add_media") is None:
            await step(unit, chemostat, 0.1)  # the pause before the first dose
        await run_for(unit, chemostat, 0.3)
        pump = unit.manager.get("add_media")
        self.assertIsNotNone(pump)
        self.assertEqual(unit.hardware.pumps["media"].duty, 100)
        unit.broker.client().publish(f"{JOB}/$state/set", b"sleeping")
        await pump.when_stopped()
        await unit.advance(0.5, step=0.1)
        self.assertEqual(unit.hardware.pumps["media"].duty, 0)
        self.assertFalse(chemostat.dosing)
        moved = sum(p["volume_change"] for p in slices(unit, "add_media"))
        self.assertLess(moved, 0.8)
        await run_for(unit, chemostat, 2400)
        self.assertEqual(
            sum(p["volume_change"] for p in slices(unit, "add_media")),
            moved,
            "asleep: no doses",
        )
        unit.broker.client().publish(f"{JOB}/$state/set", b"ready")
        await run_for(unit, chemostat, 1230)
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit, "add_media")), moved + 0.8
        )
        await chemostat.stop()
        record = json.loads(
            unit.broker.published(f"{JOB}/dosing_automation_settings")[-1].payload
        )
        self.assertIsNotNone(record["ended_at"])

    async def test_fed_batch_adds_without_removing_and_sleeps_at_max_fill(self) -> None:
        unit = await self.unit("media_pump")
        await bioreactor(unit).update(
            "exp1", {"current_volume_ml": 34.5}, unit.broker.client()
        )
        fed = await self.start(unit, "fed_batch", dosing_volume_ml=0.5, duration=1)
        await run_for(unit, fed, 200, coarse=1.0)
        self.assertEqual(slices(unit, "remove_waste"), [])
        self.assertAlmostEqual(
            sum(p["volume_change"] for p in slices(unit, "add_media")), 1.0
        )
        self.assertEqual(
            fed.state, "sleeping", "a third dose would reach the 36 ml max fill"
        )
        self.assertAlmostEqual(
            bioreactor(unit).values("exp1")["current_volume_ml"], 35.5
        )
        warnings = [
            m.payload
            for m in unit.broker.published("pioreactor/pio1/exp1/logs/app/warning")
        ]
        self.assertTrue(
            any(b"max fill of 36 ml; going to sleep" in w for w in warnings), warnings
        )
