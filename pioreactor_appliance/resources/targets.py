"""Which units a leader route acts on, from its ``<unit>`` path segment."""

from __future__ import annotations

import sqlite3

from ..errors import ApiError
from ..store.workers import cluster_units, worker_names
from .names import BROADCAST


def cluster_targets(conn: sqlite3.Connection, unit: str, leader: str) -> list[str]:
    """``$broadcast``: the leader and every worker, inactive ones included; else one registered unit (400 otherwise)."""
    units = cluster_units(conn, leader)
    if unit == BROADCAST:
        return units
    if unit not in units:
        raise ApiError(
            400,
            f"Unknown Pioreactor unit: {unit}",
            cause=f"{unit!r} is neither the leader nor a registered worker.",
            remediation="Use a name from GET /api/units, or $broadcast for every unit.",
        )
    return [unit]


def _unknown_worker(unit: str) -> ApiError:
    return ApiError(
        400,
        f"Unknown Pioreactor worker: {unit}",
        cause=f"{unit!r} is not a registered worker.",
        remediation="Use a name from GET /api/workers, or $broadcast for every worker.",
    )


def worker_targets(conn: sqlite3.Connection, unit: str) -> list[str]:
    """``$broadcast``: every registered worker, inactive ones included; else one registered worker (400 otherwise)."""
    workers = worker_names(conn)
    if unit == BROADCAST:
        return workers
    if unit not in workers:
        raise _unknown_worker(unit)
    return [unit]


def one_worker(conn: sqlite3.Connection, unit: str) -> str:
    """One registered worker, for routes that talk to a single unit; ``$broadcast`` is refused (400)."""
    if unit == BROADCAST:
        raise ApiError(
            400,
            "$broadcast is not accepted here.",
            cause="This route talks to one worker.",
            remediation="Name one worker from GET /api/workers.",
        )
    return worker_targets(conn, unit)[0]
