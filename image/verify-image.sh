#!/usr/bin/env bash
# Check a disk image made by mkimage.sh, from the file alone (no loops, no mounts):
# the partition table, both filesystems (fsck.vfat -n, e2fsck -fn), and the
# appliance's content (boot files, venv, units, no per-device identity).
#   verify-image.sh [--no-content] IMG
# --no-content checks only the table and the filesystems (synthetic test images).
set -euo pipefail

die() { echo "verify-image.sh: FAIL: $*" >&2; exit 1; }
ok() { echo "verify-image.sh: ok: $*"; }

content=1
if [ "${1:-}" = --no-content ]; then
    content=0
    shift
fi
[ $# -eq 1 ] || die "usage: verify-image.sh [--no-content] IMG"
img="$1"
[ -f "$img" ] || die "no such image: $img"
export MTOOLS_SKIP_CHECK=1

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

sfdisk -l "$img"
sfdisk -J "$img" >"$tmp/table.json"
python3 - "$tmp/table.json" >"$tmp/table.env" <<'EOF'
import json, sys

table = json.load(open(sys.argv[1]))["partitiontable"]
parts = table["partitions"]
if table["label"] != "dos" or len(parts) != 2:
    sys.exit("expected an MBR table with 2 partitions")
print(f"LABEL_ID={table['id']}")
for name, p in zip(("BOOT", "ROOT"), parts):
    print(f"{name}_START={p['start']} {name}_SIZE={p['size']} {name}_TYPE={p['type']}")
EOF
# shellcheck disable=SC1091  # written just above
. "$tmp/table.env"
case "$BOOT_TYPE" in b|c|e) ;; *) die "partition 1 is type $BOOT_TYPE, not FAT32" ;; esac
[ "$ROOT_TYPE" = 83 ] || die "partition 2 is type $ROOT_TYPE, not Linux"
[ "$ROOT_START" -ge $((BOOT_START + BOOT_SIZE)) ] || die "partitions overlap"
ok "MBR $LABEL_ID: FAT32 at sector $BOOT_START, ext4 at sector $ROOT_START"

extract() { # START SIZE FILE (512-byte sectors)
    dd if="$img" of="$3" bs=4M iflag=skip_bytes,count_bytes skip=$(($1 * 512)) count=$(($2 * 512)) \
        conv=sparse status=none
}
extract "$BOOT_START" "$BOOT_SIZE" "$tmp/boot.vfat"
extract "$ROOT_START" "$ROOT_SIZE" "$tmp/root.ext4"
fsck.vfat -n "$tmp/boot.vfat" || die "fsck.vfat found errors in partition 1"
e2fsck -fn "$tmp/root.ext4" || die "e2fsck found errors in partition 2"
ok "both filesystems clean"
[ "$content" = 1 ] || exit 0

# --- content -------------------------------------------------------------------
boot_has() { mdir -i "$tmp/boot.vfat" -b "::/$1" >/dev/null 2>&1; }
for f in config.txt cmdline.txt; do
    boot_has "$f" || die "boot partition has no $f"
done
boot_has 'vmlinuz-*' || boot_has 'kernel*.img' || die "boot partition has no kernel"
if boot_has 'vmlinuz-*'; then
    boot_has 'initrd.img-*' || die "boot partition has a Debian kernel but no initrd"
fi
mtype -i "$tmp/boot.vfat" ::/cmdline.txt >"$tmp/cmdline.txt"
root_label="$(blkid -p -o value -s LABEL "$tmp/root.ext4" || true)"
root_arg="$(tr ' ' '\n' <"$tmp/cmdline.txt" | sed -n 's/^root=//p')"
case "$root_arg" in
    "LABEL=$root_label") ;;
    "PARTUUID=${LABEL_ID#0x}-02") ;;
    *) die "cmdline.txt's root=$root_arg matches neither LABEL=$root_label nor PARTUUID=${LABEL_ID#0x}-02" ;;
esac
ok "boot files present; cmdline.txt finds the root ($root_arg)"

root_has() { debugfs -R "stat $1" "$tmp/root.ext4" 2>/dev/null | grep -q '^Inode:'; }
for f in /opt/pioreactor/venv/bin/twistd /etc/systemd/system/pioreactor.service /etc/pioreactor/image-info; do
    root_has "$f" || die "root filesystem has no $f"
done
if debugfs -R "ls /etc/ssh" "$tmp/root.ext4" 2>/dev/null | grep -q 'ssh_host_'; then
    die "SSH host keys are baked in (first boot makes them)"
fi
debugfs -R "dump /etc/machine-id $tmp/machine-id" "$tmp/root.ext4" 2>/dev/null
if [ ! -f "$tmp/machine-id" ] || [ -s "$tmp/machine-id" ]; then
    die "/etc/machine-id is missing or not empty"
fi
debugfs -R "dump /etc/pioreactor/image-info $tmp/image-info" "$tmp/root.ext4" 2>/dev/null
ok "appliance installed, no per-device identity: $(paste -sd' ' "$tmp/image-info")"
