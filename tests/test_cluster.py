"""End to end on loopback: a real broker, a leader and workers as real services on real sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance import __version__
from pioreactor_appliance.mqtt import MqttClient

from .cluster import ClusterTestCase
from .jobs.toys import Counter


class ClusterTests(ClusterTestCase):
    async def test_broadcast_version_reaches_every_unit(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        accepted = await self.call("GET", "leader", "/api/units/$broadcast/versions/app", expect=202)
        self.assertEqual((accepted["unit"], accepted["status"]), ("leader", "pending"))
        body = await self.wait_for_result(accepted)
        self.assertEqual(body["status"], "succeeded")
        self.assertEqual(
            body["result"],
            {unit: {"ok": True, "unit": unit, "value": {"version": __version__}} for unit in ("leader", "pio1", "pio2")},
        )

    async def test_one_unit_and_bad_unit(self) -> None:
        await self.start_cluster(["pio1"])
        body = await self.wait_for_result(await self.call("GET", "leader", "/api/units/pio1/versions/app", expect=202))
        self.assertEqual(list(body["result"]), ["pio1"])
        error = await self.call("GET", "leader", "/api/units/nobody/versions/app", expect=400)
        self.assertEqual(error["error"], "Unknown Pioreactor unit: nobody")

    async def test_dead_unit_is_its_own_failed_envelope(self) -> None:
        await self.start_cluster(["pio1", "pio2"])
        await self.services["pio2"].stopService()
        body = await self.wait_for_result(await self.call("GET", "leader", "/api/units/$broadcast/versions/app", expect=202))
        self.assertEqual(body["status"], "succeeded")
        self.assertTrue(body["result"]["leader"]["ok"])
        self.assertTrue(body["result"]["pio1"]["ok"])
        dead = body["result"]["pio2"]
        self.assertEqual((dead["ok"], dead["error"]["kind"], dead["retryable"]), (False, "connection_error", True))

    async def test_worker_refers_api_callers_to_the_leader(self) -> None:
        await self.start_cluster(["pio1"])
        error = await self.call("GET", "pio1", "/api/experiments", expect=404)
        self.assertIn("/unit_api", error["remediation"])
        self.assertIn("leader", error["remediation"])
        health = await self.call("GET", "pio1", "/unit_api/health", expect=200)
        self.assertEqual(health["pioreactor_unit"], "pio1")

    async def test_a_job_run_changed_and_stopped_through_the_leader(self) -> None:
        """The worker's registry gets the toy Counter, which needs no hardware; the rest is the real stack."""
        await self.start_cluster(["pio1"])
        self.services["pio1"].getServiceNamed("jobs").registry.jobs["counter"] = Counter
        watcher = MqttClient(reactor, self.broker.host, self.broker.port, "test-watcher")
        watcher.startService()
        self.addCleanup(watcher.stopService)
        seen: dict[str, bytes] = {}
        watcher.subscribe("pioreactor/pio1/exp1/counter/#", lambda m: seen.__setitem__(m.topic, m.payload), qos=1)
        await self.call("POST", "leader", "/api/experiments", json={"experiment": "exp1"}, expect=201)
        await self.call("PUT", "leader", "/api/experiments/exp1/workers", json={"pioreactor_unit": "pio1"}, expect=200)

        accepted = await self.call("POST", "leader", "/api/workers/$broadcast/jobs/run/job_name/counter/experiments/exp1", json={"options": {"interval": 30}}, expect=202)
        ran = await self.wait_for_result(accepted)
        self.assertEqual(ran["result"]["pio1"], {"ok": True, "unit": "pio1", "value": {"ok": True}})
        running = await self.wait_for_result(await self.call("GET", "leader", "/api/units/pio1/jobs/running", expect=202))
        [row] = [r for r in running["result"]["pio1"]["value"] if not r["is_long_running_job"]]
        self.assertEqual((row["job_name"], row["experiment"], row["unit"]), ("counter", "exp1", "pio1"))

        update = "/api/units/pio1/jobs/update/job_name/counter/experiments/exp1"
        self.assertEqual(await self.call("PATCH", "leader", update, json={"settings": {"label": "blue"}}, expect=202), {"status": "accepted"})
        await self.until(lambda: seen.get("pioreactor/pio1/exp1/counter/label") == b"blue")

        stop = "/api/workers/pio1/jobs/stop/job_name/counter/experiments/exp1"
        self.assertEqual(await self.call("POST", "leader", stop, expect=202), {"status": "accepted"})
        await self.until(lambda: seen.get("pioreactor/pio1/exp1/counter/$state") == b"disconnected")
        await self.until(lambda: [r.job_name for r in self.services["pio1"].getServiceNamed("jobs").running_jobs()] == ["monitor"])

    async def until(self, condition: Any) -> None:
        for _ in range(300):
            if condition():
                return
            await deferLater(reactor, 0.02)
        self.fail("the condition never held")
