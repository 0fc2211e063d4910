#!/usr/bin/env bash
# Builds the zixiao-vmm binary to ship, as small in memory as we know how:
# the kernel maps a binary's pages 64 KiB (or a whole large folio) around
# every page a process touches, so nearly all of a VMM's code and read-only
# data is resident, once per microVM. Hence:
#  - Cargo profile `vmm` (workspace Cargo.toml): release, the VMM's crates
#    built for size, and panic = "abort" (no landing pads: -60 KiB of text);
#  - glibc linked statically (static-pie): only the parts of libc the VMM
#    calls, not all of libc.so and ld.so (~1 MiB less);
#  - `-z pack-relative-relocs`: the relocations a static-pie applies to
#    itself at start in 1 KiB (RELR) instead of 112 KiB (RELA);
#  - scripts/vmm-unloaded-unwind-tables.ld: the unwind tables stay in the
#    file, unloaded (nothing unwinds in a panic = "abort" build).
# Peak RSS (VmHWM) with every kind of device: ~3.2 MiB for cargo's
# release build, ~2.0 MiB (2024 KiB) for this one (benches/vmm.rs, "disk",
# ZIXIAO_BENCH_VMMS; zixiao-vmm/README.md, "Memory").
#
#   scripts/build-vmm.sh [--features test-hooks]   # prints the binary's path
#
# Only the binary's own compilation gets these flags (`cargo rustc` passes
# them to the final crate alone): as a RUSTFLAGS for the whole build
# `+crt-static` would break the proc-macro crates. Cargo does not track the
# linker script: after editing it, touch zixiao-vmm/src/bin/zixiao-vmm.rs.
# Point ZIXIAO_VMM_BIN (the driver) or ZIXIAO_VMM_TEST_BIN (zixiao-vmm's own
# tests) at the result; the test hooks are only for running zixiao-vmm's
# tests against it.
#
# glibc warns that a static binary's user lookups (getpwnam_r) need its
# shared NSS modules at run time: the VMM looks a user up only when it is
# started by hand without --confinement (launch() always passes one), and
# then the `files` source is built into libc.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo rustc --locked --profile vmm -p zixiao-vmm --bin zixiao-vmm "$@" \
  -- -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs \
  -C link-arg=-Wl,-T,"$PWD/scripts/vmm-unloaded-unwind-tables.ld" >&2
target=${CARGO_TARGET_DIR:-target}
echo "$target/vmm/zixiao-vmm"
