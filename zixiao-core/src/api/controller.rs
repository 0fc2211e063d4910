//! The in-process [`Api`]: each request is one call of the [`Controller`].
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

use async_trait::async_trait;
use futures::StreamExt;

use super::{Api, ImportAs, InstancePage, OperationPage, Request, Response, Wait};
use crate::controller::{Controller, Convergence, DrainReport};
use crate::driver::{ImageInfo, ImportProgress, PullProgress};
use crate::model::{ImageKind, NodeImageName, OperationId, OperationKind, OperationTarget};
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
        Ok(match request {
            Request::CreateInstance { request, wait } => {
                let created = self.create_instance(request).await?;
                Response::Instance(self.intent(OperationKind::Create, created, wait).await?)
            }
            Request::GetInstance { instance } => {
                let mut found = self.get_instance(&instance).await?;
                found.operation = self.last_operation(&found.id).await?;
                Response::Instance(self.as_seen(found).await)
            }
            Request::ListInstances { filter, page } => {
                let (listed, next_page) =
                    page.cut(self.list_instances(&filter).await?, |i| i.name.as_str());
                let instances = if self.convergence() == Convergence::InCaller {
                    let mut seen = Vec::with_capacity(listed.len());
                    for instance in listed {
                        let instance = self.as_seen(instance).await;
                        // The filter applies to what is shown (a page may
                        // come out shorter; the next one goes on after it).
                        if filter.matches(&instance) {
                            seen.push(instance);
                        }
                    }
                    seen
                } else {
                    listed
                };
                Response::Instances(InstancePage {
                    instances,
                    next_page,
                })
            }
            Request::StartInstance { instance, wait } => {
                let started = self.start_instance(&instance).await?;
                Response::Instance(self.intent(OperationKind::Start, started, wait).await?)
            }
            Request::StopInstance { instance, wait } => {
                let stopped = self.stop_instance(&instance).await?;
                Response::Instance(self.intent(OperationKind::Stop, stopped, wait).await?)
            }
            Request::RestartInstance { instance, wait } => {
                let restarted = self.restart_instance(&instance).await?;
                Response::Instance(self.intent(OperationKind::Restart, restarted, wait).await?)
            }
            Request::UpdateInstance {
                instance,
                update,
                wait,
            } => {
                let updated = self.update_instance(&instance, update).await?;
                // Only an update that restarts the instance is a long call.
                if updated.restarts_requested > updated.restarts_done {
                    Response::Instance(self.intent(OperationKind::Update, updated, wait).await?)
                } else {
                    Response::Instance(self.settled(updated, wait).await?)
                }
            }
            Request::DeleteInstance { instance, wait } => {
                let mut deleting = self.delete_instance(&instance).await?;
                let operation = self.start_operation(OperationKind::Delete, target(&deleting));
                let operation = operation.await?;
                deleting.operation = Some(operation.id.clone());
                Response::MaybeInstance(match wait {
                    Wait::No => Some(deleting),
                    Wait::Settled => {
                        let settled = self.settle(&deleting.id).await;
                        self.refresh_quietly(&operation.id).await;
                        settled?.map(|mut left| {
                            left.operation = Some(operation.id);
                            left
                        })
                    }
                })
            }
            Request::CloneInstance {
                source,
                name,
                linked,
                snapshot,
                wait,
            } => {
                let created = self
                    .clone_instance(&source, &name, linked, snapshot)
                    .await?;
                Response::Instance(self.intent(OperationKind::Clone, created, wait).await?)
            }
            Request::MigrateInstance { instance, to, mode } => Response::Instance(
                self.migrate_instance(&instance, to.as_deref(), mode)
                    .await?,
            ),
            Request::PauseInstance { instance } => {
                Response::Instance(self.pause_instance(&instance).await?)
            }
            Request::ResumeInstance { instance } => {
                Response::Instance(self.resume_instance(&instance).await?)
            }
            Request::InstanceStats { instance } => {
                Response::Stats(self.instance_stats(&instance).await?)
            }
            Request::InstanceStatsHistory { instance } => {
                // Known instance or not, the answer is the same kind.
                self.get_instance(&instance).await?;
                return Err(no_history());
            }
            Request::ReadLog {
                instance,
                offset,
                max,
            } => {
                let reader = self.logs(&instance).await?;
                let max = usize::try_from(max).unwrap_or(usize::MAX);
                Response::Log(reader.read(offset, max).await?)
            }
            Request::FollowLog { instance, offset } => {
                let reader = self.logs(&instance).await?;
                Response::LogStream(reader.follow(offset).boxed())
            }
            Request::AttachConsole { instance } => {
                Response::Console(self.attach_console(&instance).await?)
            }
            Request::WatchInstances { after } => {
                let after = match after {
                    0 => self.current_revision().await?,
                    after => after,
                };
                Response::InstanceEvents(self.watch_instances(after).await?.boxed())
            }
            Request::CreateSnapshot {
                to: Some(to),
                instance,
                ..
            } => {
                return Err(Error::Unsupported(format!(
                    "snapshot.create of `{instance}` with a copy to `{}`: snapshot directories \
                     live on the node's disk, which only the embedded deployment reaches; \
                     nothing was taken",
                    to.display()
                )))
            }
            Request::CreateSnapshot {
                instance,
                name,
                to: None,
            } => {
                let on = target(&self.get_instance(&instance).await?);
                let taken = self.run_operation(
                    OperationKind::Snapshot,
                    on,
                    |_| self.snapshot_instance(&instance, &name),
                    |_| Some(name.clone()),
                );
                Response::Snapshot(taken.await?)
            }
            Request::ListSnapshots { instance } => {
                Response::Snapshots(self.list_snapshots(&instance).await?)
            }
            Request::RevertSnapshot { instance, name } => {
                let on = target(&self.get_instance(&instance).await?);
                self.run_operation(
                    OperationKind::Revert,
                    on,
                    |_| self.revert_snapshot(&instance, &name),
                    |_| Some(name.clone()),
                )
                .await?;
                Response::Done
            }
            Request::DeleteSnapshot { instance, name } => {
                self.delete_snapshot(&instance, &name).await?;
                Response::Done
            }
            Request::BackupState { .. } => {
                return Err(Error::Unsupported(
                    "state.backup: only the embedded store makes backups (for etcd, use \
                     `etcdctl snapshot save`)"
                        .to_owned(),
                ))
            }
            request @ (Request::ExportSnapshot { .. } | Request::RestoreInstance { .. }) => {
                return Err(Error::Unsupported(format!(
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
            } => {
                let node = self.image_node(node).await?;
                let image = match &import_as {
                    ImportAs::Container { name: Some(name) } => name.to_string(),
                    ImportAs::NodeImage { name, .. } => name.to_string(),
                    ImportAs::Container { name: None } => archive.display().to_string(),
                };
                let on = OperationTarget::image(&node, image);
                let images = self.run_operation(
                    OperationKind::ImageImport,
                    on,
                    |op| async {
                        match import_as {
                            ImportAs::Container { name } => {
                                let recorder = self.progress_recorder(op, "reading");
                                let report = move |p: ImportProgress| {
                                    recorder.set(p.done, p.total);
                                    progress.report(p)
                                };
                                self.import_images(
                                    &node,
                                    instance_type,
                                    &archive,
                                    name.as_ref(),
                                    &report,
                                )
                                .await
                            }
                            ImportAs::NodeImage { kind, name } => Ok(vec![
                                self.import_node_image(&node, &archive, kind, &name).await?,
                            ]),
                        }
                    },
                    |images: &Vec<ImageInfo>| {
                        Some(
                            images
                                .iter()
                                .map(|i| i.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        )
                    },
                );
                Response::Images(images.await?)
            }
            Request::PullImage {
                node,
                instance_type,
                reference,
                options,
                progress,
            } => {
                let node = self.image_node(node).await?;
                let on = OperationTarget::image(&node, reference.to_string());
                let image = self.run_operation(
                    OperationKind::ImagePull,
                    on,
                    |op| async {
                        let recorder = self.progress_recorder(op, "pulling");
                        let report = move |p: PullProgress| {
                            match &p {
                                PullProgress::Resolved { bytes, .. } => recorder.set(0, *bytes),
                                PullProgress::Fetched { size, .. } => recorder.add(*size),
                                PullProgress::Unpacking => recorder.step("unpacking"),
                            }
                            progress.report(p)
                        };
                        self.pull_image(&node, instance_type, &reference, &options, &report)
                            .await
                    },
                    |image: &ImageInfo| Some(image.name.clone()),
                );
                Response::Images(vec![image.await?])
            }
            Request::ListImages {
                node,
                instance_type,
            } => {
                let node = self.image_node(node).await?;
                Response::Images(self.list_images(&node, instance_type).await?)
            }
            Request::RemoveImage {
                node,
                instance_type,
                kind,
                name,
            } => {
                let node = self.image_node(node).await?;
                match kind {
                    ImageKind::Container => self.remove_image(&node, instance_type, &name).await?,
                    kind => {
                        let name = NodeImageName::try_from(name)?;
                        self.remove_node_image(&node, kind, &name).await?
                    }
                }
                Response::Done
            }
            Request::ListNodes => Response::Nodes(self.list_nodes().await?),
            Request::GetNode { node } => Response::Node(self.get_node(&node).await?),
            Request::NodeStatsHistory { node } => {
                // Known node or not, the answer is the same kind.
                self.get_node(&node).await?;
                return Err(no_history());
            }
            Request::CordonNode { node } => Response::Node(self.cordon_node(&node).await?),
            Request::UncordonNode { node } => Response::Node(self.uncordon_node(&node).await?),
            Request::DrainNode { node } => {
                // An unknown node is refused before anything is recorded.
                let on = OperationTarget::node(self.get_node(&node).await?.id);
                let drained = self.run_operation(
                    OperationKind::Drain,
                    on,
                    |_| self.drain_node(&node),
                    |report: &DrainReport| {
                        Some(format!(
                            "{} migrated, {} moved, {} stopped, {} waiting for a node",
                            report.migrated.len(),
                            report.moved.len(),
                            report.stopped.len(),
                            report.pending.len()
                        ))
                    },
                );
                Response::Drain(drained.await?)
            }
            Request::SetMaintenance { node, on } => {
                Response::Drain(self.set_maintenance(&node, on).await?)
            }
            Request::DecommissionNode { node } => {
                Response::Drain(self.decommission_node(&node).await?)
            }
            Request::DeregisterNode { node } => {
                self.deregister_node(&node).await?;
                Response::Done
            }
            Request::LabelNode { node, changes } => {
                let labelled = self.label_node(&node, &changes).await?;
                Response::Node(self.placed_waiting(labelled).await?)
            }
            Request::ChangeNodeTraits { node, changes } => {
                let changed = self.change_node_traits(&node, &changes).await?;
                Response::Node(self.placed_waiting(changed).await?)
            }
            Request::SetNodeCarbon { node, intensity } => {
                let changed = self.set_node_carbon(&node, intensity).await?;
                Response::Node(self.placed_waiting(changed).await?)
            }
            Request::SetAllocationRatios { node, cpu, memory } => {
                let changed = self.set_allocation_ratios(&node, cpu, memory).await?;
                Response::Node(self.placed_waiting(changed).await?)
            }
            Request::WatchNodes { after } => {
                let after = match after {
                    0 => self.current_revision().await?,
                    after => after,
                };
                Response::NodeEvents(self.watch_nodes(after).await?.boxed())
            }
            Request::ClusterInfo => Response::ClusterInfo(self.cluster_info().await?),
            Request::CreateNetwork { request } => {
                Response::Network(self.create_network(request).await?)
            }
            Request::GetNetwork { name } => Response::Network(self.get_network(&name).await?),
            Request::ListNetworks => Response::Networks(self.list_networks().await?),
            Request::NetworkStatus { name } => {
                Response::NetworkStatus(self.network_status(&name).await?)
            }
            Request::RepairNetwork { name } => {
                Response::NetworkStatus(self.repair_network(&name).await?)
            }
            Request::DeleteNetwork { name } => {
                self.delete_network(&name).await?;
                Response::Done
            }
            Request::CreateAggregate { name, metadata } => {
                let created = self.create_aggregate(&name, metadata).await?;
                self.place_waiting().await?;
                Response::Aggregate(created)
            }
            Request::DeleteAggregate { name } => {
                self.delete_aggregate(&name).await?;
                self.place_waiting().await?;
                Response::Done
            }
            Request::ListAggregates => Response::Aggregates(self.list_aggregates().await?),
            Request::GetAggregate { name } => Response::Aggregate(self.get_aggregate(&name).await?),
            Request::SetAggregateMetadata { name, changes } => {
                let changed = self.set_aggregate_metadata(&name, &changes).await?;
                self.place_waiting().await?;
                Response::Aggregate(changed)
            }
            Request::AddAggregateNode { name, node } => {
                let added = self.add_aggregate_node(&name, &node).await?;
                self.place_waiting().await?;
                Response::Aggregate(added)
            }
            Request::RemoveAggregateNode { name, node } => {
                let removed = self.remove_aggregate_node(&name, &node).await?;
                self.place_waiting().await?;
                Response::Aggregate(removed)
            }
            Request::CreateTemplate { name, spec } => {
                Response::Template(self.create_template(&name, spec).await?)
            }
            Request::UpdateTemplate { name, spec } => {
                Response::Template(self.update_template(&name, spec).await?)
            }
            Request::GetTemplate { name, version } => {
                Response::Template(self.get_template(&name, version).await?)
            }
            Request::ListTemplates => Response::Templates(self.list_templates().await?),
            Request::DeleteTemplate { name, version } => {
                self.delete_template(&name, version).await?;
                Response::Done
            }
            Request::CreateFromTemplate { request, wait } => {
                let created = self.create_from_template(request).await?;
                Response::Instance(self.intent(OperationKind::Create, created, wait).await?)
            }
            Request::ListOperations { filter, page } => {
                let (operations, next_page) =
                    page.cut(self.list_operations(&filter).await?, |o| o.id.as_str());
                Response::Operations(OperationPage {
                    operations,
                    next_page,
                })
            }
            Request::GetOperation { id } => Response::Operation(self.get_operation(&id).await?),
            Request::WatchOperation { id } => {
                Response::OperationUpdates(self.watch_operation(&id).await?)
            }
            Request::CancelOperation { id } => {
                Response::Operation(self.cancel_operation(&id).await?)
            }
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
            | Request::ListAudit { .. }) => {
                return Err(Error::Unsupported(format!(
                    "{}: users, tokens, projects and the audit log are kept by the access \
                     layer (zixiao-auth's AccessApi), which this controller is served without",
                    request.operation()
                )))
            }
        })
    }
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
