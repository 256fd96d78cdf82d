"""``/unit_api/zipped_dot_pioreactor`` and ``/unit_api/import_zipped_dot_pioreactor``: the data directory as a zip.

The reference exports its credentials and live databases and unpacks any zip
into place with no bounds. Here the export leaves out secrets, SQLite files
and symlinks that leave the data directory, and stops at ``[limits]``; the
import is bounded (``archives.extract``), staged next to the data directory,
checked (its configs must parse, its metadata must name this unit), and only
then swapped in, item by item, with every move undone if one fails. The unit's
own secrets and databases are never replaced. All file work runs in a thread.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from attrs import define, field
from klein import Klein
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from .. import __version__, archives
from ..bodies import read_form_file
from ..config import ConfigError, parse_text
from ..errors import ApiError
from ..limits import Limits
from ..tasks import Accepted, TaskRegistry
from ..timestamps import iso_utc
from .files import HIDDEN, KILL_SWITCH, is_protected, is_sqlite
from .routing import Reply, route
from .task_results import run_as_task

METADATA = "pioreactor_export_metadata.json"
CONFIGS = ("config.ini", "unit_config.ini")
KEEP_IF_ABSENT = (
    "ui",
    "hardware",
)  # the reference keeps these when an archive lacks them


class Swapped(TypedDict):
    """What an import replaced, what it kept and dropped, and where the old files went."""

    replaced: list[str]
    kept: list[str]
    ignored: list[str]
    backup: str


class ImportResult(Swapped):
    """The import's task result: the swap, and when the appliance restarts to use it."""

    restart_required: bool
    restart_in_seconds: float


def _kill_switch(root: Path) -> None:
    if (root / KILL_SWITCH).exists():
        raise ApiError(
            403,
            "The file system is not available over HTTP on this unit.",
            cause=f"{KILL_SWITCH} exists in the data directory.",
            remediation=f"Remove {root / KILL_SWITCH} on the unit to allow it.",
        )


def _never_moved(path: Path) -> bool:
    """Secrets and databases stay where they are: exported never, imported never, replaced never."""
    return (
        path.name in HIDDEN
        or is_protected(path)
        or (path.is_file() and is_sqlite(path))
    )


def export_zip(root: Path, metadata: dict[str, object], limits: Limits) -> bytes:
    """The data directory deflated, minus what must not leave it; runs in a thread."""
    base = root.resolve()
    _kill_switch(base)
    return archives.pack(_exported(base), limits, extra={METADATA: json.dumps(metadata)})


def _exported(base: Path) -> Iterator[tuple[Path, str]]:
    for folder, dirs, files in os.walk(base):
        here = Path(folder)
        # directory symlinks are not followed: one inside would duplicate files, one outside would leak them
        dirs[:] = sorted(d for d in dirs if d not in HIDDEN and not (here / d).is_symlink())
        for name in [*dirs, *sorted(files)]:
            path = here / name
            try:
                real = path.resolve()
            except (OSError, RuntimeError):
                continue
            if not real.is_relative_to(base) or _never_moved(real) or _never_moved(path):
                continue
            if real.is_dir() or real.is_file():
                yield real, path.relative_to(base).as_posix()


def _invalid(problem: str, remediation: str) -> ApiError:
    return ApiError(400, "Archive refused.", cause=problem, remediation=remediation)


def _check_staged(staged: Path, unit: str) -> None:
    """The archive's configs parse and its metadata, if any, names this unit."""
    for name in CONFIGS:
        path = staged / name
        if not path.is_file():
            continue
        try:
            parse_text(path.read_text(encoding="utf-8"), name)
        except (ConfigError, UnicodeDecodeError) as e:
            raise _invalid(
                f"The archive's {name} does not parse: {e}",
                "Fix the file in the archive, or export the unit again.",
            ) from None
    meta = staged / METADATA
    if not meta.is_file():
        return  # a legacy export, as the reference accepts
    try:
        name = json.loads(meta.read_text(encoding="utf-8"))["name"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ApiError(
            400,
            "Archive metadata invalid",
            cause="The archive's metadata is not valid JSON with a 'name'.",
            remediation="Export the unit again.",
        ) from None
    if name != unit:
        raise ApiError(
            400,
            f"Archive prepared for {name}, cannot import into {unit}",
            cause=f"The archive was exported from {name!r}, not {unit!r}.",
            remediation="Import an archive this unit exported.",
        )


def _strip_protected(staged: Path) -> list[str]:
    """Drop secrets and databases the archive carries: the unit keeps its own."""
    dropped = []
    for folder, dirs, files in os.walk(staged):
        for name in files:
            path = Path(folder) / name
            if _never_moved(path):
                dropped.append(path.relative_to(staged).as_posix())
                path.unlink()
        dirs[:] = [d for d in dirs if d not in HIDDEN]
    (staged / METADATA).unlink(missing_ok=True)
    return sorted(dropped)


def stage(
    root: Path, upload: bytes, unit: str, limits: Limits
) -> tuple[Path, list[str]]:
    """Unpack and check an upload beside the data directory; the staging folder and what was dropped.

    Beside, so the later renames stay on one file system and are atomic. Runs in a thread.
    """
    base = root.resolve()
    _kill_switch(base)
    if not zipfile.is_zipfile(io.BytesIO(upload)):
        raise ApiError(
            400,
            "Uploaded file is not a valid zip archive",
            remediation="Send a .zip file exported by GET /unit_api/zipped_dot_pioreactor.",
        )
    staged = Path(tempfile.mkdtemp(dir=base.parent, prefix=f".{base.name}-import-"))
    try:
        archives.extract(io.BytesIO(upload), staged, limits)
        _check_staged(staged, unit)
        return staged, _strip_protected(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


@define
class _Swap:
    """Renames done so far, so that a failure can put every item back."""

    root: Path
    staged: Path
    backup: Path
    moves: list[tuple[Path, Path]] = field(factory=list)
    replaced: list[str] = field(factory=list)
    kept: list[str] = field(factory=list)

    def move(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        self.moves.append((source, target))

    def undo(self) -> None:
        for source, target in reversed(self.moves):
            target.rename(source)

    def run(self, relative: Path) -> None:
        current, new = self.root / relative, self.staged / relative
        names = {p.name for p in (current.iterdir() if current.is_dir() else ())}
        names |= {p.name for p in (new.iterdir() if new.is_dir() else ())}
        for name in sorted(names):
            rel = relative / name
            old, incoming = self.root / rel, self.staged / rel
            if (
                not incoming.exists()
                and not incoming.is_symlink()
                and relative == Path()
                and name in KEEP_IF_ABSENT
            ):
                continue
            if old.is_dir() and not old.is_symlink() and _holds_protected(old):
                if incoming.exists() and not incoming.is_dir():
                    raise OSError(
                        f"{rel} is a folder holding protected files here and a file in the archive"
                    )
                self.run(rel)  # replace around the protected files, never over them
                continue
            if _never_moved(old):
                self.kept.append(rel.as_posix())
                continue
            if old.exists() or old.is_symlink():
                self.move(old, self.backup / rel)
            if incoming.exists():
                self.move(incoming, old)
            self.replaced.append(rel.as_posix())


def _holds_protected(folder: Path) -> bool:
    for here, _, files in os.walk(folder):
        if any(_never_moved(Path(here) / name) for name in files):
            return True
    return False


def prune_backups(base: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` (at least one) import backups, so repeated imports cannot fill the SD card."""
    backups = sorted(base.parent.glob(f".{base.name}-backup-*"), key=lambda p: p.name)
    for old in backups[: max(0, len(backups) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


def swap_in(root: Path, staged: Path, ignored: list[str], keep: int) -> Swapped:
    """Move the current items to a backup beside the data directory and the staged ones in; all or nothing.

    Then only the newest ``keep`` backups, this one included, are left.
    """
    base = root.resolve()
    backup = Path(
        tempfile.mkdtemp(
            dir=base.parent,
            prefix=f".{base.name}-backup-{datetime.now(UTC):%Y%m%dT%H%M%S.%f}-",
        )
    )
    swap = _Swap(base, staged, backup)
    try:
        swap.run(Path())
    except BaseException:
        swap.undo()
        shutil.rmtree(staged, ignore_errors=True)
        raise
    shutil.rmtree(staged, ignore_errors=True)
    prune_backups(base, keep)
    return {
        "replaced": swap.replaced,
        "kept": swap.kept,
        "ignored": ignored,
        "backup": str(backup),
    }


class BackupsApi:
    app = Klein()

    def __init__(
        self,
        data_dir: Path,
        tasks: TaskRegistry,
        unit: str,
        leader: str,
        limits: Limits,
        restart: Callable[[str], float],
        keep_backups: int,
    ) -> None:
        """``restart(why)`` restarts the appliance soon and says in how many seconds."""
        self._root = data_dir
        self._tasks = tasks
        self._unit = unit
        self._leader = leader
        self._limits = limits
        self._restart = restart
        self._keep_backups = keep_backups
        self._importing = False

    @route(
        app,
        "/unit_api/zipped_dot_pioreactor",
        ["GET"],
        returns=str,
        media=("application/zip",),
    )
    async def export(self, request: IRequest) -> Reply:
        """The data directory as a zip, without credentials, the cluster secret, SQLite files or escaping symlinks.

        403 when DISALLOW_UI_FILE_SYSTEM exists; 413 past [limits] zip_entries / zip_uncompressed_bytes.
        """
        metadata = {
            "metadata_version": 1,
            "name": self._unit,
            "leader_hostname": self._leader or "unknown",
            "is_leader": self._leader == self._unit,
            "app_version": __version__,
            "exported_at_utc": iso_utc(time.time()),
        }
        try:
            archive = await deferToThread(
                export_zip, self._root, metadata, self._limits
            )
        except archives.TooLarge as e:
            raise ApiError(
                413,
                "The data directory is too large to zip.",
                cause=f"It holds {e}.",
                remediation="Remove files no longer needed, or raise [limits] zip_entries / zip_uncompressed_bytes.",
            ) from None
        request.setHeader(b"cache-control", b"no-store")
        disposition = f'attachment; filename="{self._unit}_dot_pioreactor.zip"'.encode()
        return Reply(
            archive,
            content_type=b"application/zip",
            headers={b"content-disposition": disposition},
        )

    @route(
        app,
        "/unit_api/import_zipped_dot_pioreactor",
        ["POST"],
        returns=Accepted,
        status=202,
        dangerous=True,
        upload=True,
    )
    async def import_(self, request: IRequest) -> Reply:
        """Replace the data directory with an exported zip (multipart field 'archive').

        Checked before anything moves: the zip's bounds, paths and links, that config.ini and
        unit_config.ini parse, and that its metadata names this unit (400, 413). Then a task swaps it
        in; its result lists what was replaced, and the appliance restarts itself shortly after to
        use it (not the Pi). The unit's credentials, cluster secret and databases are kept.
        """
        upload = await read_form_file(
            request,
            "archive",
            "No archive uploaded",
            "Send the zip as the form field 'archive', e.g. curl -F archive=@unit.zip.",
        )
        if self._importing:
            raise ApiError(
                409,
                "An import is already running.",
                cause="Another archive is being staged or swapped in on this unit.",
                remediation="Wait for its task to finish, then retry.",
            )
        self._importing = True
        try:
            staged, ignored = await deferToThread(
                stage, self._root, upload, self._unit, self._limits
            )
        except BaseException:
            self._importing = False
            raise

        def work() -> object:
            done = deferToThread(swap_in, self._root, staged, ignored, self._keep_backups)
            return done.addCallback(self._restart_after).addBoth(self._finished)

        return run_as_task(self._tasks, work)

    def _restart_after(self, swapped: Swapped) -> ImportResult:
        delay = self._restart("to use the imported data directory")
        return {**swapped, "restart_required": True, "restart_in_seconds": delay}

    def _finished(self, result: object) -> object:
        self._importing = False
        return result
