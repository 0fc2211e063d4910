//! Container endpoints: a network namespace pinned at
//! `<netns_dir>/zx-<installation>-<instance id>`, and per attachment a veth
//! pair whose host end (`zxv…`, marked as its network's) joins the
//! network's bridge and whose other end, moved into the namespace, is named
//! `eth<i>` with the attachment's MAC, addresses and default route. A
//! runtime points the container at the namespace path.

use std::fmt;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use zixiao_core::model::{InstallationId, InterfaceKind, NetworkAttachment};
use zixiao_core::{Error, Result};

use crate::dhcp::MacAddress;
use crate::host::{
    add_address, errno, is_v4, link_index, netlink_error, LinuxNetwork, NETNS_PREFIX,
};
use crate::links::{self, LinkKind};
use crate::netns;

/// The longest instance id a namespace is named after.
const MAX_INSTANCE_ID: usize = 64;

/// The file name of a container's namespace:
/// `zx-<installation>-<instance id>`, one plain path component (the
/// instance id is 1 to 64 of `a-z`, `0-9` and `-`, as the controller's
/// UUIDs are). The installation in the name is what makes it ours: a
/// reconcile only removes namespaces named with its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsName(String);

impl NetnsName {
    /// The namespace of `instance` in `installation`. Errors:
    /// `InvalidArgument` on `instance` for an id that cannot be a file name.
    pub fn new(installation: &InstallationId, instance: &str) -> Result<Self> {
        check_instance_id(instance)?;
        Ok(NetnsName(format!(
            "{NETNS_PREFIX}{installation}-{instance}"
        )))
    }

    /// `name` if it is the namespace of one of `installation`'s instances.
    pub fn parse_ours(name: &str, installation: &InstallationId) -> Option<Self> {
        let instance = name
            .strip_prefix(NETNS_PREFIX)?
            .strip_prefix(installation.as_str())?
            .strip_prefix('-')?;
        NetnsName::new(installation, instance).ok()
    }

    /// The name an older Zixiao gave instance `instance`'s namespace
    /// (`zx-<instance id>`), to refuse while it is still there.
    fn before_installations(instance: &str) -> Result<Self> {
        check_instance_id(instance)?;
        Ok(NetnsName(format!("{NETNS_PREFIX}{instance}")))
    }
}

impl fmt::Display for NetnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn check_instance_id(instance: &str) -> Result<()> {
    let plain = instance
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if instance.is_empty() || instance.len() > MAX_INSTANCE_ID || !plain {
        return Err(Error::invalid(
            "instance",
            format!(
                "`{}` is not an instance id (1 to {MAX_INSTANCE_ID} of a-z, 0-9 and -)",
                instance.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// The one installation `attachments` belong to (`None`: recorded before
/// installation ids). Errors: `InvalidArgument` for no attachments, or
/// attachments of several installations.
pub(crate) fn installation_of(
    attachments: &[NetworkAttachment],
) -> Result<Option<&InstallationId>> {
    let Some(first) = attachments.first() else {
        return Err(Error::invalid(
            "attachments",
            "a container endpoint needs at least one attachment",
        ));
    };
    let installation = first.installation.as_ref();
    if attachments
        .iter()
        .any(|a| a.installation.as_ref() != installation)
    {
        return Err(Error::invalid(
            "attachments",
            "the attachments belong to different installations",
        ));
    }
    Ok(installation)
}

/// A netlink connection inside the namespace at `path`, driven on the
/// current tokio runtime.
fn connect_in(path: &Path) -> Result<Handle> {
    let runtime = tokio::runtime::Handle::current();
    let (connection, handle, _) = netns::run_in(path, || {
        // The socket is created in the namespace, and registered with the
        // caller's runtime so it can be driven from there.
        let _entered = runtime.enter();
        rtnetlink::new_connection()
    })
    .map_err(|e| io_error("opening netlink in a container namespace", e))?;
    tokio::spawn(connection);
    Ok(handle)
}

fn io_error(doing: &str, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EPERM) {
        Error::Unsupported(format!(
            "missing privileges for {doing}: CAP_SYS_ADMIN is needed"
        ))
    } else {
        Error::Internal(format!("{doing}: {e}"))
    }
}

impl LinuxNetwork {
    /// The namespace path of instance `instance`'s container with
    /// `attachments`. Errors: `InvalidArgument` (no attachments, several
    /// installations, an instance id that cannot be a file name),
    /// `FailedPrecondition` (attachments recorded before installation ids).
    pub fn netns_path(&self, instance: &str, attachments: &[NetworkAttachment]) -> Result<PathBuf> {
        let name = match installation_of(attachments)? {
            Some(installation) => NetnsName::new(installation, instance)?,
            None => return Err(attachments[0].mark().unwrap_err()),
        };
        Ok(self.netns_dir.join(name.to_string()))
    }

    /// Creates the container namespace of `instance` with one interface per
    /// attachment, and returns its path. Idempotent: an earlier endpoint of
    /// the same instance is replaced. Errors: `FailedPrecondition` (a
    /// network's bridge is not on this node, or a link of a bridge's or
    /// veth's name is not the network's, or the attachments were recorded
    /// before installation ids), `InvalidArgument` (see
    /// [`LinuxNetwork::netns_path`]; a TAP name as host interface),
    /// `Unsupported` (privileges), `Internal`. On error nothing of the
    /// endpoint is left.
    pub async fn attach_container(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<PathBuf> {
        let path = self.netns_path(instance, attachments)?;
        for attachment in attachments {
            if attachment.host_interface.kind() != InterfaceKind::Veth {
                return Err(Error::invalid(
                    "host_interface",
                    format!("{} is a TAP name, not a veth's", attachment.host_interface),
                ));
            }
            // Before anything is made: every bridge is there and ours.
            self.bridge_of(attachment).await?;
        }
        self.detach_container(instance, attachments).await?;
        netns::create(&path).map_err(|e| io_error("creating a network namespace", e))?;
        match self.plumb(&path, attachments).await {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = self.detach_container(instance, attachments).await;
                Err(e)
            }
        }
    }

    /// Removes the namespace and host-side veths of `instance`'s container.
    /// Idempotent. Errors: `FailedPrecondition` (a link of a veth's name is
    /// not the network's; or, for attachments recorded before installation
    /// ids, their veth or namespace is still there: they are named and left
    /// untouched), `InvalidArgument`, `Internal`.
    pub async fn detach_container(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<()> {
        if attachments.is_empty() {
            return Ok(());
        }
        let Some(installation) = installation_of(attachments)? else {
            return self
                .endpoint_from_before_installations_gone(instance, attachments)
                .await;
        };
        for attachment in attachments {
            let name = &attachment.host_interface;
            links::delete_owned(&self.handle, name, LinkKind::of(name), &attachment.mark()?)
                .await?;
        }
        let path = self
            .netns_dir
            .join(NetnsName::new(installation, instance)?.to_string());
        netns::remove(&path).map_err(|e| io_error("removing a network namespace", e))
    }

    /// For attachments recorded before installation ids: Ok once their veths
    /// and namespace are gone (removed by hand), the refusal naming them
    /// while they are not.
    async fn endpoint_from_before_installations_gone(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<()> {
        for attachment in attachments {
            let refusal = attachment.mark().unwrap_err();
            links::absent_or(&self.handle, &attachment.host_interface, refusal).await?;
        }
        let name = NetnsName::before_installations(instance)?;
        let path = self.netns_dir.join(name.to_string());
        if path.exists() {
            return Err(Error::FailedPrecondition(format!(
                "the network namespace {} of instance `{instance}` was made by a Zixiao older \
                 than installation ids and is left untouched; remove it by hand \
                 (`umount {0} && rm {0}`)",
                path.display()
            )));
        }
        Ok(())
    }

    async fn plumb(&self, path: &Path, attachments: &[NetworkAttachment]) -> Result<()> {
        let inside = connect_in(path)?;
        let ns = File::open(path).map_err(|e| io_error("opening a network namespace", e))?;
        if let Some(lo) = link_index(&inside, "lo").await? {
            set(
                &inside,
                LinkUnspec::new_with_index(lo).up(),
                "bringing lo up",
            )
            .await?;
        }
        let (mut route_v4, mut route_v6) = (false, false);
        for attachment in attachments {
            let mark = attachment.mark()?;
            let host_if = &attachment.host_interface;
            let bridge = self.bridge_of(attachment).await?;
            // The peer gets a temporary unique name, renamed once inside.
            let peer = format!("zxp{}", &host_if[3..]);
            self.handle
                .link()
                .add(LinkVeth::new(host_if, &peer).build())
                .execute()
                .await
                .map_err(|e| netlink_error(&format!("creating veth {host_if}"), e))?;
            let host_index = link_index(&self.handle, host_if)
                .await?
                .ok_or_else(|| Error::Internal(format!("veth {host_if} vanished")))?;
            links::mark_new(&self.handle, host_index, host_if, &mark).await?;
            let peer_index = link_index(&self.handle, &peer)
                .await?
                .ok_or_else(|| Error::Internal(format!("veth peer {peer} vanished")))?;
            set(
                &self.handle,
                LinkUnspec::new_with_index(peer_index).setns_by_fd(ns.as_raw_fd()),
                "moving a veth into the container namespace",
            )
            .await?;
            // Both ends take the bridge's MTU: under an overlay it is less
            // than the default, and a larger one would fragment or drop.
            let mtu = crate::overlay::link_mtu(&self.handle, bridge).await?;
            let mut plug = LinkUnspec::new_with_index(host_index).controller(bridge);
            if let Some(mtu) = mtu {
                plug = plug.mtu(mtu);
            }
            set(
                &self.handle,
                plug.up(),
                &format!("plugging {host_if} into {}", attachment.bridge),
            )
            .await?;
            let index = link_index(&inside, &peer)
                .await?
                .ok_or_else(|| Error::Internal(format!("veth {peer} is not in the namespace")))?;
            let mut named = LinkUnspec::new_with_index(index)
                .name(attachment.interface.clone())
                .address(
                    MacAddress::try_from(attachment.mac.as_str())?
                        .octets()
                        .to_vec(),
                );
            if let Some(mtu) = mtu {
                named = named.mtu(mtu);
            }
            set(&inside, named, &format!("naming {}", attachment.interface)).await?;
            ignore_router_advertisements(path, &attachment.interface)?;
            announce_when_up(path, &attachment.interface)?;
            // Addresses before the link is up, so the announcement of
            // `announce_when_up` carries them.
            for ip in &attachment.addresses {
                add_address(&inside, index, ip.address, ip.prefix_len)
                    .execute()
                    .await
                    .map_err(|e| netlink_error(&format!("adding {ip}"), e))?;
            }
            set(
                &inside,
                LinkUnspec::new_with_index(index).up(),
                "bringing the interface up",
            )
            .await?;
            for ip in &attachment.addresses {
                // The first network of each family carries the default route.
                let first = if is_v4(ip.address) {
                    &mut route_v4
                } else {
                    &mut route_v6
                };
                if !*first {
                    *first = true;
                    add_default_route(&inside, index, ip.gateway).await?;
                }
            }
        }
        Ok(())
    }
}

/// Has interface `interface` of the namespace at `path` ignore router
/// advertisements (`accept_ra` 0), before it is up. Its addresses and
/// routes are set here, from IPAM; the network's advertisements (see
/// `dhcp`) would only add a second default route and cut the lifetime of
/// its static IPv6 address to two hours (RFC 4862 5.5.3 e), after which it
/// would depend on the responder running. A namespace without IPv6 has no
/// such setting and needs none. `interface` has just been accepted by the
/// kernel as a link name (no `/`, not `.` or `..`), so it is one path
/// component. Errors: `Unsupported` (privileges), `Internal`.
fn ignore_router_advertisements(path: &Path, interface: &str) -> Result<()> {
    write_setting(
        path,
        &format!("ipv6/conf/{interface}/accept_ra"),
        "0",
        &format!("turning off router advertisements on {interface}"),
    )
}

/// Writes `value` to `/proc/sys/net/SETTING` of the namespace at `path`;
/// a setting the namespace lacks (no IPv6) is skipped. Errors:
/// `Unsupported` (privileges), `Internal`, saying what it was `doing`.
fn write_setting(path: &Path, setting: &str, value: &str, doing: &str) -> Result<()> {
    let setting = format!("/proc/sys/net/{setting}");
    // /proc/sys/net is the namespace of whoever opens it: open it inside.
    match netns::run_in(path, || std::fs::write(&setting, value)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(doing, e)),
        _ => Ok(()),
    }
}

/// Has interface `interface` of the namespace at `path` announce its
/// addresses when it comes up (`arp_notify`: a gratuitous ARP;
/// `ndisc_notify`: an unsolicited neighbour advertisement). An instance
/// that moved to this node keeps its address and MAC, and until it sends
/// a frame the bridges of the network (here and on the other nodes) and
/// its peers' neighbour caches still point at the node it left; the
/// announcement moves them at once. A namespace without IPv6 has no
/// `ndisc_notify`. Errors: `Unsupported` (privileges), `Internal`.
fn announce_when_up(path: &Path, interface: &str) -> Result<()> {
    let doing = format!("turning on address announcements on {interface}");
    for setting in ["ipv4/conf/{}/arp_notify", "ipv6/conf/{}/ndisc_notify"] {
        write_setting(path, &setting.replace("{}", interface), "1", &doing)?;
    }
    Ok(())
}

/// Sets what `message` says on a link, failing with what was being `doing`.
pub(crate) async fn set(
    handle: &Handle,
    message: rtnetlink::LinkMessageBuilder<LinkUnspec>,
    doing: &str,
) -> Result<()> {
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .map_err(|e| netlink_error(doing, e))
}

async fn add_default_route(handle: &Handle, index: u32, gateway: IpAddr) -> Result<()> {
    let message = match gateway {
        IpAddr::V4(gw) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build(),
    };
    match handle.route().add(message).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(netlink_error(
            &format!("adding a default route via {gateway}"),
            e,
        )),
    }
}
