//! An in-memory [`Driver`] for testing the layers above drivers (the
//! controller, the CLI, the bindings). It keeps a state per instance, records
//! every call, and lets a test make calls fail or workloads exit. It is
//! never a substitute for testing a real driver against its runtime.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use zixiao_core::driver::{Pause, Resize, Stats};
use zixiao_core::{
    Driver, DriverError, Instance, InstanceStats, InstanceType, LogChunk, RuntimeState,
};

/// Which driver call a failure is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// [`Driver::create`].
    Create,
    /// [`Driver::start`].
    Start,
    /// [`Driver::stop`].
    Stop,
    /// [`Driver::delete`].
    Delete,
    /// [`Resize::resize`].
    Resize,
}

/// How an injected failure fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// As if the runtime were down: `Unavailable`.
    Unavailable,
    /// As if the image were missing: `NotFound`.
    NotFound,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, RuntimeState>,
    logs: BTreeMap<String, Vec<u8>>,
    calls: Vec<(Op, String)>,
    /// The spec of each instance's last create, start or resize, as received.
    specs: BTreeMap<String, zixiao_core::InstanceSpec>,
    failures: BTreeMap<Op, Failure>,
    /// How long each changing call takes (so concurrent calls can overlap).
    delay: Duration,
    /// Changing calls in flight, per instance.
    in_flight: BTreeMap<String, usize>,
    /// Calls that began while another for the same instance was in flight.
    overlaps: usize,
    /// Calls that wait until released, and how many wait now.
    held: std::collections::BTreeSet<Op>,
    waiting: BTreeMap<Op, usize>,
}

/// An in-memory driver for one instance type.
#[derive(Debug)]
pub struct FakeDriver {
    instance_type: InstanceType,
    state: Mutex<State>,
}

impl FakeDriver {
    /// A fake runtime for `instance_type` with nothing in it.
    pub fn new(instance_type: InstanceType) -> Self {
        FakeDriver {
            instance_type,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every later call of `op` fail with `failure`, until [`FakeDriver::heal`].
    pub fn fail(&self, op: Op, failure: Failure) {
        self.lock().failures.insert(op, failure);
    }

    /// Removes all injected failures.
    pub fn heal(&self) {
        self.lock().failures.clear();
    }

    /// Makes every later call of `op` wait, as a slow runtime does, until
    /// [`FakeDriver::release`]; [`FakeDriver::waiting`] counts them.
    pub fn hold(&self, op: Op) {
        self.lock().held.insert(op);
    }

    /// Lets the calls of `op` held by [`FakeDriver::hold`] go on.
    pub fn release(&self, op: Op) {
        self.lock().held.remove(&op);
    }

    /// How many calls of `op` are held now.
    pub fn waiting(&self, op: Op) -> usize {
        self.lock().waiting.get(&op).copied().unwrap_or(0)
    }

    async fn pass(&self, op: Op) {
        {
            let mut state = self.lock();
            if !state.held.contains(&op) {
                return;
            }
            *state.waiting.entry(op).or_default() += 1;
        }
        while self.lock().held.contains(&op) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(n) = self.lock().waiting.get_mut(&op) {
            *n -= 1;
        }
    }

    /// Makes the workload of instance `id` exit with `code`, as if it ended by itself.
    pub fn exit(&self, id: &str, code: i32, oom_killed: bool) {
        self.lock().instances.insert(
            id.to_owned(),
            RuntimeState::Exited {
                code,
                oom_killed,
                at: None,
            },
        );
    }

    /// The state of instance `id` in the fake runtime.
    pub fn state_of(&self, id: &str) -> RuntimeState {
        self.lock()
            .instances
            .get(id)
            .cloned()
            .unwrap_or(RuntimeState::Missing)
    }

    /// How many instances the fake runtime holds.
    pub fn len(&self) -> usize {
        self.lock().instances.len()
    }

    /// Whether the fake runtime holds no instance.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every call so far, in order, with the instance id.
    pub fn calls(&self) -> Vec<(Op, String)> {
        self.lock().calls.clone()
    }

    /// The spec instance `id`'s last create, start or resize ran with: the
    /// size the fake runtime gives it.
    pub fn spec_of(&self, id: &str) -> Option<zixiao_core::InstanceSpec> {
        self.lock().specs.get(id).cloned()
    }

    /// How many calls of `op` there were for instance `id`.
    pub fn count(&self, op: Op, id: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|(o, i)| *o == op && i == id)
            .count()
    }

    /// Makes every create, start, stop and delete take `delay` before it
    /// acts, as a real runtime does, so concurrent calls can overlap.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// How many create, start, stop or delete calls began while another
    /// call for the same instance was still in flight: what a runtime that
    /// is not safe against concurrent calls for one instance cannot take.
    pub fn overlaps(&self) -> usize {
        self.lock().overlaps
    }

    /// Marks a changing call for `id` in flight for the injected delay.
    async fn in_flight(&self, id: &str) -> InFlight<'_> {
        let delay = {
            let mut state = self.lock();
            let count = state.in_flight.entry(id.to_owned()).or_default();
            *count += 1;
            if *count > 1 {
                state.overlaps += 1;
            }
            state.delay
        };
        let guard = InFlight {
            driver: self,
            id: id.to_owned(),
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        guard
    }

    fn enter(
        &self,
        op: Op,
        instance: &Instance,
    ) -> Result<std::sync::MutexGuard<'_, State>, DriverError> {
        let mut state = self.lock();
        state.calls.push((op, instance.id.clone()));
        if matches!(op, Op::Create | Op::Start) {
            state
                .specs
                .insert(instance.id.clone(), instance.spec.clone());
        }
        match state.failures.get(&op) {
            None => Ok(state),
            Some(Failure::Unavailable) => Err(DriverError::Unavailable {
                runtime: "fake runtime".to_owned(),
                source: "injected failure".into(),
            }),
            Some(Failure::NotFound) => Err(DriverError::NotFound(format!(
                "image `{}`",
                instance.spec.image.as_deref().unwrap_or("-")
            ))),
        }
    }
}

/// A changing call in flight; it ends when dropped.
struct InFlight<'a> {
    driver: &'a FakeDriver,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.driver.lock();
        if let Some(count) = state.in_flight.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                state.in_flight.remove(&self.id);
            }
        }
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn instance_type(&self) -> InstanceType {
        self.instance_type
    }

    fn name(&self) -> &str {
        "fake"
    }

    /// `/fake/<id>/vsock.sock` for an instance with a vsock device: what
    /// a real node would report, for the layers that carry it.
    fn vsock_of(&self, instance: &Instance) -> Option<zixiao_core::model::VsockEndpoint> {
        instance
            .spec
            .vsock
            .map(|v| zixiao_core::model::VsockEndpoint {
                socket: format!("/fake/{}/vsock.sock", instance.id).into(),
                cid: v.cid,
            })
    }

    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        let _in_flight = self.in_flight(&instance.id).await;
        self.pass(Op::Create).await;
        let mut state = self.enter(Op::Create, instance)?;
        state
            .instances
            .entry(instance.id.clone())
            .or_insert(RuntimeState::Created);
        Ok(())
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        let _in_flight = self.in_flight(&instance.id).await;
        self.pass(Op::Start).await;
        let mut state = self.enter(Op::Start, instance)?;
        if !state.instances.contains_key(&instance.id) {
            return Err(DriverError::NotFound(format!(
                "instance `{}` on the fake runtime",
                instance.name
            )));
        }
        state
            .instances
            .insert(instance.id.clone(), RuntimeState::Running);
        let line = format!("started {}\n", instance.name);
        state
            .logs
            .entry(instance.id.clone())
            .or_default()
            .extend_from_slice(line.as_bytes());
        Ok(())
    }

    async fn stop(&self, instance: &Instance, _grace: Duration) -> Result<(), DriverError> {
        let _in_flight = self.in_flight(&instance.id).await;
        self.pass(Op::Stop).await;
        let mut state = self.enter(Op::Stop, instance)?;
        if let Some(s) = state.instances.get_mut(&instance.id) {
            if matches!(s, RuntimeState::Running | RuntimeState::Paused) {
                *s = RuntimeState::Exited {
                    code: 137,
                    oom_killed: false,
                    at: None,
                };
            }
        }
        Ok(())
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        let _in_flight = self.in_flight(&instance.id).await;
        self.pass(Op::Delete).await;
        let mut state = self.enter(Op::Delete, instance)?;
        state.instances.remove(&instance.id);
        state.logs.remove(&instance.id);
        Ok(())
    }

    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError> {
        Ok(self.state_of(&instance.id))
    }

    async fn read_log(
        &self,
        instance: &Instance,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        let state = self.lock();
        let log = state
            .logs
            .get(&instance.id)
            .ok_or_else(|| DriverError::NotFound(format!("log of instance `{}`", instance.name)))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
        let end = start.saturating_add(max).min(log.len());
        Ok(LogChunk {
            data: log[start..end].to_vec(),
            next_offset: end as u64,
        })
    }

    fn stats(&self) -> Option<&dyn Stats> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn Pause> {
        Some(self)
    }

    /// Containers resize live, as containerd's do; VMs and microVMs need a
    /// restart, as on libvirt and our monitors.
    fn resize(&self) -> Option<&dyn Resize> {
        (self.instance_type == InstanceType::Container).then_some(self as &dyn Resize)
    }
}

#[async_trait]
impl Resize for FakeDriver {
    async fn resize(&self, instance: &Instance) -> Result<(), DriverError> {
        let _in_flight = self.in_flight(&instance.id).await;
        self.pass(Op::Resize).await;
        let mut state = self.enter(Op::Resize, instance)?;
        if !state.instances.contains_key(&instance.id) {
            return Err(DriverError::NotFound(format!(
                "instance `{}` on the fake runtime",
                instance.name
            )));
        }
        state
            .specs
            .insert(instance.id.clone(), instance.spec.clone());
        Ok(())
    }
}

#[async_trait]
impl Stats for FakeDriver {
    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError> {
        match self.state_of(&instance.id) {
            RuntimeState::Running | RuntimeState::Paused => Ok(InstanceStats {
                cpu_time_ns: 1_000_000,
                memory_bytes: instance.spec.memory_mib * 1024 * 1024 / 2,
                memory_limit_bytes: Some(instance.spec.memory_mib * 1024 * 1024),
                pids: Some(1),
                ..InstanceStats::default()
            }),
            _ => Err(DriverError::FailedPrecondition(format!(
                "instance `{}` is not running",
                instance.name
            ))),
        }
    }
}

#[async_trait]
impl Pause for FakeDriver {
    async fn pause(&self, instance: &Instance) -> Result<(), DriverError> {
        let mut state = self.lock();
        match state.instances.get_mut(&instance.id) {
            Some(s @ (RuntimeState::Running | RuntimeState::Paused)) => {
                *s = RuntimeState::Paused;
                Ok(())
            }
            _ => Err(DriverError::FailedPrecondition(format!(
                "instance `{}` is not running",
                instance.name
            ))),
        }
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        let mut state = self.lock();
        match state.instances.get_mut(&instance.id) {
            Some(s @ (RuntimeState::Running | RuntimeState::Paused)) => {
                *s = RuntimeState::Running;
                Ok(())
            }
            _ => Err(DriverError::FailedPrecondition(format!(
                "instance `{}` is not paused",
                instance.name
            ))),
        }
    }
}

/// A host named `name` with 8 cores, 8 GiB of memory, 100 GiB of disk
/// and room for 16 instances: a fake agent's machine.
pub fn fake_host(name: &str) -> zixiao_core::host::HostFacts {
    zixiao_core::host::HostFacts {
        hostname: name.into(),
        capacity: zixiao_core::Resources {
            cpus: zixiao_core::Cpus::cores(8),
            memory_mib: 8192,
            disk_gib: 100,
            instances: 16,
        },
    }
}

/// A local agent whose runtime for every instance type is a [`FakeDriver`],
/// for tests of the layers above drivers on any machine.
pub fn fake_agent(host: zixiao_core::host::HostFacts) -> zixiao_core::LocalAgent {
    InstanceType::ALL
        .into_iter()
        .fold(zixiao_core::LocalAgent::new(host), |agent, t| {
            agent.with_driver(std::sync::Arc::new(FakeDriver::new(t)))
        })
}

/// An instance as the controller hands it to a driver: a fresh id, placed
/// on node `local`, scheduled, wanted running. For tests and benchmarks of
/// drivers, which get whole instances.
pub fn placed_instance(name: &str, spec: zixiao_core::InstanceSpec) -> Instance {
    let request = zixiao_core::CreateInstance::new(name, spec);
    let mut instance = Instance::new(
        uuid::Uuid::new_v4().to_string(),
        request,
        chrono::Utc::now(),
    );
    instance.node = Some("local".to_owned());
    instance.status = zixiao_core::InstanceStatus::Scheduled;
    instance.revision = 1;
    instance
}

/// Snapshot name `name`, as a driver's snapshot calls take it; `name` must
/// be a valid one (tests and benchmarks name their own snapshots).
pub fn snapshot_name(name: &str) -> zixiao_core::model::SnapshotName {
    zixiao_core::model::SnapshotName::try_from(name.to_owned()).expect("a valid snapshot name")
}
