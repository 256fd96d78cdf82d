"""The issue's proof: from the leader's REST API alone, on a simulated worker, every core job runs,
takes new settings, pauses, and stops, while OD, growth rate, temperature and RPM arrive on MQTT
in the shapes the reference's clients read."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance.mqtt import MqttClient

from .cluster import ClusterTestCase

EXP = "pioreactor/pio1/exp1"
FAST_GROWTH = "\n[growth_rate_calculating.config]\nsamples_for_od_statistics=3\n"
JOBS: list[tuple[str, dict[str, Any]]] = [
    ("stirring", {"target_rpm": 500}),
    ("od_reading", {"interval": 1}),
    ("growth_rate_calculating", {}),
    (
        "temperature_automation",
        {"automation_name": "thermostat", "target_temperature": 30},
    ),
    (
        "dosing_automation",
        {"automation_name": "chemostat", "exchange_volume_ml": 0.5, "duration": 1},
    ),
    ("led_automation", {"automation_name": "light_dark_cycle", "light_intensity": 10}),
]


class JobsEndToEndTests(ClusterTestCase):
    timeout = 90

    async def test_every_core_job_through_the_leader_on_a_simulated_worker(
        self,
    ) -> None:
        await self.start_cluster(["pio1"], config=FAST_GROWTH, simulated=True)
        seen: dict[str, list[bytes]] = {}
        watcher = MqttClient(
            reactor, self.broker.host, self.broker.port, "test-watcher"
        )
        watcher.startService()
        self.addCleanup(watcher.stopService)
        watcher.subscribe(
            f"{EXP}/#", lambda m: seen.setdefault(m.topic, []).append(m.payload), qos=1
        )
        await watcher.when_connected()

        await self.call(
            "POST",
            "leader",
            "/api/experiments",
            json={"experiment": "exp1"},
            expect=201,
        )
        await self.call(
            "PUT",
            "leader",
            "/api/experiments/exp1/workers",
            json={"pioreactor_unit": "pio1"},
            expect=200,
        )
        for job, options in JOBS:
            accepted = await self.call(
                "POST",
                "leader",
                f"/api/workers/pio1/jobs/run/job_name/{job}/experiments/exp1",
                json={"options": options},
                expect=202,
            )
            result = await self.wait_for_result(accepted)
            self.assertEqual(
                result["result"]["pio1"],
                {"ok": True, "unit": "pio1", "value": {"ok": True}},
                job,
            )

        def latest(topic: str) -> Any:
            payloads = seen.get(f"{EXP}/{topic}")
            return json.loads(payloads[-1]) if payloads and payloads[-1] else None

        od = await self.until_seen(lambda: latest("od_reading/od2"))
        self.assertEqual(
            list(od),
            ["calibrated", "timestamp", "angle", "od", "channel", "ir_led_intensity"],
        )
        self.assertEqual((od["angle"], od["channel"]), ("90", "2"))
        self.assertGreater(od["od"], 0)
        self.assertEqual(set(latest("od_reading/ods")["ods"]), {"2"})
        temperature = await self.until_seen(
            lambda: latest("temperature_automation/temperature")
        )
        self.assertLess(
            abs(temperature["temperature"] - 22.0),
            2.0,
            "the simulated vial starts at ambient",
        )
        rpm = await self.until_seen(lambda: latest("stirring/measured_rpm"))
        self.assertEqual(list(rpm), ["measured_rpm", "timestamp"])
        self.assertGreater(rpm["measured_rpm"], 100)
        dose = await self.until_seen(lambda: latest("dosing_events"))
        self.assertEqual(
            list(dose), ["volume_change", "event", "source_of_event", "timestamp"]
        )
        lit = {"A": 0.0, "B": 0.0, "C": 10.0, "D": 10.0}
        # Not the latest one: OD reading darkens the LEDs for every reading, once a second here.
        await self.until_seen(
            lambda: any(p and json.loads(p) == lit for p in seen.get(f"{EXP}/leds/intensity", []))
        )
        rate = await self.until_seen(
            lambda: latest("growth_rate_calculating/growth_rate"), seconds=30
        )
        self.assertEqual(list(rate), ["growth_rate", "timestamp"])
        # Published just after the growth rate: it may arrive a moment later.
        filtered = await self.until_seen(lambda: latest("growth_rate_calculating/od_filtered"))
        self.assertEqual(list(filtered), ["od_filtered", "timestamp"])

        update = "/api/workers/pio1/jobs/update/job_name/stirring/experiments/exp1"
        await self.call(
            "PATCH",
            "leader",
            update,
            json={"settings": {"target_rpm": 600}},
            expect=202,
        )
        await self.until_seen(
            lambda: seen.get(f"{EXP}/stirring/target_rpm", [b""])[-1] == b"600.0"
        )
        await self.call(
            "PATCH",
            "leader",
            update,
            json={"settings": {"$state": "sleeping"}},
            expect=202,
        )
        await self.until_seen(lambda: seen[f"{EXP}/stirring/$state"][-1] == b"sleeping")
        settings = await self.wait_for_result(
            await self.call(
                "GET",
                "leader",
                "/api/workers/pio1/jobs/settings/job_name/stirring/experiments/exp1",
                expect=202,
            )
        )
        self.assertEqual(
            (
                settings["result"]["pio1"]["value"]["settings"]["$state"],
                settings["result"]["pio1"]["value"]["settings"]["target_rpm"],
            ),
            ("sleeping", 600.0),
        )
        await self.call(
            "PATCH",
            "leader",
            update,
            json={"settings": {"$state": "ready"}},
            expect=202,
        )
        await self.until_seen(lambda: seen[f"{EXP}/stirring/$state"][-1] == b"ready")

        await self.call(
            "POST", "leader", "/api/workers/pio1/jobs/stop/experiments/exp1", expect=202
        )
        for job, _ in JOBS:
            await self.until_seen(
                lambda job=job: seen[f"{EXP}/{job}/$state"][-1] == b"disconnected"
            )
        for _ in range(
            50
        ):  # a job leaves the list once its connection has closed, just after its goodbye
            running = await self.wait_for_result(
                await self.call(
                    "GET", "leader", "/api/units/pio1/jobs/running", expect=202
                )
            )
            if [row["job_name"] for row in running["result"]["pio1"]["value"]] == [
                "monitor"
            ]:
                break
            await deferLater(reactor, 0.05)
        else:
            self.fail(f"jobs still running after the stop: {running}")
        self.assertEqual(self.services["pio1"].hardware.heater.duty, 0)
        self.assertEqual(self.services["pio1"].hardware.stirring.duty, 0)

    async def until_seen(self, probe: Any, seconds: float = 20) -> Any:
        for _ in range(int(seconds / 0.05)):
            try:
                value = probe()
            except (KeyError, IndexError):
                value = None
            if value:
                return value
            await deferLater(reactor, 0.05)
        self.fail(f"not seen within {seconds} s")
