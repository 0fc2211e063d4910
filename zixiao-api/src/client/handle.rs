//! One handler per request the [`GrpcClient`] sends, each returning its
//! own boxed future ([`Handling`]), so the dispatch's frame never holds
//! them all. A handler encodes its request, makes its RPC and decodes the
//! answer; what the server answers wrongly is the server's fault
//! ([`GrpcClient::decoded`]).

use std::collections::BTreeMap;

use futures::StreamExt;
use zixiao_core::api::{
    AuditQuery, Handling, InstancePage, OperationFilter, OperationPage, Page, Progress, Quota,
    Response, Role, TokenTerms,
};
use zixiao_core::driver::{PullOptions, PullProgress};
use zixiao_core::model::{
    AggregateName, CarbonIntensity, CreateNetwork, FromTemplate, ImageKind, LabelChanges, LabelKey,
    LabelValue, SnapshotName, TemplateName, TemplateSpec, TraitChanges,
};
use zixiao_core::store::Revision;
use zixiao_core::{
    AllocationRatio, CreateInstance, Error, ImageRef, InstanceFilter, InstanceType, InstanceUpdate,
    MigrationMode, OperationId, Wait,
};

use super::GrpcClient;
use super::{action, instance_ref, node_ref, operation_ref, required_reply, snapshot_ref};
use crate::convert::{
    decode_all, decode_pull_event, encode_instance_type, encode_label_changes,
    encode_metadata_changes, encode_pull_options, encode_role, encode_template_change,
    encode_trait_changes, page_token, wire_time,
};
use crate::pb;

pub(super) fn create_instance(c: &GrpcClient, request: CreateInstance, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::CreateInstanceRequest {
            instance: Some(request.into()),
            wait: wait.settled(),
        };
        Ok(Response::Instance(c.reply(
            c.instances.clone().create_instance(request).await,
        )?))
    })
}

pub(super) fn get_instance(c: &GrpcClient, instance: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Instance(
            c.reply(
                c.instances
                    .clone()
                    .get_instance(instance_ref(instance))
                    .await,
            )?,
        ))
    })
}

pub(super) fn list_instances(c: &GrpcClient, filter: InstanceFilter, page: Page) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::ListInstancesRequest {
            filter: Some(filter.into()),
            page_size: page.size,
            page_token: page.token.map(|t| t.to_string()).unwrap_or_default(),
        };
        let listed = c.answer(c.instances.clone().list_instances(request).await)?;
        Ok(Response::Instances(InstancePage {
            instances: c.decoded(decode_all(listed.instances))?,
            next_page: c.decoded(page_token(&listed.next_page_token))?,
        }))
    })
}

pub(super) fn start_instance(c: &GrpcClient, instance: String, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Instance(
            c.reply(
                c.instances
                    .clone()
                    .start_instance(action(instance, wait))
                    .await,
            )?,
        ))
    })
}

pub(super) fn stop_instance(c: &GrpcClient, instance: String, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Instance(
            c.reply(
                c.instances
                    .clone()
                    .stop_instance(action(instance, wait))
                    .await,
            )?,
        ))
    })
}

pub(super) fn restart_instance(c: &GrpcClient, instance: String, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Instance(
            c.reply(
                c.instances
                    .clone()
                    .restart_instance(action(instance, wait))
                    .await,
            )?,
        ))
    })
}

pub(super) fn update_instance(
    c: &GrpcClient,
    instance: String,
    update: InstanceUpdate,
    wait: Wait,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::UpdateInstanceRequest {
            instance,
            update: Some(update.into()),
            wait: wait.settled(),
        };
        Ok(Response::Instance(c.reply(
            c.instances.clone().update_instance(request).await,
        )?))
    })
}

pub(super) fn clone_instance(
    c: &GrpcClient,
    source: String,
    name: String,
    linked: bool,
    snapshot: Option<SnapshotName>,
    wait: Wait,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::CloneInstanceRequest {
            source,
            name,
            linked,
            snapshot: snapshot.map(String::from),
            wait: wait.settled(),
        };
        Ok(Response::Instance(c.reply(
            c.instances.clone().clone_instance(request).await,
        )?))
    })
}

pub(super) fn migrate_instance(
    c: &GrpcClient,
    instance: String,
    to: Option<String>,
    mode: MigrationMode,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::MigrateInstanceRequest {
            instance,
            to,
            mode: mode.as_str().to_owned(),
        };
        Ok(Response::Instance(c.reply(
            c.instances.clone().migrate_instance(request).await,
        )?))
    })
}

pub(super) fn delete_instance(c: &GrpcClient, instance: String, wait: Wait) -> Handling<'_> {
    Box::pin(async move {
        let deleting = c
            .instances
            .clone()
            .delete_instance(action(instance, wait))
            .await;
        let left = c.answer(deleting)?.instance.map(TryInto::try_into);
        Ok(Response::MaybeInstance(c.decoded(left.transpose())?))
    })
}

pub(super) fn pause_instance(c: &GrpcClient, instance: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Instance(
            c.reply(
                c.instances
                    .clone()
                    .pause_instance(instance_ref(instance))
                    .await,
            )?,
        ))
    })
}

pub(super) fn resume_instance(c: &GrpcClient, instance: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Instance(
            c.reply(
                c.instances
                    .clone()
                    .resume_instance(instance_ref(instance))
                    .await,
            )?,
        ))
    })
}

pub(super) fn instance_stats(c: &GrpcClient, instance: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Stats(
            c.answer(
                c.instances
                    .clone()
                    .get_instance_stats(instance_ref(instance))
                    .await,
            )?
            .into(),
        ))
    })
}

pub(super) fn instance_stats_history(c: &GrpcClient, instance: String) -> Handling<'_> {
    Box::pin(async move {
        let history = c
            .instances
            .clone()
            .get_instance_stats_history(instance_ref(instance))
            .await;
        Ok(Response::StatsHistory(c.reply(history)?))
    })
}

pub(super) fn read_log(c: &GrpcClient, instance: String, offset: u64, max: u64) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::ReadLogRequest {
            instance,
            offset,
            max,
        };
        let log = c.answer(c.instances.clone().read_log(request).await)?;
        Ok(Response::Log(log.into()))
    })
}

pub(super) fn follow_log(c: &GrpcClient, instance: String, offset: u64) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::FollowLogRequest { instance, offset };
        let log = c.answer(c.instances.clone().follow_log(request).await)?;
        let client = c.clone();
        let pieces = log.map(move |piece| match piece {
            Ok(piece) => Ok(piece.data),
            Err(status) => Err(client.error(status)),
        });
        Ok(Response::LogStream(pieces.boxed()))
    })
}

pub(super) fn attach_console(c: &GrpcClient, instance: String) -> Handling<'_> {
    Box::pin(async move {
        use pb::console_input::Input;
        let mut instances = c.instances.clone();
        let first = pb::ConsoleInput {
            input: Some(Input::Instance(instance)),
        };
        let data = |data| pb::ConsoleInput {
            input: Some(Input::Data(data)),
        };
        let console = crate::console::connect(first, data, |input| async move {
            Ok(instances.attach_console(input).await?.into_inner())
        })
        .await;
        Ok(Response::Console(console.map_err(|s| c.error(s))?))
    })
}

pub(super) fn watch_instances(c: &GrpcClient, after: Revision) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::WatchRequest {
            after_revision: after,
        };
        let events = c.answer(c.instances.clone().watch_instances(request).await)?;
        let client = c.clone();
        let events = events.map(move |event| match event {
            Ok(event) => client.decoded(event.try_into()),
            Err(status) => Err(client.error(status)),
        });
        Ok(Response::InstanceEvents(events.boxed()))
    })
}

pub(super) fn create_snapshot(c: &GrpcClient, instance: String, name: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Snapshot(
            c.reply(
                c.snapshots
                    .clone()
                    .create_snapshot(snapshot_ref(instance, name))
                    .await,
            )?,
        ))
    })
}

pub(super) fn list_snapshots(c: &GrpcClient, instance: String) -> Handling<'_> {
    Box::pin(async move {
        let all = c
            .answer(
                c.snapshots
                    .clone()
                    .list_snapshots(instance_ref(instance))
                    .await,
            )?
            .snapshots;
        Ok(Response::Snapshots(c.decoded(decode_all(all))?))
    })
}

pub(super) fn revert_snapshot(c: &GrpcClient, instance: String, name: String) -> Handling<'_> {
    Box::pin(async move {
        c.answer(
            c.snapshots
                .clone()
                .revert_snapshot(snapshot_ref(instance, name))
                .await,
        )?;
        Ok(Response::Done)
    })
}

pub(super) fn delete_snapshot(c: &GrpcClient, instance: String, name: String) -> Handling<'_> {
    Box::pin(async move {
        c.answer(
            c.snapshots
                .clone()
                .delete_snapshot(snapshot_ref(instance, name))
                .await,
        )?;
        Ok(Response::Done)
    })
}

pub(super) fn pull_image(
    c: &GrpcClient,
    node: Option<String>,
    instance_type: InstanceType,
    reference: ImageRef,
    options: PullOptions,
    progress: Progress<PullProgress>,
) -> Handling<'_> {
    Box::pin(async move {
        let wire = encode_pull_options(options);
        let request = pb::PullImageRequest {
            node,
            r#type: encode_instance_type(instance_type),
            reference: reference.to_string(),
            credentials: wire.credentials,
            insecure_registries: wire.insecure_registries,
            registry_cas: wire.registry_cas,
            platform: wire.platform,
            kind: wire.kind,
        };
        let mut events = c.answer(c.images.clone().pull_image(request).await)?;
        while let Some(event) = events.next().await {
            let Some(event) = event.map_err(|s| c.error(s))?.event else {
                continue;
            };
            match c.decoded(decode_pull_event(event))? {
                Ok(p) => progress.report(p),
                Err(image) => return Ok(Response::Images(vec![image])),
            }
        }
        Err(Error::Internal(
            "the server ended the pull without saying what it pulled".to_owned(),
        ))
    })
}

pub(super) fn list_images(
    c: &GrpcClient,
    node: Option<String>,
    instance_type: InstanceType,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::ListImagesRequest {
            node,
            r#type: encode_instance_type(instance_type),
        };
        let images = c.answer(c.images.clone().list_images(request).await)?;
        Ok(Response::Images(c.decoded(decode_all(images.images))?))
    })
}

pub(super) fn remove_image(
    c: &GrpcClient,
    node: Option<String>,
    instance_type: InstanceType,
    kind: ImageKind,
    name: String,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::RemoveImageRequest {
            node,
            r#type: encode_instance_type(instance_type),
            name,
            kind: crate::convert::encode_image_kind(kind),
        };
        c.answer(c.images.clone().remove_image(request).await)?;
        Ok(Response::Done)
    })
}

pub(super) fn list_nodes(c: &GrpcClient) -> Handling<'_> {
    Box::pin(async move {
        let all = c.answer(c.nodes.clone().list_nodes(()).await)?;
        Ok(Response::Nodes(c.decoded(decode_all(all.nodes))?))
    })
}

pub(super) fn get_node(c: &GrpcClient, node: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Node(
            c.reply(c.nodes.clone().get_node(node_ref(node)).await)?,
        ))
    })
}

pub(super) fn node_stats_history(c: &GrpcClient, node: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::NodeStatsHistory(c.reply(
            c.nodes.clone().get_node_stats_history(node_ref(node)).await,
        )?))
    })
}

pub(super) fn cordon_node(c: &GrpcClient, node: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Node(c.reply(
            c.nodes.clone().cordon_node(node_ref(node)).await,
        )?))
    })
}

pub(super) fn uncordon_node(c: &GrpcClient, node: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Node(c.reply(
            c.nodes.clone().uncordon_node(node_ref(node)).await,
        )?))
    })
}

pub(super) fn drain_node(c: &GrpcClient, node: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Drain(
            c.reply(c.nodes.clone().drain_node(node_ref(node)).await)?,
        ))
    })
}

pub(super) fn set_maintenance(c: &GrpcClient, node: String, on: bool) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::SetMaintenanceRequest { node, on };
        Ok(Response::Drain(
            c.reply(c.nodes.clone().set_maintenance(request).await)?,
        ))
    })
}

pub(super) fn decommission_node(c: &GrpcClient, node: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Drain(c.reply(
            c.nodes.clone().decommission_node(node_ref(node)).await,
        )?))
    })
}

pub(super) fn deregister_node(c: &GrpcClient, node: String) -> Handling<'_> {
    Box::pin(async move {
        c.answer(c.nodes.clone().deregister_node(node_ref(node)).await)?;
        Ok(Response::Done)
    })
}

pub(super) fn watch_nodes(c: &GrpcClient, after: Revision) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::WatchRequest {
            after_revision: after,
        };
        let events = c.answer(c.nodes.clone().watch_nodes(request).await)?;
        let client = c.clone();
        let events = events.map(move |event| match event {
            Ok(event) => client.decoded(event.try_into()),
            Err(status) => Err(client.error(status)),
        });
        Ok(Response::NodeEvents(events.boxed()))
    })
}

pub(super) fn label_node(c: &GrpcClient, node: String, changes: LabelChanges) -> Handling<'_> {
    Box::pin(async move {
        let request = encode_label_changes(node, changes);
        Ok(Response::Node(
            c.reply(c.nodes.clone().label_node(request).await)?,
        ))
    })
}

pub(super) fn change_node_traits(
    c: &GrpcClient,
    node: String,
    changes: TraitChanges,
) -> Handling<'_> {
    Box::pin(async move {
        let request = encode_trait_changes(node, changes);
        Ok(Response::Node(c.reply(
            c.nodes.clone().change_node_traits(request).await,
        )?))
    })
}

pub(super) fn set_node_carbon(
    c: &GrpcClient,
    node: String,
    intensity: Option<CarbonIntensity>,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::SetNodeCarbonRequest {
            node,
            carbon_intensity: intensity.map(u32::from),
        };
        Ok(Response::Node(
            c.reply(c.nodes.clone().set_node_carbon(request).await)?,
        ))
    })
}

pub(super) fn set_allocation_ratios(
    c: &GrpcClient,
    node: String,
    cpu: Option<AllocationRatio>,
    memory: Option<AllocationRatio>,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::SetAllocationRatiosRequest {
            node,
            cpu_millis: cpu.map(AllocationRatio::millis),
            memory_millis: memory.map(AllocationRatio::millis),
        };
        Ok(Response::Node(c.reply(
            c.nodes.clone().set_allocation_ratios(request).await,
        )?))
    })
}

pub(super) fn create_aggregate(
    c: &GrpcClient,
    name: AggregateName,
    metadata: BTreeMap<LabelKey, LabelValue>,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::CreateAggregateRequest {
            name: name.into(),
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        };
        Ok(Response::Aggregate(c.reply(
            c.aggregates.clone().create_aggregate(request).await,
        )?))
    })
}

pub(super) fn delete_aggregate(c: &GrpcClient, name: AggregateName) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::AggregateRef { name: name.into() };
        c.answer(c.aggregates.clone().delete_aggregate(request).await)?;
        Ok(Response::Done)
    })
}

pub(super) fn list_aggregates(c: &GrpcClient) -> Handling<'_> {
    Box::pin(async move {
        let all = c.answer(c.aggregates.clone().list_aggregates(()).await)?;
        Ok(Response::Aggregates(c.decoded(decode_all(all.aggregates))?))
    })
}

pub(super) fn get_aggregate(c: &GrpcClient, name: AggregateName) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::AggregateRef { name: name.into() };
        Ok(Response::Aggregate(c.reply(
            c.aggregates.clone().get_aggregate(request).await,
        )?))
    })
}

pub(super) fn set_aggregate_metadata(
    c: &GrpcClient,
    name: AggregateName,
    changes: LabelChanges,
) -> Handling<'_> {
    Box::pin(async move {
        let request = encode_metadata_changes(name.into(), changes);
        Ok(Response::Aggregate(c.reply(
            c.aggregates.clone().set_aggregate_metadata(request).await,
        )?))
    })
}

pub(super) fn add_aggregate_node(
    c: &GrpcClient,
    name: AggregateName,
    node: String,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::AggregateNodeRequest {
            name: name.into(),
            node,
        };
        Ok(Response::Aggregate(c.reply(
            c.aggregates.clone().add_aggregate_node(request).await,
        )?))
    })
}

pub(super) fn remove_aggregate_node(
    c: &GrpcClient,
    name: AggregateName,
    node: String,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::AggregateNodeRequest {
            name: name.into(),
            node,
        };
        Ok(Response::Aggregate(c.reply(
            c.aggregates.clone().remove_aggregate_node(request).await,
        )?))
    })
}

pub(super) fn cluster_info(c: &GrpcClient) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::ClusterInfo(
            c.reply(c.cluster.clone().get_cluster_info(()).await)?,
        ))
    })
}

pub(super) fn create_network(c: &GrpcClient, request: CreateNetwork) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::CreateNetworkRequest {
            network: Some(request.into()),
        };
        Ok(Response::Network(
            c.reply(c.networks.clone().create_network(request).await)?,
        ))
    })
}

pub(super) fn get_network(c: &GrpcClient, name: String) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::NetworkRef { network: name };
        Ok(Response::Network(
            c.reply(c.networks.clone().get_network(request).await)?,
        ))
    })
}

pub(super) fn list_networks(c: &GrpcClient) -> Handling<'_> {
    Box::pin(async move {
        let all = c.answer(c.networks.clone().list_networks(()).await)?;
        Ok(Response::Networks(c.decoded(decode_all(all.networks))?))
    })
}

pub(super) fn delete_network(c: &GrpcClient, name: String) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::NetworkRef { network: name };
        c.answer(c.networks.clone().delete_network(request).await)?;
        Ok(Response::Done)
    })
}

pub(super) fn network_status(c: &GrpcClient, name: String) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::NetworkRef { network: name };
        Ok(Response::NetworkStatus(
            c.reply(c.networks.clone().network_status(request).await)?,
        ))
    })
}

pub(super) fn repair_network(c: &GrpcClient, name: String) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::NetworkRef { network: name };
        Ok(Response::NetworkStatus(
            c.reply(c.networks.clone().repair_network(request).await)?,
        ))
    })
}

pub(super) fn create_template(
    c: &GrpcClient,
    name: TemplateName,
    spec: TemplateSpec,
) -> Handling<'_> {
    Box::pin(async move {
        let request = encode_template_change(name, spec);
        Ok(Response::Template(c.reply(
            c.templates.clone().create_template(request).await,
        )?))
    })
}

pub(super) fn update_template(
    c: &GrpcClient,
    name: TemplateName,
    spec: TemplateSpec,
) -> Handling<'_> {
    Box::pin(async move {
        let request = encode_template_change(name, spec);
        Ok(Response::Template(c.reply(
            c.templates.clone().update_template(request).await,
        )?))
    })
}

pub(super) fn get_template(
    c: &GrpcClient,
    name: TemplateName,
    version: Option<u32>,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::TemplateRef {
            name: name.into(),
            version,
        };
        Ok(Response::Template(
            c.reply(c.templates.clone().get_template(request).await)?,
        ))
    })
}

pub(super) fn list_templates(c: &GrpcClient) -> Handling<'_> {
    Box::pin(async move {
        let all = c.answer(c.templates.clone().list_templates(()).await)?;
        Ok(Response::Templates(c.decoded(decode_all(all.templates))?))
    })
}

pub(super) fn delete_template(
    c: &GrpcClient,
    name: TemplateName,
    version: Option<u32>,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::TemplateRef {
            name: name.into(),
            version,
        };
        c.answer(c.templates.clone().delete_template(request).await)?;
        Ok(Response::Done)
    })
}

pub(super) fn create_from_template(
    c: &GrpcClient,
    request: FromTemplate,
    wait: Wait,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::CreateFromTemplateRequest {
            wait: wait.settled(),
            ..request.into()
        };
        Ok(Response::Instance(c.reply(
            c.instances.clone().create_from_template(request).await,
        )?))
    })
}

pub(super) fn create_user(
    c: &GrpcClient,
    name: String,
    role: Role,
    projects: Vec<String>,
    token_ttl: Option<std::time::Duration>,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::CreateUserRequest {
            name,
            role: encode_role(role),
            projects,
            token_ttl: token_ttl.map(crate::membership::wire_duration),
        };
        let created = c.answer(c.users.clone().create_user(request).await)?;
        let user = c.decoded(required_reply(created.user, "user"))?;
        let token = c.decoded(required_reply(created.token, "token"))?;
        Ok(Response::NewUser(
            c.decoded(user.try_into())?,
            c.decoded(token.try_into())?,
        ))
    })
}

pub(super) fn list_users(c: &GrpcClient) -> Handling<'_> {
    Box::pin(async move {
        let all = c.answer(c.users.clone().list_users(()).await)?;
        Ok(Response::Users(c.decoded(decode_all(all.users))?))
    })
}

pub(super) fn delete_user(c: &GrpcClient, name: String) -> Handling<'_> {
    Box::pin(async move {
        c.answer(c.users.clone().delete_user(pb::UserRef { name }).await)?;
        Ok(Response::Done)
    })
}

pub(super) fn create_token(
    c: &GrpcClient,
    owner: Option<String>,
    terms: TokenTerms,
) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::CreateTokenRequest {
            owner,
            role: terms.role.map_or(0, encode_role),
            limited_to_projects: terms.projects.is_some(),
            projects: terms.projects.unwrap_or_default(),
            ttl: terms.ttl.map(crate::membership::wire_duration),
            join: terms.purpose == zixiao_core::api::TokenPurpose::Join,
            reusable: terms.reusable,
        };
        Ok(Response::Token(
            c.reply(c.users.clone().create_token(request).await)?,
        ))
    })
}

pub(super) fn list_tokens(c: &GrpcClient, owner: Option<String>) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::ListTokensRequest { owner };
        let all = c.answer(c.users.clone().list_tokens(request).await)?;
        Ok(Response::Tokens(c.decoded(decode_all(all.tokens))?))
    })
}

pub(super) fn revoke_token(c: &GrpcClient, id: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::TokenInfo(c.reply(
            c.users.clone().revoke_token(pb::TokenRef { id }).await,
        )?))
    })
}

pub(super) fn create_project(c: &GrpcClient, name: String, quota: Quota) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::ProjectChange {
            name,
            quota: Some(quota.into()),
        };
        Ok(Response::Project(
            c.reply(c.projects.clone().create_project(request).await)?,
        ))
    })
}

pub(super) fn list_projects(c: &GrpcClient) -> Handling<'_> {
    Box::pin(async move {
        let all = c.answer(c.projects.clone().list_projects(()).await)?;
        Ok(Response::Projects(c.decoded(decode_all(all.projects))?))
    })
}

pub(super) fn get_project(c: &GrpcClient, name: String) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Project(
            c.reply(
                c.projects
                    .clone()
                    .get_project(pb::ProjectRef { name })
                    .await,
            )?,
        ))
    })
}

pub(super) fn update_project(c: &GrpcClient, name: String, quota: Quota) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::ProjectChange {
            name,
            quota: Some(quota.into()),
        };
        Ok(Response::Project(
            c.reply(c.projects.clone().update_project(request).await)?,
        ))
    })
}

pub(super) fn delete_project(c: &GrpcClient, name: String) -> Handling<'_> {
    Box::pin(async move {
        c.answer(
            c.projects
                .clone()
                .delete_project(pb::ProjectRef { name })
                .await,
        )?;
        Ok(Response::Done)
    })
}

pub(super) fn list_audit(c: &GrpcClient, query: AuditQuery) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::ListAuditRequest {
            since: query.since.map(wire_time),
            user: query.user,
            project: query.project,
        };
        let all = c.answer(c.audit.clone().list_audit(request).await)?;
        Ok(Response::AuditRecords(c.decoded(decode_all(all.records))?))
    })
}

pub(super) fn list_operations(c: &GrpcClient, filter: OperationFilter, page: Page) -> Handling<'_> {
    Box::pin(async move {
        let request = pb::ListOperationsRequest {
            filter: Some(filter.into()),
            page_size: page.size,
            page_token: page.token.map(|t| t.to_string()).unwrap_or_default(),
        };
        let listed = c.answer(c.operations.clone().list_operations(request).await)?;
        Ok(Response::Operations(OperationPage {
            operations: c.decoded(decode_all(listed.operations))?,
            next_page: c.decoded(page_token(&listed.next_page_token))?,
        }))
    })
}

pub(super) fn get_operation(c: &GrpcClient, id: OperationId) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Operation(c.reply(
            c.operations.clone().get_operation(operation_ref(id)).await,
        )?))
    })
}

pub(super) fn watch_operation(c: &GrpcClient, id: OperationId) -> Handling<'_> {
    Box::pin(async move {
        let updates = c.answer(
            c.operations
                .clone()
                .watch_operation(operation_ref(id))
                .await,
        )?;
        let client = c.clone();
        let updates = updates.map(move |update| match update {
            Ok(update) => client.decoded(update.try_into()),
            Err(status) => Err(client.error(status)),
        });
        Ok(Response::OperationUpdates(updates.boxed()))
    })
}

pub(super) fn cancel_operation(c: &GrpcClient, id: OperationId) -> Handling<'_> {
    Box::pin(async move {
        Ok(Response::Operation(
            c.reply(
                c.operations
                    .clone()
                    .cancel_operation(operation_ref(id))
                    .await,
            )?,
        ))
    })
}
