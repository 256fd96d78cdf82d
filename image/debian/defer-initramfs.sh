#!/bin/sh
# mmdebstrap essential hook (argument: the new root). Under qemu-user one
# update-initramfs takes about 8 minutes and dpkg would run it twice (kernel,
# then triggers), so it is diverted to a no-op here and run once by build.sh.
set -eu
root="$1"
chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
printf '#!/bin/sh\n# diverted while the image is built\nexit 0\n' >"$root/usr/sbin/update-initramfs"
chmod 0755 "$root/usr/sbin/update-initramfs"
