//! The one API of a Zixiao deployment. Every user-facing operation is one
//! [`Request`] variant with one [`Response`] shape, carried out by one
//! method, [`Api::call`]; [`Client`] gives each operation its typed method.
//!
//! Two implementations carry requests out: the in-process [`Controller`]
//! (the embedded deployment, and what a server serves) and the gRPC client
//! of `zixiao-api`. Every frontend (the CLI, the Python, Node and uniffi
//! bindings, the web UI) holds a [`Client`] and has one code path; which
//! implementation is behind it is decided once, when it is built.
//! Cross-cutting behaviour (authorization, quotas, audit, metrics) wraps an
//! `Api`, as tower's layers wrap a service: a wrapper sees every request,
//! its [`Request::operation`] and [`Request::target`], in one place.
//!
//! [`Controller`]: crate::Controller
//!
//! ```no_run
//! # async fn example(api: std::sync::Arc<dyn zixiao_core::api::Api>) -> zixiao_core::Result<()> {
//! use zixiao_core::api::{Client, Wait};
//! use zixiao_core::{CreateInstance, InstanceSpec};
//!
//! let client = Client::new(api);
//! let web = client
//!     .create_instance(CreateInstance::new("web", InstanceSpec::container("busybox")), Wait::Settled)
//!     .await?;
//! println!("{} is {}", web.name, web.status.as_str());
//! # Ok(()) }
//! ```

pub mod access;
mod client;
mod controller;
mod host_paths;
mod page;
mod stats_history;
mod traced;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use access::{
    AuditQuery, AuditRecord, IssuedToken, Outcome, ProjectInfo, Quota, QuotaExceeded, Role,
    TokenInfo, TokenPurpose, TokenTerms, TokenText, UserInfo,
};
pub use client::{list_all_instances, Client, FOLLOW_PATIENCE, FOLLOW_RETRY};
pub use host_paths::{
    check_request as refuse_host_paths, check_request_because as refuse_host_paths_because,
    redact_host_paths, RefuseHostPaths, REDACTED_PATH,
};
pub use page::{Page, PageToken, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use stats_history::{HostReports, LatestNodeUsage, NodeUsageSample, StatsHistory, StatsSample};
pub use traced::Traced;

pub use crate::controller::{as_requested_by, OperationFilter};
use crate::controller::{ClusterInfo, DrainReport, InstanceEvent, InstanceFilter, NodeEvent};
use crate::driver::SnapshotInfo;
use crate::driver::{
    ConsoleStream, ImageInfo, ImportProgress, InstanceStats, LogChunk, PullOptions, PullProgress,
};
use crate::model::{
    Aggregate, AggregateName, AllocationRatio, CarbonIntensity, CreateInstance, CreateNetwork,
    FromTemplate, ImageKind, ImageName, ImageRef, Instance, InstanceType, InstanceUpdate,
    LabelChanges, LabelKey, LabelValue, MigrationMode, Network, NetworkStatus, Node, NodeImageName,
    Operation, OperationId, TemplateInfo, TemplateName, TemplateSpec, TraitChanges,
};
use crate::store::{Revision, StoreSummary};
use crate::Result;

/// Carries out Zixiao's user-facing operations. Implemented in-process by
/// the [`Controller`](crate::Controller) and over gRPC by `zixiao-api`, and
/// by wrappers that add behaviour around another `Api`.
#[async_trait]
pub trait Api: Send + Sync + fmt::Debug {
    /// Carries out `request`. The [`Response`] variant is the one the
    /// request's documentation names; each request's documentation also
    /// says whether it is idempotent and which error kinds it returns.
    /// Every implementation may also return `Unavailable` (the deployment
    /// cannot be reached) and `Unsupported` (this implementation cannot do
    /// that, with the reason).
    async fn call(&self, request: Request) -> Result<Response>;
}

#[async_trait]
impl<A: Api + ?Sized> Api for Arc<A> {
    async fn call(&self, request: Request) -> Result<Response> {
        (**self).call(request).await
    }
}

/// One request's handling, for an [`Api`] whose `call` matches each request
/// to a handler: the handler's own future, boxed.
///
/// A `call` that awaited every kind of request in one `match` would be one
/// state machine whose poll function holds the temporaries of every arm at
/// once (a debug build gives each its own stack slot): the controller's
/// came to about 1 MiB, and a decommission nests reconciles under it, past
/// the 2 MiB of a tokio worker thread. A handler that returns a `Handling`
/// builds its future in its own short frame; the `match` holds only a box.
pub type Handling<'a> = futures::future::BoxFuture<'a, Result<Response>>;

/// Whether a call that changes an instance answers at once, with the intent
/// stored, or once the instance has settled: its intent is met, or it
/// waits for capacity, a back-off or a person (the instance's conditions
/// say which).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Answer once the intent is stored.
    #[default]
    No,
    /// Answer once the instance has settled.
    Settled,
}

impl Wait {
    /// Whether to wait.
    pub fn settled(self) -> bool {
        self == Wait::Settled
    }
}

impl From<bool> for Wait {
    fn from(wait: bool) -> Self {
        if wait {
            Wait::Settled
        } else {
            Wait::No
        }
    }
}

/// Called as an image import reads its archive ([`ImportProgress`]) or a
/// pull fetches its blobs ([`PullProgress`]).
pub struct Progress<P = ImportProgress>(Arc<dyn Fn(P) + Send + Sync>);

impl<P> Progress<P> {
    /// Reports to `report`.
    pub fn new(report: impl Fn(P) + Send + Sync + 'static) -> Self {
        Progress(Arc::new(report))
    }

    /// Reports to nobody.
    pub fn ignore() -> Self {
        Progress::new(|_| {})
    }

    /// Reports `progress`.
    pub fn report(&self, progress: P) {
        (self.0)(progress)
    }
}

// By hand: a derive would ask `P: Clone`, which the `Arc` does not need.
impl<P> Clone for Progress<P> {
    fn clone(&self) -> Self {
        Progress(Arc::clone(&self.0))
    }
}

impl<P> Default for Progress<P> {
    fn default() -> Self {
        Progress::ignore()
    }
}

impl<P> fmt::Debug for Progress<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

/// What [`Request::ImportImages`] reads its file as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportAs {
    /// An archive of container images, its one image stored under `name`
    /// when given.
    Container {
        /// The name to store the archive's one image under, whatever name
        /// (a full one, a bare tag, or none) the archive gives it.
        name: Option<ImageName>,
    },
    /// One disk, kernel or initrd file for the node's image store.
    NodeImage {
        /// What it holds (not [`ImageKind::Container`]).
        kind: ImageKind,
        /// Its name in the store.
        name: NodeImageName,
    },
}

impl ImportAs {
    /// The kind of image it imports.
    pub fn kind(&self) -> ImageKind {
        match self {
            ImportAs::Container { .. } => ImageKind::Container,
            ImportAs::NodeImage { kind, .. } => *kind,
        }
    }
}

/// One user-facing operation. An instance is named by id or name, a node by
/// id or hostname, a network by name.
// A request is built once per call and moved, never kept in bulk: the
// size of its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Request {
    /// Validates and stores a new instance (wanted running) and, with
    /// [`Wait::Settled`], waits until it has settled.
    /// [`Response::Instance`]. Not idempotent (the name is taken once).
    /// Errors: `InvalidArgument` naming the field, `AlreadyExists`,
    /// `Unsupported` (no node can run that type), `ResourceExhausted` (an
    /// address pool); nothing is stored on error.
    CreateInstance {
        /// What to create.
        request: CreateInstance,
        /// Whether to wait until it has settled.
        wait: Wait,
    },
    /// One instance. [`Response::Instance`]. Read-only. Errors: `NotFound`.
    GetInstance {
        /// Id or name.
        instance: String,
    },
    /// The instances the filter accepts, in name order, one [`Page`] of
    /// them. [`Response::Instances`]. Read-only. Errors:
    /// `InvalidArgument` (`page_token`).
    ListInstances {
        /// Which instances.
        filter: InstanceFilter,
        /// Which of them.
        page: Page,
    },
    /// Wants the instance running (a failed one is retried at once).
    /// [`Response::Instance`]. Idempotent. Errors: `NotFound`,
    /// `FailedPrecondition` (being deleted).
    StartInstance {
        /// Id or name.
        instance: String,
        /// Whether to wait until it has settled.
        wait: Wait,
    },
    /// Wants the instance stopped on its node. [`Response::Instance`].
    /// Idempotent. Errors: `NotFound`, `FailedPrecondition` (being deleted).
    StopInstance {
        /// Id or name.
        instance: String,
        /// Whether to wait until it has settled.
        wait: Wait,
    },
    /// Stops and starts a running instance (starts a stopped one).
    /// [`Response::Instance`]. Errors: `NotFound`, `FailedPrecondition`.
    RestartInstance {
        /// Id or name.
        instance: String,
        /// Whether to wait until it has settled.
        wait: Wait,
    },
    /// Changes an instance's labels, restart policy, CPUs or memory
    /// ([`InstanceUpdate`]), in one compare-and-swap of its record; a
    /// larger size is checked against its node's free capacity and its
    /// project's quota in that same transaction. A running instance takes
    /// a new size live where its runtime can ([`Driver::resize`]); where it
    /// cannot, the update is refused unless it allows a restart
    /// (`restart_if_needed`), and then the instance is restarted with the
    /// new size. A stopped or pending one takes it at its next start.
    /// Labels and the restart policy never need a restart.
    /// [`Response::Instance`]: the instance as stored (settled with
    /// [`Wait::Settled`], which matters after a restart). Idempotent.
    /// Errors: `InvalidArgument` naming the field (an empty update too),
    /// `NotFound`, `FailedPrecondition` (being deleted, in the middle of a
    /// create or stop, or a restart is needed and not allowed: the message
    /// names the flag), `ResourceExhausted` (the node or the project
    /// quota, naming the shortfall), the runtime's errors from a live
    /// resize (the stored size is then put back). Nothing is changed on
    /// error.
    ///
    /// [`Driver::resize`]: crate::Driver::resize
    UpdateInstance {
        /// Id or name.
        instance: String,
        /// What to change.
        update: InstanceUpdate,
        /// Whether to wait until it has settled.
        wait: Wait,
    },
    /// Wants the instance deleted: removed from its node, its resources
    /// released, its record and name freed. [`Response::MaybeInstance`]:
    /// `None` once it is gone, else the instance as it is (its conditions
    /// say what holds it up). Idempotent while it exists. Errors: `NotFound`.
    DeleteInstance {
        /// Id or name.
        instance: String,
        /// Whether to wait until it is gone.
        wait: Wait,
    },
    /// Freezes a running instance in place. [`Response::Instance`].
    /// Idempotent. Errors: `NotFound`, `FailedPrecondition` (not running),
    /// `Unsupported` (its runtime cannot pause).
    PauseInstance {
        /// Id or name.
        instance: String,
    },
    /// Thaws a paused instance. [`Response::Instance`]. Idempotent. Errors:
    /// `NotFound`, `FailedPrecondition` (not paused), `Unsupported`.
    ResumeInstance {
        /// Id or name.
        instance: String,
    },
    /// Current resource usage of a placed instance. [`Response::Stats`].
    /// Read-only. Errors: `NotFound`, `FailedPrecondition` (not placed),
    /// `Unsupported`.
    InstanceStats {
        /// Id or name.
        instance: String,
    },
    /// The recent resource usage of an instance, oldest first, as the
    /// server that answers has sampled it ([`StatsHistory`]).
    /// [`Response::StatsHistory`]. Read-only. Errors: `NotFound`,
    /// `Unsupported` (nothing keeps a history: a command without a
    /// daemon).
    InstanceStatsHistory {
        /// Id or name.
        instance: String,
    },
    /// What the node's instances used together recently, oldest first, as
    /// the server that answers has sampled them ([`StatsHistory`]).
    /// [`Response::NodeStatsHistory`]. Read-only. Errors: `NotFound`,
    /// `Unsupported` (nothing keeps a history: a command without a
    /// daemon).
    NodeStatsHistory {
        /// Id or hostname.
        node: String,
    },
    /// Up to `max` bytes of the instance's log (console, or stdout and
    /// stderr) from `offset`. [`Response::Log`]. Read-only. Errors:
    /// `NotFound`, `FailedPrecondition` (not placed).
    ReadLog {
        /// Id or name.
        instance: String,
        /// Where to read from.
        offset: u64,
        /// The most bytes to return.
        max: u64,
    },
    /// The instance's log from `offset` as it grows, until the instance
    /// stops running and everything it wrote was sent.
    /// [`Response::LogStream`]. The stream holds only what it needs of the
    /// instance's node, so a follower may keep it for hours. Errors:
    /// `NotFound`, `FailedPrecondition` (not placed).
    FollowLog {
        /// Id or name.
        instance: String,
        /// Where to start.
        offset: u64,
    },
    /// Opens the instance's interactive console. [`Response::Console`].
    /// Errors: `NotFound`, `FailedPrecondition` (not running),
    /// `Unsupported` (its runtime has no console).
    AttachConsole {
        /// Id or name.
        instance: String,
    },
    /// Instance changes after store revision `after` (0: from now), then
    /// live. [`Response::InstanceEvents`]. Errors: `FailedPrecondition`
    /// (that history was compacted).
    WatchInstances {
        /// The revision to start after.
        after: Revision,
    },
    /// Takes snapshot `name` of the instance (its disks, and its memory when
    /// it runs) and, with `to`, copies it into that new directory on the
    /// caller's machine (see [`Request::ExportSnapshot`]): all or nothing,
    /// `to` is checked before the snapshot is taken and the snapshot is
    /// deleted again if the copy fails. [`Response::Snapshot`]. Idempotent.
    /// Errors: `NotFound`, `InvalidArgument` (the name, `to`),
    /// `FailedPrecondition`, `Unsupported` (the runtime; or `to` where the
    /// caller's files cannot be reached).
    CreateSnapshot {
        /// Id or name.
        instance: String,
        /// The snapshot's name.
        name: String,
        /// A new directory on the caller's machine to copy it to.
        to: Option<PathBuf>,
    },
    /// The instance's snapshots, oldest first. [`Response::Snapshots`].
    /// Read-only. Errors: `NotFound`, `Unsupported`.
    ListSnapshots {
        /// Id or name.
        instance: String,
    },
    /// Puts the instance back to snapshot `name`. [`Response::Done`].
    /// Errors: `NotFound` (instance or snapshot), `Unsupported`.
    RevertSnapshot {
        /// Id or name.
        instance: String,
        /// The snapshot's name.
        name: String,
    },
    /// Deletes snapshot `name`. [`Response::Done`]. Idempotent. Errors:
    /// `NotFound` (instance), `Unsupported`.
    DeleteSnapshot {
        /// Id or name.
        instance: String,
        /// The snapshot's name.
        name: String,
    },
    /// Copies snapshot `name` out of the node's runtime into directory `to`
    /// on the caller's machine. [`Response::Done`]. Only the embedded
    /// deployment reaches the node's files: elsewhere `Unsupported`.
    /// Errors: `NotFound`, `InvalidArgument` (`to`), `Unsupported`.
    ExportSnapshot {
        /// Id or name.
        instance: String,
        /// The snapshot's name.
        name: String,
        /// The directory to copy it to.
        to: PathBuf,
    },
    /// Creates instance `name` from a snapshot directory (taken with
    /// [`Request::ExportSnapshot`]) on the caller's machine; it resumes where
    /// the snapshot was taken. [`Response::Instance`]. Only the embedded
    /// deployment reaches the caller's files: elsewhere `Unsupported`.
    /// Errors: those of [`Request::CreateInstance`], `InvalidArgument` (not
    /// a snapshot directory).
    RestoreInstance {
        /// The new instance's name.
        name: String,
        /// The snapshot directory.
        from: PathBuf,
        /// Whether to wait until it has settled.
        wait: Wait,
    },
    /// Creates instance `name` as a clone of `source`: a new instance (its
    /// own id, MACs and addresses) with the source's labels and spec,
    /// `clone_of` naming the source, on the source's node. A container is
    /// created afresh from the same image and spec; a VM starts from a
    /// full copy of the source's disk (at `snapshot`, or now, the source
    /// paused during the copy), or with `linked` from an overlay on a
    /// frozen base of it that the source keeps (its delete is refused
    /// while linked clones use it); a microVM of the vmm backend resumes
    /// where the source was at `snapshot`, or at a snapshot taken for the
    /// clone. [`Response::Instance`]. Not idempotent (the name is taken
    /// once). Errors: those of [`Request::CreateInstance`], `NotFound`
    /// (the source or the snapshot), `InvalidArgument` on `linked`
    /// (anything but a vm with a disk), `FailedPrecondition` (the source
    /// is not on a node, or is being deleted), `Unsupported` (the source's
    /// runtime cannot clone or snapshot, such as the qemu microvm
    /// backend). Nothing is stored on error.
    CloneInstance {
        /// The source: id or name.
        source: String,
        /// The clone's name.
        name: String,
        /// Share a frozen base of the source's disk (VMs with a disk).
        linked: bool,
        /// The source's snapshot to start from.
        snapshot: Option<crate::model::SnapshotName>,
        /// Whether to wait until it has settled.
        wait: Wait,
    },
    /// Moves a running instance to another node, keeping its id, name,
    /// MACs and addresses (its networks must exist there): to node `to`
    /// (id or hostname), or to the node the scheduler picks among the
    /// ready nodes other than its own; `to` must still pass the
    /// scheduler's filters (fit, constraints). Recorded as an operation of
    /// kind `migrate` with steps (`placing`, `stopping`, `starting`,
    /// `done`, or `returning`). The source's runtime is removed before the
    /// instance is assigned to the target, in the transaction that gives
    /// the source's allocation back, so it never runs twice; a target that
    /// cannot run it sends it back, started again on its node.
    /// [`MigrationMode::Restart`] starts the workload afresh on the target
    /// (a VM's disk from its image); [`MigrationMode::Live`] moves a
    /// running VM (steps `placing`, `preparing`, `migrating`, `switching`,
    /// `done`); [`MigrationMode::Cold`] stops it, copies its disk and
    /// starts it on the target from the copy (`placing`, `stopping`,
    /// `copying` with the bytes as progress, `starting`, `done`), started
    /// again on its node with its disk as it was when a step fails.
    /// [`Response::Instance`]: the instance on its new node,
    /// its `operation` naming the migration. Not idempotent (each call
    /// moves it). Errors: `NotFound` (the instance, node `to`),
    /// `InvalidArgument` on `to` (already there), `FailedPrecondition`
    /// (no other node; not running on a node or being deleted; `to` or
    /// every other node cannot take it, with the scheduler's reasons;
    /// `auto` would lose a disk: pass restart; the target could not run
    /// it, and it is back on its node; cold with no disk), `Unsupported`
    /// (live or cold where a node's driver cannot). A failed live or cold
    /// step: `Internal` or `Unavailable` naming it. Nothing is changed by
    /// a refusal.
    MigrateInstance {
        /// Id or name.
        instance: String,
        /// The target node's id or hostname (`None`: the scheduler's pick).
        to: Option<String>,
        /// How it moves.
        mode: MigrationMode,
    },
    /// Imports every image of an archive (OCI layout or docker-archive tar)
    /// on the caller's machine into a node's runtime for `instance_type`,
    /// under `name` when one is given. [`Response::Images`]. Idempotent.
    /// Errors: `NotFound` (node or file), `InvalidArgument` (not an
    /// archive, an image without a name, or `name` given for an archive of
    /// several images), `Unsupported` (that runtime keeps no images, or the
    /// archive is not reachable from this deployment).
    ///
    /// With [`ImportAs::NodeImage`], `archive` is instead one disk, kernel
    /// or initrd file, copied into the node's image store under its name
    /// after its content is checked (a qcow2 with a backing file, a kernel
    /// that is no kernel, are `InvalidArgument`); `AlreadyExists` for a
    /// name holding other content.
    ImportImages {
        /// The node (`None`: the only node there is).
        node: Option<String>,
        /// Which runtime of the node (container images only).
        instance_type: InstanceType,
        /// The archive, or the one file of a node image.
        archive: PathBuf,
        /// What the file holds, and the name to store it under.
        import_as: ImportAs,
        /// Told as the archive is read.
        progress: Progress,
    },
    /// Pulls `reference` from its registry into a node's runtime for
    /// `instance_type`, verifying every blob. [`Response::Images`] with the
    /// one image pulled. Idempotent. Errors: `NotFound` (node, repository,
    /// tag, digest, or no manifest for the node's platform),
    /// `InvalidArgument` (the registry served content that does not match
    /// its digest), `FailedPrecondition` (plain HTTP to a registry not
    /// marked insecure, credentials refused), `Unavailable`, `Unsupported`
    /// (that runtime cannot pull).
    PullImage {
        /// The node (`None`: the only node there is).
        node: Option<String>,
        /// Which runtime of the node.
        instance_type: InstanceType,
        /// The image.
        reference: ImageRef,
        /// Credentials and insecure registries.
        options: PullOptions,
        /// Told as each blob is fetched.
        progress: Progress<PullProgress>,
    },
    /// The images a node's runtime for `instance_type` holds; for
    /// containers, the disks, kernels and initrds of the node's image store
    /// as well (a vm or microvm type lists those alone).
    /// [`Response::Images`]. Read-only. Errors: `NotFound`, `Unsupported`.
    ListImages {
        /// The node (`None`: the only node there is).
        node: Option<String>,
        /// Which runtime of the node.
        instance_type: InstanceType,
    },
    /// Removes an image from a node's runtime. [`Response::Done`]. Errors:
    /// `NotFound`, `FailedPrecondition` (an instance uses it), `Unsupported`.
    RemoveImage {
        /// The node (`None`: the only node there is).
        node: Option<String>,
        /// Which runtime of the node (container images only).
        instance_type: InstanceType,
        /// What the image holds: a container image, or a disk, kernel or
        /// initrd of the node's image store (refused with
        /// `FailedPrecondition`, naming them, while instances' specs use it).
        kind: ImageKind,
        /// The image's name.
        name: String,
    },
    /// Copies the deployment's state, as of one revision and while it stays
    /// in use, into a new file `to` on the caller's machine, and checks the
    /// copy. [`Response::StoreSummary`]. Only the embedded store makes such
    /// copies (etcd has its own snapshots): elsewhere `Unsupported`.
    /// Errors: `InvalidArgument` (`to` exists, or its directory does not).
    BackupState {
        /// The new file.
        to: PathBuf,
    },
    /// Every node, in id order. [`Response::Nodes`]. Read-only.
    ListNodes,
    /// One node. [`Response::Node`]. Read-only. Errors: `NotFound`.
    GetNode {
        /// Id or hostname.
        node: String,
    },
    /// Stops new placements on a node. [`Response::Node`]. Idempotent.
    /// Errors: `NotFound`, `FailedPrecondition` (not ready).
    CordonNode {
        /// Id or hostname.
        node: String,
    },
    /// Allows placements on a cordoned node again. [`Response::Node`].
    /// Idempotent. Errors: `NotFound`, `FailedPrecondition`.
    UncordonNode {
        /// Id or hostname.
        node: String,
    },
    /// Empties a node in order: movable instances go elsewhere, the others
    /// stop. [`Response::Drain`]. Idempotent. Errors: `NotFound`,
    /// `FailedPrecondition`.
    DrainNode {
        /// Id or hostname.
        node: String,
    },
    /// Puts a node in maintenance (emptied as by a drain) or takes it out.
    /// [`Response::Drain`]. Idempotent. Errors: `NotFound`, `FailedPrecondition`.
    SetMaintenance {
        /// Id or hostname.
        node: String,
        /// On or off.
        on: bool,
    },
    /// Takes a node out of service for good: empties it as a drain does,
    /// then marks it `Decommissioned` with no runtimes offered, so nothing
    /// is placed on it again, whatever its agent reports, until it is
    /// deleted ([`Request::DeregisterNode`]) and registers anew.
    /// [`Response::Drain`]. Idempotent. Errors: `NotFound`, the first error
    /// evicting an instance.
    DecommissionNode {
        /// Id or hostname.
        node: String,
    },
    /// Removes a node that holds no instances. [`Response::Done`]. Errors:
    /// `NotFound`, `FailedPrecondition` (it holds instances: drain it).
    DeregisterNode {
        /// Id or hostname.
        node: String,
    },
    /// Sets and removes labels operators declare on a node (kept across
    /// its agent's registrations, merged with what the agent reports into
    /// the labels node selectors match: see [`NodeMetadata`]).
    /// Instances waiting for a node are placed again: with no background
    /// workers (the embedded deployment without a daemon), before the
    /// call answers. [`Response::Node`]. Idempotent. Errors: `NotFound`,
    /// `FailedPrecondition` (a label the agent reports: read-only),
    /// `InvalidArgument` on `labels` (too many), `Conflict`.
    ///
    /// [`NodeMetadata`]: crate::model::NodeMetadata
    LabelNode {
        /// Id or hostname.
        node: String,
        /// What to set and remove.
        changes: LabelChanges,
    },
    /// Adds and removes traits operators declare on a node, as
    /// [`Request::LabelNode`] does labels. [`Response::Node`]. Idempotent.
    /// Errors: `NotFound`, `FailedPrecondition` (a trait the agent reports:
    /// read-only), `InvalidArgument` on `traits` (too many), `Conflict`.
    ChangeNodeTraits {
        /// Id or hostname.
        node: String,
        /// What to add and remove.
        changes: TraitChanges,
    },
    /// Sets (or with `None` clears) the carbon intensity operators declare
    /// for a node's power, which carbon-aware placement reads: it wins over
    /// the figure the node's agent reports. The instances waiting for a
    /// node are tried again, as [`Request::LabelNode`] does.
    /// [`Response::Node`]. Idempotent. Errors: `NotFound`, `Conflict`.
    SetNodeCarbon {
        /// Id or hostname.
        node: String,
        /// gCO2e/kWh.
        intensity: Option<CarbonIntensity>,
    },
    /// Changes how far a node's CPU and memory may be promised beyond what
    /// it has (each ratio given; the other stays). A lower ratio never
    /// evicts what is placed: the node just takes nothing new until its
    /// allocation fits again. The instances waiting for a node are tried
    /// again, as [`Request::LabelNode`] does. [`Response::Node`].
    /// Idempotent. Errors: `InvalidArgument` (neither ratio given),
    /// `NotFound`, `Conflict`.
    SetAllocationRatios {
        /// Id or hostname.
        node: String,
        /// The new CPU ratio.
        cpu: Option<AllocationRatio>,
        /// The new memory ratio.
        memory: Option<AllocationRatio>,
    },
    /// Node changes after store revision `after` (0: from now), then live.
    /// [`Response::NodeEvents`]. Errors: `FailedPrecondition` (compacted).
    WatchNodes {
        /// The revision to start after.
        after: Revision,
    },
    /// Counts and sums over the whole deployment. [`Response::ClusterInfo`]. Read-only.
    ClusterInfo,
    /// Creates a network and sets it up on every node that carries
    /// networks. [`Response::Network`]. Errors: `InvalidArgument`,
    /// `AlreadyExists`, `Unsupported`.
    CreateNetwork {
        /// What to create.
        request: CreateNetwork,
    },
    /// One network. [`Response::Network`]. Read-only. Errors: `NotFound`.
    GetNetwork {
        /// Its name.
        name: String,
    },
    /// Every network, in name order. [`Response::Networks`]. Read-only.
    ListNetworks,
    /// One network and its state on every node that sets up networks:
    /// bridge, VXLAN device, overlay peers, rules, DHCP and the instances'
    /// links, each judged against the store. [`Response::NetworkStatus`].
    /// Read-only. Errors: `NotFound` (a node that cannot be asked gets its
    /// error in its entry).
    NetworkStatus {
        /// Its name.
        name: String,
    },
    /// Puts a network back as the store says on every node that sets up
    /// networks (recreates what is missing, puts the instances' links back
    /// on its bridge, sets its overlay peers again) and answers with its
    /// state and what was mended. [`Response::NetworkStatus`]. Idempotent.
    /// Errors: `NotFound`, `FailedPrecondition` (being deleted).
    RepairNetwork {
        /// Its name.
        name: String,
    },
    /// Removes a network no instance uses from every node and the store.
    /// [`Response::Done`]. Errors: `NotFound`, `FailedPrecondition` (in use).
    DeleteNetwork {
        /// Its name.
        name: String,
    },
    /// Stores host aggregate `name` with `metadata` and no nodes.
    /// [`Response::Aggregate`]. Not idempotent. Errors: `AlreadyExists`.
    ///
    /// Every change of an aggregate (this, and the requests below that
    /// change one) tries the instances waiting for a node again, as
    /// [`Request::LabelNode`] does: their reasons follow what changed.
    CreateAggregate {
        /// Its name.
        name: AggregateName,
        /// Its metadata, for `placement.aggregate_selector`.
        metadata: BTreeMap<LabelKey, LabelValue>,
    },
    /// Deletes an aggregate that has no nodes. [`Response::Done`]. Errors:
    /// `NotFound`, `FailedPrecondition` (it has nodes: they are named).
    DeleteAggregate {
        /// Its name.
        name: AggregateName,
    },
    /// Every aggregate, in name order. [`Response::Aggregates`]. Read-only.
    ListAggregates,
    /// One aggregate. [`Response::Aggregate`]. Read-only. Errors: `NotFound`.
    GetAggregate {
        /// Its name.
        name: AggregateName,
    },
    /// Sets (`KEY=VALUE`) and removes (`KEY-`) metadata of an aggregate,
    /// which `placement.aggregate_selector` matches.
    /// [`Response::Aggregate`]. Idempotent. Errors: `NotFound`,
    /// `InvalidArgument` on `metadata` (too many keys), `Conflict`.
    SetAggregateMetadata {
        /// Its name.
        name: AggregateName,
        /// What to set and remove.
        changes: LabelChanges,
    },
    /// Makes a node a member of an aggregate. [`Response::Aggregate`]. Idempotent. Errors: `NotFound` (the
    /// aggregate or the node), `Conflict`.
    AddAggregateNode {
        /// The aggregate's name.
        name: AggregateName,
        /// The node's id or hostname.
        node: String,
    },
    /// Takes a node out of an aggregate (a node since deregistered is named
    /// by its id). [`Response::Aggregate`]. Idempotent. Errors: `NotFound`
    /// (the aggregate, or a node that neither exists nor is a member),
    /// `Conflict`.
    RemoveAggregateNode {
        /// The aggregate's name.
        name: AggregateName,
        /// The node's id or hostname.
        node: String,
    },
    /// Stores template `name` with `spec` as its version 1.
    /// [`Response::Template`]. Not idempotent. Errors: `InvalidArgument`
    /// naming the field (an invalid spec is refused as an instance create
    /// would refuse it), `AlreadyExists`; nothing is stored on error.
    CreateTemplate {
        /// Its name.
        name: TemplateName,
        /// Version 1.
        spec: TemplateSpec,
    },
    /// Adds `spec` as the next version of template `name`; earlier
    /// versions stay as they are. [`Response::Template`]. Not idempotent.
    /// Errors: `InvalidArgument` naming the field, `NotFound`, `Conflict`.
    UpdateTemplate {
        /// Its name.
        name: TemplateName,
        /// The new version.
        spec: TemplateSpec,
    },
    /// One template (only `version`, if given), each version with the
    /// instances that use it. [`Response::Template`]. Read-only. Errors:
    /// `NotFound` (template or version).
    GetTemplate {
        /// Its name.
        name: TemplateName,
        /// Only this version.
        version: Option<u32>,
    },
    /// Every template in name order, with the instances that use each
    /// version. [`Response::Templates`]. Read-only.
    ListTemplates,
    /// Deletes version `version` of template `name`, or all of them.
    /// [`Response::Done`]. Errors: `NotFound`, `FailedPrecondition` (an
    /// instance uses a version: the message names them; nothing is
    /// deleted).
    DeleteTemplate {
        /// Its name.
        name: TemplateName,
        /// Only this version.
        version: Option<u32>,
    },
    /// Creates an instance from a template version with overrides, and
    /// records the version in it (`Instance::template`); otherwise as
    /// [`Request::CreateInstance`]. [`Response::Instance`]. Errors: those
    /// of `CreateInstance`, `NotFound` (template or version),
    /// `FailedPrecondition` (the version is being deleted).
    CreateFromTemplate {
        /// What to create.
        request: FromTemplate,
        /// Whether to wait until it has settled.
        wait: Wait,
    },
    /// Creates user `name` with `role` in `projects` (each must exist) and
    /// issues its first token, of the user's role and projects.
    /// [`Response::NewUser`]. Not idempotent. Errors: `InvalidArgument`
    /// naming the field, `AlreadyExists`, `NotFound` (a project),
    /// `Conflict`.
    CreateUser {
        /// The new user's name.
        name: String,
        /// What it may do.
        role: Role,
        /// Where it may do it.
        projects: Vec<String>,
        /// How long its first token works (`None`: until revoked).
        token_ttl: Option<std::time::Duration>,
    },
    /// Every user, in name order. [`Response::Users`]. Read-only.
    ListUsers,
    /// Deletes a user; its tokens stop working at once.
    /// [`Response::Done`]. Idempotent. Errors: `InvalidArgument`.
    DeleteUser {
        /// Its name.
        name: String,
    },
    /// Issues a token of `owner` (`None`: the caller, when the caller is a
    /// stored user). [`Response::Token`]: its text is shown this once.
    /// Not idempotent. Errors: `InvalidArgument` (more than the owner
    /// has; no owner), `NotFound` (the owner), `Conflict`.
    CreateToken {
        /// Whose token.
        owner: Option<String>,
        /// Its role, projects and lifetime.
        terms: TokenTerms,
    },
    /// Tokens (never their secrets), in id order, of `owner` or of
    /// everyone. [`Response::Tokens`]. Read-only.
    ListTokens {
        /// Only this user's.
        owner: Option<String>,
    },
    /// Revokes a token: it stops working at once. [`Response::TokenInfo`].
    /// Idempotent. Errors: `InvalidArgument` (not a token id), `NotFound`.
    RevokeToken {
        /// Its id.
        id: String,
    },
    /// Creates a project with a quota. [`Response::Project`]. Errors:
    /// `InvalidArgument`, `AlreadyExists` (also `default`, which always
    /// exists).
    CreateProject {
        /// Its name.
        name: String,
        /// Its limits.
        quota: Quota,
    },
    /// Every project in name order, `default` included, with its usage.
    /// [`Response::Projects`]. Read-only.
    ListProjects,
    /// One project and its usage. [`Response::Project`]. Read-only.
    /// Errors: `NotFound`.
    GetProject {
        /// Its name.
        name: String,
    },
    /// Sets a project's quota. [`Response::Project`]. Idempotent. Errors:
    /// `NotFound`, `Conflict`.
    UpdateProject {
        /// Its name.
        name: String,
        /// Its new limits.
        quota: Quota,
    },
    /// Deletes a project that has neither instances nor members.
    /// [`Response::Done`]. Errors: `NotFound`, `FailedPrecondition` (it is
    /// `default`, or holds instances or members: the message names them).
    DeleteProject {
        /// Its name.
        name: String,
    },
    /// The audit records kept, oldest first. [`Response::AuditRecords`].
    /// Read-only. Errors: `InvalidArgument` (a filter's name).
    ListAudit {
        /// Which records.
        query: AuditQuery,
    },
    /// The operations kept (the long calls: see [`Operation`]) that the
    /// filter accepts, in id order, one [`Page`] of them.
    /// [`Response::Operations`]. Read-only. Errors: `InvalidArgument`
    /// (`page_token`).
    ListOperations {
        /// Which operations.
        filter: OperationFilter,
        /// Which of them.
        page: Page,
    },
    /// One operation. [`Response::Operation`]. Read-only. Errors: `NotFound`.
    GetOperation {
        /// Its id.
        id: OperationId,
    },
    /// The operation now and at each change of its phase, step or
    /// progress, until it has finished (the stream's last item).
    /// [`Response::OperationUpdates`]. Errors: `NotFound`.
    WatchOperation {
        /// Its id.
        id: OperationId,
    },
    /// Cancels a running create, start or clone: the instance is no longer
    /// wanted running (a create's is deleted, a start's or a clone's
    /// stopped) and the operation ends `cancelled`. [`Response::Operation`].
    /// Errors: `NotFound`, `FailedPrecondition` (it has finished, naming
    /// its phase; its kind cannot be cancelled once running, naming it).
    /// Nothing is changed on error.
    CancelOperation {
        /// Its id.
        id: OperationId,
    },
}

impl Request {
    /// The operation's stable name (`instance.create`, `node.drain`), as
    /// audit records, metrics and permissions name it.
    pub fn operation(&self) -> &'static str {
        match self {
            Request::CreateInstance { .. } => "instance.create",
            Request::GetInstance { .. } => "instance.get",
            Request::ListInstances { .. } => "instance.list",
            Request::StartInstance { .. } => "instance.start",
            Request::StopInstance { .. } => "instance.stop",
            Request::RestartInstance { .. } => "instance.restart",
            Request::UpdateInstance { .. } => "instance.update",
            Request::DeleteInstance { .. } => "instance.delete",
            Request::PauseInstance { .. } => "instance.pause",
            Request::ResumeInstance { .. } => "instance.resume",
            Request::InstanceStats { .. } | Request::InstanceStatsHistory { .. } => {
                "instance.stats"
            }
            Request::ReadLog { .. } | Request::FollowLog { .. } => "instance.logs",
            Request::AttachConsole { .. } => "instance.console",
            Request::WatchInstances { .. } => "instance.watch",
            Request::CreateSnapshot { .. } => "snapshot.create",
            Request::ListSnapshots { .. } => "snapshot.list",
            Request::RevertSnapshot { .. } => "snapshot.revert",
            Request::DeleteSnapshot { .. } => "snapshot.delete",
            Request::ExportSnapshot { .. } => "snapshot.export",
            Request::RestoreInstance { .. } => "instance.restore",
            Request::CloneInstance { .. } => "instance.clone",
            Request::MigrateInstance { .. } => "instance.migrate",
            Request::ImportImages { .. } => "image.import",
            Request::PullImage { .. } => "image.pull",
            Request::ListImages { .. } => "image.list",
            Request::RemoveImage { .. } => "image.remove",
            Request::BackupState { .. } => "state.backup",
            Request::ListNodes => "node.list",
            Request::GetNode { .. } => "node.get",
            Request::NodeStatsHistory { .. } => "node.stats",
            Request::CordonNode { .. } => "node.cordon",
            Request::UncordonNode { .. } => "node.uncordon",
            Request::DrainNode { .. } => "node.drain",
            Request::SetMaintenance { .. } => "node.maintenance",
            Request::DecommissionNode { .. } => "node.decommission",
            Request::DeregisterNode { .. } => "node.deregister",
            Request::LabelNode { .. } => "node.label",
            Request::ChangeNodeTraits { .. } => "node.trait",
            Request::SetNodeCarbon { .. } => "node.carbon",
            Request::SetAllocationRatios { .. } => "node.update",
            Request::WatchNodes { .. } => "node.watch",
            Request::ClusterInfo => "cluster.info",
            Request::CreateNetwork { .. } => "network.create",
            Request::GetNetwork { .. } => "network.get",
            Request::ListNetworks => "network.list",
            Request::NetworkStatus { .. } => "network.status",
            Request::RepairNetwork { .. } => "network.repair",
            Request::DeleteNetwork { .. } => "network.delete",
            Request::CreateAggregate { .. } => "aggregate.create",
            Request::DeleteAggregate { .. } => "aggregate.delete",
            Request::ListAggregates => "aggregate.list",
            Request::GetAggregate { .. } => "aggregate.get",
            Request::SetAggregateMetadata { .. } => "aggregate.set_metadata",
            Request::AddAggregateNode { .. } => "aggregate.add_node",
            Request::RemoveAggregateNode { .. } => "aggregate.remove_node",
            Request::CreateTemplate { .. } => "template.create",
            Request::UpdateTemplate { .. } => "template.update",
            Request::GetTemplate { .. } => "template.get",
            Request::ListTemplates => "template.list",
            Request::DeleteTemplate { .. } => "template.delete",
            Request::CreateFromTemplate { .. } => "instance.create_from_template",
            Request::CreateUser { .. } => "user.create",
            Request::ListUsers => "user.list",
            Request::DeleteUser { .. } => "user.delete",
            Request::CreateToken { .. } => "token.create",
            Request::ListTokens { .. } => "token.list",
            Request::RevokeToken { .. } => "token.revoke",
            Request::CreateProject { .. } => "project.create",
            Request::ListProjects => "project.list",
            Request::GetProject { .. } => "project.get",
            Request::UpdateProject { .. } => "project.update",
            Request::DeleteProject { .. } => "project.delete",
            Request::ListAudit { .. } => "audit.list",
            Request::ListOperations { .. } => "operation.list",
            Request::GetOperation { .. } => "operation.get",
            Request::WatchOperation { .. } => "operation.watch",
            Request::CancelOperation { .. } => "operation.cancel",
        }
    }

    /// What it acts on, for people and audit records (`instance web`,
    /// `node worker-1`); `None` for requests over everything (lists, watches).
    pub fn target(&self) -> Option<String> {
        let instance = |name: &str| Some(format!("instance {name}"));
        let node = |name: &str| Some(format!("node {name}"));
        match self {
            Request::CreateInstance { request, .. } => instance(&request.name),
            Request::RestoreInstance { name, .. } => instance(name),
            Request::CloneInstance { source, name, .. } => {
                Some(format!("instance {name} (clone of {source})"))
            }
            Request::CreateFromTemplate { request, .. } => instance(&request.name),
            Request::CreateTemplate { name, .. }
            | Request::UpdateTemplate { name, .. }
            | Request::GetTemplate { name, .. }
            | Request::DeleteTemplate { name, .. } => Some(format!("template {name}")),
            Request::GetInstance { instance: i }
            | Request::StartInstance { instance: i, .. }
            | Request::StopInstance { instance: i, .. }
            | Request::RestartInstance { instance: i, .. }
            | Request::UpdateInstance { instance: i, .. }
            | Request::MigrateInstance { instance: i, .. }
            | Request::DeleteInstance { instance: i, .. }
            | Request::PauseInstance { instance: i }
            | Request::ResumeInstance { instance: i }
            | Request::InstanceStats { instance: i }
            | Request::InstanceStatsHistory { instance: i }
            | Request::ReadLog { instance: i, .. }
            | Request::FollowLog { instance: i, .. }
            | Request::AttachConsole { instance: i }
            | Request::ListSnapshots { instance: i } => instance(i),
            Request::CreateSnapshot { instance, name, .. }
            | Request::RevertSnapshot { instance, name }
            | Request::DeleteSnapshot { instance, name }
            | Request::ExportSnapshot { instance, name, .. } => {
                Some(format!("instance {instance} snapshot {name}"))
            }
            Request::ImportImages { node: n, .. } | Request::ListImages { node: n, .. } => {
                n.as_deref().and_then(node)
            }
            Request::PullImage {
                node: n, reference, ..
            } => Some(match n {
                Some(n) => format!("node {n} image {reference}"),
                None => format!("image {reference}"),
            }),
            Request::RemoveImage { node: n, name, .. } => Some(match n {
                Some(n) => format!("node {n} image {name}"),
                None => format!("image {name}"),
            }),
            Request::GetNode { node: n }
            | Request::NodeStatsHistory { node: n }
            | Request::CordonNode { node: n }
            | Request::UncordonNode { node: n }
            | Request::DrainNode { node: n }
            | Request::SetMaintenance { node: n, .. }
            | Request::LabelNode { node: n, .. }
            | Request::ChangeNodeTraits { node: n, .. }
            | Request::SetNodeCarbon { node: n, .. }
            | Request::SetAllocationRatios { node: n, .. }
            | Request::DecommissionNode { node: n }
            | Request::DeregisterNode { node: n } => node(n),
            Request::CreateAggregate { name, .. }
            | Request::DeleteAggregate { name }
            | Request::GetAggregate { name }
            | Request::SetAggregateMetadata { name, .. } => Some(format!("aggregate {name}")),
            Request::AddAggregateNode { name, node }
            | Request::RemoveAggregateNode { name, node } => {
                Some(format!("aggregate {name} node {node}"))
            }
            Request::CreateNetwork { request } => Some(format!("network {}", request.name)),
            Request::GetNetwork { name }
            | Request::DeleteNetwork { name }
            | Request::NetworkStatus { name }
            | Request::RepairNetwork { name } => Some(format!("network {name}")),
            Request::BackupState { .. } => Some("state".to_owned()),
            Request::CreateUser { name, .. } | Request::DeleteUser { name } => {
                Some(format!("user {name}"))
            }
            Request::CreateToken { owner, .. } => owner.as_ref().map(|o| format!("user {o}")),
            Request::RevokeToken { id } => Some(format!("token {id}")),
            Request::CreateProject { name, .. }
            | Request::GetProject { name }
            | Request::UpdateProject { name, .. }
            | Request::DeleteProject { name } => Some(format!("project {name}")),
            Request::GetOperation { id }
            | Request::WatchOperation { id }
            | Request::CancelOperation { id } => Some(format!("operation {id}")),
            Request::ListOperations { .. } => None,
            Request::ListUsers
            | Request::ListTokens { .. }
            | Request::ListProjects
            | Request::ListAudit { .. } => None,
            Request::ListInstances { .. }
            | Request::WatchInstances { .. }
            | Request::ListNodes
            | Request::WatchNodes { .. }
            | Request::ClusterInfo
            | Request::ListNetworks
            | Request::ListAggregates
            | Request::ListTemplates => None,
        }
    }

    /// Whether it changes anything (what audit logs and write permissions cover).
    pub fn is_mutating(&self) -> bool {
        !matches!(
            self,
            Request::GetInstance { .. }
                | Request::ListInstances { .. }
                | Request::InstanceStats { .. }
                | Request::InstanceStatsHistory { .. }
                | Request::NodeStatsHistory { .. }
                | Request::ReadLog { .. }
                | Request::FollowLog { .. }
                | Request::WatchInstances { .. }
                | Request::ListSnapshots { .. }
                | Request::ListImages { .. }
                | Request::ListNodes
                | Request::GetNode { .. }
                | Request::WatchNodes { .. }
                | Request::ClusterInfo
                | Request::GetNetwork { .. }
                | Request::NetworkStatus { .. }
                | Request::ListNetworks
                | Request::ListAggregates
                | Request::GetAggregate { .. }
                | Request::GetTemplate { .. }
                | Request::ListTemplates
                | Request::ListUsers
                | Request::ListTokens { .. }
                | Request::ListProjects
                | Request::GetProject { .. }
                | Request::ListAudit { .. }
                | Request::ListOperations { .. }
                | Request::GetOperation { .. }
                | Request::WatchOperation { .. }
        )
    }
}

/// A page of a list of instances.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct InstancePage {
    /// The instances, in name order.
    pub instances: Vec<Instance>,
    /// Where the next page starts; `None`: this was the last.
    #[serde(rename = "next_page_token", skip_serializing_if = "Option::is_none")]
    pub next_page: Option<PageToken>,
}

/// A page of a list of operations.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OperationPage {
    /// The operations, in id order.
    pub operations: Vec<Operation>,
    /// Where the next page starts; `None`: this was the last.
    #[serde(rename = "next_page_token", skip_serializing_if = "Option::is_none")]
    pub next_page: Option<PageToken>,
}

/// What a [`Request`] answers; each request names its variant.
#[allow(clippy::large_enum_variant)] // As for requests: one per call.
pub enum Response {
    /// Nothing to return.
    Done,
    /// One instance.
    Instance(Instance),
    /// An instance, or `None` once it is gone.
    MaybeInstance(Option<Instance>),
    /// A page of instances.
    Instances(InstancePage),
    /// Resource usage.
    Stats(InstanceStats),
    /// Resource usage over time, oldest first.
    StatsHistory(Vec<StatsSample>),
    /// A node's usage samples, oldest first.
    NodeStatsHistory(Vec<NodeUsageSample>),
    /// A piece of a log.
    Log(LogChunk),
    /// A log as it grows, piece by piece.
    LogStream(BoxStream<'static, Result<Vec<u8>>>),
    /// A console session.
    Console(ConsoleStream),
    /// Instance changes.
    InstanceEvents(BoxStream<'static, Result<InstanceEvent>>),
    /// One snapshot.
    Snapshot(SnapshotInfo),
    /// Snapshots.
    Snapshots(Vec<SnapshotInfo>),
    /// Images.
    Images(Vec<ImageInfo>),
    /// One node.
    Node(Node),
    /// Nodes.
    Nodes(Vec<Node>),
    /// What a drain or a maintenance did.
    Drain(DrainReport),
    /// Node changes.
    NodeEvents(BoxStream<'static, Result<NodeEvent>>),
    /// Counts and sums.
    ClusterInfo(ClusterInfo),
    /// One network.
    Network(Network),
    /// Networks.
    Networks(Vec<Network>),
    /// A network and its state per node.
    NetworkStatus(NetworkStatus),
    /// What a check or backup of the whole store found.
    StoreSummary(StoreSummary),
    /// One host aggregate.
    Aggregate(Aggregate),
    /// Host aggregates.
    Aggregates(Vec<Aggregate>),
    /// One template and its users.
    Template(TemplateInfo),
    /// Templates and their users.
    Templates(Vec<TemplateInfo>),
    /// A user just created, and its first token.
    NewUser(UserInfo, IssuedToken),
    /// Users.
    Users(Vec<UserInfo>),
    /// A token just issued, with its text.
    Token(IssuedToken),
    /// One token, without its secret.
    TokenInfo(TokenInfo),
    /// Tokens, without their secrets.
    Tokens(Vec<TokenInfo>),
    /// One project.
    Project(ProjectInfo),
    /// Projects.
    Projects(Vec<ProjectInfo>),
    /// Audit records.
    AuditRecords(Vec<AuditRecord>),
    /// One operation.
    Operation(Operation),
    /// A page of operations.
    Operations(OperationPage),
    /// An operation as it changes, until it has finished.
    OperationUpdates(BoxStream<'static, Result<Operation>>),
}

impl Response {
    /// The variant's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Done => "Done",
            Response::Instance(_) => "Instance",
            Response::MaybeInstance(_) => "MaybeInstance",
            Response::Instances(_) => "Instances",
            Response::Stats(_) => "Stats",
            Response::StatsHistory(_) => "StatsHistory",
            Response::NodeStatsHistory(_) => "NodeStatsHistory",
            Response::Log(_) => "Log",
            Response::LogStream(_) => "LogStream",
            Response::Console(_) => "Console",
            Response::InstanceEvents(_) => "InstanceEvents",
            Response::Snapshot(_) => "Snapshot",
            Response::Snapshots(_) => "Snapshots",
            Response::Images(_) => "Images",
            Response::Node(_) => "Node",
            Response::Nodes(_) => "Nodes",
            Response::Drain(_) => "Drain",
            Response::NodeEvents(_) => "NodeEvents",
            Response::ClusterInfo(_) => "ClusterInfo",
            Response::Network(_) => "Network",
            Response::Networks(_) => "Networks",
            Response::NetworkStatus(_) => "NetworkStatus",
            Response::StoreSummary(_) => "StoreSummary",
            Response::Aggregate(_) => "Aggregate",
            Response::Aggregates(_) => "Aggregates",
            Response::Template(_) => "Template",
            Response::Templates(_) => "Templates",
            Response::NewUser(..) => "NewUser",
            Response::Users(_) => "Users",
            Response::Token(_) => "Token",
            Response::TokenInfo(_) => "TokenInfo",
            Response::Tokens(_) => "Tokens",
            Response::Project(_) => "Project",
            Response::Projects(_) => "Projects",
            Response::AuditRecords(_) => "AuditRecords",
            Response::Operation(_) => "Operation",
            Response::Operations(_) => "Operations",
            Response::OperationUpdates(_) => "OperationUpdates",
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Response::{}", self.kind())
    }
}
