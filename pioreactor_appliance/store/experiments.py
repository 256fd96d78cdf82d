"""Queries on experiments, their tags and their unit labels (run through ``Database.run``)."""

from __future__ import annotations

import sqlite3
from typing import Any, TypedDict

from ..errors import ApiError, not_found
from ..timestamps import parse_iso


class Experiment(TypedDict):
    """An experiment as every experiment route answers it."""

    experiment: str
    created_at: str
    description: str
    worker_count: int
    delta_hours: float
    tags: list[str]


class AssignmentCount(TypedDict):
    experiment: str
    worker_count: int


_SELECT = """
    SELECT e.experiment, e.created_at, e.description,
           (SELECT count(*) FROM experiment_worker_assignments a
              JOIN workers w ON w.pioreactor_unit = a.pioreactor_unit
             WHERE a.experiment = e.experiment) AS worker_count
    FROM experiments e
"""


def _with_details(conn: sqlite3.Connection, rows: list[dict[str, Any]], now: float) -> list[Experiment]:
    """Add ``delta_hours`` (whole hours since creation) and ``tags`` (insertion order) to experiment rows."""
    for row in rows:
        elapsed = now - parse_iso(row["created_at"]).timestamp()
        row["delta_hours"] = float(int(elapsed // 3600))
        row["tags"] = [
            t["tag"] for t in conn.execute("SELECT tag FROM experiment_tags WHERE experiment = ? ORDER BY rowid", (row["experiment"],))
        ]
    return rows


def all_experiments(conn: sqlite3.Connection, now: float) -> list[Experiment]:
    rows = conn.execute(_SELECT + " ORDER BY e.created_at DESC, e.rowid DESC").fetchall()
    return _with_details(conn, rows, now)


def get_experiment(conn: sqlite3.Connection, experiment: str, now: float) -> Experiment | None:
    rows = conn.execute(_SELECT + " WHERE e.experiment = ?", (experiment,)).fetchall()
    return _with_details(conn, rows, now)[0] if rows else None


def latest_experiment(conn: sqlite3.Connection, now: float) -> Experiment | None:
    """The last experiment inserted (by rowid, as the reference's view), whatever its ``created_at``."""
    rows = conn.execute(_SELECT + " ORDER BY e.rowid DESC LIMIT 1").fetchall()
    return _with_details(conn, rows, now)[0] if rows else None


def latest_experiment_name(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT experiment FROM latest_experiment").fetchone()
    return row["experiment"] if row else None


def active_experiments(conn: sqlite3.Connection, now: float) -> list[Experiment]:
    """Experiments with at least one assigned worker that is active."""
    rows = conn.execute(
        _SELECT
        + """ WHERE EXISTS (SELECT 1 FROM experiment_worker_assignments a
                              JOIN workers w ON w.pioreactor_unit = a.pioreactor_unit
                             WHERE a.experiment = e.experiment AND w.is_active = 1)
              ORDER BY e.created_at DESC, e.rowid DESC"""
    ).fetchall()
    return _with_details(conn, rows, now)


def assignment_counts(conn: sqlite3.Connection) -> list[AssignmentCount]:
    return conn.execute(
        """SELECT a.experiment, count(*) AS worker_count
             FROM experiment_worker_assignments a JOIN workers w ON w.pioreactor_unit = a.pioreactor_unit
            GROUP BY a.experiment ORDER BY a.experiment"""
    ).fetchall()


def experiment_exists(conn: sqlite3.Connection, experiment: str) -> bool:
    return conn.execute("SELECT 1 FROM experiments WHERE experiment = ?", (experiment,)).fetchone() is not None


def experiment_not_found(experiment: str) -> ApiError:
    return not_found(f"Experiment {experiment}", "Check the name against GET /api/experiments.")


def require_experiment(conn: sqlite3.Connection, experiment: str) -> None:
    """The 404 every route that names an unknown experiment answers."""
    if not experiment_exists(conn, experiment):
        raise experiment_not_found(experiment)


def _replace_tags(conn: sqlite3.Connection, experiment: str, tags: list[str], created_at: str) -> None:
    conn.execute("DELETE FROM experiment_tags WHERE experiment = ?", (experiment,))
    conn.executemany(
        "INSERT INTO experiment_tags (experiment, tag, created_at) VALUES (?, ?, ?)",
        [(experiment, tag, created_at) for tag in tags],
    )


def create_experiment(
    conn: sqlite3.Connection,
    experiment: str,
    description: str,
    tags: list[str],
    media_used: str | None,
    organism_used: str | None,
    created_at: str,
) -> bool:
    """Insert the experiment and its tags; False if the name is taken."""
    if experiment_exists(conn, experiment):
        return False
    conn.execute(
        "INSERT INTO experiments (experiment, created_at, description, media_used, organism_used) VALUES (?, ?, ?, ?, ?)",
        (experiment, created_at, description, media_used, organism_used),
    )
    _replace_tags(conn, experiment, tags, created_at)
    return True


def update_experiment(
    conn: sqlite3.Connection, experiment: str, description: str | None, tags: list[str] | None, updated_at: str
) -> bool:
    """Change what is given (``None`` leaves it as is); False if the experiment does not exist."""
    if not experiment_exists(conn, experiment):
        return False
    if description is not None:
        conn.execute("UPDATE experiments SET description = ? WHERE experiment = ?", (description, experiment))
    if tags is not None:
        _replace_tags(conn, experiment, tags, updated_at)
    return True


def assigned_units(conn: sqlite3.Connection, experiment: str) -> list[str]:
    rows = conn.execute(
        "SELECT pioreactor_unit FROM experiment_worker_assignments WHERE experiment = ? ORDER BY pioreactor_unit", (experiment,)
    )
    return [row["pioreactor_unit"] for row in rows]


def delete_experiment(conn: sqlite3.Connection, experiment: str) -> bool:
    """Delete the experiment; its rows everywhere go by cascade, the assignment history is closed."""
    return conn.execute("DELETE FROM experiments WHERE experiment = ?", (experiment,)).rowcount > 0


def database_space(conn: sqlite3.Connection) -> dict[str, Any]:
    """How big the file is and how much of it a VACUUM would give back."""
    page_size = conn.execute("PRAGMA page_size").fetchone()["page_size"]
    page_count = conn.execute("PRAGMA page_count").fetchone()["page_count"]
    freelist_count = conn.execute("PRAGMA freelist_count").fetchone()["freelist_count"]
    return {
        "page_size": page_size,
        "page_count": page_count,
        "freelist_count": freelist_count,
        "allocated_bytes": page_size * page_count,
        "reclaimable_bytes": page_size * freelist_count,
        "reclaimable_fraction": freelist_count / page_count if page_count else 0.0,
    }


def historical_values(conn: sqlite3.Connection, column: str) -> list[dict[str, str]]:
    """Distinct non-empty ``media_used`` or ``organism_used`` values, most recently used first."""
    if column not in ("media_used", "organism_used"):
        raise ValueError(f"not a historical column: {column}")
    rows = conn.execute(
        f"""SELECT {column} FROM experiments
             WHERE {column} IS NOT NULL AND trim({column}) != ''
             GROUP BY {column} ORDER BY max(created_at) DESC, max(rowid) DESC"""
    )
    return [{column: row[column]} for row in rows]
