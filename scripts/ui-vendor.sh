#!/usr/bin/env bash
# The dashboard's third-party browser code (xterm.js and its fit addon) is
# committed, built, under zixiao-ui/assets/vendor/ and embedded in the
# binary like the hand-written pages, so `cargo install` needs no npm. This
# script is the one way those files are made: it installs the exact
# versions of zixiao-ui/vendor/package-lock.json (`npm ci --ignore-scripts`,
# in a temporary copy: nothing lands in the source tree but the outputs)
# and copies their distributed files and licences.
#
#   scripts/ui-vendor.sh          rewrites zixiao-ui/assets/vendor/
#   scripts/ui-vendor.sh --check  rebuilds into a temporary directory and
#                                 fails, naming the file, if the committed
#                                 copies differ (scripts/ui-tests.sh runs it)
#
# To upgrade: change the versions in zixiao-ui/vendor/package.json, run
# `npm install --package-lock-only --ignore-scripts` there, then this script.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sources=$root/zixiao-ui/vendor
committed=$root/zixiao-ui/assets/vendor

check=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
if ! command -v npm >/dev/null 2>&1; then
    echo "ui-vendor: npm is needed (Node 20 or later)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$sources/package.json" "$sources/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)

# What the pages load, and the licences that must travel with it:
# destination name <- file of the installed packages.
built=$work/out
mkdir -p "$built"
while read -r name from; do
    cp "$work/node_modules/$from" "$built/$name"
done <<'FILES'
xterm.js            @xterm/xterm/lib/xterm.js
xterm.css           @xterm/xterm/css/xterm.css
xterm.LICENSE       @xterm/xterm/LICENSE
addon-fit.js        @xterm/addon-fit/lib/addon-fit.js
addon-fit.LICENSE   @xterm/addon-fit/LICENSE
FILES

if ! $check; then
    rm -rf "$committed"
    mkdir -p "$committed"
    cp "$built"/* "$committed/"
    echo "ui-vendor: wrote $(ls "$built" | wc -l) files to ${committed#"$root"/}"
    exit 0
fi

status=0
for file in "$built"/*; do
    name=${file##*/}
    if [[ ! -f "$committed/$name" ]]; then
        echo "ui-vendor: zixiao-ui/assets/vendor/$name is missing (run scripts/ui-vendor.sh)" >&2
        status=1
    elif ! cmp -s "$file" "$committed/$name"; then
        echo "ui-vendor: zixiao-ui/assets/vendor/$name differs from what its lockfile builds (run scripts/ui-vendor.sh)" >&2
        status=1
    fi
done
for file in "$committed"/*; do
    name=${file##*/}
    if [[ ! -f "$built/$name" ]]; then
        echo "ui-vendor: zixiao-ui/assets/vendor/$name is not built from the lockfile (remove it or add it here)" >&2
        status=1
    fi
done
[[ $status == 0 ]] && echo "ui-vendor: zixiao-ui/assets/vendor/ matches its lockfile"
exit $status
