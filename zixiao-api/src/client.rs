//! [`GrpcClient`]: the [`Api`] of a Zixiao server reached over gRPC, the
//! same trait the in-process controller implements, so every frontend
//! holds one [`Client`] whichever deployment is behind it. This is the one
//! place that maps each [`Request`] to its RPC: [`GrpcClient`]'s dispatch is
//! a table from each request to its handler (in [`handle`]), each handler a
//! boxed future of its own (see [`Handling`] for why). [`connect`] builds
//! the client.

mod handle;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zixiao_core::api::{Api, Client, Handling, Request, Response};
use zixiao_core::{Error, Result};

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

    /// The answer of an RPC, decoded ([`GrpcClient::answer`], then
    /// [`GrpcClient::decoded`]).
    fn reply<W, T>(
        &self,
        reply: std::result::Result<tonic::Response<W>, tonic::Status>,
    ) -> Result<T>
    where
        W: TryInto<T, Error = Error>,
    {
        self.decoded(self.answer(reply)?.try_into())
    }

    /// A reply the server sent, decoded; one that does not decode is the
    /// server's fault, not the caller's.
    fn decoded<T>(&self, value: Result<T>) -> Result<T> {
        value.map_err(|e| Error::Internal(format!("{} answered {}", self.server, e.chain())))
    }

    /// The answer to a request that needs the caller's files, which this
    /// client does not send: refused here, nothing sent.
    fn local_files(&self, operation: &str, path: &Path) -> Handling<'static> {
        Box::pin(std::future::ready(Err(Error::Unsupported(format!(
            "{operation} uses `{}` on this machine, which {} cannot reach; run it on the \
             node, in the embedded deployment",
            path.display(),
            self.server
        )))))
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
        self.dispatch(request).await
    }
}

impl GrpcClient {
    /// The handling of `request`: its handler's future, not yet polled
    /// (see [`Handling`] for why each is a future of its own).
    fn dispatch(&self, request: Request) -> Handling<'_> {
        // On a daemon's socket, requests with this machine's paths have
        // their own service; everything else goes the usual way.
        let request = match &self.local {
            Some(local) => match crate::local::dispatch(local, request, |s| self.error(s)) {
                ControlFlow::Break(handling) => return handling,
                ControlFlow::Continue(request) => request,
            },
            None => request,
        };
        let operation = request.operation();
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
            Request::DeleteInstance { instance, wait } => {
                handle::delete_instance(self, instance, wait)
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
            Request::CreateSnapshot { to: Some(to), .. } => self.local_files(operation, &to),
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
            Request::ExportSnapshot { to, .. } => self.local_files(operation, &to),
            Request::RestoreInstance { from, .. } => self.local_files(operation, &from),
            Request::ImportImages { archive, .. } => self.local_files(operation, &archive),
            Request::BackupState { to } => self.local_files(operation, &to),
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
            Request::WatchNodes { after } => handle::watch_nodes(self, after),
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
            Request::ClusterInfo => handle::cluster_info(self),
            Request::CreateNetwork { request } => handle::create_network(self, request),
            Request::GetNetwork { name } => handle::get_network(self, name),
            Request::ListNetworks => handle::list_networks(self),
            Request::DeleteNetwork { name } => handle::delete_network(self, name),
            Request::NetworkStatus { name } => handle::network_status(self, name),
            Request::RepairNetwork { name } => handle::repair_network(self, name),
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
            Request::CreateUser {
                name,
                role,
                projects,
                token_ttl,
            } => handle::create_user(self, name, role, projects, token_ttl),
            Request::ListUsers => handle::list_users(self),
            Request::DeleteUser { name } => handle::delete_user(self, name),
            Request::CreateToken { owner, terms } => handle::create_token(self, owner, terms),
            Request::ListTokens { owner } => handle::list_tokens(self, owner),
            Request::RevokeToken { id } => handle::revoke_token(self, id),
            Request::CreateProject { name, quota } => handle::create_project(self, name, quota),
            Request::ListProjects => handle::list_projects(self),
            Request::GetProject { name } => handle::get_project(self, name),
            Request::UpdateProject { name, quota } => handle::update_project(self, name, quota),
            Request::DeleteProject { name } => handle::delete_project(self, name),
            Request::ListAudit { query } => handle::list_audit(self, query),
            Request::ListOperations { filter, page } => handle::list_operations(self, filter, page),
            Request::GetOperation { id } => handle::get_operation(self, id),
            Request::WatchOperation { id } => handle::watch_operation(self, id),
            Request::CancelOperation { id } => handle::cancel_operation(self, id),
        }
    }
}
