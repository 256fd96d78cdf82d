"""Log queries: fixed pages of 100 rows newest first, a level threshold, and the reference's special rows.

``$experiment`` marks system logs (no experiment); rows of ``$broadcast``
belong to every unit, so each unit-scoped query takes them too.
"""

from __future__ import annotations

import sqlite3
from typing import Any, TypedDict

PAGE_SIZE = 100
RECENT_COUNT = 50
RECENT_HOURS = 24
ASSIGNMENT_GRACE = "+5 seconds"  # logs just after an unassignment still belong to the unit's run
SYSTEM = "$experiment"
BROADCAST = "$broadcast"

# Each threshold and the levels it lets through; CRITICAL rows are never returned (as in the reference).
_THRESHOLDS = {
    "DEBUG": ("ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"),
    "INFO": ("ERROR", "WARNING", "NOTICE", "INFO"),
    "NOTICE": ("ERROR", "WARNING", "NOTICE"),
    "WARNING": ("ERROR", "WARNING"),
    "ERROR": ("ERROR",),
}
_COLUMNS = "l.timestamp, l.level, l.pioreactor_unit, l.message, l.task, l.experiment"


class LogRow(TypedDict):
    timestamp: str
    level: str
    pioreactor_unit: str
    message: str
    task: str | None
    experiment: str


def levels_from(min_level: str) -> tuple[str, ...]:
    """The levels a case-insensitive threshold lets through; an unknown one means INFO."""
    return _THRESHOLDS.get(min_level.upper(), _THRESHOLDS["INFO"])


def _select(conn: sqlite3.Connection, where: str, params: list[Any], levels: tuple[str, ...], limit: int, skip: int) -> list[LogRow]:
    marks = ", ".join("?" * len(levels))
    return conn.execute(
        f"SELECT {_COLUMNS} FROM logs AS l WHERE ({where}) AND l.level IN ({marks}) "
        "ORDER BY l.timestamp DESC LIMIT ? OFFSET ?",
        [*params, *levels, limit, skip],
    ).fetchall()


def all_logs(conn: sqlite3.Connection, levels: tuple[str, ...], skip: int) -> list[LogRow]:
    return _select(conn, "1", [], levels, PAGE_SIZE, skip)


def experiment_logs(conn: sqlite3.Connection, experiment: str, levels: tuple[str, ...], skip: int) -> list[LogRow]:
    return _select(conn, "l.experiment = ?", [experiment], levels, PAGE_SIZE, skip)


def unit_logs(conn: sqlite3.Connection, unit: str, levels: tuple[str, ...], skip: int) -> list[LogRow]:
    """The unit's and ``$broadcast`` rows, any experiment."""
    return _select(conn, "l.pioreactor_unit IN (?, ?)", [unit, BROADCAST], levels, PAGE_SIZE, skip)


def system_logs(conn: sqlite3.Connection, unit: str, levels: tuple[str, ...], skip: int) -> list[LogRow]:
    """The unit's and ``$broadcast`` rows outside any experiment."""
    return _select(conn, "l.experiment = ? AND l.pioreactor_unit IN (?, ?)", [SYSTEM, unit, BROADCAST], levels, PAGE_SIZE, skip)


def worker_experiment_logs(
    conn: sqlite3.Connection, unit: str, experiment: str, levels: tuple[str, ...], skip: int, now: str
) -> list[LogRow]:
    """The unit's rows of the experiment written while it was assigned to it (until 5 s after it left, or now)."""
    marks = ", ".join("?" * len(levels))
    return conn.execute(
        f"""SELECT {_COLUMNS} FROM logs AS l
             WHERE l.experiment = ? AND l.pioreactor_unit = ? AND l.level IN ({marks})
               AND EXISTS (SELECT 1 FROM experiment_worker_assignments_history AS h
                            WHERE h.pioreactor_unit = l.pioreactor_unit AND h.experiment = l.experiment
                              AND l.timestamp >= h.assigned_at
                              AND l.timestamp <= strftime('%Y-%m-%dT%H:%M:%fZ', coalesce(h.unassigned_at, ?), '{ASSIGNMENT_GRACE}'))
             ORDER BY l.timestamp DESC LIMIT ? OFFSET ?""",
        [experiment, unit, *levels, now, PAGE_SIZE, skip],
    ).fetchall()


def recent_since(conn: sqlite3.Connection, experiment: str, day_ago: str) -> str:
    """The later of a day ago and the experiment's creation: where the recent views start."""
    row = conn.execute("SELECT created_at FROM experiments WHERE experiment = ?", (experiment,)).fetchone()
    return max(day_ago, row["created_at"]) if row is not None else day_ago


def recent_experiment_logs(conn: sqlite3.Connection, experiment: str, levels: tuple[str, ...], day_ago: str) -> list[LogRow]:
    """Up to 50 of the experiment's own rows (no system rows) since :func:`recent_since`."""
    since = recent_since(conn, experiment, day_ago)
    return _select(conn, "l.experiment = ? AND l.timestamp > ?", [experiment, since], levels, RECENT_COUNT, 0)


def recent_worker_logs(
    conn: sqlite3.Connection, unit: str, experiment: str, levels: tuple[str, ...], day_ago: str
) -> list[LogRow]:
    """Up to 50 rows of the unit or ``$broadcast``, in the experiment or system-wide, since :func:`recent_since`."""
    since = recent_since(conn, experiment, day_ago)
    return _select(
        conn,
        "l.experiment IN (?, ?) AND l.pioreactor_unit IN (?, ?) AND l.timestamp > ?",
        [experiment, SYSTEM, unit, BROADCAST, since],
        levels,
        RECENT_COUNT,
        0,
    )
