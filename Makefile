# The SD-card image (see image/README.md). The application's own commands are
# scripts/cluster and scripts/test; these targets only concern the image.
# Building needs root (mmdebstrap --mode=root, chroot); about 15 minutes.
IMAGE_OUT ?= image/out
BUILD = OUT=$(IMAGE_OUT) image/build.sh
DEBIAN_IMG = $(IMAGE_OUT)/pioreactor-debian.img
BASE_IMG = $(IMAGE_OUT)/debian-base.img

.PHONY: image image-test image-check image-from-image-test clean-image

# The Debian-based image, every stage but the boot test.
image:
	$(BUILD) deps wheels rootfs customize assemble verify

# Boot the image in qemu (role both, then role worker); builds it first when missing.
image-test:
	@test -f $(DEBIAN_IMG) || $(MAKE) image
	$(BUILD) deps boottest

# What every CI run checks (also part of scripts/test): shell scripts, units,
# first boot, and a synthetic image assembled and verified by the real scripts.
image-check:
	scripts/test tests.image tests.test_systemd_units tests.test_firstboot

# The Raspberry Pi OS path (from-image), fed the uncustomized Debian base as an
# image since Raspberry Pi OS cannot be downloaded here; then its boot test.
image-from-image-test:
	@test -d $(IMAGE_OUT)/debian/base || $(MAKE) image
	$(BUILD) deps base-image
	$(BUILD) --base-image $(BASE_IMG) --sha256 "$$(sha256sum $(BASE_IMG) | cut -d' ' -f1)" \
		from-image customize assemble verify boottest

clean-image:
	rm -rf --one-file-system $(IMAGE_OUT)
