from __future__ import annotations

import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.atomic_files import write_atomically


class Refused(Exception):
    pass


class WriteAtomicallyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.path = self.folder / "a.ini"

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.name != "a.ini")

    def test_replaces_the_file_whole_with_the_mode_asked(self) -> None:
        self.path.write_text("old")
        write_atomically(self.path, "new", mode=0o600)
        self.assertEqual(self.path.read_text(), "new")
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        self.assertEqual(self.leftovers(), [])

    def test_a_failed_check_leaves_the_old_file_and_no_temporary(self) -> None:
        self.path.write_text("old")
        seen: list[str] = []

        def check(written: Path) -> None:
            seen.append(written.read_text())
            raise Refused()

        self.assertRaises(Refused, write_atomically, self.path, "new", check=check)
        self.assertEqual((seen, self.path.read_text(), self.leftovers()), (["new"], "old", []))

    def test_create_only_never_overwrites(self) -> None:
        write_atomically(self.path, "first", create_only=True)
        self.assertRaises(FileExistsError, write_atomically, self.path, "second", create_only=True)
        self.assertEqual((self.path.read_text(), self.leftovers()), ("first", []))
