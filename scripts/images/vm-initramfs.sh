#!/usr/bin/env bash
# Builds the vm test initramfs: a static busybox, vm-init.sh as /init, and
# the kernel's evdev and ACPI button modules (so a graceful shutdown works)
# and virtio-net over PCI (VMs) or MMIO (QEMU's microvm machine, so a guest
# on a network gets eth0) and the virtio balloon (so a live memory resize
# reaches the guest), each with the modules it depends on, packed as a
# gzip'd newc cpio.
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
# The modules may be built in, absent or compressed; copy what is usable,
# uncompressed (busybox insmod reads plain .ko files), dependencies first:
# /lib/modules/order lists them in load order for /init. The dependencies
# come from each module's .modinfo `depends=` (no kmod needed here).
order=()
add_module() { # name
  local module=$1 file dep
  module=${module//-/_}
  [[ " ${order[*]} " == *" $module "* ]] && return
  file=$(find "$tree/lib/modules" \( -name "$module.ko*" -o -name "${module//_/-}.ko*" \) 2>/dev/null | head -1 || true)
  case "$file" in
    *.ko) cp "$file" "$work/lib/modules/$module.ko" ;;
    *.ko.xz) xz -dc "$file" >"$work/lib/modules/$module.ko" ;;
    *) return ;; # built in (or absent)
  esac
  local deps
  deps=$(tr '\0' '\n' <"$work/lib/modules/$module.ko" | sed -n 's/^depends=//p' | head -1)
  for dep in ${deps//,/ }; do
    add_module "$dep"
  done
  order+=("$module")
}
# evdev gives acpid the power button's /dev/input node.
# virtio_blk and isofs let /init read a cloud-init seed disk (zixiao.cidata).
for module in evdev button virtio_pci virtio_mmio virtio_net virtio_balloon virtio_blk isofs; do
  add_module "$module"
done
printf '%s\n' "${order[@]}" >"$work/lib/modules/order"
(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp"
mv "$out.tmp" "$out"
