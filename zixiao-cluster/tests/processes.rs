//! Multi-process failure tests and the failover measurement: two servers on
//! etcd (`ZIXIAO_TEST_ETCD_ENDPOINTS`, from `scripts/services/etcd.sh`),
//! three agents, each with its watchdog, all separate processes (this test
//! binary re-executed in a role) on loopback. Covers agents joining, node
//! death (agent and watchdog killed at once, the node's instances dying
//! with it) with failover, `kill -9` of an agent alone (fencing, then
//! failover; re-adoption on restart), `kill -9` of the leading server with
//! the other taking over, `kill -9` of an agent and of a server
//! mid-create, drain, maintenance, and an agent leaving for
//! good (SIGTERM: drained and deregistered). Every node records its instances'
//! starts and stops with the machine's monotonic time; at the end the test
//! checks from those records that no instance ever ran on two nodes at once.
//!
//! It prints the time from each death to the node's instances running
//! elsewhere (p50, p99): a measurement, not an assertion.

mod processes_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use processes_support::file_driver::hold_path;
use processes_support::harness::{all_moved, kill9, percentile, ready_nodes, wait_for, Harness};
use processes_support::roles::{etcd_store, run_role, ROLE};
use zixiao_cluster::watchdog;
use zixiao_core::{
    Client, CreateInstance, ErrorKind, Instance, InstanceSpec, InstanceStatus, NodeStatus,
    RestartPolicy, Wait,
};

fn main() {
    match std::env::var(ROLE).ok().as_deref() {
        Some(role) => run_role(role),
        None => run_tests(),
    }
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
    let mut h = Harness::new("processes", etcd, root, 3);
    // Servers start, agents join.
    h.start_cluster(2).await;
    eprintln!("processes: 2 servers and 3 agents joined");

    let compute = h.compute();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut spec = InstanceSpec::container("busybox");
        spec.restart = RestartPolicy::Always;
        let created = compute
            .create_instance(CreateInstance::new(format!("web-{i}"), spec), Wait::Settled)
            .await
            .expect("create");
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
                .list_instances(Default::default())
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
            let runtime = h.nodes[i].runtime();
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

    agent_killed_mid_create(&mut h).await;
    server_killed_mid_create(&mut h).await;

    // kill -9 of the leading server: the other takes over.
    let leader = h
        .cluster()
        .cluster_info()
        .await
        .expect("info")
        .leader
        .unwrap_or_default();
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
        let leader = cluster
            .cluster_info()
            .await
            .ok()?
            .leader
            .unwrap_or_default();
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
        .create_instance(CreateInstance::new("after-takeover", spec), Wait::Settled)
        .await
        .expect("create through the survivor");
    // The new leader fails nodes over too.
    let all = compute
        .list_instances(Default::default())
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
        .list_instances(Default::default())
        .await
        .expect("list");
    let total = all.len();
    let victim = all[0].node.clone().expect("placed");
    let report = h.cluster().drain_node(&victim).await.expect("drain");
    assert!(!report.moved.is_empty(), "{report:?}");
    let after = compute
        .list_instances(Default::default())
        .await
        .expect("list");
    assert!(after
        .iter()
        .all(|i| i.node.as_deref() != Some(victim.as_str())));
    assert!(after.iter().all(|i| i.status == InstanceStatus::Running));
    assert_eq!(after.len(), total, "nothing lost, nothing duplicated");

    let cluster = h.cluster();
    cluster.uncordon_node(&victim).await.expect("uncordon");

    // Maintenance: the node's instances move off; ending it makes it Ready.
    let victim = after[0].node.clone().expect("placed");
    let report = cluster
        .set_maintenance(&victim, true)
        .await
        .expect("maintenance on");
    assert_eq!(report.status, Some(NodeStatus::Maintenance), "{report:?}");
    assert!(!report.moved.is_empty(), "{report:?}");
    let after = running_off(&compute, &victim).await;
    assert_eq!(after.len(), total, "nothing lost, nothing duplicated");
    let report = cluster
        .set_maintenance(&victim, false)
        .await
        .expect("maintenance off");
    assert_eq!(report.status, Some(NodeStatus::Ready), "{report:?}");

    // An agent leaves for good (SIGTERM): its node is drained and
    // deregistered, its watchdog stops, its instances run elsewhere.
    let leaving = after[0].node.clone().expect("placed");
    let i = h.index(&leaving);
    let watchdog = watchdog::WatchdogFiles::new(&h.nodes[i].dir)
        .pid()
        .expect("the leaving node's watchdog");
    assert!(h.leave(i), "the leaving agent exits cleanly");
    let nodes = cluster.list_nodes().await.expect("nodes");
    assert!(
        nodes.iter().all(|n| n.id != leaving),
        "{leaving} is deregistered: {nodes:?}"
    );
    let after = running_off(&compute, &leaving).await;
    assert_eq!(after.len(), total, "nothing lost, nothing duplicated");
    wait_for("the watchdog to stop", Duration::from_secs(10), || async {
        // SAFETY: kill(2) with signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(watchdog, 0) } == 0;
        (!alive).then_some(())
    })
    .await;
    eprintln!("processes: {leaving} drained, deregistered and left");

    h.check_never_twice(&after.iter().map(|i| i.id.clone()).collect::<Vec<_>>());

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
}

/// Cordons every node but `i` and holds creates on node `i` (`on`), or
/// undoes both: the next instance lands on node `i` and its create waits
/// there, so a test can kill a process mid-create.
async fn steer_to(h: &Harness, i: usize, on: bool) {
    let cluster = h.cluster();
    for (_, node) in h.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
        if on {
            cluster.cordon_node(&node.name).await.expect("cordon");
        } else {
            cluster.uncordon_node(&node.name).await.expect("uncordon");
        }
    }
    let hold = hold_path(&h.nodes[i].runtime());
    if on {
        std::fs::write(&hold, b"").expect("hold creates");
    } else {
        let _ = std::fs::remove_file(&hold);
    }
}

/// Waits until node `i`'s runtime is creating instance `id`.
async fn creating(h: &Harness, i: usize, id: &str) {
    let began = h.nodes[i].runtime().join(format!("{id}.creating"));
    wait_for(
        "the create to begin on the node",
        Duration::from_secs(30),
        || async { began.exists().then_some(()) },
    )
    .await;
}

fn always(name: &str) -> CreateInstance {
    let mut spec = InstanceSpec::container("busybox");
    spec.restart = RestartPolicy::Always;
    CreateInstance::new(name, spec)
}

/// `kill -9` of an agent while its runtime creates an instance: the node is
/// fenced and failed over, the instance runs elsewhere, and the agent that
/// comes back removes its half-made copy instead of starting it.
async fn agent_killed_mid_create(h: &mut Harness) {
    let i = 0;
    let victim = h.nodes[i].name.clone();
    steer_to(h, i, true).await;
    let compute = h.compute();
    let created = compute
        .create_instance(always("mid-create"), Wait::No)
        .await
        .expect("create");
    creating(h, i, &created.id).await;
    h.kill_agent(i);
    steer_to(h, i, false).await;
    let since = Instant::now();
    all_moved(&compute, std::slice::from_ref(&created.id), &victim).await;
    eprintln!(
        "processes: agent of {victim} killed mid-create; the instance runs elsewhere after {:?}",
        since.elapsed()
    );
    h.start_agent(i);
    ready_nodes(&h.cluster(), 3).await;
    let stale = h.nodes[i].runtime().join(format!("{}.state", created.id));
    wait_for(
        "the half-made copy to be removed",
        Duration::from_secs(30),
        || async { (!stale.exists()).then_some(()) },
    )
    .await;
}

/// `kill -9` of the server a create went to, while the node creates it: the
/// client gets `unavailable`; retried through the other server, as a user
/// would, the create was applied exactly once and the instance runs.
async fn server_killed_mid_create(h: &mut Harness) {
    let (i, k) = (1, 0);
    steer_to(h, i, true).await;
    let to_die = zixiao_api::connect(&h.server_addrs[k]).expect("client");
    let request = tokio::spawn(async move {
        to_die
            .create_instance(always("mid-request"), Wait::Settled)
            .await
    });
    let other = zixiao_api::connect(&h.server_addrs[1 - k]).expect("client");
    let id = wait_for(
        "the create to be stored",
        Duration::from_secs(30),
        || async { other.get_instance("mid-request").await.ok().map(|i| i.id) },
    )
    .await;
    creating(h, i, &id).await;
    let mut server = h.servers[k].take().expect("server");
    kill9(server.child.id() as i32);
    let _ = server.child.wait();
    let answer = request.await.expect("request task");
    let error = answer.expect_err("the server died mid-request");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    steer_to(h, i, false).await;
    let again = other
        .create_instance(always("mid-request"), Wait::Settled)
        .await
        .expect_err("the first create was applied");
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
    wait_for("mid-request to run", Duration::from_secs(30), || async {
        let i = other.get_instance("mid-request").await.ok()?;
        (i.status == InstanceStatus::Running).then_some(())
    })
    .await;
    let all = other
        .list_instances(Default::default())
        .await
        .expect("list");
    let named = all.iter().filter(|i| i.name == "mid-request").count();
    assert_eq!(named, 1, "one instance, not two");
    eprintln!("processes: server-{k} killed mid-create: unavailable, applied once, running");
    h.restart_server(k);
}

/// Every instance, once all run and none on `node`.
async fn running_off(compute: &Client, node: &str) -> Vec<Instance> {
    wait_for(
        "every instance running off the node",
        Duration::from_secs(30),
        || async {
            let all = compute.list_instances(Default::default()).await.ok()?;
            all.iter()
                .all(|i| i.status == InstanceStatus::Running && i.node.as_deref() != Some(node))
                .then_some(all)
        },
    )
    .await
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
            .create_instance(CreateInstance::new(format!("bulk-{i}"), spec), Wait::No)
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
