"""Batches land in the real tables; a row SQLite refuses costs only itself."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from pioreactor_appliance.ingest.tables import write_rows
from pioreactor_appliance.ingest.topics import COLUMNS, Row

from ..helpers import start_database

T = "2026-01-05T12:00:00.123Z"


def sample(table: str) -> tuple[object, ...]:
    """A valid row for any ingested table."""
    values: dict[str, object] = {"experiment": "exp1", "pioreactor_unit": "pio1", "timestamp": T, "started_at": T,
                                 "ended_at": None, "channel": 2, "angle": 90, "level": "INFO", "task": "t"}  # fmt: skip
    if table == "led_change_events":
        values["channel"] = "B"
    text = {"event", "source_of_event", "message", "source", "event_name", "data", "automation_name", "settings"}
    return tuple(values.get(c, "x" if c in text else 1.5) for c in COLUMNS[table])


class WriteRowsTests(TestCase):
    async def test_every_table_takes_its_rows(self) -> None:
        db = await start_database(self)
        rows = [Row(table, sample(table)) for table in COLUMNS] * 2
        written = await db.run_without_foreign_keys(write_rows, rows)
        self.assertEqual((written.rows, written.refused), (2 * len(COLUMNS), []))
        for table in COLUMNS:
            stored = await db.read(lambda conn, t=table: conn.execute(f"SELECT * FROM {t}").fetchall())
            self.assertEqual([tuple(r.values()) for r in stored], [sample(table)] * 2, table)

    async def test_a_refused_row_keeps_its_neighbours(self) -> None:
        db = await start_database(self)
        good = [Row("growth_rates", ("exp1", "pio1", T, float(i))) for i in range(3)]
        bad = [
            Row("growth_rates", ("exp1", "pio1", T, None)),  # NOT NULL
            Row("growth_rates", ("exp1", "pio1", "\ud800", 1.0)),  # cannot be encoded
        ]
        other = Row("temperature_readings", ("exp1", "pio1", T, 30.0))
        written = await db.run_without_foreign_keys(write_rows, [good[0], bad[0], good[1], other, bad[1], good[2]])
        self.assertEqual(written.rows, 4)
        self.assertEqual([row for row, _ in written.refused], bad)
        rates = await db.read(lambda conn: conn.execute("SELECT rate FROM growth_rates ORDER BY rowid").fetchall())
        self.assertEqual([r["rate"] for r in rates], [0.0, 1.0, 2.0])
        temps = await db.read(lambda conn: conn.execute("SELECT count(*) AS n FROM temperature_readings").fetchone())
        self.assertEqual(temps["n"], 1)
