#!/usr/bin/env bash
# Networking for Zixiao's tests: iproute2 and nftables (zixiao-net drives the
# kernel through netlink and `nft`; the tests look with `ip`), busybox for
# ping and its DHCP client `udhcpc`, and dnsmasq (dnsmasq-base), each
# network's DHCP responder for guests. Every networking test creates its own
# network namespace, so nothing here touches the host's network; `start`
# only names the directory where tests pin their containers' namespaces.
#
#   scripts/services/net.sh install   # apt packages (idempotent)
#   eval "$(scripts/services/net.sh start)"
#   scripts/services/net.sh stop      # unpins whatever a failed test left
#
# `start` prints `export ZIXIAO_TEST_NETNS_DIR=...`.
set -euo pipefail

dir=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/net
log() { echo "net.sh: $*" >&2; }

install() {
  local missing=()
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nft >/dev/null || missing+=(nftables)
  command -v busybox >/dev/null || missing+=(busybox-static)
  # Debian puts it in /usr/sbin, which a non-root PATH may lack.
  command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || missing+=(dnsmasq-base)
  if ((${#missing[@]} == 0)); then
    log "already installed"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

start() {
  mkdir -p "$dir/netns"
  echo "export ZIXIAO_TEST_NETNS_DIR=$dir/netns"
}

stop() {
  # Namespaces are pinned by bind mounts: unmount, then remove the files.
  { grep -F " $dir/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done
  rm -rf "$dir"
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
