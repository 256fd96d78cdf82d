"""Unpacking client archives: bounded, confined, and all-or-nothing."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

from pioreactor_appliance.archives import add_file, extract, merge_prefixed, nest
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


class ClusterArchiveTests(SynchronousTestCase):
    """The leader's zips of the units' zips: nested as they came, or merged under <unit>/ after the checks."""

    def test_nest_stores_each_units_zip_as_it_came(self) -> None:
        one, two = archive(("a.txt", b"1")).getvalue(), archive(("b.txt", b"2")).getvalue()
        with zipfile.ZipFile(io.BytesIO(nest({"pio2": two, "pio1": one}, "dot_pioreactor.zip", {"failed_units.json": "{}"}))) as z:
            self.assertEqual(z.namelist(), ["pio1/dot_pioreactor.zip", "pio2/dot_pioreactor.zip", "failed_units.json"])
            self.assertEqual((z.read("pio1/dot_pioreactor.zip"), z.read("pio2/dot_pioreactor.zip")), (one, two))
            self.assertEqual(z.getinfo("pio1/dot_pioreactor.zip").compress_type, zipfile.ZIP_STORED)

    def test_merge_prefixes_and_leaves_out_a_unit_whose_zip_fails_a_check(self) -> None:
        good = archive(("od/cal.yaml", b"x: 1"), ("od/", b"")).getvalue()
        escaping = archive(("../../etc/passwd", b"root")).getvalue()
        merged, refused = merge_prefixed({"pio1": good, "pio2": escaping, "pio3": b"not a zip"}, LIMITS)
        with zipfile.ZipFile(io.BytesIO(merged)) as z:
            self.assertEqual({n: z.read(n) for n in z.namelist()}, {"pio1/od/cal.yaml": b"x: 1"})
        self.assertEqual(sorted(refused), ["pio2", "pio3"])
        self.assertIn("outside", refused["pio2"])
        self.assertIn("not a readable zip", refused["pio3"])

    def test_merge_keeps_the_whole_within_the_bounds(self) -> None:
        three = archive(*((f"d/{i}.yaml", b"x") for i in range(3))).getvalue()
        merged, refused = merge_prefixed({"pio1": three, "pio2": three}, LIMITS)  # 6 entries > 5
        with zipfile.ZipFile(io.BytesIO(merged)) as z:
            self.assertEqual(sorted(z.namelist()), [f"pio1/d/{i}.yaml" for i in range(3)])
        self.assertEqual(list(refused), ["pio2"])
        self.assertIn("5 entries", refused["pio2"])

    def test_add_file(self) -> None:
        with zipfile.ZipFile(io.BytesIO(add_file(archive(("a", b"1")).getvalue(), "note.txt", "hi"))) as z:
            self.assertEqual({n: z.read(n) for n in z.namelist()}, {"a": b"1", "note.txt": b"hi"})
