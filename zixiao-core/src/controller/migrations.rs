//! Migrations on the controller: [`Controller::migrate_instance`] moves a
//! running instance to another node, keeping its id, name, MACs and
//! addresses, as an operation of kind `migrate` whose steps say where it
//! is (`placing`, `stopping`, `starting`, `done`; `returning` when the
//! target could not run it).
//!
//! A migration is an eviction with a destination: the call checks
//! everything a user can get wrong and picks the target with the
//! scheduler (nothing is written before), then marks the instance
//! `reschedule` with `migrate_to`. The reconciler that owns the instance
//! removes its runtime from the source (the fence: the source stops
//! before anything starts on the target) and, in the transaction that
//! releases the source's allocation, assigns the target and reserves its
//! room ([`Controller::migration_target`]); it then creates and starts it
//! there as any placed instance. A target that cannot run it sends it
//! back the same way, so a failed migration leaves it running on the
//! source.
//!
//! Only the restart mode is built: the workload starts afresh on the
//! target (a container from its image, a diskless microVM from its
//! kernel). Cold migration (copying a VM's disk between agents) and live
//! migration are refused as `Unsupported`, and `auto` refuses to restart
//! a VM or microVM whose disk would be lost.

use std::future::Future;
use std::time::Duration;

use super::{Controller, Convergence};
use crate::model::{
    DesiredState, Instance, InstanceStatus, InstanceType, MigrationMode, Node, NodeStatus,
    OperationId, OperationKind, OperationTarget,
};
use crate::{Error, Result};

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
    /// `Unsupported` (cold and live migration). Once the move started:
    /// `FailedPrecondition` when the target could not run it (the
    /// instance is back on its node, started again).
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
        check_mode(&found, mode)?;
        let target = self.pick_target(&found, &source, to).await?;
        let target_for_op = target.clone();
        let source_for_op = source.clone();
        self.run_operation(
            OperationKind::Migrate,
            OperationTarget::of_instance(&found),
            move |op| self.move_instance(op, found, source_for_op, target_for_op),
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

/// Refuses what `mode` cannot do for `instance`: cold and live migration
/// are not built, and `auto` never loses a disk by restarting.
fn check_mode(instance: &Instance, mode: MigrationMode) -> Result<()> {
    let runtime = instance
        .runtime
        .clone()
        .unwrap_or_else(|| instance.spec.instance_type.as_str().to_owned());
    let has_disk = instance.spec.instance_type != InstanceType::Container
        && (instance.spec.image.is_some() || instance.spec.disk_gib > 0);
    match mode {
        MigrationMode::Restart => Ok(()),
        MigrationMode::Live => Err(Error::Unsupported(format!(
            "live migration is not built yet for {runtime}: pass --restart to restart \
             instance `{}` on the target",
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
