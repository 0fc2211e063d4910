//! The embedded deployment in one call: [`open`] gives a [`Controller`] over
//! the on-disk store in a state directory, with this machine registered as
//! its local node and the runtimes found here as its drivers, addresses
//! allocated in the store and networks set up on this machine (zixiao-net).
//! No daemon, no set-up: what the CLI, the Python and Node bindings and Rust apps use.
//!
//! Without a daemon ([`Convergence::InCaller`]) several processes (commands
//! in two terminals, a script and a Python app) share one state directory:
//! each opens the store file only for its short transactions
//! ([`FileHold::PerOperation`]), never across a wait for a runtime (a stop's
//! grace period, a boot, an image import), and holds an instance's lock file
//! ([`InstanceLockFiles`]) while it changes the instance. Reads and commands
//! on other instances proceed meanwhile; a change of an instance that
//! another process is changing fails with `Conflict`, naming the instance
//! and the other process's operation, before anything is stored. A
//! deployment that converges in the background (`zixiao server --embedded`,
//! `zixiao daemon`) is the only writer of its directory: it holds the store
//! file while it runs, and commands go through its socket.
//!
//! A runtime that this node's instances use but that cannot be reached
//! when the deployment opens answers every call `Unavailable` instead of
//! being missing, so nothing of those instances is taken for gone.
//!
//! ```no_run
//! # async fn example() -> zixiao_core::Result<()> {
//! let embedded = zixiao_embedded::open(zixiao_embedded::EmbeddedConfig::new("/tmp/zixiao")).await?;
//! for node in embedded.controller.list_nodes().await? {
//!     println!("{} {} cpus", node.id, node.capacity.cpus);
//! }
//! # Ok(()) }
//! ```

mod api;
mod instance_locks;
mod unreachable;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zixiao_auth::ProjectQuota;
use zixiao_core::controller::Convergence;
use zixiao_core::host::HostFacts;
use zixiao_core::store::StoreExt;
use zixiao_core::{Client, Controller, Error, Instance, LocalAgent, Node, Result};
use zixiao_drivers::DriverConfig;
use zixiao_net::{LinuxNetwork, StoreIpam};
use zixiao_sched::PluginScheduler;
use zixiao_store::{EmbeddedStore, EmbeddedStoreOptions, FileHold};

pub use instance_locks::{InstanceLockFiles, DEFAULT_INSTANCE_LOCK_WAIT};
pub use zixiao_drivers;

/// Where the embedded controller keeps its state and finds its runtimes.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The state directory: the store (`state.redb`) and the drivers' files.
    pub state_dir: PathBuf,
    /// The local node's id; defaults to this machine's hostname made into a DNS label.
    pub node_id: Option<String>,
    /// Runtime settings (containerd socket, ...); `state_dir` is filled in by [`open`].
    pub drivers: DriverConfig,
    /// Who converges instances: the caller that waits (the default, for a
    /// CLI or a script with no daemon), or a background loop (`zixiao
    /// server --embedded`, whose leader loop converges).
    pub convergence: Convergence,
    /// Whether specs may name host files (a disk, kernel or initrd by
    /// path, a snapshot directory to restore from) rather than images of
    /// the node's image store. On by default: the embedded node's caller
    /// is its local administrator, who holds the machine anyway. Off, such
    /// a request is refused (`InvalidArgument` naming the field) whoever
    /// makes it, and only the image store's files are used; instances
    /// created before keep their files. Callers over the network never
    /// give paths, whatever this says.
    pub allow_host_paths: bool,
}

impl EmbeddedConfig {
    /// The defaults, keeping everything under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        EmbeddedConfig {
            drivers: DriverConfig::new(state_dir.join("runtime")),
            state_dir,
            node_id: None,
            convergence: Convergence::InCaller,
            allow_host_paths: true,
        }
    }
}

/// An open embedded deployment.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The controller: the whole API.
    pub controller: Controller,
    /// The local node as registered just now.
    pub node: Node,
    /// The local node's agent and its drivers.
    pub agent: Arc<LocalAgent>,
    /// Where the local node's drivers keep their files and find their
    /// runtimes (a microVM's exported snapshots are copied from here).
    pub drivers: DriverConfig,
    /// The store in the state directory.
    pub store: Arc<EmbeddedStore>,
    /// Whether specs may name host files ([`EmbeddedConfig::allow_host_paths`]).
    pub allow_host_paths: bool,
}

impl Embedded {
    /// A [`Client`] of this deployment: the controller's API plus what
    /// needs the caller's files (snapshot export and restore, image
    /// archives), with the local node as the default node of image requests.
    pub fn client(&self) -> Client {
        Client::new(Arc::new(self.clone()))
    }
}

/// Environment variable naming the state directory when none is given.
pub const STATE_DIR_ENV: &str = "ZIXIAO_STATE_DIR";

/// The state directory every frontend uses when none is given:
/// `ZIXIAO_STATE_DIR`, else `zixiao` under the user's data directory
/// (`~/.local/share/zixiao`). Errors: `InvalidArgument` when neither is known.
pub fn default_state_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::data_dir().map(|d| d.join("zixiao")).ok_or_else(|| {
        Error::invalid(
            "state_dir",
            format!("no user data directory is known here; set one or {STATE_DIR_ENV}"),
        )
    })
}

/// The store file inside a state directory.
pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.redb")
}

/// Opens (or creates) the embedded deployment in `config.state_dir`:
/// opens the store, probes this machine, finds its runtimes and registers
/// (or refreshes) the local node with its real capacity.
///
/// Errors: `Unavailable` (another process holds the state directory),
/// `Internal` (the directory cannot be created or probed), the store's errors.
pub async fn open(config: EmbeddedConfig) -> Result<Embedded> {
    let agent = local_agent(&config.state_dir, &config.drivers).await?;
    open_with_agent(config, agent).await
}

/// This machine's agent, as the embedded deployment and `zixiao agent`
/// run it: its resources measured under `state_dir`, the drivers of the
/// runtimes found with `drivers` (and why the others are missing), and
/// the facts it reports for placement ([`zixiao_drivers::introspect`]).
///
/// Errors: `Internal` (the directory cannot be created or probed).
pub async fn local_agent(state_dir: &Path, drivers: &DriverConfig) -> Result<LocalAgent> {
    let host = probe(state_dir)?;
    let discovered = zixiao_drivers::discover(drivers).await;
    let facts = discovered.facts;
    let mut agent = LocalAgent::new(host).with_reported(facts.labels, facts.traits);
    for driver in discovered.drivers {
        agent = agent.with_driver(driver);
    }
    for (instance_type, reason) in discovered.missing {
        agent = agent.with_missing_runtime(instance_type, reason);
    }
    Ok(agent)
}

/// Opens the embedded deployment like [`open`], with a local agent the
/// caller built (its own drivers, or hand-written fakes in tests).
pub async fn open_with_agent(config: EmbeddedConfig, agent: LocalAgent) -> Result<Embedded> {
    create_state_dir(&config.state_dir)?;
    let store = open_store(&config)?;
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| node_id_from_hostname(&agent.describe_now().hostname));
    let (agent, unreachable) = stand_in_for_unreachable(agent, &store, &node_id).await?;
    let agent = Arc::new(agent);
    let store: Arc<EmbeddedStore> = Arc::new(store);
    let mut builder = Controller::builder(store.clone(), Arc::new(PluginScheduler::default()))
        .agent(node_id.clone(), agent.clone())
        .address_allocator(Arc::new(StoreIpam::new(store.clone())))
        .admission(Arc::new(ProjectQuota::new(store.clone())))
        .convergence(config.convergence);
    if config.convergence == Convergence::InCaller {
        builder = builder.instance_locks(Arc::new(InstanceLockFiles::new(&config.state_dir)));
    }
    // Without a netlink socket networks still get addresses, and setting
    // one up on this node says why it cannot.
    if let Ok(host) = LinuxNetwork::connect(&config.drivers.netns_dir) {
        builder = builder.network_host(node_id.clone(), Arc::new(host));
    }
    let controller = builder.build();
    let mut registration = agent.registration(node_id);
    // Runtimes that only stand in for unreachable ones take no new instances.
    for (instance_type, reason) in unreachable {
        registration.runtimes.remove(&instance_type);
        registration.drivers.remove(&instance_type);
        registration.missing_runtimes.insert(instance_type, reason);
    }
    let node = controller.register_node(registration).await?;
    Ok(Embedded {
        controller,
        node,
        agent,
        drivers: config.drivers,
        store,
        allow_host_paths: config.allow_host_paths,
    })
}

/// Opens the store in `config`'s state directory: held per operation when
/// commands converge in their callers, so that processes sharing the
/// directory take turns between transactions; held while open by a
/// deployment that converges in the background, which is then the
/// directory's only writer and sees every change through its own watch.
fn open_store(config: &EmbeddedConfig) -> Result<EmbeddedStore> {
    let path = store_path(&config.state_dir);
    let store = match config.convergence {
        // No background lease sweep: the embedded deployment keeps no
        // leases, and a sweep would open the file every second.
        Convergence::InCaller => EmbeddedStoreOptions::new()
            .hold(FileHold::PerOperation)
            .sweep_interval(None)
            .open(&path)?,
        Convergence::Background => EmbeddedStore::open(&path)?,
    };
    Ok(store)
}

/// `agent` with an [`unreachable::UnreachableRuntime`] for each instance
/// type it has no runtime for while instances of that type are placed on
/// this node: their runtime ran them, and cannot be reached now. Returns
/// those types with the reason discovery gave.
async fn stand_in_for_unreachable(
    mut agent: LocalAgent,
    store: &EmbeddedStore,
    node_id: &str,
) -> Result<(LocalAgent, Vec<(zixiao_core::InstanceType, String)>)> {
    let missing = agent.describe_now().missing_runtimes.clone();
    if missing.is_empty() {
        return Ok((agent, Vec::new()));
    }
    let (placed, _) = store
        .list_objects::<Instance, _>(|i| {
            i.node.as_deref() == Some(node_id) && missing.contains_key(&i.spec.instance_type)
        })
        .await?;
    let types: BTreeSet<_> = placed.iter().map(|i| i.spec.instance_type).collect();
    let mut unreachable = Vec::new();
    for instance_type in types {
        let reason = missing[&instance_type].clone();
        agent = agent.with_driver(Arc::new(unreachable::UnreachableRuntime::new(
            instance_type,
            reason.clone(),
        )));
        unreachable.push((instance_type, reason));
    }
    Ok((agent, unreachable))
}

/// This machine's facts, measuring disk where the state directory lives.
pub fn probe(state_dir: &Path) -> Result<HostFacts> {
    create_state_dir(state_dir)?;
    HostFacts::probe(state_dir)
        .map_err(|e| Error::Internal(format!("cannot read this machine's resources: {e}")))
}

fn create_state_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Internal(format!(
            "cannot create state directory {}: {e}",
            dir.display()
        ))
    })
}

/// Makes a hostname into a node id: lowercase letters, digits and `-`, at
/// most 63 characters; `local` when nothing is left.
///
/// ```
/// assert_eq!(zixiao_embedded::node_id_from_hostname("Build_Box.example"), "build-box-example");
/// assert_eq!(zixiao_embedded::node_id_from_hostname("---"), "local");
/// ```
pub fn node_id_from_hostname(hostname: &str) -> String {
    let mapped: String = hostname
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "local".to_owned()
    } else {
        trimmed.to_owned()
    }
}

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
