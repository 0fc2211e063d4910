//! The [`Driver`] trait: what a node needs of a runtime (containerd, libvirt,
//! our microVM monitor), plus opt-in capabilities a driver implements only
//! when it really can. The controller asks for a capability and answers
//! `Unsupported` when a driver has none.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::ErrorKind;
use crate::model::{Instance, InstanceSpec, InstanceType, RuntimeSize, SnapshotName};

/// What a runtime reports about one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RuntimeState {
    /// The runtime has no trace of it.
    Missing,
    /// Created, never started (or stopped by request and reset).
    Created,
    /// Running.
    Running,
    /// Frozen by [`Pause::pause`].
    Paused,
    /// Exited by itself or was stopped.
    Exited {
        /// Exit code (128 + signal for a signal).
        code: i32,
        /// Whether the OOM killer ended it.
        oom_killed: bool,
        /// When, if the runtime knows.
        at: Option<DateTime<Utc>>,
    },
}

/// A piece of an instance's log (its console or stdout/stderr).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The bytes from the requested offset.
    pub data: Vec<u8>,
    /// Where the next read continues.
    pub next_offset: u64,
}

/// Resource usage of one instance, the same shape for every runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStats {
    /// CPU time used, in nanoseconds.
    pub cpu_time_ns: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// The memory limit, in bytes, if any.
    pub memory_limit_bytes: Option<u64>,
    /// Processes (containers) or vCPUs (VMs).
    pub pids: Option<u64>,
    /// Bytes read from disk.
    pub disk_read_bytes: Option<u64>,
    /// Bytes written to disk.
    pub disk_write_bytes: Option<u64>,
    /// Bytes received on the network.
    pub net_rx_bytes: Option<u64>,
    /// Bytes sent on the network.
    pub net_tx_bytes: Option<u64>,
}

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// This runtime, or this node, cannot do it; the message says what is missing.
    #[error("{0}")]
    Unsupported(String),
    /// The spec asks for something this runtime rejects.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The spec field, such as `spec.image`.
        field: String,
        /// Why.
        reason: String,
    },
    /// Something the instance needs is missing (an image, a kernel file).
    #[error("{0} not found")]
    NotFound(String),
    /// Something of that name exists on the runtime and is not this instance's.
    #[error("{0}")]
    AlreadyExists(String),
    /// The instance is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The node lacks the resources.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The runtime (a daemon, a device) cannot be reached.
    #[error("{runtime} is unavailable")]
    Unavailable {
        /// Which runtime.
        runtime: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The runtime failed the operation.
    #[error("{operation} failed")]
    Runtime {
        /// What was attempted (`create container web`).
        operation: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DriverError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DriverError::Unsupported(_) => ErrorKind::Unsupported,
            DriverError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            DriverError::NotFound(_) => ErrorKind::NotFound,
            DriverError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            DriverError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            DriverError::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            DriverError::Unavailable { .. } => ErrorKind::Unavailable,
            DriverError::Runtime { .. } => ErrorKind::Internal,
        }
    }
}

/// A bidirectional byte stream to an instance's console.
pub struct ConsoleStream {
    /// What the instance writes.
    pub output: Box<dyn AsyncRead + Send + Unpin>,
    /// What is typed into it.
    pub input: Box<dyn AsyncWrite + Send + Unpin>,
}

impl std::fmt::Debug for ConsoleStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleStream")
    }
}

/// A runtime that runs one [`InstanceType`] on this node.
///
/// Every call gets the whole [`Instance`] so a driver needs no state of its
/// own beyond the runtime. The controller calls these from its reconcilers,
/// possibly again after a crash, so every method is idempotent.
#[async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// The instance type this driver runs.
    fn instance_type(&self) -> InstanceType;

    /// A short name of the runtime (`containerd`, `libvirt`, `vmm`).
    fn name(&self) -> &str;

    /// The runtime that runs `instance`, recorded on it after a create: the
    /// driver's [`name`](Driver::name) unless the driver chooses among
    /// several monitors per instance (a microVM's `vmm` or `qemu`).
    fn runtime_of(&self, instance: &Instance) -> String {
        let _ = instance;
        self.name().to_owned()
    }

    /// Where the host side of `instance`'s vsock device (`spec.vsock`) is
    /// on this node, recorded on it with [`runtime_of`](Driver::runtime_of)
    /// after a create. Reads nothing; the same answer every time. `None`
    /// (the default) when it has none or the driver makes none.
    fn vsock_of(&self, instance: &Instance) -> Option<crate::model::VsockEndpoint> {
        let _ = instance;
        None
    }

    /// Creates the instance on the runtime without starting it. Idempotent:
    /// an instance that exists already is left as it is. On failure nothing
    /// is left behind. Errors: `InvalidArgument`, `NotFound` (image, kernel),
    /// `ResourceExhausted`, `Unavailable`, `Internal`.
    async fn create(&self, instance: &Instance) -> Result<(), DriverError>;

    /// Starts a created or exited instance. Idempotent: a running instance is
    /// left running. Errors: `NotFound` (never created), `Unavailable`, `Internal`.
    async fn start(&self, instance: &Instance) -> Result<(), DriverError>;

    /// Stops the instance gracefully, forcing it after `grace`. Idempotent: a
    /// stopped or missing instance is not an error. Errors: `Unavailable`, `Internal`.
    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError>;

    /// Removes the instance and everything the driver made for it (stopping
    /// it first if needed). Idempotent. Errors: `Unavailable`, `Internal`.
    async fn delete(&self, instance: &Instance) -> Result<(), DriverError>;

    /// Reports the instance's state on the runtime. Read-only. Errors: `Unavailable`, `Internal`.
    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError>;

    /// Reads up to `max` bytes of the instance's log from `offset`. Read-only.
    /// Errors: `NotFound` (no log yet), `Unavailable`.
    async fn read_log(
        &self,
        instance: &Instance,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, DriverError>;

    /// Resource usage, if the driver can measure it.
    fn stats(&self) -> Option<&dyn Stats> {
        None
    }

    /// Interactive console, if the driver offers one.
    fn console(&self) -> Option<&dyn Console> {
        None
    }

    /// Pause and resume, if the driver can freeze instances.
    fn pause(&self) -> Option<&dyn Pause> {
        None
    }

    /// Changing a running instance's CPUs and memory in place, if the
    /// runtime can.
    fn resize(&self) -> Option<&dyn Resize> {
        None
    }

    /// The node's image store, if the runtime keeps images.
    fn images(&self) -> Option<&dyn Images> {
        None
    }

    /// Snapshots of an instance's state, if the runtime can take them.
    fn snapshots(&self) -> Option<&dyn Snapshots> {
        None
    }

    /// What the runtime holds of Zixiao's on this node, if the driver can list it.
    fn inventory(&self) -> Option<&dyn Inventory> {
        None
    }

    /// Making an instance from another's disk or memory on this node, if
    /// the runtime keeps such state. A driver without it creates a clone
    /// (an instance with `clone_of`) as a new instance of the same spec,
    /// which is all a container is.
    fn clones(&self) -> Option<&dyn Clones> {
        None
    }

    /// Moving a running instance to another node's runtime while it keeps
    /// running, if the runtime can.
    fn live_migrate(&self) -> Option<&dyn LiveMigrate> {
        None
    }

    /// Copying a stopped instance's disk out of this node and into
    /// another's, for a cold migration, if the runtime keeps a disk it can
    /// hand over.
    fn cold_migrate(&self) -> Option<&dyn ColdMigrate> {
        None
    }
}

/// An optional capability of a [`Driver`], beyond its required core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// [`Driver::stats`]: measures resource usage.
    Stats,
    /// [`Driver::console`]: an interactive console.
    Console,
    /// [`Driver::pause`]: freezes and thaws instances.
    Pause,
    /// [`Driver::snapshots`]: takes snapshots.
    Snapshots,
    /// [`Driver::images`]: keeps images.
    Images,
    /// [`Driver::inventory`]: lists what it holds, for orphan sweeps.
    Inventory,
    /// [`Driver::resize`]: changes a running instance's CPUs and memory.
    Resize,
    /// [`Driver::clones`]: makes a clone from its source's disk or memory.
    Clones,
    /// [`Driver::live_migrate`]: moves a running instance to another node.
    LiveMigrate,
    /// [`Driver::cold_migrate`]: copies a stopped instance's disk between nodes.
    ColdMigrate,
}

impl Capability {
    /// Every capability, in display order.
    pub const ALL: [Capability; 10] = [
        Capability::Stats,
        Capability::Console,
        Capability::Pause,
        Capability::Snapshots,
        Capability::Images,
        Capability::Inventory,
        Capability::Resize,
        Capability::Clones,
        Capability::LiveMigrate,
        Capability::ColdMigrate,
    ];

    /// The snake_case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Stats => "stats",
            Capability::Console => "console",
            Capability::Pause => "pause",
            Capability::Snapshots => "snapshots",
            Capability::Images => "images",
            Capability::Inventory => "inventory",
            Capability::Resize => "resize",
            Capability::Clones => "clones",
            Capability::LiveMigrate => "live_migrate",
            Capability::ColdMigrate => "cold_migrate",
        }
    }

    /// Whether `driver` has it.
    pub fn of(self, driver: &dyn Driver) -> bool {
        match self {
            Capability::Stats => driver.stats().is_some(),
            Capability::Console => driver.console().is_some(),
            Capability::Pause => driver.pause().is_some(),
            Capability::Snapshots => driver.snapshots().is_some(),
            Capability::Images => driver.images().is_some(),
            Capability::Inventory => driver.inventory().is_some(),
            Capability::Resize => driver.resize().is_some(),
            Capability::Clones => driver.clones().is_some(),
            Capability::LiveMigrate => driver.live_migrate().is_some(),
            Capability::ColdMigrate => driver.cold_migrate().is_some(),
        }
    }

    /// The error of asking driver `driver` (its name) for it when it lacks
    /// it: the one wording of every such `Unsupported`, wherever the
    /// driver is called from (the controller, a node's agent).
    pub fn missing(self, driver: &str) -> DriverError {
        let what = match self {
            Capability::Stats => "cannot report stats",
            Capability::Console => "has no interactive console",
            Capability::Pause => "cannot pause instances",
            Capability::Snapshots => "cannot take snapshots",
            Capability::Images => "does not keep images",
            Capability::Inventory => "cannot list its instances",
            Capability::Resize => "cannot change a running instance's CPUs and memory",
            Capability::Clones => "cannot make clones from an instance's disk or memory",
            Capability::LiveMigrate => "cannot migrate a running instance live",
            Capability::ColdMigrate => "cannot copy an instance's disk to another node",
        };
        DriverError::Unsupported(format!("the {driver} driver {what}"))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node's driver for one instance type is: its name and its
/// optional capabilities. A node reports it for each runtime, so a server
/// that reaches the node over the network knows what it can ask.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverInfo {
    /// The driver's [`name`](Driver::name).
    pub name: String,
    /// What it can do beyond the required core.
    #[serde(default)]
    pub capabilities: BTreeSet<Capability>,
}

impl DriverInfo {
    /// What `driver` is and can do.
    pub fn of(driver: &dyn Driver) -> Self {
        DriverInfo {
            name: driver.name().to_owned(),
            capabilities: Capability::ALL
                .into_iter()
                .filter(|c| c.of(driver))
                .collect(),
        }
    }
}

/// The capability lookups every caller of a driver makes: the capability,
/// or the `Unsupported` error [`Capability::missing`] words.
impl dyn Driver + '_ {
    /// [`Driver::stats`]. Errors: `Unsupported`.
    pub fn require_stats(&self) -> Result<&dyn Stats, DriverError> {
        self.stats()
            .ok_or_else(|| Capability::Stats.missing(self.name()))
    }

    /// [`Driver::console`]. Errors: `Unsupported`.
    pub fn require_console(&self) -> Result<&dyn Console, DriverError> {
        self.console()
            .ok_or_else(|| Capability::Console.missing(self.name()))
    }

    /// [`Driver::pause`]. Errors: `Unsupported`.
    pub fn require_pause(&self) -> Result<&dyn Pause, DriverError> {
        self.pause()
            .ok_or_else(|| Capability::Pause.missing(self.name()))
    }

    /// [`Driver::snapshots`]. Errors: `Unsupported`.
    pub fn require_snapshots(&self) -> Result<&dyn Snapshots, DriverError> {
        self.snapshots()
            .ok_or_else(|| Capability::Snapshots.missing(self.name()))
    }

    /// [`Driver::images`]. Errors: `Unsupported`.
    pub fn require_images(&self) -> Result<&dyn Images, DriverError> {
        self.images()
            .ok_or_else(|| Capability::Images.missing(self.name()))
    }

    /// [`Driver::resize`]. Errors: `Unsupported`.
    pub fn require_resize(&self) -> Result<&dyn Resize, DriverError> {
        self.resize()
            .ok_or_else(|| Capability::Resize.missing(self.name()))
    }

    /// [`Driver::clones`]. Errors: `Unsupported`.
    pub fn require_clones(&self) -> Result<&dyn Clones, DriverError> {
        self.clones()
            .ok_or_else(|| Capability::Clones.missing(self.name()))
    }

    /// [`Driver::inventory`]. Errors: `Unsupported`.
    pub fn require_inventory(&self) -> Result<&dyn Inventory, DriverError> {
        self.inventory()
            .ok_or_else(|| Capability::Inventory.missing(self.name()))
    }

    /// [`Driver::live_migrate`]. Errors: `Unsupported`.
    pub fn require_live_migrate(&self) -> Result<&dyn LiveMigrate, DriverError> {
        self.live_migrate()
            .ok_or_else(|| Capability::LiveMigrate.missing(self.name()))
    }

    /// [`Driver::cold_migrate`]. Errors: `Unsupported`.
    pub fn require_cold_migrate(&self) -> Result<&dyn ColdMigrate, DriverError> {
        self.cold_migrate()
            .ok_or_else(|| Capability::ColdMigrate.missing(self.name()))
    }
}

/// The largest piece of a disk one [`DiskChunk::Data`] carries: what a
/// copy holds in memory per step, and well under a gRPC message's limit.
pub const MAX_DISK_CHUNK: usize = 1 << 20;

/// One piece of a disk being copied between nodes, in order: its bytes,
/// then once, last, the SHA-256 of all of them, which the receiver checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskChunk {
    /// The next bytes (at most [`MAX_DISK_CHUNK`]).
    Data(Vec<u8>),
    /// The end: the digest of every byte sent.
    End {
        /// SHA-256 of the whole disk file as sent.
        sha256: [u8; 32],
    },
}

/// A disk's pieces as they are read, each a [`DiskChunk`] or the error
/// that ended the read.
pub type DiskChunks = futures::stream::BoxStream<'static, Result<DiskChunk, DriverError>>;

/// A stopped instance's disks as its node hands them out
/// ([`ColdMigrate::export_disk`]): each one's size, then their pieces,
/// disk after disk in the order of `sizes`, each disk's bytes ended by its
/// own [`DiskChunk::End`]. An instance may have one disk (a VM's overlay),
/// several (a microVM's writable disks), or none (a microVM that only
/// boots read-only images: nothing to copy, a cold migration is then a
/// stop and a start on the target).
pub struct DiskExport {
    /// Each disk file's size in bytes, in order: what its pieces add up to.
    pub sizes: Vec<u64>,
    /// The pieces: each disk's bytes then its [`DiskChunk::End`], one disk
    /// after another.
    pub chunks: DiskChunks,
}

impl DiskExport {
    /// The bytes of every disk together: what a copy of it moves.
    pub fn total(&self) -> u64 {
        self.sizes.iter().sum()
    }
}

impl fmt::Debug for DiskExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskExport")
            .field("sizes", &self.sizes)
            .finish_non_exhaustive()
    }
}

/// Capability: hand a stopped instance's disks to another node of the same
/// runtime, for a cold migration (stop, copy the disks, start there).
///
/// The disks' files are always the driver's own, found from the instance's
/// id under its state directory: no path crosses a node. The source node's
/// driver reads them out with [`ColdMigrate::export_disk`]; the target's
/// writes them with [`ColdMigrate::import_disk`] to where its next
/// [`Driver::create`] of that instance takes them from instead of fresh
/// disks; a failed migration has the target drop them with
/// [`ColdMigrate::abort_import`]. The source's disks are only read: a
/// failed migration leaves them as they were.
#[async_trait]
pub trait ColdMigrate: Send + Sync {
    /// On the source node: the disks of the stopped `instance` (every one
    /// its guest can write, in an order the target's driver knows from the
    /// instance's spec; none when it has none), to be read once. Errors:
    /// `NotFound` (the runtime holds no disk of it, or not the instance),
    /// `FailedPrecondition` (it is running: stop it first), `Unsupported`
    /// (an instance whose disk cannot move, such as a linked clone),
    /// `Internal`.
    async fn export_disk(&self, instance: &Instance) -> Result<DiskExport, DriverError>;

    /// On the target node: writes `instance`'s disks of `sizes` bytes
    /// (as [`ColdMigrate::export_disk`] on the source gave them) from
    /// `chunks`, checks each against the digest that ends it, and keeps
    /// them for the next create of the instance. Returns the bytes
    /// written. Checks first what a create would (the images it is based
    /// on or boots are on this node), also with no disk to copy.
    /// Idempotent: a second import replaces the first. Errors: `NotFound`
    /// (an image it needs is not here), `AlreadyExists` (the runtime holds
    /// the instance here already), `InvalidArgument` (not as many disks as
    /// the instance has, more or fewer bytes than a size, a piece too
    /// large, no digest or a digest that differs: nothing is kept),
    /// whatever ended `chunks`, `Internal`.
    async fn import_disk(
        &self,
        instance: &Instance,
        sizes: &[u64],
        chunks: DiskChunks,
    ) -> Result<u64, DriverError>;

    /// On the target node, after a failed cold migration: removes what
    /// [`ColdMigrate::import_disk`] and a create made of `instance` here.
    /// Idempotent. Errors: `FailedPrecondition` (it runs here: the
    /// migration went through, nothing is removed), `Unavailable`,
    /// `Internal`.
    async fn abort_import(&self, instance: &Instance) -> Result<(), DriverError>;
}

/// Capability: move a running instance to the same runtime on another node
/// while it runs (its memory copied as it runs, then a short pause).
///
/// Two drivers take part: the target node's prepares the instance's files
/// with [`LiveMigrate::prepare_incoming`] and answers where to send it, the
/// source node's moves it there with [`LiveMigrate::migrate_live`], and on
/// a failure the target's [`LiveMigrate::abort_incoming`] removes what was
/// prepared. A migration never leaves two running copies: the source is
/// paused for good before the target resumes, and a failed migration
/// leaves the source running as it was.
#[async_trait]
pub trait LiveMigrate: Send + Sync {
    /// On the target node: makes what `instance` needs here before it
    /// arrives (its directory, its disk to be filled by the copy), and
    /// answers where the source sends it. Called before
    /// [`LiveMigrate::migrate_live`] on the source. Idempotent. Errors:
    /// `NotFound` (an image, kernel or initrd the instance needs is not on
    /// this node), `AlreadyExists` (the runtime holds the instance here
    /// already), `Unsupported` (an instance this runtime cannot receive),
    /// `Unavailable`, `Internal`.
    async fn prepare_incoming(&self, instance: &Instance) -> Result<MigrationTarget, DriverError>;

    /// On the source node: moves the running `instance` to `target` (what
    /// the target's [`LiveMigrate::prepare_incoming`] answered) and
    /// returns once it runs there and nothing of it is left here. On
    /// failure the instance still runs here, unchanged. Not idempotent: a
    /// second call finds nothing to move (`NotFound`). Errors: `NotFound`
    /// (the runtime holds no such instance), `FailedPrecondition` (it is
    /// not running), `Unsupported`, `Unavailable`, `Internal` (the runtime
    /// failed the migration).
    async fn migrate_live(
        &self,
        instance: &Instance,
        target: &MigrationTarget,
    ) -> Result<MigrationReport, DriverError>;

    /// On the target node, after a failed migration: removes what
    /// [`LiveMigrate::prepare_incoming`] made, unless the instance runs
    /// here (then the migration did finish, and nothing is removed).
    /// Idempotent. Errors: `Unavailable`, `Internal`.
    async fn abort_incoming(&self, instance: &Instance) -> Result<(), DriverError>;
}

/// Why microVM `instance`, run by the microvm driver's monitor `runtime`
/// (`vmm`, `qemu`: what [`Instance::runtime`] records), cannot migrate
/// live although the driver has [`LiveMigrate`]; `None` when it can. The
/// one statement of the rule, for the driver (which refuses such a
/// migration with `Unsupported`) and for the controller (which refuses it
/// before anything is reserved, and migrates cold instead in `auto` or a
/// drain): only `vmm` microVMs move live, as QEMU's own migration is not
/// driven by Zixiao; not with writable disks, which their guest writes
/// while the memory is copied and which the VMM's stream does not carry;
/// not a clone or a restored microVM, whose memory maps a snapshot only
/// its node holds.
pub fn microvm_live_refusal(instance: &Instance, runtime: &str) -> Option<String> {
    let name = &instance.name;
    if runtime == "qemu" {
        return Some(format!(
            "microVM `{name}` runs on the qemu backend, which does not migrate live: migrate \
             it with --cold (its writable disks copied, started afresh on the target)"
        ));
    }
    if instance.clone_of.is_some() || instance.spec.restore_from.is_some() {
        return Some(format!(
            "microVM `{name}` resumes from a memory snapshot that only its node holds: it \
             cannot migrate live (pass --restart to start it afresh elsewhere)"
        ));
    }
    if instance.spec.disks.iter().any(|d| !d.read_only) {
        return Some(format!(
            "microVM `{name}` has writable disks, which its guest writes while its memory is \
             copied, and the vmm backend's live migration carries memory, not disk blocks: \
             migrate it with --cold"
        ));
    }
    None
}

/// Where a live migration goes: the target node's runtime as the source
/// node's runtime reaches it, the address its migration stream is accepted
/// on, and the target driver's state directory (where the instance's files
/// go there). Built only by [`MigrationTarget::new`], which checks each part,
/// so nothing unchecked reaches a runtime's URI, command or path.
///
/// Its URI may carry a secret (a microVM target's one-time token is its
/// path): `Debug` shows the URI's scheme and authority only.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct MigrationTarget {
    uri: String,
    address: std::net::IpAddr,
    state_dir: std::path::PathBuf,
}

impl std::fmt::Debug for MigrationTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, rest) = self.uri.split_once("://").unwrap_or(("", &self.uri));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let elided = if authority.len() < rest.len() {
            "/…"
        } else {
            ""
        };
        f.debug_struct("MigrationTarget")
            .field("uri", &format_args!("{scheme}://{authority}{elided}"))
            .field("address", &self.address)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// The longest runtime URI a [`MigrationTarget`] takes.
const MAX_MIGRATION_URI: usize = 1024;

impl MigrationTarget {
    /// A target from its parts. Errors: `InvalidArgument` naming the field
    /// (`target.uri`: empty, longer than 1024 bytes, without a
    /// `scheme://`, or with a space, a control character or a quote;
    /// `target.state_dir`: not absolute, with `.` or `..` parts, or with
    /// a character outside letters, digits and `/._-+@=,:`).
    pub fn new(
        uri: &str,
        address: std::net::IpAddr,
        state_dir: &std::path::Path,
    ) -> Result<MigrationTarget, DriverError> {
        let invalid = |field: &str, reason: String| DriverError::InvalidArgument {
            field: field.to_owned(),
            reason,
        };
        if uri.is_empty() || uri.len() > MAX_MIGRATION_URI {
            return Err(invalid(
                "target.uri",
                format!("must be 1 to {MAX_MIGRATION_URI} bytes"),
            ));
        }
        if let Some(c) = uri
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '\\'))
        {
            return Err(invalid(
                "target.uri",
                format!("`{}` contains {c:?}", uri.escape_debug()),
            ));
        }
        let scheme = uri.split_once("://").map(|(scheme, _)| scheme);
        let scheme_ok = scheme.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
        if !scheme_ok {
            return Err(invalid(
                "target.uri",
                format!("`{uri}` is not a `scheme://...` URI"),
            ));
        }
        let shown = state_dir.display();
        if !state_dir.is_absolute() {
            return Err(invalid(
                "target.state_dir",
                format!("`{shown}` is not an absolute path"),
            ));
        }
        if state_dir.components().any(|c| {
            matches!(
                c,
                std::path::Component::CurDir | std::path::Component::ParentDir
            )
        }) {
            return Err(invalid(
                "target.state_dir",
                format!("`{shown}` has `.` or `..` parts"),
            ));
        }
        // The directory is written into the runtime's configuration (a
        // domain XML) verbatim: only characters that need no escaping.
        let text = state_dir.to_str().unwrap_or("\u{fffd}");
        if let Some(c) = text.chars().find(|c| !is_plain_path_char(*c)) {
            return Err(invalid(
                "target.state_dir",
                format!("`{shown}` contains {c:?}"),
            ));
        }
        Ok(MigrationTarget {
            uri: uri.to_owned(),
            address,
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// The target runtime's URI, as the source node's runtime reaches it.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The address the target accepts the migration stream on.
    pub fn address(&self) -> std::net::IpAddr {
        self.address
    }

    /// The target driver's state directory.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }
}

/// Whether `c` may appear in a [`MigrationTarget`]'s state directory (and
/// so in any path a driver rewrites with it): letters, digits, `/._-+@=,:`.
pub fn is_plain_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '@' | '=' | ',' | ':')
}

/// What a live migration took, as the runtime measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// From the call to the instance running on the target.
    pub total: Duration,
    /// How long the instance was paused between the last copy and its
    /// resumption on the target, if the runtime reports it.
    pub downtime: Option<Duration>,
    /// The memory bytes sent, if the runtime reports it.
    pub memory_bytes: Option<u64>,
    /// The disk bytes copied, if the runtime reports it.
    pub disk_bytes: Option<u64>,
    /// The memory copy rounds while the instance ran (the first copies
    /// everything), if the runtime reports them.
    #[serde(default)]
    pub rounds: Option<u32>,
}

/// Capability: make a clone (an instance whose `clone_of` names its
/// source) from its source's state on this node: a copy of a VM's disk or
/// an overlay on a frozen base of it, a microVM's memory snapshot. A
/// driver with it calls [`Clones::create_clone`] from its
/// [`Driver::create`] for such an instance, so every caller of a node (the
/// controller, an agent) creates clones as it creates anything, one change
/// of an instance at a time.
#[async_trait]
pub trait Clones: Send + Sync {
    /// Creates `clone` on the runtime from what its source `origin` holds
    /// on this node, without starting it; the source is left as it was
    /// (a VM paused for a consistent copy is resumed). Idempotent as
    /// [`Driver::create`]; on failure nothing of the clone is left.
    /// Errors: `NotFound` (the source or its snapshot is not on this
    /// node), `InvalidArgument` on `linked` (nothing to share),
    /// `FailedPrecondition` (the source is in no state to copy),
    /// `Unavailable`, `Internal`.
    async fn create_clone(
        &self,
        clone: &Instance,
        origin: &crate::model::CloneOrigin,
    ) -> Result<(), DriverError>;
}

/// Capability: list what the runtime holds of Zixiao's on this node, and
/// remove what belongs to an instance known only by its id. A node's
/// orphan sweep uses it to find runtime objects that no record explains (a
/// create cut off by `kill -9`, a record lost with its state directory),
/// and to adopt or remove them.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// The ids of the instances this runtime holds anything of on this node
    /// (a container or task, a monitor process or its run directory, a
    /// domain), whether it runs or not. Read-only. Errors: `Unavailable`.
    async fn instance_ids(&self) -> Result<std::collections::BTreeSet<String>, DriverError>;

    /// Stops at once and removes everything this runtime holds of instance
    /// `id` on this node. Idempotent: nothing held is not an error.
    /// Errors: `InvalidArgument` (not an instance id), `Unavailable`, `Internal`.
    async fn remove_orphan(&self, id: &str) -> Result<(), DriverError>;
}

/// Capability: measure an instance's resource usage.
#[async_trait]
pub trait Stats: Send + Sync {
    /// Current usage. Read-only. Errors: `FailedPrecondition` (not running), `Unavailable`.
    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError>;
}

/// Capability: attach to an instance's console.
#[async_trait]
pub trait Console: Send + Sync {
    /// Opens the console. Several may be open at once. Errors:
    /// `FailedPrecondition` (not running), `Unavailable`.
    async fn attach(&self, instance: &Instance) -> Result<ConsoleStream, DriverError>;
}

/// Capability: freeze and thaw a running instance.
#[async_trait]
pub trait Pause: Send + Sync {
    /// Freezes it. Idempotent. Errors: `FailedPrecondition` (not running), `Unavailable`.
    async fn pause(&self, instance: &Instance) -> Result<(), DriverError>;
    /// Thaws it. Idempotent. Errors: `FailedPrecondition` (not paused), `Unavailable`.
    async fn resume(&self, instance: &Instance) -> Result<(), DriverError>;
}

/// Capability: change the CPUs, memory (and disk) the runtime gives an
/// instance, while it runs. A driver implements it only when a running
/// workload takes a new size in place (a container's cgroup limits, a
/// VM's vCPUs and balloon within the maximums it was defined with); a
/// runtime that needs a restart for every size has none, and one that
/// needs it for some sizes says which in [`Resize::restart_needed`]. The
/// controller restarts the instance instead when the user allows it.
#[async_trait]
pub trait Resize: Send + Sync {
    /// Makes `instance.spec`'s size (`cpus`, `memory_mib`, their caps and
    /// maximums, `disk_gib`) the instance's on the runtime: the running
    /// workload's limits (in force when this returns), and what its next
    /// start gives it. Called by the controller after it stored the new
    /// size, for an instance created on the node, running or not, when
    /// [`Resize::restart_needed`] said none is. Idempotent. Errors:
    /// `NotFound` (the runtime holds no such instance), `InvalidArgument`
    /// (a size this runtime does not honour, naming the field; a disk
    /// smaller than it is), `Unavailable`, `Internal`.
    async fn resize(&self, instance: &Instance) -> Result<(), DriverError>;

    /// Why the running instance whose spec is `running` cannot take
    /// `next`'s size in place (`"cpus 4 is above max_cpus 2 set at
    /// create"`), or `None` when [`Resize::resize`] can. Called by the
    /// controller before it stores a new size of a running or paused
    /// instance, so a change that needs a restart is refused, or made by
    /// a restart, before anything changes. Asks nothing of the runtime.
    /// The default: every size is taken in place.
    fn restart_needed(&self, running: &InstanceSpec, next: &InstanceSpec) -> Option<String> {
        let _ = (running, next);
        None
    }

    /// The size the runtime gives the running instance now, as it reports
    /// it, or `None` when it is not running or the runtime applies a size
    /// at once (so it is the spec's). Called by reads that show what the
    /// runtime really runs ([`Instance::runtime_size`]). Read-only.
    /// Errors: `Unavailable`, `Internal`. The default: `None`.
    async fn running_size(&self, instance: &Instance) -> Result<Option<RuntimeSize>, DriverError> {
        let _ = instance;
        Ok(None)
    }
}

/// An image a runtime holds on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Its name, as instances refer to it (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The digest of its manifest or index.
    pub digest: String,
    /// Its size in bytes (compressed content).
    pub size_bytes: u64,
    /// What it holds: a container image, or a disk, kernel or initrd of
    /// the node's image store.
    #[serde(default)]
    pub kind: crate::model::ImageKind,
    /// Its format, for the node store's images (`qcow2`, `raw`, `bzimage`,
    /// `elf`, `cpio`, `gzip`...); empty for container images.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// When it was imported, where the runtime records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

impl ImageInfo {
    /// A container image, as the container runtime describes it.
    pub fn container(name: String, digest: String, size_bytes: u64) -> Self {
        ImageInfo {
            name,
            digest,
            size_bytes,
            kind: crate::model::ImageKind::Container,
            format: String::new(),
            created_at: None,
        }
    }
}

/// How far an import has come, in bytes of the archive read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// A user name and password for a registry (basic auth, or the credentials
/// a token server exchanges for a bearer token). The password never appears
/// in `Debug` output, so a request that carries it can be logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach a registry for a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullOptions {
    /// Credentials for the image's registry; without them the pull is anonymous.
    pub credentials: Option<RegistryCredentials>,
    /// Registries (`host` or `host:port`) that may be reached over plain
    /// HTTP. Loopback registries always may; every other one is HTTPS only.
    pub insecure_registries: Vec<String>,
    /// Certificate authorities trusted for this pull besides the node's
    /// system roots: for a registry whose certificate a private CA issued.
    pub registry_cas: Vec<RegistryCa>,
    /// The platform whose manifest to take from a multi-platform image;
    /// the node's own when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<ImagePlatform>,
    /// The kind of image wanted: a disk, kernel or initrd goes into the
    /// node's image store as an OCI artifact whose media types must say
    /// that kind (refused, naming both, when they say another); `None`
    /// takes the kind the artifact's media types say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::model::ImageKind>,
}

/// The most bytes of PEM one [`RegistryCa`] holds.
pub const MAX_REGISTRY_CA_BYTES: usize = 256 * 1024;

/// PEM text of one or more CA certificates a pull trusts: only
/// `CERTIFICATE` blocks (a private key given by mistake is refused, never
/// sent on), at most [`MAX_REGISTRY_CA_BYTES`]. Built by `TryFrom<String>`;
/// the registry client parses the certificates themselves when it uses
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct RegistryCa(String);

impl RegistryCa {
    /// The PEM text.
    pub fn as_pem(&self) -> &str {
        &self.0
    }

    /// The CA certificates in the PEM file at `path`, read on this
    /// machine. Errors: `InvalidArgument` on `registry_ca` naming the file
    /// (unreadable, or not only certificates).
    pub fn read(path: &std::path::Path) -> Result<Self, crate::Error> {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            crate::Error::invalid(
                "registry_ca",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        RegistryCa::try_from(pem).map_err(|e| match e {
            crate::Error::InvalidArgument { field, reason } => {
                crate::Error::invalid(field, format!("{}: {reason}", path.display()))
            }
            other => other,
        })
    }
}

impl TryFrom<String> for RegistryCa {
    type Error = crate::Error;

    /// Errors: `InvalidArgument` on `registry_ca` (empty, too large, no
    /// certificate, or a block that is not a certificate).
    fn try_from(pem: String) -> Result<Self, Self::Error> {
        let invalid = |reason: String| crate::Error::invalid("registry_ca", reason);
        if pem.len() > MAX_REGISTRY_CA_BYTES {
            return Err(invalid(format!(
                "{} bytes is more than the {MAX_REGISTRY_CA_BYTES} a CA bundle may hold",
                pem.len()
            )));
        }
        let mut certificates = 0;
        for line in pem.lines().map(str::trim) {
            let Some(label) = line
                .strip_prefix("-----BEGIN ")
                .and_then(|rest| rest.strip_suffix("-----"))
            else {
                continue;
            };
            if label != "CERTIFICATE" {
                return Err(invalid(format!(
                    "holds a `{label}` block: only CERTIFICATE blocks are trusted (never give a key)"
                )));
            }
            certificates += 1;
        }
        if certificates == 0 {
            return Err(invalid(
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
            ));
        }
        Ok(RegistryCa(pem))
    }
}

impl From<RegistryCa> for String {
    fn from(ca: RegistryCa) -> String {
        ca.0
    }
}

impl<'de> Deserialize<'de> for RegistryCa {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pem = String::deserialize(deserializer)?;
        RegistryCa::try_from(pem).map_err(serde::de::Error::custom)
    }
}

/// The most bytes one part of an [`ImagePlatform`] may have.
const MAX_PLATFORM_PART: usize = 32;

/// The platform of an image, `os/architecture[/variant]` in the names
/// OCI image indexes use (`linux/amd64`, `linux/arm64/v8`): which manifest
/// a pull takes from a multi-platform image. Built by `TryFrom<&str>`:
/// two or three parts of lowercase letters, digits and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct ImagePlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl ImagePlatform {
    /// `linux`, `windows`...
    pub fn os(&self) -> &str {
        &self.os
    }

    /// `amd64`, `arm64`... (Go's `GOARCH` names).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// `v7`, `v8`... when given.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }
}

impl TryFrom<&str> for ImagePlatform {
    type Error = crate::Error;

    /// Errors: `InvalidArgument` on `platform`.
    fn try_from(text: &str) -> Result<Self, Self::Error> {
        let invalid = |reason: String| {
            crate::Error::invalid("platform", format!("`{}` {reason}", text.escape_debug()))
        };
        let parts: Vec<&str> = text.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(invalid(
                "is not OS/ARCHITECTURE[/VARIANT], such as linux/amd64 or linux/arm64/v8"
                    .to_owned(),
            ));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if let Some(bad) = parts.iter().find(|part| {
            part.is_empty() || part.len() > MAX_PLATFORM_PART || !part.chars().all(allowed)
        }) {
            return Err(invalid(format!(
                "has a part `{}` that is not 1 to {MAX_PLATFORM_PART} lowercase letters, digits or `_`",
                bad.escape_debug()
            )));
        }
        Ok(ImagePlatform {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }
}

impl std::fmt::Display for ImagePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl From<ImagePlatform> for String {
    fn from(platform: ImagePlatform) -> String {
        platform.to_string()
    }
}

impl<'de> Deserialize<'de> for ImagePlatform {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ImagePlatform::try_from(text.as_str()).map_err(serde::de::Error::custom)
    }
}

/// What a pull has done so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullProgress {
    /// The manifest for this node's platform was found.
    Resolved {
        /// The manifest's digest.
        digest: String,
        /// How many blobs (config and layers) follow.
        blobs: usize,
        /// Their size in bytes.
        bytes: u64,
    },
    /// One blob was fetched and its digest and size verified.
    Fetched {
        /// Its digest.
        digest: String,
        /// Its size in bytes.
        size: u64,
        /// Its position, from 1.
        index: usize,
        /// How many blobs there are.
        count: usize,
    },
    /// Every blob is verified; the runtime is storing and unpacking them.
    Unpacking,
}

/// Capability: import, list and remove images on the node.
#[async_trait]
pub trait Images: Send + Sync {
    /// Imports every image of a local archive (an OCI image layout tar or a
    /// docker-archive tar), calling `progress` as it reads. With `name`, the
    /// archive must hold one image, stored under `name` whatever the archive
    /// calls it (a full name, a bare tag such as umoci's `latest`, or
    /// nothing). Idempotent: an image imported again is updated. On failure
    /// nothing is left behind. Errors: `NotFound` (no such file),
    /// `InvalidArgument` (not a valid archive, an image without a name, or
    /// `name` for an archive of several images, naming what is wrong),
    /// `Unavailable`.
    async fn import(
        &self,
        archive: &std::path::Path,
        name: Option<&crate::model::ImageName>,
        progress: &(dyn Fn(ImportProgress) + Send + Sync),
    ) -> Result<Vec<ImageInfo>, DriverError>;

    /// Pulls `reference` from its registry onto the node, verifying every
    /// blob's digest and size, and stores it as [`Images::import`] does.
    /// Idempotent: an image pulled again is updated. On failure nothing is
    /// left behind. Errors: `NotFound` (no such repository, tag or digest,
    /// or no manifest for this platform), `InvalidArgument` (the registry
    /// served content that does not match its digest or is malformed),
    /// `FailedPrecondition` (plain HTTP to a registry not marked insecure,
    /// credentials refused), `Unavailable` (the registry or runtime cannot
    /// be reached), `Unsupported` (this runtime cannot pull, the default).
    async fn pull(
        &self,
        reference: &crate::model::ImageRef,
        options: &PullOptions,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<ImageInfo, DriverError> {
        let _ = (options, progress);
        Err(DriverError::Unsupported(format!(
            "this runtime cannot pull images from a registry (`{reference}`)"
        )))
    }

    /// Copies `file` (a regular file on the node) into the node's image
    /// store as image `name` of `kind` (a disk, a kernel or an initrd),
    /// after checking its content is one. Idempotent for the same content;
    /// a name already used by other content is `AlreadyExists`. On failure
    /// nothing is left behind. Errors: `NotFound` (no such file),
    /// `InvalidArgument` (not a file of that kind, naming why),
    /// `AlreadyExists`, `Unavailable`, `Unsupported` (this runtime keeps
    /// no image store, the default).
    async fn import_file(
        &self,
        file: &std::path::Path,
        name: &crate::model::NodeImageName,
        kind: crate::model::ImageKind,
    ) -> Result<ImageInfo, DriverError> {
        let _ = (file, name);
        Err(DriverError::Unsupported(format!(
            "this runtime keeps no {kind} images"
        )))
    }

    /// Every image on the node, by name. Errors: `Unavailable`.
    async fn list(&self) -> Result<Vec<ImageInfo>, DriverError>;

    /// Removes an image by name. Errors: `NotFound`, `FailedPrecondition`
    /// (an instance uses it), `Unavailable`.
    async fn remove(&self, name: &str) -> Result<(), DriverError>;
}

/// A snapshot of one instance, as its runtime describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name, unique per instance.
    pub name: String,
    /// When it was taken, if the runtime records it.
    pub created_at: Option<DateTime<Utc>>,
    /// Whether it holds the memory (the instance was running) as well as the disks.
    pub includes_memory: bool,
    /// Whether it is the one the instance last took or reverted to.
    pub current: bool,
}

/// Capability: snapshot an instance's disks (and memory, when it runs) and
/// go back to a snapshot later.
#[async_trait]
pub trait Snapshots: Send + Sync {
    /// Takes snapshot `name` of the instance, running or stopped. Idempotent:
    /// a snapshot of that name is returned as it is. Names are
    /// [`SnapshotName`]s, parsed where they come in (a request, an agent
    /// call), so each is a plain file name on every runtime. Errors:
    /// `NotFound` (no such instance on the runtime), `FailedPrecondition`
    /// (the instance cannot be snapshotted, such as one without a disk),
    /// `Unavailable`, `Internal`.
    async fn create(
        &self,
        instance: &Instance,
        name: &SnapshotName,
    ) -> Result<SnapshotInfo, DriverError>;

    /// The instance's snapshots, oldest first. Read-only. Errors:
    /// `NotFound` (no such instance), `Unavailable`.
    async fn list(&self, instance: &Instance) -> Result<Vec<SnapshotInfo>, DriverError>;

    /// Puts the instance back to snapshot `name`: its disks, and its memory
    /// and run state when the snapshot has them. Idempotent. Errors:
    /// `NotFound` (instance or snapshot), `Unavailable`, `Internal`.
    async fn revert(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError>;

    /// Deletes snapshot `name`. Idempotent: a missing snapshot is not an
    /// error. Errors: `NotFound` (no such instance), `Unavailable`, `Internal`.
    async fn delete(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_targets_debug_form_hides_what_follows_the_authority() {
        let token = "ab".repeat(32);
        let target = MigrationTarget::new(
            &format!("zxvmm://10.0.0.2:4711/{token}"),
            "10.0.0.2".parse().expect("an address"),
            std::path::Path::new("/var/lib/zixiao"),
        )
        .expect("a target");
        let shown = format!("{target:?}");
        assert!(!shown.contains(&token), "{shown}");
        assert!(shown.contains("zxvmm://10.0.0.2:4711/…"), "{shown}");
        assert_eq!(target.uri(), format!("zxvmm://10.0.0.2:4711/{token}"));
    }

    #[test]
    fn only_vmm_microvms_without_writable_disks_or_snapshots_migrate_live() {
        use crate::model::{CreateInstance, DiskSpec, InstanceSpec};
        let spec = InstanceSpec::microvm("/k");
        let vm = Instance::new("id-1", CreateInstance::new("m", spec), chrono::Utc::now());
        assert_eq!(microvm_live_refusal(&vm, "vmm"), None);
        let why = microvm_live_refusal(&vm, "qemu").expect("qemu");
        assert!(
            why.contains("qemu backend") && why.contains("--cold"),
            "{why}"
        );

        let mut read_only = vm.clone();
        read_only.spec.disks = vec!["tools:ro".parse::<DiskSpec>().expect("a disk")];
        assert_eq!(microvm_live_refusal(&read_only, "vmm"), None);
        let mut writable = vm.clone();
        writable.spec.disks = vec![DiskSpec::new("data")];
        let why = microvm_live_refusal(&writable, "vmm").expect("a writable disk");
        assert!(
            why.contains("writable disks") && why.contains("--cold"),
            "{why}"
        );

        let mut restored = vm.clone();
        restored.spec.restore_from = Some("/snapshots/s1".into());
        let why = microvm_live_refusal(&restored, "vmm").expect("a restore");
        assert!(why.contains("snapshot"), "{why}");
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_registry_ca_holds_only_certificates() {
        let two = format!("{CERT}{CERT}");
        assert_eq!(RegistryCa::try_from(two.clone()).unwrap().as_pem(), two);
        for (pem, reason) in [
            (String::new(), "no PEM certificate"),
            ("not pem".to_owned(), "no PEM certificate"),
            (
                format!("{CERT}-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"),
                "`PRIVATE KEY` block",
            ),
            ("x".repeat(MAX_REGISTRY_CA_BYTES + 1), "more than"),
        ] {
            let err = RegistryCa::try_from(pem).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
            let message = err.to_string();
            assert!(
                message.contains("registry_ca") && message.contains(reason),
                "{message}"
            );
        }
    }

    #[test]
    fn an_image_platform_is_os_architecture_and_maybe_a_variant() {
        let arm = ImagePlatform::try_from("linux/arm64/v8").unwrap();
        assert_eq!(
            (arm.os(), arm.architecture(), arm.variant()),
            ("linux", "arm64", Some("v8"))
        );
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        let json = serde_json::to_string(&arm).unwrap();
        assert_eq!(serde_json::from_str::<ImagePlatform>(&json).unwrap(), arm);
        for (text, reason) in [
            ("linux", "is not OS/ARCHITECTURE"),
            ("linux/amd64/v1/x", "is not OS/ARCHITECTURE"),
            ("linux//v8", "part ``"),
            ("Linux/amd64", "part `Linux`"),
            ("linux/amd64\n", "part `amd64\\n`"),
            ("linux/../amd64", "part `..`"),
        ] {
            let err = ImagePlatform::try_from(text).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
            let message = err.to_string();
            assert!(
                message.contains("platform") && message.contains(reason),
                "{text}: {message}"
            );
        }
        assert!(serde_json::from_str::<ImagePlatform>("\"linux\"").is_err());
    }

    #[test]
    fn a_registry_ca_is_checked_when_read_back() {
        let ca = RegistryCa::try_from(CERT.to_owned()).unwrap();
        let json = serde_json::to_string(&ca).unwrap();
        assert_eq!(serde_json::from_str::<RegistryCa>(&json).unwrap(), ca);
        assert!(serde_json::from_str::<RegistryCa>("\"no certificate\"").is_err());
    }
}
