"""Chart series kept in memory on the leader, so a chart costs the points it returns, not SQL seeks.

The SQL path (time_series.py) seeks one row per target point: ~11,000 index
seeks for a dashboard's OD chart, 75 ms and more as the file outgrows the page
cache. Here each series (table, experiment, unit[, channel]) is held as its
millisecond timestamps in time order (``array('q')``) and, in the same order,
each row's point already encoded as JSON by SQLite (``{"x":...,"y":...}``, the
same text the SQL path emits), so an answer is bisects and a join.

Kept current without hooks in the ingest: each answer first reads, in its own
read snapshot, only the rows inserted since the rows the cache has seen
(``rowid > last``, a range of the table's rowid B-tree, usually a few rows).
A row older than a series' last one goes in its place, so late rows are not
lost. Deletes and updates cannot be seen that way: triggers bump the table's
generation in ``time_series_changes`` (migration step 3), and a new
generation drops the table's series, refilled on demand.

Bounded: at most ``max_rows`` rows in all, whole series evicted least
recently used first; a series bigger than that alone is answered by the SQL
path. Reader threads share the cache under one lock; nothing here runs on
the reactor.
"""

from __future__ import annotations

import sqlite3
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from itertools import repeat
from operator import floordiv, itemgetter, sub
from typing import Any

from attrs import define, field

from . import time_series as store

# Milliseconds since the epoch of a stored timestamp, in SQLite: julianday keeps whole milliseconds.
_MS = "CAST(round(julianday(timestamp) * 86400000.0) AS INTEGER) - 210866760000000"
SeriesKey = tuple[str, str, str, int | None]  # table, experiment, unit, channel


@define
class _Series:
    """One series: timestamps and encoded points in time order (ties in rowid order), complete up to rowid ``upto``.

    ``answer`` is the last answer and what it was sampled from: rows ``lo:hi``
    for ``target_points`` at insertion count ``inserts``. The same inputs give
    the same bytes, so it is served again until a row enters or leaves the
    window (lo or hi moves) or a late row is put inside it (``inserts``).
    """

    upto: int
    ms: array[int] = field(factory=lambda: array("q"))
    points: list[str] = field(factory=list)
    inserts: int = 0
    answer: tuple[tuple[int, int, int, int], str] | None = None

    def add(self, ms: int, point: str) -> None:
        """A row newer than ``upto``: appended, or put in its place if it is late."""
        if not self.ms or ms >= self.ms[-1]:
            self.ms.append(ms)
            self.points.append(point)
        else:
            at = bisect_right(self.ms, ms)  # after rows with the same time: they have lower rowids
            self.ms.insert(at, ms)
            self.points.insert(at, point)
            self.inserts += 1  # rows before the end moved: an earlier answer's indexes mean other rows now

    def sampled(self, lo: int, hi: int, target_points: int) -> str:
        """The points §3 keeps among rows ``lo:hi``, as JSON text."""
        inputs = (lo, hi, target_points, self.inserts)
        if self.answer is not None and self.answer[0] == inputs:
            return self.answer[1]
        chosen = picks(self.ms, lo, hi, target_points)
        points = itemgetter(*chosen)(self.points) if len(chosen) > 1 else (self.points[chosen[0]],)
        text = "[" + ",".join(points) + "]"
        self.answer = (inputs, text)
        return text


@define
class _Table:
    generation: int
    too_big: set[SeriesKey] = field(factory=set)


def picks(ms: array[int], lo: int, hi: int, target_points: int) -> list[int]:
    """Indexes of the rows §3 keeps among ``ms[lo:hi]`` (sorted, non-empty).

    Targets are evenly spaced in time from the first to the last row, each
    rounded up to the millisecond; each keeps the first row at or after it,
    once. With one target, the last row. C-level loops: this is the per-point cost.
    """
    if hi - lo <= target_points:
        return list(range(lo, hi))
    start, span = ms[lo], ms[hi - 1] - ms[lo]
    if target_points == 1 or span == 0:
        targets: Any = repeat(start + span, 1)
    else:
        # start + ceil(i * span / (n - 1)) for i in 0..n-1, as start - floor(-i * span / (n - 1)).
        targets = map(sub, repeat(start), map(floordiv, range(0, -target_points * span, -span), repeat(target_points - 1)))
    return list(dict.fromkeys(map(bisect_left, repeat(ms), targets, repeat(lo), repeat(hi))))


@define
class SeriesCache:
    """At most ``max_rows`` rows of series in memory; call :meth:`time_series_json` on a reader thread."""

    max_rows: int
    _series: OrderedDict[SeriesKey, _Series] = field(factory=OrderedDict, init=False)
    _tables: dict[str, _Table] = field(factory=dict, init=False)
    _rows: int = field(default=0, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)

    @property
    def rows(self) -> int:
        """Rows held now (for tests and the benchmark)."""
        return self._rows

    def time_series_json(
        self, conn: sqlite3.Connection, data_source: str, experiment: str, unit: str | None, low: str, high: str, target_points: int
    ) -> bytes:
        """The same answer as :func:`time_series.time_series_json`, from memory where the series fit."""
        source = store.SOURCES[data_source]
        low_ms, high_ms = store.ms_of(low), store.ms_of(high)
        with self._lock:
            if not self._refresh(conn, source):
                # This snapshot is older than what the cache holds after a delete: answer it from SQL.
                return store.time_series_json(conn, data_source, experiment, unit, low, high, target_points)

            def series_json(conn: sqlite3.Connection, source: store.Source, key: dict[str, Any], *_: Any) -> str | None:
                return self._answer(conn, source, key, low, high, low_ms, high_ms, target_points)

            return store.time_series_json(conn, data_source, experiment, unit, low, high, target_points, series_json)

    def _refresh(self, conn: sqlite3.Connection, source: store.Source) -> bool:
        """Bring the table's series up to this snapshot; False if the snapshot predates the cache's generation."""
        table = source.table
        generation = conn.execute("SELECT generation FROM time_series_changes WHERE source = ?", (table,)).fetchone()["generation"]
        state = self._tables.get(table)
        if state is None or generation > state.generation:
            self._drop(table)  # rows it holds may be gone or changed
            self._tables[table] = _Table(generation)
        elif generation < state.generation:
            return False
        last = conn.execute(f"SELECT max(rowid) AS last FROM {table}").fetchone()["last"] or 0
        behind = [s for k, s in self._series.items() if k[0] == table and s.upto < last]
        if not behind:
            return True
        since = min(s.upto for s in behind)
        if last - since > self.max_rows:
            self._drop(table)  # cheaper to refill what is asked for than to replay this many rows
            return True
        channel = "channel" if source.by_channel else "NULL"
        cursor = conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            f"""SELECT rowid, experiment, pioreactor_unit, {channel}, {_MS},
                       json_object('x', timestamp, 'y', round({source.column}, {source.decimals}))
                  FROM {table} WHERE rowid > ? AND rowid <= ? ORDER BY rowid""",
            (since, last),
        )
        for rowid, experiment, unit, ch, ms, point in rows:
            series = self._series.get((table, experiment, unit, ch))
            if series is not None and rowid > series.upto and ms is not None:
                series.add(ms, point)
                self._rows += 1
        for series in behind:
            series.upto = last
        self._evict()
        return True

    def _answer(
        self, conn: sqlite3.Connection, source: store.Source, key: dict[str, Any], low: str, high: str, low_ms: int, high_ms: int, target_points: int
    ) -> str | None:
        """One series' points (JSON text) in the window ``low_ms < t <= high_ms``; None when it has none."""
        cache_key: SeriesKey = (source.table, key["e"], key["u"], key.get("c"))
        if cache_key in self._tables[source.table].too_big:
            return store.sql_series_json(conn, source, key, low, high, target_points)
        series = self._series.get(cache_key)
        if series is None:
            series = self._fill(conn, source, key, cache_key)
            if series is None:
                return store.sql_series_json(conn, source, key, low, high, target_points)
        else:
            self._series.move_to_end(cache_key)
        lo, hi = bisect_right(series.ms, low_ms), bisect_right(series.ms, high_ms)
        if lo == hi:
            return None
        return series.sampled(lo, hi, target_points)

    def _fill(self, conn: sqlite3.Connection, source: store.Source, key: dict[str, Any], cache_key: SeriesKey) -> _Series | None:
        """Read a whole series in this snapshot (its index in order); None, and remembered, if it alone is over budget."""
        last = conn.execute(f"SELECT max(rowid) AS last FROM {source.table}").fetchone()["last"] or 0
        where = "experiment = :e AND pioreactor_unit = :u" + (" AND channel = :c" if source.by_channel else "")
        cursor = conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            f"""SELECT {_MS}, json_object('x', timestamp, 'y', round({source.column}, {source.decimals}))
                  FROM {source.table} WHERE {where} ORDER BY timestamp, rowid LIMIT :cap""",
            {**key, "cap": self.max_rows + 1},
        ).fetchall()
        if len(rows) > self.max_rows:
            self._tables[source.table].too_big.add(cache_key)
            return None
        series = _Series(last, array("q", [ms for ms, _ in rows if ms is not None]), [point for ms, point in rows if ms is not None])
        self._series[cache_key] = series
        self._rows += len(series.ms)
        self._evict()
        return series

    def _evict(self) -> None:
        """Whole series, least recently used first, until the rows fit (the one just used goes last)."""
        while self._rows > self.max_rows and self._series:
            _, series = self._series.popitem(last=False)
            self._rows -= len(series.ms)

    def _drop(self, table: str) -> None:
        for key in [k for k in self._series if k[0] == table]:
            self._rows -= len(self._series.pop(key).ms)
