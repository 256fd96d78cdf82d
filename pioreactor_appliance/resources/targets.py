"""Which units a leader route acts on, from its ``<unit>`` path segment."""

from __future__ import annotations

import sqlite3

from ..errors import ApiError
from ..store.workers import cluster_units
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
