#!/usr/bin/env bash
# The main job on the embedded default: builds the `zixiao` CLI and drives
# the embedded controller in a fresh state directory, as a user would.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

features=()
[ -n "${ZIXIAO_FEATURES:-}" ] && features=(--features "$ZIXIAO_FEATURES")
echo "==> building zixiao"
cargo build --release --locked -p zixiao-cli "${features[@]}"
zixiao() { ./target/release/zixiao --state-dir "$state" "$@"; }

state=${ZIXIAO_STATE_DIR:-$(mktemp -d /tmp/zixiao-demo.XXXXXX)}
echo "==> state directory: $state"

echo "==> zixiao node list"
zixiao node list
echo "==> zixiao cluster info"
zixiao cluster info
echo "==> zixiao instance create --name hello --type container --image busybox -- echo hi"
if zixiao instance create --name hello --type container --image busybox -- echo hi; then
    zixiao instance logs hello
    zixiao instance delete hello
else
    echo "(no container runtime here: the error above says what is missing)"
fi
echo "==> zixiao instance list"
zixiao instance list
