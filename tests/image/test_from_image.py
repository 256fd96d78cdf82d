"""build.sh's from-image unpack and its repack (assemble), on a synthetic Raspberry-Pi-OS-shaped image."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .support import IMAGE_DIR, extract, fat_at, partition_table, require_tools, run

TOOLS = ("mkfs.vfat", "mcopy", "mdir", "mtype", "mke2fs", "e2fsck", "debugfs", "sfdisk", "blkid", "xz", "python3")
# Raspberry Pi OS boots its root by PARTUUID (the disk id, partition 2), and names its filesystems bootfs and rootfs.
LABEL_ID = "0x5e3da63a"
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=5e3da63a-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
VOLID = "4A7B-1C2D"
ROOT_UUID = "6f1c2d3e-0a1b-4c5d-8e9f-a0b1c2d3e4f5"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FromImageTests(SynchronousTestCase):
    def setUp(self) -> None:
        require_tools(self, *TOOLS)
        self.work = Path(self.mktemp())
        self.out = self.work / "out"
        self.base = self.raspberry_pi_os_like()

    def raspberry_pi_os_like(self) -> Path:
        """A small .img.xz laid out as Raspberry Pi OS Lite is, with the file kinds an unpack can lose."""
        rootfs, bootfs = self.work / "rootfs", self.work / "bootfs"
        (rootfs / "etc").mkdir(parents=True)
        (rootfs / "etc/fstab").write_text("PARTUUID=5e3da63a-01 /boot/firmware vfat defaults 0 2\nPARTUUID=5e3da63a-02 / ext4 defaults 0 1\n")
        (rootfs / "usr/bin").mkdir(parents=True)
        (rootfs / "usr/bin/sudo").write_text("#!/bin/sh\n")
        (rootfs / "usr/bin/sudo").chmod(0o4755)
        (rootfs / "tmp").mkdir()
        (rootfs / "tmp").chmod(0o1777)
        (rootfs / "etc/alternatives").symlink_to("../usr/bin/sudo")
        os.mkfifo(rootfs / "etc/initctl", 0o600)
        (rootfs / "home/pi").mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(rootfs / "home/pi", 1000, 1000)
        (bootfs / "overlays").mkdir(parents=True)
        (bootfs / "cmdline.txt").write_text(CMDLINE)
        (bootfs / "config.txt").write_text("dtparam=i2c_arm=on\n")
        (bootfs / "kernel8.img").write_text("kernel")
        (bootfs / "overlays/pwm-2chan.dtbo").write_text("overlay")
        img = self.work / "raspios-lite-arm64.img"
        run(
            self,
            [
                IMAGE_DIR / "mkimage.sh", "--label-id", LABEL_ID, "--boot-label", "bootfs", "--root-label", "rootfs",
                "--boot-not-bootable", "--boot-mib", "64", "--root-mib", "24", "--boot-volid", VOLID.replace("-", ""),
                "--root-uuid", ROOT_UUID, rootfs, bootfs, img,
            ],
        )  # fmt: skip
        run(self, ["xz", "-0", "-T2", img])
        return img.with_name(img.name + ".xz")

    def build(self, *args: str, check: bool = True) -> str:
        done = run(self, [IMAGE_DIR / "build.sh", *args], check=check, OUT=str(self.out))
        if not check:
            self.assertNotEqual(done.returncode, 0, done.stderr)
        return done.stderr

    def unpack(self) -> Path:
        self.build("--base-image", str(self.base), "--sha256", sha256(self.base), "from-image")
        return self.out / "from-image"

    def test_unpack_keeps_files_modes_and_owners(self) -> None:
        tree = self.unpack() / "base"
        self.assertEqual((tree / "etc/fstab").read_text().count("PARTUUID=5e3da63a"), 2)
        self.assertEqual(stat.S_IMODE((tree / "usr/bin/sudo").stat().st_mode), 0o4755)
        self.assertEqual(stat.S_IMODE((tree / "tmp").stat().st_mode), 0o1777)
        self.assertEqual(os.readlink(tree / "etc/alternatives"), "../usr/bin/sudo")
        self.assertTrue(stat.S_ISFIFO((tree / "etc/initctl").lstat().st_mode))
        owner = 1000 if os.geteuid() == 0 else os.geteuid()
        self.assertEqual((tree / "home/pi").stat().st_uid, owner)
        self.assertEqual((tree / "boot/firmware/cmdline.txt").read_text(), CMDLINE)
        self.assertEqual((tree / "boot/firmware/overlays/pwm-2chan.dtbo").read_text(), "overlay")

    def test_repack_keeps_disk_id_types_labels_and_ids(self) -> None:
        """What the base's fstab and cmdline.txt name (PARTUUID, labels) survives unpack, change and assemble."""
        flavor = self.unpack()
        run(self, ["cp", "-a", flavor / "base", flavor / "rootfs"])  # what the customize stage starts from
        (flavor / "rootfs/etc/pioreactor").mkdir()
        (flavor / "rootfs/etc/pioreactor/image-info").write_text("base=raspios\n")
        self.build("--flavor", "from-image", "assemble")
        img = self.out / "pioreactor-from-image.img"
        table = partition_table(self, img)
        boot, root = table["partitions"]
        self.assertEqual(table["id"], LABEL_ID)
        self.assertEqual((boot["type"], boot.get("bootable"), boot["size"]), ("c", None, 64 * 2048))
        self.assertEqual(root["type"], "83")
        vfat, ext4 = extract(img, boot, self.work / "p1"), extract(img, root, self.work / "p2")

        def blkid(tag: str, device: Path) -> str:
            return run(self, ["blkid", "-p", "-o", "value", "-s", tag, device]).stdout.strip()

        self.assertEqual((blkid("LABEL", vfat), blkid("UUID", vfat)), ("bootfs", VOLID))
        self.assertEqual((blkid("LABEL", ext4), blkid("UUID", ext4)), ("rootfs", ROOT_UUID))
        run(self, [IMAGE_DIR / "verify-image.sh", "--no-content", img])
        self.assertEqual(run(self, ["mtype", "-i", fat_at(img, boot), "::/cmdline.txt"]).stdout, CMDLINE)
        self.assertEqual(run(self, ["debugfs", "-R", "cat /etc/pioreactor/image-info", ext4]).stdout, "base=raspios\n")
        self.assertIn("Mode:  04755", run(self, ["debugfs", "-R", "stat /usr/bin/sudo", ext4]).stdout)

    def test_refuses_a_wrong_checksum(self) -> None:
        err = self.build("--base-image", str(self.base), "--sha256", "0" * 64, "from-image", check=False)
        self.assertIn("sha256 mismatch", err)
        self.assertFalse((self.out / "from-image/base").exists())

    def test_refuses_without_a_checksum(self) -> None:
        self.assertIn("refusing a base image without --sha256", self.build("--base-image", str(self.base), "from-image", check=False))
