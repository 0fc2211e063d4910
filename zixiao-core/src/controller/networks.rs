//! Networks on the controller: create, list, get and delete [`Network`]s, and
//! the hooks that give an instance its addresses when it is created and take
//! them back when it is deleted.
//!
//! Two small traits keep this crate free of any networking code:
//! [`AddressAllocator`] (IPAM, kept in the store; `zixiao-net` has one) and
//! [`NetworkHost`] (bridges and rules on a node).
//!
//! Every store has an [`InstallationId`] ([`Controller::installation`]),
//! made once by whoever needs it first; networks and attachments carry it,
//! their host names are derived from it, and a node only changes or
//! removes host objects marked with it, so two installations on one host
//! never touch each other's.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::Controller;
use crate::model::{
    mac_address, CreateNetwork, InstallationId, Instance, InstanceStatus, InstanceType,
    InterfaceKind, InterfaceName, IpConfig, Network, NetworkAttachment, NetworkPart, NetworkStatus,
    NodeNetworkState, OverlayView, Vni,
};
use crate::store::{put_object, Precondition, StoreError, StoreExt, StoredObject, Txn};
use crate::{Error, Result};

/// Key prefix of network objects.
pub const NETWORKS_PREFIX: &str = "/zixiao/networks/";
/// A key every network create rewrites with compare-and-swap, so two
/// controllers checking for overlapping subnets at once cannot both win.
const NETWORKS_GUARD: &str = "/zixiao/network-guard";
/// The key holding the store's [`InstallationId`].
const INSTALLATION_KEY: &str = "/zixiao/installation/id";

impl StoredObject for Network {
    const PREFIX: &'static str = NETWORKS_PREFIX;
    const KIND: &'static str = "network";

    fn id(&self) -> &str {
        self.name.as_str()
    }
    fn set_revision(&mut self, revision: crate::store::Revision) {
        self.revision = revision;
    }
    fn revision(&self) -> crate::store::Revision {
        self.revision
    }
}

/// Hands out addresses of a network's subnets (IPAM). Implementations keep
/// their allocations in the [`Store`](crate::Store) with compare-and-swap, so
/// two controllers never hand out one address twice.
#[async_trait]
pub trait AddressAllocator: Send + Sync + Debug {
    /// Reserves one address of every subnet of `network` for `owner` (an
    /// instance id). Called when an instance that joins `network` is
    /// created. Idempotent: the same owner gets the same addresses back.
    /// `network` must be as stored: the allocation only lands while the
    /// stored network is unchanged. Errors: `ResourceExhausted` naming the
    /// pool, `FailedPrecondition` (the network is being deleted, or was
    /// never stored), `Unavailable` (store).
    async fn allocate(&self, network: &Network, owner: &str) -> Result<Vec<IpConfig>>;

    /// Frees whatever `owner` holds on network `network`. Called when the
    /// instance is deleted. Idempotent: releasing nothing is not an error.
    async fn release(&self, network: &str, owner: &str) -> Result<()>;

    /// The owners holding addresses on network `network`, in owner order.
    async fn owners(&self, network: &str) -> Result<Vec<String>>;

    /// Adds to `txn` a check that `owner`'s allocation on `network` still
    /// stands as it is now, so a write made on the strength of it (the
    /// instance's record, holding its addresses) lands only while it does:
    /// a reconcile that released it as an orphan in between makes the
    /// write fail instead. Errors: `Conflict` (`owner` holds nothing there
    /// now), the store's errors.
    async fn guard(&self, txn: Txn, network: &str, owner: &str) -> Result<Txn>;
}

/// Sets up a network on one node: its bridge, gateway addresses, NAT and
/// isolation rules. Every call is idempotent. Only host objects marked with
/// the network's installation (see [`HostMark`](crate::model::HostMark))
/// are ever changed or removed.
#[async_trait]
pub trait NetworkHost: Send + Sync + Debug {
    /// Makes `network` exist on the node as described (created if missing,
    /// its rules replaced). Called when a network is created and by
    /// [`NetworkHost::reconcile`]. Errors: `InvalidArgument` naming
    /// `subnets[i]` (a subnet that breaks the rules of
    /// [`Network::check_subnets`]), `FailedPrecondition` (a subnet overlaps
    /// an address or route of the node; a link of the bridge's name exists
    /// and is not this installation's; a network stored before installation
    /// ids), `Unsupported` (no privileges, no nft), `Unavailable`,
    /// `Internal`. On error nothing of `network` is left that was not there
    /// before.
    async fn ensure_network(&self, network: &Network) -> Result<()>;

    /// Removes everything of `network` from the node; a missing piece is
    /// not an error. Called when a network is deleted. Errors:
    /// `FailedPrecondition` (its bridge's name is taken by a link that is
    /// not this installation's, or the network was stored before
    /// installation ids and its objects are still there: they are named and
    /// left untouched), `Unsupported`, `Internal`.
    async fn remove_network(&self, network: &Network) -> Result<()>;

    /// What of Zixiao's the node holds now (devices, rule tables,
    /// namespaces, of every installation on the node: `reconcile` picks its
    /// own), each as `kind name`, to hand to [`NetworkHost::reconcile`].
    /// Taken *before* the store is read: then everything in it belongs to a
    /// network or instance stored before that read, and what is plumbed
    /// for an instance created since is not in it, so a reconcile never
    /// removes it. Errors: `Unsupported`, `Unavailable`, `Internal`.
    async fn inventory(&self) -> Result<Vec<String>>;

    /// After a restart: ensures `networks`, and removes each object of
    /// `seen` (an [`inventory`](NetworkHost::inventory) taken before
    /// `networks` and `instances` were read) that neither `networks` nor the
    /// attachments of `instances` name. Only objects marked as
    /// `installation`'s (the caller's store's) are removed: objects that are
    /// not Zixiao's, or are another installation's, are never touched.
    /// Returns what it removed, for people. Errors: those of
    /// [`NetworkHost::ensure_network`].
    async fn reconcile(
        &self,
        installation: &InstallationId,
        networks: &[Network],
        instances: &[Instance],
        seen: &[String],
    ) -> Result<Vec<String>>;

    /// The node's address between nodes (its underlay), which the other
    /// nodes carrying a network send its overlay traffic to; `None` when it
    /// has none (it cannot carry a network that spans nodes). Called when
    /// the controller computes a network's overlay peers. Errors:
    /// `Unavailable` (the node's agent).
    async fn underlay(&self) -> Result<Option<IpAddr>>;

    /// Makes the overlay of `network` on the node exactly `view`: its
    /// replication entries to the other carrying nodes (`view.peers()`),
    /// and for every attachment on those nodes (`view.endpoints()`) a
    /// static forwarding entry (its MAC through the tunnel to its node)
    /// and a neighbour entry per address; entries of the network's own
    /// devices that `view` does not name are removed. Called whenever
    /// the view may have changed (an instance on the network is created,
    /// moved or removed; a repair or reconcile). Idempotent. Errors:
    /// `FailedPrecondition` (a non-empty view for a node without an
    /// underlay, or for a network stored before VNIs; the network is not
    /// set up on the node), `InvalidArgument` (its own address among the
    /// peers), `Unavailable`, `Internal`.
    async fn set_overlay(&self, network: &Network, view: &OverlayView) -> Result<()>;

    /// What of `network` the node holds, part by part, judged against
    /// what it should hold: `view` (its overlay, as
    /// [`NetworkHost::set_overlay`] would set it now) and `attachments`
    /// (those of the instances running on the node that join the
    /// network). Called by `network get`. Read-only. Errors:
    /// `Unsupported` (the default: a host that cannot tell),
    /// `FailedPrecondition` (a network stored before installation ids),
    /// `Unavailable`, `Internal`.
    async fn inspect(
        &self,
        network: &Network,
        view: &OverlayView,
        attachments: &[NetworkAttachment],
    ) -> Result<Vec<NetworkPart>> {
        let _ = (network, view, attachments);
        Err(Error::Unsupported(
            "this node cannot tell the state of its networks".to_owned(),
        ))
    }

    /// Puts `network` back as it should be on the node (what
    /// [`NetworkHost::ensure_network`] makes, and the host links of
    /// `attachments` on its bridge), leaving the overlay (peers and forwarding entries) to the
    /// caller. Returns what it changed, for people. Called by `network
    /// repair`. Idempotent. The default is `ensure_network`, which reports
    /// nothing. Errors: those of `ensure_network`.
    async fn repair(
        &self,
        network: &Network,
        attachments: &[NetworkAttachment],
    ) -> Result<Vec<String>> {
        let _ = attachments;
        self.ensure_network(network).await.map(|()| Vec::new())
    }
}

/// What [`Controller::reconcile_networks`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkReconcileReport {
    /// Host objects removed, per node: `node: what`.
    pub removed: Vec<String>,
    /// Allocations released because their instance no longer exists: `network/owner`.
    pub released: Vec<String>,
}

impl Controller {
    /// The id of this controller's store's installation, made (random) and
    /// stored at `/zixiao/installation/id` the first time any controller of the
    /// store asks; every controller and agent on the store reads the same.
    /// Errors: the store's (`Internal` for a stored id that is not one).
    pub async fn installation(&self) -> Result<InstallationId> {
        let store = &self.inner.store;
        for _ in 0..self.options().max_conflict_retries {
            if let Some(kv) = store.get(INSTALLATION_KEY).await? {
                let text = String::from_utf8_lossy(&kv.value);
                return InstallationId::try_from(text.as_ref()).map_err(|e| {
                    StoreError::Corrupt {
                        key: kv.key.clone(),
                        source: Box::new(e),
                    }
                    .into()
                });
            }
            let fresh = InstallationId::generate();
            let txn = Txn::new().put(
                INSTALLATION_KEY,
                fresh.as_str().as_bytes().to_vec(),
                Precondition::Absent,
            );
            match store.commit(txn).await {
                Ok(_) => return Ok(fresh),
                // Another controller made it first: read theirs.
                Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("installation id", INSTALLATION_KEY))
    }

    fn allocator(&self) -> Result<&Arc<dyn AddressAllocator>> {
        self.inner.addresses.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "this controller has no address allocator; networks need one (zixiao-net's StoreIpam)"
                    .to_owned(),
            )
        })
    }

    pub(super) fn network_hosts(&self) -> Vec<(String, Arc<dyn NetworkHost>)> {
        self.inner
            .network_hosts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(node, host)| (node.clone(), host.clone()))
            .collect()
    }

    /// Validates `request`, stores the network and sets it up on every node
    /// with a network host. Errors: `InvalidArgument` naming the field (also
    /// a subnet that overlaps another network's), `AlreadyExists`,
    /// `Unsupported` (no allocator, no privileges on a node), the store's and
    /// the hosts' errors. On error nothing is stored and nothing is left on a node.
    pub async fn create_network(&self, request: CreateNetwork) -> Result<Network> {
        let installation = self.installation().await?;
        let explicit_vni = request.vni.is_some();
        let mut network = request.validate(&installation, self.now())?;
        self.allocator()?;
        let store = &self.inner.store;
        let mut created = None;
        for _ in 0..self.options().max_conflict_retries {
            let guard = store.get(NETWORKS_GUARD).await?;
            let (existing, _) = store.list_objects::<Network, _>(|_| true).await?;
            if existing.iter().any(|n| n.name == network.name) {
                return Err(already_exists(&network.name));
            }
            check_overlaps(&network, &existing)?;
            network.vni = free_vni(&network, &existing, explicit_vni)?;
            let guard_precondition = match &guard {
                Some(kv) => Precondition::Revision(kv.mod_revision),
                None => Precondition::Absent,
            };
            let txn = put_object(Txn::new(), &network).put(
                NETWORKS_GUARD,
                network.name.as_str().as_bytes().to_vec(),
                guard_precondition,
            );
            match store.commit(txn).await {
                Ok(revision) => {
                    network.revision = revision;
                    created = Some(network.clone());
                    break;
                }
                Err(StoreError::AlreadyExists(key)) if key == Network::key_for(&network.name) => {
                    return Err(already_exists(&network.name))
                }
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_)) => {
                    tokio::task::yield_now().await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        let network = created.ok_or_else(|| self.too_many_conflicts("network", &network.name))?;
        let hosts = self.network_hosts();
        for (i, (node, host)) in hosts.iter().enumerate() {
            if let Err(e) = host.ensure_network(&network).await {
                // Nothing half-created: undo the nodes done so far and the record.
                for (_, done) in hosts.iter().take(i + 1) {
                    let _ = done.remove_network(&network).await;
                }
                let _ = store
                    .commit(Txn::new().delete(
                        Network::key_for(&network.name),
                        Precondition::Revision(network.revision),
                    ))
                    .await;
                return Err(on_node(node, e));
            }
        }
        Ok(network)
    }

    /// The network named `name`. Errors: `NotFound`.
    pub async fn get_network(&self, name: &str) -> Result<Network> {
        self.inner
            .store
            .get_object::<Network>(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("network `{name}`")))
    }

    /// Every network, in name order.
    pub async fn list_networks(&self) -> Result<Vec<Network>> {
        let (networks, _) = self
            .inner
            .store
            .list_objects::<Network, _>(|_| true)
            .await?;
        Ok(networks)
    }

    /// Removes network `name` from every node and from the store. A node
    /// that cannot be reached is left to remove it when its agent
    /// registers again. Errors: `NotFound`, `FailedPrecondition` (instances
    /// still join it: they are named), the hosts' other errors (the
    /// network then stays, usable), the store's.
    pub async fn delete_network(&self, name: &str) -> Result<()> {
        let allocator = self.allocator()?.clone();
        // Mark it first: from here on no allocation on it can land (they
        // check the network's revision), so the check below cannot miss an
        // instance that joins it concurrently.
        let network = self.mark_network_deleting(name, true).await?;
        let (users, _) = self
            .inner
            .store
            .list_objects::<Instance, _>(|i| i.spec.networks.iter().any(|n| n == name))
            .await?;
        let mut holders: Vec<String> = users.into_iter().map(|i| i.name).collect();
        if holders.is_empty() {
            holders = allocator.owners(name).await?;
        }
        if !holders.is_empty() {
            // Still in use: it stays, open to new instances again.
            self.mark_network_deleting(name, false).await?;
            return Err(Error::FailedPrecondition(format!(
                "network `{name}` is in use by {}; delete them first",
                holders.join(", ")
            )));
        }
        for (node, host) in self.network_hosts() {
            match host.remove_network(&network).await {
                Ok(()) => {}
                // A node that cannot be reached now (down, cut off) removes
                // it itself: when its agent registers again, the reconcile
                // removes every object of ours the store no longer names.
                Err(e) if e.kind() == crate::ErrorKind::Unavailable => {
                    tracing::warn!(
                        network = %name,
                        %node,
                        error = %e,
                        "node unreachable: it removes the network when it is back"
                    );
                }
                Err(e) => {
                    // It stays, open to new instances again, rather than
                    // marked as deleting for good.
                    if let Err(unmark) = self.mark_network_deleting(name, false).await {
                        tracing::warn!(network = %name, error = %unmark, "clearing the deleting mark");
                    }
                    return Err(on_node(&node, e));
                }
            }
        }
        match self
            .inner
            .store
            .commit(Txn::new().delete(Network::key_for(name), Precondition::None))
            .await
        {
            Ok(_) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// Sets or clears network `name`'s deleting mark; returns the network as
    /// stored after. Errors: `NotFound`, the store's.
    async fn mark_network_deleting(&self, name: &str, deleting: bool) -> Result<Network> {
        for _ in 0..self.options().max_conflict_retries {
            let mut network = self.get_network(name).await?;
            if network.deleting == deleting {
                return Ok(network);
            }
            network.deleting = deleting;
            match self
                .inner
                .store
                .commit(put_object(Txn::new(), &network))
                .await
            {
                Ok(revision) => {
                    network.revision = revision;
                    return Ok(network);
                }
                Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(StoreError::NotFound(_)) => {
                    return Err(Error::not_found(format!("network `{name}`")))
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("network", name))
    }

    /// Allocates addresses on every network `instance` joins and records the
    /// attachments on it (not stored yet). Errors: `InvalidArgument` (a
    /// network that does not exist, field `spec.networks[i]`),
    /// `ResourceExhausted`, `FailedPrecondition` (the network is being
    /// deleted), `Unsupported` (no allocator). On error nothing stays allocated.
    pub(super) async fn attach_networks(&self, instance: &mut Instance) -> Result<()> {
        if instance.spec.networks.is_empty() {
            return Ok(());
        }
        // Containers get a veth pair, VMs and microVMs a TAP device; the
        // driver plumbs it (and refuses with `Unsupported` if it cannot).
        let kind = match instance.spec.instance_type {
            InstanceType::Container => InterfaceKind::Veth,
            _ => InterfaceKind::Tap,
        };
        let allocator = self.allocator()?.clone();
        let mut attachments = Vec::new();
        for (i, name) in instance.spec.networks.iter().enumerate() {
            let result = async {
                let network = self
                    .inner
                    .store
                    .get_object::<Network>(name)
                    .await?
                    .ok_or_else(|| {
                        Error::invalid(
                            format!("spec.networks[{i}]"),
                            format!("network `{name}` does not exist; create it first"),
                        )
                    })?;
                // A network stored before installation ids is joined by no one.
                let mark = network.mark()?;
                let addresses = allocator.allocate(&network, &instance.id).await?;
                Ok::<_, Error>(NetworkAttachment {
                    host_interface: InterfaceName::of(
                        kind,
                        mark.installation(),
                        &instance.id,
                        &network.name,
                    ),
                    network: network.name.clone(),
                    installation: Some(mark.installation().clone()),
                    interface: format!("eth{i}"),
                    bridge: network.bridge.clone(),
                    mac: mac_address(&instance.id, name),
                    addresses,
                })
            }
            .await;
            match result {
                Ok(attachment) => attachments.push(attachment),
                Err(e) => {
                    for done in &attachments {
                        let _ = allocator.release(&done.network, &instance.id).await;
                    }
                    return Err(e);
                }
            }
        }
        instance.attachments = attachments;
        Ok(())
    }

    /// Adds to `txn` a check that each of `instance`'s allocations still
    /// stands (see [`AddressAllocator::guard`]).
    pub(super) async fn guard_networks(&self, mut txn: Txn, instance: &Instance) -> Result<Txn> {
        if instance.attachments.is_empty() {
            return Ok(txn);
        }
        let allocator = self.allocator()?;
        for attachment in &instance.attachments {
            txn = allocator
                .guard(txn, &attachment.network, &instance.id)
                .await?;
        }
        Ok(txn)
    }

    /// Frees the addresses of a deleted instance. Idempotent.
    pub(super) async fn release_networks(&self, instance: &Instance) -> Result<()> {
        if instance.spec.networks.is_empty() {
            return Ok(());
        }
        let allocator = self.allocator()?;
        for network in &instance.spec.networks {
            allocator.release(network, &instance.id).await?;
        }
        Ok(())
    }

    /// Network `name` and its state on every node that sets up networks
    /// (see [`NetworkHost::inspect`]): the answer of `network get`. A node
    /// that cannot be asked gets its error in its entry, not the call's.
    /// Read-only. Errors: `NotFound`, the store's.
    pub async fn network_status(&self, name: &str) -> Result<NetworkStatus> {
        let network = self.get_network(name).await?;
        let instances = self.instances_on_network(name).await?;
        self.status_of(&network, &instances).await
    }

    /// `network`'s state on every node that sets up networks, judged
    /// against `instances` (the network's, as stored).
    async fn status_of(&self, network: &Network, instances: &[Instance]) -> Result<NetworkStatus> {
        let name = network.name.as_str();
        let hosts = self.network_hosts();
        let views = self.wanted_overlays(name, instances, &hosts).await?;
        let empty = OverlayView::empty();
        let attachments = running_attachments(name, instances);
        let nodes = futures::future::join_all(hosts.iter().map(|(node, host)| {
            let view = views.get(node).unwrap_or(&empty);
            let attachments = attachments_on(&attachments, node);
            async move {
                let asked = host.inspect(network, view, &attachments);
                node_state(node, bounded_call(asked).await)
            }
        }))
        .await;
        Ok(NetworkStatus {
            network: network.clone(),
            nodes,
            repaired: Vec::new(),
        })
    }

    /// Puts network `name` back as the store says on every node that sets
    /// up networks ([`NetworkHost::repair`]), then sets its overlay (peers, forwarding and neighbour entries)
    /// again, and answers as [`Controller::network_status`] with what was
    /// mended. A node that cannot be repaired gets its error in its entry.
    /// Idempotent. Errors: `NotFound`, `FailedPrecondition` (the network
    /// is being deleted), the store's.
    pub async fn repair_network(&self, name: &str) -> Result<NetworkStatus> {
        let network = self.get_network(name).await?;
        if network.deleting {
            return Err(Error::FailedPrecondition(format!(
                "network `{name}` is being deleted"
            )));
        }
        let instances = self.instances_on_network(name).await?;
        let attachments = running_attachments(name, &instances);
        let hosts = self.network_hosts();
        let network = &network;
        // Every node at once, each bounded: one slow node holds up nobody.
        let answers = futures::future::join_all(hosts.iter().map(|(node, host)| {
            let mine = attachments_on(&attachments, node);
            async move { (node, bounded_call(host.repair(network, &mine)).await) }
        }))
        .await;
        let mut repaired = Vec::new();
        let mut failed = Vec::new();
        for (node, answer) in answers {
            match answer {
                Ok(done) => repaired.extend(done.into_iter().map(|d| format!("{node}: {d}"))),
                Err(e) => failed.push((node.clone(), e)),
            }
        }
        if let Err(e) = self.sync_overlay(name, None).await {
            tracing::warn!(network = %name, error = %e, "setting the overlay after a repair");
        }
        // The store is as it was: only the nodes changed.
        let mut status = self.status_of(network, &instances).await?;
        for (node, error) in failed {
            if let Some(entry) = status.nodes.iter_mut().find(|n| n.node == node) {
                entry.error = Some(format!("repair failed: {}", error.chain()));
            }
        }
        status.repaired = repaired;
        Ok(status)
    }

    /// After a crash or restart: releases allocations whose instance is gone,
    /// ensures every network on every node and removes host objects nothing
    /// in the store names.
    pub async fn reconcile_networks(&self) -> Result<NetworkReconcileReport> {
        let mut report = NetworkReconcileReport::default();
        let installation = self.installation().await?;
        // What the nodes hold, before the store is read (see `inventory`).
        let mut inventories = Vec::new();
        for (node, host) in self.network_hosts() {
            let seen = host.inventory().await.map_err(|e| on_node(&node, e))?;
            inventories.push((node, host, seen));
        }
        let networks = self.list_networks().await?;
        let (instances, _) = self
            .inner
            .store
            .list_objects::<Instance, _>(|_| true)
            .await?;
        if let Some(allocator) = &self.inner.addresses {
            for network in &networks {
                for owner in allocator.owners(&network.name).await? {
                    if !instances.iter().any(|i| i.id == owner) {
                        allocator.release(&network.name, &owner).await?;
                        report.released.push(format!("{}/{owner}", network.name));
                    }
                }
            }
        }
        for (node, host, seen) in inventories {
            let removed = host
                .reconcile(&installation, &networks, &instances, &seen)
                .await
                .map_err(|e| on_node(&node, e))?;
            report
                .removed
                .extend(removed.into_iter().map(|r| format!("{node}: {r}")));
        }
        // After a restart the devices are back but their peers are not.
        for network in &networks {
            if let Err(e) = self.sync_overlay(&network.name, None).await {
                tracing::warn!(network = %network.name, error = %e, "updating the overlay");
            }
        }
        Ok(report)
    }
}

fn already_exists(name: &str) -> Error {
    Error::AlreadyExists {
        what: format!("network `{name}`"),
    }
}

fn check_overlaps(network: &Network, existing: &[Network]) -> Result<()> {
    if let Some(other) = existing.iter().find(|n| n.bridge == network.bridge) {
        return Err(Error::invalid(
            "name",
            format!(
                "its bridge name {} is taken by network `{}`; pick another name",
                network.bridge, other.name
            ),
        ));
    }
    for (i, subnet) in network.subnets.iter().enumerate() {
        for other in existing {
            if let Some(clash) = other.subnets.iter().find(|s| s.cidr.overlaps(&subnet.cidr)) {
                return Err(Error::invalid(
                    format!("subnets[{i}]"),
                    format!(
                        "{} overlaps {} of network `{}`",
                        subnet.cidr, clash.cidr, other.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The VNI `network` gets among `existing` (the guard key makes the check
/// and the write one step): its own when no other network holds it; when
/// one does, `AlreadyExists` naming the holder for a VNI the caller asked
/// for, the next free one for a derived VNI (a hash may collide).
fn free_vni(network: &Network, existing: &[Network], explicit: bool) -> Result<Option<Vni>> {
    let Some(mut vni) = network.vni else {
        return Ok(None);
    };
    let holder = |vni: Vni| existing.iter().find(|n| n.vni == Some(vni));
    if explicit {
        if let Some(other) = holder(vni) {
            return Err(Error::AlreadyExists {
                what: format!("VNI {vni} (held by network `{}`)", other.name),
            });
        }
        return Ok(Some(vni));
    }
    // At most one step per stored network: then one is free.
    for _ in 0..=existing.len() {
        if holder(vni).is_none() {
            return Ok(Some(vni));
        }
        vni = vni.next();
    }
    Err(Error::ResourceExhausted(format!(
        "no free VNI near {}",
        network.vni.map_or(0, Vni::get)
    )))
}

/// Names the node in a host's error, keeping its kind.
/// How long `network get` and `network repair` wait for one node.
const NODE_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `call` to one node, `Unavailable` when it takes over [`NODE_CALL_TIMEOUT`].
async fn bounded_call<T>(call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(NODE_CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable {
                what: "the node".to_owned(),
                source: Some(format!("no answer within {} s", NODE_CALL_TIMEOUT.as_secs()).into()),
            })
        })
}

/// The attachments to network `name` of those of `instances` running (or
/// paused) on a node, with their node.
fn running_attachments(name: &str, instances: &[Instance]) -> Vec<(String, NetworkAttachment)> {
    instances
        .iter()
        .filter(|i| matches!(i.status, InstanceStatus::Running | InstanceStatus::Paused))
        .filter_map(|i| Some((i.node.as_deref()?, &i.attachments)))
        .flat_map(|(node, attachments)| {
            attachments
                .iter()
                .filter(|a| a.network == *name)
                .map(move |a| (node.to_owned(), a.clone()))
        })
        .collect()
}

/// The attachments of `attachments` (with their nodes) on node `node`.
fn attachments_on(
    attachments: &[(String, NetworkAttachment)],
    node: &str,
) -> Vec<NetworkAttachment> {
    attachments
        .iter()
        .filter(|(on, _)| on == node)
        .map(|(_, a)| a.clone())
        .collect()
}

/// Node `node`'s entry of a [`NetworkStatus`] from what it answered.
fn node_state(node: &str, answer: Result<Vec<NetworkPart>>) -> NodeNetworkState {
    match answer {
        Ok(parts) => NodeNetworkState {
            node: node.to_owned(),
            parts,
            error: None,
        },
        Err(e) => NodeNetworkState {
            node: node.to_owned(),
            parts: Vec::new(),
            error: Some(e.chain()),
        },
    }
}

pub(super) fn on_node(node: &str, error: Error) -> Error {
    match error {
        Error::Unsupported(m) => Error::Unsupported(format!("on node `{node}`: {m}")),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("on node `{node}`: {m}")),
        Error::Internal(m) => Error::Internal(format!("on node `{node}`: {m}")),
        other => other,
    }
}
