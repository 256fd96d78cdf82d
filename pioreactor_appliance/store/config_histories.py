"""Queries on ``config_files_histories``: every saved version of a config file, by the key it was saved under.

Keys are the reference's: ``config.ini`` for the shared file, ``unit_config.ini::<unit>``
for a unit's own file, and the legacy ``config_<unit>.ini`` that older versions wrote.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TypedDict

HISTORY_PAGE = 200  # newest versions served; the table keeps them all


class ConfigVersion(TypedDict):
    filename: str
    timestamp: str
    data: str


def add_version(conn: sqlite3.Connection, filename: str, timestamp: str, data: str) -> None:
    conn.execute(
        "INSERT INTO config_files_histories (timestamp, filename, data) VALUES (?, ?, ?)",
        (timestamp, filename, data),
    )


def versions(conn: sqlite3.Connection, filenames: Sequence[str]) -> list[ConfigVersion]:
    """The newest versions saved under any of ``filenames``, newest first."""
    marks = ", ".join("?" for _ in filenames)
    rows = conn.execute(
        f"SELECT filename, timestamp, data FROM config_files_histories WHERE filename IN ({marks}) "
        "ORDER BY timestamp DESC, rowid DESC LIMIT ?",
        (*filenames, HISTORY_PAGE),
    )
    return [ConfigVersion(filename=r["filename"], timestamp=r["timestamp"], data=r["data"]) for r in rows]
