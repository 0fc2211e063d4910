//! Zixiao's own KVM microVM monitor: one process per microVM, a Unix-socket API, snapshot and restore.
//!
//! The library has two halves. The client half ([`launch`], [`VmmClient`]) is
//! what drivers use: it spawns the `zixiao-vmm` binary detached, one per
//! microVM, and talks to it over `RUN_DIR/api.sock`. The VMM half
//! ([`server::run`], used by the binary) owns the KVM machine: guest memory,
//! kernel loading (linux-loader), boot parameters, vCPU threads, the
//! in-kernel irqchip and PIT, COM1 (vm-superio) and the i8042 reset line, and
//! snapshots and live migration (pre-copy, between two VMM processes).
//! Every VMM runs jailed and seccomp-filtered unless the launcher
//! says otherwise ([`Confinement`]).

mod acpi;
mod api;
mod boot;
#[doc(hidden)]
pub mod cgroup;
mod client;
mod config;
mod cpu;
mod devices;
pub mod jail;
pub mod layout;
mod machine;
mod migration;
mod mptable;
mod pidns_spawn;
mod seccomp;
pub mod server;
mod snapshot;
mod support;
mod tap;
pub mod test_guest;
#[doc(hidden)]
pub mod timeline;
mod virtio;

mod error;

pub use api::{exit_reasons, files, Boot, VmInfo, VmState, VmmStats};
pub use client::{launch, launch_in_netns, launch_with, VmmClient};
pub use config::{
    kernel_format, DiskConfig, KernelFormat, NetConfig, VmConfig, MAX_MEMORY_MIB, MAX_VCPUS,
    MIN_MEMORY_MIB,
};
pub use error::VmmError;
pub use jail::{Confinement, JailConfig};
pub use migration::{
    MigrationParams, MigrationReport, MAX_DOWNTIME_MS, MAX_MIGRATION_ROUNDS, MIGRATION_MAGIC,
    MIGRATION_VERSION,
};
pub use snapshot::{MAX_STATE_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_MIN_VERSION, SNAPSHOT_VERSION};
pub use support::{kvm_skip_reason, kvm_support, KvmSupport, KVM_DEVICE, KVM_DEVICE_ENV};
pub use tap::{MacAddr, TapName};
pub use virtio::balloon::{BalloonConfig, BalloonStats};
pub use virtio::vsock::{GuestCid, VsockConfig, VsockSocketName};
