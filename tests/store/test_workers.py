from __future__ import annotations

import sqlite3

from twisted.trial.unittest import TestCase

from pioreactor_appliance.store import experiments, workers

from ..helpers import start_database


def seed(conn: sqlite3.Connection) -> None:
    for name in ("exp1", "exp2"):
        experiments.create_experiment(conn, name, "", [], None, None, "2026-01-05T12:00:00.000Z")
    for unit in ("pio2", "pio1", "leader"):
        workers.add_worker(conn, unit, None, None, "2026-01-05T12:00:00.000Z")


def history(conn: sqlite3.Connection) -> list[dict[str, object]]:
    return conn.execute(
        "SELECT pioreactor_unit, experiment, unassigned_at IS NOT NULL AS closed FROM experiment_worker_assignments_history ORDER BY rowid"
    ).fetchall()


class WorkerQueryTests(TestCase):
    async def test_cluster_units_is_leader_and_workers_sorted_once(self) -> None:
        db = await start_database(self)
        self.assertEqual(await db.run(workers.cluster_units, "leader"), ["leader"])
        await db.run(seed)
        self.assertEqual(await db.run(workers.cluster_units, "leader"), ["leader", "pio1", "pio2"])
        self.assertEqual(await db.run(workers.cluster_units, "boss"), ["boss", "leader", "pio1", "pio2"])
        self.assertEqual(await db.run(workers.worker_names), ["leader", "pio1", "pio2"])

    async def test_re_adding_keeps_assignment_and_added_at(self) -> None:
        db = await start_database(self)
        await db.run(seed)
        await db.run(workers.assign, "pio1", "exp1", "2026-01-05T13:00:00.000Z")
        self.assertFalse(await db.run(workers.add_worker, "pio1", "pioreactor_40ml", "1.5", "2026-02-01T00:00:00.000Z"))
        worker = await db.run(workers.get_worker, "pio1")
        self.assertEqual((worker["added_at"], worker["model_name"], worker["model_version"]), ("2026-01-05T12:00:00.000Z", "pioreactor_40ml", "1.5"))
        self.assertEqual((await db.run(workers.worker_assignment, "pio1"))["experiment"], "exp1")

    async def test_assignment_history_opens_and_closes(self) -> None:
        db = await start_database(self)
        await db.run(seed)
        self.assertEqual(await db.run(workers.assign, "pio1", "exp1", "t1"), ({"pioreactor_unit": "pio1", "experiment": "exp1", "assigned_at": "t1"}, None))
        same, left = await db.run(workers.assign, "pio1", "exp1", "t2")
        self.assertEqual((same["assigned_at"], left), ("t1", None))  # same experiment: unchanged
        _, left = await db.run(workers.assign, "pio1", "exp2", "t3")
        self.assertEqual(left, "exp1")
        await db.run(workers.assign, "pio2", "exp2", "t4")
        await db.run(workers.delete_worker, "pio2")  # cascade closes the history row too
        self.assertEqual(
            await db.run(history),
            [
                {"pioreactor_unit": "pio1", "experiment": "exp1", "closed": 1},
                {"pioreactor_unit": "pio1", "experiment": "exp2", "closed": 0},
                {"pioreactor_unit": "pio2", "experiment": "exp2", "closed": 1},
            ],
        )
        self.assertEqual(
            await db.run(workers.historical_assignments, "exp2"),
            [
                {"pioreactor_unit": "pio1", "experiment": "exp2", "is_currently_assigned_to_experiment": 1},
                {"pioreactor_unit": "pio2", "experiment": "exp2", "is_currently_assigned_to_experiment": 0},
            ],
        )

    async def test_deleting_an_experiment_unassigns_and_keeps_history(self) -> None:
        db = await start_database(self)
        await db.run(seed)
        await db.run(workers.assign, "pio1", "exp1", "t1")
        self.assertTrue(await db.run(experiments.delete_experiment, "exp1"))
        self.assertIsNone((await db.run(workers.worker_assignment, "pio1"))["experiment"])
        self.assertEqual(await db.run(history), [{"pioreactor_unit": "pio1", "experiment": "exp1", "closed": 1}])

    async def test_unassign_experiment_and_all(self) -> None:
        db = await start_database(self)
        await db.run(seed)
        for unit, experiment in (("pio1", "exp1"), ("pio2", "exp1"), ("leader", "exp2")):
            await db.run(workers.assign, unit, experiment, "t1")
        self.assertEqual(await db.run(workers.unassign_experiment, "exp1"), ["pio1", "pio2"])
        self.assertFalse(await db.run(workers.unassign, "pio1", "exp1"))
        self.assertEqual(await db.run(workers.unassign_all), ["leader"])
        self.assertEqual(await db.run(workers.unassign_all), [])
