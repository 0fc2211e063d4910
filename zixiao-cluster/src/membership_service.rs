//! The MembershipService server: what nodes' agents ask of a server. Node
//! registration with a liveness lease, heartbeats, orphan sweep reports,
//! and leaving. These are the cluster's own bookkeeping, not user
//! operations, so the handlers call the controller and the membership
//! directly; users reach nodes through the `Api`.

use tonic::{Request, Response, Status};
use zixiao_api::membership::wire_duration;
use zixiao_api::pb;
use zixiao_api::pb::membership_service_server::{MembershipService, MembershipServiceServer};
use zixiao_api::status::from_error;
use zixiao_core::model::OrphanSweep;
use zixiao_core::{Controller, Error, NodeRegistration};

use crate::membership::Membership;
use crate::nodes::NodeSync;

/// The full name of the MembershipService, for the health service.
pub const SERVICE: &str = "zixiao.v1.MembershipService";

/// The MembershipService of one server.
#[derive(Debug, Clone)]
pub struct MembershipServer {
    pub(crate) controller: Controller,
    pub(crate) membership: Membership,
    pub(crate) sync: NodeSync,
}

impl MembershipServer {
    /// The tonic service.
    pub fn into_service(self) -> MembershipServiceServer<Self> {
        MembershipServiceServer::new(self)
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

#[tonic::async_trait]
impl MembershipService for MembershipServer {
    async fn register_node(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let request = request.into_inner();
        let registration: NodeRegistration = request
            .registration
            .ok_or_else(|| Error::invalid("registration", "missing"))
            .and_then(NodeRegistration::try_from)
            .map_err(err)?;
        registration.validate().map_err(err)?;
        if registration.address.is_empty() || registration.address == "local" {
            return Err(err(Error::invalid(
                "node.address",
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
        Ok(Response::new(pb::RegisterNodeResponse {
            node: Some(node.into()),
            lease_id: lease,
            lease_ttl: Some(wire_duration(self.membership.ttl())),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        node_name(&request.node)?;
        // Answered from memory: a heartbeat writes nothing.
        self.membership
            .renew(&request.node, &request.session)
            .await
            .map_err(err)?;
        Ok(Response::new(pb::HeartbeatResponse {
            lease_ttl: Some(wire_duration(self.membership.ttl())),
        }))
    }

    async fn report_orphan_sweep(
        &self,
        request: Request<pb::ReportOrphanSweepRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        node_name(&request.node)?;
        let sweep: OrphanSweep = request
            .sweep
            .ok_or_else(|| Error::invalid("sweep", "missing"))
            .and_then(OrphanSweep::try_from)
            .map_err(err)?;
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
        Ok(Response::new(()))
    }

    async fn leave_cluster(
        &self,
        request: Request<pb::LeaveClusterRequest>,
    ) -> Result<Response<()>, Status> {
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
        if held.is_some() {
            self.membership.release(&request.node).await.map_err(err)?;
        }
        Ok(Response::new(()))
    }
}
