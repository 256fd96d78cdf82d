"""Queries on ``experiment_profile_runs``: one row per profile run, written by the runner when it starts."""

from __future__ import annotations

import sqlite3
from typing import TypedDict

RECENT_LIMIT = 50


class ProfileRun(TypedDict):
    started_at: str
    experiment_profile_name: str
    experiment: str


def record_run(conn: sqlite3.Connection, experiment: str, name: str, started_at: str) -> None:
    conn.execute(
        "INSERT INTO experiment_profile_runs (started_at, experiment_profile_name, experiment) VALUES (?, ?, ?)",
        (started_at, name, experiment),
    )


def recent_runs(conn: sqlite3.Connection, experiment: str) -> list[ProfileRun]:
    """The experiment's latest runs, newest first (at most RECENT_LIMIT)."""
    return conn.execute(
        """SELECT started_at, experiment_profile_name, experiment FROM experiment_profile_runs
            WHERE experiment = ? ORDER BY started_at DESC, rowid DESC LIMIT ?""",
        (experiment, RECENT_LIMIT),
    ).fetchall()
