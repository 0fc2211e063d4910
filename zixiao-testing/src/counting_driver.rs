//! [`CountingDriver`]: a wrapper around a node's real driver that logs every
//! create, start and stop reaching the runtime in the node's [`EventLog`],
//! so a multi-process test counts the runtime's starts of each instance and
//! checks that no instance ran on two nodes at once, while the runtime
//! underneath stays the real one. With a [`CreateHold`] a test can also
//! stop creates halfway (the runtime made the instance, the call has not
//! returned) to kill a process at that moment.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zixiao_core::driver::{Console, Images, Inventory, Pause, Snapshots, Stats};
use zixiao_core::{Driver, DriverError, Instance, InstanceType, LogChunk, RuntimeState};

use crate::runtime_events::{Event, EventLog};

/// Holds a node's creates while a file exists: each held create first
/// leaves a marker `<instance id>.creating`, so the test knows it got there.
#[derive(Debug, Clone)]
pub struct CreateHold {
    dir: PathBuf,
}

impl CreateHold {
    /// The hold of the node whose runtime directory is `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        CreateHold {
            dir: dir.to_path_buf(),
        }
    }

    /// The file that, while it exists, holds every create.
    pub fn path(&self) -> PathBuf {
        self.dir.join("hold-create")
    }

    /// Holds (`on`) or releases the node's creates.
    pub fn set(&self, on: bool) -> std::io::Result<()> {
        if on {
            std::fs::create_dir_all(&self.dir)?;
            std::fs::write(self.path(), b"")
        } else {
            match std::fs::remove_file(self.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }

    /// The marker a held create of instance `id` leaves.
    pub fn marker(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.creating"))
    }

    /// Whether a create of instance `id` is held now.
    pub fn is_holding(&self, id: &str) -> bool {
        self.marker(id).exists()
    }

    /// Waits while the hold is on, after leaving instance `id`'s marker.
    pub async fn wait(&self, id: &str) {
        if !self.path().exists() {
            return;
        }
        let marker = self.marker(id);
        let _ = std::fs::write(&marker, b"");
        while self.path().exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_file(marker);
    }
}

/// A driver that logs what reaches the driver it wraps. Starts are logged
/// as they are asked and stops once they are done, so the intervals it
/// logs cover every moment the workload may have run.
#[derive(Debug)]
pub struct CountingDriver {
    inner: Arc<dyn Driver>,
    log: EventLog,
    clock: fn() -> u64,
    hold: Option<CreateHold>,
}

impl CountingDriver {
    /// Wraps `inner`, logging to `log` with times from `clock` (monotonic ms,
    /// one clock for every process of the machine).
    pub fn new(inner: Arc<dyn Driver>, log: EventLog, clock: fn() -> u64) -> Self {
        CountingDriver {
            inner,
            log,
            clock,
            hold: None,
        }
    }

    /// Holds each create, once the runtime made the instance, while `hold` is on.
    pub fn with_hold(mut self, hold: CreateHold) -> Self {
        self.hold = Some(hold);
        self
    }

    /// The wrapped driver.
    pub fn into_inner(self) -> Arc<dyn Driver> {
        self.inner
    }

    fn note(&self, event: Event, id: &str) -> Result<(), DriverError> {
        self.log
            .append(event, id, (self.clock)())
            .map_err(|e| DriverError::Runtime {
                operation: format!(
                    "log {event:?} of instance {id} in {}",
                    self.log.path().display()
                ),
                source: Box::new(e),
            })
    }
}

#[async_trait]
impl Driver for CountingDriver {
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
        self.note(Event::Create, &instance.id)?;
        self.inner.create(instance).await?;
        if let Some(hold) = &self.hold {
            hold.wait(&instance.id).await;
        }
        Ok(())
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        self.note(Event::Start, &instance.id)?;
        let started = self.inner.start(instance).await;
        if started.is_err() {
            // The run logged above ends here, unless the workload runs after all.
            let state = self.inner.inspect(instance).await;
            if !matches!(state, Ok(RuntimeState::Running | RuntimeState::Paused)) {
                self.note(Event::Stop, &instance.id)?;
            }
        }
        started
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError> {
        self.inner.stop(instance, grace).await?;
        self.note(Event::Stop, &instance.id)
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        self.inner.delete(instance).await?;
        self.note(Event::Stop, &instance.id)
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

    // Pausing freezes a workload that runs: no start, no stop.
    fn pause(&self) -> Option<&dyn Pause> {
        self.inner.pause()
    }

    // Resizing changes limits of a workload that runs: no start, no stop.
    fn resize(&self) -> Option<&dyn zixiao_core::driver::Resize> {
        self.inner.resize()
    }

    fn images(&self) -> Option<&dyn Images> {
        self.inner.images()
    }

    fn snapshots(&self) -> Option<&dyn Snapshots> {
        self.inner.snapshots()
    }

    fn inventory(&self) -> Option<&dyn Inventory> {
        self.inner.inventory().map(|_| self as &dyn Inventory)
    }

    fn clones(&self) -> Option<&dyn zixiao_core::driver::Clones> {
        self.inner.clones()
    }
}

#[async_trait]
impl Inventory for CountingDriver {
    async fn instance_ids(&self) -> Result<std::collections::BTreeSet<String>, DriverError> {
        match self.inner.inventory() {
            Some(inventory) => inventory.instance_ids().await,
            None => Ok(Default::default()),
        }
    }

    async fn remove_orphan(&self, id: &str) -> Result<(), DriverError> {
        if let Some(inventory) = self.inner.inventory() {
            inventory.remove_orphan(id).await?;
        }
        self.note(Event::Stop, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_driver::FakeDriver;

    fn now() -> u64 {
        7
    }

    #[tokio::test]
    async fn logs_creates_starts_and_stops_of_the_runtime_underneath() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::in_dir(dir.path());
        let fake = Arc::new(FakeDriver::new(InstanceType::Container));
        let driver = CountingDriver::new(fake.clone(), log.clone(), now);
        let instance = Instance::new(
            "i1",
            zixiao_core::CreateInstance::new(
                "web",
                zixiao_core::InstanceSpec::container("busybox"),
            ),
            chrono::Utc::now(),
        );
        driver.create(&instance).await.expect("create");
        driver.start(&instance).await.expect("start");
        assert_eq!(
            driver.inspect(&instance).await.expect("inspect"),
            RuntimeState::Running,
            "the runtime underneath ran it"
        );
        driver.stop(&instance, Duration::ZERO).await.expect("stop");
        let events: Vec<Event> = log.events().into_iter().map(|l| l.event).collect();
        assert_eq!(events, [Event::Create, Event::Start, Event::Stop]);
        assert_eq!(log.counts(Event::Start)["i1"], 1);
    }

    #[tokio::test]
    async fn a_held_create_leaves_its_marker_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hold = CreateHold::in_dir(dir.path());
        let driver = Arc::new(
            CountingDriver::new(
                Arc::new(FakeDriver::new(InstanceType::Container)),
                EventLog::in_dir(dir.path()),
                now,
            )
            .with_hold(hold.clone()),
        );
        let instance = Instance::new(
            "i2",
            zixiao_core::CreateInstance::new(
                "web",
                zixiao_core::InstanceSpec::container("busybox"),
            ),
            chrono::Utc::now(),
        );
        hold.set(true).expect("hold");
        let creating = {
            let driver = driver.clone();
            let instance = instance.clone();
            tokio::spawn(async move { driver.create(&instance).await })
        };
        crate::wait::wait_until("the held create", Duration::from_secs(5), || async {
            hold.is_holding("i2").then_some(())
        })
        .await;
        assert!(!creating.is_finished());
        hold.set(false).expect("release");
        creating.await.expect("join").expect("create");
        assert!(!hold.is_holding("i2"));
    }
}
