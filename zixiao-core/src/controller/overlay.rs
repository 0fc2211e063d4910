//! Overlays from the store: which nodes carry each network, and telling
//! every node with a [`NetworkHost`](super::NetworkHost) its
//! [`OverlayView`] of it. A node carries a network while at least one
//! instance placed on it is attached to it; each carrying node's view is
//! the underlay addresses of the other carrying nodes (whom it replicates
//! broadcast to) and every attachment of an instance placed on one of
//! them (MAC, addresses, that node's underlay address), which it
//! programs as static forwarding and neighbour entries; a node that
//! carries nothing gets an empty view (so its entries of a network go
//! with its last instance there). A sync runs wherever an attachment
//! appears, moves or goes: an instance's create (before its driver
//! plugs it in), its delete, a failover (the create on its new node),
//! a migration's switch, a node's re-registration, `network repair` and
//! the network reconcile.
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
use crate::model::{Instance, MacAddress, Network, OverlayEndpoint, OverlayView};
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
    /// Recomputes the overlay views of network `name` from the store and
    /// sets them on every node with a network host (with `node`, only on
    /// the carriers and `node`: the others' views are empty before and
    /// after). Idempotent; a missing network, or one stored before VNIs,
    /// has nothing to set.
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
        let views = overlay_views(name, &instances, &underlays)?;
        let (network, views, empty) = (&network, &views, &OverlayView::empty());
        let set = futures::future::join_all(hosts.iter().filter_map(|(each, host)| {
            // For one node's change, the carriers and that node: the
            // others had empty views and still have. A full sync (`node`
            // unset) sets every node's.
            let carries = underlays.contains_key(each.as_str());
            if node.is_some() && !carries && node != Some(each.as_str()) {
                return None;
            }
            let view = views.get(each.as_str()).unwrap_or(empty);
            Some(async move {
                let set = bounded(each, node, host.set_overlay(network, view)).await;
                (each, set)
            })
        }))
        .await;
        for (each, result) in set {
            match result {
                Ok(()) => {}
                Err(e) if Some(each.as_str()) != node => {
                    tracing::warn!(node = %each, network = %name, error = %e,
                        "setting a node's overlay; the next sync retries");
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

    /// The overlay view each carrying node should have of network `name`,
    /// whose instances are `instances`, now (see
    /// [`Controller::sync_overlay`]; a node missing from the map should
    /// have an empty one); for `network get`. A node that cannot be asked
    /// for its underlay is left out, as a sync leaves it out.
    pub(super) async fn wanted_overlays(
        &self,
        name: &str,
        instances: &[Instance],
        hosts: &[(String, std::sync::Arc<dyn super::NetworkHost>)],
    ) -> Result<BTreeMap<String, OverlayView>> {
        let underlays = self.carrier_underlays(name, instances, hosts, None).await?;
        let underlays: BTreeMap<&str, Option<IpAddr>> =
            underlays.iter().map(|(n, u)| (n.as_str(), *u)).collect();
        overlay_views(name, instances, &underlays)
    }

    /// [`Controller::sync_overlay`] for every network `instance` is
    /// attached to, failing only for its own node; called as it is
    /// created (before its driver plugs it in, so its node joins the
    /// overlay first), once it is deleted and after it moved. Every
    /// carrier of the network is told, since each programs the
    /// instance's MAC and addresses; nodes that do not carry it are not.
    pub(super) async fn sync_overlays_of(&self, instance: &Instance) -> Result<()> {
        let Some(node) = instance.node.as_deref() else {
            return Ok(());
        };
        for attachment in &instance.attachments {
            self.sync_overlay(&attachment.network, Some(node)).await?;
        }
        Ok(())
    }

    /// Sets the overlay of every network on `node` and on the other
    /// carriers: the repair after its agent registers again (its VXLAN
    /// devices came back without forwarding entries, or it holds entries
    /// of networks it stopped carrying while it was away, as after a
    /// failover) or after it was left out of an earlier sync. Failures
    /// are logged, network by network; the result is how many networks
    /// were synced.
    pub async fn sync_overlays_on(&self, node: &str) -> Result<usize> {
        let (networks, _) = self
            .inner
            .store
            .list_objects::<Network, _>(|n| n.vni.is_some())
            .await?;
        let mut synced = 0;
        for network in networks {
            match self.sync_overlay(&network.name, Some(node)).await {
                Ok(()) => synced += 1,
                Err(e) => {
                    tracing::warn!(node, network = %network.name, error = %e, "syncing overlay")
                }
            }
        }
        Ok(synced)
    }
}

/// Every carrier's view of network `name` (see the module docs) from its
/// `instances` and the carriers' `underlays`. Nobody's endpoints point at
/// a carrier without an underlay address (a sync across several nodes
/// refuses one first); an attachment whose stored MAC cannot be read is
/// left out (logged).
/// Errors: `InvalidArgument` from [`OverlayView::new`] (more entries
/// than a view holds).
fn overlay_views(
    name: &str,
    instances: &[Instance],
    underlays: &BTreeMap<&str, Option<IpAddr>>,
) -> Result<BTreeMap<String, OverlayView>> {
    let mut endpoints: BTreeMap<&str, Vec<OverlayEndpoint>> = BTreeMap::new();
    for instance in instances {
        let Some(on) = instance.node.as_deref() else {
            continue;
        };
        let Some(Some(node)) = underlays.get(on) else {
            continue;
        };
        for attachment in instance.attachments.iter().filter(|a| a.network == *name) {
            let mac = match MacAddress::try_from(attachment.mac.as_str()) {
                Ok(mac) => mac,
                Err(e) => {
                    tracing::warn!(instance = %instance.id, network = %name, error = %e,
                        "an attachment's MAC cannot be programmed");
                    continue;
                }
            };
            endpoints.entry(on).or_default().push(OverlayEndpoint {
                mac,
                addresses: attachment.addresses.iter().map(|a| a.address).collect(),
                node: *node,
            });
        }
    }
    underlays
        .keys()
        .map(|each| {
            let others = || endpoints.iter().filter(|(on, _)| *on != each);
            let view = OverlayView::new(
                peers_of(each, underlays),
                others().flat_map(|(_, e)| e.iter().cloned()).collect(),
            )?;
            Ok((each.to_string(), view))
        })
        .collect()
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
