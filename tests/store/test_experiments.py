from __future__ import annotations

import sqlite3

from twisted.trial.unittest import TestCase

from pioreactor_appliance.store import experiments, labels, workers

from ..helpers import start_database

NOON = 1767614400.0  # 2026-01-05T12:00:00Z


def create(conn: sqlite3.Connection, name: str, created_at: str, media: str | None = None, organism: str | None = None) -> bool:
    return experiments.create_experiment(conn, name, "", ["a", "b"], media, organism, created_at)


class ExperimentQueryTests(TestCase):
    async def test_object_shape_order_and_delta_hours(self) -> None:
        db = await start_database(self)
        self.assertTrue(await db.run(create, "older", "2026-01-04T08:59:59.000Z"))
        self.assertTrue(await db.run(create, "newer", "2026-01-05T11:00:00.000Z"))
        self.assertFalse(await db.run(create, "older", "2026-01-05T11:00:00.000Z"))
        found = await db.run(experiments.all_experiments, NOON)
        self.assertEqual([e["experiment"] for e in found], ["newer", "older"])
        self.assertEqual(
            found[1],
            {"experiment": "older", "created_at": "2026-01-04T08:59:59.000Z", "description": "", "worker_count": 0, "delta_hours": 27.0, "tags": ["a", "b"]},
        )

    async def test_latest_is_last_inserted(self) -> None:
        db = await start_database(self)
        self.assertIsNone(await db.run(experiments.latest_experiment, NOON))
        await db.run(create, "b", "2026-01-05T11:00:00.000Z")
        await db.run(create, "a", "2026-01-01T00:00:00.000Z")
        self.assertEqual((await db.run(experiments.latest_experiment, NOON))["experiment"], "a")
        self.assertEqual(await db.run(experiments.latest_experiment_name), "a")

    async def test_historical_values_distinct_newest_first(self) -> None:
        db = await start_database(self)
        await db.run(create, "e1", "2026-01-01T00:00:00.000Z", "LB", "E. coli")
        await db.run(create, "e2", "2026-01-02T00:00:00.000Z", "YPD", "")
        await db.run(create, "e3", "2026-01-03T00:00:00.000Z", "LB", None)
        self.assertEqual(await db.run(experiments.historical_values, "media_used"), [{"media_used": "LB"}, {"media_used": "YPD"}])
        self.assertEqual(await db.run(experiments.historical_values, "organism_used"), [{"organism_used": "E. coli"}])
        with self.assertRaises(ValueError):
            await db.run(experiments.historical_values, "description; DROP TABLE experiments")

    async def test_delete_cascades_and_reports_space(self) -> None:
        db = await start_database(self)
        await db.run(create, "e1", "2026-01-01T00:00:00.000Z")
        await db.run(labels.set_unit_label, "e1", "pio1", "R1", "t")
        await db.run(workers.add_worker, "pio1", None, None, "t")
        await db.run(workers.assign, "pio1", "e1", "t")
        self.assertTrue(await db.run(experiments.delete_experiment, "e1"))
        self.assertFalse(await db.run(experiments.delete_experiment, "e1"))

        def leftovers(conn: sqlite3.Connection) -> list[int]:
            return [
                conn.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"]
                for t in ("experiment_tags", "pioreactor_unit_labels", "experiment_worker_assignments")
            ]

        self.assertEqual(await db.run(leftovers), [0, 0, 0])
        space = await db.run(experiments.database_space)
        self.assertEqual(space["allocated_bytes"], space["page_size"] * space["page_count"])
        self.assertGreaterEqual(space["reclaimable_fraction"], 0.0)
