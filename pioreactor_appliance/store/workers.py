"""Queries on the worker inventory and on which experiment each worker is assigned to."""

from __future__ import annotations

import sqlite3
from typing import TypedDict


class Worker(TypedDict):
    pioreactor_unit: str
    added_at: str
    is_active: int
    model_name: str | None
    model_version: str | None


class WorkerAssignment(TypedDict):
    """A worker and its experiment (null when unassigned)."""

    pioreactor_unit: str
    is_active: int
    experiment: str | None
    model_name: str | None
    model_version: str | None


class UnitAssignment(TypedDict):
    pioreactor_unit: str
    experiment: str | None
    is_active: int


class ExperimentWorker(TypedDict):
    pioreactor_unit: str
    is_active: int
    model_name: str | None
    model_version: str | None


class Assignment(TypedDict):
    pioreactor_unit: str
    experiment: str
    assigned_at: str


class HistoricalAssignment(TypedDict):
    pioreactor_unit: str
    experiment: str
    is_currently_assigned_to_experiment: int


_WORKER_COLUMNS = "pioreactor_unit, added_at, is_active, model_name, model_version"


def worker_names(conn: sqlite3.Connection) -> list[str]:
    """Every registered worker, active or not, sorted."""
    return [row["pioreactor_unit"] for row in conn.execute("SELECT pioreactor_unit FROM workers ORDER BY pioreactor_unit")]


def cluster_units(conn: sqlite3.Connection, leader_hostname: str) -> list[str]:
    """The leader and every worker, sorted, each once (the leader may also be a worker)."""
    return sorted({leader_hostname, *worker_names(conn)})


def all_workers(conn: sqlite3.Connection) -> list[Worker]:
    return conn.execute(f"SELECT {_WORKER_COLUMNS} FROM workers ORDER BY pioreactor_unit").fetchall()


def get_worker(conn: sqlite3.Connection, unit: str) -> Worker | None:
    return conn.execute(f"SELECT {_WORKER_COLUMNS} FROM workers WHERE pioreactor_unit = ?", (unit,)).fetchone()


def add_worker(
    conn: sqlite3.Connection, unit: str, model_name: str | None, model_version: str | None, added_at: str
) -> bool:
    """Register a worker; for a known one, update only the model fields given. True if it is new."""
    if get_worker(conn, unit) is None:
        conn.execute(
            "INSERT INTO workers (pioreactor_unit, added_at, model_name, model_version, is_active) VALUES (?, ?, ?, ?, 1)",
            (unit, added_at, model_name, model_version),
        )
        return True
    conn.execute(
        """UPDATE workers SET model_name = coalesce(?, model_name), model_version = coalesce(?, model_version)
            WHERE pioreactor_unit = ?""",
        (model_name, model_version, unit),
    )
    return False


def delete_worker(conn: sqlite3.Connection, unit: str) -> bool:
    """Remove a worker (its assignment goes by cascade) and its unit-specific config history."""
    deleted = conn.execute("DELETE FROM workers WHERE pioreactor_unit = ?", (unit,)).rowcount > 0
    if deleted:
        conn.execute(
            "DELETE FROM config_files_histories WHERE filename IN (?, ?)", (f"unit_config.ini::{unit}", f"config_{unit}.ini")
        )
    return deleted


def set_active(conn: sqlite3.Connection, unit: str, is_active: int) -> Worker | None:
    conn.execute("UPDATE workers SET is_active = ? WHERE pioreactor_unit = ?", (is_active, unit))
    return get_worker(conn, unit)


def worker_assignment(conn: sqlite3.Connection, unit: str) -> WorkerAssignment | None:
    """The worker with its experiment (``None`` when unassigned), or ``None`` if it is not registered."""
    return conn.execute(
        """SELECT w.pioreactor_unit, w.is_active, a.experiment, w.model_name, w.model_version
             FROM workers w LEFT JOIN experiment_worker_assignments a ON a.pioreactor_unit = w.pioreactor_unit
            WHERE w.pioreactor_unit = ?""",
        (unit,),
    ).fetchone()


def all_assignments(conn: sqlite3.Connection) -> list[UnitAssignment]:
    return conn.execute(
        """SELECT w.pioreactor_unit, a.experiment, w.is_active
             FROM workers w LEFT JOIN experiment_worker_assignments a ON a.pioreactor_unit = w.pioreactor_unit
            ORDER BY w.pioreactor_unit"""
    ).fetchall()


def experiment_workers(conn: sqlite3.Connection, experiment: str) -> list[ExperimentWorker]:
    """Workers assigned to ``experiment``, inactive ones included."""
    return conn.execute(
        """SELECT w.pioreactor_unit, w.is_active, w.model_name, w.model_version
             FROM experiment_worker_assignments a JOIN workers w ON w.pioreactor_unit = a.pioreactor_unit
            WHERE a.experiment = ? ORDER BY w.pioreactor_unit""",
        (experiment,),
    ).fetchall()


def assign(conn: sqlite3.Connection, unit: str, experiment: str, assigned_at: str) -> tuple[Assignment, str | None]:
    """Assign ``unit`` to ``experiment``: the assignment now, and the experiment it leaves (if another)."""
    current = conn.execute(
        "SELECT pioreactor_unit, experiment, assigned_at FROM experiment_worker_assignments WHERE pioreactor_unit = ?", (unit,)
    ).fetchone()
    if current is not None and current["experiment"] == experiment:
        return current, None
    if current is not None:
        conn.execute("DELETE FROM experiment_worker_assignments WHERE pioreactor_unit = ?", (unit,))
    conn.execute(
        "INSERT INTO experiment_worker_assignments (pioreactor_unit, experiment, assigned_at) VALUES (?, ?, ?)",
        (unit, experiment, assigned_at),
    )
    assignment: Assignment = {"pioreactor_unit": unit, "experiment": experiment, "assigned_at": assigned_at}
    return assignment, current["experiment"] if current is not None else None


def unassign(conn: sqlite3.Connection, unit: str, experiment: str) -> bool:
    """False if ``unit`` was not assigned to ``experiment``."""
    return (
        conn.execute(
            "DELETE FROM experiment_worker_assignments WHERE pioreactor_unit = ? AND experiment = ?", (unit, experiment)
        ).rowcount
        > 0
    )


def unassign_experiment(conn: sqlite3.Connection, experiment: str) -> list[str]:
    """Unassign every worker of ``experiment``; the units that were assigned."""
    rows = conn.execute(
        "DELETE FROM experiment_worker_assignments WHERE experiment = ? RETURNING pioreactor_unit", (experiment,)
    ).fetchall()
    return sorted(row["pioreactor_unit"] for row in rows)


def unassign_all(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("DELETE FROM experiment_worker_assignments RETURNING pioreactor_unit").fetchall()
    return sorted(row["pioreactor_unit"] for row in rows)


def historical_assignments(conn: sqlite3.Connection, experiment: str) -> list[HistoricalAssignment]:
    """Every unit ever assigned to ``experiment``, and whether it still is."""
    return conn.execute(
        """SELECT pioreactor_unit, experiment, max(unassigned_at IS NULL) AS is_currently_assigned_to_experiment
             FROM experiment_worker_assignments_history
            WHERE experiment = ? GROUP BY pioreactor_unit ORDER BY pioreactor_unit""",
        (experiment,),
    ).fetchall()
