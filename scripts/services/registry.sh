#!/usr/bin/env bash
# Private OCI registries on loopback for Zixiao's pull tests: Debian's
# docker-registry (distribution 2.x), each with its own config, storage and
# log under one directory, on ports this script owns, never the package's
# system service (port 5000):
#   - 25000: plain HTTP, anonymous;
#   - 25001: HTTPS with a certificate of a test CA made here (openssl), and
#     basic auth (htpasswd, bcrypt) for one user with a random password.
# `start` pushes the busybox OCI archive that containerd.sh builds into
# both with skopeo, as `busybox:1`.
#
#   scripts/services/registry.sh install   # apt packages (idempotent)
#   eval "$(scripts/services/registry.sh start)"
#   scripts/services/registry.sh stop      # the registries and their storage
#
# `start` prints the lines the tests read:
#   ZIXIAO_TEST_REGISTRY                 the plain registry's host:port
#   ZIXIAO_TEST_REGISTRY_BUSYBOX         busybox in it
#   ZIXIAO_TEST_TLS_REGISTRY             the TLS registry's host:port
#   ZIXIAO_TEST_TLS_REGISTRY_BUSYBOX     busybox in it
#   ZIXIAO_TEST_TLS_REGISTRY_CA          the test CA's certificate (PEM)
#   ZIXIAO_TEST_TLS_REGISTRY_USER        its user
#   ZIXIAO_TEST_TLS_REGISTRY_PASSWORD_FILE  the user's password (0600)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/registry
plain=127.0.0.1:25000
tls=127.0.0.1:25001
user=zixiao
log() { echo "registry.sh: $*" >&2; }

install() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
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

# The directory of registry NAME (plain or tls).
home() { echo "$dir/$1"; }
alive() { [[ -f "$(home "$1")/registry.pid" ]] && kill -0 "$(cat "$(home "$1")/registry.pid")" 2>/dev/null; }
answers() {
  case "$1" in
    plain) curl -fsS -o /dev/null "http://$plain/v2/" 2>/dev/null ;;
    # 401 without credentials: it answers, over TLS, with the test CA.
    tls) [[ "$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$(home tls)/ca.pem" "https://$tls/v2/" 2>/dev/null)" == 401 ]] ;;
  esac
}

# A test CA and a certificate for 127.0.0.1 it issued, and the user's
# bcrypt password file: made once per registry directory.
make_secrets() {
  local d
  d=$(home tls)
  [[ -f "$d/htpasswd" ]] && return
  mkdir -p "$d"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj "/CN=Zixiao test registry CA" -keyout "$d/ca-key.pem" -out "$d/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=127.0.0.1" -keyout "$d/key.pem" -out "$d/cert.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/cert.ext"
    openssl x509 -req -in "$d/cert.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
      -days 30 -extfile "$d/cert.ext" -out "$d/cert.pem" 2>/dev/null
    openssl rand -hex 16 >"$d/password"
    htpasswd -Bbn "$user" "$(cat "$d/password")" >"$d/htpasswd"
  )
  chmod 0644 "$d/ca.pem"
}

# Starts registry NAME on ADDRESS with the `http:` and `auth:` sections
# given, unless it already answers.
start_one() {
  local name=$1 address=$2 http=$3 auth=$4 d
  d=$(home "$name")
  mkdir -p "$d"
  if alive "$name" && answers "$name"; then
    log "$name registry already running at $address"
    return
  fi
  stop_one "$name"
  rm -rf "$d/storage"
  cat >"$d/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $d/storage
  delete:
    enabled: true
http:
  addr: $address
$http
$auth
CONFIG
  # setsid: the registry must outlive this script and the caller's shell.
  setsid docker-registry serve "$d/config.yml" >"$d/registry.log" 2>&1 </dev/null &
  echo $! >"$d/registry.pid"
  for _ in $(seq 1 100); do
    if answers "$name"; then
      log "$name registry running at $address"
      return
    fi
    alive "$name" || { log "the $name registry exited; its log:"; tail -20 "$d/registry.log" >&2; exit 1; }
    sleep 0.1
  done
  log "the $name registry did not answer within 10 s"
  exit 1
}

start() {
  mkdir -p "$dir"
  stop_legacy
  make_secrets
  local t
  t=$(home tls)
  start_one plain "$plain" "" ""
  start_one tls "$tls" "  tls:
    certificate: $t/cert.pem
    key: $t/key.pem" "auth:
  htpasswd:
    realm: zixiao-test
    path: $t/htpasswd"
  local busybox=${ZIXIAO_TEST_BUSYBOX_OCI:-${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/containerd/busybox.oci.tar}
  if [[ ! -f "$busybox" ]]; then
    "$here/../images/busybox-oci.sh" "$busybox" >&2
  fi
  if ! skopeo inspect --tls-verify=false "docker://$plain/busybox:1" >/dev/null 2>&1; then
    skopeo copy --quiet --dest-tls-verify=false "oci-archive:$busybox" "docker://$plain/busybox:1" >&2
    log "pushed busybox:1 to $plain"
  fi
  # skopeo reads a CA from a directory of *.crt files.
  mkdir -p "$t/certs.d"
  cp "$t/ca.pem" "$t/certs.d/ca.crt"
  local creds="$user:$(cat "$t/password")"
  if ! skopeo inspect --cert-dir "$t/certs.d" --creds "$creds" "docker://$tls/busybox:1" >/dev/null 2>&1; then
    skopeo copy --quiet --dest-cert-dir "$t/certs.d" --dest-creds "$creds" \
      "oci-archive:$busybox" "docker://$tls/busybox:1" >&2
    log "pushed busybox:1 to $tls"
  fi
  echo "export ZIXIAO_TEST_REGISTRY=$plain"
  echo "export ZIXIAO_TEST_REGISTRY_BUSYBOX=$plain/busybox:1"
  echo "export ZIXIAO_TEST_TLS_REGISTRY=$tls"
  echo "export ZIXIAO_TEST_TLS_REGISTRY_BUSYBOX=$tls/busybox:1"
  echo "export ZIXIAO_TEST_TLS_REGISTRY_CA=$t/ca.pem"
  echo "export ZIXIAO_TEST_TLS_REGISTRY_USER=$user"
  echo "export ZIXIAO_TEST_TLS_REGISTRY_PASSWORD_FILE=$t/password"
}

stop_one() {
  local pidfile
  pidfile="$(home "$1")/registry.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
}

stop() {
  [[ -d "$dir" ]] || return 0
  for name in plain tls; do
    stop_one "$name"
    rm -rf "$(home "$name")/storage"
  done
  stop_legacy
  log "stopped"
}

# A registry started before the layout had a directory per registry.
stop_legacy() {
  [[ -f "$dir/registry.pid" ]] || return 0
  local pid
  pid=$(cat "$dir/registry.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -rf "$dir/registry.pid" "$dir/storage" "$dir/config.yml" "$dir/registry.log"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
