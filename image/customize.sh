#!/usr/bin/env bash
# The customization shared by both bases (Debian-built and Raspberry Pi OS). Runs
# INSIDE the arm64 chroot, started by build.sh with a clean environment; its
# inputs are in /tmp/pioreactor-build (wheels/, systemd/) and these variables:
# IMAGE_VERSION, GIT_COMMIT, BUILD_DATE, IMAGE_BASE.
set -euo pipefail

build=/tmp/pioreactor-build
venv=/opt/pioreactor/venv
say() { echo "customize: $*" >&2; }

# --- packages the base lacks, from the base's OWN apt sources ---------------
# A no-op on the Debian base (all are in packages-debian.txt), so that build
# needs no network here.
wanted=(mosquitto avahi-daemon libnss-mdns python3-venv sudo openssh-server fdisk e2fsprogs chrony fake-hwclock)
# Raspberry Pi OS carries pigpiod; Debian has no such package.
if grep -rqs 'archive\.raspberrypi\.\(com\|org\)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    wanted+=(pigpiod)
fi
missing=()
for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    # Nothing may start inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    apt-get clean
    rm -f /usr/sbin/policy-rc.d
fi

# --- the appliance's venv, from the wheelhouse only ---------------------------
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --no-index --no-cache-dir --find-links "$build/wheels" pioreactor-appliance
"$venv/bin/python" -c 'import pioreactor_appliance.tap'

# --- units, broker, mDNS, sudoers and the contract's users (systemd/install.sh
# makes pioreactor and lab and gives the venv to pioreactor) --------------------
sh "$build/systemd/install.sh" /
id pioreactor >/dev/null && id lab >/dev/null

# --- per-device identity is made at first boot --------------------------------
rm -f /etc/ssh/ssh_host_*
: >/etc/machine-id
mkdir -p /var/lib/dbus
ln -sfn /etc/machine-id /var/lib/dbus/machine-id
rm -f /var/lib/systemd/random-seed

# --- what this image is ---------------------------------------------------------
mkdir -p /etc/pioreactor
cat >/etc/pioreactor/image-info <<EOF
version=${IMAGE_VERSION:?}
git_commit=${GIT_COMMIT:?}
build_date=${BUILD_DATE:?}
base=${IMAGE_BASE:?}
EOF
say "done: pioreactor-appliance $("$venv/bin/python" -c 'import pioreactor_appliance as p; print(p.__version__)')"
