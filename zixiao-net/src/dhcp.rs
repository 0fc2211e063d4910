//! DHCPv4 for guests: one responder per network on each node, handing each
//! attachment exactly its IPAM address, the network's gateway and DNS
//! servers, so a guest that only does DHCP (a stock cloud image, an
//! appliance) configures itself.
//!
//! The responder is Debian's `dnsmasq` (package `dnsmasq-base`), not a
//! server of our own: DHCP has many client quirks (broadcast flags, relay
//! fields, option overloading, renewal states) that dnsmasq has handled for
//! twenty years, it drops to `nobody` after binding, and it re-reads a
//! directory of host entries on inotify, so plugging an instance restarts
//! nothing. It runs with `--port=0` (no DNS server), `--conf-file=/dev/null`
//! (nothing from the node's dnsmasq setup), bound to the network's bridge
//! only (`--bind-dynamic`, `--interface`), in the network namespace of the
//! [`LinuxNetwork`]'s netlink socket, with `static` ranges: only a MAC with
//! a host entry gets a lease, so nothing outside IPAM is ever handed out.
//! It is authoritative, so a client renewing an address it no longer owns
//! is refused instead of ignored.
//!
//! State of a network lives in `<netns_dir>/dhcp/<installation>/<bridge>/`:
//! `pid` (dnsmasq's, checked against `/proc/<pid>/cmdline` before any
//! signal), `dnsmasq.log`, and `hosts/` with one file per attachment, named
//! by its host interface and holding `MAC,IPv4` written from parsed values
//! ([`DhcpHost`]) by rename, so dnsmasq never reads half a file. dnsmasq
//! only adds entries on inotify, so removing one is followed by `SIGHUP`.
//! A bridge MTU other than 1500 (an overlay's) is handed out too (DHCP
//! option 26 and the advertisements' MTU option).
//!
//! dnsmasq daemonizes: it outlives an agent restart as the bridge does,
//! and [`NetworkHost::ensure_network`](zixiao_core::NetworkHost) (which
//! reconcile calls) starts it again when it is not running. A network
//! with neither an IPv4 subnet nor an IPv6 /64 gets no responder, and a
//! node without dnsmasq leaves DHCP off with a logged reason: neither
//! fails the network.
//! Responders only ever serve attachments plugged on this node
//! ([`LinuxNetwork::attach_tap`], [`LinuxNetwork::plug_dhcp`]), so on an
//! overlay spanning nodes a request flooded to another node gets no offer
//! from there.
//!
//! IPv6: on a network's SLAAC subnet (an IPv6 /64, see
//! [`Subnet::is_slaac`](zixiao_core::model::Subnet::is_slaac)) the same
//! dnsmasq sends router advertisements (`--enable-ra`, the prefix
//! `ra-only`: on-link and autonomous, no DHCPv6) with the gateway as
//! default router (router lifetime [`ROUTER_LIFETIME`]). A guest's kernel
//! forms its address from the prefix and its MAC, which is the address
//! IPAM recorded for it, so no host entry is needed and every node's
//! responder advertises the same thing: on an overlay the copies a guest
//! hears from other nodes (same prefix, same anycast gateway MAC and
//! link-local source) agree. dnsmasq rather than a sender of our own:
//! RA timing (solicited answers, the initial burst, renumbering) is again
//! its daily work, and one process per network serves both families. No
//! DNS server is advertised (`--port=0`: there is none), unless the node's
//! resolv.conf names IPv6 ones. DHCPv6 is not served.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zixiao_core::model::{BridgeName, InstallationId, InterfaceName, Network, NetworkAttachment};
use zixiao_core::{Error, Result};

use crate::host::LinuxNetwork;

/// The responder's program, looked up on `PATH` and then in `/usr/sbin`
/// (Debian's place, not on every `PATH`).
pub const DNSMASQ: &str = "dnsmasq";
/// The state directory's name under the namespace directory.
const DHCP_DIR: &str = "dhcp";
/// How long a lease lasts: a guest renews after half of it, so a changed
/// entry reaches it within the hour.
const LEASE: &str = "1h";
/// How long a guest keeps the gateway as its IPv6 default router after an
/// advertisement (seconds): three times dnsmasq's longest interval
/// between unsolicited ones (600 s), as RFC 4861 suggests.
pub const ROUTER_LIFETIME: u32 = 1800;
/// How long a stopped responder may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub use zixiao_core::model::MacAddress;

/// One host entry of a responder: an attachment's MAC and its IPv4
/// address. Only built from parsed values, so the line dnsmasq reads
/// cannot hold anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpHost {
    mac: MacAddress,
    address: Ipv4Addr,
}

impl DhcpHost {
    /// The entry of `attachment`: its MAC and first IPv4 address; `None`
    /// when it has no IPv4 address. Errors: `InvalidArgument` on `mac`.
    pub fn of(attachment: &NetworkAttachment) -> Result<Option<Self>> {
        let mac = MacAddress::try_from(attachment.mac.as_str())?;
        Ok(attachment.addresses.iter().find_map(|ip| match ip.address {
            IpAddr::V4(address) => Some(DhcpHost { mac, address }),
            IpAddr::V6(_) => None,
        }))
    }

    /// The MAC.
    pub fn mac(&self) -> MacAddress {
        self.mac
    }

    /// The address it is given.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The line of its file, as dnsmasq's `--dhcp-host` takes it.
    fn line(&self) -> String {
        format!("{},{}\n", self.mac, self.address)
    }
}

/// Whether a network's responder serves on this node, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum DhcpState {
    /// dnsmasq runs for the network.
    Serving,
    /// Nothing to serve: the network has no IPv4 subnet and no IPv6 /64.
    Off,
    /// It cannot run here (no dnsmasq, or it failed to start): why.
    Unavailable(String),
    /// It should run and does not (it died; the next reconcile restarts it).
    Stopped,
}

impl fmt::Display for DhcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhcpState::Serving => f.write_str("serving"),
            DhcpState::Off => f.write_str("off (no IPv4 subnet, no IPv6 /64)"),
            DhcpState::Unavailable(why) => write!(f, "unavailable ({why})"),
            DhcpState::Stopped => f.write_str("stopped"),
        }
    }
}

/// The state directory of one network's responder.
#[derive(Debug, Clone)]
struct ResponderDir(PathBuf);

impl ResponderDir {
    fn pid_file(&self) -> PathBuf {
        self.0.join("pid")
    }

    fn hosts(&self) -> PathBuf {
        self.0.join("hosts")
    }

    /// The pid of the running dnsmasq of this directory, if one runs: the
    /// pid file's, checked to be a dnsmasq given this very pid file (a
    /// recycled pid is someone else's and is never signalled).
    fn running(&self) -> Option<libc::pid_t> {
        let pid: libc::pid_t = fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let mut args = cmdline.split(|b| *b == 0);
        let program = args.next()?;
        let ours = format!("--pid-file={}", self.pid_file().display());
        let is_dnsmasq = Path::new(std::str::from_utf8(program).ok()?)
            .file_name()
            .is_some_and(|n| n == DNSMASQ);
        (is_dnsmasq && args.any(|a| a == ours.as_bytes())).then_some(pid)
    }

    /// Sends `signal` to the running dnsmasq, if any.
    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.running() {
            // SAFETY: kill has no memory preconditions; `pid` was just
            // checked to be this directory's dnsmasq.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Whether the running dnsmasq was started with exactly `args` (an
    /// older Zixiao's, or one from before the network's subnets changed,
    /// was not). False when none runs.
    fn runs_with(&self, args: &[String]) -> bool {
        let Some(pid) = self.running() else {
            return false;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let running: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .skip(1)
            .filter(|a| !a.is_empty())
            .collect();
        running.len() == args.len() && running.iter().zip(args).all(|(a, b)| *a == b.as_bytes())
    }

    /// Stops the running dnsmasq, waiting for it to exit; its state stays.
    /// Idempotent.
    fn stop(&self) {
        if let Some(pid) = self.running() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            // Until it is gone or a zombie: its parent is init, which may
            // reap late (or, in some containers, never). Its command line
            // is not enough: an exiting process loses it (its memory goes)
            // before it closes its sockets, which a new dnsmasq on the
            // same bridge would then find taken.
            let deadline = Instant::now() + STOP_TIMEOUT;
            while !exited(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops the running dnsmasq (waiting for it to exit) and removes the
    /// directory. Idempotent.
    fn remove(&self) -> io::Result<()> {
        self.stop();
        match fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The program to run: `configured`, else `dnsmasq` on `PATH`, else
/// Debian's `/usr/sbin/dnsmasq`; `None` when there is none.
fn find_dnsmasq(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured {
        return path.is_file().then(|| path.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(DNSMASQ))
        .find(|candidate| candidate.is_file())
}

/// The node's DNS servers a guest can reach: the non-loopback
/// `nameserver`s of `/etc/resolv.conf` (a local stub such as
/// systemd-resolved's 127.0.0.53 is the node's own, not the guest's), and
/// not link-local ones (those are of the node's link, not the guest's).
fn dns_servers() -> Vec<IpAddr> {
    let Ok(text) = fs::read_to_string("/etc/resolv.conf") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect()
}

/// The `--dhcp-option` value listing `servers` of one family, or `None`.
fn dns_option(servers: &[IpAddr], ipv4: bool) -> Option<String> {
    let list: Vec<String> = servers
        .iter()
        .filter(|ip| ip.is_ipv4() == ipv4)
        .map(|ip| match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        })
        .collect();
    (!list.is_empty()).then(|| list.join(","))
}

/// The MTU every link has unless set otherwise, which guests assume.
const DEFAULT_MTU: u32 = 1500;

/// dnsmasq's arguments for `network` with state in `dir`: built from the
/// network's parsed bridge name and subnets, and `mtu` (its bridge's, when
/// known), only. A bridge MTU other than the default (an overlay's, see
/// `overlay`) is handed out (DHCP option 26, and the router
/// advertisements' MTU option), so a guest configured by DHCP never sends
/// frames the overlay would drop.
fn arguments(network: &Network, dir: &ResponderDir, mtu: Option<u32>) -> Vec<String> {
    let mtu = mtu.filter(|m| *m != DEFAULT_MTU);
    let mut args = vec![
        "--conf-file=/dev/null".to_owned(),
        "--port=0".to_owned(),
        format!("--interface={}", network.bridge),
        "--except-interface=lo".to_owned(),
        "--bind-dynamic".to_owned(),
        "--dhcp-authoritative".to_owned(),
        "--leasefile-ro".to_owned(),
        format!("--pid-file={}", dir.pid_file().display()),
        format!("--log-facility={}", dir.0.join("dnsmasq.log").display()),
        format!("--dhcp-hostsdir={}", dir.hosts().display()),
    ];
    let dns = dns_servers();
    for (i, subnet) in network
        .subnets
        .iter()
        .filter(|s| s.cidr.is_ipv4())
        .enumerate()
    {
        let IpAddr::V4(base) = subnet.cidr.network().address() else {
            continue;
        };
        let mask = Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(subnet.cidr.prefix_len()))
                .unwrap_or(0),
        );
        args.push(format!(
            "--dhcp-range=set:s{i},{base},static,{mask},{LEASE}"
        ));
        args.push(format!(
            "--dhcp-option=tag:s{i},option:router,{}",
            subnet.gateway
        ));
        if let Some(list) = dns_option(&dns, true) {
            args.push(format!("--dhcp-option=tag:s{i},option:dns-server,{list}"));
        }
        if let Some(mtu) = mtu {
            args.push(format!("--dhcp-option=tag:s{i},option:mtu,{mtu}"));
        }
    }
    let slaac: Vec<_> = network.subnets.iter().filter(|s| s.is_slaac()).collect();
    if !slaac.is_empty() {
        args.push("--enable-ra".to_owned());
        // Interval 0: dnsmasq's default; the gateway as default router.
        args.push(match mtu {
            Some(mtu) => format!(
                "--ra-param={},mtu:{mtu},0,{ROUTER_LIFETIME}",
                network.bridge
            ),
            None => format!("--ra-param={},0,{ROUTER_LIFETIME}", network.bridge),
        });
        if let Some(list) = dns_option(&dns, false) {
            args.push(format!("--dhcp-option=option6:dns-server,{list}"));
        }
    }
    for subnet in slaac {
        args.push(format!(
            "--dhcp-range={},ra-only,{},{LEASE}",
            subnet.cidr.network().address(),
            subnet.cidr.prefix_len()
        ));
    }
    args
}

/// What `network`'s responder serves, for people; `None`: nothing.
pub fn served(network: &Network) -> Option<&'static str> {
    let ipv4 = network.subnets.iter().any(|s| s.cidr.is_ipv4());
    let slaac = network.subnets.iter().any(|s| s.is_slaac());
    match (ipv4, slaac) {
        (true, true) => Some("DHCPv4 and IPv6 router advertisements"),
        (true, false) => Some("DHCPv4"),
        (false, true) => Some("IPv6 router advertisements"),
        (false, false) => None,
    }
}

fn io_error(doing: String, e: io::Error) -> Error {
    Error::Internal(format!("{doing}: {e}"))
}

impl LinuxNetwork {
    /// The root of the responders' state: `<netns_dir>/dhcp`.
    fn dhcp_root(&self) -> PathBuf {
        self.netns_dir.join(DHCP_DIR)
    }

    fn responder_dir(&self, installation: &InstallationId, bridge: &BridgeName) -> ResponderDir {
        ResponderDir(
            self.dhcp_root()
                .join(installation.as_str())
                .join(bridge.as_str()),
        )
    }

    /// This network host with `program` as its DHCP responder instead of
    /// the `dnsmasq` found on the node (a missing file: DHCP unavailable).
    pub fn with_dnsmasq(mut self, program: impl Into<PathBuf>) -> Self {
        self.dnsmasq = Some(program.into());
        self
    }

    /// Starts `network`'s responder unless it runs as it should, and
    /// returns its state.
    /// Called by `ensure_network` after the bridge is up. A network with
    /// neither an IPv4 subnet nor an IPv6 /64 gets none (`Off`); no
    /// dnsmasq or a failed start is logged and returned (`Unavailable`),
    /// never an error: guests then configure themselves otherwise. A
    /// responder running with other arguments is replaced. Errors:
    /// `FailedPrecondition` (a network stored before installation ids).
    pub(crate) async fn ensure_dhcp(&self, network: &Network) -> Result<DhcpState> {
        let mark = network.mark()?;
        let dir = self.responder_dir(mark.installation(), &network.bridge);
        if served(network).is_none() {
            return Ok(DhcpState::Off);
        }
        // Read after the bridge is set up (its MTU is the overlay's by then).
        let mtu = match self.link_index(network.bridge.as_str()).await? {
            Some(bridge) => crate::overlay::link_mtu(&self.handle, bridge).await?,
            None => None,
        };
        let args = arguments(network, &dir, mtu);
        if dir.runs_with(&args) {
            return Ok(DhcpState::Serving);
        }
        // One started with other arguments (by an older Zixiao: without
        // the router advertisements) is replaced; its host entries stay.
        dir.stop();
        let Some(program) = find_dnsmasq(self.dnsmasq.as_deref()) else {
            let why = "dnsmasq not found".to_owned();
            tracing::warn!(network = %network.name, reason = %why, "DHCP for guests is off");
            return Ok(DhcpState::Unavailable(why));
        };
        let started = self.run_in_netns(|| {
            // The hosts dir is read by dnsmasq as `nobody`: world-readable.
            fs::create_dir_all(dir.hosts())?;
            set_mode(&dir.0, 0o755)?;
            set_mode(&dir.hosts(), 0o755)?;
            // dnsmasq reports a failed start (the port taken, the bridge
            // gone) through its exit status once the daemon is ready or
            // not; its stdio is /dev/null from then on.
            Command::new(&program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
        });
        match started {
            Ok(output) if output.status.success() => Ok(DhcpState::Serving),
            Ok(output) => {
                let why = format!(
                    "dnsmasq failed to start: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                tracing::warn!(network = %network.name, reason = %why, "DHCP for guests is off");
                Ok(DhcpState::Unavailable(why))
            }
            Err(e) => {
                let why = format!("running {}: {e}", program.display());
                tracing::warn!(network = %network.name, reason = %why, "DHCP for guests is off");
                Ok(DhcpState::Unavailable(why))
            }
        }
    }

    /// Whether `network`'s responder serves on this node now.
    /// Errors: `FailedPrecondition` (a network stored before installation ids).
    pub fn dhcp_state(&self, network: &Network) -> Result<DhcpState> {
        let mark = network.mark()?;
        if served(network).is_none() {
            return Ok(DhcpState::Off);
        }
        if find_dnsmasq(self.dnsmasq.as_deref()).is_none() {
            return Ok(DhcpState::Unavailable("dnsmasq not found".to_owned()));
        }
        let dir = self.responder_dir(mark.installation(), &network.bridge);
        Ok(if dir.running().is_some() {
            DhcpState::Serving
        } else {
            DhcpState::Stopped
        })
    }

    /// Whether a responder serves every bridge `attachments` with an IPv4
    /// address join (and there is one), so a guest on them gets its IPv4
    /// addresses by DHCP.
    pub fn dhcp_serves(&self, attachments: &[NetworkAttachment]) -> bool {
        let ipv4: Vec<_> = attachments
            .iter()
            .filter(|a| a.addresses.iter().any(|ip| ip.address.is_ipv4()))
            .collect();
        !ipv4.is_empty()
            && ipv4.iter().all(|a| {
                a.installation.as_ref().is_some_and(|installation| {
                    self.responder_dir(installation, &a.bridge)
                        .running()
                        .is_some()
                })
            })
    }

    /// Stops `network`'s responder and removes its state. Called by
    /// `remove_network`. Idempotent. Errors: `Internal` (the state
    /// directory cannot be removed).
    pub(crate) fn remove_dhcp(
        &self,
        installation: &InstallationId,
        bridge: &BridgeName,
    ) -> Result<()> {
        let dir = self.responder_dir(installation, bridge);
        dir.remove()
            .map_err(|e| io_error(format!("removing DHCP state {}", dir.0.display()), e))
    }

    /// Gives each of `attachments` with an IPv4 address its host entry in
    /// its network's responder (written even while no responder runs: one
    /// started later reads it). For a runtime that plugs the device in
    /// itself (libvirt); [`LinuxNetwork::attach_tap`] does it on its own.
    /// Idempotent. Errors: `InvalidArgument` (a MAC that is not one),
    /// `FailedPrecondition` (attachments recorded before installation
    /// ids), `Internal`.
    pub fn plug_dhcp(&self, attachments: &[NetworkAttachment]) -> Result<()> {
        for attachment in attachments {
            let mark = attachment.mark()?;
            let Some(host) = DhcpHost::of(attachment)? else {
                continue;
            };
            let dir = self.responder_dir(mark.installation(), &attachment.bridge);
            let file = dir.hosts().join(attachment.host_interface.as_str());
            // dnsmasq ignores dot files: the rename is the one event it sees.
            let partial = dir
                .hosts()
                .join(format!(".{}", attachment.host_interface.as_str()));
            let written = fs::create_dir_all(dir.hosts())
                .and_then(|()| fs::write(&partial, host.line()))
                .and_then(|()| set_mode(&partial, 0o644))
                .and_then(|()| fs::rename(&partial, &file));
            written.map_err(|e| io_error(format!("writing DHCP host {}", file.display()), e))?;
        }
        Ok(())
    }

    /// Removes the host entries of `attachments`, and has their responders
    /// forget them. Idempotent. Errors: `Internal`.
    pub fn unplug_dhcp(&self, attachments: &[NetworkAttachment]) -> Result<()> {
        for attachment in attachments {
            let Some(installation) = &attachment.installation else {
                continue;
            };
            let dir = self.responder_dir(installation, &attachment.bridge);
            self.remove_dhcp_host(&dir, &attachment.host_interface)?;
        }
        Ok(())
    }

    fn remove_dhcp_host(&self, dir: &ResponderDir, host: &InterfaceName) -> Result<bool> {
        let file = dir.hosts().join(host.as_str());
        match fs::remove_file(&file) {
            Ok(()) => {
                // dnsmasq only adds hosts on inotify; a reload drops it.
                dir.signal(libc::SIGHUP);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(
                format!("removing DHCP host {}", file.display()),
                e,
            )),
        }
    }

    /// What of the responders [`NetworkHost::inventory`] lists: each
    /// network's as `dhcp <installation>/<bridge>`, each host entry as
    /// `dhcp-host <installation>/<bridge>/<host interface>`.
    ///
    /// [`NetworkHost::inventory`]: zixiao_core::NetworkHost::inventory
    pub(crate) fn dhcp_inventory(&self) -> Vec<String> {
        let mut held = Vec::new();
        for installation in names(&self.dhcp_root()) {
            let root = self.dhcp_root().join(&installation);
            for bridge in names(&root) {
                held.push(format!("{DHCP} {installation}/{bridge}"));
                for host in names(&root.join(&bridge).join("hosts")) {
                    if !host.starts_with('.') {
                        held.push(format!("{DHCP_HOST} {installation}/{bridge}/{host}"));
                    }
                }
            }
        }
        held
    }

    /// Removes, for [`NetworkHost::reconcile`], the responder or host entry
    /// `kind name` (an inventory entry, parsed here: it may come over the
    /// wire) when it is `installation`'s and neither `bridges` nor
    /// `hosts` names it. Returns what it removed.
    ///
    /// [`NetworkHost::reconcile`]: zixiao_core::NetworkHost::reconcile
    pub(crate) fn reconcile_dhcp(
        &self,
        installation: &InstallationId,
        kind: &str,
        name: &str,
        bridges: &[&BridgeName],
        hosts: &[&InterfaceName],
    ) -> Result<Option<String>> {
        let mut parts = name.split('/');
        let (Some(owner), Some(bridge)) = (parts.next(), parts.next()) else {
            return Ok(None);
        };
        let (Ok(owner), Ok(bridge)) = (
            InstallationId::try_from(owner),
            BridgeName::try_from(bridge),
        ) else {
            return Ok(None);
        };
        if &owner != installation {
            return Ok(None);
        }
        let dir = self.responder_dir(installation, &bridge);
        match (kind, parts.next(), parts.next()) {
            (DHCP, None, None) if !bridges.contains(&&bridge) => {
                self.remove_dhcp(installation, &bridge)?;
                Ok(Some(format!("DHCP responder of {bridge}")))
            }
            (DHCP_HOST, Some(host), None) => {
                let Ok(host) = InterfaceName::try_from(host) else {
                    return Ok(None);
                };
                if hosts.contains(&&host) || !self.remove_dhcp_host(&dir, &host)? {
                    return Ok(None);
                }
                Ok(Some(format!("DHCP host {host} of {bridge}")))
            }
            _ => Ok(None),
        }
    }
}

/// Stops every responder whose state is under `netns_dir` (the
/// directory a [`LinuxNetwork`] was connected with), whatever its
/// installation, and removes their state. A responder keeps its network
/// namespace alive, so whoever drops a whole namespace directory (a test,
/// an uninstall) calls this first. Errors: the first directory that
/// cannot be removed.
pub fn stop_responders(netns_dir: &Path) -> io::Result<()> {
    let root = netns_dir.join(DHCP_DIR);
    for installation in names(&root) {
        for bridge in names(&root.join(&installation)) {
            ResponderDir(root.join(&installation).join(bridge)).remove()?;
        }
    }
    Ok(())
}

/// The inventory kinds of responders and host entries.
pub(crate) const DHCP: &str = "dhcp";
pub(crate) const DHCP_HOST: &str = "dhcp-host";

/// The entry names of directory `dir` (none when it is missing).
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Whether process `pid` has exited: gone, or a zombie (its files and
/// sockets closed) that its parent has yet to reap.
fn exited(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::model::{CreateNetwork, IpConfig};

    fn network(subnets: &[&str]) -> Network {
        let installation = InstallationId::try_from("0123456789abcdef").unwrap();
        CreateNetwork::new("lan", subnets.iter().copied())
            .validate(&installation, chrono::Utc::now())
            .unwrap()
    }

    #[test]
    fn a_host_entry_is_the_mac_and_first_ipv4_address_only() {
        let net = network(&["fd00:1::/64", "10.70.0.0/24"]);
        let installation = net.installation.clone().unwrap();
        let mut attachment = NetworkAttachment {
            network: net.name.clone(),
            installation: Some(installation.clone()),
            interface: "eth0".into(),
            host_interface: InterfaceName::of(
                zixiao_core::model::InterfaceKind::Tap,
                &installation,
                "vm",
                &net.name,
            ),
            bridge: net.bridge.clone(),
            mac: "02:00:00:AA:00:01".into(),
            addresses: vec![
                IpConfig {
                    address: "fd00:1::5".parse().unwrap(),
                    prefix_len: 64,
                    gateway: "fd00:1::1".parse().unwrap(),
                },
                IpConfig {
                    address: "10.70.0.5".parse().unwrap(),
                    prefix_len: 24,
                    gateway: "10.70.0.1".parse().unwrap(),
                },
            ],
        };
        let host = DhcpHost::of(&attachment).unwrap().unwrap();
        assert_eq!(host.line(), "02:00:00:aa:00:01,10.70.0.5\n");
        attachment.addresses.remove(1);
        assert_eq!(DhcpHost::of(&attachment).unwrap(), None, "IPv6 only");
        attachment.mac = "02:00:00:aa:00:01\n--dhcp-range=0.0.0.0".into();
        let err = DhcpHost::of(&attachment).unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("mac"), "{err}");
    }

    #[test]
    fn arguments_serve_only_the_bridge_and_only_known_hosts() {
        let net = network(&["10.70.0.0/24", "fd00:1::/80"]);
        let dir = ResponderDir(PathBuf::from("/run/zx/dhcp/x"));
        let args = arguments(&net, &dir, None);
        assert!(args.contains(&format!("--interface={}", net.bridge)));
        assert!(args.contains(&"--port=0".to_owned()));
        assert!(args.contains(&"--dhcp-range=set:s0,10.70.0.0,static,255.255.255.0,1h".to_owned()));
        assert!(args.contains(&"--dhcp-option=tag:s0,option:router,10.70.0.1".to_owned()));
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with("--dhcp-range"))
                .count(),
            1,
            "one IPv4 range, no IPv6 one off SLAAC: {args:?}"
        );
        assert!(!args.contains(&"--enable-ra".to_owned()), "{args:?}");
        assert_eq!(served(&net), Some("DHCPv4"));

        // A /64 is advertised, on-link and autonomous only (no DHCPv6),
        // with the gateway as default router.
        let net = network(&["10.70.0.0/24", "fd00:9e36::/64"]);
        let args = arguments(&net, &dir, None);
        for wanted in [
            "--enable-ra".to_owned(),
            "--dhcp-range=fd00:9e36::,ra-only,64,1h".to_owned(),
            format!("--ra-param={},0,1800", net.bridge),
        ] {
            assert!(args.contains(&wanted), "{wanted} in {args:?}");
        }
        assert_eq!(served(&net), Some("DHCPv4 and IPv6 router advertisements"));
        assert!(!args.iter().any(|a| a.contains("mtu")), "{args:?}");
        // An overlay's bridge MTU is handed out by DHCP and in the
        // advertisements; the default one needs no saying.
        let args = arguments(&net, &dir, Some(1450));
        for wanted in [
            "--dhcp-option=tag:s0,option:mtu,1450".to_owned(),
            format!("--ra-param={},mtu:1450,0,1800", net.bridge),
        ] {
            assert!(args.contains(&wanted), "{wanted} in {args:?}");
        }
        assert_eq!(
            arguments(&net, &dir, Some(1500)),
            arguments(&net, &dir, None)
        );
        let v6 = network(&["fd00:9e36::/64"]);
        assert_eq!(served(&v6), Some("IPv6 router advertisements"));
        assert_eq!(served(&network(&["fd00:9e36::/80"])), None);
    }

    #[test]
    fn dns_servers_are_listed_per_family() {
        let servers: Vec<IpAddr> = ["9.9.9.9", "2620:fe::fe", "1.1.1.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            dns_option(&servers, true).as_deref(),
            Some("9.9.9.9,1.1.1.1")
        );
        assert_eq!(
            dns_option(&servers, false).as_deref(),
            Some("[2620:fe::fe]")
        );
        assert_eq!(dns_option(&servers[..1], false), None);
    }
}
