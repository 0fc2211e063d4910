#!/usr/bin/env bash
# The main job on the embedded default, on a fresh Debian machine as root:
# installs containerd, starts a private one, builds the `zixiao` CLI, builds
# and imports a busybox image from local files (no registry needed), runs
# containers through the embedded controller, shows their output and stats,
# deletes them, and stops containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
export ZIXIAO_TEST_DIR=${ZIXIAO_TEST_DIR:-/tmp/zixiao-demo}

step() { printf '\n==> %s\n' "$*"; }

step "installing containerd, runc, umoci, busybox-static, protoc"
bash scripts/services/containerd.sh install
step "starting a private containerd under $ZIXIAO_TEST_DIR"
eval "$(bash scripts/services/containerd.sh start)"
trap 'bash scripts/services/containerd.sh stop >/dev/null 2>&1 || true' EXIT

step "building zixiao"
cargo build --release --locked -p zixiao-cli --features containerd
state=${ZIXIAO_STATE_DIR:-$(mktemp -d /tmp/zixiao-state.XXXXXX)}
zixiao() {
    echo "\$ zixiao $*"
    ./target/release/zixiao --state-dir "$state" --containerd-socket "$ZIXIAO_TEST_CONTAINERD_SOCKET" "$@"
}

step "the local node and the cluster"
zixiao node list
zixiao cluster info

step "importing the busybox image built from local files"
zixiao image import "$ZIXIAO_TEST_BUSYBOX_OCI"

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
