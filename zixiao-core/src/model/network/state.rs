//! What a network looks like on each node, as `network get` shows it and
//! `network repair` mends: each [`NetworkPart`] the node should hold for
//! the network (its bridge, VXLAN device, overlay peers and forwarding entries, rules, DHCP
//! responder, the instances' links on the bridge), whether it is there as
//! the store says it should be, and why not.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Network;

/// One kind of thing a node holds for a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPartKind {
    /// The Linux bridge, up, with the gateway addresses.
    Bridge,
    /// The VXLAN device of the network's segment, on the bridge.
    Vxlan,
    /// The overlay's replication entries: one per other node carrying it.
    Peers,
    /// The overlay's static entries for the instances on other nodes: a
    /// forwarding entry per MAC on the VXLAN device and a neighbour entry
    /// per address on the bridge.
    Forwarding,
    /// The nftables table: isolation, and NAT when the network has it.
    Rules,
    /// The DHCP responder.
    Dhcp,
    /// The host-side links of the instances on the node, on the bridge.
    Links,
}

impl NetworkPartKind {
    /// Every kind, in the order `network get` shows them.
    pub const ALL: [NetworkPartKind; 7] = [
        NetworkPartKind::Bridge,
        NetworkPartKind::Vxlan,
        NetworkPartKind::Peers,
        NetworkPartKind::Forwarding,
        NetworkPartKind::Rules,
        NetworkPartKind::Dhcp,
        NetworkPartKind::Links,
    ];

    /// The kind's name, as shown and serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkPartKind::Bridge => "bridge",
            NetworkPartKind::Vxlan => "vxlan",
            NetworkPartKind::Peers => "peers",
            NetworkPartKind::Forwarding => "forwarding",
            NetworkPartKind::Rules => "rules",
            NetworkPartKind::Dhcp => "dhcp",
            NetworkPartKind::Links => "links",
        }
    }
}

impl fmt::Display for NetworkPartKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for NetworkPartKind {
    type Error = String;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        NetworkPartKind::ALL
            .into_iter()
            .find(|k| k.as_str() == value)
            .ok_or_else(|| format!("unknown network part `{value}`"))
    }
}

/// Whether a part is as the store says it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    /// In place and as it should be.
    Ok,
    /// Should be there and is not.
    Missing,
    /// There, but not as it should be (the detail says how).
    Drifted,
    /// This network does not need it on this node (no overlay, no IPv4
    /// subnet for DHCP, no instances).
    NotNeeded,
}

impl PartState {
    /// The state's name, as shown and serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            PartState::Ok => "ok",
            PartState::Missing => "missing",
            PartState::Drifted => "drifted",
            PartState::NotNeeded => "not_needed",
        }
    }

    /// Whether the part needs no repair.
    pub fn is_healthy(self) -> bool {
        matches!(self, PartState::Ok | PartState::NotNeeded)
    }
}

impl TryFrom<&str> for PartState {
    type Error = String;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        [
            PartState::Ok,
            PartState::Missing,
            PartState::Drifted,
            PartState::NotNeeded,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
        .ok_or_else(|| format!("unknown part state `{value}`"))
    }
}

impl fmt::Display for PartState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One part of a network on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPart {
    /// What it is.
    pub kind: NetworkPartKind,
    /// Whether it is as it should be.
    pub state: PartState,
    /// For people: what is there (device names, peers, counts), or what
    /// is missing or wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl NetworkPart {
    /// A part in `state`, with `detail`.
    pub fn new(kind: NetworkPartKind, state: PartState, detail: impl Into<String>) -> Self {
        NetworkPart {
            kind,
            state,
            detail: detail.into(),
        }
    }
}

/// A network on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNetworkState {
    /// The node's id.
    pub node: String,
    /// Its parts, in [`NetworkPartKind::ALL`] order; empty when `error` is set.
    #[serde(default)]
    pub parts: Vec<NetworkPart>,
    /// Why the node could not be asked (its agent is down, it sets up no
    /// networks), if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NodeNetworkState {
    /// Whether every part is in place (and the node could be asked).
    pub fn is_healthy(&self) -> bool {
        self.error.is_none() && self.parts.iter().all(|p| p.state.is_healthy())
    }

    /// The part of `kind`, if the node reported it.
    pub fn part(&self, kind: NetworkPartKind) -> Option<&NetworkPart> {
        self.parts.iter().find(|p| p.kind == kind)
    }
}

/// A network and its state on every node that sets up networks: the
/// answer of `network get` and `network repair`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// The network as stored.
    #[serde(flatten)]
    pub network: Network,
    /// Its state per node, in node order.
    #[serde(default)]
    pub nodes: Vec<NodeNetworkState>,
    /// What `network repair` mended, per node (`node: what`); empty for
    /// `network get`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

impl NetworkStatus {
    /// Whether the network is in place on every node.
    pub fn is_healthy(&self) -> bool {
        self.nodes.iter().all(NodeNetworkState::is_healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in NetworkPartKind::ALL {
            assert_eq!(NetworkPartKind::try_from(kind.as_str()), Ok(kind));
        }
        for state in [PartState::Ok, PartState::Missing, PartState::Drifted] {
            assert_eq!(PartState::try_from(state.as_str()), Ok(state));
        }
        assert!(NetworkPartKind::try_from("bridges").is_err());
    }

    #[test]
    fn a_node_is_healthy_only_when_every_part_is() {
        let mut node = NodeNetworkState {
            node: "n1".into(),
            parts: vec![
                NetworkPart::new(NetworkPartKind::Bridge, PartState::Ok, "zxb1"),
                NetworkPart::new(NetworkPartKind::Vxlan, PartState::NotNeeded, ""),
            ],
            error: None,
        };
        assert!(node.is_healthy());
        node.parts[1].state = PartState::Missing;
        assert!(!node.is_healthy());
        node.parts[1].state = PartState::Ok;
        node.error = Some("agent down".into());
        assert!(!node.is_healthy());
    }
}
