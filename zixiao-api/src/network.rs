//! [`RemoteNetworkHost`]: a [`NetworkHost`] for a node whose agent runs in
//! another process. A server's controller holds one per node that declares
//! the [`NETWORKS_TRAIT`], so creating a network through any server sets
//! its bridge up on every such node, and deleting it removes it.

use std::net::IpAddr;

use async_trait::async_trait;
use tonic::transport::Channel;
use zixiao_core::model::{InstallationId, Network, NetworkAttachment, NetworkPart, OverlayView};
use zixiao_core::{Error, ErrorKind, Instance, NetworkHost, Result};

use crate::convert::decode_all;
use crate::pb;
use crate::pb::agent_service_client::AgentServiceClient;
use crate::remote::DEFAULT_CALL_TIMEOUT;
use crate::status::{to_driver_error, to_error};

/// The node trait an agent declares when it sets up networks (it serves
/// the AgentService's network calls with a real [`NetworkHost`]). Servers
/// set networks up only on nodes with it; placements can require it.
pub const NETWORKS_TRAIT: &str = "networks";

/// The networks of one node, set up by its agent over gRPC.
#[derive(Debug, Clone)]
pub struct RemoteNetworkHost {
    node: String,
    client: AgentServiceClient<Channel>,
}

impl RemoteNetworkHost {
    /// The network host of node `node` whose agent listens at `address`.
    /// Connects on first use. Errors: `InvalidArgument` (a malformed address).
    pub fn new(node: impl Into<String>, address: &str) -> Result<Self> {
        Self::new_tls(node, address, None)
    }

    /// [`RemoteNetworkHost::new`], over TLS with `tls` when given.
    pub fn new_tls(
        node: impl Into<String>,
        address: &str,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Self> {
        let channel = crate::remote::channel_with(address, DEFAULT_CALL_TIMEOUT, tls)?;
        let client = AgentServiceClient::new(channel)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        Ok(RemoteNetworkHost {
            node: node.into(),
            client,
        })
    }

    /// The node it reaches.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's error as the controller's: an agent that cannot be
    /// reached is an unavailable runtime named after the node.
    fn error(&self, status: tonic::Status) -> Error {
        let what = format!("the agent of node `{}`", self.node);
        if crate::status::kind_of_status(&status) == ErrorKind::Unavailable {
            return Error::Driver(to_driver_error(&status, &what));
        }
        to_error(status, &what)
    }
}

#[async_trait]
impl NetworkHost for RemoteNetworkHost {
    async fn ensure_network(&self, network: &Network) -> Result<()> {
        let request = pb::Network::from(network.clone());
        self.client
            .clone()
            .ensure_network(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn remove_network(&self, network: &Network) -> Result<()> {
        let request = pb::Network::from(network.clone());
        self.client
            .clone()
            .remove_network(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<String>> {
        let reply = self
            .client
            .clone()
            .network_inventory(())
            .await
            .map_err(|s| self.error(s))?;
        Ok(reply.into_inner().objects)
    }

    async fn reconcile(
        &self,
        installation: &InstallationId,
        networks: &[Network],
        instances: &[Instance],
        seen: &[String],
    ) -> Result<Vec<String>> {
        let request = pb::ReconcileNetworksRequest {
            networks: networks.iter().cloned().map(Into::into).collect(),
            instances: instances.iter().cloned().map(Into::into).collect(),
            seen: seen.to_vec(),
            installation: installation.to_string(),
        };
        let reply = self
            .client
            .clone()
            .reconcile_networks(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(reply.into_inner().removed)
    }

    async fn underlay(&self) -> Result<Option<IpAddr>> {
        let reply = self
            .client
            .clone()
            .network_underlay(())
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        if reply.address.is_empty() {
            return Ok(None);
        }
        reply.address.parse().map(Some).map_err(|_| {
            Error::Internal(format!(
                "the agent of node `{}` reported `{}` as its underlay, not an IP address",
                self.node,
                reply.address.escape_debug()
            ))
        })
    }

    async fn set_overlay(&self, network: &Network, view: &OverlayView) -> Result<()> {
        let request = pb::SetOverlayRequest {
            network: Some(pb::Network::from(network.clone())),
            overlay: Some(view.into()),
        };
        self.client
            .clone()
            .set_overlay(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn inspect(
        &self,
        network: &Network,
        view: &OverlayView,
        attachments: &[NetworkAttachment],
    ) -> Result<Vec<NetworkPart>> {
        let request = pb::InspectNetworkRequest {
            network: Some(pb::Network::from(network.clone())),
            overlay: Some(view.into()),
            attachments: attachments.iter().cloned().map(Into::into).collect(),
        };
        let answer = self
            .client
            .clone()
            .inspect_network(request)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        decode_all(answer.parts).map_err(|e| {
            Error::Internal(format!(
                "node `{}` described network `{}` in a way that cannot be read: {}",
                self.node,
                network.name,
                e.chain()
            ))
        })
    }

    async fn repair(
        &self,
        network: &Network,
        attachments: &[NetworkAttachment],
    ) -> Result<Vec<String>> {
        let request = pb::RepairNetworkRequest {
            network: Some(pb::Network::from(network.clone())),
            attachments: attachments.iter().cloned().map(Into::into).collect(),
        };
        let answer = self
            .client
            .clone()
            .repair_network(request)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(answer.repaired)
    }
}
