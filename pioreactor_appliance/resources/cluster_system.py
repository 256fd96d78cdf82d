"""``/api/units/<unit>/system/...``, ``/api/.../capabilities`` and ``/api/system/...``: power, clock and updates through the leader.

The units do the work through their own ``/unit_api/system/...`` routes; the
leader picks the units (``$broadcast`` here is the whole cluster, the leader
included, as the reference's ``/api/units`` family says), fans out, and
answers with a task whose result maps each unit to its envelope. Uploads are
kept in the leader's data directory, under ``uploads/``, with a name the
leader chose.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal, TypedDict

from attrs import define
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..bodies import form_file_body, read_body, read_form_upload
from ..errors import ApiError
from ..fanout import FanOut
from ..store.database import Database
from ..store.workers import worker_names
from ..tasks import Accepted, TaskRegistry
from .names import BROADCAST
from .routing import Reply, route
from .system import SetClock, clock_argument
from .targets import cluster_targets
from .task_results import run_as_task

KILL_SWITCH = "DISALLOW_UI_UPLOADS"
UPLOADS = "uploads"
MAX_NAME = 100
UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# The reference's timeouts: capabilities take a while to gather; the leader's clock is set first, waited on.
CAPABILITIES_TIMEOUT = 15.0
CLOCK_TIMEOUT = 20.0
# A unit's update command is killed after [system] update_timeout_seconds; the leader waits a little longer to hear so.
UPDATE_MARGIN = 10.0
CLOCK_PATH = "/unit_api/system/utc_clock"
ARCHIVE_PATH = "/unit_api/system/update_from_archive"


@define
class UpdateUnits:
    """Which units update: one registered unit, or ``$broadcast`` (the default) for the whole cluster."""

    units: str = BROADCAST


@define
class ArchiveUpdate:
    """An uploaded release archive (the ``save_path`` ``/api/system/upload`` answered) and the units to update."""

    release_archive_location: str
    units: str


class Uploaded(TypedDict):
    message: Literal["File successfully uploaded"]
    save_path: str


def upload_name(filename: str | None) -> str:
    """The client's file name reduced to a safe last component; 400 when nothing usable is left."""
    last = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = UNSAFE.sub("_", last).lstrip(".")[-MAX_NAME:]
    if not cleaned.strip("_"):
        raise ApiError(
            400,
            "No file selected",
            cause=f"The form's file has no usable file name ({filename!r}).",
            remediation="Send the file as the form field 'file' with its name, e.g. curl -F file=@release.zip.",
        )
    return cleaned


def save_upload(root: Path, name: str, content: bytes, keep: int) -> Path:
    """Write ``content`` as a new file in ``<root>/uploads`` (created if needed) and sync it; its path.

    Only the newest ``keep`` uploads stay, so repeated uploads cannot fill a Pi's SD card.
    """
    base = root.resolve()
    folder = base / UPLOADS
    folder.mkdir(exist_ok=True)
    if folder.is_symlink() or not folder.resolve().is_relative_to(base):
        raise ApiError(500, "The uploads folder is not a folder of the data directory.", remediation=f"Remove {folder} and retry.")
    path = folder / f"{secrets.token_hex(8)}_{name}"
    with path.open("xb") as f:  # a fresh random name: never an existing file
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    kept = sorted((p for p in folder.iterdir() if p.is_file() and p != path), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in kept[max(keep - 1, 0) :]:
        old.unlink(missing_ok=True)
    return path


def _uploads_refused(base: Path) -> ApiError:
    return ApiError(
        403,
        "Uploads are disabled on this leader.",
        cause=f"{KILL_SWITCH} exists in the data directory.",
        remediation=f"Remove {base / KILL_SWITCH} on the leader to allow them.",
    )


def uploaded_archive(root: Path, location: str) -> Path:
    """``location`` as a .zip file inside ``<root>/uploads`` (links resolved); 400 for anything else."""
    uploads = (root / UPLOADS).resolve()
    remediation = "Upload the archive with POST /api/system/upload and send the save_path it answered."
    try:
        path = (uploads / location).resolve()
        exists = path.is_file()
    except (OSError, RuntimeError, ValueError) as e:  # a link loop, a null byte, a name too long
        raise ApiError(400, "Invalid release_archive_location.", cause=f"{location!r} cannot be resolved: {e}.", remediation=remediation) from None
    if path.parent != uploads:
        raise ApiError(400, "Invalid release_archive_location.", cause=f"{location!r} is not an uploaded file.", remediation=remediation)
    if path.suffix != ".zip":
        raise ApiError(400, "Invalid release_archive_location.", cause=f"{location!r} is not a .zip file.", remediation=remediation)
    if not exists:
        raise ApiError(400, "Invalid release_archive_location.", cause=f"{location!r} does not exist.", remediation=remediation)
    return path


def all_ok(envelopes: dict[str, dict[str, Any]], action: str) -> bool:
    """True when every unit succeeded; otherwise an error naming each unit that did not and why."""
    failed = {unit: e for unit, e in envelopes.items() if not e["ok"]}
    if failed:
        raise ApiError(
            502,
            f"{action} failed on {', '.join(sorted(failed))}.",
            cause="; ".join(f"{unit}: {e['error']['message']}" for unit, e in sorted(failed.items())),
            remediation="Check those units are up, then retry for them alone.",
        )
    return True


class ClusterSystemApi:
    app = Klein()

    def __init__(
        self,
        db: Database,
        tasks: TaskRegistry,
        fanout: FanOut,
        leader_hostname: str,
        data_dir: Path,
        update_timeout: float,
        uploads_kept: int = 5,
    ) -> None:
        """``update_timeout`` is the units' ``[system] update_timeout_seconds``."""
        self._db = db
        self._tasks = tasks
        self._fanout = fanout
        self._leader = leader_hostname
        self._root = data_dir
        self._update_timeout = update_timeout
        self._uploads_kept = uploads_kept

    async def _targets(self, unit: str) -> list[str]:
        return await self._db.read(cluster_targets, unit, self._leader)

    async def _fan_out(self, method: str, unit: str, path: str, timeout: float | None = None) -> Reply:
        units = await self._targets(unit)
        return run_as_task(self._tasks, lambda: self._fanout.request(method, units, path, timeout=timeout))

    @route(app, "/api/units/<unit>/system/reboot", ["POST"], returns=Accepted, status=202, dangerous=True)
    async def reboot(self, request: IRequest, unit: str) -> Reply:
        """Reboot one unit, or every unit with ``$broadcast``; each unit answers for itself (one power action per 15 s)."""
        return await self._fan_out("POST", unit, "/unit_api/system/reboot")

    @route(app, "/api/units/<unit>/system/shutdown", ["POST"], returns=Accepted, status=202, dangerous=True)
    async def shutdown(self, request: IRequest, unit: str) -> Reply:
        """Power off one unit, or every unit with ``$broadcast``."""
        return await self._fan_out("POST", unit, "/unit_api/system/shutdown")

    @route(app, "/api/units/<unit>/system/utc_clock", ["GET"], returns=Accepted, status=202, expensive=True)
    async def utc_clock(self, request: IRequest, unit: str) -> Reply:
        """Each unit's clock; each value is ``{"clock_time": "...Z"}``."""
        return await self._fan_out("GET", unit, CLOCK_PATH)

    @route(
        app,
        ("/api/units/<unit>/capabilities", "/api/workers/<unit>/capabilities"),
        ["GET"],
        returns=Accepted,
        status=202,
        expensive=True,
    )
    async def capabilities(self, request: IRequest, unit: str) -> Reply:
        """What each unit can run: its jobs and actions, their options and published settings."""
        return await self._fan_out("GET", unit, "/unit_api/capabilities", CAPABILITIES_TIMEOUT)

    @route(app, "/api/system/utc_clock", ["POST"], body=SetClock, returns=Accepted, status=202, dangerous=True)
    def set_utc_clock(self, request: IRequest, body: SetClock) -> Reply:
        """Set the leader's clock, then every worker's, to ``utc_clock_time``; the result maps each unit to its envelope."""
        clock_argument(body.utc_clock_time)  # a bad time is this request's 400, not every unit's
        sent = {"utc_clock_time": body.utc_clock_time}

        async def work() -> dict[str, dict[str, Any]]:
            leader = await self._fanout.request("POST", [self._leader], CLOCK_PATH, sent, timeout=CLOCK_TIMEOUT)
            workers = [w for w in await self._db.read(worker_names) if w != self._leader]
            others = await self._fanout.request("POST", workers, CLOCK_PATH, sent) if workers else {}
            return dict(sorted({**leader, **others}.items()))

        return run_as_task(self._tasks, work)

    @route(app, "/api/system/upload", ["POST"], returns=Uploaded, dangerous=True, upload=True)
    async def upload(self, request: IRequest) -> Uploaded:
        """Keep a file (multipart field 'file') in the leader's data directory; ``save_path`` names it for later requests.

        403 when DISALLOW_UI_UPLOADS exists in the data directory; 413 past [limits] upload_bytes.
        """
        if await deferToThread((self._root / KILL_SWITCH).exists):
            raise _uploads_refused(self._root)
        sent = await read_form_upload(
            request,
            "file",
            "No file part in the request",
            "Send the file as the form field 'file', e.g. curl -F file=@release.zip.",
        )
        path = await deferToThread(save_upload, self._root, upload_name(sent.filename), sent.content, self._uploads_kept)
        return {"message": "File successfully uploaded", "save_path": str(path)}

    @route(app, "/api/system/update_next_version", ["POST"], returns=Accepted, status=202, dangerous=True)
    async def update_next_version(self, request: IRequest) -> Reply:
        """Install the latest release on one unit or (default) every unit, the leader last; the result is true.

        The body ``{"units": ...}`` is optional. A unit that fails makes the task fail, naming it.
        """
        raw = request.content.read() if request.content is not None else b""
        body = UpdateUnits()
        if raw.strip():
            request.content.seek(0)
            body = read_body(request, UpdateUnits)
        units = await self._targets(body.units)
        timeout = self._update_timeout + UPDATE_MARGIN

        async def work() -> bool:
            path = "/unit_api/system/update"
            workers = [u for u in units if u != self._leader]
            envelopes = await self._fanout.request("POST", workers, path, {}, timeout=timeout) if workers else {}
            if self._leader in units:  # its own update last: it runs this task
                envelopes |= await self._fanout.request("POST", [self._leader], path, {}, timeout=timeout)
            return all_ok(envelopes, "The update")

        return run_as_task(self._tasks, work)

    @route(app, "/api/system/update_from_archive", ["POST"], body=ArchiveUpdate, returns=Accepted, status=202, dangerous=True)
    async def update_from_archive(self, request: IRequest, body: ArchiveUpdate) -> Reply:
        """Install an uploaded release archive on one unit or every unit, the leader last; the result is true.

        Each unit gets the zip on its /unit_api/system/update_from_archive, which checks it (its refusal
        fails the task for that unit, as any failure does, naming it and why). No signature is checked.
        """
        archive = await deferToThread(uploaded_archive, self._root, body.release_archive_location)
        units = await self._targets(body.units)
        try:
            content = await deferToThread(archive.read_bytes)
        except OSError as e:  # removed or unreadable since it was checked
            raise ApiError(
                400,
                "Invalid release_archive_location.",
                cause=f"{archive.name} cannot be read: {e.strerror or e}.",
                remediation="Upload the archive again with POST /api/system/upload and send the save_path it answered.",
            ) from None
        timeout = self._update_timeout + UPDATE_MARGIN

        async def work() -> bool:
            form, content_type = await deferToThread(form_file_body, "archive", archive.name, content)

            def post(targets: list[str]) -> Deferred[dict[str, dict[str, Any]]]:
                return self._fanout.post_bytes(targets, ARCHIVE_PATH, form, content_type, timeout=timeout)

            workers = [u for u in units if u != self._leader]
            envelopes = await post(workers) if workers else {}
            if self._leader in units:  # its own update last: it runs this task
                envelopes |= await post([self._leader])
            return all_ok(envelopes, "The update")

        return run_as_task(self._tasks, work)
