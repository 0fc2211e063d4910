#!/usr/bin/env bash
# The Debian cloud image of the cloud-init boot test
# (scripts/images/debian-cloud.sh), cached under the test directory. It
# takes minutes to build, so `start` builds it in the background and
# returns at once: the build overlaps the compilation, and the one test
# that boots it waits for it (`ready` or `failed` appears in the directory).
#
#   scripts/services/cloudimg.sh install   # debootstrap, e2fsprogs, qemu-utils
#   eval "$(scripts/services/cloudimg.sh start)"
#   scripts/services/cloudimg.sh stop      # stops a build under way (the image stays cached)
#
# `start` prints ZIXIAO_TEST_CLOUD_IMAGE_DIR: where disk.qcow2, vmlinuz and
# initrd.img are once `ready` exists (`failed` holds the build's log tail).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}/cloudimg
log() { echo "cloudimg.sh: $*" >&2; }

install() {
  local missing=() p
  for p in debootstrap e2fsprogs qemu-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "already installed"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

building() { [[ -f "$dir/builder.pid" ]] && kill -0 "$(cat "$dir/builder.pid")" 2>/dev/null; }

start() {
  mkdir -p "$dir"
  # QEMU runs as libvirt-qemu: the directory must be searchable by it.
  chmod 0755 "$dir" "${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}"
  # A new image script makes a new image.
  if [[ -f "$dir/ready" && "$here/../images/debian-cloud.sh" -nt "$dir/ready" ]]; then
    rm -f "$dir/ready"
  fi
  if [[ -f "$dir/ready" ]]; then
    log "image ready in $dir"
  elif building; then
    log "image build under way in $dir"
  else
    rm -f "$dir/failed"
    # In a session of its own, so `stop` ends the whole build.
    setsid bash -c '
      dir=$1 script=$2
      if "$script" "$dir" >"$dir/build.log" 2>&1; then
        touch "$dir/ready"
      else
        { tail -20 "$dir/build.log"; tail -20 "$dir"/build/*.log 2>/dev/null || true; } >"$dir/failed"
      fi
      rm -f "$dir/builder.pid"
    ' cloudimg-build "$dir" "$here/../images/debian-cloud.sh" </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/builder.pid"
    log "building the image in the background in $dir"
  fi
  echo "export ZIXIAO_TEST_CLOUD_IMAGE_DIR=$dir"
}

stop() {
  if building; then
    kill -- "-$(cat "$dir/builder.pid")" 2>/dev/null || true
    rm -f "$dir/builder.pid"
    log "stopped the image build"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
