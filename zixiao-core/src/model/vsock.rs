//! A microVM's virtio-vsock device: what a user asks for ([`VsockSpec`],
//! `spec.vsock`, the CLI's `--vsock [CID]`), the guest address it carries
//! ([`GuestCid`]), and where its host side ended up ([`VsockEndpoint`],
//! reported by the node that runs the microVM).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A guest's vsock context id: 3 or more (0, 1 and 2 are the hypervisor,
/// local and host addresses) and not `VMADDR_CID_ANY` (`u32::MAX`).
///
/// The host side of a microVM's vsock device is a Unix socket of its own
/// (Firecracker's scheme), not the host kernel's vsock, so two microVMs
/// may have the same CID: it is only the address the guest sees as its
/// own. A clone keeps its source's CID.
///
/// ```
/// use zixiao_core::model::GuestCid;
/// assert_eq!(GuestCid::try_from(42).unwrap().get(), 42);
/// assert!(GuestCid::try_from(2).is_err());
/// assert!(GuestCid::try_from(u32::MAX).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct GuestCid(u32);

impl GuestCid {
    /// The field its errors name.
    pub const FIELD: &'static str = "spec.vsock.cid";

    /// The CID a microVM gets when its spec names none: the first one a
    /// guest may have.
    pub const DEFAULT: GuestCid = GuestCid(3);

    /// The CID.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for GuestCid {
    fn default() -> Self {
        GuestCid::DEFAULT
    }
}

impl TryFrom<u32> for GuestCid {
    type Error = Error;

    /// Errors: `InvalidArgument` naming `spec.vsock.cid` for 0 to 2 and
    /// `u32::MAX`.
    fn try_from(cid: u32) -> Result<Self, Error> {
        match cid {
            0..=2 => Err(Error::invalid(
                Self::FIELD,
                format!(
                    "{cid} is reserved (0 hypervisor, 1 local, 2 host); a guest's CID is 3 or more"
                ),
            )),
            u32::MAX => Err(Error::invalid(
                Self::FIELD,
                format!("{cid} is VMADDR_CID_ANY, not a guest's CID"),
            )),
            _ => Ok(GuestCid(cid)),
        }
    }
}

impl From<GuestCid> for u32 {
    fn from(cid: GuestCid) -> u32 {
        cid.0
    }
}

impl std::str::FromStr for GuestCid {
    type Err = Error;

    /// A decimal CID. Errors: `InvalidArgument` naming `spec.vsock.cid`.
    fn from_str(text: &str) -> Result<Self, Error> {
        let cid: u32 = text.parse().map_err(|_| {
            Error::invalid(
                Self::FIELD,
                format!("`{text}` is not a number from 3 to {}", u32::MAX - 1),
            )
        })?;
        GuestCid::try_from(cid)
    }
}

impl fmt::Display for GuestCid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A microVM's virtio-vsock device (`vmm` backend only): stream sockets
/// between its guest and host processes without a network. In a spec
/// file: `vsock: {cid: 42}`, or `vsock: {}` for [`GuestCid::DEFAULT`].
///
/// ```
/// use zixiao_core::model::VsockSpec;
/// let v: VsockSpec = serde_yaml::from_str("{}").unwrap();
/// assert_eq!(v.cid.get(), 3);
/// let v: VsockSpec = serde_yaml::from_str("{cid: 42}").unwrap();
/// assert_eq!(v.cid.get(), 42);
/// assert!(serde_yaml::from_str::<VsockSpec>("{cid: 2}").is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockSpec {
    /// The guest's CID.
    #[serde(default)]
    pub cid: GuestCid,
}

/// Where the host side of a microVM's vsock device is, as the node that
/// runs it reports (shown by `instance get`).
///
/// The socket is a path **on the instance's node** (in a cluster, not on
/// the machine asking): a process there connects to it and writes
/// `CONNECT <port>\n` to reach a guest listening on vsock port `<port>`
/// (the answer is `OK <host port>\n`, then the stream); a guest's
/// connection to host port `P` goes to the Unix socket `<socket>_P`,
/// which a process on the node listens on. The socket is the microVM's
/// own (mode 0600), and moves with it when it migrates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockEndpoint {
    /// The host socket: a path on the instance's node.
    pub socket: PathBuf,
    /// The guest's CID.
    pub cid: GuestCid,
}

/// Checks a spec's vsock device: microVMs only. Errors: `InvalidArgument`
/// naming `spec.vsock`.
pub(crate) fn validate_vsock(
    vsock: Option<&VsockSpec>,
    instance_type: super::InstanceType,
) -> Result<(), Error> {
    if vsock.is_some() && instance_type != super::InstanceType::Microvm {
        return Err(Error::invalid(
            "spec.vsock",
            format!("a vsock device is for microVMs, not a {instance_type}"),
        ));
    }
    Ok(())
}
