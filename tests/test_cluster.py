"""End to end on loopback: a real broker, a leader and a worker as real services on real sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance import __version__

from .cluster import ClusterTestCase


class ClusterTests(ClusterTestCase):
    timeout = 60

    async def wait_for_result(self, accepted: dict[str, Any]) -> dict[str, Any]:
        for _ in range(200):
            response = await self.http.get(self.url("leader", accepted["result_url_path"]))
            body = await response.json()
            if response.code == 200:
                return body
            self.assertEqual((response.code, body["status"]), (202, body["status"]))
            self.assertIn(body["status"], ("pending", "running"))
            await deferLater(reactor, 0.02)
        self.fail("the task never finished")

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
