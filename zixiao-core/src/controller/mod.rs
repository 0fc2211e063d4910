//! The [`Controller`]: the one API every frontend calls. It validates a
//! request, writes the intent to the [`Store`], and the reconcilers of
//! [`reconcile`] converge the world towards it through each node's
//! [`NodeAgent`]. A crash anywhere loses nothing acknowledged: the next
//! reconcile reads the store and carries on.

mod admission;
mod batcher;
mod cache;
mod clones;
mod cluster;
mod failover;
mod images;
mod instances;
mod metadata;
mod migrations;
mod networks;
mod nodes;
mod operations;
mod overlay;
mod placer;
pub mod queue;
pub mod reconcile;
mod reconcilers;
mod snapshot_schedules;
mod snapshots;
mod templates;
mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use admission::{Admission, StoreView};
pub use cache::ROOT;
pub use cluster::ClusterInfo;
pub use failover::FailoverReport;
pub use instances::{InstanceFilter, LogReader, FOLLOW_CHUNK, FOLLOW_POLL};
pub use networks::{AddressAllocator, NetworkHost, NetworkReconcileReport, NETWORKS_PREFIX};
pub use nodes::{DrainReport, MigratedInstance};
pub use operations::{
    as_requested_by, OperationFilter, INTERRUPTED, OPERATIONS_PREFIX, OPERATION_HEARTBEAT,
    OPERATION_INDEX_PREFIX, OPERATION_STALE_AFTER,
};
pub use queue::{Lease, QueueOptions, RateLimit, WorkQueue};
pub use reconcile::{Convergence, ReconcileReport, Step};
pub use reconcilers::{ReconcilerOptions, Reconcilers};
pub use watch::{EventKind, InstanceEvent, NodeEvent};

use crate::agent::NodeAgent;
use crate::clock::{Clock, SystemClock};
use crate::instance_locks::{InstanceHold, InstanceLocks};
use crate::model::{Instance, Node, NodeId};
use crate::scheduler::Scheduler;
use crate::store::{Revision, Store, StoreError, StoredObject, Txn};
use crate::{Error, Result};

/// Key prefix of node objects.
pub const NODES_PREFIX: &str = "/zixiao/nodes/";
/// Key prefix of instance objects.
pub const INSTANCES_PREFIX: &str = "/zixiao/instances/";
/// Key prefix of the instance name index: name to id.
pub const INSTANCE_NAMES_PREFIX: &str = "/zixiao/names/instances/";

impl StoredObject for Node {
    const PREFIX: &'static str = NODES_PREFIX;
    const KIND: &'static str = "node";

    fn id(&self) -> &str {
        &self.id
    }
    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }
    fn revision(&self) -> Revision {
        self.revision
    }
}

impl StoredObject for Instance {
    const PREFIX: &'static str = INSTANCES_PREFIX;
    const KIND: &'static str = "instance";

    fn id(&self) -> &str {
        &self.id
    }
    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }
    fn revision(&self) -> Revision {
        self.revision
    }
}

/// Tunables of a controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// How long a graceful stop may take before the runtime forces it.
    pub stop_grace: Duration,
    /// How often a compare-and-swap is retried against concurrent writers.
    pub max_conflict_retries: u32,
    /// First delay before a restart policy restarts an exited instance; doubles per restart.
    pub restart_backoff: Duration,
    /// The longest restart delay.
    pub max_restart_backoff: Duration,
    /// The most writes one transaction gathers when concurrent creates (or
    /// concurrent state changes) share a commit. etcd refuses transactions
    /// of more than 128 operations by default (`--max-txn-ops`).
    pub max_batch_writes: usize,
    /// How long a finished operation is kept (see `operations`).
    pub operations_keep_for: Duration,
    /// The most operations kept: beyond it the oldest finished ones go.
    pub operations_keep_at_most: usize,
    /// How many instances a drain, a maintenance or a decommission moves
    /// at once. Each live migration holds a copy stream between two nodes
    /// and a cold one a disk copy through the server, so a few at a time
    /// keep the rest of the cluster's traffic flowing.
    pub evacuation_concurrency: usize,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            stop_grace: Duration::from_secs(10),
            max_conflict_retries: 200,
            restart_backoff: Duration::from_secs(1),
            max_restart_backoff: Duration::from_secs(300),
            max_batch_writes: 120,
            operations_keep_for: Duration::from_secs(24 * 60 * 60),
            operations_keep_at_most: 1000,
            evacuation_concurrency: 4,
        }
    }
}

/// Drives nodes and instances: the API of the CLI, the server and the bindings.
///
/// Cheap to clone; clones share everything.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<dyn zixiao_core::Store>,
/// #                  scheduler: std::sync::Arc<dyn zixiao_core::Scheduler>) -> zixiao_core::Result<()> {
/// use zixiao_core::{Controller, CreateInstance, InstanceSpec};
///
/// let controller = Controller::builder(store, scheduler).build();
/// let web = controller
///     .create_instance(CreateInstance::new("web", InstanceSpec::container("busybox")))
///     .await?;
/// let web = controller.converge(&web.id).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    scheduler: Arc<dyn Scheduler>,
    agents: RwLock<BTreeMap<NodeId, Arc<dyn NodeAgent>>>,
    clock: Arc<dyn Clock>,
    options: ControllerOptions,
    addresses: Option<Arc<dyn AddressAllocator>>,
    network_hosts: RwLock<BTreeMap<NodeId, Arc<dyn NetworkHost>>>,
    convergence: Convergence,
    /// The instances to converge; one converge per instance at a time in
    /// this process, whoever converges (a worker or a caller).
    queue: WorkQueue,
    /// Nodes, instances and admission keys, fed by the store's watch.
    cache: cache::Cache,
    /// Places instances and writes their nodes' allocations.
    placer: placer::Placer,
    /// Merges concurrent small writes into one commit.
    batcher: batcher::Batcher,
    admissions: Vec<Arc<dyn Admission>>,
    /// Keeps other processes off an instance this one converges.
    instance_locks: Option<Arc<dyn InstanceLocks>>,
    /// The newest revision this controller committed: reads from the
    /// cache wait for it, so a caller reads its own writes.
    written: AtomicU64,
    /// The unfinished operation this process follows for each instance
    /// id (see `operations`).
    followed: std::sync::Mutex<std::collections::HashMap<String, crate::model::OperationId>>,
    /// One overlay peer sync at a time in this process (see `overlay`):
    /// each reads the carriers then replaces every node's peers, so two
    /// interleaved could put back an older list.
    overlay_sync: tokio::sync::Mutex<()>,
    /// Where its events go (see [`crate::telemetry`]).
    telemetry: crate::telemetry::TelemetrySlot,
}

/// Builds a [`Controller`] from its parts.
#[derive(Debug)]
pub struct ControllerBuilder {
    store: Arc<dyn Store>,
    scheduler: Arc<dyn Scheduler>,
    agents: BTreeMap<NodeId, Arc<dyn NodeAgent>>,
    clock: Arc<dyn Clock>,
    options: ControllerOptions,
    addresses: Option<Arc<dyn AddressAllocator>>,
    network_hosts: BTreeMap<NodeId, Arc<dyn NetworkHost>>,
    convergence: Convergence,
    admissions: Vec<Arc<dyn Admission>>,
    cache_prefixes: Vec<String>,
    instance_locks: Option<Arc<dyn InstanceLocks>>,
}

impl ControllerBuilder {
    /// Adds `admission`'s checks and writes to every create's transaction,
    /// after those added before it (see [`Admission`]).
    pub fn admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admissions.push(admission);
        self
    }

    /// Keeps the keys under `prefix` (under [`ROOT`]) in the controller's
    /// cache too, for [`Controller::cached_keys`] (a failure detector
    /// watching liveness keys, say).
    pub fn cache_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.cache_prefixes.push(prefix.into());
        self
    }

    /// Allocates instances' addresses with `allocator` (without one, networks are unsupported).
    pub fn address_allocator(mut self, allocator: Arc<dyn AddressAllocator>) -> Self {
        self.addresses = Some(allocator);
        self
    }

    /// Sets up networks on node `node` through `host`.
    pub fn network_host(mut self, node: impl Into<NodeId>, host: Arc<dyn NetworkHost>) -> Self {
        self.network_hosts.insert(node.into(), host);
        self
    }

    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reaches node `node` through `agent`.
    pub fn agent(mut self, node: impl Into<NodeId>, agent: Arc<dyn NodeAgent>) -> Self {
        self.agents.insert(node.into(), agent);
        self
    }

    /// Sets the tunables.
    pub fn options(mut self, options: ControllerOptions) -> Self {
        self.options = options;
        self
    }

    /// Holds each instance in `locks` while converging it in the caller, so
    /// processes that share the store with no daemon never converge one
    /// instance at once (see [`InstanceLocks`]). Without it only this
    /// process's converges are serialized.
    pub fn instance_locks(mut self, locks: Arc<dyn InstanceLocks>) -> Self {
        self.instance_locks = Some(locks);
        self
    }

    /// Sets who carries intents out ([`Convergence::InCaller`] unless set).
    pub fn convergence(mut self, convergence: Convergence) -> Self {
        self.convergence = convergence;
        self
    }

    /// The controller. Nothing is read until it is first used; its cache
    /// and its placer then run on the tokio runtime of that first use.
    pub fn build(self) -> Controller {
        let mut prefixes = self.cache_prefixes;
        // Placements see the aggregates (see `placer`).
        prefixes.push(crate::model::AGGREGATES_PREFIX.to_owned());
        for admission in &self.admissions {
            prefixes.extend(admission.prefixes());
        }
        prefixes.sort();
        prefixes.dedup();
        // Every commit the controller makes goes through this store, so
        // commit latency is measured here, once.
        let telemetry = crate::telemetry::TelemetrySlot::default();
        let store: Arc<dyn Store> = Arc::new(crate::telemetry::TimedStore::new(
            self.store,
            telemetry.clone(),
        ));
        let cache = cache::Cache::new(&store, prefixes);
        let batcher = batcher::Batcher::new(&store, self.options.max_batch_writes);
        Controller {
            inner: Arc::new(Inner {
                store,
                scheduler: self.scheduler,
                agents: RwLock::new(self.agents),
                clock: self.clock,
                options: self.options,
                addresses: self.addresses,
                network_hosts: RwLock::new(self.network_hosts),
                convergence: self.convergence,
                queue: WorkQueue::default(),
                cache,
                placer: placer::Placer::default(),
                batcher,
                admissions: self.admissions,
                instance_locks: self.instance_locks,
                written: AtomicU64::new(0),
                followed: Default::default(),
                overlay_sync: tokio::sync::Mutex::new(()),
                telemetry,
            }),
        }
    }
}

impl Controller {
    /// Starts building a controller over `store`, placing with `scheduler`.
    pub fn builder(store: Arc<dyn Store>, scheduler: Arc<dyn Scheduler>) -> ControllerBuilder {
        ControllerBuilder {
            store,
            scheduler,
            agents: BTreeMap::new(),
            clock: Arc::new(SystemClock),
            options: ControllerOptions::default(),
            addresses: None,
            network_hosts: BTreeMap::new(),
            convergence: Convergence::InCaller,
            // Every controller checks templates: see `templates`.
            admissions: vec![Arc::new(templates::TemplateCheck)],
            cache_prefixes: Vec::new(),
            instance_locks: None,
        }
    }

    /// Holds instance `instance` (id or name) against other processes for
    /// `operation` (such as `instance.stop`) before a change of it is
    /// stored, if this controller has [`InstanceLocks`] (`None` otherwise).
    /// Errors: `NotFound`, `Conflict` (another process is changing it;
    /// nothing was changed), `Internal`.
    pub async fn hold_instance(
        &self,
        instance: &str,
        operation: &str,
    ) -> Result<Option<InstanceHold>> {
        let Some(locks) = &self.inner.instance_locks else {
            return Ok(None);
        };
        let found = self.get_instance(instance).await?;
        locks.try_hold(&found.id, &found.name, operation).map(Some)
    }

    /// Holds instance `id` against other processes for a converge, waiting
    /// while another holds it (see [`InstanceLocks::hold`]).
    async fn hold_for_converge(&self, id: &str) -> Result<Option<InstanceHold>> {
        let Some(locks) = &self.inner.instance_locks else {
            return Ok(None);
        };
        let name = self
            .inner
            .cache
            .read()
            .instance(id)
            .map_or_else(|| id.to_owned(), |i| i.name.clone());
        locks.hold(id, &name, "a converge").await.map(Some)
    }

    /// The store it writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Sends this controller's placements, converges, failovers and store
    /// commits to `telemetry` from now on (zixiao-metrics' `Metrics`, on a
    /// server with `--metrics-listen`).
    pub fn set_telemetry(&self, telemetry: Arc<dyn crate::telemetry::Telemetry>) {
        self.inner.telemetry.set(telemetry);
    }

    /// How many instances are due for a converge in this process and wait
    /// for a worker (retries still backing off are not counted): a gauge
    /// for metrics.
    pub fn converge_queue_depth(&self) -> usize {
        self.inner.queue.len()
    }

    /// Where its events go now.
    pub(crate) fn telemetry(&self) -> Arc<dyn crate::telemetry::Telemetry> {
        self.inner.telemetry.get()
    }

    /// Who carries out intents for the calls that wait ([`Controller::settle`]).
    pub fn convergence(&self) -> Convergence {
        self.inner.convergence
    }

    /// The work queue of convergence: instances waiting for a worker
    /// ([`Controller::run_reconcilers`]); a caller's [`Controller::converge`]
    /// claims its instance in it too.
    pub fn queue(&self) -> &WorkQueue {
        &self.inner.queue
    }

    /// The cached keys under `prefix`, one of the prefixes given to
    /// [`ControllerBuilder::cache_prefix`], in key order, as of at least
    /// this controller's last write. Errors: `Unavailable` (the cache
    /// cannot list the store).
    pub async fn cached_keys(&self, prefix: &str) -> Result<Vec<crate::store::KeyValue>> {
        self.caught_up().await?;
        Ok(self.inner.cache.read().raw_under(prefix).cloned().collect())
    }

    /// The cached key `key` (under one of the prefixes given to
    /// [`ControllerBuilder::cache_prefix`]) as it is now, without waiting,
    /// and a revision the cache has applied at least: `None` means the key
    /// was absent as of that revision.
    pub fn cached_key(&self, key: &str) -> (Option<crate::store::KeyValue>, Revision) {
        // Read before the state: the state is at least as new.
        let applied = self.inner.cache.applied();
        (self.inner.cache.read().raw(key).cloned(), applied)
    }

    /// Whether the cache keeps the keys under `prefix` ([`ControllerBuilder::cache_prefix`]).
    pub fn caches(&self, prefix: &str) -> bool {
        self.inner.cache.keeps(prefix)
    }

    /// The nodes `keep` accepts (it also gets how many instances are placed
    /// on each), in id order, from the cache as of at least this
    /// controller's last write. Cheaper than [`Controller::list_nodes`]
    /// when few are wanted: only those are copied.
    pub async fn nodes_matching<F>(&self, keep: F) -> Result<Vec<Node>>
    where
        F: Fn(&Node, usize) -> bool,
    {
        self.caught_up().await?;
        let state = self.inner.cache.read();
        let mut nodes: Vec<Node> = state
            .nodes
            .nodes()
            .iter()
            .filter(|n| keep(n, state.placed_on(&n.id)))
            .cloned()
            .collect();
        drop(state);
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// The store revision the cache has applied; a watch from it misses
    /// nothing the cache has not shown. Errors: `Unavailable`.
    pub async fn cached_revision(&self) -> Result<Revision> {
        self.inner.cache.ready().await?;
        Ok(self.inner.cache.applied())
    }

    /// Notes that this controller committed `revision`.
    fn wrote(&self, revision: Revision) {
        self.inner.written.fetch_max(revision, Ordering::Relaxed);
    }

    /// Waits until the cache shows everything this controller committed.
    async fn caught_up(&self) -> Result<()> {
        let written = self.inner.written.load(Ordering::Relaxed);
        self.inner.cache.wait_for(written).await
    }

    /// Commits `txn`, merged with other small writes in flight (see
    /// `batcher`). On a conflict it first lets the cache catch up with
    /// the revision that won, so the caller's next look is fresh.
    async fn commit(&self, txn: Txn) -> std::result::Result<Revision, StoreError> {
        match self.inner.batcher.commit(txn).await {
            Ok(revision) => {
                self.wrote(revision);
                Ok(revision)
            }
            Err(error) => {
                if let StoreError::Conflict { found, .. } = &error {
                    let _ = self.inner.cache.wait_for(*found).await;
                }
                Err(error)
            }
        }
    }

    /// Reaches node `node` through `agent` from now on (an agent that connected).
    pub fn attach_agent(&self, node: impl Into<NodeId>, agent: Arc<dyn NodeAgent>) {
        self.inner
            .agents
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(node.into(), agent);
    }

    /// Sets up networks on node `node` through `host` from now on (an agent that connected).
    pub fn attach_network_host(&self, node: impl Into<NodeId>, host: Arc<dyn NetworkHost>) {
        self.inner
            .network_hosts
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(node.into(), host);
    }

    /// Stops setting up networks on node `node` (its agent no longer does).
    pub fn detach_network_host(&self, node: &str) {
        self.inner
            .network_hosts
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(node);
    }

    fn agent(&self, node: &str) -> Result<Arc<dyn NodeAgent>> {
        self.inner
            .agents
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(node)
            .cloned()
            .ok_or_else(|| {
                Error::Driver(crate::DriverError::Unavailable {
                    runtime: format!("the agent of node `{node}`"),
                    source: "no connection to that node's agent from this controller".into(),
                })
            })
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }

    fn options(&self) -> &ControllerOptions {
        &self.inner.options
    }
}

impl Controller {
    /// Reads object `id`, lets `change` edit it, and writes it back with
    /// compare-and-swap, re-reading and retrying when a concurrent writer won.
    /// `change` returns whether it changed anything; nothing is written if not.
    /// Errors: `NotFound`, whatever `change` returns, `Conflict` once the
    /// retries run out, and the store's errors.
    async fn update_object<T, F>(&self, id: &str, mut change: F) -> Result<T>
    where
        T: StoredObject,
        F: FnMut(&mut T) -> Result<bool> + Send,
    {
        use crate::store::{put_object, StoreExt};
        for _ in 0..self.options().max_conflict_retries {
            let mut object: T = self
                .inner
                .store
                .get_object(id)
                .await?
                .ok_or_else(|| Error::not_found(format!("{} `{id}`", T::KIND)))?;
            if !change(&mut object)? {
                return Ok(object);
            }
            match self.commit(put_object(Txn::new(), &object)).await {
                Ok(revision) => {
                    object.set_revision(revision);
                    return Ok(object);
                }
                Err(StoreError::Conflict { .. }) => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(StoreError::NotFound(_)) => {
                    return Err(Error::not_found(format!("{} `{id}`", T::KIND)))
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts(T::KIND, id))
    }

    fn too_many_conflicts(&self, kind: &str, id: &str) -> Error {
        Error::Conflict(format!(
            "{kind} `{id}` kept changing concurrently; gave up after {} attempts",
            self.options().max_conflict_retries
        ))
    }
}
