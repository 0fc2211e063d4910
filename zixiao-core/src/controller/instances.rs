//! Instance operations: create, look up, list, update, and the intents
//! start, stop, restart and delete. Each intent is written first;
//! [`Controller::converge`] carries it out. An update's new size is the
//! exception that reaches the runtime at once, where it can take it live.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::placer::{Mode, Placed};
use super::{Controller, INSTANCE_NAMES_PREFIX};
use crate::driver::{ConsoleStream, DriverError, InstanceStats, LogChunk};
use crate::model::{
    CloneOrigin, CreateInstance, DesiredState, Instance, InstanceStatus, InstanceType,
    InstanceUpdate, NodeStatus, TemplateOrigin,
};
use crate::store::{StoreError, StoreExt};
use crate::{Error, Result};

/// Which instances [`Controller::list_instances`] returns. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFilter {
    /// Only this type.
    #[serde(default)]
    pub instance_type: Option<InstanceType>,
    /// Only this status.
    #[serde(default)]
    pub status: Option<InstanceStatus>,
    /// Only instances on this node.
    #[serde(default)]
    pub node: Option<String>,
    /// Only instances carrying all these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl InstanceFilter {
    /// Whether `instance` passes.
    pub fn matches(&self, instance: &Instance) -> bool {
        self.instance_type
            .is_none_or(|t| instance.spec.instance_type == t)
            && self.status.is_none_or(|s| instance.status == s)
            && self
                .node
                .as_deref()
                .is_none_or(|n| instance.node.as_deref() == Some(n))
            && self
                .labels
                .iter()
                .all(|(k, v)| instance.labels.get(k) == Some(v))
    }
}

fn name_key(name: &str) -> String {
    format!("{INSTANCE_NAMES_PREFIX}{name}")
}

impl Controller {
    /// Validates `request` and stores the instance's intent (desired state
    /// running), placed on a node with the node's allocation, or pending
    /// with the reason when no node fits, in one transaction together with
    /// what the [`Admission`](super::Admission)s add: one durable commit.
    /// Concurrent creates share that commit where they can (see the
    /// placer). It returns before anything runs: call
    /// [`Controller::converge`] (or [`Controller::settle`]) to wait for the
    /// outcome.
    ///
    /// Errors: `InvalidArgument` naming the field, `AlreadyExists` (the name
    /// is taken), `Unsupported` (no registered node can run that type, with
    /// each node's reason), `ResourceExhausted` (a network's address pool),
    /// an admission's error, the store's errors. Nothing is stored or
    /// allocated on error.
    pub async fn create_instance(&self, request: CreateInstance) -> Result<Instance> {
        self.create_instance_from(request, None, None).await
    }

    /// [`Controller::create_instance`], recording the template version the
    /// request was made from, or the instance it clones, if any.
    pub(super) async fn create_instance_from(
        &self,
        request: CreateInstance,
        template: Option<TemplateOrigin>,
        clone_of: Option<CloneOrigin>,
    ) -> Result<Instance> {
        request.validate()?;
        self.inner.cache.ready().await?;
        self.check_runtime_available(request.spec.instance_type)?;
        let now = self.now();
        let mut instance = Instance::new(uuid::Uuid::new_v4().to_string(), request, now);
        instance.template = template;
        instance.clone_of = clone_of;
        // A network reconcile may release the addresses as an orphan's
        // between their allocation and this commit (the instance is not
        // stored yet); the commit checks they still stand, and on losing
        // that race allocates again.
        for _ in 0..self.options().max_conflict_retries {
            self.attach_networks(&mut instance).await?;
            // Each published port leads to an address of its family (known
            // once the addresses are allocated), or nothing is stored.
            if let Some(first) = instance.attachments.first() {
                if let Err(e) = crate::model::check_targets(&instance.spec.publish, first) {
                    let _ = self.release_networks(&instance).await;
                    return Err(e);
                }
            }
            let error = match self.place(instance.clone(), Mode::Create).await {
                Ok(Placed::Stored(stored)) => return Ok(*stored),
                Ok(Placed::Unchanged | Placed::Changed) => {
                    Error::Internal("a new instance cannot be unchanged".to_owned())
                }
                // An allocation or an admission's key changed under us, or
                // an admission found the cache behind the store: allocate
                // and admit again once the cache shows the change.
                Err(Error::Store(StoreError::Conflict { found, .. })) => {
                    if found > 0 {
                        let _ = self.inner.cache.wait_for(found).await;
                    }
                    continue;
                }
                Err(Error::Conflict(_)) | Err(Error::Store(StoreError::NotFound(_))) => continue,
                // The commit may have stored the instance with its
                // addresses: keep them. If it did not, the network
                // reconcile releases them as an orphan's once the store
                // shows no instance holding them; releasing them now could
                // hand them to another instance while this one has them.
                Err(error @ Error::Store(StoreError::OutcomeUnknown { .. })) => return Err(error),
                Err(other) => other,
            };
            // Not stored: its addresses go back to their pools.
            let _ = self.release_networks(&instance).await;
            return Err(error);
        }
        let _ = self.release_networks(&instance).await;
        Err(self.too_many_conflicts("instance", &instance.name))
    }

    /// Fails unless some node offers `instance_type`, naming each node's
    /// reason; counted by the cache, so it costs nothing when one does.
    fn check_runtime_available(&self, instance_type: InstanceType) -> Result<()> {
        let state = self.inner.cache.read();
        if state.nodes_offering(instance_type) > 0 {
            return Ok(());
        }
        let nodes = state.nodes.nodes();
        let why = if nodes.is_empty() {
            "no nodes are registered".to_owned()
        } else {
            nodes
                .iter()
                .map(|n| {
                    let reason = n
                        .missing_runtimes
                        .get(&instance_type)
                        .map_or("it does not offer one", String::as_str);
                    format!("node `{}`: {reason}", n.id)
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        Err(Error::Unsupported(format!(
            "no node can run {instance_type} instances ({why})"
        )))
    }

    /// The instance with id or name `instance`. Errors: `NotFound`.
    pub async fn get_instance(&self, instance: &str) -> Result<Instance> {
        let store = &self.inner.store;
        if let Some(found) = store.get_object::<Instance>(instance).await? {
            return Ok(found);
        }
        if let Some(kv) = store.get(&name_key(instance)).await? {
            let id = String::from_utf8_lossy(&kv.value).into_owned();
            if let Some(found) = store.get_object::<Instance>(&id).await? {
                return Ok(found);
            }
        }
        Err(Error::not_found(format!("instance `{instance}`")))
    }

    /// The instances `filter` accepts, in name order, from the cache: as
    /// of at least this controller's last write (another server's writes
    /// show within the watch's lag).
    pub async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        self.caught_up().await?;
        let state = self.inner.cache.read();
        let mut instances: Vec<Instance> = match &filter.node {
            Some(node) => state
                .instances_on(node)
                .into_iter()
                .filter(|i| filter.matches(i))
                .map(|i| Instance::clone(&i))
                .collect(),
            None => state
                .instances()
                .filter(|i| filter.matches(i))
                .map(|i| Instance::clone(i))
                .collect(),
        };
        drop(state);
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(instances)
    }

    /// Asks for the instance to run. A failed instance is created and
    /// started again. Idempotent. Errors: `NotFound`, `FailedPrecondition`
    /// (being deleted; paused: a start would answer at once and leave it
    /// frozen, so it says to resume it instead; on a decommissioned node).
    pub async fn start_instance(&self, instance: &str) -> Result<Instance> {
        let id = self.runnable_where_it_is(instance).await?;
        self.update_object::<Instance, _>(&id, |i| {
            refuse_if_deleted(i)?;
            if i.status == InstanceStatus::Paused {
                return Err(Error::FailedPrecondition(format!(
                    "instance `{}` is paused: it runs, frozen, and a start changes nothing; \
                     resume it to thaw it (`zixiao instance resume {}`)",
                    i.name, i.name
                )));
            }
            let retry_failed = i.status == InstanceStatus::Failed && i.node.is_some();
            if i.desired == DesiredState::Running && !retry_failed {
                return Ok(false);
            }
            i.desired = DesiredState::Running;
            // A start by a person is not a restart-policy restart: forget the
            // last exit and failures so the reconciler starts it without a back-off.
            i.exit = None;
            i.failure = None;
            if retry_failed {
                // Creating is idempotent, so a failed create or a crashed
                // workload both recover by going through create again.
                i.status = InstanceStatus::Scheduled;
            }
            Ok(true)
        })
        .await
    }

    /// The id of `instance`, unless the node it stays on is decommissioned:
    /// a start there could only wait forever, so it is refused, changing
    /// nothing. Errors: `NotFound`, `FailedPrecondition`.
    async fn runnable_where_it_is(&self, instance: &str) -> Result<String> {
        let found = self.get_instance(instance).await?;
        if let Some(node) = &found.node {
            let retired = match self.get_node(node).await {
                Ok(node) => node.status == NodeStatus::Decommissioned,
                Err(e) if e.kind() == crate::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if retired {
                return Err(Error::FailedPrecondition(format!(
                    "instance `{}` stays on node `{node}`, which is decommissioned: it cannot \
                     run there again; delete it (`zixiao instance delete {}`)",
                    found.name, found.name
                )));
            }
        }
        Ok(found.id)
    }

    /// Asks for the instance to stop (it stays on its node). Idempotent.
    /// Errors: `NotFound`, `FailedPrecondition` (being deleted).
    pub async fn stop_instance(&self, instance: &str) -> Result<Instance> {
        let id = self.get_instance(instance).await?.id;
        self.update_object::<Instance, _>(&id, |i| {
            refuse_if_deleted(i)?;
            if i.desired == DesiredState::Stopped {
                return Ok(false);
            }
            i.desired = DesiredState::Stopped;
            Ok(true)
        })
        .await
    }

    /// Asks for a running instance to be stopped and started again (a stopped
    /// one is just started). Errors: `NotFound`, `FailedPrecondition` (being
    /// deleted, on a decommissioned node).
    pub async fn restart_instance(&self, instance: &str) -> Result<Instance> {
        let id = self.runnable_where_it_is(instance).await?;
        self.update_object::<Instance, _>(&id, |i| {
            refuse_if_deleted(i)?;
            i.desired = DesiredState::Running;
            if i.status == InstanceStatus::Running {
                i.restarts_requested = i.restarts_done + 1;
            } else if i.status == InstanceStatus::Failed && i.node.is_some() {
                i.status = InstanceStatus::Scheduled;
                i.exit = None;
                i.failure = None;
            }
            Ok(true)
        })
        .await
    }

    /// Changes the instance's labels, restart policy, CPUs, memory or
    /// snapshot schedule; see
    /// [`Request::UpdateInstance`](crate::api::Request::UpdateInstance) for
    /// what a user sees.
    ///
    /// The new labels and spec are stored in one compare-and-swap
    /// transaction with the node's allocation (when what the instance
    /// holds there changes: within the node's free capacity) and the
    /// admissions' writes ([`Admission::admit_update`]: a project's quota).
    /// Then a size change reaches the runtime: a driver with
    /// [`Resize`](crate::driver::Resize) takes it at once (live, for a
    /// running instance); a running instance on one without is restarted
    /// when `restart_if_needed` allows (refused otherwise, before anything
    /// is stored); a stopped or pending one takes it at its next start. If
    /// the runtime refuses the new size, the stored update is put back.
    /// Idempotent: an update that changes nothing stores nothing (a size
    /// asked for again is still handed to a runtime that resizes live).
    ///
    /// Errors: `InvalidArgument` naming the field, `NotFound`,
    /// `Unsupported` (a snapshot schedule for an instance that cannot be
    /// snapshotted), `FailedPrecondition` (being deleted; being created or stopped while
    /// its size changes; a restart needed and not allowed),
    /// `ResourceExhausted` (the node's shortfall, or an admission's),
    /// `Conflict` (kept changing), the runtime's errors, the store's.
    ///
    /// [`Admission::admit_update`]: super::Admission::admit_update
    pub async fn update_instance(
        &self,
        instance: &str,
        update: InstanceUpdate,
    ) -> Result<Instance> {
        update.validate()?;
        self.inner.cache.ready().await?;
        for _ in 0..self.options().max_conflict_retries {
            let current = self.get_instance(instance).await?;
            refuse_if_deleted(&current)?;
            let mut next = current.clone();
            if !update.apply(&mut next)? {
                // Nothing to store. A size asked for again is still made
                // the runtime's where it takes one live (idempotent), which
                // also mends a runtime that a failed put-back left behind.
                if update.asks_resize()
                    && matches!(
                        self.resize_plan(&current, &current.spec, &update),
                        Ok(ResizePlan::Runtime)
                    )
                {
                    self.resize_on_node(&current).await?;
                }
                return Ok(current);
            }
            if update.asks_snapshot_schedule() {
                self.check_can_snapshot(&next)?;
            }
            // A container's caps and a VM's maximums are part of its
            // size: the cgroup or the domain has them.
            let size = |s: &crate::InstanceSpec| {
                (
                    (s.cpus, s.cpu_limit, s.max_cpus),
                    (s.memory_mib, s.memory_limit_mib, s.max_memory_mib),
                    s.disk_gib,
                )
            };
            let resized = size(&next.spec) != size(&current.spec);
            let runtime = if resized {
                self.resize_plan(&current, &next.spec, &update)?
            } else {
                ResizePlan::StoreOnly
            };
            if runtime == ResizePlan::Restart {
                next.restarts_requested = next.restarts_done + 1;
            }
            next.updated_at = self.now();
            let stored = match self.place_update(current.clone(), next).await {
                Ok(Placed::Stored(stored)) => *stored,
                Ok(Placed::Changed) => continue,
                Ok(Placed::Unchanged) => return Ok(current),
                // The node or an admission's key changed under us: again,
                // once the cache shows the change.
                Err(Error::Store(StoreError::Conflict { found, .. })) => {
                    if found > 0 {
                        let _ = self.inner.cache.wait_for(found).await;
                    }
                    continue;
                }
                Err(Error::Conflict(_)) | Err(Error::Store(StoreError::NotFound(_))) => continue,
                Err(other) => return Err(other),
            };
            if runtime == ResizePlan::Runtime {
                if let Err(error) = self.resize_on_node(&stored).await {
                    self.undo_update(&current, stored).await;
                    return Err(error);
                }
            }
            return Ok(stored);
        }
        Err(self.too_many_conflicts("instance", instance))
    }

    /// How `next`, the new size of `instance`, reaches its runtime, or
    /// why it cannot.
    fn resize_plan(
        &self,
        instance: &Instance,
        next: &crate::InstanceSpec,
        update: &InstanceUpdate,
    ) -> Result<ResizePlan> {
        use InstanceStatus as S;
        if instance.node.is_none() {
            // Placed with the new size when it is placed.
            return Ok(ResizePlan::StoreOnly);
        }
        match instance.status {
            // Placed, not created yet: the converge that creates it claims
            // it (a compare-and-swap) first, so it creates what is stored
            // once this update is, the new size included.
            S::Scheduled => Ok(ResizePlan::StoreOnly),
            // A create or stop in flight may be using the old size.
            S::Creating | S::Stopping | S::Deleting => Err(Error::FailedPrecondition(format!(
                "instance `{}` is {}: its size can change once that is done \
                     (`zixiao instance get {}` shows when)",
                instance.name,
                instance.status.as_str(),
                instance.name
            ))),
            S::Running | S::Paused => {
                let driver = self.driver_for(instance)?;
                let runtime = instance.runtime.as_deref().unwrap_or(driver.name());
                let why = match driver.resize() {
                    Some(resize) => match resize.restart_needed(&instance.spec, next) {
                        None => return Ok(ResizePlan::Runtime),
                        Some(why) => format!("{why} (on {runtime})"),
                    },
                    None => {
                        format!("{runtime} cannot change its CPUs or memory while it runs")
                    }
                };
                if update.restart_if_needed {
                    Ok(ResizePlan::Restart)
                } else {
                    Err(Error::FailedPrecondition(format!(
                        "instance `{}` is {}: {why}: the new size needs a restart; allow it \
                         with `--restart-if-needed` (`restart_if_needed` in the API), or \
                         stop the instance first; nothing was changed",
                        instance.name,
                        instance.status.as_str(),
                    )))
                }
            }
            // Not running: the next start takes the stored size. A runtime
            // that keeps a size of its own (a container's record) is told.
            S::Pending | S::Stopped | S::Failed => match self.driver_for(instance) {
                Ok(driver) if driver.resize().is_some() => Ok(ResizePlan::Runtime),
                _ => Ok(ResizePlan::StoreOnly),
            },
        }
    }

    /// Makes the stored size the runtime's ([`Resize`](crate::driver::Resize)).
    /// A runtime that never created the instance has nothing to change.
    async fn resize_on_node(&self, instance: &Instance) -> Result<()> {
        let driver = self.driver_for(instance)?;
        match driver.require_resize()?.resize(instance).await {
            Ok(()) => Ok(()),
            Err(DriverError::NotFound(_)) if instance.status != InstanceStatus::Running => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts back what `stored` (an update of `before` that its runtime
    /// refused) changed, unless it changed again meanwhile; best effort,
    /// the runtime's refusal is what the caller hears.
    async fn undo_update(&self, before: &Instance, stored: Instance) {
        let mut back = stored.clone();
        back.labels = before.labels.clone();
        back.spec = before.spec.clone();
        back.restarts_requested = before.restarts_requested.max(stored.restarts_done);
        back.updated_at = self.now();
        // Changed again meanwhile, or the store failed: the newer state
        // stands, and the caller hears of the runtime's refusal.
        if let Ok(Placed::Stored(back)) = self.place_update(stored, back).await {
            // The runtime may have taken part of the new size.
            let _ = self.resize_on_node(&back).await;
        }
    }

    /// Asks for the instance to be deleted: removed from its node, its
    /// resources released, its record and name freed. Idempotent while the
    /// record exists. Errors: `NotFound`, `FailedPrecondition` (linked clones
    /// use its disk: they are named).
    pub async fn delete_instance(&self, instance: &str) -> Result<Instance> {
        let id = self.get_instance(instance).await?.id;
        self.refuse_if_linked_clones(&id).await?;
        self.update_object::<Instance, _>(&id, |i| {
            if i.desired == DesiredState::Deleted {
                return Ok(false);
            }
            i.desired = DesiredState::Deleted;
            Ok(true)
        })
        .await
    }

    /// Freezes a running instance in place (its memory and processes stay).
    /// Idempotent. Errors: `NotFound`, `FailedPrecondition` (not running),
    /// `Unsupported` (the runtime cannot pause), the driver's errors.
    pub async fn pause_instance(&self, instance: &str) -> Result<Instance> {
        self.freeze(instance, true).await
    }

    /// Thaws a paused instance. Idempotent. Errors: `NotFound`,
    /// `FailedPrecondition` (not paused), `Unsupported`, the driver's errors.
    pub async fn resume_instance(&self, instance: &str) -> Result<Instance> {
        self.freeze(instance, false).await
    }

    async fn freeze(&self, instance: &str, pause: bool) -> Result<Instance> {
        let current = self.get_instance(instance).await?;
        let (from, to) = if pause {
            (InstanceStatus::Running, InstanceStatus::Paused)
        } else {
            (InstanceStatus::Paused, InstanceStatus::Running)
        };
        let already = current.status == to;
        if !already && current.status != from {
            return Err(Error::FailedPrecondition(format!(
                "instance `{}` is {}; only a {} instance can be {}",
                current.name,
                current.status.as_str(),
                from.as_str(),
                if pause { "paused" } else { "resumed" }
            )));
        }
        // Asked of the runtime even when the store has it so already: the
        // calls are idempotent, and a runtime left otherwise (a snapshot
        // cut off while the guest was paused for it) is put right.
        let driver = self.driver_for(&current)?;
        let capability = driver.require_pause()?;
        if pause {
            capability.pause(&current).await?;
        } else {
            capability.resume(&current).await?;
        }
        if already {
            return Ok(current);
        }
        let id = current.id.clone();
        let now = self.now();
        self.update_object::<Instance, _>(&id, |i| {
            if i.status != from {
                return Ok(false);
            }
            i.status = to;
            i.updated_at = now;
            Ok(true)
        })
        .await
    }

    /// Current resource usage of a placed instance. Errors: `NotFound`,
    /// `FailedPrecondition` (not on a node), `Unsupported` (the runtime cannot
    /// measure), the driver's errors.
    pub async fn instance_stats(&self, instance: &str) -> Result<InstanceStats> {
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(driver.require_stats()?.stats(&instance).await?)
    }

    /// A reader of the instance's log (console, or stdout and stderr). It
    /// holds what it needs of the instance and its driver, not the store, so
    /// a follower may keep it as long as it likes. Errors: `NotFound`,
    /// `FailedPrecondition` (not on a node yet; never started and nothing
    /// logged, which an empty log would hide), `Unsupported`, `Unavailable`.
    pub async fn logs(&self, instance: &str) -> Result<LogReader> {
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        let reader = LogReader { driver, instance };
        if reader.instance.started_at.is_none() {
            // A guest that died in its first moments may have logged why.
            let logged = match reader.read(0, 1).await {
                Ok(chunk) => !chunk.data.is_empty(),
                Err(e) if e.kind() == crate::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if !logged {
                let i = &reader.instance;
                return Err(Error::FailedPrecondition(format!(
                    "instance `{}` has never started, so it has no log (it is {}{})",
                    i.name,
                    i.status.as_str(),
                    i.problem().map(|p| format!(": {p}")).unwrap_or_default()
                )));
            }
        }
        Ok(reader)
    }

    /// Attaches to a running instance's console. Errors: `NotFound`,
    /// `FailedPrecondition` (not on a node, not running), `Unsupported` (the
    /// runtime has no console), the driver's errors.
    pub async fn attach_console(&self, instance: &str) -> Result<ConsoleStream> {
        let instance = self.get_instance(instance).await?;
        let driver = self.driver_for(&instance)?;
        Ok(driver.require_console()?.attach(&instance).await?)
    }

    pub(super) fn driver_for(
        &self,
        instance: &Instance,
    ) -> Result<std::sync::Arc<dyn crate::Driver>> {
        let node = instance.node.as_deref().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "instance `{}` is not on a node yet ({})",
                instance.name,
                instance.problem().unwrap_or("pending")
            ))
        })?;
        Ok(self.agent(node)?.driver(instance.spec.instance_type)?)
    }

    pub(super) fn name_key(name: &str) -> String {
        name_key(name)
    }
}

/// How an update's new size reaches the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResizePlan {
    /// Nothing to tell the runtime: the size is read at the next start.
    StoreOnly,
    /// The driver takes it now ([`Resize`](crate::driver::Resize)).
    Runtime,
    /// The instance restarts to take it.
    Restart,
}

fn refuse_if_deleted(instance: &Instance) -> Result<()> {
    if instance.desired == DesiredState::Deleted {
        return Err(Error::FailedPrecondition(format!(
            "instance `{}` is being deleted",
            instance.name
        )));
    }
    Ok(())
}

/// Reads one instance's log from its driver; see [`Controller::logs`].
#[derive(Debug, Clone)]
pub struct LogReader {
    driver: std::sync::Arc<dyn crate::Driver>,
    instance: Instance,
}

impl LogReader {
    /// Up to `max` bytes from `offset`; read again from `next_offset` to follow.
    /// Errors: `NotFound` (no log yet), `Unavailable`.
    pub async fn read(&self, offset: u64, max: usize) -> Result<LogChunk> {
        Ok(self.driver.read_log(&self.instance, offset, max).await?)
    }

    /// Whether the instance still runs, so more may be written.
    pub async fn is_running(&self) -> Result<bool> {
        let state = self.driver.inspect(&self.instance).await?;
        Ok(matches!(
            state,
            crate::RuntimeState::Running | crate::RuntimeState::Paused
        ))
    }

    /// The log from `offset` as it grows: pieces of up to [`FOLLOW_CHUNK`]
    /// bytes, ending once the instance no longer runs and all it wrote was
    /// read. Looks for more every [`FOLLOW_POLL`].
    pub fn follow(self, offset: u64) -> impl futures::Stream<Item = Result<Vec<u8>>> + Send {
        futures::stream::try_unfold((self, offset), |(reader, offset)| async move {
            loop {
                let chunk = reader.read(offset, FOLLOW_CHUNK).await?;
                if chunk.next_offset > offset {
                    return Ok(Some((chunk.data, (reader, chunk.next_offset))));
                }
                if !reader.is_running().await? {
                    // Written between the read and the exit: read once more.
                    let last = reader.read(offset, FOLLOW_CHUNK).await?;
                    if last.next_offset > offset {
                        return Ok(Some((last.data, (reader, last.next_offset))));
                    }
                    return Ok(None);
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        })
    }
}

/// The most a followed log sends at once.
pub const FOLLOW_CHUNK: usize = 64 * 1024;

/// How often a followed log looks for more.
pub const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(200);
