"""Files that are always either the old version or the whole new one, even across a power cut.

Lab Pis lose power; a half-written calibration, config or cache would stop a
unit from starting. Everything blocks, so callers run it off the reactor thread.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(
    path: Path,
    text: str,
    *,
    check: Callable[[Path], None] | None = None,
    create_only: bool = False,
    mode: int = 0o644,
) -> None:
    """Write ``text`` beside ``path``, sync it, then rename it over ``path`` and sync the directory.

    ``check`` is called on the written temporary file before it replaces
    anything (what is on disk is what was checked); if it raises, nothing
    changes. With ``create_only``, an existing ``path`` raises FileExistsError
    (a hard link, so two writers cannot both create it).
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(temporary)
        if create_only:
            os.link(temporary, path)
        else:
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
