//! [`SerializedDriver`]: a driver wrapper that lets one call at a time
//! change an instance on the runtime. Runtimes are not safe against two
//! concurrent creates of one instance (containerd's shim directory, QEMU's
//! pid file), and a failed call's clean-up must never remove what a
//! concurrent call is using; so every [`LocalAgent`](super::LocalAgent)
//! wraps its drivers in this, whoever calls them (a converge in this
//! process, or a server's over gRPC while an old leader's call still runs).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::driver::{
    Console, Images, Inventory, LiveMigrate, MigrationReport, MigrationTarget, Pause, Resize,
    SnapshotInfo, Snapshots, Stats,
};
use crate::keyed_lock::KeyedLock;
use crate::model::SnapshotName;
use crate::{Driver, DriverError, Instance, InstanceType, LogChunk, RuntimeState};

/// A driver whose calls that change an instance (create, start, stop,
/// delete, pause, resume, resize, snapshot create, revert and delete,
/// removing an orphan) run one at a time per instance id; reads (inspect, logs, stats,
/// console, listings) do not wait.
#[derive(Debug)]
pub struct SerializedDriver {
    inner: Arc<dyn Driver>,
    locks: KeyedLock,
}

impl SerializedDriver {
    /// Wraps `inner`; wrappers sharing `locks` serialize with each other.
    pub fn new(inner: Arc<dyn Driver>, locks: KeyedLock) -> Self {
        SerializedDriver { inner, locks }
    }

    /// The wrapped driver.
    pub fn into_inner(self) -> Arc<dyn Driver> {
        self.inner
    }
}

#[async_trait]
impl Driver for SerializedDriver {
    fn instance_type(&self) -> InstanceType {
        self.inner.instance_type()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn runtime_of(&self, instance: &Instance) -> String {
        self.inner.runtime_of(instance)
    }

    fn vsock_of(&self, instance: &Instance) -> Option<crate::model::VsockEndpoint> {
        self.inner.vsock_of(instance)
    }

    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner.create(instance).await
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner.start(instance).await
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner.stop(instance, grace).await
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner.delete(instance).await
    }

    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError> {
        self.inner.inspect(instance).await
    }

    async fn read_log(
        &self,
        instance: &Instance,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        self.inner.read_log(instance, offset, max).await
    }

    fn stats(&self) -> Option<&dyn Stats> {
        self.inner.stats()
    }

    fn console(&self) -> Option<&dyn Console> {
        self.inner.console()
    }

    fn pause(&self) -> Option<&dyn Pause> {
        self.inner.pause().map(|_| self as &dyn Pause)
    }

    fn resize(&self) -> Option<&dyn Resize> {
        self.inner.resize().map(|_| self as &dyn Resize)
    }

    fn images(&self) -> Option<&dyn Images> {
        self.inner.images()
    }

    fn snapshots(&self) -> Option<&dyn Snapshots> {
        self.inner.snapshots().map(|_| self as &dyn Snapshots)
    }

    fn inventory(&self) -> Option<&dyn Inventory> {
        self.inner.inventory().map(|_| self as &dyn Inventory)
    }

    // A clone is made by the driver's create, which this serializes.
    fn clones(&self) -> Option<&dyn crate::driver::Clones> {
        self.inner.clones()
    }

    fn live_migrate(&self) -> Option<&dyn LiveMigrate> {
        self.inner.live_migrate().map(|_| self as &dyn LiveMigrate)
    }

    fn cold_migrate(&self) -> Option<&dyn crate::driver::ColdMigrate> {
        self.inner
            .cold_migrate()
            .map(|_| self as &dyn crate::driver::ColdMigrate)
    }
}

/// Each call reads or changes the instance's files on this node, so each
/// holds the instance's lock (an export while a start runs would read a
/// disk in use).
#[async_trait]
impl crate::driver::ColdMigrate for SerializedDriver {
    async fn export_disk(
        &self,
        instance: &Instance,
    ) -> Result<crate::driver::DiskExport, DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner
            .require_cold_migrate()?
            .export_disk(instance)
            .await
    }

    async fn import_disk(
        &self,
        instance: &Instance,
        sizes: &[u64],
        chunks: crate::driver::DiskChunks,
    ) -> Result<u64, DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner
            .require_cold_migrate()?
            .import_disk(instance, sizes, chunks)
            .await
    }

    async fn abort_import(&self, instance: &Instance) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner
            .require_cold_migrate()?
            .abort_import(instance)
            .await
    }
}

/// Each call changes the instance on this node's runtime (makes its files,
/// moves it away, removes them), so each holds the instance's lock.
#[async_trait]
impl LiveMigrate for SerializedDriver {
    async fn prepare_incoming(&self, instance: &Instance) -> Result<MigrationTarget, DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner
            .require_live_migrate()?
            .prepare_incoming(instance)
            .await
    }

    async fn migrate_live(
        &self,
        instance: &Instance,
        target: &MigrationTarget,
    ) -> Result<MigrationReport, DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner
            .require_live_migrate()?
            .migrate_live(instance, target)
            .await
    }

    async fn abort_incoming(&self, instance: &Instance) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner
            .require_live_migrate()?
            .abort_incoming(instance)
            .await
    }
}

#[async_trait]
impl Pause for SerializedDriver {
    async fn pause(&self, instance: &Instance) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        let pause = self.inner.require_pause()?;
        pause.pause(instance).await
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        let pause = self.inner.require_pause()?;
        pause.resume(instance).await
    }
}

#[async_trait]
impl Resize for SerializedDriver {
    async fn resize(&self, instance: &Instance) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        self.inner.require_resize()?.resize(instance).await
    }

    fn restart_needed(
        &self,
        running: &crate::InstanceSpec,
        next: &crate::InstanceSpec,
    ) -> Option<String> {
        self.inner.resize()?.restart_needed(running, next)
    }

    // A read: not serialized with the instance's other calls.
    async fn running_size(
        &self,
        instance: &Instance,
    ) -> Result<Option<crate::model::RuntimeSize>, DriverError> {
        self.inner.require_resize()?.running_size(instance).await
    }
}

#[async_trait]
impl Snapshots for SerializedDriver {
    async fn create(
        &self,
        instance: &Instance,
        name: &SnapshotName,
    ) -> Result<SnapshotInfo, DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        let snapshots = self.inner.require_snapshots()?;
        snapshots.create(instance, name).await
    }

    async fn list(&self, instance: &Instance) -> Result<Vec<SnapshotInfo>, DriverError> {
        let snapshots = self.inner.require_snapshots()?;
        snapshots.list(instance).await
    }

    async fn revert(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        let snapshots = self.inner.require_snapshots()?;
        snapshots.revert(instance, name).await
    }

    async fn delete(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        let _one = self.locks.lock(&instance.id).await;
        let snapshots = self.inner.require_snapshots()?;
        snapshots.delete(instance, name).await
    }
}

#[async_trait]
impl Inventory for SerializedDriver {
    async fn instance_ids(&self) -> Result<std::collections::BTreeSet<String>, DriverError> {
        let inventory = self.inner.require_inventory()?;
        inventory.instance_ids().await
    }

    async fn remove_orphan(&self, id: &str) -> Result<(), DriverError> {
        let _one = self.locks.lock(id).await;
        let inventory = self.inner.require_inventory()?;
        inventory.remove_orphan(id).await
    }
}
