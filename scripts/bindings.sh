#!/usr/bin/env bash
# Builds the Python and Node bindings with their `testing` feature (which
# adds the fake-runtime constructor their tests use) and runs both suites:
# pytest for bindings/python, node:test for bindings/node.
#
# Installs what it needs on a fresh Debian machine as root: python3-venv
# (apt-get) when missing, maturin and pytest into a venv under
# target/bindings-venv, the npm packages of bindings/node/package.json.
# Uses the machine's Python 3 and Node 20 / npm. Exits non-zero when a build
# or a suite fails; both suites run either way.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ZIXIAO_BINDINGS_VENV:-$root/target/bindings-venv}"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

# --- Python ---------------------------------------------------------------
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    step "installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
if [ ! -x "$venv/bin/python" ]; then
    step "creating $venv"
    python3 -m venv "$venv"
fi
step "installing maturin and pytest"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'maturin>=1.16,<2' pytest

step "building bindings/python (dev profile, --features testing)"
start=$SECONDS
(
    cd bindings/python
    VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
        maturin develop --quiet --profile dev --features testing
)
echo "bindings/python built in $((SECONDS - start)) s"

# --- Node -----------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "error: node and npm (Node 20 or later) are needed for bindings/node" >&2
    exit 1
fi
step "installing bindings/node's npm packages"
(cd bindings/node && npm install --no-audit --no-fund --loglevel=error)

step "building bindings/node (debug, --features testing)"
start=$SECONDS
(cd bindings/node && npx napi build --platform --features testing)
echo "bindings/node built in $((SECONDS - start)) s"

# --- Suites ---------------------------------------------------------------
status=0
step "pytest bindings/python/tests"
"$venv/bin/python" -m pytest -q bindings/python/tests || status=1

step "node --test bindings/node/test"
(cd bindings/node && node --test test/) || status=1

if [ "$status" -ne 0 ]; then
    echo "bindings: a suite failed" >&2
fi
exit "$status"
