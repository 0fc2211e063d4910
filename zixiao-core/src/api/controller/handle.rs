//! One handler per request the controller answers, each returning its
//! own boxed future ([`Handling`]), so the dispatch's frame never holds
//! them all. The controller's methods do the work; a handler picks them,
//! records the operation a long call starts, and says what it answers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt;

use super::{no_history, target};
use crate::api::{Handling, ImportAs, InstancePage, OperationPage, Page, Progress, Response, Wait};
use crate::controller::{Controller, Convergence, DrainReport, InstanceFilter, OperationFilter};
use crate::driver::{ImageInfo, ImportProgress, PullOptions, PullProgress};
use crate::model::{
    AggregateName, AllocationRatio, CarbonIntensity, CreateInstance, CreateNetwork, FromTemplate,
    ImageKind, ImageRef, InstanceType, InstanceUpdate, LabelChanges, LabelKey, LabelValue,
    MigrationMode, NodeImageName, OperationId, OperationKind, OperationTarget, SnapshotName,
    TemplateName, TemplateSpec, TraitChanges,
};
use crate::store::Revision;

pub(super) fn create_instance(c: &Controller, request: CreateInstance, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        let created = c.create_instance(request).await?;
        Ok(Response::Instance(
            c.intent(OperationKind::Create, created, wait).await?,
        ))
    })
}

pub(super) fn get_instance(c: &Controller, instance: String) -> Handling<'_> {
    Box::pin(async move {
        let mut found = c.get_instance(&instance).await?;
        found.operation = c.last_operation(&found.id).await?;
        Ok(Response::Instance(c.as_seen(found).await))
    })
}

pub(super) fn list_instances(c: &Controller, filter: InstanceFilter, page: Page) -> Handling<'_> {
    Box::pin(async move {
        let (listed, next_page) = page.cut(c.list_instances(&filter).await?, |i| i.name.as_str());
        let instances = if c.convergence() == Convergence::InCaller {
            let mut seen = Vec::with_capacity(listed.len());
            for instance in listed {
                let instance = c.as_seen(instance).await;
                // The filter applies to what is shown (a page may come out
                // shorter; the next one goes on after it).
                if filter.matches(&instance) {
                    seen.push(instance);
                }
            }
            seen
        } else {
            listed
        };
        Ok(Response::Instances(InstancePage {
            instances,
            next_page,
        }))
    })
}

pub(super) fn start_instance(c: &Controller, instance: String, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        let started = c.start_instance(&instance).await?;
        Ok(Response::Instance(
            c.intent(OperationKind::Start, started, wait).await?,
        ))
    })
}

pub(super) fn stop_instance(c: &Controller, instance: String, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        let stopped = c.stop_instance(&instance).await?;
        Ok(Response::Instance(
            c.intent(OperationKind::Stop, stopped, wait).await?,
        ))
    })
}

pub(super) fn restart_instance(c: &Controller, instance: String, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        let restarted = c.restart_instance(&instance).await?;
        Ok(Response::Instance(
            c.intent(OperationKind::Restart, restarted, wait).await?,
        ))
    })
}

pub(super) fn update_instance(
    c: &Controller,
    instance: String,
    update: InstanceUpdate,
    wait: Wait,
) -> Handling<'_> {
    Box::pin(async move {
        let updated = c.update_instance(&instance, update).await?;
        // Only an update that restarts the instance is a long call.
        if updated.restarts_requested > updated.restarts_done {
            Ok(Response::Instance(
                c.intent(OperationKind::Update, updated, wait).await?,
            ))
        } else {
            Ok(Response::Instance(c.settled(updated, wait).await?))
        }
    })
}

pub(super) fn delete_instance(c: &Controller, instance: String, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        let mut deleting = c.delete_instance(&instance).await?;
        let operation = c.start_operation(OperationKind::Delete, target(&deleting));
        let operation = operation.await?;
        deleting.operation = Some(operation.id.clone());
        Ok(Response::MaybeInstance(match wait {
            Wait::No => Some(deleting),
            Wait::Settled => {
                let settled = c.settle(&deleting.id).await;
                c.refresh_quietly(&operation.id).await;
                settled?.map(|mut left| {
                    left.operation = Some(operation.id);
                    left
                })
            }
        }))
    })
}

pub(super) fn clone_instance(
    c: &Controller,
    source: String,
    name: String,
    linked: bool,
    snapshot: Option<SnapshotName>,
    wait: Wait,
) -> Handling<'_> {
    Box::pin(async move {
        let created = c.clone_instance(&source, &name, linked, snapshot).await?;
        Ok(Response::Instance(
            c.intent(OperationKind::Clone, created, wait).await?,
        ))
    })
}

pub(super) fn migrate_instance(
    c: &Controller,
    instance: String,
    to: Option<String>,
    mode: MigrationMode,
) -> Handling<'_> {
    Box::pin(async move {
        let moved = c.migrate_instance(&instance, to.as_deref(), mode).await?;
        Ok(Response::Instance(moved))
    })
}

pub(super) fn pause_instance(c: &Controller, instance: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Instance(c.pause_instance(&instance).await?)) })
}

pub(super) fn resume_instance(c: &Controller, instance: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Instance(c.resume_instance(&instance).await?)) })
}

pub(super) fn instance_stats(c: &Controller, instance: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Stats(c.instance_stats(&instance).await?)) })
}

pub(super) fn instance_stats_history(c: &Controller, instance: String) -> Handling<'_> {
    Box::pin(async move {
        // Known instance or not, the answer is the same kind.
        c.get_instance(&instance).await?;
        Err(no_history())
    })
}

pub(super) fn read_log(c: &Controller, instance: String, offset: u64, max: u64) -> Handling<'_> {
    Box::pin(async move {
        let reader = c.logs(&instance).await?;
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Ok(Response::Log(reader.read(offset, max).await?))
    })
}

pub(super) fn follow_log(c: &Controller, instance: String, offset: u64) -> Handling<'_> {
    Box::pin(async move {
        let reader = c.logs(&instance).await?;
        Ok(Response::LogStream(reader.follow(offset).boxed()))
    })
}

pub(super) fn attach_console(c: &Controller, instance: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Console(c.attach_console(&instance).await?)) })
}

pub(super) fn watch_instances(c: &Controller, after: Revision) -> Handling<'_> {
    Box::pin(async move {
        let after = match after {
            0 => c.current_revision().await?,
            after => after,
        };
        Ok(Response::InstanceEvents(
            c.watch_instances(after).await?.boxed(),
        ))
    })
}

pub(super) fn create_snapshot(c: &Controller, instance: String, name: String) -> Handling<'_> {
    Box::pin(async move {
        let on = target(&c.get_instance(&instance).await?);
        let taken = c.run_operation(
            OperationKind::Snapshot,
            on,
            |_| c.snapshot_instance(&instance, &name),
            |_| Some(name.clone()),
        );
        Ok(Response::Snapshot(taken.await?))
    })
}

pub(super) fn list_snapshots(c: &Controller, instance: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Snapshots(c.list_snapshots(&instance).await?)) })
}

pub(super) fn revert_snapshot(c: &Controller, instance: String, name: String) -> Handling<'_> {
    Box::pin(async move {
        let on = target(&c.get_instance(&instance).await?);
        c.run_operation(
            OperationKind::Revert,
            on,
            |_| c.revert_snapshot(&instance, &name),
            |_| Some(name.clone()),
        )
        .await?;
        Ok(Response::Done)
    })
}

pub(super) fn delete_snapshot(c: &Controller, instance: String, name: String) -> Handling<'_> {
    Box::pin(async move {
        c.delete_snapshot(&instance, &name).await?;
        Ok(Response::Done)
    })
}

pub(super) fn import_images(
    c: &Controller,
    node: Option<String>,
    instance_type: InstanceType,
    archive: PathBuf,
    import_as: ImportAs,
    progress: Progress,
) -> Handling<'_> {
    Box::pin(async move {
        let node = c.image_node(node).await?;
        let image = match &import_as {
            ImportAs::Container { name: Some(name) } => name.to_string(),
            ImportAs::NodeImage { name, .. } => name.to_string(),
            ImportAs::Container { name: None } => archive.display().to_string(),
        };
        let on = OperationTarget::image(&node, image);
        let images = c.run_operation(
            OperationKind::ImageImport,
            on,
            |op| async {
                match import_as {
                    ImportAs::Container { name } => {
                        let recorder = c.progress_recorder(op, "reading");
                        let report = move |p: ImportProgress| {
                            recorder.set(p.done, p.total);
                            progress.report(p)
                        };
                        c.import_images(&node, instance_type, &archive, name.as_ref(), &report)
                            .await
                    }
                    ImportAs::NodeImage { kind, name } => Ok(vec![
                        c.import_node_image(&node, &archive, kind, &name).await?,
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
        Ok(Response::Images(images.await?))
    })
}

pub(super) fn pull_image(
    c: &Controller,
    node: Option<String>,
    instance_type: InstanceType,
    reference: ImageRef,
    options: PullOptions,
    progress: Progress<PullProgress>,
) -> Handling<'_> {
    Box::pin(async move {
        let node = c.image_node(node).await?;
        let on = OperationTarget::image(&node, reference.to_string());
        let image = c.run_operation(
            OperationKind::ImagePull,
            on,
            |op| async {
                let recorder = c.progress_recorder(op, "pulling");
                let report = move |p: PullProgress| {
                    match &p {
                        PullProgress::Resolved { bytes, .. } => recorder.set(0, *bytes),
                        PullProgress::Fetched { size, .. } => recorder.add(*size),
                        PullProgress::Unpacking => recorder.step("unpacking"),
                    }
                    progress.report(p)
                };
                c.pull_image(&node, instance_type, &reference, &options, &report)
                    .await
            },
            |image: &ImageInfo| Some(image.name.clone()),
        );
        Ok(Response::Images(vec![image.await?]))
    })
}

pub(super) fn list_images(
    c: &Controller,
    node: Option<String>,
    instance_type: InstanceType,
) -> Handling<'_> {
    Box::pin(async move {
        let node = c.image_node(node).await?;
        Ok(Response::Images(c.list_images(&node, instance_type).await?))
    })
}

pub(super) fn remove_image(
    c: &Controller,
    node: Option<String>,
    instance_type: InstanceType,
    kind: ImageKind,
    name: String,
) -> Handling<'_> {
    Box::pin(async move {
        let node = c.image_node(node).await?;
        match kind {
            ImageKind::Container => c.remove_image(&node, instance_type, &name).await?,
            kind => {
                let name = NodeImageName::try_from(name)?;
                c.remove_node_image(&node, kind, &name).await?
            }
        }
        Ok(Response::Done)
    })
}

pub(super) fn list_nodes(c: &Controller) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Nodes(c.list_nodes().await?)) })
}

pub(super) fn get_node(c: &Controller, node: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Node(c.get_node(&node).await?)) })
}

pub(super) fn node_stats_history(c: &Controller, node: String) -> Handling<'_> {
    Box::pin(async move {
        // Known node or not, the answer is the same kind.
        c.get_node(&node).await?;
        Err(no_history())
    })
}

pub(super) fn cordon_node(c: &Controller, node: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Node(c.cordon_node(&node).await?)) })
}

pub(super) fn uncordon_node(c: &Controller, node: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Node(c.uncordon_node(&node).await?)) })
}

pub(super) fn drain_node(c: &Controller, node: String) -> Handling<'_> {
    Box::pin(async move {
        // An unknown node is refused before anything is recorded.
        let on = OperationTarget::node(c.get_node(&node).await?.id);
        let drained = c.run_operation(
            OperationKind::Drain,
            on,
            |_| c.drain_node(&node),
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
        Ok(Response::Drain(drained.await?))
    })
}

pub(super) fn set_maintenance(c: &Controller, node: String, on: bool) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Drain(c.set_maintenance(&node, on).await?)) })
}

pub(super) fn decommission_node(c: &Controller, node: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Drain(c.decommission_node(&node).await?)) })
}

pub(super) fn deregister_node(c: &Controller, node: String) -> Handling<'_> {
    Box::pin(async move {
        c.deregister_node(&node).await?;
        Ok(Response::Done)
    })
}

pub(super) fn label_node(c: &Controller, node: String, changes: LabelChanges) -> Handling<'_> {
    Box::pin(async move {
        let labelled = c.label_node(&node, &changes).await?;
        Ok(Response::Node(c.placed_waiting(labelled).await?))
    })
}

pub(super) fn change_node_traits(
    c: &Controller,
    node: String,
    changes: TraitChanges,
) -> Handling<'_> {
    Box::pin(async move {
        let changed = c.change_node_traits(&node, &changes).await?;
        Ok(Response::Node(c.placed_waiting(changed).await?))
    })
}

pub(super) fn set_node_carbon(
    c: &Controller,
    node: String,
    intensity: Option<CarbonIntensity>,
) -> Handling<'_> {
    Box::pin(async move {
        let changed = c.set_node_carbon(&node, intensity).await?;
        Ok(Response::Node(c.placed_waiting(changed).await?))
    })
}

pub(super) fn set_allocation_ratios(
    c: &Controller,
    node: String,
    cpu: Option<AllocationRatio>,
    memory: Option<AllocationRatio>,
) -> Handling<'_> {
    Box::pin(async move {
        let changed = c.set_allocation_ratios(&node, cpu, memory).await?;
        Ok(Response::Node(c.placed_waiting(changed).await?))
    })
}

pub(super) fn watch_nodes(c: &Controller, after: Revision) -> Handling<'_> {
    Box::pin(async move {
        let after = match after {
            0 => c.current_revision().await?,
            after => after,
        };
        Ok(Response::NodeEvents(c.watch_nodes(after).await?.boxed()))
    })
}

pub(super) fn cluster_info(c: &Controller) -> Handling<'_> {
    Box::pin(async move { Ok(Response::ClusterInfo(c.cluster_info().await?)) })
}

pub(super) fn create_network(c: &Controller, request: CreateNetwork) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Network(c.create_network(request).await?)) })
}

pub(super) fn get_network(c: &Controller, name: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Network(c.get_network(&name).await?)) })
}

pub(super) fn list_networks(c: &Controller) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Networks(c.list_networks().await?)) })
}

pub(super) fn network_status(c: &Controller, name: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::NetworkStatus(c.network_status(&name).await?)) })
}

pub(super) fn repair_network(c: &Controller, name: String) -> Handling<'_> {
    Box::pin(async move { Ok(Response::NetworkStatus(c.repair_network(&name).await?)) })
}

pub(super) fn delete_network(c: &Controller, name: String) -> Handling<'_> {
    Box::pin(async move {
        c.delete_network(&name).await?;
        Ok(Response::Done)
    })
}

pub(super) fn create_aggregate(
    c: &Controller,
    name: AggregateName,
    metadata: BTreeMap<LabelKey, LabelValue>,
) -> Handling<'_> {
    Box::pin(async move {
        let created = c.create_aggregate(&name, metadata).await?;
        c.place_waiting().await?;
        Ok(Response::Aggregate(created))
    })
}

pub(super) fn delete_aggregate(c: &Controller, name: AggregateName) -> Handling<'_> {
    Box::pin(async move {
        c.delete_aggregate(&name).await?;
        c.place_waiting().await?;
        Ok(Response::Done)
    })
}

pub(super) fn list_aggregates(c: &Controller) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Aggregates(c.list_aggregates().await?)) })
}

pub(super) fn get_aggregate(c: &Controller, name: AggregateName) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Aggregate(c.get_aggregate(&name).await?)) })
}

pub(super) fn set_aggregate_metadata(
    c: &Controller,
    name: AggregateName,
    changes: LabelChanges,
) -> Handling<'_> {
    Box::pin(async move {
        let changed = c.set_aggregate_metadata(&name, &changes).await?;
        c.place_waiting().await?;
        Ok(Response::Aggregate(changed))
    })
}

pub(super) fn add_aggregate_node(
    c: &Controller,
    name: AggregateName,
    node: String,
) -> Handling<'_> {
    Box::pin(async move {
        let added = c.add_aggregate_node(&name, &node).await?;
        c.place_waiting().await?;
        Ok(Response::Aggregate(added))
    })
}

pub(super) fn remove_aggregate_node(
    c: &Controller,
    name: AggregateName,
    node: String,
) -> Handling<'_> {
    Box::pin(async move {
        let removed = c.remove_aggregate_node(&name, &node).await?;
        c.place_waiting().await?;
        Ok(Response::Aggregate(removed))
    })
}

pub(super) fn create_template(
    c: &Controller,
    name: TemplateName,
    spec: TemplateSpec,
) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Template(c.create_template(&name, spec).await?)) })
}

pub(super) fn update_template(
    c: &Controller,
    name: TemplateName,
    spec: TemplateSpec,
) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Template(c.update_template(&name, spec).await?)) })
}

pub(super) fn get_template(
    c: &Controller,
    name: TemplateName,
    version: Option<u32>,
) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Template(c.get_template(&name, version).await?)) })
}

pub(super) fn list_templates(c: &Controller) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Templates(c.list_templates().await?)) })
}

pub(super) fn delete_template(
    c: &Controller,
    name: TemplateName,
    version: Option<u32>,
) -> Handling<'_> {
    Box::pin(async move {
        c.delete_template(&name, version).await?;
        Ok(Response::Done)
    })
}

pub(super) fn create_from_template(
    c: &Controller,
    request: FromTemplate,
    wait: Wait,
) -> Handling<'_> {
    Box::pin(async move {
        let created = c.create_from_template(request).await?;
        Ok(Response::Instance(
            c.intent(OperationKind::Create, created, wait).await?,
        ))
    })
}

pub(super) fn list_operations(c: &Controller, filter: OperationFilter, page: Page) -> Handling<'_> {
    Box::pin(async move {
        let (operations, next_page) =
            page.cut(c.list_operations(&filter).await?, |o| o.id.as_str());
        Ok(Response::Operations(OperationPage {
            operations,
            next_page,
        }))
    })
}

pub(super) fn get_operation(c: &Controller, id: OperationId) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Operation(c.get_operation(&id).await?)) })
}

pub(super) fn watch_operation(c: &Controller, id: OperationId) -> Handling<'_> {
    Box::pin(async move { Ok(Response::OperationUpdates(c.watch_operation(&id).await?)) })
}

pub(super) fn cancel_operation(c: &Controller, id: OperationId) -> Handling<'_> {
    Box::pin(async move { Ok(Response::Operation(c.cancel_operation(&id).await?)) })
}
