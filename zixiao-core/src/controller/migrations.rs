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
//! migration of a VM; zixiao-vmm's pre-copy stream of a `vmm` microVM,
//! carried over TCP between the two nodes' drivers); `switching` moves
//! the record to the target in one transaction (its node, the source's
//! allocation released, the target's kept) with nothing stopped or
//! created again: the domain already runs there. `done` keeps the
//! runtime's figures as the operation's progress (the memory bytes sent,
//! with the copy rounds and the downtime in its unit). A microVM that its
//! driver cannot move live ([`crate::driver::microvm_live_refusal`]: on
//! QEMU, with writable disks, from a snapshot) is refused `--live` before
//! anything is reserved, and `auto` migrates it cold. **Never two running copies**: the runtime pauses the source for
//! the last copy and resumes the target only once the source has handed
//! over, and ends the source after; a failed migration resumes the
//! source. On a failure before `switching` the target's
//! `abort_incoming` removes what it prepared, the reservation and
//! `migrate_to` are undone in one transaction, the instance keeps running
//! on its source, and the error names the step and keeps the cause. A
//! call that cut off while the runtime finished anyway (a timeout) is
//! found out by asking the target, and switched.
//!
//! **Cold** (`placing`, `stopping`, `copying`, `starting`, `done`) moves
//! a VM or microVM with disks through both nodes' drivers'
//! [`ColdMigrate`](crate::driver::ColdMigrate) capability, all in the
//! call: `placing` is the live one's; `stopping` has the source's runtime
//! stop it (the fence: nothing starts on the target before it stopped);
//! `copying` has the source's driver read its disks out (a VM's overlay,
//! a microVM's writable disks) and the target's write them, piece by
//! piece through this process (agents only talk to servers), each checked
//! against the source's SHA-256 at its end, the operation's progress
//! counting the bytes. A microVM asked `--cold` without a writable disk
//! copies nothing (the target's driver still checks the images it boots
//! are there, and the progress says there was nothing to copy): a stop
//! here and a start there. `starting` has the target's
//! driver create it from the copy and start it (the target's agent takes
//! both calls for an instance migrating to it). Then the source's stopped
//! copy is deleted and the record switched as a live migration's is: it
//! keeps its id, name, MACs and addresses. A failure before it runs on the
//! target has the target's `abort_import` remove what it made, starts it
//! again on its source, whose disk was only read, and only then undoes the
//! reservation and the mark (so no reconciler sees it stopped and records
//! an exit): never two running copies, never a lost disk.
//!
//! `auto` migrates live when both nodes' drivers can, else cold when the
//! instance has a disk and both can copy it, else restarts an instance
//! without a disk, and refuses to restart a VM or microVM whose disk would
//! be lost.
//!
//! A server that dies mid-way leaves `migrate_to` recorded and its
//! operation unfinished. Once the operations' follower has ended that
//! operation as interrupted (30 s without its runner's renewal), it ends
//! the migration as the runtime left it
//! ([`Controller::recover_live_migrations`]): switched when the instance
//! runs on the target, else undone (what the target prepared or imported
//! removed, the instance on its source, where a cold one that was stopped
//! starts again). The migration is not resumed.

use std::future::Future;
use std::time::Duration;

use super::{Controller, Convergence};
use crate::driver::{
    Capability, DiskChunk, DiskExport, DriverError, MigrationTarget, RuntimeState,
};
use crate::model::{
    ConditionType, DesiredState, Instance, InstanceStatus, InstanceType, MigrationMode, Node,
    NodeFile, NodeImageName, NodeStatus, OperationId, OperationKind, OperationProgress,
    OperationTarget,
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
    /// `Unsupported` (live or cold migration where either node's driver
    /// cannot, saying to restart instead), `FailedPrecondition` for cold
    /// with no disk to copy. Once the move started:
    /// `FailedPrecondition` when the restart's target could not run it
    /// (the instance is back on its node, started again), or a live
    /// migration's target lost its room; a live or cold migration's failed
    /// step as `Internal` or `Unavailable` naming the step, its cause
    /// kept, the instance still (live) or again (cold) running on its
    /// node.
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
        let live =
            self.migration_drivers(&found, &source, &target, mode, Capability::LiveMigrate)?;
        let how = match live {
            Some(drivers) => Some((Capability::LiveMigrate, drivers)),
            None => self
                .migration_drivers(&found, &source, &target, mode, Capability::ColdMigrate)?
                .map(|drivers| (Capability::ColdMigrate, drivers)),
        };
        match &how {
            None => check_mode(&found, mode)?,
            Some(_) if found.status != InstanceStatus::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "instance `{}` is {}: only a running instance migrates live or cold",
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
                let Some((capability, drivers)) = how else {
                    return self
                        .move_instance(op, found, source_for_op, target_for_op)
                        .await;
                };
                let moving = NodeMove {
                    op,
                    source: source_for_op,
                    target: target_for_op,
                    drivers,
                };
                if capability == Capability::ColdMigrate {
                    self.move_cold(moving, found).await
                } else {
                    self.move_live(moving, found).await
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

/// The two drivers a live or cold migration runs on: the source node's and
/// the target node's, for the instance's type.
struct NodeDrivers {
    source: std::sync::Arc<dyn Driver>,
    target: std::sync::Arc<dyn Driver>,
}

/// A live or cold migration under way: its operation, its nodes and their
/// drivers.
struct NodeMove {
    op: OperationId,
    source: String,
    target: String,
    drivers: NodeDrivers,
}

/// A step of a live or cold migration that failed, and why.
struct StepFailed {
    step: &'static str,
    cause: Error,
}

/// The failure of `step`, as a closure for `map_err`.
fn failed_at<E: Into<Error>>(step: &'static str) -> impl Fn(E) -> StepFailed {
    move |cause| StepFailed {
        step,
        cause: cause.into(),
    }
}

impl Controller {
    /// The drivers a migration of `instance` from `source` to `target`
    /// runs on when `mode` asks for `capability` (live or cold): `Live`
    /// or `Cold` always (else `Unsupported`, naming the node whose driver
    /// cannot, and saying to restart instead), `Auto` when both nodes'
    /// drivers can (else `None`: the other modes' rules apply); cold only
    /// for an instance with a disk to carry. `None` for the other modes.
    fn migration_drivers(
        &self,
        instance: &Instance,
        source: &str,
        target: &str,
        mode: MigrationMode,
        capability: Capability,
    ) -> Result<Option<NodeDrivers>> {
        let asked = match capability {
            Capability::ColdMigrate => MigrationMode::Cold,
            _ => MigrationMode::Live,
        };
        if mode != asked && mode != MigrationMode::Auto {
            return Ok(None);
        }
        if asked == MigrationMode::Cold && !has_disk(instance) && !stops_and_starts(instance, mode)
        {
            // `check_mode` says why there is nothing to copy.
            return Ok(None);
        }
        let instance_type = instance.spec.instance_type;
        let refused = match (capability, instance_type, instance.runtime.as_deref()) {
            (Capability::LiveMigrate, InstanceType::Microvm, Some(runtime)) => {
                crate::driver::microvm_live_refusal(instance, runtime)
            }
            _ => None,
        };
        if let Some(why) = refused {
            if mode == MigrationMode::Auto {
                return Ok(None);
            }
            return Err(Error::Unsupported(why));
        }
        let mut drivers = Vec::with_capacity(2);
        for node in [source, target] {
            let driver = self.agent(node).and_then(|a| Ok(a.driver(instance_type)?));
            let driver = match (driver, mode) {
                (Ok(driver), _) => driver,
                // Auto only looks: the other modes say what is wrong.
                (Err(_), MigrationMode::Auto) => return Ok(None),
                (Err(e), _) => return Err(e),
            };
            if !capability.of(driver.as_ref()) {
                if mode == MigrationMode::Auto {
                    return Ok(None);
                }
                let how = match (instance_type, asked) {
                    (InstanceType::Container, _) => "a container restarts elsewhere",
                    (_, MigrationMode::Cold) => {
                        "it can be restarted elsewhere, afresh from its image (what its disk \
                         holds is lost)"
                    }
                    _ => "it can be restarted elsewhere",
                };
                return Err(Error::Unsupported(format!(
                    "node `{node}`: {}: {how}, pass --restart to restart instance `{}` on \
                     the target",
                    capability.missing(driver.name()),
                    instance.name
                )));
            }
            drivers.push(driver);
        }
        let target_driver = drivers.pop();
        let source_driver = drivers.pop();
        Ok(source_driver
            .zip(target_driver)
            .map(|(source, target)| NodeDrivers { source, target }))
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
    async fn move_live(&self, moving: NodeMove, instance: Instance) -> Result<Instance> {
        let op = moving.op.clone();
        let step = |name: &str| self.report_operation(&op, Some(name.to_owned()), None);
        step("placing").await?;
        let marked = self.mark_moving(&instance, &moving).await?;
        let outcome = self.carry_live(&moving, &marked, &step).await;
        match outcome {
            Ok(report) => {
                step("switching").await?;
                let moved = self
                    .switch_moved(
                        &marked,
                        &moving.source,
                        &moving.target,
                        "Live",
                        moving.drivers.target.vsock_of(&marked),
                    )
                    .await?;
                tracing::info!(
                    instance = %moved.id,
                    source = %moving.source,
                    target = %moving.target,
                    total_ms = report.map(|r| r.total.as_millis() as u64),
                    downtime_ms = report.and_then(|r| r.downtime).map(|d| d.as_millis() as u64),
                    rounds = report.and_then(|r| r.rounds),
                    "migrated live"
                );
                let figures = report.as_ref().and_then(live_figures);
                self.finish_move(op, &marked, moved, figures).await
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
                self.unmark_moving(&marked, &moving.source, &moving.target)
                    .await?;
                let state = format!("it still runs on node `{}`", moving.source);
                Err(migration_failure("live", &marked, &moving, failed, &state))
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
        moving: &NodeMove,
        instance: &Instance,
        step: &F,
    ) -> std::result::Result<Option<crate::driver::MigrationReport>, StepFailed>
    where
        F: Fn(&str) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let failed = |step: &'static str| failed_at::<Error>(step);
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
    async fn mark_moving(&self, instance: &Instance, moving: &NodeMove) -> Result<Instance> {
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

    /// The record moves to the target (its node, the source's allocation
    /// released; the target's, reserved at `placing`, kept; where its
    /// vsock's host side is now, as the target's driver says), in one
    /// transaction, its `Scheduled` condition saying how (`Live` or
    /// `Cold`). Nothing is stopped or created: it runs there already.
    async fn switch_moved(
        &self,
        instance: &Instance,
        source: &str,
        target: &str,
        how: &str,
        vsock: Option<crate::model::VsockEndpoint>,
    ) -> Result<Instance> {
        let now = self.now();
        let held = instance.held();
        let target = target.to_owned();
        let reason = format!("Migrated{how}");
        self.commit_live(&instance.id, source, |node, i| {
            still_migrating(i, source, &target)?;
            node.allocated = node.allocated.saturating_sub(&held);
            let message = format!("migrated {} to node `{target}`", how.to_ascii_lowercase());
            i.node = Some(target.clone());
            i.migrate_to = None;
            if i.vsock.is_some() {
                i.vsock = vsock.clone();
            }
            i.set_condition(ConditionType::Scheduled, true, &reason, message, now);
            Ok(())
        })
        .await
    }

    /// What follows a live or cold migration that went through, from
    /// `marked` (the record before) to `moved` (after): the overlays
    /// follow it (the target carries its networks now, the source perhaps
    /// no longer; a failure leaves a stale peer until the next network
    /// reconcile, as a release does), and `done` (with the copy's
    /// `progress`, if one was counted).
    async fn finish_move(
        &self,
        op: OperationId,
        marked: &Instance,
        mut moved: Instance,
        progress: Option<OperationProgress>,
    ) -> Result<Instance> {
        for carrier in [&moved, marked] {
            if let Err(e) = self.sync_overlays_of(carrier).await {
                tracing::warn!(instance = %moved.id, error = %e, "updating overlay peers");
            }
        }
        self.report_operation(&op, Some("done".to_owned()), progress)
            .await?;
        moved.operation = Some(op);
        Ok(moved)
    }

    /// After a failed live or cold migration: the target's reservation is
    /// given back and `migrate_to` cleared, in one transaction. Errors:
    /// `FailedPrecondition` when the instance is no longer migrating from
    /// `source` to `target` (someone else ended it).
    async fn unmark_moving(
        &self,
        instance: &Instance,
        source: &str,
        target: &str,
    ) -> Result<Instance> {
        let wanted = instance.spec.resources();
        self.commit_live(&instance.id, target, |node, i| {
            still_migrating(i, source, target)?;
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

/// What a live migration's operation keeps of the runtime's report, as
/// its last progress: the memory bytes sent, with the copy rounds and the
/// downtime the runtime measured in the unit's words. `None` when the
/// runtime reported no memory bytes.
fn live_figures(report: &crate::driver::MigrationReport) -> Option<OperationProgress> {
    let sent = report.memory_bytes?;
    let mut unit = "memory bytes sent live".to_owned();
    if let Some(rounds) = report.rounds {
        unit.push_str(&format!(", {rounds} copy rounds"));
    }
    if let Some(downtime) = report.downtime {
        unit.push_str(&format!(", {} ms downtime", downtime.as_millis()));
    }
    Some(OperationProgress {
        done: sent,
        total: Some(sent),
        unit,
    })
}

/// The unit of a cold migration's progress when the instance has no
/// writable disk: 0 of 0 copied, and the operation says so.
const NOTHING_TO_COPY: &str = "writable disks (none: nothing to copy)";

/// How often a cold migration records how far its copy got.
const COPY_PROGRESS_EVERY: Duration = Duration::from_millis(500);

impl Controller {
    /// The cold migration itself, as operation `moving.op` (see the module
    /// documentation): the instance as it runs on the target, or the
    /// failed step's error with the instance started again on its source,
    /// its disk there as it was.
    async fn move_cold(&self, moving: NodeMove, instance: Instance) -> Result<Instance> {
        let op = moving.op.clone();
        self.report_operation(&op, Some("placing".to_owned()), None)
            .await?;
        same_disk_base(&moving, &instance).await?;
        let marked = self.mark_moving(&instance, &moving).await?;
        let failed = match self.carry_cold(&moving, &marked).await {
            Err(failed) => failed,
            Ok(progress) => {
                // It runs on the target from the copy: the source's stopped
                // copy goes (else the source agent's orphan sweep removes it,
                // as the instance is no longer placed there once switched).
                if let Err(e) = moving.drivers.source.delete(&marked).await {
                    tracing::warn!(
                        instance = %marked.id,
                        node = %moving.source,
                        error = %e,
                        "removing a cold-migrated instance from its source"
                    );
                }
                let moved = self
                    .switch_moved(
                        &marked,
                        &moving.source,
                        &moving.target,
                        "Cold",
                        moving.drivers.target.vsock_of(&marked),
                    )
                    .await?;
                tracing::info!(
                    instance = %moved.id,
                    source = %moving.source,
                    target = %moving.target,
                    "migrated cold"
                );
                return self.finish_move(op, &marked, moved, Some(progress)).await;
            }
        };
        // The target keeps nothing of it; the source's disk was only read.
        let target = moving.drivers.target.require_cold_migrate()?;
        if let Err(e) = target.abort_import(&marked).await {
            if e.kind() == crate::ErrorKind::FailedPrecondition {
                // It runs on the target after all: never start a second
                // copy. It stays recorded as migrating for a person to see.
                let state = format!("it runs on node `{}`: {e}", moving.target);
                return Err(migration_failure("cold", &marked, &moving, failed, &state));
            }
            tracing::warn!(
                instance = %marked.id,
                node = %moving.target,
                error = %e,
                "removing what a failed cold migration copied"
            );
        }
        // Started again while still marked as moving: no reconciler acts
        // on it until the mark goes, so none sees its stopped runtime
        // first and records it as having exited.
        let state = match moving.drivers.source.start(&marked).await {
            Ok(()) => format!(
                "it runs on node `{}` again, its disk as it was",
                moving.source
            ),
            Err(e) => format!(
                "its disk is as it was on node `{}`, where starting it again failed too ({e}); \
                 the reconciler retries",
                moving.source
            ),
        };
        self.unmark_moving(&marked, &moving.source, &moving.target)
            .await?;
        Err(migration_failure("cold", &marked, &moving, failed, &state))
    }

    /// `stopping`, `copying` and `starting`: the source's runtime stops it
    /// (the fence: nothing starts on the target before), its disk goes
    /// from the source's driver to the target's, and the target's creates
    /// and starts it from the copy. Returns how much was copied.
    async fn carry_cold(
        &self,
        moving: &NodeMove,
        instance: &Instance,
    ) -> std::result::Result<OperationProgress, StepFailed> {
        let op = &moving.op;
        let (source, target) = (&moving.drivers.source, &moving.drivers.target);
        let step = |name: &'static str, progress: Option<OperationProgress>| async move {
            self.report_operation(op, Some(name.to_owned()), progress)
                .await
                .map_err(failed_at::<Error>(name))
        };
        step("stopping", None).await?;
        source
            .stop(instance, self.options().stop_grace)
            .await
            .map_err(failed_at("stopping"))?;
        let state = source
            .inspect(instance)
            .await
            .map_err(failed_at("stopping"))?;
        if matches!(state, RuntimeState::Running | RuntimeState::Paused) {
            return Err(failed_at("stopping")(Error::FailedPrecondition(format!(
                "node `{}` still runs it after the stop",
                moving.source
            ))));
        }
        step("copying", None).await?;
        let copied = self
            .copy_disk(moving, instance)
            .await
            .map_err(failed_at("copying"))?;
        step("starting", Some(copied.clone())).await?;
        target
            .create(instance)
            .await
            .map_err(failed_at("starting"))?;
        target
            .start(instance)
            .await
            .map_err(failed_at("starting"))?;
        Ok(copied)
    }

    /// `copying`: the source's driver reads the disks out, the target's
    /// writes them, piece by piece as they come (nothing more than a piece
    /// at a time held here); the operation's progress counts the bytes.
    /// Returns that count, or for an instance without a writable disk
    /// (nothing copied, the target's images checked) 0 of 0
    /// [`NOTHING_TO_COPY`].
    async fn copy_disk(&self, moving: &NodeMove, instance: &Instance) -> Result<OperationProgress> {
        use futures::StreamExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let source = moving.drivers.source.require_cold_migrate()?;
        let target = moving.drivers.target.require_cold_migrate()?;
        let export = source.export_disk(instance).await?;
        let total = export.total();
        let DiskExport { sizes, chunks } = export;
        if sizes.is_empty() {
            // Still through the target's driver: it checks that the images
            // the instance boots are there before anything starts.
            target.import_disk(instance, &sizes, chunks).await?;
            tracing::info!(instance = %instance.id, "no writable disk: nothing to copy");
            let nothing = OperationProgress {
                done: 0,
                total: Some(0),
                unit: NOTHING_TO_COPY.to_owned(),
            };
            self.report_operation(
                &moving.op,
                Some("copying".to_owned()),
                Some(nothing.clone()),
            )
            .await?;
            return Ok(nothing);
        }
        let done = Arc::new(AtomicU64::new(0));
        let counted = {
            let done = done.clone();
            chunks
                .inspect(move |chunk| {
                    if let Ok(DiskChunk::Data(data)) = chunk {
                        done.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                })
                .boxed()
        };
        let progress = |done: u64| {
            self.report_operation(
                &moving.op,
                Some("copying".to_owned()),
                Some(OperationProgress {
                    done,
                    total: Some(total),
                    unit: "bytes".to_owned(),
                }),
            )
        };
        let import = target.import_disk(instance, &sizes, counted);
        tokio::pin!(import);
        let mut ticks = tokio::time::interval(COPY_PROGRESS_EVERY);
        let copied = loop {
            tokio::select! {
                copied = &mut import => break copied?,
                _ = ticks.tick() => {
                    // Progress is a report: a failed write does not stop the copy.
                    if let Err(e) = progress(done.load(Ordering::Relaxed)).await {
                        tracing::debug!(error = %e, "recording a disk copy's progress");
                    }
                }
            }
        };
        progress(copied).await?;
        tracing::info!(
            instance = %instance.id,
            bytes = copied,
            disks = sizes.len(),
            "copied the disks for a cold migration"
        );
        Ok(OperationProgress {
            done: copied,
            total: Some(copied),
            unit: "bytes".to_owned(),
        })
    }
}

/// Refuses a cold migration of a VM whose disk's base image differs
/// between the two nodes, before anything stops: what moves is only what
/// the guest wrote over its base, and the target points it at its own
/// base of the same name, so a different base there would show the guest
/// another disk. Both nodes' image stores are asked for the base's
/// digest; a base the target lacks is left to the copy, which refuses it
/// (`NotFound`). Errors: `FailedPrecondition` naming the image, the nodes
/// and both digests; what listing an image store answered.
async fn same_disk_base(moving: &NodeMove, instance: &Instance) -> Result<()> {
    let (InstanceType::Vm, Some(image)) = (instance.spec.instance_type, &instance.spec.image)
    else {
        return Ok(());
    };
    let name = match NodeFile::parse("spec.image", std::path::Path::new(image))? {
        NodeFile::Image(name) => name.to_string(),
        NodeFile::Reference(reference) => NodeImageName::for_reference(&reference).to_string(),
        // A host path: each node's own file, which no store describes.
        NodeFile::HostPath(_) => return Ok(()),
    };
    let digest = |driver: &std::sync::Arc<dyn Driver>| {
        let name = name.clone();
        let driver = driver.clone();
        async move {
            let Some(images) = driver.images() else {
                return Ok::<_, Error>(None);
            };
            let listed = images.list().await?;
            Ok(listed
                .into_iter()
                .find(|i| i.name == name)
                .map(|i| i.digest))
        }
    };
    let (on_source, on_target) = (
        digest(&moving.drivers.source).await?,
        digest(&moving.drivers.target).await?,
    );
    match (on_source, on_target) {
        (Some(source), Some(target)) if source != target => {
            Err(Error::FailedPrecondition(format!(
                "the disk of instance `{}` is based on image `{name}`, which differs on node `{}` \
             ({source}) and node `{}` ({target}): import the same image on both to migrate it cold",
                instance.name, moving.source, moving.target
            )))
        }
        _ => Ok(()),
    }
}

impl Controller {
    /// The instances the cache shows in a live or cold migration: read before the
    /// operations are listed (see [`Controller::recover_live_migrations`]).
    pub(super) fn live_migrations_in_cache(&self) -> Vec<Instance> {
        self.inner
            .cache
            .read()
            .live_migrations()
            .map(|i| Instance::clone(i))
            .collect()
    }

    /// Ends the live migrations among `migrating` whose caller is gone: no
    /// unfinished `migrate` operation in `operations` (listed after
    /// `migrating` was read, so a migration that began in between is not
    /// taken for one) targets them. A server that stopped mid-way leaves
    /// its operation to be ended as interrupted, and then its instance
    /// here. Each is finished as the runtime left it: switched to its
    /// target when it runs there (the copy had finished), else what the
    /// target prepared is removed and the migration undone, the instance
    /// on its source (where the runtime resumes it after a failed copy).
    /// A target that cannot be asked is asked again at the next tick:
    /// undoing a migration that finished would start a second copy.
    /// Returns how many were ended.
    pub(super) async fn recover_live_migrations(
        &self,
        migrating: Vec<Instance>,
        operations: &[crate::model::Operation],
    ) -> usize {
        let followed: std::collections::HashSet<&str> = operations
            .iter()
            .filter(|op| op.kind == OperationKind::Migrate && !op.phase.is_finished())
            .map(|op| op.target.id.as_str())
            .collect();
        let mut ended = 0;
        for instance in migrating {
            if followed.contains(instance.id.as_str()) {
                continue;
            }
            match self.recover_live(&instance).await {
                Ok(true) => ended += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    instance = %instance.id,
                    error = %e.chain(),
                    "ending a live migration whose server stopped"
                ),
            }
        }
        ended
    }

    /// Ends the orphaned live migration of `instance` (see
    /// [`Controller::recover_live_migrations`]): `Ok(false)` when someone
    /// else ended it first.
    async fn recover_live(&self, instance: &Instance) -> Result<bool> {
        let (Some(source), Some(target)) = (
            instance.node.clone(),
            instance.live_migration_target().map(str::to_owned),
        ) else {
            return Ok(false);
        };
        let driver = self
            .agent(&target)
            .and_then(|a| Ok(a.driver(instance.spec.instance_type)?))?;
        let ended = if driver.inspect(instance).await? == RuntimeState::Running {
            let vsock = driver.vsock_of(instance);
            let moved = self
                .switch_moved(instance, &source, &target, "Live", vsock)
                .await;
            if let Ok(moved) = &moved {
                for carrier in [moved, instance] {
                    if let Err(e) = self.sync_overlays_of(carrier).await {
                        tracing::warn!(instance = %moved.id, error = %e, "updating overlay peers");
                    }
                }
            }
            moved.map(|_| "switched to its target, where it runs")
        } else {
            // A live migration's preparations, or a cold one's import.
            if let Some(incoming) = driver.live_migrate() {
                incoming.abort_incoming(instance).await?;
            }
            if let Some(import) = driver.cold_migrate() {
                import.abort_import(instance).await?;
            }
            self.unmark_moving(instance, &source, &target)
                .await
                .map(|_| "undone: it stays on its source")
        };
        match ended {
            Ok(how) => {
                tracing::warn!(
                    instance = %instance.id,
                    %source,
                    %target,
                    "a live migration whose server stopped was {how}"
                );
                Ok(true)
            }
            Err(e) if e.kind() == crate::ErrorKind::FailedPrecondition => Ok(false),
            Err(e) => Err(e),
        }
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
        "instance `{}` changed while its migration began (it is now {} on {}): nothing was \
         moved",
        instance.name,
        instance.status.as_str(),
        instance.node.as_deref().unwrap_or("no node")
    )))
}

/// Refuses an instance whose live or cold migration from `source` to `target`
/// ended meanwhile (switched or undone by someone else), so that a
/// migration is ended once. Errors: `FailedPrecondition`.
fn still_migrating(instance: &Instance, source: &str, target: &str) -> Result<()> {
    if instance.node.as_deref() == Some(source) && instance.live_migration_target() == Some(target)
    {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "the live migration of instance `{}` from node `{source}` to node `{target}` has \
         already ended",
        instance.name
    )))
}

/// The error of a `how` (live, cold) migration that failed at
/// `failed.step`: it names the instance, both nodes and the step, says
/// where it is now (`state`), and keeps the cause (an unreachable node's
/// stays `Unavailable`).
fn migration_failure(
    how: &str,
    instance: &Instance,
    moving: &NodeMove,
    failed: StepFailed,
    state: &str,
) -> Error {
    let what = format!(
        "{how} migration of instance `{}` from node `{}` to node `{}` at step `{}` ({state})",
        instance.name, moving.source, moving.target, failed.step
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

/// Whether `instance` has a disk that a restart would lose and a cold
/// migration carries: a VM or microVM with an image or a disk size.
fn has_disk(instance: &Instance) -> bool {
    // A microVM's writable disk is its own copy, which a restart elsewhere
    // would lose as a VM's overlay.
    instance.spec.instance_type != InstanceType::Container
        && (instance.spec.image.is_some()
            || instance.spec.disk_gib > 0
            || instance.spec.disks.iter().any(|d| !d.read_only))
}

/// Whether a cold migration of `instance` asked as `mode` goes through
/// the drivers with no disk to copy: a microVM asked `--cold` without a
/// writable disk is stopped and started on the target by them (its
/// kernel, initrd and read-only disks checked there first), the operation
/// saying there was nothing to copy. `auto` restarts it instead, which
/// comes to the same.
fn stops_and_starts(instance: &Instance, mode: MigrationMode) -> bool {
    mode == MigrationMode::Cold && instance.spec.instance_type == InstanceType::Microvm
}

/// Refuses what `mode` cannot do for `instance` when it migrates neither
/// live nor cold: cold with no disk to copy, and `auto` never loses a
/// disk by restarting.
fn check_mode(instance: &Instance, mode: MigrationMode) -> Result<()> {
    let runtime = instance
        .runtime
        .clone()
        .unwrap_or_else(|| instance.spec.instance_type.as_str().to_owned());
    match mode {
        MigrationMode::Restart => Ok(()),
        // Reached only when the drivers cannot (see `migration_drivers`).
        MigrationMode::Live => Err(Error::Unsupported(format!(
            "{runtime} cannot migrate live: pass --restart to restart instance `{}` on the \
             target",
            instance.name
        ))),
        // Reached only without a disk (see `migration_drivers`).
        MigrationMode::Cold => Err(Error::FailedPrecondition(format!(
            "instance `{}` has no disk to copy (a container, or no image and no disk size): \
             pass --restart to start it afresh on the target",
            instance.name
        ))),
        MigrationMode::Auto if has_disk(instance) => Err(Error::FailedPrecondition(format!(
            "instance `{}` has a disk that only a live or cold migration would carry, and the \
             {runtime} drivers of its node and the target can do neither: pass --restart to \
             start it afresh on the target from its image (what its disk holds now is lost)",
            instance.name
        ))),
        MigrationMode::Auto => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_migrations_figures_are_kept_as_its_last_progress() {
        let report = crate::driver::MigrationReport {
            total: Duration::from_millis(40),
            downtime: Some(Duration::from_millis(7)),
            memory_bytes: Some(1 << 20),
            disk_bytes: None,
            rounds: Some(3),
        };
        assert_eq!(
            live_figures(&report),
            Some(OperationProgress {
                done: 1 << 20,
                total: Some(1 << 20),
                unit: "memory bytes sent live, 3 copy rounds, 7 ms downtime".to_owned(),
            })
        );
        let bare = crate::driver::MigrationReport {
            rounds: None,
            downtime: None,
            ..report
        };
        assert_eq!(
            live_figures(&bare).map(|p| p.unit),
            Some("memory bytes sent live".to_owned())
        );
        let nothing = crate::driver::MigrationReport {
            memory_bytes: None,
            ..report
        };
        assert_eq!(live_figures(&nothing), None);
    }
}
