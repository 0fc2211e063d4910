#!/usr/bin/env bash
# What the microvm driver's tests and benchmarks boot: QEMU's microvm
# machine (qemu-system-x86_64), the Debian cloud kernel and a busybox
# initramfs whose /init prints ZIXIAO-BOOT-OK on the serial console
# (scripts/images/vm-initramfs.sh, shared with the vm driver): for each
# `ip=` argument on the kernel command line (the driver adds one per network
# attachment) the guest configures that virtio-net interface (on
# virtio-mmio: the microvm machine has no PCI) and prints
# `ZIXIAO-NET <interface> <address>`. No daemon:
# each microVM is a process of its own, which the tests stop themselves.
#
#   scripts/services/microvm.sh install   # apt packages (idempotent)
#   eval "$(scripts/services/microvm.sh start)"
#   scripts/services/microvm.sh stop      # any test microVM left running
#
# `start` prints `export ZIXIAO_TEST_MICROVM_QEMU=...`,
# `export ZIXIAO_TEST_MICROVM_KERNEL=...` and
# `export ZIXIAO_TEST_MICROVM_INITRD=...`; everything else goes to stderr.
# The zixiao-vmm binary the VMM-backend tests use is built by cargo itself.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}
dir=$root/microvm

log() { echo "microvm.sh: $*" >&2; }

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

install() {
  local missing=() p
  for p in qemu-system-x86 busybox-static cpio; do
    installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "already installed"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
}

# The Debian cloud kernel, extracted under $dir/kernel/tree (the vm
# driver's copy is reused when libvirt.sh fetched it already).
prepare_kernel() {
  local kernel_dir=$dir/kernel
  if compgen -G "$kernel_dir/tree/boot/vmlinuz-*" >/dev/null; then
    return
  fi
  mkdir -p "$kernel_dir"
  if compgen -G "$root/libvirt/kernel/tree/boot/vmlinuz-*" >/dev/null; then
    cp -a "$root/libvirt/kernel/tree" "$kernel_dir/tree.tmp"
  else
    mkdir -p "$kernel_dir/deb"
    local package
    package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
      awk '/Depends: linux-image-[0-9].*-cloud-amd64$/ {print $2; exit}')
    [[ -n "$package" ]] || package=$(apt-cache search --names-only '^linux-image-[0-9.-]+-cloud-amd64$' | awk '{print $1}' | sort -V | tail -1)
    log "downloading $package"
    (cd "$kernel_dir/deb" && apt-get download -qq "$package" >/dev/null 2>&1)
    rm -rf "$kernel_dir/tree.tmp"
    dpkg -x "$kernel_dir"/deb/*.deb "$kernel_dir/tree.tmp"
  fi
  mv "$kernel_dir/tree.tmp" "$kernel_dir/tree"
}

start() {
  mkdir -p "$dir"
  prepare_kernel
  local kernel initrd=$dir/initramfs.cpio.gz qemu
  kernel=$(compgen -G "$dir/kernel/tree/boot/vmlinuz-*" | head -1)
  if [[ ! -s "$initrd" || "${BASH_SOURCE[0]}" -nt "$initrd" ||
    "$here/../images/vm-init.sh" -nt "$initrd" || "$here/../images/vm-initramfs.sh" -nt "$initrd" ]]; then
    "$here/../images/vm-initramfs.sh" "$dir/kernel/tree" "$initrd"
  fi
  qemu=$(command -v qemu-system-x86_64 || true)
  if [[ -z "$qemu" ]]; then
    log "qemu-system-x86_64 is missing: run $0 install"
    exit 1
  fi
  echo "export ZIXIAO_TEST_MICROVM_QEMU=$qemu"
  echo "export ZIXIAO_TEST_MICROVM_KERNEL=$kernel"
  echo "export ZIXIAO_TEST_MICROVM_INITRD=$initrd"
}

# Test microVMs run detached; a test that died midway may leave one. Each
# records its monitor's pid in its directory under $dir, and that monitor's
# command line names the directory: only such processes are killed.
stop() {
  local pidfile pid
  while IFS= read -r -d '' pidfile; do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"; then
      kill -9 "$pid" 2>/dev/null && log "killed left-over microVM process $pid" || true
    fi
  done < <(find "$dir" -name '*.pid' -print0 2>/dev/null)
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 install|start|stop" >&2
    exit 2
    ;;
esac
