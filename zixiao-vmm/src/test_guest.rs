//! The test guest: a tiny 64-bit ELF kernel built from `guest/guest.S` by
//! build.rs. Tests and benchmarks boot it through the real loader, boot
//! parameters and serial port. See guest/guest.S for its command line.

use std::path::PathBuf;

/// Path of the built test guest, or `None` when gcc/ld were missing at build time.
pub fn kernel_path() -> Option<PathBuf> {
    let path = env!("ZIXIAO_VMM_TEST_GUEST");
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The line the guest prints once it has read its boot parameters.
pub const READY_MARKER: &str = "ZX: ready";
