//! The in-process [`Api`]: each request is one call of the [`Controller`].
//!
//! [`Controller::dispatch`] is a table from each request to its handler
//! (in [`handle`]), each handler a boxed future of its own: see
//! [`Handling`] for why.
//!
//! Calls that wait ([`Wait::Settled`]) settle the instance
//! ([`Controller::settle`]): a controller that converges in its callers
//! converges it, one whose background workers converge (a server) watches it.
//!
//! Reads never write and never converge: `GetInstance`, `ListInstances`,
//! `GetNode`, `ListNodes` and `ClusterInfo` answer from the store or the
//! controller's cache. Without background workers (the embedded deployment
//! with no daemon) nothing records a workload that exited while no command
//! ran, so the instance reads of such a controller show each running
//! instance as its runtime sees it ([`Controller::observed`]): one that
//! exited shows as exited, with its exit, though the store still says
//! running until the next command that changes something converges it
//! (and applies its restart policy). A read that restarted workloads or
//! wrote the store would make `zixiao instance list` a command with side
//! effects, and fail where the store is busy; showing the runtime's truth
//! costs one inspect per running instance, as the converge it replaces did.

mod handle;

use async_trait::async_trait;

use super::{Api, Handling, Request, Response, Wait};
use crate::controller::{Controller, Convergence};
use crate::model::{OperationId, OperationKind, OperationTarget};
use crate::{Error, Instance, Result};

impl Controller {
    /// `changed` (a node whose labels or traits just changed) as it is
    /// once the instances waiting for a node were tried again (see
    /// [`Controller::place_waiting`]): what it holds after them.
    async fn placed_waiting(&self, changed: crate::Node) -> Result<crate::Node> {
        if self.convergence() != Convergence::InCaller {
            return Ok(changed);
        }
        self.place_waiting().await?;
        self.get_node(&changed.id).await
    }
}

#[async_trait]
impl Api for Controller {
    async fn call(&self, request: Request) -> Result<Response> {
        self.dispatch(request).await
    }
}

impl Controller {
    /// The handling of `request`: its handler's future, not yet polled.
    fn dispatch(&self, request: Request) -> Handling<'_> {
        match request {
            Request::CreateInstance { request, wait } => {
                handle::create_instance(self, request, wait)
            }
            Request::GetInstance { instance } => handle::get_instance(self, instance),
            Request::ListInstances { filter, page } => handle::list_instances(self, filter, page),
            Request::StartInstance { instance, wait } => {
                handle::start_instance(self, instance, wait)
            }
            Request::StopInstance { instance, wait } => handle::stop_instance(self, instance, wait),
            Request::RestartInstance { instance, wait } => {
                handle::restart_instance(self, instance, wait)
            }
            Request::UpdateInstance {
                instance,
                update,
                wait,
            } => handle::update_instance(self, instance, update, wait),
            Request::DeleteInstance { instance, wait } => {
                handle::delete_instance(self, instance, wait)
            }
            Request::CloneInstance {
                source,
                name,
                linked,
                snapshot,
                wait,
            } => handle::clone_instance(self, source, name, linked, snapshot, wait),
            Request::MigrateInstance { instance, to, mode } => {
                handle::migrate_instance(self, instance, to, mode)
            }
            Request::PauseInstance { instance } => handle::pause_instance(self, instance),
            Request::ResumeInstance { instance } => handle::resume_instance(self, instance),
            Request::InstanceStats { instance } => handle::instance_stats(self, instance),
            Request::InstanceStatsHistory { instance } => {
                handle::instance_stats_history(self, instance)
            }
            Request::ReadLog {
                instance,
                offset,
                max,
            } => handle::read_log(self, instance, offset, max),
            Request::FollowLog { instance, offset } => handle::follow_log(self, instance, offset),
            Request::AttachConsole { instance } => handle::attach_console(self, instance),
            Request::WatchInstances { after } => handle::watch_instances(self, after),
            Request::CreateSnapshot {
                to: Some(to),
                instance,
                ..
            } => refused(Error::Unsupported(format!(
                "snapshot.create of `{instance}` with a copy to `{}`: snapshot directories \
                 live on the node's disk, which only the embedded deployment reaches; \
                 nothing was taken",
                to.display()
            ))),
            Request::CreateSnapshot {
                instance,
                name,
                to: None,
            } => handle::create_snapshot(self, instance, name),
            Request::ListSnapshots { instance } => handle::list_snapshots(self, instance),
            Request::RevertSnapshot { instance, name } => {
                handle::revert_snapshot(self, instance, name)
            }
            Request::DeleteSnapshot { instance, name } => {
                handle::delete_snapshot(self, instance, name)
            }
            Request::BackupState { .. } => refused(Error::Unsupported(
                "state.backup: only the embedded store makes backups (for etcd, use \
                 `etcdctl snapshot save`)"
                    .to_owned(),
            )),
            request @ (Request::ExportSnapshot { .. } | Request::RestoreInstance { .. }) => {
                refused(Error::Unsupported(format!(
                    "{}: snapshot directories live on the node's disk, which only the \
                     embedded deployment reaches (run it on the node, without a server)",
                    request.operation()
                )))
            }
            Request::ImportImages {
                node,
                instance_type,
                archive,
                import_as,
                progress,
            } => handle::import_images(self, node, instance_type, archive, import_as, progress),
            Request::PullImage {
                node,
                instance_type,
                reference,
                options,
                progress,
            } => handle::pull_image(self, node, instance_type, reference, options, progress),
            Request::ListImages {
                node,
                instance_type,
            } => handle::list_images(self, node, instance_type),
            Request::RemoveImage {
                node,
                instance_type,
                kind,
                name,
            } => handle::remove_image(self, node, instance_type, kind, name),
            Request::ListNodes => handle::list_nodes(self),
            Request::GetNode { node } => handle::get_node(self, node),
            Request::NodeStatsHistory { node } => handle::node_stats_history(self, node),
            Request::CordonNode { node } => handle::cordon_node(self, node),
            Request::UncordonNode { node } => handle::uncordon_node(self, node),
            Request::DrainNode { node } => handle::drain_node(self, node),
            Request::SetMaintenance { node, on } => handle::set_maintenance(self, node, on),
            Request::DecommissionNode { node } => handle::decommission_node(self, node),
            Request::DeregisterNode { node } => handle::deregister_node(self, node),
            Request::LabelNode { node, changes } => handle::label_node(self, node, changes),
            Request::ChangeNodeTraits { node, changes } => {
                handle::change_node_traits(self, node, changes)
            }
            Request::SetNodeCarbon { node, intensity } => {
                handle::set_node_carbon(self, node, intensity)
            }
            Request::SetAllocationRatios { node, cpu, memory } => {
                handle::set_allocation_ratios(self, node, cpu, memory)
            }
            Request::WatchNodes { after } => handle::watch_nodes(self, after),
            Request::ClusterInfo => handle::cluster_info(self),
            Request::CreateNetwork { request } => handle::create_network(self, request),
            Request::GetNetwork { name } => handle::get_network(self, name),
            Request::ListNetworks => handle::list_networks(self),
            Request::NetworkStatus { name } => handle::network_status(self, name),
            Request::RepairNetwork { name } => handle::repair_network(self, name),
            Request::DeleteNetwork { name } => handle::delete_network(self, name),
            Request::CreateAggregate { name, metadata } => {
                handle::create_aggregate(self, name, metadata)
            }
            Request::DeleteAggregate { name } => handle::delete_aggregate(self, name),
            Request::ListAggregates => handle::list_aggregates(self),
            Request::GetAggregate { name } => handle::get_aggregate(self, name),
            Request::SetAggregateMetadata { name, changes } => {
                handle::set_aggregate_metadata(self, name, changes)
            }
            Request::AddAggregateNode { name, node } => {
                handle::add_aggregate_node(self, name, node)
            }
            Request::RemoveAggregateNode { name, node } => {
                handle::remove_aggregate_node(self, name, node)
            }
            Request::CreateTemplate { name, spec } => handle::create_template(self, name, spec),
            Request::UpdateTemplate { name, spec } => handle::update_template(self, name, spec),
            Request::GetTemplate { name, version } => handle::get_template(self, name, version),
            Request::ListTemplates => handle::list_templates(self),
            Request::DeleteTemplate { name, version } => {
                handle::delete_template(self, name, version)
            }
            Request::CreateFromTemplate { request, wait } => {
                handle::create_from_template(self, request, wait)
            }
            Request::ListOperations { filter, page } => handle::list_operations(self, filter, page),
            Request::GetOperation { id } => handle::get_operation(self, id),
            Request::WatchOperation { id } => handle::watch_operation(self, id),
            Request::CancelOperation { id } => handle::cancel_operation(self, id),
            request @ (Request::CreateUser { .. }
            | Request::ListUsers
            | Request::DeleteUser { .. }
            | Request::CreateToken { .. }
            | Request::ListTokens { .. }
            | Request::RevokeToken { .. }
            | Request::CreateProject { .. }
            | Request::ListProjects
            | Request::GetProject { .. }
            | Request::UpdateProject { .. }
            | Request::DeleteProject { .. }
            | Request::ListAudit { .. }) => refused(Error::Unsupported(format!(
                "{}: users, tokens, projects and the audit log are kept by the access \
                 layer (zixiao-auth's AccessApi), which this controller is served without",
                request.operation()
            ))),
        }
    }
}

/// A request refused before anything was done, with `error`.
fn refused(error: Error) -> Handling<'static> {
    Box::pin(std::future::ready(Err(error)))
}

/// The target an instance's operation names.
fn target(instance: &Instance) -> OperationTarget {
    OperationTarget::of_instance(instance)
}

impl Controller {
    /// `instance` after its intent `kind` was stored, with the operation
    /// recorded for it: as it is, or settled (the operation then brought
    /// up to date, so the answer and the operation agree).
    async fn intent(
        &self,
        kind: OperationKind,
        instance: Instance,
        wait: Wait,
    ) -> Result<Instance> {
        let operation = self.start_operation(kind, target(&instance)).await?;
        let answered = self.settled(instance, wait).await;
        if wait.settled() {
            self.refresh_quietly(&operation.id).await;
        }
        let mut answered = answered?;
        answered.operation = Some(operation.id);
        Ok(answered)
    }

    /// [`Controller::refresh_operation`], logging a failure: the call's
    /// own work is done, and the follower tries again.
    async fn refresh_quietly(&self, id: &OperationId) {
        if let Err(e) = self.refresh_operation(id).await {
            tracing::warn!(op = %id, "following an operation: {}", e.chain());
        }
    }

    /// `instance` after its intent was stored: as it is, or settled.
    /// Errors: `NotFound` when it was deleted meanwhile.
    async fn settled(&self, instance: Instance, wait: Wait) -> Result<Instance> {
        if !wait.settled() {
            return Ok(instance);
        }
        self.settle(&instance.id).await?.ok_or_else(|| {
            Error::not_found(format!("instance `{}` (deleted meanwhile)", instance.name))
        })
    }

    /// `instance` as a read shows it: as stored when background workers
    /// record what the runtimes do (with the size it really runs, which
    /// they do not record: one call to its runtime, so only a get asks it,
    /// never a list), else as its runtime sees it now.
    async fn as_seen(&self, instance: Instance) -> Instance {
        match self.convergence() {
            Convergence::InCaller => self.observed(instance).await,
            Convergence::Background => self.with_runtime_size(instance).await,
        }
    }

    /// The node an image request means: the one named, or the only one.
    /// Errors: `NotFound` (no node of that id or hostname), before
    /// anything (an operation) is recorded.
    async fn image_node(&self, node: Option<String>) -> Result<String> {
        if let Some(node) = node {
            return Ok(self.get_node(&node).await?.id);
        }
        let nodes = self.list_nodes().await?;
        match nodes.as_slice() {
            [only] => Ok(only.id.clone()),
            [] => Err(Error::FailedPrecondition(
                "no nodes are registered".to_owned(),
            )),
            _ => Err(Error::invalid(
                "node",
                format!(
                    "{} nodes are registered: name the node whose images you mean",
                    nodes.len()
                ),
            )),
        }
    }
}

/// Why a controller without a [`StatsHistory`](super::StatsHistory) in
/// front of it has no history to answer with.
fn no_history() -> Error {
    Error::Unsupported(
        "no stats history here: a server keeps one (`zixiao server`, or \
         `zixiao server --embedded` / `zixiao ui` on this state directory)"
            .to_owned(),
    )
}
