//! The names of what Zixiao makes on a host, each a type that can only hold
//! a valid value: [`NetworkName`] and [`TemplateName`] (DNS labels), [`BridgeName`] and
//! [`InterfaceName`] (Zixiao's prefix and lowercase hex of a fixed length),
//! the store's [`InstallationId`], and the [`HostMark`] every host object
//! carries. Each is built only through `TryFrom` (or derived from values
//! that already are valid) and re-checked when deserialized, so a bad name
//! cannot cross the wire or come out of the store, and code past the edge
//! (netlink, `nft`, a namespace path) never sees one.
//!
//! Why the names carry the installation: two state directories on one host
//! that both create network `lan` must get two bridges, two nftables tables,
//! and must never remove each other's. The installation id (random, made
//! once per store) is mixed into every name hash, and every link gets
//! [`HostMark`] as its alias, so a link is only changed or removed by the
//! installation whose mark it bears.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind};

/// Prefix of bridge names (`zxb` + 8 hex digits).
pub const BRIDGE_PREFIX: &str = "zxb";
/// Prefix of host-side veth names of containers (`zxv` + 10 hex digits).
pub const VETH_PREFIX: &str = "zxv";
/// Prefix of TAP device names of VMs (`zxt` + 10 hex digits).
pub const TAP_PREFIX: &str = "zxt";
/// Linux's limit on interface names, without the NUL.
pub const MAX_INTERFACE_NAME: usize = 15;
/// Hex digits after a bridge's prefix.
const BRIDGE_HEX: usize = 8;
/// Hex digits after a veth's or TAP's prefix.
const INTERFACE_HEX: usize = 10;
/// Hex digits of an installation id (64 bits).
const INSTALLATION_HEX: usize = 16;
/// What every [`HostMark`] starts with.
const MARK_PREFIX: &str = "zixiao";
/// What every nftables table of Zixiao starts with.
const TABLE_PREFIX: &str = "zx_";
/// The longest value an [`InvalidName`] quotes.
const QUOTE_MAX: usize = 80;

/// Why a text is not a valid name of its kind. Its kind is
/// [`ErrorKind::InvalidArgument`]; [`InvalidName::at`] names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not {what}: {reason}")]
pub struct InvalidName {
    what: String,
    /// The offending text, escaped (a newline shows as `\n`) and shortened.
    value: String,
    reason: String,
}

impl InvalidName {
    pub(crate) fn new(what: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        let mut quoted: String = printable(value).take(QUOTE_MAX).collect();
        if printable(value).nth(QUOTE_MAX).is_some() {
            quoted.push('…');
        }
        InvalidName {
            what: what.into(),
            value: quoted,
            // A reason may quote the value too.
            reason: printable(&reason.into()).collect(),
        }
    }

    /// Always [`ErrorKind::InvalidArgument`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }

    /// The controller's `InvalidArgument` on `field`.
    pub fn at(self, field: impl Into<String>) -> Error {
        Error::invalid(field, self.to_string())
    }
}

/// `text` with its control characters escaped (a newline as `\n`), so an
/// error quoting it stays on one line and cannot forge another.
fn printable(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().flat_map(|c| {
        let escaped: Vec<char> = if c.is_control() {
            c.escape_debug().collect()
        } else {
            vec![c]
        };
        escaped
    })
}

/// The methods every name type shares: text access, `Display`, conversion
/// back to `String`, and serde through the validating `TryFrom<String>`.
macro_rules! name_type {
    ($name:ident) => {
        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidName;
            fn try_from(text: &str) -> Result<Self, InvalidName> {
                Self::parse(text).map(|()| $name(text.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(text: String) -> Result<Self, InvalidName> {
                Self::parse(&text).map(|()| $name(text))
            }
        }
    };
}

// Other modules of the model make their own name types with it.
pub(crate) use name_type;

/// Checks `text` is `prefix` followed by exactly `digits` lowercase hex digits.
fn prefixed_hex(
    what: &'static str,
    text: &str,
    prefixes: &[&str],
    digits: usize,
) -> Result<(), InvalidName> {
    let Some(rest) = prefixes.iter().find_map(|p| text.strip_prefix(p)) else {
        return Err(InvalidName::new(
            what,
            text,
            format!("it must start with {}", prefixes.join(" or ")),
        ));
    };
    if rest.len() != digits || !rest.bytes().all(is_lower_hex) {
        return Err(InvalidName::new(
            what,
            text,
            format!("its prefix must be followed by exactly {digits} lowercase hex digits"),
        ));
    }
    Ok(())
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// The id of one installation: the random id its store holds (see
/// `Controller::installation`), 16 lowercase hex digits. Mixed into every
/// host name hash and written into every [`HostMark`].
///
/// ```
/// use zixiao_core::model::InstallationId;
/// let id = InstallationId::try_from("0123456789abcdef").unwrap();
/// assert_eq!(id.as_str(), "0123456789abcdef");
/// assert!(InstallationId::try_from("0123456789ABCDEF").is_err());
/// assert_ne!(InstallationId::generate(), InstallationId::generate());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstallationId(String);
name_type!(InstallationId);

impl InstallationId {
    /// A new random id (from a version 4 UUID's random bits).
    pub fn generate() -> Self {
        let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
        // XOR folds the fixed version and variant bits into random ones.
        InstallationId(format!("{:016x}", high ^ low))
    }

    fn parse(text: &str) -> Result<(), InvalidName> {
        if text.len() != INSTALLATION_HEX || !text.bytes().all(is_lower_hex) {
            return Err(InvalidName::new(
                "an installation id",
                text,
                format!("it must be {INSTALLATION_HEX} lowercase hex digits"),
            ));
        }
        Ok(())
    }
}

/// A network's name: a DNS label (1 to 63 of `a-z`, `0-9`, `-`, not
/// starting or ending with `-`). It names the network's store key, its IPAM
/// keys and its [`HostMark`].
///
/// ```
/// use zixiao_core::model::NetworkName;
/// assert!(NetworkName::try_from("lan-2").is_ok());
/// let err = NetworkName::try_from("lan\nflush ruleset").unwrap_err();
/// assert!(err.to_string().contains(r"lan\nflush ruleset"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkName(String);
name_type!(NetworkName);

impl NetworkName {
    fn parse(text: &str) -> Result<(), InvalidName> {
        dns_label("a network name", text)
    }
}

/// Checks that `text` is a DNS label, naming it `what` in the error. One
/// owner for what a DNS label is: the model's `validate_name`.
pub(crate) fn dns_label(what: &str, text: &str) -> Result<(), InvalidName> {
    match super::super::validate_name("name", text) {
        Ok(()) => Ok(()),
        Err(Error::InvalidArgument { reason, .. }) => Err(InvalidName::new(what, text, reason)),
        Err(other) => Err(InvalidName::new(what, text, other.to_string())),
    }
}

/// The name of a template (a DNS label), re-checked when deserialized.
///
/// ```
/// use zixiao_core::model::TemplateName;
/// assert!(TemplateName::try_from("web-small").is_ok());
/// let err = TemplateName::try_from("Web@1").unwrap_err();
/// assert!(err.to_string().contains("not a template name"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateName(String);
name_type!(TemplateName);

impl TemplateName {
    fn parse(text: &str) -> Result<(), InvalidName> {
        dns_label("a template name", text)
    }
}

/// The Linux bridge of a network on every node: `zxb` and 8 lowercase hex
/// digits of a hash of the installation and the network's name.
///
/// ```
/// use zixiao_core::model::{BridgeName, InstallationId, NetworkName};
/// let installation = InstallationId::try_from("0123456789abcdef").unwrap();
/// let lan = NetworkName::try_from("lan").unwrap();
/// let bridge = BridgeName::of(&installation, &lan);
/// assert!(bridge.starts_with("zxb") && bridge.len() == 11);
/// assert!(BridgeName::try_from("zxb12345678\nflush ruleset").is_err());
/// assert!(BridgeName::try_from("eth0").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BridgeName(String);
name_type!(BridgeName);

impl BridgeName {
    /// The bridge of `network` in `installation`.
    pub fn of(installation: &InstallationId, network: &NetworkName) -> Self {
        let hash = fnv1a(&[installation.as_str(), network.as_str()]) as u32;
        BridgeName(format!("{BRIDGE_PREFIX}{hash:08x}"))
    }

    /// The bridge a Zixiao older than installation ids gave `network` (a
    /// hash of the name only), to recognise networks it stored.
    pub fn before_installations(network: &NetworkName) -> Self {
        let hash = fnv1a(&[network.as_str()]) as u32;
        BridgeName(format!("{BRIDGE_PREFIX}{hash:08x}"))
    }

    fn parse(text: &str) -> Result<(), InvalidName> {
        prefixed_hex("a Zixiao bridge name", text, &[BRIDGE_PREFIX], BRIDGE_HEX)
    }
}

/// Which host-side device an [`InterfaceName`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceKind {
    /// The host end of a container's veth pair (`zxv…`).
    Veth,
    /// A VM's TAP device (`zxt…`).
    Tap,
}

impl InterfaceKind {
    /// The name prefix of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            InterfaceKind::Veth => VETH_PREFIX,
            InterfaceKind::Tap => TAP_PREFIX,
        }
    }
}

/// The host-side device of an instance on a network: a veth (`zxv`) or a
/// TAP (`zxt`) and 10 lowercase hex digits of a hash of the installation,
/// the instance and the network.
///
/// ```
/// use zixiao_core::model::{InstallationId, InterfaceKind, InterfaceName, NetworkName};
/// let installation = InstallationId::try_from("0123456789abcdef").unwrap();
/// let lan = NetworkName::try_from("lan").unwrap();
/// let tap = InterfaceName::of(InterfaceKind::Tap, &installation, "vm-1", &lan);
/// assert_eq!(tap.kind(), InterfaceKind::Tap);
/// assert_eq!(tap.len(), 13);
/// assert!(InterfaceName::try_from("zxt/../../x").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName(String);
name_type!(InterfaceName);

impl InterfaceName {
    /// The device of `instance` on `network` in `installation`.
    pub fn of(
        kind: InterfaceKind,
        installation: &InstallationId,
        instance: &str,
        network: &NetworkName,
    ) -> Self {
        let hash = fnv1a(&[installation.as_str(), instance, network.as_str()]);
        InterfaceName(format!("{}{:010x}", kind.prefix(), hash & 0xff_ffff_ffff))
    }

    /// Whether it names a veth or a TAP.
    pub fn kind(&self) -> InterfaceKind {
        if self.0.starts_with(TAP_PREFIX) {
            InterfaceKind::Tap
        } else {
            InterfaceKind::Veth
        }
    }

    fn parse(text: &str) -> Result<(), InvalidName> {
        prefixed_hex(
            "a Zixiao veth or TAP name",
            text,
            &[VETH_PREFIX, TAP_PREFIX],
            INTERFACE_HEX,
        )
    }
}

/// What marks a host object as one installation's, for one network: a
/// link's alias (`IFLA_IFALIAS`) is `zixiao:<installation>:<network>`, and
/// the network's nftables table is named `zx_<installation>_<network>`. A
/// host object is only changed or removed by the installation whose mark
/// it bears.
///
/// ```
/// use zixiao_core::model::{HostMark, InstallationId, NetworkName};
/// let mark = HostMark::new(
///     InstallationId::try_from("0123456789abcdef").unwrap(),
///     NetworkName::try_from("lan").unwrap(),
/// );
/// assert_eq!(mark.to_string(), "zixiao:0123456789abcdef:lan");
/// assert_eq!(mark.nft_table(), "zx_0123456789abcdef_lan");
/// assert_eq!(HostMark::parse(&mark.to_string()), Some(mark.clone()));
/// assert_eq!(HostMark::from_nft_table(&mark.nft_table()), Some(mark));
/// assert_eq!(HostMark::parse("zixiao:0123456789abcdef:lan\nx"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostMark {
    installation: InstallationId,
    network: NetworkName,
}

impl HostMark {
    /// The mark of `network` in `installation`.
    pub fn new(installation: InstallationId, network: NetworkName) -> Self {
        HostMark {
            installation,
            network,
        }
    }

    /// The installation it belongs to.
    pub fn installation(&self) -> &InstallationId {
        &self.installation
    }

    /// The network it belongs to.
    pub fn network(&self) -> &NetworkName {
        &self.network
    }

    /// The name of the network's nftables table (family `inet`).
    pub fn nft_table(&self) -> String {
        format!("{TABLE_PREFIX}{}_{}", self.installation, self.network)
    }

    /// The mark a link alias holds, if it is one.
    pub fn parse(alias: &str) -> Option<HostMark> {
        let rest = alias.strip_prefix(MARK_PREFIX)?.strip_prefix(':')?;
        let (installation, network) = rest.split_once(':')?;
        Some(HostMark::new(
            installation.try_into().ok()?,
            network.try_into().ok()?,
        ))
    }

    /// The mark an nftables table's name encodes, if it is a Zixiao table
    /// of an installation (older Zixiao tables, `zx_zxb…`, are not).
    pub fn from_nft_table(table: &str) -> Option<HostMark> {
        let rest = table.strip_prefix(TABLE_PREFIX)?;
        let (installation, network) = rest.split_once('_')?;
        Some(HostMark::new(
            installation.try_into().ok()?,
            network.try_into().ok()?,
        ))
    }
}

impl fmt::Display for HostMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MARK_PREFIX}:{}:{}", self.installation, self.network)
    }
}

/// FNV-1a, 64 bits: a stable hash for derived names (std's hasher may change).
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installation() -> InstallationId {
        InstallationId::try_from("0123456789abcdef").unwrap()
    }

    #[test]
    fn hostile_names_are_refused_and_quoted_escaped() {
        for bad in [
            "",
            "zxb",
            "zxb1234567",
            "zxb123456789",
            "zxbABCDEF01",
            "zxb12345678\nflush ruleset",
            "zxb1234567\n",
            "eth0",
            "zxv0123456789",
            "zxb../../../x",
            "zxb1234567 ",
        ] {
            let err = BridgeName::try_from(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        for bad in [
            "",
            "zxt",
            "zxt012345678",
            "zxb0123456789",
            "zxt012345678g",
            "lo",
        ] {
            assert!(InterfaceName::try_from(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "-lan",
            "Lan",
            "lan_1",
            "lan:1",
            "lan\n",
            &"a".repeat(64),
        ] {
            let err = NetworkName::try_from(bad).expect_err(bad);
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        let long = "x".repeat(10_000);
        assert!(
            BridgeName::try_from(long.as_str())
                .unwrap_err()
                .to_string()
                .len()
                < 400
        );
    }

    #[test]
    fn serde_revalidates() {
        let bad = r#""zxb12345678\nflush ruleset""#;
        assert!(serde_json::from_str::<BridgeName>(bad).is_err());
        let good: BridgeName = serde_json::from_str(r#""zxb0000abcd""#).unwrap();
        assert_eq!(serde_json::to_string(&good).unwrap(), r#""zxb0000abcd""#);
        assert!(serde_json::from_str::<InstallationId>(r#""x""#).is_err());
        assert!(serde_json::from_str::<NetworkName>(r#""../x""#).is_err());
        assert!(serde_json::from_str::<InterfaceName>(r#""zxt01234567890""#).is_err());
    }

    #[test]
    fn derived_names_parse_fit_linux_limits_and_depend_on_the_installation() {
        let lan = NetworkName::try_from("a-very-long-network-name-that-goes-on").unwrap();
        let other = InstallationId::try_from("fedcba9876543210").unwrap();
        let bridge = BridgeName::of(&installation(), &lan);
        assert!(bridge.len() <= MAX_INTERFACE_NAME);
        assert_eq!(BridgeName::try_from(bridge.as_str()).unwrap(), bridge);
        assert_ne!(bridge, BridgeName::of(&other, &lan));
        for kind in [InterfaceKind::Veth, InterfaceKind::Tap] {
            let name = InterfaceName::of(kind, &installation(), "1b4e28ba", &lan);
            assert!(name.len() <= MAX_INTERFACE_NAME);
            assert_eq!(name.kind(), kind);
            assert_eq!(InterfaceName::try_from(name.as_str()).unwrap(), name);
            assert_ne!(name, InterfaceName::of(kind, &other, "1b4e28ba", &lan));
        }
    }

    #[test]
    fn marks_round_trip_and_foreign_ones_are_not_marks() {
        let mark = HostMark::new(installation(), NetworkName::try_from("lan").unwrap());
        assert_eq!(HostMark::parse(&mark.to_string()), Some(mark.clone()));
        assert_eq!(HostMark::from_nft_table(&mark.nft_table()), Some(mark));
        for foreign in ["", "zixiao", "zixiao::lan", "docker:x:y", "zixiao:0123:lan"] {
            assert_eq!(HostMark::parse(foreign), None, "{foreign}");
        }
        for foreign in ["zx_zxb12345678", "zx_", "filter", "zx_0123456789abcdef_"] {
            assert_eq!(HostMark::from_nft_table(foreign), None, "{foreign}");
        }
    }
}
