//! Networks: a named L2 segment (a Linux bridge on every node, joined
//! across nodes by a VXLAN segment of its own [`Vni`]) with one IPv4
//! and/or one IPv6 subnet, outbound NAT and isolation; and the
//! [`NetworkAttachment`] an instance records for each network it joins.
//!
//! Every host-side name (bridge, veth, TAP, nftables table) is a type of
//! [`names`] derived here from the store's installation id and stable
//! inputs with a `zx` prefix, so a restarted agent finds what it created,
//! can remove what the store no longer knows, and never touches what
//! another installation on the same host made.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;

mod names;
mod overlay;
mod state;

pub(crate) use names::{dns_label, name_type};

pub use overlay::{MacAddress, OverlayEndpoint, OverlayView};
pub use state::{NetworkPart, NetworkPartKind, NetworkStatus, NodeNetworkState, PartState};

pub use names::{
    BridgeName, HostMark, InstallationId, InterfaceKind, InterfaceName, InvalidName, NetworkName,
    TemplateName, BRIDGE_PREFIX, MAX_INTERFACE_NAME, TAP_PREFIX, VETH_PREFIX,
};

/// The prefix of every host interface and nftables table Zixiao creates.
pub const HOST_NAME_PREFIX: &str = "zx";
/// The most subnets a network has: one IPv4, one IPv6.
const MAX_SUBNETS: usize = 2;
/// The most reserved ranges per subnet.
const MAX_RESERVED: usize = 64;
/// The broadest IPv4 subnet: /8, the largest private block (10.0.0.0/8).
/// Anything broader spans public space or several private blocks and would
/// capture the routes of the host's other networks.
const MIN_PREFIX_V4: u8 = 8;
/// The broadest IPv6 subnet: /48, one site's allocation. Anything broader
/// (a provider's /32, or `::/0`) would capture routes beyond one site.
const MIN_PREFIX_V6: u8 = 48;

/// The prefix length of an IPv6 subnet whose guests form their addresses
/// themselves (SLAAC) from the router advertisements of its gateway: SLAAC
/// fills the 64 bits after the prefix with an interface id (RFC 4291).
pub const SLAAC_PREFIX_LEN: u8 = 64;
/// The bits of an interface id (the low 64 bits of an IPv6 address) that
/// are the same in every address SLAAC forms from a Zixiao MAC
/// (`02:…`, see [`mac_octets`]): its first octet (`02` with the
/// universal/local bit flipped: `00`) and the `ff:fe` the modified EUI-64
/// puts in the middle.
const SLAAC_IID_MASK: u64 = 0xff00_00ff_ff00_0000;
/// Their values.
const SLAAC_IID_VALUE: u64 = 0x0000_00ff_fe00_0000;

/// The largest VXLAN network identifier: VNIs are 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// A VXLAN network identifier: 1 to 2^24-1 (0 is refused: some switches
/// and tools read it as "none"). Every network carries its own, so its
/// overlay segment between nodes is apart from every other network's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Vni(u32);

impl Vni {
    /// The VNI derived from `installation` and `network` (a hash, so a
    /// network gets the same one however often it is re-created); the
    /// controller moves on to the next free one when another network holds it.
    pub fn derived(installation: &InstallationId, network: &NetworkName) -> Vni {
        let hash = names::fnv1a(&[installation.as_str(), network.as_str(), "vni"]) as u32;
        // 1..=MAX_VNI: never 0.
        Vni(hash % MAX_VNI + 1)
    }

    /// The VNI after this one, wrapping from [`MAX_VNI`] back to 1.
    pub fn next(self) -> Vni {
        Vni(self.0 % MAX_VNI + 1)
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// `vni` checked, with `field` named in the error: `InvalidArgument`
    /// for 0 or more than 24 bits.
    pub fn parse_at(vni: u32, field: &str) -> Result<Vni, Error> {
        if vni == 0 || vni > MAX_VNI {
            return Err(Error::invalid(
                field,
                format!("{vni} is not a VXLAN network identifier (1 to {MAX_VNI})"),
            ));
        }
        Ok(Vni(vni))
    }
}

impl TryFrom<u32> for Vni {
    type Error = Error;

    /// Errors: `InvalidArgument` naming `vni` (see [`Vni::parse_at`]).
    fn try_from(vni: u32) -> Result<Self, Error> {
        Vni::parse_at(vni, "vni")
    }
}

impl From<Vni> for u32 {
    fn from(vni: Vni) -> u32 {
        vni.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

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
    /// Whether guests on it form their own address by SLAAC from the
    /// router advertisements the node sends on the bridge: an IPv6 /64.
    /// The allocator then hands each instance exactly that address (see
    /// [`Subnet::slaac_address`]), so what the guest forms is what IPAM
    /// recorded, and no DHCPv6 is needed. Other IPv6 prefixes get no
    /// advertisements: their addresses reach a guest statically only
    /// (a container's namespace, a VM's cloud-init network-config).
    pub fn is_slaac(&self) -> bool {
        !self.cidr.is_ipv4() && self.cidr.prefix_len() == SLAAC_PREFIX_LEN
    }

    /// The address a NIC with `mac` forms on this subnet by SLAAC: the
    /// prefix and the modified EUI-64 interface id of the MAC (RFC 4291,
    /// appendix A: `ff:fe` in the middle, the universal/local bit flipped),
    /// which is what a Linux guest forms by default. `None` unless the
    /// subnet [is SLAAC's](Subnet::is_slaac).
    ///
    /// ```
    /// use zixiao_core::model::{CreateNetwork, InstallationId};
    /// let here = InstallationId::generate();
    /// let net = CreateNetwork::new("lan", ["10.1.0.0/24", "fd00:9e36::/64"])
    ///     .validate(&here, chrono::Utc::now())
    ///     .unwrap();
    /// let mac = [0x02, 0x12, 0x34, 0x56, 0x78, 0x9a];
    /// assert_eq!(net.subnets[0].slaac_address(mac), None);
    /// assert_eq!(
    ///     net.subnets[1].slaac_address(mac).unwrap().to_string(),
    ///     "fd00:9e36::12:34ff:fe56:789a"
    /// );
    /// ```
    pub fn slaac_address(&self, mac: [u8; 6]) -> Option<IpAddr> {
        if !self.is_slaac() {
            return None;
        }
        let [a, b, c, d, e, f] = mac;
        let iid = u64::from_be_bytes([a ^ 0x02, b, c, 0xff, 0xfe, d, e, f]);
        Some(from_u128(self.cidr.first() | u128::from(iid), false))
    }

    /// Why `range` (a gateway as a /128, or a reserved range) cannot be
    /// kept from instances on this subnet: on a SLAAC subnet an instance's
    /// address is fixed by its MAC, so a range that may hold such an
    /// address would either be handed out or leave that instance without
    /// one. `None` when it is fine (always, off SLAAC).
    fn slaac_clash(&self, range: &Cidr) -> Option<String> {
        if !self.is_slaac() || !self.cidr.overlaps(range) {
            return None;
        }
        // The interface-id bits the range fixes, and their values.
        let fixed = match range.prefix_len().saturating_sub(SLAAC_PREFIX_LEN) {
            0 => 0,
            bits => u64::MAX << (64 - u32::from(bits)),
        };
        let iid = range.first() as u64;
        if (iid ^ SLAAC_IID_VALUE) & SLAAC_IID_MASK & fixed != 0 {
            return None;
        }
        let outside = Cidr {
            address: from_u128(self.cidr.first() | (1u128 << 56), false),
            prefix_len: SLAAC_PREFIX_LEN + 8,
        };
        Some(format!(
            "{range} may hold an address instances form by SLAAC on {} (interface id \
             00xx:xxff:fexx:xxxx, from their MAC), which can be neither kept from them \
             nor handed out twice; use one outside them, such as {outside}",
            self.cidr
        ))
    }

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

/// The rules every subnet of a network follows, wherever one is checked
/// (a request, a network arriving at a node): a prefix with its host bits
/// cleared, no default route, no broader than /8 (IPv4) or /48 (IPv6), room
/// for a gateway and an instance, and outside the ranges a host uses for
/// itself (loopback, link-local, multicast, reserved). `field` is named in
/// the error: `InvalidArgument`.
fn check_subnet(field: &str, cidr: &Cidr) -> Result<(), Error> {
    let refuse = |reason: String| Err(Error::invalid(field, reason));
    if cidr.prefix_len() == 0 {
        return refuse(format!(
            "{cidr} is a default route; a network needs a subnet of its own"
        ));
    }
    let (min, min_host_bits) = if cidr.is_ipv4() {
        (MIN_PREFIX_V4, 2)
    } else {
        (MIN_PREFIX_V6, 1)
    };
    if cidr.prefix_len() < min {
        return refuse(format!(
            "{cidr} is too broad: an IPv4 subnet must be /{MIN_PREFIX_V4} to /30, \
             an IPv6 subnet /{MIN_PREFIX_V6} to /127"
        ));
    }
    if cidr.host_bits() < min_host_bits {
        return refuse(format!(
            "{cidr} is too small: an IPv4 subnet must be /{MIN_PREFIX_V4} to /30, \
             an IPv6 subnet /{MIN_PREFIX_V6} to /127"
        ));
    }
    if *cidr != cidr.network() {
        return refuse(format!(
            "{cidr} has host bits set; did you mean {}?",
            cidr.network()
        ));
    }
    let special: &[(&str, &str)] = if cidr.is_ipv4() {
        &[
            ("0.0.0.0/8", "\"this network\""),
            ("127.0.0.0/8", "loopback"),
            ("169.254.0.0/16", "link-local"),
            ("224.0.0.0/4", "multicast"),
            ("240.0.0.0/4", "reserved"),
        ]
    } else {
        &[
            ("::/128", "the unspecified address"),
            ("::1/128", "loopback"),
            ("::ffff:0:0/96", "IPv4-mapped"),
            ("fe80::/10", "link-local"),
            ("ff00::/8", "multicast"),
        ]
    };
    for (range, what) in special {
        let range: Cidr = range
            .parse()
            .expect("the special ranges are valid prefixes");
        if range.overlaps(cidr) {
            return refuse(format!("{cidr} overlaps {range}, which is {what}"));
        }
    }
    Ok(())
}

/// A network as stored.
///
/// Deserializing re-checks it: its names are valid ([`NetworkName`],
/// [`BridgeName`], [`InstallationId`]) and its bridge is the one its
/// installation and name derive, so a network read from the store or the
/// wire cannot name another network's bridge, or a link of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NetworkRecord")]
pub struct Network {
    /// Unique name (a DNS label); also its id in the store.
    pub name: NetworkName,
    /// At most one IPv4 and one IPv6 subnet.
    pub subnets: Vec<Subnet>,
    /// The Linux bridge every node creates for it.
    pub bridge: BridgeName,
    /// The installation whose network it is (see [`HostMark`]). `None` for
    /// a network stored by a Zixiao older than installation ids: nodes
    /// refuse to set it up or remove it (see [`Network::mark`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<InstallationId>,
    /// Its VXLAN segment between nodes, unique in the store. `None` for a
    /// network stored before VNIs: it keeps working on each node as before
    /// (a bridge per node) but never spans nodes; re-create it to get one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<Vni>,
    /// Whether traffic leaving the subnets is masqueraded behind the node's address.
    pub nat: bool,
    /// Whether traffic between this network and other Zixiao networks is
    /// dropped (connections to a published port, made through a node's
    /// address, excepted).
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

/// A [`Network`] as it comes off the wire or out of the store, before its
/// bridge is checked against its installation and name.
#[derive(Deserialize)]
struct NetworkRecord {
    name: NetworkName,
    subnets: Vec<Subnet>,
    bridge: BridgeName,
    #[serde(default)]
    installation: Option<InstallationId>,
    #[serde(default)]
    vni: Option<Vni>,
    nat: bool,
    isolated: bool,
    created_at: DateTime<Utc>,
    #[serde(default)]
    deleting: bool,
    #[serde(default)]
    revision: u64,
}

impl TryFrom<NetworkRecord> for Network {
    type Error = InvalidName;

    fn try_from(record: NetworkRecord) -> Result<Self, InvalidName> {
        let network = Network {
            name: record.name,
            subnets: record.subnets,
            bridge: record.bridge,
            installation: record.installation,
            vni: record.vni,
            nat: record.nat,
            isolated: record.isolated,
            created_at: record.created_at,
            deleting: record.deleting,
            revision: record.revision,
        };
        network.check_bridge()?;
        Ok(network)
    }
}

/// Checks that `bridge` is the one `installation` and `network` derive (the
/// name-only hash for records older than installation ids).
fn check_bridge(
    bridge: &BridgeName,
    installation: Option<&InstallationId>,
    network: &NetworkName,
) -> Result<(), InvalidName> {
    let expected = match installation {
        Some(installation) => BridgeName::of(installation, network),
        None => BridgeName::before_installations(network),
    };
    if *bridge != expected {
        return Err(InvalidName::new(
            format!("the bridge of network `{network}`"),
            bridge,
            format!("that is {expected}"),
        ));
    }
    Ok(())
}

/// The refusal of a host object recorded before installation ids.
fn stored_before_installations(what: String, bridge: &BridgeName, remedy: &str) -> Error {
    Error::FailedPrecondition(format!(
        "{what} was stored by a Zixiao older than installation ids: its bridge {bridge} and \
         the devices on it carry no installation mark, so they cannot be told apart from \
         another installation's on this host; {remedy}"
    ))
}

impl Network {
    /// Checks that its bridge is the one its installation and name derive,
    /// as every network read from the store or the wire is checked (serde
    /// does it; a frontend building one by hand calls this), so no network
    /// can name another's bridge. Errors: [`InvalidName`].
    pub fn check_bridge(&self) -> Result<(), InvalidName> {
        check_bridge(&self.bridge, self.installation.as_ref(), &self.name)
    }

    /// The mark of its host objects. Errors: `FailedPrecondition` for a
    /// network stored before installation ids (saying what to do): no node
    /// sets such a network up, or removes anything of it.
    pub fn mark(&self) -> Result<HostMark, Error> {
        match &self.installation {
            Some(installation) => Ok(HostMark::new(installation.clone(), self.name.clone())),
            None => Err(stored_before_installations(
                format!("network `{}`", self.name),
                &self.bridge,
                &format!(
                    "remove its bridge and table by hand if they are still there \
                     (`ip link del {}`, `nft delete table inet {}`), then delete the \
                     network and create it again",
                    self.bridge,
                    self.nft_table()
                ),
            )),
        }
    }

    /// The MAC address of its bridge, the same on every node: the gateway
    /// addresses sit on each node's bridge, so with one MAC everywhere an
    /// instance's neighbour entry for its gateway stays right wherever the
    /// answer came from (an anycast gateway), and routed and NATed traffic
    /// leaves from the instance's own node. Locally administered, unicast.
    pub fn gateway_mac(&self) -> [u8; 6] {
        let installation = self.installation.as_ref().map_or("", |i| i.as_str());
        let hash = names::fnv1a(&[installation, self.name.as_str(), "gateway"]).to_be_bytes();
        [0x02, hash[0], hash[1], hash[2], hash[3], hash[4]]
    }

    /// The nftables table (family `inet`) holding its NAT and isolation rules.
    pub fn nft_table(&self) -> String {
        match &self.installation {
            Some(installation) => {
                HostMark::new(installation.clone(), self.name.clone()).nft_table()
            }
            // What versions older than installation ids named it.
            None => format!("{HOST_NAME_PREFIX}_{}", self.bridge),
        }
    }

    /// Checks every subnet against the rules a request is checked against
    /// (see `CreateNetwork::validate`), so a network arriving from the wire
    /// or an older store cannot hurt the node either. Errors:
    /// `InvalidArgument` naming `subnets[i]`.
    pub fn check_subnets(&self) -> Result<(), Error> {
        if self.subnets.is_empty() || self.subnets.len() > MAX_SUBNETS {
            return Err(Error::invalid(
                "subnets",
                "a network has one or two subnets, one per IP family",
            ));
        }
        for (i, subnet) in self.subnets.iter().enumerate() {
            let field = format!("subnets[{i}]");
            check_subnet(&field, &subnet.cidr)?;
            if !subnet.is_assignable_gateway() {
                return Err(Error::invalid(
                    &field,
                    format!(
                        "gateway {} is not a host of {}",
                        subnet.gateway, subnet.cidr
                    ),
                ));
            }
            if self.subnets[..i]
                .iter()
                .any(|s| s.cidr.is_ipv4() == subnet.cidr.is_ipv4())
            {
                return Err(Error::invalid(
                    &field,
                    "a network has at most one subnet per IP family",
                ));
            }
            let gateway = Cidr::new(subnet.gateway, 128).ok();
            if let Some(why) = gateway
                .iter()
                .chain(&subnet.reserved)
                .find_map(|range| subnet.slaac_clash(range))
            {
                return Err(Error::invalid(&field, why));
            }
        }
        Ok(())
    }
}

impl Subnet {
    /// Whether the gateway is a host address of the prefix (not its network
    /// or IPv4 broadcast address).
    fn is_assignable_gateway(&self) -> bool {
        let n = to_u128(self.gateway);
        self.cidr.contains(self.gateway)
            && n != self.cidr.first()
            && !(self.cidr.is_ipv4() && n == self.cidr.last())
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
    /// Its VXLAN network identifier (1 to 2^24-1); derived from the
    /// installation and name when absent. Another network's VNI is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
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
            vni: None,
        }
    }

    /// Checks every field and builds the network of `installation`, naming
    /// the field at fault. Subnets follow the rules of
    /// [`Network::check_subnets`]: no default route, IPv4 /8 to /30, IPv6
    /// /48 to /127, nothing in loopback, link-local, multicast or reserved
    /// ranges.
    ///
    /// ```
    /// use zixiao_core::model::{CreateNetwork, InstallationId};
    /// let here = InstallationId::generate();
    /// let net = CreateNetwork::new("lan", ["10.1.0.0/24"]).validate(&here, chrono::Utc::now()).unwrap();
    /// assert_eq!(net.subnets[0].gateway.to_string(), "10.1.0.1");
    /// let err = CreateNetwork::new("lan", ["10.1.0.0/33"]).validate(&here, chrono::Utc::now()).unwrap_err();
    /// assert!(err.to_string().starts_with("invalid subnets[0]"));
    /// let err = CreateNetwork::new("lan", ["::/0"]).validate(&here, chrono::Utc::now()).unwrap_err();
    /// assert!(err.to_string().contains("default route"), "{err}");
    /// ```
    pub fn validate(
        &self,
        installation: &InstallationId,
        now: DateTime<Utc>,
    ) -> Result<Network, Error> {
        let name = NetworkName::try_from(self.name.as_str()).map_err(|e| e.at("name"))?;
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
            check_subnet(&field, &cidr)?;
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
            if let Some(why) = Cidr::new(gateway, 128)
                .ok()
                .and_then(|g| subnet.slaac_clash(&g))
            {
                return Err(Error::invalid(&field, why));
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
            if let Some(why) = subnet.slaac_clash(&range) {
                return Err(Error::invalid(&field, why));
            }
            subnet.reserved.push(range);
        }
        let vni = match self.vni {
            Some(vni) => Vni::try_from(vni)?,
            None => Vni::derived(installation, &name),
        };
        Ok(Network {
            bridge: BridgeName::of(installation, &name),
            installation: Some(installation.clone()),
            vni: Some(vni),
            name,
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
///
/// Deserializing re-checks its names and that its bridge is its network's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AttachmentRecord")]
pub struct NetworkAttachment {
    /// The network's name.
    pub network: NetworkName,
    /// The network's installation; `None` when recorded by a Zixiao older
    /// than installation ids (see [`NetworkAttachment::mark`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<InstallationId>,
    /// The interface inside the instance (`eth0`, `eth1`, in spec order).
    pub interface: String,
    /// The host-side device (a veth or TAP named `zxv…`/`zxt…`).
    pub host_interface: InterfaceName,
    /// The bridge the host-side device joins.
    pub bridge: BridgeName,
    /// A stable, locally administered MAC address.
    pub mac: String,
    /// One address per subnet of the network.
    pub addresses: Vec<IpConfig>,
}

/// Whether `address` can be a node's address between nodes (its overlay
/// underlay, a peer's): a unicast address another node can reach, so not
/// unspecified, loopback, multicast or the IPv4 broadcast address.
pub fn is_underlay_address(address: IpAddr) -> bool {
    let broadcast = matches!(address, IpAddr::V4(v4) if v4.is_broadcast());
    !(address.is_unspecified() || address.is_loopback() || address.is_multicast() || broadcast)
}

/// A [`NetworkAttachment`] before its bridge is checked against its network.
#[derive(Deserialize)]
struct AttachmentRecord {
    network: NetworkName,
    #[serde(default)]
    installation: Option<InstallationId>,
    interface: String,
    host_interface: InterfaceName,
    bridge: BridgeName,
    mac: String,
    addresses: Vec<IpConfig>,
}

impl TryFrom<AttachmentRecord> for NetworkAttachment {
    type Error = InvalidName;

    fn try_from(record: AttachmentRecord) -> Result<Self, InvalidName> {
        let attachment = NetworkAttachment {
            network: record.network,
            installation: record.installation,
            interface: record.interface,
            host_interface: record.host_interface,
            bridge: record.bridge,
            mac: record.mac,
            addresses: record.addresses,
        };
        attachment.check_bridge()?;
        Ok(attachment)
    }
}

impl NetworkAttachment {
    /// Checks that its bridge is its network's (see
    /// [`Network::check_bridge`]). Errors: [`InvalidName`].
    pub fn check_bridge(&self) -> Result<(), InvalidName> {
        check_bridge(&self.bridge, self.installation.as_ref(), &self.network)
    }

    /// The mark of its host device (its network's). Errors:
    /// `FailedPrecondition` for an attachment recorded before installation
    /// ids (saying what to do): no node plumbs it.
    pub fn mark(&self) -> Result<HostMark, Error> {
        match &self.installation {
            Some(installation) => Ok(HostMark::new(installation.clone(), self.network.clone())),
            None => Err(stored_before_installations(
                format!("the attachment to network `{}`", self.network),
                &self.bridge,
                &format!(
                    "remove its device by hand if it is still there (`ip link del {}`), \
                     then delete the instance and create it again",
                    self.host_interface
                ),
            )),
        }
    }

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

/// The stable MAC address of `instance` on `network`: locally
/// administered, unicast (`02:…`). The controller gives it to the
/// instance's NIC there, and the allocator derives the instance's SLAAC
/// address from it ([`Subnet::slaac_address`]).
pub fn mac_octets(instance: &str, network: &str) -> [u8; 6] {
    let hash = names::fnv1a(&[instance, network, "mac"]).to_be_bytes();
    [0x02, hash[0], hash[1], hash[2], hash[3], hash[4]]
}

/// [`mac_octets`] as text, `02:xx:xx:xx:xx:xx`.
pub fn mac_address(instance: &str, network: &str) -> String {
    let [a, b, c, d, e, f] = mac_octets(instance, network);
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> InstallationId {
        InstallationId::try_from("0123456789abcdef").unwrap()
    }

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
            network: NetworkName::try_from("lan").unwrap(),
            installation: Some(here()),
            interface: "eth1".into(),
            host_interface: InterfaceName::try_from("zxt0000000001").unwrap(),
            bridge: BridgeName::try_from("zxb00000001").unwrap(),
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
        let err = create(&["10.0.0.1/24"]).validate(&here(), now).unwrap_err();
        assert!(err.to_string().contains("subnets[0]"), "{err}");
        let err = create(&["10.0.0.0/24", "10.1.0.0/24"])
            .validate(&here(), now)
            .unwrap_err();
        assert!(err.to_string().contains("subnets[1]"), "{err}");
        let err = create(&[]).validate(&here(), now).unwrap_err();
        assert!(err.to_string().starts_with("invalid subnets"), "{err}");
        let mut req = create(&["10.0.0.0/24"]);
        req.gateways = vec!["10.0.1.1".into()];
        let err = req.validate(&here(), now).unwrap_err();
        assert!(err.to_string().contains("gateways[0]"), "{err}");
        req.gateways = vec!["10.0.0.0".into()];
        assert!(req.validate(&here(), now).is_err());
        let mut req = create(&["10.0.0.0/24"]);
        req.reserved = vec!["192.168.0.0/30".into()];
        let err = req.validate(&here(), now).unwrap_err();
        assert!(err.to_string().contains("reserved[0]"), "{err}");
        let err = CreateNetwork::new("lan\nflush ruleset", ["10.0.0.0/24"])
            .validate(&here(), now)
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid name:"), "{err}");
    }

    #[test]
    fn subnets_that_could_hurt_the_host_are_refused() {
        let now = Utc::now();
        for (subnet, why) in [
            ("0.0.0.0/0", "default route"),
            ("::/0", "default route"),
            ("10.0.0.0/7", "too broad"),
            ("fd00::/47", "too broad"),
            ("2001:db8::/32", "too broad"),
            ("10.0.0.0/31", "too small"),
            ("127.0.0.0/8", "loopback"),
            ("169.254.1.0/24", "link-local"),
            ("224.1.0.0/16", "multicast"),
            ("240.0.0.0/8", "reserved"),
            ("fe80::/64", "link-local"),
            ("ff02::/64", "multicast"),
            ("::ffff:10.0.0.0/120", "IPv4-mapped"),
        ] {
            let err = create(&[subnet]).validate(&here(), now).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{subnet}");
            assert!(
                err.to_string().starts_with("invalid subnets[0]") && err.to_string().contains(why),
                "{subnet}: {err}"
            );
        }
        for fine in [
            "10.0.0.0/8",
            "192.168.7.0/30",
            "fd00:1:2::/48",
            "fd00::/127",
        ] {
            create(&[fine]).validate(&here(), now).expect(fine);
        }
        // A network from the wire or an older store is held to the same rules.
        let mut net = create(&["10.0.0.0/24"]).validate(&here(), now).unwrap();
        net.check_subnets().expect("a validated network passes");
        net.subnets[0].cidr = "0.0.0.0/0".parse().unwrap();
        let err = net.check_subnets().unwrap_err();
        assert!(err.to_string().contains("subnets[0]"), "{err}");
        net.subnets.clear();
        assert!(net.check_subnets().is_err());
    }

    #[test]
    fn subnet_skips_network_broadcast_gateway_and_reserved() {
        let mut req = create(&["10.0.0.0/29", "fd00::/120"]);
        req.reserved = vec!["10.0.0.4/31".into()];
        let net = req.validate(&here(), Utc::now()).unwrap();
        let v4 = &net.subnets[0];
        let ok: Vec<u8> = (0..8)
            .filter(|i| v4.is_assignable(format!("10.0.0.{i}").parse().unwrap()))
            .collect();
        assert_eq!(ok, vec![2, 3, 6]);
        assert_eq!(net.subnets[1].gateway.to_string(), "fd00::1");
    }

    #[test]
    fn a_slaac_subnet_hands_out_the_eui64_address_and_keeps_its_space_free() {
        let now = Utc::now();
        let net = create(&["10.93.0.0/24", "fd00:9e36::/64"])
            .validate(&here(), now)
            .unwrap();
        let (v4, v6) = (&net.subnets[0], &net.subnets[1]);
        assert!(!v4.is_slaac() && v6.is_slaac());
        // RFC 4291 appendix A's example: 52:54:00:12:34:56 forms 5054:ff:fe12:3456.
        let qemu = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(
            v6.slaac_address(qemu).unwrap().to_string(),
            "fd00:9e36::5054:ff:fe12:3456"
        );
        let ours = mac_octets("an-instance", "lan");
        let address = v6.slaac_address(ours).unwrap();
        assert!(v6.is_assignable(address), "{address}");
        assert_eq!(
            mac_address("an-instance", "lan"),
            ours.iter()
                .map(|o| format!("{o:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        );
        let other: Network = create(&["fd00:9e36::/80"]).validate(&here(), now).unwrap();
        assert!(!other.subnets[0].is_slaac());
        assert_eq!(other.subnets[0].slaac_address(ours), None);

        // A gateway or reserved range where instances' addresses may fall
        // is refused, naming the field; one outside them is fine.
        let mut req = create(&["10.93.0.0/24", "fd00:9e36::/64"]);
        req.gateways = vec!["fd00:9e36::12:34ff:fe56:789a".into()];
        let err = req.validate(&here(), now).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(
            err.to_string().starts_with("invalid gateways[0]") && err.to_string().contains("SLAAC"),
            "{err}"
        );
        for (reserved, clash) in [
            ("fd00:9e36::/72", true),
            ("fd00:9e36::/80", true),
            ("fd00:9e36:0:0:ab:cdff:fe00:0/104", true),
            ("fd00:9e36::12:34ff:fe56:789a", true),
            ("fd00:9e36:0:0:100::/72", false),
            ("fd00:9e36::ab:cd00:0:0/88", true),
            ("fd00:9e36::ab:cd00:0:0/104", false),
            ("fd00:9e36::10", false),
            ("10.93.0.0/28", false),
        ] {
            let mut req = create(&["10.93.0.0/24", "fd00:9e36::/64"]);
            req.reserved = vec![reserved.into()];
            match req.validate(&here(), now) {
                Err(err) => {
                    assert!(clash, "{reserved}: {err}");
                    assert!(err.to_string().starts_with("invalid reserved[0]"), "{err}");
                    assert!(err.to_string().contains("fd00:9e36:0:0:100::/72"), "{err}");
                }
                Ok(_) => assert!(!clash, "{reserved} was accepted"),
            }
        }
        // Off SLAAC the same range is a plain reservation.
        let mut req = create(&["fd00:9e36::/80"]);
        req.reserved = vec!["fd00:9e36::/96".into()];
        req.validate(&here(), now).expect("no SLAAC, no clash");
        // A network from the wire is held to the same rule.
        let mut wire = net.clone();
        wire.subnets[1].reserved = vec!["fd00:9e36::/72".parse().unwrap()];
        let err = wire.check_subnets().unwrap_err();
        assert!(err.to_string().starts_with("invalid subnets[1]"), "{err}");
    }

    #[test]
    fn vnis_are_24_bit_non_zero_and_derived_stably() {
        let now = Utc::now();
        for bad in [0, MAX_VNI + 1, u32::MAX] {
            let mut req = create(&["10.0.0.0/24"]);
            req.vni = Some(bad);
            let err = req.validate(&here(), now).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().starts_with("invalid vni"), "{err}");
        }
        let mut req = create(&["10.0.0.0/24"]);
        req.vni = Some(MAX_VNI);
        assert_eq!(
            req.validate(&here(), now).unwrap().vni.unwrap().get(),
            MAX_VNI
        );
        let derived = create(&["10.0.0.0/24"]).validate(&here(), now).unwrap();
        let again = create(&["10.1.0.0/24"]).validate(&here(), now).unwrap();
        assert_eq!(derived.vni, again.vni, "derived from installation and name");
        assert_eq!(Vni::try_from(MAX_VNI).unwrap().next().get(), 1);
        // The wire and the store are held to the same range.
        let mut json = serde_json::to_value(&derived).unwrap();
        json["vni"] = 0.into();
        assert!(serde_json::from_value::<Network>(json.clone()).is_err());
        json.as_object_mut().unwrap().remove("vni");
        let old: Network = serde_json::from_value(json).unwrap();
        assert_eq!(old.vni, None, "a network stored before VNIs loads");
        let mac = derived.gateway_mac();
        assert_eq!(mac[0], 0x02);
        assert_eq!(mac, again.gateway_mac(), "one gateway MAC per network");
    }

    #[test]
    fn derived_names_are_stable_across_versions() {
        // Renaming these would orphan every bridge and device on every node.
        let lan = NetworkName::try_from("lan").unwrap();
        assert_eq!(BridgeName::of(&here(), &lan), "zxb335716ce");
        let id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        assert_eq!(
            InterfaceName::of(InterfaceKind::Tap, &here(), id, &lan),
            "zxtd989c6359c"
        );
        // What older versions derived, from the name alone.
        assert_eq!(BridgeName::before_installations(&lan), "zxb9060dcf0");
        let mac = mac_address("x", "lan");
        assert!(mac.starts_with("02:") && mac.len() == 17);
    }

    #[test]
    fn a_network_from_the_wire_is_checked_and_older_ones_are_recognised() {
        let net = create(&["10.0.0.0/24"])
            .validate(&here(), Utc::now())
            .unwrap();
        let json = serde_json::to_value(&net).unwrap();
        let back: Network = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, net);
        assert_eq!(
            net.mark().unwrap().to_string(),
            "zixiao:0123456789abcdef:net"
        );
        assert_eq!(net.nft_table(), "zx_0123456789abcdef_net");

        // An injected bridge cannot even be deserialized.
        let mut hostile = json.clone();
        hostile["bridge"] = "zxb12345678\nflush ruleset".into();
        let err = serde_json::from_value::<Network>(hostile).unwrap_err();
        assert!(err.to_string().contains(r"\n"), "{err}");
        // Nor another network's (valid) bridge.
        let mut other = json.clone();
        other["bridge"] = "zxb00000001".into();
        let err = serde_json::from_value::<Network>(other).unwrap_err();
        assert!(err.to_string().contains("that is zxb"), "{err}");
        let mut name = json.clone();
        name["name"] = "../x".into();
        assert!(serde_json::from_value::<Network>(name).is_err());

        // A network an older Zixiao stored: it decodes, and nodes refuse it
        // with what to do.
        let legacy = serde_json::json!({
            "name": "lan", "subnets": [{"cidr": "10.0.0.0/24", "gateway": "10.0.0.1"}],
            "bridge": "zxb9060dcf0", "nat": true, "isolated": true,
            "created_at": "2024-01-01T00:00:00Z", "revision": 7
        });
        let legacy: Network = serde_json::from_value(legacy).unwrap();
        assert_eq!(legacy.installation, None);
        let err = legacy.mark().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
        assert!(
            err.to_string().contains("zxb9060dcf0")
                && err
                    .to_string()
                    .contains("nft delete table inet zx_zxb9060dcf0"),
            "{err}"
        );
    }

    #[test]
    fn an_attachment_from_the_wire_is_checked() {
        let lan = NetworkName::try_from("lan").unwrap();
        let attachment = NetworkAttachment {
            network: lan.clone(),
            installation: Some(here()),
            interface: "eth0".into(),
            host_interface: InterfaceName::of(InterfaceKind::Veth, &here(), "x", &lan),
            bridge: BridgeName::of(&here(), &lan),
            mac: mac_address("x", "lan"),
            addresses: Vec::new(),
        };
        let json = serde_json::to_value(&attachment).unwrap();
        assert_eq!(
            serde_json::from_value::<NetworkAttachment>(json.clone()).unwrap(),
            attachment
        );
        for (field, value) in [
            ("bridge", "eth0"),
            ("bridge", "zxb00000001"),
            ("host_interface", "eth0"),
            ("host_interface", "zxv0123456789\n"),
            ("network", "lan/../x"),
            ("installation", "x"),
        ] {
            let mut bad = json.clone();
            bad[field] = value.into();
            assert!(
                serde_json::from_value::<NetworkAttachment>(bad).is_err(),
                "{field} = {value:?}"
            );
        }
        let mut legacy = json;
        legacy.as_object_mut().unwrap().remove("installation");
        legacy["bridge"] = "zxb9060dcf0".into();
        let legacy: NetworkAttachment = serde_json::from_value(legacy).unwrap();
        assert_eq!(
            legacy.mark().unwrap_err().kind(),
            crate::ErrorKind::FailedPrecondition
        );
    }
}
