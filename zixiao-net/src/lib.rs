//! Zixiao networking: IP address management in the [`Store`](zixiao_core::Store),
//! Linux bridges, veth pairs into containers' network namespaces, NAT and
//! isolation through nftables.
//!
//! - [`StoreIpam`] implements zixiao-core's
//!   [`AddressAllocator`](zixiao_core::AddressAllocator): address pools from
//!   a network's IPv4/IPv6 subnets, allocated with compare-and-swap; on
//!   an IPv6 /64 the address each NIC forms by SLAAC from its MAC.
//! - [`LinuxNetwork`] implements [`NetworkHost`](zixiao_core::NetworkHost)
//!   (bridges, gateway addresses, an nftables table per network, orphan
//!   removal) and attaches containers ([`LinuxNetwork::attach_container`])
//!   and VMs ([`LinuxNetwork::attach_tap`]: persistent TAP devices), and
//!   publishes instances' ports ([`LinuxNetwork::publish_ports`]: DNAT in
//!   a table per instance, see [`ports`]).
//! - [`overlay`]: with an [`Underlay`] address, each network's VXLAN
//!   segment (its own VNI) between the nodes that carry it, its peers
//!   and every remote instance's FDB and neighbour entries programmed
//!   from the store, and an anycast gateway.
//! - [`dhcp`]: a DHCPv4 responder (dnsmasq) per network on each node,
//!   handing each plugged attachment exactly its IPAM address, and the
//!   router advertisements of the network's IPv6 /64 (SLAAC).
//!
//! Everything created on a host is named from the store's objects and its
//! installation id with a `zx` prefix (bridges `zxb…`, veths `zxv…`, TAPs
//! `zxt…`, VXLAN devices `zxx…`, tables `inet zx_<installation>_<network>`, namespaces
//! `zx-<installation>-<instance>`), and every link is marked with its
//! installation and network, so it can be found and removed after a crash,
//! and nothing of another installation on the same host, or of anyone
//! else, is ever changed or removed.

pub mod dhcp;
pub mod endpoint;
pub mod host;
mod inspect;
pub mod ipam;
mod links;
pub mod netns;
pub mod nft;
mod overlap;
pub mod overlay;
pub mod ports;
pub mod tap;

pub use host::{LinuxNetwork, DEFAULT_NETNS_DIR};
pub use ipam::StoreIpam;
pub use overlay::Underlay;

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
