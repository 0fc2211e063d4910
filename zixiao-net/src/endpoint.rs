//! Container endpoints: a network namespace pinned at
//! `<netns_dir>/zx-<instance id>`, and per attachment a veth pair whose host
//! end (`zxv…`) joins the network's bridge and whose other end, moved into
//! the namespace, is named `eth<i>` with the attachment's MAC, addresses and
//! default route. A runtime points the container at the namespace path.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use zixiao_core::model::NetworkAttachment;
use zixiao_core::{Error, Result};

use crate::host::{errno, is_v4, link_index, netlink_error, LinuxNetwork, NETNS_PREFIX};
use crate::netns;

/// The namespace file name of instance `instance`'s container.
pub fn netns_name(instance: &str) -> String {
    format!("{NETNS_PREFIX}{instance}")
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

fn parse_mac(mac: &str) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid("mac", format!("`{mac}` is not a MAC address")))?;
    if bytes.len() != 6 {
        return Err(Error::invalid(
            "mac",
            format!("`{mac}` is not a MAC address"),
        ));
    }
    Ok(bytes)
}

impl LinuxNetwork {
    /// The namespace path of instance `instance`'s container.
    pub fn netns_path(&self, instance: &str) -> PathBuf {
        self.netns_dir.join(netns_name(instance))
    }

    /// Creates the container namespace of `instance` with one interface per
    /// attachment, and returns its path. Idempotent: an earlier endpoint of
    /// the same instance is replaced. Errors: `FailedPrecondition` (a
    /// network's bridge is not on this node), `Unsupported` (privileges),
    /// `Internal`. On error nothing of the endpoint is left.
    pub async fn attach_container(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<PathBuf> {
        self.detach_container(instance, attachments).await?;
        let path = self.netns_path(instance);
        netns::create(&path).map_err(|e| io_error("creating a network namespace", e))?;
        match self.plumb(&path, attachments).await {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = self.detach_container(instance, attachments).await;
                Err(e)
            }
        }
    }

    /// Removes the namespace and host-side devices of `instance`'s
    /// container. Idempotent.
    pub async fn detach_container(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<()> {
        for attachment in attachments {
            self.delete_link(&attachment.host_interface).await?;
        }
        netns::remove(&self.netns_path(instance))
            .map_err(|e| io_error("removing a network namespace", e))
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
            let host_if = &attachment.host_interface;
            let bridge = link_index(&self.handle, &attachment.bridge)
                .await?
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "network `{}` is not set up on this node (bridge {} is missing)",
                        attachment.network, attachment.bridge
                    ))
                })?;
            // The peer gets a temporary unique name, renamed once inside.
            let peer = format!("zxp{}", &host_if[3..]);
            self.handle
                .link()
                .add(LinkVeth::new(host_if, &peer).build())
                .execute()
                .await
                .map_err(|e| netlink_error(&format!("creating veth {host_if}"), e))?;
            let peer_index = link_index(&self.handle, &peer)
                .await?
                .ok_or_else(|| Error::Internal(format!("veth peer {peer} vanished")))?;
            set(
                &self.handle,
                LinkUnspec::new_with_index(peer_index).setns_by_fd(ns.as_raw_fd()),
                "moving a veth into the container namespace",
            )
            .await?;
            let host_index = link_index(&self.handle, host_if)
                .await?
                .ok_or_else(|| Error::Internal(format!("veth {host_if} vanished")))?;
            set(
                &self.handle,
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge)
                    .up(),
                &format!("plugging {host_if} into {}", attachment.bridge),
            )
            .await?;
            let index = link_index(&inside, &peer)
                .await?
                .ok_or_else(|| Error::Internal(format!("veth {peer} is not in the namespace")))?;
            set(
                &inside,
                LinkUnspec::new_with_index(index)
                    .name(attachment.interface.clone())
                    .address(parse_mac(&attachment.mac)?),
                &format!("naming {}", attachment.interface),
            )
            .await?;
            set(
                &inside,
                LinkUnspec::new_with_index(index).up(),
                "bringing the interface up",
            )
            .await?;
            for ip in &attachment.addresses {
                inside
                    .address()
                    .add(index, ip.address, ip.prefix_len)
                    .execute()
                    .await
                    .map_err(|e| netlink_error(&format!("adding {ip}"), e))?;
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

async fn set(
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
