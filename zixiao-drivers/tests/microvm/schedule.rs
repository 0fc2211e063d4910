//! A snapshot schedule run by the controller's reconcilers against a real
//! microVM on the vmm backend (zixiao-vmm's counting test guest): the
//! schedule runs on each due tick, keeps exactly `keep` scheduled
//! snapshots next to a hand-made one, records a failed snapshot on the
//! instance and retries it, and goes on from the stored time after a
//! controller restart. The clock is a manual one and the tick short, so
//! the one-minute minimum interval passes in milliseconds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::controller::ReconcilerOptions;
use zixiao_core::model::scheduled_name;
use zixiao_core::{
    Clock, ConditionType, Controller, CreateInstance, ErrorKind, Instance, InstanceStatus,
    InstanceUpdate,
};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
use zixiao_testing::clock::ManualClock;
use zixiao_testing::wait::wait_until;

use super::controller::{controller_on, converged};
use super::vmm::fixture;
use super::{unique, BOOT_TIMEOUT};

const MINUTE: Duration = Duration::from_secs(60);

/// A controller over the store in `dir`, with one local node whose microvm
/// driver keeps its state in `dir`, on `clock`.
async fn controller(dir: &Path, clock: Arc<ManualClock>) -> Controller {
    let driver = Arc::new(MicrovmDriver::new(MicrovmOptions::new(dir)).expect("driver"));
    controller_on(dir, driver, clock).await
}

async fn in_status(c: &Controller, name: &str, status: InstanceStatus) -> Instance {
    converged(c, name, &format!("{name} to be {status:?}"), |i| {
        i.status == status
    })
    .await
}

/// The snapshot names of `name`, oldest first.
async fn snapshots(c: &Controller, name: &str) -> Vec<String> {
    let mut names: Vec<String> = c
        .list_snapshots(name)
        .await
        .expect("list snapshots")
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

/// Waits until the reconcilers record the scheduled snapshot of `at`.
async fn scheduled_at(c: &Controller, name: &str, at: chrono::DateTime<chrono::Utc>) -> Instance {
    wait_until(
        &format!("the scheduled snapshot of {at}"),
        BOOT_TIMEOUT,
        || async {
            let i = c.get_instance(name).await.expect("get");
            (i.last_scheduled_snapshot.as_ref().map(|s| s.at) == Some(at)).then_some(i)
        },
    )
    .await
}

fn schedule_condition(i: &Instance) -> (bool, String, String) {
    let c = i
        .condition(ConditionType::SnapshotSchedule)
        .expect("a snapshot_schedule condition");
    (c.status, c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn a_snapshot_schedule_keeps_exactly_the_newest_n_of_its_own() {
    let Some(fx) = fixture() else {
        return;
    };
    let dir = fx.dir.path().join("sched");
    std::fs::create_dir_all(&dir).expect("dir");
    let clock = Arc::new(ManualClock::default());
    let c = controller(&dir, clock.clone()).await;
    let name = unique("sched");
    let created = c
        .create_instance(CreateInstance::new(&name, fx.spec("loop")))
        .await
        .expect("create");
    in_status(&c, &created.id, InstanceStatus::Running).await;
    c.snapshot_instance(&name, "by-hand")
        .await
        .expect("a hand-made snapshot");
    // A hand-made name may not look like a scheduled one (those are pruned).
    let err = c
        .snapshot_instance(&name, &scheduled_name(clock.now()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    let update = InstanceUpdate {
        snapshot_every: Some("1m".parse().expect("valid")),
        snapshot_keep: Some(2.try_into().expect("valid")),
        ..InstanceUpdate::default()
    };
    let updated = c.update_instance(&name, update).await.expect("update");
    let schedule = updated.spec.snapshot_schedule.expect("a schedule");
    assert_eq!(
        (schedule.every.to_string(), schedule.keep.get()),
        ("1m".into(), 2)
    );

    let reconcilers = c.run_reconcilers(ReconcilerOptions {
        snapshot_tick: Duration::from_millis(50),
        ..ReconcilerOptions::default()
    });
    // Four runs a minute apart: the first at once (none was taken yet).
    let mut taken = Vec::new();
    for run in 0..4 {
        if run > 0 {
            clock.advance(MINUTE);
        }
        let at = clock.now();
        let i = scheduled_at(&c, &name, at).await;
        assert!(schedule_condition(&i).0, "{:?}", i.conditions);
        taken.push(scheduled_name(at));
    }
    // Not due again before a minute has passed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut want = vec!["by-hand".to_owned(), taken[2].clone(), taken[3].clone()];
    want.sort();
    assert_eq!(snapshots(&c, &name).await, want);
    reconcilers.stop();

    // A snapshot that fails (a stopped microVM has no memory to take) is
    // recorded on the instance and tried again on the next tick.
    c.stop_instance(&name).await.expect("stop");
    in_status(&c, &name, InstanceStatus::Stopped).await;
    clock.advance(MINUTE);
    assert_eq!(c.run_due_snapshot_schedules().await, 1);
    let failed = c.get_instance(&name).await.expect("get");
    let (ok, reason, message) = schedule_condition(&failed);
    assert!(!ok && reason == "SnapshotFailed", "{reason}: {message}");
    assert!(message.contains("not running"), "{message}");
    assert_eq!(
        failed
            .last_scheduled_snapshot
            .as_ref()
            .map(|s| s.name.clone()),
        Some(taken[3].clone())
    );
    assert_eq!(
        snapshots(&c, &name).await,
        want,
        "a failed run changed the snapshots"
    );
    c.start_instance(&name).await.expect("start");
    in_status(&c, &name, InstanceStatus::Running).await;
    let retry_at = clock.now();
    assert_eq!(c.run_due_snapshot_schedules().await, 1, "retried");
    let retried = c.get_instance(&name).await.expect("get");
    assert!(schedule_condition(&retried).0);
    assert_eq!(
        retried.last_scheduled_snapshot.map(|s| s.at),
        Some(retry_at)
    );

    // A new controller over the same store goes on from the stored time:
    // nothing is due until a minute after the last one.
    drop(c);
    let c = controller(&dir, clock.clone()).await;
    in_status(&c, &name, InstanceStatus::Running).await;
    assert_eq!(c.run_due_snapshot_schedules().await, 0, "not due yet");
    clock.advance(MINUTE);
    assert_eq!(c.run_due_snapshot_schedules().await, 1);
    let mut want = vec![
        "by-hand".to_owned(),
        scheduled_name(retry_at),
        scheduled_name(clock.now()),
    ];
    want.sort();
    assert_eq!(snapshots(&c, &name).await, want);

    // Cleared: no more scheduled snapshots, and the ones taken stay.
    let clear = InstanceUpdate {
        clear_snapshot_schedule: true,
        ..InstanceUpdate::default()
    };
    let cleared = c.update_instance(&name, clear).await.expect("clear");
    assert_eq!(cleared.spec.snapshot_schedule, None);
    assert!(cleared.condition(ConditionType::SnapshotSchedule).is_none());
    clock.advance(MINUTE * 10);
    assert_eq!(c.run_due_snapshot_schedules().await, 0);
    assert_eq!(snapshots(&c, &name).await, want);

    c.delete_instance(&name).await.expect("delete");
    wait_until("the microVM to be gone", BOOT_TIMEOUT, || async {
        c.converge(&name)
            .await
            .expect("converge")
            .is_none()
            .then_some(())
    })
    .await;
}
