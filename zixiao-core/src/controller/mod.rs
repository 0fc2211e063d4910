//! The [`Controller`]: the one API every frontend calls. It validates a
//! request, writes the intent to the [`Store`], and the reconcilers of
//! [`reconcile`] converge the world towards it through each node's
//! [`NodeAgent`]. A crash anywhere loses nothing acknowledged: the next
//! reconcile reads the store and carries on.

mod cluster;
mod failover;
mod images;
mod instances;
mod networks;
mod nodes;
pub mod reconcile;
mod snapshots;
mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use cluster::ClusterInfo;
pub use failover::FailoverReport;
pub use instances::{InstanceFilter, LogReader, FOLLOW_CHUNK, FOLLOW_POLL};
pub use networks::{AddressAllocator, NetworkHost, NetworkReconcileReport, NETWORKS_PREFIX};
pub use nodes::DrainReport;
pub use reconcile::{Convergence, ReconcileReport, Step};
pub use watch::{EventKind, InstanceEvent, NodeEvent};

use crate::agent::NodeAgent;
use crate::clock::{Clock, SystemClock};
use crate::keyed_lock::KeyedLock;
use crate::model::{Instance, Node, NodeId};
use crate::scheduler::Scheduler;
use crate::store::{Revision, Store, StoreError, StoredObject};
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
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            stop_grace: Duration::from_secs(10),
            max_conflict_retries: 200,
            restart_backoff: Duration::from_secs(1),
            max_restart_backoff: Duration::from_secs(300),
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
    /// One converge per instance at a time in this process.
    converging: KeyedLock,
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
}

impl ControllerBuilder {
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

    /// Sets who carries intents out ([`Convergence::InCaller`] unless set).
    pub fn convergence(mut self, convergence: Convergence) -> Self {
        self.convergence = convergence;
        self
    }

    /// The controller.
    pub fn build(self) -> Controller {
        Controller {
            inner: Arc::new(Inner {
                store: self.store,
                scheduler: self.scheduler,
                agents: RwLock::new(self.agents),
                clock: self.clock,
                options: self.options,
                addresses: self.addresses,
                network_hosts: RwLock::new(self.network_hosts),
                convergence: self.convergence,
                converging: KeyedLock::default(),
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
        }
    }

    /// The store it writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Who carries out intents for the calls that wait ([`Controller::settle`]).
    pub fn convergence(&self) -> Convergence {
        self.inner.convergence
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
        use crate::store::{put_object, StoreExt, Txn};
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
            match self
                .inner
                .store
                .commit(put_object(Txn::new(), &object))
                .await
            {
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
