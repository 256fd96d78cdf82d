#!/usr/bin/env bash
# Unpack a two-partition MBR disk image (FAT boot + ext4 root, e.g. Raspberry Pi
# OS Lite) into a directory tree, without loop devices or mounts:
#   unpack-image.sh IMG DEST LAYOUT
# DEST gets the root filesystem with the boot partition's files in
# DEST/boot/firmware; LAYOUT gets shell assignments (disk identifier, partition
# types, labels, ids, boot size) that mkimage.sh needs to rebuild an image the
# base's fstab and cmdline.txt (PARTUUID=... or LABEL=...) still match.
# Run as root: debugfs's rdump keeps file owners only then.
set -euo pipefail

die() { echo "unpack-image.sh: error: $*" >&2; exit 1; }

[ $# -eq 3 ] || die "usage: unpack-image.sh IMG DEST LAYOUT"
img="$1"
dest="$2"
layout="$3"
[ -f "$img" ] || die "no such image: $img"
[ "$(id -u)" -eq 0 ] || echo "unpack-image.sh: warning: not root, so every file will be yours, not its owner's" >&2

tmp="$(mktemp -d "$(dirname "$dest")/unpack.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# The partition table, as "key=value" lines from sfdisk's JSON.
sfdisk -J "$img" >"$tmp/table.json"
python3 - "$tmp/table.json" >"$tmp/table.env" <<'EOF'
import json, sys

table = json.load(open(sys.argv[1]))["partitiontable"]
if table["label"] != "dos":
    sys.exit(f"not an MBR (dos) disk label: {table['label']}")
parts = table["partitions"]
if len(parts) != 2:
    sys.exit(f"expected 2 partitions (boot, root), found {len(parts)}")
print(f"LABEL_ID={table['id']}")
for name, p in zip(("BOOT", "ROOT"), parts):
    print(f"{name}_START={p['start']}")
    print(f"{name}_SIZE={p['size']}")
    print(f"{name}_TYPE={p['type']}")
    print(f"{name}_BOOTABLE={1 if p.get('bootable') else 0}")
EOF
# shellcheck disable=SC1091  # written just above
. "$tmp/table.env"
case "$BOOT_TYPE" in b|c|e|6) ;; *) die "partition 1 is type $BOOT_TYPE, not FAT" ;; esac
[ "$ROOT_TYPE" = 83 ] || die "partition 2 is type $ROOT_TYPE, not Linux"

extract() { # START SIZE FILE (sectors of 512 bytes)
    dd if="$img" of="$3" bs=4M iflag=skip_bytes,count_bytes skip=$(($1 * 512)) count=$(($2 * 512)) \
        conv=sparse status=none
}
extract "$BOOT_START" "$BOOT_SIZE" "$tmp/boot.vfat"
extract "$ROOT_START" "$ROOT_SIZE" "$tmp/root.ext4"
probe() { blkid -p -o value -s "$1" "$2" || true; }
[ "$(probe TYPE "$tmp/boot.vfat")" = vfat ] || die "partition 1 holds no FAT filesystem"
[ "$(probe TYPE "$tmp/root.ext4")" = ext4 ] || die "partition 2 holds no ext4 filesystem"

rm -rf "$dest"
mkdir -p "$dest"
debugfs -R "rdump / $dest" "$tmp/root.ext4" 2>"$tmp/rdump.err" || { cat "$tmp/rdump.err" >&2; die "debugfs rdump failed"; }

# rdump loses setuid/setgid/sticky bits (it chowns after chmod: sudo, /tmp) and
# skips fifos and device nodes: read every directory's listing and fix those up.
(cd "$dest" && find . -type d -printf '%P\n') | sed -e 's|^|ls -p "/|' -e 's|$|"|' >"$tmp/ls.cmds"
debugfs -f "$tmp/ls.cmds" "$tmp/root.ext4" 2>/dev/null | awk '
    /^debugfs: ls -p "/ { dir = substr($0, 17, length($0) - 17); next }
    /^\// {
        n = split($0, f, "/")
        mode = f[3]; name = f[6]
        if (name == "." || name == "..") next
        type = substr(mode, 1, 2); special = substr(mode, 3, 1)
        path = (dir == "/") ? "/" name : dir "/" name
        if (type == "01") print "fifo", substr(mode, 3), f[4] ":" f[5], path
        else if (type == "02" || type == "06" || type == "14") print "skip", mode, f[4] ":" f[5], path
        else if (special != "0" && type != "12") print "chmod", substr(mode, 3), f[4] ":" f[5], path
    }' >"$tmp/fixups"
skipped=()
while read -r action mode owner path; do
    case "$action" in
        chmod) chmod "$mode" "$dest$path" ;;
        fifo) mkfifo -m "$mode" "$dest$path" && chown "$owner" "$dest$path" ;;
        skip) skipped+=("$path") ;;
    esac
done <"$tmp/fixups"
if [ ${#skipped[@]} -gt 0 ]; then
    # Usually the few static nodes of /dev, which devtmpfs provides at boot anyway.
    echo "unpack-image.sh: note: ${#skipped[@]} device nodes or sockets not copied: ${skipped[*]}" >&2
fi

mkdir -p "$dest/boot/firmware"
if [ -n "$(MTOOLS_SKIP_CHECK=1 mdir -i "$tmp/boot.vfat" -b ::/ 2>/dev/null)" ]; then
    MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -n -i "$tmp/boot.vfat" '::/*' "$dest/boot/firmware/"
fi

volid="$(probe UUID "$tmp/boot.vfat")"
cat >"$layout" <<EOF
LABEL_ID=$LABEL_ID
BOOT_LABEL='$(probe LABEL "$tmp/boot.vfat")'
ROOT_LABEL='$(probe LABEL "$tmp/root.ext4")'
BOOT_TYPE=$BOOT_TYPE
ROOT_TYPE=$ROOT_TYPE
BOOT_BOOTABLE=$BOOT_BOOTABLE
BOOT_MIB=$((BOOT_SIZE / 2048))
BOOT_VOLID=${volid//-/}
ROOT_UUID=$(probe UUID "$tmp/root.ext4")
EOF
