"""The time-series routes: shapes, bounded parameters, the allow-listed fallback, sharing of answers."""

from __future__ import annotations

import sqlite3
from typing import Any

from pioreactor_appliance.resources.time_series import TimeSeriesApi
from pioreactor_appliance.timestamps import iso_utc

from ..helpers import LeaderApiTestCase, response_of

SOURCES = ("growth_rates", "temperature_readings", "od_readings", "od_readings_filtered", "od_readings_fused", "raw_od_readings")


def _fill(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("INSERT INTO experiments (experiment, created_at) VALUES ('exp', '2026-01-01T00:00:00.000Z')")
    for unit in ("pio02", "pio01"):
        for i in range(10):
            t = iso_utc(now - 60 * i)
            conn.execute("INSERT INTO od_readings VALUES ('exp', ?, ?, ?, 90, 1)", (unit, t, 0.1 * i))
            conn.execute("INSERT INTO od_readings VALUES ('exp', ?, ?, ?, 90, 2)", (unit, t, 0.2 * i))
            conn.execute("INSERT INTO raw_od_readings VALUES ('exp', ?, ?, ?, 2)", (unit, t, 0.3 * i))
            for table in ("growth_rates", "temperature_readings", "od_readings_filtered", "od_readings_fused"):
                conn.execute(f"INSERT INTO {table} VALUES ('exp', ?, ?, ?)", (unit, t, float(i)))
            conn.execute("INSERT INTO dosing_events VALUES ('exp', ?, ?, 'add_media', 3.0, 'chemostat')", (unit, t))


class TimeSeriesRouteTests(LeaderApiTestCase):
    async def setUp(self) -> None:
        await self.start()
        await self.db.run(_fill, self.NOW)

    def more_families(self) -> list[Any]:
        self.api = TimeSeriesApi(self.db, self.clock)
        return [self.api]

    async def test_every_source_for_the_experiment_and_one_unit(self) -> None:
        for source in SOURCES:
            body = await self.call("GET", f"/api/experiments/exp/time_series/{source}?lookback=1&target_points=4", expect=200)
            names = {"od_readings": ["pio01-1", "pio01-2", "pio02-1", "pio02-2"], "raw_od_readings": ["pio01-2", "pio02-2"]}
            self.assertEqual(body["series"], names.get(source, ["pio01", "pio02"]), source)
            self.assertEqual(len(body["data"]), len(body["series"]))
            # 10 rows a minute apart, 4 targets: 9 min ago, 6, 3 and now.
            self.assertEqual([p["x"] for p in body["data"][0]], [iso_utc(self.NOW - 60 * m) for m in (9, 6, 3, 0)], source)
            one = await self.call("GET", f"/api/workers/pio02/experiments/exp/time_series/{source}", expect=200)
            self.assertTrue(all(name.startswith("pio02") for name in one["series"]), source)
            self.assertEqual(len(one["data"][0]), 10)

    async def test_defaults_cache_header_and_empty_experiments(self) -> None:
        response = await response_of(self.stub, "GET", "/api/experiments/none/time_series/od_readings")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"public, max-age=5"])
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(await response.json(), {"series": [], "data": []})

    async def test_bad_parameters_are_400(self) -> None:
        for query, mention in (
            ("target_points=0", "target_points"),
            ("target_points=-3", "target_points"),
            ("target_points=abc", "target_points"),
            ("target_points=10001", "target_points"),
            ("lookback=abc", "lookback"),
            ("lookback=nan", "lookback"),
            ("lookback=-1", "lookback"),
            ("lookback=100000", "lookback"),
        ):
            for path in ("/api/experiments/exp/time_series/od_readings", "/api/workers/pio01/experiments/exp/time_series/growth_rates",
                         "/api/experiments/exp/time_series/stirring_rates/measured_rpm"):
                await self.error("GET", f"{path}?{query}", 400, mention)

    async def test_fallback_checks_table_and_column(self) -> None:
        body = await self.call("GET", "/api/experiments/exp/time_series/od_readings/od_reading?target_points=5", expect=200)
        self.assertEqual(body["series"], ["pio01", "pio02"])
        # 20 rows per unit (two channels), 5 points: every 4th row.
        self.assertEqual(len(body["data"][0]), 5)
        one = await self.call("GET", "/api/workers/pio01/experiments/exp/time_series/growth_rates/rate", expect=200)
        self.assertEqual(one["series"], ["pio01"])
        await self.error("GET", "/api/experiments/exp/time_series/logs/message", 400, "logs")
        await self.error("GET", "/api/experiments/exp/time_series/od_readings/timestamp", 400, "timestamp")
        await self.error("GET", "/api/workers/pio01/experiments/exp/time_series/sqlite_master/rootpage", 400, "sqlite_master")
        await self.error("GET", "/api/experiments/exp/time_series/od_readings%22%3B/od_reading", 400)

    async def test_answers_are_shared_for_two_seconds(self) -> None:
        path = "/api/experiments/exp/time_series/growth_rates?lookback=1"
        before = await self.call("GET", path, expect=200)
        await self.db.run(lambda conn: conn.execute("DELETE FROM growth_rates"))
        self.assertEqual(await self.call("GET", path, expect=200), before)
        self.clock.advance(2.0)
        self.assertEqual(await self.call("GET", path, expect=200), {"series": [], "data": []})

    async def test_media_rates(self) -> None:
        body = await self.call("GET", "/api/experiments/exp/media_rates", expect=200)
        # 10 doses of 3 mL per unit, all within 3 h: 30 mL / 3 h.
        self.assertEqual(body, {"pio01": {"altMediaRate": 0.0, "mediaRate": 10.0}, "pio02": {"altMediaRate": 0.0, "mediaRate": 10.0},
                                "all": {"altMediaRate": 0.0, "mediaRate": 20.0}})
        self.assertEqual(await self.call("GET", "/api/experiments/other/media_rates", expect=200), {"all": {"altMediaRate": 0.0, "mediaRate": 0.0}})
