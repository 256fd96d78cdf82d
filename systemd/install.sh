#!/bin/sh
# Install the appliance's units and system configuration into ROOT:
#   systemd/install.sh [--files-only] ROOT
# The image's customize stage runs it inside the arm64 chroot with ROOT=/.
# --files-only (the tests, on a temporary directory) skips what needs a real
# root file system: creating the users and chowning to them. Idempotent.
set -eu

users=1
if [ "${1:-}" = "--files-only" ]; then
    users=0
    shift
fi
if [ "$#" -ne 1 ]; then
    echo "usage: $0 [--files-only] ROOT" >&2
    exit 2
fi
root=${1%/}
# With ROOT=/ (the image's chroot) $root is empty, which suits the "$root/etc/..."
# paths but not useradd -R or chroot: they get "/".
sysroot=${root:-/}
here=$(cd "$(dirname "$0")" && pwd)
units="pioreactor.service pioreactor-firstboot.service pioreactor-register.service pigpiod.service pioreactor-simulator.service"

# put SOURCE DEST MODE: copy one file into ROOT with its mode, making parent directories.
put() {
    mkdir -p "$root$(dirname "$2")"
    cp "$here/$1" "$root$2"
    chmod "$3" "$root$2"
}

# enable_unit UNIT TARGET: what `systemctl enable` does, as a symlink (no running systemd needed).
enable_unit() {
    mkdir -p "$root/etc/systemd/system/$2.wants"
    ln -sfn "/etc/systemd/system/$1" "$root/etc/systemd/system/$2.wants/$1"
}

for unit in $units; do
    put "$unit" "/etc/systemd/system/$unit" 0644
done
put mosquitto/mosquitto.service.d-pioreactor.conf /etc/systemd/system/mosquitto.service.d/pioreactor.conf 0644
put mosquitto/pioreactor.conf /etc/mosquitto/conf.d/pioreactor.conf 0644
put mosquitto/pioreactor.acl /etc/mosquitto/pioreactor.acl 0644
for file in "$here"/avahi/*.service; do
    put "avahi/$(basename "$file")" "/usr/share/pioreactor/avahi/$(basename "$file")" 0644
done
put pioreactor.tmpfiles /etc/tmpfiles.d/pioreactor.conf 0644

# Check each sudoers file before it lands where a syntax error would break sudo.
for file in pioreactor lab; do
    visudo -cqf "$here/sudoers.d/$file"
    put "sudoers.d/$file" "/etc/sudoers.d/$file" 0440
done

enable_unit pioreactor-firstboot.service sysinit.target
for unit in pioreactor.service pioreactor-register.service pigpiod.service pioreactor-simulator.service; do
    enable_unit "$unit" multi-user.target
done
mkdir -p "$root/etc/pioreactor" "$root/var/lib/pioreactor" "$root/var/lib/pioreactor-firstboot"

if [ "$users" -eq 1 ]; then
    # The contract's users: the service user (GPIO and I2C through its groups)
    # and the login user lab (sudo without a password; password locked, SSH keys only).
    for group in gpio i2c; do
        groupadd -f --system -R "$sysroot" "$group"
    done
    if ! grep -q '^pioreactor:' "$root/etc/passwd"; then
        useradd -R "$sysroot" --system --user-group --home-dir /var/lib/pioreactor --no-create-home \
            --shell /usr/sbin/nologin --groups gpio,i2c pioreactor
    fi
    if ! grep -q '^lab:' "$root/etc/passwd"; then
        useradd -R "$sysroot" --create-home --shell /bin/bash --groups sudo lab
    fi
    usermod -R "$sysroot" --lock lab
    # By name inside ROOT, so ROOT's own user database decides the ids.
    chroot "$sysroot" chown pioreactor:pioreactor /var/lib/pioreactor /var/lib/pioreactor-firstboot
    chmod 0750 "$root/var/lib/pioreactor"
    # Plugins and updates pip-install into the venv as pioreactor.
    if [ -d "$root/opt/pioreactor" ]; then
        chroot "$sysroot" chown -R pioreactor:pioreactor /opt/pioreactor
    fi
fi
