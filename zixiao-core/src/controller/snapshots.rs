//! Snapshots of an instance through its node's driver: take, list, revert,
//! delete. Each looks the instance up and makes one driver call; a runtime
//! without the capability answers `Unsupported`. Names of the form of a
//! scheduled snapshot's are kept for schedules (see `snapshot_schedules`).

use super::Controller;
use crate::driver::{SnapshotInfo, Snapshots};
use crate::model::{check_hand_made_name, Instance, SnapshotName};
use crate::{Driver, Error, Result};

impl Controller {
    /// Takes snapshot `name` of `instance` (its disks, and its memory when
    /// it runs). Idempotent. Errors: `InvalidArgument` (not a
    /// [`SnapshotName`], or a name of the form scheduled snapshots have),
    /// `NotFound`, `FailedPrecondition` (not on a node yet), `Unsupported`,
    /// the driver's errors.
    pub async fn snapshot_instance(&self, instance: &str, name: &str) -> Result<SnapshotInfo> {
        let name = SnapshotName::try_from(name.to_owned())?;
        check_hand_made_name(name.as_str())?;
        let instance = self.get_instance(instance).await?;
        self.take_snapshot(&instance, &name).await
    }

    /// Takes snapshot `name` of `instance` through its node's driver.
    pub(super) async fn take_snapshot(
        &self,
        instance: &Instance,
        name: &SnapshotName,
    ) -> Result<SnapshotInfo> {
        let driver = self.driver_for(instance)?;
        Ok(snapshots_of(driver.as_ref())?
            .create(instance, name)
            .await?)
    }

    /// Refuses a snapshot schedule for `instance` (as it will be once an
    /// update is stored) when it cannot be snapshotted: its spec says so,
    /// or the runtime it was created on has no snapshots. Errors:
    /// `Unsupported`, saying why; `Unavailable` (its node's agent).
    pub(super) fn check_can_snapshot(&self, instance: &Instance) -> Result<()> {
        instance.spec.check_snapshots()?;
        if instance.node.is_none() {
            // Its runtime is chosen when it is placed; the spec allows it.
            return Ok(());
        }
        // The microvm driver snapshots with one of its two monitors only.
        if instance.runtime.as_deref() == Some("qemu") {
            return Err(Error::Unsupported(format!(
                "instance `{}` runs on the qemu microvm backend, which takes no snapshots: \
                 a snapshot schedule needs the vmm backend",
                instance.name
            )));
        }
        snapshots_of(self.driver_for(instance)?.as_ref())?;
        Ok(())
    }

    /// The snapshots of `instance`, oldest first. Errors: `NotFound`,
    /// `FailedPrecondition`, `Unsupported`, the driver's errors.
    pub async fn list_snapshots(&self, instance: &str) -> Result<Vec<SnapshotInfo>> {
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(snapshots_of(driver.as_ref())?.list(&instance).await?)
    }

    /// Puts `instance` back to snapshot `name`. Errors: `InvalidArgument`
    /// (not a [`SnapshotName`]), `NotFound` (instance or snapshot),
    /// `FailedPrecondition`, `Unsupported`, the driver's errors.
    pub async fn revert_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        let name = SnapshotName::try_from(name.to_owned())?;
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(snapshots_of(driver.as_ref())?
            .revert(&instance, &name)
            .await?)
    }

    /// Deletes snapshot `name` of `instance`. Idempotent. Errors:
    /// `InvalidArgument` (not a [`SnapshotName`]), `NotFound`,
    /// `FailedPrecondition`, `Unsupported`, the driver's errors.
    pub async fn delete_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        let name = SnapshotName::try_from(name.to_owned())?;
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(snapshots_of(driver.as_ref())?
            .delete(&instance, &name)
            .await?)
    }
}

fn snapshots_of(driver: &dyn Driver) -> Result<&dyn Snapshots> {
    Ok(driver.require_snapshots()?)
}
