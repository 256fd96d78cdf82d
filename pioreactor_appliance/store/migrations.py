"""Schema versions: ``PRAGMA user_version`` says which steps a database file has had.

Step ``n`` (1-based) turns a version ``n - 1`` database into version ``n``; each
step runs in its own transaction together with the version bump, so a crash
leaves the file at a known version. Version 1 is ``schema.sql``. A file newer
than this code is refused rather than guessed at: an older appliance writing
into a newer schema could corrupt it silently.
"""

from __future__ import annotations

import sqlite3
from importlib.resources import files


class SchemaTooNew(Exception):
    """The database was written by a newer appliance than this one."""


def _script(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


# Each entry is the SQL of one step; append, never edit a released step.
MIGRATIONS: tuple[str, ...] = (
    _script("schema.sql"),
    _script("step2_read_indexes.sql"),
    _script("step3_time_series_changes.sql"),
    _script("step4_unit_activity.sql"),
)

LATEST = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples whatever the connection's row factory is
    return int(cursor.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, where: str, steps: tuple[str, ...] = MIGRATIONS) -> int:
    """Bring ``conn`` up to ``len(steps)``; returns the version it started at."""
    start = schema_version(conn)
    if start > len(steps):
        raise SchemaTooNew(
            f"The database {where} has schema version {start}, but this appliance knows versions up to "
            f"{len(steps)}. Upgrade the appliance, or restore a backup made by this version."
        )
    for version in range(start + 1, len(steps) + 1):
        try:
            # executescript commits any open transaction first, so the step opens its own.
            conn.executescript(f"BEGIN IMMEDIATE;\n{steps[version - 1]}\nPRAGMA user_version = {version};\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
    return start
