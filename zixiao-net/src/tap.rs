//! TAP devices of VMs: per attachment a persistent TAP (`zxt…`, the
//! attachment's `host_interface`, marked as its network's) plugged into the
//! network's bridge (checked to be the network's) and up. The guest's MAC
//! is the attachment's `mac`, set on the VM's network card by its monitor;
//! the TAP keeps a MAC of its own.
//!
//! A TAP lives in the network namespace of the thread that opened
//! `/dev/net/tun`, and a monitor opening it by name must run there too:
//! both happen in the namespace of the [`LinuxNetwork`]'s netlink socket
//! ([`LinuxNetwork::run_in_netns`]). The TAPs are made without
//! `IFF_VNET_HDR`: a monitor that attaches (QEMU's `-netdev tap,ifname=`)
//! sets the flags it wants on its own queue.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use rtnetlink::LinkUnspec;
use zixiao_core::model::{InterfaceKind, InterfaceName, NetworkAttachment};
use zixiao_core::{Error, Result};

use crate::host::{link_index, netlink_error, LinuxNetwork};
use crate::links::{self, LinkKind};

/// The TUN/TAP clone device.
const TUN_DEVICE: &str = "/dev/net/tun";

impl LinuxNetwork {
    /// Runs `f` on a short-lived thread inside this network's namespace (the
    /// netlink socket's), or on the calling thread when that namespace is
    /// unknown. A process `f` starts stays there: a VM monitor started this
    /// way opens its TAP devices by name.
    pub fn run_in_netns<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let Some(ns) = &self.netns else {
            return f();
        };
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: `ns` is an open namespace file for the whole
                    // call; setns only moves this short-lived thread.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
        })
    }

    /// Makes one persistent TAP per attachment (named by its
    /// `host_interface`), marked as its network's, plugged into the
    /// attachment's bridge and up, each with its DHCP host entry (see
    /// [`LinuxNetwork::plug_dhcp`]). Idempotent: a TAP of ours that exists
    /// already (a monitor may hold it) is kept and plugged again. Errors:
    /// `FailedPrecondition` (a network's bridge is not on this node; a link
    /// of a bridge's or TAP's name is not the network's, and is left
    /// untouched; an attachment recorded before installation ids),
    /// `InvalidArgument` (a host interface that is a veth's name),
    /// `Unsupported` (no privileges, no TUN/TAP support), `Internal`. On
    /// error the TAPs this call made are removed again.
    pub async fn attach_tap(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<()> {
        let mut made = Vec::new();
        let result = async {
            for attachment in attachments {
                if self.plug_tap(attachment).await? {
                    made.push(attachment);
                }
            }
            self.plug_dhcp(attachments)
        }
        .await;
        if let Err(e) = result {
            for attachment in made {
                if let Ok(mark) = attachment.mark() {
                    let tap = &attachment.host_interface;
                    let _ = links::delete_owned(&self.handle, tap, LinkKind::Tap, &mark).await;
                }
            }
            return Err(for_instance(instance, e));
        }
        Ok(())
    }

    /// Removes the TAPs of `attachments` that are theirs (a monitor still
    /// holding one loses it) and their DHCP host entries. Idempotent.
    /// Errors: `InvalidArgument` (a veth
    /// name), `FailedPrecondition` (a link of a TAP's name is not the
    /// network's; or, for an attachment recorded before installation ids,
    /// its TAP is still there: named and left untouched).
    pub async fn detach_tap(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<()> {
        for attachment in attachments {
            let removed = async {
                let tap = tap_name(attachment)?;
                match attachment.mark() {
                    Ok(mark) => links::delete_owned(&self.handle, tap, LinkKind::Tap, &mark).await,
                    Err(refusal) => links::absent_or(&self.handle, tap, refusal).await,
                }
            };
            removed.await.map_err(|e| for_instance(instance, e))?;
        }
        self.unplug_dhcp(attachments)
            .map_err(|e| for_instance(instance, e))
    }

    /// Plugs the TAP of one attachment; true when this call made it.
    async fn plug_tap(&self, attachment: &NetworkAttachment) -> Result<bool> {
        let tap = tap_name(attachment)?;
        let mark = attachment.mark()?;
        let bridge = self.bridge_of(attachment).await?;
        let (index, made) = match links::owned(&self.handle, tap, LinkKind::Tap, &mark).await? {
            Some(index) => (index, false),
            None => {
                let name = tap.clone();
                self.run_in_netns(move || create_persistent_tap(&name))
                    .map_err(|e| tun_error(&format!("creating TAP {tap}"), e))?;
                let index = link_index(&self.handle, tap).await?.ok_or_else(|| {
                    Error::Internal(format!("TAP {tap} vanished right after creation"))
                })?;
                links::mark_new(&self.handle, index, tap, &mark).await?;
                (index, true)
            }
        };
        // The bridge's MTU (less than the default under an overlay); the
        // guest's own interface keeps its default unless told otherwise.
        let mut plug = LinkUnspec::new_with_index(index).controller(bridge);
        if let Some(mtu) = crate::overlay::link_mtu(&self.handle, bridge).await? {
            plug = plug.mtu(mtu);
        }
        let plugged = self
            .handle
            .link()
            .set(plug.up().build())
            .execute()
            .await
            .map_err(|e| netlink_error(&format!("plugging {tap} into {}", attachment.bridge), e));
        match plugged {
            Ok(()) => Ok(made),
            Err(e) => {
                if made {
                    let _ = links::delete_index(&self.handle, index, tap).await;
                }
                Err(e)
            }
        }
    }
}

/// The attachment's host interface, which must name a TAP.
fn tap_name(attachment: &NetworkAttachment) -> Result<&InterfaceName> {
    let name = &attachment.host_interface;
    if name.kind() != InterfaceKind::Tap {
        return Err(Error::invalid(
            "host_interface",
            format!("{name} is a veth name, not a TAP's"),
        ));
    }
    Ok(name)
}

/// `error` with the instance it happened to named in its message.
fn for_instance(instance: &str, error: Error) -> Error {
    let prefix = |m: String| format!("instance `{instance}`: {m}");
    match error {
        Error::FailedPrecondition(m) => Error::FailedPrecondition(prefix(m)),
        Error::Unsupported(m) => Error::Unsupported(prefix(m)),
        Error::Internal(m) => Error::Internal(prefix(m)),
        other => other,
    }
}

/// Creates TAP `name` (no packet information header, one queue) in the
/// calling thread's namespace and makes it outlive the file descriptor.
fn create_persistent_tap(name: &InterfaceName) -> io::Result<()> {
    let tun: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the
    // call; the name is NUL-terminated (an InterfaceName is within
    // IFNAMSIZ - 1 bytes and the rest is zero).
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETPERSIST takes an integer argument and reads no memory.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A failure of `/dev/net/tun` as an [`Error`]: missing privileges or TUN
/// support are `Unsupported`, with what to do; the rest `Internal`.
fn tun_error(doing: &str, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Error::Unsupported(format!(
            "missing privileges for {doing}: CAP_NET_ADMIN is needed"
        )),
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => Error::Unsupported(format!(
            "{doing}: this node has no TUN/TAP support ({TUN_DEVICE}: {e}; load the `tun` module)"
        )),
        _ => Error::Internal(format!("{doing}: {e}")),
    }
}
