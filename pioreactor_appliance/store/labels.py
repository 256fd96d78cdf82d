"""Per-experiment labels of units ("Reactor 1"), unique per experiment both ways."""

from __future__ import annotations

import sqlite3


def unit_labels(conn: sqlite3.Connection, experiment: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT pioreactor_unit, label FROM pioreactor_unit_labels WHERE experiment = ? ORDER BY pioreactor_unit", (experiment,)
    )
    return {row["pioreactor_unit"]: row["label"] for row in rows}


def label_holder(conn: sqlite3.Connection, experiment: str, label: str) -> str | None:
    row = conn.execute(
        "SELECT pioreactor_unit FROM pioreactor_unit_labels WHERE experiment = ? AND label = ?", (experiment, label)
    ).fetchone()
    return row["pioreactor_unit"] if row else None


def set_unit_label(conn: sqlite3.Connection, experiment: str, unit: str, label: str, created_at: str) -> None:
    conn.execute(
        """INSERT INTO pioreactor_unit_labels (experiment, pioreactor_unit, label, created_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (pioreactor_unit, experiment) DO UPDATE SET label = excluded.label, created_at = excluded.created_at""",
        (experiment, unit, label, created_at),
    )


def remove_unit_label(conn: sqlite3.Connection, experiment: str, unit: str) -> None:
    conn.execute("DELETE FROM pioreactor_unit_labels WHERE experiment = ? AND pioreactor_unit = ?", (experiment, unit))
