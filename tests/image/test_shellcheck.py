"""shellcheck on every shell script of the repository: image/, systemd/ and scripts/."""

from __future__ import annotations

import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .support import REPO, require_tools, run


def shell_scripts(directory: str) -> list[Path]:
    """The repository's files (tracked or not, but not ignored: image/out is) under ``directory``
    that are shell scripts: *.sh, or a sh/bash shebang."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", directory],
        cwd=REPO, capture_output=True, check=True,
    )  # fmt: skip
    found = []
    for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        path = REPO / name
        if not path.is_file():
            continue
        with path.open("rb") as f:
            first = f.readline()
        if path.suffix == ".sh" or (first.startswith(b"#!") and first.split(b"/")[-1].split()[-1] in (b"sh", b"bash")):
            found.append(path)
    return found


class ShellcheckTests(SynchronousTestCase):
    def setUp(self) -> None:
        require_tools(self, "shellcheck")

    def check(self, directory: str, at_least: int) -> None:
        scripts = shell_scripts(directory)
        self.assertGreaterEqual(len(scripts), at_least, f"shell scripts found in {directory}/: {scripts}")
        run(self, ["shellcheck", "--external-sources", *scripts])

    def test_image(self) -> None:
        self.check("image", 6)

    def test_systemd(self) -> None:
        self.check("systemd", 1)

    def test_scripts(self) -> None:
        self.check("scripts", 3)
