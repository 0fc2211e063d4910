//! The simulated nodes: each a node name, a session, a fake runtime and
//! the agent's liveness logic (register, heartbeat, fence), all in this
//! process, reached by the servers over the real AgentService (zixiao-api's
//! `AgentServer`, one listener shared by up to [`NODES_PER_LISTENER`]
//! nodes, each call routed by the node its instance is placed on) and
//! talking to them over the real MembershipService.
//!
//! A node fences itself as `zixiao agent` and its watchdog do: when its
//! last heartbeat that a server answered was sent longer ago than the
//! fencing deadline, it stops every instance and refuses creates and
//! starts until a heartbeat is answered again. Every start and stop is
//! written in the [`Ledger`] with the time, which is what "never on two
//! nodes at once" is checked against.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zixiao_api::agent::AgentServer;
use zixiao_api::membership::MembershipClient;
use zixiao_cluster::Timing;
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Driver, DriverError, ErrorKind, Instance, InstanceType, LocalAgent, LogChunk, NodeAgent,
    NodeFacts, NodeRegistration, NodeRole, Resources, RuntimeState,
};

/// How many simulated nodes share one AgentService listener.
pub const NODES_PER_LISTENER: usize = 100;

/// One run of an instance on a node: from its start to its stop (open
/// while it runs).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The node.
    pub node: String,
    /// When it started.
    pub from: Instant,
    /// When it stopped.
    pub to: Option<Instant>,
}

/// Every run of every instance.
#[derive(Debug, Default)]
pub struct Ledger {
    runs: Mutex<HashMap<String, Vec<Run>>>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Run>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn started(&self, id: &str, node: &str) {
        let mut runs = self.lock();
        let runs = runs.entry(id.to_owned()).or_default();
        if !runs.iter().any(|r| r.node == node && r.to.is_none()) {
            runs.push(Run {
                node: node.to_owned(),
                from: Instant::now(),
                to: None,
            });
        }
    }

    fn stopped(&self, id: &str, node: &str) {
        if let Some(runs) = self.lock().get_mut(id) {
            let now = Instant::now();
            for run in runs.iter_mut().filter(|r| r.node == node && r.to.is_none()) {
                run.to = Some(now);
            }
        }
    }

    /// The node `id` runs on now, if any.
    pub fn running_on(&self, id: &str) -> Option<String> {
        self.lock()
            .get(id)?
            .iter()
            .find(|r| r.to.is_none())
            .map(|r| r.node.clone())
    }

    /// The instances that ran on two nodes at once, with the overlap.
    pub fn overlaps(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (id, runs) in self.lock().iter() {
            for (i, a) in runs.iter().enumerate() {
                for b in &runs[i + 1..] {
                    if a.node == b.node {
                        continue;
                    }
                    let a_to = a.to.unwrap_or_else(Instant::now);
                    let b_to = b.to.unwrap_or_else(Instant::now);
                    if a.from < b_to && b.from < a_to {
                        found.push(format!(
                            "instance {id} ran on {} and {} at once",
                            a.node, b.node
                        ));
                    }
                }
            }
        }
        found
    }

    /// How many instances run now.
    pub fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|runs| runs.iter().any(|r| r.to.is_none()))
            .count()
    }
}

/// What happened to a node, as the fault schedule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Heartbeating and reachable.
    #[default]
    Up,
    /// Lost its power: its instances died with it; it answers nothing.
    Dead,
    /// Cut off from the servers: its instances run until it fences itself.
    Partitioned,
}

#[derive(Debug, Default)]
struct NodeState {
    instances: HashMap<String, RuntimeState>,
    /// When the last heartbeat a server answered was sent.
    renewed: Option<Instant>,
    fenced: bool,
    health: Health,
    /// How many times it fenced itself.
    fences: u64,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    session: String,
    registration: NodeRegistration,
    state: Mutex<NodeState>,
    ledger: Arc<Ledger>,
    fence_after: Duration,
}

impl SimNode {
    fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        self.lock().health
    }

    /// Kills it (power loss): its instances die at once.
    pub fn kill(&self) {
        let mut state = self.lock();
        state.health = Health::Dead;
        for (id, runtime) in state.instances.drain() {
            if runtime == RuntimeState::Running {
                self.ledger.stopped(&id, &self.name);
            }
        }
    }

    /// Cuts it off from the servers (or heals the cut).
    pub fn partition(&self, cut: bool) {
        let mut state = self.lock();
        if state.health != Health::Dead {
            state.health = if cut { Health::Partitioned } else { Health::Up };
        }
    }

    /// How many times it fenced itself.
    pub fn fences(&self) -> u64 {
        self.lock().fences
    }

    /// The instances it runs now.
    pub fn running(&self) -> Vec<String> {
        self.lock()
            .instances
            .iter()
            .filter(|(_, s)| **s == RuntimeState::Running)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Fences it when its last answered heartbeat is too old: stops every
    /// instance, as its watchdog would.
    fn check_fence(&self) {
        let mut state = self.lock();
        if state.health == Health::Dead {
            return;
        }
        let stale = state
            .renewed
            .is_none_or(|at| at.elapsed() > self.fence_after);
        if stale && !state.fenced {
            state.fenced = true;
            state.fences += 1;
            let ids: Vec<String> = state.instances.keys().cloned().collect();
            for id in ids {
                if state.instances.get(&id) == Some(&RuntimeState::Running) {
                    self.ledger.stopped(&id, &self.name);
                }
                state.instances.insert(
                    id,
                    RuntimeState::Exited {
                        code: 137,
                        oom_killed: false,
                        at: None,
                    },
                );
            }
        }
    }

    fn renewed(&self, sent: Instant) {
        let mut state = self.lock();
        state.renewed = Some(sent);
        state.fenced = false;
    }

    fn reachable(&self) -> Result<(), DriverError> {
        match self.lock().health {
            Health::Up => Ok(()),
            _ => Err(DriverError::Unavailable {
                runtime: format!("node `{}`", self.name),
                source: "the simulated node is down or cut off".into(),
            }),
        }
    }
}

/// The nodes one AgentService listener serves, by name.
#[derive(Debug, Default)]
struct Listener {
    nodes: HashMap<String, Arc<SimNode>>,
}

/// The one runtime of a listener's nodes: routes each call to the node
/// the instance is placed on.
#[derive(Debug)]
struct SimDriver {
    listener: Arc<Listener>,
}

impl SimDriver {
    fn node(&self, instance: &Instance) -> Result<&Arc<SimNode>, DriverError> {
        let name = instance.node.as_deref().unwrap_or_default();
        let node =
            self.listener.nodes.get(name).ok_or_else(|| {
                DriverError::NotFound(format!("node `{name}` is not simulated here"))
            })?;
        node.reachable()?;
        Ok(node)
    }

    fn refuse_if_fenced(node: &SimNode) -> Result<(), DriverError> {
        node.check_fence();
        if node.lock().fenced {
            return Err(DriverError::FailedPrecondition(format!(
                "node `{}` is fenced: it has not renewed its liveness",
                node.name
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for SimDriver {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Container
    }

    fn name(&self) -> &str {
        "sim"
    }

    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        let node = self.node(instance)?;
        Self::refuse_if_fenced(node)?;
        node.lock()
            .instances
            .entry(instance.id.clone())
            .or_insert(RuntimeState::Created);
        Ok(())
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        let node = self.node(instance)?;
        Self::refuse_if_fenced(node)?;
        let mut state = node.lock();
        let runtime = state
            .instances
            .get_mut(&instance.id)
            .ok_or_else(|| DriverError::NotFound(format!("instance `{}`", instance.id)))?;
        if *runtime != RuntimeState::Running {
            *runtime = RuntimeState::Running;
            node.ledger.started(&instance.id, &node.name);
        }
        Ok(())
    }

    async fn stop(&self, instance: &Instance, _grace: Duration) -> Result<(), DriverError> {
        let node = self.node(instance)?;
        let mut state = node.lock();
        if let Some(runtime) = state.instances.get_mut(&instance.id) {
            if *runtime == RuntimeState::Running {
                node.ledger.stopped(&instance.id, &node.name);
            }
            *runtime = RuntimeState::Exited {
                code: 0,
                oom_killed: false,
                at: None,
            };
        }
        Ok(())
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        let node = self.node(instance)?;
        if node.lock().instances.remove(&instance.id) == Some(RuntimeState::Running) {
            node.ledger.stopped(&instance.id, &node.name);
        }
        Ok(())
    }

    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError> {
        let node = self.node(instance)?;
        node.check_fence();
        Ok(node
            .lock()
            .instances
            .get(&instance.id)
            .cloned()
            .unwrap_or(RuntimeState::Missing))
    }

    async fn read_log(
        &self,
        instance: &Instance,
        _offset: u64,
        _max: usize,
    ) -> Result<LogChunk, DriverError> {
        Err(DriverError::NotFound(format!(
            "simulated instance `{}` writes no log",
            instance.name
        )))
    }
}

/// The listener's [`NodeAgent`]: one runtime for all its nodes.
#[derive(Debug)]
struct ListenerAgent {
    driver: Arc<SimDriver>,
    facts: NodeFacts,
}

#[async_trait]
impl NodeAgent for ListenerAgent {
    async fn describe(&self) -> Result<NodeFacts, DriverError> {
        Ok(self.facts.clone())
    }

    fn driver(&self, instance_type: InstanceType) -> Result<Arc<dyn Driver>, DriverError> {
        if instance_type == InstanceType::Container {
            Ok(self.driver.clone())
        } else {
            Err(DriverError::Unsupported(format!(
                "simulated nodes run containers only, not {instance_type}"
            )))
        }
    }
}

/// What the simulated nodes look like.
#[derive(Debug, Clone)]
pub struct NodeShape {
    /// How many nodes.
    pub nodes: usize,
    /// How many zones they spread over (round robin).
    pub zones: usize,
    /// Each node's capacity.
    pub capacity: Resources,
}

/// Every simulated node, their listeners and their heartbeats.
#[derive(Debug)]
pub struct Fleet {
    /// The nodes, in name order.
    pub nodes: Vec<Arc<SimNode>>,
    /// Every run of every instance.
    pub ledger: Arc<Ledger>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    /// Starts the listeners of `shape`'s nodes on loopback. Nothing
    /// registers until [`Fleet::join`].
    pub async fn start(shape: &NodeShape, timing: Timing) -> Result<Self, crate::SimError> {
        let ledger = Arc::new(Ledger::default());
        let (stop, _) = watch::channel(false);
        let mut nodes = Vec::with_capacity(shape.nodes);
        for chunk_start in (0..shape.nodes).step_by(NODES_PER_LISTENER) {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| crate::SimError::io("an agent listener", e))?;
            let addr: SocketAddr = listener
                .local_addr()
                .map_err(|e| crate::SimError::io("an agent listener", e))?;
            let mut served = Listener::default();
            let end = (chunk_start + NODES_PER_LISTENER).min(shape.nodes);
            for i in chunk_start..end {
                let name = format!("sim-{i:05}");
                let zone = format!("zone-{}", i % shape.zones.max(1));
                let probe = LocalAgent::new(HostFacts {
                    hostname: name.clone(),
                    capacity: shape.capacity,
                })
                .with_driver(Arc::new(ProbeDriver));
                let registration = NodeRegistration {
                    address: addr.to_string(),
                    zone: zone.clone(),
                    role: NodeRole::Worker,
                    // The configured capacity is what may be placed: the
                    // fill and the fault schedule are sized by it.
                    allocation_ratios: Some(zixiao_core::AllocationRatios::EXACT),
                    ..probe.registration(name.clone())
                };
                let node = Arc::new(SimNode {
                    name: name.clone(),
                    zone,
                    session: uuid::Uuid::new_v4().to_string(),
                    registration,
                    state: Mutex::default(),
                    ledger: ledger.clone(),
                    fence_after: timing.fence_after(),
                });
                served.nodes.insert(name, node.clone());
                nodes.push(node);
            }
            let listener_nodes = Arc::new(served);
            let facts = LocalAgent::new(HostFacts {
                hostname: format!("sim-listener-{addr}"),
                capacity: shape.capacity,
            })
            .with_driver(Arc::new(ProbeDriver))
            .describe_now()
            .clone();
            let agent = ListenerAgent {
                driver: Arc::new(SimDriver {
                    listener: listener_nodes,
                }),
                facts,
            };
            let service = AgentServer::new(Arc::new(agent)).into_service();
            let mut stopped = stop.subscribe();
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            });
        }
        Ok(Fleet {
            nodes,
            ledger,
            stop,
        })
    }

    /// Registers every node through `servers` (at most 64 at once) and
    /// starts their heartbeats, every `timing.heartbeat()`, staggered.
    pub async fn join(&self, servers: &[String], timing: Timing) -> Result<(), crate::SimError> {
        let clients = Clients::new(servers, timing)?;
        let registering = futures::stream::iter(self.nodes.iter().cloned())
            .map(|node| {
                let clients = clients.clone();
                async move { register(&clients, &node).await }
            })
            .buffer_unordered(64);
        futures::StreamExt::collect::<Vec<_>>(registering).await;
        for (i, node) in self.nodes.iter().enumerate() {
            let offset = timing.heartbeat() * (i as u32 % 100) / 100;
            tokio::spawn(heartbeat(
                node.clone(),
                clients.clone(),
                timing,
                offset,
                self.stop.subscribe(),
            ));
        }
        Ok(())
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Arc<SimNode>> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// How many times nodes fenced themselves, in all.
    pub fn fences(&self) -> u64 {
        self.nodes.iter().map(|n| n.fences()).sum()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

use futures::StreamExt as _;

/// Membership clients of every server: a few channels each, shared by the
/// nodes (HTTP/2 multiplexes their calls).
#[derive(Debug, Clone)]
struct Clients {
    servers: Arc<Vec<Vec<MembershipClient>>>,
}

const CHANNELS_PER_SERVER: usize = 8;

impl Clients {
    fn new(servers: &[String], timing: Timing) -> Result<Self, crate::SimError> {
        let mut all = Vec::new();
        for server in servers {
            let mut channels = Vec::new();
            for _ in 0..CHANNELS_PER_SERVER {
                channels.push(
                    MembershipClient::new(server, timing.heartbeat().max(Duration::from_secs(2)))
                        .map_err(crate::SimError::Zixiao)?,
                );
            }
            all.push(channels);
        }
        Ok(Clients {
            servers: Arc::new(all),
        })
    }

    fn get(&self, server: usize, node: usize) -> &MembershipClient {
        let channels = &self.servers[server % self.servers.len()];
        &channels[node % channels.len()]
    }

    fn len(&self) -> usize {
        self.servers.len()
    }
}

fn index_of(name: &str) -> usize {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn register(clients: &Clients, node: &SimNode) -> Option<u64> {
    let i = index_of(&node.name);
    for attempt in 0..(4 * clients.len()) {
        let sent = Instant::now();
        match clients
            .get(i + attempt, i)
            .register_node(&node.registration, &node.session)
            .await
        {
            Ok((_, lease)) => {
                node.renewed(sent);
                return Some(lease.id);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

/// A node's heartbeat loop, as `zixiao agent` runs it: renew through a
/// server, rotate to the next on failure, register again when the server
/// says its liveness expired; fence when no answer came for too long.
async fn heartbeat(
    node: Arc<SimNode>,
    clients: Clients,
    timing: Timing,
    offset: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let i = index_of(&node.name);
    let mut server = i;
    let mut lease = 0u64;
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(timing.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        node.check_fence();
        match node.health() {
            Health::Dead => return,
            Health::Partitioned => continue,
            Health::Up => {}
        }
        let sent = Instant::now();
        let beat = tokio::time::timeout(
            timing.heartbeat(),
            clients
                .get(server, i)
                .heartbeat(&node.name, &node.session, lease),
        )
        .await;
        match beat {
            Ok(Ok(())) => node.renewed(sent),
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
                if let Some(id) = register(&clients, &node).await {
                    lease = id;
                }
            }
            _ => server += 1,
        }
    }
}

/// Stands in for the runtime when a registration is built: what a
/// simulated node reports to run.
#[derive(Debug)]
struct ProbeDriver;

#[async_trait]
impl Driver for ProbeDriver {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Container
    }

    fn name(&self) -> &str {
        "sim"
    }

    async fn create(&self, _: &Instance) -> Result<(), DriverError> {
        Ok(())
    }

    async fn start(&self, _: &Instance) -> Result<(), DriverError> {
        Ok(())
    }

    async fn stop(&self, _: &Instance, _: Duration) -> Result<(), DriverError> {
        Ok(())
    }

    async fn delete(&self, _: &Instance) -> Result<(), DriverError> {
        Ok(())
    }

    async fn inspect(&self, _: &Instance) -> Result<RuntimeState, DriverError> {
        Ok(RuntimeState::Missing)
    }

    async fn read_log(&self, _: &Instance, _: u64, _: usize) -> Result<LogChunk, DriverError> {
        Err(DriverError::NotFound("no log".to_owned()))
    }
}
