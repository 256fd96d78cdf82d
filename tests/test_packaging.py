"""The wheel the image installs holds every module and data file of the source tree.

The image installs the appliance from a wheel, not from this checkout, so a package or a data
file missing from pyproject.toml would only show on a flashed Pi.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent


def shipped_sources() -> set[str]:
    """Every file of the package and the twistd dropin, as paths inside a wheel."""
    files = set()
    for top in ("pioreactor_appliance", "twisted/plugins"):
        for path in (ROOT / top).rglob("*"):
            generated = "__pycache__" in path.parts or path.suffix == ".pyc" or path.name == "dropin.cache"
            if path.is_file() and not generated:
                files.add(path.relative_to(ROOT).as_posix())
    return files


class WheelTests(TestCase):
    def test_the_wheel_holds_every_module_and_data_file(self) -> None:
        # From a copy of just the sources: setuptools would reuse a stale build/ in the checkout.
        source = Path(self.mktemp())
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
        for top in ("pioreactor_appliance", "twisted"):
            shutil.copytree(ROOT / top, source / top, ignore=ignore)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, source / name)
        out = Path(self.mktemp())
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
            check=True,
            capture_output=True,
        )
        (wheel,) = out.glob("pioreactor_appliance-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
        expected = shipped_sources()
        self.assertIn("pioreactor_appliance/ingest/service.py", expected)
        self.assertEqual(sorted(expected - names), [])
