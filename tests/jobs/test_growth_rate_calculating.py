"""growth_rate_calculating: on the simulated unit's real OD readings, and on hand-made messages."""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.trial.unittest import TestCase

from pioreactor_appliance.config import Config
from pioreactor_appliance.hardware.sim.model import CARRYING_OD, DOUBLING_S
from pioreactor_appliance.jobs.base import JobFailed
from pioreactor_appliance.jobs.growth_rate_calculating import (
    NORMALISATION_NAMESPACE,
    GrowthRateCalculator,
)
from pioreactor_appliance.jobs.manager import RunRequest
from pioreactor_appliance.jobs.od_reading import ODReader
from pioreactor_appliance.jobs.registry import Registry
from pioreactor_appliance.timestamps import iso_utc

from .simulated import simulated_unit

BASE = "pioreactor/pio1/exp1"
PREFIX = f"{BASE}/growth_rate_calculating"
UNPACED = Config.defaults().with_overrides(
    [("od_reading.config", "sampling_seconds", "0")]
)


def values(broker: Any, setting: str) -> list[dict[str, Any]]:
    return [
        json.loads(m.payload)
        for m in broker.published(f"{PREFIX}/{setting}")
        if m.payload
    ]


def ods_message(seconds: float, od: float) -> bytes:
    timestamp = iso_utc(seconds)
    reading = {
        "calibrated": 0,
        "timestamp": timestamp,
        "angle": "90",
        "od": od,
        "channel": "2",
        "ir_led_intensity": 80.0,
    }
    return json.dumps({"timestamp": timestamp, "ods": {"2": reading}}).encode()


async def messages_unit(case: TestCase) -> tuple[Any, Any, Any]:
    """A unit running only growth_rate_calculating, fed by hand (its cache writes to a real file)."""
    unit = await simulated_unit(
        case, Registry({"growth_rate_calculating": GrowthRateCalculator})
    )
    return unit.manager, unit.broker, unit.clock


class GrowthRateOnTheSimulatedUnitTests(TestCase):
    timeout = 60

    async def test_it_finds_the_simulated_cultures_growth_rate_and_follows_a_dilution(
        self,
    ) -> None:
        registry = Registry(
            {"od_reading": ODReader, "growth_rate_calculating": GrowthRateCalculator}
        )
        unit = await simulated_unit(self, registry, config=UNPACED)
        starting = unit.manager.run(
            RunRequest("od_reading", "exp1", options={"interval": 60})
        )
        while not starting.called:
            await unit.advance(0.25)
        od_reading = await starting
        growth = await unit.manager.run(RunRequest("growth_rate_calculating", "exp1"))
        await unit.advance(14 * 60, step=20)
        self.assertEqual(
            values(unit.broker, "growth_rate"),
            [],
            "five readings skipped, then ten for statistics",
        )
        await unit.advance(2.5 * 3600, step=20)

        true_rate = (
            math.log(2) / (DOUBLING_S / 3600) * (1 - unit.model.od / CARRYING_OD)
        )  # logistic
        rates = values(unit.broker, "growth_rate")
        self.assertLess(abs(rates[-1]["growth_rate"] - true_rate) / true_rate, 0.1)
        ods = [
            json.loads(m.payload)
            for m in unit.broker.published(f"{BASE}/od_reading/ods")
        ]
        self.assertEqual(len(rates), len(ods) - 15)
        filtered = values(unit.broker, "od_filtered")
        self.assertEqual(list(rates[-1]), ["growth_rate", "timestamp"])
        self.assertEqual(list(filtered[-1]), ["od_filtered", "timestamp"])
        self.assertEqual(
            [r["timestamp"] for r in rates], [o["timestamp"] for o in ods[15:]]
        )
        self.assertEqual(
            [f["timestamp"] for f in filtered], [o["timestamp"] for o in ods[15:]]
        )
        for message in unit.broker.published(f"{PREFIX}/+"):
            self.assertEqual((message.qos, message.retain), (2, True), message.topic)
        factor = unit.manager.unit_state.cache.get(NORMALISATION_NAMESPACE, "exp1")["2"]
        grown = ods[-1]["ods"]["2"]["od"] / factor
        self.assertLess(
            abs(filtered[-1]["od_filtered"] / grown - 1),
            0.02,
            "od_filtered is OD over the warm-up median",
        )

        # a dilution: the pumps say so on dosing_events, and the culture halves
        event = {
            "volume_change": 14.0,
            "event": "add_media",
            "source_of_event": "test",
            "timestamp": iso_utc(unit.clock.seconds()),
        }
        unit.broker.client().publish(
            f"{BASE}/dosing_events", json.dumps(event).encode()
        )
        before = filtered[-1]["od_filtered"]
        unit.model.od /= 2
        await unit.advance(5 * 60, step=20)
        after = values(unit.broker, "od_filtered")[-1]["od_filtered"]
        self.assertLess(abs(after / before - 0.5 * math.exp(true_rate * 5 / 60)), 0.05)
        self.assertGreater(
            values(unit.broker, "growth_rate")[-1]["growth_rate"],
            0.2,
            "a dilution is not death",
        )
        await growth.stop()
        await od_reading.stop()
        self.assertIsNone(
            unit.broker.value(f"{PREFIX}/growth_rate"), "cleared on a clean stop"
        )


class GrowthRateMessagesTests(TestCase):
    timeout = 10

    async def test_a_restart_keeps_the_experiments_normalisation(self) -> None:
        manager, broker, clock = await messages_unit(self)
        client = broker.client()
        job = await manager.run(RunRequest("growth_rate_calculating", "exp1"))
        t = clock.seconds()
        for i in range(20):
            client.publish(f"{BASE}/od_reading/ods", ods_message(t + 5 * i, 0.2))
        client.publish(f"{BASE}/od_reading/ods", b"not json")
        client.publish(
            f"{BASE}/od_reading/ods", json.dumps({"timestamp": "x", "ods": {}}).encode()
        )
        client.publish(
            f"{BASE}/od_reading/ods", ods_message(t, 0.2)
        )  # older than the last: ignored
        self.assertEqual(len(values(broker, "growth_rate")), 5)
        self.assertEqual(
            manager.unit_state.cache.get(NORMALISATION_NAMESPACE, "exp1"), {"2": 0.2}
        )
        warned = [m for m in broker.published(f"{BASE}/logs/app/warning")]
        self.assertEqual(len(warned), 2)
        await job.stop()
        clock.advance(2)
        job = await manager.run(RunRequest("growth_rate_calculating", "exp1"))
        t = clock.seconds()
        for i in range(20):
            client.publish(f"{BASE}/od_reading/ods", ods_message(t + 5 * i, 0.4))
        last = values(broker, "od_filtered")[-1]["od_filtered"]
        self.assertAlmostEqual(
            last, 2.0, places=2, msg="still divided by the first run's factor"
        )
        await job.stop()

    async def test_a_dosing_event_in_the_warm_up_restarts_the_statistics(self) -> None:
        manager, broker, clock = await messages_unit(self)
        client = broker.client()
        job = await manager.run(RunRequest("growth_rate_calculating", "exp1"))
        t = clock.seconds()
        for i in range(12):
            client.publish(f"{BASE}/od_reading/ods", ods_message(t + 5 * i, 0.2))
        client.publish(
            f"{BASE}/dosing_events", b'{"volume_change":1.0,"event":"add_media"}'
        )
        for i in range(12, 22):
            client.publish(f"{BASE}/od_reading/ods", ods_message(t + 5 * i, 0.1))
        self.assertEqual(
            values(broker, "growth_rate"), [], "ten new readings for the statistics"
        )
        client.publish(f"{BASE}/od_reading/ods", ods_message(t + 5 * 22, 0.1))
        self.assertEqual(len(values(broker, "growth_rate")), 1)
        self.assertEqual(
            manager.unit_state.cache.get(NORMALISATION_NAMESPACE, "exp1"), {"2": 0.1}
        )
        await job.stop()

    async def test_bad_config_refuses_to_start(self) -> None:
        for key, value, why in (
            ("ekf_outlier_std_threshold", "2.0", "must be above 2"),
            ("samples_for_od_statistics", "1", "must be 2 or more"),
            ("ekf_outlier_std_threshold", "lots", "must be a number"),
        ):
            manager, _, _ = await messages_unit(self)
            request = RunRequest(
                "growth_rate_calculating",
                "exp1",
                config_overrides=[("growth_rate_calculating.config", key, value)],
            )
            with self.assertRaises(JobFailed) as caught:
                await manager.run(request)
            self.assertIn(why, str(caught.exception))
