//! Inspection and repair of one network on this node, for `network get`
//! and `network repair`: each [`NetworkPart`] (bridge, VXLAN device,
//! overlay peers, forwarding and neighbour entries, nftables table, DHCP
//! responder, the instances' links) is
//! looked up and judged against what the store says the node should hold.
//! Repair is [`NetworkHost::ensure_network`](zixiao_core::NetworkHost)
//! (bridge, VXLAN, rules, DHCP, all idempotent) plus putting back the
//! instances' links on the bridge and their DHCP entries; the overlay
//! (peers, forwarding and neighbour entries) is the controller's to set,
//! from the store, as always.
//!
//! Only this installation's objects are judged or touched: a link of the
//! right name without the network's mark is reported as drifted and left
//! alone.

use std::collections::BTreeSet;
use std::net::IpAddr;

use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::LinkUnspec;
use zixiao_core::model::{
    HostMark, Network, NetworkAttachment, NetworkPart, NetworkPartKind as Kind, OverlayView,
    PartState,
};
use zixiao_core::{NetworkHost, Result};

use crate::dhcp::DhcpState;
use crate::host::netlink_error;
use crate::links::{self, LinkKind};
use crate::nft;
use crate::overlay::{Programmed, VxlanName};
use crate::LinuxNetwork;

impl LinuxNetwork {
    /// `network`'s parts on this node (see the module docs), judged
    /// against `view` (its overlay as this node should hold it) and
    /// `attachments` (those of the instances running here on it).
    /// Read-only. Errors: `FailedPrecondition` (a network stored before
    /// installation ids), netlink's and nft's.
    pub async fn inspect_network(
        &self,
        network: &Network,
        view: &OverlayView,
        attachments: &[NetworkAttachment],
    ) -> Result<Vec<NetworkPart>> {
        let mark = network.mark()?;
        let (bridge_part, bridge_index) = match links::lookup(&self.handle, &network.bridge).await?
        {
            None => (
                NetworkPart::new(Kind::Bridge, PartState::Missing, network.bridge.as_str()),
                None,
            ),
            Some(link) => match link.check(&network.bridge, LinkKind::Bridge, &mark) {
                Err(e) => (
                    NetworkPart::new(Kind::Bridge, PartState::Drifted, e.to_string()),
                    None,
                ),
                Ok(()) => (
                    self.judge_bridge(network, link.index, link.up).await?,
                    Some(link.index),
                ),
            },
        };
        let (vxlan, peers_part, forwarding) = self
            .judge_overlay(network, &mark, bridge_index, view)
            .await?;
        let rules = if nft::table_exists(&mark).await? {
            NetworkPart::new(Kind::Rules, PartState::Ok, network.nft_table())
        } else {
            NetworkPart::new(Kind::Rules, PartState::Missing, network.nft_table())
        };
        let dhcp = match self.dhcp_state(network)? {
            DhcpState::Serving => NetworkPart::new(
                Kind::Dhcp,
                PartState::Ok,
                format!(
                    "serving {}",
                    crate::dhcp::served(network).unwrap_or_default()
                ),
            ),
            DhcpState::Off => NetworkPart::new(
                Kind::Dhcp,
                PartState::NotNeeded,
                "no IPv4 subnet, no IPv6 /64",
            ),
            // Not Zixiao's to mend: the node cannot run it (said why).
            state @ DhcpState::Unavailable(_) => {
                NetworkPart::new(Kind::Dhcp, PartState::NotNeeded, state.to_string())
            }
            DhcpState::Stopped => NetworkPart::new(Kind::Dhcp, PartState::Missing, "not running"),
        };
        let links = self.judge_links(bridge_index, attachments).await?;
        Ok(vec![
            bridge_part,
            vxlan,
            peers_part,
            forwarding,
            rules,
            dhcp,
            links,
        ])
    }

    /// Puts `network` back as it should be on this node: everything
    /// [`NetworkHost::ensure_network`] makes, then the links of
    /// `attachments` on the bridge and up, and their DHCP entries. Returns
    /// what it changed, for people. Idempotent. Errors: those of
    /// `ensure_network`; netlink's.
    pub async fn repair_network(
        &self,
        network: &Network,
        attachments: &[NetworkAttachment],
    ) -> Result<Vec<String>> {
        let before = self
            .inspect_network(network, &OverlayView::empty(), attachments)
            .await?;
        self.ensure_network(network).await?;
        let mark = network.mark()?;
        let mut repaired: Vec<String> = before
            .iter()
            .filter(|p| {
                !matches!(p.kind, Kind::Peers | Kind::Forwarding | Kind::Links)
                    && !p.state.is_healthy()
            })
            .map(|p| format!("{} ({})", p.kind, p.state))
            .collect();
        let bridge = links::owned(&self.handle, &network.bridge, LinkKind::Bridge, &mark)
            .await?
            .ok_or_else(|| {
                zixiao_core::Error::Internal(format!(
                    "bridge {} missing after ensure",
                    network.bridge
                ))
            })?;
        for attachment in attachments.iter().filter(|a| a.network == network.name) {
            let name = attachment.host_interface.as_str();
            let Some(link) = links::lookup(&self.handle, name).await? else {
                // Gone with its instance's runtime: the runtime's to make.
                continue;
            };
            if link
                .check(name, LinkKind::of(&attachment.host_interface), &mark)
                .is_err()
            {
                continue;
            }
            if link.controller == Some(bridge) && link.up {
                continue;
            }
            let mut plug = LinkUnspec::new_with_index(link.index).controller(bridge);
            if let Some(mtu) = crate::overlay::link_mtu(&self.handle, bridge).await? {
                plug = plug.mtu(mtu);
            }
            self.handle
                .link()
                .set(plug.up().build())
                .execute()
                .await
                .map_err(|e| {
                    netlink_error(&format!("plugging {name} into {}", network.bridge), e)
                })?;
            repaired.push(format!("link {name} back on {}", network.bridge));
        }
        self.plug_dhcp(attachments)?;
        Ok(repaired)
    }

    /// The bridge at `index`: up, with every gateway address.
    async fn judge_bridge(&self, network: &Network, index: u32, up: bool) -> Result<NetworkPart> {
        let addresses = crate::host::addresses(&self.handle).await?;
        let held: BTreeSet<IpAddr> = addresses
            .iter()
            .filter(|a| a.header.index == index)
            .flat_map(|a| {
                a.attributes.iter().filter_map(|attribute| match attribute {
                    AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                })
            })
            .collect();
        let missing: Vec<String> = network
            .subnets
            .iter()
            .filter(|s| !held.contains(&s.gateway))
            .map(|s| s.gateway.to_string())
            .collect();
        let mut problems = Vec::new();
        if !up {
            problems.push("is not up".to_owned());
        }
        if !missing.is_empty() {
            problems.push(format!("lacks gateway {}", missing.join(", ")));
        }
        Ok(if problems.is_empty() {
            NetworkPart::new(Kind::Bridge, PartState::Ok, network.bridge.as_str())
        } else {
            NetworkPart::new(
                Kind::Bridge,
                PartState::Drifted,
                format!("{} {}", network.bridge, problems.join(" and ")),
            )
        })
    }

    /// The VXLAN device, its peers and its forwarding and neighbour
    /// entries: not needed without a VNI or an underlay address; else the
    /// device on the bridge with the network's VNI, holding exactly what
    /// `view` asks for.
    async fn judge_overlay(
        &self,
        network: &Network,
        mark: &HostMark,
        bridge: Option<u32>,
        view: &OverlayView,
    ) -> Result<(NetworkPart, NetworkPart, NetworkPart)> {
        let (Some(underlay), Some(vni)) = (self.underlay, network.vni) else {
            let why = if network.vni.is_none() {
                "the network has no VNI"
            } else {
                "this node has no underlay address"
            };
            return Ok((
                NetworkPart::new(Kind::Vxlan, PartState::NotNeeded, why),
                NetworkPart::new(Kind::Peers, PartState::NotNeeded, why),
                NetworkPart::new(Kind::Forwarding, PartState::NotNeeded, why),
            ));
        };
        let name = VxlanName::of(&network.bridge);
        let vxlan = match links::lookup(&self.handle, name.as_str()).await? {
            None => NetworkPart::new(Kind::Vxlan, PartState::Missing, name.as_str()),
            Some(link) => match link.check(name.as_str(), LinkKind::Vxlan, mark) {
                Err(e) => NetworkPart::new(Kind::Vxlan, PartState::Drifted, e.to_string()),
                Ok(()) => {
                    let matches =
                        crate::overlay::vxlan_matches(&self.handle, link.index, vni, underlay)
                            .await?;
                    let mut problems = Vec::new();
                    if !matches {
                        problems.push(format!("is not VNI {vni} from {}", underlay.address()));
                    }
                    if bridge.is_none() || link.controller != bridge {
                        problems.push(format!("is not on {}", network.bridge));
                    }
                    if !link.up {
                        problems.push("is not up".to_owned());
                    }
                    if problems.is_empty() {
                        NetworkPart::new(Kind::Vxlan, PartState::Ok, format!("{name} VNI {vni}"))
                    } else {
                        NetworkPart::new(
                            Kind::Vxlan,
                            PartState::Drifted,
                            format!("{name} {}", problems.join(" and ")),
                        )
                    }
                }
            },
        };
        let held = self.programmed_of(network).await?;
        let expected = Programmed::of(view);
        let (present, wanted) = (&held.peers, &expected.peers);
        let list = |set: &mut dyn Iterator<Item = &IpAddr>| {
            set.map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
        };
        let peers_part = if present == wanted {
            let detail = if wanted.is_empty() {
                "none (no other node carries it)".to_owned()
            } else {
                list(&mut wanted.iter())
            };
            NetworkPart::new(Kind::Peers, PartState::Ok, detail)
        } else {
            let mut problems = Vec::new();
            let missing: Vec<_> = wanted.difference(present).collect();
            let extra: Vec<_> = present.difference(wanted).collect();
            if !missing.is_empty() {
                problems.push(format!("missing {}", list(&mut missing.into_iter())));
            }
            if !extra.is_empty() {
                problems.push(format!("extra {}", list(&mut extra.into_iter())));
            }
            NetworkPart::new(Kind::Peers, PartState::Drifted, problems.join("; "))
        };
        Ok((vxlan, peers_part, judge_forwarding(&held, &expected)))
    }

    /// The instances' host links: each present, up, and on the bridge.
    async fn judge_links(
        &self,
        bridge: Option<u32>,
        attachments: &[NetworkAttachment],
    ) -> Result<NetworkPart> {
        if attachments.is_empty() {
            return Ok(NetworkPart::new(
                Kind::Links,
                PartState::NotNeeded,
                "no instance runs here on it",
            ));
        }
        let mut missing = Vec::new();
        let mut off = Vec::new();
        for attachment in attachments {
            let name = attachment.host_interface.as_str();
            match links::lookup(&self.handle, name).await? {
                None => missing.push(name.to_owned()),
                Some(link) if bridge.is_none() || link.controller != bridge || !link.up => {
                    off.push(name.to_owned())
                }
                Some(_) => {}
            }
        }
        let total = attachments.len();
        Ok(match (missing.is_empty(), off.is_empty()) {
            (true, true) => {
                NetworkPart::new(Kind::Links, PartState::Ok, format!("{total} on the bridge"))
            }
            (false, _) => NetworkPart::new(
                Kind::Links,
                PartState::Missing,
                format!(
                    "{} of {total} missing: {}{}",
                    missing.len(),
                    missing.join(", "),
                    if off.is_empty() {
                        String::new()
                    } else {
                        format!("; off the bridge: {}", off.join(", "))
                    }
                ),
            ),
            (true, false) => NetworkPart::new(
                Kind::Links,
                PartState::Drifted,
                format!(
                    "{} of {total} off the bridge: {}",
                    off.len(),
                    off.join(", ")
                ),
            ),
        })
    }
}

/// The forwarding (FDB, on the VXLAN device and its bridge port) and
/// neighbour entries `held`, against those `wanted`: how many of each are
/// in place, missing (or pointing at another node) and stale.
fn judge_forwarding(held: &Programmed, wanted: &Programmed) -> NetworkPart {
    let fdb = wanted.tunnel.len() + wanted.bridged.len();
    let neighbours = wanted.neighbours.len();
    let (fdb_missing, neighbours_missing, stale) = held.drift(wanted);
    let counts = format!(
        "{} of {fdb} FDB, {} of {neighbours} neighbour entries",
        fdb - fdb_missing,
        neighbours - neighbours_missing
    );
    match (fdb_missing + neighbours_missing, stale) {
        (0, 0) if fdb == 0 => NetworkPart::new(
            Kind::Forwarding,
            PartState::Ok,
            "none (no instance of it on another node)",
        ),
        (0, 0) => NetworkPart::new(Kind::Forwarding, PartState::Ok, counts),
        (missing, 0) => NetworkPart::new(
            Kind::Forwarding,
            PartState::Missing,
            format!("{counts}; {missing} missing"),
        ),
        (missing, stale) => NetworkPart::new(
            Kind::Forwarding,
            PartState::Drifted,
            format!("{counts}; {missing} missing, {stale} stale"),
        ),
    }
}
