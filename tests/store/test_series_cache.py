"""The in-memory series cache answers exactly as the SQL path, as rows arrive late, are deleted or are evicted."""

from __future__ import annotations

import json
import random
import sqlite3
from typing import Any

from twisted.trial.unittest import TestCase

from pioreactor_appliance.store import time_series as store
from pioreactor_appliance.store.database import Database
from pioreactor_appliance.store.series_cache import SeriesCache
from pioreactor_appliance.timestamps import iso_utc

from ..helpers import start_database

NOW = 1767614400.0  # 2026-01-05T12:00:00.000Z
HOUR = 3600.0


def _insert_od(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("INSERT OR IGNORE INTO experiments (experiment, created_at) VALUES ('exp', '2026-01-01T00:00:00.000Z')")
    conn.execute("INSERT OR IGNORE INTO experiments (experiment, created_at) VALUES ('other', '2026-01-01T00:00:00.000Z')")
    conn.executemany("INSERT INTO od_readings VALUES (?, ?, ?, ?, 90, ?)", rows)


def _insert_growth(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("INSERT OR IGNORE INTO experiments (experiment, created_at) VALUES ('exp', '2026-01-01T00:00:00.000Z')")
    conn.executemany("INSERT INTO growth_rates VALUES ('exp', ?, ?, ?)", rows)


class SeriesCacheTests(TestCase):
    async def setUp(self) -> None:
        self.db: Database = await start_database(self)

    async def both(self, cache: SeriesCache, source: str, unit: str | None, lookback: float, target_points: int, now: float = NOW) -> Any:
        """The cache's answer, after checking that it is the SQL path's, byte for byte."""
        args = (source, "exp", unit, iso_utc(now - lookback * HOUR), iso_utc(now), target_points)
        cached = await self.db.read(cache.time_series_json, *args)
        expected = await self.db.read(store.time_series_json, *args)
        self.assertEqual(cached, expected, args)
        return json.loads(cached)

    def random_rows(self, rng: random.Random, n: int) -> list[tuple[Any, ...]]:
        """OD rows over the last 6 h and a little into the future, in random order, some at the same millisecond."""
        rows = []
        for _ in range(n):
            seconds_ago = rng.choice([rng.uniform(-60, 6 * HOUR), rng.randrange(0, 50) * 0.001 + 100])
            rows.append((rng.choice(["exp", "exp", "other"]), rng.choice(["pio01", "pio02", "pio03"]), iso_utc(NOW - seconds_ago),
                         rng.uniform(0, 2), rng.choice([1, 2])))
        return rows

    async def test_random_data_with_late_rows_and_rows_between_requests(self) -> None:
        for seed in range(12):
            rng = random.Random(seed)
            await self.db.run(lambda conn: conn.execute("DELETE FROM od_readings"))
            cache = SeriesCache(max_rows=rng.choice([50, 400, 100_000]))
            await self.db.run(_insert_od, self.random_rows(rng, rng.randrange(0, 400)))
            for _ in range(6):
                for _ in range(3):
                    unit = rng.choice([None, "pio01", "pio02", "pio04"])
                    await self.both(cache, "od_readings", unit, rng.choice([0.5, 1.0, 4.0, 8.0]), rng.choice([1, 2, 3, 17, 100, 720]))
                # More rows arrive, many older than the series' last row (late), some in the future.
                await self.db.run(_insert_od, self.random_rows(rng, rng.randrange(1, 60)))
            self.assertLessEqual(cache.rows, cache.max_rows)

    async def test_a_new_row_appears_in_the_next_answer(self) -> None:
        cache = SeriesCache(max_rows=1000)
        await self.db.run(_insert_growth, [("pio01", iso_utc(NOW - 60), 0.1)])
        self.assertEqual((await self.both(cache, "growth_rates", None, 1, 720))["data"], [[{"x": iso_utc(NOW - 60), "y": 0.1}]])
        await self.db.run(_insert_growth, [("pio01", iso_utc(NOW - 30), 0.2), ("pio01", iso_utc(NOW - 90), 0.05), ("pio02", iso_utc(NOW), 1.0)])
        body = await self.both(cache, "growth_rates", None, 1, 720)
        self.assertEqual(body["series"], ["pio01", "pio02"])
        self.assertEqual([p["y"] for p in body["data"][0]], [0.05, 0.1, 0.2])  # the late row in its place
        self.assertEqual(cache.rows, 4)

    async def test_a_repeated_answer_is_reused_until_its_rows_change(self) -> None:
        cache = SeriesCache(max_rows=1000)
        rows = [("exp", "pio01", iso_utc(NOW - 10 * i), 0.001 * i, 1) for i in range(1, 200)]
        await self.db.run(_insert_od, rows)
        first = await self.both(cache, "od_readings", None, 1, 17)
        self.assertEqual(await self.both(cache, "od_readings", None, 1, 17), first)
        # A late row inside the window, then one before it: each answer is the SQL path's again.
        await self.db.run(_insert_od, [("exp", "pio01", iso_utc(NOW - 1005), 9.0, 1)])
        second = await self.both(cache, "od_readings", None, 1, 17)
        await self.db.run(_insert_od, [("exp", "pio01", iso_utc(NOW - 2 * HOUR), 7.0, 1)])
        self.assertEqual(await self.both(cache, "od_readings", None, 1, 17), second)

    async def test_deletes_and_updates_are_seen(self) -> None:
        cache = SeriesCache(max_rows=1000)
        await self.db.run(_insert_growth, [("pio01", iso_utc(NOW - s), float(s)) for s in (10, 20, 30)])
        await self.both(cache, "growth_rates", None, 1, 720)
        await self.db.run(lambda conn: conn.execute("UPDATE growth_rates SET rate = 7.5 WHERE rate = 20.0"))
        body = await self.both(cache, "growth_rates", None, 1, 720)
        self.assertEqual([p["y"] for p in body["data"][0]], [30.0, 7.5, 10.0])
        await self.db.run(lambda conn: conn.execute("DELETE FROM experiments WHERE experiment = 'exp'"))  # cascades
        self.assertEqual(await self.both(cache, "growth_rates", None, 1, 720), {"series": [], "data": []})
        # Rowids freed by the delete are reused by new rows: they are still read.
        await self.db.run(_insert_growth, [("pio01", iso_utc(NOW - 5), 3.0)])
        self.assertEqual((await self.both(cache, "growth_rates", None, 1, 720))["data"], [[{"x": iso_utc(NOW - 5), "y": 3.0}]])

    async def test_eviction_under_a_tiny_budget_keeps_answers_right(self) -> None:
        rows = [("exp", unit, iso_utc(NOW - 7 * i), 0.01 * i, channel) for unit in ("pio01", "pio02") for channel in (1, 2) for i in range(30)]
        await self.db.run(_insert_od, rows)
        cache = SeriesCache(max_rows=45)  # one series (30 rows) at a time
        for _ in range(2):
            for unit in (None, "pio01", "pio02"):
                body = await self.both(cache, "od_readings", unit, 1, 7)
                self.assertEqual(len(body["series"]), 4 if unit is None else 2)
            self.assertLessEqual(cache.rows, 45)
        # A series bigger than the whole budget is answered by the SQL path.
        small = SeriesCache(max_rows=10)
        body = await self.both(small, "od_readings", "pio01", 1, 5)
        self.assertEqual([len(points) for points in body["data"]], [5, 5])
        self.assertEqual(small.rows, 0)
        await self.db.run(_insert_od, [("exp", "pio01", iso_utc(NOW - 1), 9.0, 1)])
        self.assertIn({"x": iso_utc(NOW - 1), "y": 9.0}, (await self.both(small, "od_readings", "pio01", 1, 720))["data"][0])

    async def test_an_older_snapshot_than_the_cache_is_answered_from_sql(self) -> None:
        cache = SeriesCache(max_rows=1000)
        await self.db.run(_insert_growth, [("pio01", iso_utc(NOW - 10), 1.0)])

        def older_snapshot(conn: sqlite3.Connection) -> bytes:
            # Another reader thread saw a delete first: this snapshot's generation is behind the cache's.
            conn.execute("SELECT 1 FROM growth_rates").fetchall()
            cache._tables["growth_rates"].generation += 1
            return cache.time_series_json(conn, "growth_rates", "exp", None, iso_utc(NOW - HOUR), iso_utc(NOW), 720)

        await self.both(cache, "growth_rates", None, 1, 720)
        body = json.loads(await self.db.read(older_snapshot))
        self.assertEqual(body, {"series": ["pio01"], "data": [[{"x": iso_utc(NOW - 10), "y": 1.0}]]})
