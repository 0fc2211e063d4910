//! The VXLAN overlay that makes one network span nodes: next to a
//! network's bridge, a VXLAN device `zxx<the bridge's hex>` (marked as the
//! network's, like every Zixiao link) with the network's [`Vni`], sending
//! from this node's [`Underlay`] address to UDP port 4789, enslaved to the
//! bridge.
//!
//! What it holds is programmed from the store, never learnt: the
//! controller computes each node's [`OverlayView`] (the other nodes
//! carrying the network, and every instance attachment on them) and calls
//! [`LinuxNetwork::set_overlay`] through
//! [`NetworkHost::set_overlay`](zixiao_core::NetworkHost::set_overlay)
//! whenever an attachment appears, moves or goes. That call diffs what the
//! network's own devices hold against the view and programs:
//! - per peer node, one all-zeros entry `dst <its underlay address>` on
//!   the VXLAN device (head-end replication): broadcast and multicast
//!   (ARP and ND for addresses the store does not know, such as IPv6
//!   link-local ones; DHCP is answered locally) are copied to those nodes
//!   and to no one else; no multicast group is joined;
//! - per remote MAC, a static entry `MAC dst <its node>` on the VXLAN
//!   device, so unicast goes straight to the one node that has it, and a
//!   static entry for the MAC on the bridge's VXLAN port, so the bridge
//!   neither floods it to local ports nor needs to learn it;
//! - per remote address, a permanent neighbour entry `address lladdr MAC`
//!   on the bridge, which ARP/ND suppression (`neigh_suppress on` on the
//!   VXLAN port) answers on this node instead of copying the request to
//!   every peer.
//!
//! Entries the view no longer names are removed, so a moved instance's MAC
//! points at its new node as soon as the sync runs (no ageing wait), and
//! its old node drops it on its next sync. Learning is off on the VXLAN
//! device and on its bridge port (a learnt entry would outlive a move, and
//! learning is what the static entries replace), and so is flooding of
//! unknown unicast to the VXLAN port: every MAC of the network is
//! programmed before its instance is plugged in (the controller syncs
//! before the driver creates it), so unicast to an unknown MAC has no one
//! to reach on another node. A node left out of a sync (unreachable for a
//! moment) gets its entries at the next one (`network repair`, the
//! agent's re-registration or the network reconcile).
//!
//! Only the network's own devices (its bridge and VXLAN device, marked
//! as its) are read or changed: entries on any other link are never
//! touched.
//!
//! With the overlay on, the bridge (and so every veth and TAP on it) gets
//! the underlay link's MTU less the 50 bytes of VXLAN over IPv4 (70 over
//! IPv6), so nothing fragments. A node without an underlay address gets
//! no VXLAN device at all: the embedded single-node default needs no
//! set-up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoBridgePort, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkBridgePort, LinkUnspec, LinkVxlan};
use zixiao_core::model::{
    BridgeName, HostMark, MacAddress, Network, OverlayView, Vni, BRIDGE_PREFIX,
};
use zixiao_core::{Error, Result};

use crate::endpoint::set as set_link;
use crate::host::{errno, link_index, netlink_error, LinuxNetwork};
use crate::links::{self, LinkKind};

/// The IANA port of VXLAN.
pub const VXLAN_PORT: u16 = 4789;
/// The prefix of VXLAN device names.
pub const VXLAN_PREFIX: &str = "zxx";
/// What VXLAN adds to a frame over IPv4: outer IPv4 (20), UDP (8), VXLAN
/// (8) and the inner Ethernet header (14).
const OVERHEAD_V4: u32 = 50;
/// The same over IPv6 (a 40-byte outer header).
const OVERHEAD_V6: u32 = 70;
/// The all-zeros MAC of head-end replication entries.
const ALL_ZEROS: [u8; 6] = [0; 6];
/// `NUD_NOARP | NUD_REACHABLE`: what `bridge fdb add … static` asks for;
/// the VXLAN driver never ages such an entry out and shows it `static`.
const STATIC_TUNNEL: u16 = 0x40 | 0x02;

/// This node's address on the network between nodes, which VXLAN packets
/// leave from and other nodes send this node's share of an overlay to.
/// Checked: a unicast address that another node can reach (not
/// unspecified, loopback, multicast or broadcast).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Underlay(IpAddr);

impl Underlay {
    /// The address.
    pub fn address(self) -> IpAddr {
        self.0
    }

    /// Whether the address is one of this machine's (in the calling
    /// thread's network namespace): binding a socket to it succeeds.
    pub fn is_local(self) -> bool {
        std::net::UdpSocket::bind((self.0, 0)).is_ok()
    }

    /// The default underlay of an agent advertised at `advertise`
    /// (`host:port`): its host when that is an IP address other than
    /// loopback or unspecified; `None` otherwise (a name, or loopback).
    pub fn from_advertise(advertise: &str) -> Option<Underlay> {
        let host = match advertise.parse::<std::net::SocketAddr>() {
            Ok(socket) => socket.ip(),
            Err(_) => advertise.parse::<IpAddr>().ok()?,
        };
        Underlay::try_from(host).ok()
    }
}

impl TryFrom<IpAddr> for Underlay {
    type Error = Error;

    /// Errors: `InvalidArgument` naming `underlay`.
    fn try_from(address: IpAddr) -> Result<Self> {
        if !zixiao_core::model::is_underlay_address(address) {
            return Err(Error::invalid(
                "underlay",
                format!(
                    "{address} cannot carry an overlay: other nodes must reach it \
                     (a unicast address of this node that is not loopback)"
                ),
            ));
        }
        Ok(Underlay(address))
    }
}

impl std::str::FromStr for Underlay {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let address: IpAddr = text
            .trim()
            .parse()
            .map_err(|_| Error::invalid("underlay", format!("`{text}` is not an IP address")))?;
        Underlay::try_from(address)
    }
}

/// The name of a network's VXLAN device: `zxx` and the hex of its bridge's
/// name (`zxb335716ce` has `zxx335716ce`), 11 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanName(String);

impl VxlanName {
    /// The VXLAN device next to `bridge`.
    pub fn of(bridge: &BridgeName) -> VxlanName {
        let hex = &bridge.as_str()[BRIDGE_PREFIX.len()..];
        VxlanName(format!("{VXLAN_PREFIX}{hex}"))
    }

    /// `name` if it is a VXLAN device name of Zixiao's.
    pub fn parse(name: &str) -> Option<VxlanName> {
        let hex = name.strip_prefix(VXLAN_PREFIX)?;
        // A bridge name with the same hex is valid exactly when this is.
        let bridge = BridgeName::try_from(format!("{BRIDGE_PREFIX}{hex}").as_str()).ok()?;
        Some(VxlanName::of(&bridge))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for VxlanName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl LinuxNetwork {
    /// This network host with `underlay` as its address between nodes:
    /// networks with a VNI get a VXLAN device (see the module docs).
    pub fn with_underlay(mut self, underlay: Underlay) -> Self {
        self.underlay = Some(underlay);
        self
    }

    /// Its address between nodes, if it has one.
    pub fn underlay(&self) -> Option<Underlay> {
        self.underlay
    }

    /// Sets up the overlay part of `network` on its bridge (`bridge`, at
    /// `index`): the fixed gateway MAC always; with an underlay and a VNI,
    /// the VXLAN device plugged into the bridge and the overlay MTU.
    pub(crate) async fn ensure_overlay(
        &self,
        network: &Network,
        mark: &HostMark,
        bridge: u32,
    ) -> Result<()> {
        let name = &network.bridge;
        let overlay = match (self.underlay, network.vni) {
            (Some(underlay), Some(vni)) => Some((underlay, vni)),
            _ => None,
        };
        let mtu = match overlay {
            Some((underlay, _)) => Some(self.underlay_link(underlay).await?),
            None => None,
        };
        // The bridge first: a port with a larger MTU than its bridge is fine,
        // and the bridge keeps an MTU set by hand when ports come and go.
        // Only what differs is set: setting a bridge's MAC again drops its
        // carrier until a port comes up, a change a repeated ensure must
        // not make.
        let link = link_message(&self.handle, bridge).await?;
        let mac = network.gateway_mac();
        let mut change = LinkUnspec::new_with_index(bridge);
        let mut changed = false;
        let has_mac = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Address(now) if now[..] == mac));
        if !has_mac {
            change = change.address(mac.to_vec());
            changed = true;
        }
        if let Some((_, wanted)) = mtu {
            let has_mtu = link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Mtu(now) if *now == wanted));
            if !has_mtu {
                change = change.mtu(wanted);
                changed = true;
            }
        }
        if changed {
            set_link(
                &self.handle,
                change,
                &format!("setting the gateway MAC and MTU of {name}"),
            )
            .await?;
        }
        let (Some((underlay, vni)), Some((dev, mtu))) = (overlay, mtu) else {
            // A node that lost its underlay (restarted without one) keeps
            // no VXLAN device of an earlier set-up.
            return self.remove_overlay(network, mark).await;
        };
        let vxlan = VxlanName::of(name);
        let index = self.ensure_vxlan(&vxlan, vni, underlay, dev, mark).await?;
        set_link(
            &self.handle,
            LinkUnspec::new_with_index(index)
                .mtu(mtu)
                .controller(bridge)
                .up(),
            &format!("plugging {vxlan} into {name}"),
        )
        .await?;
        // Once it is a port of the bridge (the flag is the port's). A port's
        // settings go in RTM_NEWLINK (`set_port`): RTM_SETLINK ignores them.
        self.handle
            .link()
            .set_port(
                LinkBridgePort::new(index)
                    .append_info_data(InfoBridgePort::NeighSupress(true))
                    .append_info_data(InfoBridgePort::Learning(false))
                    .append_info_data(InfoBridgePort::UnicastFlood(false))
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                netlink_error(
                    &format!("turning on ARP/ND suppression and off learning on {vxlan}"),
                    e,
                )
            })
    }

    /// Whether ARP/ND suppression is on for `network`'s VXLAN port (see the
    /// module docs); `false` without the device. Errors: netlink's.
    pub async fn neigh_suppressed(&self, network: &Network) -> Result<bool> {
        use rtnetlink::packet_route::link::{InfoPortData, LinkInfo};
        let vxlan = VxlanName::of(&network.bridge);
        let Some(index) = link_index(&self.handle, vxlan.as_str()).await? else {
            return Ok(false);
        };
        let link = link_message(&self.handle, index).await?;
        Ok(link
            .attributes
            .iter()
            .filter_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => Some(infos),
                _ => None,
            })
            .flatten()
            .filter_map(|i| match i {
                LinkInfo::PortData(InfoPortData::BridgePort(port)) => Some(port),
                _ => None,
            })
            .flatten()
            .any(|p| matches!(p, InfoBridgePort::NeighSupress(true))))
    }

    /// The VXLAN device `name` with `vni` from `underlay`, made unless a
    /// marked one with that VNI and local address exists (one that differs,
    /// left by an earlier set-up, is replaced).
    async fn ensure_vxlan(
        &self,
        name: &VxlanName,
        vni: Vni,
        underlay: Underlay,
        dev: u32,
        mark: &HostMark,
    ) -> Result<u32> {
        if let Some(index) =
            links::owned(&self.handle, name.as_str(), LinkKind::Vxlan, mark).await?
        {
            if vxlan_matches(&self.handle, index, vni, underlay).await? {
                return Ok(index);
            }
            links::delete_index(&self.handle, index, name.as_str()).await?;
        }
        let builder = LinkVxlan::new(name.as_str(), vni.get())
            .port(VXLAN_PORT)
            .dev(dev)
            .learning(false);
        let builder = match underlay.address() {
            IpAddr::V4(v4) => builder.local(v4),
            IpAddr::V6(v6) => builder.local6(v6),
        };
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|e| netlink_error(&format!("creating VXLAN device {name} (VNI {vni})"), e))?;
        let index = link_index(&self.handle, name.as_str())
            .await?
            .ok_or_else(|| Error::Internal(format!("{name} vanished right after creation")))?;
        links::mark_new(&self.handle, index, name.as_str(), mark).await?;
        Ok(index)
    }

    /// The index of the link holding `underlay`, and the MTU an overlay
    /// over it gets. Errors: `FailedPrecondition` (no link of this node
    /// holds the address).
    async fn underlay_link(&self, underlay: Underlay) -> Result<(u32, u32)> {
        let addresses = crate::host::addresses(&self.handle).await?;
        let wanted = underlay.address();
        let index = addresses
            .iter()
            .find(|a| {
                a.attributes.iter().any(|attribute| {
                    matches!(attribute, AddressAttribute::Address(ip) | AddressAttribute::Local(ip) if *ip == wanted)
                })
            })
            .map(|a| a.header.index)
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "the underlay address {wanted} is not an address of this node: set the \
                     agent's --underlay to one of its own addresses"
                ))
            })?;
        let mtu = link_mtu(&self.handle, index).await?.unwrap_or(1500);
        let overhead = if wanted.is_ipv4() {
            OVERHEAD_V4
        } else {
            OVERHEAD_V6
        };
        Ok((index, mtu.saturating_sub(overhead)))
    }

    /// Makes the overlay of `network` on this node exactly `view` (see the
    /// module docs): missing replication, forwarding and neighbour entries
    /// are added, those pointing elsewhere replaced, those `view` does not
    /// name removed, on the network's own devices only. Idempotent.
    /// Errors: `FailedPrecondition` (a non-empty view for a node without
    /// an underlay address, or a network without a VNI; the network's
    /// VXLAN device is missing: it is not set up here; a link of its name
    /// is not the network's), `InvalidArgument` (this node's own address
    /// among the peers), netlink's.
    pub async fn set_overlay(&self, network: &Network, view: &OverlayView) -> Result<()> {
        let mark = network.mark()?;
        let (Some(underlay), Some(_)) = (self.underlay, network.vni) else {
            if view.is_empty() {
                return Ok(());
            }
            return Err(Error::FailedPrecondition(match network.vni {
                None => format!(
                    "network `{}` was stored before VNIs and cannot span nodes; create it again",
                    network.name
                ),
                Some(_) => format!(
                    "network `{}` spans nodes but this node has no underlay address \
                     (set the agent's --underlay)",
                    network.name
                ),
            }));
        };
        if view.peers().contains(&underlay.address()) {
            return Err(Error::invalid(
                "peers",
                format!("{} is this node's own underlay address", underlay.address()),
            ));
        }
        let vxlan = VxlanName::of(&network.bridge);
        let missing = || {
            Error::FailedPrecondition(format!(
                "network `{}` is not set up on this node (VXLAN device {vxlan} is missing)",
                network.name
            ))
        };
        let index = links::owned(&self.handle, vxlan.as_str(), LinkKind::Vxlan, &mark)
            .await?
            .ok_or_else(missing)?;
        let bridge = links::owned(&self.handle, &network.bridge, LinkKind::Bridge, &mark)
            .await?
            .ok_or_else(missing)?;
        let devices = Devices {
            vxlan: index,
            bridge,
        };
        let present = self.programmed(devices).await?;
        let wanted = Programmed::of(view);
        // What is wanted first, then what is stale: a move replaces its
        // entries in place and nothing goes unreachable in between.
        for peer in wanted.peers.difference(&present.peers) {
            self.program(devices, Entry::Peer(*peer), Change::Add)
                .await?;
        }
        for (mac, node) in &wanted.tunnel {
            if present.tunnel.get(mac) != Some(node) {
                let entry = Entry::Tunnel(*mac, *node);
                self.program(devices, entry, Change::Add).await?;
            }
        }
        for mac in wanted.bridged.difference(&present.bridged) {
            self.program(devices, Entry::Bridged(*mac), Change::Add)
                .await?;
        }
        for (address, mac) in &wanted.neighbours {
            if present.neighbours.get(address) != Some(mac) {
                let entry = Entry::Neighbour(*address, *mac);
                self.program(devices, entry, Change::Add).await?;
            }
        }
        for (address, mac) in &present.neighbours {
            if !wanted.neighbours.contains_key(address) {
                let entry = Entry::Neighbour(*address, *mac);
                self.program(devices, entry, Change::Remove).await?;
            }
        }
        for mac in present.bridged.difference(&wanted.bridged) {
            self.program(devices, Entry::Bridged(*mac), Change::Remove)
                .await?;
        }
        for (mac, node) in &present.tunnel {
            if !wanted.tunnel.contains_key(mac) {
                let entry = Entry::Tunnel(*mac, *node);
                self.program(devices, entry, Change::Remove).await?;
            }
        }
        for peer in present.peers.difference(&wanted.peers) {
            self.program(devices, Entry::Peer(*peer), Change::Remove)
                .await?;
        }
        Ok(())
    }

    /// What `network`'s overlay devices hold now (nothing without them).
    pub(crate) async fn programmed_of(&self, network: &Network) -> Result<Programmed> {
        let vxlan = VxlanName::of(&network.bridge);
        let (Some(vxlan), Some(bridge)) = (
            link_index(&self.handle, vxlan.as_str()).await?,
            link_index(&self.handle, network.bridge.as_str()).await?,
        ) else {
            return Ok(Programmed::default());
        };
        self.programmed(Devices { vxlan, bridge }).await
    }

    /// The peers `network`'s VXLAN device replicates to now (empty without
    /// one), in address order.
    pub async fn overlay_peers(&self, network: &Network) -> Result<Vec<IpAddr>> {
        Ok(self
            .programmed_of(network)
            .await?
            .peers
            .into_iter()
            .collect())
    }

    async fn programmed(&self, devices: Devices) -> Result<Programmed> {
        let mut held = Programmed::default();
        let entries = self.neighbours(AddressFamily::Bridge).await?;
        for entry in entries.iter().filter(|e| e.header.ifindex == devices.vxlan) {
            let Some(mac) = lladdr(entry) else { continue };
            if entry.header.flags.contains(NeighbourFlags::Own) {
                // The VXLAN device's own table: replication or tunnel.
                let Some(dst) = destination(entry) else {
                    continue;
                };
                if mac == ALL_ZEROS {
                    held.peers.insert(dst);
                } else if let Ok(mac) = MacAddress::try_from(mac) {
                    held.tunnel.insert(mac, dst);
                }
            } else if entry.header.state == NeighbourState::Noarp {
                // The bridge's static entries on its VXLAN port (its
                // `permanent` ones are the port's own MAC, learnt ones
                // cannot be there with learning off).
                if let Ok(mac) = MacAddress::try_from(mac) {
                    held.bridged.insert(mac);
                }
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let entries = self.neighbours(family).await?;
            for entry in entries.iter().filter(|e| {
                e.header.ifindex == devices.bridge && e.header.state == NeighbourState::Permanent
            }) {
                let (Some(address), Some(mac)) = (destination(entry), lladdr(entry)) else {
                    continue;
                };
                if let Ok(mac) = MacAddress::try_from(mac) {
                    held.neighbours.insert(address, mac);
                }
            }
        }
        Ok(held)
    }

    async fn neighbours(&self, family: AddressFamily) -> Result<Vec<NeighbourMessage>> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("listing forwarding and neighbour entries", e))
    }

    /// Adds (or replaces) or removes one entry, as `bridge fdb
    /// append|replace|del` and `ip neigh replace|del` do. rtnetlink's
    /// neighbour add sends `NLM_F_EXCL`, which the kernel refuses for a
    /// second all-zeros entry and which would fail a replacement, so the
    /// message is built here.
    async fn program(&self, devices: Devices, entry: Entry, change: Change) -> Result<()> {
        let mut message = NeighbourMessage::default();
        let (family, index, state, flags, mac, dst) = match entry {
            Entry::Peer(peer) => (
                AddressFamily::Bridge,
                devices.vxlan,
                NeighbourState::Permanent,
                NeighbourFlags::Own,
                ALL_ZEROS,
                Some(peer),
            ),
            Entry::Tunnel(mac, node) => (
                AddressFamily::Bridge,
                devices.vxlan,
                NeighbourState::Other(STATIC_TUNNEL),
                NeighbourFlags::Own,
                mac.octets(),
                Some(node),
            ),
            Entry::Bridged(mac) => (
                AddressFamily::Bridge,
                devices.vxlan,
                NeighbourState::Noarp,
                NeighbourFlags::Controller,
                mac.octets(),
                None,
            ),
            Entry::Neighbour(address, mac) => (
                if address.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                },
                devices.bridge,
                NeighbourState::Permanent,
                NeighbourFlags::empty(),
                mac.octets(),
                Some(address),
            ),
        };
        message.header.family = family;
        message.header.ifindex = index;
        message.header.state = state;
        message.header.flags = flags;
        if let Some(dst) = dst {
            message
                .attributes
                .push(NeighbourAttribute::Destination(match dst {
                    IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                    IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
                }));
        }
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        let add = change == Change::Add;
        let (payload, flags, doing) = match (change, entry) {
            (Change::Add, Entry::Peer(_)) => (
                RouteNetlinkMessage::NewNeighbour(message),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
                "adding",
            ),
            (Change::Add, _) => (
                RouteNetlinkMessage::NewNeighbour(message),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                "setting",
            ),
            (Change::Remove, _) => (
                RouteNetlinkMessage::DelNeighbour(message),
                NLM_F_REQUEST | NLM_F_ACK,
                "removing",
            ),
        };
        let what = || format!("{doing} {entry}");
        let mut request = NetlinkMessage::from(payload);
        request.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(request)
            .map_err(|e| netlink_error(&what(), e))?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(e) = reply.payload {
                let e = rtnetlink::Error::NetlinkError(e);
                match errno(&e) {
                    // Already there, or already gone: what was wanted.
                    Some(libc::EEXIST) if add => {}
                    Some(libc::ENOENT) if !add => {}
                    _ => return Err(netlink_error(&what(), e)),
                }
            }
        }
        Ok(())
    }

    /// Removes the VXLAN device of `network` if it is its (a missing one is
    /// not an error).
    pub(crate) async fn remove_overlay(&self, network: &Network, mark: &HostMark) -> Result<()> {
        let vxlan = VxlanName::of(&network.bridge);
        links::delete_owned(&self.handle, vxlan.as_str(), LinkKind::Vxlan, mark).await
    }
}

/// Whether the VXLAN device at `index` has `vni` and sends from `underlay`.
pub(crate) async fn vxlan_matches(
    handle: &Handle,
    index: u32,
    vni: Vni,
    underlay: Underlay,
) -> Result<bool> {
    use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkInfo};
    let link = link_message(handle, index).await?;
    let infos = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    });
    let data = infos.into_iter().flatten().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data),
        _ => None,
    });
    let Some(data) = data else {
        return Ok(false);
    };
    let id = data
        .iter()
        .any(|d| matches!(d, InfoVxlan::Id(id) if *id == vni.get()));
    let local = data.iter().any(|d| match (d, underlay.address()) {
        (InfoVxlan::Local(a), IpAddr::V4(b)) => *a == b,
        (InfoVxlan::Local6(a), IpAddr::V6(b)) => *a == b,
        _ => false,
    });
    // Made before learning was turned off: replaced, so no learnt entry
    // outlives a move.
    let learning = data.iter().any(|d| matches!(d, InfoVxlan::Learning(true)));
    Ok(id && local && !learning)
}

/// The MTU of the link at `index` (a bridge's: what its ports get, so a
/// frame that fits one fits the overlay).
pub(crate) async fn link_mtu(handle: &Handle, index: u32) -> Result<Option<u32>> {
    let link = link_message(handle, index).await?;
    Ok(link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    }))
}

async fn link_message(handle: &Handle, index: u32) -> Result<LinkMessage> {
    handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|e| netlink_error(&format!("looking up link {index}"), e))?
        .ok_or_else(|| Error::Internal(format!("link {index} vanished")))
}

/// The indexes of a network's VXLAN device and bridge.
#[derive(Debug, Clone, Copy)]
struct Devices {
    vxlan: u32,
    bridge: u32,
}

/// What a network's overlay devices hold, or should (see the module docs).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Programmed {
    /// Replication entries on the VXLAN device.
    pub(crate) peers: BTreeSet<IpAddr>,
    /// Static entries on the VXLAN device: remote MAC -> its node.
    pub(crate) tunnel: BTreeMap<MacAddress, IpAddr>,
    /// Static bridge entries on the VXLAN port.
    pub(crate) bridged: BTreeSet<MacAddress>,
    /// Permanent neighbour entries on the bridge: address -> MAC.
    pub(crate) neighbours: BTreeMap<IpAddr, MacAddress>,
}

impl Programmed {
    /// What `view` asks for.
    pub(crate) fn of(view: &OverlayView) -> Programmed {
        let mut wanted = Programmed {
            peers: view.peers().iter().copied().collect(),
            ..Programmed::default()
        };
        for endpoint in view.endpoints() {
            wanted.tunnel.insert(endpoint.mac, endpoint.node);
            wanted.bridged.insert(endpoint.mac);
            for address in &endpoint.addresses {
                wanted.neighbours.insert(*address, endpoint.mac);
            }
        }
        wanted
    }

    /// How many of `wanted`'s forwarding (FDB) and neighbour entries are
    /// missing here or point elsewhere, and how many entries here
    /// `wanted` does not name: `(fdb missing, neighbours missing, stale)`.
    pub(crate) fn drift(&self, wanted: &Programmed) -> (usize, usize, usize) {
        let fdb_missing = wanted
            .tunnel
            .iter()
            .filter(|(mac, node)| self.tunnel.get(*mac) != Some(*node))
            .count()
            + wanted.bridged.difference(&self.bridged).count();
        let neighbours_missing = wanted
            .neighbours
            .iter()
            .filter(|(address, mac)| self.neighbours.get(*address) != Some(*mac))
            .count();
        let stale = self
            .tunnel
            .keys()
            .filter(|mac| !wanted.tunnel.contains_key(*mac))
            .count()
            + self.bridged.difference(&wanted.bridged).count()
            + self
                .neighbours
                .keys()
                .filter(|address| !wanted.neighbours.contains_key(*address))
                .count();
        (fdb_missing, neighbours_missing, stale)
    }
}

/// One entry of a network's overlay.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// Replication to a peer node.
    Peer(IpAddr),
    /// A remote MAC through the tunnel to its node.
    Tunnel(MacAddress, IpAddr),
    /// A remote MAC on the bridge's VXLAN port.
    Bridged(MacAddress),
    /// A remote address's MAC on the bridge.
    Neighbour(IpAddr, MacAddress),
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Peer(peer) => write!(f, "overlay peer {peer}"),
            Entry::Tunnel(mac, node) => write!(f, "forwarding entry {mac} dst {node}"),
            Entry::Bridged(mac) => write!(f, "bridge entry {mac}"),
            Entry::Neighbour(address, mac) => write!(f, "neighbour entry {address} -> {mac}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Remove,
}

/// An entry's link-layer address.
fn lladdr(entry: &NeighbourMessage) -> Option<[u8; 6]> {
    entry.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => <[u8; 6]>::try_from(&mac[..]).ok(),
        _ => None,
    })
}

/// An entry's destination: a neighbour's address, a VXLAN entry's node.
fn destination(entry: &NeighbourMessage) -> Option<IpAddr> {
    entry.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        // Bridge-family entries come with their address undecoded (the
        // family says nothing of it): by length.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => match bytes.len() {
            4 => <[u8; 4]>::try_from(&bytes[..]).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(&bytes[..]).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_of_another_machine_is_not_local() {
        // TEST-NET-1: documentation only, never assigned here.
        let elsewhere: Underlay = "192.0.2.1".parse().expect("unicast");
        assert!(!elsewhere.is_local());
    }

    #[test]
    fn underlay_addresses_must_be_reachable_unicast() {
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "::1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "x",
        ] {
            let err = bad.parse::<Underlay>().unwrap_err();
            assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().starts_with("invalid underlay"), "{err}");
        }
        assert!("10.1.2.3".parse::<Underlay>().is_ok());
        assert_eq!(
            Underlay::from_advertise("10.0.0.2:7443").map(Underlay::address),
            Some("10.0.0.2".parse().unwrap())
        );
        assert_eq!(Underlay::from_advertise("127.0.0.1:7443"), None);
        assert_eq!(Underlay::from_advertise("node-2:7443"), None);
    }

    #[test]
    fn vxlan_names_follow_their_bridge() {
        let bridge = BridgeName::try_from("zxb335716ce").unwrap();
        let vxlan = VxlanName::of(&bridge);
        assert_eq!(vxlan.as_str(), "zxx335716ce");
        assert_eq!(VxlanName::parse("zxx335716ce"), Some(vxlan));
        for bad in [
            "zxx",
            "zxx335716cex",
            "zxb335716ce",
            "zxxZZZZZZZZ",
            "zxx33571\n6c",
        ] {
            assert_eq!(VxlanName::parse(bad), None, "{bad:?}");
        }
    }
}
