//! A network's subnets must not overlap what the node already uses: an
//! address of any of its links, or a route (other than a default route,
//! which every subnet lies in, and the local table's entries, which are its
//! addresses again). Putting a gateway of such a subnet on a bridge would
//! take traffic away from the node's own networks. The network's own bridge
//! is left out, so ensuring a network again is not refused by itself.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};
use zixiao_core::model::{Cidr, Network};
use zixiao_core::{Error, Result};

use crate::host::netlink_error;

/// The routing table of the node's own addresses.
const LOCAL_TABLE: u32 = 255;

/// Ok when no subnet of `network` overlaps an address or route of the
/// node's, leaving out link `own_bridge` (the network's bridge, when it
/// exists already). Errors: `FailedPrecondition` naming the subnet and the
/// overlapping address or route; netlink's.
pub(crate) async fn check(
    handle: &Handle,
    network: &Network,
    own_bridge: Option<u32>,
) -> Result<()> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| netlink_error("listing links", e))?;
    let names: BTreeMap<u32, String> = links
        .iter()
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some((l.header.index, name.clone())),
                _ => None,
            })
        })
        .collect();
    let name = |index: u32| {
        names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("link #{index}"))
    };
    let clash = |cidr: &Cidr, what: String| {
        network
            .subnets
            .iter()
            .find(|s| s.cidr.overlaps(cidr))
            .map(|s| {
                Error::FailedPrecondition(format!(
                    "subnet {} of network `{}` overlaps {what} of this node; pick a subnet \
                     the node does not use",
                    s.cidr, network.name
                ))
            })
    };

    let addresses = crate::host::addresses(handle).await?;
    for address in addresses {
        if Some(address.header.index) == own_bridge {
            continue;
        }
        // IFA_LOCAL is the address itself (IFA_ADDRESS is the peer's on
        // point-to-point links); IPv6 only sends IFA_ADDRESS.
        let ip = address
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
            .or_else(|| {
                address.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
        let Some(ip) = ip else { continue };
        let Ok(cidr) = Cidr::new(ip, address.header.prefix_len) else {
            continue;
        };
        let what = format!(
            "address {ip}/{} on {}",
            address.header.prefix_len,
            name(address.header.index)
        );
        if let Some(error) = clash(&cidr, what) {
            return Err(error);
        }
    }

    for request in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let routes: Vec<RouteMessage> = handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("listing routes", e))?;
        for route in routes {
            let mut table = u32::from(route.header.table);
            let (mut destination, mut oif) = (None, None);
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                        destination = Some(IpAddr::V4(*a))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                        destination = Some(IpAddr::V6(*a))
                    }
                    _ => {}
                }
            }
            let prefix_len = route.header.destination_prefix_length;
            if table == LOCAL_TABLE || prefix_len == 0 || (oif.is_some() && oif == own_bridge) {
                continue;
            }
            let Some(destination) = destination else {
                continue;
            };
            let Ok(cidr) = Cidr::new(destination, prefix_len) else {
                continue;
            };
            let what = match oif {
                Some(index) => format!("route {destination}/{prefix_len} (dev {})", name(index)),
                None => format!("route {destination}/{prefix_len}"),
            };
            if let Some(error) = clash(&cidr, what) {
                return Err(error);
            }
        }
    }
    Ok(())
}
