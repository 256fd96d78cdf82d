#!/usr/bin/env bash
# Pack a root tree and a boot tree into an MBR disk image, without loop devices
# or mounts: partition 1 FAT32 (4 MiB in) from BOOTFS_DIR, partition 2 ext4 right
# after it from ROOTFS_DIR, each made as a file and written in with dd.
#   mkimage.sh [options] ROOTFS_DIR BOOTFS_DIR IMG
#     --label-id 0xHEX        disk identifier (default: random)
#     --boot-label L          FAT label (RASPIFIRM)     --root-label L   ext4 label (RASPIROOT)
#     --boot-type HEX         MBR type (c)              --root-type HEX  MBR type (83)
#     --boot-not-bootable     no boot flag on partition 1
#     --boot-mib N            FAT size (256)            --root-mib N     ext4 size (default: content + 20 % + 256)
#     --boot-volid HEX8       FAT volume id             --root-uuid UUID ext4 UUID (default: random)
# As root, files keep their owners (a real image); otherwise they get the caller's.
set -euo pipefail

die() { echo "mkimage.sh: error: $*" >&2; exit 1; }

label_id="" boot_label=RASPIFIRM root_label=RASPIROOT boot_type=c root_type=83 bootable=", bootable"
boot_mib=256 root_mib="" boot_volid="" root_uuid=""
while [ $# -gt 0 ]; do
    case "$1" in
        --label-id) label_id="${2:?}"; shift 2 ;;
        --boot-label) boot_label="${2:?}"; shift 2 ;;
        --root-label) root_label="${2:?}"; shift 2 ;;
        --boot-type) boot_type="${2:?}"; shift 2 ;;
        --root-type) root_type="${2:?}"; shift 2 ;;
        --boot-not-bootable) bootable=""; shift ;;
        --boot-mib) boot_mib="${2:?}"; shift 2 ;;
        --root-mib) root_mib="${2:?}"; shift 2 ;;
        --boot-volid) boot_volid="${2:?}"; shift 2 ;;
        --root-uuid) root_uuid="${2:?}"; shift 2 ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -eq 3 ] || die "usage: mkimage.sh [options] ROOTFS_DIR BOOTFS_DIR IMG"
rootfs="$1"
bootfs="$2"
img="$3"
[ -d "$rootfs" ] || die "no rootfs directory $rootfs"
[ -d "$bootfs" ] || die "no bootfs directory $bootfs"
if [ -z "$root_mib" ]; then
    root_mib=$(($(du -sm "$rootfs" | cut -f1) * 12 / 10 + 256))
fi

tmp="$(mktemp -d "$img.parts.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

volid_opt=()
[ -z "$boot_volid" ] || volid_opt=(-i "$boot_volid")
mkfs.vfat -F 32 -n "$boot_label" "${volid_opt[@]}" -C "$tmp/boot.vfat" $((boot_mib * 1024)) >/dev/null 2>"$tmp/mkfs.err" \
    || { cat "$tmp/mkfs.err" >&2; die "mkfs.vfat failed"; }
entries=()
while IFS= read -r -d '' e; do
    entries+=("$e")
done < <(find "$bootfs" -mindepth 1 -maxdepth 1 -print0)
if [ ${#entries[@]} -gt 0 ]; then
    MTOOLS_SKIP_CHECK=1 mcopy -Q -s -p -m -i "$tmp/boot.vfat" "${entries[@]}" ::/
fi

uuid_opt=()
[ -z "$root_uuid" ] || uuid_opt=(-U "$root_uuid")
mke2fs -q -F -t ext4 -L "$root_label" "${uuid_opt[@]}" -d "$rootfs" -E root_owner=0:0 \
    "$tmp/root.ext4" "${root_mib}M" >/dev/null

# 4 MiB of room before the first partition, as Raspberry Pi images have.
boot_start=8192
root_start=$((boot_start + boot_mib * 2048))
rm -f "$img"
truncate -s $(((4 + boot_mib + root_mib) * 1048576)) "$img"
{
    echo "label: dos"
    [ -z "$label_id" ] || echo "label-id: $label_id"
    echo "unit: sectors"
    echo "start=$boot_start, size=$((boot_mib * 2048)), type=$boot_type$bootable"
    echo "start=$root_start, size=$((root_mib * 2048)), type=$root_type"
} | sfdisk -q "$img"
dd if="$tmp/boot.vfat" of="$img" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$tmp/root.ext4" of="$img" bs=1M seek=$((4 + boot_mib)) conv=notrunc,sparse status=none
