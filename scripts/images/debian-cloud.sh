#!/usr/bin/env bash
# A small Debian cloud image for the cloud-init boot test: debootstrap's
# minimal bookworm with systemd, cloud-init (NoCloud is in its default
# data sources), ifupdown and the cloud kernel, on one ext4 file system
# labelled `root`, as a qcow2 disk; its kernel and initrd (initramfs-tools,
# which loads virtio_blk to find the root) next to it for a direct kernel
# boot, so the image needs no boot loader.
#
#   scripts/images/debian-cloud.sh OUT_DIR   # writes disk.qcow2, vmlinuz, initrd.img
#
# Everything comes from the Debian mirror apt already uses. About 4 minutes
# and 300 MB of downloads; the result is about 500 MB.
set -euo pipefail
out=${1:?usage: debian-cloud.sh OUT_DIR}
mirror=$({ grep -hoE '^(deb|URIs:) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
  /etc/apt/sources.list.d/* 2>/dev/null || true; } | awk '{print $2; exit}')
mirror=${mirror:-http://deb.debian.org/debian}
suite=bookworm
work=$out/build
root=$work/root
cleanup() {
  umount "$root/proc" 2>/dev/null || true
  umount "$root/sys" 2>/dev/null || true
}
# A build stopped half way left its mounts: never delete through them.
cleanup
rm -rf "$work"
mkdir -p "$work"
trap cleanup EXIT
trap 'exit 1' INT TERM

# python3-cffi-backend by name: debootstrap does not resolve the virtual
# package cryptography needs, apt in the chroot does the rest.
debootstrap --variant=minbase --include=systemd-sysv,udev,iproute2,python3-cffi-backend \
  "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1
mount --bind /proc "$root/proc"
mount --bind /sys "$root/sys"
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
  cloud-init linux-image-cloud-amd64 initramfs-tools ifupdown isc-dhcp-client >"$work/apt.log" 2>&1
chroot "$root" apt-get clean
cleanup
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/lib/apt/lists/*
echo 'LABEL=root / ext4 defaults 0 1' >"$root/etc/fstab"
# Of the config stage only runcmd: the others (locale, apt, ssh keys without
# an SSH server...) cost a TCG boot a minute and fail on a minimal system.
printf 'cloud_config_modules: [runcmd]\n' >"$root/etc/cloud/cloud.cfg.d/90-zixiao-test.cfg"
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
size=$(($(du -sm "$root" | cut -f1) + 512))
truncate -s "${size}M" "$work/disk.raw"
mkfs.ext4 -q -L root -d "$root" "$work/disk.raw"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
chmod 0644 "$work/disk.qcow2" "$work/vmlinuz" "$work/initrd.img"
mv "$work/disk.qcow2" "$work/vmlinuz" "$work/initrd.img" "$out/"
rm -rf "$work"
