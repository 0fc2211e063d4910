//! Multi-process failure tests and the failover measurement: two servers on
//! etcd (`ZIXIAO_TEST_ETCD_ENDPOINTS`, from `scripts/services/etcd.sh`),
//! three agents, each with its watchdog, all separate processes (this test
//! binary re-executed in a role) on loopback. Covers agents joining, node
//! death (agent and watchdog killed at once, the node's instances dying
//! with it) with failover, `kill -9` of an agent alone (fencing, then
//! failover; re-adoption on restart), `kill -9` of the leading server with
//! the other taking over, and drain. Every node records its instances'
//! starts and stops with the machine's monotonic time; at the end the test
//! checks from those records that no instance ever ran on two nodes at once.
//!
//! It prints the time from each death to the node's instances running
//! elsewhere (p50, p99): a measurement, not an assertion.

mod processes_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use processes_support::file_driver::{log_event, FileDriver};
use zixiao_api::client::{ClusterClient, ComputeClient};
use zixiao_cluster::timing::monotonic_ms;
use zixiao_cluster::{agent, server, watchdog, AgentOptions, ServerOptions, Timing};
use zixiao_core::host::HostFacts;
use zixiao_core::{
    CreateInstance, InstanceSpec, InstanceStatus, LocalAgent, NodeStatus, Resources, RestartPolicy,
};

const ROLE: &str = "ZIXIAO_TEST_ROLE";

fn main() {
    match std::env::var(ROLE).ok().as_deref() {
        Some(role) => run_role(role),
        None => run_tests(),
    }
}

// ------------------------------------------------------------------ roles

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("role needs {name}"))
}

fn local(name: &str, dir: &Path) -> LocalAgent {
    let host = HostFacts {
        hostname: format!("{name}-host"),
        capacity: Resources {
            cpus: 64,
            memory_mib: 65536,
            disk_gib: 100,
            instances: 64,
        },
    };
    LocalAgent::new(host).with_driver(Arc::new(FileDriver::new(dir)))
}

fn run_role(role: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match role {
            "server" => {
                let store = etcd_store(&env("ZX_ETCD"), &env("ZX_PREFIX")).await;
                let handle = server::start(
                    server::controller(store),
                    ServerOptions {
                        id: env("ZX_ID"),
                        listen: "127.0.0.1:0".parse().expect("addr"),
                        timing: Timing::default(),
                    },
                )
                .await
                .expect("server");
                println!("ready {}", handle.addr());
                handle.wait().await;
            }
            "agent" => {
                let dir = PathBuf::from(env("ZX_DIR"));
                let name = env("ZX_NAME");
                let mut watchdog = Command::new(std::env::current_exe().expect("exe"));
                watchdog
                    .env(ROLE, "watchdog")
                    .stderr(log_file(&dir, "watchdog.log"));
                watchdog::spawn_detached(watchdog).expect("watchdog");
                let handle = agent::start(
                    AgentOptions {
                        name: name.clone(),
                        servers: env("ZX_SERVERS").split(',').map(str::to_owned).collect(),
                        region: "default".into(),
                        zone: "default".into(),
                        labels: BTreeMap::new(),
                        listen: "127.0.0.1:0".parse().expect("addr"),
                        advertise: None,
                        state_dir: dir.clone(),
                        timing: Timing::default(),
                    },
                    local(&name, &dir),
                )
                .await
                .expect("agent");
                println!("ready {}", handle.addr());
                handle.wait().await;
            }
            "watchdog" => {
                let dir = PathBuf::from(env("ZX_DIR"));
                let agent = Arc::new(local(&env("ZX_NAME"), &dir));
                watchdog::run(&dir, Timing::default().fence_after(), agent)
                    .await
                    .expect("watchdog");
            }
            other => panic!("unknown role {other}"),
        }
    });
}

#[cfg(feature = "etcd")]
async fn etcd_store(endpoints: &str, prefix: &str) -> Arc<dyn zixiao_core::Store> {
    let options =
        zixiao_store::EtcdStoreOptions::new(endpoints.split(',')).key_prefix(prefix.to_owned());
    Arc::new(
        zixiao_store::EtcdStore::connect(options)
            .await
            .expect("etcd"),
    )
}

#[cfg(not(feature = "etcd"))]
async fn etcd_store(_: &str, _: &str) -> Arc<dyn zixiao_core::Store> {
    panic!("built without the etcd feature")
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

// ------------------------------------------------------------------ harness

struct Proc {
    child: Child,
    addr: String,
}

fn spawn(role: &str, vars: &[(&str, String)], log: Stdio) -> Proc {
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command.env(ROLE, role).stdout(Stdio::piped()).stderr(log);
    for (k, v) in vars {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
    let addr = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("{role} did not start: {line:?}"))
        .to_owned();
    Proc { child, addr }
}

fn kill9(pid: i32) {
    // SAFETY: kill(2) with a pid this test started; no memory is touched.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

struct NodeProc {
    name: String,
    dir: PathBuf,
    agent: Option<Proc>,
    /// When the whole node was last killed (monotonic ms).
    deaths: Vec<u64>,
}

struct Harness {
    etcd: String,
    prefix: String,
    servers: Vec<Option<Proc>>,
    server_addrs: Vec<String>,
    nodes: Vec<NodeProc>,
    root: tempfile::TempDir,
}

impl Harness {
    fn start_agent(&mut self, i: usize) {
        let node = &self.nodes[i];
        let vars = [
            ("ZX_NAME", node.name.clone()),
            ("ZX_DIR", node.dir.display().to_string()),
            ("ZX_SERVERS", self.server_addrs.join(",")),
        ];
        let proc = spawn("agent", &vars, log_file(&node.dir, "agent.log"));
        self.nodes[i].agent = Some(proc);
    }

    fn start_server(&mut self, i: usize) -> Proc {
        let vars = [
            ("ZX_ETCD", self.etcd.clone()),
            ("ZX_PREFIX", self.prefix.clone()),
            ("ZX_ID", format!("server-{i}")),
        ];
        spawn(
            "server",
            &vars,
            log_file(self.root.path(), &format!("server-{i}.log")),
        )
    }

    fn compute(&self) -> ComputeClient {
        let addr = self
            .servers
            .iter()
            .flatten()
            .next()
            .expect("a live server")
            .addr
            .clone();
        ComputeClient::new(&addr).expect("client")
    }

    fn cluster(&self) -> ClusterClient {
        let addr = self
            .servers
            .iter()
            .flatten()
            .next()
            .expect("a live server")
            .addr
            .clone();
        ClusterClient::new(&addr, Duration::from_secs(60)).expect("client")
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("node")
    }

    /// Kills every process of node `i` at once; its instances die with it.
    fn kill_node(&mut self, i: usize) -> u64 {
        let watchdog_pid = watchdog::WatchdogFiles::new(&self.nodes[i].dir).pid();
        let mut agent = self.nodes[i].agent.take().expect("agent");
        kill9(agent.child.id() as i32);
        if let Some(pid) = watchdog_pid {
            kill9(pid);
        }
        let at = monotonic_ms();
        let _ = agent.child.wait();
        // The node's power is gone: what ran there stopped at `at`.
        let runtime = self.nodes[i].dir.join("runtime");
        for entry in std::fs::read_dir(&runtime).into_iter().flatten().flatten() {
            let path = entry.path();
            if std::fs::read_to_string(&path).is_ok_and(|s| s == "running") {
                let id = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_owned();
                std::fs::write(&path, "exited").expect("power off");
                log_event(&runtime, "stop", &id, at).expect("log");
            }
        }
        self.nodes[i].deaths.push(at);
        at
    }

    /// Kills node `i`'s agent alone (its watchdog lives on).
    fn kill_agent(&mut self, i: usize) {
        let mut agent = self.nodes[i].agent.take().expect("agent");
        kill9(agent.child.id() as i32);
        let _ = agent.child.wait();
    }
}

async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ready_nodes(cluster: &ClusterClient, n: usize) {
    wait_for("every node ready", Duration::from_secs(30), || async {
        let nodes = cluster.list_nodes().await.ok()?;
        (nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Ready)
            .count()
            == n)
            .then_some(())
    })
    .await;
}

/// Waits until none of `ids` is on `node` and all run elsewhere; returns when.
async fn all_moved(compute: &ComputeClient, ids: &[String], node: &str) -> Instant {
    wait_for(
        "instances to run elsewhere",
        Duration::from_secs(60),
        || async {
            for id in ids {
                let i = compute.get_instance(id).await.ok()?;
                if i.node.as_deref() == Some(node)
                    || i.node.is_none()
                    || i.status != InstanceStatus::Running
                {
                    return None;
                }
            }
            Some(Instant::now())
        },
    )
    .await
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p / 100.0) * (samples.len() as f64)).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn run_tests() {
    let Some(etcd) = zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")
    else {
        return;
    };
    if !cfg!(feature = "etcd") {
        assert!(
            !zixiao_testing::wait::runtimes_required(),
            "etcd is required but this test was built without the `etcd` feature"
        );
        eprintln!("processes: skipped (built without the `etcd` feature)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenarios(etcd));
    println!("processes: ok");
}

async fn scenarios(etcd: String) {
    let root = tempfile::tempdir().expect("tempdir");
    let mut h = Harness {
        etcd,
        prefix: format!("/zixiao-test-{}", uuid::Uuid::new_v4().simple()),
        servers: Vec::new(),
        server_addrs: Vec::new(),
        nodes: (0..3)
            .map(|i| NodeProc {
                name: format!("node-{i}"),
                dir: root.path().join(format!("node-{i}")),
                agent: None,
                deaths: Vec::new(),
            })
            .collect(),
        root,
    };
    for i in 0..2 {
        let server = h.start_server(i);
        h.server_addrs.push(server.addr.clone());
        h.servers.push(Some(server));
    }
    // Agents join.
    for i in 0..3 {
        h.start_agent(i);
    }
    ready_nodes(&h.cluster(), 3).await;
    eprintln!("processes: 2 servers and 3 agents joined");

    let compute = h.compute();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut spec = InstanceSpec::container("busybox");
        spec.restart = RestartPolicy::Always;
        let created = compute
            .create_instance(&CreateInstance::new(format!("web-{i}"), spec), true)
            .await
            .expect("create")
            .expect("exists");
        assert_eq!(created.status, InstanceStatus::Running);
        ids.push(created.id);
    }

    let rounds: usize = std::env::var("ZIXIAO_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut node_deaths = Vec::new();
    let mut agent_deaths = Vec::new();
    for round in 0..rounds {
        for alone in [false, true] {
            let compute = h.compute();
            // The node holding the most instances.
            let all = compute
                .list_instances(&Default::default())
                .await
                .expect("list");
            let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for i in &all {
                if let Some(node) = &i.node {
                    per_node.entry(node.clone()).or_default().push(i.id.clone());
                }
            }
            let (victim, held) = per_node
                .into_iter()
                .max_by_key(|(_, v)| v.len())
                .expect("a node with instances");
            let i = h.index(&victim);
            let since = Instant::now();
            if alone {
                h.kill_agent(i);
            } else {
                h.kill_node(i);
            }
            let done = all_moved(&compute, &held, &victim).await;
            let took = done - since;
            eprintln!(
                "processes: round {round}: {} of {victim} ({} instances): running elsewhere after {took:?}",
                if alone { "kill -9 of the agent" } else { "death" },
                held.len()
            );
            if alone {
                agent_deaths.push(took);
                // The old copies were fenced by the watchdog before the new ones started.
                let fenced = watchdog::WatchdogFiles::new(&h.nodes[i].dir).fence_log();
                for id in &held {
                    assert!(
                        fenced.iter().any(|(_, f)| f == id),
                        "{id} was not fenced: {fenced:?}"
                    );
                }
            } else {
                node_deaths.push(took);
            }
            // The node comes back; its stale copies are removed, not restarted.
            h.start_agent(i);
            ready_nodes(&h.cluster(), 3).await;
            let runtime = h.nodes[i].dir.join("runtime");
            wait_for(
                "stale copies to be removed",
                Duration::from_secs(30),
                || async {
                    let stale = held
                        .iter()
                        .any(|id| runtime.join(format!("{id}.state")).exists());
                    (!stale).then_some(())
                },
            )
            .await;
        }
    }

    // kill -9 of the leading server: the other takes over.
    let (_, leader) = h.cluster().cluster_info().await.expect("info");
    let index: usize = leader
        .strip_prefix("server-")
        .and_then(|i| i.parse().ok())
        .expect("a leader");
    let mut dead = h.servers[index].take().expect("leader");
    kill9(dead.child.id() as i32);
    let _ = dead.child.wait();
    let since = Instant::now();
    let cluster = h.cluster();
    let new_leader = wait_for("another leader", Duration::from_secs(20), || async {
        let (_, leader) = cluster.cluster_info().await.ok()?;
        (!leader.is_empty() && leader != format!("server-{index}")).then_some(leader)
    })
    .await;
    eprintln!(
        "processes: {new_leader} leads {:?} after the leader was killed",
        since.elapsed()
    );
    let compute = h.compute();
    let mut spec = InstanceSpec::container("busybox");
    spec.restart = RestartPolicy::Always;
    compute
        .create_instance(&CreateInstance::new("after-takeover", spec), true)
        .await
        .expect("create through the survivor");
    // The new leader fails nodes over too.
    let all = compute
        .list_instances(&Default::default())
        .await
        .expect("list");
    let victim = all[0].node.clone().expect("placed");
    let held: Vec<String> = all
        .iter()
        .filter(|i| i.node.as_deref() == Some(victim.as_str()))
        .map(|i| i.id.clone())
        .collect();
    let i = h.index(&victim);
    let since = Instant::now();
    h.kill_node(i);
    let done = all_moved(&compute, &held, &victim).await;
    node_deaths.push(done - since);
    h.start_agent(i);
    ready_nodes(&h.cluster(), 3).await;

    // Drain: the node's instances move, in order, and nothing runs there after.
    let all = compute
        .list_instances(&Default::default())
        .await
        .expect("list");
    let victim = all[0].node.clone().expect("placed");
    let report = h.cluster().drain_node(&victim).await.expect("drain");
    assert!(!report.moved.is_empty(), "{report:?}");
    let after = compute
        .list_instances(&Default::default())
        .await
        .expect("list");
    assert!(after
        .iter()
        .all(|i| i.node.as_deref() != Some(victim.as_str())));
    assert!(after.iter().all(|i| i.status == InstanceStatus::Running));
    assert_eq!(after.len(), 7, "nothing lost, nothing duplicated");

    check_never_twice(&h, &after.iter().map(|i| i.id.clone()).collect::<Vec<_>>());

    let mut nodes = node_deaths.clone();
    let mut agents = agent_deaths.clone();
    eprintln!(
        "processes: failover after node death: p50 {:?} p99 {:?} over {} runs",
        percentile(&mut nodes, 50.0),
        percentile(&mut nodes, 99.0),
        node_deaths.len()
    );
    eprintln!(
        "processes: failover after kill -9 of the agent alone: p50 {:?} p99 {:?} over {} runs",
        percentile(&mut agents, 50.0),
        percentile(&mut agents, 99.0),
        agent_deaths.len()
    );

    measure_creates(&h).await;

    for node in &mut h.nodes {
        if let Some(mut agent) = node.agent.take() {
            kill9(agent.child.id() as i32);
            let _ = agent.child.wait();
        }
        if let Some(pid) = watchdog::WatchdogFiles::new(&node.dir).pid() {
            kill9(pid);
        }
    }
    for server in h.servers.iter_mut().flatten() {
        kill9(server.child.id() as i32);
        let _ = server.child.wait();
    }
}

/// From each node's own event log: the intervals in which it ran each
/// instance never overlap another node's.
fn check_never_twice(h: &Harness, ids: &[String]) {
    let mut intervals: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    let now = monotonic_ms();
    for node in &h.nodes {
        let log = std::fs::read_to_string(node.dir.join("runtime").join("events.log"))
            .unwrap_or_default();
        let mut open: BTreeMap<String, u64> = BTreeMap::new();
        for line in log.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let [what, id, at] = parts[..] else { continue };
            let at: u64 = at.parse().expect("time");
            match what {
                "start" => {
                    open.insert(id.to_owned(), at);
                }
                _ => {
                    if let Some(from) = open.remove(id) {
                        intervals.entry(id.to_owned()).or_default().push((
                            from,
                            at,
                            node.name.clone(),
                        ));
                    }
                }
            }
        }
        for (id, from) in open {
            intervals
                .entry(id)
                .or_default()
                .push((from, now, node.name.clone()));
        }
    }
    let mut checked = 0;
    for (id, mut runs) in intervals {
        runs.sort();
        for pair in runs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.1 <= b.0 || a.2 == b.2,
                "instance {id} ran on {} [{}, {}] and on {} [{}, {}] at once",
                a.2,
                a.0,
                a.1,
                b.2,
                b.0,
                b.1
            );
        }
        checked += 1;
    }
    assert!(checked >= ids.len(), "every instance has records");
    eprintln!("processes: {checked} instances never ran on two nodes at once");
}

/// Create throughput through the gRPC API (intent only, `wait` off) against
/// raw puts to the same etcd, in the same run.
async fn measure_creates(h: &Harness) {
    const N: usize = 100;
    let compute = h.compute();
    let since = Instant::now();
    for i in 0..N {
        let mut spec = InstanceSpec::container("busybox");
        spec.restart = RestartPolicy::Never;
        compute
            .create_instance(&CreateInstance::new(format!("bulk-{i}"), spec), false)
            .await
            .expect("create");
    }
    let api = since.elapsed();
    let store = etcd_store(&h.etcd, &format!("{}-raw", h.prefix)).await;
    let since = Instant::now();
    for i in 0..N {
        let txn = zixiao_core::store::Txn::new().put(
            format!("/raw/{i}"),
            vec![b'x'; 512],
            zixiao_core::store::Precondition::None,
        );
        store.commit(txn).await.expect("put");
    }
    let raw = since.elapsed();
    let per_second = |d: Duration| N as f64 / d.as_secs_f64();
    eprintln!(
        "processes: {N} sequential creates through the gRPC API: {:.0}/s; raw etcd puts: {:.0}/s",
        per_second(api),
        per_second(raw)
    );
}
