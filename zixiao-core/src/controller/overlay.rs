//! Overlay peers: which nodes carry each network, and telling every node
//! with a [`NetworkHost`](super::NetworkHost) whom to replicate the
//! network's broadcast traffic to. A node carries a network while at least
//! one instance placed on it is attached to it; each carrying node's peers
//! are the underlay addresses of the other carrying nodes, and a node that
//! carries nothing has none (so its entries of a network go with its last
//! instance there).
//!
//! This is the one code path of the embedded controller and the servers:
//! embedded, the one node has no peers (and, without an underlay address,
//! no VXLAN device); in a cluster each node's agent is reached through its
//! remote host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::networks::on_node;
use super::Controller;
use crate::model::{Instance, InstanceStatus, Network};
use crate::store::StoreExt;
use crate::{Error, Result};

/// How long a sync waits for another node than the one it is for: a node
/// slow to answer is left out (logged) rather than holding up a create.
const OTHER_NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// `call` on node `each` for a sync on behalf of `node`: bounded by
/// [`OTHER_NODE_TIMEOUT`] unless `each` is `node` itself.
async fn bounded<T>(
    each: &str,
    node: Option<&str>,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    if node == Some(each) {
        return call.await;
    }
    tokio::time::timeout(OTHER_NODE_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable {
                what: format!("node `{each}`"),
                source: Some(format!("no answer within {} s", OTHER_NODE_TIMEOUT.as_secs()).into()),
            })
        })
}

impl Controller {
    /// Recomputes the overlay peers of network `name` from the store and
    /// sets them on every node with a network host. Idempotent; a missing
    /// network, or one stored before VNIs, has nothing to set.
    ///
    /// Only `node`'s failures (the node an instance is being created on)
    /// are errors: another node that cannot be reached or asked is logged
    /// and left out (a node down must not stop creates elsewhere; the next
    /// sync or network reconcile catches it up). Errors:
    /// `FailedPrecondition` naming the nodes without an underlay address
    /// when the network spans several nodes, `node`'s host's errors, the
    /// store's.
    pub(super) async fn sync_overlay(&self, name: &str, node: Option<&str>) -> Result<()> {
        let _one_at_a_time = self.inner.overlay_sync.lock().await;
        let store = &self.inner.store;
        let Some(network) = store.get_object::<Network>(name).await? else {
            return Ok(());
        };
        if network.vni.is_none() {
            return Ok(());
        }
        let hosts = self.network_hosts();
        let instances = self.instances_on_network(name).await?;
        let underlays = self
            .carrier_underlays(name, &instances, &hosts, node)
            .await?;
        let underlays: BTreeMap<&str, Option<IpAddr>> =
            underlays.iter().map(|(n, u)| (n.as_str(), *u)).collect();
        if underlays.len() > 1 {
            let missing: Vec<&str> = underlays
                .iter()
                .filter(|(_, u)| u.is_none())
                .map(|(node, _)| *node)
                .collect();
            if !missing.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "network `{name}` spans nodes {} but node{} {} ha{} no underlay address \
                     to carry its overlay (start the agent with --underlay ADDR, or \
                     --advertise with an IP address)",
                    names(underlays.keys().copied()),
                    if missing.len() == 1 { "" } else { "s" },
                    names(missing.iter().copied()),
                    if missing.len() == 1 { "s" } else { "ve" },
                )));
            }
        }
        let (network, underlays) = (&network, &underlays);
        let set = futures::future::join_all(hosts.iter().filter_map(|(each, host)| {
            // For one node's change, the carriers and that node: the
            // others had no peers and still have none. A full sync
            // (`node` unset) sets every node's.
            let carries = underlays.contains_key(each.as_str());
            if node.is_some() && !carries && node != Some(each.as_str()) {
                return None;
            }
            let peers = peers_of(each, underlays);
            Some(async move {
                let set = bounded(each, node, host.set_overlay_peers(network, &peers)).await;
                (each, set)
            })
        }))
        .await;
        for (each, result) in set {
            match result {
                Ok(()) => {}
                Err(e) if Some(each.as_str()) != node => {
                    tracing::warn!(node = %each, network = %name, error = %e,
                        "setting a node's overlay peers; the next sync retries");
                }
                Err(e) => return Err(on_node(each, e)),
            }
        }
        Ok(())
    }

    /// The instances attached to network `name`, as stored.
    pub(super) async fn instances_on_network(&self, name: &str) -> Result<Vec<Instance>> {
        let (instances, _) = self
            .inner
            .store
            .list_objects::<Instance, _>(|i| i.attachments.iter().any(|a| a.network == *name))
            .await?;
        Ok(instances)
    }

    /// The underlay addresses (`None`: it has none) of the nodes carrying
    /// network `name`: those `instances` (the network's, see
    /// [`Controller::instances_on_network`]) are placed on. The nodes are
    /// asked all at once; only `node`'s failure is an error, another
    /// node's is logged and leaves it out.
    async fn carrier_underlays(
        &self,
        name: &str,
        instances: &[Instance],
        hosts: &[(String, std::sync::Arc<dyn super::NetworkHost>)],
        node: Option<&str>,
    ) -> Result<BTreeMap<String, Option<IpAddr>>> {
        let carriers: BTreeSet<&str> = instances.iter().filter_map(|i| i.node.as_deref()).collect();
        let asked = futures::future::join_all(
            hosts
                .iter()
                .filter(|(other, _)| carriers.contains(other.as_str()))
                .map(|(other, host)| async move {
                    (other, bounded(other, node, host.underlay()).await)
                }),
        )
        .await;
        let mut underlays = BTreeMap::new();
        for (other, answer) in asked {
            match answer {
                Ok(underlay) => {
                    underlays.insert(other.clone(), underlay);
                }
                Err(e) if Some(other.as_str()) != node => {
                    tracing::warn!(node = %other, network = %name, error = %e,
                        "asking a node for its underlay; it is left out of the overlay for now");
                }
                Err(e) => return Err(on_node(other, e)),
            }
        }
        Ok(underlays)
    }

    /// The overlay peers each node with a network host should have for
    /// network `name`, whose instances are `instances`, now (see
    /// [`Controller::sync_overlay`]); for `network get`. A node that cannot
    /// be asked for its underlay is left out, as a sync leaves it out.
    pub(super) async fn wanted_overlay_peers(
        &self,
        name: &str,
        instances: &[Instance],
        hosts: &[(String, std::sync::Arc<dyn super::NetworkHost>)],
    ) -> Result<BTreeMap<String, Vec<IpAddr>>> {
        let underlays = self.carrier_underlays(name, instances, hosts, None).await?;
        let underlays: BTreeMap<&str, Option<IpAddr>> =
            underlays.iter().map(|(n, u)| (n.as_str(), *u)).collect();
        Ok(hosts
            .iter()
            .map(|(each, _)| (each.clone(), peers_of(each, &underlays)))
            .collect())
    }

    /// [`Controller::sync_overlay`] for every network `instance` is
    /// attached to, failing only for its own node; called as it is
    /// created and once it is deleted. A network that another instance
    /// attaches on the same node is skipped: that node carried it before
    /// and still does, so nobody's peers change, and a create there costs
    /// no call to any other node.
    pub(super) async fn sync_overlays_of(&self, instance: &Instance) -> Result<()> {
        let Some(node) = instance.node.as_deref() else {
            return Ok(());
        };
        for attachment in &instance.attachments {
            let network = &attachment.network;
            // Only neighbours past their create count: their node joined
            // the overlay then (a sync precedes every driver create). Two
            // instances placed together both sync, which is harmless.
            let carried = self.inner.cache.read().instances_on(node).iter().any(|i| {
                i.id != instance.id
                    && matches!(
                        i.status,
                        InstanceStatus::Running
                            | InstanceStatus::Paused
                            | InstanceStatus::Stopping
                            | InstanceStatus::Stopped
                    )
                    && i.attachments.iter().any(|a| a.network == *network)
            });
            if !carried {
                self.sync_overlay(network, Some(node)).await?;
            }
        }
        Ok(())
    }

    /// Sets the overlay peers of every network `node` carries, on it and
    /// on the other carriers: the repair after its agent registers again
    /// (its VXLAN devices came back without forwarding entries) or after
    /// it was left out of an earlier sync. Failures are logged, network by
    /// network; the result is how many networks were synced.
    pub async fn sync_overlays_on(&self, node: &str) -> Result<usize> {
        let carried: BTreeSet<String> = self
            .inner
            .cache
            .read()
            .instances_on(node)
            .iter()
            .flat_map(|i| i.attachments.iter().map(|a| a.network.to_string()))
            .collect();
        let mut synced = 0;
        for network in carried {
            match self.sync_overlay(&network, Some(node)).await {
                Ok(()) => synced += 1,
                Err(e) => tracing::warn!(node, network, error = %e, "syncing overlay peers"),
            }
        }
        Ok(synced)
    }
}

/// The peers of node `each` among the carriers' `underlays`: the others'
/// addresses when it carries the network itself, none otherwise.
fn peers_of(each: &str, underlays: &BTreeMap<&str, Option<IpAddr>>) -> Vec<IpAddr> {
    if !underlays.contains_key(each) {
        return Vec::new();
    }
    underlays
        .iter()
        .filter(|(other, _)| **other != each)
        .filter_map(|(_, u)| *u)
        .collect()
}

fn names<'a>(nodes: impl Iterator<Item = &'a str>) -> String {
    nodes
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
