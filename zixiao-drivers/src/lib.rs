//! Runtime drivers, each behind a cargo feature, and [`discover`], which
//! finds the ones this machine can use and says why the others are missing.

use std::path::PathBuf;
use std::sync::Arc;

use zixiao_core::{Driver, InstanceType};

/// Where the drivers find their runtimes; every field has a default.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Directory for the drivers' own files (logs, FIFOs, overlays).
    pub state_dir: PathBuf,
    /// containerd's socket (`ZIXIAO_CONTAINERD_SOCKET`, default `/run/containerd/containerd.sock`).
    pub containerd_socket: PathBuf,
    /// containerd namespace Zixiao's containers live in.
    pub containerd_namespace: String,
}

impl DriverConfig {
    /// The defaults, with the drivers' files under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        DriverConfig {
            state_dir: state_dir.into(),
            containerd_socket: PathBuf::from("/run/containerd/containerd.sock"),
            containerd_namespace: "zixiao".to_owned(),
        }
    }
}

/// The drivers usable on this machine, and why each other type is not.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Drivers that reached their runtime.
    pub drivers: Vec<Arc<dyn Driver>>,
    /// Instance types without a driver, with the reason.
    pub missing: Vec<(InstanceType, String)>,
}

/// Finds the runtimes this build supports and this machine runs.
pub async fn discover(config: &DriverConfig) -> Discovered {
    let _ = config;
    let mut found = Discovered::default();
    found.missing.push((
        InstanceType::Container,
        "this build of zixiao has no container driver (the containerd driver is not built in)"
            .to_owned(),
    ));
    found.missing.push((
        InstanceType::Vm,
        "this build of zixiao has no vm driver (the libvirt driver is not built in)".to_owned(),
    ));
    found.missing.push((
        InstanceType::Microvm,
        "this build of zixiao has no microvm driver (the microVM monitor is not built in)"
            .to_owned(),
    ));
    found
}
