#!/usr/bin/env bash
# A private containerd for Zixiao's tests and benchmarks: its own config,
# root, state and sockets under one directory, so it never collides with a
# system containerd, and a locally built busybox OCI archive to import
# (no registry is reachable from our machines).
#
#   scripts/services/containerd.sh install   # apt packages (idempotent)
#   eval "$(scripts/services/containerd.sh start)"
#   scripts/services/containerd.sh stop      # containerd, shims, tasks, mounts, cgroups
#
# `start` prints the `export ZIXIAO_TEST_CONTAINERD_SOCKET=...` and
# `export ZIXIAO_TEST_BUSYBOX_OCI=...` lines the tests read.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/containerd
sock=$dir/containerd.sock
log() { echo "containerd.sh: $*" >&2; }

install() {
  local missing=()
  for cmd in containerd runc umoci protoc; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
  if ((${#missing[@]} == 0)); then
    log "already installed"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq containerd runc umoci busybox-static protobuf-compiler >/dev/null
}

answers() {
  # `ctr version` needs the daemon to answer on the socket, not only the file to exist.
  [[ -S "$sock" ]] && timeout 2 ctr --address "$sock" version >/dev/null 2>&1
}

start() {
  mkdir -p "$dir"
  if [[ -f "$dir/containerd.pid" ]] && kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null && answers; then
    log "already running (pid $(cat "$dir/containerd.pid"))"
  else
    cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = "$dir/debug.sock"
TOML
    # setsid: containerd must outlive this script and the caller's shell.
    setsid containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
    echo $! >"$dir/containerd.pid"
    for _ in $(seq 1 200); do
      answers && break
      kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || {
        log "containerd exited; its log:"
        tail -20 "$dir/containerd.log" >&2
        exit 1
      }
      sleep 0.05
    done
    answers || { log "containerd did not answer on $sock within 10 s"; exit 1; }
  fi
  if [[ ! -s "$dir/busybox.oci.tar" ]]; then
    "$here/../images/busybox-oci.sh" "$dir/busybox.oci.tar"
  fi
  echo "export ZIXIAO_TEST_CONTAINERD_SOCKET=$sock"
  echo "export ZIXIAO_TEST_BUSYBOX_OCI=$dir/busybox.oci.tar"
}

stop() {
  [[ -d "$dir" ]] || return 0
  local namespaces=() cgroups=() ns task cfg path
  # Tasks first, through containerd, while it still answers: runc removes
  # their cgroups and their shims exit with them.
  if answers; then
    for ns in $(ctr --address "$sock" namespaces list -q 2>/dev/null || true); do
      namespaces+=("$ns")
      for task in $(ctr --address "$sock" -n "$ns" tasks list -q 2>/dev/null || true); do
        ctr --address "$sock" -n "$ns" tasks kill -a -s SIGKILL "$task" >/dev/null 2>&1 || true
        ctr --address "$sock" -n "$ns" tasks delete -f "$task" >/dev/null 2>&1 || true
      done
    done
  fi
  # Whatever is left ran under a shim of this containerd: its bundle (under
  # our state dir) names its cgroup.
  for cfg in "$dir"/state/io.containerd.runtime.v2.task/*/*/config.json; do
    [[ -f "$cfg" ]] || continue
    path=$(grep -o '"cgroupsPath":"[^"]*"' "$cfg" | head -1 | cut -d'"' -f4 || true)
    [[ -n "$path" ]] && cgroups+=("$path")
    ns=$(basename "$(dirname "$(dirname "$cfg")")")
    namespaces+=("$ns")
  done
  if [[ -f "$dir/containerd.pid" ]]; then
    local pid
    pid=$(cat "$dir/containerd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$dir/containerd.pid"
  fi
  # Shims of this containerd only: they carry its socket in their arguments.
  local shim
  for shim in $(pgrep -f "containerd-shim.*-address $sock( |$)" || true); do
    kill -9 "$shim" 2>/dev/null || true
  done
  # Processes of containers whose shim is gone, then their cgroups (each
  # hierarchy of cgroup v1, or the one of v2).
  local hierarchy cg
  for path in "${cgroups[@]}"; do
    for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
      cg="${hierarchy%/}$path"
      [[ -f "$cg/cgroup.procs" ]] || continue
      for pid in $(cat "$cg/cgroup.procs" 2>/dev/null || true); do kill -9 "$pid" 2>/dev/null || true; done
    done
  done
  for _ in $(seq 1 40); do
    local left=0
    for path in "${cgroups[@]}"; do
      for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        cg="${hierarchy%/}$path"
        [[ -d "$cg" && "$path" != / ]] || continue
        rmdir "$cg" 2>/dev/null || left=1
      done
    done
    ((left == 0)) && break
    sleep 0.05
  done
  # The per-namespace parents runc leaves; rmdir only removes empty ones.
  for ns in "${namespaces[@]}"; do
    for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
      [[ -d "${hierarchy%/}/$ns" ]] && rmdir "${hierarchy%/}/$ns" 2>/dev/null || true
    done
  done
  # Empty parents of the tests' namespaces (zixiao-test-*) that tests which
  # failed midway left; rmdir never removes a cgroup that is in use.
  for cg in /sys/fs/cgroup/*/zixiao-test-* /sys/fs/cgroup/zixiao-test-*; do
    [[ -d "$cg" ]] && rmdir "$cg" 2>/dev/null || true
  done
  # Mounts under our directory, deepest first.
  { grep -F " $dir/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done
  rm -rf "$dir/root" "$dir/state" "$sock" "$sock.ttrpc" "$dir/debug.sock"
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
