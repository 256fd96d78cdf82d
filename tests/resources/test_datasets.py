from __future__ import annotations

import csv
import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

from pioreactor_appliance.resources.datasets import DatasetsApi

from ..helpers import LeaderApiTestCase, _settle, response_of

EXPORT = "/api/datasets/exportable/export"


def od_rows(experiment: str, unit: str, start_minute: int, count: int) -> list[tuple[Any, ...]]:
    return [(experiment, unit, f"2026-01-05T{10 + (start_minute + i) // 60:02d}:{(start_minute + i) % 60:02d}:00.000Z", 0.1 * i, 90, 2) for i in range(count)]


def insert_od(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany("INSERT INTO od_readings (experiment, pioreactor_unit, timestamp, od_reading, angle, channel) VALUES (?, ?, ?, ?, ?, ?)", rows)


def read_csv(archive: zipfile.ZipFile, name: str) -> list[list[str]]:
    return list(csv.reader(io.TextIOWrapper(archive.open(name), encoding="utf-8", newline="")))


class DatasetsRoutesTests(LeaderApiTestCase):
    def more_families(self) -> list[Any]:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        self.api = DatasetsApi(self.db, self.clock, self.tasks, self.data_dir, keep=3, max_age_seconds=86400)
        return [self.api]

    async def setUp(self) -> None:
        await self.start()
        for name in ("exp1", "exp2"):
            await self.call("POST", "/api/experiments", expect=201, json={"experiment": name})

    async def export(self, **fields: Any) -> dict[str, Any]:
        body = {"datasets": ["od_readings"], "experiment": "exp1", "partition_by_unit": False, "partition_by_experiment": False, **fields}
        accepted = await self.call("POST", EXPORT, expect=202, json=body)
        done = await self.finish_task(accepted)
        self.assertEqual(done["status"], "succeeded", done)
        return done["result"]

    def archive(self, result: dict[str, Any]) -> zipfile.ZipFile:
        archive = zipfile.ZipFile(self.data_dir / "exports" / result["filename"])
        self.addCleanup(archive.close)
        return archive

    async def test_listing_has_the_builtins_in_order_with_every_field(self) -> None:
        listed = await self.call("GET", "/api/datasets/exportable", expect=200)
        names = [d["dataset_name"] for d in listed]
        self.assertEqual(names, sorted(names))
        self.assertLessEqual({"od_readings", "raw_od_readings", "od_readings_filtered", "growth_rates", "temperature_readings", "dosing_events",
                              "led_change_events", "pwm_dcs", "stirring_rates", "logs", "experiments", "led_automation_settings",
                              "dosing_automation_events"}, set(names))
        od = listed[names.index("od_readings")]
        self.assertEqual((od["table"], od["query"], od["has_experiment"], od["has_unit"], od["default_order_by"], od["timestamp_columns"], od["source"]),
                         ("od_readings", None, True, True, "timestamp", ["timestamp"], "app"))
        response = await response_of(self.stub, "GET", "/api/datasets/exportable")
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"public, max-age=60"])

    async def test_plugin_datasets_follow_and_invalid_files_are_skipped(self) -> None:
        folder = self.data_dir / "plugins" / "exportable_datasets"
        folder.mkdir(parents=True)
        good = "dataset_name: {name}\ndisplay_name: X\ndescription: d\nhas_experiment: true\nhas_unit: true\n{source}\n"
        (folder / "b.yaml").write_text(good.format(name="plugin_b", source="query: SELECT * FROM growth_rates"))
        (folder / "a.yaml").write_text(good.format(name="plugin_a", source="table: temperature_readings"))
        (folder / "bad_table.yaml").write_text(good.format(name="bad1", source="table: 'od_readings; DROP TABLE logs'"))
        (folder / "both.yaml").write_text(good.format(name="bad2", source="table: logs\nquery: SELECT 1"))
        (folder / "extra.yaml").write_text(good.format(name="bad3", source="table: logs\ncolour: red"))
        (folder / "clash.yaml").write_text(good.format(name="od_readings", source="table: logs"))
        (folder / "broken.yaml").write_text("dataset_name: [")
        names = [d["dataset_name"] for d in await self.call("GET", "/api/datasets/exportable", expect=200)]
        self.assertEqual(names[-2:], ["plugin_a", "plugin_b"])
        self.assertNotIn("bad1", names)
        self.assertNotIn("bad2", names)
        self.assertNotIn("bad3", names)
        self.assertEqual(names.count("od_readings"), 1)
        await self.db.run(insert_od, od_rows("exp1", "pio1", 0, 1))
        await self.db.run(lambda c: c.execute("INSERT INTO growth_rates VALUES ('exp1', 'pio1', '2026-01-05T10:00:00.000Z', 0.5)"))
        self.assertEqual(await self.call("GET", "/api/datasets/exportable/plugin_b/preview", expect=200),
                         [{"experiment": "exp1", "pioreactor_unit": "pio1", "timestamp": "2026-01-05T10:00:00.000Z", "rate": 0.5}])

    async def test_preview(self) -> None:
        await self.db.run(insert_od, od_rows("exp1", "pio1", 0, 3) + od_rows("exp2", "pio2", 0, 5))
        rows = await self.call("GET", "/api/datasets/exportable/od_readings/preview", expect=200)
        self.assertEqual(len(rows), 5)
        self.assertEqual(rows[0], {"experiment": "exp1", "pioreactor_unit": "pio1", "timestamp": "2026-01-05T10:00:00.000Z", "od_reading": 0.0, "angle": 90, "channel": 2})
        self.assertEqual(len(await self.call("GET", "/api/datasets/exportable/od_readings/preview?n_rows=7", expect=200)), 7)
        self.assertEqual(len(await self.call("GET", "/api/datasets/exportable/od_readings/preview?n_rows=100", expect=200)), 8)
        await self.db.run(lambda c: c.execute("INSERT INTO led_automation_settings VALUES ('exp1', 'pio1', '2026-01-05T10:00:00.000Z', NULL, 'silent', ?)", (b'{"a": 1}',)))
        settings = await self.call("GET", "/api/datasets/exportable/led_automation_settings/preview", expect=200)
        self.assertEqual(settings[0]["settings"], '{"a": 1}')

    async def test_preview_bad_input(self) -> None:
        for n in ("0", "101", "-1"):
            await self.error("GET", f"/api/datasets/exportable/od_readings/preview?n_rows={n}", 400, "Invalid n_rows")
        await self.error("GET", "/api/datasets/exportable/od_readings/preview?n_rows=ten", 400, "n_rows")
        await self.error("GET", "/api/datasets/exportable/nope/preview", 404, "nope")
        await self.error("GET", "/api/datasets/exportable/od_readings%3B/preview", 404, "od_readings;")

    async def test_export_writes_csv_manifest_and_schema(self) -> None:
        await self.db.run(insert_od, od_rows("exp1", "pio2", 0, 3) + od_rows("exp1", "pio1", 1, 2) + od_rows("exp2", "pio1", 0, 4))
        result = await self.export()
        self.assertEqual((result["result"], result["msg"]), (True, "Finished"))
        self.assertRegex(result["filename"], r"^export_20260105120000\.zip$")
        archive = self.archive(result)
        name = "od_readings/od_readings-all_experiments-all_units-20260105120000.csv"
        self.assertEqual(sorted(archive.namelist()), sorted(["manifest.json", "od_readings/schema.json", name]))
        rows = read_csv(archive, name)
        self.assertEqual(rows[0], ["experiment", "pioreactor_unit", "timestamp", "od_reading", "angle", "channel", "timestamp_localtime", "hours_since_experiment_created"])
        self.assertEqual(sorted((r[1], r[2]) for r in rows[1:]), [
            ("pio1", "2026-01-05T10:01:00.000Z"), ("pio1", "2026-01-05T10:02:00.000Z"),
            ("pio2", "2026-01-05T10:00:00.000Z"), ("pio2", "2026-01-05T10:01:00.000Z"), ("pio2", "2026-01-05T10:02:00.000Z"),
        ])
        self.assertEqual(sorted(r[2] for r in rows[1:]), [r[2] for r in rows[1:]])  # ordered by time
        self.assertEqual({r[0] for r in rows[1:]}, {"exp1"})
        self.assertEqual(len(rows), 6)
        self.assertEqual(float(rows[1][7]), round((10 * 3600 - 12 * 3600 - 0.123) / 3600, 6))  # created at 12:00:00.123
        manifest = json.loads(archive.read("manifest.json"))
        self.assertEqual(manifest["filters"], {"experiment": "exp1", "start_time": None, "end_time": None, "partition_by_unit": False, "partition_by_experiment": False})
        self.assertEqual(manifest["datasets"][0]["csv_files"], [{"path": name, "row_count": 5, "partition": {"experiment": None, "pioreactor_unit": None}}])
        schema = json.loads(archive.read("od_readings/schema.json"))
        self.assertEqual(schema["generated_columns"], ["timestamp_localtime", "hours_since_experiment_created"])
        self.assertEqual(schema["columns"][3], {"name": "od_reading", "generated": False, "description": "Optical density reading", "unit": "AU"})

    async def test_partitions_and_time_bounds(self) -> None:
        await self.db.run(insert_od, od_rows("exp1", "pio2", 0, 10) + od_rows("exp1", "pio1", 0, 10) + od_rows("exp2", "pio1", 0, 10))
        result = await self.export(partition_by_unit=True, start_time="2026-01-05T11:02:00+01:00", end_time="2026-01-05T10:05:00Z")
        archive = self.archive(result)
        stamp = result["filename"][len("export_"):-len(".zip")]
        by_unit = {unit: read_csv(archive, f"od_readings/od_readings-all_experiments-{unit}-{stamp}.csv") for unit in ("pio1", "pio2")}
        for unit, rows in by_unit.items():
            self.assertEqual([r[2][11:16] for r in rows[1:]], ["10:02", "10:03", "10:04", "10:05"], unit)  # inclusive bounds
            self.assertEqual({(r[0], r[1]) for r in rows[1:]}, {("exp1", unit)})
        manifest = json.loads(archive.read("manifest.json"))
        self.assertEqual(manifest["filters"]["start_time"], "2026-01-05T10:02:00.000Z")
        self.assertEqual(manifest["datasets"][0]["partition_values"], {"experiments": [], "pioreactor_units": ["pio1", "pio2"]})

        result = await self.export(partition_by_experiment=True, partition_by_unit=True, datasets=["od_readings", "experiments"])
        archive = self.archive(result)
        stamp = result["filename"][len("export_"):-len(".zip")]
        self.assertIn(f"od_readings/od_readings-exp1-pio1-{stamp}.csv", archive.namelist())
        self.assertIn(f"od_readings/od_readings-exp1-pio2-{stamp}.csv", archive.namelist())
        experiments = read_csv(archive, f"experiments/experiments-all_experiments-all_units-{stamp}.csv")
        self.assertEqual([r[0] for r in experiments[1:]], ["exp1", "exp2"])  # not filtered: has_experiment is false

    async def test_every_builtin_reads_the_schema(self) -> None:
        names = [d["dataset_name"] for d in await self.call("GET", "/api/datasets/exportable", expect=200)]
        for name in names:
            rows = await self.call("GET", f"/api/datasets/exportable/{name}/preview", expect=200)
            self.assertEqual(len(rows), 2 if name == "experiments" else 0, name)
        result = await self.export(datasets=names, partition_by_unit=True, partition_by_experiment=True, start_time="2026-01-01T00:00:00Z")
        manifest = json.loads(self.archive(result).read("manifest.json"))
        self.assertEqual([d["dataset_name"] for d in manifest["datasets"]], names)

    async def test_empty_export_still_has_a_header(self) -> None:
        archive = self.archive(await self.export(datasets=["growth_rates"]))
        rows = read_csv(archive, next(n for n in archive.namelist() if n.endswith(".csv")))
        self.assertEqual(rows, [["experiment", "pioreactor_unit", "timestamp", "rate", "timestamp_localtime", "hours_since_experiment_created"]])

    async def test_export_bad_bodies(self) -> None:
        good = {"datasets": ["od_readings"], "experiment": "exp1", "partition_by_unit": False, "partition_by_experiment": False}
        cases = [
            ({**good, "experiments": ["exp1"]}, "extra fields found (experiments)"),
            ({k: v for k, v in good.items() if k != "partition_by_unit"}, "partition_by_unit"),
            ({**good, "partition_by_unit": "yes"}, "partition_by_unit"),
            ({**good, "experiment": ""}, "experiment: must not be empty"),
            ({**good, "datasets": []}, "datasets: must not be empty"),
            ({**good, "datasets": "od_readings"}, "expected a list"),
            ({**good, "start_time": "2026-01-05T10:00:00"}, "has no timezone"),
            ({**good, "end_time": "yesterday"}, "end_time"),
            ({**good, "start_time": "2026-01-05T10:00:00Z", "end_time": "2026-01-05T09:00:00Z"}, "is after end_time"),
            ({**good, "datasets": ["od_readings", "nope"]}, "Unknown dataset: nope"),
        ]
        for body, mention in cases:
            await self.error("POST", EXPORT, 400, mention, json=body)
        code, _ = await self.call_raw("POST", EXPORT, b"")
        self.assertEqual(code, 400)
        self.assertFalse((self.data_dir / "exports").exists())

    async def test_one_export_at_a_time_and_progress_while_running(self) -> None:
        await self.db.run(insert_od, od_rows("exp1", "pio1", 0, 10))
        body = {"datasets": ["od_readings", "growth_rates"], "experiment": "exp1", "partition_by_unit": False, "partition_by_experiment": False}
        accepted = await self.call("POST", EXPORT, expect=202, json=body)
        await self.error("POST", EXPORT, 409, "already running", json=body)
        task = self.tasks.get(accepted["task_id"])
        self.clock.advance(0)
        running = task.body()
        self.assertEqual(running["status"], "running")
        self.assertEqual(set(running["progress"]), {"datasets_total", "datasets_done", "dataset", "rows_written"})
        self.assertEqual(running["progress"]["datasets_total"], 2)
        assert task.deferred is not None
        await task.deferred
        self.assertNotIn("progress", task.body())
        await self.export()  # the lock is free again

    async def test_old_exports_are_pruned(self) -> None:
        names = [(await self.export())["filename"] for _ in range(2)]
        self.assertEqual(names, ["export_20260105120000.zip", "export_20260105120000-2.zip"])  # same second
        for _ in range(3):
            self.clock.advance(1)
            names.append((await self.export())["filename"])
        left = sorted(p.name for p in (self.data_dir / "exports").iterdir())
        self.assertEqual(len(left), 3)
        self.assertEqual(left, sorted(names[-3:]))
        old = self.data_dir / "exports" / names[-1]
        os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))  # now the oldest, and past the age limit
        (self.data_dir / "exports" / ".export_x.zip.tmp").write_bytes(b"left by a crash")
        self.clock.advance(1)
        names.append((await self.export())["filename"])
        # The oldest by modification time goes, and so does the crash's temporary file.
        self.assertEqual(sorted(p.name for p in (self.data_dir / "exports").iterdir()), [names[2], names[3], names[5]])

    async def test_download_streams_the_file(self) -> None:
        await self.db.run(insert_od, od_rows("exp1", "pio1", 0, 10))
        result = await self.export()
        response = await response_of(self.stub, "GET", f"/exports/{result['filename']}")
        content = await _settle(self.stub, response.content(), "download")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/zip"])
        self.assertEqual(content, (self.data_dir / "exports" / result["filename"]).read_bytes())

    async def test_download_refuses_other_names_and_traversal(self) -> None:
        (self.data_dir / "secret.zip").write_bytes(b"x")
        (self.data_dir / "exports").mkdir()
        (self.data_dir / "exports" / "export_20260105120000.zip").symlink_to(self.data_dir / "secret.zip")
        (self.data_dir / "exports" / "export_20260105120001.zip").mkdir()
        for path in (
            "/exports/export_20260105120000.zip",  # a link out of the folder
            "/exports/export_20260105120001.zip",  # a directory: never listed
            "/exports/export_20260105129999.zip",
            "/exports/..%2Fsecret.zip",
            "/exports/%2E%2E",
            "/exports/secret.zip",
            "/exports/.export_20260105120000.zip.tmp",
        ):
            code, body = await self.call_raw_get(path)
            self.assertEqual(code, 404, path)
            self.assertIn("error", body)
        code, _ = await self.call_raw_get("/exports/")
        self.assertEqual(code, 404)
        code, _ = await self.call_raw_get("/exports/../secret.zip")
        self.assertEqual(code, 404)

    async def call_raw_get(self, path: str) -> tuple[int, Any]:
        response = await response_of(self.stub, "GET", path)
        content = await _settle(self.stub, response.content(), path)
        return response.code, json.loads(content)


class LargeExportTests(LeaderApiTestCase):
    """Rows stream in batches: peak memory stays far below the table's size."""

    def more_families(self) -> list[Any]:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        return [DatasetsApi(self.db, self.clock, self.tasks, self.data_dir, keep=3, max_age_seconds=86400)]

    async def test_memory_stays_bounded(self) -> None:
        import tracemalloc

        await self.start()
        await self.call("POST", "/api/experiments", expect=201, json={"experiment": "exp1"})
        rows = [("exp1", f"pio{i % 4}", f"2026-01-05T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z", i * 1e-3, 90, 1) for i in range(80_000)]
        await self.db.run(insert_od, rows)
        del rows
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        body = {"datasets": ["od_readings"], "experiment": "exp1", "partition_by_unit": True, "partition_by_experiment": False}
        done = await self.finish_task(await self.call("POST", EXPORT, expect=202, json=body))
        _, peak = tracemalloc.get_traced_memory()
        self.assertEqual(done["status"], "succeeded", done)
        with zipfile.ZipFile(self.data_dir / "exports" / done["result"]["filename"]) as archive:
            manifest = json.loads(archive.read("manifest.json"))
        self.assertEqual(manifest["datasets"][0]["row_count"], 80_000)
        self.assertEqual([f["row_count"] for f in manifest["datasets"][0]["csv_files"]], [20_000] * 4)
        # The 80,000 rows as Python tuples take about 25 MB; streamed, the export holds one batch.
        self.assertLess(peak, 8 * 1024 * 1024)
