//! Snapshots of an instance through its node's driver: take, list, revert,
//! delete. Each looks the instance up and makes one driver call; a runtime
//! without the capability answers `Unsupported`.

use super::Controller;
use crate::driver::{SnapshotInfo, Snapshots};
use crate::{Driver, Result};

impl Controller {
    /// Takes snapshot `name` of `instance` (its disks, and its memory when
    /// it runs). Idempotent. Errors: `NotFound`, `FailedPrecondition` (not
    /// on a node yet), `Unsupported`, the driver's errors.
    pub async fn snapshot_instance(&self, instance: &str, name: &str) -> Result<SnapshotInfo> {
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(snapshots_of(driver.as_ref())?
            .create(&instance, name)
            .await?)
    }

    /// The snapshots of `instance`, oldest first. Errors: `NotFound`,
    /// `FailedPrecondition`, `Unsupported`, the driver's errors.
    pub async fn list_snapshots(&self, instance: &str) -> Result<Vec<SnapshotInfo>> {
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(snapshots_of(driver.as_ref())?.list(&instance).await?)
    }

    /// Puts `instance` back to snapshot `name`. Errors: `NotFound`
    /// (instance or snapshot), `FailedPrecondition`, `Unsupported`, the
    /// driver's errors.
    pub async fn revert_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(snapshots_of(driver.as_ref())?
            .revert(&instance, name)
            .await?)
    }

    /// Deletes snapshot `name` of `instance`. Idempotent. Errors:
    /// `NotFound`, `FailedPrecondition`, `Unsupported`, the driver's errors.
    pub async fn delete_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(snapshots_of(driver.as_ref())?
            .delete(&instance, name)
            .await?)
    }
}

fn snapshots_of(driver: &dyn Driver) -> Result<&dyn Snapshots> {
    Ok(driver.require_snapshots()?)
}
