"""Release archives a unit installs from: a zip of wheels, checked and unpacked inside the data directory.

An archive holds ``.whl`` files, exactly one of them the ``[system]
update_package``'s, and optionally notes and checksums (kept, never run).
Anything else, scripts included, is refused before anything is installed:
nothing from an archive is ever run, a unit only hands its ``update`` command
the one wheel. Blocking file work: callers run it off the reactor thread.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from pathlib import Path

from . import archives
from .errors import ApiError
from .limits import Limits

STAGING_PREFIX = ".release-"
NOTES = (".txt", ".md", ".sig", ".asc")
# PEP 427: {distribution}-{version}(-{build tag})?-{python tag}-{abi tag}-{platform tag}.whl
WHEEL = re.compile(r"(?P<name>[^-/]+)-[^-/]+(-[0-9][^-/]*)?-[^-/]+-[^-/]+-[^-/]+\.whl")
REMEDIATION = "Send a zip of wheels holding exactly one wheel of the package this unit updates ([system] update_package)."


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them: runs of ``-``, ``_`` and ``.`` are one ``-``, case ignored."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _refuse(problem: str) -> ApiError:
    return ApiError(400, "Invalid release archive.", cause=problem, remediation=REMEDIATION)


def release_wheel(staging: Path, files: list[Path], package: str) -> Path:
    """The one wheel of ``package`` among the unpacked ``files``; 400 naming what else is wrong."""
    ours: list[Path] = []
    wheels = 0
    for path in files:
        name = path.relative_to(staging).as_posix()
        if path.name.endswith(".whl"):
            found = WHEEL.fullmatch(path.name)
            if found is None:
                raise _refuse(f"{name[:100]!r} is not named as a wheel is (name-version-python-abi-platform.whl).")
            wheels += 1
            if normalized(found["name"]) == normalized(package):
                ours.append(path)
        elif not path.name.lower().endswith(NOTES):
            raise _refuse(f"{name[:100]!r} is neither a wheel nor a note ({', '.join(NOTES)}); nothing else is installed or run.")
    if not wheels:
        raise _refuse("The archive holds no wheel (.whl).")
    if len(ours) != 1:
        found_names = ", ".join(sorted(p.name for p in ours)) or "none"
        raise _refuse(f"The archive holds {len(ours)} wheels of {package} ({found_names}); exactly one is needed.")
    return ours[0]


def stage_release(root: Path, upload: bytes, package: str, limits: Limits) -> tuple[Path, Path]:
    """Unpack ``upload`` into a new staging folder of ``root`` and find its wheel of ``package``: (folder, wheel).

    The archive's bounds, paths and links are checked as any zip a unit reads;
    on any refusal the folder is gone again.
    """
    staging = Path(tempfile.mkdtemp(dir=root.resolve(), prefix=STAGING_PREFIX))
    try:
        files = archives.extract(io.BytesIO(upload), staging, limits)
        return staging, release_wheel(staging, files, package)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
