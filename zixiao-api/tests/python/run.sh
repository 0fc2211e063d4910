#!/usr/bin/env bash
# Runs test_grpc_client.py: a Python client of the gRPC protocol (grpcio,
# grpcio-tools, grpcio-reflection, grpcio-status from PyPI, in a virtual
# environment under target/) against a real `zixiao server --embedded`
# over the test containerd (scripts/services/containerd.sh start). Without
# containerd it skips, unless ZIXIAO_REQUIRE_RUNTIMES=1 (CI), where it fails.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}

if [[ -z "${ZIXIAO_TEST_CONTAINERD_SOCKET:-}" || -z "${ZIXIAO_TEST_BUSYBOX_OCI:-}" ]]; then
    if [[ "${ZIXIAO_REQUIRE_RUNTIMES:-}" == 1 ]]; then
        echo "python grpc test: ZIXIAO_TEST_CONTAINERD_SOCKET and ZIXIAO_TEST_BUSYBOX_OCI are not set" >&2
        exit 1
    fi
    echo "python grpc test: skipped (start scripts/services/containerd.sh for it)"
    exit 0
fi

# The binary the Rust tests built, with every runtime.
cargo build --quiet --all-features -p zixiao-cli
venv=$target/python-grpc-venv
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    'grpcio>=1.60' 'grpcio-tools>=1.60' 'grpcio-reflection>=1.60' 'grpcio-status>=1.60'
ZIXIAO_BIN=$target/debug/zixiao "$venv/bin/python" zixiao-api/tests/python/test_grpc_client.py
