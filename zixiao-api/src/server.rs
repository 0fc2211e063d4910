//! The user-facing services over any [`Api`]: the instance, snapshot,
//! image, node, aggregate, network, template and cluster services of
//! `api.proto`, and the
//! user, project and audit services of `access.proto`. Each RPC
//! converts its request ([`crate::convert`]), makes one call of the `Api`
//! through a [`Client`], and converts the answer; whatever carries the
//! call out (a controller in this process, a wrapper adding behaviour
//! around one, another server) is the `Api`'s business. Errors become
//! statuses with standard details ([`crate::status`]).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rustls_pki_types::CertificateDer;
use tonic::service::RoutesBuilder;
use tonic::{Request, Response, Status, Streaming};
use zixiao_core::api::{Api, AuditQuery, Client, Page, RefuseHostPaths, TokenTerms, Wait};
use zixiao_core::model::CarbonIntensity;
use zixiao_core::{AllocationRatio, Error, InstanceFilter};

use crate::console::{self, OutputStream};
use crate::convert::{
    decode_aggregate_name, decode_image_kind, decode_instance_type, decode_label_changes,
    decode_optional_time, decode_pull_options, decode_role, decode_template_change,
    decode_template_ref, decode_trait_changes, operation_id, page_token, required_role,
    WirePullOptions,
};
use crate::pb;
use crate::pb::aggregate_service_server::{AggregateService, AggregateServiceServer};
use crate::pb::audit_service_server::{AuditService, AuditServiceServer};
use crate::pb::cluster_service_server::{ClusterService, ClusterServiceServer};
use crate::pb::image_service_server::{ImageService, ImageServiceServer};
use crate::pb::instance_service_server::{InstanceService, InstanceServiceServer};
use crate::pb::network_service_server::{NetworkService, NetworkServiceServer};
use crate::pb::node_service_server::{NodeService, NodeServiceServer};
use crate::pb::operation_service_server::{OperationService, OperationServiceServer};
use crate::pb::project_service_server::{ProjectService, ProjectServiceServer};
use crate::pb::snapshot_service_server::{SnapshotService, SnapshotServiceServer};
use crate::pb::template_service_server::{TemplateService, TemplateServiceServer};
use crate::pb::user_service_server::{UserService, UserServiceServer};
use crate::status::from_error;

/// The user-facing services over an [`Api`], or over the `Api` a
/// [`CallScope`] gives each call.
#[derive(Debug, Clone)]
pub struct ApiServer {
    scope: Arc<dyn CallScope>,
    /// Whether specs may name host paths (the state directory's socket,
    /// whose callers are the node's administrator); refused otherwise.
    host_paths: bool,
}

/// What a call came with, as the transport saw it: the bearer token of its
/// `authorization` header and its TLS peer's certificate chain. Its
/// `Debug` shows no token.
#[derive(Clone, Default)]
pub struct CallCredentials {
    /// The token of `authorization: Bearer <token>` (any other
    /// `authorization` value whole, so it is refused as malformed).
    pub bearer: Option<String>,
    /// The client certificate chain the TLS handshake received, leaf first.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl std::fmt::Debug for CallCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCredentials")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field(
                "peer_certificates",
                &self.peer_certificates.as_ref().map(|c| c.len()),
            )
            .finish()
    }
}

impl CallCredentials {
    /// What `request` came with.
    pub fn of<T>(request: &Request<T>) -> Self {
        let bearer = request
            .metadata()
            .get("authorization")
            .map(|value| bearer_token(value.to_str().ok()));
        let peer_certificates = request
            .extensions()
            .get::<crate::tls::TlsPeer>()
            .and_then(|peer| peer.certificates.clone());
        CallCredentials {
            bearer,
            peer_certificates,
        }
    }
}

/// The token of an `authorization` header's value: the token of `Bearer
/// <token>`, any other text whole (so it is refused as malformed), and for
/// a value that is not text (`None`) a marker no token matches. Every
/// transport (gRPC, the web dashboard's gateway) reads it this way.
pub fn bearer_token(value: Option<&str>) -> String {
    match value {
        Some(text) => text
            .strip_prefix("Bearer ")
            .unwrap_or(text)
            .trim()
            .to_owned(),
        None => String::from("<binary>"),
    }
}

/// Which [`Api`] carries out a call: the same for every call, or one made
/// for the call's caller from its [`CallCredentials`] (see
/// [`crate::secure`]). Called once per RPC, before anything else.
#[async_trait::async_trait]
pub trait CallScope: Send + Sync + std::fmt::Debug + 'static {
    /// The `Api` of a call that came with `credentials`. Errors: those that
    /// keep the caller from being identified at all (`Unavailable`: the
    /// store); a caller without credentials or with bad ones is given an
    /// `Api` that refuses, so the refusal is its business.
    async fn api(&self, credentials: CallCredentials) -> zixiao_core::Result<Arc<dyn Api>>;
}

/// Every call served by one `Api`, whoever makes it.
#[derive(Debug)]
pub(crate) struct SameApi(pub(crate) Arc<dyn Api>);

#[async_trait::async_trait]
impl CallScope for SameApi {
    async fn api(&self, _credentials: CallCredentials) -> zixiao_core::Result<Arc<dyn Api>> {
        Ok(self.0.clone())
    }
}

/// The full names of the services [`ApiServer::add_to`] adds, for the
/// health service.
pub const SERVICES: [&str; 12] = [
    "zixiao.v1.InstanceService",
    "zixiao.v1.SnapshotService",
    "zixiao.v1.ImageService",
    "zixiao.v1.NodeService",
    "zixiao.v1.AggregateService",
    "zixiao.v1.NetworkService",
    "zixiao.v1.TemplateService",
    "zixiao.v1.ClusterService",
    "zixiao.v1.UserService",
    "zixiao.v1.ProjectService",
    "zixiao.v1.AuditService",
    "zixiao.v1.OperationService",
];

macro_rules! limited {
    ($server:ident, $inner:expr) => {
        $server::new($inner)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
    };
}

impl ApiServer {
    /// Serves `api` to every caller alike.
    pub fn new(api: Arc<dyn Api>) -> Self {
        ApiServer::scoped(Arc::new(SameApi(api)))
    }

    /// Serves each call with the `Api` `scope` gives it.
    ///
    /// A spec naming a host path for a disk, kernel, initrd or snapshot
    /// is refused (`InvalidArgument`): over the network a path would let a
    /// caller make a node read any of its files. See
    /// [`ApiServer::with_host_paths`].
    pub fn scoped(scope: Arc<dyn CallScope>) -> Self {
        ApiServer {
            scope,
            host_paths: false,
        }
    }

    /// The same server, taking host paths in specs: only for a listener
    /// whose callers are the node's own administrator (the state
    /// directory's Unix socket).
    pub fn with_host_paths(mut self) -> Self {
        self.host_paths = true;
        self
    }

    /// The client of one call.
    async fn client(&self, credentials: CallCredentials) -> Result<Client, Status> {
        let api = self.scope.api(credentials).await.map_err(status)?;
        if self.host_paths {
            return Ok(Client::new(api));
        }
        Ok(Client::new(Arc::new(RefuseHostPaths::new(api))))
    }

    /// Adds every user-facing service ([`SERVICES`]), with the protocol's
    /// message size limits, to `routes`.
    pub fn add_to(self, routes: &mut RoutesBuilder) {
        routes
            .add_service(limited!(InstanceServiceServer, self.clone()))
            .add_service(limited!(SnapshotServiceServer, self.clone()))
            .add_service(limited!(ImageServiceServer, self.clone()))
            .add_service(limited!(NodeServiceServer, self.clone()))
            .add_service(limited!(AggregateServiceServer, self.clone()))
            .add_service(limited!(NetworkServiceServer, self.clone()))
            .add_service(limited!(TemplateServiceServer, self.clone()))
            .add_service(limited!(ClusterServiceServer, self.clone()))
            .add_service(limited!(UserServiceServer, self.clone()))
            .add_service(limited!(ProjectServiceServer, self.clone()))
            .add_service(limited!(OperationServiceServer, self.clone()))
            .add_service(limited!(AuditServiceServer, self));
    }
}

/// Serves `api` on `listener`: the user-facing services, reflection and
/// health, until `shutdown` completes. What `zixiao server --embedded`
/// and a Rust program that exposes its own controller both need.
///
/// Errors: `Internal` (a build bug in the descriptors), `Unavailable` (the
/// listener failed).
pub async fn serve(
    api: Arc<dyn Api>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> zixiao_core::Result<()> {
    let mut routes = tonic::service::Routes::builder();
    ApiServer::new(api).add_to(&mut routes);
    crate::add_standard_services(&mut routes, &SERVICES).await?;
    let limits = crate::Limits::default();
    let incoming = crate::limits::plain_incoming(listener, &limits);
    limits
        .server()
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Unavailable {
            what: "the gRPC listener".to_owned(),
            source: Some(Box::new(e)),
        })
}

/// The status of an error.
fn status(error: Error) -> Status {
    from_error(&error)
}

/// The required name at `field`.
fn named(field: &str, value: String) -> Result<String, Status> {
    if value.is_empty() {
        return Err(status(Error::invalid(field, "missing")));
    }
    Ok(value)
}

fn wait(wait: bool) -> Wait {
    Wait::from(wait)
}

fn reply<P, C: Into<P>>(value: C) -> Result<Response<P>, Status> {
    Ok(Response::new(value.into()))
}

/// A boxed stream of messages, as tonic serves them.
pub type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `stream`'s items converted, its errors as statuses.
fn messages<C: 'static, P: From<C> + Send + 'static>(
    stream: futures::stream::BoxStream<'static, zixiao_core::Result<C>>,
) -> MessageStream<P> {
    Box::pin(stream.map(|item| item.map(P::from).map_err(status)))
}

#[tonic::async_trait]
impl InstanceService for ApiServer {
    async fn create_instance(
        &self,
        request: Request<pb::CreateInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let create = request
            .instance
            .ok_or_else(|| status(Error::invalid("instance", "missing")))?
            .try_into()
            .map_err(status)?;
        let created = client.create_instance(create, wait(request.wait));
        reply(created.await.map_err(status)?)
    }

    async fn create_from_template(
        &self,
        request: Request<pb::CreateFromTemplateRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let asked = wait(request.wait);
        let create = request.try_into().map_err(status)?;
        let created = client.create_from_template(create, asked);
        reply(created.await.map_err(status)?)
    }

    async fn get_instance(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let instance = named("instance", request.into_inner().instance)?;
        reply(client.get_instance(&instance).await.map_err(status)?)
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let filter = match request.filter {
            Some(filter) => filter.try_into().map_err(status)?,
            None => InstanceFilter::default(),
        };
        let page = Page {
            size: request.page_size,
            token: page_token(&request.page_token).map_err(status)?,
        };
        // No answer outgrows a message: a server's pages are bounded.
        let listed = client
            .list_instances_page(filter, page.capped())
            .await
            .map_err(status)?;
        reply(pb::ListInstancesResponse {
            instances: listed.instances.into_iter().map(Into::into).collect(),
            next_page_token: listed.next_page.map(|t| t.to_string()).unwrap_or_default(),
        })
    }

    async fn start_instance(
        &self,
        request: Request<pb::InstanceAction>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let started = client.start_instance(&instance, wait(request.wait));
        reply(started.await.map_err(status)?)
    }

    async fn stop_instance(
        &self,
        request: Request<pb::InstanceAction>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let stopped = client.stop_instance(&instance, wait(request.wait));
        reply(stopped.await.map_err(status)?)
    }

    async fn restart_instance(
        &self,
        request: Request<pb::InstanceAction>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let restarted = client.restart_instance(&instance, wait(request.wait));
        reply(restarted.await.map_err(status)?)
    }

    async fn update_instance(
        &self,
        request: Request<pb::UpdateInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        // A missing update is an empty one: refused as such, naming `update`.
        let update = request
            .update
            .unwrap_or_default()
            .try_into()
            .map_err(status)?;
        let updated = client.update_instance(&instance, update, wait(request.wait));
        reply(updated.await.map_err(status)?)
    }

    async fn clone_instance(
        &self,
        request: Request<pb::CloneInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let source = named("source", request.source)?;
        let name = named("name", request.name)?;
        let snapshot = request
            .snapshot
            .map(|s| crate::convert::snapshot_name(s, "snapshot"))
            .transpose()
            .map_err(status)?;
        let cloned =
            client.clone_instance(&source, &name, request.linked, snapshot, wait(request.wait));
        reply(cloned.await.map_err(status)?)
    }

    async fn migrate_instance(
        &self,
        request: Request<pb::MigrateInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let to = request.to.map(|to| named("to", to)).transpose()?;
        let mode = crate::convert::migration_mode(&request.mode).map_err(status)?;
        let moved = client.migrate_instance(&instance, to.as_deref(), mode);
        reply(moved.await.map_err(status)?)
    }

    async fn delete_instance(
        &self,
        request: Request<pb::InstanceAction>,
    ) -> Result<Response<pb::DeleteInstanceResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let deleting = client.delete_instance(&instance, wait(request.wait));
        reply(pb::DeleteInstanceResponse {
            instance: deleting.await.map_err(status)?.map(Into::into),
        })
    }

    async fn pause_instance(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let instance = named("instance", request.into_inner().instance)?;
        reply(client.pause_instance(&instance).await.map_err(status)?)
    }

    async fn resume_instance(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::Instance>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let instance = named("instance", request.into_inner().instance)?;
        reply(client.resume_instance(&instance).await.map_err(status)?)
    }

    async fn get_instance_stats(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::InstanceStats>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let instance = named("instance", request.into_inner().instance)?;
        reply(client.instance_stats(&instance).await.map_err(status)?)
    }

    async fn get_instance_stats_history(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::StatsHistory>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let instance = named("instance", request.into_inner().instance)?;
        let history = client.instance_stats_history(&instance).await;
        reply(history.map_err(status)?)
    }

    async fn read_log(
        &self,
        request: Request<pb::ReadLogRequest>,
    ) -> Result<Response<pb::LogChunk>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        // One answer is one message: never more than a message carries.
        let max = request.max.min(crate::MAX_LOG_CHUNK as u64);
        let chunk = client.read_log(&instance, request.offset, max);
        reply(chunk.await.map_err(status)?)
    }

    type FollowLogStream = MessageStream<pb::LogData>;

    async fn follow_log(
        &self,
        request: Request<pb::FollowLogRequest>,
    ) -> Result<Response<Self::FollowLogStream>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let log = client.follow_log(&instance, request.offset).await;
        let pieces = log
            .map_err(status)?
            .map(|piece| piece.map(|data| pb::LogData { data }).map_err(status));
        Ok(Response::new(Box::pin(pieces)))
    }

    type AttachConsoleStream = OutputStream;

    async fn attach_console(
        &self,
        request: Request<Streaming<pb::ConsoleInput>>,
    ) -> Result<Response<Self::AttachConsoleStream>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        use pb::console_input::Input;
        let mut input = request.into_inner();
        let first = input.message().await?.and_then(|m| m.input);
        let Some(Input::Instance(instance)) = first else {
            return Err(status(Error::invalid(
                "instance",
                "the first console message must name the instance",
            )));
        };
        let console = client.attach_console(&instance).await;
        let data = |message: pb::ConsoleInput| match message.input {
            Some(Input::Data(data)) => Some(data),
            _ => None,
        };
        Ok(Response::new(console::serve(
            console.map_err(status)?,
            input,
            data,
        )))
    }

    type WatchInstancesStream = MessageStream<pb::InstanceEvent>;

    async fn watch_instances(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchInstancesStream>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let after = request.into_inner().after_revision;
        let events = client.watch_instances(after).await.map_err(status)?;
        Ok(Response::new(messages(events)))
    }
}

#[tonic::async_trait]
impl OperationService for ApiServer {
    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let filter = request
            .filter
            .unwrap_or_default()
            .try_into()
            .map_err(status)?;
        let page = Page {
            size: request.page_size,
            token: page_token(&request.page_token).map_err(status)?,
        }
        .capped();
        let listed = client.list_operations(filter, page).await.map_err(status)?;
        reply(pb::ListOperationsResponse {
            operations: listed.operations.into_iter().map(Into::into).collect(),
            next_page_token: listed.next_page.map(|t| t.to_string()).unwrap_or_default(),
        })
    }

    async fn get_operation(
        &self,
        request: Request<pb::OperationRef>,
    ) -> Result<Response<pb::Operation>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let id = operation_id(&request.into_inner().id, "id").map_err(status)?;
        reply(client.get_operation(&id).await.map_err(status)?)
    }

    type WatchOperationStream = MessageStream<pb::Operation>;

    async fn watch_operation(
        &self,
        request: Request<pb::OperationRef>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let id = operation_id(&request.into_inner().id, "id").map_err(status)?;
        let updates = client.watch_operation(&id).await.map_err(status)?;
        Ok(Response::new(messages(updates)))
    }

    async fn cancel_operation(
        &self,
        request: Request<pb::OperationRef>,
    ) -> Result<Response<pb::Operation>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let id = operation_id(&request.into_inner().id, "id").map_err(status)?;
        reply(client.cancel_operation(&id).await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl SnapshotService for ApiServer {
    async fn create_snapshot(
        &self,
        request: Request<pb::SnapshotRef>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let taken = client.create_snapshot(&instance, &request.snapshot);
        reply(taken.await.map_err(status)?)
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let instance = named("instance", request.into_inner().instance)?;
        let all = client.list_snapshots(&instance).await.map_err(status)?;
        reply(pb::ListSnapshotsResponse {
            snapshots: all.into_iter().map(Into::into).collect(),
        })
    }

    async fn revert_snapshot(
        &self,
        request: Request<pb::SnapshotRef>,
    ) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let reverted = client.revert_snapshot(&instance, &request.snapshot);
        reply(reverted.await.map_err(status)?)
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::SnapshotRef>,
    ) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let deleted = client.delete_snapshot(&instance, &request.snapshot);
        reply(deleted.await.map_err(status)?)
    }
}

/// Reports a pull's progress, as the driver's callback does.
pub(crate) type PullReport = Arc<dyn Fn(zixiao_core::driver::PullProgress) + Send + Sync>;

/// Runs the pull `start` makes (given where to report), streaming its
/// progress and then the image or the error as PullEvents: how both
/// ImageService and AgentService answer a pull.
pub(crate) fn pull_events<F, Fut>(start: F) -> MessageStream<pb::PullEvent>
where
    F: FnOnce(PullReport) -> Fut,
    Fut: std::future::Future<Output = Result<zixiao_core::driver::ImageInfo, Status>>
        + Send
        + 'static,
{
    let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
    let progress_events = events.clone();
    let report: PullReport = Arc::new(move |p| {
        let _ = progress_events.send(Ok(pb::PullEvent::from(p)));
    });
    let pulling = start(report);
    tokio::spawn(async move {
        let last = pulling.await.map(|image| pb::PullEvent {
            event: Some(pb::pull_event::Event::Image(image.into())),
        });
        let _ = events.send(last);
    });
    Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(
        receiver,
    ))
}

#[tonic::async_trait]
impl ImageService for ApiServer {
    type PullImageStream = MessageStream<pb::PullEvent>;

    async fn pull_image(
        &self,
        request: Request<pb::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance_type = if request.r#type == pb::InstanceType::Unspecified as i32 {
            zixiao_core::InstanceType::Container
        } else {
            decode_instance_type(request.r#type, "type").map_err(status)?
        };
        let reference = zixiao_core::ImageRef::try_from(request.reference.as_str())
            .map_err(|e| status(e.into()))?;
        let options = decode_pull_options(WirePullOptions {
            credentials: request.credentials,
            insecure_registries: request.insecure_registries,
            registry_cas: request.registry_cas,
            platform: request.platform,
            kind: request.kind,
        })
        .map_err(status)?;
        let node = request.node;
        Ok(Response::new(pull_events(move |report| async move {
            let progress = zixiao_core::api::Progress::new(move |p| report(p));
            client
                .pull_image(node.as_deref(), instance_type, reference, options, progress)
                .await
                .map_err(status)
        })))
    }

    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance_type = decode_instance_type(request.r#type, "type").map_err(status)?;
        let images = client
            .list_images(request.node.as_deref(), instance_type)
            .await
            .map_err(status)?;
        reply(pb::ListImagesResponse {
            images: images.into_iter().map(Into::into).collect(),
        })
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let instance_type = decode_instance_type(request.r#type, "type").map_err(status)?;
        let name = named("name", request.name)?;
        let kind = decode_image_kind(request.kind, "kind").map_err(status)?;
        let node = request.node.as_deref();
        let removed = client.remove_image_of_kind(node, instance_type, kind, &name);
        reply(removed.await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl NodeService for ApiServer {
    async fn list_nodes(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let nodes = client.list_nodes().await.map_err(status)?;
        reply(pb::ListNodesResponse {
            nodes: nodes.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_node(&self, request: Request<pb::NodeRef>) -> Result<Response<pb::Node>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let node = named("node", request.into_inner().node)?;
        reply(client.get_node(&node).await.map_err(status)?)
    }

    async fn get_node_stats_history(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::NodeStatsHistory>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let node = named("node", request.into_inner().node)?;
        reply(client.node_stats_history(&node).await.map_err(status)?)
    }

    async fn cordon_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::Node>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let node = named("node", request.into_inner().node)?;
        reply(client.cordon_node(&node).await.map_err(status)?)
    }

    async fn uncordon_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::Node>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let node = named("node", request.into_inner().node)?;
        reply(client.uncordon_node(&node).await.map_err(status)?)
    }

    async fn drain_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::DrainReport>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let node = named("node", request.into_inner().node)?;
        reply(client.drain_node(&node).await.map_err(status)?)
    }

    async fn set_maintenance(
        &self,
        request: Request<pb::SetMaintenanceRequest>,
    ) -> Result<Response<pb::DrainReport>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let node = named("node", request.node)?;
        let report = client.set_maintenance(&node, request.on);
        reply(report.await.map_err(status)?)
    }

    async fn decommission_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::DrainReport>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let node = named("node", request.into_inner().node)?;
        reply(client.decommission_node(&node).await.map_err(status)?)
    }

    async fn deregister_node(&self, request: Request<pb::NodeRef>) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let node = named("node", request.into_inner().node)?;
        reply(client.deregister_node(&node).await.map_err(status)?)
    }

    async fn label_node(
        &self,
        request: Request<pb::LabelNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let node = named("node", request.node)?;
        let changes = decode_label_changes(request.set, request.remove).map_err(status)?;
        let labelled = client.change_node_labels(&node, changes);
        reply(labelled.await.map_err(status)?)
    }

    async fn change_node_traits(
        &self,
        request: Request<pb::ChangeNodeTraitsRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let node = named("node", request.node)?;
        let changes = decode_trait_changes(request.add, request.remove).map_err(status)?;
        let changed = client.change_node_traits(&node, changes);
        reply(changed.await.map_err(status)?)
    }

    async fn set_node_carbon(
        &self,
        request: Request<pb::SetNodeCarbonRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let node = named("node", request.node)?;
        let intensity = request
            .carbon_intensity
            .map(CarbonIntensity::try_from)
            .transpose()
            .map_err(status)?;
        reply(
            client
                .set_node_carbon(&node, intensity)
                .await
                .map_err(status)?,
        )
    }

    async fn set_allocation_ratios(
        &self,
        request: Request<pb::SetAllocationRatiosRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let node = named("node", request.node)?;
        let ratio = |millis: Option<u32>, field: &str| {
            millis
                .map(AllocationRatio::from_millis)
                .transpose()
                .map_err(|e| status(Error::invalid(field, e.to_string())))
        };
        let cpu = ratio(request.cpu_millis, "cpu_millis")?;
        let memory = ratio(request.memory_millis, "memory_millis")?;
        reply(
            client
                .set_allocation_ratios(&node, cpu, memory)
                .await
                .map_err(status)?,
        )
    }

    type WatchNodesStream = MessageStream<pb::NodeEvent>;

    async fn watch_nodes(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchNodesStream>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let after = request.into_inner().after_revision;
        let events = client.watch_nodes(after).await.map_err(status)?;
        Ok(Response::new(messages(events)))
    }
}

#[tonic::async_trait]
impl AggregateService for ApiServer {
    async fn create_aggregate(
        &self,
        request: Request<pb::CreateAggregateRequest>,
    ) -> Result<Response<pb::Aggregate>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let name = decode_aggregate_name(request.name).map_err(status)?;
        let created = client.create_aggregate(&name, request.metadata);
        reply(created.await.map_err(status)?)
    }

    async fn delete_aggregate(
        &self,
        request: Request<pb::AggregateRef>,
    ) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = decode_aggregate_name(request.into_inner().name).map_err(status)?;
        reply(client.delete_aggregate(&name).await.map_err(status)?)
    }

    async fn list_aggregates(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ListAggregatesResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let aggregates = client.list_aggregates().await.map_err(status)?;
        reply(pb::ListAggregatesResponse {
            aggregates: aggregates.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_aggregate(
        &self,
        request: Request<pb::AggregateRef>,
    ) -> Result<Response<pb::Aggregate>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = decode_aggregate_name(request.into_inner().name).map_err(status)?;
        reply(client.get_aggregate(&name).await.map_err(status)?)
    }

    async fn set_aggregate_metadata(
        &self,
        request: Request<pb::SetAggregateMetadataRequest>,
    ) -> Result<Response<pb::Aggregate>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let name = decode_aggregate_name(request.name).map_err(status)?;
        let changes = decode_label_changes(request.set, request.remove)
            .map_err(|e| status(e.on_field("metadata")))?;
        let changed = client.change_aggregate_metadata(&name, changes);
        reply(changed.await.map_err(status)?)
    }

    async fn add_aggregate_node(
        &self,
        request: Request<pb::AggregateNodeRequest>,
    ) -> Result<Response<pb::Aggregate>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let name = decode_aggregate_name(request.name).map_err(status)?;
        let node = named("node", request.node)?;
        let added = client.add_aggregate_node(&name, &node);
        reply(added.await.map_err(status)?)
    }

    async fn remove_aggregate_node(
        &self,
        request: Request<pb::AggregateNodeRequest>,
    ) -> Result<Response<pb::Aggregate>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let name = decode_aggregate_name(request.name).map_err(status)?;
        let node = named("node", request.node)?;
        let removed = client.remove_aggregate_node(&name, &node);
        reply(removed.await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl NetworkService for ApiServer {
    async fn create_network(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let create = request
            .into_inner()
            .network
            .ok_or_else(|| status(Error::invalid("network", "missing")))?
            .try_into()
            .map_err(status)?;
        reply(client.create_network(create).await.map_err(status)?)
    }

    async fn get_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::Network>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = named("network", request.into_inner().network)?;
        reply(client.get_network(&name).await.map_err(status)?)
    }

    async fn list_networks(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let networks = client.list_networks().await.map_err(status)?;
        reply(pb::ListNetworksResponse {
            networks: networks.into_iter().map(Into::into).collect(),
        })
    }

    async fn delete_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = named("network", request.into_inner().network)?;
        reply(client.delete_network(&name).await.map_err(status)?)
    }

    async fn network_status(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::NetworkStatusResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = named("network", request.into_inner().network)?;
        reply(client.network_status(&name).await.map_err(status)?)
    }

    async fn repair_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::NetworkStatusResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = named("network", request.into_inner().network)?;
        reply(client.repair_network(&name).await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl TemplateService for ApiServer {
    async fn create_template(
        &self,
        request: Request<pb::TemplateChange>,
    ) -> Result<Response<pb::Template>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let (name, spec) = decode_template_change(request.into_inner()).map_err(status)?;
        reply(client.create_template(&name, spec).await.map_err(status)?)
    }

    async fn update_template(
        &self,
        request: Request<pb::TemplateChange>,
    ) -> Result<Response<pb::Template>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let (name, spec) = decode_template_change(request.into_inner()).map_err(status)?;
        reply(client.update_template(&name, spec).await.map_err(status)?)
    }

    async fn get_template(
        &self,
        request: Request<pb::TemplateRef>,
    ) -> Result<Response<pb::Template>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let (name, version) = decode_template_ref(request.into_inner()).map_err(status)?;
        reply(client.get_template(&name, version).await.map_err(status)?)
    }

    async fn list_templates(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let templates = client.list_templates().await.map_err(status)?;
        reply(pb::ListTemplatesResponse {
            templates: templates.into_iter().map(Into::into).collect(),
        })
    }

    async fn delete_template(
        &self,
        request: Request<pb::TemplateRef>,
    ) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let (name, version) = decode_template_ref(request.into_inner()).map_err(status)?;
        reply(
            client
                .delete_template(&name, version)
                .await
                .map_err(status)?,
        )
    }
}

#[tonic::async_trait]
impl ClusterService for ApiServer {
    async fn get_cluster_info(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        reply(client.cluster_info().await.map_err(status)?)
    }
}

/// The terms of a token request from the wire.
fn token_terms(request: pb::CreateTokenRequest) -> Result<TokenTerms, Status> {
    let pb::CreateTokenRequest {
        role,
        limited_to_projects: limited,
        projects,
        ttl,
        join,
        reusable,
        ..
    } = request;
    Ok(TokenTerms {
        purpose: if join {
            zixiao_core::api::TokenPurpose::Join
        } else {
            zixiao_core::api::TokenPurpose::User
        },
        reusable,
        role: decode_role(role, "role").map_err(status)?,
        projects: limited.then_some(projects),
        ttl: ttl
            .map(|ttl| {
                std::time::Duration::try_from(ttl)
                    .map_err(|_| status(Error::invalid("ttl", "must not be negative")))
            })
            .transpose()?,
    })
}

#[tonic::async_trait]
impl UserService for ApiServer {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let name = named("name", request.name)?;
        let role = required_role(request.role, "role").map_err(status)?;
        let ttl = token_terms(pb::CreateTokenRequest {
            ttl: request.token_ttl,
            ..pb::CreateTokenRequest::default()
        })?
        .ttl;
        let (user, token) = client
            .create_user(&name, role, request.projects, ttl)
            .await
            .map_err(status)?;
        reply(pb::CreateUserResponse {
            user: Some(user.into()),
            token: Some(token.into()),
        })
    }

    async fn list_users(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let users = client.list_users().await.map_err(status)?;
        reply(pb::ListUsersResponse {
            users: users.into_iter().map(Into::into).collect(),
        })
    }

    async fn delete_user(&self, request: Request<pb::UserRef>) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = named("name", request.into_inner().name)?;
        reply(client.delete_user(&name).await.map_err(status)?)
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::IssuedToken>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let owner = request.owner.clone();
        let terms = token_terms(request)?;
        let issued = client.create_token(owner.as_deref(), terms);
        reply(issued.await.map_err(status)?)
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let owner = request.into_inner().owner;
        let tokens = client.list_tokens(owner.as_deref()).await.map_err(status)?;
        reply(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(Into::into).collect(),
        })
    }

    async fn revoke_token(
        &self,
        request: Request<pb::TokenRef>,
    ) -> Result<Response<pb::Token>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let id = named("id", request.into_inner().id)?;
        reply(client.revoke_token(&id).await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl ProjectService for ApiServer {
    async fn create_project(
        &self,
        request: Request<pb::ProjectChange>,
    ) -> Result<Response<pb::Project>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let name = named("name", request.name)?;
        let quota = request.quota.map(Into::into).unwrap_or_default();
        reply(client.create_project(&name, quota).await.map_err(status)?)
    }

    async fn list_projects(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let projects = client.list_projects().await.map_err(status)?;
        reply(pb::ListProjectsResponse {
            projects: projects.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_project(
        &self,
        request: Request<pb::ProjectRef>,
    ) -> Result<Response<pb::Project>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = named("name", request.into_inner().name)?;
        reply(client.get_project(&name).await.map_err(status)?)
    }

    async fn update_project(
        &self,
        request: Request<pb::ProjectChange>,
    ) -> Result<Response<pb::Project>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let name = named("name", request.name)?;
        let quota = request.quota.map(Into::into).unwrap_or_default();
        reply(client.update_project(&name, quota).await.map_err(status)?)
    }

    async fn delete_project(
        &self,
        request: Request<pb::ProjectRef>,
    ) -> Result<Response<()>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let name = named("name", request.into_inner().name)?;
        reply(client.delete_project(&name).await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl AuditService for ApiServer {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let client = self.client(CallCredentials::of(&request)).await?;
        let request = request.into_inner();
        let query = AuditQuery {
            since: decode_optional_time(request.since, "since").map_err(status)?,
            user: request.user,
            project: request.project,
        };
        let records = client.list_audit(query).await.map_err(status)?;
        reply(pb::ListAuditResponse {
            records: records.into_iter().map(Into::into).collect(),
        })
    }
}
