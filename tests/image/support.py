"""Running image/'s scripts and the disk tools from tests, and reading images back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "image"
SECTOR = 512

# mkfs.vfat, fsck.vfat, sfdisk and mke2fs live in sbin, which a user's PATH may lack.
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": PATH, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C", **extra}


def require_tools(case: SynchronousTestCase, *tools: str) -> None:
    """Fail (not skip) when a tool is missing: scripts/bootstrap installs them all."""
    missing = [tool for tool in tools if shutil.which(tool, path=PATH) is None]
    if missing:
        case.fail(f"{', '.join(missing)} not found: run scripts/bootstrap")


def run(
    case: SynchronousTestCase, args: list[str | Path], check: bool = True, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a command (``env`` added to its environment); with ``check``, fail the test with its output when it fails."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=environment(**env), timeout=timeout, check=False)
    if check and done.returncode != 0:
        case.fail(f"{' '.join(map(str, args))} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def partition_table(case: SynchronousTestCase, img: Path) -> dict[str, Any]:
    """sfdisk's JSON description of ``img``'s partition table."""
    table: dict[str, Any] = json.loads(run(case, ["sfdisk", "-J", img]).stdout)["partitiontable"]
    return table


def extract(img: Path, partition: dict[str, Any], dest: Path) -> Path:
    """Copy one partition out of ``img`` by its offset."""
    with img.open("rb") as source, dest.open("wb") as out:
        source.seek(partition["start"] * SECTOR)
        remaining = partition["size"] * SECTOR
        while remaining:
            chunk = source.read(min(remaining, 1 << 20))
            if not chunk:
                raise ValueError(f"{img} ends inside partition {partition['node']}")
            out.write(chunk)
            remaining -= len(chunk)
    return dest


def fat_at(img: Path, partition: dict[str, Any]) -> str:
    """The mtools name of a FAT partition inside an image file."""
    return f"{img}@@{partition['start'] * SECTOR}"
