//! [`MembershipClient`]: what a node's agent asks of the servers over the
//! MembershipService: register its node and hold its liveness lease,
//! report its orphan sweeps, and leave. Everything else an agent needs of
//! the cluster (where an instance is placed, draining its node) it asks
//! through the user-facing [`Client`](zixiao_core::Client) of [`crate::connect`].

use std::time::Duration;

use tonic::transport::Channel;
use zixiao_core::host_usage::HostUsage;
use zixiao_core::model::OrphanSweep;
use zixiao_core::{Error, Node, NodeRegistration, Result};

use crate::pb;
use crate::pb::membership_service_client::MembershipServiceClient;
use crate::status::to_error;

/// A node's liveness lease as the server granted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLease {
    /// The lease's id in the store.
    pub id: u64,
    /// How long it lives without a heartbeat.
    pub ttl: Duration,
}

/// A client of a server's MembershipService.
#[derive(Debug, Clone)]
pub struct MembershipClient {
    server: String,
    inner: MembershipServiceClient<Channel>,
}

/// A wire duration as a [`Duration`] (a negative one is zero).
pub fn duration(value: Option<prost_types::Duration>) -> Duration {
    value
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default()
}

/// A [`Duration`] on the wire.
pub fn wire_duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(value).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

impl MembershipClient {
    /// A client of the server at `endpoint` whose calls give up after
    /// `timeout`, connecting on first use. Errors: `InvalidArgument` (a
    /// malformed endpoint).
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self> {
        Self::new_tls(endpoint, timeout, None)
    }

    /// [`MembershipClient::new`], over TLS with `tls` when given (the
    /// cluster CA trusted, a server expected; the node's certificate
    /// presented, except to join).
    pub fn new_tls(
        endpoint: &str,
        timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Self> {
        let channel = crate::remote::channel_with(endpoint, timeout, tls)?;
        Ok(MembershipClient {
            server: format!("the zixiao server `{endpoint}`"),
            inner: MembershipServiceClient::new(channel)
                .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(crate::MAX_MESSAGE_BYTES),
        })
    }

    fn error(&self, status: tonic::Status) -> Error {
        to_error(status, &self.server)
    }

    /// Registers the node under `session`; answers the node as stored and
    /// its lease. Errors: `InvalidArgument`, `AlreadyExists` (another live
    /// agent holds the name), `Unavailable`.
    pub async fn register_node(
        &self,
        registration: &NodeRegistration,
        session: &str,
    ) -> Result<(Node, NodeLease)> {
        let request = pb::RegisterNodeRequest {
            registration: Some(registration.clone().into()),
            session: session.to_owned(),
        };
        let reply = self.inner.clone().register_node(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        let node = reply
            .node
            .ok_or_else(|| Error::invalid("node", "missing"))
            .and_then(Node::try_from)
            .map_err(|e| Error::Internal(format!("{} answered {}", self.server, e.chain())))?;
        let lease = NodeLease {
            id: reply.lease_id,
            ttl: duration(reply.lease_ttl),
        };
        Ok((node, lease))
    }

    /// Renews the node's lease. Errors: `NotFound` once it expired, `Unavailable`.
    pub async fn heartbeat(&self, node: &str, session: &str, lease: u64) -> Result<()> {
        self.heartbeat_with_host(node, session, lease, None).await
    }

    /// [`Self::heartbeat`], telling the server what the node's host uses
    /// (`None`: unknown). Errors: `NotFound` once the lease expired,
    /// `InvalidArgument` (a reading out of bounds), `Unavailable`.
    pub async fn heartbeat_with_host(
        &self,
        node: &str,
        session: &str,
        lease: u64,
        host: Option<&HostUsage>,
    ) -> Result<()> {
        let request = pb::HeartbeatRequest {
            node: node.to_owned(),
            session: session.to_owned(),
            lease_id: lease,
            host: host.map(pb::HostUsage::from),
        };
        self.inner
            .clone()
            .heartbeat(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Records what the node's orphan sweep did. Errors:
    /// `FailedPrecondition` (this session does not hold the node), `NotFound`.
    pub async fn report_orphan_sweep(
        &self,
        node: &str,
        session: &str,
        sweep: &OrphanSweep,
    ) -> Result<()> {
        let request = pb::ReportOrphanSweepRequest {
            node: node.to_owned(),
            session: session.to_owned(),
            sweep: Some(sweep.clone().into()),
        };
        self.inner
            .clone()
            .report_orphan_sweep(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Removes the node, which holds no instances, and its lease. Errors:
    /// `NotFound`, `FailedPrecondition` (it holds instances: drain it).
    pub async fn leave_cluster(&self, node: &str, session: &str) -> Result<()> {
        let request = pb::LeaveClusterRequest {
            node: node.to_owned(),
            session: session.to_owned(),
        };
        self.inner
            .clone()
            .leave_cluster(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Exchanges join token `token` and `csr_pem` for node `node`'s
    /// certificate, valid for `addresses`; answers the certificate and the
    /// cluster CA, PEM. Errors: `Unauthenticated` (the token),
    /// `InvalidArgument`, `FailedPrecondition`, `Unavailable`.
    pub async fn join_cluster(
        &self,
        token: &str,
        node: &str,
        csr_pem: &str,
        addresses: Vec<String>,
    ) -> Result<(String, String)> {
        let request = pb::JoinClusterRequest {
            token: token.to_owned(),
            node: node.to_owned(),
            csr_pem: csr_pem.to_owned(),
            addresses,
        };
        let reply = self.inner.clone().join_cluster(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        Ok((reply.cert_pem, reply.ca_pem))
    }

    /// A new certificate for node `node` (the caller's own, shown by its
    /// current certificate) for `csr_pem`, valid for `addresses`; answers
    /// it and the cluster CA, PEM. Errors: `PermissionDenied`,
    /// `Unauthenticated`, `InvalidArgument`, `Unavailable`.
    pub async fn renew_node_certificate(
        &self,
        node: &str,
        csr_pem: &str,
        addresses: Vec<String>,
    ) -> Result<(String, String)> {
        let request = pb::RenewNodeCertificateRequest {
            node: node.to_owned(),
            csr_pem: csr_pem.to_owned(),
            addresses,
        };
        let reply = self.inner.clone().renew_node_certificate(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        Ok((reply.cert_pem, reply.ca_pem))
    }
}
