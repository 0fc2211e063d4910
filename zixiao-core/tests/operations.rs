//! Operations as objects through the controller's `Api`, over the real
//! embedded store and scheduler, with fake drivers standing in for the
//! runtimes (the real ones are exercised by the CLI's tests): recorded,
//! followed to success or failure with the instance's reason, picked up
//! by the reconcilers of a controller that starts after another stopped,
//! pruned, and cancelled (or refused a cancel, changing nothing).

use std::sync::Arc;
use std::time::Duration;

use zixiao_core::api::{OperationFilter, Page};
use zixiao_core::controller::{
    ControllerOptions, Convergence, ReconcilerOptions, INTERRUPTED, OPERATION_STALE_AFTER,
};
use zixiao_core::host::HostFacts;
use zixiao_core::model::{OperationTarget, RestartPolicy};
use zixiao_core::{
    Client, Controller, CreateInstance, ErrorKind, InstanceSpec, InstanceStatus, InstanceType,
    LocalAgent, OperationId, OperationKind, OperationPhase, Resources, Store, Wait,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::clock::ManualClock;
use zixiao_testing::fake_driver::{Failure, FakeDriver, Op};
use zixiao_testing::wait::wait_until;

const PATIENCE: Duration = Duration::from_secs(20);

struct Node {
    controller: Controller,
    client: Client,
    store: Arc<dyn Store>,
    agent: Arc<LocalAgent>,
    containers: Arc<FakeDriver>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn agent(containers: &Arc<FakeDriver>) -> Arc<LocalAgent> {
    Arc::new(
        LocalAgent::new(HostFacts {
            hostname: "n1".into(),
            capacity: Resources {
                cpus: zixiao_core::Cpus::cores(4),
                memory_mib: 4096,
                disk_gib: 100,
                instances: 16,
            },
        })
        .with_driver(containers.clone()),
    )
}

fn controller(
    store: Arc<dyn Store>,
    agent: Arc<LocalAgent>,
    clock: Arc<ManualClock>,
    convergence: Convergence,
    options: ControllerOptions,
) -> Controller {
    Controller::builder(store, Arc::new(PluginScheduler::default()))
        .clock(clock)
        .agent("n1", agent)
        .convergence(convergence)
        .options(options)
        .build()
}

/// One node `n1` running containers, its controller converging in the caller.
async fn node(options: ControllerOptions) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let containers = Arc::new(FakeDriver::new(InstanceType::Container));
    let agent = agent(&containers);
    let clock = Arc::new(ManualClock::default());
    let controller = controller(
        store.clone(),
        agent.clone(),
        clock.clone(),
        Convergence::InCaller,
        options,
    );
    controller
        .register_node(agent.registration("n1"))
        .await
        .expect("register");
    Node {
        client: Client::new(Arc::new(controller.clone())),
        controller,
        store,
        agent,
        containers,
        clock,
        _dir: dir,
    }
}

fn web(name: &str) -> CreateInstance {
    CreateInstance::new(name, InstanceSpec::container("busybox"))
}

#[tokio::test]
async fn a_create_is_recorded_and_followed_to_success() {
    let n = node(ControllerOptions::default()).await;
    let created = n
        .client
        .create_instance(web("web"), Wait::No)
        .await
        .expect("create");
    let id = created
        .operation
        .clone()
        .expect("the answer names its operation");
    let running = n.client.get_operation(&id).await.expect("get");
    assert_eq!(running.kind, OperationKind::Create);
    // The target, with the instance's labels (none here) for the access
    // layer.
    assert_eq!(running.target, OperationTarget::of_instance(&created));
    assert_eq!(running.phase, OperationPhase::Running);
    assert!(running.finished_at.is_none());

    // The watch converges the instance (no background workers here).
    let ended = n.client.wait_operation(&id).await.expect("wait");
    assert_eq!(ended.phase, OperationPhase::Succeeded, "{ended:?}");
    assert_eq!(ended.result.as_deref(), Some(created.id.as_str()));
    assert!(ended.finished_at.is_some());
    let instance = n.client.get_instance("web").await.expect("instance");
    assert_eq!(instance.status, InstanceStatus::Running);
    assert_eq!(
        instance.operation.as_ref(),
        Some(&id),
        "get names its last operation"
    );

    // A delete that waits ends its operation before it answers.
    let gone = n
        .client
        .delete_instance("web", Wait::Settled)
        .await
        .expect("delete");
    assert!(gone.is_none());
    let listed = n
        .client
        .list_operations(
            OperationFilter {
                kind: Some(OperationKind::Delete),
                ..OperationFilter::default()
            },
            Page::all(),
        )
        .await
        .expect("list");
    assert_eq!(listed.operations.len(), 1);
    assert_eq!(listed.operations[0].phase, OperationPhase::Succeeded);
    assert_eq!(listed.operations[0].target.name, "web");
}

#[tokio::test]
async fn a_failed_create_ends_failed_with_the_instances_reason() {
    let n = node(ControllerOptions::default()).await;
    n.containers.fail(Op::Create, Failure::NotFound);
    let mut request = web("broken");
    request.spec.restart = RestartPolicy::Never;
    let failed = n
        .client
        .create_instance(request, Wait::Settled)
        .await
        .expect("stored, then failed");
    assert_eq!(failed.status, InstanceStatus::Failed);
    let id = failed.operation.clone().expect("operation");
    let operation = n.client.get_operation(&id).await.expect("get");
    assert_eq!(operation.phase, OperationPhase::Failed, "{operation:?}");
    let error = operation.error.expect("a reason");
    let problem = failed.problem().expect("the instance says why");
    assert!(
        error.message.contains(problem) && error.message.contains("broken"),
        "{error:?} vs {problem}"
    );
}

#[tokio::test]
async fn a_later_intent_supersedes_the_running_one() {
    let n = node(ControllerOptions::default()).await;
    let created = n
        .client
        .create_instance(web("web"), Wait::No)
        .await
        .expect("create");
    let first = created.operation.expect("operation");
    let stopping = n.client.stop_instance("web", Wait::No).await.expect("stop");
    let second = stopping.operation.expect("operation");
    assert_ne!(first, second);
    let superseded = n.client.get_operation(&first).await.expect("get");
    assert_eq!(superseded.phase, OperationPhase::Cancelled);
    let why = superseded.error.expect("why").message;
    assert!(why.contains(second.as_str()), "{why}");
    let stopped = n.client.wait_operation(&second).await.expect("wait");
    assert_eq!(stopped.phase, OperationPhase::Succeeded, "{stopped:?}");
}

#[tokio::test]
async fn cancelling_a_running_create_deletes_its_instance() {
    let n = node(ControllerOptions::default()).await;
    let created = n
        .client
        .create_instance(web("web"), Wait::No)
        .await
        .expect("create");
    let id = created.operation.expect("operation");
    let cancelled = n.client.cancel_operation(&id).await.expect("cancel");
    assert_eq!(cancelled.phase, OperationPhase::Cancelled);
    assert!(cancelled.error.expect("why").message.contains("deleted"));
    let gone = n.controller.settle(&created.id).await.expect("settle");
    assert!(gone.is_none(), "the instance was deleted: {gone:?}");
    assert!(n.containers.is_empty());
}

#[tokio::test]
async fn bad_cancels_and_gets_are_refused_and_change_nothing() {
    let n = node(ControllerOptions::default()).await;
    let created = n
        .client
        .create_instance(web("web"), Wait::Settled)
        .await
        .expect("create");
    let finished = created.operation.expect("operation");
    let before = n.client.get_operation(&finished).await.expect("get");
    assert_eq!(before.phase, OperationPhase::Succeeded);

    // A finished operation: its phase is named.
    let err = n.client.cancel_operation(&finished).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("succeeded"), "{err}");
    assert_eq!(
        n.client.get_operation(&finished).await.expect("get"),
        before
    );

    // A kind that cannot be cancelled: named.
    let stopping = n.client.stop_instance("web", Wait::No).await.expect("stop");
    let stop = stopping.operation.expect("operation");
    let err = n.client.cancel_operation(&stop).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("stop"), "{err}");
    let still = n.client.get_operation(&stop).await.expect("get");
    assert_eq!(still.phase, OperationPhase::Running);

    // An unknown id: NotFound; a malformed one never becomes an id.
    let unknown = OperationId::new();
    let err = n.client.get_operation(&unknown).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(unknown.as_str()), "{err}");
    let err = n.client.cancel_operation(&unknown).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    for bad in [
        "",
        "op-",
        "op-XYZ",
        "../instances/x",
        &format!("{unknown}0"),
    ] {
        let err = OperationId::try_from(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        assert!(err.to_string().contains("operation"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn a_new_controller_picks_up_what_a_stopped_one_left() {
    let n = node(ControllerOptions::default()).await;
    // A server's controller (background convergence) stores an intent and
    // records its operation, then stops before anything converges it; a
    // snapshot it was running dies with it.
    let first = controller(
        n.store.clone(),
        n.agent.clone(),
        n.clock.clone(),
        Convergence::Background,
        ControllerOptions::default(),
    );
    let created = Client::new(Arc::new(first.clone()))
        .create_instance(web("web"), Wait::No)
        .await
        .expect("create");
    let create = created.operation.expect("operation");
    let snapshot = first
        .start_operation(
            OperationKind::Snapshot,
            OperationTarget::instance(&created.id, "web"),
        )
        .await
        .expect("record");
    drop(first);
    assert!(n.containers.is_empty(), "nothing ran yet");

    let next = controller(
        n.store.clone(),
        n.agent.clone(),
        n.clock.clone(),
        Convergence::Background,
        ControllerOptions::default(),
    );
    let _workers = next.run_reconcilers(ReconcilerOptions {
        operation_tick: Duration::from_millis(100),
        ..ReconcilerOptions::default()
    });
    let client = Client::new(Arc::new(next.clone()));
    let ended = tokio::time::timeout(PATIENCE, client.wait_operation(&create))
        .await
        .expect("in time")
        .expect("wait");
    assert_eq!(ended.phase, OperationPhase::Succeeded, "{ended:?}");
    // The snapshot's runner may still live (on another server): until it
    // misses its renewals, nobody ends it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = client.get_operation(&snapshot.id).await.expect("get");
    assert_eq!(running.phase, OperationPhase::Running, "{running:?}");
    n.clock.advance(OPERATION_STALE_AFTER);
    let interrupted = wait_until("the snapshot marked interrupted", PATIENCE, || async {
        let op = client.get_operation(&snapshot.id).await.ok()?;
        op.phase.is_finished().then_some(op)
    })
    .await;
    assert_eq!(interrupted.phase, OperationPhase::Failed);
    assert_eq!(interrupted.error.expect("why").message, INTERRUPTED);
}

#[tokio::test]
async fn finished_operations_are_pruned_by_age_and_count() {
    let n = node(ControllerOptions {
        operations_keep_for: Duration::from_secs(3600),
        operations_keep_at_most: 3,
        ..ControllerOptions::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = n
            .client
            .create_instance(web(&format!("web-{i}")), Wait::Settled)
            .await
            .expect("create");
        ids.push(created.operation.expect("operation"));
        n.clock.advance(Duration::from_secs(1));
    }
    let all = || async {
        n.client
            .list_operations(OperationFilter::default(), Page::all())
            .await
            .expect("list")
            .operations
    };
    assert_eq!(all().await.len(), 5);
    n.controller.operations_tick().await.expect("tick");
    let kept: Vec<OperationId> = all().await.into_iter().map(|o| o.id).collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    for oldest in &ids[..2] {
        assert!(!kept.contains(oldest), "the oldest go first");
    }
    // An unfinished one is kept whatever its age; finished ones go after the retention.
    let stopping = n
        .client
        .stop_instance("web-4", Wait::No)
        .await
        .expect("stop");
    let stop = stopping.operation.expect("operation");
    n.clock.advance(Duration::from_secs(2 * 3600));
    n.controller.operations_tick().await.expect("tick");
    let kept: Vec<OperationId> = all().await.into_iter().map(|o| o.id).collect();
    assert_eq!(kept, vec![stop]);
}

#[tokio::test]
async fn a_drain_is_recorded_around_the_work_and_an_unknown_node_records_nothing() {
    let n = node(ControllerOptions::default()).await;
    n.client
        .create_instance(web("web"), Wait::Settled)
        .await
        .expect("create");
    let drains = || async {
        n.client
            .list_operations(
                OperationFilter {
                    kind: Some(OperationKind::Drain),
                    ..OperationFilter::default()
                },
                Page::all(),
            )
            .await
            .expect("list")
            .operations
    };
    let err = n.client.drain_node("nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(drains().await.is_empty(), "a refused drain records nothing");

    let report = n.client.drain_node("n1").await.expect("drain");
    let recorded = drains().await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let drain = &recorded[0];
    assert_eq!(drain.phase, OperationPhase::Succeeded, "{drain:?}");
    assert_eq!(drain.target, OperationTarget::node("n1"));
    let moved = report.moved.len() + report.stopped.len() + report.pending.len();
    assert_eq!(moved, 1, "{report:?}");
    assert!(
        drain.result.as_deref().is_some_and(|r| r.contains("moved")),
        "{drain:?}"
    );
}
