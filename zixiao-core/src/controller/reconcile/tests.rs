//! The reconciler's state machine, table-driven: for each stored state,
//! the one next step.

use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::{plan, restart_backoff, Step};
use crate::model::*;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid")
}

fn instance(desired: DesiredState, status: InstanceStatus, node: Option<&str>) -> Instance {
    let mut i = Instance::new(
        "i-1",
        CreateInstance::new("web", InstanceSpec::container("busybox")),
        now(),
    );
    i.desired = desired;
    i.status = status;
    i.node = node.map(str::to_owned);
    i.revision = 1;
    i
}

const BASE: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(60);

#[test]
fn each_state_has_one_next_step() {
    use DesiredState as D;
    use InstanceStatus as S;
    let n = Some("node-a");
    // (desired, status, node, holds CPU and memory on it, next step)
    let table = [
        // Not placed yet.
        (D::Running, S::Pending, None, true, Step::Schedule),
        (D::Stopped, S::Pending, None, true, Step::MarkStopped),
        (D::Stopped, S::Stopped, None, true, Step::Done),
        (D::Deleted, S::Pending, None, true, Step::Remove),
        // Placed.
        (D::Running, S::Scheduled, n, true, Step::Create),
        (D::Stopped, S::Scheduled, n, true, Step::Create),
        (D::Running, S::Creating, n, true, Step::Create),
        (D::Running, S::Running, n, true, Step::Done),
        (D::Running, S::Paused, n, true, Step::Done),
        (D::Stopped, S::Paused, n, true, Step::Stop),
        (D::Deleted, S::Paused, n, true, Step::Remove),
        (D::Stopped, S::Running, n, true, Step::Stop),
        (D::Stopped, S::Stopping, n, true, Step::Stop),
        (D::Running, S::Stopping, n, true, Step::Stop),
        // Stopped: its CPU and memory go back, and are taken again to start.
        (D::Stopped, S::Stopped, n, true, Step::ReleaseCompute),
        (D::Stopped, S::Stopped, n, false, Step::Done),
        (D::Running, S::Stopped, n, false, Step::ReserveCompute),
        (D::Running, S::Stopped, n, true, Step::Start),
        // Failed with nothing to retry it: a person must act, and it holds
        // no CPU or memory meanwhile.
        (D::Running, S::Failed, n, true, Step::ReleaseCompute),
        (D::Running, S::Failed, n, false, Step::Done),
        (D::Stopped, S::Failed, n, true, Step::ReleaseCompute),
        (D::Stopped, S::Failed, n, false, Step::Done),
        (D::Deleted, S::Running, n, true, Step::Remove),
        (D::Deleted, S::Deleting, n, true, Step::Remove),
        (D::Running, S::Deleting, n, true, Step::Remove),
        (D::Deleted, S::Stopped, n, false, Step::Remove),
    ];
    for (desired, status, node, reserved, expected) in table {
        let mut i = instance(desired, status, node);
        i.compute_reserved = reserved;
        assert_eq!(
            plan(&i, now(), BASE, MAX),
            expected,
            "desired {desired:?}, status {status:?}, node {node:?}, reserved {reserved}"
        );
    }
}

#[test]
fn a_failed_create_keeps_its_cpu_while_the_policy_retries_it() {
    let mut i = instance(DesiredState::Running, InstanceStatus::Failed, Some("n"));
    i.spec.restart = RestartPolicy::OnFailure;
    i.failure = Some(Failure {
        attempts: 2,
        at: now(),
    });
    // The second failure waits 2 s, holding its reservation.
    assert_eq!(
        plan(&i, now(), BASE, MAX),
        Step::WaitUntil(now() + chrono::Duration::seconds(2))
    );
    assert_eq!(
        plan(&i, now() + chrono::Duration::seconds(2), BASE, MAX),
        Step::Create
    );
    i.spec.restart = RestartPolicy::Never;
    assert_eq!(plan(&i, now(), BASE, MAX), Step::ReleaseCompute);
}

#[test]
fn a_requested_restart_restarts_a_running_instance_once() {
    let mut i = instance(DesiredState::Running, InstanceStatus::Running, Some("n"));
    i.restarts_requested = 1;
    assert_eq!(plan(&i, now(), BASE, MAX), Step::Restart);
    i.restarts_done = 1;
    assert_eq!(plan(&i, now(), BASE, MAX), Step::Done);
}

#[test]
fn a_drained_instance_is_removed_then_scheduled_again() {
    let mut i = instance(DesiredState::Running, InstanceStatus::Running, Some("n"));
    i.reschedule = true;
    assert_eq!(plan(&i, now(), BASE, MAX), Step::Remove);
    i.node = None;
    i.reschedule = false;
    i.status = InstanceStatus::Pending;
    assert_eq!(plan(&i, now(), BASE, MAX), Step::Schedule);
}

#[test]
fn restart_policy_decides_after_an_exit_with_back_off() {
    let exited = |policy, code| {
        let mut i = instance(
            DesiredState::Running,
            if code == 0 {
                InstanceStatus::Stopped
            } else {
                InstanceStatus::Failed
            },
            Some("n"),
        );
        i.spec.restart = policy;
        i.exit = Some(ExitStatus {
            code,
            oom_killed: false,
            at: now(),
        });
        i
    };
    let later = now() + chrono::Duration::seconds(5);
    assert_eq!(
        plan(&exited(RestartPolicy::Always, 0), later, BASE, MAX),
        Step::Start
    );
    assert_eq!(
        plan(&exited(RestartPolicy::OnFailure, 1), later, BASE, MAX),
        Step::Start
    );
    assert_eq!(
        plan(&exited(RestartPolicy::OnFailure, 0), later, BASE, MAX),
        Step::Done
    );
    assert_eq!(
        plan(&exited(RestartPolicy::Never, 1), later, BASE, MAX),
        Step::ReleaseCompute
    );
    // Right after the exit, the back-off holds the restart.
    let mut again = exited(RestartPolicy::Always, 1);
    again.restarts_done = 2; // third restart: 4 s
    assert_eq!(
        plan(&again, now() + chrono::Duration::seconds(3), BASE, MAX),
        Step::WaitUntil(now() + chrono::Duration::seconds(4))
    );
    assert_eq!(plan(&again, later, BASE, MAX), Step::Start);
}

#[test]
fn back_off_doubles_and_is_capped() {
    assert_eq!(restart_backoff(0, BASE, MAX), Duration::from_secs(1));
    assert_eq!(restart_backoff(3, BASE, MAX), Duration::from_secs(8));
    assert_eq!(restart_backoff(10, BASE, MAX), MAX);
    assert_eq!(restart_backoff(u64::MAX, BASE, MAX), MAX);
}

#[test]
fn converged_means_what_a_user_would_check() {
    let running = instance(DesiredState::Running, InstanceStatus::Running, Some("n"));
    assert!(running.has_converged());
    let pending = instance(DesiredState::Running, InstanceStatus::Pending, None);
    assert!(!pending.has_converged());
    let stopped = instance(DesiredState::Stopped, InstanceStatus::Stopped, Some("n"));
    assert!(stopped.has_converged());
    let mut restarting = running.clone();
    restarting.restarts_requested = 1;
    assert!(!restarting.has_converged());
}

#[test]
fn an_instance_migrating_live_is_left_to_its_migration() {
    let mut moving = instance(
        DesiredState::Running,
        InstanceStatus::Running,
        Some("node-a"),
    );
    moving.migrate_to = Some("node-b".to_owned());
    assert_eq!(moving.live_migration_target(), Some("node-b"));
    // Even a delete or a stop asked meanwhile waits for the migration's end.
    for desired in [
        DesiredState::Running,
        DesiredState::Stopped,
        DesiredState::Deleted,
    ] {
        moving.desired = desired;
        assert_eq!(plan(&moving, now(), BASE, MAX), Step::Done, "{desired:?}");
    }
    // A restart migration (reschedule with migrate_to) is the reconciler's.
    moving.reschedule = true;
    assert_eq!(moving.live_migration_target(), None);
    assert_eq!(plan(&moving, now(), BASE, MAX), Step::Remove);
    // Ended: its own again.
    moving.reschedule = false;
    moving.migrate_to = None;
    moving.desired = DesiredState::Running;
    assert_eq!(plan(&moving, now(), BASE, MAX), Step::Done);
    moving.restarts_requested = 1;
    assert_eq!(plan(&moving, now(), BASE, MAX), Step::Restart);
}
