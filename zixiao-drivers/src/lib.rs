//! Runtime drivers, each behind a cargo feature, and [`discover`], which
//! finds the ones this machine can use and says why the others are missing;
//! [`introspect`] reads the machine's facts its node reports for placement.
//!
//! - `containerd`: [`containerd::ContainerdDriver`], OCI containers on containerd.
//! - `libvirt`: `libvirt::LibvirtDriver`, full VMs on libvirt (QEMU/KVM, Cloud Hypervisor).
//! - `microvm`: `microvm::MicrovmDriver`, microVMs on Zixiao's own KVM monitor or QEMU's microvm machine.
//!
//! The vm and microvm drivers share the node's image store
//! (`node_images::NodeImageStore`) of disks, kernels and initrds.

use std::path::PathBuf;
use std::sync::Arc;

use zixiao_core::{Driver, InstanceType, MicrovmBackend};

#[cfg(feature = "containerd")]
pub mod containerd;
#[cfg(any(feature = "containerd", feature = "libvirt", feature = "microvm"))]
mod errors;
#[cfg(any(feature = "containerd", feature = "libvirt", feature = "microvm"))]
mod instance_id;
pub mod introspect;
#[cfg(feature = "libvirt")]
pub mod libvirt;
#[cfg(any(feature = "containerd", feature = "libvirt", feature = "microvm"))]
mod log_file;
mod log_limit;
pub use log_limit::LogLimit;
#[cfg(any(feature = "libvirt", feature = "microvm"))]
mod cloud_init;
#[cfg(any(feature = "libvirt", feature = "microvm"))]
mod disk_copy;
#[cfg(feature = "microvm")]
pub mod microvm;
#[cfg(any(feature = "containerd", feature = "microvm"))]
mod net;
#[cfg(any(feature = "libvirt", feature = "microvm"))]
pub mod node_images;

/// The environment variable naming containerd's socket.
pub const CONTAINERD_SOCKET_ENV: &str = "ZIXIAO_CONTAINERD_SOCKET";
/// The environment variable naming the libvirt URI of the vm driver.
pub const LIBVIRT_URI_ENV: &str = "ZIXIAO_LIBVIRT_URI";
/// The environment variable naming the node's default microVM backend (`auto`, `vmm`, `qemu`).
pub const MICROVM_BACKEND_ENV: &str = "ZIXIAO_MICROVM_BACKEND";

/// Where the drivers find their runtimes; every field has a default.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Directory for the drivers' own files (logs, FIFOs, overlays).
    pub state_dir: PathBuf,
    /// containerd's socket (`--containerd-socket`, `ZIXIAO_CONTAINERD_SOCKET`, default `/run/containerd/containerd.sock`).
    pub containerd_socket: PathBuf,
    /// containerd namespace Zixiao's containers live in.
    pub containerd_namespace: String,
    /// libvirt's URI for the vm driver (`ZIXIAO_LIBVIRT_URI`, default `qemu:///system`).
    pub libvirt_uri: String,
    /// The libvirt domain type (`kvm`, `qemu`); `None` detects it.
    pub libvirt_domain_type: Option<String>,
    /// Where other nodes' libvirtd send live migrations to this node: the
    /// URI the source's libvirtd opens (peer-to-peer) and the address its
    /// QEMU streams memory and disk to. `None`: this node takes no live
    /// migrations (it can still send them); see
    /// [`libvirt::LibvirtOptions::with_migration`].
    pub libvirt_migration: Option<(String, std::net::IpAddr)>,
    /// The node's backend for microVMs that ask for `auto`; `None` reads
    /// `ZIXIAO_MICROVM_BACKEND`, else `auto` (the VMM where KVM is
    /// hardware-backed, QEMU otherwise).
    pub microvm_backend: Option<MicrovmBackend>,
    /// The `zixiao-vmm` binary; `None` finds it (`ZIXIAO_VMM_BIN`, next to
    /// this program, `$PATH`).
    pub vmm_binary: Option<PathBuf>,
    /// Where containers' network namespaces are pinned (default
    /// `/run/zixiao/netns`); the container driver plumbs networks there
    /// (the microvm driver's TAP devices need no namespace of their own).
    pub netns_dir: PathBuf,
    /// The QEMU binary for microVMs; `None` finds it (`ZIXIAO_QEMU_BIN`,
    /// `qemu-system-x86_64` on `$PATH`).
    pub qemu_binary: Option<PathBuf>,
    /// How much of each instance's log (a container's output, a microVM's
    /// console) the drivers keep on disk.
    pub log_limit: LogLimit,
    /// The most bytes one container image layer may unpack to (default 64
    /// GiB): a gzip layer is measured before containerd unpacks it, so a
    /// small archive cannot fill the node's disk.
    pub max_layer_bytes: u64,
}

/// The default of [`DriverConfig::max_layer_bytes`].
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 64 << 30;

impl DriverConfig {
    /// The address other nodes send live migrations to this node on, for
    /// every driver that takes them: the one of
    /// [`DriverConfig::libvirt_migration`] (the node's migration address,
    /// by default its underlay address). `None`: this node takes none.
    pub fn migration_address(&self) -> Option<std::net::IpAddr> {
        self.libvirt_migration.as_ref().map(|(_, address)| *address)
    }

    /// The defaults, with the drivers' files under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        DriverConfig {
            state_dir: state_dir.into(),
            containerd_socket: PathBuf::from("/run/containerd/containerd.sock"),
            containerd_namespace: "zixiao".to_owned(),
            netns_dir: PathBuf::from("/run/zixiao/netns"),
            libvirt_uri: "qemu:///system".to_owned(),
            libvirt_domain_type: None,
            libvirt_migration: None,
            microvm_backend: None,
            vmm_binary: None,
            qemu_binary: None,
            log_limit: LogLimit::default(),
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
        }
    }

    /// The defaults, with containerd's socket from `ZIXIAO_CONTAINERD_SOCKET`
    /// and libvirt's URI from `ZIXIAO_LIBVIRT_URI` when they are set (a frontend with a `--containerd-socket` flag reads
    /// the variable itself and calls [`DriverConfig::with_containerd_socket`]).
    pub fn from_env(state_dir: impl Into<PathBuf>) -> Self {
        let mut config = DriverConfig::new(state_dir);
        if let Some(uri) = std::env::var(LIBVIRT_URI_ENV)
            .ok()
            .filter(|v| !v.is_empty())
        {
            config.libvirt_uri = uri;
        }
        match std::env::var_os(CONTAINERD_SOCKET_ENV).filter(|v| !v.is_empty()) {
            Some(socket) => config.with_containerd_socket(socket),
            None => config,
        }
    }

    /// The same config with containerd's socket at `socket` (`--containerd-socket`).
    pub fn with_containerd_socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.containerd_socket = socket.into();
        self
    }
}

/// The drivers usable on this machine, and why each other type is not.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Drivers that reached their runtime.
    pub drivers: Vec<Arc<dyn Driver>>,
    /// Instance types without a driver, with the reason.
    pub missing: Vec<(InstanceType, String)>,
    /// What the machine's node reports for placement (see [`introspect`]).
    pub facts: introspect::Introspection,
}

/// Finds the runtimes this build supports and this machine runs, and the
/// facts its node reports for placement.
pub async fn discover(config: &DriverConfig) -> Discovered {
    let mut found = Discovered::default();
    discover_containerd(config, &mut found).await;
    discover_libvirt(config, &mut found).await;
    let kvm = discover_microvm(config, &mut found);
    found.facts = introspect::introspect(kvm);
    found
}

/// Finds the microVM driver; returns KVM's kind as its probe found it.
#[cfg(feature = "microvm")]
fn discover_microvm(config: &DriverConfig, found: &mut Discovered) -> Option<&'static str> {
    use microvm::{MicrovmDriver, MicrovmOptions};
    let default_backend = match config.microvm_backend {
        Some(backend) => backend,
        None => match std::env::var(MICROVM_BACKEND_ENV) {
            Ok(value) if !value.is_empty() => match value.parse() {
                Ok(backend) => backend,
                Err(e) => {
                    found.missing.push((
                        InstanceType::Microvm,
                        format!("no microvm runtime: {MICROVM_BACKEND_ENV}: {e}"),
                    ));
                    return Some(introspect::kvm_kind(&zixiao_vmm::kvm_support()));
                }
            },
            _ => MicrovmBackend::Auto,
        },
    };
    let options = MicrovmOptions {
        default_backend,
        qemu_binary: config.qemu_binary.clone(),
        vmm_binary: config.vmm_binary.clone(),
        migration_address: config.migration_address(),
        ..MicrovmOptions::new(&config.state_dir)
    };
    match MicrovmDriver::new(options) {
        Ok(driver) => {
            let kvm = introspect::kvm_kind(driver.kvm_support());
            // Without a netlink socket, microVMs that join networks fail with `Unsupported`.
            match zixiao_net::LinuxNetwork::connect(&config.netns_dir) {
                Ok(network) => found.drivers.push(Arc::new(driver.with_network(network))),
                Err(_) => found.drivers.push(Arc::new(driver)),
            }
            Some(kvm)
        }
        Err(e) => {
            found.missing.push((InstanceType::Microvm, e.to_string()));
            Some(introspect::kvm_kind(&zixiao_vmm::kvm_support()))
        }
    }
}

/// Without the microVM driver this build does not probe KVM.
#[cfg(not(feature = "microvm"))]
fn discover_microvm(_config: &DriverConfig, found: &mut Discovered) -> Option<&'static str> {
    found.missing.push((
        InstanceType::Microvm,
        "this build of zixiao has no microvm driver (the microvm driver is not built in)"
            .to_owned(),
    ));
    None
}

#[cfg(feature = "containerd")]
async fn discover_containerd(config: &DriverConfig, found: &mut Discovered) {
    use containerd::{ContainerdDriver, ContainerdOptions};
    let mut options = ContainerdOptions::new(&config.containerd_socket, &config.state_dir)
        .with_namespace(&config.containerd_namespace);
    options.max_layer_bytes = config.max_layer_bytes;
    match ContainerdDriver::connect(options).await {
        // Without a netlink socket, containers that join networks fail with `Unsupported`.
        Ok(driver) => match zixiao_net::LinuxNetwork::connect(&config.netns_dir) {
            Ok(network) => found.drivers.push(Arc::new(driver.with_network(network))),
            Err(_) => found.drivers.push(Arc::new(driver)),
        },
        Err(e) => found.missing.push((
            InstanceType::Container,
            containerd_missing_reason(config, &e),
        )),
    }
}

#[cfg(not(feature = "containerd"))]
async fn discover_containerd(_config: &DriverConfig, found: &mut Discovered) {
    found.missing.push((
        InstanceType::Container,
        "this build of zixiao has no container driver (the containerd driver is not built in)"
            .to_owned(),
    ));
}

#[cfg(feature = "libvirt")]
async fn discover_libvirt(config: &DriverConfig, found: &mut Discovered) {
    use libvirt::{DomainType, LibvirtDriver, LibvirtOptions};
    let mut options = LibvirtOptions::new(&config.libvirt_uri, &config.state_dir);
    match config
        .libvirt_domain_type
        .as_deref()
        .map(|t| (t, DomainType::parse(t)))
    {
        None => {}
        Some((_, Some(domain_type))) => options = options.with_domain_type(domain_type),
        Some((other, None)) => {
            found.missing.push((
                InstanceType::Vm,
                format!(
                    "no vm runtime: unknown libvirt domain type `{other}` (expected kvm or qemu)"
                ),
            ));
            return;
        }
    }
    if let Some((uri, address)) = &config.libvirt_migration {
        options = options.with_migration(uri, *address);
    }
    match LibvirtDriver::connect(options).await {
        // A local libvirtd creates TAPs in this host's namespace, where the
        // node's bridges are: check them before defining a domain.
        Ok(driver) if is_local_uri(&config.libvirt_uri) => {
            match zixiao_net::LinuxNetwork::connect(&config.netns_dir) {
                Ok(network) => found.drivers.push(Arc::new(driver.with_network(network))),
                Err(_) => found.drivers.push(Arc::new(driver)),
            }
        }
        Ok(driver) => found.drivers.push(Arc::new(driver)),
        Err(e) => found.missing.push((
            InstanceType::Vm,
            format!(
                "no vm runtime: {} (tried libvirt at {}; start libvirtd, or set {LIBVIRT_URI_ENV})",
                error_chain(&e),
                config.libvirt_uri
            ),
        )),
    }
}

/// Whether a libvirt URI names a daemon on this host (no host part:
/// `qemu:///system`, `ch:///session`).
#[cfg(feature = "libvirt")]
fn is_local_uri(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with('/'))
}

#[cfg(not(feature = "libvirt"))]
async fn discover_libvirt(_config: &DriverConfig, found: &mut Discovered) {
    found.missing.push((
        InstanceType::Vm,
        "this build of zixiao has no vm driver (the libvirt driver is not built in)".to_owned(),
    ));
}

/// An error and its causes on one line.
#[cfg(feature = "libvirt")]
fn error_chain(error: &zixiao_core::DriverError) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

/// Why the container driver is missing: the error with its causes, the
/// socket tried, and how to point Zixiao at another one.
#[cfg(feature = "containerd")]
fn containerd_missing_reason(config: &DriverConfig, error: &zixiao_core::DriverError) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    format!(
        "no container runtime: {reason} (tried {}; start containerd, or set --containerd-socket or {CONTAINERD_SOCKET_ENV})",
        config.containerd_socket.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "containerd")]
    #[tokio::test]
    async fn a_missing_socket_is_reported_with_how_to_fix_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            DriverConfig::new(dir.path()).with_containerd_socket(dir.path().join("nope.sock"));
        let found = discover(&config).await;
        let (_, reason) = found
            .missing
            .iter()
            .find(|(t, _)| *t == InstanceType::Container)
            .expect("container is missing");
        assert!(reason.contains("nope.sock"), "{reason}");
        assert!(reason.contains(CONTAINERD_SOCKET_ENV), "{reason}");
        // Other runtimes (libvirt, in an --all-features build) may be found.
        assert!(!found
            .drivers
            .iter()
            .any(|d| d.instance_type() == InstanceType::Container));
    }

    #[cfg(not(feature = "libvirt"))]
    #[tokio::test]
    async fn a_build_without_libvirt_says_so() {
        let found = discover(&DriverConfig::new("/nonexistent")).await;
        assert!(found
            .missing
            .iter()
            .any(|(t, reason)| *t == InstanceType::Vm
                && reason.contains("libvirt")
                && reason.contains("not built in")));
    }

    #[cfg(feature = "microvm")]
    #[tokio::test]
    async fn a_node_without_qemu_or_the_vmm_says_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = DriverConfig::new(dir.path());
        config.qemu_binary = Some(dir.path().join("no-qemu"));
        config.vmm_binary = Some(dir.path().join("no-vmm"));
        let found = discover(&config).await;
        let (_, reason) = found
            .missing
            .iter()
            .find(|(t, _)| *t == InstanceType::Microvm)
            .expect("microvm is missing");
        assert!(
            reason.contains("no-qemu") && reason.contains("no-vmm"),
            "{reason}"
        );
    }

    #[cfg(not(feature = "microvm"))]
    #[tokio::test]
    async fn a_build_without_microvm_says_so() {
        let found = discover(&DriverConfig::new("/nonexistent")).await;
        assert!(found
            .missing
            .iter()
            .any(|(t, reason)| *t == InstanceType::Microvm && reason.contains("not built in")));
    }

    #[cfg(not(feature = "containerd"))]
    #[tokio::test]
    async fn a_build_without_containerd_says_so() {
        let found = discover(&DriverConfig::new("/nonexistent")).await;
        assert!(found
            .missing
            .iter()
            .any(|(t, reason)| *t == InstanceType::Container && reason.contains("not built in")));
    }
}

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
