"""Unpacking client archives: bounded, confined, and all-or-nothing."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.archives import extract
from pioreactor_appliance.errors import ApiError
from pioreactor_appliance.limits import Limits

LIMITS = attrs.evolve(Limits.defaults(), zip_entries=5, zip_uncompressed_bytes=100_000, zip_ratio=50)


def archive(*entries: tuple[str | zipfile.ZipInfo, bytes], compression: int = zipfile.ZIP_DEFLATED) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as z:
        for name, data in entries:
            z.writestr(name, data)
    buffer.seek(0)
    return buffer


class ExtractTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.target = Path(self.mktemp())

    def refused(self, source: io.BytesIO, status: int, mention: str) -> ApiError:
        with self.assertRaises(ApiError) as raised:
            extract(source, self.target, LIMITS)
        self.assertEqual(raised.exception.status, status)
        self.assertIn(mention, raised.exception.cause or "")
        self.assertEqual([p for p in self.target.rglob("*") if p.is_file()], [], "nothing is left behind")
        return raised.exception

    def test_a_plain_archive_unpacks(self) -> None:
        written = extract(archive(("config.ini", b"[x]\n"), ("calibrations/od.yaml", b"a: 1\n")), self.target, LIMITS)
        self.assertEqual(sorted(p.relative_to(self.target.resolve()).as_posix() for p in written), ["calibrations/od.yaml", "config.ini"])
        self.assertEqual((self.target / "calibrations/od.yaml").read_bytes(), b"a: 1\n")

    def test_too_many_entries(self) -> None:
        self.refused(archive(*((f"f{i}", b"x") for i in range(6))), 413, "6 entries")

    def test_too_much_data(self) -> None:
        noise = bytes(range(256)) * 400  # 102400 bytes, barely compressible
        self.refused(archive(("big", noise), compression=zipfile.ZIP_STORED), 413, "unpacks to 102400 bytes")

    def test_a_zip_bomb_entry(self) -> None:
        self.refused(archive(("bomb", b"\0" * 90_000)), 413, "expands more than 50 times")

    def test_paths_outside_the_target(self) -> None:
        for name in ["../evil", "/etc/evil", "a/../../evil", "a\\..\\evil"]:
            self.refused(archive((name, b"x")), 400, "outside")

    def test_links_are_refused(self) -> None:
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        self.refused(archive((link, b"/etc/passwd")), 400, "link")

    def test_a_late_bad_entry_removes_the_early_ones(self) -> None:
        self.refused(archive(("good", b"x"), ("../bad", b"y")), 400, "outside")

    def test_a_header_that_lies_about_size(self) -> None:
        buffer = archive(("small", b"a" * 1000), compression=zipfile.ZIP_STORED)
        data = bytearray(buffer.getvalue())
        # Shrink the declared size in the central directory: 1000 -> 10.
        central = data.rfind(b"PK\x01\x02")
        data[central + 24 : central + 28] = (10).to_bytes(4, "little")
        self.refused(io.BytesIO(bytes(data)), 400, "damaged")

    def test_not_a_zip(self) -> None:
        self.refused(io.BytesIO(b"this is not a zip"), 400, "not a readable zip")
