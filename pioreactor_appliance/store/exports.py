"""Dataset exports: SQL from the definitions, rows streamed from a cursor into a zip of CSVs.

Everything here blocks and runs on a :meth:`Database.read` reader thread: one
read transaction, so every dataset of an export sees the same snapshot while
the ingest goes on writing. Rows go from the cursor to the zip entry a batch
at a time, so memory stays bounded whatever the table's size. The zip is
written under a hidden temporary name and renamed when complete: a download
never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, TypedDict

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError

from .. import __version__
from ..datasets import EXPERIMENT_COLUMN, UNIT_COLUMN, Dataset
from ..errors import ApiError

SCHEMA_VERSION = 1
BATCH_ROWS = 5000
MIN_FREE_BYTES = 64 * 1024 * 1024
EXPORT_NAME = re.compile(r"export_[0-9]{14}(-[0-9]{1,4})?\.zip")
HOURS_COLUMN = "hours_since_experiment_created"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@frozen
class ExportFilters:
    """What the user asked for; the bounds are ISO UTC strings, compared as stored."""

    experiment: str
    partition_by_unit: bool
    partition_by_experiment: bool
    start_time: str | None = None
    end_time: str | None = None


@define
class Progress:
    """How far an export is; written by the reader thread, read by pollers on the reactor thread."""

    datasets_total: int
    datasets_done: int = 0
    dataset: str | None = None
    rows_written: int = 0
    cancelled: bool = field(default=False, repr=False)

    def snapshot(self) -> dict[str, Any]:
        return {
            "datasets_total": self.datasets_total,
            "datasets_done": self.datasets_done,
            "dataset": self.dataset,
            "rows_written": self.rows_written,
        }


class ExportResult(TypedDict):
    """The export task's result, as the reference's web UI reads it."""

    result: bool
    filename: str
    msg: str


def _quoted(name: str) -> str:
    """A quoted SQL identifier: a definition's names are plain identifiers; a query's column names may not be."""
    return '"' + name.replace('"', '""') + '"'



def _source(dataset: Dataset) -> str:
    return _quoted(dataset.table) if dataset.table is not None else f"({dataset.query})"


def partitions_of(dataset: Dataset, filters: ExportFilters) -> tuple[bool, bool]:
    """Whether the dataset's CSVs are split by experiment and by unit."""
    by_unit = dataset.has_unit and (filters.partition_by_unit or dataset.always_partition_by_unit)
    by_experiment = dataset.has_experiment and filters.partition_by_experiment
    return by_experiment, by_unit


def _local_modifier() -> str:
    """The SQLite modifier from UTC to this leader's local time: a fixed offset where there is no DST (cheap), else 'localtime'."""
    if time.daylight == 0:
        return f"{-time.timezone:+d} seconds"
    return "localtime"


def _local_time(expr: str) -> str:
    """SQL for an ISO UTC time in the leader's local time, without the ``Z``.

    On a leader kept in UTC (as most are), a time stored as the appliance stores
    it ("...T12:00:00.123Z") only loses its Z; parsing each one costs more.
    """
    converted = f"ifnull(strftime('%Y-%m-%dT%H:%M:%f', {expr}, :local), '')"
    if time.daylight == 0 and time.timezone == 0:
        return f"iif(length({expr}) = 24 AND substr({expr}, 24) = 'Z', substr({expr}, 1, 23), {converted})"
    return converted


@frozen
class Column:
    """A column of a dataset's source, with what its declaration promises (tables only)."""

    name: str
    number: bool = False  # REAL or INTEGER affinity
    not_null: bool = False
    text: bool = False  # TEXT affinity


def _csv_field(column: Column) -> str:
    """SQL that renders a column as one CSV field: text quoted when it must be, NULL empty, numbers as SQLite prints them.

    What the declaration promises saves work per row: a NOT NULL number is used as it is.
    """
    expr = f"T.{_quoted(column.name)}"
    quoted = f"'\"' || replace({expr}, '\"', '\"\"') || '\"'"
    if column.number and column.not_null:
        return expr
    if column.number:
        return f"ifnull({expr}, '')"
    if column.text and column.not_null:
        return f"iif({expr} GLOB :needs_quotes, {quoted}, {expr})"
    text = f"CAST({expr} AS TEXT)"
    return (
        f"CASE typeof({expr}) WHEN 'null' THEN '' WHEN 'integer' THEN {expr} WHEN 'real' THEN {expr} "
        f"ELSE iif({text} GLOB :needs_quotes, '\"' || replace({text}, '\"', '\"\"') || '\"', {text}) END"
    )


def source_columns(conn: sqlite3.Connection, dataset: Dataset) -> list[Column]:
    """The columns of the dataset's table or query, as SQLite names them; a table's with their declarations."""
    try:
        cursor = conn.execute(f"SELECT * FROM {_source(dataset)} AS T LIMIT 0")
        names = [c[0] for c in cursor.description]
        cursor.close()
        declared: dict[str, Column] = {}
        if dataset.table is not None:
            info = conn.cursor()
            info.row_factory = None
            for _, name, kind, not_null, _, _ in info.execute(f"PRAGMA table_info({_quoted(dataset.table)})"):
                affinity = str(kind).upper()
                number = affinity in ("REAL", "INTEGER")
                declared[name] = Column(name, number=number, not_null=bool(not_null), text=affinity == "TEXT")
    except sqlite3.Error as e:
        raise unreadable(dataset, e) from None
    return [declared.get(name, Column(name)) for name in names]


def _csv_text(values: list[str]) -> str:
    """CSV fields, as csv.writer quotes them, without a line end."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()


def select_statement(dataset: Dataset, filters: ExportFilters, columns: list[Column]) -> tuple[str, dict[str, Any], list[str]]:
    """The export's SELECT for one dataset, its parameters and the CSV header.

    Each row comes back as its CSV line (SQLite formats it: far faster than
    Python's csv module on a Pi), then the partition keys. Identifiers come
    from the definition and the table's own column names, always quoted;
    values are parameters.
    """
    header = [c.name for c in columns]
    # One experiment is exported at a time: its field is the same on every row.
    fields = [":experiment_field" if dataset.has_experiment and c.name == EXPERIMENT_COLUMN else _csv_field(c) for c in columns]
    for column in dataset.timestamp_columns:
        header.append(f"{column}_localtime")
        fields.append(_local_time(f"T.{_quoted(column)}"))
    order_by = dataset.default_order_by
    if dataset.has_experiment and order_by is not None:
        header.append(HOURS_COLUMN)
        fields.append(f"ifnull(CAST(round((julianday(T.{_quoted(order_by)}) - :created) * 24.0, 6) AS TEXT), '')")
    params: dict[str, Any] = {"needs_quotes": '*[,"\r\n]*', "local": _local_modifier(), "created": None}
    where: list[str] = []
    if dataset.has_experiment:
        where.append(f"T.{EXPERIMENT_COLUMN} = :experiment")
        params["experiment"] = filters.experiment
        params["experiment_field"] = _csv_text([filters.experiment])
    if order_by is not None and filters.start_time is not None:
        where.append(f"T.{_quoted(order_by)} >= :start")
        params["start"] = filters.start_time
    if order_by is not None and filters.end_time is not None:
        where.append(f"T.{_quoted(order_by)} <= :end")
        params["end"] = filters.end_time
    by_experiment, by_unit = partitions_of(dataset, filters)
    keys = ([f"T.{EXPERIMENT_COLUMN}"] if by_experiment else []) + ([f"T.{UNIT_COLUMN}"] if by_unit else [])
    ordering = keys + ([f"T.{_quoted(order_by)}"] if order_by is not None else [])
    line = " || ',' || ".join(fields)
    # As a BLOB, the line comes to Python as its UTF-8 bytes: no decoding and encoding again.
    sql = f"SELECT CAST({line} AS BLOB){''.join(', ' + k for k in keys)} FROM {_source(dataset)} AS T"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if ordering:
        sql += " ORDER BY " + ", ".join(ordering)
    return sql, params, header


def unreadable(dataset: Dataset, error: sqlite3.Error) -> ApiError:
    return ApiError(
        422,
        f"The dataset {dataset.dataset_name} cannot be read.",
        cause=f"Its definition does not match the database: {error}.",
        remediation="Fix or remove the dataset's YAML file (a plugin's), or report it if it is a built-in.",
    )


def preview(conn: sqlite3.Connection, dataset: Dataset, n_rows: int) -> list[dict[str, Any]]:
    """The first rows of the dataset's table or query, unfiltered; BLOBs as text so they are JSON."""
    try:
        rows = conn.execute(f"SELECT * FROM {_source(dataset)} AS T LIMIT ?", (n_rows,)).fetchall()
    except sqlite3.Error as e:
        raise unreadable(dataset, e) from None
    return [{k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in row.items()} for row in rows]


def _part_name(value: str) -> str:
    return _UNSAFE.sub("_", value) or "_"


class _Partitions:
    """The CSV entries of one dataset, one open at a time (rows arrive ordered by partition)."""

    def __init__(self, archive: zipfile.ZipFile, dataset: Dataset, header: list[str], stamp: str) -> None:
        self._archive = archive
        self._dataset = dataset
        self._header = header
        self._stamp = stamp
        self._raw: IO[bytes] | None = None
        self.files: list[dict[str, Any]] = []
        self._names: set[str] = set()

    def open(self, experiment: str | None, unit: str | None) -> None:
        self.close()
        name = self._dataset.dataset_name
        stem = f"{name}/{name}-{_part_name(experiment or 'all_experiments')}-{_part_name(unit or 'all_units')}-{self._stamp}"
        path, n = f"{stem}.csv", 1
        while path in self._names:  # two names that only differ in unsafe characters
            n += 1
            path = f"{stem}-{n}.csv"
        self._names.add(path)
        self._raw = self._archive.open(path, "w", force_zip64=True)
        self._raw.write(_csv_text(self._header).encode("utf-8") + b"\r\n")
        self.files.append({"path": path, "row_count": 0, "partition": {"experiment": experiment, "pioreactor_unit": unit}})

    def write(self, lines: list[bytes]) -> None:
        """CSV lines, as SQLite formatted them (UTF-8 bytes), ended as csv.writer ends them."""
        assert self._raw is not None
        self._raw.write(b"\r\n".join(lines))
        self._raw.write(b"\r\n")
        self.files[-1]["row_count"] += len(lines)

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None


def _batches(cursor: sqlite3.Cursor, size: int) -> Iterator[list[tuple[Any, ...]]]:
    while batch := cursor.fetchmany(size):
        yield batch


def _check_disk(folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise ApiError(
            507,
            "Not enough disk space to export.",
            cause=f"{free // (1024 * 1024)} MB are free on the leader's disk; an export needs at least {MIN_FREE_BYTES // (1024 * 1024)} MB.",
            remediation="Delete old exports or other files on the leader, or export fewer datasets or a shorter time range.",
        )


def _write_dataset(
    conn: sqlite3.Connection,
    archive: zipfile.ZipFile,
    dataset: Dataset,
    filters: ExportFilters,
    stamp: str,
    progress: Progress,
    folder: Path,
    batch_rows: int,
) -> dict[str, Any]:
    columns = source_columns(conn, dataset)
    sql, params, header = select_statement(dataset, filters, columns)
    cursor = conn.cursor()
    cursor.row_factory = None  # tuples: (csv line, partition keys...), without a dict per row
    if HOURS_COLUMN in header:
        found = cursor.execute("SELECT julianday(created_at) FROM experiments WHERE experiment = ?", (filters.experiment,)).fetchone()
        params["created"] = found[0] if found else None
    try:
        cursor.execute(sql, params)
    except sqlite3.Error as e:
        raise unreadable(dataset, e) from None
    by_experiment, by_unit = partitions_of(dataset, filters)
    keys = list(range(1, 1 + by_experiment + by_unit))
    parts = _Partitions(archive, dataset, header, stamp)
    current: Any = object()
    try:
        for batch in _batches(cursor, batch_rows):
            if progress.cancelled:
                raise CancelledError()
            _check_disk(folder)
            if not keys:
                if not parts.files:
                    parts.open(None, None)
                parts.write([row[0] for row in batch])
            else:
                for key, group in groupby(batch, key=itemgetter(*keys)):
                    if key != current:
                        current = key
                        values = key if isinstance(key, tuple) else (key,)
                        parts.open(str(values[0]) if by_experiment else None, str(values[-1]) if by_unit else None)
                    parts.write([row[0] for row in group])
            progress.rows_written += len(batch)
        if not parts.files:
            parts.open(None, None)  # no rows: still one CSV, so the columns are there to see
    finally:
        parts.close()
        cursor.close()
    generated = [f"{c}_localtime" for c in dataset.timestamp_columns] + ([HOURS_COLUMN] if HOURS_COLUMN in header else [])
    schema = {
        "schema_version": SCHEMA_VERSION,
        "dataset_name": dataset.dataset_name,
        "display_name": dataset.display_name,
        "description": dataset.description,
        "source": dataset.source,
        "table": dataset.table,
        "query": dataset.query,
        "default_order_by": dataset.default_order_by,
        "timestamp_columns": dataset.timestamp_columns,
        "entity_columns": [c for c in (EXPERIMENT_COLUMN, UNIT_COLUMN) if c in header],
        "generated_columns": generated,
        "columns": [_column(dataset, c, c in generated) for c in header],
    }
    schema_path = f"{dataset.dataset_name}/schema.json"
    archive.writestr(schema_path, json.dumps(schema, indent=2))
    return {
        "dataset_name": dataset.dataset_name,
        "display_name": dataset.display_name,
        "schema_path": schema_path,
        "csv_paths": [f["path"] for f in parts.files],
        "csv_files": parts.files,
        "row_count": sum(f["row_count"] for f in parts.files),
        "partition_values": {
            "experiments": sorted({f["partition"]["experiment"] for f in parts.files if f["partition"]["experiment"] is not None}),
            "pioreactor_units": sorted({f["partition"]["pioreactor_unit"] for f in parts.files if f["partition"]["pioreactor_unit"] is not None}),
        },
    }


def _column(dataset: Dataset, name: str, generated: bool) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "generated": generated}
    if name in dataset.column_descriptions:
        column["description"] = dataset.column_descriptions[name]
    if name in dataset.column_units:
        column["unit"] = dataset.column_units[name]
    return column


def write_export(
    conn: sqlite3.Connection,
    folder: Path,
    filename: str,
    datasets: list[Dataset],
    filters: ExportFilters,
    created_at: str,
    progress: Progress,
    batch_rows: int = BATCH_ROWS,
) -> None:
    """Write ``folder/filename``: per dataset a schema.json and its CSVs, then manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    _check_disk(folder)
    stamp = filename.removeprefix("export_").removesuffix(".zip")
    temporary = folder / f".{filename}.tmp"
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            written = []
            for dataset in datasets:
                progress.dataset = dataset.dataset_name
                written.append(_write_dataset(conn, archive, dataset, filters, stamp, progress, folder, batch_rows))
                progress.datasets_done += 1
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "pioreactor_version": __version__,
                "export_created_at": created_at,
                "filters": {
                    "experiment": filters.experiment,
                    "start_time": filters.start_time,
                    "end_time": filters.end_time,
                    "partition_by_unit": filters.partition_by_unit,
                    "partition_by_experiment": filters.partition_by_experiment,
                },
                "selected_datasets": [d.dataset_name for d in datasets],
                "datasets": written,
            }
            archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        os.replace(temporary, folder / filename)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def free_name(folder: Path, stamp: str) -> str:
    """``export_<stamp>.zip``, or with ``-2``, ``-3``... when an export of the same second exists."""
    name, n = f"export_{stamp}.zip", 1
    while (folder / name).exists():
        n += 1
        name = f"export_{stamp}-{n}.zip"
    return name


def prune_exports(folder: Path, keep: int, max_age_seconds: float) -> list[str]:
    """Remove exports beyond the newest ``keep`` or older than the age, and stale temporaries; the names removed."""
    if not folder.is_dir():
        return []
    now = time.time()  # file ages are wall-clock ages: the files' own mtimes are
    exports = []
    removed = []
    for path in folder.iterdir():
        if path.name.startswith(".export_") and path.name.endswith(".zip.tmp"):
            path.unlink(missing_ok=True)  # left by a crash: exports run one at a time, and none runs now
            removed.append(path.name)
        elif EXPORT_NAME.fullmatch(path.name) and path.is_file():
            exports.append((path.stat().st_mtime, path))
    exports.sort(reverse=True)
    for index, (mtime, path) in enumerate(exports):
        if index >= keep or now - mtime > max_age_seconds:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
