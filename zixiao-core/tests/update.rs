//! `instance update` through the controller, over the real embedded store
//! and scheduler, with fake drivers standing in for the runtimes: a
//! container's runtime resizes live (as containerd does), a VM's needs a
//! restart (as libvirt does). The real runtimes are tested in
//! zixiao-drivers and the CLI's tests.

use std::sync::Arc;

use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, DesiredState, ErrorKind, Instance, InstanceSpec, InstanceStatus,
    InstanceType, InstanceUpdate, LocalAgent, Resources, RestartPolicy,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::clock::ManualClock;
use zixiao_testing::fake_driver::{Failure, FakeDriver, Op};

struct Node {
    controller: Controller,
    containers: Arc<FakeDriver>,
    vms: Arc<FakeDriver>,
    _dir: tempfile::TempDir,
}

/// One node `n1` with 4 cpus and `memory_mib`, running containers and VMs.
async fn node(memory_mib: u64) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let containers = Arc::new(FakeDriver::new(InstanceType::Container));
    let vms = Arc::new(FakeDriver::new(InstanceType::Vm));
    let agent = Arc::new(
        LocalAgent::new(HostFacts {
            hostname: "n1".into(),
            capacity: Resources {
                cpus: zixiao_core::Cpus::cores(4),
                memory_mib,
                disk_gib: 100,
                instances: 16,
            },
        })
        .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
        .with_driver(containers.clone())
        .with_driver(vms.clone()),
    );
    let controller = Controller::builder(store, Arc::new(PluginScheduler::default()))
        .clock(Arc::new(ManualClock::default()))
        .agent("n1", agent.clone())
        .build();
    controller
        .register_node(agent.registration("n1"))
        .await
        .expect("register");
    Node {
        controller,
        containers,
        vms,
        _dir: dir,
    }
}

async fn running(c: &Controller, name: &str, spec: InstanceSpec) -> Instance {
    let mut request = CreateInstance::new(name, spec);
    request.labels.insert("app".into(), name.into());
    let created = c.create_instance(request).await.expect("create");
    let settled = c
        .converge(&created.id)
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(settled.status, InstanceStatus::Running);
    settled
}

fn container(cpus: u32, memory_mib: u64) -> InstanceSpec {
    InstanceSpec::container("busybox").with_size(cpus, memory_mib)
}

fn vm(cpus: u32, memory_mib: u64) -> InstanceSpec {
    InstanceSpec::vm("/images/base.qcow2").with_size(cpus, memory_mib)
}

fn resize(cpus: Option<u32>, memory_mib: Option<u64>) -> InstanceUpdate {
    InstanceUpdate {
        cpus: cpus.map(zixiao_core::Cpus::cores),
        memory_mib,
        ..InstanceUpdate::default()
    }
}

async fn allocated(c: &Controller) -> Resources {
    c.get_node("n1").await.expect("node").allocated
}

fn size(spec: &InstanceSpec) -> (u32, u64) {
    (spec.cpus.whole_cores(), spec.memory_mib)
}

#[tokio::test]
async fn a_running_container_is_resized_live_and_its_node_allocation_follows() {
    let n = node(4096).await;
    let c = &n.controller;
    let web = running(c, "web", container(1, 256)).await;
    let updated = c
        .update_instance("web", resize(Some(2), Some(1024)))
        .await
        .expect("update");
    assert_eq!(size(&updated.spec), (2, 1024));
    assert_eq!(updated.status, InstanceStatus::Running);
    assert!(updated.revision > web.revision);
    // The runtime took the new size, without a restart.
    assert_eq!(n.containers.count(Op::Resize, &web.id), 1);
    assert_eq!(n.containers.count(Op::Stop, &web.id), 0);
    assert_eq!(
        size(&n.containers.spec_of(&web.id).expect("spec")),
        (2, 1024)
    );
    let held = allocated(c).await;
    assert_eq!(
        (held.cpus, held.memory_mib),
        (zixiao_core::Cpus::cores(2), 1024)
    );
    // Shrinking gives the node its room back.
    c.update_instance("web", resize(None, Some(128)))
        .await
        .expect("shrink");
    assert_eq!(allocated(c).await.memory_mib, 128);
    assert_eq!(
        size(&n.containers.spec_of(&web.id).expect("spec")),
        (2, 128)
    );
    // The same update again stores nothing; the runtime is told the size
    // again (idempotent), which mends one a failed put-back left behind.
    let again = c
        .update_instance("web", resize(None, Some(128)))
        .await
        .expect("idempotent");
    assert_eq!(n.containers.count(Op::Resize, &web.id), 3);
    assert_eq!(
        size(&n.containers.spec_of(&web.id).expect("spec")),
        (2, 128)
    );
    assert_eq!(
        again.revision,
        c.get_instance("web").await.unwrap().revision
    );
}

#[tokio::test]
async fn labels_and_the_restart_policy_change_without_touching_the_runtime() {
    let n = node(4096).await;
    let c = &n.controller;
    let web = running(c, "web", container(1, 256)).await;
    let update = InstanceUpdate {
        set_labels: [("tier".to_owned(), "front".to_owned())].into(),
        remove_labels: ["app".to_owned()].into(),
        restart: Some(RestartPolicy::Always),
        ..InstanceUpdate::default()
    };
    let updated = c.update_instance(&web.id, update).await.expect("update");
    assert_eq!(
        updated.labels,
        [("tier".to_owned(), "front".to_owned())].into()
    );
    assert_eq!(updated.spec.restart, RestartPolicy::Always);
    let stored = c.get_instance("web").await.expect("get");
    assert_eq!(stored.labels, updated.labels);
    assert_eq!(stored.spec.restart, RestartPolicy::Always);
    assert_eq!(stored.status, InstanceStatus::Running);
    assert_eq!(n.containers.count(Op::Resize, &web.id), 0);
    assert_eq!(n.containers.count(Op::Stop, &web.id), 0);

    // A VM's labels change while it runs too: no restart needed.
    let db = running(c, "db", vm(1, 512)).await;
    let labelled = c
        .update_instance(
            "db",
            InstanceUpdate {
                set_labels: [("backup".to_owned(), "daily".to_owned())].into(),
                ..InstanceUpdate::default()
            },
        )
        .await
        .expect("label a vm");
    assert_eq!(labelled.restarts_requested, db.restarts_requested);
    assert_eq!(n.vms.count(Op::Stop, &db.id), 0);
}

#[tokio::test]
async fn bad_updates_are_refused_and_change_nothing() {
    let n = node(1024).await;
    let c = &n.controller;
    let web = running(c, "web", container(1, 256)).await;
    let before_alloc = allocated(c).await;
    let expect = |result: zixiao_core::Result<Instance>, kind: ErrorKind, part: &str| {
        let err = result.expect_err("refused");
        assert_eq!(err.kind(), kind, "{}", err.chain());
        assert!(err.to_string().contains(part), "`{err}` lacks `{part}`");
    };
    expect(
        c.update_instance("nope", resize(Some(2), None)).await,
        ErrorKind::NotFound,
        "instance `nope`",
    );
    expect(
        c.update_instance("web", resize(Some(0), None)).await,
        ErrorKind::InvalidArgument,
        "invalid cpus: must be more than 0 (a container may ask for as little as 1m)",
    );
    expect(
        c.update_instance("web", resize(None, Some(1))).await,
        ErrorKind::InvalidArgument,
        "invalid memory_mib",
    );
    expect(
        c.update_instance("web", InstanceUpdate::default()).await,
        ErrorKind::InvalidArgument,
        "invalid update: nothing to change",
    );
    // The node has 1024 MiB, 256 of them held by `web`: 768 free.
    expect(
        c.update_instance("web", resize(None, Some(2048))).await,
        ErrorKind::ResourceExhausted,
        "node `n1` has 768 MiB free, the update of `web` needs 1792 MiB more",
    );
    expect(
        c.update_instance("web", resize(Some(8), None)).await,
        ErrorKind::ResourceExhausted,
        "node `n1` has 3 cores free, the update of `web` needs 7 more",
    );
    let stored = c.get_instance("web").await.expect("get");
    assert_eq!(stored.revision, web.revision, "nothing was stored");
    assert_eq!(size(&stored.spec), (1, 256));
    assert_eq!(allocated(c).await, before_alloc);
    assert_eq!(n.containers.count(Op::Resize, &web.id), 0);

    // Deleted (being deleted): refused, nothing changed.
    c.delete_instance("web").await.expect("delete");
    let deleting = c.get_instance("web").await.expect("still there");
    expect(
        c.update_instance("web", resize(Some(2), None)).await,
        ErrorKind::FailedPrecondition,
        "is being deleted",
    );
    assert_eq!(
        c.get_instance("web").await.unwrap().revision,
        deleting.revision
    );
    c.converge(&web.id).await.expect("converge");
    expect(
        c.update_instance(&web.id, resize(Some(2), None)).await,
        ErrorKind::NotFound,
        "instance",
    );
}

#[tokio::test]
async fn a_running_vm_needs_the_flag_to_restart_with_a_new_size() {
    let n = node(4096).await;
    let c = &n.controller;
    let db = running(c, "db", vm(1, 512)).await;
    let err = c
        .update_instance("db", resize(Some(2), Some(1024)))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let message = err.to_string();
    assert!(message.contains("needs a restart"), "{message}");
    assert!(message.contains("--restart-if-needed"), "{message}");
    let stored = c.get_instance("db").await.expect("get");
    assert_eq!(stored.revision, db.revision, "nothing was stored");
    assert_eq!(allocated(c).await.memory_mib, 512);

    // With the flag: stored, and the VM restarts with the new size.
    let update = InstanceUpdate {
        restart_if_needed: true,
        ..resize(Some(2), Some(1024))
    };
    let updated = c.update_instance("db", update).await.expect("update");
    assert_eq!(updated.restarts_requested, db.restarts_done + 1);
    assert_eq!(allocated(c).await.memory_mib, 1024);
    let settled = c.converge("db").await.expect("converge").expect("exists");
    assert_eq!(settled.status, InstanceStatus::Running);
    assert_eq!(settled.restarts_done, settled.restarts_requested);
    assert_eq!(n.vms.count(Op::Stop, &db.id), 1);
    assert_eq!(size(&n.vms.spec_of(&db.id).expect("spec")), (2, 1024));
}

#[tokio::test]
async fn a_stopped_instance_takes_its_new_size_at_the_next_start() {
    let n = node(2048).await;
    let c = &n.controller;
    let db = running(c, "db", vm(1, 512)).await;
    c.stop_instance("db").await.expect("stop");
    let stopped = c.converge("db").await.expect("converge").expect("exists");
    assert_eq!(stopped.status, InstanceStatus::Stopped);
    // Stopped, it holds no compute on its node: nothing to check there.
    let updated = c
        .update_instance("db", resize(Some(2), Some(1024)))
        .await
        .expect("update a stopped vm");
    assert_eq!(updated.status, InstanceStatus::Stopped);
    assert_eq!(updated.desired, DesiredState::Stopped);
    assert_eq!(allocated(c).await.memory_mib, 0);
    c.start_instance("db").await.expect("start");
    let started = c.converge("db").await.expect("converge").expect("exists");
    assert_eq!(started.status, InstanceStatus::Running);
    assert_eq!(size(&n.vms.spec_of(&db.id).expect("spec")), (2, 1024));
    assert_eq!(allocated(c).await.memory_mib, 1024);
}

#[tokio::test]
async fn a_size_the_runtime_refuses_is_put_back() {
    let n = node(4096).await;
    let c = &n.controller;
    let web = running(c, "web", container(1, 256)).await;
    n.containers.fail(Op::Resize, Failure::Unavailable);
    let err = c
        .update_instance(
            "web",
            InstanceUpdate {
                set_labels: [("tier".to_owned(), "front".to_owned())].into(),
                ..resize(None, Some(512))
            },
        )
        .await
        .expect_err("the runtime refuses");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let stored = c.get_instance("web").await.expect("get");
    assert_eq!(size(&stored.spec), (1, 256));
    assert_eq!(stored.labels, web.labels);
    assert_eq!(allocated(c).await.memory_mib, 256);
}

#[tokio::test]
async fn a_pending_instance_is_placed_with_its_new_size() {
    let n = node(1024).await;
    let c = &n.controller;
    // Too big for the node: pending.
    let big = c
        .create_instance(CreateInstance::new("big", container(1, 2048)))
        .await
        .expect("create");
    let pending = c
        .converge(&big.id)
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(pending.status, InstanceStatus::Pending);
    c.update_instance("big", resize(None, Some(512)))
        .await
        .expect("shrink a pending instance");
    let placed = c
        .converge(&big.id)
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(placed.status, InstanceStatus::Running);
    assert_eq!(allocated(c).await.memory_mib, 512);
}

#[tokio::test]
async fn a_placed_instance_not_created_yet_is_created_with_its_new_size() {
    let n = node(4096).await;
    let c = &n.controller;
    let web = c
        .create_instance(CreateInstance::new("web", container(1, 256)))
        .await
        .expect("create");
    assert_eq!(web.status, InstanceStatus::Scheduled);
    c.update_instance("web", resize(Some(2), Some(512)))
        .await
        .expect("update before the create ran");
    assert_eq!(allocated(c).await.memory_mib, 512);
    let running = c.converge("web").await.expect("converge").expect("exists");
    assert_eq!(running.status, InstanceStatus::Running);
    assert_eq!(
        size(&n.containers.spec_of(&web.id).expect("spec")),
        (2, 512)
    );
    assert_eq!(n.containers.count(Op::Resize, &web.id), 0);
}

fn schedule(every: &str, keep: u32) -> InstanceUpdate {
    InstanceUpdate {
        snapshot_every: Some(every.parse().expect("a valid interval")),
        snapshot_keep: Some(keep.try_into().expect("a valid count")),
        ..InstanceUpdate::default()
    }
}

/// A snapshot schedule for an instance that cannot be snapshotted is
/// refused up front, naming why; so is one for an instance that does not
/// exist. Nothing is stored.
#[tokio::test]
async fn snapshot_schedules_are_refused_where_no_snapshot_can_be_taken() {
    let n = node(4096).await;
    let c = &n.controller;
    let web = running(c, "web", container(1, 128)).await;
    // Containers: the spec alone says so.
    let err = c
        .update_instance("web", schedule("1h", 24))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.to_string().contains("containers cannot be snapshotted"),
        "{err}"
    );
    // A VM whose runtime has no snapshot capability (the fake one here).
    let db = running(c, "db", vm(1, 512)).await;
    let err = c
        .update_instance("db", schedule("1h", 24))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("snapshot"), "{err}");
    for before in [&web, &db] {
        let after = c.get_instance(&before.id).await.expect("get");
        assert_eq!(after.spec.snapshot_schedule, None);
        assert_eq!(after.revision, before.revision, "{} changed", before.name);
    }
    let err = c
        .update_instance("nope", schedule("1h", 24))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // At create, too, before anything is stored.
    let mut request = CreateInstance::new("web2", container(1, 128));
    request.spec.snapshot_schedule = Some(
        zixiao_core::model::SnapshotSchedule::new(std::time::Duration::from_secs(3600), 2)
            .expect("valid"),
    );
    let err = c.create_instance(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(c.get_instance("web2").await.is_err(), "web2 was stored");
}
