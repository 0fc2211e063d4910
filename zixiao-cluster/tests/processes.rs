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
//! The same cluster then runs the **real runtimes** (containerd in a
//! namespace per node, QEMU microVMs; `scripts/services/containerd.sh` and
//! `microvm.sh`): a container and a microVM created through a server, a node
//! death (its agent, watchdog, containers and QEMUs killed at once: the
//! node loses its power) with failover, `kill -9` of an agent while its
//! runtime creates a microVM, `kill -9` of a server mid-create; and 20
//! containers created at once through a server on two small nodes: each one
//! that fits runs, started once by the runtime, the others are pending
//! with the scheduler's reason. After each of these, every node's runtimes
//! hold exactly what the store says (zixiao-testing's `runtimes`: the
//! containerd task lists, the process table).
//!
//! It prints the time from each death to the node's instances running
//! elsewhere (p50, p99): a measurement, not an assertion.
//!
//! Arguments after `--` pick scenario groups by name (`fake`,
//! `real-failures`, `real-twenty`): `cargo test --test processes -- real`.

mod processes_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use processes_support::harness::{
    all_moved, kill9, percentile, ready_nodes, Harness, RealRuntimes, Runtime,
};
use processes_support::roles::{etcd_store, run_role, ROLE};
use processes_support::workloads::{
    container, creating, microvm, only_on, steer_to, wait_for_log, BOOT_MARKER,
};
use zixiao_cluster::watchdog;
use zixiao_core::{
    Client, ConditionType, CreateInstance, ErrorKind, Instance, InstanceSpec, InstanceStatus,
    NodeStatus, RestartPolicy, Wait,
};
use zixiao_testing::runtime_events::Event;
use zixiao_testing::runtimes::ContainerdNamespace;
use zixiao_testing::wait::wait_until;

fn main() {
    match std::env::var(ROLE).ok().as_deref() {
        Some(role) => run_role(role),
        None => run_tests(),
    }
}

/// Whether scenario group `name` runs: every group, unless arguments name some.
fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
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
    runtime.block_on(async {
        if selected("fake") {
            scenarios(etcd.clone()).await;
        }
        if selected("real-failures") || selected("real-twenty") {
            match RealRuntimes::from_env() {
                Some(real) => {
                    if selected("real-failures") {
                        real_failures(etcd.clone(), real.clone()).await;
                    }
                    if selected("real-twenty") {
                        twenty_at_once(etcd, real).await;
                    }
                }
                None => eprintln!("processes: real runtimes skipped"),
            }
        }
    });
    println!("processes: ok");
}

/// The fake runtime's scenarios.
async fn scenarios(etcd: String) {
    let root = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::new("processes", etcd, root, 3);
    // Servers start, agents join.
    h.start_cluster(2).await;
    eprintln!("processes: 2 servers and 3 agents joined");

    let compute = h.compute();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(create(&compute, container(&format!("web-{i}"))).await.id);
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
            h.runtimes_agree(&[]).await;
        }
    }

    agent_killed_mid_create(&mut h, &container("mid-create")).await;
    server_killed_mid_create(&mut h, &container("mid-request")).await;

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
    let new_leader = wait_until("another leader", Duration::from_secs(20), || async {
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
    create(&compute, container("after-takeover")).await;
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
    wait_until("the watchdog to stop", Duration::from_secs(10), || async {
        // SAFETY: kill(2) with signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(watchdog, 0) } == 0;
        (!alive).then_some(())
    })
    .await;
    eprintln!("processes: {leaving} drained, deregistered and left");

    h.check_never_twice(&after.iter().map(|i| i.id.clone()).collect::<Vec<_>>());
    let i = h.index(&leaving);
    h.runtimes_agree(&[i]).await;

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

/// Creates `request` through `compute`, waiting: it runs.
async fn create(compute: &Client, request: CreateInstance) -> Instance {
    let name = request.name.clone();
    let created = compute
        .create_instance(request, Wait::Settled)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    assert_eq!(
        created.status,
        InstanceStatus::Running,
        "{name} does not run: {created:?}"
    );
    created
}

/// `kill -9` of an agent while its runtime creates `request`'s instance
/// (held once the runtime made it): the node is fenced and failed over, the
/// instance runs elsewhere, nothing of it runs on the node meanwhile, and
/// the agent that comes back removes its half-made copy instead of starting
/// it. Returns the instance's id.
async fn agent_killed_mid_create(h: &mut Harness, request: &CreateInstance) -> String {
    let i = 0;
    let victim = h.nodes[i].name.clone();
    steer_to(h, i, true).await;
    let compute = h.compute();
    let created = compute
        .create_instance(request.clone(), Wait::No)
        .await
        .expect("create");
    creating(h, i, &created.id).await;
    h.kill_agent(i);
    steer_to(h, i, false).await;
    let since = Instant::now();
    all_moved(&compute, std::slice::from_ref(&created.id), &victim).await;
    eprintln!(
        "{}: agent of {victim} killed mid-create; the instance runs elsewhere after {:?}",
        h.tag,
        since.elapsed()
    );
    h.runtimes_agree(&[]).await;
    h.start_agent(i);
    ready_nodes(&h.cluster(), h.nodes.len()).await;
    h.runtimes_agree(&[]).await;
    created.id
}

/// `kill -9` of the server a create went to, while the node creates it: the
/// client gets `unavailable`; retried through the other server, as a user
/// would, the create was applied exactly once and the instance runs.
/// Returns the instance's id.
async fn server_killed_mid_create(h: &mut Harness, request: &CreateInstance) -> String {
    let (i, k) = (1, 0);
    steer_to(h, i, true).await;
    let to_die = h.compute_of(k);
    let sent = request.clone();
    let request_task =
        tokio::spawn(async move { to_die.create_instance(sent, Wait::Settled).await });
    let other = h.compute_of(1 - k);
    let name = request.name.clone();
    let id = wait_until(
        "the create to be stored",
        Duration::from_secs(30),
        || async { other.get_instance(&name).await.ok().map(|i| i.id) },
    )
    .await;
    creating(h, i, &id).await;
    let mut server = h.servers[k].take().expect("server");
    kill9(server.child.id() as i32);
    let _ = server.child.wait();
    let answer = request_task.await.expect("request task");
    let error = answer.expect_err("the server died mid-request");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    steer_to(h, i, false).await;
    let again = other
        .create_instance(request.clone(), Wait::Settled)
        .await
        .expect_err("the first create was applied");
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
    wait_until(
        &format!("{name} to run"),
        Duration::from_secs(60),
        || async {
            let i = other.get_instance(&name).await.ok()?;
            (i.status == InstanceStatus::Running).then_some(())
        },
    )
    .await;
    let all = other
        .list_instances(Default::default())
        .await
        .expect("list");
    let named = all.iter().filter(|i| i.name == name).count();
    assert_eq!(named, 1, "one instance, not two");
    eprintln!(
        "{}: server-{k} killed mid-create: unavailable, applied once, running",
        h.tag
    );
    h.restart_server(k);
    h.runtimes_agree(&[]).await;
    id
}

/// Every instance, once all run and none on `node`.
async fn running_off(compute: &Client, node: &str) -> Vec<Instance> {
    wait_until(
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

/// The failure scenarios on the real runtimes: 2 servers, 3 agents whose
/// nodes run containerd (a namespace each) and QEMU microVMs.
async fn real_failures(etcd: String, real: RealRuntimes) {
    let started = Instant::now();
    let root = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::new("processes/real", etcd, root, 3);
    h.runtime = Runtime::Real(real.clone());
    h.start_cluster(2).await;
    eprintln!(
        "{}: 2 servers and 3 agents on containerd and QEMU joined after {:?}",
        h.tag,
        started.elapsed()
    );
    // Through the server that does not lead, as most requests of a
    // cluster are: the leader's loop converges in another process.
    let compute = h.compute_of(h.follower().await);

    // Create: a container and a microVM, both on node-0, through a server.
    only_on(&h, 0, true).await;
    let web = create(&compute, container("web")).await;
    let vm = create(&compute, microvm("vm", &real)).await;
    only_on(&h, 0, false).await;
    for created in [&web, &vm] {
        assert_eq!(created.node.as_deref(), Some("node-0"), "{created:?}");
        assert!(created.failure.is_none(), "{created:?}");
    }
    assert_eq!(vm.runtime.as_deref(), Some("qemu"), "{vm:?}");
    wait_for_log(&compute, &web.id, "hello").await;
    wait_for_log(&compute, &vm.id, BOOT_MARKER).await;
    h.runtimes_agree(&[]).await;
    let events = h.nodes[0].events();
    for (name, id) in [("web", &web.id), ("vm", &vm.id)] {
        for event in [Event::Create, Event::Start] {
            assert_eq!(
                events.counts(event).get(id),
                Some(&1),
                "{event:?} calls of {name} that reached node-0's runtime: {:?}",
                events.events()
            );
        }
    }
    eprintln!(
        "{}: a container and a QEMU microVM created through a server: running, created and \
         started once each, their logs read through the server",
        h.tag
    );

    // Node death: its agent, watchdog, task and QEMU die at once.
    let held = [web.id.clone(), vm.id.clone()];
    let since = Instant::now();
    h.kill_node(0);
    all_moved(&compute, &held, "node-0").await;
    eprintln!(
        "{}: death of node-0 (a container and a microVM): running elsewhere after {:?}",
        h.tag,
        since.elapsed()
    );
    // The microVM booted again on its new node.
    wait_for_log(&compute, &vm.id, BOOT_MARKER).await;
    h.runtimes_agree(&[]).await;
    h.start_agent(0);
    ready_nodes(&h.cluster(), 3).await;
    // Back, node-0 removed the container and run directory it kept.
    h.runtimes_agree(&[]).await;
    eprintln!("{}: node-0 back; it holds nothing of what moved", h.tag);

    let vm_mid = agent_killed_mid_create(&mut h, &microvm("vm-mid-create", &real)).await;
    let web_mid = server_killed_mid_create(&mut h, &container("web-mid-request")).await;

    let ids = [web.id.clone(), vm.id.clone(), vm_mid, web_mid];
    h.check_never_twice(&ids);

    // Deleted, nothing is left on any node.
    for id in &ids {
        let deleted = compute
            .delete_instance(id, Wait::Settled)
            .await
            .expect("delete");
        assert!(deleted.is_none(), "{deleted:?}");
    }
    h.runtimes_agree(&[]).await;
    for i in 0..h.nodes.len() {
        for view in h.views(i) {
            let left = view.held().expect("runtime");
            assert!(left.is_empty(), "{} still holds {left:?}", h.nodes[i].name);
        }
    }
    eprintln!(
        "{}: deleted; no task, container, QEMU or run directory left ({:?} in all)",
        h.tag,
        started.elapsed()
    );
}

/// 20 containers created at once through the servers, waiting, on two nodes
/// of 512 MiB (4 containers of 128 MiB each): 8 run, each created and
/// started once by containerd, one task each; 12 are pending with the
/// scheduler's reason and nothing of them reached a runtime.
async fn twenty_at_once(etcd: String, real: RealRuntimes) {
    const N: usize = 20;
    const FIT: usize = 8;
    let started = Instant::now();
    let root = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::new("processes/twenty", etcd, root, 2);
    h.runtime = Runtime::Real(real);
    h.node_memory_mib = Some(512);
    h.start_cluster(2).await;
    let compute = h.compute();
    let since = Instant::now();
    // Through both servers in turn: half go through the one that does not
    // lead, while the leader's loop converges in the other process.
    let creates: Vec<_> = (0..N)
        .map(|i| {
            let compute = h.compute_of(i % 2);
            tokio::spawn(async move {
                compute
                    .create_instance(container(&format!("svc-{i:02}")), Wait::Settled)
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    for create in creates {
        let instance = create.await.expect("join").expect("create");
        created.push(instance);
    }
    eprintln!(
        "{}: {N} creates at once through a server answered after {:?}",
        h.tag,
        since.elapsed()
    );
    let (running, pending): (Vec<&Instance>, Vec<&Instance>) = created
        .iter()
        .partition(|i| i.status == InstanceStatus::Running);
    let seen: Vec<String> = created
        .iter()
        .map(|i| {
            format!(
                "{} {:?} on {:?}: {}",
                i.name,
                i.status,
                i.node,
                i.problem().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(running.len(), FIT, "running: {seen:#?}");
    assert_eq!(pending.len(), N - FIT, "pending: {seen:#?}");
    for instance in &pending {
        assert_eq!(instance.status, InstanceStatus::Pending, "{instance:?}");
        assert_eq!(instance.node, None, "{instance:?}");
        let why = instance
            .condition(ConditionType::Scheduled)
            .unwrap_or_else(|| panic!("no reason why {} is pending", instance.name));
        assert!(!why.status, "{why:?}");
        assert_eq!(why.reason, "Unschedulable", "{why:?}");
        assert!(
            why.message
                .contains("2 nodes: insufficient memory (need 128 MiB, max free 0 MiB)"),
            "{why:?}"
        );
    }
    for node in &h.nodes {
        let here = running
            .iter()
            .filter(|i| i.node.as_deref() == Some(node.name.as_str()))
            .count();
        assert_eq!(here, FIT / 2, "{} runs {here}: {running:#?}", node.name);
    }
    h.runtimes_agree(&[]).await;
    // Started once: the runtime saw one create and one start of each
    // instance that runs, nothing of the others.
    let mut creates: BTreeMap<String, usize> = BTreeMap::new();
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for node in &h.nodes {
        for (id, n) in node.events().counts(Event::Create) {
            *creates.entry(id).or_default() += n;
        }
        for (id, n) in node.events().counts(Event::Start) {
            *starts.entry(id).or_default() += n;
        }
    }
    for instance in &created {
        let expected = usize::from(instance.status == InstanceStatus::Running);
        for (what, counts) in [("creates", &creates), ("starts", &starts)] {
            assert_eq!(
                counts.get(&instance.id).copied().unwrap_or(0),
                expected,
                "{} of {} ({:?}) by the runtime",
                what,
                instance.name,
                instance.status
            );
        }
    }
    // containerd's own view: four running tasks per node, one per instance there.
    let real = h.real().expect("real runtimes");
    for (i, node) in h.nodes.iter().enumerate() {
        let tasks = ContainerdNamespace::new(&real.containerd_socket, h.containerd_namespace(i))
            .tasks()
            .expect("tasks");
        let mut ids: Vec<&str> = tasks
            .iter()
            .filter(|t| t.status == "RUNNING")
            .map(|t| t.id.as_str())
            .collect();
        ids.sort_unstable();
        let mut expected: Vec<&str> = running
            .iter()
            .filter(|r| r.node.as_deref() == Some(node.name.as_str()))
            .map(|r| r.id.as_str())
            .collect();
        expected.sort_unstable();
        assert_eq!(ids, expected, "{}'s running tasks: {tasks:?}", node.name);
    }
    eprintln!(
        "{}: {FIT} run, each created and started once by containerd; {} pending: \
         insufficient memory",
        h.tag,
        N - FIT
    );
    // The pending first, so that nothing is placed while the others go.
    for instance in pending.iter().chain(running.iter()) {
        compute
            .delete_instance(&instance.id, Wait::Settled)
            .await
            .expect("delete");
    }
    h.runtimes_agree(&[]).await;
    for i in 0..h.nodes.len() {
        for view in h.views(i) {
            let left = view.held().expect("runtime");
            assert!(left.is_empty(), "{} still holds {left:?}", h.nodes[i].name);
        }
    }
    eprintln!(
        "{}: all deleted, nothing left ({:?} in all)",
        h.tag,
        started.elapsed()
    );
}
