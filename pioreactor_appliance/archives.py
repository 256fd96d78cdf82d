"""Zips within ``[limits]``: packing files for a download, and unpacking a zip a client sent inside one directory.

The reference unpacks uploaded archives with no bound on entries or size, so a
small zip could fill a Pi's SD card. Here an archive is refused before any
byte is written if it has too many entries, declares too much data, holds an
entry compressed suspiciously well, or names a path outside the target or a
link. Headers can lie, but ``zipfile`` never inflates an entry past the size
its header declares and checks its CRC, so a lying entry fails as damaged.
This is blocking file work: callers run it off the reactor thread.
"""

from __future__ import annotations

import io
import shutil
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import ApiError
from .limits import Limits

CHUNK = 1 << 16


class TooLarge(Exception):
    """More entries, or bytes, than ``[limits]`` lets a zip hold; the message says which bound."""


def pack(members: Iterable[tuple[Path, str]], limits: Limits, extra: dict[str, str] | None = None) -> bytes:
    """Deflate each ``(file or directory, name in the zip)`` into memory, stopping with TooLarge
    past ``zip_entries`` or ``zip_uncompressed_bytes``; ``extra`` adds small generated files."""
    buffer = io.BytesIO()
    entries = total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in members:
            entries += 1
            total += path.stat().st_size if path.is_file() else 0
            if entries > limits.zip_entries or total > limits.zip_uncompressed_bytes:
                raise TooLarge(f"more than {limits.zip_entries} entries or {limits.zip_uncompressed_bytes} bytes")
            archive.write(path, name)
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return buffer.getvalue()


def _refuse(status: int, problem: str, remediation: str) -> ApiError:
    return ApiError(status, "Archive refused.", cause=problem, remediation=remediation)


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = PurePosixPath(info.filename)
    mode = info.external_attr >> 16
    if name.is_absolute() or ".." in name.parts or "\\" in info.filename or info.filename.startswith("/"):
        raise _refuse(400, f"The entry {info.filename[:100]!r} points outside the archive's folder.", "Build the archive with relative paths only.")
    kind = stat.S_IFMT(mode)  # zero when the archiver recorded no Unix file type
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise _refuse(400, f"The entry {info.filename[:100]!r} is a link or a special file.", "Archive regular files and folders only.")
    return name


def check(archive: zipfile.ZipFile, limits: Limits) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every entry and its safe relative path, or an ApiError saying which limit it breaks."""
    infos = archive.infolist()
    if len(infos) > limits.zip_entries:
        raise _refuse(413, f"The archive has {len(infos)} entries; this unit takes at most {limits.zip_entries}.", "Send fewer files, or raise [limits] zip_entries.")
    total = sum(info.file_size for info in infos)
    if total > limits.zip_uncompressed_bytes:
        raise _refuse(
            413,
            f"The archive unpacks to {total} bytes; this unit takes at most {limits.zip_uncompressed_bytes}.",
            "Send less data, or raise [limits] zip_uncompressed_bytes.",
        )
    entries = []
    for info in infos:
        if info.file_size > max(info.compress_size, 1) * limits.zip_ratio:
            raise _refuse(
                413,
                f"The entry {info.filename[:100]!r} expands more than {limits.zip_ratio} times, as a zip bomb does.",
                "Send the file uncompressed or less compressible, or raise [limits] zip_ratio.",
            )
        entries.append((info, _member_path(info)))
    return entries


def extract(source: str | Path | IO[bytes], target: Path, limits: Limits) -> list[Path]:
    """Unpack into ``target`` (created if needed); the files written, or an ApiError and nothing left behind."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as e:
        raise _refuse(400, f"The upload is not a readable zip archive ({e}).", "Send a .zip file.") from None
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    written: list[Path] = []
    with archive:
        try:
            for info, name in check(archive, limits):
                destination = (root / name).resolve()
                if not destination.is_relative_to(root):
                    raise _refuse(400, f"The entry {info.filename[:100]!r} resolves outside the target folder.", "Build the archive with relative paths only.")
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                written.append(destination)
                with archive.open(info) as member, destination.open("wb") as sink:
                    shutil.copyfileobj(member, sink, CHUNK)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            _remove(written)
            raise _refuse(400, f"The archive is damaged ({e}).", "Build the archive again and resend it.") from None
        except ApiError:
            _remove(written)
            raise
    return written


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def nest(archives: dict[str, bytes], inner_name: str, extra: dict[str, str] | None = None) -> bytes:
    """Each ``{unit: bytes}`` stored as it came under ``<unit>/<inner_name>``: units' zips, or their files.

    Stored, not deflated again (zips do not shrink, config files are small), and
    each inner zip stays exactly what that unit exported, so it can be imported
    back as it is.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for unit, data in sorted(archives.items()):
            archive.writestr(f"{unit}/{inner_name}", data)
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return buffer.getvalue()


def merge_prefixed(archives: dict[str, bytes], limits: Limits) -> tuple[bytes, dict[str, str]]:
    """One zip of every ``{unit: zip}``'s entries under ``<unit>/``, each zip checked as any zip read here.

    A unit whose zip is unreadable, breaks a bound, or would take the whole past
    ``zip_entries`` / ``zip_uncompressed_bytes`` is left out whole: the second
    value says why, unit by unit.
    """
    buffer = io.BytesIO()
    refused: dict[str, str] = {}
    entries = total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as merged:
        for unit, data in sorted(archives.items()):
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as source:
                    members = check(source, limits)
                    size = sum(info.file_size for info, _ in members)
                    if entries + len(members) > limits.zip_entries or total + size > limits.zip_uncompressed_bytes:
                        raise TooLarge(f"more than {limits.zip_entries} entries or {limits.zip_uncompressed_bytes} bytes in all")
                    files = [(f"{unit}/{name}", source.read(info)) for info, name in members if not info.is_dir()]
            except ApiError as e:
                refused[unit] = str(e.body()["cause"])
                continue
            except TooLarge as e:
                refused[unit] = f"Its archive would make the merged one hold {e}."
                continue
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                refused[unit] = f"Its archive is not a readable zip ({e})."
                continue
            entries += len(members)
            total += size
            for name, content in files:
                merged.writestr(name, content)
    return buffer.getvalue(), refused


def add_file(data: bytes, name: str, text: str) -> bytes:
    """``data`` (a zip) with one more small file."""
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, text)
    return buffer.getvalue()
