//! Zixiao networking: IP address management in the [`Store`](zixiao_core::Store),
//! Linux bridges, veth pairs into containers' network namespaces, NAT and
//! isolation through nftables.
//!
//! - [`StoreIpam`] implements zixiao-core's
//!   [`AddressAllocator`](zixiao_core::AddressAllocator): address pools from
//!   a network's IPv4/IPv6 subnets, allocated with compare-and-swap.
//! - [`LinuxNetwork`] implements [`NetworkHost`](zixiao_core::NetworkHost)
//!   (bridges, gateway addresses, an nftables table per network, orphan
//!   removal) and attaches containers ([`LinuxNetwork::attach_container`])
//!   and VMs ([`LinuxNetwork::attach_tap`]: persistent TAP devices).
//!
//! Everything created on a host is named from the store's objects with a
//! `zx` prefix (bridges `zxb…`, veths `zxv…`, TAPs `zxt…`, tables
//! `inet zx_…`, namespaces `zx-<instance>`), so it can be found and removed
//! after a crash.

pub mod endpoint;
pub mod host;
pub mod ipam;
pub mod netns;
pub mod nft;
pub mod tap;

pub use host::{LinuxNetwork, DEFAULT_NETNS_DIR};
pub use ipam::StoreIpam;
