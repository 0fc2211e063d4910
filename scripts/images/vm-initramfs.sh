#!/usr/bin/env bash
# Builds the vm test initramfs: a static busybox, vm-init.sh as /init, and
# the kernel's evdev and ACPI button modules (so a graceful shutdown works), packed as
# a gzip'd newc cpio.
#
# Usage: vm-initramfs.sh KERNEL_TREE OUT.cpio.gz
# KERNEL_TREE is a `dpkg -x` of a linux-image-*-cloud-amd64 package.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tree=${1:?usage: vm-initramfs.sh KERNEL_TREE OUT.cpio.gz}
out=${2:?usage: vm-initramfs.sh KERNEL_TREE OUT.cpio.gz}
busybox=/bin/busybox
if [[ ! -x "$busybox" ]] || ldd "$busybox" >/dev/null 2>&1; then
  echo "vm-initramfs.sh: a static /bin/busybox is needed (apt-get install busybox-static)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,etc/acpi,lib/modules,tmp}
cp "$busybox" "$work/bin/busybox"
ln -s busybox "$work/bin/sh"
install -m 0755 "$here/vm-init.sh" "$work/init"
# The modules may be built in, absent or compressed; copy what is usable.
# evdev gives acpid the power button's /dev/input node.
for module in evdev button; do
  file=$(find "$tree/lib/modules" -name "$module.ko*" 2>/dev/null | head -1 || true)
  case "$file" in
    *.ko) cp "$file" "$work/lib/modules/" ;;
    *.ko.xz) xz -dc "$file" >"$work/lib/modules/$module.ko" ;;
  esac
done
(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp"
mv "$out.tmp" "$out"
