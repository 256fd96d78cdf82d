"""``/unit_api/system/path/...`` and ``/unit_api/system/remove_file``: the data directory, and nothing else.

Every path is resolved (symlinks followed) and must land inside the resolved
data directory; ``..`` is refused before that, so a request never even asks
where it would lead. Files that hold secrets (``credentials.json``,
``cluster_secret``) or a live database (SQLite, by name or by its header) are
never read or removed. All file-system work runs in a thread: a slow SD card
must not stall the reactor.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import TypedDict

from attrs import frozen
from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from ..errors import ApiError
from ..security.credentials import CREDENTIALS_FILE
from ..security.signing import SECRET_FILE
from ..tasks import Accepted, TaskRegistry
from .routing import Reply, route
from .task_results import run_as_task

KILL_SWITCH = "DISALLOW_UI_FILE_SYSTEM"
SECRET_NAMES = (CREDENTIALS_FILE, SECRET_FILE)
SQLITE_SUFFIXES = (
    ".sqlite",
    ".sqlite.backup",
    ".sqlite-shm",
    ".sqlite-wal",
    ".sqlite-journal",
)
SQLITE_HEADER = b"SQLite format 3\x00"
HIDDEN = frozenset({"__pycache__"})


class Listing(TypedDict):
    """A directory one level deep, as the reference lists it."""

    current: str
    dirs: list[str]
    files: list[str]


@frozen
class RemoveFile:
    """A file to remove: relative to the data directory, or absolute inside it."""

    filepath: str


def _refused(cause: str) -> ApiError:
    return ApiError(
        403,
        "Access to this path is not allowed",
        cause=cause,
        remediation="Name a path inside the unit's data directory, without '..'.",
    )


def _not_found(path: str) -> ApiError:
    return ApiError(
        404,
        "Path not found.",
        cause=f"Nothing at {path!r} in the data directory.",
        remediation="List the parent directory to see what is there.",
    )


def is_protected(path: Path) -> bool:
    """A secret (or a temporary copy of one) or a SQLite file, by name."""
    name = path.name
    return name.startswith(SECRET_NAMES) or name.endswith(SQLITE_SUFFIXES)


def is_sqlite(path: Path) -> bool:
    """A database whatever its name: its first bytes say so."""
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def _protected_error(path: Path) -> ApiError:
    return ApiError(
        403,
        "This file is protected.",
        cause=f"{path.name} holds credentials or a database, which are never served or removed over HTTP.",
        remediation="Use the unit's shell (or pioreactor-appliance-auth for credentials).",
    )


def confine(root: Path, requested: str) -> Path:
    """The resolved path ``requested`` names inside ``root``, or an ApiError; runs in a thread."""
    if "\x00" in requested:
        raise ApiError(
            400,
            "Invalid path.",
            cause="The path contains a NUL character.",
            remediation="Send a plain path.",
        )
    if ".." in PurePosixPath(requested).parts:
        raise _refused(f"{requested!r} contains '..'.")
    base = root.resolve()
    if (base / KILL_SWITCH).exists():
        raise ApiError(
            403,
            "The file system is not available over HTTP on this unit.",
            cause=f"{KILL_SWITCH} exists in the data directory.",
            remediation=f"Remove {base / KILL_SWITCH} on the unit to allow it.",
        )
    try:
        resolved = (base / requested).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, a name too long
        raise ApiError(
            400,
            "Invalid path.",
            cause=f"{requested!r} cannot be resolved: {e}",
            remediation="Name an existing path.",
        ) from None
    if resolved != base and not resolved.is_relative_to(base):
        raise _refused(f"{requested!r} leads outside the data directory.")
    return resolved


def _stat(path: Path, requested: str) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise _not_found(requested) from None
    except OSError as e:
        raise _os_error(e, requested) from None


def _os_error(e: OSError, requested: str) -> ApiError:
    if e.errno in (errno.EACCES, errno.EPERM):
        return _refused(f"The appliance may not read {requested!r}.")
    if e.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP):
        return ApiError(
            400,
            "Invalid path.",
            cause=f"{requested!r}: {e.strerror}",
            remediation="Name an existing path.",
        )
    return ApiError(
        503,
        "The file system could not be read.",
        cause=f"{requested!r}: {e.strerror}",
        remediation="Check the unit's storage.",
    )


def _inside(root: Path, entry: Path) -> bool:
    try:
        return entry.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def _listing(base: Path, directory: Path) -> Listing:
    """One level of ``directory``: symlinks that lead out of the data directory are left out."""
    dirs, files = [], []
    for entry in os.scandir(directory):
        path = Path(entry.path)
        if entry.name in HIDDEN or (entry.is_symlink() and not _inside(base, path)):
            continue
        (dirs if entry.is_dir() else files).append(entry.name)
    return {"current": str(directory), "dirs": sorted(dirs), "files": sorted(files)}


def read_path(root: Path, requested: str, max_bytes: int) -> Listing | bytes:
    """A directory's listing or a file's bytes; runs in a thread."""
    path = confine(root, requested)
    info = _stat(path, requested)
    try:
        if stat.S_ISDIR(info.st_mode):
            return _listing(root.resolve(), path)
        if not stat.S_ISREG(info.st_mode):
            raise _refused(f"{requested!r} is not a regular file.")
        if is_protected(path) or is_sqlite(path):
            raise _protected_error(path)
        if info.st_size > max_bytes:
            raise _too_big(requested, max_bytes)
        with open(path, "rb") as f:
            content = f.read(max_bytes + 1)
    except OSError as e:
        raise _os_error(e, requested) from None
    if len(content) > max_bytes:  # it grew since the stat
        raise _too_big(requested, max_bytes)
    return content


def _too_big(requested: str, max_bytes: int) -> ApiError:
    return ApiError(
        413,
        "File too large to serve.",
        cause=f"{requested!r} is larger than {max_bytes} bytes.",
        remediation="Copy it from the unit's shell, or raise [appliance] served_file_max_bytes.",
    )


def removable(root: Path, requested: str) -> Path:
    """The file ``requested`` names, if it may be removed; runs in a thread."""
    path = confine(root, requested)
    info = _stat(path, requested)
    if stat.S_ISDIR(info.st_mode):
        raise ApiError(
            400,
            "Not a file.",
            cause=f"{requested!r} is a directory; only files are removed.",
            remediation="Remove the files inside it one by one.",
        )
    if is_protected(path) or is_sqlite(path):
        raise _protected_error(path)
    return path


def _remove(path: Path) -> bool:
    path.unlink()
    return True


class FilesApi:
    app = Klein()

    def __init__(self, data_dir: Path, tasks: TaskRegistry, max_bytes: int) -> None:
        self._root = data_dir
        self._tasks = tasks
        self._max_bytes = max_bytes

    @route(
        app,
        "/unit_api/system/path/",
        ["GET"],
        returns=Listing,
        media=("application/json", "text/plain"),
    )
    async def data_dir(self, request: IRequest) -> Reply | Listing:
        """List the data directory."""
        return await self._serve(request, "")

    @route(
        app,
        "/unit_api/system/path/<path:req_path>",
        ["GET"],
        returns=Listing,
        media=("application/json", "text/plain"),
    )
    async def path(self, request: IRequest, req_path: str) -> Reply | Listing:
        """A directory's listing (JSON) or a file's content (text/plain) inside the data directory.

        Refused with 403: '..', paths that resolve outside the data directory, credentials, the
        cluster secret and SQLite files. 413 past [appliance] served_file_max_bytes.
        """
        return await self._serve(request, req_path)

    async def _serve(self, request: IRequest, req_path: str) -> Reply | Listing:
        found = await deferToThread(read_path, self._root, req_path, self._max_bytes)
        request.setHeader(b"cache-control", b"no-store")
        if isinstance(found, bytes):
            # nosniff: a stored .html must not become a page of the UI's origin
            return Reply(
                found,
                content_type=b"text/plain",
                headers={b"x-content-type-options": b"nosniff"},
            )
        return found

    @route(
        app,
        "/unit_api/system/remove_file",
        ["PATCH", "POST"],
        body=RemoveFile,
        returns=Accepted,
        status=202,
        dangerous=True,
    )
    async def remove_file(self, request: IRequest, body: RemoveFile) -> Reply:
        """Remove one file inside the data directory (not a directory, a secret or a database).

        The checks answer at once (403, 404, 400); the removal is a task whose result is true.
        """
        path = await deferToThread(removable, self._root, body.filepath)
        return run_as_task(self._tasks, lambda: deferToThread(_remove, path))
