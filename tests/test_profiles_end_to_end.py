"""A profile run from the leader's API, as the reference's UI starts it, drives a simulated worker's stirring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance.timestamps import iso_utc

from .cluster import ClusterTestCase

PROFILE = """experiment_profile_name: stir briefly
common:
  jobs:
    stirring:
      actions:
        - type: start
          t: 1s
          options: {target_rpm: 500}
        - type: stop
          t: 4s
"""


class ProfileEndToEndTests(ClusterTestCase):
    timeout = 60

    async def until(self, unit: str, path: str, check: Callable[[Any], bool], what: str) -> Any:
        for _ in range(300):
            body = await self.call("GET", unit, path, expect=200)
            if check(body):
                return body
            await deferLater(reactor, 0.05)
        self.fail(f"{what} never happened")

    async def test_a_profile_starts_and_stops_stirring_on_the_worker(self) -> None:
        await self.start_cluster(["pio1"], simulated=True)
        await self.call("POST", "leader", "/api/experiments", json={"experiment": "exp1"}, expect=201)
        await self.call("PUT", "leader", "/api/experiments/exp1/workers", json={"pioreactor_unit": "pio1"}, expect=200)
        await self.call("POST", "leader", "/api/experiment_profiles", json={"filename": "stir.yaml", "body": PROFILE}, expect=200)
        [listed] = await self.call("GET", "leader", "/api/experiment_profiles", expect=200)

        asked_at = reactor.seconds()
        accepted = await self.call(
            "PATCH",
            "leader",
            "/unit_api/jobs/run/job_name/experiment_profile",
            json={"args": ["execute", listed["fullpath"], "exp1"], "options": {}},
            expect=202,
        )
        self.assertEqual((await self.wait_for_result(accepted))["result"], {"ok": True})
        [running] = await self.call("GET", "leader", "/api/experiments/exp1/experiment_profiles/running", expect=200)
        self.assertEqual(running["settings"]["experiment_profile_name"], "stir briefly")

        def stirring(rows: list[dict[str, Any]]) -> bool:
            return any(row["job_name"] == "stirring" for row in rows)

        rows = await self.until("pio1", "/unit_api/jobs/running", stirring, "stirring starting on pio1")
        # On schedule: not before t=1s of the run (which begins after it was asked for), and soon after.
        self.assertTrue(0.95 <= reactor.seconds() - asked_at < 3.5, reactor.seconds() - asked_at)
        [row] = [row for row in rows if row["job_name"] == "stirring"]
        self.assertEqual((row["experiment"], row["job_source"]), ("exp1", "experiment_profile"))
        self.assertFalse(stirring(await self.call("GET", "leader", "/unit_api/jobs/running", expect=200)), "the leader is not in exp1")
        await self.until("pio1", "/unit_api/jobs/running", lambda rows: not stirring(rows), "stirring stopping on pio1")
        self.assertTrue(3.95 <= reactor.seconds() - asked_at < 7, reactor.seconds() - asked_at)
        await self.until("leader", "/api/experiments/exp1/experiment_profiles/running", lambda rows: rows == [], "the profile ending")
        [run] = await self.call("GET", "leader", "/api/experiments/exp1/experiment_profiles/recent", expect=200)
        self.assertEqual((run["experiment_profile_name"], run["experiment"]), ("stir briefly", "exp1"))
        self.assertEqual(list(run), ["started_at", "experiment_profile_name", "experiment"])
        self.assertTrue(iso_utc(asked_at - 0.001) <= run["started_at"] <= iso_utc(asked_at + 3), run)
