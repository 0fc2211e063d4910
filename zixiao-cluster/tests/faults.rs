//! Multi-process fault tests of the distributed deployment, in network
//! namespaces the test creates (root needed; nothing touches the host's
//! own network). A control namespace holds a private three-member etcd
//! cluster, two servers and two agents; a node namespace, joined to it by a
//! veth pair on test-owned addresses, holds the third agent and its
//! watchdog. Every role is this binary re-executed (see
//! `processes_support::roles`), every node runs the file-backed fake
//! runtime that records starts and stops with the machine's monotonic time.
//!
//! - **Console attach through the server**: a `Client` attaches
//!   through a server to instances on an agent in another process (one of
//!   them in the other namespace); bytes typed come back. Attaching to an
//!   unknown instance is NotFound, to a stopped one FailedPrecondition.
//! - **Partition with fencing**: the node namespace's link goes down. The
//!   partitioned node's watchdog fences its instances before they start
//!   elsewhere, the node goes NotReady, and from every node's own records
//!   no instance ever ran on two nodes at once. After the link comes back
//!   the node is Ready again and never restarts the instances that moved:
//!   its stale copies are removed. Two rounds (`ZIXIAO_PARTITION_ROUNDS`),
//!   each with fresh instances placed on the node before it is cut off.
//! - **etcd leader loss**: `kill -9` of the etcd raft leader while the
//!   cluster runs. Creates through the gRPC API succeed (retried on
//!   `Unavailable`, as a user would), nodes are Ready, no instance is lost
//!   or duplicated.
//! - **Partition with fencing on the real runtimes**, first, in a cluster
//!   of its own whose nodes run containerd (a namespace each) and QEMU
//!   microVMs: the cut node's watchdog kills the real container's task and
//!   the real QEMU (seen in containerd's task list and the process table)
//!   before they start elsewhere; healed, the node removes what it kept.
//!
//! After each partition, every node's runtimes hold exactly what the store
//! says (zixiao-testing's `runtimes`).
//!
//! It prints the time from the partition to the instances running
//! elsewhere (p50, p99 over the rounds), from the etcd leader's death to the first create that
//! succeeds, and how many instances nodes fenced during the etcd election:
//! measurements, not assertions.
//!
//! Needs `ZIXIAO_TEST_ETCD_BIN` and `etcdctl` next to it
//! (`scripts/services/etcd.sh`), `ip` (`scripts/services/net.sh`),
//! `nsenter`, and root. On failure (or with `ZIXIAO_TEST_KEEP_LOGS=1`) the
//! processes' logs are kept and their directory printed.

mod processes_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use processes_support::etcd::EtcdCluster;
use processes_support::harness::{
    all_moved, percentile, ready_nodes, Harness, RealRuntimes, Runtime,
};
use processes_support::netns::{Namespaces, CONTROL_IP, NODE_IP};
use processes_support::roles::{enter_netns, run_role, ROLE};
use processes_support::workloads::{container, microvm, only_on, wait_for_log, BOOT_MARKER};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use zixiao_cluster::timing::monotonic_ms;
use zixiao_cluster::watchdog::WatchdogFiles;
use zixiao_core::{
    Client, CreateInstance, ErrorKind, Instance, InstanceSpec, InstanceStatus, NodeStatus,
    RestartPolicy, Wait,
};
use zixiao_testing::runtimes::Presence;
use zixiao_testing::wait::wait_until;

/// The node in the node namespace.
const CUT: usize = 2;

fn main() {
    match std::env::var(ROLE).ok().as_deref() {
        Some(role) => run_role(role),
        None => run_tests(),
    }
}

fn run_tests() {
    let Some(bin) = zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_ETCD_BIN", "etcd") else {
        return;
    };
    let required = zixiao_testing::wait::runtimes_required();
    if !cfg!(feature = "etcd") {
        assert!(
            !required,
            "etcd is required but this test was built without the `etcd` feature"
        );
        eprintln!("faults: skipped (built without the `etcd` feature)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !required,
            "the fault tests create network namespaces: run them as root"
        );
        eprintln!("faults: skipped (network namespaces need root)");
        return;
    }
    // Still the only thread: once it joins the control namespace, every
    // thread and process it starts lives there.
    let net = Namespaces::create();
    enter_netns(&net.control);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenarios(PathBuf::from(bin), &net));
    println!("faults: ok");
}

/// A harness of 3 nodes, node `CUT` in the node namespace, servers on the
/// control side of the veth pair.
fn harness(tag: &'static str, etcd: &EtcdCluster, net: &Namespaces) -> Harness {
    let root = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::new(tag, etcd.endpoints(), root, 3);
    h.server_listen = Some(format!("{CONTROL_IP}:0"));
    h.nodes[CUT].netns = Some(net.node.clone());
    h.nodes[CUT].listen = Some(format!("{NODE_IP}:0"));
    h
}

async fn scenarios(bin: PathBuf, net: &Namespaces) {
    let started = Instant::now();
    let mut etcd = EtcdCluster::start(&bin);
    eprintln!("faults: 3-member etcd ready after {:?}", started.elapsed());
    match RealRuntimes::from_env() {
        Some(real) => real_partition(&etcd, net, real).await,
        None => eprintln!("faults: the partition on real runtimes skipped"),
    }
    let mut h = harness("faults", &etcd, net);
    h.start_cluster(2).await;
    eprintln!("faults: 2 servers and 3 agents joined (node-{CUT} in its own namespace)");

    // Instances everywhere: three on the nodes that stay (the one that
    // will be cut off cordoned meanwhile, as the scheduler may pack them
    // all onto it), three on the one that will be cut off.
    let compute = h.compute();
    let cut = h.nodes[CUT].name.clone();
    h.cluster().cordon_node(&cut).await.expect("cordon");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create(&compute, &format!("web-{i}")).await.id);
    }
    h.cluster().uncordon_node(&cut).await.expect("uncordon");
    ids.extend(place_on_cut(&h, &compute, 0).await);

    console(&h, &compute).await;
    let rounds: usize = std::env::var("ZIXIAO_PARTITION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut took = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            ids.extend(place_on_cut(&h, &compute, round).await);
        }
        took.push(partition(&h, net, &compute, &ids).await);
    }
    eprintln!(
        "faults: partition to running elsewhere: p50 {:?} p99 {:?} over {} runs",
        percentile(&mut took.clone(), 50.0),
        percentile(&mut took, 99.0),
        rounds
    );
    etcd_leader_loss(&h, &mut etcd, &ids).await;
    eprintln!("faults: done in {:?}", started.elapsed());
}

/// Creates three instances on the node that will be cut off (the others
/// cordoned meanwhile); returns their ids.
async fn place_on_cut(h: &Harness, compute: &Client, round: usize) -> Vec<String> {
    let cluster = h.cluster();
    let others: Vec<&str> = (0..3)
        .filter(|i| *i != CUT)
        .map(|i| h.nodes[i].name.as_str())
        .collect();
    for node in &others {
        cluster.cordon_node(node).await.expect("cordon");
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = create(compute, &format!("cut-{round}-{i}")).await;
        assert_eq!(created.node.as_deref(), Some(h.nodes[CUT].name.as_str()));
        ids.push(created.id);
    }
    for node in &others {
        cluster.uncordon_node(node).await.expect("uncordon");
    }
    ids
}

async fn create(compute: &Client, name: &str) -> Instance {
    create_request(compute, container(name)).await
}

/// Creates `request`, waiting: it runs.
async fn create_request(compute: &Client, request: CreateInstance) -> Instance {
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

async fn read_until(output: &mut (impl AsyncRead + Unpin), seen: &mut String, needle: &str) {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while !seen.contains(needle) {
            let n = output.read(&mut buf).await.expect("read the console");
            assert!(
                n > 0,
                "the console closed before {needle:?}; it said {seen:?}"
            );
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no {needle:?} on the console; it said {seen:?}"
    );
}

/// Console attach through a server to an agent in another process: on a
/// node in the control namespace and on the one across the veth pair.
async fn console(h: &Harness, compute: &Client) {
    let all = compute
        .list_instances(Default::default())
        .await
        .expect("list");
    let mut attached = Vec::new();
    let cut = h.nodes[CUT].name.as_str();
    let there = all.iter().find(|i| i.node.as_deref() == Some(cut));
    let here = all.iter().find(|i| i.node.as_deref() != Some(cut));
    for instance in [there, here].into_iter().flatten() {
        let node = instance.node.clone().expect("placed");
        let mut stream = compute
            .attach_console(&instance.id)
            .await
            .expect("attach the console");
        let mut seen = String::new();
        // The fake instance first names where it runs: the agent's process.
        read_until(
            &mut stream.output,
            &mut seen,
            &format!("{node} {}\n", instance.id),
        )
        .await;
        let typed = format!("hello {} through the server\n", instance.name);
        stream
            .input
            .write_all(typed.as_bytes())
            .await
            .expect("type");
        stream.input.flush().await.expect("flush");
        read_until(&mut stream.output, &mut seen, &typed).await;
        attached.push(node);
    }
    assert!(
        there.is_some() && here.is_some(),
        "instances run on the node across the veth pair and on another: {all:?}"
    );
    // A console needs an instance, and a running one.
    let missing = compute.attach_console("no-such-instance").await;
    assert_eq!(
        missing.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    );
    let stopped = &all[0];
    compute
        .stop_instance(&stopped.id, Wait::Settled)
        .await
        .expect("stop");
    let refused = compute.attach_console(&stopped.id).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::FailedPrecondition)
    );
    let started = compute
        .start_instance(&stopped.id, Wait::Settled)
        .await
        .expect("start");
    assert_eq!(started.status, InstanceStatus::Running);
    eprintln!("faults: console attach through the server echoed on {attached:?}");
}

/// The cut node's link goes down; its instances are fenced there, then run
/// elsewhere; after the link comes back its stale copies are removed.
async fn partition(h: &Harness, net: &Namespaces, compute: &Client, ids: &[String]) -> Duration {
    let cut = &h.nodes[CUT];
    let all = compute
        .list_instances(Default::default())
        .await
        .expect("list");
    let held: Vec<String> = all
        .iter()
        .filter(|i| i.node.as_deref() == Some(cut.name.as_str()))
        .map(|i| i.id.clone())
        .collect();
    assert!(!held.is_empty(), "nothing on the node to cut off");
    let at = monotonic_ms();
    let since = Instant::now();
    net.partition();
    let done = all_moved(compute, &held, &cut.name).await;
    let took = done - since;
    eprintln!(
        "{}: partition of node-{CUT} ({} instances): running elsewhere after {took:?}",
        h.tag,
        held.len()
    );
    // The cut node is NotReady; its agent lives on, cut off.
    let cluster = h.cluster();
    wait_until("the cut node NotReady", Duration::from_secs(30), || async {
        let node = cluster.get_node(&cut.name).await.ok()?;
        (node.status == NodeStatus::NotReady).then_some(())
    })
    .await;
    // Fenced by its watchdog before any other node started it.
    let fenced = WatchdogFiles::new(&cut.dir).fence_log();
    let now = monotonic_ms();
    for id in &held {
        let fenced_at = fenced
            .iter()
            .filter(|(when, f)| f == id && *when >= at)
            .map(|(when, _)| *when)
            .min()
            .unwrap_or_else(|| panic!("{id} was not fenced: {fenced:?}"));
        for (node, run) in h.nodes.iter().enumerate().flat_map(|(n, node)| {
            node.events()
                .runs(now)
                .into_iter()
                .filter(|run| &run.instance == id && run.from_ms >= at)
                .map(move |run| (n, run))
        }) {
            assert_ne!(node, CUT, "{id} started on the cut node");
            assert!(
                fenced_at <= run.from_ms,
                "{id} started on node-{node} at {} before it was fenced at {fenced_at}",
                run.from_ms
            );
        }
    }
    // Nothing of what moved runs on the cut node: its runtimes say so
    // themselves (the fake's state files; containerd's tasks and the
    // process table for the real ones).
    for view in h.views(CUT) {
        let live: Vec<_> = view
            .held()
            .expect("the cut node's runtime")
            .into_iter()
            .filter(|h| h.presence == Presence::Live && held.contains(&h.instance))
            .collect();
        assert!(live.is_empty(), "fenced, yet the cut node runs {live:?}");
    }
    h.runtimes_agree(&[CUT]).await;
    eprintln!(
        "{}: node-{CUT}'s watchdog fenced its {} instances {:?} after the partition",
        h.tag,
        held.len(),
        fenced
            .iter()
            .filter(|(when, _)| *when >= at)
            .map(|(when, _)| Duration::from_millis(when - at))
            .max()
            .unwrap_or_default()
    );
    h.check_never_twice(ids);

    // Heal: the node returns, removes its stale copies, restarts none.
    net.heal();
    ready_nodes(&cluster, 3).await;
    h.runtimes_agree(&[]).await;
    for run in cut.events().runs(monotonic_ms()) {
        assert!(
            run.from_ms < at || !held.contains(&run.instance),
            "the returning node restarted {}",
            run.instance
        );
    }
    for id in &held {
        let instance = compute.get_instance(id).await.expect("get");
        assert_ne!(instance.node.as_deref(), Some(cut.name.as_str()));
        assert_eq!(instance.status, InstanceStatus::Running);
    }
    h.check_never_twice(ids);
    eprintln!(
        "{}: node-{CUT} back after the partition; its stale copies removed",
        h.tag
    );
    took
}

/// The partition on the real runtimes: a container and a QEMU microVM on
/// the node that is cut off, a container elsewhere. The cut node's watchdog
/// kills the task and the QEMU; both run elsewhere; the microVM boots again
/// there; healed, the node removes the container and the run directory it
/// kept; deleted, nothing is left anywhere.
async fn real_partition(etcd: &EtcdCluster, net: &Namespaces, real: RealRuntimes) {
    let started = Instant::now();
    let mut h = harness("faults/real", etcd, net);
    h.runtime = Runtime::Real(real.clone());
    h.start_cluster(2).await;
    eprintln!(
        "{}: 2 servers and 3 agents on containerd and QEMU joined after {:?}",
        h.tag,
        started.elapsed()
    );
    let compute = h.compute();
    only_on(&h, (CUT + 1) % 3, true).await;
    let mut ids = vec![create_request(&compute, container("web")).await.id];
    only_on(&h, (CUT + 1) % 3, false).await;
    only_on(&h, CUT, true).await;
    let cut_web = create_request(&compute, container("cut-web")).await;
    let cut_vm = create_request(&compute, microvm("cut-vm", &real)).await;
    only_on(&h, CUT, false).await;
    wait_for_log(&compute, &cut_web.id, "hello").await;
    wait_for_log(&compute, &cut_vm.id, BOOT_MARKER).await;
    ids.extend([cut_web.id.clone(), cut_vm.id.clone()]);
    h.runtimes_agree(&[]).await;
    partition(&h, net, &compute, &ids).await;
    wait_for_log(&compute, &cut_vm.id, BOOT_MARKER).await;
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

/// `kill -9` of etcd's leader: the API keeps serving (after retries on
/// `Unavailable`), nodes are Ready, nothing lost or duplicated.
async fn etcd_leader_loss(h: &Harness, etcd: &mut EtcdCluster, ids: &[String]) {
    let leader = etcd.leader().expect("an etcd leader");
    let fences_before: Vec<usize> = h
        .nodes
        .iter()
        .map(|n| WatchdogFiles::new(&n.dir).fence_log().len())
        .collect();
    let since = Instant::now();
    etcd.kill(leader);
    let mut created = Vec::new();
    let mut retries = 0;
    let mut first = None;
    for i in 0..4 {
        // Through both servers in turn.
        let compute = h.compute_of(i % 2);
        let name = format!("after-etcd-{i}");
        let mut spec = InstanceSpec::container("busybox");
        spec.restart = RestartPolicy::Always;
        let deadline = Instant::now() + Duration::from_secs(60);
        let instance = loop {
            match compute
                .create_instance(
                    CreateInstance::new(name.clone(), spec.clone()),
                    Wait::Settled,
                )
                .await
            {
                Ok(instance) => break instance,
                // The first attempt's outcome was unknown and it was applied.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && retries > 0 => {
                    break compute.get_instance(&name).await.expect("get");
                }
                Err(e) if e.kind() == ErrorKind::Unavailable && Instant::now() < deadline => {
                    eprintln!("faults: create {name}: {e}; retrying");
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("create {name} after the etcd leader's death: {e}"),
            }
        };
        first.get_or_insert_with(|| since.elapsed());
        created.push(instance.id);
    }
    eprintln!(
        "faults: etcd leader m{leader} killed; first create succeeded after {:?} ({retries} retries)",
        first.unwrap_or_default()
    );
    ready_nodes(&h.cluster(), 3).await;
    // A measurement: nodes whose heartbeats failed for longer than the
    // fencing deadline during the election stopped their instances.
    let fenced: Vec<(String, usize)> = h
        .nodes
        .iter()
        .zip(fences_before)
        .map(|(n, before)| {
            let after = WatchdogFiles::new(&n.dir).fence_log().len();
            (n.name.clone(), after - before)
        })
        .collect();
    eprintln!(
        "faults: nodes Ready after the etcd leader's death; instances fenced meanwhile: {fenced:?}"
    );
    let compute = h.compute();
    let mut all_ids: Vec<String> = ids.to_vec();
    all_ids.extend(created);
    let listed = wait_until(
        "every instance running",
        Duration::from_secs(60),
        || async {
            let all = compute.list_instances(Default::default()).await.ok()?;
            all.iter()
                .all(|i| i.status == InstanceStatus::Running && i.node.is_some())
                .then_some(all)
        },
    )
    .await;
    let mut listed_ids: Vec<String> = listed.iter().map(|i| i.id.clone()).collect();
    listed_ids.sort();
    let mut expected = all_ids.clone();
    expected.sort();
    assert_eq!(listed_ids, expected, "nothing lost, nothing duplicated");
    let mut names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), listed.len(), "one instance per name");
    h.check_never_twice(&all_ids);
    eprintln!(
        "faults: after the etcd leader's death: {} instances running, nodes Ready",
        listed.len()
    );
}
