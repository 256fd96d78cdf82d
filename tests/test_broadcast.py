"""``$broadcast`` fan-outs against a leader and three real workers on loopback: every envelope checked,
with a worker stopped mid-test, an inactive one, and one that accepts connections and never answers."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

from pioreactor_appliance import __version__

from .cluster import ClusterTestCase

UNITS = ["leader", "pio1", "pio2", "pio3"]
# GET fan-outs through task_results, and the POST one (stop every job on every worker).
READS = ["/api/units/$broadcast/versions/app", "/api/units/$broadcast/jobs/running", "/api/workers/$broadcast/jobs/running"]
STOP_ALL = ("DELETE", "/api/workers/assignments")
TIMEOUT = 1.0  # tests/cluster.py's fanout_timeout_seconds and fanout_post_timeout_seconds


class BroadcastTests(ClusterTestCase):
    async def results(self) -> dict[str, dict[str, Any]]:
        """Each fan-out route's task result (every one must succeed as a task, whatever its units did)."""
        results = {}
        for method, path in [*(("GET", p) for p in READS), STOP_ALL]:
            accepted = await self.call(method, "leader", path, expect=202)
            body = await self.wait_for_result(accepted)
            self.assertEqual(body["status"], "succeeded", (path, body))
            results[path] = body["result"]
        return results

    def assertHealthy(self, results: dict[str, dict[str, Any]], units: list[str]) -> None:
        for path, result in results.items():
            for unit in units:
                self.assertEqual(result[unit], {"ok": True, "unit": unit, "value": result[unit]["value"]}, path)
        for unit in units:
            self.assertEqual(results[READS[0]][unit]["value"], {"version": __version__})
            self.assertEqual({row["unit"] for row in results[READS[1]][unit]["value"]} - {unit}, set())
            self.assertIs(results[STOP_ALL[1]][unit]["value"], True)  # the unit's stop task ended

    def assertFailedAlone(self, result: dict[str, Any], unit: str, kind: str) -> None:
        envelope = result[unit]
        self.assertEqual(
            {k: v for k, v in envelope.items() if k != "error"},
            {"ok": False, "unit": unit, "status_code": None, "retryable": True},
        )
        self.assertEqual((set(envelope["error"]), envelope["error"]["kind"]), ({"kind", "message"}, kind), envelope)
        self.assertIn(unit, envelope["error"]["message"], envelope)

    async def test_a_worker_stopped_mid_test_is_its_own_failed_envelope_in_every_fan_out(self) -> None:
        await self.start_cluster(["pio1", "pio2", "pio3"])
        await self.call("PUT", "leader", "/api/workers/pio3/is_active", json={"is_active": 0}, expect=200)
        before = await self.results()
        for result in before.values():
            self.assertEqual(list(result), UNITS)  # sorted, the inactive worker included (reference §5)
        self.assertHealthy(before, UNITS)

        await self.kill("pio2")
        after = await self.results()
        alive = ["leader", "pio1", "pio3"]
        self.assertHealthy(after, alive)
        for path, result in after.items():
            self.assertEqual(list(result), UNITS, path)
            self.assertFailedAlone(result, "pio2", "connection_error")

    async def test_a_worker_that_never_answers_costs_its_own_timeout_and_no_more(self) -> None:
        await self.start_cluster(["pio1", "pio2", "pio3"])
        await self.add_silent_worker("silent")
        for method, path in [("GET", READS[0]), STOP_ALL]:
            started = reactor.seconds()
            body = await self.wait_for_result(await self.call(method, "leader", path, expect=202))
            elapsed = reactor.seconds() - started
            self.assertEqual(body["status"], "succeeded")
            self.assertEqual(list(body["result"]), [*UNITS, "silent"])
            for unit in UNITS:
                self.assertTrue(body["result"][unit]["ok"], body["result"][unit])
            self.assertFailedAlone(body["result"], "silent", "task_timeout")
            self.assertIn(f"within {TIMEOUT:g} s", body["result"]["silent"]["error"]["message"])
            # Not a performance figure (bench/broadcast.py has those): the silent unit must not hold the
            # request much past its own timeout, as waiting for it forever or in turn would.
            self.assertLess(elapsed, 2 * TIMEOUT, path)
