#!/usr/bin/env bash
# Build the Pioreactor appliance's SD-card image in stages; see image/README.md.
#
#   image/build.sh [options] STAGE...
#   stages: deps wheels rootfs base-image from-image customize assemble verify boottest release
#   options:
#     --base-image PATH_OR_URL  a Raspberry Pi OS Lite arm64 .img or .img.xz (for from-image)
#     --sha256 HEX              its checksum (required with --base-image)
#     --flavor debian|from-image  which tree the later stages work on (default debian;
#                               from-image when that stage or --base-image is given)
#   environment: OUT (default image/out), SUITE (bookworm), MIRROR and SECURITY_MIRROR
#   (default: the host's apt sources), PYTHON (the host interpreter for the wheelhouse).
#
# Everything runs from the last line, `main "$@"; exit`, which bash has read whole
# before it starts: editing this file cannot upset a running build.
set -euo pipefail

main() {
    HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    REPO="$(dirname "$HERE")"
    OUT="${OUT:-$HERE/out}"
    SUITE="${SUITE:-bookworm}"
    FLAVOR=debian
    BASE_IMAGE=""
    BASE_SHA256=""
    MOUNTED=()
    RESOLV_ROOT=""
    SPLIT_TREE=""

    local stages=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --base-image) BASE_IMAGE="${2:?}"; FLAVOR=from-image; shift 2 ;;
            --sha256) BASE_SHA256="${2:?}"; shift 2 ;;
            --flavor) FLAVOR="${2:?}"; shift 2 ;;
            -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) stages+=("$1"); shift ;;
        esac
    done
    [ ${#stages[@]} -gt 0 ] || die "no stage given (try --help)"
    case "$FLAVOR" in debian|from-image) ;; *) die "--flavor must be debian or from-image" ;; esac
    local s
    for s in "${stages[@]}"; do
        [ "$s" = from-image ] && FLAVOR=from-image
        case "$s" in
            deps|wheels|rootfs|base-image|from-image|customize|assemble|verify|boottest|release) ;;
            *) die "unknown stage $s" ;;
        esac
    done
    FDIR="$OUT/$FLAVOR"
    IMG="$OUT/pioreactor-$FLAVOR.img"
    trap cleanup EXIT
    for s in "${stages[@]}"; do
        local t0=$SECONDS
        log "stage $s"
        run_stage "$s"
        log "stage $s done in $((SECONDS - t0)) s"
    done
}

run_stage() {
    case "$1" in
        deps) stage_deps ;;
        wheels) stage_wheels ;;
        rootfs) stage_rootfs ;;
        base-image) stage_base_image ;;
        from-image) stage_from_image ;;
        customize) stage_customize ;;
        assemble) stage_assemble ;;
        verify) stage_verify ;;
        boottest) stage_boottest ;;
        release) stage_release ;;
    esac
}

log() { printf '[%s] build.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

# Undo chroot mounts and put moved files back, whatever happened.
cleanup() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTED[i]}" 2>/dev/null || true
    done
    MOUNTED=()
    if [ -n "$RESOLV_ROOT" ]; then
        rm -f "$RESOLV_ROOT/etc/resolv.conf"
        if [ -e "$RESOLV_ROOT/etc/resolv.conf.pioreactor-build" ] || [ -L "$RESOLV_ROOT/etc/resolv.conf.pioreactor-build" ]; then
            mv "$RESOLV_ROOT/etc/resolv.conf.pioreactor-build" "$RESOLV_ROOT/etc/resolv.conf"
        fi
        RESOLV_ROOT=""
    fi
    if [ -n "$SPLIT_TREE" ]; then
        rmdir "$SPLIT_TREE/boot/firmware" 2>/dev/null || true
        mv "$FDIR/bootfs" "$SPLIT_TREE/boot/firmware"
        SPLIT_TREE=""
    fi
}

# --- helpers ------------------------------------------------------------------

need_root() { [ "$(id -u)" -eq 0 ] || die "stage needs root (chroot, real file owners)"; }

# The arm64 chroot with /proc, /sys and /dev; a clean environment inside.
chroot_up() {
    local r="$1" m
    for m in proc sys dev dev/pts; do
        mkdir -p "$r/$m"
    done
    mount -t proc proc "$r/proc" && MOUNTED+=("$r/proc")
    mount -t sysfs sysfs "$r/sys" && MOUNTED+=("$r/sys")
    mount --bind /dev "$r/dev" && MOUNTED+=("$r/dev")
    mount --bind /dev/pts "$r/dev/pts" && MOUNTED+=("$r/dev/pts")
}

in_chroot() {
    local r="$1"
    shift
    chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

python_host() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif [ -x "$REPO/.venv/bin/python" ]; then
        echo "$REPO/.venv/bin/python"
    else
        echo python3
    fi
}

# Mirror URIs from the host's apt sources (deb822 and one-line formats).
host_uris() {
    shopt -s nullglob
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }' "$f"
    done
    shopt -u nullglob
}

image_version() { sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/pioreactor_appliance/__init__.py"; }

git_commit() {
    local c
    c="$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    if [ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]; then
        c="$c-dirty"
    fi
    echo "$c"
}

# --- stages -------------------------------------------------------------------

stage_deps() {
    local want=(mmdebstrap qemu-user-static binfmt-support arch-test dosfstools mtools fdisk e2fsprogs
        qemu-system-arm qemu-utils ipxe-qemu curl openssh-client xz-utils)
    local missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        need_root
        log "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    arch-test arm64 >/dev/null 2>&1 || enable_binfmt
}

# Where systemd is not PID 1 (containers), nothing mounts binfmt_misc or registers qemu.
enable_binfmt() {
    need_root
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64
    arch-test arm64 >/dev/null || die "arm64 binaries still do not run through qemu-user"
    log "registered qemu-aarch64 with binfmt_misc"
}

# The project's wheel and its runtime dependencies for CPython 3.11 on aarch64.
stage_wheels() {
    local py w="$OUT/wheels" try pkg err
    py="$(python_host)"
    rm -rf "$w"
    mkdir -p "$w"
    "$py" -m pip wheel -q --no-deps -w "$w" "$REPO"
    local own
    own="$(find "$w" -name 'pioreactor_appliance-*.whl' | head -n 1)"
    [ -n "$own" ] || die "pip wheel made no pioreactor_appliance wheel"
    check_wheel_packages "$py" "$own"
    err="$(mktemp)"
    for try in 1 2 3 4 5 6; do
        if "$py" -m pip download -q --dest "$w" --find-links "$w" --only-binary=:all: \
            --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
            --platform manylinux_2_28_aarch64 --platform any --python-version 3.11 \
            --implementation cp --abi cp311 --abi abi3 --abi none "$own" 2>"$err"; then
            rm -f "$err"
            log "wheelhouse: $(find "$w" -name '*.whl' | wc -l) wheels, $(du -sh "$w" | cut -f1)"
            return 0
        fi
        pkg="$(sed -n 's/.*No matching distribution found for \([A-Za-z0-9._-]*\).*/\1/p' "$err" | head -n 1)"
        [ -n "$pkg" ] || { cat "$err" >&2; die "pip download failed (try $try)"; }
        build_pure_wheel "$py" "$pkg" "$w"
    done
    die "too many dependencies without a wheel"
}

# A dependency published only as an sdist is fine when it is pure Python.
build_pure_wheel() {
    local py="$1" pkg="$2" w="$3" tmp built
    tmp="$(mktemp -d)"
    "$py" -m pip wheel -q --no-deps --no-binary "$pkg" -w "$tmp" "$pkg" \
        || die "$pkg: no aarch64 wheel on PyPI and its sdist does not build"
    built="$(find "$tmp" -name '*.whl' | head -n 1)"
    case "$built" in
        *-py3-none-any.whl|*-py2.py3-none-any.whl) mv "$built" "$w/" ;;
        *) die "$pkg has no aarch64 wheel (its sdist builds $(basename "$built"), not pure Python)" ;;
    esac
    rm -rf "$tmp"
    log "built pure-Python wheel for $pkg"
}

# Every package directory of the source tree must be in the wheel.
check_wheel_packages() {
    local py="$1" whl="$2" listing d missing=()
    listing="$("$py" -m zipfile -l "$whl")"
    while IFS= read -r d; do
        grep -q "^$d/" <<<"$listing" || missing+=("$d")
    done < <(cd "$REPO" && find pioreactor_appliance -name '*.py' ! -path '*/__pycache__/*' -printf '%h\n' | sort -u)
    [ ${#missing[@]} -eq 0 ] || die "the wheel lacks ${missing[*]} (pyproject.toml's package list)"
}

# Debian arm64 base tree with the kernel and Raspberry Pi boot files.
stage_rootfs() {
    need_root
    [ "$FLAVOR" = debian ] || die "rootfs builds the Debian flavor's base"
    local mirror security base="$FDIR/base" pkgs
    mirror="${MIRROR:-$(host_uris | grep -v security | head -n 1)}"
    security="${SECURITY_MIRROR:-$(host_uris | grep security | head -n 1 || true)}"
    [ -n "$mirror" ] || die "no Debian mirror in the host's apt sources; set MIRROR"
    pkgs="$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/packages-debian.txt" | paste -sd, -)"
    local sources=("deb $mirror $SUITE main non-free-firmware" "deb $mirror $SUITE-updates main non-free-firmware")
    [ -n "$security" ] && sources+=("deb $security $SUITE-security main non-free-firmware")
    mkdir -p "$FDIR"
    rm -rf "$base.tmp"
    mmdebstrap --mode=root --arch=arm64 --variant=minbase --include="$pkgs" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --essential-hook="$HERE/debian/defer-initramfs.sh" \
        "$SUITE" "$base.tmp" "${sources[@]}"
    debian_finish "$base.tmp"
    rm -rf "$base"
    mv "$base.tmp" "$base"
    cat >"$FDIR/layout.env" <<EOF
BASE_NAME='debian-$SUITE-arm64'
LABEL_ID=0x$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
BOOT_LABEL=RASPIFIRM
ROOT_LABEL=RASPIROOT
BOOT_TYPE=c
ROOT_TYPE=83
BOOT_BOOTABLE=1
BOOT_MIB=256
BOOT_VOLID=
ROOT_UUID=
EOF
    log "Debian base: $(du -sh "$base" | cut -f1)"
}

# The Debian-only part: base config, then the one initramfs build.
debian_finish() {
    local r="$1" d="$HERE/debian" kver
    install -m 0644 -o 0 -g 0 "$d/raspi-firmware" "$r/etc/default/raspi-firmware"
    install -m 0644 -o 0 -g 0 "$d/fstab" "$r/etc/fstab"
    install -d -m 0755 "$r/etc/systemd/network" "$r/etc/systemd/system/systemd-networkd-wait-online.service.d"
    install -m 0644 -o 0 -g 0 "$d/10-wired.network" "$d/20-wireless.network" "$r/etc/systemd/network/"
    install -m 0644 -o 0 -g 0 "$d/wait-online.conf" \
        "$r/etc/systemd/system/systemd-networkd-wait-online.service.d/pioreactor.conf"
    # mmdebstrap copied the build host's name and resolver in; neither belongs on a Pi.
    echo pioreactor >"$r/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tpioreactor\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
    ln -sfn ../run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
    chroot_up "$r"
    in_chroot "$r" systemctl enable -q systemd-networkd systemd-resolved chrony
    kver="$(ls "$r/lib/modules")"
    [ "$(wc -w <<<"$kver")" -eq 1 ] || die "expected one kernel in the tree, found: $kver"
    rm -f "$r/usr/sbin/update-initramfs"
    in_chroot "$r" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
    log "update-initramfs for $kver (about 8 min under qemu-user)"
    in_chroot "$r" update-initramfs -c -k "$kver"
    in_chroot "$r" apt-get clean
    cleanup
    rm -rf "$r"/var/lib/apt/lists/*
    local f
    for f in config.txt cmdline.txt "vmlinuz-$kver" "initrd.img-$kver" bcm2711-rpi-4-b.dtb; do
        [ -f "$r/boot/firmware/$f" ] || die "raspi-firmware's hooks left no /boot/firmware/$f"
    done
    grep -q 'root=LABEL=RASPIROOT' "$r/boot/firmware/cmdline.txt" || die "cmdline.txt does not boot LABEL=RASPIROOT"
}

# The uncustomized Debian base as an image: the stand-in for a Raspberry Pi OS image.
stage_base_image() {
    [ "$FLAVOR" = debian ] || die "base-image is for the Debian flavor"
    assemble_tree "$FDIR/base" "$OUT/debian-base.img"
}

# A Raspberry Pi OS Lite (or any two-partition FAT+ext4 MBR) image, unpacked without loops.
stage_from_image() {
    [ -n "$BASE_IMAGE" ] || die "from-image needs --base-image PATH_OR_URL"
    [ -n "$BASE_SHA256" ] || die "refusing a base image without --sha256"
    mkdir -p "$FDIR"
    local src="$BASE_IMAGE" raw="$FDIR/base.img"
    case "$BASE_IMAGE" in
        http://*|https://*|ftp://*)
            src="$FDIR/$(basename "${BASE_IMAGE%%\?*}")"
            curl -fL --retry 3 -o "$src" "$BASE_IMAGE"
            ;;
    esac
    [ -f "$src" ] || die "no such base image: $src"
    local got
    got="$(sha256sum "$src" | cut -d' ' -f1)"
    [ "$got" = "${BASE_SHA256,,}" ] || die "sha256 mismatch for $src: got $got"
    case "$src" in
        *.xz) xz -dc "$src" | dd of="$raw" bs=4M conv=sparse status=none ;;
        *) raw="$src" ;;
    esac
    "$HERE/unpack-image.sh" "$raw" "$FDIR/base.tmp" "$FDIR/layout.env.tmp"
    rm -rf "$FDIR/base"
    mv "$FDIR/base.tmp" "$FDIR/base"
    printf "BASE_NAME='%s'\n" "$(basename "$BASE_IMAGE")" >>"$FDIR/layout.env.tmp"
    mv "$FDIR/layout.env.tmp" "$FDIR/layout.env"
    [ "$raw" = "$src" ] || rm -f "$raw"
    log "base unpacked: $(du -sh "$FDIR/base" | cut -f1)"
}

# The shared customization, inside the arm64 chroot, on a fresh copy of the base.
stage_customize() {
    need_root
    local base="$FDIR/base" r="$FDIR/rootfs" b
    [ -d "$base" ] || die "no $base: run the rootfs or from-image stage first"
    compgen -G "$OUT/wheels/pioreactor_appliance-*.whl" >/dev/null || die "no wheelhouse: run the wheels stage"
    [ -x "$REPO/systemd/install.sh" ] || die "no systemd/install.sh in $REPO"
    rm -rf "$r"
    # Never into a file system still mounted in the base (a /proc that mmdebstrap could not unmount
    # would copy /proc/kcore until the disk is full).
    cp -a --one-file-system "$base" "$r"
    b="$r/tmp/pioreactor-build"
    mkdir -p "$b"
    cp -a "$OUT/wheels" "$REPO/systemd" "$HERE/customize.sh" "$b/"
    # apt on a base that lacks packages needs a resolver; the image's own one comes back after.
    if [ -e "$r/etc/resolv.conf" ] || [ -L "$r/etc/resolv.conf" ]; then
        mv "$r/etc/resolv.conf" "$r/etc/resolv.conf.pioreactor-build"
    fi
    RESOLV_ROOT="$r"
    cp -L /etc/resolv.conf "$r/etc/resolv.conf"
    chroot_up "$r"
    in_chroot "$r" IMAGE_VERSION="$(image_version)" GIT_COMMIT="$(git_commit)" \
        BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" IMAGE_BASE="$(layout_get BASE_NAME)" \
        bash /tmp/pioreactor-build/customize.sh
    cleanup
    rm -rf "$b"
    log "customized tree: $(du -sh "$r" | cut -f1)"
}

layout_get() (
    # shellcheck disable=SC1091  # written by the rootfs or from-image stage
    . "$FDIR/layout.env"
    echo "${!1}"
)

stage_assemble() {
    [ -d "$FDIR/rootfs" ] || die "no $FDIR/rootfs: run the customize stage first"
    assemble_tree "$FDIR/rootfs" "$IMG"
}

# Split /boot/firmware out of TREE for the FAT partition and pack both with mkimage.sh.
assemble_tree() {
    local tree="$1" img="$2" boot="$FDIR/bootfs"
    # shellcheck disable=SC1091  # written by the rootfs or from-image stage
    . "$FDIR/layout.env"
    rm -rf "$boot"
    mv "$tree/boot/firmware" "$boot"
    SPLIT_TREE="$tree"
    mkdir -m 0755 "$tree/boot/firmware"
    local opts=(--label-id "$LABEL_ID" --boot-label "$BOOT_LABEL" --root-label "$ROOT_LABEL"
        --boot-type "$BOOT_TYPE" --root-type "$ROOT_TYPE" --boot-mib "$BOOT_MIB")
    [ "$BOOT_BOOTABLE" = 1 ] || opts+=(--boot-not-bootable)
    [ -z "$BOOT_VOLID" ] || opts+=(--boot-volid "$BOOT_VOLID")
    [ -z "$ROOT_UUID" ] || opts+=(--root-uuid "$ROOT_UUID")
    "$HERE/mkimage.sh" "${opts[@]}" "$tree" "$boot" "$img"
    cleanup
    log "$img: $(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) on disk"
}

stage_verify() {
    [ -f "$IMG" ] || die "no $IMG: run the assemble stage first"
    "$HERE/verify-image.sh" "$IMG"
}

stage_boottest() {
    [ -f "$IMG" ] || die "no $IMG: run the assemble stage first"
    "$HERE/boot-test.sh" "$IMG"
}

stage_release() {
    [ -f "$IMG" ] || die "no $IMG: run the assemble stage first"
    xz -T2 -6 -c "$IMG" >"$IMG.xz.tmp"
    mv "$IMG.xz.tmp" "$IMG.xz"
    (cd "$(dirname "$IMG")" && sha256sum "$(basename "$IMG").xz" >"$(basename "$IMG").xz.sha256")
    log "$IMG.xz: $(du -h "$IMG.xz" | cut -f1)"
}

main "$@"; exit
