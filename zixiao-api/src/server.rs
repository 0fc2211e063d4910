//! The user-facing services over any [`Api`]: the instance, snapshot,
//! image, node, network and cluster services of `api.proto`. Each RPC
//! converts its request ([`crate::convert`]), makes one call of the `Api`
//! through a [`Client`], and converts the answer; whatever carries the
//! call out (a controller in this process, a wrapper adding behaviour
//! around one, another server) is the `Api`'s business. Errors become
//! statuses with standard details ([`crate::status`]).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::service::RoutesBuilder;
use tonic::{Request, Response, Status, Streaming};
use zixiao_core::api::{Api, Client, Wait};
use zixiao_core::{Error, InstanceFilter};

use crate::console::{self, OutputStream};
use crate::convert::decode_instance_type;
use crate::pb;
use crate::pb::cluster_service_server::{ClusterService, ClusterServiceServer};
use crate::pb::image_service_server::{ImageService, ImageServiceServer};
use crate::pb::instance_service_server::{InstanceService, InstanceServiceServer};
use crate::pb::network_service_server::{NetworkService, NetworkServiceServer};
use crate::pb::node_service_server::{NodeService, NodeServiceServer};
use crate::pb::snapshot_service_server::{SnapshotService, SnapshotServiceServer};
use crate::status::from_error;

/// The user-facing services over an [`Api`].
#[derive(Debug, Clone)]
pub struct ApiServer {
    client: Client,
}

/// The full names of the services [`ApiServer::add_to`] adds, for the
/// health service.
pub const SERVICES: [&str; 6] = [
    "zixiao.v1.InstanceService",
    "zixiao.v1.SnapshotService",
    "zixiao.v1.ImageService",
    "zixiao.v1.NodeService",
    "zixiao.v1.NetworkService",
    "zixiao.v1.ClusterService",
];

macro_rules! limited {
    ($server:ident, $inner:expr) => {
        $server::new($inner)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
    };
}

impl ApiServer {
    /// Serves `api`.
    pub fn new(api: Arc<dyn Api>) -> Self {
        ApiServer {
            client: Client::new(api),
        }
    }

    /// Adds every user-facing service ([`SERVICES`]), with the protocol's
    /// message size limits, to `routes`.
    pub fn add_to(self, routes: &mut RoutesBuilder) {
        routes
            .add_service(limited!(InstanceServiceServer, self.clone()))
            .add_service(limited!(SnapshotServiceServer, self.clone()))
            .add_service(limited!(ImageServiceServer, self.clone()))
            .add_service(limited!(NodeServiceServer, self.clone()))
            .add_service(limited!(NetworkServiceServer, self.clone()))
            .add_service(limited!(ClusterServiceServer, self));
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
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
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
        let request = request.into_inner();
        let create = request
            .instance
            .ok_or_else(|| status(Error::invalid("instance", "missing")))?
            .try_into()
            .map_err(status)?;
        let created = self.client.create_instance(create, wait(request.wait));
        reply(created.await.map_err(status)?)
    }

    async fn get_instance(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::Instance>, Status> {
        let instance = named("instance", request.into_inner().instance)?;
        reply(self.client.get_instance(&instance).await.map_err(status)?)
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let filter = match request.into_inner().filter {
            Some(filter) => filter.try_into().map_err(status)?,
            None => InstanceFilter::default(),
        };
        let instances = self.client.list_instances(filter).await.map_err(status)?;
        reply(pb::ListInstancesResponse {
            instances: instances.into_iter().map(Into::into).collect(),
        })
    }

    async fn start_instance(
        &self,
        request: Request<pb::InstanceAction>,
    ) -> Result<Response<pb::Instance>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let started = self.client.start_instance(&instance, wait(request.wait));
        reply(started.await.map_err(status)?)
    }

    async fn stop_instance(
        &self,
        request: Request<pb::InstanceAction>,
    ) -> Result<Response<pb::Instance>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let stopped = self.client.stop_instance(&instance, wait(request.wait));
        reply(stopped.await.map_err(status)?)
    }

    async fn restart_instance(
        &self,
        request: Request<pb::InstanceAction>,
    ) -> Result<Response<pb::Instance>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let restarted = self.client.restart_instance(&instance, wait(request.wait));
        reply(restarted.await.map_err(status)?)
    }

    async fn delete_instance(
        &self,
        request: Request<pb::InstanceAction>,
    ) -> Result<Response<pb::DeleteInstanceResponse>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let deleting = self.client.delete_instance(&instance, wait(request.wait));
        reply(pb::DeleteInstanceResponse {
            instance: deleting.await.map_err(status)?.map(Into::into),
        })
    }

    async fn pause_instance(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::Instance>, Status> {
        let instance = named("instance", request.into_inner().instance)?;
        reply(
            self.client
                .pause_instance(&instance)
                .await
                .map_err(status)?,
        )
    }

    async fn resume_instance(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::Instance>, Status> {
        let instance = named("instance", request.into_inner().instance)?;
        reply(
            self.client
                .resume_instance(&instance)
                .await
                .map_err(status)?,
        )
    }

    async fn get_instance_stats(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::InstanceStats>, Status> {
        let instance = named("instance", request.into_inner().instance)?;
        reply(
            self.client
                .instance_stats(&instance)
                .await
                .map_err(status)?,
        )
    }

    async fn read_log(
        &self,
        request: Request<pb::ReadLogRequest>,
    ) -> Result<Response<pb::LogChunk>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        // One answer is one message: never more than a message carries.
        let max = request.max.min(crate::MAX_LOG_CHUNK as u64);
        let chunk = self.client.read_log(&instance, request.offset, max);
        reply(chunk.await.map_err(status)?)
    }

    type FollowLogStream = MessageStream<pb::LogData>;

    async fn follow_log(
        &self,
        request: Request<pb::FollowLogRequest>,
    ) -> Result<Response<Self::FollowLogStream>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let log = self.client.follow_log(&instance, request.offset).await;
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
        use pb::console_input::Input;
        let mut input = request.into_inner();
        let first = input.message().await?.and_then(|m| m.input);
        let Some(Input::Instance(instance)) = first else {
            return Err(status(Error::invalid(
                "instance",
                "the first console message must name the instance",
            )));
        };
        let console = self.client.attach_console(&instance).await;
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
        let after = request.into_inner().after_revision;
        let events = self.client.watch_instances(after).await.map_err(status)?;
        Ok(Response::new(messages(events)))
    }
}

#[tonic::async_trait]
impl SnapshotService for ApiServer {
    async fn create_snapshot(
        &self,
        request: Request<pb::SnapshotRef>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let taken = self.client.create_snapshot(&instance, &request.snapshot);
        reply(taken.await.map_err(status)?)
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let instance = named("instance", request.into_inner().instance)?;
        let all = self
            .client
            .list_snapshots(&instance)
            .await
            .map_err(status)?;
        reply(pb::ListSnapshotsResponse {
            snapshots: all.into_iter().map(Into::into).collect(),
        })
    }

    async fn revert_snapshot(
        &self,
        request: Request<pb::SnapshotRef>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let reverted = self.client.revert_snapshot(&instance, &request.snapshot);
        reply(reverted.await.map_err(status)?)
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::SnapshotRef>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let instance = named("instance", request.instance)?;
        let deleted = self.client.delete_snapshot(&instance, &request.snapshot);
        reply(deleted.await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl ImageService for ApiServer {
    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let request = request.into_inner();
        let instance_type = decode_instance_type(request.r#type, "type").map_err(status)?;
        let images = self
            .client
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
        let request = request.into_inner();
        let instance_type = decode_instance_type(request.r#type, "type").map_err(status)?;
        let name = named("name", request.name)?;
        let removed = self
            .client
            .remove_image(request.node.as_deref(), instance_type, &name);
        reply(removed.await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl NodeService for ApiServer {
    async fn list_nodes(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self.client.list_nodes().await.map_err(status)?;
        reply(pb::ListNodesResponse {
            nodes: nodes.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_node(&self, request: Request<pb::NodeRef>) -> Result<Response<pb::Node>, Status> {
        let node = named("node", request.into_inner().node)?;
        reply(self.client.get_node(&node).await.map_err(status)?)
    }

    async fn cordon_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::Node>, Status> {
        let node = named("node", request.into_inner().node)?;
        reply(self.client.cordon_node(&node).await.map_err(status)?)
    }

    async fn uncordon_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::Node>, Status> {
        let node = named("node", request.into_inner().node)?;
        reply(self.client.uncordon_node(&node).await.map_err(status)?)
    }

    async fn drain_node(
        &self,
        request: Request<pb::NodeRef>,
    ) -> Result<Response<pb::DrainReport>, Status> {
        let node = named("node", request.into_inner().node)?;
        reply(self.client.drain_node(&node).await.map_err(status)?)
    }

    async fn set_maintenance(
        &self,
        request: Request<pb::SetMaintenanceRequest>,
    ) -> Result<Response<pb::DrainReport>, Status> {
        let request = request.into_inner();
        let node = named("node", request.node)?;
        let report = self.client.set_maintenance(&node, request.on);
        reply(report.await.map_err(status)?)
    }

    async fn deregister_node(&self, request: Request<pb::NodeRef>) -> Result<Response<()>, Status> {
        let node = named("node", request.into_inner().node)?;
        reply(self.client.deregister_node(&node).await.map_err(status)?)
    }

    type WatchNodesStream = MessageStream<pb::NodeEvent>;

    async fn watch_nodes(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchNodesStream>, Status> {
        let after = request.into_inner().after_revision;
        let events = self.client.watch_nodes(after).await.map_err(status)?;
        Ok(Response::new(messages(events)))
    }
}

#[tonic::async_trait]
impl NetworkService for ApiServer {
    async fn create_network(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let create = request
            .into_inner()
            .network
            .ok_or_else(|| status(Error::invalid("network", "missing")))?
            .try_into()
            .map_err(status)?;
        reply(self.client.create_network(create).await.map_err(status)?)
    }

    async fn get_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::Network>, Status> {
        let name = named("network", request.into_inner().network)?;
        reply(self.client.get_network(&name).await.map_err(status)?)
    }

    async fn list_networks(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = self.client.list_networks().await.map_err(status)?;
        reply(pb::ListNetworksResponse {
            networks: networks.into_iter().map(Into::into).collect(),
        })
    }

    async fn delete_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<()>, Status> {
        let name = named("network", request.into_inner().network)?;
        reply(self.client.delete_network(&name).await.map_err(status)?)
    }
}

#[tonic::async_trait]
impl ClusterService for ApiServer {
    async fn get_cluster_info(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        reply(self.client.cluster_info().await.map_err(status)?)
    }
}
