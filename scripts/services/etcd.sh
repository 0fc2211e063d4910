#!/usr/bin/env bash
# A private three-member etcd cluster on loopback for Zixiao's tests and
# benchmarks: its own data directories, logs and pid files under one
# directory, on client/peer ports this script owns (23791-23796), so it
# never collides with a system etcd (port 2379).
#
#   scripts/services/etcd.sh install   # apt packages (idempotent)
#   eval "$(scripts/services/etcd.sh start)"
#   scripts/services/etcd.sh stop      # the three members, their data
#
# `start` prints the lines the tests read:
#   ZIXIAO_TEST_ETCD_ENDPOINTS  the members' client URLs, comma-separated
#   ZIXIAO_TEST_ETCD_BIN        the etcd binary, for tests that start their
#                               own throwaway clusters (leader loss, restarts)
#   ZIXIAO_TEST_ETCD_DIR        this directory: member N's pid is in
#                               memberN.pid, its log in memberN.log
set -euo pipefail

dir=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/etcd
members=(1 2 3)
client_port() { echo $((23789 + 2 * $1)); } # 23791 23793 23795
peer_port() { echo $((23790 + 2 * $1)); }   # 23792 23794 23796
log() { echo "etcd.sh: $*" >&2; }

etcd_bin() { command -v etcd || echo /usr/bin/etcd; }

endpoints() {
  local m out=()
  for m in "${members[@]}"; do out+=("http://127.0.0.1:$(client_port "$m")"); done
  (IFS=,; echo "${out[*]}")
}

install() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  # The etcd-client crate compiles etcd's .proto files at build time.
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  [[ -e /usr/include/google/protobuf/descriptor.proto ]] || missing+=(libprotobuf-dev)
  if ((${#missing[@]} == 0)); then
    log "already installed"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
  # On a machine with systemd the package starts a system etcd on port
  # 2379 that nothing here uses: the tests use only the members `start` runs.
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
}

healthy() {
  timeout 5 etcdctl --endpoints="$(endpoints)" --dial-timeout=1s --command-timeout=2s \
    endpoint health >/dev/null 2>&1
}

member_alive() {
  [[ -f "$dir/member$1.pid" ]] && kill -0 "$(cat "$dir/member$1.pid")" 2>/dev/null
}

start() {
  mkdir -p "$dir"
  local m all_alive=1
  for m in "${members[@]}"; do member_alive "$m" || all_alive=0; done
  if ((all_alive)) && healthy; then
    log "already running"
  else
    stop_members
    rm -rf "$dir"/member*.data
    local cluster=() bin
    bin=$(etcd_bin)
    for m in "${members[@]}"; do cluster+=("m$m=http://127.0.0.1:$(peer_port "$m")"); done
    # etcd 3.4 refuses to start on architectures other than amd64, ppc64le
    # and s390x unless told; the tests run on amd64 and arm64 machines.
    case "$(uname -m)" in
      x86_64 | ppc64le | s390x) ;;
      aarch64) export ETCD_UNSUPPORTED_ARCH=arm64 ;;
      *) export ETCD_UNSUPPORTED_ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m) ;;
    esac
    for m in "${members[@]}"; do
      # setsid: the members must outlive this script and the caller's shell.
      setsid "$bin" --name "m$m" --data-dir "$dir/member$m.data" \
        --listen-client-urls "http://127.0.0.1:$(client_port "$m")" \
        --advertise-client-urls "http://127.0.0.1:$(client_port "$m")" \
        --listen-peer-urls "http://127.0.0.1:$(peer_port "$m")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$m")" \
        --initial-cluster "$(IFS=,; echo "${cluster[*]}")" \
        --initial-cluster-token zixiao-test --initial-cluster-state new \
        --heartbeat-interval 50 --election-timeout 500 \
        --logger zap --log-outputs stderr \
        >"$dir/member$m.log" 2>&1 </dev/null &
      echo $! >"$dir/member$m.pid"
    done
    local ok=0
    for _ in $(seq 1 300); do
      if healthy; then ok=1; break; fi
      for m in "${members[@]}"; do
        member_alive "$m" || {
          log "member $m exited; its log:"
          tail -20 "$dir/member$m.log" >&2
          exit 1
        }
      done
      sleep 0.1
    done
    ((ok)) || { log "the cluster was not healthy within 30 s"; tail -5 "$dir"/member*.log >&2; exit 1; }
    log "3 members healthy at $(endpoints)"
  fi
  echo "export ZIXIAO_TEST_ETCD_ENDPOINTS=$(endpoints)"
  echo "export ZIXIAO_TEST_ETCD_BIN=$(etcd_bin)"
  echo "export ZIXIAO_TEST_ETCD_DIR=$dir"
}

stop_members() {
  local m pid
  for m in "${members[@]}"; do
    [[ -f "$dir/member$m.pid" ]] || continue
    pid=$(cat "$dir/member$m.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$dir/member$m.pid"
  done
}

stop() {
  [[ -d "$dir" ]] || return 0
  stop_members
  rm -rf "$dir"/member*.data
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
