#!/usr/bin/env bash
# The main job on the embedded default, on a fresh Debian machine as root:
# installs containerd and starts it if none runs, builds the `zixiao` CLI
# and installs it as /usr/local/bin/zixiao, builds a busybox image from
# local files (no registry needed) and imports it, runs containers through
# the embedded controller in the default state directory, shows their
# output and stats, and deletes them. containerd keeps running afterwards,
# so `zixiao instance create --type container --image busybox ...` works.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
socket=${ZIXIAO_CONTAINERD_SOCKET:-/run/containerd/containerd.sock}

step() { printf '\n==> %s\n' "$*"; }

step "installing containerd, runc, umoci, busybox-static, protoc"
bash scripts/services/containerd.sh install

if ! timeout 2 ctr --address "$socket" version >/dev/null 2>&1; then
    step "starting containerd on $socket (log: /var/log/zixiao-containerd.log)"
    mkdir -p "$(dirname "$socket")"
    setsid containerd --address "$socket" >/var/log/zixiao-containerd.log 2>&1 </dev/null &
    for _ in $(seq 1 200); do
        timeout 2 ctr --address "$socket" version >/dev/null 2>&1 && break
        sleep 0.05
    done
fi

step "building zixiao"
cargo build --release --locked -p zixiao-cli --features containerd
install -m 0755 target/release/zixiao /usr/local/bin/zixiao
zixiao() {
    echo "\$ zixiao $*"
    /usr/local/bin/zixiao --containerd-socket "$socket" "$@"
}

step "the local node and the cluster"
zixiao node list
zixiao cluster info

step "building a busybox image from local files and importing it"
mkdir -p target/images
[ -s target/images/busybox.oci.tar ] || bash scripts/images/busybox-oci.sh target/images/busybox.oci.tar
zixiao image import target/images/busybox.oci.tar

# A demo interrupted earlier may have left its instances behind.
for name in hello sleeper; do
    /usr/local/bin/zixiao --containerd-socket "$socket" instance delete "$name" >/dev/null 2>&1 || true
done

step "running a container to completion"
zixiao instance create --name hello --type container --image busybox -- echo hi
zixiao instance logs hello

step "running a long-lived container and measuring it"
zixiao instance create --name sleeper --type container --image busybox --memory 64 -- sh -c 'echo started; sleep 600'
zixiao instance stats sleeper
zixiao instance list

step "cleaning up"
zixiao instance delete hello
zixiao instance delete sleeper
zixiao instance list
