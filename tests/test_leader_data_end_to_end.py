"""Issue 6's proof: a simulated worker's job data, stored by the leader's ingest, comes back through
every log and time-series route and the dataset export in the reference's shapes.

Everything goes through the leader's REST API, except two messages no job of a simulated unit
publishes (a fused OD, which needs an OD fusion estimator): the test publishes that one itself,
as such a job would. The profile run, the issue's last step, is tests/test_profiles_end_to_end.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from pioreactor_appliance.mqtt import MqttClient
from pioreactor_appliance.timestamps import iso_utc, parse_iso

from .cluster import ClusterTestCase

FAST_GROWTH = "\n[growth_rate_calculating.config]\nsamples_for_od_statistics=3\n"
# An active OD calibration makes od_reading publish raw readings as well (raw_od_readings).
OD_CALIBRATION = (
    "calibration_type: od\ncalibration_name: sim_od\nangle: '90'\npd_channel: '2'\nir_led_intensity: 80\n"
    "curve_data_:\n  type: poly\n  coefficients: [0.1, 0.0]\n"
    "recorded_data:\n  x: [0.0, 0.5, 1.0]\n  y: [0.0, 0.05, 0.1]\n"
)
FILES = {
    "storage/calibrations/od90/sim_od.yaml": OD_CALIBRATION,
    "storage/local_cache.json": json.dumps({"active_calibrations": {"od90": "sim_od"}}),
}
JOBS: list[tuple[str, dict[str, Any]]] = [
    ("stirring", {"target_rpm": 500}),
    ("od_reading", {"interval": 1}),
    ("growth_rate_calculating", {}),
    ("temperature_automation", {"automation_name": "thermostat", "target_temperature": 30}),
    ("dosing_automation", {"automation_name": "chemostat", "exchange_volume_ml": 0.5, "duration": 1}),
    ("led_automation", {"automation_name": "light_dark_cycle", "light_intensity": 10}),
]
# source -> (decimals, series names for pio1)
SOURCES = {
    "growth_rates": (5, ["pio1"]),
    "temperature_readings": (2, ["pio1"]),
    "od_readings_filtered": (7, ["pio1"]),
    "od_readings_fused": (7, ["pio1"]),
    "od_readings": (7, ["pio1-2"]),
    "raw_od_readings": (7, ["pio1-2"]),
}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LOG_KEYS = ["timestamp", "level", "pioreactor_unit", "message", "task", "experiment"]
W = "/api/workers/pio1/experiments/exp1"


class LeaderDataEndToEndTests(ClusterTestCase):
    timeout = 60
    maxDiff = None

    async def until(self, probe: Callable[[], Any], what: str, seconds: float = 30) -> Any:
        """Poll the async ``probe`` until it returns something truthy; fail after ``seconds``."""
        deadline = reactor.seconds() + seconds
        while reactor.seconds() < deadline:
            value = await probe()
            if value:
                return value
            await deferLater(reactor, 0.1)
        self.fail(f"{what}: not within {seconds} s")

    async def test_job_data_through_every_log_and_time_series_route_and_the_export(self) -> None:
        await self.start_cluster(["pio1"], config=FAST_GROWTH, files=FILES, simulated=True)
        began = iso_utc(reactor.seconds())
        await self.call("POST", "leader", "/api/experiments", json={"experiment": "exp1"}, expect=201)
        await self.call("PUT", "leader", "/api/experiments/exp1/workers", json={"pioreactor_unit": "pio1"}, expect=200)
        for job, options in JOBS:
            accepted = await self.call(
                "POST", "leader", f"/api/workers/pio1/jobs/run/job_name/{job}/experiments/exp1", json={"options": options}, expect=202
            )
            result = await self.wait_for_result(accepted)
            self.assertEqual(result["result"]["pio1"], {"ok": True, "unit": "pio1", "value": {"ok": True}}, job)

        await self._post_logs()
        await self._publish_fused_od()
        await self._check_logs(began)
        shown = await self._check_time_series(began)
        await self._check_media_rates()
        await self._check_export(shown)

    # --- logs -------------------------------------------------------------------------------------

    async def _post_logs(self) -> None:
        now = iso_utc(reactor.seconds())
        for unit, experiment, level, message in [
            ("pio1", "exp1", "NOTICE", "notice from the UI"),
            ("pio1", "exp1", "DEBUG", "debug from the UI"),
            ("pio1", "exp1", "WARNING", "warning from the UI"),
            ("pio1", "%24experiment", "INFO", "system note for pio1"),
        ]:
            body = {"message": f"  {message} ", "source": "ui", "level": level, "timestamp": now, "task": "ui_test"}
            answer = await self.call("POST", "leader", f"/api/units/{unit}/experiments/{experiment}/logs", json=body, expect=202)
            self.assertEqual(answer, {"status": "accepted"})

    async def _check_logs(self, began: str) -> None:
        async def posted_logs_stored() -> bool:
            rows = await self.call("GET", "leader", "/api/logs?min_level=debug", expect=200)
            messages = {row["message"] for row in rows}
            return {"notice from the UI", "debug from the UI", "warning from the UI", "system note for pio1"} <= messages

        await self.until(posted_logs_stored, "the posted logs coming back through the ingest")
        # Jobs' own logs: pio1's od_reading logs its calibration; the jobs log their starts.
        await self.until(
            lambda: self._rows_with("/api/experiments/exp1/logs", lambda r: r["task"] == "od_reading"), "od_reading's logs"
        )

        routes = {
            "/api/logs": lambda r: True,
            "/api/experiments/exp1/logs": lambda r: r["experiment"] == "exp1",
            "/api/experiments/exp1/recent_logs": lambda r: r["experiment"] == "exp1",
            "/api/units/pio1/logs": lambda r: r["pioreactor_unit"] in ("pio1", "$broadcast"),
            "/api/units/pio1/system_logs": lambda r: r["experiment"] == "$experiment" and r["pioreactor_unit"] in ("pio1", "$broadcast"),
            f"{W}/logs": lambda r: (r["experiment"], r["pioreactor_unit"]) == ("exp1", "pio1"),
            f"{W}/recent_logs": lambda r: r["experiment"] in ("exp1", "$experiment") and r["pioreactor_unit"] in ("pio1", "$broadcast"),
        }
        expected = {
            "/api/logs": {"notice from the UI", "warning from the UI", "system note for pio1"},
            "/api/experiments/exp1/logs": {"notice from the UI", "warning from the UI"},
            "/api/experiments/exp1/recent_logs": {"notice from the UI", "warning from the UI"},
            "/api/units/pio1/logs": {"notice from the UI", "warning from the UI", "system note for pio1"},
            "/api/units/pio1/system_logs": {"system note for pio1"},
            f"{W}/logs": {"notice from the UI", "warning from the UI"},
            f"{W}/recent_logs": {"notice from the UI", "warning from the UI", "system note for pio1"},
        }
        now = iso_utc(reactor.seconds())
        for path, belongs in routes.items():
            rows = await self.call("GET", "leader", path, expect=200)
            self.assertTrue(rows, path)
            self.assertLessEqual(len(rows), 50 if "recent" in path else 100, path)
            for row in rows:
                self.assertEqual(list(row), LOG_KEYS, path)
                self.assertRegex(row["timestamp"], ISO_Z, path)
                self.assertTrue(belongs(row), (path, row))
                self.assertIn(row["level"], ("ERROR", "WARNING", "NOTICE", "INFO"), (path, row))  # INFO by default
            if "recent" in path:
                self.assertTrue(all(began < row["timestamp"] <= now for row in rows), path)
            stamps = [row["timestamp"] for row in rows]
            self.assertEqual(stamps, sorted(stamps, reverse=True), f"{path}: newest first")
            messages = {row["message"] for row in rows}
            self.assertLessEqual(expected[path], messages, path)
            self.assertNotIn("debug from the UI", messages, path)
            [notice] = [row for row in rows if row["message"] == "notice from the UI"] or [None]
            if notice is not None:
                self.assertEqual(
                    {k: notice[k] for k in ("level", "pioreactor_unit", "task", "experiment")},
                    {"level": "NOTICE", "pioreactor_unit": "pio1", "task": "ui_test", "experiment": "exp1"},
                    path,
                )

            # min_level, case-insensitive: DEBUG lets the debug line through, WARNING only warnings and errors.
            sep = "&" if "?" in path else "?"
            debug = await self.call("GET", "leader", f"{path}{sep}min_level=debug", expect=200)
            if "system" not in path:
                self.assertIn("debug from the UI", {row["message"] for row in debug}, path)
            warnings = await self.call("GET", "leader", f"{path}{sep}min_level=WARNING", expect=200)
            self.assertTrue(all(row["level"] in ("ERROR", "WARNING") for row in warnings), path)
            if "system" not in path:
                self.assertIn("warning from the UI", {row["message"] for row in warnings}, path)

        # Paging: skip=1 starts a row further in (a few rows may have come in between the two reads).
        first = await self.call("GET", "leader", "/api/logs?min_level=debug", expect=200)
        second = await self.call("GET", "leader", "/api/logs?min_level=debug&skip=1", expect=200)
        self.assertIn(first[1], second[:5])
        self.assertEqual(await self.call("GET", "leader", "/api/logs?skip=100000", expect=200), [])
        bad = await self.call("GET", "leader", "/api/logs?skip=abc", expect=400)
        self.assertIn("skip", json.dumps(bad))

    async def _rows_with(self, path: str, test: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [row for row in await self.call("GET", "leader", path, expect=200) if test(row)]

    # --- time series ------------------------------------------------------------------------------

    async def _publish_fused_od(self) -> None:
        """A fused OD, as od_reading with an OD fusion estimator publishes it (no simulated job does)."""
        publisher = MqttClient(reactor, self.broker.host, self.broker.port, "test-fused-od")
        publisher.startService()
        self.addCleanup(publisher.stopService)
        await publisher.when_connected()
        self._fused = []
        for i in range(3):
            stamp = iso_utc(reactor.seconds() - 0.01 * (3 - i))  # distinct, just past, after the experiment began
            value = 0.123456789 + i / 1000
            self._fused.append((stamp, round(value, 7)))
            await publisher.publish("pioreactor/pio1/exp1/od_reading/od_fused", json.dumps({"od_fused": value, "timestamp": stamp}), qos=1)

    async def _check_time_series(self, began: str) -> dict[str, list[dict[str, Any]]]:
        """Every source, for the experiment and for pio1; returns each source's full series (for the export)."""
        minimum = {"growth_rates": 2, "temperature_readings": 1, "od_readings_filtered": 2, "od_readings_fused": 3}

        async def enough(source: str) -> Any:
            # target_points differs per poll, so no shared answer (answers are shared for 2 s) hides new rows
            self._poll = getattr(self, "_poll", 0) + 1
            body = await self.call("GET", "leader", f"/api/experiments/exp1/time_series/{source}?target_points={5000 + self._poll}", expect=200)
            return body if body["data"] and len(body["data"][0]) >= minimum.get(source, 4) else None

        shown = {}
        for source, (decimals, names) in SOURCES.items():
            full = await self.until(lambda source=source: enough(source), f"{source} on the leader's chart")
            now = iso_utc(reactor.seconds())
            for prefix in ("/api/experiments/exp1", W):
                for target_points in (None, 3, 1):
                    query = "" if target_points is None else f"?target_points={target_points}"
                    path = f"{prefix}/time_series/{source}{query}"
                    body = await self.call("GET", "leader", path, expect=200)
                    self.assertEqual(list(body), ["series", "data"], path)
                    self.assertEqual(body["series"], names, path)
                    self.assertEqual(len(body["data"]), len(names), path)
                    [points] = body["data"]
                    self.assertTrue(points, path)
                    if target_points is not None:
                        self.assertLessEqual(len(points), target_points, path)
                    for point in points:
                        self.assertEqual(list(point), ["x", "y"], path)
                        self.assertRegex(point["x"], ISO_Z, path)
                        self.assertTrue(began < point["x"] <= now, (path, point))
                        self.assertIsInstance(point["y"], (int, float), path)
                        self.assertEqual(round(point["y"], decimals), point["y"], path)
                    xs = [p["x"] for p in points]
                    self.assertEqual(xs, sorted(set(xs)), f"{path}: oldest first, no repeats")
                    if target_points == 1:
                        self.assertGreaterEqual(points[0]["x"], full["data"][0][-1]["x"], f"{path}: the last row")
            shown[source] = full["data"][0]
            # A short lookback keeps only the last moments; another unit or experiment has no series.
            asked = reactor.seconds()
            recent = await self.call("GET", "leader", f"{W}/time_series/{source}?lookback=0.0005", expect=200)
            self.assertTrue(all(p["x"] > iso_utc(asked - 1.8 - 0.1) for points in recent["data"] for p in points), recent)
            older = [p for p in full["data"][0] if p["x"] <= iso_utc(asked - 2)]
            self.assertTrue(older or source != "od_readings", "od_reading has run for more than 2 s")
            self.assertLessEqual(sum(map(len, recent["data"])), len(full["data"][0]) - len(older) + 2, source)
            empty = {"series": [], "data": []}
            self.assertEqual(await self.call("GET", "leader", f"/api/workers/pio2/experiments/exp1/time_series/{source}", expect=200), empty)
            self.assertEqual(await self.call("GET", "leader", f"/api/experiments/exp2/time_series/{source}", expect=200), empty)

        self.assertEqual([(p["x"], p["y"]) for p in shown["od_readings_fused"]], self._fused)
        self.assertTrue(all(p["y"] > 0 for p in shown["od_readings"]), "OD is positive")
        self.assertTrue(all(15 < p["y"] < 40 for p in shown["temperature_readings"]), "a vial's temperature")
        self.assertTrue(all(p["y"] > 0 for p in shown["od_readings_filtered"]), "normalised OD is positive")
        self.assertEqual(len(shown["od_readings"]), len(shown["raw_od_readings"]), "one raw reading per calibrated one")

        # The generic route: any numeric column, one series per unit (no channel split), 7 decimals.
        for prefix in ("/api/experiments/exp1", W):
            rpm = await self.call("GET", "leader", f"{prefix}/time_series/stirring_rates/measured_rpm", expect=200)
            self.assertEqual(rpm["series"], ["pio1"], prefix)
            self.assertTrue(all(100 < p["y"] < 1000 and ISO_Z.match(p["x"]) for p in rpm["data"][0]), rpm)
            od = await self.call("GET", "leader", f"{prefix}/time_series/od_readings/od_reading?target_points=2", expect=200)
            self.assertEqual(od["series"], ["pio1"], prefix)
            self.assertLessEqual(len(od["data"][0]), 2)
            self.assertEqual(od["data"][0][0], shown["od_readings"][0], "row-stride sampling keeps the first row")
            bad = await self.call("GET", "leader", f"{prefix}/time_series/od_readings/no_such_column", expect=400)
            self.assertIn("od_reading", bad["remediation"])
        return shown

    async def _check_media_rates(self) -> None:
        rates = await self.until(
            lambda: self._media_rates_with_media(), "the chemostat's first dose in media_rates"
        )
        self.assertEqual(list(rates), ["pio1", "all"])
        self.assertEqual(set(rates["pio1"]), {"altMediaRate", "mediaRate"})
        # Volumes over the last 3 h, per hour: the chemostat exchanges 0.5 mL per dose.
        self.assertAlmostEqual(rates["pio1"]["mediaRate"] * 3 % 0.5, 0.0, places=6)
        self.assertEqual(rates["pio1"]["altMediaRate"], 0.0)
        self.assertEqual(rates["all"], rates["pio1"])
        self.assertEqual(await self.call("GET", "leader", "/api/experiments/exp2/media_rates", expect=200), {"all": {"altMediaRate": 0.0, "mediaRate": 0.0}})

    async def _media_rates_with_media(self) -> Any:
        rates = await self.call("GET", "leader", "/api/experiments/exp1/media_rates", expect=200)
        return rates if rates.get("pio1", {}).get("mediaRate", 0) > 0 else None

    # --- export -----------------------------------------------------------------------------------

    async def _check_export(self, shown: dict[str, list[dict[str, Any]]]) -> None:
        body = {"datasets": ["od_readings", "growth_rates"], "experiment": "exp1", "partition_by_unit": False, "partition_by_experiment": False}
        done = await self.wait_for_result(await self.call("POST", "leader", "/api/datasets/exportable/export", json=body, expect=202))
        result = done["result"]
        self.assertEqual((result["result"], result["msg"]), (True, "Finished"))
        response = await self.http.get(self.url("leader", f"/exports/{result['filename']}"))
        self.assertEqual(response.code, 200)
        content = await response.content()
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            self.assertIsNone(archive.testzip())
            names = archive.namelist()
            manifest = json.loads(archive.read("manifest.json"))
            tables = {}
            for dataset in ("od_readings", "growth_rates"):
                [path] = [n for n in names if n.startswith(f"{dataset}/") and n.endswith(".csv")]
                tables[dataset] = list(csv.DictReader(io.StringIO(archive.read(path).decode("utf-8"))))
        od_rows, rate_rows = tables["od_readings"], tables["growth_rates"]
        self.assertEqual(
            {d["dataset_name"]: d["row_count"] for d in manifest["datasets"]}, {"od_readings": len(od_rows), "growth_rates": len(rate_rows)}
        )
        self.assertEqual(
            list(od_rows[0])[:6], ["experiment", "pioreactor_unit", "timestamp", "od_reading", "angle", "channel"]
        )
        self.assertEqual(list(rate_rows[0])[:4], ["experiment", "pioreactor_unit", "timestamp", "rate"])
        for rows in (od_rows, rate_rows):
            self.assertTrue(all((row["experiment"], row["pioreactor_unit"]) == ("exp1", "pio1") for row in rows))
            self.assertTrue(all(ISO_Z.match(row["timestamp"]) for row in rows))
            self.assertTrue(all(float(row["hours_since_experiment_created"]) >= 0 for row in rows))
        self.assertTrue(all((row["angle"], row["channel"]) == ("90", "2") for row in od_rows))
        # The export, taken after the charts were read, holds every point they showed, with the same values.
        exported_od = {row["timestamp"]: round(float(row["od_reading"]), 7) for row in od_rows}
        exported_rates = {row["timestamp"]: round(float(row["rate"]), 5) for row in rate_rows}
        self.assertEqual({p["x"]: exported_od.get(p["x"]) for p in shown["od_readings"]}, {p["x"]: p["y"] for p in shown["od_readings"]})
        self.assertEqual(
            {p["x"]: exported_rates.get(p["x"]) for p in shown["growth_rates"]}, {p["x"]: p["y"] for p in shown["growth_rates"]}
        )
        # Plausible counts: od_reading runs once a second since its start, so the export has no more rows than seconds since.
        first, last = (parse_iso(od_rows[i]["timestamp"]).timestamp() for i in (0, -1))
        self.assertGreaterEqual(len(od_rows), len(shown["od_readings"]))
        self.assertLessEqual(len(od_rows), (last - first) / 1.0 + 2)
        self.assertLessEqual(len(rate_rows), len(od_rows))
