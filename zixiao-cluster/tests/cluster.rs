//! Servers, agents and watchdogs in one process over loopback gRPC and the
//! embedded store: registration, heartbeats, failover with fencing,
//! re-adoption, leader takeover, drain and name conflicts. The runtimes are
//! hand-written fakes (the layer under test is the cluster, not a driver);
//! "running twice" is checked against every node's fake runtime at each
//! poll. The multi-process version of these scenarios is in `processes.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zixiao_api::membership::MembershipClient;
use zixiao_api::remote::RemoteAgent;
use zixiao_cluster::{
    agent, server, watchdog, AgentHandle, AgentOptions, ServerHandle, ServerOptions, Timing,
};
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Client, CreateInstance, ErrorKind, Instance, InstanceSpec, InstanceStatus, InstanceType,
    LocalAgent, NodeAgent, NodeRegistration, NodeStatus, Resources, RestartPolicy, RuntimeState,
    Store, Wait,
};
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::{FakeDriver, Op};

struct Node {
    name: String,
    dir: tempfile::TempDir,
    driver: Arc<FakeDriver>,
    agent: Option<AgentHandle>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

fn host(name: &str) -> HostFacts {
    HostFacts {
        hostname: format!("{name}-host"),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(16),
            memory_mib: 16384,
            disk_gib: 100,
            instances: 32,
        },
    }
}

fn local(name: &str, driver: &Arc<FakeDriver>) -> LocalAgent {
    LocalAgent::new(host(name)).with_driver(driver.clone())
}

async fn start_agent(
    name: &str,
    dir: &Path,
    driver: &Arc<FakeDriver>,
    servers: &[SocketAddr],
) -> AgentHandle {
    agent::start(
        AgentOptions {
            limits: Default::default(),
            onboarding: Default::default(),
            name: name.to_owned(),
            servers: servers.iter().map(|s| s.to_string()).collect(),
            region: "default".into(),
            zone: "default".into(),
            labels: Default::default(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            advertise: None,
            state_dir: dir.to_path_buf(),
            timing: Timing::default(),
            tls: None,
        },
        local(name, driver),
    )
    .await
    .expect("agent starts")
}

fn start_watchdog(dir: &Path, driver: &Arc<FakeDriver>, name: &str) -> tokio::task::JoinHandle<()> {
    let dir = dir.to_path_buf();
    let agent = Arc::new(local(name, driver));
    tokio::spawn(async move {
        let _ = watchdog::run(&dir, Timing::default().fence_after(), agent).await;
    })
}

async fn node(name: &str, servers: &[SocketAddr]) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    let agent = start_agent(name, dir.path(), &driver, servers).await;
    let watchdog = start_watchdog(dir.path(), &driver, name);
    Node {
        name: name.to_owned(),
        dir,
        driver,
        agent: Some(agent),
        watchdog: Some(watchdog),
    }
}

async fn start_server(store: Arc<dyn Store>, id: &str) -> ServerHandle {
    server::start(
        server::controller(store),
        ServerOptions {
            limits: Default::default(),
            id: id.to_owned(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            timing: Timing::default(),
            metrics: None,
        },
    )
    .await
    .expect("server starts")
}

struct Cluster {
    servers: Vec<Option<ServerHandle>>,
    addrs: Vec<SocketAddr>,
    nodes: Vec<Node>,
    _store_dir: tempfile::TempDir,
}

impl Cluster {
    async fn new(servers: usize, nodes: usize) -> Cluster {
        let store_dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&store_dir.path().join("state.redb")).expect("store"));
        let mut handles = Vec::new();
        for i in 0..servers {
            handles.push(Some(
                start_server(store.clone(), &format!("server-{i}")).await,
            ));
        }
        let addrs: Vec<SocketAddr> = handles.iter().flatten().map(|s| s.addr()).collect();
        let mut members = Vec::new();
        for i in 0..nodes {
            members.push(node(&format!("node-{i}"), &addrs).await);
        }
        let cluster = Cluster {
            servers: handles,
            addrs,
            nodes: members,
            _store_dir: store_dir,
        };
        let client = cluster.cluster_client();
        wait_for("every node ready", Duration::from_secs(20), || async {
            let nodes = client.list_nodes().await.ok()?;
            (nodes.len() == cluster.nodes.len()
                && nodes.iter().all(|n| n.status == NodeStatus::Ready))
            .then_some(())
        })
        .await;
        cluster
    }

    fn compute(&self) -> Client {
        zixiao_api::connect(&self.addrs[self.addrs.len() - 1].to_string()).expect("client")
    }

    fn cluster_client(&self) -> Client {
        self.compute()
    }

    fn membership(&self) -> MembershipClient {
        MembershipClient::new(
            &self.addrs[self.addrs.len() - 1].to_string(),
            Duration::from_secs(30),
        )
        .expect("client")
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("known node")
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("known node")
    }

    /// How many nodes' runtimes run instance `id` now.
    fn copies_running(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.driver.state_of(id) == RuntimeState::Running)
            .count()
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spec(restart: RestartPolicy) -> InstanceSpec {
    let mut spec = InstanceSpec::container("busybox");
    spec.restart = restart;
    spec
}

async fn create(compute: &Client, name: &str, restart: RestartPolicy) -> Instance {
    let created = compute
        .create_instance(CreateInstance::new(name, spec(restart)), Wait::Settled)
        .await
        .expect("create");
    assert_eq!(created.status, InstanceStatus::Running, "{created:?}");
    created
}

/// Waits until `id` runs on a node other than `old`, checking at every poll
/// that no two nodes run it at once; returns the new node and how long it took.
async fn moved_off(cluster: &Cluster, id: &str, old: &str, since: Instant) -> (String, Duration) {
    let compute = cluster.compute();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            cluster.copies_running(id) <= 1,
            "instance {id} runs on two nodes at once"
        );
        if let Ok(now) = compute.get_instance(id).await {
            if let Some(node) = now.node.as_deref() {
                if node != old
                    && now.status == InstanceStatus::Running
                    && cluster.node(node).driver.state_of(id) == RuntimeState::Running
                {
                    return (node.to_owned(), since.elapsed());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "instance {id} never moved off {old}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_agent_is_fenced_then_its_instances_run_elsewhere() {
    let mut cluster = Cluster::new(1, 3).await;
    let compute = cluster.compute();
    let always = create(&compute, "web", RestartPolicy::Always).await;
    let old = always.node.clone().expect("placed");
    // A second instance on the same node, one nobody restarts.
    let mut never = None;
    for i in 0..8 {
        let candidate = create(&compute, &format!("batch-{i}"), RestartPolicy::Never).await;
        if candidate.node.as_deref() == Some(old.as_str()) {
            never = Some(candidate);
            break;
        }
    }

    let killed = Instant::now();
    let dead = cluster.node_mut(&old);
    dead.agent.take().expect("agent").shutdown().await;
    let (new, took) = moved_off(&cluster, &always.id, &old, killed).await;
    assert_ne!(new, old);
    eprintln!("failover after the agent died: {took:?}");
    // The old copy was stopped by the node's own watchdog, not by the server.
    assert!(matches!(
        cluster.node(&old).driver.state_of(&always.id),
        RuntimeState::Exited { .. }
    ));
    let fenced = watchdog::WatchdogFiles::new(cluster.node(&old).dir.path()).fence_log();
    assert!(fenced.iter().any(|(_, id)| id == &always.id), "{fenced:?}");

    let node = cluster.cluster_client().get_node(&old).await.expect("node");
    assert_eq!(node.status, NodeStatus::NotReady);
    if let Some(never) = never {
        let after = wait_for(
            "the never-restart instance to fail",
            Duration::from_secs(10),
            || async {
                let i = compute.get_instance(&never.id).await.ok()?;
                (i.status == InstanceStatus::Failed).then_some(i)
            },
        )
        .await;
        let problem = after.problem().unwrap_or_default().to_owned();
        assert!(problem.contains("was lost"), "{problem}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_readopts_its_instances_and_a_returning_one_removes_moved_copies() {
    let mut cluster = Cluster::new(1, 2).await;
    let compute = cluster.compute();
    let web = create(&compute, "web", RestartPolicy::Always).await;
    let home = web.node.clone().expect("placed");
    let servers = cluster.addrs.clone();

    // Restart well within the fencing deadline: nothing moves, nothing restarts.
    // (First let the reconcilers that raced on the create settle.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let node = cluster.node_mut(&home);
    node.agent.take().expect("agent").shutdown().await;
    let driver = node.driver.clone();
    let calls_before = driver.calls().len();
    node.agent = Some(start_agent(&home, node.dir.path(), &driver, &servers).await);
    tokio::time::sleep(Timing::default().lease_ttl() * 2).await;
    let after = compute.get_instance(&web.id).await.expect("get");
    assert_eq!(
        after.node.as_deref(),
        Some(home.as_str()),
        "re-adopted in place"
    );
    assert_eq!(after.status, InstanceStatus::Running);
    assert_eq!(driver.state_of(&web.id), RuntimeState::Running);
    let calls: Vec<_> = driver.calls().into_iter().skip(calls_before).collect();
    assert!(
        calls.is_empty(),
        "the re-adopted instance was left alone: {calls:?}"
    );

    // Away for longer than the lease: fenced, moved; on return the old copy is removed.
    let node = cluster.node_mut(&home);
    node.agent.take().expect("agent").shutdown().await;
    let (_, took) = moved_off(&cluster, &web.id, &home, Instant::now()).await;
    eprintln!("failover: {took:?}");
    let node = cluster.node_mut(&home);
    node.agent = Some(start_agent(&home, node.dir.path(), &driver, &servers).await);
    wait_for(
        "the moved copy to be removed",
        Duration::from_secs(20),
        || async { (driver.state_of(&web.id) == RuntimeState::Missing).then_some(()) },
    )
    .await;
    let node = cluster
        .cluster_client()
        .get_node(&home)
        .await
        .expect("node");
    assert_eq!(node.status, NodeStatus::Ready, "the node is back");
    assert_eq!(cluster.copies_running(&web.id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_server_takes_over_when_the_leader_dies() {
    let mut cluster = Cluster::new(2, 2).await;
    let leader = wait_for("a leader", Duration::from_secs(10), || async {
        cluster
            .servers
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.is_leader()))
    })
    .await;
    let web = create(&cluster.compute(), "web", RestartPolicy::Always).await;
    // Clients and agents keep going through the other server.
    let survivor_addr = cluster.addrs[1 - leader];
    cluster.servers[leader]
        .take()
        .expect("leader")
        .shutdown()
        .await;
    let since = Instant::now();
    wait_for(
        "the other server to lead",
        Duration::from_secs(10),
        || async {
            cluster.servers[1 - leader]
                .as_ref()
                .is_some_and(|s| s.is_leader())
                .then_some(())
        },
    )
    .await;
    eprintln!("leader takeover: {:?}", since.elapsed());
    let compute = zixiao_api::connect(&survivor_addr.to_string()).expect("client");
    let info = compute.cluster_info().await.expect("info");
    assert_eq!(info.leader, Some(format!("server-{}", 1 - leader)));
    // The new leader runs the failure detector: a node death still fails over.
    let old = web.node.clone().expect("placed");
    let node = cluster.node_mut(&old);
    node.agent.take().expect("agent").shutdown().await;
    cluster.addrs = vec![survivor_addr];
    let (_, took) = moved_off(&cluster, &web.id, &old, Instant::now()).await;
    eprintln!("failover under the new leader: {took:?}");
    let all = compute
        .list_instances(Default::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 1, "nothing lost, nothing duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_moves_instances_in_order_and_a_leaving_agent_deregisters() {
    let mut cluster = Cluster::new(1, 2).await;
    let compute = cluster.compute();
    let web = create(&compute, "web", RestartPolicy::Always).await;
    let old = web.node.clone().expect("placed");
    let report = cluster
        .cluster_client()
        .drain_node(&old)
        .await
        .expect("drain");
    assert_eq!(report.moved, ["web"]);
    let after = compute.get_instance("web").await.expect("get");
    assert_ne!(after.node.as_deref(), Some(old.as_str()));
    assert_eq!(after.status, InstanceStatus::Running);
    assert_eq!(cluster.copies_running(&web.id), 1);
    assert_eq!(
        cluster.node(&old).driver.state_of(&web.id),
        RuntimeState::Missing,
        "removed from the drained node"
    );

    // A create or start sent on a stale view (as by a server that lost the
    // lead before the move) is refused by the old node's agent: it asks
    // the cluster where the instance lives now.
    let old_agent = cluster.node(&old).agent.as_ref().expect("agent").addr();
    let stale = RemoteAgent::new(&zixiao_core::Node {
        address: old_agent.to_string(),
        ..cluster.cluster_client().get_node(&old).await.expect("node")
    })
    .expect("remote agent")
    .driver(InstanceType::Container)
    .expect("driver");
    for refused in [stale.create(&web).await, stale.start(&web).await] {
        let error = refused.expect_err("a stale call is refused");
        assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
        assert!(
            error.to_string().contains("not starting a second copy"),
            "{error}"
        );
    }
    assert_eq!(cluster.copies_running(&web.id), 1);
    assert_eq!(
        cluster.node(&old).driver.state_of(&web.id),
        RuntimeState::Missing
    );

    // A call carrying a spec the cluster never accepted (a forged image
    // and command, the instance's real id) to the node that runs it: the
    // runtime gets the cluster's spec, not the caller's.
    let new = after.node.clone().expect("placed");
    let runs_web = RemoteAgent::new(&cluster.cluster_client().get_node(&new).await.expect("node"))
        .expect("remote agent")
        .driver(InstanceType::Container)
        .expect("driver");
    let mut forged = after.clone();
    forged.spec.image = Some("forged".to_owned());
    forged.spec.command = vec!["rm".to_owned(), "-rf".to_owned(), "/".to_owned()];
    runs_web
        .start(&forged)
        .await
        .expect("a start of a running instance");
    assert_eq!(
        cluster.node(&new).driver.spec_of(&web.id),
        Some(after.spec.clone()),
        "the runtime ran the cluster's spec"
    );

    // The drained node leaves for good.
    let node = cluster.node_mut(&old);
    node.agent
        .take()
        .expect("agent")
        .leave()
        .await
        .expect("leave");
    let nodes = cluster.cluster_client().list_nodes().await.expect("list");
    assert!(nodes.iter().all(|n| n.id != old), "deregistered: {nodes:?}");
    if let Some(watchdog) = cluster.node_mut(&old).watchdog.take() {
        tokio::time::timeout(Duration::from_secs(5), watchdog)
            .await
            .expect("the watchdog stops when its agent leaves")
            .expect("watchdog");
    }
}

/// A watchdog whose node's state directory is removed ends, instead of
/// outliving the node as a stray process.
#[tokio::test]
async fn a_watchdog_ends_when_its_state_directory_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    let agent = Arc::new(local("gone", &driver));
    let state = dir.path().join("node");
    let watchdog = {
        let state = state.clone();
        tokio::spawn(
            async move { watchdog::run(&state, Timing::default().fence_after(), agent).await },
        )
    };
    wait_for("the watchdog to start", Duration::from_secs(10), || {
        let pid = state.join("watchdog/pid");
        async move { pid.exists().then_some(()) }
    })
    .await;
    assert!(
        !watchdog.is_finished(),
        "a watchdog runs while its node does"
    );
    std::fs::remove_dir_all(&state).expect("remove the state directory");
    let exit = tokio::time::timeout(Duration::from_secs(10), watchdog)
        .await
        .expect("the watchdog ends")
        .expect("joins")
        .expect("ends without error");
    assert_eq!(exit, watchdog::Exit::StateDirGone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_held_by_a_live_agent_is_refused() {
    let cluster = Cluster::new(1, 1).await;
    let client = cluster.cluster_client();
    let held = client.get_node("node-0").await.expect("node");
    let registration = NodeRegistration {
        id: "node-0".into(),
        hostname: "impostor".into(),
        address: "127.0.0.1:1".into(),
        region: "default".into(),
        zone: "default".into(),
        role: Default::default(),
        capacity: held.capacity,
        allocation_ratios: None,
        labels: Default::default(),
        traits: Default::default(),
        runtimes: held.runtimes.clone(),
        missing_runtimes: Default::default(),
        drivers: held.drivers.clone(),
        carbon_intensity: None,
        onboarding: None,
    };
    let membership = cluster.membership();
    let error = membership
        .register_node(&registration, "another-session")
        .await
        .expect_err("the name is taken");
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{}", error.chain());
    let after = client.get_node("node-0").await.expect("node");
    assert_eq!(after.hostname, held.hostname, "nothing changed");

    let error = membership
        .register_node(&registration, "")
        .await
        .expect_err("no session");
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    let error = membership
        .heartbeat("node-0", "x", 987_654)
        .await
        .expect_err("unknown lease");
    assert_eq!(error.kind(), ErrorKind::NotFound);
    // A host reading out of bounds is dropped, not refused: a heartbeat
    // is the node's life, and telemetry must not cost it its lease.
    let bad = zixiao_core::host_usage::HostUsage {
        at: chrono::Utc::now(),
        cpu_millicores_used: None,
        cpu_millicores_total: 2000,
        memory_used_bytes: 2 << 30,
        memory_total_bytes: 1 << 30,
        load1: 0.5,
    };
    let error = membership
        .heartbeat_with_host("node-0", "x", 987_654, Some(&bad))
        .await
        .expect_err("still an unknown lease");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{}", error.chain());
    let newcomer = NodeRegistration {
        id: "node-9".into(),
        hostname: "newcomer".into(),
        ..registration.clone()
    };
    let (_, lease) = membership
        .register_node(&newcomer, "its-session")
        .await
        .expect("register node-9");
    membership
        .heartbeat_with_host("node-9", "its-session", lease.id, Some(&bad))
        .await
        .expect("renewed despite the bad reading");
    let _ = cluster.node("node-0");
}

/// `instance update` through a server with an agent: the server stores the
/// new size (checked against the node and the project quota admission the
/// server runs) and reaches the node's agent, which applies the size the
/// cluster stored, live; a label that would move the instance to another
/// project is refused by the quota admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_reaches_the_nodes_agent_and_resizes_live() {
    use zixiao_core::InstanceUpdate;

    let cluster = Cluster::new(2, 1).await;
    let compute = cluster.compute();
    let web = create(&compute, "web", RestartPolicy::Never).await;
    // Through the other server: any replica serves an update.
    let other = zixiao_api::connect(&cluster.addrs[0].to_string()).expect("client");
    let updated = other
        .update_instance(
            "web",
            InstanceUpdate {
                cpus: Some(zixiao_core::Cpus::cores(2)),
                memory_mib: Some(512),
                ..InstanceUpdate::default()
            },
            Wait::Settled,
        )
        .await
        .expect("update");
    assert_eq!(
        (updated.spec.cpus, updated.spec.memory_mib),
        (zixiao_core::Cpus::cores(2), 512)
    );
    let driver = &cluster.node("node-0").driver;
    let on_node = driver.spec_of(&web.id).expect("spec");
    assert_eq!(
        (on_node.cpus, on_node.memory_mib),
        (zixiao_core::Cpus::cores(2), 512)
    );
    assert_eq!(driver.count(Op::Resize, &web.id), 1);
    assert_eq!(driver.count(Op::Stop, &web.id), 0, "live, no restart");
    let node = compute.get_node("node-0").await.expect("node");
    assert_eq!(
        (node.allocated.cpus, node.allocated.memory_mib),
        (zixiao_core::Cpus::cores(2), 512)
    );

    let err = compute
        .update_instance(
            "web",
            InstanceUpdate {
                set_labels: [(zixiao_auth::PROJECT_LABEL.to_owned(), "other".to_owned())].into(),
                ..InstanceUpdate::default()
            },
            Wait::No,
        )
        .await
        .expect_err("cannot change project");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.chain());
    assert!(err.to_string().contains("zixiao.io/project"), "{err}");
    let err = compute
        .update_instance(
            "web",
            InstanceUpdate {
                memory_mib: Some(64 * 1024),
                ..InstanceUpdate::default()
            },
            Wait::No,
        )
        .await
        .expect_err("too big for the node");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{}", err.chain());
    let stored = compute.get_instance("web").await.expect("get");
    assert_eq!(stored.revision, updated.revision, "nothing changed");
}

/// An agent killed mid-create leaves a workload created and never started
/// (a QEMU launched with its vCPUs stopped): the node's watchdog stops it
/// too, or it would outlive the node's lease while the instance runs
/// elsewhere. Once: a stopped container reads "created" again.
#[tokio::test]
async fn the_watchdog_fences_an_instance_created_and_not_started_once() {
    use zixiao_core::Driver;
    use zixiao_testing::fake_driver::Op;
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    let records = zixiao_cluster::records::Records::new(dir.path());
    let half = zixiao_testing::fake_driver::placed_instance(
        "half-made",
        InstanceSpec::container("busybox"),
    );
    driver.create(&half).await.expect("create");
    records.put(&half).expect("record");
    let web =
        zixiao_testing::fake_driver::placed_instance("web", InstanceSpec::container("busybox"));
    driver.create(&web).await.expect("create");
    driver.start(&web).await.expect("start");
    records.put(&web).expect("record");
    // The agent's last renewal is long gone.
    let files = watchdog::WatchdogFiles::new(dir.path());
    files
        .pet(zixiao_cluster::timing::monotonic_ms().saturating_sub(60_000))
        .expect("pet");
    let watchdog = start_watchdog(dir.path(), &driver, "node-a");
    let fenced = |id: &str, times: usize| {
        let files = files.clone();
        let id = id.to_owned();
        move || {
            let files = files.clone();
            let id = id.clone();
            async move {
                let n = files.fence_log().iter().filter(|(_, f)| *f == id).count();
                (n >= times).then_some(())
            }
        }
    };
    wait_for("the fence", Duration::from_secs(10), fenced(&half.id, 1)).await;
    wait_for("the fence", Duration::from_secs(10), fenced(&web.id, 1)).await;
    // Something starts `web` again: the next round stops it again, and
    // leaves the created one alone.
    driver.start(&web).await.expect("start");
    wait_for(
        "a second fence",
        Duration::from_secs(10),
        fenced(&web.id, 2),
    )
    .await;
    watchdog.abort();
    let stops = |id: &str| {
        driver
            .calls()
            .iter()
            .filter(|(op, i)| *op == Op::Stop && i == id)
            .count()
    };
    assert_eq!(stops(&half.id), 1, "{:?}", driver.calls());
    assert_eq!(stops(&web.id), 2, "{:?}", driver.calls());
}

/// A fenced node's instances are stopped all at once: one slow stop (a
/// monitor that does not answer) does not hold up the others past the
/// lease.
#[tokio::test]
async fn the_watchdog_stops_a_nodes_instances_all_at_once() {
    use zixiao_core::Driver;
    use zixiao_testing::fake_driver::Op;
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    let records = zixiao_cluster::records::Records::new(dir.path());
    let mut ids = Vec::new();
    for name in ["web", "db"] {
        let instance =
            zixiao_testing::fake_driver::placed_instance(name, InstanceSpec::container("busybox"));
        driver.create(&instance).await.expect("create");
        driver.start(&instance).await.expect("start");
        records.put(&instance).expect("record");
        ids.push(instance.id);
    }
    driver.hold(Op::Stop);
    let files = watchdog::WatchdogFiles::new(dir.path());
    files
        .pet(zixiao_cluster::timing::monotonic_ms().saturating_sub(60_000))
        .expect("pet");
    let watchdog = start_watchdog(dir.path(), &driver, "node-a");
    wait_for(
        "both stops under way at once",
        Duration::from_secs(10),
        || async { (driver.waiting(Op::Stop) == 2).then_some(()) },
    )
    .await;
    driver.release(Op::Stop);
    wait_for("both fenced", Duration::from_secs(10), || async {
        let fenced = files.fence_log();
        ids.iter()
            .all(|id| fenced.iter().any(|(_, f)| f == id))
            .then_some(())
    })
    .await;
    watchdog.abort();
}

/// A node whose registration reached another server while its heartbeats
/// still go to the first (an agent that gave up on a slow answer and tried
/// the next server) stays live: the first server sees in its cache that the
/// node's key moved and takes it back instead of answering from memory
/// while the other server, hearing nothing, lets the key expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_registered_on_two_servers_stays_live_heartbeating_one() {
    let cluster = Cluster::new(2, 1).await;
    let client = cluster.cluster_client();
    let template = client.get_node("node-0").await.expect("node");
    let registration = NodeRegistration {
        id: "drift".into(),
        hostname: "drift".into(),
        address: "127.0.0.1:1".into(),
        region: "default".into(),
        zone: "default".into(),
        role: Default::default(),
        capacity: template.capacity,
        allocation_ratios: None,
        labels: Default::default(),
        traits: Default::default(),
        runtimes: template.runtimes.clone(),
        missing_runtimes: Default::default(),
        drivers: template.drivers.clone(),
        carbon_intensity: None,
        onboarding: None,
    };
    let first = MembershipClient::new(&cluster.addrs[0].to_string(), Duration::from_secs(30))
        .expect("client");
    let second = MembershipClient::new(&cluster.addrs[1].to_string(), Duration::from_secs(30))
        .expect("client");
    let session = "drift-session";
    let (_, mut lease) = first
        .register_node(&registration, session)
        .await
        .expect("registered on the first server");
    first
        .heartbeat("drift", session, lease.id)
        .await
        .expect("answered by the first server");
    // The same agent's registration reaches the second server too.
    second
        .register_node(&registration, session)
        .await
        .expect("taken over by the second server");
    // From now on it heartbeats the first server only, as an agent does,
    // registering again there if told its liveness expired.
    let timing = Timing::default();
    let until = Instant::now() + timing.lease_ttl() * 3;
    while Instant::now() < until {
        match first.heartbeat("drift", session, lease.id).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                lease = first
                    .register_node(&registration, session)
                    .await
                    .expect("registered again")
                    .1;
            }
            Err(e) => panic!("heartbeat: {}", e.chain()),
        }
        let node = client.get_node("drift").await.expect("node");
        assert_eq!(
            node.status,
            NodeStatus::Ready,
            "a node heartbeating a server was declared lost"
        );
        tokio::time::sleep(timing.heartbeat()).await;
    }
}

/// A TLS server on loopback over an embedded store in `dir`, with its
/// cluster PKI (`dir/pki`), as `zixiao server --pki` runs it.
async fn secure_server(dir: &Path) -> (ServerHandle, Arc<dyn Store>, Arc<zixiao_auth::Pki>) {
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.join("state.redb")).expect("store"));
    let pki = Arc::new(zixiao_auth::Pki::init(&dir.join("pki"), "test").expect("pki"));
    let names = [zixiao_auth::SubjectName::Ip(
        "127.0.0.1".parse().expect("ip"),
    )];
    let tls = zixiao_api::secure::ServerTls::issue(&pki, &names).expect("server tls");
    let server = server::start_secure(
        server::controller(store.clone()),
        ServerOptions {
            limits: Default::default(),
            id: "secure".to_owned(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            timing: Timing::default(),
            metrics: None,
        },
        tls,
        pki.clone(),
    )
    .await
    .expect("server starts");
    (server, store, pki)
}

/// A server that serves TLS knows an agent only by its node certificate
/// (issued at join, see `cli/tests/secure.rs`): a TLS client without one
/// can neither register a node with made-up capacity nor renew anyone's
/// lease, and nothing is stored.
#[tokio::test]
async fn a_tls_server_refuses_agents_it_cannot_identify_and_stores_nothing() {
    use zixiao_api::pb::membership_service_client::MembershipServiceClient;
    use zixiao_api::pb::{HeartbeatRequest, RegisterNodeRequest};

    let dirs = tempfile::tempdir().expect("tempdir");
    let (server, _, pki) = secure_server(dirs.path()).await;

    // A client that trusts the cluster CA: the TLS handshake succeeds, so
    // what refuses it is the missing node identity, not the transport.
    let config = pki
        .trust()
        .client_config(None, zixiao_auth::ExpectedPeer::Server)
        .expect("client config");
    let endpoint = format!("https://{}", server.addr());
    let channel =
        zixiao_api::tls::channel(&endpoint, config, Duration::from_secs(30)).expect("channel");
    let mut rogue = MembershipServiceClient::new(channel);
    let registration = NodeRegistration {
        id: "worker-1".into(),
        hostname: "rogue".into(),
        address: "127.0.0.1:1".into(),
        region: "default".into(),
        zone: "default".into(),
        role: Default::default(),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(4096),
            memory_mib: 1 << 30,
            disk_gib: 1 << 20,
            instances: 10_000,
        },
        allocation_ratios: None,
        labels: Default::default(),
        traits: Default::default(),
        runtimes: Default::default(),
        missing_runtimes: Default::default(),
        drivers: Default::default(),
        carbon_intensity: None,
        onboarding: None,
    };
    let refused = rogue
        .register_node(RegisterNodeRequest {
            registration: Some(registration.into()),
            session: "rogue-session".to_owned(),
        })
        .await
        .expect_err("an unidentified agent");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let refused = rogue
        .heartbeat(HeartbeatRequest {
            node: "worker-1".to_owned(),
            session: "rogue-session".to_owned(),
            lease_id: 1,
            host: None,
        })
        .await
        .expect_err("an unidentified heartbeat");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");

    // Nothing was registered.
    let nodes = server.controller().list_nodes().await.expect("nodes");
    assert!(nodes.is_empty(), "{nodes:?}");
    server.shutdown().await;
}

/// A running agent renews its node certificate before it expires, without
/// a restart: the new certificate is in its state directory (0600), the
/// node stays Ready (heartbeats with the new one), and the servers still
/// start instances on it (new connections to the agent and the agent's
/// placement checks use the new one). Here every certificate counts as
/// expiring (a year's validity, renewed within 400 days of expiry) and
/// the agent looks every 200 ms, so it renews again and again.
#[tokio::test]
async fn a_running_agent_renews_its_node_certificate_and_keeps_working() {
    use std::os::unix::fs::PermissionsExt;

    let dirs = tempfile::tempdir().expect("tempdir");
    let (server, store, pki) = secure_server(dirs.path()).await;
    let accounts = zixiao_auth::AuthStore::new(store.clone(), Arc::new(zixiao_core::SystemClock));
    let admin = zixiao_auth::UserName::try_from("admin").expect("name");
    accounts
        .create_user(admin.clone(), zixiao_auth::Role::Admin, Default::default())
        .await
        .expect("admin");
    let (_, join) = accounts
        .issue_join_token(&admin, false, None)
        .await
        .expect("join token");

    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    let handle = agent::start(
        AgentOptions {
            limits: Default::default(),
            onboarding: Default::default(),
            name: "worker-1".to_owned(),
            servers: vec![server.addr().to_string()],
            region: "default".into(),
            zone: "default".into(),
            labels: Default::default(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            advertise: None,
            state_dir: dir.path().to_path_buf(),
            timing: Timing::default(),
            tls: Some(agent::AgentTls {
                ca_pem: pki.ca_pem().to_owned(),
                join_token: Some(join.expose().to_owned()),
                renew_before: Duration::from_secs(400 * 24 * 3600),
                renew_check: Duration::from_millis(200),
            }),
        },
        local("worker-1", &driver),
    )
    .await
    .expect("the agent joins");
    let cert_path = dir.path().join(agent::NODE_CERT_FILE);
    let joined = std::fs::read_to_string(&cert_path).expect("the node certificate");

    // Renewed in flight, twice, each time kept 0600.
    let mut seen = joined.clone();
    for renewal in 1..=2 {
        seen = wait_for(
            &format!("renewal {renewal} of the node certificate"),
            Duration::from_secs(20),
            || {
                let (path, seen) = (cert_path.clone(), seen.clone());
                async move {
                    std::fs::read_to_string(&path)
                        .ok()
                        .filter(|now| *now != seen)
                }
            },
        )
        .await;
        for file in [agent::NODE_CERT_FILE, agent::NODE_KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join(file))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file} after renewal {renewal}");
        }
    }
    let credentials = zixiao_auth::Credentials::from_pem(
        &seen,
        &std::fs::read_to_string(dir.path().join(agent::NODE_KEY_FILE)).expect("key"),
    )
    .expect("the renewed certificate and its key belong together");
    assert!(
        matches!(credentials.identity(), Ok(zixiao_auth::CertIdentity::Node(n)) if n.as_str() == "worker-1"),
        "the renewed certificate names the node"
    );

    // The node works on with it: Ready, and instances start on it.
    let (_, token) = accounts
        .issue_user_token(&admin, zixiao_auth::Role::Admin, None, None)
        .await
        .expect("admin token");
    let compute = zixiao_api::connect_with(zixiao_api::ConnectOptions {
        endpoint: format!("https://{}", server.addr()),
        ca_pem: Some(pki.ca_pem().to_owned()),
        token: Some(token.expose().to_owned()),
        client_identity: None,
    })
    .expect("client");
    create(&compute, "after-renewal", RestartPolicy::Never).await;
    let nodes = compute.list_nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].status, NodeStatus::Ready, "{:?}", nodes[0]);
    handle.shutdown().await;
    server.shutdown().await;
}
