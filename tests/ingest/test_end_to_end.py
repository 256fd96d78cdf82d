"""Jobs started through the leader's API on a simulated worker: their data lands in the leader's database."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from ..cluster import ClusterTestCase


class IngestEndToEndTests(ClusterTestCase):
    async def test_od_readings_stirring_and_logs_reach_the_leaders_database(self) -> None:
        await self.start_cluster(["pio1"], simulated=True)
        db = self.services["leader"].getServiceNamed("database")
        await self.call("POST", "leader", "/api/experiments", json={"experiment": "exp1"}, expect=201)
        await self.call("PUT", "leader", "/api/experiments/exp1/workers", json={"pioreactor_unit": "pio1"}, expect=200)
        for job, options in [("stirring", {"target_rpm": 500}), ("od_reading", {"interval": 1})]:
            accepted = await self.call(
                "POST", "leader", f"/api/workers/pio1/jobs/run/job_name/{job}/experiments/exp1", json={"options": options}, expect=202
            )
            result = await self.wait_for_result(accepted)
            self.assertEqual(result["result"]["pio1"]["ok"], True, job)

        def count(table: str, experiment: str = "exp1", unit: str = "pio1") -> Any:
            sql = f"SELECT count(*) AS n FROM {table} WHERE experiment = ? AND pioreactor_unit = ?"
            return db.read(lambda conn: conn.execute(sql, (experiment, unit)).fetchone()["n"])

        # Not the leader's boot logs: on a fresh leader they may go out before the ingest's session
        # exists, and a broker keeps nothing for a session it has never seen.
        for _ in range(500):  # stirring measures its first RPM 6 s after its start
            if await count("od_readings") >= 2 and await count("stirring_rates") >= 1:
                break
            await deferLater(reactor, 0.05)
        else:
            self.fail("the jobs' data never reached the leader's database")
        od = await db.read(lambda conn: conn.execute("SELECT * FROM od_readings ORDER BY rowid LIMIT 1").fetchone())
        self.assertEqual((od["channel"], od["angle"]), (2, 90))
        self.assertGreater(od["od_reading"], 0)
        self.assertRegex(od["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

        # A log line posted to the leader goes out over MQTT and comes back through the ingest.
        line = {"message": "note from the UI", "source": "ui", "level": "INFO", "timestamp": "2026-01-05T12:00:00.000Z"}
        await self.call("POST", "leader", "/api/workers/pio1/experiments/exp1/logs", json=line)
        for _ in range(200):
            logs = await self.call("GET", "leader", "/api/experiments/exp1/logs", expect=200)
            if any(row["message"] == "note from the UI" for row in logs):
                break
            await deferLater(reactor, 0.05)
        else:
            self.fail("the posted log line never came back from the ingest")

        health = await self.call("GET", "leader", "/unit_api/health", expect=200)
        ingest = health["parts"]["ingest"]
        self.assertTrue(ingest["ok"], ingest)
        self.assertIn(" 0 malformed", ingest["state"])
