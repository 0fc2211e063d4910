//! The vm driver: full virtual machines through libvirt (QEMU/KVM, QEMU's
//! software emulation, or Cloud Hypervisor's `ch://` driver), the runtime
//! operators already run.
//!
//! Each instance is one persistent libvirt domain named `<prefix><name>`
//! (`zixiao-web`; `<prefix><name>-<id>` when another instance's domain
//! holds that name), whose UUID is the instance's id and whose metadata
//! carries the id, so the driver keeps no state of its own: after a
//! restart it finds its domains by UUID or name and checks the id (see
//! [`LibvirtDriver::managed_domains`]). Its
//! files live under `<state_dir>/libvirt/<instance id>/`: the qcow2 overlay
//! on the instance's image and the serial console's log. An instance on
//! networks gets one virtio NIC per attachment, on the network's bridge
//! (see `network`).
//!
//! Modules: [`xml`] (the domain XML writer), `connection` (a self-healing
//! connection, calls on the blocking pool), `disks` (overlays with
//! `qemu-img`), `lifecycle`, `network` (NICs on the networks' bridges and
//! their addresses on the kernel command line), `stats` (safe wrappers over
//! libvirt's stats records), `resize` (sizes, changed live within the
//! maximums a domain is defined with), `migration` (live, peer-to-peer, to
//! another node's libvirtd), `console`, `snapshots`, `node` (host
//! introspection), `events` (lifecycle events from libvirt's event loop),
//! `error`.

mod clones;
mod cold;
mod connection;
mod console;
mod disks;
mod error;
mod events;
mod lifecycle;
mod migration;
mod network;
mod node;
mod resize;
mod snapshots;
mod stats;
pub mod xml;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use zixiao_core::driver::{Console, ConsoleStream, Inventory, Pause, Snapshots, Stats};
use zixiao_core::{
    Driver, DriverError, Instance, InstanceStats, InstanceType, LogChunk, RuntimeState,
};

use crate::instance_id::InstanceId;
use connection::Connection;
pub use events::{LifecycleEvent, LifecycleKind};
pub use lifecycle::ManagedDomain;
pub use node::{HostInfo, NumaCell};
pub use xml::DomainType;

/// The URI of the system QEMU/KVM daemon on this host.
pub const DEFAULT_URI: &str = "qemu:///system";
/// The prefix of every domain name the driver defines.
pub const DEFAULT_NAME_PREFIX: &str = "zixiao-";
/// The kernel command line of a direct kernel boot that sets none: the
/// console on the first serial port, where the driver logs it.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";
/// An instance label that keeps its overlay disk when the instance is
/// deleted (value `true`).
pub const KEEP_DISK_LABEL: &str = "libvirt.zixiao.dev/keep-disk";

/// How the vm driver reaches libvirt and lays out its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtOptions {
    /// The connection URI: `qemu:///system` (default), `qemu+tcp://host/system`,
    /// `ch:///system` (Cloud Hypervisor), `test:///default` (libvirt's mock).
    pub uri: String,
    /// Where per-instance files go: `<state_dir>/libvirt/<instance id>/`.
    /// QEMU runs as its own user, so these directories must be searchable by it.
    pub state_dir: PathBuf,
    /// The domain type; `None` detects it: `kvm` when libvirt offers KVM and
    /// it is hardware-backed, else `qemu` (software emulation).
    pub domain_type: Option<DomainType>,
    /// The prefix of domain names.
    pub name_prefix: String,
    /// This node's libvirt as other nodes' libvirtd reach it, for live
    /// migrations to this node (`qemu+tls://node-b/system`); `None` takes none.
    pub migration_uri: Option<String>,
    /// The address other nodes' QEMU sends a migration stream to.
    pub migration_address: Option<std::net::IpAddr>,
}

impl LibvirtOptions {
    /// The defaults for `uri`, with files under `state_dir`.
    pub fn new(uri: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        LibvirtOptions {
            uri: uri.into(),
            state_dir: state_dir.into(),
            domain_type: None,
            name_prefix: DEFAULT_NAME_PREFIX.to_owned(),
            migration_uri: None,
            migration_address: None,
        }
    }

    /// The same options taking live migrations: other nodes' libvirtd reach
    /// this one at `uri` and send the migration stream to `address`.
    pub fn with_migration(mut self, uri: impl Into<String>, address: std::net::IpAddr) -> Self {
        self.migration_uri = Some(uri.into());
        self.migration_address = Some(address);
        self
    }

    /// The same options with the domain type forced to `domain_type`.
    pub fn with_domain_type(mut self, domain_type: DomainType) -> Self {
        self.domain_type = Some(domain_type);
        self
    }

    /// The same options with domain names starting with `prefix`.
    pub fn with_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }
}

/// The vm driver (`InstanceType::Vm`) on one libvirt daemon.
///
/// ```no_run
/// # async fn demo() -> Result<(), zixiao_core::DriverError> {
/// use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
/// let driver = LibvirtDriver::connect(LibvirtOptions::new("qemu:///system", "/var/lib/zixiao")).await?;
/// println!("domains run as type {}", driver.domain_type());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LibvirtDriver {
    conn: Connection,
    options: LibvirtOptions,
    domain_type: DomainType,
    host: HostInfo,
    events: events::Events,
    /// The node's networks, where bridges are checked before a domain on
    /// them is defined (see `network`).
    network: Option<zixiao_net::LinuxNetwork>,
    /// The node's disks, kernels and initrds, which specs name.
    images: crate::node_images::NodeImageStore,
}

impl LibvirtDriver {
    /// Connects to libvirt, reads the host's capabilities and chooses the
    /// domain type. Errors: `Unavailable` naming the URI (daemon down,
    /// refused), `Unsupported` (the host offers no usable domain type, or
    /// not the forced one), `InvalidArgument` (an empty name prefix).
    pub async fn connect(options: LibvirtOptions) -> Result<LibvirtDriver, DriverError> {
        if options.name_prefix.is_empty() {
            return Err(error::invalid(
                "name_prefix",
                "must not be empty: it tells Zixiao's domains from others",
            ));
        }
        let conn = Connection::open(&options.uri).await?;
        let host = node::host_info(&conn).await?;
        let domain_type = node::choose_domain_type(
            &options.uri,
            &host.domain_types,
            options.domain_type,
            node::kvm_is_hardware_backed(),
        )?;
        let events = events::Events::register(&conn).await;
        Ok(LibvirtDriver {
            conn,
            images: crate::node_images::NodeImageStore::new(&options.state_dir),
            options,
            domain_type,
            host,
            events,
            network: None,
        })
    }

    /// The same driver, checking that the bridges of an instance's networks
    /// exist in `network`'s namespace before its domain is defined, so a
    /// network missing on the node fails `create` with `FailedPrecondition`
    /// and leaves nothing. `network` must live in libvirtd's network
    /// namespace (where libvirt creates the VMs' TAP devices). Without it,
    /// the same error comes from `start`.
    pub fn with_network(mut self, network: zixiao_net::LinuxNetwork) -> Self {
        self.network = Some(network);
        self
    }

    /// The options it was connected with.
    pub fn options(&self) -> &LibvirtOptions {
        &self.options
    }

    /// The domain type its domains are defined with.
    pub fn domain_type(&self) -> DomainType {
        self.domain_type
    }

    /// What the hypervisor host offers, as read when connecting.
    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    /// Lifecycle events of every domain on the daemon from now on (started,
    /// stopped, suspended...), as libvirt's event loop delivers them.
    pub fn lifecycle_events(&self) -> tokio::sync::broadcast::Receiver<LifecycleEvent> {
        self.events.subscribe()
    }

    /// The libvirt domain name `instance` gets when no other instance's
    /// domain holds it (else `<this>-<instance id>`).
    pub fn domain_name(&self, instance: &Instance) -> String {
        format!("{}{}", self.options.name_prefix, instance.name)
    }

    /// The directory of the instance's files, `<state dir>/libvirt/<id>`.
    /// Errors: `InvalidArgument` on `id` unless the instance's id is a
    /// UUID, so that no id leads out of that directory (`/`, `..`).
    pub fn instance_dir(&self, instance: &Instance) -> Result<PathBuf, DriverError> {
        self.dir_of(&instance.id)
    }

    /// The instance's qcow2 overlay (it exists only when the instance has a
    /// disk). Errors: as [`Self::instance_dir`].
    pub fn overlay_path(&self, instance: &Instance) -> Result<PathBuf, DriverError> {
        Ok(disks::overlay_path(&self.instance_dir(instance)?))
    }

    /// The file the serial console's output is appended to. Errors: as
    /// [`Self::instance_dir`].
    pub fn console_log_path(&self, instance: &Instance) -> Result<PathBuf, DriverError> {
        Ok(self.instance_dir(instance)?.join("console.log"))
    }

    /// The directory of instance `id`'s files, for an id that is a UUID.
    pub(crate) fn dir_of(&self, id: &str) -> Result<PathBuf, DriverError> {
        let id = InstanceId::try_from(id)?;
        Ok(self.options.state_dir.join("libvirt").join(id.as_str()))
    }
}

#[async_trait]
impl Driver for LibvirtDriver {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Vm
    }

    fn name(&self) -> &str {
        "libvirt"
    }

    /// Registry references in the spec are pulled into the node's store
    /// first, as the spec's pull policy says.
    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        self.images
            .pull_for(&instance.spec, &Default::default())
            .await?;
        self.create_domain(instance).await
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        self.start_domain(instance).await
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError> {
        self.stop_domain(instance, grace).await
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        self.delete_domain(instance).await
    }

    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError> {
        self.inspect_domain(instance).await
    }

    async fn read_log(
        &self,
        instance: &Instance,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        let what = format!("console log of instance `{}`", instance.name);
        crate::log_file::read(&self.console_log_path(instance)?, &what, offset, max).await
    }

    fn stats(&self) -> Option<&dyn Stats> {
        Some(self)
    }

    fn console(&self) -> Option<&dyn Console> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn Pause> {
        Some(self)
    }

    fn resize(&self) -> Option<&dyn zixiao_core::driver::Resize> {
        Some(self)
    }

    fn snapshots(&self) -> Option<&dyn Snapshots> {
        Some(self)
    }

    fn images(&self) -> Option<&dyn zixiao_core::driver::Images> {
        Some(&self.images)
    }

    fn inventory(&self) -> Option<&dyn Inventory> {
        Some(self)
    }

    fn clones(&self) -> Option<&dyn zixiao_core::driver::Clones> {
        Some(self)
    }

    fn live_migrate(&self) -> Option<&dyn zixiao_core::driver::LiveMigrate> {
        Some(self)
    }

    fn cold_migrate(&self) -> Option<&dyn zixiao_core::driver::ColdMigrate> {
        Some(self)
    }
}

/// What the vm driver holds of an instance: the domains with its name
/// prefix and Zixiao metadata whose instance directory is in this driver's
/// state directory. (Directories without a domain are not listed: one kept
/// on purpose by [`KEEP_DISK_LABEL`] has no domain.)
#[async_trait]
impl Inventory for LibvirtDriver {
    async fn instance_ids(&self) -> Result<BTreeSet<String>, DriverError> {
        let instances = self.options.state_dir.join("libvirt");
        Ok(self
            .managed_domains()
            .await?
            .into_iter()
            .map(|d| d.instance_id)
            // Only what `remove_orphan` could remove.
            .filter(|id| InstanceId::try_from(id.as_str()).is_ok())
            // Only this installation's: its instance directory is made
            // before the domain is defined and removed after it is
            // undefined, so a domain without one belongs to another state
            // directory on this libvirt and is never taken for an orphan.
            .filter(|id| instances.join(id).is_dir())
            .collect())
    }

    async fn remove_orphan(&self, id: &str) -> Result<(), DriverError> {
        let id = InstanceId::try_from(id)?;
        self.remove_instance_domains(&id).await
    }
}

#[async_trait]
impl Stats for LibvirtDriver {
    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError> {
        self.domain_stats(instance).await
    }
}

#[async_trait]
impl Pause for LibvirtDriver {
    async fn pause(&self, instance: &Instance) -> Result<(), DriverError> {
        self.suspend(instance).await
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        self.resume_domain(instance).await
    }
}

#[async_trait]
impl Console for LibvirtDriver {
    async fn attach(&self, instance: &Instance) -> Result<ConsoleStream, DriverError> {
        self.attach_console(instance).await
    }
}
