//! Migrations on the controller: [`Controller::migrate_instance`] moves a
//! running instance to another node, keeping its id, name, MACs and
//! addresses, as an operation of kind `migrate` whose steps say where it
//! is.
//!
//! **Restart** (`placing`, `stopping`, `starting`, `done`; `returning`
//! when the target could not run it) is an eviction with a destination:
//! the call checks everything a user can get wrong and picks the target
//! with the scheduler (nothing is written before), then marks the
//! instance `reschedule` with `migrate_to`. The reconciler that owns the
//! instance removes its runtime from the source (the fence: the source
//! stops before anything starts on the target) and, in the transaction
//! that releases the source's allocation, assigns the target and reserves
//! its room ([`Controller::migration_target`]); it then creates and starts
//! it there as any placed instance. A target that cannot run it sends it
//! back the same way, so a failed migration leaves it running on the
//! source. The workload starts afresh on the target (a container from its
//! image, a diskless microVM from its kernel).
//!
//! **Live** (`placing`, `preparing`, `migrating`, `switching`, `done`)
//! moves a running VM while it runs, through both nodes' drivers'
//! [`LiveMigrate`](crate::driver::LiveMigrate) capability, all in the
//! call: `placing` reserves the instance's room on the target and records
//! `migrate_to` without `reschedule` in one transaction
//! ([`Instance::live_migration_target`]: from then on no reconciler acts
//! on it and neither node's agent removes it as a stray); `preparing` has
//! the target's driver make its files and answer where to send it;
//! `migrating` has the source's driver move it (libvirt's peer-to-peer
//! migration); `switching` moves the record to the target in one
//! transaction (its node, the source's allocation released, the target's
//! kept) with nothing stopped or created again: the domain already runs
//! there. **Never two running copies**: the runtime pauses the source for
//! the last copy and resumes the target only once the source has handed
//! over, and ends the source after; a failed migration resumes the
//! source. On a failure before `switching` the target's
//! `abort_incoming` removes what it prepared, the reservation and
//! `migrate_to` are undone in one transaction, the instance keeps running
//! on its source, and the error names the step and keeps the cause. A
//! call that cut off while the runtime finished anyway (a timeout) is
//! found out by asking the target, and switched.
//!
//! Cold migration (copying a stopped VM's disk between agents) is refused
//! as `Unsupported`, and `auto` migrates live when both nodes' drivers
//! can, else refuses to restart a VM or microVM whose disk would be lost.
//! A server that dies mid-way leaves `migrate_to` recorded: the instance
//! is then left alone by the reconcilers until a person acts (the
//! migration is not resumed).

use std::future::Future;
use std::time::Duration;

use super::{Controller, Convergence};
use crate::driver::{DriverError, MigrationTarget, RuntimeState};
use crate::model::{
    ConditionType, DesiredState, Instance, InstanceStatus, InstanceType, MigrationMode, Node,
    NodeStatus, OperationId, OperationKind, OperationTarget,
};
use crate::store::{put_object, StoreError, StoreExt, Txn};
use crate::{Driver, Error, Result};

impl Controller {
    /// Moves instance `instance` (id or name) to node `to` (id or
    /// hostname), or to the node the scheduler picks among the ready nodes
    /// other than its own, in `mode` (see
    /// [`Request::MigrateInstance`](crate::api::Request::MigrateInstance)).
    /// Returns the instance as it runs on the target, its `operation`
    /// naming the migration.
    ///
    /// Errors, with nothing changed: `NotFound` (the instance, node `to`),
    /// `InvalidArgument` on `to` (the instance is already there),
    /// `FailedPrecondition` (no other node, the instance is not running on
    /// a node or is being deleted, `to` or every other node cannot take
    /// it: the scheduler's reasons, `auto` would lose a disk),
    /// `Unsupported` (cold migration; live migration where either node's
    /// driver cannot, saying to restart instead). Once the move started:
    /// `FailedPrecondition` when the restart's target could not run it
    /// (the instance is back on its node, started again), or a live
    /// migration's target lost its room; a live migration's failed step
    /// as `Internal` or `Unavailable` naming the step, its cause kept, the
    /// instance still running on its node.
    pub async fn migrate_instance(
        &self,
        instance: &str,
        to: Option<&str>,
        mode: MigrationMode,
    ) -> Result<Instance> {
        let found = self.get_instance(instance).await?;
        let source = movable_from(&found)?;
        let nodes = self.list_nodes().await?;
        if nodes.iter().all(|n| n.id == source) {
            return Err(Error::FailedPrecondition(format!(
                "no other node to migrate instance `{}` to: node `{source}` is the only one",
                found.name
            )));
        }
        let target = self.pick_target(&found, &source, to).await?;
        let live = self.live_drivers(&found, &source, &target, mode)?;
        match &live {
            None => check_mode(&found, mode)?,
            Some(_) if found.status != InstanceStatus::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "instance `{}` is {}: only a running instance migrates live",
                    found.name,
                    found.status.as_str()
                )))
            }
            Some(_) => self.check_networks_on(&found, &target)?,
        }
        let target_for_op = target.clone();
        let source_for_op = source.clone();
        self.run_operation(
            OperationKind::Migrate,
            OperationTarget::of_instance(&found),
            move |op| async move {
                match live {
                    Some(drivers) => {
                        let moving = LiveMove {
                            op,
                            source: source_for_op,
                            target: target_for_op,
                            drivers,
                        };
                        self.move_live(moving, found).await
                    }
                    None => {
                        self.move_instance(op, found, source_for_op, target_for_op)
                            .await
                    }
                }
            },
            move |moved: &Instance| {
                Some(format!(
                    "instance {} on node {}",
                    moved.id,
                    moved.node.as_deref().unwrap_or(&target)
                ))
            },
        )
        .await
    }

    /// The node the migration of `instance` from `source` goes to: `to`
    /// when given (it must exist, differ from the source and pass the
    /// scheduler's filters), else the scheduler's pick among the others.
    async fn pick_target(
        &self,
        instance: &Instance,
        source: &str,
        to: Option<&str>,
    ) -> Result<String> {
        let Some(to) = to else {
            return self
                .choose_node(instance, |n| n.id != source)
                .await?
                .map_err(|why| {
                    Error::FailedPrecondition(format!(
                        "no other node can take instance `{}`: {why}",
                        instance.name
                    ))
                });
        };
        let node = self.get_node(to).await?;
        if node.id == source {
            return Err(Error::invalid(
                "to",
                format!("instance `{}` is already on node `{source}`", instance.name),
            ));
        }
        self.choose_node(instance, |n| n.id == node.id)
            .await?
            .map_err(|why| {
                Error::FailedPrecondition(format!(
                    "node `{}` cannot take instance `{}`: {why}",
                    node.id, instance.name
                ))
            })
    }

    /// The migration itself, as operation `op`: the fence and the move
    /// are the reconciler's (see the module documentation); this waits
    /// for each and records the steps.
    async fn move_instance(
        &self,
        op: OperationId,
        instance: Instance,
        source: String,
        target: String,
    ) -> Result<Instance> {
        let step = |name: &str| self.report_operation(&op, Some(name.to_owned()), None);
        step("placing").await?;
        self.send_to(&instance.id, &source, &target).await?;
        step("stopping").await?;
        let left = |i: &Instance| i.migrate_to.is_none() || i.node.as_deref() != Some(&source);
        let moved = match self.convergence() {
            Convergence::Background => {
                let leaving = self.wait_for_instance(&instance.id, left);
                patiently(leaving, &source, "removed", &instance.name).await?
            }
            Convergence::InCaller => self.settle(&instance.id).await?,
        };
        let gone = || Error::not_found(format!("instance `{}`", instance.name));
        let moved = moved.ok_or_else(gone)?;
        if moved.node.as_deref() == Some(&source) {
            // The target lost its room (or its readiness) between the
            // choice and the move: the release put it back on the source.
            patiently(
                self.settle(&instance.id),
                &source,
                "started",
                &instance.name,
            )
            .await?;
            return Err(Error::FailedPrecondition(format!(
                "node `{target}` could no longer take instance `{}` when it left node \
                 `{source}`: it runs on `{source}` again",
                instance.name
            )));
        }
        step("starting").await?;
        let starting = self.settle(&instance.id);
        let after = patiently(starting, &target, "started", &instance.name)
            .await?
            .ok_or_else(gone)?;
        if after.node.as_deref() == Some(&target) && after.status == InstanceStatus::Running {
            step("done").await?;
            let mut after = after;
            after.operation = Some(op);
            return Ok(after);
        }
        // The target could not run it: back to the source the same way,
        // so that a failed migration leaves it running where it was.
        let why = after.problem().unwrap_or(after.status.as_str()).to_owned();
        step("returning").await?;
        self.send_to(&instance.id, &target, &source).await?;
        let back = patiently(
            self.settle(&instance.id),
            &target,
            "removed",
            &instance.name,
        )
        .await?;
        let back = match back {
            Some(back) if back.node.as_deref() == Some(&source) => {
                format!("it is back on node `{source}`, {}", back.status.as_str())
            }
            Some(back) => format!(
                "it could not go back to node `{source}` either: it is {} on {}",
                back.status.as_str(),
                back.node.as_deref().unwrap_or("no node")
            ),
            None => "it was deleted meanwhile".to_owned(),
        };
        Err(Error::FailedPrecondition(format!(
            "instance `{}` could not start on node `{target}` ({why}); {back}",
            instance.name
        )))
    }

    /// Marks instance `id` to leave node `from` for node `to` (the
    /// reconciler does the rest). Errors: `FailedPrecondition` when it is
    /// no longer running on `from` (a concurrent delete, stop or move),
    /// `NotFound`, the store's.
    async fn send_to(&self, id: &str, from: &str, to: &str) -> Result<()> {
        self.update_object::<Instance, _>(id, |i| {
            if i.node.as_deref() != Some(from) || i.desired != DesiredState::Running {
                return Err(Error::FailedPrecondition(format!(
                    "instance `{}` changed while it was being migrated: it is now wanted {} \
                     on {}",
                    i.name,
                    match i.desired {
                        DesiredState::Running => "running",
                        DesiredState::Stopped => "stopped",
                        DesiredState::Deleted => "deleted",
                    },
                    i.node.as_deref().unwrap_or("no node")
                )));
            }
            i.reschedule = true;
            i.migrate_to = Some(to.to_owned());
            Ok(true)
        })
        .await
        .map(drop)
    }

    /// The node instance `instance`, leaving `source` (its node, its
    /// allocation already given back) for the node `target` its migration
    /// chose, is assigned to, with that node's allocation taking it: the
    /// target while it is ready and has room for it, else the source again
    /// (it had room a moment ago), so that a migration that cannot go on
    /// leaves it where it was. `None` (no source record either): pending,
    /// for the scheduler.
    pub(super) async fn migration_target(
        &self,
        instance: &Instance,
        target: &str,
        source: Option<&mut Node>,
    ) -> Result<Option<Node>> {
        use crate::store::StoreExt;
        let wanted = instance.spec.resources();
        let now = self.now();
        let found: Option<Node> = self.inner.store.get_object(target).await?;
        if let Some(mut node) = found.filter(|n| source.as_deref().is_none_or(|s| s.id != n.id)) {
            if node.status == NodeStatus::Ready && node.allocatable().fits(&node.allocated, &wanted)
            {
                node.allocated = node.allocated.saturating_add(&wanted);
                node.updated_at = now;
                return Ok(Some(node));
            }
            tracing::warn!(
                instance = %instance.id,
                node = %node.id,
                "the migration's target can no longer take the instance: it stays"
            );
        }
        Ok(source.map(|node| {
            node.allocated = node.allocated.saturating_add(&wanted);
            node.updated_at = now;
            node.clone()
        }))
    }
}

/// The two drivers a live migration runs on: the source node's and the
/// target node's, for the instance's type.
struct LiveDrivers {
    source: std::sync::Arc<dyn Driver>,
    target: std::sync::Arc<dyn Driver>,
}

/// A live migration under way: its operation, its nodes and their drivers.
struct LiveMove {
    op: OperationId,
    source: String,
    target: String,
    drivers: LiveDrivers,
}

/// A step of a live migration that failed, and why.
struct StepFailed {
    step: &'static str,
    cause: Error,
}

impl Controller {
    /// The drivers a live migration of `instance` from `source` to `target`
    /// runs on when `mode` asks for one: `Live` always (else `Unsupported`,
    /// naming the node whose driver cannot, and saying to restart
    /// instead), `Auto` when both nodes' drivers can (else `None`: the
    /// other modes' rules apply), never for `Cold` or `Restart`.
    fn live_drivers(
        &self,
        instance: &Instance,
        source: &str,
        target: &str,
        mode: MigrationMode,
    ) -> Result<Option<LiveDrivers>> {
        if !matches!(mode, MigrationMode::Live | MigrationMode::Auto) {
            return Ok(None);
        }
        let instance_type = instance.spec.instance_type;
        let mut drivers = Vec::with_capacity(2);
        for node in [source, target] {
            let driver = self.agent(node).and_then(|a| Ok(a.driver(instance_type)?));
            let driver = match (driver, mode) {
                (Ok(driver), _) => driver,
                // Auto only looks: the other modes say what is wrong.
                (Err(_), MigrationMode::Auto) => return Ok(None),
                (Err(e), _) => return Err(e),
            };
            if driver.live_migrate().is_none() {
                if mode == MigrationMode::Auto {
                    return Ok(None);
                }
                let how = match instance_type {
                    InstanceType::Container => "a container restarts elsewhere",
                    _ => "it can be restarted elsewhere",
                };
                return Err(Error::Unsupported(format!(
                    "node `{node}`: {}: {how}, pass --restart to restart instance `{}` on \
                     the target",
                    crate::driver::Capability::LiveMigrate.missing(driver.name()),
                    instance.name
                )));
            }
            drivers.push(driver);
        }
        let target_driver = drivers.pop();
        let source_driver = drivers.pop();
        Ok(source_driver
            .zip(target_driver)
            .map(|(source, target)| LiveDrivers { source, target }))
    }

    /// Refuses a live migration of `instance` to node `target` when its
    /// networks are missing there: the domain arrives plugged into their
    /// bridges, which only a node that sets up the cluster's networks has.
    /// Errors: `FailedPrecondition` naming the networks.
    fn check_networks_on(&self, instance: &Instance, target: &str) -> Result<()> {
        if instance.attachments.is_empty()
            || self.network_hosts().iter().any(|(node, _)| node == target)
        {
            return Ok(());
        }
        let networks: Vec<&str> = instance
            .attachments
            .iter()
            .map(|a| a.network.as_str())
            .collect();
        Err(Error::FailedPrecondition(format!(
            "node `{target}` sets up no networks (its agent runs with --no-networks or has no \
             netlink access), so network{} `{}` of instance `{}` {} missing there",
            if networks.len() == 1 { "" } else { "s" },
            networks.join("`, `"),
            instance.name,
            if networks.len() == 1 { "is" } else { "are" },
        )))
    }

    /// The live migration itself, as operation `moving.op` (see the
    /// module documentation): the instance as it runs on the target, or
    /// the failed step's error with the instance running on its source.
    async fn move_live(&self, moving: LiveMove, instance: Instance) -> Result<Instance> {
        let op = moving.op.clone();
        let step = |name: &str| self.report_operation(&op, Some(name.to_owned()), None);
        step("placing").await?;
        let marked = self.mark_live(&instance, &moving).await?;
        let outcome = self.carry_live(&moving, &marked, &step).await;
        match outcome {
            Ok(report) => {
                step("switching").await?;
                let mut moved = self.switch_live(&marked, &moving).await?;
                // The overlays follow it: the target carries its networks
                // now, the source perhaps no longer. A failure leaves a
                // stale peer until the next network reconcile, as a
                // release does.
                for carrier in [&moved, &marked] {
                    if let Err(e) = self.sync_overlays_of(carrier).await {
                        tracing::warn!(instance = %moved.id, error = %e, "updating overlay peers");
                    }
                }
                tracing::info!(
                    instance = %moved.id,
                    source = %moving.source,
                    target = %moving.target,
                    total_ms = report.map(|r| r.total.as_millis() as u64),
                    downtime_ms = report.and_then(|r| r.downtime).map(|d| d.as_millis() as u64),
                    "migrated live"
                );
                step("done").await?;
                moved.operation = Some(op);
                Ok(moved)
            }
            Err(failed) => {
                // The target keeps nothing of it; the source never stopped.
                if let Err(e) = moving
                    .drivers
                    .target
                    .require_live_migrate()?
                    .abort_incoming(&marked)
                    .await
                {
                    tracing::warn!(
                        instance = %marked.id,
                        node = %moving.target,
                        error = %e,
                        "removing what a failed live migration prepared"
                    );
                }
                self.unmark_live(&marked, &moving).await?;
                Err(live_failure(&marked, &moving, failed))
            }
        }
    }

    /// `preparing` and `migrating`: the target's driver makes the
    /// instance's files and answers where to send it, the source's moves
    /// it. `Ok(None)` when the source's call failed but the instance runs
    /// on the target all the same (the call was cut off while the runtime
    /// finished).
    async fn carry_live<F, Fut>(
        &self,
        moving: &LiveMove,
        instance: &Instance,
        step: &F,
    ) -> std::result::Result<Option<crate::driver::MigrationReport>, StepFailed>
    where
        F: Fn(&str) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let failed = |step: &'static str| move |cause: Error| StepFailed { step, cause };
        step("preparing").await.map_err(failed("preparing"))?;
        let target = moving
            .drivers
            .target
            .require_live_migrate()
            .map_err(|e| failed("preparing")(e.into()))?;
        let destination: MigrationTarget = target
            .prepare_incoming(instance)
            .await
            .map_err(|e| failed("preparing")(e.into()))?;
        step("migrating").await.map_err(failed("migrating"))?;
        let source = moving
            .drivers
            .source
            .require_live_migrate()
            .map_err(|e| failed("migrating")(e.into()))?;
        match source.migrate_live(instance, &destination).await {
            Ok(report) => Ok(Some(report)),
            Err(cause) => {
                // Cut off, not refused: the runtime may have finished.
                let arrived = moving.drivers.target.inspect(instance).await;
                if matches!(arrived, Ok(RuntimeState::Running)) {
                    tracing::warn!(
                        instance = %instance.id,
                        error = %cause,
                        "the live migration's call failed, yet the instance runs on the target"
                    );
                    return Ok(None);
                }
                Err(failed("migrating")(cause.into()))
            }
        }
    }

    /// `placing`: reserves `instance`'s room on the target and records the
    /// live migration on it, in one transaction. Errors:
    /// `FailedPrecondition` (the target is no longer ready or has no room,
    /// the instance changed meanwhile), the store's.
    async fn mark_live(&self, instance: &Instance, moving: &LiveMove) -> Result<Instance> {
        let wanted = instance.spec.resources();
        let target = moving.target.clone();
        self.commit_live(&instance.id, &moving.target, |node, i| {
            still_running_on(i, &moving.source)?;
            if node.status != NodeStatus::Ready
                || !node.allocatable().fits(&node.allocated, &wanted)
            {
                return Err(Error::FailedPrecondition(format!(
                    "node `{target}` can no longer take instance `{}` (it is {}, or has no \
                     room left): it stays on node `{}`",
                    i.name,
                    node.status.as_str(),
                    moving.source
                )));
            }
            node.allocated = node.allocated.saturating_add(&wanted);
            i.migrate_to = Some(target.clone());
            Ok(())
        })
        .await
    }

    /// `switching`: the record moves to the target (its node, the source's
    /// allocation released; the target's, reserved at `placing`, kept), in
    /// one transaction. Nothing is stopped or created: it runs there.
    async fn switch_live(&self, instance: &Instance, moving: &LiveMove) -> Result<Instance> {
        let now = self.now();
        let held = instance.held();
        let target = moving.target.clone();
        self.commit_live(&instance.id, &moving.source, |node, i| {
            node.allocated = node.allocated.saturating_sub(&held);
            let message = format!("migrated live to node `{target}`");
            i.node = Some(target.clone());
            i.migrate_to = None;
            i.set_condition(ConditionType::Scheduled, true, "MigratedLive", message, now);
            Ok(())
        })
        .await
    }

    /// After a failed live migration: the target's reservation is given
    /// back and `migrate_to` cleared, in one transaction.
    async fn unmark_live(&self, instance: &Instance, moving: &LiveMove) -> Result<Instance> {
        let wanted = instance.spec.resources();
        self.commit_live(&instance.id, &moving.target, |node, i| {
            node.allocated = node.allocated.saturating_sub(&wanted);
            i.migrate_to = None;
            Ok(())
        })
        .await
    }

    /// Applies `change` to instance `id` and node `node` in one
    /// transaction, compare-and-swap on both, read again and retried on a
    /// conflict. Errors: `NotFound` (either is gone), what `change`
    /// returns, `Conflict` after too many retries, the store's.
    async fn commit_live<F>(&self, id: &str, node: &str, mut change: F) -> Result<Instance>
    where
        F: FnMut(&mut Node, &mut Instance) -> Result<()>,
    {
        let store = &self.inner.store;
        for _ in 0..self.options().max_conflict_retries {
            let mut instance: Instance = store
                .get_object(id)
                .await?
                .ok_or_else(|| Error::not_found(format!("instance `{id}`")))?;
            let mut found: Node = store
                .get_object(node)
                .await?
                .ok_or_else(|| Error::not_found(format!("node `{node}`")))?;
            change(&mut found, &mut instance)?;
            let now = self.now();
            found.updated_at = now;
            instance.updated_at = now;
            let txn = put_object(put_object(Txn::new(), &found), &instance);
            match self.commit(txn).await {
                Ok(revision) => {
                    instance.revision = revision;
                    return Ok(instance);
                }
                Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("instance", id))
    }
}

/// Refuses an instance that is no longer wanted running on `source`, or
/// that another migration took meanwhile. Errors: `FailedPrecondition`.
fn still_running_on(instance: &Instance, source: &str) -> Result<()> {
    let unchanged = instance.node.as_deref() == Some(source)
        && instance.desired == DesiredState::Running
        && instance.status == InstanceStatus::Running
        && !instance.reschedule
        && instance.migrate_to.is_none();
    if unchanged {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "instance `{}` changed while its live migration began (it is now {} on {}): nothing \
         was moved",
        instance.name,
        instance.status.as_str(),
        instance.node.as_deref().unwrap_or("no node")
    )))
}

/// The error of a live migration that failed at `failed.step`: it names
/// the instance, both nodes and the step, says it still runs on its
/// source, and keeps the cause (an unreachable node's stays `Unavailable`).
fn live_failure(instance: &Instance, moving: &LiveMove, failed: StepFailed) -> Error {
    let what = format!(
        "live migration of instance `{}` from node `{}` to node `{}` at step `{}` (it still \
         runs on node `{}`)",
        instance.name, moving.source, moving.target, failed.step, moving.source
    );
    let unavailable = failed.cause.kind() == crate::ErrorKind::Unavailable;
    let source: Box<dyn std::error::Error + Send + Sync> = Box::new(failed.cause);
    if unavailable {
        Error::Driver(DriverError::Unavailable {
            runtime: what,
            source,
        })
    } else {
        Error::Driver(DriverError::Runtime {
            operation: what,
            source,
        })
    }
}

/// How long a migration waits for a node's runtime to take each step
/// before it answers `Unavailable` (the reconciler carries on with the
/// move; `instance get` follows it).
const PATIENCE: Duration = Duration::from_secs(600);

/// `step`, or `Unavailable` naming node `node`'s runtime once it took
/// longer than [`PATIENCE`] to have `done` instance `name`.
async fn patiently<T>(
    step: impl Future<Output = Result<T>>,
    node: &str,
    done: &str,
    name: &str,
) -> Result<T> {
    match tokio::time::timeout(PATIENCE, step).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Error::Unavailable {
            what: format!(
                "the runtime of node `{node}`, which has not {done} instance `{name}` in {} s \
                 (the migration goes on when it does: `instance get` follows it),",
                PATIENCE.as_secs()
            ),
            source: None,
        }),
    }
}

/// The node `instance` can be migrated from. Errors: `FailedPrecondition`
/// (being deleted, not wanted running, not on a node).
fn movable_from(instance: &Instance) -> Result<String> {
    let name = &instance.name;
    if instance.desired == DesiredState::Deleted {
        return Err(Error::FailedPrecondition(format!(
            "instance `{name}` is being deleted: it cannot be migrated"
        )));
    }
    if instance.desired != DesiredState::Running {
        return Err(Error::FailedPrecondition(format!(
            "instance `{name}` is stopped: only a running instance is migrated (start it first)"
        )));
    }
    match &instance.node {
        Some(node) if !instance.reschedule => Ok(node.clone()),
        Some(node) => Err(Error::FailedPrecondition(format!(
            "instance `{name}` is already leaving node `{node}`"
        ))),
        None => Err(Error::FailedPrecondition(format!(
            "instance `{name}` is not on a node yet ({})",
            instance.problem().unwrap_or("pending")
        ))),
    }
}

/// Refuses what `mode` cannot do for `instance` when it does not migrate
/// live: cold migration is not built, and `auto` never loses a disk by
/// restarting.
fn check_mode(instance: &Instance, mode: MigrationMode) -> Result<()> {
    let runtime = instance
        .runtime
        .clone()
        .unwrap_or_else(|| instance.spec.instance_type.as_str().to_owned());
    // A microVM's writable disk is its own copy, which a restart elsewhere
    // would lose as a VM's overlay.
    let has_disk = instance.spec.instance_type != InstanceType::Container
        && (instance.spec.image.is_some()
            || instance.spec.disk_gib > 0
            || instance.spec.disks.iter().any(|d| !d.read_only));
    match mode {
        MigrationMode::Restart => Ok(()),
        // Reached only when the drivers cannot (see `live_drivers`).
        MigrationMode::Live => Err(Error::Unsupported(format!(
            "{runtime} cannot migrate live: pass --restart to restart instance `{}` on the \
             target",
            instance.name
        ))),
        MigrationMode::Cold => Err(Error::Unsupported(format!(
            "cold migration is not built yet for {runtime}: the agents cannot copy a disk \
             between nodes (no ExportDisk/ImportDisk); pass --restart to start instance `{}` \
             afresh on the target, from its image",
            instance.name
        ))),
        MigrationMode::Auto if has_disk => Err(Error::FailedPrecondition(format!(
            "instance `{}` has a disk that only cold migration would carry, and cold migration \
             is not built yet for {runtime}: pass --restart to start it afresh on the target \
             from its image (what its disk holds now is lost)",
            instance.name
        ))),
        MigrationMode::Auto => Ok(()),
    }
}
