from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.store.database import Database
from pioreactor_appliance.store.migrations import (
    LATEST,
    MIGRATIONS,
    SchemaTooNew,
    migrate,
    schema_version,
)

from ..helpers import start_database


def pragma(conn: sqlite3.Connection, name: str) -> object:
    return next(iter(conn.execute(f"PRAGMA {name}").fetchone().values()))


class Boom(Exception):
    pass


class DatabaseTests(TestCase):
    async def test_settings_and_schema_on_open(self) -> None:
        db = await start_database(self)

        def read(conn: sqlite3.Connection) -> dict[str, object]:
            tables = {r["name"] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return {
                "journal_mode": pragma(conn, "journal_mode"),
                "foreign_keys": pragma(conn, "foreign_keys"),
                "synchronous": pragma(conn, "synchronous"),
                "busy_timeout": pragma(conn, "busy_timeout"),
                "version": schema_version(conn),
                "tables": tables,
            }

        found = await db.run(read)
        self.assertEqual(found["journal_mode"], "wal")
        self.assertEqual(found["foreign_keys"], 1)
        self.assertEqual(found["synchronous"], 2)  # FULL
        self.assertEqual(found["busy_timeout"], 15000)
        self.assertEqual(found["version"], LATEST)
        for table in ("experiments", "workers", "experiment_worker_assignments_history", "logs", "od_readings", "calibrations"):
            self.assertIn(table, found["tables"])

    async def test_work_runs_on_one_thread_that_is_not_the_reactors(self) -> None:
        db = await start_database(self)
        idents = [await db.run(lambda conn: threading.get_ident()) for _ in range(3)]
        self.assertEqual(len(set(idents)), 1)
        self.assertNotEqual(idents[0], threading.get_ident())

    async def test_the_connection_refuses_the_reactor_thread(self) -> None:
        db = await start_database(self)
        conn = await db.run(lambda conn: conn)
        self.assertRaises(sqlite3.ProgrammingError, conn.execute, "SELECT 1")

    async def test_commit_on_success_survives_a_restart(self) -> None:
        path = Path(self.mktemp()) / "db.sqlite"
        db = Database(path, reactor)
        db.startService()
        await db.run(lambda conn: conn.execute("INSERT INTO workers (pioreactor_unit, added_at) VALUES ('pio1', 'now')"))
        await db.stopService()
        again = Database(path, reactor)
        again.startService()
        self.addCleanup(again.stopService)
        rows = await again.run(lambda conn: conn.execute("SELECT pioreactor_unit FROM workers").fetchall())
        self.assertEqual(rows, [{"pioreactor_unit": "pio1"}])

    async def test_rollback_on_error(self) -> None:
        db = await start_database(self)

        def half_done(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO workers (pioreactor_unit, added_at) VALUES ('pio1', 'now')")
            raise Boom("halfway")

        with self.assertRaises(Boom):
            await db.run(half_done)
        self.assertEqual(await db.run(lambda conn: conn.execute("SELECT count(*) AS n FROM workers").fetchone()["n"]), 0)
        self.assertEqual(await db.run(lambda conn: conn.in_transaction), True)  # run() always holds a transaction

    async def test_foreign_keys_are_enforced_except_for_ingest(self) -> None:
        db = await start_database(self)

        def system_log(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO logs (experiment, pioreactor_unit, timestamp, message, source, level) "
                "VALUES ('$experiment', 'pio1', 't', 'hello', 'app', 'INFO')"
            )

        with self.assertRaises(sqlite3.IntegrityError):
            await db.run(system_log)
        await db.run_without_foreign_keys(system_log)
        self.assertEqual(await db.run(lambda conn: pragma(conn, "foreign_keys")), 1)
        self.assertEqual(await db.run(lambda conn: conn.execute("SELECT count(*) AS n FROM logs").fetchone()["n"]), 1)

    async def test_stop_waits_for_queued_work(self) -> None:
        db = Database(Path(self.mktemp()) / "db.sqlite", reactor)
        db.startService()
        queued = [db.run(lambda conn, i=i: conn.execute("SELECT ? AS i", (i,)).fetchone()["i"]) for i in range(20)]
        await db.stopService()
        self.assertEqual([await d for d in queued], list(range(20)))
        self.assertRaises(RuntimeError, db.run, lambda conn: None)

    async def test_reads_see_committed_data_on_other_threads_and_cannot_write(self) -> None:
        db = Database(Path(self.mktemp()) / "db.sqlite", reactor)
        db.startService()
        self.addCleanup(db.stopService)
        early = db.read(lambda conn: conn.execute("SELECT count(*) AS n FROM experiments").fetchone()["n"])
        self.assertEqual(await early, 0)  # asked before the file was open: it waited
        await db.run(lambda conn: conn.execute("INSERT INTO experiments (experiment, created_at) VALUES ('e1', '2026-01-01T00:00:00.000Z')"))
        rows = await db.read(lambda conn: conn.execute("SELECT experiment FROM experiments").fetchall())
        self.assertEqual(rows, [{"experiment": "e1"}])
        writer = await db.run(lambda conn: threading.get_ident())
        reader = await db.read(lambda conn: threading.get_ident())
        self.assertNotIn(reader, (writer, threading.get_ident()))
        with self.assertRaises(sqlite3.OperationalError):
            await db.read(lambda conn: conn.execute("DELETE FROM experiments"))
        self.assertEqual(await db.run(lambda conn: conn.execute("SELECT count(*) AS n FROM experiments").fetchone()["n"]), 1)

    async def test_a_read_is_not_held_up_by_a_long_write(self) -> None:
        db = await start_database(self)
        inside, release = threading.Event(), threading.Event()

        def slow_write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO experiments (experiment, created_at) VALUES ('e2', '2026-01-01T00:00:00.000Z')")
            inside.set()
            release.wait(10)

        writing = db.run(slow_write)
        await deferToThread(inside.wait, 10)
        seen = await db.read(lambda conn: conn.execute("SELECT count(*) AS n FROM experiments").fetchone()["n"])
        self.assertEqual(seen, 0)  # the snapshot before the write commits, served while it is open
        release.set()
        await writing
        self.assertEqual(await db.read(lambda conn: conn.execute("SELECT count(*) AS n FROM experiments").fetchone()["n"]), 1)

    async def test_refuses_a_newer_schema(self) -> None:
        path = Path(self.mktemp()) / "db.sqlite"
        path.parent.mkdir(parents=True)
        with sqlite3.connect(path) as raw:
            raw.execute(f"PRAGMA user_version = {LATEST + 1}")
        raw.close()
        db = Database(path, reactor)
        db.startService()
        self.addCleanup(db.stopService)
        await db.opened
        self.assertIsInstance(db.open_error, SchemaTooNew)
        self.assertIn(f"schema version {LATEST + 1}", str(db.open_error))
        self.assertEqual(len(self.flushLoggedErrors(SchemaTooNew)), 1)
        for work in (db.run, db.read):
            with self.assertRaises(ApiError) as raised:
                await work(lambda conn: None)
            self.assertEqual(raised.exception.status, 503)
            self.assertIn("Upgrade the appliance", raised.exception.cause)


class MigrationTests(TestCase):
    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        self.addCleanup(conn.close)
        return conn

    def test_steps_apply_in_order_once(self) -> None:
        conn = self.connect()
        steps = (*MIGRATIONS, "ALTER TABLE workers ADD COLUMN note TEXT;")
        self.assertEqual(migrate(conn, "memory", steps), 0)
        self.assertEqual(schema_version(conn), LATEST + 1)
        self.assertEqual(migrate(conn, "memory", steps), LATEST + 1)  # nothing left to do
        self.assertIn("note", [row[1] for row in conn.execute("PRAGMA table_info(workers)")])

    def test_a_failing_step_is_rolled_back_whole(self) -> None:
        conn = self.connect()
        migrate(conn, "memory")
        steps = (*MIGRATIONS, "CREATE TABLE extra (x); INSERT INTO no_such_table VALUES (1);")
        self.assertRaises(sqlite3.OperationalError, migrate, conn, "memory", steps)
        self.assertEqual(schema_version(conn), LATEST)
        self.assertFalse(conn.in_transaction)
        self.assertIsNone(conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone())

    def test_newer_schema_is_refused_with_a_clear_error(self) -> None:
        conn = self.connect()
        conn.execute(f"PRAGMA user_version = {LATEST + 3}")
        error = self.assertRaises(SchemaTooNew, migrate, conn, "/data/db.sqlite")
        self.assertIn("/data/db.sqlite", str(error))
        self.assertIn(f"up to {LATEST}", str(error))
