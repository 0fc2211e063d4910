#!/usr/bin/env bash
# Builds the zixiao-vmm binary to ship: release profile (the VMM's own
# size settings are in the workspace Cargo.toml), glibc linked statically
# (static-pie), so that one microVM's monitor does not map the whole of
# libc.so and ld.so: the kernel maps a file's pages 64 KiB around every page
# a process touches, and the shared libc's text alone was ~1 MiB of each
# VMM's resident memory; static, only the parts of libc the VMM calls are
# in it. With every kind of device, the VMM's peak RSS (VmHWM) goes from
# ~3.2 MiB to ~2.2 MiB (benches/vmm.rs, section "disk", ZIXIAO_BENCH_VMMS;
# zixiao-vmm/README.md, "Memory").
#
#   scripts/build-vmm.sh [--features test-hooks]   # prints the binary's path
#
# Only the binary's own compilation gets `+crt-static` (`cargo rustc`
# passes it to the final crate alone): as a RUSTFLAGS for the whole build
# it would break the proc-macro crates. Point ZIXIAO_VMM_BIN (the driver)
# or ZIXIAO_VMM_TEST_BIN (zixiao-vmm's own tests) at the result; the test
# hooks are only for running zixiao-vmm's tests against it.
#
# glibc warns that a static binary's user lookups (getpwnam_r) need its
# shared NSS modules at run time: the VMM looks a user up only when it is
# started by hand without --confinement (launch() always passes one), and
# then the `files` source is built into libc.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo rustc --locked --release -p zixiao-vmm --bin zixiao-vmm "$@" \
  -- -C target-feature=+crt-static >&2
target=${CARGO_TARGET_DIR:-target}
echo "$target/release/zixiao-vmm"
