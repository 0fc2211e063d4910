//! The node's own record of the instances its runtimes hold: one JSON file
//! per instance under `<state-dir>/instances/`, written after a create and
//! removed after a delete. The agent re-adopts or cleans up from it after a
//! restart, and the watchdog fences from it when the agent is gone, so it
//! lives on disk and needs no server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zixiao_core::driver::{
    Console, Images, Inventory, LiveMigrate, MigrationReport, MigrationTarget, Pause, Resize,
    Snapshots, Stats,
};
use zixiao_core::{
    Driver, DriverError, Instance, InstanceType, LogChunk, NodeAgent, NodeFacts, RuntimeState,
};

/// The instance records of a node's state directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The records under `state_dir/instances`.
    pub fn new(state_dir: &Path) -> Self {
        Records {
            dir: state_dir.join("instances"),
        }
    }

    fn path(&self, id: &str) -> Result<PathBuf, DriverError> {
        let safe = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !safe {
            return Err(DriverError::InvalidArgument {
                field: "instance.id".to_owned(),
                reason: format!("`{id}` is not an instance id"),
            });
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// Records that the node holds `instance`. Durable when it returns.
    pub fn put(&self, instance: &Instance) -> Result<(), DriverError> {
        let path = self.path(&instance.id)?;
        let io = |e: std::io::Error| DriverError::Runtime {
            operation: format!(
                "record instance `{}` in {}",
                instance.name,
                self.dir.display()
            ),
            source: Box::new(e),
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        // A name of its own per write: two reconcilers may record at once.
        let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        let body = serde_json::to_vec(instance).unwrap_or_default();
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Forgets `id`. Idempotent.
    pub fn remove(&self, id: &str) -> Result<(), DriverError> {
        match std::fs::remove_file(self.path(id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DriverError::Runtime {
                operation: format!("forget instance `{id}`"),
                source: Box::new(e),
            }),
        }
    }

    /// Every recorded instance (unreadable records are skipped and reported on stderr).
    pub fn list(&self) -> Vec<Instance> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Instance>(&b).map_err(|e| e.to_string()))
            {
                Ok(instance) => out.push(instance),
                Err(e) => tracing::warn!("skipping instance record {}: {e}", path.display()),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// A [`NodeAgent`] whose drivers keep the node's [`Records`] as they create,
/// start, resize and delete instances. What they are given is trusted:
/// the AgentService hands them the cluster's stored copy of an instance
/// ([`StoredInstances`](zixiao_api::agent::StoredInstances)), and the
/// agent's own clean-up its records.
#[derive(Debug, Clone)]
pub struct RecordingAgent {
    inner: Arc<dyn NodeAgent>,
    records: Records,
}

impl RecordingAgent {
    /// Wraps `inner`, recording into `records`.
    pub fn new(inner: Arc<dyn NodeAgent>, records: Records) -> Self {
        RecordingAgent { inner, records }
    }

    /// The records it keeps.
    pub fn records(&self) -> &Records {
        &self.records
    }
}

#[async_trait]
impl NodeAgent for RecordingAgent {
    async fn describe(&self) -> Result<NodeFacts, DriverError> {
        self.inner.describe().await
    }

    fn driver(&self, instance_type: InstanceType) -> Result<Arc<dyn Driver>, DriverError> {
        Ok(Arc::new(RecordingDriver {
            inner: self.inner.driver(instance_type)?,
            records: self.records.clone(),
        }))
    }
}

#[derive(Debug)]
struct RecordingDriver {
    inner: Arc<dyn Driver>,
    records: Records,
}

#[async_trait]
impl Driver for RecordingDriver {
    fn instance_type(&self) -> InstanceType {
        self.inner.instance_type()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn runtime_of(&self, instance: &Instance) -> String {
        self.inner.runtime_of(instance)
    }

    fn vsock_of(&self, instance: &Instance) -> Option<zixiao_core::model::VsockEndpoint> {
        self.inner.vsock_of(instance)
    }

    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        // Recorded first: a crash between the two leaves a record of
        // something that may not exist, which a cleanup deletes idempotently,
        // never an instance nobody knows about.
        self.records.put(instance)?;
        self.inner.create(instance).await
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        self.records.put(instance)?;
        self.inner.start(instance).await
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError> {
        self.inner.stop(instance, grace).await
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        self.inner.delete(instance).await?;
        self.records.remove(&instance.id)
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
        self.inner.pause()
    }

    fn resize(&self) -> Option<&dyn Resize> {
        self.inner.resize().map(|_| self as &dyn Resize)
    }

    fn images(&self) -> Option<&dyn Images> {
        self.inner.images()
    }

    fn snapshots(&self) -> Option<&dyn Snapshots> {
        self.inner.snapshots()
    }

    fn inventory(&self) -> Option<&dyn Inventory> {
        self.inner.inventory()
    }

    // A clone is made by the driver's create, which this records.
    fn clones(&self) -> Option<&dyn zixiao_core::driver::Clones> {
        self.inner.clones()
    }

    fn live_migrate(&self) -> Option<&dyn LiveMigrate> {
        self.inner.live_migrate().map(|_| self as &dyn LiveMigrate)
    }

    fn cold_migrate(&self) -> Option<&dyn zixiao_core::driver::ColdMigrate> {
        self.inner
            .cold_migrate()
            .map(|_| self as &dyn zixiao_core::driver::ColdMigrate)
    }
}

/// A cold migration's target records the instance before its disk arrives
/// (so an orphan sweep never takes the imported disk for an orphan's) and
/// forgets it again when an abort leaves nothing here; the source keeps
/// its record until the instance is deleted there, as any delete.
#[async_trait]
impl zixiao_core::driver::ColdMigrate for RecordingDriver {
    async fn export_disk(
        &self,
        instance: &Instance,
    ) -> Result<zixiao_core::driver::DiskExport, DriverError> {
        self.inner
            .require_cold_migrate()?
            .export_disk(instance)
            .await
    }

    async fn import_disk(
        &self,
        instance: &Instance,
        sizes: &[u64],
        chunks: zixiao_core::driver::DiskChunks,
    ) -> Result<u64, DriverError> {
        self.records.put(instance)?;
        self.inner
            .require_cold_migrate()?
            .import_disk(instance, sizes, chunks)
            .await
    }

    async fn abort_import(&self, instance: &Instance) -> Result<(), DriverError> {
        self.inner
            .require_cold_migrate()?
            .abort_import(instance)
            .await?;
        self.records.remove(&instance.id)?;
        Ok(())
    }
}

/// A live migration moves the record with the instance: the target records
/// it before anything of it is made here (so an orphan sweep never takes
/// the arriving domain for an orphan, and the watchdog fences it with the
/// rest), and forgets it again when an abort leaves nothing here; the
/// source forgets it once it runs on the target.
#[async_trait]
impl LiveMigrate for RecordingDriver {
    async fn prepare_incoming(&self, instance: &Instance) -> Result<MigrationTarget, DriverError> {
        self.records.put(instance)?;
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
        let report = self
            .inner
            .require_live_migrate()?
            .migrate_live(instance, target)
            .await?;
        self.records.remove(&instance.id)?;
        Ok(report)
    }

    async fn abort_incoming(&self, instance: &Instance) -> Result<(), DriverError> {
        self.inner
            .require_live_migrate()?
            .abort_incoming(instance)
            .await?;
        // The abort keeps an instance that did arrive: so does the record.
        if self.inner.inspect(instance).await? == RuntimeState::Missing {
            self.records.remove(&instance.id)?;
        }
        Ok(())
    }
}

/// A resize keeps the record's size the runtime's, as a start does.
#[async_trait]
impl Resize for RecordingDriver {
    async fn resize(&self, instance: &Instance) -> Result<(), DriverError> {
        self.records.put(instance)?;
        self.inner.require_resize()?.resize(instance).await
    }

    fn restart_needed(
        &self,
        running: &zixiao_core::InstanceSpec,
        next: &zixiao_core::InstanceSpec,
    ) -> Option<String> {
        self.inner.resize()?.restart_needed(running, next)
    }

    async fn running_size(
        &self,
        instance: &Instance,
    ) -> Result<Option<zixiao_core::model::RuntimeSize>, DriverError> {
        self.inner.require_resize()?.running_size(instance).await
    }
}
