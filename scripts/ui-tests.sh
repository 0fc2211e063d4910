#!/usr/bin/env bash
# The dashboard's browser tests (zixiao-ui/tests/browser/test_dashboard.py):
# Debian's headless Chromium driven by Playwright for Python, against a real
# `zixiao ui` on the embedded default with the test containerd
# (scripts/services/containerd.sh start). Installs what it needs once
# (the chromium package; playwright from PyPI into a venv under target/,
# without `playwright install`: the system Chromium is used), so a second
# run only builds and tests. Screenshots go to target/ui-screenshots/.
# Without containerd it skips, unless ZIXIAO_REQUIRE_RUNTIMES=1 (CI).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}

if [[ -z "${ZIXIAO_TEST_CONTAINERD_SOCKET:-}" || -z "${ZIXIAO_TEST_BUSYBOX_OCI:-}" ]]; then
    if [[ "${ZIXIAO_REQUIRE_RUNTIMES:-}" == 1 ]]; then
        echo "ui tests: ZIXIAO_TEST_CONTAINERD_SOCKET and ZIXIAO_TEST_BUSYBOX_OCI are not set" >&2
        exit 1
    fi
    echo "ui tests: skipped (start scripts/services/containerd.sh for them)"
    exit 0
fi

chromium=${ZIXIAO_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x "$chromium" ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
venv=$target/ui-venv
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import playwright" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'playwright>=1.40,<2'
fi

# The embedded xterm.js is what its lockfile builds (npm, from the registry).
bash scripts/ui-vendor.sh --check

# The binary the Rust tests built, with every runtime, and zixiao-vmm
# next to it (the microVM whose snapshots the page shows).
cargo build --quiet --all-features --locked -p zixiao-cli -p zixiao-vmm
# zixiao-vmm's build script assembles its test guest into its OUT_DIR (one
# per build configuration, all the same guest): the newest will do.
guest=$(ls -t "$target"/debug/build/zixiao-vmm-*/out/zixiao-test-guest.elf 2>/dev/null | head -n 1 || true)
ZIXIAO_VMM_TEST_GUEST=$guest ZIXIAO_BIN=$target/debug/zixiao ZIXIAO_CHROMIUM=$chromium \
    ZIXIAO_UI_SCREENSHOTS=$target/ui-screenshots \
    "$venv/bin/python" zixiao-ui/tests/browser/test_dashboard.py
