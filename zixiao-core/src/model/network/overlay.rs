//! A network's overlay as one node should hold it ([`OverlayView`]): the
//! other nodes carrying the network (head-end replication of broadcast)
//! and every instance attachment on those nodes (its MAC, its addresses,
//! its node), from which the node programs static forwarding and
//! neighbour entries instead of learning and flooding. The controller
//! computes one view per node from the store; a node's agent gets it from
//! the wire and builds it with [`OverlayView::new`], which bounds it and
//! checks every entry, so a host never programs a bad one.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::{Error, Result};

use super::is_underlay_address;

/// A unicast Ethernet address, parsed from `xx:xx:xx:xx:xx:xx`.
///
/// ```
/// use zixiao_core::model::MacAddress;
/// let mac = MacAddress::try_from("02:AB:00:00:00:01").unwrap();
/// assert_eq!(mac.to_string(), "02:ab:00:00:00:01");
/// assert!(MacAddress::try_from("01:00:5e:00:00:01").is_err(), "multicast");
/// assert!(MacAddress::try_from("02:00:00:00:00:01,10.0.0.9").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// Its six octets.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl TryFrom<&str> for MacAddress {
    type Error = Error;

    /// Errors: `InvalidArgument` on `mac` for anything but six two-digit
    /// hex octets separated by `:`, or a multicast address.
    fn try_from(text: &str) -> Result<Self> {
        let invalid =
            |why: &str| Error::invalid("mac", format!("`{}` is not {why}", text.escape_debug()));
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts
                .next()
                .filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| invalid("a MAC address like 02:00:00:00:00:01"))?;
            *octet = u8::from_str_radix(part, 16)
                .map_err(|_| invalid("a MAC address like 02:00:00:00:00:01"))?;
        }
        if parts.next().is_some() {
            return Err(invalid("a MAC address like 02:00:00:00:00:01"));
        }
        MacAddress::try_from(octets)
    }
}

impl TryFrom<[u8; 6]> for MacAddress {
    type Error = Error;

    /// Errors: `InvalidArgument` on `mac` for a multicast (or broadcast)
    /// address.
    fn try_from(octets: [u8; 6]) -> Result<Self> {
        if octets[0] & 1 == 1 {
            return Err(Error::invalid(
                "mac",
                format!("`{}` is not a unicast MAC address", MacAddress(octets)),
            ));
        }
        Ok(MacAddress(octets))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One instance attachment on another node, as a node programs it: frames
/// to `mac` go through the VXLAN tunnel to `node`, and `addresses` resolve
/// to `mac` on the bridge without asking anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayEndpoint {
    /// The attachment's MAC.
    pub mac: MacAddress,
    /// Its addresses (one per subnet of the network).
    pub addresses: Vec<IpAddr>,
    /// The underlay address of the node it runs on.
    pub node: IpAddr,
}

/// What one node should hold of a network's overlay: its peers (the
/// underlay addresses of the other nodes carrying it) and the remote
/// endpoints (the attachments on those nodes). Only built by
/// [`OverlayView::new`]: bounded, every address usable, every endpoint's
/// node one of the peers, no MAC twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayView {
    peers: Vec<IpAddr>,
    endpoints: Vec<OverlayEndpoint>,
}

impl OverlayView {
    /// The most peers one view holds: nodes carrying one network.
    pub const MAX_PEERS: usize = 4096;
    /// The most remote endpoints one view holds: instance attachments on
    /// one network, with room to spare.
    pub const MAX_ENDPOINTS: usize = 65_536;
    /// The most addresses of one endpoint (one per subnet; a network has
    /// at most two, this leaves room).
    pub const MAX_ADDRESSES: usize = 8;

    /// A node's view of nothing: it carries the network for no one.
    pub fn empty() -> OverlayView {
        OverlayView::default()
    }

    /// The view of `peers` and `endpoints`, sorted (peers by address,
    /// endpoints by MAC). Errors: `InvalidArgument` naming the field
    /// (`peers`, `peers[i]`, `endpoints`, `endpoints[i].addresses[j]`,
    /// `endpoints[i].node`, `endpoints[i].mac`): too many entries, a peer
    /// twice or one that is not a reachable unicast address, an endpoint
    /// address that is not unicast, an endpoint on a node that is not a
    /// peer, a MAC twice.
    ///
    /// ```
    /// use zixiao_core::model::{MacAddress, OverlayEndpoint, OverlayView};
    /// let endpoint = OverlayEndpoint {
    ///     mac: MacAddress::try_from("02:00:00:00:00:01").unwrap(),
    ///     addresses: vec!["10.0.0.2".parse().unwrap()],
    ///     node: "192.0.2.2".parse().unwrap(),
    /// };
    /// let peers = vec!["192.0.2.2".parse().unwrap()];
    /// let view = OverlayView::new(peers, vec![endpoint.clone()]).unwrap();
    /// assert_eq!(view.endpoints().len(), 1);
    /// let err = OverlayView::new(Vec::new(), vec![endpoint]).unwrap_err();
    /// assert!(err.to_string().contains("endpoints[0].node"), "{err}");
    /// ```
    pub fn new(mut peers: Vec<IpAddr>, mut endpoints: Vec<OverlayEndpoint>) -> Result<Self> {
        if peers.len() > Self::MAX_PEERS {
            return Err(Error::invalid(
                "peers",
                format!(
                    "{} peers; at most {} nodes can carry one network",
                    peers.len(),
                    Self::MAX_PEERS
                ),
            ));
        }
        if endpoints.len() > Self::MAX_ENDPOINTS {
            return Err(Error::invalid(
                "endpoints",
                format!(
                    "{} endpoints; at most {} attachments per network",
                    endpoints.len(),
                    Self::MAX_ENDPOINTS
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, peer) in peers.iter().enumerate() {
            if !is_underlay_address(*peer) {
                return Err(Error::invalid(
                    format!("peers[{i}]"),
                    format!("{peer} is not a unicast address another node can be reached at"),
                ));
            }
            if !seen.insert(*peer) {
                return Err(Error::invalid(
                    format!("peers[{i}]"),
                    format!("{peer} is named twice"),
                ));
            }
        }
        let mut macs = BTreeSet::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            if !seen.contains(&endpoint.node) {
                return Err(Error::invalid(
                    format!("endpoints[{i}].node"),
                    format!(
                        "{} is not one of the peers: an endpoint runs on a node carrying the network",
                        endpoint.node
                    ),
                ));
            }
            if !macs.insert(endpoint.mac) {
                return Err(Error::invalid(
                    format!("endpoints[{i}].mac"),
                    format!("{} is named twice", endpoint.mac),
                ));
            }
            if endpoint.addresses.len() > Self::MAX_ADDRESSES {
                return Err(Error::invalid(
                    format!("endpoints[{i}].addresses"),
                    format!(
                        "{} addresses; at most {}",
                        endpoint.addresses.len(),
                        Self::MAX_ADDRESSES
                    ),
                ));
            }
            for (j, address) in endpoint.addresses.iter().enumerate() {
                if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
                    return Err(Error::invalid(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{address} is not an instance's unicast address"),
                    ));
                }
            }
        }
        peers.sort();
        endpoints.sort_by_key(|e| e.mac);
        Ok(OverlayView { peers, endpoints })
    }

    /// The underlay addresses of the other nodes carrying the network.
    pub fn peers(&self) -> &[IpAddr] {
        &self.peers
    }

    /// The attachments on those nodes, by MAC.
    pub fn endpoints(&self) -> &[OverlayEndpoint] {
        &self.endpoints
    }

    /// Whether the node holds nothing of the network's overlay.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.endpoints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(mac: &str, node: &str) -> OverlayEndpoint {
        OverlayEndpoint {
            mac: MacAddress::try_from(mac).unwrap(),
            addresses: vec!["10.0.0.9".parse().unwrap()],
            node: node.parse().unwrap(),
        }
    }

    #[test]
    fn a_view_is_bounded_and_checked_entry_by_entry() {
        let peer: IpAddr = "192.0.2.2".parse().unwrap();
        let twice = vec![
            endpoint("02:00:00:00:00:01", "192.0.2.2"),
            endpoint("02:00:00:00:00:01", "192.0.2.2"),
        ];
        let err = OverlayView::new(vec![peer], twice).unwrap_err();
        assert!(err.to_string().contains("endpoints[1].mac"), "{err}");
        let err = OverlayView::new(vec![peer, peer], Vec::new()).unwrap_err();
        assert!(err.to_string().contains("peers[1]"), "{err}");
        let err = OverlayView::new(vec!["127.0.0.1".parse().unwrap()], Vec::new()).unwrap_err();
        assert!(err.to_string().contains("peers[0]"), "{err}");
        let mut multicast = endpoint("02:00:00:00:00:02", "192.0.2.2");
        multicast.addresses.push("224.0.0.1".parse().unwrap());
        let err = OverlayView::new(vec![peer], vec![multicast]).unwrap_err();
        assert!(
            err.to_string().contains("endpoints[0].addresses[1]"),
            "{err}"
        );
        let many = vec![peer; OverlayView::MAX_PEERS + 1];
        let err = OverlayView::new(many, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        let view = OverlayView::new(
            vec![peer],
            vec![
                endpoint("02:00:00:00:00:09", "192.0.2.2"),
                endpoint("02:00:00:00:00:03", "192.0.2.2"),
            ],
        )
        .unwrap();
        assert_eq!(view.endpoints()[0].mac.to_string(), "02:00:00:00:00:03");
        assert!(OverlayView::empty().is_empty());
    }
}
