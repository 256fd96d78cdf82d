"""pioreactor_unit_activity_data: each time series' insert fills its column of the unit's row for that instant."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.trial.unittest import TestCase

from ..helpers import start_database

T1 = "2026-03-01T10:00:00.000Z"
T2 = "2026-03-01T10:00:05.000Z"


def insert_series(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO experiments (experiment, created_at) VALUES ('e1', ?)", (T1,))
    rows = [
        ("INSERT INTO od_readings VALUES ('e1', 'pio1', ?, 0.51, 90, 2)", T1),
        ("INSERT INTO od_readings_fused VALUES ('e1', 'pio1', ?, 0.52)", T1),
        ("INSERT INTO od_readings_filtered VALUES ('e1', 'pio1', ?, 1.03)", T1),
        ("INSERT INTO temperature_readings VALUES ('e1', 'pio1', ?, 30.5)", T1),
        ("INSERT INTO growth_rates VALUES ('e1', 'pio1', ?, 0.2)", T1),
        ("INSERT INTO stirring_rates VALUES ('e1', 'pio1', ?, 498.0)", T1),
        ("INSERT INTO led_change_events VALUES ('e1', 'pio1', ?, 'B', 40.0, 'test')", T1),
        ("INSERT INTO led_change_events VALUES ('e1', 'pio1', ?, 'B', 0.0, 'test')", T1),  # kept: the first
        ("INSERT INTO dosing_events VALUES ('e1', 'pio1', ?, 'add_media', 1.0, 'test')", T1),
        ("INSERT INTO dosing_events VALUES ('e1', 'pio1', ?, 'add_media', 9.0, 'test')", T1),  # kept: the first
        ("INSERT INTO dosing_events VALUES ('e1', 'pio1', ?, 'remove_waste', 1.5, 'test')", T1),
        ("INSERT INTO od_readings VALUES ('e1', 'pio1', ?, 0.61, 90, 2)", T2),  # a later instant: its own row
        ("INSERT INTO od_readings VALUES ('e1', 'pio2', ?, 0.71, 90, 2)", T1),  # another unit: its own row
        ("INSERT INTO dosing_events VALUES ('e1', 'pio2', ?, 'add_alt_media', 0.5, 'test')", T1),
    ]
    for sql, timestamp in rows:
        conn.execute(sql, (timestamp,))


def activity(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM pioreactor_unit_activity_data ORDER BY pioreactor_unit, timestamp").fetchall()
    return [{k: v for k, v in dict(row).items() if v is not None} for row in rows]


class UnitActivityTests(TestCase):
    async def test_each_series_fills_its_column_of_one_row_per_unit_and_instant(self) -> None:
        db = await start_database(self)
        await db.run(insert_series)
        rows = await db.read(activity)
        key = {"experiment": "e1"}
        self.assertEqual(
            rows,
            [
                {
                    **key, "pioreactor_unit": "pio1", "timestamp": T1, "od_reading": 0.51, "od_fused": 0.52,
                    "normalized_od_reading": 1.03, "temperature_c": 30.5, "growth_rate": 0.2, "measured_rpm": 498.0,
                    "led_b_intensity_update": 40.0, "add_media_ml": 1.0, "remove_waste_ml": 1.5,
                },
                {**key, "pioreactor_unit": "pio1", "timestamp": T2, "od_reading": 0.61},
                {**key, "pioreactor_unit": "pio2", "timestamp": T1, "od_reading": 0.71, "add_alt_media_ml": 0.5},
            ],
        )

    async def test_a_later_reading_at_the_same_instant_replaces_the_earlier(self) -> None:
        db = await start_database(self)
        await db.run(insert_series)
        await db.run(lambda conn: conn.execute("INSERT INTO temperature_readings VALUES ('e1', 'pio1', ?, 31.0)", (T1,)))
        rows = await db.read(activity)
        self.assertEqual(rows[0]["temperature_c"], 31.0)

    async def test_deleting_the_experiment_deletes_its_activity(self) -> None:
        db = await start_database(self)
        await db.run(insert_series)
        await db.run(lambda conn: conn.execute("DELETE FROM experiments WHERE experiment = 'e1'"))
        self.assertEqual(await db.read(activity), [])
