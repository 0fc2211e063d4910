//! The ClusterService server: node registration with liveness leases,
//! heartbeats, and the controller's node operations.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use zixiao_api::json;
use zixiao_api::pb::cluster_service_server::{ClusterService, ClusterServiceServer};
use zixiao_api::pb::{
    DeregisterNodeRequest, Empty, GetClusterInfoResponse, HeartbeatRequest, HeartbeatResponse,
    JsonList, JsonObject, NodeEvent, NodeRef, RegisterNodeRequest, RegisterNodeResponse,
    ReportOrphanSweepRequest, UpdateNodeStatusRequest, WatchRequest,
};
use zixiao_api::status::from_error;
use zixiao_core::controller::NODES_PREFIX;
use zixiao_core::model::OrphanSweep;
use zixiao_core::store::{Store, WatchEvent};
use zixiao_core::{Controller, Error, NodeRegistration};

use crate::membership::Membership;
use crate::nodes::NodeSync;

/// The ClusterService of one server.
#[derive(Debug, Clone)]
pub struct ClusterServer {
    pub(crate) controller: Controller,
    pub(crate) membership: Membership,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sync: NodeSync,
}

impl ClusterServer {
    /// The tonic service.
    pub fn into_service(self) -> ClusterServiceServer<Self> {
        ClusterServiceServer::new(self)
            .max_decoding_message_size(zixiao_api::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(zixiao_api::MAX_MESSAGE_BYTES)
    }
}

fn err(error: Error) -> Status {
    from_error(&error)
}

fn node_name(node: &str) -> Result<(), Status> {
    if node.is_empty() {
        return Err(err(Error::invalid("node", "missing")));
    }
    Ok(())
}

fn object<T: serde::Serialize>(value: &T) -> Response<JsonObject> {
    Response::new(JsonObject {
        json: json::encode(value),
    })
}

/// A boxed stream of node events.
pub type NodeEvents = Pin<Box<dyn Stream<Item = Result<NodeEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ClusterService for ClusterServer {
    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        let request = request.into_inner();
        let registration: NodeRegistration =
            json::decode("registration_json", &request.registration_json).map_err(err)?;
        registration.validate().map_err(err)?;
        if registration.address.is_empty() || registration.address == "local" {
            return Err(err(Error::invalid(
                "registration.address",
                "a remote agent must give the host:port its AgentService listens on",
            )));
        }
        let lease = self
            .membership
            .acquire(&registration.id, &request.session)
            .await
            .map_err(err)?;
        let node = self
            .controller
            .register_node(registration)
            .await
            .map_err(err)?;
        self.sync.attach(&node);
        // A (re)started agent's networks are brought back in line with the
        // store: missing bridges made, orphans removed.
        self.sync.reconcile_networks_of(&node);
        Ok(Response::new(RegisterNodeResponse {
            node_json: json::encode(&node),
            lease_id: lease,
            lease_ttl_ms: u64::try_from(self.membership.ttl().as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn deregister_node(
        &self,
        request: Request<DeregisterNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        node_name(&request.node)?;
        let held = self
            .membership
            .held_by(&request.node, &request.session)
            .await
            .map_err(err)?;
        self.controller
            .deregister_node(&request.node)
            .await
            .map_err(err)?;
        if let Some(lease) = held {
            self.membership.release(lease).await.map_err(err)?;
        }
        Ok(Response::new(Empty {}))
    }

    async fn list_nodes(&self, _request: Request<Empty>) -> Result<Response<JsonList>, Status> {
        let nodes = self.controller.list_nodes().await.map_err(err)?;
        Ok(Response::new(JsonList {
            items: nodes.iter().map(json::encode).collect(),
        }))
    }

    async fn get_node(&self, request: Request<NodeRef>) -> Result<Response<JsonObject>, Status> {
        node_name(&request.get_ref().node)?;
        let node = self
            .controller
            .get_node(&request.get_ref().node)
            .await
            .map_err(err)?;
        Ok(object(&node))
    }

    async fn update_node_status(
        &self,
        request: Request<UpdateNodeStatusRequest>,
    ) -> Result<Response<JsonObject>, Status> {
        let request = request.into_inner();
        node_name(&request.node)?;
        let on = match request.status.as_str() {
            "maintenance" => true,
            "ready" => false,
            other => {
                return Err(err(Error::invalid(
                    "status",
                    format!("`{other}` is not `maintenance` or `ready`"),
                )))
            }
        };
        let report = self
            .controller
            .set_maintenance(&request.node, on)
            .await
            .map_err(err)?;
        Ok(object(&report))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let request = request.into_inner();
        node_name(&request.node)?;
        self.membership
            .renew(&request.node, request.lease_id)
            .await
            .map_err(err)?;
        Ok(Response::new(HeartbeatResponse {
            lease_ttl_ms: u64::try_from(self.membership.ttl().as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn get_cluster_info(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<GetClusterInfoResponse>, Status> {
        let info = self.controller.cluster_info().await.map_err(err)?;
        let leader = crate::election::leader(self.store.as_ref())
            .await
            .map_err(|e| err(e.into()))?;
        Ok(Response::new(GetClusterInfoResponse {
            info_json: json::encode(&info),
            leader: leader.unwrap_or_default(),
        }))
    }

    type WatchNodesStream = NodeEvents;

    async fn watch_nodes(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchNodesStream>, Status> {
        let after = match request.get_ref().after_revision {
            0 => {
                self.store
                    .list(NODES_PREFIX)
                    .await
                    .map_err(|e| err(e.into()))?
                    .revision
            }
            after => after,
        };
        let events = self
            .store
            .watch(NODES_PREFIX, after)
            .await
            .map_err(|e| err(e.into()))?;
        let events = events.map(|event| match event {
            Ok(WatchEvent::Put(kv)) => Ok(NodeEvent {
                kind: "put".to_owned(),
                revision: kv.mod_revision,
                id: kv
                    .key
                    .strip_prefix(NODES_PREFIX)
                    .unwrap_or(&kv.key)
                    .to_owned(),
                node_json: kv.value,
            }),
            Ok(WatchEvent::Delete { key, revision, .. }) => Ok(NodeEvent {
                kind: "delete".to_owned(),
                revision,
                id: key.strip_prefix(NODES_PREFIX).unwrap_or(&key).to_owned(),
                node_json: Vec::new(),
            }),
            Err(e) => Err(err(e.into())),
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn cordon_node(&self, request: Request<NodeRef>) -> Result<Response<JsonObject>, Status> {
        node_name(&request.get_ref().node)?;
        let node = self
            .controller
            .cordon_node(&request.get_ref().node)
            .await
            .map_err(err)?;
        Ok(object(&node))
    }

    async fn uncordon_node(
        &self,
        request: Request<NodeRef>,
    ) -> Result<Response<JsonObject>, Status> {
        node_name(&request.get_ref().node)?;
        let node = self
            .controller
            .uncordon_node(&request.get_ref().node)
            .await
            .map_err(err)?;
        Ok(object(&node))
    }

    async fn report_orphan_sweep(
        &self,
        request: Request<ReportOrphanSweepRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        node_name(&request.node)?;
        let sweep: OrphanSweep = json::decode("sweep_json", &request.sweep_json).map_err(err)?;
        let held = self
            .membership
            .held_by(&request.node, &request.session)
            .await
            .map_err(err)?;
        if held.is_none() {
            return Err(err(Error::FailedPrecondition(format!(
                "node `{}` is not held by this agent's session: register first",
                request.node
            ))));
        }
        self.controller
            .record_orphan_sweep(&request.node, sweep)
            .await
            .map_err(err)?;
        Ok(Response::new(Empty {}))
    }

    async fn drain_node(&self, request: Request<NodeRef>) -> Result<Response<JsonObject>, Status> {
        node_name(&request.get_ref().node)?;
        let report = self
            .controller
            .drain_node(&request.get_ref().node)
            .await
            .map_err(err)?;
        Ok(object(&report))
    }
}
