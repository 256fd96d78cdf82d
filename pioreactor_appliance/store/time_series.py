"""Time series for charts: the reference's shapes, answered with index seeks rather than scans.

A chart asks for ``target_points`` per series over a window that may hold
tens of thousands of rows. The reference reads every row and samples in
Python; here each series costs a few seeks to find its first and last rows,
then one statement that seeks the first row at or after each target time
(``(experiment, pioreactor_unit[, channel], timestamp)`` indexes) and builds
the JSON in SQLite. So the cost follows the points returned, not the rows in
the window or in the table.

Timestamps are ISO text with milliseconds and ``Z`` (schema.sql), so text
order is time order and targets are compared as text too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypedDict

from attrs import frozen

from ..errors import ApiError
from ..timestamps import parse_iso


class TimeSeries(TypedDict):
    """``series`` names and, in the same order, each series' ``{"x": timestamp, "y": value}`` points."""

    series: list[str]
    data: list[list[dict[str, Any]]]


@frozen
class Source:
    """One chartable table: its value column, the decimals it is rounded to, and whether channels split it."""

    table: str
    column: str
    decimals: int
    by_channel: bool = False


SOURCES: dict[str, Source] = {
    source.table: source
    for source in (
        Source("growth_rates", "rate", 5),
        Source("temperature_readings", "temperature_c", 2),
        Source("od_readings_filtered", "normalized_od_reading", 7),
        Source("od_readings_fused", "od_reading", 7),
        Source("od_readings", "od_reading", 7, by_channel=True),
        Source("raw_od_readings", "od_reading", 7, by_channel=True),
    )
}
CHANNELS = (1, 2, 3, 4)
FALLBACK_DECIMALS = 7
_KEY_COLUMNS = frozenset({"experiment", "pioreactor_unit", "timestamp"})


def ms_of(timestamp: str) -> int:
    """Milliseconds since the epoch of a stored timestamp."""
    return round(parse_iso(timestamp).timestamp() * 1000)


def _units(conn: sqlite3.Connection, table: str, experiment: str) -> list[str]:
    """The units with rows in the experiment, sorted: one seek per unit (a skip scan), not a scan of the rows."""
    rows = conn.execute(
        f"""WITH RECURSIVE u(name) AS (
                SELECT min(pioreactor_unit) FROM {table} WHERE experiment = :e
                UNION ALL
                SELECT (SELECT min(pioreactor_unit) FROM {table} WHERE experiment = :e AND pioreactor_unit > u.name)
                  FROM u WHERE u.name IS NOT NULL)
            SELECT name FROM u WHERE name IS NOT NULL""",
        {"e": experiment},
    ).fetchall()
    return [row["name"] for row in rows]


def sql_series_json(
    conn: sqlite3.Connection, source: Source, key: dict[str, Any], low: str, high: str, target_points: int
) -> str | None:
    """One series' points as JSON text, sampled per the reference; None when it has no rows in the window."""
    table, where = source.table, "experiment = :e AND pioreactor_unit = :u" + (" AND channel = :c" if source.by_channel else "")
    y = f"round(r.{source.column}, {source.decimals})"
    params = {**key, "low": low, "high": high}
    window = f"{where} AND timestamp > :low AND timestamp <= :high"
    # Is there a row past the target_points-th? Only then is the series sampled.
    beyond = conn.execute(
        f"SELECT 1 FROM {table} WHERE {window} ORDER BY timestamp LIMIT 1 OFFSET :tp", {**params, "tp": target_points}
    ).fetchone()
    if beyond is None:
        row = conn.execute(
            f"""SELECT json_group_array(json_object('x', r.timestamp, 'y', {y})) AS points, count(*) AS n
                  FROM (SELECT timestamp, {source.column} FROM {table} WHERE {window} ORDER BY timestamp) AS r""",
            params,
        ).fetchone()
        return row["points"] if row["n"] else None
    first = conn.execute(f"SELECT timestamp FROM {table} WHERE {window} ORDER BY timestamp LIMIT 1", params).fetchone()
    last = conn.execute(f"SELECT timestamp FROM {table} WHERE {window} ORDER BY timestamp DESC LIMIT 1", params).fetchone()
    start, span = ms_of(first["timestamp"]), ms_of(last["timestamp"]) - ms_of(first["timestamp"])
    # Target i is start + i * span / (n - 1), rounded up to the millisecond the timestamps have: "the
    # first row at or after the target" is then exact. With one target, it is the last row itself.
    if target_points == 1:
        target_ms = "(:start + :span)"
    else:
        target_ms = "(:start + (i * :span + :n - 2) / (:n - 1))"
    target = f"strftime('%Y-%m-%dT%H:%M:%S', {target_ms} / 1000, 'unixepoch') || printf('.%03dZ', {target_ms} % 1000)"
    row = conn.execute(
        f"""WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < :n - 1),
            picks(i, rid) AS MATERIALIZED (
                SELECT i, (SELECT rowid FROM {table} WHERE {where} AND timestamp >= {target} ORDER BY timestamp LIMIT 1)
                  FROM k),
            kept(i, rid) AS (SELECT min(i), rid FROM picks GROUP BY rid ORDER BY 1)
            SELECT json_group_array(json_object('x', r.timestamp, 'y', {y})) AS points
              FROM kept JOIN {table} AS r ON r.rowid = kept.rid""",
        {**key, "n": target_points, "start": start, "span": span},
    ).fetchone()
    return row["points"]


SeriesJson = Callable[[sqlite3.Connection, Source, dict[str, Any], str, str, int], "str | None"]


def series_keys(conn: sqlite3.Connection, source: Source, experiment: str, unit: str | None) -> list[tuple[str, dict[str, Any]]]:
    """Each series' name and key (``e``, ``u`` and, for channel tables, ``c``), in the answer's order."""
    units = [unit] if unit is not None else _units(conn, source.table, experiment)
    if source.by_channel:
        return [(f"{name}-{c}", {"e": experiment, "u": name, "c": c}) for name in units for c in CHANNELS]
    return [(name, {"e": experiment, "u": name}) for name in units]


def time_series_json(
    conn: sqlite3.Connection,
    data_source: str,
    experiment: str,
    unit: str | None,
    low: str,
    high: str,
    target_points: int,
    series_json: SeriesJson = sql_series_json,
) -> bytes:
    """``{"series": [...], "data": [...]}`` as JSON bytes, for rows with ``low < timestamp <= high``.

    ``series_json`` answers one series (the SQL path by default; the leader's in-memory cache otherwise).
    """
    source = SOURCES[data_source]
    names: list[str] = []
    parts: list[str] = []
    for series, key in series_keys(conn, source, experiment, unit):
        points = series_json(conn, source, key, low, high, target_points)
        if points is not None:
            names.append(series)
            parts.append(points)
    return _envelope(names, parts)


def _envelope(names: list[str], parts: list[str]) -> bytes:
    """The response body around series already encoded by SQLite (no per-point Python objects)."""
    return ('{"series":' + json.dumps(names, separators=(",", ":")) + ',"data":[' + ",".join(parts) + "]}").encode("utf-8")


def chartable_columns(conn: sqlite3.Connection) -> dict[str, set[str]]:
    """Tables with (experiment, pioreactor_unit, timestamp), and their numeric columns: the fallback's allow-list."""
    allowed: dict[str, set[str]] = {}
    tables = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'").fetchall()
    for table in tables:
        columns = conn.execute("SELECT name, type FROM pragma_table_info(?)", (table["name"],)).fetchall()
        numeric = {c["name"] for c in columns if c["name"] not in _KEY_COLUMNS and c["type"].upper() in ("REAL", "INTEGER")}
        if numeric and _KEY_COLUMNS <= {c["name"] for c in columns}:
            allowed[table["name"]] = numeric
    return allowed


def fallback_json(
    conn: sqlite3.Connection, data_source: str, column: str, experiment: str, unit: str | None, low: str, target_points: int
) -> bytes:
    """The generic route: every k-th non-null row per unit since ``low`` (k = ceil(rows / target_points)).

    ``data_source`` and ``column`` reach the SQL only as names found in the schema, never as the user sent them.
    """
    allowed = chartable_columns(conn)
    if data_source not in allowed:
        raise ApiError(
            400,
            f"Unknown data source {data_source[:80]!r}.",
            cause="The data source must be a table of time series.",
            remediation="Use one of: " + ", ".join(sorted(allowed)) + ".",
        )
    if column not in allowed[data_source]:
        raise ApiError(
            400,
            f"Unknown column {column[:80]!r} of {data_source}.",
            cause=f"The column must be a numeric column of {data_source}.",
            remediation="Use one of: " + ", ".join(sorted(allowed[data_source])) + ".",
        )
    table, value = f'"{data_source}"', f'"{column}"'
    unit_filter = " AND pioreactor_unit = :u" if unit is not None else ""
    rows = conn.execute(
        f"""SELECT pioreactor_unit AS unit,
                   json_group_array(json_object('x', timestamp, 'y', round({value}, {FALLBACK_DECIMALS}))) AS points
              FROM (SELECT pioreactor_unit, timestamp, {value},
                           row_number() OVER (PARTITION BY pioreactor_unit ORDER BY timestamp) - 1 AS rn,
                           count(*) OVER (PARTITION BY pioreactor_unit) AS n
                      FROM {table}
                     WHERE experiment = :e{unit_filter} AND timestamp > :low AND {value} IS NOT NULL
                     ORDER BY pioreactor_unit, timestamp)
             WHERE rn % ((n + :tp - 1) / :tp) = 0
             GROUP BY pioreactor_unit ORDER BY pioreactor_unit""",
        {"e": experiment, "u": unit, "low": low, "tp": target_points},
    ).fetchall()
    return _envelope([row["unit"] for row in rows], [row["points"] for row in rows])


class MediaRate(TypedDict):
    altMediaRate: float
    mediaRate: float


MEDIA_WINDOW_HOURS = 3


def media_rates(conn: sqlite3.Connection, experiment: str, since: str) -> dict[str, MediaRate]:
    """mL/h of media and alt media per unit over the last 3 h of dosing events, and their sum as ``all``."""
    rows = conn.execute(
        """SELECT pioreactor_unit,
                  sum(CASE WHEN event = 'add_media' THEN volume_change_ml ELSE 0 END) AS media,
                  sum(CASE WHEN event = 'add_alt_media' THEN volume_change_ml ELSE 0 END) AS alt_media
             FROM dosing_events
            WHERE experiment = ? AND timestamp >= ? AND event IN ('add_media', 'add_alt_media')
            GROUP BY pioreactor_unit ORDER BY pioreactor_unit""",
        (experiment, since),
    ).fetchall()
    rates: dict[str, MediaRate] = {}
    total: MediaRate = {"altMediaRate": 0.0, "mediaRate": 0.0}
    for row in rows:
        rate: MediaRate = {"altMediaRate": row["alt_media"] / MEDIA_WINDOW_HOURS, "mediaRate": row["media"] / MEDIA_WINDOW_HOURS}
        rates[row["pioreactor_unit"]] = rate
        total["altMediaRate"] += rate["altMediaRate"]
        total["mediaRate"] += rate["mediaRate"]
    rates["all"] = total
    return rates
