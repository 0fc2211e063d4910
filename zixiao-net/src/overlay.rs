//! The VXLAN overlay that makes one network span nodes: next to a
//! network's bridge, a VXLAN device `zxx<the bridge's hex>` (marked as the
//! network's, like every Zixiao link) with the network's [`Vni`], sending
//! from this node's [`Underlay`] address to UDP port 4789, enslaved to the
//! bridge.
//!
//! Peers are programmed by head-end replication: for every other node that
//! carries the network, one all-zeros forwarding entry `dst <its underlay
//! address>` on the VXLAN device, so broadcast and unknown traffic (ARP,
//! the first packet to a new MAC) is copied to those nodes and to no one
//! else; no multicast group is joined. Learning stays on: the device learns
//! which node each remote MAC lives on from the packets it receives, so
//! unicast goes straight to the right node afterwards without Zixiao
//! distributing every instance's MAC (flannel's way), and a MAC that moves
//! is relearnt. The controller computes the peer set from the store and
//! calls [`LinuxNetwork::set_overlay_peers`] through
//! [`NetworkHost::set_overlay_peers`](zixiao_core::NetworkHost::set_overlay_peers);
//! entries of nodes no longer carrying the network are removed there.
//!
//! ARP and IPv6 neighbour discovery are suppressed on the VXLAN port
//! (`neigh_suppress on`): a request for an address whose MAC the bridge
//! knows behind that port (a valid entry in the node's neighbour table on
//! the bridge, and the MAC in its FDB) is answered on this node and not
//! copied to every peer; one it does not know is still replicated, so
//! nothing becomes unreachable. Zixiao does not program those neighbour
//! entries from the store yet (MACs are learnt, see above), so today only
//! addresses the node has itself resolved are answered locally.
//!
//! With the overlay on, the bridge (and so every veth and TAP on it) gets
//! the underlay link's MTU less the 50 bytes of VXLAN over IPv4 (70 over
//! IPv6), so nothing fragments. A node without an underlay address gets
//! no VXLAN device at all: the embedded single-node default needs no
//! set-up.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoBridgePort, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkBridgePort, LinkUnspec, LinkVxlan};
use zixiao_core::model::{BridgeName, HostMark, Network, Vni, BRIDGE_PREFIX};
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
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| netlink_error(&format!("turning on ARP/ND suppression on {vxlan}"), e))
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
            .learning(true);
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

    /// Makes the overlay peers of `network` on this node exactly `peers`
    /// (the underlay addresses of the other nodes carrying it): missing
    /// head-end replication entries are appended, those of other addresses
    /// removed. Idempotent. Errors: `FailedPrecondition` (peers for a node
    /// without an underlay address, or a network without a VNI; the
    /// network's VXLAN device is missing: it is not set up here; a link of
    /// its name is not the network's), netlink's.
    pub async fn set_overlay_peers(&self, network: &Network, peers: &[IpAddr]) -> Result<()> {
        let mark = network.mark()?;
        let wanted: BTreeSet<IpAddr> = peers.iter().copied().collect();
        let (Some(underlay), Some(_)) = (self.underlay, network.vni) else {
            if wanted.is_empty() {
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
        if wanted.contains(&underlay.address()) {
            return Err(Error::invalid(
                "peers",
                format!("{} is this node's own underlay address", underlay.address()),
            ));
        }
        let vxlan = VxlanName::of(&network.bridge);
        let index = links::owned(&self.handle, vxlan.as_str(), LinkKind::Vxlan, &mark)
            .await?
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "network `{}` is not set up on this node (VXLAN device {vxlan} is missing)",
                    network.name
                ))
            })?;
        let present = self.overlay_peers_at(index).await?;
        for peer in wanted.difference(&present) {
            self.fdb(index, *peer, true).await?;
        }
        for peer in present.difference(&wanted) {
            self.fdb(index, *peer, false).await?;
        }
        Ok(())
    }

    /// The peers `network`'s VXLAN device replicates to now (empty without
    /// one), in address order.
    pub async fn overlay_peers(&self, network: &Network) -> Result<Vec<IpAddr>> {
        let vxlan = VxlanName::of(&network.bridge);
        let Some(index) = link_index(&self.handle, vxlan.as_str()).await? else {
            return Ok(Vec::new());
        };
        Ok(self.overlay_peers_at(index).await?.into_iter().collect())
    }

    async fn overlay_peers_at(&self, index: u32) -> Result<BTreeSet<IpAddr>> {
        let entries: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("listing forwarding entries", e))?;
        Ok(entries
            .iter()
            .filter(|e| e.header.ifindex == index)
            .filter(|e| {
                e.attributes
                    .iter()
                    .any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(mac) if mac[..] == ALL_ZEROS))
            })
            .filter_map(|e| {
                e.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        Some(IpAddr::V6(*v6))
                    }
                    // Bridge-family entries come with their address
                    // undecoded (the family says nothing of it): by length.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                        match bytes.len() {
                            4 => <[u8; 4]>::try_from(&bytes[..]).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(&bytes[..]).ok().map(IpAddr::from),
                            _ => None,
                        }
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// Appends (`add`) or removes the all-zeros entry `dst peer` on the
    /// VXLAN device at `index`, as `bridge fdb append|del 00:00:00:00:00:00
    /// dev … dst peer` does. rtnetlink's neighbour add sends `NLM_F_EXCL`,
    /// which the kernel refuses for a second all-zeros entry, so the message
    /// is sent here with `NLM_F_APPEND`.
    async fn fdb(&self, index: u32, peer: IpAddr, add: bool) -> Result<()> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = index;
        message.header.state = NeighbourState::Permanent;
        message.header.flags = NeighbourFlags::Own;
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(ALL_ZEROS.to_vec()));
        message
            .attributes
            .push(NeighbourAttribute::Destination(match peer {
                IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
            }));
        let (payload, flags, doing) = if add {
            (
                RouteNetlinkMessage::NewNeighbour(message),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
                "adding",
            )
        } else {
            (
                RouteNetlinkMessage::DelNeighbour(message),
                NLM_F_REQUEST | NLM_F_ACK,
                "removing",
            )
        };
        let mut request = NetlinkMessage::from(payload);
        request.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(request)
            .map_err(|e| netlink_error(&format!("{doing} overlay peer {peer}"), e))?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(e) = reply.payload {
                let e = rtnetlink::Error::NetlinkError(e);
                match errno(&e) {
                    // Already there, or already gone: what was wanted.
                    Some(libc::EEXIST) if add => {}
                    Some(libc::ENOENT) if !add => {}
                    _ => return Err(netlink_error(&format!("{doing} overlay peer {peer}"), e)),
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
    Ok(id && local)
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
