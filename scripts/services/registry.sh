#!/usr/bin/env bash
# A private OCI registry on loopback for Zixiao's pull tests: Debian's
# docker-registry (distribution 2.x) with its own config, storage and log
# under one directory, on a port this script owns (25000), never the
# package's system service (port 5000). `start` pushes the busybox OCI
# archive that containerd.sh builds into it with skopeo, as `busybox:1`.
#
#   scripts/services/registry.sh install   # apt packages (idempotent)
#   eval "$(scripts/services/registry.sh start)"
#   scripts/services/registry.sh stop      # the registry and its storage
#
# `start` prints the lines the tests read:
#   ZIXIAO_TEST_REGISTRY         the registry's host:port (plain HTTP, loopback)
#   ZIXIAO_TEST_REGISTRY_BUSYBOX the reference of the pushed busybox image
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/registry
port=25000
address=127.0.0.1:$port
log() { echo "registry.sh: $*" >&2; }

install() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]} == 0)); then
    log "already installed"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # On a machine with systemd the package starts a system registry on port
  # 5000 that nothing here uses.
  if command -v systemctl >/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
}

alive() { [[ -f "$dir/registry.pid" ]] && kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null; }
answers() { curl -fsS -o /dev/null "http://$address/v2/" 2>/dev/null; }

start() {
  mkdir -p "$dir"
  if alive && answers; then
    log "already running at $address"
  else
    stop_registry
    rm -rf "$dir/storage"
    cat >"$dir/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $address
CONFIG
    # setsid: the registry must outlive this script and the caller's shell.
    setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
    echo $! >"$dir/registry.pid"
    local ok=0
    for _ in $(seq 1 100); do
      if answers; then ok=1; break; fi
      alive || { log "the registry exited; its log:"; tail -20 "$dir/registry.log" >&2; exit 1; }
      sleep 0.1
    done
    ((ok)) || { log "the registry did not answer within 10 s"; exit 1; }
    log "running at $address"
  fi
  local busybox=${ZIXIAO_TEST_BUSYBOX_OCI:-${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/containerd/busybox.oci.tar}
  if [[ ! -f "$busybox" ]]; then
    "$here/../images/busybox-oci.sh" "$busybox" >&2
  fi
  if ! skopeo inspect --tls-verify=false "docker://$address/busybox:1" >/dev/null 2>&1; then
    skopeo copy --quiet --dest-tls-verify=false "oci-archive:$busybox" "docker://$address/busybox:1" >&2
    log "pushed busybox:1"
  fi
  echo "export ZIXIAO_TEST_REGISTRY=$address"
  echo "export ZIXIAO_TEST_REGISTRY_BUSYBOX=$address/busybox:1"
}

stop_registry() {
  [[ -f "$dir/registry.pid" ]] || return 0
  local pid
  pid=$(cat "$dir/registry.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$dir/registry.pid"
}

stop() {
  [[ -d "$dir" ]] || return 0
  stop_registry
  rm -rf "$dir/storage"
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
