//! [`LinuxNetwork`]: networks on one Linux node through netlink
//! (`rtnetlink`) and nftables. It creates a network's bridge with the
//! gateway addresses, its rules, the veth pairs and namespaces of containers
//! (see `endpoint`), and after a restart removes every `zx…` device, table
//! and namespace the store no longer names.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use zixiao_core::model::{
    Instance, Network, NetworkAttachment, BRIDGE_PREFIX, TAP_PREFIX, VETH_PREFIX,
};
use zixiao_core::{Error, NetworkHost, Result};

use crate::nft;

/// Where container namespaces are pinned by default.
pub const DEFAULT_NETNS_DIR: &str = "/run/zixiao/netns";
/// Prefix of the namespace files of containers.
pub const NETNS_PREFIX: &str = "zx-";

/// Networks on this node; see the module docs.
///
/// Its netlink socket and the `nft` processes it runs belong to the network
/// namespace of the thread that called [`LinuxNetwork::connect`] (the host's,
/// or a test's own namespace).
#[derive(Debug, Clone)]
pub struct LinuxNetwork {
    pub(crate) handle: Handle,
    pub(crate) netns_dir: PathBuf,
    /// The network namespace of the netlink socket, where TAP devices are
    /// made and their monitors started (see `tap`); `None` when it could
    /// not be opened (no `/proc`): then the caller's own.
    pub(crate) netns: Option<Arc<File>>,
}

impl LinuxNetwork {
    /// Opens a netlink connection in the calling thread's network namespace;
    /// containers' namespaces are pinned under `netns_dir`. Must be called
    /// inside a tokio runtime. Errors: `Unavailable` (no netlink socket).
    pub fn connect(netns_dir: impl Into<PathBuf>) -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Internal(format!("opening a netlink socket: {e}")))?;
        tokio::spawn(connection);
        Ok(LinuxNetwork {
            handle,
            netns_dir: netns_dir.into(),
            netns: File::open("/proc/thread-self/ns/net").ok().map(Arc::new),
        })
    }

    /// Where container namespaces are pinned.
    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    /// The index of link `name`, if it exists.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        link_index(&self.handle, name).await
    }

    /// The names of every link whose name starts with `prefix`.
    pub async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink_error("listing links", e))?;
        Ok(links
            .iter()
            .filter_map(link_name)
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    /// Deletes link `name`; a missing link is not an error.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(netlink_error(&format!("deleting link {name}"), e)),
        }
    }

    async fn ensure_bridge(&self, network: &Network) -> Result<u32> {
        let bridge = &network.bridge;
        let index = match self.link_index(bridge).await? {
            Some(index) => index,
            None => {
                self.handle
                    .link()
                    .add(LinkBridge::new(bridge).build())
                    .execute()
                    .await
                    .or_else(|e| {
                        if errno(&e) == Some(libc::EEXIST) {
                            Ok(())
                        } else {
                            Err(netlink_error(&format!("creating bridge {bridge}"), e))
                        }
                    })?;
                self.link_index(bridge).await?.ok_or_else(|| {
                    Error::Internal(format!("bridge {bridge} vanished right after creation"))
                })?
            }
        };
        for subnet in &network.subnets {
            self.handle
                .address()
                .add(index, subnet.gateway, subnet.cidr.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(|e| netlink_error(&format!("adding {} to {bridge}", subnet.gateway), e))?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| netlink_error(&format!("bringing {bridge} up"), e))?;
        Ok(index)
    }

    async fn apply_network(&self, network: &Network) -> Result<()> {
        self.ensure_bridge(network).await?;
        if network.nat {
            // Masquerading needs forwarding in this namespace.
            for (path, family) in [
                ("/proc/sys/net/ipv4/ip_forward", true),
                ("/proc/sys/net/ipv6/conf/all/forwarding", false),
            ] {
                if network.subnets.iter().any(|s| s.cidr.is_ipv4() == family) {
                    std::fs::write(path, "1").map_err(|e| {
                        Error::Unsupported(format!("cannot enable forwarding ({path}): {e}"))
                    })?;
                }
            }
        }
        nft::apply(&nft::ruleset(network)).await
    }
}

#[async_trait::async_trait]
impl NetworkHost for LinuxNetwork {
    async fn ensure_network(&self, network: &Network) -> Result<()> {
        let existed = self.link_index(&network.bridge).await?.is_some();
        let result = self.apply_network(network).await;
        if result.is_err() && !existed {
            // Nothing half-created.
            let _ = self.remove_network(network).await;
        }
        result
    }

    async fn remove_network(&self, network: &Network) -> Result<()> {
        nft::delete_table(&network.nft_table()).await?;
        self.delete_link(&network.bridge).await
    }

    async fn inventory(&self) -> Result<Vec<String>> {
        let mut held = Vec::new();
        for table in nft::our_tables().await? {
            held.push(format!("{TABLE} {table}"));
        }
        for prefix in [BRIDGE_PREFIX, VETH_PREFIX, TAP_PREFIX] {
            for link in self.links_with_prefix(prefix).await? {
                held.push(format!("{LINK} {link}"));
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(NETNS_PREFIX) {
                    held.push(format!("{NAMESPACE} {name}"));
                }
            }
        }
        Ok(held)
    }

    async fn reconcile(
        &self,
        networks: &[Network],
        instances: &[Instance],
        seen: &[String],
    ) -> Result<Vec<String>> {
        for network in networks {
            self.ensure_network(network).await?;
        }
        let attachments: Vec<&NetworkAttachment> =
            instances.iter().flat_map(|i| &i.attachments).collect();
        let mut removed = Vec::new();
        let table_prefix = nft::table_prefix();
        for object in seen {
            let Some((kind, name)) = object.split_once(' ') else {
                continue;
            };
            // `seen` may come over the wire: only Zixiao's objects, by their
            // prefixes, and no path in a namespace name.
            let orphan = match kind {
                TABLE => {
                    name.starts_with(&table_prefix)
                        && !networks.iter().any(|n| n.nft_table() == name)
                }
                LINK => {
                    [BRIDGE_PREFIX, VETH_PREFIX, TAP_PREFIX]
                        .iter()
                        .any(|p| name.starts_with(p))
                        && !networks.iter().any(|n| n.bridge == name)
                        && !attachments.iter().any(|a| a.host_interface == name)
                }
                NAMESPACE => {
                    name.starts_with(NETNS_PREFIX)
                        && !name.contains('/')
                        && !instances.iter().any(|i| {
                            !i.attachments.is_empty() && crate::endpoint::netns_name(&i.id) == name
                        })
                }
                _ => false,
            };
            if !orphan {
                continue;
            }
            match kind {
                TABLE => {
                    nft::delete_table(name).await?;
                    removed.push(format!("nftables table inet {name}"));
                }
                LINK => {
                    self.delete_link(name).await?;
                    removed.push(format!("link {name}"));
                }
                _ => {
                    let path = self.netns_dir.join(name);
                    if path.exists() {
                        crate::netns::remove(&path).map_err(|e| {
                            Error::Internal(format!("removing namespace {name}: {e}"))
                        })?;
                        removed.push(format!("namespace {name}"));
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// The kinds of [`NetworkHost::inventory`] entries.
const TABLE: &str = "table";
const LINK: &str = "link";
const NAMESPACE: &str = "namespace";

pub(crate) async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink_error(&format!("looking up link {name}"), e)),
    }
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// The positive errno of a netlink error reply.
pub(crate) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// A netlink failure as an [`Error`]: missing privileges are `Unsupported`
/// with a clear reason; the rest `Internal`, with what was being done.
pub(crate) fn netlink_error(doing: &str, error: rtnetlink::Error) -> Error {
    match errno(&error) {
        Some(libc::EPERM | libc::EACCES) => Error::Unsupported(format!(
            "missing privileges for {doing}: CAP_NET_ADMIN is needed"
        )),
        Some(code) => Error::Internal(format!(
            "{doing} failed: {}",
            std::io::Error::from_raw_os_error(code)
        )),
        None => Error::Internal(format!("{doing} failed: {error}")),
    }
}

/// Whether `address` is IPv4, for picking a route family.
pub(crate) fn is_v4(address: IpAddr) -> bool {
    address.is_ipv4()
}
