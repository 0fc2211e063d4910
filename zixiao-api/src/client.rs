//! Typed clients of a Zixiao server: the same calls as the
//! [`Controller`](zixiao_core::Controller), answering the same model objects
//! and the same errors (kind and message), over gRPC.

use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::transport::Channel;
use zixiao_core::controller::DrainReport;
use zixiao_core::driver::{ConsoleStream, InstanceStats, LogChunk, SnapshotInfo};
use zixiao_core::model::{CreateNetwork, Network};
use zixiao_core::{
    ClusterInfo, CreateInstance, Instance, InstanceEvent, InstanceFilter, Node, NodeRegistration,
    Result,
};

use crate::json;
use crate::pb::cluster_service_client::ClusterServiceClient;
use crate::pb::compute_service_client::ComputeServiceClient;
use crate::pb::{
    console_input, ConsoleInput, CreateInstanceRequest, DeregisterNodeRequest, Empty,
    HeartbeatRequest, InstanceAction, InstanceRef, JsonObject, NetworkRef, NodeRef, ReadLogRequest,
    RegisterNodeRequest, SnapshotRef, UpdateNodeStatusRequest, WatchRequest,
};
use crate::status::to_error;

fn decode_list<T: serde::de::DeserializeOwned>(items: &[Vec<u8>]) -> Result<Vec<T>> {
    items
        .iter()
        .map(|bytes| json::decode("items", bytes))
        .collect()
}

fn decode_optional<T: serde::de::DeserializeOwned>(object: JsonObject) -> Result<Option<T>> {
    if object.json.is_empty() {
        return Ok(None);
    }
    json::decode("json", &object.json).map(Some)
}

fn decode_object<T: serde::de::DeserializeOwned>(object: JsonObject) -> Result<T> {
    json::decode("json", &object.json)
}

/// A client of a server's ComputeService.
#[derive(Debug, Clone)]
pub struct ComputeClient {
    inner: ComputeServiceClient<Channel>,
}

impl ComputeClient {
    /// A client of the server at `endpoint` (`host:port` or `http://host:port`),
    /// connecting on first use. Errors: `InvalidArgument` (a malformed endpoint).
    pub fn new(endpoint: &str) -> Result<Self> {
        let channel = crate::remote::channel(endpoint, Duration::from_secs(3600))?;
        Ok(ComputeClient {
            inner: ComputeServiceClient::new(channel)
                .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(crate::MAX_MESSAGE_BYTES),
        })
    }

    /// Creates an instance; with `wait`, answers once it has converged.
    pub async fn create_instance(
        &self,
        request: &CreateInstance,
        wait: bool,
    ) -> Result<Option<Instance>> {
        let request = CreateInstanceRequest {
            request_json: json::encode(request),
            wait,
        };
        let reply = self.inner.clone().create_instance(request).await;
        decode_optional(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// The instance with id or name `instance`.
    pub async fn get_instance(&self, instance: &str) -> Result<Instance> {
        let request = InstanceRef {
            instance: instance.to_owned(),
        };
        let reply = self.inner.clone().get_instance(request).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// The instances `filter` accepts, in name order.
    pub async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        let request = JsonObject {
            json: json::encode(filter),
        };
        let reply = self.inner.clone().list_instances(request).await;
        decode_list(&reply.map_err(|s| to_error(&s))?.into_inner().items)
    }

    async fn action(&self, op: Action, instance: &str, wait: bool) -> Result<Option<Instance>> {
        let request = InstanceAction {
            instance: instance.to_owned(),
            wait,
        };
        let mut client = self.inner.clone();
        let reply = match op {
            Action::Start => client.start_instance(request).await,
            Action::Stop => client.stop_instance(request).await,
            Action::Restart => client.restart_instance(request).await,
            Action::Delete => client.delete_instance(request).await,
        };
        decode_optional(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Asks for the instance to run.
    pub async fn start_instance(&self, instance: &str, wait: bool) -> Result<Option<Instance>> {
        self.action(Action::Start, instance, wait).await
    }

    /// Asks for the instance to stop.
    pub async fn stop_instance(&self, instance: &str, wait: bool) -> Result<Option<Instance>> {
        self.action(Action::Stop, instance, wait).await
    }

    /// Asks for the instance to restart.
    pub async fn restart_instance(&self, instance: &str, wait: bool) -> Result<Option<Instance>> {
        self.action(Action::Restart, instance, wait).await
    }

    /// Asks for the instance to be deleted; `None` once it is gone.
    pub async fn delete_instance(&self, instance: &str, wait: bool) -> Result<Option<Instance>> {
        self.action(Action::Delete, instance, wait).await
    }

    /// The instance's resource usage.
    pub async fn instance_stats(&self, instance: &str) -> Result<InstanceStats> {
        let request = InstanceRef {
            instance: instance.to_owned(),
        };
        let reply = self.inner.clone().get_instance_stats(request).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Up to `max` bytes of the instance's log from `offset`.
    pub async fn read_log(&self, instance: &str, offset: u64, max: usize) -> Result<LogChunk> {
        let request = ReadLogRequest {
            instance: instance.to_owned(),
            offset,
            max: max as u64,
        };
        let reply = self.inner.clone().read_log(request).await;
        let chunk = reply.map_err(|s| to_error(&s))?.into_inner();
        Ok(LogChunk {
            data: chunk.data,
            next_offset: chunk.next_offset,
        })
    }

    /// Instance changes after store revision `after` (0: from now), then live.
    pub async fn watch_instances(
        &self,
        after: u64,
    ) -> Result<impl Stream<Item = Result<InstanceEvent>> + Send + 'static> {
        let request = WatchRequest {
            after_revision: after,
        };
        let reply = self.inner.clone().watch_instances(request).await;
        let stream = reply.map_err(|s| to_error(&s))?.into_inner();
        Ok(stream.map(|item| match item {
            Ok(object) => decode_object::<InstanceEvent>(object),
            Err(status) => Err(to_error(&status)),
        }))
    }

    /// Attaches to a running instance's console through the server.
    pub async fn attach_console(&self, instance: &str) -> Result<ConsoleStream> {
        let first = ConsoleInput {
            input: Some(console_input::Input::Instance(instance.to_owned())),
        };
        let mut client = self.inner.clone();
        crate::console::connect(first, |input| async move {
            Ok(client.attach_console(input).await?.into_inner())
        })
        .await
        .map_err(|s| to_error(&s))
    }

    /// Creates a network and sets it up on every node that sets up networks.
    pub async fn create_network(&self, request: &CreateNetwork) -> Result<Network> {
        let request = JsonObject {
            json: json::encode(request),
        };
        let reply = self.inner.clone().create_network(request).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// The network named `name`.
    pub async fn get_network(&self, name: &str) -> Result<Network> {
        let request = NetworkRef {
            network: name.to_owned(),
        };
        let reply = self.inner.clone().get_network(request).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Every network, in name order.
    pub async fn list_networks(&self) -> Result<Vec<Network>> {
        let reply = self.inner.clone().list_networks(Empty {}).await;
        decode_list(&reply.map_err(|s| to_error(&s))?.into_inner().items)
    }

    /// Removes a network that no instance uses, from every node and the store.
    pub async fn delete_network(&self, name: &str) -> Result<()> {
        let request = NetworkRef {
            network: name.to_owned(),
        };
        self.inner
            .clone()
            .delete_network(request)
            .await
            .map_err(|s| to_error(&s))?;
        Ok(())
    }

    fn snapshot_ref(instance: &str, name: &str) -> SnapshotRef {
        SnapshotRef {
            instance: instance.to_owned(),
            snapshot: name.to_owned(),
        }
    }

    /// Freezes a running instance in place. Errors: `NotFound`,
    /// `FailedPrecondition` (not running), `Unsupported` (its runtime
    /// cannot pause), `Unavailable`.
    pub async fn pause_instance(&self, instance: &str) -> Result<Instance> {
        let request = InstanceRef {
            instance: instance.to_owned(),
        };
        let reply = self.inner.clone().pause_instance(request).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Thaws a paused instance. Errors: `NotFound`, `FailedPrecondition`
    /// (not paused), `Unsupported`, `Unavailable`.
    pub async fn resume_instance(&self, instance: &str) -> Result<Instance> {
        let request = InstanceRef {
            instance: instance.to_owned(),
        };
        let reply = self.inner.clone().resume_instance(request).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Takes snapshot `name` of the instance on its node.
    pub async fn snapshot_instance(&self, instance: &str, name: &str) -> Result<SnapshotInfo> {
        let request = Self::snapshot_ref(instance, name);
        let reply = self.inner.clone().snapshot_instance(request).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// The instance's snapshots, oldest first.
    pub async fn list_snapshots(&self, instance: &str) -> Result<Vec<SnapshotInfo>> {
        let request = InstanceRef {
            instance: instance.to_owned(),
        };
        let reply = self.inner.clone().list_snapshots(request).await;
        decode_list(&reply.map_err(|s| to_error(&s))?.into_inner().items)
    }

    /// Puts the instance back to snapshot `name`.
    pub async fn revert_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        let request = Self::snapshot_ref(instance, name);
        self.inner
            .clone()
            .revert_snapshot(request)
            .await
            .map_err(|s| to_error(&s))?;
        Ok(())
    }

    /// Deletes snapshot `name` of the instance.
    pub async fn delete_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        let request = Self::snapshot_ref(instance, name);
        self.inner
            .clone()
            .delete_snapshot(request)
            .await
            .map_err(|s| to_error(&s))?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Start,
    Stop,
    Restart,
    Delete,
}

/// A node's liveness lease as the server granted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLease {
    /// The lease's id in the store.
    pub id: u64,
    /// How long it lives without a heartbeat.
    pub ttl: Duration,
}

/// A client of a server's ClusterService.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    inner: ClusterServiceClient<Channel>,
}

impl ClusterClient {
    /// A client of the server at `endpoint` whose calls give up after `timeout`.
    /// Errors: `InvalidArgument` (a malformed endpoint).
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self> {
        let channel = crate::remote::channel(endpoint, timeout)?;
        Ok(ClusterClient {
            inner: ClusterServiceClient::new(channel),
        })
    }

    /// Registers the node under `session`; answers the node and its lease.
    pub async fn register_node(
        &self,
        registration: &NodeRegistration,
        session: &str,
    ) -> Result<(Node, NodeLease)> {
        let request = RegisterNodeRequest {
            registration_json: json::encode(registration),
            session: session.to_owned(),
        };
        let reply = self.inner.clone().register_node(request).await;
        let reply = reply.map_err(|s| to_error(&s))?.into_inner();
        let node = json::decode("node_json", &reply.node_json)?;
        Ok((
            node,
            NodeLease {
                id: reply.lease_id,
                ttl: Duration::from_millis(reply.lease_ttl_ms),
            },
        ))
    }

    /// Renews the node's lease. Errors: `NotFound` once it expired.
    pub async fn heartbeat(&self, node: &str, session: &str, lease: u64) -> Result<()> {
        let request = HeartbeatRequest {
            node: node.to_owned(),
            session: session.to_owned(),
            lease_id: lease,
        };
        self.inner
            .clone()
            .heartbeat(request)
            .await
            .map_err(|s| to_error(&s))?;
        Ok(())
    }

    /// Records what the node's orphan sweep did. Errors:
    /// `FailedPrecondition` (this session does not hold the node), `NotFound`.
    pub async fn report_orphan_sweep(
        &self,
        node: &str,
        session: &str,
        sweep: &zixiao_core::model::OrphanSweep,
    ) -> Result<()> {
        let request = crate::pb::ReportOrphanSweepRequest {
            node: node.to_owned(),
            session: session.to_owned(),
            sweep_json: json::encode(sweep),
        };
        self.inner
            .clone()
            .report_orphan_sweep(request)
            .await
            .map_err(|s| to_error(&s))?;
        Ok(())
    }

    /// Removes a node that holds no instances.
    pub async fn deregister_node(&self, node: &str, session: &str) -> Result<()> {
        let request = DeregisterNodeRequest {
            node: node.to_owned(),
            session: session.to_owned(),
        };
        self.inner
            .clone()
            .deregister_node(request)
            .await
            .map_err(|s| to_error(&s))?;
        Ok(())
    }

    /// Every node.
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        let reply = self.inner.clone().list_nodes(Empty {}).await;
        decode_list(&reply.map_err(|s| to_error(&s))?.into_inner().items)
    }

    fn node_ref(node: &str) -> NodeRef {
        NodeRef {
            node: node.to_owned(),
        }
    }

    /// One node.
    pub async fn get_node(&self, node: &str) -> Result<Node> {
        let reply = self.inner.clone().get_node(Self::node_ref(node)).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Stops new placements on a node.
    pub async fn cordon_node(&self, node: &str) -> Result<Node> {
        let reply = self.inner.clone().cordon_node(Self::node_ref(node)).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Allows placements on a cordoned node again.
    pub async fn uncordon_node(&self, node: &str) -> Result<Node> {
        let reply = self.inner.clone().uncordon_node(Self::node_ref(node)).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Empties a node in order.
    pub async fn drain_node(&self, node: &str) -> Result<DrainReport> {
        let reply = self.inner.clone().drain_node(Self::node_ref(node)).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// Puts a node in maintenance or takes it out.
    pub async fn set_maintenance(&self, node: &str, on: bool) -> Result<DrainReport> {
        let request = UpdateNodeStatusRequest {
            node: node.to_owned(),
            status: if on { "maintenance" } else { "ready" }.to_owned(),
        };
        let reply = self.inner.clone().update_node_status(request).await;
        decode_object(reply.map_err(|s| to_error(&s))?.into_inner())
    }

    /// The cluster summary and the id of the leading server (empty: none).
    pub async fn cluster_info(&self) -> Result<(ClusterInfo, String)> {
        let reply = self.inner.clone().get_cluster_info(Empty {}).await;
        let reply = reply.map_err(|s| to_error(&s))?.into_inner();
        let info = json::decode("info_json", &reply.info_json)?;
        Ok((info, reply.leader))
    }
}
