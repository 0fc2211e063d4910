//! Networks: a named L2 segment (a Linux bridge on every node) with one IPv4
//! and/or one IPv6 subnet, outbound NAT and isolation; and the
//! [`NetworkAttachment`] an instance records for each network it joins.
//!
//! Every host-side name (bridge, veth, TAP, nftables table) is derived here
//! from stable inputs with a `zx` prefix, so a restarted agent finds what it
//! created and can remove what the store no longer knows.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::validate_name;
use crate::Error;

/// The prefix of every host interface and nftables table Zixiao creates.
pub const HOST_NAME_PREFIX: &str = "zx";
/// Prefix of bridge names (`zxb` + 8 hex digits).
pub const BRIDGE_PREFIX: &str = "zxb";
/// Prefix of host-side veth names of containers (`zxv` + 10 hex digits).
pub const VETH_PREFIX: &str = "zxv";
/// Prefix of TAP device names of VMs (`zxt` + 10 hex digits).
pub const TAP_PREFIX: &str = "zxt";
/// Linux's limit on interface names, without the NUL.
pub const MAX_INTERFACE_NAME: usize = 15;
/// The most subnets a network has: one IPv4, one IPv6.
const MAX_SUBNETS: usize = 2;
/// The most reserved ranges per subnet.
const MAX_RESERVED: usize = 64;

/// An IP prefix such as `10.0.0.0/24` or `fd00::/64`. Stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    address: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// `address/prefix_len`; errors when the prefix is longer than the family allows.
    pub fn new(address: IpAddr, prefix_len: u8) -> Result<Self, String> {
        let max = max_prefix(address);
        if prefix_len > max {
            return Err(format!("prefix length {prefix_len} is longer than {max}"));
        }
        Ok(Cidr {
            address,
            prefix_len,
        })
    }

    /// The address as written (it may have host bits set: `10.0.0.5/24`).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether this is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.address.is_ipv4()
    }

    /// The number of host bits.
    pub fn host_bits(&self) -> u32 {
        u32::from(max_prefix(self.address) - self.prefix_len)
    }

    /// The first address of the prefix as a number.
    pub fn first(&self) -> u128 {
        let bits = self.host_bits();
        let mask = if bits >= 128 {
            0
        } else {
            !((1u128 << bits) - 1)
        };
        to_u128(self.address) & mask
    }

    /// The last address of the prefix as a number.
    pub fn last(&self) -> u128 {
        let bits = self.host_bits();
        let span = if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        self.first() | span
    }

    /// The prefix with the host bits cleared.
    pub fn network(&self) -> Cidr {
        Cidr {
            address: from_u128(self.first(), self.address.is_ipv4()),
            prefix_len: self.prefix_len,
        }
    }

    /// Whether `address` lies in the prefix.
    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv4() == self.is_ipv4() && {
            let n = to_u128(address);
            n >= self.first() && n <= self.last()
        }
    }

    /// Whether the two prefixes share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `address/len`; a bare address is a single-address prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let address: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR prefix"))?;
        let prefix_len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .map_err(|_| format!("`{s}` has an invalid prefix length `{l}`"))?,
            None => max_prefix(address),
        };
        Cidr::new(address, prefix_len).map_err(|e| format!("`{s}`: {e}"))
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn max_prefix(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address numbered `n` of a family (the low 32 bits for IPv4).
pub fn from_u128(n: u128, ipv4: bool) -> IpAddr {
    if ipv4 {
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

/// One subnet of a network: its prefix, the gateway (the bridge's address on
/// every node), and ranges never handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// The prefix, host bits cleared.
    pub cidr: Cidr,
    /// The gateway address inside `cidr`.
    pub gateway: IpAddr,
    /// Ranges of `cidr` the address allocator skips.
    #[serde(default)]
    pub reserved: Vec<Cidr>,
}

impl Subnet {
    /// Whether the allocator may hand out `address`: in the prefix, not its
    /// network or (IPv4) broadcast address, not the gateway, not reserved.
    pub fn is_assignable(&self, address: IpAddr) -> bool {
        let n = to_u128(address);
        self.cidr.contains(address)
            && !(self.cidr.is_ipv4() && self.cidr.host_bits() >= 2 && n == self.cidr.last())
            && !(self.cidr.host_bits() >= 1 && n == self.cidr.first())
            && address != self.gateway
            && !self.reserved.iter().any(|r| r.contains(address))
    }
}

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Unique name (a DNS label); also its id in the store.
    pub name: String,
    /// At most one IPv4 and one IPv6 subnet.
    pub subnets: Vec<Subnet>,
    /// The Linux bridge every node creates for it.
    pub bridge: String,
    /// Whether traffic leaving the subnets is masqueraded behind the node's address.
    pub nat: bool,
    /// Whether traffic between this network and other Zixiao networks is dropped.
    pub isolated: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Set while the network is being deleted: no address is handed out on
    /// it any more (a create racing the delete fails rather than join a
    /// network that is going away).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// Store revision of this object.
    #[serde(default)]
    pub revision: u64,
}

impl Network {
    /// The nftables table (family `inet`) holding its NAT and isolation rules.
    pub fn nft_table(&self) -> String {
        format!("{HOST_NAME_PREFIX}_{}", self.bridge)
    }
}

/// A request to create a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// Unique name: a DNS label.
    pub name: String,
    /// CIDR prefixes: at most one IPv4 and one IPv6 (`10.10.0.0/24`, `fd10::/64`).
    pub subnets: Vec<String>,
    /// Gateways, at most one per family; the first usable address of a subnet when absent.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Addresses or prefixes inside the subnets never handed out.
    #[serde(default)]
    pub reserved: Vec<String>,
    /// Masquerade traffic leaving the subnets (default on).
    #[serde(default = "yes")]
    pub nat: bool,
    /// Drop traffic to and from other Zixiao networks (default on).
    #[serde(default = "yes")]
    pub isolated: bool,
}

fn yes() -> bool {
    true
}

impl CreateNetwork {
    /// A request for network `name` over `subnets`, with NAT and isolation on.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        subnets: impl IntoIterator<Item = S>,
    ) -> Self {
        CreateNetwork {
            name: name.into(),
            subnets: subnets.into_iter().map(Into::into).collect(),
            gateways: Vec::new(),
            reserved: Vec::new(),
            nat: true,
            isolated: true,
        }
    }

    /// Checks every field and builds the network, naming the field at fault.
    ///
    /// ```
    /// use zixiao_core::model::CreateNetwork;
    /// let net = CreateNetwork::new("lan", ["10.1.0.0/24"]).validate(chrono::Utc::now()).unwrap();
    /// assert_eq!(net.subnets[0].gateway.to_string(), "10.1.0.1");
    /// let err = CreateNetwork::new("lan", ["10.1.0.0/33"]).validate(chrono::Utc::now()).unwrap_err();
    /// assert!(err.to_string().starts_with("invalid subnets[0]"));
    /// ```
    pub fn validate(&self, now: DateTime<Utc>) -> Result<Network, Error> {
        validate_name("name", &self.name)?;
        if self.subnets.is_empty() {
            return Err(Error::invalid(
                "subnets",
                "a network needs at least one subnet",
            ));
        }
        if self.subnets.len() > MAX_SUBNETS {
            return Err(Error::invalid(
                "subnets",
                "a network has at most one IPv4 and one IPv6 subnet",
            ));
        }
        let mut subnets: Vec<Subnet> = Vec::new();
        for (i, text) in self.subnets.iter().enumerate() {
            let field = format!("subnets[{i}]");
            let cidr: Cidr = text.parse().map_err(|e| Error::invalid(&field, e))?;
            let min_hosts = if cidr.is_ipv4() { 2 } else { 1 };
            if cidr.host_bits() < min_hosts || (cidr.is_ipv4() && cidr.host_bits() > 24) {
                return Err(Error::invalid(
                    &field,
                    format!(
                        "`{text}`: an IPv4 subnet must be /8 to /30, an IPv6 subnet at most /127"
                    ),
                ));
            }
            if cidr != cidr.network() {
                return Err(Error::invalid(
                    &field,
                    format!(
                        "`{text}` has host bits set; did you mean `{}`?",
                        cidr.network()
                    ),
                ));
            }
            if subnets.iter().any(|s| s.cidr.is_ipv4() == cidr.is_ipv4()) {
                return Err(Error::invalid(
                    &field,
                    "a network has at most one subnet per IP family",
                ));
            }
            // The first usable address, by default.
            let gateway = from_u128(cidr.first() + 1, cidr.is_ipv4());
            subnets.push(Subnet {
                cidr,
                gateway,
                reserved: Vec::new(),
            });
        }
        for (i, text) in self.gateways.iter().enumerate() {
            let field = format!("gateways[{i}]");
            let gateway: IpAddr = text
                .parse()
                .map_err(|_| Error::invalid(&field, format!("`{text}` is not an IP address")))?;
            let subnet = subnets
                .iter_mut()
                .find(|s| s.cidr.contains(gateway))
                .ok_or_else(|| Error::invalid(&field, format!("`{text}` is in no subnet")))?;
            let n = to_u128(gateway);
            if n == subnet.cidr.first() || (subnet.cidr.is_ipv4() && n == subnet.cidr.last()) {
                return Err(Error::invalid(
                    &field,
                    format!("`{text}` is the network or broadcast address of its subnet"),
                ));
            }
            if self.gateways[..i]
                .iter()
                .any(|g| g.parse::<IpAddr>().is_ok_and(|g| subnet.cidr.contains(g)))
            {
                return Err(Error::invalid(&field, "one gateway per subnet"));
            }
            subnet.gateway = gateway;
        }
        if self.reserved.len() > MAX_RESERVED {
            return Err(Error::invalid(
                "reserved",
                format!("at most {MAX_RESERVED} reserved ranges are allowed"),
            ));
        }
        for (i, text) in self.reserved.iter().enumerate() {
            let field = format!("reserved[{i}]");
            let range: Cidr = text.parse().map_err(|e| Error::invalid(&field, e))?;
            let range = range.network();
            let subnet = subnets
                .iter_mut()
                .find(|s| s.cidr.overlaps(&range) && s.cidr.prefix_len() <= range.prefix_len())
                .ok_or_else(|| Error::invalid(&field, format!("`{text}` is in no subnet")))?;
            subnet.reserved.push(range);
        }
        Ok(Network {
            bridge: bridge_name(&self.name),
            name: self.name.clone(),
            subnets,
            nat: self.nat,
            isolated: self.isolated,
            created_at: now,
            deleting: false,
            revision: 0,
        })
    }
}

/// One address of an attachment, with its prefix and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The instance's address.
    pub address: IpAddr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The default gateway of that family.
    pub gateway: IpAddr,
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// An instance's place on one network, recorded on the instance when its
/// addresses are allocated, so every node sets up the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The network's name.
    pub network: String,
    /// The interface inside the instance (`eth0`, `eth1`, in spec order).
    pub interface: String,
    /// The host-side device (a veth or TAP named `zxv…`/`zxt…`).
    pub host_interface: String,
    /// The bridge the host-side device joins.
    pub bridge: String,
    /// A stable, locally administered MAC address.
    pub mac: String,
    /// One address per subnet of the network.
    pub addresses: Vec<IpConfig>,
}

impl NetworkAttachment {
    /// The kernel's `ip=` argument for this attachment's IPv4 address
    /// (`ip=<address>::<gateway>:<netmask>::<interface>:off`), which a
    /// simple guest's init (or a kernel with IP autoconfiguration) reads to
    /// configure the interface; `None` without an IPv4 address.
    pub fn kernel_ip_arg(&self) -> Option<String> {
        self.addresses.iter().find_map(|ip| match ip.address {
            IpAddr::V4(address) => {
                let bits = u32::MAX
                    .checked_shl(32 - u32::from(ip.prefix_len.min(32)))
                    .unwrap_or(0);
                let netmask = std::net::Ipv4Addr::from(bits);
                Some(format!(
                    "ip={address}::{}:{netmask}::{}:off",
                    ip.gateway, self.interface
                ))
            }
            IpAddr::V6(_) => None,
        })
    }
}

/// FNV-1a, 64 bits: a stable hash for derived names (std's hasher may change).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The bridge name of network `network`: `zxb` and 8 hex digits.
pub fn bridge_name(network: &str) -> String {
    format!("{BRIDGE_PREFIX}{:08x}", fnv1a(&[network]) as u32)
}

/// The host-side device of `instance` on `network` with `prefix`
/// ([`VETH_PREFIX`] or [`TAP_PREFIX`]): the prefix and 10 hex digits.
pub fn host_interface_name(prefix: &str, instance: &str, network: &str) -> String {
    let hash = fnv1a(&[instance, network]);
    format!("{prefix}{:010x}", hash & 0xff_ffff_ffff)
}

/// A stable MAC address of `instance` on `network`: locally administered,
/// unicast (`02:…`).
pub fn mac_address(instance: &str, network: &str) -> String {
    let hash = fnv1a(&[instance, network, "mac"]).to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        hash[0], hash[1], hash[2], hash[3], hash[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(subnets: &[&str]) -> CreateNetwork {
        CreateNetwork::new("net", subnets.iter().copied())
    }

    #[test]
    fn cidr_parses_contains_and_overlaps() {
        let a: Cidr = "10.0.0.0/24".parse().unwrap();
        let b: Cidr = "10.0.0.128/25".parse().unwrap();
        let c: Cidr = "10.0.1.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.contains("10.0.0.255".parse().unwrap()));
        assert!(!a.contains("fd00::1".parse().unwrap()));
        let v6: Cidr = "fd00:1::/64".parse().unwrap();
        assert_eq!(v6.host_bits(), 64);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"10.0.0.0/24\"");
    }

    #[test]
    fn kernel_ip_arg_carries_address_gateway_netmask_and_interface() {
        let ip = |a: &str, len, gw: &str| IpConfig {
            address: a.parse().unwrap(),
            prefix_len: len,
            gateway: gw.parse().unwrap(),
        };
        let mut attachment = NetworkAttachment {
            network: "lan".into(),
            interface: "eth1".into(),
            host_interface: "zxt0000000001".into(),
            bridge: "zxb00000001".into(),
            mac: "02:00:00:00:00:01".into(),
            addresses: vec![ip("fd00::5", 64, "fd00::1"), ip("10.0.4.5", 22, "10.0.4.1")],
        };
        assert_eq!(
            attachment.kernel_ip_arg().as_deref(),
            Some("ip=10.0.4.5::10.0.4.1:255.255.252.0::eth1:off")
        );
        attachment.addresses.truncate(1);
        assert_eq!(attachment.kernel_ip_arg(), None);
    }

    #[test]
    fn validate_names_the_field_at_fault() {
        let now = Utc::now();
        let err = create(&["10.0.0.1/24"]).validate(now).unwrap_err();
        assert!(err.to_string().contains("subnets[0]"), "{err}");
        let err = create(&["10.0.0.0/24", "10.1.0.0/24"])
            .validate(now)
            .unwrap_err();
        assert!(err.to_string().contains("subnets[1]"), "{err}");
        let err = create(&[]).validate(now).unwrap_err();
        assert!(err.to_string().starts_with("invalid subnets"), "{err}");
        let mut req = create(&["10.0.0.0/24"]);
        req.gateways = vec!["10.0.1.1".into()];
        let err = req.validate(now).unwrap_err();
        assert!(err.to_string().contains("gateways[0]"), "{err}");
        req.gateways = vec!["10.0.0.0".into()];
        assert!(req.validate(now).is_err());
        let mut req = create(&["10.0.0.0/24"]);
        req.reserved = vec!["192.168.0.0/30".into()];
        let err = req.validate(now).unwrap_err();
        assert!(err.to_string().contains("reserved[0]"), "{err}");
    }

    #[test]
    fn subnet_skips_network_broadcast_gateway_and_reserved() {
        let mut req = create(&["10.0.0.0/29", "fd00::/120"]);
        req.reserved = vec!["10.0.0.4/31".into()];
        let net = req.validate(Utc::now()).unwrap();
        let v4 = &net.subnets[0];
        let ok: Vec<u8> = (0..8)
            .filter(|i| v4.is_assignable(format!("10.0.0.{i}").parse().unwrap()))
            .collect();
        assert_eq!(ok, vec![2, 3, 6]);
        assert_eq!(net.subnets[1].gateway.to_string(), "fd00::1");
    }

    #[test]
    fn derived_names_fit_linux_limits_and_are_stable() {
        let bridge = bridge_name("a-very-long-network-name-that-goes-on");
        assert!(bridge.len() <= MAX_INTERFACE_NAME && bridge.starts_with(BRIDGE_PREFIX));
        let veth = host_interface_name(VETH_PREFIX, "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "lan");
        assert_eq!(veth.len(), 13);
        assert_eq!(
            veth,
            host_interface_name(VETH_PREFIX, "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "lan")
        );
        assert_ne!(
            veth,
            host_interface_name(VETH_PREFIX, "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "wan")
        );
        let mac = mac_address("x", "lan");
        assert!(mac.starts_with("02:") && mac.len() == 17);
    }
}
