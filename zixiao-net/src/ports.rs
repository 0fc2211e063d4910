//! Published ports on a node: an instance's ports of the node forwarded
//! (DNAT) to its address on its first network, in an nftables table of
//! its own, `inet zx_<installation>_pub_<instance id>` ([`PortsTable`]),
//! replaced atomically in one `nft -j -f -` transaction and removed as a
//! whole: nothing of another instance, another installation or anyone
//! else is ever changed.
//!
//! Per published port the table holds (each rule built from typed data, the
//! `prerouting` one commented with the port's text so a node can read back
//! what is published):
//! - `prerouting` (nat, dstnat): traffic arriving for one of the node's own
//!   addresses (`fib daddr type local`, and the host address when one is
//!   given) on the host port is sent to the instance's address and port;
//! - `output` (nat, dstnat): the same for connections the node itself
//!   opens, except to loopback (forwarding 127.0.0.1 would need
//!   `route_localnet`, which exposes every loopback service to the network);
//! - `postrouting` (nat, srcnat): such traffic coming from the instance's
//!   own subnet is masqueraded, or the instance would answer its neighbour
//!   directly over the bridge, bypassing the DNAT, and the neighbour would
//!   drop the answer (hairpin).
//!
//! Replies from outside need no rule of their own: conntrack undoes the
//! DNAT, and a network's own rules (masquerade when NAT is on) apply only
//! to connections that start inside it.
//!
//! Before a table is written the ports are checked free on the node:
//! no other instance's table (any installation's) publishes the same host
//! port and protocol on an overlapping address, and no socket of a process
//! is bound there (read from `/proc/thread-self/net/{tcp,tcp6,udp,udp6}`,
//! the holder named from `/proc/<pid>/fd`): traffic for that port would
//! otherwise be taken from it silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};
use zixiao_core::model::{
    check_targets, Cidr, InstallationId, NetworkAttachment, PortProtocol, PublishedPort,
    HOST_NAME_PREFIX,
};
use zixiao_core::{Error, Result};

use crate::endpoint::{check_instance_id, installation_of};
use crate::host::LinuxNetwork;
use crate::nft;

/// What sits between the installation and the instance id in a ports
/// table's name. It holds a `_`, so the name never reads as a network's
/// table (`zx_<installation>_<network name>`, a DNS label).
const PORTS_INFIX: &str = "_pub_";
/// The state (`st`) of a listening TCP socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
/// The priority of the `dstnat` hook.
const DSTNAT: i32 = -100;
/// The priority of the `srcnat` hook.
const SRCNAT: i32 = 100;

/// The nftables table (family `inet`) of one instance's published ports:
/// `zx_<installation>_pub_<instance id>`. The instance id is 1 to 64 of
/// `a-z`, `0-9` and `-` (as the controller's UUIDs are).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortsTable {
    installation: InstallationId,
    instance: String,
}

impl PortsTable {
    /// The table of `instance` in `installation`. Errors: `InvalidArgument`
    /// on `instance` for an id that cannot be part of a table name.
    pub fn new(installation: &InstallationId, instance: &str) -> Result<Self> {
        check_instance_id(instance)?;
        Ok(PortsTable {
            installation: installation.clone(),
            instance: instance.to_owned(),
        })
    }

    /// The table a name says, if it is a ports table of any installation.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(HOST_NAME_PREFIX)?.strip_prefix('_')?;
        let (installation, instance) = rest.split_once(PORTS_INFIX)?;
        let installation = InstallationId::try_from(installation).ok()?;
        PortsTable::new(&installation, instance).ok()
    }

    /// The installation it belongs to.
    pub fn installation(&self) -> &InstallationId {
        &self.installation
    }

    /// The id of the instance whose ports it publishes.
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

impl fmt::Display for PortsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HOST_NAME_PREFIX}_{}{PORTS_INFIX}{}",
            self.installation, self.instance
        )
    }
}

/// Where an instance's published ports lead: its addresses on its first
/// network (an IPv4 and an IPv6 one at most), each with its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    v4: Option<(Ipv4Addr, Cidr)>,
    v6: Option<(Ipv6Addr, Cidr)>,
}

impl Target {
    /// The addresses of `attachment` (the instance's first). Errors:
    /// `FailedPrecondition` when it has none.
    pub fn of(attachment: &NetworkAttachment) -> Result<Self> {
        let mut target = Target { v4: None, v6: None };
        for ip in &attachment.addresses {
            let subnet = Cidr::new(ip.address, ip.prefix_len)
                .map_err(|e| Error::invalid("attachments[0].addresses", e))?
                .network();
            match ip.address {
                IpAddr::V4(a) if target.v4.is_none() => target.v4 = Some((a, subnet)),
                IpAddr::V6(a) if target.v6.is_none() => target.v6 = Some((a, subnet)),
                _ => {}
            }
        }
        if target.v4.is_none() && target.v6.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "the instance has no address on network `{}` to publish ports to",
                attachment.network
            )));
        }
        Ok(target)
    }
}

/// The ruleset of `table`: `ports` forwarded to `target` (see the module
/// docs). Adding then deleting the table first makes the transaction
/// replace it.
pub fn ruleset(table: &PortsTable, target: &Target, ports: &[PublishedPort]) -> Value {
    let name = table.to_string();
    let id = json!({ "family": "inet", "name": name });
    let mut commands = vec![
        json!({ "metainfo": { "json_schema_version": 1 } }),
        json!({ "add": { "table": id } }),
        json!({ "delete": { "table": id } }),
        json!({ "add": { "table": id } }),
    ];
    for (chain, hook, prio) in [
        ("prerouting", "prerouting", DSTNAT),
        ("output", "output", DSTNAT),
        ("postrouting", "postrouting", SRCNAT),
    ] {
        commands.push(json!({ "add": { "chain": {
            "family": "inet", "table": name, "name": chain,
            "type": "nat", "hook": hook, "prio": prio, "policy": "accept",
        } } }));
    }
    let rule = |chain: &str, comment: Option<String>, expr: Vec<Value>| {
        let mut rule = json!({
            "family": "inet", "table": name, "chain": chain, "expr": expr,
        });
        if let Some(comment) = comment {
            rule["comment"] = comment.into();
        }
        json!({ "add": { "rule": rule } })
    };
    let mut hairpins = BTreeSet::new();
    for port in ports {
        let families = [
            (
                port.covers_ipv4(),
                target.v4.map(|(a, s)| (IpAddr::V4(a), s)),
            ),
            (
                port.covers_ipv6(),
                target.v6.map(|(a, s)| (IpAddr::V6(a), s)),
            ),
        ];
        for (address, subnet) in families
            .into_iter()
            .filter_map(|(covered, to)| to.filter(|_| covered))
        {
            let v4 = address.is_ipv4();
            let (nfproto, family, ip) = if v4 {
                ("ipv4", "ip", "ip")
            } else {
                ("ipv6", "ip6", "ip6")
            };
            let protocol = port.protocol().as_str();
            let mut to_host = vec![
                json!({ "match": { "op": "==", "left": { "meta": { "key": "nfproto" } }, "right": nfproto } }),
                json!({ "match": { "op": "==", "left": { "fib": { "result": "type", "flags": ["daddr"] } }, "right": "local" } }),
            ];
            if let Some(host) = port.host_ip() {
                to_host.push(field_is(ip, "daddr", json!(host.to_string())));
            }
            to_host.push(field_is(protocol, "dport", json!(port.host_port())));
            let dnat = json!({ "dnat": {
                "family": family, "addr": address.to_string(), "port": port.guest_port(),
            } });
            let mut prerouting = to_host.clone();
            prerouting.push(dnat.clone());
            commands.push(rule("prerouting", Some(port.to_string()), prerouting));
            let loopback = if v4 {
                json!({ "prefix": { "addr": "127.0.0.0", "len": 8 } })
            } else {
                json!(Ipv6Addr::LOCALHOST.to_string())
            };
            let mut output = vec![
                to_host[0].clone(),
                json!({ "match": { "op": "!=", "left": { "payload": { "protocol": ip, "field": "daddr" } }, "right": loopback } }),
            ];
            output.extend(to_host[1..].iter().cloned());
            output.push(dnat);
            commands.push(rule("output", None, output));
            // One hairpin rule per target port, however many host ports
            // lead there.
            if !hairpins.insert((address, port.protocol(), port.guest_port())) {
                continue;
            }
            commands.push(rule(
                "postrouting",
                None,
                vec![
                    json!({ "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } }),
                    field_is(
                        ip,
                        "saddr",
                        json!({ "prefix": { "addr": subnet.address().to_string(), "len": subnet.prefix_len() } }),
                    ),
                    field_is(ip, "daddr", json!(address.to_string())),
                    field_is(protocol, "dport", json!(port.guest_port())),
                    json!({ "masquerade": null }),
                ],
            ));
        }
    }
    json!({ "nftables": commands })
}

/// `<protocol> <field> == <right>`, such as `ip daddr 10.0.0.5` or `tcp dport 80`.
fn field_is(protocol: &str, field: &str, right: Value) -> Value {
    json!({ "match": {
        "op": "==",
        "left": { "payload": { "protocol": protocol, "field": field } },
        "right": right,
    } })
}

/// Who holds a host port on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortHolder {
    /// Another instance's published port (its table names it).
    Instance {
        /// Its ports table (installation and instance id).
        table: PortsTable,
        /// What it publishes.
        port: PublishedPort,
    },
    /// A socket of a process of the node.
    Process {
        /// The socket's local address and port.
        address: IpAddr,
        /// Its port.
        port: u16,
        /// TCP or UDP.
        protocol: PortProtocol,
        /// The process holding it (pid and command name), when found.
        process: Option<(u32, String)>,
    },
}

impl PortHolder {
    /// The holder for people, as `asker` (an installation) sees it.
    fn describe(&self, asker: Option<&InstallationId>) -> String {
        match self {
            PortHolder::Instance { table, port } if Some(table.installation()) == asker => {
                format!("instance {} publishes `{port}` there", table.instance())
            }
            PortHolder::Instance { table, port } => format!(
                "instance {} of another Zixiao installation on this node ({}) publishes `{port}` \
                 there",
                table.instance(),
                table.installation()
            ),
            PortHolder::Process {
                address,
                port,
                protocol,
                process,
            } => {
                let socket = match address {
                    IpAddr::V6(a) => format!("[{a}]:{port}/{protocol}"),
                    IpAddr::V4(a) => format!("{a}:{port}/{protocol}"),
                };
                match process {
                    Some((pid, name)) => {
                        format!(
                            "process {pid} (`{}`) is bound to {socket}",
                            name.escape_debug()
                        )
                    }
                    None => format!("a process is bound to {socket}"),
                }
            }
        }
    }
}

/// The ports every Zixiao ports table on this node (any installation's)
/// publishes, read back from the comments of their `prerouting` rules.
pub async fn published_on_node() -> Result<Vec<(PortsTable, PublishedPort)>> {
    let out = nft::run(&["-j", "list", "ruleset", "inet"], None).await?;
    let json: Value = serde_json::from_str(&out)
        .map_err(|e| Error::Internal(format!("`nft -j list ruleset` printed no JSON: {e}")))?;
    let mut found = Vec::new();
    for item in json["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        if rule["chain"] != "prerouting" {
            continue;
        }
        let Some(table) = rule["table"].as_str().and_then(PortsTable::parse) else {
            continue;
        };
        // Only what parses as a published port counts (the comment is
        // ours, but the table could have been edited by hand).
        if let Some(port) = rule["comment"]
            .as_str()
            .and_then(|c| PublishedPort::try_from(c).ok())
        {
            found.push((table, port));
        }
    }
    Ok(found)
}

/// The sockets of this thread's network namespace bound to a host port
/// that `port` would take traffic from: listening TCP sockets, bound UDP
/// sockets, on the same address or a wildcard one.
pub fn bound_sockets(port: &PublishedPort) -> Result<Vec<PortHolder>> {
    // TCP sockets count when listening; UDP ones when bound at all.
    let files: &[(&str, PortProtocol, Option<&str>)] = &[
        ("tcp", PortProtocol::Tcp, Some(TCP_LISTEN)),
        ("tcp6", PortProtocol::Tcp, Some(TCP_LISTEN)),
        ("udp", PortProtocol::Udp, None),
        ("udp6", PortProtocol::Udp, None),
    ];
    let mut found = Vec::new();
    let mut inodes = Vec::new();
    for (file, protocol, state) in files {
        if *protocol != port.protocol() {
            continue;
        }
        let path = format!("/proc/thread-self/net/{file}");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // No IPv6 in this kernel or namespace: nothing bound there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Internal(format!("reading {path}: {e}"))),
        };
        for socket in parse_sockets(&text) {
            if state.is_some_and(|s| s != socket.state) || socket.port != port.host_port() {
                continue;
            }
            let overlaps = match port.host_ip() {
                None => true,
                Some(ip) => {
                    socket.address.is_unspecified()
                        || socket.address == ip
                        || socket_maps_v4(socket.address) == Some(ip)
                }
            };
            if overlaps {
                inodes.push(socket.inode);
                found.push(PortHolder::Process {
                    address: socket.address,
                    port: socket.port,
                    protocol: *protocol,
                    process: None,
                });
            }
        }
    }
    if !found.is_empty() {
        let owners = socket_owners(&inodes);
        for (holder, inode) in found.iter_mut().zip(&inodes) {
            if let PortHolder::Process { process, .. } = holder {
                *process = owners.get(inode).cloned();
            }
        }
    }
    Ok(found)
}

/// Checks that no socket of a process of this thread's network namespace
/// holds the host port of one of `ports` (see [`bound_sockets`]). Errors:
/// `FailedPrecondition` naming the process.
pub fn check_unbound(ports: &[PublishedPort]) -> Result<()> {
    for (i, port) in ports.iter().enumerate() {
        if let Some(holder) = bound_sockets(port)?.first() {
            return Err(taken(i, port, holder, None));
        }
    }
    Ok(())
}

/// The refusal of `spec.publish[i]`, whose host port `holder` holds.
fn taken(
    i: usize,
    port: &PublishedPort,
    holder: &PortHolder,
    asker: Option<&InstallationId>,
) -> Error {
    Error::FailedPrecondition(format!(
        "spec.publish[{i}]: host port {} is taken on this node: {}",
        port.host_side(),
        holder.describe(asker)
    ))
}

/// The IPv4 address an IPv4-mapped IPv6 socket address stands for.
fn socket_maps_v4(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// One line of `/proc/net/{tcp,udp}[6]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Socket {
    address: IpAddr,
    port: u16,
    state: String,
    inode: u64,
}

/// The sockets of a `/proc/net/{tcp,udp}[6]` file; lines that do not parse
/// are skipped.
fn parse_sockets(text: &str) -> Vec<Socket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, port) = fields.get(1)?.split_once(':')?;
            Some(Socket {
                address: proc_address(address)?,
                port: u16::from_str_radix(port, 16).ok()?,
                state: (*fields.get(3)?).to_owned(),
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// An address as `/proc/net` prints it: hex of each 32-bit word in host
/// (little-endian) byte order.
fn proc_address(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    match words.as_slice() {
        [w] if hex.len() == 8 => Some(IpAddr::V4(Ipv4Addr::from(w.to_le_bytes()))),
        [a, b, c, d] if hex.len() == 32 => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].into_iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The process (pid, command name) holding each socket inode, from the
/// `socket:[inode]` links under `/proc/<pid>/fd`. Processes that cannot be
/// read (gone, or not ours to read) are skipped.
fn socket_owners(inodes: &[u64]) -> BTreeMap<u64, (u32, String)> {
    let wanted: BTreeMap<String, u64> = inodes
        .iter()
        .map(|inode| (format!("socket:[{inode}]"), *inode))
        .collect();
    let mut owners = BTreeMap::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = link.to_str().and_then(|l| wanted.get(l)) {
                let name = std::fs::read_to_string(process.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default();
                owners.entry(*inode).or_insert((pid, name));
            }
        }
        if owners.len() == wanted.len() {
            break;
        }
    }
    owners
}

impl LinuxNetwork {
    /// Checks that `instance` (whose first attachment is `attachments[0]`)
    /// can publish `ports` on this node, changing nothing: each leads to an
    /// address of the instance, and no other instance's table and no
    /// process's socket holds its host port. Errors: `InvalidArgument`
    /// (`spec.publish[i]` has no address of its family to lead to; a bad
    /// instance id), `FailedPrecondition` naming the holder (or: no
    /// attachment, or attachments recorded before installation ids),
    /// `Unsupported` (no `nft`, or no privileges).
    pub async fn check_ports(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
        ports: &[PublishedPort],
    ) -> Result<(PortsTable, Target)> {
        let Some(first) = attachments.first() else {
            return Err(Error::FailedPrecondition(format!(
                "instance {instance} publishes ports but is on no network"
            )));
        };
        let installation = match installation_of(attachments)? {
            Some(installation) => installation,
            None => return Err(first.mark().unwrap_err()),
        };
        let table = PortsTable::new(installation, instance)?;
        let target = Target::of(first)?;
        check_targets(ports, first)?;
        let published = published_on_node().await?;
        for (i, port) in ports.iter().enumerate() {
            let holder = published
                .iter()
                .find(|(other, theirs)| *other != table && theirs.conflicts_with(port))
                .map(|(other, theirs)| PortHolder::Instance {
                    table: other.clone(),
                    port: *theirs,
                });
            if let Some(holder) = holder {
                return Err(taken(i, port, &holder, Some(installation)));
            }
        }
        check_unbound(ports)?;
        Ok((table, target))
    }

    /// Publishes `ports` of `instance` (see [`LinuxNetwork::check_ports`],
    /// which it calls first: on error nothing changed): replaces its ports
    /// table with the rules for `ports`, and turns on forwarding for the
    /// families they use. Idempotent. Without ports, removes the table.
    /// Errors: as `check_ports`, and `nft`'s.
    pub async fn publish_ports(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
        ports: &[PublishedPort],
    ) -> Result<()> {
        if ports.is_empty() {
            return self.unpublish_ports(instance, attachments).await;
        }
        let (table, target) = self.check_ports(instance, attachments, ports).await?;
        // Forwarded traffic needs forwarding on, as a network's NAT does.
        for (path, used) in [
            (
                "/proc/sys/net/ipv4/ip_forward",
                target.v4.is_some() && ports.iter().any(PublishedPort::covers_ipv4),
            ),
            (
                "/proc/sys/net/ipv6/conf/all/forwarding",
                target.v6.is_some() && ports.iter().any(PublishedPort::covers_ipv6),
            ),
        ] {
            if used {
                std::fs::write(path, "1").map_err(|e| {
                    Error::Unsupported(format!("cannot enable forwarding ({path}): {e}"))
                })?;
            }
        }
        nft::apply(&ruleset(&table, &target, ports)).await
    }

    /// Removes the ports table of `instance`: every rule it published, and
    /// nothing else. Idempotent; nothing to do without attachments (it
    /// published nothing). Errors: `InvalidArgument` (a bad instance id),
    /// `nft`'s.
    pub async fn unpublish_ports(
        &self,
        instance: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<()> {
        match installation_of(attachments) {
            Ok(Some(installation)) => delete_table(&PortsTable::new(installation, instance)?).await,
            // No attachments, or recorded before installation ids: such
            // an instance never published anything.
            Ok(None) | Err(_) => Ok(()),
        }
    }
}

/// Removes `table`; a missing table is not an error.
pub async fn delete_table(table: &PortsTable) -> Result<()> {
    let id = json!({ "family": "inet", "name": table.to_string() });
    nft::apply(&json!({ "nftables": [
        { "add": { "table": id } },
        { "delete": { "table": id } },
    ] }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> InstallationId {
        InstallationId::try_from("0123456789abcdef").unwrap()
    }

    #[test]
    fn table_names_round_trip_and_never_read_as_a_networks() {
        let id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        let table = PortsTable::new(&here(), id).unwrap();
        let name = table.to_string();
        assert_eq!(name, format!("zx_0123456789abcdef_pub_{id}"));
        assert_eq!(PortsTable::parse(&name), Some(table));
        assert_eq!(zixiao_core::model::HostMark::from_nft_table(&name), None);
        for bad in [
            "zx_0123456789abcdef_lan",
            "zx_0123456789abcdef_pub_",
            "zx_0123456789abcdef_pub_A",
            "zx_0123456789abcdef_pub_x y",
            "zx_0123_pub_x",
            "filter",
        ] {
            assert_eq!(PortsTable::parse(bad), None, "{bad}");
        }
        assert!(PortsTable::new(&here(), "x\nflush ruleset").is_err());
    }

    #[test]
    fn proc_net_lines_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
                   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 678 1\n";
        let sockets = parse_sockets(tcp);
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets[0].address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((sockets[0].port, sockets[0].inode), (8080, 12345));
        assert_eq!(sockets[1].address, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(sockets[1].state, "0A");
        let v6 = "h\n 0: 000000FD000000000000000005000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 99 2\n";
        let sockets = parse_sockets(v6);
        assert_eq!(sockets[0].address, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(sockets[0].port, 53);
    }

    #[test]
    fn the_ruleset_forwards_each_family_the_port_covers() {
        let table = PortsTable::new(&here(), "web-1").unwrap();
        let target = Target {
            v4: Some(("10.9.0.5".parse().unwrap(), "10.9.0.0/24".parse().unwrap())),
            v6: Some(("fd09::5".parse().unwrap(), "fd09::/64".parse().unwrap())),
        };
        let ports: Vec<PublishedPort> = ["8080:80", "192.0.2.7:53:5353/udp"]
            .iter()
            .map(|p| PublishedPort::try_from(*p).unwrap())
            .collect();
        let rules = ruleset(&table, &target, &ports);
        let text = rules.to_string();
        // metainfo, add/delete/add table, 3 chains, 3 rules per (port, family):
        // 8080 over both families, 53 over IPv4 only.
        assert_eq!(rules["nftables"].as_array().unwrap().len(), 7 + 3 * 3);
        assert!(text.contains(r#""comment":"8080:80/tcp""#), "{text}");
        assert!(
            text.contains(r#""dnat":{"addr":"fd09::5","family":"ip6","port":80}"#),
            "{text}"
        );
        assert!(text.contains(r#""right":"192.0.2.7""#), "{text}");
        assert!(
            text.contains(r#""dnat":{"addr":"10.9.0.5","family":"ip","port":5353}"#),
            "{text}"
        );
    }
}
