//! The controller end to end over the real embedded store and scheduler,
//! with hand-written fake drivers standing in for the runtimes (the drivers
//! themselves are tested against their real runtimes in zixiao-drivers).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use zixiao_core::controller::ControllerOptions;
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, DesiredState, ErrorKind, EventKind, InstanceFilter, InstanceSpec,
    InstanceStatus, InstanceType, LocalAgent, NodeRegistration, NodeStatus, Resources,
    RestartPolicy, RuntimeState,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::clock::ManualClock;
use zixiao_testing::fake_driver::{Failure, FakeDriver, Op};

struct Cluster {
    controller: Controller,
    drivers: Vec<Arc<FakeDriver>>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn host(cpus: u32, memory_mib: u64) -> HostFacts {
    HostFacts {
        hostname: "test-host".into(),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(cpus),
            memory_mib,
            disk_gib: 100,
            instances: 64,
        },
    }
}

/// A controller with one node per `(id, cpus, memory)`, each running containers on a fake driver.
async fn cluster(nodes: &[(&str, u32, u64)]) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("open store");
    cluster_on(Arc::new(store), nodes, dir).await
}

async fn cluster_on(
    store: Arc<EmbeddedStore>,
    nodes: &[(&str, u32, u64)],
    dir: tempfile::TempDir,
) -> Cluster {
    let clock = Arc::new(ManualClock::default());
    let mut builder = Controller::builder(store, Arc::new(PluginScheduler::default()))
        .clock(clock.clone())
        .options(ControllerOptions::default());
    let mut drivers = Vec::new();
    let mut registrations = Vec::new();
    for (id, cpus, memory) in nodes {
        let driver = Arc::new(FakeDriver::new(InstanceType::Container));
        let agent = Arc::new(
            LocalAgent::new(host(*cpus, *memory))
                .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
                .with_driver(driver.clone()),
        );
        registrations.push(NodeRegistration {
            address: format!("{id}:50052"),
            ..agent.registration(*id)
        });
        builder = builder.agent(*id, agent);
        drivers.push(driver);
    }
    let controller = builder.build();
    for registration in registrations {
        controller
            .register_node(registration)
            .await
            .expect("register");
    }
    Cluster {
        controller,
        drivers,
        clock,
        _dir: dir,
    }
}

fn container(name: &str, cpus: u32, memory_mib: u64) -> CreateInstance {
    CreateInstance::new(
        name,
        InstanceSpec::container("busybox").with_size(cpus, memory_mib),
    )
}

async fn run(c: &Controller, request: CreateInstance) -> zixiao_core::Instance {
    let created = c.create_instance(request).await.expect("create");
    c.converge(&created.id)
        .await
        .expect("converge")
        .expect("exists")
}

#[tokio::test]
async fn create_runs_the_instance_and_delete_releases_everything() {
    let cl = cluster(&[("node-a", 4, 4096)]).await;
    let c = &cl.controller;
    let web = run(c, container("web", 2, 1024)).await;
    assert_eq!(web.status, InstanceStatus::Running);
    assert_eq!(web.node.as_deref(), Some("node-a"));
    assert_eq!(cl.drivers[0].state_of(&web.id), RuntimeState::Running);
    let node = c.get_node("node-a").await.expect("node");
    assert_eq!(
        node.allocated,
        Resources {
            cpus: zixiao_core::Cpus::cores(2),
            memory_mib: 1024,
            disk_gib: 0,
            instances: 1
        }
    );

    // Addressed by name as well as by id.
    assert_eq!(c.get_instance("web").await.expect("by name").id, web.id);

    c.delete_instance("web").await.expect("delete");
    assert!(c
        .converge(&web.id)
        .await
        .expect("converge delete")
        .is_none());
    assert!(cl.drivers[0].is_empty(), "the runtime still holds it");
    assert_eq!(
        c.get_node("node-a").await.expect("node").allocated,
        Resources::default()
    );
    assert_eq!(
        c.get_instance("web").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The name is free again.
    run(c, container("web", 1, 64)).await;
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let cl = cluster(&[("node-a", 4, 4096)]).await;
    let c = &cl.controller;
    run(c, container("web", 1, 64)).await;

    let dup = c
        .create_instance(container("web", 1, 64))
        .await
        .unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
    assert_eq!(dup.to_string(), "instance `web` already exists");

    let invalid = c
        .create_instance(container("web-2", 0, 64))
        .await
        .unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::InvalidArgument);
    assert!(invalid.to_string().contains("spec.cpus"), "{invalid}");

    let microvm = CreateInstance::new("m", InstanceSpec::microvm("/boot/vmlinux"));
    let unsupported = c.create_instance(microvm).await.unwrap_err();
    assert_eq!(unsupported.kind(), ErrorKind::Unsupported);
    assert!(
        unsupported
            .to_string()
            .contains("no node can run microvm instances"),
        "{unsupported}"
    );
    assert!(
        unsupported.to_string().contains("node `node-a`"),
        "{unsupported}"
    );

    let all = c
        .list_instances(&InstanceFilter::default())
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["web"]
    );
    assert_eq!(
        c.get_node("node-a")
            .await
            .expect("node")
            .allocated
            .instances,
        1
    );
}

#[tokio::test]
async fn an_instance_that_fits_nowhere_stays_pending_with_the_reason() {
    let cl = cluster(&[("node-a", 2, 2048)]).await;
    let c = &cl.controller;
    let big = run(c, container("big", 1, 4096)).await;
    assert_eq!(big.status, InstanceStatus::Pending);
    assert!(big.node.is_none());
    let reason = big.problem().expect("a reason");
    assert!(reason.contains("1 node"), "{reason}");
    assert!(reason.contains("memory"), "{reason}");
    assert_eq!(
        c.get_node("node-a").await.expect("node").allocated,
        Resources::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_creates_never_over_commit_a_node() {
    let cl = cluster(&[("node-a", 8, 65536), ("node-b", 4, 65536)]).await;
    let c = cl.controller.clone();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { run(&c, container(&format!("w{i}"), 1, 64)).await })
        })
        .collect();
    let mut running = 0;
    for task in tasks {
        if task.await.expect("join").status == InstanceStatus::Running {
            running += 1;
        }
    }
    assert_eq!(running, 12, "exactly the 12 cores of the cluster are used");
    for (id, cpus) in [("node-a", 8), ("node-b", 4)] {
        let node = c.get_node(id).await.expect("node");
        assert_eq!(node.allocated.cpus, zixiao_core::Cpus::cores(cpus), "{id}");
        let placed = c
            .list_instances(&InstanceFilter {
                node: Some(id.into()),
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(
            placed.len() as u32,
            cpus,
            "allocation matches the instances placed on {id}"
        );
    }
    let pending = c
        .list_instances(&InstanceFilter {
            status: Some(InstanceStatus::Pending),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(pending.len(), 28);
}

#[tokio::test]
async fn stop_start_and_restart_reach_the_runtime() {
    let cl = cluster(&[("node-a", 4, 4096)]).await;
    let (c, driver) = (&cl.controller, &cl.drivers[0]);
    let web = run(c, container("web", 1, 64)).await;

    c.stop_instance("web").await.expect("stop");
    let stopped = c.converge("web").await.expect("converge").expect("exists");
    assert_eq!(stopped.status, InstanceStatus::Stopped);
    assert!(matches!(
        driver.state_of(&web.id),
        RuntimeState::Exited { .. }
    ));
    let node = c.get_node("node-a").await.expect("node");
    assert_eq!(
        (node.allocated.cpus, node.allocated.memory_mib),
        (zixiao_core::Cpus::ZERO, 0),
        "a stopped instance still holds CPU or memory"
    );
    assert_eq!(
        node.allocated.instances, 1,
        "a stopped instance keeps its place"
    );

    c.start_instance("web").await.expect("start");
    let started = c.converge("web").await.expect("converge").expect("exists");
    assert_eq!(started.status, InstanceStatus::Running);
    assert_eq!(driver.state_of(&web.id), RuntimeState::Running);

    let stops_before = driver
        .calls()
        .iter()
        .filter(|(op, _)| *op == Op::Stop)
        .count();
    c.restart_instance("web").await.expect("restart");
    let restarted = c.converge("web").await.expect("converge").expect("exists");
    assert_eq!(restarted.status, InstanceStatus::Running);
    assert!(restarted.has_converged());
    let stops_after = driver
        .calls()
        .iter()
        .filter(|(op, _)| *op == Op::Stop)
        .count();
    assert_eq!(stops_after, stops_before + 1, "restart stopped it once");

    c.stop_instance("web").await.expect("stop");
    c.converge("web").await.expect("converge");
    let err = c.resume_instance("web").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string()
            .contains("only a paused instance can be resumed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_workload_that_exits_is_recorded_and_the_restart_policy_applies() {
    let cl = cluster(&[("node-a", 4, 4096)]).await;
    let (c, driver) = (&cl.controller, &cl.drivers[0]);

    let once = run(c, container("once", 1, 64)).await;
    driver.exit(&once.id, 0, false);
    let done = c.converge("once").await.expect("converge").expect("exists");
    assert_eq!(done.status, InstanceStatus::Stopped);
    assert_eq!(
        done.desired,
        DesiredState::Stopped,
        "ran to completion; nothing restarts it"
    );
    assert_eq!(done.exit.as_ref().map(|e| e.code), Some(0));
    assert!(done.has_converged());

    // A delete asked for after an unobserved exit still deletes.
    let gone = run(c, container("gone", 1, 64)).await;
    driver.exit(&gone.id, 0, false);
    c.delete_instance("gone").await.expect("delete");
    assert!(
        c.converge(&gone.id).await.expect("converge").is_none(),
        "deleted"
    );
    assert_eq!(driver.state_of(&gone.id), RuntimeState::Missing);

    let mut request = container("always", 1, 64);
    request.spec.restart = RestartPolicy::Always;
    let always = run(c, request).await;
    driver.exit(&always.id, 137, true);
    let crashed = c
        .converge("always")
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(crashed.status, InstanceStatus::Failed);
    assert!(crashed.exit.as_ref().is_some_and(|e| e.oom_killed));
    assert!(crashed.conditions.iter().any(|c| c.reason == "OomKilled"));
    // The back-off holds the restart until its time has come.
    cl.clock.advance(Duration::from_secs(2));
    let back = c
        .converge("always")
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(back.status, InstanceStatus::Running);
    assert_eq!(back.restarts_done, 1);
    assert_eq!(driver.state_of(&always.id), RuntimeState::Running);
}

#[tokio::test]
async fn runtime_failures_are_recorded_and_recoverable() {
    let cl = cluster(&[("node-a", 4, 4096)]).await;
    let (c, driver) = (&cl.controller, &cl.drivers[0]);

    driver.fail(Op::Create, Failure::NotFound);
    let failed = run(c, container("web", 1, 64)).await;
    assert_eq!(failed.status, InstanceStatus::Failed);
    let reason = failed.problem().expect("a reason");
    assert!(reason.contains("image `busybox` not found"), "{reason}");

    driver.heal();
    c.start_instance("web").await.expect("start");
    let running = c.converge("web").await.expect("converge").expect("exists");
    assert_eq!(running.status, InstanceStatus::Running);

    // An unreachable runtime leaves the state for the next converge.
    driver.fail(Op::Stop, Failure::Unavailable);
    c.stop_instance("web").await.expect("stop");
    let err = c.converge("web").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        c.get_instance("web").await.expect("get").status,
        InstanceStatus::Stopping
    );
    driver.heal();
    let stopped = c.converge("web").await.expect("converge").expect("exists");
    assert_eq!(stopped.status, InstanceStatus::Stopped);
}

#[tokio::test]
async fn intent_survives_a_restart_of_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let id = {
        let store = Arc::new(EmbeddedStore::open(&path).expect("open"));
        let cl = cluster_on(
            store,
            &[("node-a", 4, 4096)],
            tempfile::tempdir().expect("tmp"),
        )
        .await;
        cl.drivers[0].fail(Op::Start, Failure::Unavailable);
        let created = cl
            .controller
            .create_instance(container("web", 1, 64))
            .await
            .expect("create");
        assert_eq!(
            cl.controller.converge("web").await.unwrap_err().kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            cl.controller.get_instance("web").await.expect("get").status,
            InstanceStatus::Creating
        );
        created.id
    };
    // A new controller over the same store carries on where the last one stopped.
    let store = Arc::new(EmbeddedStore::open(&path).expect("reopen"));
    let cl = cluster_on(store, &[("node-a", 4, 4096)], dir).await;
    let web = cl
        .controller
        .converge("web")
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(web.id, id);
    assert_eq!(web.status, InstanceStatus::Running);
    assert_eq!(
        cl.controller
            .get_node("node-a")
            .await
            .expect("node")
            .allocated
            .cpus,
        zixiao_core::Cpus::cores(1)
    );
}

/// Two nodes, and on node-a (node-b was cordoned meanwhile) an instance
/// that restarts (`movable`) and one that does not (`fixed`).
async fn movable_and_fixed_on_node_a() -> (Cluster, zixiao_core::Instance, zixiao_core::Instance) {
    let cl = cluster(&[("node-a", 4, 4096), ("node-b", 4, 4096)]).await;
    let c = &cl.controller;
    c.cordon_node("node-b").await.expect("cordon");
    let mut movable = container("movable", 1, 64);
    movable.spec.restart = RestartPolicy::Always;
    let movable = run(c, movable).await;
    let fixed = run(c, container("fixed", 1, 64)).await;
    c.uncordon_node("node-b").await.expect("uncordon");
    (cl, movable, fixed)
}

#[tokio::test]
async fn drain_moves_what_restarts_and_stops_the_rest() {
    let (cl, movable, fixed) = movable_and_fixed_on_node_a().await;
    let c = &cl.controller;
    assert_eq!(
        movable.node.as_deref(),
        Some("node-a"),
        "node-b was cordoned"
    );

    let report = c.drain_node("node-a").await.expect("drain");
    assert_eq!(report.moved, ["movable"]);
    assert_eq!(report.stopped, ["fixed"]);
    // Containers restart elsewhere: no migration is tried for them.
    assert!(report.migrated.is_empty(), "{report:?}");
    assert!(report.not_migrated.is_empty(), "{report:?}");
    assert_eq!(report.status, Some(NodeStatus::Cordoned));

    let moved = c.get_instance("movable").await.expect("get");
    assert_eq!(moved.node.as_deref(), Some("node-b"));
    assert_eq!(moved.status, InstanceStatus::Running);
    assert_eq!(cl.drivers[0].state_of(&movable.id), RuntimeState::Missing);
    assert_eq!(cl.drivers[1].state_of(&movable.id), RuntimeState::Running);
    assert_eq!(
        c.get_instance("fixed").await.expect("get").status,
        InstanceStatus::Stopped
    );
    let a = c.get_node("node-a").await.expect("node");
    assert_eq!(
        (a.allocated.cpus, a.allocated.instances),
        (zixiao_core::Cpus::ZERO, 1),
        "the stopped instance keeps its place on node-a, not its CPU"
    );
    assert_eq!(
        c.get_node("node-b").await.expect("node").allocated.cpus,
        zixiao_core::Cpus::cores(1)
    );
    let _ = fixed;

    // A cordoned node takes nothing new; maintenance needs ending first.
    let pending = run(c, container("big", 4, 64)).await;
    assert_eq!(pending.status, InstanceStatus::Pending);
    c.set_maintenance("node-a", true)
        .await
        .expect("maintenance on");
    let err = c.uncordon_node("node-a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let report = c
        .set_maintenance("node-a", false)
        .await
        .expect("maintenance off");
    assert_eq!(report.status, Some(NodeStatus::Ready));
    let err = c.deregister_node("node-b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[tokio::test]
async fn a_decommissioned_node_is_emptied_takes_nothing_and_is_deleted_once_empty() {
    let (cl, movable, fixed) = movable_and_fixed_on_node_a().await;
    let c = &cl.controller;
    c.set_maintenance("node-a", true)
        .await
        .expect("maintenance on");

    // From maintenance too: what restarts elsewhere has already moved,
    // what stayed is stopped; the node ends retired, offering nothing.
    let report = c.decommission_node("node-a").await.expect("decommission");
    assert_eq!(report.status, Some(NodeStatus::Decommissioned));
    let a = c.get_node("node-a").await.expect("node");
    assert_eq!(a.status, NodeStatus::Decommissioned);
    assert!(a.runtimes.is_empty(), "{:?}", a.runtimes);
    assert!(
        a.missing_runtimes[&InstanceType::Container].contains("decommissioned"),
        "{:?}",
        a.missing_runtimes
    );
    let moved = c.get_instance("movable").await.expect("get");
    assert_eq!(moved.node.as_deref(), Some("node-b"));
    assert_eq!(cl.drivers[1].state_of(&movable.id), RuntimeState::Running);
    let stayed = c.get_instance("fixed").await.expect("get");
    assert_eq!(stayed.status, InstanceStatus::Stopped);
    assert_ne!(cl.drivers[0].state_of(&fixed.id), RuntimeState::Running);

    // Its agent registering again (with a runtime) does not bring it back.
    let again = LocalAgent::new(host(4, 4096))
        .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
        .with_driver(Arc::new(FakeDriver::new(InstanceType::Container)))
        .registration("node-a");
    let again = c.register_node(again).await.expect("register");
    assert_eq!(again.status, NodeStatus::Decommissioned);
    assert!(again.runtimes.is_empty(), "{:?}", again.runtimes);
    // Nothing new lands there, and what stayed cannot start there again.
    c.cordon_node("node-b").await.expect("cordon b");
    let pending = run(c, container("new", 1, 64)).await;
    assert_eq!(pending.status, InstanceStatus::Pending);
    assert_eq!(pending.node, None);
    for refused in [
        c.start_instance("fixed").await.unwrap_err(),
        c.restart_instance("fixed").await.unwrap_err(),
    ] {
        assert_eq!(refused.kind(), ErrorKind::FailedPrecondition);
        assert!(refused.to_string().contains("decommissioned"), "{refused}");
    }
    let stayed = c.get_instance("fixed").await.expect("get");
    assert_eq!(stayed.desired, DesiredState::Stopped, "nothing changed");
    assert_ne!(cl.drivers[0].state_of(&fixed.id), RuntimeState::Running);
    // Other transitions are refused; a second decommission is a no-op.
    let err = c.uncordon_node("node-a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let err = c.set_maintenance("node-a", false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let second = c.decommission_node("node-a").await.expect("again");
    assert_eq!(second.status, Some(NodeStatus::Decommissioned));
    assert!(second.moved.is_empty(), "{second:?}");

    // Deleting the record waits for what stayed, and names it.
    let err = c.deregister_node("node-a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("fixed"), "{err}");
    c.delete_instance("fixed")
        .await
        .expect("delete what stayed");
    c.converge(&fixed.id).await.expect("converge delete");
    c.deregister_node("node-a").await.expect("deregister");
    assert_eq!(
        c.get_node("node-a").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The machine may join again, as a new node.
    let fresh = LocalAgent::new(host(4, 4096))
        .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
        .with_driver(Arc::new(FakeDriver::new(InstanceType::Container)))
        .registration("node-a");
    let fresh = c.register_node(fresh).await.expect("register anew");
    assert_eq!(fresh.status, NodeStatus::Ready);
    assert!(fresh.runtimes.contains(&InstanceType::Container));
}

#[tokio::test]
async fn a_failed_node_moves_its_instances_and_comes_back_with_what_it_registered() {
    let (cl, movable, fixed) = movable_and_fixed_on_node_a().await;
    let c = &cl.controller;

    let report = c.fail_node("node-a", "lease expired").await.expect("fail");
    assert_eq!(report.moved, ["movable"]);
    assert_eq!(report.failed, ["fixed"]);
    let stale = c.get_node("node-a").await.expect("node");
    assert_eq!(stale.status, NodeStatus::NotReady);
    assert_eq!(
        c.get_instance("fixed").await.expect("get").status,
        InstanceStatus::Failed
    );
    let moved = c
        .converge(&movable.id)
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(moved.node.as_deref(), Some("node-b"));
    assert_eq!(moved.status, InstanceStatus::Running);

    // The agent registers again from a new address while the failure
    // detector still holds the NotReady record it read before.
    let mut again = LocalAgent::new(host(4, 4096))
        .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
        .registration("node-a");
    again.address = "node-a:60000".into();
    c.register_node(again).await.expect("register");
    c.fail_node("node-a", "lease expired")
        .await
        .expect("fail again");
    let back = c.node_returned(&stale.id).await.expect("returned");
    assert_eq!(back.status, NodeStatus::Ready);
    assert_eq!(
        back.address, "node-a:60000",
        "the newer registration is kept"
    );
    // A node that is Ready (or cordoned) is left as it is.
    c.cordon_node("node-a").await.expect("cordon");
    let cordoned = c.node_returned("node-a").await.expect("returned");
    assert_eq!(cordoned.status, NodeStatus::Cordoned);
    let err = c.node_returned("node-z").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let _ = fixed;
}

#[tokio::test]
async fn watch_streams_every_change_in_order() {
    let cl = cluster(&[("node-a", 4, 4096)]).await;
    let c = &cl.controller;
    let from = c.current_revision().await.expect("revision");
    let mut events = c.watch_instances(from).await.expect("watch");
    let web = run(c, container("web", 1, 64)).await;
    c.delete_instance("web").await.expect("delete");
    c.converge(&web.id).await.expect("converge");

    let mut kinds = Vec::new();
    let mut statuses = BTreeSet::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        let event = event.expect("event");
        assert_eq!(event.id, web.id);
        if let Some(i) = &event.instance {
            statuses.insert(i.status);
        }
        kinds.push(event.kind);
        if event.kind == EventKind::Deleted {
            break;
        }
    }
    assert_eq!(kinds.first(), Some(&EventKind::Added));
    assert_eq!(kinds.last(), Some(&EventKind::Deleted));
    // A create is stored placed: its first state is scheduled, not pending.
    assert!(!statuses.contains(&InstanceStatus::Pending), "{statuses:?}");
    for status in [
        InstanceStatus::Scheduled,
        InstanceStatus::Creating,
        InstanceStatus::Running,
        InstanceStatus::Deleting,
    ] {
        assert!(statuses.contains(&status), "saw {statuses:?}");
    }
}

#[tokio::test]
async fn cluster_info_adds_everything_up() {
    let cl = cluster(&[("node-a", 4, 4096), ("node-b", 2, 2048)]).await;
    let c = &cl.controller;
    run(c, container("a", 1, 512)).await;
    run(c, container("too-big", 8, 512)).await;
    c.cordon_node("node-b").await.expect("cordon");
    let info = c.cluster_info().await.expect("info");
    assert_eq!(info.nodes, 2);
    assert_eq!(info.nodes_by_status.get(&NodeStatus::Ready), Some(&1));
    assert_eq!(info.nodes_by_status.get(&NodeStatus::Cordoned), Some(&1));
    assert_eq!(info.instances, 2);
    let containers = &info.instances_by_type[&InstanceType::Container];
    assert_eq!(containers.get(&InstanceStatus::Running), Some(&1));
    assert_eq!(containers.get(&InstanceStatus::Pending), Some(&1));
    assert_eq!(info.capacity.cpus, zixiao_core::Cpus::cores(6));
    assert_eq!(info.allocated.cpus, zixiao_core::Cpus::cores(1));
    assert_eq!(info.allocated.memory_mib, 512);
}

#[tokio::test]
async fn anti_affinity_groups_keep_members_apart() {
    use zixiao_core::scheduler::{GroupPolicy, GroupRule, GroupScope};
    let cl = cluster(&[("node-a", 4, 4096), ("node-b", 4, 4096)]).await;
    let c = &cl.controller;
    let member = |name: &str| {
        let mut request = container(name, 1, 64);
        request.spec.placement.groups = vec![GroupRule {
            name: "db".into(),
            policy: GroupPolicy::AntiAffinity,
            scope: GroupScope::Node,
        }];
        request
    };
    let first = run(c, member("db-1")).await;
    let second = run(c, member("db-2")).await;
    assert_eq!(first.status, InstanceStatus::Running);
    assert_eq!(second.status, InstanceStatus::Running);
    assert_ne!(
        first.node, second.node,
        "bin-packing alone would stack them"
    );
    let third = run(c, member("db-3")).await;
    assert_eq!(third.status, InstanceStatus::Pending);
    let reason = third.problem().expect("a reason");
    assert!(reason.contains("2 nodes"), "{reason}");
    assert!(reason.contains("db"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_converges_of_one_instance_reach_the_runtime_once() {
    let cl = cluster(&[("node-a", 4, 4096)]).await;
    let (c, driver) = (&cl.controller, &cl.drivers[0]);
    // A runtime call takes a while, as containerd's and QEMU's do, so two
    // converges that both acted would overlap on it.
    driver.set_delay(Duration::from_millis(20));
    let created = c
        .create_instance(container("web", 1, 64))
        .await
        .expect("create");
    let converges: Vec<_> = (0..8)
        .map(|_| {
            let (c, id) = (c.clone(), created.id.clone());
            tokio::spawn(async move { c.converge(&id).await })
        })
        .collect();
    for converge in converges {
        let after = converge.await.expect("task").expect("converge");
        assert_eq!(after.expect("exists").status, InstanceStatus::Running);
    }
    assert_eq!(
        driver.overlaps(),
        0,
        "two runtime calls for one instance overlapped"
    );
    assert_eq!(
        driver.count(Op::Create, &created.id),
        1,
        "{:?}",
        driver.calls()
    );
    assert_eq!(
        driver.count(Op::Start, &created.id),
        1,
        "{:?}",
        driver.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_serializes_runtime_calls_for_one_instance_whoever_calls() {
    // Two servers (an old leader and its successor, say) calling the same
    // node at once: the node's agent lets one call per instance through.
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    driver.set_delay(Duration::from_millis(20));
    let agent = LocalAgent::new(host(4, 4096))
        .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
        .with_driver(driver.clone());
    let node_driver =
        zixiao_core::NodeAgent::driver(&agent, InstanceType::Container).expect("driver");
    let web =
        zixiao_testing::fake_driver::placed_instance("web", InstanceSpec::container("busybox"));
    let db = zixiao_testing::fake_driver::placed_instance("db", InstanceSpec::container("busybox"));
    let mut calls = Vec::new();
    for instance in [&web, &web, &web, &db, &db] {
        let (d, i) = (node_driver.clone(), instance.clone());
        calls.push(tokio::spawn(async move {
            d.create(&i).await?;
            d.start(&i).await
        }));
    }
    let started = std::time::Instant::now();
    for call in calls {
        call.await.expect("task").expect("call");
    }
    assert_eq!(driver.overlaps(), 0, "calls for one instance overlapped");
    assert_eq!(driver.state_of(&web.id), RuntimeState::Running);
    // Different instances did not wait for each other: web's six calls
    // and db's four ran side by side (sequentially: ten delays).
    assert!(
        started.elapsed() < Duration::from_millis(20 * 10),
        "different instances were serialized too: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_failed_create_is_retried_after_a_back_off_when_the_policy_restarts() {
    let cl = cluster(&[("node-a", 4, 4096)]).await;
    let (c, driver, clock) = (&cl.controller, &cl.drivers[0], &cl.clock);
    driver.fail(Op::Create, Failure::NotFound);
    let mut always = container("always", 1, 64);
    always.spec.restart = RestartPolicy::Always;
    let failed = run(c, always).await;
    assert_eq!(failed.status, InstanceStatus::Failed);
    let failure = failed.failure.clone().expect("the failure is counted");
    assert_eq!(failure.attempts, 1);
    assert!(
        failed.problem().expect("reason").contains("not found"),
        "{:?}",
        failed.conditions
    );
    let never = run(c, container("never", 1, 64)).await;
    assert_eq!(never.status, InstanceStatus::Failed);

    // Within the back-off nothing is tried again.
    let again = c
        .converge("always")
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(again.status, InstanceStatus::Failed);
    assert_eq!(driver.count(Op::Create, &failed.id), 1);

    // After it, the create is tried again: failing again doubles the wait.
    clock.advance(Duration::from_secs(1));
    let again = c
        .converge("always")
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(again.failure.expect("counted").attempts, 2);
    assert_eq!(driver.count(Op::Create, &failed.id), 2);
    clock.advance(Duration::from_secs(1));
    c.converge("always").await.expect("converge");
    assert_eq!(
        driver.count(Op::Create, &failed.id),
        2,
        "retried within 2 s"
    );

    // The runtime heals: the next retry runs it and forgets the failures.
    driver.heal();
    clock.advance(Duration::from_secs(1));
    let running = c
        .converge("always")
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(running.status, InstanceStatus::Running);
    assert!(running.failure.is_none());

    // Restart policy `never`: a person must act.
    clock.advance(Duration::from_secs(600));
    let still = c
        .converge("never")
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(still.status, InstanceStatus::Failed);
    assert_eq!(driver.count(Op::Create, &never.id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_background_controller_waits_for_its_converger_and_never_converges_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    let agent = Arc::new(
        LocalAgent::new(host(2, 4096))
            .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
            .with_driver(driver.clone()),
    );
    let controller = Controller::builder(store, Arc::new(PluginScheduler::default()))
        .agent("node-a", agent.clone())
        .convergence(zixiao_core::controller::Convergence::Background)
        .build();
    controller
        .register_node(agent.registration("node-a"))
        .await
        .expect("register");
    let created = controller
        .create_instance(container("web", 1, 64))
        .await
        .expect("create");
    // Nothing converges it yet: settling waits (and touches no runtime).
    let waiting = {
        let c = controller.clone();
        let id = created.id.clone();
        tokio::spawn(async move { c.settle(&id).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "settle returned with nothing converging"
    );
    assert!(
        driver.calls().is_empty(),
        "settle called the runtime itself"
    );
    // The background converger (a server's leader) does the work.
    controller.converge(&created.id).await.expect("converge");
    let settled = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("settle returned")
        .expect("task")
        .expect("settle")
        .expect("exists");
    assert_eq!(settled.status, InstanceStatus::Running);

    // An instance that fits nowhere settles as pending with its reason.
    let huge = controller
        .create_instance(container("huge", 64, 64))
        .await
        .expect("create");
    let waiting = {
        let c = controller.clone();
        let id = huge.id.clone();
        tokio::spawn(async move { c.settle(&id).await })
    };
    controller.converge(&huge.id).await.expect("converge");
    let pending = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("settle returned")
        .expect("task")
        .expect("settle")
        .expect("exists");
    assert_eq!(pending.status, InstanceStatus::Pending);
    assert!(pending.problem().is_some());
}

#[tokio::test]
async fn a_stopped_instance_gives_its_cpu_back_and_waits_for_room_to_start_again() {
    let cl = cluster(&[("node-a", 2, 4096)]).await;
    let c = &cl.controller;
    run(c, container("web", 1, 64)).await;
    c.stop_instance("web").await.expect("stop");
    let stopped = c.converge("web").await.expect("converge").expect("exists");
    assert!(!stopped.compute_reserved);
    // Its core went back: two more instances fit on the 2-core node.
    let db = run(c, container("db", 1, 64)).await;
    let api = run(c, container("api", 1, 64)).await;
    assert_eq!(
        (db.status, api.status),
        (InstanceStatus::Running, InstanceStatus::Running)
    );

    // Starting it again waits for room, naming who holds the node.
    c.start_instance("web").await.expect("start");
    let waiting = c.converge("web").await.expect("converge").expect("exists");
    assert_eq!(waiting.status, InstanceStatus::Stopped);
    assert!(
        c.is_settled(&waiting),
        "a start without room must settle, waiting"
    );
    let why = waiting.problem().expect("a reason");
    assert!(
        why.contains("node-a") && why.contains("api") && why.contains("db"),
        "{why}"
    );
    assert_eq!(
        c.get_node("node-a").await.expect("node").allocated.cpus,
        zixiao_core::Cpus::cores(2)
    );

    // Room again: it starts.
    c.delete_instance("db").await.expect("delete");
    c.converge("db").await.expect("converge");
    let running = c.converge("web").await.expect("converge").expect("exists");
    assert_eq!(running.status, InstanceStatus::Running);
    assert!(running.compute_reserved);
    assert_eq!(
        c.get_node("node-a").await.expect("node").allocated.cpus,
        zixiao_core::Cpus::cores(2)
    );

    // A failed create with restart `never` gives its CPU back as well.
    c.delete_instance("api").await.expect("delete");
    c.converge("api").await.expect("converge");
    cl.drivers[0].fail(Op::Create, Failure::NotFound);
    let failed = run(c, container("broken", 1, 64)).await;
    assert_eq!(failed.status, InstanceStatus::Failed);
    assert!(!failed.compute_reserved);
    assert_eq!(
        c.get_node("node-a").await.expect("node").allocated.cpus,
        zixiao_core::Cpus::cores(1)
    );
}

/// Telemetry that writes down each event it gets.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.0.lock().expect("events").clone()
    }
}

impl zixiao_core::telemetry::Telemetry for Recorder {
    fn placement(&self, outcome: zixiao_core::telemetry::PlacementOutcome<'_>, _: Duration) {
        let event = match outcome {
            zixiao_core::telemetry::PlacementOutcome::Placed => "placed".to_owned(),
            zixiao_core::telemetry::PlacementOutcome::Unschedulable(rejections) => {
                let filters: Vec<&str> = rejections.iter().map(|r| r.filter.as_str()).collect();
                format!("unschedulable {}", filters.join(","))
            }
        };
        self.0.lock().expect("events").push(event);
    }

    fn converge(&self, ok: bool, _: Duration) {
        self.0
            .lock()
            .expect("events")
            .push(format!("converge ok={ok}"));
    }

    fn failover(&self, instances: usize, _: Duration) {
        self.0
            .lock()
            .expect("events")
            .push(format!("failover {instances}"));
    }

    fn store_commit(&self, ok: bool, _: Duration) {
        self.0
            .lock()
            .expect("events")
            .push(format!("commit ok={ok}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_reports_placements_converges_commits_and_failovers() {
    let (cl, _, _) = movable_and_fixed_on_node_a().await;
    let c = &cl.controller;
    let recorder = Arc::new(Recorder::default());
    c.set_telemetry(recorder.clone());
    run(c, container("small", 1, 256)).await;
    run(c, container("huge", 1, 1 << 20)).await;
    let events = recorder.events();
    let count = |event: &str| events.iter().filter(|e| *e == event).count();
    assert_eq!(count("placed"), 1, "{events:?}");
    // Each scheduler answer counts: the create's, and its converge's retry.
    assert!(count("unschedulable resources") >= 1, "{events:?}");
    assert_eq!(count("converge ok=true"), 2, "{events:?}");
    assert!(count("commit ok=true") >= 2, "{events:?}");
    // A create refused for its name never reached the scheduler.
    let taken = c.create_instance(container("small", 1, 256)).await;
    assert_eq!(taken.unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(count("placed"), 1, "{events:?}");
    let on_a = zixiao_core::InstanceFilter {
        node: Some("node-a".to_owned()),
        ..Default::default()
    };
    let lost = c.list_instances(&on_a).await.expect("instances").len();
    c.fail_node("node-a", "lease expired").await.expect("fail");
    let events = recorder.events();
    assert_eq!(
        events.last(),
        Some(&format!("failover {lost}")),
        "{events:?}"
    );
}

/// Records, as a live migration's `placing` step does, that `instance`
/// is migrating live to node `target`, with its room held there.
async fn mark_live_migration(store: &EmbeddedStore, instance: &str, target: &str) {
    use zixiao_core::store::{put_object, StoreExt, Txn};
    use zixiao_core::{Node, Store};
    let mut found: zixiao_core::Instance = store
        .get_object(instance)
        .await
        .expect("get")
        .expect("instance");
    let mut node: Node = store.get_object(target).await.expect("get").expect("node");
    node.allocated = node.allocated.saturating_add(&found.spec.resources());
    found.migrate_to = Some(target.to_owned());
    store
        .commit(put_object(put_object(Txn::new(), &node), &found))
        .await
        .expect("commit");
}

/// A server that stopped in the middle of live migrations leaves each
/// instance recorded as migrating, with no one to end it; once its
/// operation is no longer running, the operations' follower ends it as the
/// runtime left it: switched to the target where the instance runs there
/// (the copy had finished), undone where it does not (the source kept it),
/// and left alone while a running operation still carries it. Each node's
/// allocation follows, and a second round changes nothing.
#[tokio::test]
async fn live_migrations_whose_server_stopped_end_as_the_runtime_left_them() {
    use zixiao_core::model::{Operation, OperationKind, OperationTarget};
    use zixiao_core::store::{put_object, Txn};
    use zixiao_core::{Driver, Store};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("open"));
    let cl = cluster_on(
        store.clone(),
        &[("node-a", 4, 4096), ("node-b", 4, 4096)],
        dir,
    )
    .await;
    let c = &cl.controller;
    c.cordon_node("node-b").await.expect("cordon");
    let arrived = run(c, container("arrived", 1, 64)).await;
    let stayed = run(c, container("stayed", 1, 64)).await;
    let followed = run(c, container("followed", 1, 64)).await;
    c.uncordon_node("node-b").await.expect("uncordon");
    for instance in [&arrived, &stayed, &followed] {
        mark_live_migration(&store, &instance.id, "node-b").await;
    }
    // `followed`'s migration still runs on some server.
    let op = Operation::new(
        OperationKind::Migrate,
        OperationTarget::of_instance(&followed),
        None,
        chrono::Utc::now(),
    );
    store
        .commit(put_object(Txn::new(), &op))
        .await
        .expect("commit");
    // The runtime finished `arrived`'s copy: it runs on node-b.
    cl.drivers[1].create(&arrived).await.expect("create");
    cl.drivers[1].start(&arrived).await.expect("start");
    for name in ["arrived", "stayed", "followed"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while c
            .get_instance(name)
            .await
            .expect("get")
            .migrate_to
            .is_none()
        {
            assert!(std::time::Instant::now() < deadline, "{name} not marked");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    for round in 0..2 {
        c.operations_tick().await.expect("tick");
        let arrived = c.get_instance("arrived").await.expect("get");
        assert_eq!(arrived.node.as_deref(), Some("node-b"), "round {round}");
        assert_eq!(arrived.migrate_to, None);
        let stayed = c.get_instance("stayed").await.expect("get");
        assert_eq!(stayed.node.as_deref(), Some("node-a"), "round {round}");
        assert_eq!(stayed.migrate_to, None);
        let followed = c.get_instance("followed").await.expect("get");
        assert_eq!(followed.node.as_deref(), Some("node-a"), "round {round}");
        assert_eq!(followed.migrate_to.as_deref(), Some("node-b"));
        let a = c.get_node("node-a").await.expect("node");
        let b = c.get_node("node-b").await.expect("node");
        // node-a: stayed and followed; node-b: arrived and followed's room.
        assert_eq!(
            (a.allocated.instances, b.allocated.instances),
            (2, 2),
            "round {round}"
        );
        assert_eq!(
            b.allocated.cpus,
            zixiao_core::Cpus::cores(2),
            "round {round}"
        );
    }
}
