#!/usr/bin/env bash
# libvirtd and virtlogd for Zixiao's vm driver tests and benchmarks, started
# by hand (no systemd on our machines), plus what a test VM boots: the Debian
# cloud kernel, a busybox initramfs whose /init prints ZIXIAO-BOOT-OK on the
# serial console, and a small qcow2 base image for the overlay-disk tests.
#
# The daemons run inside a network namespace of their own, pinned at
# $ZIXIAO_TEST_DIR/libvirt/netns: libvirtd creates the TAP devices of VMs
# (and QEMU runs) in its namespace, so the networking tests, which enter it,
# never touch the host's network. Clients reach libvirtd through its unix
# socket, which the namespace does not affect.
#
#   scripts/services/libvirt.sh install   # apt packages (idempotent)
#   eval "$(scripts/services/libvirt.sh start)"
#   scripts/services/libvirt.sh stop      # our domains, then the daemons it started
#
# A second libvirtd (with its own virtlogd) runs beside the first, so the
# live-migration tests migrate between two daemons as between two nodes.
# It shares the first one's network namespace (migration streams and NBD
# disk copies go over its loopback, and both daemons' TAPs are where the
# networking tests look) but has a mount namespace of its own
# (`unshare --mount --propagation private`), in which /etc/libvirt,
# /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt
# are bind-mounted from $ZIXIAO_TEST_DIR/libvirt2: its sockets, run state,
# domain definitions and logs are its own, as on another machine, while
# every file outside those directories (kernels, images, the drivers' state
# dirs under $ZIXIAO_TEST_DIR) is reachable by both, as a shared mount
# would be. Separate network namespaces would need a veth pair and routes
# between them for nothing the tests check. Its qemu.conf sets
# `cgroup_controllers = [ ]` (the daemons run without systemd and would
# both make `machine/qemu-<n>-<name>` cgroups for the domain that migrates)
# and its own migration port range (each daemon allocates ports without
# knowing of the other), and its libvirtd.conf a host UUID of its own.
# Clients reach it at
# `qemu+unix:///system?socket=$ZIXIAO_TEST_DIR/libvirt2/run/libvirt/libvirt-sock`
# (`+unix`: a daemon migrating peer-to-peer opens the target URI itself, and
# would take a plain `qemu:///system` for its own driver). The first daemon
# cannot be reached from the second (its /run/libvirt is hidden there), so
# migrations in the tests go from the first to the second.
#
# `start` prints the `export ZIXIAO_TEST_LIBVIRT_URI=...`,
# `export ZIXIAO_TEST_LIBVIRT2_URI=...` (the second daemon),
# `export ZIXIAO_TEST_VM_KERNEL=...`, `export ZIXIAO_TEST_VM_INITRD=...` and
# `export ZIXIAO_TEST_VM_BASE_IMAGE=...` lines the tests read, and
# `export ZIXIAO_TEST_LIBVIRT_NETNS=...` when libvirtd runs in our namespace
# (not when a libvirtd started elsewhere already answered); everything else
# goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/libvirt
uri=qemu:///system
# Every domain the driver defines is named with this prefix.
prefix=zixiao-
# The network namespace the daemons run in (a bind-mounted nsfs file).
netns=$dir/netns
# The second daemon's directories and URI.
dir2=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/libvirt2
uri2="qemu+unix:///system?socket=$dir2/run/libvirt/libvirt-sock"

log() { echo "libvirt.sh: $*" >&2; }

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

install() {
  local missing=() p
  # iproute2 brings lo up in the daemons' network namespace.
  # genisoimage writes cloud-init seed images (the vm driver's --user-data).
  for p in libvirt-daemon-system libvirt-dev qemu-system-x86 qemu-utils busybox-static cpio iproute2 genisoimage; do
    installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "already installed"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # qemu-utils comes first and from the same release as qemu-system-x86: a
  # newer qemu-utils (a backport) breaks qemu-system-common, and libvirtd
  # must find qemu-img when it starts. Pin it to the distribution's version.
  local qemu_utils=qemu-utils version
  version=$(apt-cache madison qemu-utils | awk -F'|' '$3 ~ /debian\.org/ {gsub(/ /, "", $2); print $2; exit}')
  [[ -n "$version" ]] && qemu_utils="qemu-utils=$version"
  apt-get install -y -qq --allow-downgrades -o Dpkg::Options::=--force-confold \
    "$qemu_utils" cpio busybox-static iproute2 genisoimage >/dev/null
  apt-get install -y -qq -o Dpkg::Options::=--force-confold \
    libvirt-daemon-system libvirt-dev qemu-system-x86 >/dev/null
}

answers() {
  timeout 5 virsh -c "$uri" version >/dev/null 2>&1
}

running() { # pidfile
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Whether $netns is a pinned network namespace (not a leftover plain file).
pinned() {
  [[ -e "$netns" ]] && [[ "$(stat -f -c %T "$netns" 2>/dev/null)" == nsfs ]]
}

ensure_netns() {
  if pinned; then
    return
  fi
  # A leftover file (a crash between touch and mount) is replaced.
  umount "$netns" 2>/dev/null || true
  rm -f "$netns"
  touch "$netns"
  unshare --net="$netns" true
  nsenter --net="$netns" ip link set lo up
  log "created network namespace $netns"
}

# Whether process $1 runs in the namespace pinned at $netns.
in_netns() {
  pinned && [[ "$(readlink "/proc/$1/ns/net" 2>/dev/null)" == "net:[$(stat -L -c %i "$netns")]" ]]
}

start_daemons() {
  mkdir -p /run/libvirt "$dir"
  if answers; then
    log "libvirtd already answers at $uri"
    return
  fi
  ensure_netns
  if ! running /run/virtlogd.pid; then
    nsenter --net="$netns" virtlogd -d
    touch "$dir/started-virtlogd"
  fi
  if ! running /run/libvirtd.pid; then
    nsenter --net="$netns" libvirtd -d
    touch "$dir/started-libvirtd"
  fi
  for _ in $(seq 1 200); do
    answers && return
    sleep 0.05
  done
  log "libvirtd did not answer at $uri within 10 s"
  exit 1
}

answers2() {
  timeout 5 virsh -c "$uri2" version >/dev/null 2>&1
}

# The second libvirtd and virtlogd (see the header), in the first one's
# network namespace and a mount namespace of their own.
start_second() {
  if answers2; then
    log "the second libvirtd already answers at $uri2"
    return
  fi
  ensure_netns
  mkdir -p "$dir2"/run/libvirt "$dir2"/lib/libvirt/qemu "$dir2"/cache/libvirt/qemu "$dir2"/log/libvirt/qemu
  chown libvirt-qemu:libvirt-qemu "$dir2"/lib/libvirt/qemu
  chmod 0755 "$dir2" "$dir2"/lib "$dir2"/lib/libvirt
  # Its configuration: the system's, without the autostarted default
  # network (the first daemon owns virbr0 in the shared namespace).
  rm -rf "$dir2/etc"
  mkdir -p "$dir2/etc"
  cp -a /etc/libvirt "$dir2/etc/libvirt"
  rm -f "$dir2"/etc/libvirt/qemu/networks/autostart/*
  cat >>"$dir2/etc/libvirt/qemu.conf" <<'CONF'

# Zixiao's second test daemon (scripts/services/libvirt.sh).
cgroup_controllers = [ ]
migration_port_min = 49300
migration_port_max = 49363
CONF
  # libvirt refuses a migration between daemons of one host UUID ("Attempt
  # to migrate guest to the same host"); the first reads the machine's.
  local host_uuid
  [[ -s "$dir2/host-uuid" ]] || cat /proc/sys/kernel/random/uuid >"$dir2/host-uuid"
  host_uuid=$(cat "$dir2/host-uuid")
  echo "host_uuid = \"$host_uuid\"" >>"$dir2/etc/libvirt/libvirtd.conf"
  local setup
  setup="set -e
    mount --bind '$dir2/etc/libvirt' /etc/libvirt
    mount --bind '$dir2/run/libvirt' /run/libvirt
    mount --bind '$dir2/lib/libvirt' /var/lib/libvirt
    mount --bind '$dir2/cache/libvirt' /var/cache/libvirt
    mount --bind '$dir2/log/libvirt' /var/log/libvirt
    virtlogd -d -p '$dir2/virtlogd.pid'
    libvirtd -d -p '$dir2/libvirtd.pid'"
  nsenter --net="$netns" unshare --mount --propagation private sh -c "$setup"
  touch "$dir2/started"
  for _ in $(seq 1 200); do
    answers2 && return
    sleep 0.05
  done
  log "the second libvirtd did not answer at $uri2 within 10 s"
  exit 1
}

stop_second() {
  if answers2; then
    local domain
    for domain in $(virsh -c "$uri2" list --all --name 2>/dev/null | grep "^$prefix" || true); do
      virsh -c "$uri2" destroy "$domain" >/dev/null 2>&1 || true
      virsh -c "$uri2" undefine "$domain" >/dev/null 2>&1 || true
      log "removed domain $domain (second daemon)"
    done
  fi
  [[ -f "$dir2/started" ]] || return 0
  local daemon
  for daemon in libvirtd virtlogd; do
    stop_pid "$dir2/$daemon.pid"
    rm -f "$dir2/$daemon.pid"
  done
  rm -f "$dir2/started"
  log "stopped the second libvirtd and virtlogd"
}

# Kills the process of pidfile $1 and waits until it is gone, so a `start`
# right after starts afresh. (A zombie counts as gone: its parent may never
# reap it.)
stop_pid() {
  running "$1" || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    [[ -r /proc/$pid/stat ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || break
    sleep 0.1
  done
}

prepare_kernel() {
  local kernel_dir=$dir/kernel
  if compgen -G "$kernel_dir/tree/boot/vmlinuz-*" >/dev/null; then
    return
  fi
  mkdir -p "$kernel_dir/deb"
  # The metapackage names the current ABI's image package.
  local package
  package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9].*-cloud-amd64$/ {print $2; exit}')
  [[ -n "$package" ]] || package=$(apt-cache search --names-only '^linux-image-[0-9.-]+-cloud-amd64$' | awk '{print $1}' | sort -V | tail -1)
  log "downloading $package"
  (cd "$kernel_dir/deb" && apt-get download -qq "$package" >/dev/null 2>&1)
  rm -rf "$kernel_dir/tree.tmp"
  dpkg -x "$kernel_dir"/deb/*.deb "$kernel_dir/tree.tmp"
  mv "$kernel_dir/tree.tmp" "$kernel_dir/tree"
}

start() {
  start_daemons
  start_second
  prepare_kernel
  local kernel initrd=$dir/initramfs.cpio.gz base=$dir/base.qcow2
  kernel=$(compgen -G "$dir/kernel/tree/boot/vmlinuz-*" | head -1)
  if [[ ! -s "$initrd" || "$here/../images/vm-init.sh" -nt "$initrd" ||
    "$here/../images/vm-initramfs.sh" -nt "$initrd" ]]; then
    "$here/../images/vm-initramfs.sh" "$dir/kernel/tree" "$initrd"
  fi
  if [[ ! -s "$base" ]]; then
    qemu-img create -q -f qcow2 "$base" 64M
  fi
  # QEMU runs as libvirt-qemu: the files must be readable and their
  # directories searchable by it.
  chmod 0755 "$dir" "${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}"
  chmod 0644 "$kernel" "$initrd" "$base"
  echo "export ZIXIAO_TEST_LIBVIRT_URI=$uri"
  echo "export ZIXIAO_TEST_LIBVIRT2_URI='$uri2'"
  echo "export ZIXIAO_TEST_VM_KERNEL=$kernel"
  echo "export ZIXIAO_TEST_VM_INITRD=$initrd"
  echo "export ZIXIAO_TEST_VM_BASE_IMAGE=$base"
  if running /run/libvirtd.pid && in_netns "$(cat /run/libvirtd.pid)"; then
    echo "export ZIXIAO_TEST_LIBVIRT_NETNS=$netns"
  else
    log "libvirtd does not run in $netns (it was started elsewhere): the vm networking" \
      "tests skip, or fail under ZIXIAO_REQUIRE_RUNTIMES=1; \`$0 stop\` it first"
  fi
}

stop() {
  stop_second
  if answers; then
    local domain
    for domain in $(virsh -c "$uri" list --all --name 2>/dev/null | grep "^$prefix" || true); do
      virsh -c "$uri" destroy "$domain" >/dev/null 2>&1 || true
      virsh -c "$uri" undefine "$domain" --snapshots-metadata >/dev/null 2>&1 ||
        virsh -c "$uri" undefine "$domain" >/dev/null 2>&1 || true
      log "removed domain $domain"
    done
  fi
  local daemon
  for daemon in libvirtd virtlogd; do
    if [[ -f "$dir/started-$daemon" ]]; then
      stop_pid "/run/$daemon.pid"
      rm -f "$dir/started-$daemon"
      log "stopped $daemon"
    fi
  done
  # The namespace goes with its pin once no process (QEMU) holds it; kept
  # while a libvirtd this script did not start still runs in it.
  if [[ -e "$netns" ]] && ! { running /run/libvirtd.pid && in_netns "$(cat /run/libvirtd.pid)"; }; then
    umount "$netns" 2>/dev/null || true
    rm -f "$netns"
    log "removed network namespace $netns"
  fi
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
