//! One simulation: servers up, nodes join, instances created, a steady
//! spell measured, the fault schedule played, the cluster checked.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use zixiao_cluster::server::{self, ServerHandle, ServerOptions};
use zixiao_cluster::Timing;
use zixiao_core::store::StoreExt;
use zixiao_core::{
    Client, CreateInstance, Instance, InstanceSpec, InstanceStatus, Node, Resources, RestartPolicy,
    Store, Wait,
};

use crate::etcd::{die_with_parent, kill9, EtcdCluster, ProcessStats};
use crate::nodes::{Fleet, NodeShape};
use crate::SimError;

/// Where the servers keep the cluster.
#[derive(Debug)]
pub enum StoreTarget {
    /// A private etcd cluster the simulation owns (and may kill members of).
    Owned(EtcdCluster),
    /// A shared etcd, under a key prefix of the simulation's own.
    Shared {
        /// The members' client URLs.
        endpoints: Vec<String>,
        /// The key prefix.
        prefix: String,
    },
}

impl StoreTarget {
    fn endpoints(&self) -> Vec<String> {
        match self {
            StoreTarget::Owned(cluster) => cluster.all_endpoints(),
            StoreTarget::Shared { endpoints, .. } => endpoints.clone(),
        }
    }

    fn prefix(&self) -> String {
        match self {
            StoreTarget::Owned(_) => String::new(),
            StoreTarget::Shared { prefix, .. } => prefix.clone(),
        }
    }
}

/// How the servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Servers {
    /// In this process (their CPU is not told apart from the nodes').
    InProcess,
    /// Each a process of its own, this executable started again in the
    /// server role ([`serve_if_asked`]): their CPU and memory are measured.
    Processes,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Simulated nodes.
    pub nodes: usize,
    /// Zones the nodes spread over.
    pub zones: usize,
    /// Each node's capacity.
    pub node_capacity: Resources,
    /// Instances to create (restart policy `always`).
    pub instances: usize,
    /// Their sizes, `(cpus, memory MiB, weight)`, chosen in turn by weight.
    pub mix: Vec<(u32, u64, u32)>,
    /// Concurrent API clients creating them.
    pub create_concurrency: usize,
    /// Server replicas.
    pub servers: usize,
    /// How they run.
    pub server_mode: Servers,
    /// Liveness settings of servers and nodes.
    pub timing: Timing,
    /// How long the steady state is measured.
    pub steady_window: Duration,
    /// How many single nodes are killed, one after another.
    pub node_kills: usize,
    /// Whether a whole zone (`zone-0`) is cut off, then healed.
    pub partition_zone: bool,
    /// Whether the leading server is killed.
    pub kill_leader: bool,
    /// Whether the etcd leader is killed (a private etcd only).
    pub kill_etcd_leader: bool,
    /// Told how far the simulation got, one line at a time (the binary and
    /// the benchmark print it; by default nothing is said).
    pub progress: fn(&str),
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 100,
            zones: 4,
            node_capacity: Resources {
                cpus: zixiao_core::Cpus::cores(32),
                memory_mib: 128 * 1024,
                disk_gib: 1024,
                instances: 110,
            },
            instances: 1_000,
            mix: vec![(1, 1024, 50), (2, 2048, 30), (4, 4096, 20)],
            create_concurrency: 64,
            servers: 2,
            server_mode: Servers::InProcess,
            timing: Timing::default(),
            steady_window: Duration::from_secs(10),
            node_kills: 3,
            partition_zone: true,
            kill_leader: true,
            kill_etcd_leader: false,
            progress: |_| {},
        }
    }
}

/// The steady state: nothing created, nothing failing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Steady {
    /// How long it was measured, seconds.
    pub window_s: f64,
    /// The servers' CPU, percent of one core, all servers together (only
    /// for server processes).
    pub server_cpu_pct: Option<f64>,
    /// etcd's CPU, percent of one core, all members together (only for a
    /// private etcd).
    pub etcd_cpu_pct: Option<f64>,
    /// Store writes per second (revisions; on a shared etcd, everyone's).
    pub writes_per_s: f64,
    /// Heartbeats the nodes sent per second.
    pub heartbeats_per_s: f64,
    /// The servers' resident memory, MiB, all together (server processes only).
    pub server_rss_mib: Option<f64>,
}

/// What a simulation measured and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimReport {
    /// Simulated nodes.
    pub nodes: usize,
    /// Instances created.
    pub instances: usize,
    /// Server replicas.
    pub servers: usize,
    /// Seconds until every node was registered and ready.
    pub join_s: f64,
    /// Seconds until every create was acknowledged.
    pub create_ack_s: f64,
    /// Creates acknowledged per second.
    pub creates_per_s: f64,
    /// Latency of a create, p50 and p99, ms.
    pub create_p50_ms: f64,
    /// See `create_p50_ms`.
    pub create_p99_ms: f64,
    /// Seconds from the first create until every instance ran.
    pub all_running_s: f64,
    /// The steady state.
    pub steady: Steady,
    /// Seconds from each single node's death to its instances running elsewhere.
    pub node_failovers_s: Vec<f64>,
    /// Nodes in the partitioned zone, and the instances they ran.
    pub zone_nodes: usize,
    /// See `zone_nodes`.
    pub zone_instances: usize,
    /// Seconds from the zone's partition to its instances running elsewhere.
    pub zone_failover_s: Option<f64>,
    /// Seconds from the zone's healing to all its nodes ready again.
    pub zone_rejoin_s: Option<f64>,
    /// Times nodes fenced themselves in all (the zone's, and any node that
    /// missed its heartbeats because the machine was overloaded).
    pub fences: u64,
    /// Seconds from the leading server's death to a create running again.
    pub leader_kill_s: Option<f64>,
    /// Seconds from the etcd leader's death to a create running again.
    pub etcd_leader_kill_s: Option<f64>,
    /// Nodes that fenced themselves while the etcd leader was down.
    pub fences_during_etcd_kill: u64,
    /// The servers' resident memory at the end, MiB (server processes only).
    pub server_rss_mib: Option<f64>,
    /// Instances pending at the end, each with its reason.
    pub pending: usize,
    /// What must never happen and did.
    pub violations: Vec<String>,
}

/// The environment a server process reads its role from.
pub const ROLE_ENV: &str = "ZIXIAO_SIM_ROLE";

/// Runs the server role and exits when this process was started as a
/// simulation's server; returns otherwise. Call it first in `main`.
pub fn serve_if_asked() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("server") {
        return;
    }
    crate::raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let env = |name: &str| std::env::var(name).unwrap_or_default();
        let timing: Timing = serde_json::from_str(&env("ZIXIAO_SIM_TIMING")).unwrap_or_default();
        let store = connect(
            env("ZIXIAO_SIM_ETCD")
                .split(',')
                .map(str::to_owned)
                .collect(),
            env("ZIXIAO_SIM_PREFIX"),
        )
        .await
        .expect("etcd");
        let handle = server::start(
            server::controller(store),
            ServerOptions {
                limits: Default::default(),
                id: env("ZIXIAO_SIM_ID"),
                listen: "127.0.0.1:0".parse().expect("addr"),
                timing,
                metrics: None,
            },
        )
        .await
        .expect("server");
        println!("listening {}", handle.addr());
        handle.wait().await;
    });
    std::process::exit(0);
}

#[cfg(feature = "etcd")]
async fn connect(endpoints: Vec<String>, prefix: String) -> Result<Arc<dyn Store>, SimError> {
    let store = zixiao_store::EtcdStore::connect(
        zixiao_store::EtcdStoreOptions::new(endpoints).key_prefix(prefix),
    )
    .await
    .map_err(zixiao_core::Error::from)?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "etcd"))]
async fn connect(_endpoints: Vec<String>, _prefix: String) -> Result<Arc<dyn Store>, SimError> {
    Err(SimError::Server(
        "zixiao-sim was built without its `etcd` feature".to_owned(),
    ))
}

/// The running servers.
enum Running {
    InProcess(Vec<Option<ServerHandle>>),
    Processes(Vec<Option<Child>>),
}

struct Cluster {
    running: Running,
    addrs: Vec<String>,
}

impl Cluster {
    async fn start(config: &SimConfig, target: &StoreTarget) -> Result<Self, SimError> {
        let mut addrs = Vec::new();
        let running = match config.server_mode {
            Servers::InProcess => {
                let mut handles = Vec::new();
                for i in 0..config.servers {
                    let store = connect(target.endpoints(), target.prefix()).await?;
                    let handle = server::start(
                        server::controller(store),
                        ServerOptions {
                            limits: Default::default(),
                            id: format!("server-{i}"),
                            listen: "127.0.0.1:0".parse().expect("addr"),
                            timing: config.timing,
                            metrics: None,
                        },
                    )
                    .await?;
                    addrs.push(handle.addr().to_string());
                    handles.push(Some(handle));
                }
                Running::InProcess(handles)
            }
            Servers::Processes => {
                let exe =
                    std::env::current_exe().map_err(|e| SimError::io("this executable", e))?;
                let timing = serde_json::to_string(&config.timing).unwrap_or_default();
                let mut children = Vec::new();
                for i in 0..config.servers {
                    let mut command = Command::new(&exe);
                    command
                        .env(ROLE_ENV, "server")
                        .env("ZIXIAO_SIM_ETCD", target.endpoints().join(","))
                        .env("ZIXIAO_SIM_PREFIX", target.prefix())
                        .env("ZIXIAO_SIM_ID", format!("server-{i}"))
                        .env("ZIXIAO_SIM_TIMING", &timing)
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null());
                    die_with_parent(&mut command);
                    let mut child = command
                        .spawn()
                        .map_err(|e| SimError::io("starting a server", e))?;
                    let stdout = child.stdout.take().ok_or_else(|| {
                        SimError::Server("a server process has no stdout".to_owned())
                    })?;
                    let mut line = String::new();
                    BufReader::new(stdout)
                        .read_line(&mut line)
                        .map_err(|e| SimError::io("reading a server's address", e))?;
                    let addr = line
                        .trim()
                        .strip_prefix("listening ")
                        .ok_or_else(|| SimError::Server(format!("a server said `{line}`")))?;
                    addrs.push(addr.to_owned());
                    children.push(Some(child));
                }
                Running::Processes(children)
            }
        };
        Ok(Cluster { running, addrs })
    }

    fn pids(&self) -> Vec<u32> {
        match &self.running {
            Running::InProcess(_) => Vec::new(),
            Running::Processes(children) => children.iter().flatten().map(Child::id).collect(),
        }
    }

    fn alive(&self) -> Vec<usize> {
        match &self.running {
            Running::InProcess(h) => (0..h.len()).filter(|i| h[*i].is_some()).collect(),
            Running::Processes(c) => (0..c.len()).filter(|i| c[*i].is_some()).collect(),
        }
    }

    fn client(&self, i: usize) -> Result<Client, SimError> {
        Ok(zixiao_api::connect(&self.addrs[i])?)
    }

    /// A client of a live server.
    fn any(&self) -> Result<Client, SimError> {
        let alive = self.alive();
        self.client(*alive.first().unwrap_or(&0))
    }

    async fn kill(&mut self, i: usize) {
        match &mut self.running {
            Running::InProcess(handles) => {
                if let Some(handle) = handles[i].take() {
                    handle.shutdown().await;
                }
            }
            Running::Processes(children) => {
                if let Some(mut child) = children[i].take() {
                    kill9(child.id() as i32);
                    let _ = child.wait();
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Running::Processes(children) = &mut self.running {
            for child in children.iter_mut().flatten() {
                kill9(child.id() as i32);
                let _ = child.wait();
            }
        }
    }
}

fn quantile(samples: &[Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// The spec of the `n`th instance: the mix by weight, in turn.
fn spec(mix: &[(u32, u64, u32)], n: usize) -> InstanceSpec {
    let total: u32 = mix.iter().map(|m| m.2).sum::<u32>().max(1);
    let mut pick = (n as u32).wrapping_mul(2_654_435_761) % total;
    let (cpus, memory) = mix
        .iter()
        .find(|(_, _, w)| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .map_or((1, 1024), |(c, m, _)| (*c, *m));
    let mut spec = InstanceSpec::container("busybox").with_size(cpus, memory);
    spec.restart = RestartPolicy::Always;
    spec
}

async fn poll<F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<Duration, SimError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let began = Instant::now();
    loop {
        if probe().await {
            return Ok(began.elapsed());
        }
        if began.elapsed() > limit {
            return Err(SimError::Server(format!(
                "timed out after {limit:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the simulation `config` on `target`. Errors: what prevents it from
/// being set up or run to its end; what it finds wrong is in the report.
pub async fn run(config: SimConfig, mut target: StoreTarget) -> Result<SimReport, SimError> {
    crate::raise_file_limit();
    let mut report = SimReport {
        nodes: config.nodes,
        instances: config.instances,
        servers: config.servers,
        ..SimReport::default()
    };
    let store = connect(target.endpoints(), target.prefix()).await?;
    let mut cluster = Cluster::start(&config, &target).await?;
    let shape = NodeShape {
        nodes: config.nodes,
        zones: config.zones,
        capacity: config.node_capacity,
    };
    let fleet = Fleet::start(&shape, config.timing).await?;

    // Join.
    let began = Instant::now();
    fleet.join(&cluster.addrs, config.timing).await?;
    let client = cluster.any()?;
    let want = config.nodes;
    poll("every node ready", Duration::from_secs(600), || {
        let client = client.clone();
        async move {
            client.cluster_info().await.is_ok_and(|info| {
                info.nodes_by_status
                    .get(&zixiao_core::NodeStatus::Ready)
                    .copied()
                    .unwrap_or(0)
                    >= want
            })
        }
    })
    .await?;
    report.join_s = began.elapsed().as_secs_f64();
    (config.progress)(&format!(
        "{} nodes ready after {:.1} s",
        config.nodes, report.join_s
    ));

    // Create.
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = config.create_concurrency.max(1);
    for w in 0..workers {
        let client = cluster.client(w % cluster.addrs.len())?;
        let mix = config.mix.clone();
        let count = config.instances;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for n in (w..count).step_by(workers) {
                let request = CreateInstance::new(format!("sim-i-{n:06}"), spec(&mix, n));
                let t = Instant::now();
                loop {
                    match client.create_instance(request.clone(), Wait::No).await {
                        Ok(_) => break,
                        Err(e) if e.kind() == zixiao_core::ErrorKind::AlreadyExists => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                latencies.push(t.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.map_err(|e| SimError::Server(e.to_string()))?);
    }
    report.create_ack_s = began.elapsed().as_secs_f64();
    report.creates_per_s = config.instances as f64 / report.create_ack_s.max(1e-9);
    report.create_p50_ms = quantile(&latencies, 0.5);
    report.create_p99_ms = quantile(&latencies, 0.99);
    (config.progress)(&format!(
        "{} creates acknowledged after {:.1} s",
        config.instances, report.create_ack_s
    ));
    let ledger = fleet.ledger.clone();
    let instances = config.instances;
    poll("every instance running", Duration::from_secs(3600), || {
        let ledger = ledger.clone();
        async move { ledger.running() >= instances }
    })
    .await?;
    report.all_running_s = began.elapsed().as_secs_f64();
    (config.progress)(&format!("all running after {:.1} s", report.all_running_s));

    // Steady state.
    let revision = |store: Arc<dyn Store>| async move {
        store
            .list("/zixiao/sim-probe-nothing/")
            .await
            .map(|l| l.revision)
            .unwrap_or(0)
    };
    let etcd_pids = match &target {
        StoreTarget::Owned(etcd) => etcd.pids(),
        StoreTarget::Shared { .. } => Vec::new(),
    };
    let server_pids = cluster.pids();
    let (servers_before, etcd_before) = (
        ProcessStats::sum(&server_pids),
        ProcessStats::sum(&etcd_pids),
    );
    let revision_before = revision(store.clone()).await;
    tokio::time::sleep(config.steady_window).await;
    let window = config.steady_window.as_secs_f64();
    let revision_after = revision(store.clone()).await;
    let (servers_after, etcd_after) = (
        ProcessStats::sum(&server_pids),
        ProcessStats::sum(&etcd_pids),
    );
    report.steady = Steady {
        window_s: window,
        server_cpu_pct: (!server_pids.is_empty())
            .then(|| 100.0 * (servers_after.cpu_s - servers_before.cpu_s) / window),
        etcd_cpu_pct: (!etcd_pids.is_empty())
            .then(|| 100.0 * (etcd_after.cpu_s - etcd_before.cpu_s) / window),
        writes_per_s: revision_after.saturating_sub(revision_before) as f64 / window,
        heartbeats_per_s: config.nodes as f64 / config.timing.heartbeat().as_secs_f64(),
        server_rss_mib: (!server_pids.is_empty()).then_some(servers_after.rss_mib),
    };
    (config.progress)(&format!("steady: {:?}", report.steady));

    // Single nodes die, one after another.
    let mut failovers = Vec::new();
    for _ in 0..config.node_kills {
        let Some(victim) = fleet
            .nodes
            .iter()
            .find(|n| n.health() == crate::nodes::Health::Up && !n.running().is_empty())
        else {
            break;
        };
        let held = victim.running();
        victim.kill();
        let name = victim.name.clone();
        let took = poll(
            "a dead node's instances to run elsewhere",
            Duration::from_secs(120),
            || {
                let (ledger, held, name) = (ledger.clone(), held.clone(), name.clone());
                async move {
                    held.iter()
                        .all(|id| ledger.running_on(id).is_some_and(|n| n != name))
                }
            },
        )
        .await?;
        (config.progress)(&format!(
            "node {name} ({} instances) failed over in {took:?}",
            held.len()
        ));
        failovers.push(took);
    }
    report.node_failovers_s = failovers.iter().map(Duration::as_secs_f64).collect();

    // A zone is cut off, then healed.
    if config.partition_zone {
        let zone: Vec<_> = fleet
            .nodes
            .iter()
            .filter(|n| n.zone == "zone-0" && n.health() == crate::nodes::Health::Up)
            .cloned()
            .collect();
        let held: Vec<(String, String)> = zone
            .iter()
            .flat_map(|n| n.running().into_iter().map(|id| (id, n.name.clone())))
            .collect();
        report.zone_nodes = zone.len();
        report.zone_instances = held.len();
        for node in &zone {
            node.partition(true);
        }
        let took = poll(
            "a cut-off zone's instances to run elsewhere",
            Duration::from_secs(600),
            || {
                let (ledger, held) = (ledger.clone(), held.clone());
                async move {
                    held.iter()
                        .all(|(id, old)| ledger.running_on(id).is_some_and(|n| n != *old))
                }
            },
        )
        .await?;
        report.zone_failover_s = Some(took.as_secs_f64());
        (config.progress)(&format!(
            "zone of {} nodes, {} instances, failed over in {took:?}",
            report.zone_nodes, report.zone_instances
        ));
        for node in &zone {
            node.partition(false);
        }
        // Its nodes register again (their keys expired) and are ready.
        let names: std::collections::BTreeSet<String> =
            zone.iter().map(|n| n.name.clone()).collect();
        let client = cluster.any()?;
        let back = poll("the healed zone back", Duration::from_secs(300), || {
            let (client, names) = (client.clone(), names.clone());
            async move {
                client.list_nodes().await.is_ok_and(|nodes| {
                    nodes
                        .iter()
                        .filter(|n| names.contains(&n.id))
                        .all(|n| n.status == zixiao_core::NodeStatus::Ready)
                })
            }
        })
        .await;
        report.zone_rejoin_s = back.ok().map(|d| d.as_secs_f64());
        (config.progress)(&format!(
            "zone healed, back after {:?} s",
            report.zone_rejoin_s
        ));
    }

    // The leading server dies: until a create runs again.
    if config.kill_leader && cluster.addrs.len() > 1 {
        let info = cluster.any()?.cluster_info().await?;
        if let Some(leader) = info.leader.and_then(|l| {
            l.strip_prefix("server-")
                .and_then(|i| i.parse::<usize>().ok())
        }) {
            cluster.kill(leader).await;
            let survivor = cluster.any()?;
            let took = until_a_create_runs(&survivor, "after-leader", &config).await?;
            report.leader_kill_s = Some(took.as_secs_f64());
            (config.progress)(&format!("leader killed: a create ran after {took:?}"));
        }
    }

    // The etcd leader dies: until a create runs again.
    if config.kill_etcd_leader {
        if let StoreTarget::Owned(etcd) = &mut target {
            if let Some(leader) = etcd.leader() {
                let fences = fleet.fences();
                etcd.kill(leader);
                let survivor = cluster.any()?;
                let took = until_a_create_runs(&survivor, "after-etcd", &config).await?;
                report.etcd_leader_kill_s = Some(took.as_secs_f64());
                (config.progress)(&format!("etcd leader killed: a create ran after {took:?}"));
                tokio::time::sleep(config.timing.lease_ttl()).await;
                report.fences_during_etcd_kill = fleet.fences() - fences;
                etcd.restart(leader)?;
            }
        }
    }
    report.server_rss_mib =
        (!cluster.pids().is_empty()).then(|| ProcessStats::sum(&cluster.pids()).rss_mib);

    // What must always hold, judged from the store and the runtimes.
    // Settle first: what moved converges.
    let ledger = fleet.ledger.clone();
    let _ = poll("the cluster to settle", Duration::from_secs(120), || {
        let (store, ledger) = (store.clone(), ledger.clone());
        async move { unsettled(store.as_ref(), &ledger).await == 0 }
    })
    .await;
    report.violations = check(store.as_ref(), &fleet).await?;
    report.fences = fleet.fences();
    report.pending = store
        .list_objects::<Instance, _>(|i| i.status == InstanceStatus::Pending)
        .await
        .map_err(zixiao_core::Error::from)?
        .0
        .len();
    drop(cluster);
    Ok(report)
}

/// Creates an instance through `client` (waiting for it to run) until one
/// does; returns how long that took.
async fn until_a_create_runs(
    client: &Client,
    tag: &str,
    config: &SimConfig,
) -> Result<Duration, SimError> {
    let began = Instant::now();
    for attempt in 0.. {
        let request = CreateInstance::new(format!("sim-{tag}-{attempt}"), spec(&config.mix, 0));
        let created = tokio::time::timeout(
            Duration::from_secs(5),
            client.create_instance(request, Wait::Settled),
        )
        .await;
        if let Ok(Ok(instance)) = created {
            if instance.status == InstanceStatus::Running {
                return Ok(began.elapsed());
            }
        }
        if began.elapsed() > Duration::from_secs(120) {
            return Err(SimError::Server(format!(
                "no create ran within 2 minutes ({tag})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("the loop returns")
}

/// Instances stored as running that no live node runs, or placed and not
/// yet running.
async fn unsettled(store: &dyn Store, ledger: &crate::nodes::Ledger) -> usize {
    let Ok((instances, _)) = store.list_objects::<Instance, _>(|_| true).await else {
        return usize::MAX;
    };
    instances
        .iter()
        .filter(|i| match i.status {
            InstanceStatus::Running => ledger.running_on(&i.id).as_deref() != i.node.as_deref(),
            InstanceStatus::Pending => i.problem().is_none(),
            _ => true,
        })
        .count()
}

async fn check(store: &dyn Store, fleet: &Fleet) -> Result<Vec<String>, SimError> {
    let mut violations = fleet.ledger.overlaps();
    let (nodes, _) = store
        .list_objects::<Node, _>(|_| true)
        .await
        .map_err(zixiao_core::Error::from)?;
    let (instances, _) = store
        .list_objects::<Instance, _>(|_| true)
        .await
        .map_err(zixiao_core::Error::from)?;
    let mut held: BTreeMap<&str, Resources> = BTreeMap::new();
    for instance in &instances {
        if let Some(node) = instance.node.as_deref() {
            let sum = held.entry(node).or_default();
            *sum = sum.saturating_add(&instance.held());
        }
    }
    for node in &nodes {
        let sum = held.get(node.id.as_str()).copied().unwrap_or_default();
        if node.allocated != sum {
            violations.push(format!(
                "node {} allocates {:?} but its instances hold {:?}",
                node.id, node.allocated, sum
            ));
        }
        if !node
            .allocatable()
            .fits(&Resources::default(), &node.allocated)
        {
            violations.push(format!(
                "node {} is over-committed: {:?} of {:?} allocatable",
                node.id,
                node.allocated,
                node.allocatable()
            ));
        }
    }
    for instance in &instances {
        match instance.status {
            InstanceStatus::Running => {
                let runs = fleet.ledger.running_on(&instance.id);
                if runs.as_deref() != instance.node.as_deref() {
                    violations.push(format!(
                        "instance {} is stored running on {:?} but runs on {:?}",
                        instance.name, instance.node, runs
                    ));
                }
            }
            InstanceStatus::Pending if instance.problem().is_some() => {}
            other => violations.push(format!(
                "instance {} is {} without an explanation: {:?}",
                instance.name,
                other.as_str(),
                instance.problem()
            )),
        }
    }
    Ok(violations)
}
