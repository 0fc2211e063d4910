//! The MembershipService server: what nodes' agents ask of a server. Node
//! registration with a liveness lease, heartbeats, orphan sweep reports,
//! and leaving. These are the cluster's own bookkeeping, not user
//! operations, so the handlers call the controller and the membership
//! directly; users reach nodes through the `Api`.
//!
//! On a TLS server (with a [`NodeGuard`]) every call but `JoinCluster`
//! must come with a node certificate of the cluster CA, and acts only for
//! the node it names: an agent of node A registering, heartbeating,
//! reporting or leaving as B is refused (`PermissionDenied`) before
//! anything is read or written, and the refusal is audited. `JoinCluster`
//! exchanges a join token (used atomically) and a CSR for that
//! certificate, and is audited too. Granted registrations and heartbeats
//! are not audited: one record a second per node would drown the log.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use zixiao_api::membership::wire_duration;
use zixiao_api::pb;
use zixiao_api::pb::membership_service_server::{MembershipService, MembershipServiceServer};
use zixiao_api::status::from_error;
use zixiao_api::tls::TlsPeer;
use zixiao_auth::{
    authorize_node_call, AuditEntry, AuditLog, AuthError, AuthStore, Authenticator, NodeName,
    Outcome, Pki, Rejection, SubjectName,
};
use zixiao_core::api::HostReports;
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
    pub(crate) guard: Option<Arc<NodeGuard>>,
    /// Where heartbeats' host readings go, for the node usage history.
    pub(crate) hosts: HostReports,
}

/// How long a node certificate issued at join or renewal is valid. An
/// agent renews its certificate when it starts within its `renew_before`
/// of the expiry (a long-running agent does not renew until restarted).
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a TLS server checks agents with: their certificates, join tokens,
/// and the CA that signs node certificates; where it records.
#[derive(Debug)]
pub struct NodeGuard {
    pub(crate) authenticator: Authenticator,
    pub(crate) accounts: AuthStore,
    pub(crate) log: Arc<AuditLog>,
    pub(crate) pki: Arc<Pki>,
}

impl NodeGuard {
    async fn record(&self, identity: String, operation: &str, node: &str, outcome: Outcome) {
        let entry = AuditEntry {
            identity,
            user: None,
            token: None,
            project: None,
            operation: operation.to_owned(),
            target: Some(format!("node {node}")),
            outcome,
        };
        if let Err(e) = self.log.record(entry).await {
            tracing::warn!("audit: {e}");
        }
    }

    /// Admits `request` only from node `node`'s own certificate.
    async fn admit<T>(
        &self,
        request: &Request<T>,
        operation: &str,
        node: &str,
    ) -> Result<(), Status> {
        let chain = request
            .extensions()
            .get::<TlsPeer>()
            .and_then(|peer| peer.certificates.clone());
        let identity = match chain {
            Some(chain) if !chain.is_empty() => self.authenticator.certificate(&chain).await,
            _ => Err(AuthError::Unauthenticated(Rejection::NoCredentials)),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(AuthError::Unauthenticated(rejection)) => {
                let outcome = Outcome::Unauthenticated {
                    reason: rejection.to_string(),
                };
                self.record("anonymous".to_owned(), operation, node, outcome)
                    .await;
                return Err(err(AuthError::Unauthenticated(rejection).into()));
            }
            Err(other) => return Err(err(other.into())),
        };
        let name =
            NodeName::try_from(node).map_err(|e| err(Error::invalid("node", e.to_string())))?;
        if let Err(denial) = authorize_node_call(&identity, &name) {
            let outcome = Outcome::Denied {
                permission: denial.permission(),
                reason: denial.reason.clone(),
            };
            self.record(identity.to_string(), operation, node, outcome)
                .await;
            return Err(err(AuthError::from(denial).into()));
        }
        Ok(())
    }
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

impl MembershipServer {
    async fn admit<T>(
        &self,
        request: &Request<T>,
        operation: &str,
        node: &str,
    ) -> Result<(), Status> {
        node_name(node)?;
        match &self.guard {
            Some(guard) => guard.admit(request, operation, node).await,
            None => Ok(()),
        }
    }
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
        let node = request
            .get_ref()
            .registration
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        self.admit(&request, "node.register", &node).await?;
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
        let node = request.get_ref().node.clone();
        self.admit(&request, "node.heartbeat", &node).await?;
        let request = request.into_inner();
        // A reading is telemetry; the renewal is the node's life. A bad
        // reading is dropped (and logged) rather than refused, which would
        // cost the node its lease and fence its instances.
        let host = request.host.and_then(|h| {
            zixiao_api::convert::host_usage(h, chrono::Utc::now(), "host")
                .map_err(|e| tracing::warn!(node = %node, "host reading dropped: {e}"))
                .ok()
        });
        // Answered from memory: a heartbeat writes nothing. It renews only
        // `node`'s liveness under `session` (the lease id names nothing a
        // caller could renew for another), and `admit` made sure `node` is
        // the caller's own.
        self.membership
            .renew(&request.node, &request.session)
            .await
            .map_err(err)?;
        // Kept in memory only, for the stats history's next round.
        if let Some(host) = host {
            self.hosts.record(&request.node, host);
        }
        Ok(Response::new(pb::HeartbeatResponse {
            lease_ttl: Some(wire_duration(self.membership.ttl())),
        }))
    }

    async fn report_orphan_sweep(
        &self,
        request: Request<pb::ReportOrphanSweepRequest>,
    ) -> Result<Response<()>, Status> {
        let node = request.get_ref().node.clone();
        self.admit(&request, "node.report", &node).await?;
        let request = request.into_inner();
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
        let node = request.get_ref().node.clone();
        self.admit(&request, "node.leave", &node).await?;
        let request = request.into_inner();
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

    async fn join_cluster(
        &self,
        request: Request<pb::JoinClusterRequest>,
    ) -> Result<Response<pb::JoinClusterResponse>, Status> {
        let Some(guard) = &self.guard else {
            return Err(err(Error::FailedPrecondition(
                "this server serves no TLS, so it has no CA to sign node certificates with: \
                 agents join a server started with --pki"
                    .to_owned(),
            )));
        };
        let request = request.into_inner();
        let node = NodeName::try_from(request.node.as_str())
            .map_err(|e| err(Error::invalid("node", e.to_string())))?;
        let addresses = subject_names(&request.addresses)?;
        // The CSR is checked before the token is spent: a malformed request
        // does not use up a single-use token.
        Pki::check_csr(&request.csr_pem).map_err(|e| err(AuthError::from(e).into()))?;
        let token = match guard
            .accounts
            .consume_join_token(&request.token, &node)
            .await
        {
            Ok(token) => token,
            Err(e) => {
                let outcome = match &e {
                    AuthError::Unauthenticated(rejection) => Outcome::Unauthenticated {
                        reason: rejection.to_string(),
                    },
                    other => Outcome::Failed { kind: other.kind() },
                };
                guard
                    .record("anonymous".to_owned(), "node.join", &request.node, outcome)
                    .await;
                return Err(err(e.into()));
            }
        };
        let signed: zixiao_core::Result<String> = guard
            .pki
            .sign_node_csr(&request.csr_pem, &node, &addresses, NODE_CERT_VALIDITY)
            .map_err(|e| AuthError::from(e).into());
        let identity = format!("join token {} of user {}", token.id, token.owner);
        guard
            .record(identity, "node.join", &request.node, Outcome::of(&signed))
            .await;
        Ok(Response::new(pb::JoinClusterResponse {
            cert_pem: signed.map_err(err)?,
            ca_pem: guard.pki.ca_pem().to_owned(),
        }))
    }

    async fn renew_node_certificate(
        &self,
        request: Request<pb::RenewNodeCertificateRequest>,
    ) -> Result<Response<pb::JoinClusterResponse>, Status> {
        let Some(guard) = &self.guard else {
            return Err(err(Error::FailedPrecondition(
                "this server serves no TLS: there is no node certificate to renew".to_owned(),
            )));
        };
        let node = request.get_ref().node.clone();
        self.admit(&request, "node.renew", &node).await?;
        let request = request.into_inner();
        let name = NodeName::try_from(node.as_str())
            .map_err(|e| err(Error::invalid("node", e.to_string())))?;
        let addresses = subject_names(&request.addresses)?;
        let signed: zixiao_core::Result<String> = guard
            .pki
            .sign_node_csr(&request.csr_pem, &name, &addresses, NODE_CERT_VALIDITY)
            .map_err(|e| AuthError::from(e).into());
        guard
            .record(
                format!("node {node}"),
                "node.renew",
                &node,
                Outcome::of(&signed),
            )
            .await;
        Ok(Response::new(pb::JoinClusterResponse {
            cert_pem: signed.map_err(err)?,
            ca_pem: guard.pki.ca_pem().to_owned(),
        }))
    }
}

fn subject_names(addresses: &[String]) -> Result<Vec<SubjectName>, Status> {
    addresses
        .iter()
        .map(|a| a.parse::<SubjectName>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(Error::invalid("addresses", e.to_string())))
}
