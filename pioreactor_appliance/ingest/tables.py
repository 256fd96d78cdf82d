"""Writing a batch of ingested rows: one ``executemany`` per table, on the database's writer thread.

A row SQLite still refuses (a constraint or a value it cannot bind that the
parsers did not foresee) must not cost its neighbours: the table's statement is
rolled back to a savepoint and its rows are inserted one by one, and the
refused ones are reported.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from attrs import define, field

from .topics import COLUMNS, Row

# Errors a single row can cause while being bound or inserted.
ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError, UnicodeEncodeError, ValueError)


def _insert_sql(table: str) -> str:
    columns = COLUMNS[table]  # the allow-list: a KeyError for any other table
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


INSERTS = {table: _insert_sql(table) for table in COLUMNS}


@define
class Written:
    """What a batch did: rows stored, and the rows SQLite refused with its reason."""

    rows: int = 0
    refused: list[tuple[Row, str]] = field(factory=list)


def write_rows(conn: sqlite3.Connection, rows: Sequence[Row]) -> Written:
    """Insert ``rows`` (inside the caller's transaction), table by table."""
    by_table: dict[str, list[tuple[object, ...]]] = {}
    for row in rows:
        by_table.setdefault(row.table, []).append(row.values)
    written = Written()
    for table, values in by_table.items():
        sql = INSERTS[table]
        conn.execute("SAVEPOINT ingest_table")
        try:
            conn.executemany(sql, values)
        except ROW_ERRORS:
            conn.execute("ROLLBACK TO ingest_table")
            for one in values:
                try:
                    conn.execute(sql, one)
                except ROW_ERRORS as e:
                    written.refused.append((Row(table, one), str(e)))
                else:
                    written.rows += 1
        else:
            written.rows += len(values)
        conn.execute("RELEASE ingest_table")
    return written
