from __future__ import annotations

import csv
import io
import os
import sqlite3
import time
import zipfile
from pathlib import Path

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.datasets import BUILTIN, parse_dataset
from pioreactor_appliance.store.database import open_reader
from pioreactor_appliance.store.exports import (
    ExportFilters,
    Progress,
    free_name,
    prune_exports,
    select_statement,
    source_columns,
    write_export,
)
from pioreactor_appliance.store.migrations import migrate


class PruneTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()

    def make(self, name: str, age_seconds: float) -> None:
        path = self.folder / name
        path.write_bytes(b"zip")
        moment = time.time() - age_seconds
        os.utime(path, (moment, moment))

    def test_by_count_and_by_age_and_only_exports(self) -> None:
        self.make("export_20260101000000.zip", 10)
        self.make("export_20260102000000.zip", 20)
        self.make("export_20260103000000.zip", 30)
        self.make("export_20251201000000.zip", 40 * 86400)
        self.make("notes.zip", 50 * 86400)  # not an export: never touched
        self.make(".export_20260104000000.zip.tmp", 1)
        removed = prune_exports(self.folder, keep=10, max_age_seconds=30 * 86400)
        self.assertEqual(sorted(removed), [".export_20260104000000.zip.tmp", "export_20251201000000.zip"])
        removed = prune_exports(self.folder, keep=1, max_age_seconds=30 * 86400)
        self.assertEqual(sorted(removed), ["export_20260102000000.zip", "export_20260103000000.zip"])
        self.assertEqual(sorted(p.name for p in self.folder.iterdir()), ["export_20260101000000.zip", "notes.zip"])
        self.assertEqual(prune_exports(self.folder / "missing", keep=1, max_age_seconds=1), [])

    def test_free_name(self) -> None:
        self.assertEqual(free_name(self.folder, "20260101000000"), "export_20260101000000.zip")
        self.make("export_20260101000000.zip", 0)
        self.make("export_20260101000000-2.zip", 0)
        self.assertEqual(free_name(self.folder, "20260101000000"), "export_20260101000000-3.zip")


def _database(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path))
    conn.close()


class StatementTests(SynchronousTestCase):
    def test_values_are_parameters_and_identifiers_quoted(self) -> None:
        od = next(d for d in BUILTIN if d.dataset_name == "od_readings")
        path = Path(self.mktemp())
        _database(path)
        conn = open_reader(path)
        self.addCleanup(conn.close)
        sql, params, header = select_statement(od, ExportFilters("x' OR 1=1 --", True, True, "2026-01-01T00:00:00.000Z", None), source_columns(conn, od))
        self.assertNotIn("OR 1=1", sql)
        self.assertEqual((params["experiment"], params["start"]), ("x' OR 1=1 --", "2026-01-01T00:00:00.000Z"))
        self.assertIn('FROM "od_readings" AS T', sql)
        self.assertTrue(sql.endswith('ORDER BY T.experiment, T.pioreactor_unit, T."timestamp"'))
        self.assertEqual(header[-2:], ["timestamp_localtime", "hours_since_experiment_created"])


class CsvTests(SynchronousTestCase):
    """SQLite writes the CSV lines: what csv.reader reads back must be the stored values."""

    def test_awkward_values_read_back(self) -> None:
        path = Path(self.mktemp())
        _database(path)
        experiment = 'dose, then "wait"'
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("INSERT INTO experiments VALUES (?, '2026-01-05T00:00:00.000Z', 'line one\nline two, \"quoted\"', NULL, 'E. coli')", (experiment,))
        writer.execute("INSERT INTO dosing_events VALUES (?, 'pio1', '2026-01-05T01:00:00.000Z', 'add_media', 1.25, NULL)", (experiment,))
        writer.execute("INSERT INTO dosing_events VALUES (?, 'pio1', '2026-01-05T02:00:00.000Z', 'remove,waste', 0.1, 'user\r\n')", (experiment,))
        writer.close()
        plugin = parse_dataset(
            "dataset_name: odd\ndisplay_name: d\ndescription: d\nhas_experiment: false\nhas_unit: false\n"
            "query: SELECT 'a\"b' AS \"we\"\"ird\", NULL AS n, 3 AS i, 2.5 AS r, X'41' AS b\n"
        )
        datasets = [d for d in BUILTIN if d.dataset_name in ("dosing_events", "experiments")] + [plugin]
        folder = Path(self.mktemp())
        conn = open_reader(path)
        self.addCleanup(conn.close)
        conn.execute("BEGIN")
        write_export(conn, folder, "export_20260105120000.zip", datasets, ExportFilters(experiment, False, False), "now", Progress(3))
        with zipfile.ZipFile(folder / "export_20260105120000.zip") as archive:
            def rows(name: str) -> list[list[str]]:
                return list(csv.reader(io.TextIOWrapper(archive.open(name), encoding="utf-8", newline="")))

            dosing = rows("dosing_events/dosing_events-all_experiments-all_units-20260105120000.csv")
            self.assertEqual(dosing[0], ["experiment", "pioreactor_unit", "timestamp", "event", "volume_change_ml", "source_of_event", "timestamp_localtime", "hours_since_experiment_created"])
            self.assertEqual([r[:6] for r in dosing[1:]], [
                [experiment, "pio1", "2026-01-05T01:00:00.000Z", "add_media", "1.25", ""],
                [experiment, "pio1", "2026-01-05T02:00:00.000Z", "remove,waste", "0.1", "user\r\n"],
            ])
            self.assertEqual([r[7] for r in dosing[1:]], ["1.0", "2.0"])
            experiments = rows("experiments/experiments-all_experiments-all_units-20260105120000.csv")
            self.assertEqual(experiments[1][:5], [experiment, "2026-01-05T00:00:00.000Z", 'line one\nline two, "quoted"', "", "E. coli"])
            odd = rows("odd/odd-all_experiments-all_units-20260105120000.csv")
            self.assertEqual(odd, [['we"ird', "n", "i", "r", "b"], ['a"b', "", "3", "2.5", "A"]])

    def test_a_cancelled_export_stops_and_leaves_nothing(self) -> None:
        path = Path(self.mktemp())
        _database(path)
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("INSERT INTO experiments VALUES ('e', '2026-01-05T00:00:00.000Z', '', NULL, NULL)")
        writer.executemany("INSERT INTO growth_rates VALUES ('e', 'pio1', ?, 0.1)", [(f"2026-01-05T00:00:{i:02d}.000Z",) for i in range(30)])
        writer.close()
        folder = Path(self.mktemp())
        conn = open_reader(path)
        self.addCleanup(conn.close)
        progress = Progress(1)
        progress.cancelled = True  # what cancelling the task does
        growth = [d for d in BUILTIN if d.dataset_name == "growth_rates"]
        with self.assertRaises(CancelledError):
            write_export(conn, folder, "export_20260105120000.zip", growth, ExportFilters("e", False, False), "now", progress, batch_rows=10)
        self.assertEqual(list(folder.iterdir()), [])
        progress.cancelled = False
        write_export(conn, folder, "export_20260105120000.zip", growth, ExportFilters("e", False, False), "now", progress, batch_rows=10)
        self.assertEqual(progress.rows_written, 30)
        with zipfile.ZipFile(folder / "export_20260105120000.zip") as archive:
            self.assertEqual(len(archive.read("growth_rates/growth_rates-all_experiments-all_units-20260105120000.csv").splitlines()), 31)
