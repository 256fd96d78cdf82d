"""image/mkimage.sh and image/verify-image.sh on a tiny synthetic root and boot tree."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .support import (
    IMAGE_DIR,
    SECTOR,
    extract,
    fat_at,
    partition_table,
    require_tools,
    run,
)

TOOLS = ("mkfs.vfat", "fsck.vfat", "mcopy", "mdir", "mtype", "mke2fs", "e2fsck", "debugfs", "sfdisk", "blkid", "python3")
CMDLINE = "console=ttyS1,115200 console=tty0 root=LABEL=RASPIROOT rw rootwait\n"


def write_tree(top: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text(text)


def synthetic_trees(work: Path) -> tuple[Path, Path]:
    """A root tree carrying what verify-image.sh looks for, and a Debian-style boot tree."""
    rootfs, bootfs = work / "rootfs", work / "bootfs"
    files = {
        "etc/hostname": "synthetic\n",
        "etc/machine-id": "",
        "etc/pioreactor/image-info": "version=0\nbase=synthetic\n",
        "etc/systemd/system/pioreactor.service": "[Service]\nExecStart=/bin/true\n",
        "opt/pioreactor/venv/bin/twistd": "#!/bin/sh\n",
    }
    write_tree(rootfs, files)
    (rootfs / "etc/ssh").mkdir()
    boot_files = {
        "config.txt": "arm_64bit=1\n",
        "cmdline.txt": CMDLINE,
        "vmlinuz-6.1.0-0-arm64": "kernel",
        "initrd.img-6.1.0-0-arm64": "initrd",
        "overlays/README": "a subdirectory\n",
    }
    write_tree(bootfs, boot_files)
    return rootfs, bootfs


class MkimageTests(SynchronousTestCase):
    def setUp(self) -> None:
        require_tools(self, *TOOLS)
        self.work = Path(self.mktemp())
        self.rootfs, self.bootfs = synthetic_trees(self.work)

    def assemble(self, *options: str) -> Path:
        img = self.work / "test.img"
        run(self, [IMAGE_DIR / "mkimage.sh", "--boot-mib", "64", "--root-mib", "24", *options, self.rootfs, self.bootfs, img])
        return img

    def verify(self, img: Path, *options: str, check: bool = True) -> str:
        done = run(self, [IMAGE_DIR / "verify-image.sh", *options, img], check=check)
        if not check:
            self.assertNotEqual(done.returncode, 0, done.stdout)
        return done.stdout + done.stderr

    def test_partition_table(self) -> None:
        """An MBR with the given disk id: bootable FAT32 at 4 MiB, then ext4 right after it."""
        img = self.assemble("--label-id", "0x0badcafe")
        table = partition_table(self, img)
        self.assertEqual((table["label"], table["id"]), ("dos", "0x0badcafe"))
        boot, root = table["partitions"]
        self.assertEqual((boot["start"], boot["size"], boot["type"], boot.get("bootable")), (8192, 64 * 2048, "c", True))
        self.assertEqual((root["start"], root["size"], root["type"], root.get("bootable")), (8192 + 64 * 2048, 24 * 2048, "83", None))
        self.assertEqual(img.stat().st_size, (4 + 64 + 24) * 2048 * SECTOR)

    def test_filesystems_are_clean_and_hold_the_trees(self) -> None:
        img = self.assemble()
        boot, root = partition_table(self, img)["partitions"]
        vfat, ext4 = extract(img, boot, self.work / "p1"), extract(img, root, self.work / "p2")
        run(self, ["fsck.vfat", "-n", vfat])
        run(self, ["e2fsck", "-fn", ext4])
        self.assertEqual(run(self, ["blkid", "-p", "-o", "value", "-s", "LABEL", vfat]).stdout.strip(), "RASPIFIRM")
        self.assertEqual(run(self, ["blkid", "-p", "-o", "value", "-s", "LABEL", ext4]).stdout.strip(), "RASPIROOT")
        self.assertEqual(run(self, ["mtype", "-i", fat_at(img, boot), "::/cmdline.txt"]).stdout, CMDLINE)
        self.assertEqual(run(self, ["mtype", "-i", fat_at(img, boot), "::/overlays/README"]).stdout, "a subdirectory\n")
        self.assertEqual(run(self, ["debugfs", "-R", "cat /etc/hostname", ext4]).stdout, "synthetic\n")

    def test_root_keeps_owners_as_root(self) -> None:
        """As root (a real build) files keep their owners; otherwise they get the caller's."""
        if os.geteuid() == 0:
            os.chown(self.rootfs / "etc/hostname", 1000, 1001)
        img = self.assemble()
        ext4 = extract(img, partition_table(self, img)["partitions"][1], self.work / "p2")
        stat = run(self, ["debugfs", "-R", "stat /etc/hostname", ext4]).stdout
        expected = "User:  1000   Group:  1001" if os.geteuid() == 0 else f"User: {os.geteuid():>5}   Group: {os.getegid():>5}"
        self.assertIn(expected, stat)

    def test_verify_image_accepts_it(self) -> None:
        out = self.verify(self.assemble())
        self.assertIn("cmdline.txt finds the root (LABEL=RASPIROOT)", out)
        self.assertIn("no per-device identity", out)

    def test_verify_image_refuses_baked_host_keys(self) -> None:
        (self.rootfs / "etc/ssh/ssh_host_ed25519_key").write_text("secret")
        self.assertIn("SSH host keys are baked in", self.verify(self.assemble(), check=False))

    def test_verify_image_refuses_a_root_the_cmdline_does_not_name(self) -> None:
        (self.bootfs / "cmdline.txt").write_text("root=LABEL=elsewhere rw\n")
        self.assertIn("matches neither LABEL=RASPIROOT", self.verify(self.assemble(), check=False))

    def test_verify_image_refuses_a_damaged_filesystem(self) -> None:
        img = self.assemble()
        root = partition_table(self, img)["partitions"][1]
        with img.open("r+b") as f:  # the ext4 superblock's first bytes (1 KiB into the partition)
            f.seek(root["start"] * SECTOR + 1024)
            f.write(b"\0" * 256)
        self.assertIn("e2fsck found errors", self.verify(img, "--no-content", check=False))
