//! Published ports: `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]`, a port of
//! the node that forwards (DNAT, done by the node that runs the instance)
//! to a port of the instance's address on its first network.
//!
//! A [`PublishedPort`] is built only through `TryFrom<&str>` (serde and the
//! gRPC protocol go through it too, as the same text), so code past the
//! edge — the scheduler, the node's nftables rules — never holds a port 0,
//! a port above 65535, an unknown protocol or a host address that cannot be
//! published on.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::network::{InvalidName, NetworkAttachment};
use crate::Error;

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum PortProtocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl PortProtocol {
    /// `tcp` or `udp`, as written after the `/` and as nftables names it.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port of the node forwarded to a port of the instance.
///
/// ```
/// use zixiao_core::model::{PortProtocol, PublishedPort};
/// let web = PublishedPort::try_from("8080:80").unwrap();
/// assert_eq!((web.host_port(), web.guest_port()), (8080, 80));
/// assert_eq!(web.protocol(), PortProtocol::Tcp);
/// assert_eq!(web.host_ip(), None);
/// assert_eq!(web.to_string(), "8080:80/tcp");
/// let dns = PublishedPort::try_from("192.0.2.7:53:5353/udp").unwrap();
/// assert_eq!(dns.to_string(), "192.0.2.7:53:5353/udp");
/// let v6 = PublishedPort::try_from("[2001:db8::7]:443:8443").unwrap();
/// assert_eq!(v6.to_string(), "[2001:db8::7]:443:8443/tcp");
/// for bad in ["0:80", "70000:80", "80", "a:b", "8080:80/sctp"] {
///     assert!(PublishedPort::try_from(bad).is_err(), "{bad}");
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublishedPort {
    host_ip: Option<IpAddr>,
    host_port: u16,
    guest_port: u16,
    protocol: PortProtocol,
}

impl PublishedPort {
    /// The node's address it is published on; `None`: every address of the node.
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host_ip
    }

    /// The node's port (1 to 65535).
    pub fn host_port(&self) -> u16 {
        self.host_port
    }

    /// The instance's port (1 to 65535).
    pub fn guest_port(&self) -> u16 {
        self.guest_port
    }

    /// TCP or UDP.
    pub fn protocol(&self) -> PortProtocol {
        self.protocol
    }

    /// Whether it publishes IPv4 (`false`: only an IPv6 host address).
    pub fn covers_ipv4(&self) -> bool {
        self.host_ip.is_none_or(|ip| ip.is_ipv4())
    }

    /// Whether it publishes IPv6 (`false`: only an IPv4 host address).
    pub fn covers_ipv6(&self) -> bool {
        self.host_ip.is_none_or(|ip| ip.is_ipv6())
    }

    /// The host side as people read it: `8080/tcp`, `192.0.2.7:8080/tcp`.
    pub fn host_side(&self) -> String {
        match self.host_ip {
            None => format!("{}/{}", self.host_port, self.protocol),
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{}/{}", self.host_port, self.protocol),
            Some(ip) => format!("{ip}:{}/{}", self.host_port, self.protocol),
        }
    }

    /// Whether both cannot be published on one node: the same host port
    /// and protocol on the same address, or on every address (which
    /// includes any one address).
    ///
    /// ```
    /// use zixiao_core::model::PublishedPort;
    /// let p = |s: &str| PublishedPort::try_from(s).unwrap();
    /// assert!(p("8080:80").conflicts_with(&p("8080:81")));
    /// assert!(p("8080:80").conflicts_with(&p("10.0.0.1:8080:80")));
    /// assert!(!p("10.0.0.1:8080:80").conflicts_with(&p("10.0.0.2:8080:80")));
    /// assert!(!p("8080:80").conflicts_with(&p("8080:80/udp")));
    /// assert!(!p("8080:80").conflicts_with(&p("8081:80")));
    /// ```
    pub fn conflicts_with(&self, other: &PublishedPort) -> bool {
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    fn parse(text: &str) -> Result<Self, InvalidName> {
        let bad = |reason: &str| InvalidName::new(WHAT, text, reason);
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, PortProtocol::Tcp),
            Some((ports, "udp")) => (ports, PortProtocol::Udp),
            Some((_, other)) => {
                return Err(InvalidName::new(
                    WHAT,
                    text,
                    format!("the protocol `{other}` is not tcp or udp"),
                ))
            }
            None => (text, PortProtocol::Tcp),
        };
        // An IPv6 host address is written in brackets: `[2001:db8::1]:80:80`.
        let (host_ip, ports) = match ports.strip_prefix('[') {
            Some(rest) => {
                let (ip, rest) = rest
                    .split_once("]:")
                    .ok_or_else(|| bad("an IPv6 host address in `[...]` must be followed by `:HOST_PORT:GUEST_PORT`"))?;
                let ip: std::net::Ipv6Addr = ip
                    .parse()
                    .map_err(|_| bad("the host address in `[...]` is not an IPv6 address"))?;
                (Some(IpAddr::V6(ip)), rest)
            }
            None => match ports.split(':').collect::<Vec<_>>().as_slice() {
                [_, _] => (None, ports),
                [ip, _, _] => {
                    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| {
                        bad("the host address is not an IPv4 address (write an IPv6 one in brackets)")
                    })?;
                    let rest = &ports[ports.find(':').map_or(0, |i| i + 1)..];
                    (Some(IpAddr::V4(ip)), rest)
                }
                _ => return Err(bad(FORM)),
            },
        };
        let (host, guest) = ports.split_once(':').ok_or_else(|| bad(FORM))?;
        let port = |which: &str, digits: &str| -> Result<u16, InvalidName> {
            // Digits only: `parse` would also take a sign (`+80`).
            let number = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                digits.parse::<u32>().map_err(|_| ())
            } else {
                Err(())
            };
            match number {
                Ok(n @ 1..=65535) => Ok(n as u16),
                Ok(n) => Err(InvalidName::new(
                    WHAT,
                    text,
                    format!("the {which} port {n} is not 1 to 65535"),
                )),
                Err(_) => Err(InvalidName::new(
                    WHAT,
                    text,
                    format!("the {which} port `{digits}` is not a number from 1 to 65535"),
                )),
            }
        };
        let host_port = port("host", host)?;
        let guest_port = port("guest", guest)?;
        if let Some(ip) = host_ip {
            if let Some(why) = unpublishable(ip) {
                return Err(InvalidName::new(
                    WHAT,
                    text,
                    format!("the host address {ip} is {why}"),
                ));
            }
        }
        Ok(PublishedPort {
            host_ip,
            host_port,
            guest_port,
            protocol,
        })
    }
}

/// Checks that each of `ports` (an instance's `spec.publish`) leads to an
/// address of `first`, the instance's attachment to its first network, of
/// the family of its host address (a port on every address needs one of
/// either family). Errors: `InvalidArgument` naming `spec.publish[i]`.
pub fn check_targets(ports: &[PublishedPort], first: &NetworkAttachment) -> Result<(), Error> {
    let has = |v4: bool| first.addresses.iter().any(|ip| ip.address.is_ipv4() == v4);
    for (i, port) in ports.iter().enumerate() {
        let reachable = (port.covers_ipv4() && has(true)) || (port.covers_ipv6() && has(false));
        if !reachable {
            let family = if port.covers_ipv4() { "IPv4" } else { "IPv6" };
            return Err(Error::invalid(
                format!("spec.publish[{i}]"),
                format!(
                    "`{port}` is published on an {family} address, but the instance has no \
                     {family} address on network `{}`, its first",
                    first.network
                ),
            ));
        }
    }
    Ok(())
}

/// What a [`PublishedPort`] is, in its errors.
const WHAT: &str = "a published port";
/// Its form, in its errors.
const FORM: &str = "expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]";

/// Why `ip` cannot be a host address to publish on, if it cannot.
fn unpublishable(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified; leave the address out to publish on every address of the node");
    }
    if ip.is_loopback() {
        // DNAT from a loopback address to an instance needs
        // `route_localnet`, which would expose every service bound to
        // 127.0.0.1 to the network: not done.
        return Some("a loopback address, which is not forwarded to instances");
    }
    if ip.is_multicast() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        return Some("not a unicast address");
    }
    None
}

impl fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            None => {}
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.guest_port, self.protocol
        )
    }
}

impl TryFrom<&str> for PublishedPort {
    type Error = InvalidName;

    fn try_from(text: &str) -> Result<Self, InvalidName> {
        Self::parse(text)
    }
}

impl TryFrom<String> for PublishedPort {
    type Error = InvalidName;

    fn try_from(text: String) -> Result<Self, InvalidName> {
        Self::parse(&text)
    }
}

impl From<PublishedPort> for String {
    fn from(port: PublishedPort) -> String {
        port.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back_in_its_canonical_form() {
        for (text, canonical) in [
            ("8080:80", "8080:80/tcp"),
            ("8080:80/tcp", "8080:80/tcp"),
            ("53:53/udp", "53:53/udp"),
            ("1:65535", "1:65535/tcp"),
            ("10.1.2.3:8080:80", "10.1.2.3:8080:80/tcp"),
            ("[fd00::1]:8080:80/udp", "[fd00::1]:8080:80/udp"),
        ] {
            let port = PublishedPort::try_from(text).expect(text);
            assert_eq!(port.to_string(), canonical);
            assert_eq!(PublishedPort::try_from(canonical).unwrap(), port);
            let json = serde_json::to_string(&port).unwrap();
            assert_eq!(json, format!("\"{canonical}\""));
            assert_eq!(serde_json::from_str::<PublishedPort>(&json).unwrap(), port);
        }
    }

    #[test]
    fn bad_input_is_refused_saying_why_on_one_line() {
        for (text, why) in [
            ("0:80", "host port 0 is not 1 to 65535"),
            ("70000:80", "host port 70000 is not 1 to 65535"),
            ("8080:0", "guest port 0"),
            ("80", "expected [HOST_IP:]HOST_PORT:GUEST_PORT"),
            ("a:b", "host port `a` is not a number"),
            ("8080:80/sctp", "protocol `sctp` is not tcp or udp"),
            ("8080:80/TCP", "protocol `TCP`"),
            ("", "expected"),
            (":80", "host port ``"),
            ("1.2.3:80:80", "not an IPv4 address"),
            ("fd00::1:80:80", "expected"),
            ("[fd00::1]80:80", "followed by"),
            ("[10.0.0.1]:80:80", "not an IPv6 address"),
            ("0.0.0.0:80:80", "unspecified"),
            ("127.0.0.1:80:80", "loopback"),
            ("[::1]:80:80", "loopback"),
            ("224.0.0.1:80:80", "not a unicast"),
            ("8080:80\n/tcp", "guest port `80\\n`"),
            ("+80:80", "number"),
            ("1:2:3:4", "expected"),
        ] {
            let err = PublishedPort::try_from(text).expect_err(text);
            let message = err.to_string();
            assert!(message.contains(why), "{text:?}: {message}");
            assert!(!message.contains('\n'), "{message}");
            assert!(
                serde_json::from_value::<PublishedPort>(text.into()).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn each_port_needs_an_address_of_its_family_on_the_first_network() {
        use crate::model::{
            BridgeName, InstallationId, InterfaceKind, InterfaceName, IpConfig, NetworkName,
        };
        let installation = InstallationId::try_from("0123456789abcdef").unwrap();
        let lan = NetworkName::try_from("lan").unwrap();
        let mut first = NetworkAttachment {
            host_interface: InterfaceName::of(InterfaceKind::Veth, &installation, "x", &lan),
            bridge: BridgeName::of(&installation, &lan),
            network: lan,
            installation: Some(installation),
            interface: "eth0".into(),
            mac: "02:00:00:00:00:01".into(),
            addresses: vec![IpConfig {
                address: "10.0.0.5".parse().unwrap(),
                prefix_len: 24,
                gateway: "10.0.0.1".parse().unwrap(),
            }],
        };
        let p = |t: &str| PublishedPort::try_from(t).unwrap();
        check_targets(&[p("8080:80"), p("10.1.1.1:53:53/udp")], &first).expect("IPv4");
        let err = check_targets(&[p("8080:80"), p("[fd00::1]:80:80")], &first).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid spec.publish[1]: `[fd00::1]:80:80/tcp` is published on an IPv6 address, \
             but the instance has no IPv6 address on network `lan`, its first"
        );
        first.addresses[0].address = "fd00::5".parse().unwrap();
        check_targets(&[p("8080:80"), p("[fd00::1]:80:80")], &first).expect("IPv6");
        assert!(check_targets(&[p("10.1.1.1:80:80")], &first).is_err());
    }

    proptest::proptest! {
        /// Any text either is refused or parses into a port that prints
        /// back to text parsing into the same port.
        #[test]
        fn parsing_never_panics_and_round_trips(text in "\\PC{0,30}") {
            if let Ok(port) = PublishedPort::try_from(text.as_str()) {
                proptest::prop_assert!(port.host_port() >= 1 && port.guest_port() >= 1);
                let back = PublishedPort::try_from(port.to_string().as_str()).unwrap();
                proptest::prop_assert_eq!(back, port);
            }
        }
    }
}
