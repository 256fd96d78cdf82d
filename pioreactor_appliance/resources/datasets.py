"""``/api/datasets/exportable...`` and ``/exports/<file>``: list, preview and export datasets, and download exports.

The export runs as a task on a database reader thread (never the writer, never
the reactor) and writes its zip into ``exports/`` in the data directory as it
reads; a poller sees how far it is in the task's ``progress``. One export runs
at a time; older exports are pruned by count and age when a new one starts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from attrs import define, field
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.static import File

from ..datasets import Dataset, describe, load_datasets
from ..errors import ApiError
from ..store import exports
from ..store.database import Database
from ..tasks import Accepted, TaskRegistry
from ..timestamps import iso_utc, parse_iso
from .caching import cache_for
from .routing import Reply, route
from .task_results import run_as_task

EXPORTS_DIR = "exports"
PREVIEW_MAX_ROWS = 100


def _iso_bound(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None:
        try:
            parse_iso(value)
        except ValueError as e:
            raise ValueError(f"{attribute.name}: {e}") from None


def _as_utc(value: str | None) -> str | None:
    """A bound as the database stores times: ISO UTC, milliseconds, ``Z``."""
    return None if value is None else iso_utc(parse_iso(value).timestamp())


def _non_empty(instance: Any, attribute: Any, value: Any) -> None:
    if not (value.strip() if isinstance(value, str) else value):
        raise ValueError(f"{attribute.name}: must not be empty")


@define
class ExportRequest:
    """The reference's export body: one experiment, both partition flags, optional time bounds with a timezone."""

    datasets: list[str] = field(validator=_non_empty)
    experiment: str = field(validator=_non_empty)
    partition_by_unit: bool
    partition_by_experiment: bool
    start_time: str | None = field(default=None, validator=_iso_bound)
    end_time: str | None = field(default=None, validator=_iso_bound)

    def __attrs_post_init__(self) -> None:
        if self.start_time is not None and self.end_time is not None and parse_iso(self.start_time) > parse_iso(self.end_time):
            raise ValueError(f"start_time {self.start_time} is after end_time {self.end_time}")


@define
class PreviewQuery:
    n_rows: int = 5


class DatasetsApi:
    app = Klein()
    log = Logger()

    def __init__(self, db: Database, clock: IReactorTime, tasks: TaskRegistry, data_dir: Path, keep: int, max_age_seconds: float) -> None:
        self._db = db
        self._clock = clock
        self._tasks = tasks
        self._data_dir = data_dir
        self._folder = data_dir / EXPORTS_DIR
        self._keep = keep
        self._max_age = max_age_seconds
        self._exporting = False

    async def _datasets(self) -> dict[str, Dataset]:
        datasets: dict[str, Dataset] = await deferToThread(load_datasets, self._data_dir)
        return datasets

    @route(app, "/api/datasets/exportable", ["GET"], returns=list[dict[str, Any]])
    async def exportable(self, request: IRequest) -> Any:
        """Every dataset definition: built-ins, then plugins' (invalid files are skipped and logged)."""
        cache_for(request, 60)
        return [describe(d) for d in (await self._datasets()).values()]

    @route(app, "/api/datasets/exportable/<target_dataset>/preview", ["GET"], query=PreviewQuery, returns=list[dict[str, Any]])
    async def preview(self, request: IRequest, target_dataset: str, query: PreviewQuery) -> Any:
        """The first n_rows (1 to 100, default 5) rows of a dataset, not filtered by experiment."""
        if not 1 <= query.n_rows <= PREVIEW_MAX_ROWS:
            raise ApiError(400, "Invalid n_rows", cause=f"n_rows is {query.n_rows}.", remediation=f"Send n_rows from 1 to {PREVIEW_MAX_ROWS}.")
        dataset = (await self._datasets()).get(target_dataset)
        if dataset is None:
            raise ApiError(
                404,
                f"Dataset {target_dataset} not found.",
                cause=f"No exportable dataset is named {target_dataset!r}.",
                remediation="GET /api/datasets/exportable lists the dataset names.",
            )
        return await self._db.read(exports.preview, dataset, query.n_rows)

    @route(app, "/api/datasets/exportable/export", ["POST"], body=ExportRequest, returns=Accepted, status=202, expensive=True)
    async def export(self, request: IRequest, body: ExportRequest) -> Reply:
        """Export datasets as a zip of CSVs (a task; its result names the file to GET at /exports/<filename>).

        400 for an unknown dataset name; 409 while another export runs.
        """
        known = await self._datasets()
        unknown = [name for name in body.datasets if name not in known]
        if unknown:
            raise ApiError(
                400,
                "Unknown dataset: " + ", ".join(unknown),
                cause=f"No exportable dataset is named {', '.join(map(repr, unknown))}.",
                remediation="GET /api/datasets/exportable lists the dataset names.",
            )
        if self._exporting:
            raise ApiError(
                409,
                "An export is already running.",
                cause="The leader runs one export at a time.",
                remediation="Wait for the running export's task to finish, then retry.",
            )
        chosen = [known[name] for name in dict.fromkeys(body.datasets)]
        filters = exports.ExportFilters(
            body.experiment, body.partition_by_unit, body.partition_by_experiment, _as_utc(body.start_time), _as_utc(body.end_time)
        )
        progress = exports.Progress(datasets_total=len(chosen))
        now = self._clock.seconds()
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        self._exporting = True

        def work() -> Deferred[exports.ExportResult]:
            running = self._db.read(self._write, stamp, chosen, filters, iso_utc(now), progress)
            task: Deferred[exports.ExportResult] = Deferred(lambda _: setattr(progress, "cancelled", True))
            running.chainDeferred(task)
            return task.addBoth(self._done)

        return run_as_task(self._tasks, work, progress.snapshot)

    def _done(self, result: Any) -> Any:
        self._exporting = False
        return result

    def _write(self, conn: Any, stamp: str, chosen: list[Dataset], filters: exports.ExportFilters, created_at: str, progress: exports.Progress) -> exports.ExportResult:
        """On the reader thread: name this export, prune old ones to make room, then write it."""
        filename = exports.free_name(self._folder, stamp)
        for name in exports.prune_exports(self._folder, max(self._keep - 1, 0), self._max_age):
            self.log.info("Removed the old export {name}", name=name)
        exports.write_export(conn, self._folder, filename, chosen, filters, created_at, progress)
        return {"result": True, "filename": filename, "msg": "Finished"}

    @route(app, "/exports/<filename>", ["GET"], returns=str, media=("application/zip",))
    async def download(self, request: IRequest, filename: str) -> Any:
        """An export's zip, by the filename its task's result gives; 404 for any other name."""
        path = await deferToThread(self._export_path, filename)
        request.setHeader(b"content-disposition", f'attachment; filename="{filename}"'.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return File(str(path), defaultType="application/zip")

    def _export_path(self, filename: str) -> Path:
        """The export's file, if ``filename`` names one: an export's name, inside the exports folder, a regular file."""
        missing = ApiError(
            404,
            "Export not found.",
            cause=f"No export is named {filename[:80]!r}; export names look like export_YYYYmmddHHMMSS.zip.",
            remediation="Use the filename from the export task's result; old exports are pruned.",
        )
        if not exports.EXPORT_NAME.fullmatch(filename):
            raise missing
        folder = self._folder.resolve()
        path = (folder / filename).resolve()
        if path.parent != folder or not path.is_file():
            raise missing
        return path
