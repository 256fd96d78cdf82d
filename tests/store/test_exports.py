from __future__ import annotations

import os
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.datasets import BUILTIN
from pioreactor_appliance.store.exports import ExportFilters, free_name, prune_exports, select_statement


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


class StatementTests(SynchronousTestCase):
    def test_values_are_parameters_and_identifiers_quoted(self) -> None:
        od = next(d for d in BUILTIN if d.dataset_name == "od_readings")
        sql, params = select_statement(od, ExportFilters("x' OR 1=1 --", True, True, "2026-01-01T00:00:00.000Z", None))
        self.assertNotIn("OR 1=1", sql)
        self.assertEqual(params, ["x' OR 1=1 --", "2026-01-01T00:00:00.000Z"])
        self.assertIn('FROM "od_readings" AS T', sql)
        self.assertTrue(sql.endswith('ORDER BY T.experiment, T.pioreactor_unit, T."timestamp"'))
