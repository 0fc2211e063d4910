//! The host side of a virtio-net card: the validated names a config carries
//! ([`TapName`], [`MacAddr`]) and attaching to an existing TAP device
//! through `/dev/net/tun`.
//!
//! The VMM only ever attaches to a TAP that already exists (made, plugged
//! into a bridge and owned by whoever launches it, such as `zixiao-net`):
//! `TUNSETIFF` with a name that does not exist would *create* a new TAP
//! when the caller has `CAP_NET_ADMIN`, so the name is looked up first and
//! a missing TAP is a `NotFound` naming the config field. The queue is
//! opened `IFF_TAP | IFF_NO_PI` and without `IFF_VNET_HDR`: frames are plain
//! Ethernet frames, and the virtio-net header is stripped and added by the
//! device model (so no checksum or segmentation offloads are offered; that
//! would be `IFF_VNET_HDR` plus `TUNSETOFFLOAD`, future work). It is
//! non-blocking: the devices' I/O thread reads until `EAGAIN`, and a transmit
//! never waits (the kernel drops what its queue cannot take, as a NIC would).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use serde::{Deserialize, Serialize};

use crate::VmmError;

/// The TUN/TAP clone device.
const TUN_DEVICE: &str = "/dev/net/tun";
/// `IFNAMSIZ` minus the NUL.
const IFNAME_MAX: usize = 15;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// A Linux network interface name: 1 to 15 bytes, none of them `/`, `:`,
/// whitespace or NUL, and not `.` or `..` (the kernel's `dev_valid_name`,
/// plus `:`, which only alias names use).
///
/// ```
/// use zixiao_vmm::TapName;
/// assert!(TapName::try_from("zxt0123456789").is_ok());
/// assert!(TapName::try_from("tap0/../x").is_err());
/// assert!(TapName::try_from("a-very-long-interface").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TapName(String);

impl TapName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TapName {
    type Error = String;
    fn try_from(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > IFNAME_MAX {
            return Err(format!(
                "{name:?} is not 1 to {IFNAME_MAX} bytes long (an interface name)"
            ));
        }
        if name == "." || name == ".." {
            return Err(format!("{name:?} is not an interface name"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| *c == '/' || *c == ':' || *c == '\0' || c.is_whitespace())
        {
            return Err(format!(
                "{name:?} contains {c:?}, which an interface name cannot"
            ));
        }
        Ok(TapName(name.to_string()))
    }
}

impl TryFrom<String> for TapName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        TapName::try_from(name.as_str())
    }
}

impl From<TapName> for String {
    fn from(name: TapName) -> String {
        name.0
    }
}

impl fmt::Display for TapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A unicast Ethernet address, written `aa:bb:cc:dd:ee:ff` (hex digits of
/// either case, six pairs separated by colons).
///
/// ```
/// use zixiao_vmm::MacAddr;
/// let mac = MacAddr::try_from("02:00:00:00:00:01").unwrap();
/// assert_eq!(mac.octets(), [2, 0, 0, 0, 0, 1]);
/// assert!(MacAddr::try_from("01:00:5e:00:00:01").is_err()); // multicast
/// assert!(MacAddr::try_from("02:00:00:00:00").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// The six bytes, in transmission order.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl TryFrom<&str> for MacAddr {
    type Error = String;
    fn try_from(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if octets[0] & 1 != 0 {
            return Err(format!(
                "{text:?} is a multicast address; a network card needs a unicast one"
            ));
        }
        Ok(MacAddr(octets))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        MacAddr::try_from(text.as_str())
    }
}

impl From<MacAddr> for String {
    fn from(mac: MacAddr) -> String {
        mac.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Attaches to the existing TAP `name` in this thread's network namespace
/// (non-blocking, `IFF_TAP | IFF_NO_PI`). `field` (`nets[N].tap`) names it
/// in errors: `NotFound` when no such interface exists, `InvalidArgument`
/// when it is not a TAP or another process holds it, `Unavailable` when
/// `/dev/net/tun` cannot be opened.
pub(crate) fn open(field: &str, name: &TapName) -> Result<File, VmmError> {
    let cname = std::ffi::CString::new(name.as_str())
        .map_err(|_| VmmError::invalid(field, "contains a NUL byte"))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the whole call.
    if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
        return Err(VmmError::NotFound {
            message: format!("{field}: no network interface {name} in the VMM's network namespace"),
        });
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|e| VmmError::Unavailable {
            message: format!("{field}: cannot open {TUN_DEVICE}: {e}"),
        })?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.as_str().len()].copy_from_slice(name.as_str().as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back) a `struct ifreq`, which
    // `req` is laid out as and outlives the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        let why = match err.raw_os_error() {
            Some(libc::EBUSY) => "is already attached to another process".to_string(),
            Some(libc::EINVAL) => "is not a (single-queue) TAP device".to_string(),
            Some(libc::EPERM) => "may not be attached by this user".to_string(),
            _ => format!("cannot be attached: {err}"),
        };
        return Err(VmmError::invalid(field, format!("{name} {why}")));
    }
    Ok(tun)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernels_rules() {
        for good in ["tap0", "zxt0123456789", "a", "x-y_z.1", "123456789012345"] {
            assert!(TapName::try_from(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a\0",
            "a:1",
            "1234567890123456",
            "é\n",
        ] {
            assert!(TapName::try_from(bad).is_err(), "{bad:?}");
        }
        let json: Result<TapName, _> = serde_json::from_str("\"../x\"");
        assert!(json.is_err(), "deserializing re-checks");
    }

    #[test]
    fn macs_are_six_hex_pairs_and_unicast() {
        let mac = MacAddr::try_from("02:AB:cd:00:00:ff").unwrap();
        assert_eq!(mac.to_string(), "02:ab:cd:00:00:ff");
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:ab:cd:00:00:ff\""
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02-00-00-00-00-01",
            "2:00:00:00:00:01",
            "02:00:00:00:00:0g",
            "+2:00:00:00:00:01",
            "ff:ff:ff:ff:ff:ff",
        ] {
            assert!(MacAddr::try_from(bad).is_err(), "{bad:?}");
        }
    }
}
