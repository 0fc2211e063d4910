//! The reconciler: a pure [`plan`] that reads one instance and names the next
//! [`Step`] towards its intent, and [`Controller::converge`], which carries
//! steps out until nothing is left to do.
//!
//! It is level-triggered: a step depends only on the stored instance, so a
//! step interrupted by a crash is simply planned and done again (every driver
//! call is idempotent). One process converges an instance at a time: a
//! converge holds the instance's key in the controller's [`WorkQueue`]
//! (taken by a worker of [`Controller::run_reconcilers`], or claimed by a
//! caller), and a server converges only in its leader's workers
//! ([`Convergence::Background`]), so a runtime never sees two creates of
//! one instance at once. Processes that converge in their callers with no
//! daemon also hold the instance's [`InstanceLocks`](crate::InstanceLocks)
//! lock around a converge. Each state change is still a compare-and-swap on
//! the instance's revision, so a leader that has just lost the lead and its
//! successor never both act on the same state; placement and release also
//! swap the node's allocation in the same transaction, so no node is ever
//! over-committed.
//!
//! Steps read the instance from the controller's cache, caught up with the
//! controller's own writes; a step that made no progress (its write lost a
//! race the cache has not shown yet) reads the store itself.
//!
//! [`WorkQueue`]: super::WorkQueue

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::cache::Change;
use super::placer::{Mode, Placed};
use super::Controller;
use crate::driver::{DriverError, RuntimeState};
use crate::error::ErrorKind;
use crate::model::{
    ConditionType, DesiredState, ExitStatus, Failure, Instance, InstanceStatus, Node, NodeStatus,
    Resources, RestartPolicy,
};
use crate::store::{
    encode, put_object, Precondition, Revision, StoreError, StoreExt, StoredObject, Txn,
};
use crate::{Error, Result};

/// How long a read waits for the size an instance's runtime gives it (a
/// local runtime answers in milliseconds, an agent's in a round trip)
/// before it shows the stored record without it. Below the 5 s an agent
/// gives the servers to say where an instance is placed.
const RUNTIME_SIZE_DEADLINE: Duration = Duration::from_secs(1);

/// The next thing to do for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: it has converged, or it waits for a person (failed) or for capacity.
    Done,
    /// Choose a node and reserve its resources.
    Schedule,
    /// A never-placed instance that should not run: mark it stopped.
    MarkStopped,
    /// Create it on its node, and start it if it should run.
    Create,
    /// Start it on its node.
    Start,
    /// Stop it on its node.
    Stop,
    /// Stop and start it (a restart was asked for).
    Restart,
    /// Remove it from its node, then release its resources and delete its
    /// record (delete) or make it pending again (reschedule).
    Remove,
    /// Give its CPU and memory back to its node: it is stopped, or failed
    /// for good (its disk and its place stay).
    ReleaseCompute,
    /// Reserve its CPU and memory on its node again before it starts; when
    /// the node has no room it waits, with the reason recorded.
    ReserveCompute,
    /// Wait until then before restarting it (restart back-off).
    WaitUntil(DateTime<Utc>),
}

/// Who carries out an instance's intent for the calls that wait for it
/// ([`Controller::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Convergence {
    /// The caller converges the instance itself, as the embedded deployment
    /// without a daemon does: nothing else would.
    #[default]
    InCaller,
    /// A background loop converges every instance (a server's leader); a
    /// call that waits only watches the instance until it settles, so no
    /// instance is ever converged by two processes at once.
    Background,
}

/// What the restart policy says about a workload that exited.
fn restarts_after_exit(policy: RestartPolicy, exit: Option<&ExitStatus>) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit.is_some_and(|e| e.code != 0),
    }
}

/// Whether a placed instance should hold CPU and memory on its node: while
/// it runs or is on its way to run (or to stop), not while it is stopped or
/// has failed with nothing to bring it back. Pure, like [`plan`].
pub fn wants_compute(instance: &Instance) -> bool {
    let running_wanted = instance.desired == DesiredState::Running;
    match instance.status {
        InstanceStatus::Stopped => running_wanted,
        InstanceStatus::Failed => {
            let retried = match &instance.exit {
                Some(exit) => restarts_after_exit(instance.spec.restart, Some(exit)),
                None => instance.failure.is_some() && instance.spec.restart != RestartPolicy::Never,
            };
            running_wanted && retried
        }
        // Leaving its node: whatever it holds goes back with it.
        InstanceStatus::Deleting => instance.compute_reserved,
        _ => true,
    }
}

/// The delay before the restart policy's `n`th restart: `base * 2^n`, capped at `max`.
pub fn restart_backoff(restarts: u64, base: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(restarts.min(31) as u32)
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// The next step for `instance` at time `now`. Pure: depends on nothing else.
///
/// ```
/// # use zixiao_core::controller::reconcile::{plan, Step};
/// # use zixiao_core::model::*;
/// # fn pending() -> Instance {
/// #     Instance::new("1", CreateInstance::new("web", InstanceSpec::container("busybox")), chrono::Utc::now())
/// # }
/// let instance = pending();
/// assert_eq!(plan(&instance, chrono::Utc::now(), std::time::Duration::from_secs(1),
///                 std::time::Duration::from_secs(60)), Step::Schedule);
/// ```
pub fn plan(
    instance: &Instance,
    now: DateTime<Utc>,
    backoff: Duration,
    max_backoff: Duration,
) -> Step {
    use DesiredState as D;
    use InstanceStatus as S;
    let placed = instance.node.is_some();
    // A live migration's caller owns the instance until it ends: the
    // runtime on its source pauses, then loses it to its target, and
    // neither is a step to take.
    if instance.live_migration_target().is_some() {
        return Step::Done;
    }
    if instance.desired == D::Deleted || (instance.reschedule && placed) {
        return Step::Remove;
    }
    if !placed {
        return match (instance.desired, instance.status) {
            (D::Stopped, S::Stopped) => Step::Done,
            (D::Stopped, _) => Step::MarkStopped,
            _ => Step::Schedule,
        };
    }
    let wants = wants_compute(instance);
    if instance.compute_reserved != wants {
        return if wants {
            Step::ReserveCompute
        } else {
            Step::ReleaseCompute
        };
    }
    match (instance.status, instance.desired) {
        // Placed but not yet (fully) created: creating is idempotent, so an
        // interrupted create is simply done again.
        (S::Pending | S::Scheduled | S::Creating, _) => Step::Create,
        (S::Stopping, _) => Step::Stop,
        (S::Deleting, _) => Step::Remove,
        // A paused instance is running, frozen: it stops and restarts alike.
        (S::Running | S::Paused, D::Stopped) => Step::Stop,
        (S::Running | S::Paused, _) if instance.restarts_requested > instance.restarts_done => {
            Step::Restart
        }
        (S::Running | S::Paused, _) => Step::Done,
        (S::Stopped, D::Running) | (S::Failed, D::Running) => {
            // Running is wanted but it is down: the user started it, or it
            // exited and its restart policy brings it back after a back-off.
            if instance.status == S::Failed && instance.exit.is_none() {
                // Failed to create or start: retried after a back-off when
                // the restart policy restarts failures, else a person must
                // act (`start` retries at once).
                return match &instance.failure {
                    Some(failure) if instance.spec.restart != RestartPolicy::Never => {
                        let delay = restart_backoff(
                            u64::from(failure.attempts.saturating_sub(1)),
                            backoff,
                            max_backoff,
                        );
                        let at = failure.at + chrono::Duration::from_std(delay).unwrap_or_default();
                        if now < at {
                            Step::WaitUntil(at)
                        } else {
                            // Creating is idempotent: it finds what the
                            // failed attempt left and carries on.
                            Step::Create
                        }
                    }
                    _ => Step::Done,
                };
            }
            match &instance.exit {
                Some(exit) if restarts_after_exit(instance.spec.restart, Some(exit)) => {
                    let delay = restart_backoff(instance.restarts_done, backoff, max_backoff);
                    let at = exit.at + chrono::Duration::from_std(delay).unwrap_or_default();
                    if now < at {
                        Step::WaitUntil(at)
                    } else {
                        Step::Start
                    }
                }
                Some(_) => Step::Done,
                None => Step::Start,
            }
        }
        (S::Stopped | S::Failed, _) => Step::Done,
    }
}

/// What [`Controller::reconcile_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Instances looked at.
    pub instances: usize,
    /// Instances that now match their intent.
    pub converged: usize,
    /// Instances waiting for capacity, a back-off, or a person.
    pub waiting: usize,
    /// Instances whose reconcile failed, with the error.
    pub errors: Vec<(String, String)>,
}

/// How many steps one converge takes at most: more means a bug (a step that
/// does not move the state), which must not spin forever.
const MAX_STEPS: usize = 32;

impl Controller {
    /// Carries out steps for instance `id` (or name) until its intent is met
    /// or it must wait (for capacity, a back-off, or a person). First it
    /// observes the runtime, so a workload that exited is recorded. Returns
    /// the instance, or `None` once it is deleted.
    ///
    /// Safe to call concurrently with itself and with other calls. Errors:
    /// `NotFound`, `Unavailable` (its node's runtime; the instance keeps its
    /// state and the next converge retries), the store's errors.
    pub async fn converge(&self, instance: &str) -> Result<Option<Instance>> {
        let id = self.get_instance(instance).await?.id;
        // A second converge of the same instance waits, then plans from
        // what the first left: never two runtime calls for one instance.
        let _lease = self.inner.queue.claim(&id).await;
        let _held = self.hold_for_converge(&id).await?;
        self.converge_taken(&id).await
    }

    /// [`Controller::converge`] of instance `id`, whose key the caller
    /// holds in the work queue. Runs in a `converge` span naming the
    /// instance; each step is logged at debug level with the node it runs on.
    #[tracing::instrument(level = "info", name = "converge", skip_all, fields(instance = %id))]
    pub(super) async fn converge_taken(&self, id: &str) -> Result<Option<Instance>> {
        let started = std::time::Instant::now();
        let result = self.converge_steps(id).await;
        self.telemetry().converge(result.is_ok(), started.elapsed());
        result
    }

    /// The steps of [`Controller::converge_taken`], until the instance is
    /// where it should be or waits.
    async fn converge_steps(&self, id: &str) -> Result<Option<Instance>> {
        self.observe(id).await?;
        let mut last: Option<(Step, Revision)> = None;
        for _ in 0..MAX_STEPS {
            let Some(current) = self.current(id, &mut last).await? else {
                return Ok(None);
            };
            let opts = self.options();
            let step = plan(
                &current,
                self.now(),
                opts.restart_backoff,
                opts.max_restart_backoff,
            );
            last = Some((step.clone(), current.revision));
            tracing::debug!(?step, node = current.node.as_deref(), "reconcile step");
            match step {
                Step::Done | Step::WaitUntil(_) => return Ok(Some(current)),
                Step::Schedule => {
                    if !self.schedule(current).await? {
                        return self.fresh(id).await;
                    }
                }
                Step::MarkStopped => self.set_status(&current, InstanceStatus::Stopped).await?,
                Step::ReleaseCompute => {
                    self.move_compute(current, false).await?;
                }
                Step::ReserveCompute => {
                    if !self.move_compute(current, true).await? {
                        return self.fresh(id).await;
                    }
                }
                Step::Create => self.create_on_node(current).await?,
                Step::Start => self.start_on_node(current).await?,
                Step::Stop => self.stop_on_node(current).await?,
                Step::Restart => self.restart_on_node(current).await?,
                Step::Remove => self.remove_from_node(current).await?,
            }
        }
        Err(Error::Internal(format!(
            "instance `{id}` did not settle after {MAX_STEPS} reconcile steps"
        )))
    }

    /// Instance `id` as the next step should see it: from the cache, caught
    /// up with this controller's writes; from the store when the last step
    /// left it as it was (a write that lost a race the cache has not shown).
    async fn current(
        &self,
        id: &str,
        last: &mut Option<(Step, Revision)>,
    ) -> Result<Option<Instance>> {
        self.caught_up().await?;
        let cached = self.inner.cache.read().instance(id).cloned();
        let stuck = match (&cached, &*last) {
            (Some(instance), Some((_, revision))) => instance.revision == *revision,
            (None, _) => true,
            _ => false,
        };
        if !stuck {
            return Ok(cached.map(|i| Instance::clone(&i)));
        }
        let fresh = self.inner.store.get_object::<Instance>(id).await?;
        if let Some(fresh) = &fresh {
            if cached.as_ref().is_none_or(|c| c.revision < fresh.revision) {
                self.inner.cache.wait_for(fresh.revision).await?;
            }
        }
        Ok(fresh)
    }

    /// Instance `id` as stored now.
    async fn fresh(&self, id: &str) -> Result<Option<Instance>> {
        Ok(self.inner.store.get_object::<Instance>(id).await?)
    }

    /// Waits until instance `id` (its id, not its name) has settled: its
    /// intent is met, or it waits for capacity, a back-off or a person.
    /// Returns it, or `None` once it is deleted (or when there never was
    /// such an instance). With [`Convergence::InCaller`] this converges it;
    /// with [`Convergence::Background`] it watches the store while the
    /// background loop converges it, and waits as long as that takes
    /// (callers bound it with a timeout).
    ///
    /// An id, not a name, because the caller has usually just changed the
    /// instance and a background worker may delete it before this looks:
    /// resolving a name then would turn "deleted" into `NotFound`.
    ///
    /// Errors: the store's errors, and in-caller [`Controller::converge`]'s.
    pub async fn settle(&self, id: &str) -> Result<Option<Instance>> {
        match self.inner.convergence {
            Convergence::InCaller => {
                let _lease = self.inner.queue.claim(id).await;
                let _held = self.hold_for_converge(id).await?;
                self.converge_taken(id).await
            }
            Convergence::Background => self.wait_settled(id).await,
        }
    }

    /// Whether `instance` needs nothing more from a reconciler now: the
    /// next step is none, a back-off, or a placement that found no node.
    pub fn is_settled(&self, instance: &Instance) -> bool {
        let opts = self.options();
        match plan(
            instance,
            self.now(),
            opts.restart_backoff,
            opts.max_restart_backoff,
        ) {
            Step::Done | Step::WaitUntil(_) => true,
            // Waiting for room: for a node, or on its own node to start again.
            Step::Schedule | Step::ReserveCompute => instance
                .condition(ConditionType::Scheduled)
                .is_some_and(|c| !c.status),
            _ => false,
        }
    }

    /// Waits until the cache shows instance `id` settled (or gone),
    /// whoever converges it.
    async fn wait_settled(&self, id: &str) -> Result<Option<Instance>> {
        self.wait_for_instance(id, |i| self.is_settled(i)).await
    }

    /// Waits until the cache shows instance `id` as `wanted` accepts it (or
    /// gone), whoever changes it.
    pub(super) async fn wait_for_instance(
        &self,
        id: &str,
        wanted: impl Fn(&Instance) -> bool,
    ) -> Result<Option<Instance>> {
        let mut changes = self.inner.cache.subscribe();
        self.caught_up().await?;
        loop {
            let current = self.inner.cache.read().instance(id).cloned();
            let current = match current {
                Some(current) => current,
                // Not shown yet (created by another server): ask the store.
                None => match self.inner.store.get_object::<Instance>(id).await? {
                    None => return Ok(None),
                    Some(stored) => {
                        self.inner.cache.wait_for(stored.revision).await?;
                        match self.inner.cache.read().instance(id).cloned() {
                            Some(cached) => cached,
                            None => return Ok(None),
                        }
                    }
                },
            };
            if wanted(&current) {
                return Ok(Some(Instance::clone(&current)));
            }
            loop {
                match changes.recv().await {
                    Ok(Change::Instance(changed, instance)) if changed == id => match instance {
                        Some(instance) if wanted(&instance) => {
                            return Ok(Some(Instance::clone(&instance)))
                        }
                        Some(_) => {}
                        None => return Ok(None),
                    },
                    Ok(Change::Relisted) | Err(RecvError::Lagged(_)) => break,
                    Ok(_) => {}
                    Err(RecvError::Closed) => {
                        return Err(Error::Internal("the cache stopped".to_owned()))
                    }
                }
            }
        }
    }

    /// Converges every instance, in name order, and reports what it found.
    /// One instance's error does not stop the others.
    pub async fn reconcile_all(&self) -> Result<ReconcileReport> {
        let instances = self.list_instances(&Default::default()).await?;
        // The cache is caught up with this controller's writes; a converge
        // reads the store itself when it finds it behind another's.
        let mut report = ReconcileReport {
            instances: instances.len(),
            ..ReconcileReport::default()
        };
        for instance in instances {
            match self.converge(&instance.id).await {
                Ok(Some(after)) if after.has_converged() => report.converged += 1,
                Ok(Some(_)) => report.waiting += 1,
                Ok(None) => {}
                Err(e) => report.errors.push((instance.name, e.chain())),
            }
        }
        Ok(report)
    }

    /// Asks the runtime how a running instance is and records an exit.
    async fn observe(&self, id: &str) -> Result<()> {
        self.caught_up().await?;
        let cached = self.inner.cache.read().instance(id).cloned();
        let instance = match cached {
            Some(instance) => Instance::clone(&instance),
            None => match self.inner.store.get_object::<Instance>(id).await? {
                Some(instance) => instance,
                None => return Ok(()),
            },
        };
        let Some(state) = self.inspect_live(&instance).await? else {
            return Ok(());
        };
        let now = self.now();
        let mut exited = instance.clone();
        if !record_exit(&mut exited, state, now) {
            return Ok(());
        }
        self.update_instance_if(&instance, |i| *i = exited).await
    }

    /// What the runtime says of a running (or paused) placed instance;
    /// `None` for one that is not supposed to run.
    async fn inspect_live(&self, instance: &Instance) -> Result<Option<RuntimeState>> {
        if !runs_on_a_node(instance) {
            return Ok(None);
        }
        let driver = self.driver_for(instance)?;
        Ok(Some(driver.inspect(instance).await?))
    }

    /// `instance` as the runtime shows it now, without writing anything: a
    /// workload that exited shows as exited (as [`Controller::converge`]
    /// would record it), one that runs as it is stored. One whose runtime
    /// cannot be reached shows as stored, with its `RuntimeReady` condition
    /// saying so and that this is the state last recorded. What the
    /// embedded deployment's reads show when no converger runs.
    pub async fn observed(&self, instance: Instance) -> Instance {
        let mut seen = instance;
        match self.inspect_live(&seen).await {
            Ok(Some(state)) => {
                if !record_exit(&mut seen, state, self.now()) {
                    seen.runtime_size = self.runtime_size(&seen).await;
                }
            }
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::Unavailable => seen.set_condition(
                ConditionType::RuntimeReady,
                false,
                "RuntimeUnavailable",
                format!("{}; this is the state last recorded", e.chain()),
                self.now(),
            ),
            // Not the runtime's answer (no driver for the type here): as stored.
            Err(_) => {}
        }
        seen
    }

    /// `instance` as stored, with the size its runtime gives it when it
    /// runs (or is paused) with another than its spec's. What a read of a
    /// deployment whose workers record everything else shows: they record
    /// state, never the running size, which only the runtime knows.
    pub(crate) async fn with_runtime_size(&self, mut instance: Instance) -> Instance {
        if runs_on_a_node(&instance) {
            instance.runtime_size = self.runtime_size(&instance).await;
        }
        instance
    }

    /// The size the runtime gives running `instance`, when it is not the
    /// spec's yet; best effort (a read shows the spec without it), and
    /// bounded by [`RUNTIME_SIZE_DEADLINE`]: a hung agent or runtime must
    /// not hold up a read, nor an agent's own check of where an instance
    /// is placed (which is such a read).
    async fn runtime_size(&self, instance: &Instance) -> Option<crate::model::RuntimeSize> {
        let driver = self.driver_for(instance).ok()?;
        let asked = driver.resize()?.running_size(instance);
        let size = tokio::time::timeout(RUNTIME_SIZE_DEADLINE, asked)
            .await
            .ok()?
            .ok()??;
        let spec = &instance.spec;
        (size.cpus != spec.cpus || size.memory_mib != spec.memory_mib).then_some(size)
    }

    /// Places the instance through the placer, which commits the placement
    /// with the node's allocation. Returns false when no node fits (the
    /// reason is recorded on the instance), true when it was placed or
    /// someone else changed it first (the next plan sees their change).
    async fn schedule(&self, instance: Instance) -> Result<bool> {
        Ok(match self.place(instance, Mode::Existing).await? {
            Placed::Stored(stored) => stored.node.is_some(),
            Placed::Unchanged => false,
            Placed::Changed => true,
        })
    }

    async fn create_on_node(&self, instance: Instance) -> Result<()> {
        let Some(instance) = self.claim(&instance, InstanceStatus::Creating).await? else {
            return Ok(());
        };
        let driver = match self.driver_for(&instance) {
            Ok(driver) => driver,
            Err(e) => return self.record_failure(&instance, "CreateFailed", e).await,
        };
        // Its node joins its networks' overlays before it plugs in, so the
        // first packets already reach the other nodes.
        if let Err(e) = self.sync_overlays_of(&instance).await {
            return self.record_failure(&instance, "CreateFailed", e).await;
        }
        if let Err(e) = driver.create(&instance).await {
            return self
                .record_failure(&instance, "CreateFailed", e.into())
                .await;
        }
        // The create may have pulled its images onto the node.
        self.note_images_of(driver.as_ref(), &instance).await;
        let runtime = driver.runtime_of(&instance);
        let vsock = driver.vsock_of(&instance);
        let now = self.now();
        if instance.desired == DesiredState::Running {
            if let Err(e) = driver.start(&instance).await {
                return self
                    .record_failure(&instance, "StartFailed", e.into())
                    .await;
            }
            self.update_instance_if(&instance, |i| {
                i.runtime = Some(runtime);
                i.vsock = vsock;
                mark_running(i, now);
            })
            .await
        } else {
            self.update_instance_if(&instance, |i| {
                i.runtime = Some(runtime);
                i.vsock = vsock;
                mark_runtime_ok(i, InstanceStatus::Stopped, "Created", now);
            })
            .await
        }
    }

    async fn start_on_node(&self, instance: Instance) -> Result<()> {
        let driver = self.driver_for(&instance)?;
        let restart_by_policy = instance.exit.is_some();
        if let Err(e) = driver.start(&instance).await {
            return self
                .record_failure(&instance, "StartFailed", e.into())
                .await;
        }
        let now = self.now();
        self.update_instance_if(&instance, |i| {
            if restart_by_policy {
                i.restarts_done += 1;
            }
            mark_running(i, now);
        })
        .await
    }

    async fn stop_on_node(&self, instance: Instance) -> Result<()> {
        let Some(instance) = self.claim(&instance, InstanceStatus::Stopping).await? else {
            return Ok(());
        };
        let driver = self.driver_for(&instance)?;
        if let Err(e) = driver.stop(&instance, self.options().stop_grace).await {
            return self.record_failure(&instance, "StopFailed", e.into()).await;
        }
        self.record_runtime_ok(&instance, InstanceStatus::Stopped, "Stopped")
            .await
    }

    async fn restart_on_node(&self, instance: Instance) -> Result<()> {
        let driver = self.driver_for(&instance)?;
        if let Err(e) = driver.stop(&instance, self.options().stop_grace).await {
            return self.record_failure(&instance, "StopFailed", e.into()).await;
        }
        if let Err(e) = driver.start(&instance).await {
            return self
                .record_failure(&instance, "StartFailed", e.into())
                .await;
        }
        let now = self.now();
        self.update_instance_if(&instance, |i| {
            i.restarts_done = i.restarts_requested.max(i.restarts_done);
            mark_running(i, now);
        })
        .await
    }

    /// Removes the instance from its node, then in one transaction releases
    /// the node's resources and deletes the record (or unbinds it to be
    /// scheduled again).
    async fn remove_from_node(&self, instance: Instance) -> Result<()> {
        let Some(instance) = self.claim(&instance, InstanceStatus::Deleting).await? else {
            return Ok(());
        };
        match self.driver_for(&instance) {
            Ok(driver) => driver.delete(&instance).await?,
            // Without a driver for its type nothing can have been created.
            Err(Error::Driver(DriverError::Unsupported(_))) => {}
            Err(Error::FailedPrecondition(_)) => {}
            Err(e) => return Err(e),
        }
        self.release(instance).await
    }

    async fn release(&self, instance: Instance) -> Result<()> {
        let store = &self.inner.store;
        let mut instance = instance;
        for _ in 0..self.options().max_conflict_retries {
            let mut txn = Txn::new();
            let deleting = instance.desired == DesiredState::Deleted;
            let mut source = None;
            if let Some(node_id) = &instance.node {
                if let Some(mut node) = store.get_object::<Node>(node_id).await? {
                    node.allocated = node.allocated.saturating_sub(&instance.held());
                    node.updated_at = self.now();
                    source = Some(node);
                }
            }
            // A migration's target, chosen and checked by the migrate call,
            // is assigned here, in the transaction that releases the node
            // the runtime just left: the instance never counts on two
            // nodes, and never runs on two.
            let migrated = match (&instance.migrate_to, deleting) {
                (Some(target), false) => {
                    self.migration_target(&instance, target, source.as_mut())
                        .await?
                }
                _ => None,
            };
            if let Some(node) = &source {
                txn = put_object(txn, node);
            }
            if deleting {
                txn = txn
                    .delete(
                        Instance::key_for(&instance.id),
                        Precondition::Revision(instance.revision),
                    )
                    .delete(Self::name_key(&instance.name), Precondition::None);
            } else {
                let mut unbound = instance.clone();
                unbound.node = None;
                unbound.reschedule = false;
                unbound.migrate_to = None;
                unbound.status = InstanceStatus::Pending;
                unbound.exit = None;
                unbound.updated_at = self.now();
                if let Some(target) = migrated {
                    let now = self.now();
                    let message = format!("migrated to node `{}`", target.id);
                    unbound.node = Some(target.id.clone());
                    unbound.status = InstanceStatus::Scheduled;
                    unbound.compute_reserved = true;
                    unbound.set_condition(ConditionType::Scheduled, true, "Migrated", message, now);
                    if source.as_ref().is_none_or(|s| s.id != target.id) {
                        txn = put_object(txn, &target);
                    }
                }
                txn = txn.put(
                    Instance::key_for(&unbound.id),
                    encode(&unbound),
                    Precondition::Revision(instance.revision),
                );
            }
            match self.commit(txn).await {
                // Addresses go back once the record is gone (a crash in
                // between leaves them to `reconcile_networks`).
                Ok(_) => {
                    // Its node may no longer carry its networks. A failure
                    // here leaves a stale peer (harmless: traffic to a node
                    // without the network's instances is dropped there)
                    // until the next network reconcile.
                    if let Err(e) = self.sync_overlays_of(&instance).await {
                        tracing::warn!(instance = %instance.id, error = %e, "updating overlay peers");
                    }
                    if deleting {
                        return self.release_networks(&instance).await;
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => {
                    tokio::task::yield_now().await;
                    match store.get_object::<Instance>(&instance.id).await? {
                        Some(fresh) if fresh.status == InstanceStatus::Deleting => instance = fresh,
                        // Another reconciler finished the job.
                        _ => return Ok(()),
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("instance", &instance.id))
    }

    /// Gives the instance's CPU and memory back to its node (`reserve` false)
    /// or reserves them again (`reserve` true), in one transaction with the
    /// instance. A reservation the node has no room for (or that its status
    /// forbids) is not made: the reason is recorded on the instance and
    /// false returned. True once done, or when someone else changed the
    /// instance first (the next plan sees their change).
    async fn move_compute(&self, instance: Instance, reserve: bool) -> Result<bool> {
        let store = &self.inner.store;
        let node_id = instance.node.clone().unwrap_or_default();
        for _ in 0..self.options().max_conflict_retries {
            let Some(mut node) = store.get_object::<Node>(&node_id).await? else {
                return Ok(true);
            };
            let compute = Resources {
                cpus: instance.spec.cpus,
                memory_mib: instance.spec.memory_mib,
                ..Resources::default()
            };
            let now = self.now();
            let mut next = instance.clone();
            next.compute_reserved = reserve;
            next.updated_at = now;
            if reserve {
                if let Some(why) = self.no_room(&node, &instance, &compute).await? {
                    let recorded = instance
                        .condition(ConditionType::Scheduled)
                        .is_some_and(|c| !c.status && c.message == why);
                    if !recorded {
                        self.update_instance_if(&instance, |i| {
                            i.set_condition(
                                ConditionType::Scheduled,
                                false,
                                "WaitingForCapacity",
                                why.clone(),
                                now,
                            );
                        })
                        .await?;
                    }
                    return Ok(false);
                }
                node.allocated = node.allocated.saturating_add(&compute);
                let message = format!("its CPU and memory are reserved on node `{}`", node.id);
                next.set_condition(ConditionType::Scheduled, true, "Reserved", message, now);
            } else {
                node.allocated = node.allocated.saturating_sub(&compute);
            }
            node.updated_at = now;
            match self
                .commit(put_object(put_object(Txn::new(), &node), &next))
                .await
            {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { key, .. }) if key == Node::key_for_id(&node_id) => {
                    // Another instance's placement or release on that node: again.
                    tokio::task::yield_now().await;
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => return Ok(true),
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("node", &node_id))
    }

    /// Why `instance` cannot have `compute` on its `node` now, naming what
    /// holds the node's capacity; `None` when it fits.
    async fn no_room(
        &self,
        node: &Node,
        instance: &Instance,
        compute: &Resources,
    ) -> Result<Option<String>> {
        if node.status == NodeStatus::Decommissioned {
            return Ok(Some(format!(
                "node `{}` is decommissioned: `{}` cannot run there again; delete it, then \
                 delete the node",
                node.id, instance.name
            )));
        }
        if matches!(node.status, NodeStatus::Maintenance | NodeStatus::Draining) {
            return Ok(Some(format!(
                "node `{}` is {}: `{}` starts there again once it is ready",
                node.id,
                node.status.as_str(),
                instance.name
            )));
        }
        if node.allocatable().fits(&node.allocated, compute) {
            return Ok(None);
        }
        let free = node.free();
        let mut holders: Vec<Instance> = self
            .instances_on(&node.id)
            .await?
            .into_iter()
            .filter(|i| i.compute_reserved && i.id != instance.id)
            .collect();
        holders.sort_by(|a, b| b.spec.cpus.cmp(&a.spec.cpus).then(a.name.cmp(&b.name)));
        let named: Vec<String> = holders
            .iter()
            .take(5)
            .map(|i| {
                format!(
                    "{} ({} cpus, {} MiB)",
                    i.name, i.spec.cpus, i.spec.memory_mib
                )
            })
            .collect();
        let more = holders.len().saturating_sub(named.len());
        let held_by = if named.is_empty() {
            String::new()
        } else if more > 0 {
            format!("; held by {} and {more} more", named.join(", "))
        } else {
            format!("; held by {}", named.join(", "))
        };
        Ok(Some(format!(
            "node `{}` has {} cpus and {} MiB free, `{}` needs {} cpus and {} MiB to start again{held_by}",
            node.id, free.cpus, free.memory_mib, instance.name, compute.cpus, compute.memory_mib
        )))
    }

    /// Moves the instance to a transitional status before acting on it, so a
    /// crash mid-action is re-driven from that status. Returns the claimed
    /// instance, or `None` if another reconciler changed it first.
    async fn claim(&self, instance: &Instance, status: InstanceStatus) -> Result<Option<Instance>> {
        if instance.status == status {
            return Ok(Some(instance.clone()));
        }
        let mut claimed = instance.clone();
        claimed.status = status;
        claimed.updated_at = self.now();
        match self.commit(put_object(Txn::new(), &claimed)).await {
            Ok(revision) => {
                claimed.revision = revision;
                Ok(Some(claimed))
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    async fn set_status(&self, instance: &Instance, status: InstanceStatus) -> Result<()> {
        self.update_instance_if(instance, |i| i.status = status)
            .await
    }

    async fn record_runtime_ok(
        &self,
        instance: &Instance,
        status: InstanceStatus,
        reason: &str,
    ) -> Result<()> {
        let now = self.now();
        self.update_instance_if(instance, |i| mark_runtime_ok(i, status, reason, now))
            .await
    }

    /// Records a failed runtime call on the instance. A runtime that is
    /// unreachable leaves the state alone (the next converge retries) and
    /// returns the error; any other failure marks the instance failed.
    async fn record_failure(&self, instance: &Instance, reason: &str, error: Error) -> Result<()> {
        if error.kind() == ErrorKind::Unavailable {
            return Err(error);
        }
        let now = self.now();
        let message = error.chain();
        self.update_instance_if(instance, |i| {
            i.status = InstanceStatus::Failed;
            i.exit = None;
            i.failure = Some(Failure {
                attempts: i
                    .failure
                    .as_ref()
                    .map_or(0, |f| f.attempts)
                    .saturating_add(1),
                at: now,
            });
            i.set_condition(
                ConditionType::RuntimeReady,
                false,
                reason,
                message.clone(),
                now,
            );
        })
        .await
    }

    /// Applies `change` to `instance` if nobody changed it since it was read;
    /// if someone did, does nothing (the next plan sees their change).
    async fn update_instance_if<F>(&self, instance: &Instance, change: F) -> Result<()>
    where
        F: FnOnce(&mut Instance),
    {
        let mut next = instance.clone();
        change(&mut next);
        next.updated_at = self.now();
        match self.commit(put_object(Txn::new(), &next)).await {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

/// Records on `i` what the runtime says of it, when that is an exit (or a
/// runtime that lost it); returns whether it changed anything. The one
/// owner of how an exit is recorded: [`Controller::converge`] writes it,
/// [`Controller::observed`] only shows it.
fn record_exit(i: &mut Instance, state: RuntimeState, now: DateTime<Utc>) -> bool {
    let (code, oom_killed, at) = match state {
        RuntimeState::Running | RuntimeState::Paused => return false,
        RuntimeState::Exited {
            code,
            oom_killed,
            at,
        } => (code, oom_killed, at),
        RuntimeState::Created => (0, false, None),
        // The runtime lost it (a host reboot, someone removed it by hand).
        RuntimeState::Missing => (-1, false, None),
    };
    let exit = ExitStatus {
        code,
        oom_killed,
        at: at.unwrap_or(now),
    };
    let (status, reason, message) = if oom_killed {
        (
            InstanceStatus::Failed,
            "OomKilled",
            format!(
                "killed by the OOM killer (memory limit {} MiB)",
                i.spec.memory_mib
            ),
        )
    } else if code == 0 {
        (
            InstanceStatus::Stopped,
            "Completed",
            "exited with code 0".to_owned(),
        )
    } else if code < 0 {
        (
            InstanceStatus::Failed,
            "Lost",
            "the runtime no longer knows this instance".to_owned(),
        )
    } else {
        (
            InstanceStatus::Failed,
            "Error",
            format!("exited with code {code}"),
        )
    };
    i.set_condition(ConditionType::Exited, true, reason, message, now);
    if i.desired == DesiredState::Running && !restarts_after_exit(i.spec.restart, Some(&exit)) {
        // It ran to its end and nothing brings it back: the intent is
        // fulfilled, so a later converge must not start it again. A stop
        // or delete asked for meanwhile stands.
        i.desired = DesiredState::Stopped;
    }
    i.status = status;
    i.exit = Some(exit);
    true
}

/// Records that the runtime accepted a change that left the instance in `status`.
fn mark_runtime_ok(i: &mut Instance, status: InstanceStatus, reason: &str, now: DateTime<Utc>) {
    i.status = status;
    i.set_condition(
        ConditionType::RuntimeReady,
        true,
        reason,
        "the runtime accepted the change",
        now,
    );
}

fn mark_running(instance: &mut Instance, now: DateTime<Utc>) {
    instance.status = InstanceStatus::Running;
    instance.started_at = Some(now);
    instance.exit = None;
    instance.failure = None;
    instance.set_condition(
        ConditionType::RuntimeReady,
        true,
        "Started",
        "the runtime started it",
        now,
    );
    if let Some(c) = instance.condition(ConditionType::Exited) {
        if c.status {
            instance.set_condition(
                ConditionType::Exited,
                false,
                "Running",
                "running again",
                now,
            );
        }
    }
}

/// Whether `instance` is recorded running (or paused) on a node: the ones
/// whose runtime a read asks. Not one migrating live: its source's
/// runtime loses it on purpose, which must not read as an exit.
fn runs_on_a_node(instance: &Instance) -> bool {
    let live = matches!(
        instance.status,
        InstanceStatus::Running | InstanceStatus::Paused
    );
    live && instance.node.is_some() && instance.live_migration_target().is_none()
}

#[cfg(test)]
mod tests;
