//! The test guests: tiny 64-bit ELF kernels built by build.rs from
//! `guest/guest.S` (command line, initrd, SMP, power-off) and from
//! `guest/blk.c` (virtio-block, virtio-net and virtio-vsock drivers) and
//! from `guest/acpi.c` (the ACPI tables, power-off and reboot) and from
//! `guest/balloon.c` (a virtio-balloon driver). Tests and
//! benchmarks boot them
//! through the real loader, boot parameters and serial port. See the
//! sources for what they print.

use std::path::PathBuf;

/// Path of the built test guest, or `None` when gcc/ld were missing at build time.
pub fn kernel_path() -> Option<PathBuf> {
    let path = env!("ZIXIAO_VMM_TEST_GUEST");
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The line the guest prints once it has read its boot parameters.
pub const READY_MARKER: &str = "ZX: ready";

/// Path of the built virtio guest (guest/blk.c), or `None` when gcc/ld were
/// missing at build time.
pub fn virtio_kernel_path() -> Option<PathBuf> {
    let path = env!("ZIXIAO_VMM_VIRTIO_GUEST");
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Path of the built ACPI guest (guest/acpi.c), or `None` when gcc/ld were
/// missing at build time.
pub fn acpi_kernel_path() -> Option<PathBuf> {
    let path = env!("ZIXIAO_VMM_ACPI_GUEST");
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Path of the built balloon guest (guest/balloon.c), or `None` when
/// gcc/ld were missing at build time.
pub fn balloon_kernel_path() -> Option<PathBuf> {
    let path = env!("ZIXIAO_VMM_BALLOON_GUEST");
    (!path.is_empty()).then(|| PathBuf::from(path))
}
