//! Running snapshot schedules (`spec.snapshot_schedule`): on each tick of
//! the reconcilers, every instance whose scheduled snapshot is due gets one
//! (`auto-YYYYMMDD-HHMMSS`, by the controller's clock), then its scheduled
//! snapshots beyond `keep` are deleted, oldest first. The outcome is stored
//! on the instance: the last scheduled snapshot (so a restarted controller
//! knows when the next is due) and the `snapshot_schedule` condition (false
//! with the error when the snapshot or the pruning failed; the next tick
//! tries again, since a failed snapshot leaves the schedule due).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Controller;
use crate::model::{
    scheduled_name, to_prune, ConditionType, DesiredState, Instance, InstanceStatus,
    ScheduledSnapshot, SnapshotName, SnapshotSchedule,
};
use crate::{Error, Result};

/// What one run of a schedule came to.
enum Outcome {
    /// The snapshot was taken and the old ones pruned.
    Taken,
    /// The snapshot was taken; pruning failed.
    PruneFailed(Error),
    /// No snapshot was taken.
    Failed(Error),
}

impl Controller {
    /// Runs every snapshot schedule that is due now, one instance after the
    /// other (a memory snapshot is heavy work for a node), and returns how
    /// many it ran. Called on each tick of [`Controller::run_reconcilers`];
    /// failures are recorded on their instances, never returned.
    pub async fn run_due_snapshot_schedules(&self) -> usize {
        if self.inner.cache.ready().await.is_err() {
            // The store does not answer: the next tick looks again.
            return 0;
        }
        let now = self.now();
        let due: Vec<Arc<Instance>> = self
            .inner
            .cache
            .read()
            .instances()
            .filter(|i| is_due(i, now))
            .cloned()
            .collect();
        for instance in &due {
            if let Some(schedule) = instance.spec.snapshot_schedule {
                self.run_schedule(instance, schedule, now).await;
            }
        }
        due.len()
    }

    /// Takes the scheduled snapshot of `instance` at `now`, prunes, and
    /// records the outcome.
    async fn run_schedule(
        &self,
        instance: &Instance,
        schedule: SnapshotSchedule,
        now: DateTime<Utc>,
    ) {
        let name = scheduled_name(now);
        let taken = async {
            let valid = SnapshotName::try_from(name.clone())?;
            self.take_snapshot(instance, &valid).await
        };
        let outcome = match taken.await {
            Err(e) => Outcome::Failed(e),
            Ok(_) => match self.prune_scheduled(instance, schedule).await {
                Ok(()) => Outcome::Taken,
                Err(e) => Outcome::PruneFailed(e),
            },
        };
        let (status, reason, message) = match &outcome {
            Outcome::Taken => (
                true,
                "SnapshotTaken",
                format!(
                    "took {name}; the newest {} scheduled snapshots are kept",
                    schedule.keep.get()
                ),
            ),
            Outcome::PruneFailed(e) => (
                false,
                "PruneFailed",
                format!("took {name}, but deleting older ones failed: {}", e.chain()),
            ),
            Outcome::Failed(e) => (
                false,
                "SnapshotFailed",
                format!(
                    "the scheduled snapshot {name} failed (tried again on the next tick): {}",
                    e.chain()
                ),
            ),
        };
        match &outcome {
            Outcome::Failed(e) | Outcome::PruneFailed(e) => {
                tracing::warn!(instance = %instance.name, snapshot = %name, "scheduled snapshot: {}", e.chain());
            }
            Outcome::Taken => {
                tracing::info!(instance = %instance.name, snapshot = %name, "scheduled snapshot taken");
            }
        }
        let taken = !matches!(outcome, Outcome::Failed(_));
        let recorded = self
            .update_object::<Instance, _>(&instance.id, |i| {
                let before = (i.conditions.clone(), i.last_scheduled_snapshot.clone());
                if taken {
                    i.last_scheduled_snapshot = Some(ScheduledSnapshot {
                        name: name.clone(),
                        at: now,
                    });
                }
                i.set_condition(
                    ConditionType::SnapshotSchedule,
                    status,
                    reason,
                    message.clone(),
                    now,
                );
                // A failure repeated tick after tick is written once.
                Ok(before != (i.conditions.clone(), i.last_scheduled_snapshot.clone()))
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(instance = %instance.name, "recording a scheduled snapshot: {}", e.chain());
        }
    }

    /// Deletes `instance`'s scheduled snapshots beyond the newest `keep`.
    async fn prune_scheduled(&self, instance: &Instance, schedule: SnapshotSchedule) -> Result<()> {
        let driver = self.driver_for(instance)?;
        let snapshots = driver.require_snapshots()?;
        let names: Vec<String> = snapshots
            .list(instance)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        for name in to_prune(names.iter().map(String::as_str), schedule.keep) {
            // Of a scheduled snapshot's form, so a valid name.
            let name = SnapshotName::try_from(name.to_owned())?;
            snapshots.delete(instance, &name).await?;
        }
        Ok(())
    }
}

/// Whether `instance` has a schedule whose snapshot is due at `now`, and
/// exists on a node in a state a snapshot can be taken of.
fn is_due(instance: &Instance, now: DateTime<Utc>) -> bool {
    let Some(schedule) = instance.spec.snapshot_schedule else {
        return false;
    };
    instance.desired != DesiredState::Deleted
        && instance.node.is_some()
        && matches!(
            instance.status,
            InstanceStatus::Running | InstanceStatus::Paused | InstanceStatus::Stopped
        )
        && schedule.due(instance.last_scheduled_snapshot.as_ref().map(|s| s.at), now)
}
