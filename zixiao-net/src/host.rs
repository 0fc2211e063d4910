//! [`LinuxNetwork`]: networks on one Linux node through netlink
//! (`rtnetlink`) and nftables. It creates a network's bridge with the
//! gateway addresses, its rules, the veth pairs and namespaces of containers
//! (see `endpoint`), starts its DHCP responder (see `dhcp`), and after a
//! restart restarts dead responders and removes every `zx…` device, table,
//! namespace and DHCP responder or host entry of its installation that the
//! store no longer names. It
//! only ever changes or removes links marked as the network's installation's
//! (see `links`).

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use zixiao_core::model::{
    BridgeName, HostMark, InstallationId, Instance, InterfaceName, Network, NetworkAttachment,
    NetworkPart, OverlayView,
};
use zixiao_core::{Error, NetworkHost, Result};

use crate::dhcp::{DHCP, DHCP_HOST};
use crate::endpoint::NetnsName;
use crate::links::{self, LinkKind, LinkName};
use crate::overlay::{Underlay, VxlanName};
use crate::ports::PortsTable;
use crate::{nft, overlap};

/// Where container namespaces are pinned by default.
pub const DEFAULT_NETNS_DIR: &str = "/run/zixiao/netns";
/// Prefix of the namespace files of containers.
pub const NETNS_PREFIX: &str = "zx-";

/// Networks on this node; see the module docs.
///
/// Its netlink socket and the `nft` processes it runs belong to the network
/// namespace of the thread that called [`LinuxNetwork::connect`] (the host's,
/// or a test's own namespace).
#[derive(Debug, Clone)]
pub struct LinuxNetwork {
    pub(crate) handle: Handle,
    pub(crate) netns_dir: PathBuf,
    /// The network namespace of the netlink socket, where TAP devices are
    /// made and their monitors started (see `tap`); `None` when it could
    /// not be opened (no `/proc`): then the caller's own.
    pub(crate) netns: Option<Arc<File>>,
    /// This node's address between nodes; `None`: no overlay (see `overlay`).
    pub(crate) underlay: Option<Underlay>,
    /// The DHCP responder's program; `None`: the node's `dnsmasq` (see `dhcp`).
    pub(crate) dnsmasq: Option<PathBuf>,
}

impl LinuxNetwork {
    /// Opens a netlink connection in the calling thread's network namespace;
    /// containers' namespaces are pinned under `netns_dir`. Must be called
    /// inside a tokio runtime. Errors: `Unavailable` (no netlink socket).
    pub fn connect(netns_dir: impl Into<PathBuf>) -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Internal(format!("opening a netlink socket: {e}")))?;
        tokio::spawn(connection);
        Ok(LinuxNetwork {
            handle,
            netns_dir: netns_dir.into(),
            netns: File::open("/proc/thread-self/ns/net").ok().map(Arc::new),
            underlay: None,
            dnsmasq: None,
        })
    }

    /// Where container namespaces are pinned.
    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    /// The index of link `name`, if it exists (whoever's it is).
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        link_index(&self.handle, name).await
    }

    /// The names of every link whose name starts with `prefix` (whoever's they are).
    pub async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("listing links", e))?;
        Ok(links
            .iter()
            .filter_map(link_name)
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    /// Deletes link `name` if it is a Zixiao link marked `mark`; a missing
    /// link is not an error. Errors: `InvalidArgument` (`name` is not a
    /// Zixiao link name), `FailedPrecondition` (the link is not `mark`'s:
    /// it is left untouched), netlink's.
    pub async fn delete_link(&self, name: &str, mark: &HostMark) -> Result<()> {
        let link = LinkName::parse(name).ok_or_else(|| {
            Error::invalid(
                "link",
                format!("`{}` is not a Zixiao link name", name.escape_debug()),
            )
        })?;
        links::delete_owned(&self.handle, link.as_str(), link.kind(), mark).await
    }

    /// Checks that the bridge `attachment` joins is on this node and is its
    /// network's, for a runtime that plugs the device in itself (libvirt).
    /// Errors: `FailedPrecondition` (the bridge is missing: the network is
    /// not set up here; or a link of its name is not the network's; or the
    /// attachment was recorded before installation ids), netlink's.
    pub async fn check_bridge(&self, attachment: &NetworkAttachment) -> Result<()> {
        self.bridge_of(attachment).await.map(|_| ())
    }

    /// The MTU a NIC on the bridge `attachment` joins must use (the
    /// bridge's: less than the default under an overlay, see `overlay`),
    /// for a runtime that makes the NIC itself (libvirt's `<mtu>`). The
    /// bridge is checked as in [`LinuxNetwork::check_bridge`]. Errors: as
    /// `check_bridge`.
    pub async fn bridge_mtu(&self, attachment: &NetworkAttachment) -> Result<Option<u32>> {
        let bridge = self.bridge_of(attachment).await?;
        crate::overlay::link_mtu(&self.handle, bridge).await
    }

    /// The index of the bridge `attachment` joins, checked as in
    /// [`LinuxNetwork::check_bridge`].
    pub(crate) async fn bridge_of(&self, attachment: &NetworkAttachment) -> Result<u32> {
        attachment.check_bridge().map_err(|e| e.at("bridge"))?;
        let mark = attachment.mark()?;
        links::owned(&self.handle, &attachment.bridge, LinkKind::Bridge, &mark)
            .await?
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "network `{}` is not set up on this node (bridge {} is missing)",
                    attachment.network, attachment.bridge
                ))
            })
    }

    /// Creates the bridge of `network` unless it exists (`existing`, checked
    /// ours), gives it the gateway addresses and brings it up.
    async fn ensure_bridge(
        &self,
        network: &Network,
        mark: &HostMark,
        existing: Option<u32>,
    ) -> Result<u32> {
        let bridge = &network.bridge;
        let index = match existing {
            Some(index) => index,
            None => {
                let added = self
                    .handle
                    .link()
                    // Made with the gateway MAC (see `overlay`): set later, it
                    // would drop the new bridge's carrier a moment after.
                    .add(
                        LinkBridge::new(bridge)
                            .address(network.gateway_mac().to_vec())
                            .build(),
                    )
                    .execute()
                    .await;
                match added {
                    Ok(()) => {
                        let index = self.link_index(bridge).await?.ok_or_else(|| {
                            Error::Internal(format!(
                                "bridge {bridge} vanished right after creation"
                            ))
                        })?;
                        links::mark_new(&self.handle, index, bridge, mark).await?;
                        index
                    }
                    // Made meanwhile: used only if it is ours.
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {
                        links::owned(&self.handle, bridge, LinkKind::Bridge, mark)
                            .await?
                            .ok_or_else(|| {
                                Error::Internal(format!("bridge {bridge} came and went"))
                            })?
                    }
                    Err(e) => return Err(netlink_error(&format!("creating bridge {bridge}"), e)),
                }
            }
        };
        if network.subnets.iter().any(|s| !s.cidr.is_ipv4()) {
            no_dad(bridge.as_str());
        }
        for subnet in &network.subnets {
            add_address(
                &self.handle,
                index,
                subnet.gateway,
                subnet.cidr.prefix_len(),
            )
            .replace()
            .execute()
            .await
            .map_err(|e| netlink_error(&format!("adding {} to {bridge}", subnet.gateway), e))?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| netlink_error(&format!("bringing {bridge} up"), e))?;
        Ok(index)
    }

    async fn apply_network(
        &self,
        network: &Network,
        mark: &HostMark,
        existing: Option<u32>,
    ) -> Result<()> {
        let bridge = self.ensure_bridge(network, mark, existing).await?;
        self.ensure_overlay(network, mark, bridge).await?;
        if network.nat {
            // Masquerading needs forwarding in this namespace.
            for (path, family) in [
                ("/proc/sys/net/ipv4/ip_forward", true),
                ("/proc/sys/net/ipv6/conf/all/forwarding", false),
            ] {
                if network.subnets.iter().any(|s| s.cidr.is_ipv4() == family) {
                    std::fs::write(path, "1").map_err(|e| {
                        Error::Unsupported(format!("cannot enable forwarding ({path}): {e}"))
                    })?;
                }
            }
        }
        nft::apply(&nft::ruleset(network, mark)).await
    }

    /// For a network stored before installation ids, whose objects cannot be
    /// told apart from another installation's: Ok once its bridge and table
    /// are gone (removed by hand), `refusal` (naming them) while they are not.
    async fn network_from_before_installations_gone(
        &self,
        network: &Network,
        refusal: Error,
    ) -> Result<()> {
        let table = network.nft_table();
        if nft::our_tables().await?.contains(&table) {
            return Err(refusal);
        }
        links::absent_or(&self.handle, &network.bridge, refusal).await
    }
}

#[async_trait::async_trait]
impl NetworkHost for LinuxNetwork {
    async fn ensure_network(&self, network: &Network) -> Result<()> {
        // Everything is checked before anything is touched (a network built
        // in code, not decoded, is checked as a decoded one is).
        network.check_bridge().map_err(|e| e.at("bridge"))?;
        let mark = network.mark()?;
        network.check_subnets()?;
        let existing = links::owned(&self.handle, &network.bridge, LinkKind::Bridge, &mark).await?;
        overlap::check(&self.handle, network, existing).await?;
        let result = self.apply_network(network, &mark, existing).await;
        if result.is_err() && existing.is_none() {
            // Nothing half-created.
            let _ = self.remove_network(network).await;
        }
        result?;
        // DHCP is a service on top: a node that cannot serve it still
        // carries the network (`ensure_dhcp` logs why).
        self.ensure_dhcp(network).await.map(drop)
    }

    async fn remove_network(&self, network: &Network) -> Result<()> {
        network.check_bridge().map_err(|e| e.at("bridge"))?;
        let mark = match network.mark() {
            Ok(mark) => mark,
            Err(refusal) => {
                return self
                    .network_from_before_installations_gone(network, refusal)
                    .await
            }
        };
        // Refused before anything is removed when the bridge is not ours.
        let bridge = links::owned(&self.handle, &network.bridge, LinkKind::Bridge, &mark).await?;
        self.remove_dhcp(mark.installation(), &network.bridge)?;
        self.remove_overlay(network, &mark).await?;
        nft::delete_table(&mark).await?;
        match bridge {
            Some(index) => links::delete_index(&self.handle, index, &network.bridge).await,
            None => Ok(()),
        }
    }

    async fn inventory(&self) -> Result<Vec<String>> {
        let mut held = Vec::new();
        for table in nft::our_tables().await? {
            held.push(format!("{TABLE} {table}"));
        }
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("listing links", e))?;
        for link in links.iter().filter_map(link_name) {
            if LinkName::parse(&link).is_some() {
                held.push(format!("{LINK} {link}"));
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(NETNS_PREFIX) {
                    held.push(format!("{NAMESPACE} {name}"));
                }
            }
        }
        held.extend(self.dhcp_inventory());
        Ok(held)
    }

    async fn underlay(&self) -> Result<Option<IpAddr>> {
        Ok(self.underlay.map(Underlay::address))
    }

    async fn set_overlay(&self, network: &Network, view: &OverlayView) -> Result<()> {
        LinuxNetwork::set_overlay(self, network, view).await
    }

    async fn inspect(
        &self,
        network: &Network,
        view: &OverlayView,
        attachments: &[NetworkAttachment],
    ) -> Result<Vec<NetworkPart>> {
        self.inspect_network(network, view, attachments).await
    }

    async fn repair(
        &self,
        network: &Network,
        attachments: &[NetworkAttachment],
    ) -> Result<Vec<String>> {
        self.repair_network(network, attachments).await
    }

    async fn reconcile(
        &self,
        installation: &InstallationId,
        networks: &[Network],
        instances: &[Instance],
        seen: &[String],
    ) -> Result<Vec<String>> {
        for network in networks {
            self.ensure_network(network).await?;
        }
        let attachments: Vec<&NetworkAttachment> =
            instances.iter().flat_map(|i| &i.attachments).collect();
        let vxlans: Vec<VxlanName> = networks.iter().map(|n| VxlanName::of(&n.bridge)).collect();
        let named_links: BTreeSet<&str> = networks
            .iter()
            .map(|n| n.bridge.as_str())
            .chain(attachments.iter().map(|a| a.host_interface.as_str()))
            .chain(vxlans.iter().map(VxlanName::as_str))
            .collect();
        let named_tables: BTreeSet<String> = networks.iter().map(Network::nft_table).collect();
        let named_namespaces: BTreeSet<String> = instances
            .iter()
            .filter(|i| !i.attachments.is_empty())
            .filter_map(|i| NetnsName::new(installation, &i.id).ok())
            .map(|n| n.to_string())
            .collect();
        let publishing: BTreeSet<&str> = instances
            .iter()
            .filter(|i| !i.spec.publish.is_empty())
            .map(|i| i.id.as_str())
            .collect();
        let bridges: Vec<&BridgeName> = networks.iter().map(|n| &n.bridge).collect();
        let hosts: Vec<&InterfaceName> = attachments.iter().map(|a| &a.host_interface).collect();
        let mut removed = Vec::new();
        for object in seen {
            let Some((kind, name)) = object.split_once(' ') else {
                continue;
            };
            // `seen` may come over the wire: every name is parsed as one of
            // ours, and only what bears this installation's mark is removed.
            match kind {
                TABLE => {
                    if let Some(table) = PortsTable::parse(name) {
                        // An instance's published ports: kept while the
                        // store has the instance publishing them.
                        let named = publishing.contains(table.instance());
                        if table.installation() != installation || named {
                            continue;
                        }
                        crate::ports::delete_table(&table).await?;
                        removed.push(format!("nftables table inet {name}"));
                        continue;
                    }
                    let Some(mark) = HostMark::from_nft_table(name) else {
                        continue;
                    };
                    if mark.installation() != installation || named_tables.contains(name) {
                        continue;
                    }
                    nft::delete_table(&mark).await?;
                    removed.push(format!("nftables table inet {name}"));
                }
                LINK => {
                    let Some(link) = LinkName::parse(name) else {
                        continue;
                    };
                    if named_links.contains(link.as_str()) {
                        continue;
                    }
                    let Some(live) = links::lookup(&self.handle, link.as_str()).await? else {
                        continue;
                    };
                    if !live.is_of(installation, link.kind()) {
                        continue;
                    }
                    links::delete_index(&self.handle, live.index, link.as_str()).await?;
                    removed.push(format!("link {name}"));
                }
                NAMESPACE => {
                    let Some(netns) = NetnsName::parse_ours(name, installation) else {
                        continue;
                    };
                    if named_namespaces.contains(name) {
                        continue;
                    }
                    let path = self.netns_dir.join(netns.to_string());
                    if path.exists() {
                        crate::netns::remove(&path).map_err(|e| {
                            Error::Internal(format!("removing namespace {name}: {e}"))
                        })?;
                        removed.push(format!("namespace {name}"));
                    }
                }
                DHCP | DHCP_HOST => {
                    if let Some(gone) =
                        self.reconcile_dhcp(installation, kind, name, &bridges, &hosts)?
                    {
                        removed.push(gone);
                    }
                }
                _ => {}
            }
        }
        Ok(removed)
    }
}

/// The kinds of [`NetworkHost::inventory`] entries.
const TABLE: &str = "table";
const LINK: &str = "link";
const NAMESPACE: &str = "namespace";

/// Every address of every link in the handle's namespace.
pub(crate) async fn addresses(handle: &Handle) -> Result<Vec<AddressMessage>> {
    handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| netlink_error("listing addresses", e))
}

pub(crate) async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink_error(&format!("looking up link {name}"), e)),
    }
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// The positive errno of a netlink error reply.
pub(crate) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// A netlink failure as an [`Error`]: missing privileges are `Unsupported`
/// with a clear reason; the rest `Internal`, with what was being done.
pub(crate) fn netlink_error(doing: &str, error: rtnetlink::Error) -> Error {
    match errno(&error) {
        Some(libc::EPERM | libc::EACCES) => Error::Unsupported(format!(
            "missing privileges for {doing}: CAP_NET_ADMIN is needed"
        )),
        Some(code) => Error::Internal(format!(
            "{doing} failed: {}",
            std::io::Error::from_raw_os_error(code)
        )),
        None => Error::Internal(format!("{doing} failed: {error}")),
    }
}

/// A request adding `address/prefix_len` to link `index`; an IPv6 one
/// without duplicate address detection (`IFA_F_NODAD`). IPAM already
/// made every address unique, and DAD would only hurt: a gateway is on
/// every node's bridge at once (the anycast gateway), which DAD over the
/// overlay would find "duplicate" and disable, and an instance's address
/// would stay tentative (unusable) for its first second or more.
pub(crate) fn add_address(
    handle: &Handle,
    index: u32,
    address: IpAddr,
    prefix_len: u8,
) -> rtnetlink::AddressAddRequest {
    let mut request = handle.address().add(index, address, prefix_len);
    if address.is_ipv6() {
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    request
}

/// Turns off duplicate address detection on bridge `bridge` (its
/// link-local address, made when its first port comes up): every node's
/// bridge of a network has the same MAC, hence the same link-local
/// address, which DAD over the overlay would disable, and with it the
/// router advertisements sent from it. Best effort: a node without IPv6
/// has no such setting, and then no IPv6 to break.
fn no_dad(bridge: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{bridge}/accept_dad");
    if let Err(e) = std::fs::write(&path, "0") {
        tracing::warn!(%bridge, error = %e, "cannot turn off DAD on the bridge");
    }
}

/// Whether `address` is IPv4, for picking a route family.
pub(crate) fn is_v4(address: IpAddr) -> bool {
    address.is_ipv4()
}
