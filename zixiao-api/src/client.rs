//! [`GrpcClient`]: the [`Api`] of a Zixiao server reached over gRPC, the
//! same trait the in-process controller implements, so every frontend
//! holds one [`Client`] whichever deployment is behind it. This is the one
//! place that maps each [`Request`] to its RPC; [`connect`] builds the
//! client.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zixiao_core::api::{Api, Client, InstancePage, OperationPage, Request, Response};
use zixiao_core::{AllocationRatio, Error, Result};

use crate::convert::{
    decode_all, decode_pull_event, encode_instance_type, encode_label_changes,
    encode_metadata_changes, encode_pull_options, encode_role, encode_template_change,
    encode_trait_changes, page_token, wire_time,
};
use crate::pb;
use crate::pb::aggregate_service_client::AggregateServiceClient;
use crate::pb::audit_service_client::AuditServiceClient;
use crate::pb::cluster_service_client::ClusterServiceClient;
use crate::pb::image_service_client::ImageServiceClient;
use crate::pb::instance_service_client::InstanceServiceClient;
use crate::pb::local_service_client::LocalServiceClient;
use crate::pb::network_service_client::NetworkServiceClient;
use crate::pb::node_service_client::NodeServiceClient;
use crate::pb::operation_service_client::OperationServiceClient;
use crate::pb::project_service_client::ProjectServiceClient;
use crate::pb::snapshot_service_client::SnapshotServiceClient;
use crate::pb::template_service_client::TemplateServiceClient;
use crate::pb::user_service_client::UserServiceClient;
use crate::secure::ConnectOptions;
use crate::status::to_error;
use crate::tls::Bearer;

/// How long one call may take: long, since a call that waits for an
/// instance to settle may pull an image first. Streams (logs, watches,
/// consoles) are not cut by it once they answered.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// A client of `zixiao server` at `endpoint` (`host:port` or
/// `http://host:port`), connecting lazily: nothing is dialled until the
/// first call, and a server that cannot be reached then is `Unavailable`
/// naming the address and the operating system's error.
///
/// ```no_run
/// # async fn example() -> zixiao_core::Result<()> {
/// let client = zixiao_api::connect("127.0.0.1:50051")?;
/// for node in client.list_nodes().await? {
///     println!("{} is {}", node.id, node.status.as_str());
/// }
/// # Ok(()) }
/// ```
///
/// Errors: `InvalidArgument` (a malformed endpoint).
pub fn connect(endpoint: &str) -> Result<Client> {
    Ok(Client::new(Arc::new(GrpcClient::new(endpoint)?)))
}

/// The [`Api`] of a Zixiao server, over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcClient {
    /// The server, for messages: ``the zixiao server `host:port` ``.
    server: String,
    instances: InstanceServiceClient<Transport>,
    snapshots: SnapshotServiceClient<Transport>,
    images: ImageServiceClient<Transport>,
    nodes: NodeServiceClient<Transport>,
    aggregates: AggregateServiceClient<Transport>,
    networks: NetworkServiceClient<Transport>,
    templates: TemplateServiceClient<Transport>,
    cluster: ClusterServiceClient<Transport>,
    users: UserServiceClient<Transport>,
    projects: ProjectServiceClient<Transport>,
    audit: AuditServiceClient<Transport>,
    operations: OperationServiceClient<Transport>,
    /// The local-files service, on a daemon's Unix socket only.
    local: Option<LocalServiceClient<Transport>>,
}

/// What every RPC of a [`GrpcClient`] goes through: the channel, and the
/// bearer token added to each call.
pub(crate) type Transport = InterceptedService<Channel, Bearer>;

macro_rules! limited {
    ($client:ident, $channel:expr, $bearer:expr) => {
        $client::with_interceptor($channel, $bearer.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
    };
}

impl GrpcClient {
    /// A client of the server at `endpoint`, connecting on first use.
    /// Errors: `InvalidArgument` (a malformed endpoint).
    pub fn new(endpoint: &str) -> Result<Self> {
        GrpcClient::with_options(&ConnectOptions::new(endpoint))
    }

    /// A client of the server `options` name (see
    /// [`crate::secure::connect_with`]), connecting on first use. Errors:
    /// `InvalidArgument` naming the field.
    pub fn with_options(options: &ConnectOptions) -> Result<Self> {
        let (endpoint, tls) = options.resolved_endpoint()?;
        let channel = match crate::secure::client_config(options)? {
            Some(config) if tls => crate::tls::channel(&endpoint, config, CALL_TIMEOUT)?,
            _ => crate::remote::channel(&endpoint, CALL_TIMEOUT)?,
        };
        let bearer = Bearer::new(options.token.as_deref())?;
        Ok(GrpcClient::over(
            format!("the zixiao server `{}`", options.endpoint),
            channel,
            bearer,
            false,
        ))
    }

    /// A client of the daemon on the Unix socket at `path` (see
    /// [`crate::local`]): it also sends the requests that carry paths of
    /// this machine. Connects on first use.
    pub fn over_unix_socket(path: &Path) -> Result<Self> {
        let channel = crate::local::unix_channel(path)?;
        Ok(GrpcClient::over(
            format!("the zixiao daemon on `{}`", path.display()),
            channel,
            Bearer::default(),
            true,
        ))
    }

    fn over(server: String, channel: Channel, bearer: Bearer, local: bool) -> Self {
        GrpcClient {
            server,
            instances: limited!(InstanceServiceClient, channel.clone(), bearer),
            snapshots: limited!(SnapshotServiceClient, channel.clone(), bearer),
            images: limited!(ImageServiceClient, channel.clone(), bearer),
            nodes: limited!(NodeServiceClient, channel.clone(), bearer),
            aggregates: limited!(AggregateServiceClient, channel.clone(), bearer),
            networks: limited!(NetworkServiceClient, channel.clone(), bearer),
            templates: limited!(TemplateServiceClient, channel.clone(), bearer),
            local: local.then(|| limited!(LocalServiceClient, channel.clone(), bearer)),
            users: limited!(UserServiceClient, channel.clone(), bearer),
            projects: limited!(ProjectServiceClient, channel.clone(), bearer),
            audit: limited!(AuditServiceClient, channel.clone(), bearer),
            operations: limited!(OperationServiceClient, channel.clone(), bearer),
            cluster: limited!(ClusterServiceClient, channel, bearer),
        }
    }

    fn error(&self, status: tonic::Status) -> Error {
        to_error(status, &self.server)
    }

    /// The answer of an RPC, or its error.
    fn answer<T>(
        &self,
        reply: std::result::Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T> {
        reply
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error(s))
    }

    /// A reply the server sent, decoded; one that does not decode is the
    /// server's fault, not the caller's.
    fn decoded<T>(&self, value: Result<T>) -> Result<T> {
        value.map_err(|e| Error::Internal(format!("{} answered {}", self.server, e.chain())))
    }

    /// The answer to a request that needs the caller's files.
    fn local_files(&self, operation: &str, path: &Path) -> Error {
        Error::Unsupported(format!(
            "{operation} uses `{}` on this machine, which {} cannot reach; run it on the \
             node, in the embedded deployment",
            path.display(),
            self.server
        ))
    }
}

/// A message a reply must hold (the server's fault if it does not).
fn required_reply<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| Error::invalid(field, "missing"))
}

fn instance_ref(instance: String) -> pb::InstanceRef {
    pb::InstanceRef { instance }
}

fn action(instance: String, wait: zixiao_core::Wait) -> pb::InstanceAction {
    pb::InstanceAction {
        instance,
        wait: wait.settled(),
    }
}

fn snapshot_ref(instance: String, snapshot: String) -> pb::SnapshotRef {
    pb::SnapshotRef { instance, snapshot }
}

fn operation_ref(id: zixiao_core::OperationId) -> pb::OperationRef {
    pb::OperationRef { id: id.into() }
}

fn node_ref(node: String) -> pb::NodeRef {
    pb::NodeRef { node }
}

#[async_trait]
impl Api for GrpcClient {
    async fn call(&self, request: Request) -> Result<Response> {
        // On a daemon's socket, requests with this machine's paths have
        // their own service; everything else goes the usual way.
        let request = match &self.local {
            Some(local) => match crate::local::call(local, request, |s| self.error(s)).await? {
                Ok(response) => return Ok(response),
                Err(request) => request,
            },
            None => request,
        };
        let mut instances = self.instances.clone();
        let mut snapshots = self.snapshots.clone();
        let mut nodes = self.nodes.clone();
        let mut aggregates = self.aggregates.clone();
        let mut networks = self.networks.clone();
        let mut templates = self.templates.clone();
        let mut users = self.users.clone();
        let mut projects = self.projects.clone();
        let mut operations = self.operations.clone();
        let operation = request.operation();
        Ok(match request {
            Request::CreateInstance { request, wait } => {
                let request = pb::CreateInstanceRequest {
                    instance: Some(request.into()),
                    wait: wait.settled(),
                };
                let created = self.answer(instances.create_instance(request).await)?;
                Response::Instance(self.decoded(created.try_into())?)
            }
            Request::GetInstance { instance } => {
                let found = self.answer(instances.get_instance(instance_ref(instance)).await)?;
                Response::Instance(self.decoded(found.try_into())?)
            }
            Request::ListInstances { filter, page } => {
                let request = pb::ListInstancesRequest {
                    filter: Some(filter.into()),
                    page_size: page.size,
                    page_token: page.token.map(|t| t.to_string()).unwrap_or_default(),
                };
                let listed = self.answer(instances.list_instances(request).await)?;
                Response::Instances(InstancePage {
                    instances: self.decoded(decode_all(listed.instances))?,
                    next_page: self.decoded(page_token(&listed.next_page_token))?,
                })
            }
            Request::StartInstance { instance, wait } => {
                let started = instances.start_instance(action(instance, wait)).await;
                Response::Instance(self.decoded(self.answer(started)?.try_into())?)
            }
            Request::StopInstance { instance, wait } => {
                let stopped = instances.stop_instance(action(instance, wait)).await;
                Response::Instance(self.decoded(self.answer(stopped)?.try_into())?)
            }
            Request::RestartInstance { instance, wait } => {
                let restarted = instances.restart_instance(action(instance, wait)).await;
                Response::Instance(self.decoded(self.answer(restarted)?.try_into())?)
            }
            Request::UpdateInstance {
                instance,
                update,
                wait,
            } => {
                let request = pb::UpdateInstanceRequest {
                    instance,
                    update: Some(update.into()),
                    wait: wait.settled(),
                };
                let updated = instances.update_instance(request).await;
                Response::Instance(self.decoded(self.answer(updated)?.try_into())?)
            }
            Request::CloneInstance {
                source,
                name,
                linked,
                snapshot,
                wait,
            } => {
                let request = pb::CloneInstanceRequest {
                    source,
                    name,
                    linked,
                    snapshot: snapshot.map(String::from),
                    wait: wait.settled(),
                };
                let cloned = instances.clone_instance(request).await;
                Response::Instance(self.decoded(self.answer(cloned)?.try_into())?)
            }
            Request::MigrateInstance { instance, to, mode } => {
                let request = pb::MigrateInstanceRequest {
                    instance,
                    to,
                    mode: mode.as_str().to_owned(),
                };
                let moved = instances.migrate_instance(request).await;
                Response::Instance(self.decoded(self.answer(moved)?.try_into())?)
            }
            Request::DeleteInstance { instance, wait } => {
                let deleting = instances.delete_instance(action(instance, wait)).await;
                let left = self.answer(deleting)?.instance.map(TryInto::try_into);
                Response::MaybeInstance(self.decoded(left.transpose())?)
            }
            Request::PauseInstance { instance } => {
                let paused = instances.pause_instance(instance_ref(instance)).await;
                Response::Instance(self.decoded(self.answer(paused)?.try_into())?)
            }
            Request::ResumeInstance { instance } => {
                let resumed = instances.resume_instance(instance_ref(instance)).await;
                Response::Instance(self.decoded(self.answer(resumed)?.try_into())?)
            }
            Request::InstanceStats { instance } => {
                let stats = instances.get_instance_stats(instance_ref(instance)).await;
                Response::Stats(self.answer(stats)?.into())
            }
            Request::InstanceStatsHistory { instance } => {
                let history = instances
                    .get_instance_stats_history(instance_ref(instance))
                    .await;
                Response::StatsHistory(self.decoded(self.answer(history)?.try_into())?)
            }
            Request::ReadLog {
                instance,
                offset,
                max,
            } => {
                let request = pb::ReadLogRequest {
                    instance,
                    offset,
                    max,
                };
                Response::Log(self.answer(instances.read_log(request).await)?.into())
            }
            Request::FollowLog { instance, offset } => {
                let request = pb::FollowLogRequest { instance, offset };
                let log = self.answer(instances.follow_log(request).await)?;
                let client = self.clone();
                let pieces = log.map(move |piece| match piece {
                    Ok(piece) => Ok(piece.data),
                    Err(status) => Err(client.error(status)),
                });
                Response::LogStream(pieces.boxed())
            }
            Request::AttachConsole { instance } => {
                use pb::console_input::Input;
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
                Response::Console(console.map_err(|s| self.error(s))?)
            }
            Request::WatchInstances { after } => {
                let request = pb::WatchRequest {
                    after_revision: after,
                };
                let events = self.answer(instances.watch_instances(request).await)?;
                let client = self.clone();
                let events = events.map(move |event| match event {
                    Ok(event) => client.decoded(event.try_into()),
                    Err(status) => Err(client.error(status)),
                });
                Response::InstanceEvents(events.boxed())
            }
            Request::CreateSnapshot { to: Some(to), .. } => {
                return Err(self.local_files(operation, &to))
            }
            Request::CreateSnapshot {
                instance,
                name,
                to: None,
            } => {
                let taken = snapshots
                    .create_snapshot(snapshot_ref(instance, name))
                    .await;
                Response::Snapshot(self.decoded(self.answer(taken)?.try_into())?)
            }
            Request::ListSnapshots { instance } => {
                let all = snapshots.list_snapshots(instance_ref(instance)).await;
                let all = self.answer(all)?.snapshots;
                Response::Snapshots(self.decoded(decode_all(all))?)
            }
            Request::RevertSnapshot { instance, name } => {
                let reverted = snapshots
                    .revert_snapshot(snapshot_ref(instance, name))
                    .await;
                self.answer(reverted)?;
                Response::Done
            }
            Request::DeleteSnapshot { instance, name } => {
                let deleted = snapshots
                    .delete_snapshot(snapshot_ref(instance, name))
                    .await;
                self.answer(deleted)?;
                Response::Done
            }
            Request::ExportSnapshot { to, .. } => return Err(self.local_files(operation, &to)),
            Request::RestoreInstance { from, .. } => return Err(self.local_files(operation, &from)),
            Request::ImportImages { archive, .. } => {
                return Err(self.local_files(operation, &archive))
            }
            Request::BackupState { to } => return Err(self.local_files(operation, &to)),
            Request::PullImage {
                node,
                instance_type,
                reference,
                options,
                progress,
            } => {
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
                let mut events = self.answer(self.images.clone().pull_image(request).await)?;
                while let Some(event) = events.next().await {
                    let Some(event) = event.map_err(|s| self.error(s))?.event else {
                        continue;
                    };
                    match self.decoded(decode_pull_event(event))? {
                        Ok(p) => progress.report(p),
                        Err(image) => return Ok(Response::Images(vec![image])),
                    }
                }
                return Err(Error::Internal(
                    "the server ended the pull without saying what it pulled".to_owned(),
                ));
            }
            Request::ListImages {
                node,
                instance_type,
            } => {
                let request = pb::ListImagesRequest {
                    node,
                    r#type: encode_instance_type(instance_type),
                };
                let images = self.answer(self.images.clone().list_images(request).await)?;
                Response::Images(self.decoded(decode_all(images.images))?)
            }
            Request::RemoveImage {
                node,
                instance_type,
                kind,
                name,
            } => {
                let request = pb::RemoveImageRequest {
                    node,
                    r#type: encode_instance_type(instance_type),
                    name,
                    kind: crate::convert::encode_image_kind(kind),
                };
                self.answer(self.images.clone().remove_image(request).await)?;
                Response::Done
            }
            Request::ListNodes => {
                let all = self.answer(nodes.list_nodes(()).await)?;
                Response::Nodes(self.decoded(decode_all(all.nodes))?)
            }
            Request::GetNode { node } => {
                let found = self.answer(nodes.get_node(node_ref(node)).await)?;
                Response::Node(self.decoded(found.try_into())?)
            }
            Request::NodeStatsHistory { node } => {
                let history = self.answer(nodes.get_node_stats_history(node_ref(node)).await)?;
                Response::NodeStatsHistory(self.decoded(history.try_into())?)
            }
            Request::CordonNode { node } => {
                let cordoned = self.answer(nodes.cordon_node(node_ref(node)).await)?;
                Response::Node(self.decoded(cordoned.try_into())?)
            }
            Request::UncordonNode { node } => {
                let uncordoned = self.answer(nodes.uncordon_node(node_ref(node)).await)?;
                Response::Node(self.decoded(uncordoned.try_into())?)
            }
            Request::DrainNode { node } => {
                let report = self.answer(nodes.drain_node(node_ref(node)).await)?;
                Response::Drain(self.decoded(report.try_into())?)
            }
            Request::SetMaintenance { node, on } => {
                let request = pb::SetMaintenanceRequest { node, on };
                let report = self.answer(nodes.set_maintenance(request).await)?;
                Response::Drain(self.decoded(report.try_into())?)
            }
            Request::DecommissionNode { node } => {
                let report = self.answer(nodes.decommission_node(node_ref(node)).await)?;
                Response::Drain(self.decoded(report.try_into())?)
            }
            Request::DeregisterNode { node } => {
                self.answer(nodes.deregister_node(node_ref(node)).await)?;
                Response::Done
            }
            Request::WatchNodes { after } => {
                let request = pb::WatchRequest {
                    after_revision: after,
                };
                let events = self.answer(nodes.watch_nodes(request).await)?;
                let client = self.clone();
                let events = events.map(move |event| match event {
                    Ok(event) => client.decoded(event.try_into()),
                    Err(status) => Err(client.error(status)),
                });
                Response::NodeEvents(events.boxed())
            }
            Request::LabelNode { node, changes } => {
                let request = encode_label_changes(node, changes);
                let labelled = self.answer(nodes.label_node(request).await)?;
                Response::Node(self.decoded(labelled.try_into())?)
            }
            Request::ChangeNodeTraits { node, changes } => {
                let request = encode_trait_changes(node, changes);
                let changed = self.answer(nodes.change_node_traits(request).await)?;
                Response::Node(self.decoded(changed.try_into())?)
            }
            Request::SetNodeCarbon { node, intensity } => {
                let request = pb::SetNodeCarbonRequest {
                    node,
                    carbon_intensity: intensity.map(u32::from),
                };
                let changed = self.answer(nodes.set_node_carbon(request).await)?;
                Response::Node(self.decoded(changed.try_into())?)
            }
            Request::SetAllocationRatios { node, cpu, memory } => {
                let request = pb::SetAllocationRatiosRequest {
                    node,
                    cpu_millis: cpu.map(AllocationRatio::millis),
                    memory_millis: memory.map(AllocationRatio::millis),
                };
                let changed = self.answer(nodes.set_allocation_ratios(request).await)?;
                Response::Node(self.decoded(changed.try_into())?)
            }
            Request::CreateAggregate { name, metadata } => {
                let request = pb::CreateAggregateRequest {
                    name: name.into(),
                    metadata: metadata
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect(),
                };
                let created = self.answer(aggregates.create_aggregate(request).await)?;
                Response::Aggregate(self.decoded(created.try_into())?)
            }
            Request::DeleteAggregate { name } => {
                let request = pb::AggregateRef { name: name.into() };
                self.answer(aggregates.delete_aggregate(request).await)?;
                Response::Done
            }
            Request::ListAggregates => {
                let all = self.answer(aggregates.list_aggregates(()).await)?;
                Response::Aggregates(self.decoded(decode_all(all.aggregates))?)
            }
            Request::GetAggregate { name } => {
                let request = pb::AggregateRef { name: name.into() };
                let found = self.answer(aggregates.get_aggregate(request).await)?;
                Response::Aggregate(self.decoded(found.try_into())?)
            }
            Request::SetAggregateMetadata { name, changes } => {
                let request = encode_metadata_changes(name.into(), changes);
                let changed = self.answer(aggregates.set_aggregate_metadata(request).await)?;
                Response::Aggregate(self.decoded(changed.try_into())?)
            }
            Request::AddAggregateNode { name, node } => {
                let request = pb::AggregateNodeRequest {
                    name: name.into(),
                    node,
                };
                let added = self.answer(aggregates.add_aggregate_node(request).await)?;
                Response::Aggregate(self.decoded(added.try_into())?)
            }
            Request::RemoveAggregateNode { name, node } => {
                let request = pb::AggregateNodeRequest {
                    name: name.into(),
                    node,
                };
                let removed = self.answer(aggregates.remove_aggregate_node(request).await)?;
                Response::Aggregate(self.decoded(removed.try_into())?)
            }
            Request::ClusterInfo => {
                let info = self.answer(self.cluster.clone().get_cluster_info(()).await)?;
                Response::ClusterInfo(self.decoded(info.try_into())?)
            }
            Request::CreateNetwork { request } => {
                let request = pb::CreateNetworkRequest {
                    network: Some(request.into()),
                };
                let created = self.answer(networks.create_network(request).await)?;
                Response::Network(self.decoded(created.try_into())?)
            }
            Request::GetNetwork { name } => {
                let request = pb::NetworkRef { network: name };
                let found = self.answer(networks.get_network(request).await)?;
                Response::Network(self.decoded(found.try_into())?)
            }
            Request::ListNetworks => {
                let all = self.answer(networks.list_networks(()).await)?;
                Response::Networks(self.decoded(decode_all(all.networks))?)
            }
            Request::DeleteNetwork { name } => {
                let request = pb::NetworkRef { network: name };
                self.answer(networks.delete_network(request).await)?;
                Response::Done
            }
            Request::NetworkStatus { name } => {
                let request = pb::NetworkRef { network: name };
                let found = self.answer(networks.network_status(request).await)?;
                Response::NetworkStatus(self.decoded(found.try_into())?)
            }
            Request::RepairNetwork { name } => {
                let request = pb::NetworkRef { network: name };
                let repaired = self.answer(networks.repair_network(request).await)?;
                Response::NetworkStatus(self.decoded(repaired.try_into())?)
            }
            Request::CreateTemplate { name, spec } => {
                let request = encode_template_change(name, spec);
                let created = self.answer(templates.create_template(request).await)?;
                Response::Template(self.decoded(created.try_into())?)
            }
            Request::UpdateTemplate { name, spec } => {
                let request = encode_template_change(name, spec);
                let updated = self.answer(templates.update_template(request).await)?;
                Response::Template(self.decoded(updated.try_into())?)
            }
            Request::GetTemplate { name, version } => {
                let request = pb::TemplateRef {
                    name: name.into(),
                    version,
                };
                let found = self.answer(templates.get_template(request).await)?;
                Response::Template(self.decoded(found.try_into())?)
            }
            Request::ListTemplates => {
                let all = self.answer(templates.list_templates(()).await)?;
                Response::Templates(self.decoded(decode_all(all.templates))?)
            }
            Request::DeleteTemplate { name, version } => {
                let request = pb::TemplateRef {
                    name: name.into(),
                    version,
                };
                self.answer(templates.delete_template(request).await)?;
                Response::Done
            }
            Request::CreateFromTemplate { request, wait } => {
                let request = pb::CreateFromTemplateRequest {
                    wait: wait.settled(),
                    ..request.into()
                };
                let created = self.answer(instances.create_from_template(request).await)?;
                Response::Instance(self.decoded(created.try_into())?)
            }
            Request::CreateUser {
                name,
                role,
                projects,
                token_ttl,
            } => {
                let request = pb::CreateUserRequest {
                    name,
                    role: encode_role(role),
                    projects,
                    token_ttl: token_ttl.map(crate::membership::wire_duration),
                };
                let created = self.answer(users.create_user(request).await)?;
                let user = self.decoded(required_reply(created.user, "user"))?;
                let token = self.decoded(required_reply(created.token, "token"))?;
                Response::NewUser(
                    self.decoded(user.try_into())?,
                    self.decoded(token.try_into())?,
                )
            }
            Request::ListUsers => {
                let all = self.answer(users.list_users(()).await)?;
                Response::Users(self.decoded(decode_all(all.users))?)
            }
            Request::DeleteUser { name } => {
                self.answer(users.delete_user(pb::UserRef { name }).await)?;
                Response::Done
            }
            Request::CreateToken { owner, terms } => {
                let request = pb::CreateTokenRequest {
                    owner,
                    role: terms.role.map_or(0, encode_role),
                    limited_to_projects: terms.projects.is_some(),
                    projects: terms.projects.unwrap_or_default(),
                    ttl: terms.ttl.map(crate::membership::wire_duration),
                    join: terms.purpose == zixiao_core::api::TokenPurpose::Join,
                    reusable: terms.reusable,
                };
                let issued = self.answer(users.create_token(request).await)?;
                Response::Token(self.decoded(issued.try_into())?)
            }
            Request::ListTokens { owner } => {
                let request = pb::ListTokensRequest { owner };
                let all = self.answer(users.list_tokens(request).await)?;
                Response::Tokens(self.decoded(decode_all(all.tokens))?)
            }
            Request::RevokeToken { id } => {
                let revoked = self.answer(users.revoke_token(pb::TokenRef { id }).await)?;
                Response::TokenInfo(self.decoded(revoked.try_into())?)
            }
            Request::CreateProject { name, quota } => {
                let request = pb::ProjectChange {
                    name,
                    quota: Some(quota.into()),
                };
                let created = self.answer(projects.create_project(request).await)?;
                Response::Project(self.decoded(created.try_into())?)
            }
            Request::ListProjects => {
                let all = self.answer(projects.list_projects(()).await)?;
                Response::Projects(self.decoded(decode_all(all.projects))?)
            }
            Request::GetProject { name } => {
                let found = self.answer(projects.get_project(pb::ProjectRef { name }).await)?;
                Response::Project(self.decoded(found.try_into())?)
            }
            Request::UpdateProject { name, quota } => {
                let request = pb::ProjectChange {
                    name,
                    quota: Some(quota.into()),
                };
                let updated = self.answer(projects.update_project(request).await)?;
                Response::Project(self.decoded(updated.try_into())?)
            }
            Request::DeleteProject { name } => {
                self.answer(projects.delete_project(pb::ProjectRef { name }).await)?;
                Response::Done
            }
            Request::ListAudit { query } => {
                let request = pb::ListAuditRequest {
                    since: query.since.map(wire_time),
                    user: query.user,
                    project: query.project,
                };
                let all = self.answer(self.audit.clone().list_audit(request).await)?;
                Response::AuditRecords(self.decoded(decode_all(all.records))?)
            }
            Request::ListOperations { filter, page } => {
                let request = pb::ListOperationsRequest {
                    filter: Some(filter.into()),
                    page_size: page.size,
                    page_token: page.token.map(|t| t.to_string()).unwrap_or_default(),
                };
                let listed = self.answer(operations.list_operations(request).await)?;
                Response::Operations(OperationPage {
                    operations: self.decoded(decode_all(listed.operations))?,
                    next_page: self.decoded(page_token(&listed.next_page_token))?,
                })
            }
            Request::GetOperation { id } => {
                let found = self.answer(operations.get_operation(operation_ref(id)).await)?;
                Response::Operation(self.decoded(found.try_into())?)
            }
            Request::WatchOperation { id } => {
                let updates = self.answer(operations.watch_operation(operation_ref(id)).await)?;
                let client = self.clone();
                let updates = updates.map(move |update| match update {
                    Ok(update) => client.decoded(update.try_into()),
                    Err(status) => Err(client.error(status)),
                });
                Response::OperationUpdates(updates.boxed())
            }
            Request::CancelOperation { id } => {
                let cancelled =
                    self.answer(operations.cancel_operation(operation_ref(id)).await)?;
                Response::Operation(self.decoded(cancelled.try_into())?)
            }
        })
    }
}
