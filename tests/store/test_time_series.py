"""Chart shaping against hand-computed cases: the window, the time-even sampling, rounding and series names."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from twisted.trial.unittest import TestCase

from pioreactor_appliance.store import time_series as store
from pioreactor_appliance.store.database import Database
from pioreactor_appliance.timestamps import iso_utc

from ..helpers import start_database

NOW = 1767614400.0  # 2026-01-05T12:00:00.000Z
HOUR = 3600.0


def _insert(conn: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("INSERT OR IGNORE INTO experiments (experiment, created_at) VALUES ('exp', '2026-01-01T00:00:00.000Z')")
    marks = ", ".join("?" * len(rows[0]))
    conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


class ShapingTests(TestCase):
    async def setUp(self) -> None:
        self.db: Database = await start_database(self)

    async def od(self, seconds_ago: list[float], unit: str = "pio01", channel: int = 1, value: float = 1.0) -> None:
        rows = [("exp", unit, iso_utc(NOW - s), value + i, 90, channel) for i, s in enumerate(seconds_ago)]
        await self.db.run(_insert, "od_readings", rows)

    async def series(self, source: str = "od_readings", target_points: int = 720, lookback: float = 4.0, unit: str | None = None) -> Any:
        body = await self.db.read(
            store.time_series_json, source, "exp", unit, iso_utc(NOW - lookback * HOUR), iso_utc(NOW), target_points
        )
        return json.loads(body)

    def xs(self, points: list[dict[str, Any]]) -> list[str]:
        return [p["x"] for p in points]

    async def test_no_rows_is_empty(self) -> None:
        self.assertEqual(await self.series(), {"series": [], "data": []})

    async def test_targets_are_even_in_time_not_in_rows(self) -> None:
        # Rows 10, 9, 8, 1 and 0 s ago; 3 targets at 10, 5 and 0 s ago pick the first row at or after each.
        await self.od([10, 9, 8, 1, 0])
        body = await self.series(target_points=3)
        self.assertEqual(body["series"], ["pio01-1"])
        self.assertEqual(self.xs(body["data"][0]), [iso_utc(NOW - 10), iso_utc(NOW - 1), iso_utc(NOW)])

    async def test_targets_round_up_to_the_millisecond(self) -> None:
        # Rows 0..3 ms after the first; targets at 0, 1.5 and 3 ms: 1.5 ms picks the row at 2 ms.
        await self.od([1.0, 0.999, 0.998, 0.997])
        body = await self.series(target_points=3)
        self.assertEqual(self.xs(body["data"][0]), [iso_utc(NOW - 1.0), iso_utc(NOW - 0.998), iso_utc(NOW - 0.997)])

    async def test_repeated_picks_are_kept_once(self) -> None:
        # Rows 100, 99, 98, 97 and 0 s ago; targets 100, 66.7, 33.3, 0 s ago pick 100, then 0 three times.
        await self.od([100, 99, 98, 97, 0])
        body = await self.series(target_points=4)
        self.assertEqual(self.xs(body["data"][0]), [iso_utc(NOW - 100), iso_utc(NOW)])

    async def test_one_target_point_is_the_last_row(self) -> None:
        await self.od([30, 20, 10])
        body = await self.series(target_points=1)
        self.assertEqual(body["data"][0], [{"x": iso_utc(NOW - 10), "y": 3.0}])

    async def test_series_within_the_target_are_whole(self) -> None:
        await self.od([30, 20, 10])
        body = await self.series(target_points=3)
        self.assertEqual(body["data"][0], [{"x": iso_utc(NOW - s), "y": v} for s, v in ((30, 1.0), (20, 2.0), (10, 3.0))])

    async def test_the_window_excludes_old_and_future_rows(self) -> None:
        # now - lookback < t <= now: the row exactly one hour ago and the row in the future are out.
        await self.od([HOUR + 1, HOUR, HOUR - 1, 0, -1])
        body = await self.series(lookback=1.0)
        self.assertEqual(self.xs(body["data"][0]), [iso_utc(NOW - HOUR + 1), iso_utc(NOW)])
        sampled = await self.series(lookback=1.0, target_points=1)
        self.assertEqual(self.xs(sampled["data"][0]), [iso_utc(NOW)])

    async def test_channels_split_units_sorted_and_empty_series_omitted(self) -> None:
        await self.od([5], unit="pio02", channel=2)
        await self.od([5], unit="pio01", channel=1)
        await self.od([5], unit="pio01", channel=2)
        await self.od([HOUR * 10], unit="pio03", channel=1)  # only outside the window
        body = await self.series()
        self.assertEqual(body["series"], ["pio01-1", "pio01-2", "pio02-2"])
        self.assertEqual(len(body["data"]), 3)
        one = await self.series(unit="pio02")
        self.assertEqual(one["series"], ["pio02-2"])

    async def test_values_are_rounded_per_source(self) -> None:
        t = iso_utc(NOW - 1)
        await self.db.run(_insert, "growth_rates", [("exp", "pio01", t, 0.123456789)])
        await self.db.run(_insert, "temperature_readings", [("exp", "pio01", t, 30.456)])
        await self.db.run(_insert, "od_readings_fused", [("exp", "pio01", t, 0.123456789)])
        self.assertEqual(await self.series("growth_rates"), {"series": ["pio01"], "data": [[{"x": t, "y": 0.12346}]]})
        self.assertEqual((await self.series("temperature_readings"))["data"][0][0]["y"], 30.46)
        self.assertEqual((await self.series("od_readings_fused"))["data"][0][0]["y"], 0.1234568)

    async def test_the_sampled_path_matches_a_plain_reading_of_the_algorithm(self) -> None:
        # Irregular gaps, repeated timestamps: compare with a direct implementation over all rows.
        offsets = [7200 - (i * 7.3 + (i % 5) * 1.1) for i in range(900)] + [3000.0, 3000.0]
        await self.od(sorted(offsets, reverse=True))
        body = await self.series(target_points=50)
        rows = sorted(iso_utc(NOW - s) for s in offsets if s < 4 * HOUR)
        first, last = store.ms_of(rows[0]), store.ms_of(rows[-1])
        picks: list[str] = []
        for i in range(50):
            target = first + -(-(i * (last - first)) // 49)
            pick = next(r for r in rows if store.ms_of(r) >= target)
            if not picks or picks[-1] != pick:
                picks.append(pick)
        self.assertEqual(self.xs(body["data"][0]), picks)


class FallbackAndMediaTests(TestCase):
    async def setUp(self) -> None:
        self.db: Database = await start_database(self)

    async def test_every_kth_row_per_unit_with_no_upper_bound(self) -> None:
        rows = [("exp", "pio01", iso_utc(NOW - 100 + i), 300.0 + i / 3) for i in range(7)]
        rows.append(("exp", "pio01", iso_utc(NOW + 50), 1.0))  # the fallback keeps future rows
        rows.append(("exp", "pio02", iso_utc(NOW - HOUR * 5), 1.0))  # outside the lookback
        await self.db.run(_insert, "stirring_rates", rows)
        low = iso_utc(NOW - 4 * HOUR)
        body = json.loads(await self.db.read(store.fallback_json, "stirring_rates", "measured_rpm", "exp", None, low, 3))
        # 8 rows, 3 points: k = ceil(8 / 3) = 3, so rows 0, 3 and 6.
        self.assertEqual(body["series"], ["pio01"])
        self.assertEqual([p["y"] for p in body["data"][0]], [300.0, 301.0, 302.0])
        self.assertEqual(body["data"][0][1], {"x": iso_utc(NOW - 97), "y": 301.0})

    async def test_only_schema_tables_and_numeric_columns(self) -> None:
        low = iso_utc(NOW - HOUR)
        for source, column in (
            ("od_readings", "timestamp"),
            ("od_readings", "nope"),
            ("logs", "message"),
            ("sqlite_master", "sql"),
            ('od_readings"; DROP TABLE logs; --', "od_reading"),
            ("experiments", "created_at"),
        ):
            with self.assertRaises(Exception) as caught:
                await self.db.read(store.fallback_json, source, column, "exp", None, low, 10)
            self.assertEqual(getattr(caught.exception, "status", None), 400, (source, column))
        allowed = await self.db.read(store.chartable_columns)
        self.assertIn("od_reading", allowed["od_readings"])
        self.assertNotIn("logs", allowed)

    async def test_media_rates_sum_three_hours_of_additions(self) -> None:
        rows = [
            ("exp", "pio01", iso_utc(NOW - 60), "add_media", 1.5, "chemostat"),
            ("exp", "pio01", iso_utc(NOW - 120), "add_alt_media", 0.75, "manual"),
            ("exp", "pio01", iso_utc(NOW - 4 * HOUR), "add_media", 100.0, "chemostat"),
            ("exp", "pio02", iso_utc(NOW - 60), "add_media", 3.0, None),
            ("exp", "pio02", iso_utc(NOW - 60), "remove_waste", 3.0, None),
        ]
        await self.db.run(_insert, "dosing_events", rows)
        rates = await self.db.read(store.media_rates, "exp", iso_utc(NOW - 3 * HOUR))
        self.assertEqual(
            rates,
            {
                "pio01": {"altMediaRate": 0.25, "mediaRate": 0.5},
                "pio02": {"altMediaRate": 0.0, "mediaRate": 1.0},
                "all": {"altMediaRate": 0.25, "mediaRate": 1.5},
            },
        )
        self.assertEqual(await self.db.read(store.media_rates, "other", iso_utc(NOW)), {"all": {"altMediaRate": 0.0, "mediaRate": 0.0}})
