//! A network that spans the cluster, end to end across real processes: a
//! `zixiao server` on the running etcd (`ZIXIAO_TEST_ETCD_ENDPOINTS`) and
//! two `zixiao agent`s with their watchdogs, on the one containerd
//! (`ZIXIAO_TEST_CONTAINERD_SOCKET`), running busybox containers and a QEMU microVM.
//!
//! Set-up (all made by the test, all taken away by [`Cluster`]'s `Drop`,
//! also when it fails):
//! - three network namespaces pinned under a temporary directory: the
//!   underlay (a bridge `br0`, the "switch" between machines, with an
//!   address of its own from which the test plays a machine outside the
//!   nodes) and one per node (its "host"), each joined to the bridge by a
//!   veth pair (`eth0` on the node side, its underlay address);
//! - one veth pair from this machine's namespace into the bridge, with a
//!   test-owned /24 (`10.213.N.0/24`, `N` from the process id), so that
//!   the server, which must stay in this machine's namespace to reach
//!   etcd on loopback, and the agents reach each other;
//! - each agent runs inside its node's namespace (its process enters it
//!   before exec) and advertises `ADDRESS:7000` on its node's `eth0`,
//!   which is also its VXLAN underlay address. containerd is shared
//!   through its Unix socket, which does not depend on the namespace: the
//!   agent's driver pins each container's namespace itself and creates
//!   the veth, bridge, VXLAN device and nftables rules from inside the
//!   agent's namespace, so runc only joins a namespace that is already
//!   wired to the node's bridge.
//!
//! The probes run in the containers' own network namespaces (entered with
//! `nsenter`, busybox `ping` and `nc` of this machine): the packets leave
//! from the container's `eth0` exactly as the container's own would. The
//! listeners are the containers' commands (busybox `nc` in busybox).
//!
//! Checks: containers on one network on two nodes ping each other and
//! exchange TCP, and a container pings a QEMU microVM on the other node; a container of another network on the second node cannot
//! reach them; `--publish` answers at the node's underlay address from the
//! underlay; a second publish of the host port on the same node is refused
//! naming the holder, changing nothing; `kill -9` of the first node's agent
//! moves the published container to the second node, where it answers at
//! the same address from the other container and at the new node's
//! underlay address, and no longer at the old one; a network deleted
//! while the first node is down is deleted at once, and that node removes
//! its bridge once its agent is back, when it also holds nothing of the
//! moved container. Finally
//! everything is deleted through the server and no container namespace
//! is left on either node.
//!
//! The overlay's entries are checked as a user would (`bridge fdb`, `ip
//! neigh`, `network get`): each node holds the other's container's MAC as
//! a static entry to that node and its address as a permanent neighbour;
//! right after the failover node B holds none for the moved container
//! (no ageing wait), and node A, back, holds none of the network.
//!
//! Prints (not asserts) the time from create to the address answering
//! from the other node, and the ping round trip through the overlay
//! against one on the same node.
#![cfg(all(feature = "etcd", feature = "containerd", feature = "microvm"))]

mod processes;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use processes::{command, start, start_in_netns, through, wait_for_status, Running};
use zixiao_core::{Client, Instance, InstanceStatus, NodeStatus};
use zixiao_testing::output::{assert_refused, json};
use zixiao_testing::wait::{runtime_endpoint, wait_until, wait_until_ok};

/// How long any one step may take on a loaded two-core machine.
const STEP: Duration = Duration::from_secs(60);
/// The port each agent listens on in its own namespace.
const AGENT_PORT: u16 = 7000;

fn run(command: &mut Command) -> Output {
    let out = command.output().expect("spawn");
    assert!(out.status.success(), "{command:?}: {out:?}");
    out
}

/// `program ARGS` inside the namespace pinned at `ns`.
fn in_ns(ns: &Path, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command.arg(format!("--net={}", ns.display())).arg(program);
    command
}

fn ip_in(ns: &Path, args: &str) {
    run(in_ns(ns, "ip").args(args.split(' ')));
}

/// One node: its namespace, its underlay address, its agent's files.
struct Node {
    name: String,
    netns: PathBuf,
    address: String,
    state: PathBuf,
    agent: Option<Running>,
}

impl Node {
    /// Where its agent pins containers' namespaces.
    fn netns_dir(&self) -> PathBuf {
        self.state.join("netns")
    }

    /// The pinned namespace of container `id` on this node.
    fn container_netns(&self, id: &str) -> Option<PathBuf> {
        let suffix = format!("-{id}");
        std::fs::read_dir(self.netns_dir())
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&suffix))
            })
    }

    /// Kills its agent, then every other process in its namespace: its
    /// watchdog, which outlives the agent, and a DHCP server its agent
    /// left.
    fn kill_all(&mut self) {
        self.agent = None;
        kill_in_netns(&self.netns);
    }
}

/// The network namespace identity (device, inode) of `path`.
fn ns_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// SIGKILLs every process whose network namespace is the one pinned at
/// `netns`: only processes this test started (its agents, their
/// watchdogs and DHCP servers) live in a namespace it made.
fn kill_in_netns(netns: &Path) {
    let Some(target) = ns_id(netns) else {
        return;
    };
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && ns_id(&entry.path().join("ns/net")) == Some(target) {
            // SAFETY: kill(2) of a process in this test's own namespace.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// The whole set-up; see the module documentation. Its `Drop` deletes
/// what was created through the server, kills the agents and watchdogs,
/// removes the containers it created from containerd, the store records
/// under its etcd prefix, its links and its namespaces.
struct Cluster {
    pid: u32,
    socket: String,
    etcd: String,
    prefix: String,
    host_link: String,
    underlay: PathBuf,
    nodes: Vec<Node>,
    server: Option<Running>,
    client_dir: PathBuf,
    /// Instance names and ids it created.
    instances: Vec<(String, String)>,
    networks: Vec<String>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// The namespaces and links (see the module documentation), busybox
    /// in containerd, and the server; no agent yet.
    fn start(socket: String, busybox: &str, etcd: String, guest: [&str; 2]) -> Cluster {
        let pid = std::process::id();
        let root = PathBuf::from(
            std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".to_owned()),
        );
        std::fs::create_dir_all(&root).expect("the test directory");
        let dir = tempfile::Builder::new()
            .prefix("h-overlay2-")
            .tempdir_in(&root)
            .expect("tempdir");
        let subnet = format!("10.213.{}", pid % 250 + 1);
        let mut cluster = Cluster {
            pid,
            socket,
            etcd,
            prefix: format!("/zixiao-h-overlay2-{pid}"),
            host_link: format!("hovl{pid}"),
            underlay: dir.path().join("underlay.ns"),
            nodes: Vec::new(),
            server: None,
            client_dir: dir.path().join("client"),
            instances: Vec::new(),
            networks: Vec::new(),
            dir,
        };
        // The guard exists before the first namespace, so a failing
        // command below leaves nothing behind.
        cluster.pin(&cluster.underlay.clone());
        let ul = cluster.underlay.clone();
        ip_in(&ul, "link set lo up");
        ip_in(&ul, "link add br0 type bridge");
        ip_in(&ul, &format!("addr add {subnet}.100/24 dev br0"));
        ip_in(&ul, "link set br0 up");
        for (i, letter) in ["a", "b"].into_iter().enumerate() {
            let netns = cluster.dir.path().join(format!("{letter}.ns"));
            cluster.pin(&netns);
            let address = format!("{subnet}.{}", i + 1);
            ip_in(
                &ul,
                &format!(
                    "link add ul-{letter} type veth peer name eth0 netns {}",
                    netns.display()
                ),
            );
            ip_in(&ul, &format!("link set ul-{letter} master br0 up"));
            ip_in(&netns, "link set lo up");
            ip_in(&netns, &format!("addr add {address}/24 dev eth0"));
            ip_in(&netns, "link set eth0 up");
            cluster.nodes.push(Node {
                name: format!("ovl-{letter}-{pid}"),
                state: cluster.dir.path().join(letter),
                netns,
                address,
                agent: None,
            });
        }
        // This machine's end: the server, which reaches etcd on loopback,
        // listens here for the agents.
        let host_link = cluster.host_link.clone();
        run(Command::new("ip").args([
            "link",
            "add",
            &host_link,
            "type",
            "veth",
            "peer",
            "name",
            "ul-host",
            "netns",
            &ul.display().to_string(),
        ]));
        ip_in(&ul, "link set ul-host master br0 up");
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{subnet}.254/24"),
            "dev",
            &host_link,
        ]));
        run(Command::new("ip").args(["link", "set", &host_link, "up"]));

        run(command(&cluster.dir.path().join("local")).args([
            "--containerd-socket",
            &cluster.socket,
            "image",
            "import",
            busybox,
        ]));
        // Each node's store holds the microVM's kernel and initrd: an
        // agent boots only what its node holds.
        for node in &cluster.nodes {
            for (path, kind, name) in [(guest[0], "kernel", "k1"), (guest[1], "initrd", "i1")] {
                run(command(&node.state)
                    .args(["image", "import", path, "--kind", kind, "--name", name]));
            }
        }
        let listen = format!("{subnet}.254:0");
        let server = start(
            &cluster.dir.path().join("server"),
            &[
                "server",
                "--etcd",
                &cluster.etcd,
                "--etcd-prefix",
                &cluster.prefix,
                "--listen",
                &listen,
                "--insecure-no-tls",
                "--id",
                "h-overlay2",
            ],
        );
        cluster.server = Some(server);
        cluster
    }

    /// Pins a new network namespace at `path`.
    fn pin(&self, path: &Path) {
        std::fs::write(path, b"").expect("the namespace's file");
        run(Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true"));
    }

    fn server_addr(&self) -> String {
        self.server.as_ref().expect("the server").addr.clone()
    }

    fn client(&self) -> Client {
        zixiao_api::connect(&self.server_addr()).expect("client")
    }

    /// The CLI through the server.
    fn cli(&self, args: &[&str]) -> Output {
        through(&self.client_dir, &self.server_addr(), args)
    }

    /// Starts node `i`'s agent in its namespace, with its watchdog, and
    /// waits until the node is ready.
    async fn start_agent(&mut self, i: usize) {
        let server = self.server_addr();
        let node = &mut self.nodes[i];
        let listen = format!("{}:{AGENT_PORT}", node.address);
        let netns_dir = node.netns_dir().display().to_string();
        let agent = start_in_netns(
            &node.netns,
            &node.state,
            &[
                "--containerd-socket",
                &self.socket,
                "agent",
                "--server",
                &server,
                "--name",
                &node.name,
                "--zone",
                &node.name,
                "--listen",
                &listen,
                "--advertise",
                &listen,
                "--insecure-no-tls",
                "--netns-dir",
                &netns_dir,
                "--skip-smoke-test",
            ],
        );
        node.agent = Some(agent);
        let name = node.name.clone();
        wait_for_status(&self.client(), &name, NodeStatus::Ready).await;
    }

    /// `instance create` through the server with `args`; remembered for
    /// the clean-up.
    fn create(&mut self, name: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec![
            "instance",
            "create",
            "--name",
            name,
            "--type",
            "container",
            "--image",
            "busybox",
        ];
        all.extend_from_slice(args);
        let created = json(self.cli(&all));
        let id = created["id"].as_str().expect("id").to_owned();
        self.instances.push((name.to_owned(), id));
        created
    }

    /// `instance create` as [`Cluster::create`] does, of a container
    /// answering every TCP connection on its port 80 with `text`.
    fn create_answering(&mut self, name: &str, args: &[&str], text: &str) -> serde_json::Value {
        let command = ["--", "nc", "-ll", "-p", "80", "-e", "echo", text];
        self.create(name, &[args, &command[..]].concat())
    }

    fn create_network(&mut self, name: &str, subnet: &str, vni: &str) {
        json(self.cli(&["network", "create", name, "--subnet", subnet, "--vni", vni]));
        self.networks.push(name.to_owned());
    }

    /// Waits until `name` runs on node `node`, and returns it.
    async fn running_on(&self, name: &str, node: usize) -> Instance {
        let client = self.client();
        let node = self.nodes[node].name.clone();
        wait_until_ok(&format!("{name} running on {node}"), STEP, || {
            let (client, node) = (client.clone(), node.clone());
            async move {
                let found = client.get_instance(name).await.map_err(|e| e.to_string())?;
                if found.status == InstanceStatus::Running && found.node.as_deref() == Some(&node) {
                    Ok(found)
                } else {
                    Err(format!("{:?} on {:?}", found.status, found.node))
                }
            }
        })
        .await
    }

    /// The namespace of `instance`'s container on node `node`.
    async fn netns_of(&self, instance: &Instance, node: usize) -> PathBuf {
        let node = &self.nodes[node];
        wait_until_ok(
            &format!("{}'s namespace", instance.name),
            STEP,
            || async move {
                node.container_netns(&instance.id).ok_or_else(|| {
                    let listed: Vec<_> = std::fs::read_dir(node.netns_dir())
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.file_name())
                        .collect();
                    let log = std::fs::read_to_string(node.state.with_extension("log"))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    format!(
                        "{} holds {listed:?}; {}'s agent logged (last first):\n{}",
                        node.netns_dir().display(),
                        node.name,
                        tail.join("\n")
                    )
                })
            },
        )
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.server.is_some() {
            for (name, _) in self.instances.iter().rev() {
                let _ = self.cli(&["instance", "delete", name]);
            }
            for network in &self.networks {
                let _ = self.cli(&["network", "delete", network]);
            }
        }
        for node in &mut self.nodes {
            node.kill_all();
        }
        self.server = None;
        // What the agents could not take away (a node whose agent died).
        for (_, id) in &self.instances {
            let ctr = |args: &[&str]| {
                Command::new("ctr")
                    .args(["--address", &self.socket, "--namespace", "zixiao"])
                    .args(args)
                    .output()
            };
            let _ = ctr(&["tasks", "rm", "-f", id]);
            let _ = ctr(&["containers", "rm", id]);
            let _ = ctr(&["snapshots", "rm", id]);
        }
        let _ = Command::new("etcdctl")
            .arg(format!("--endpoints={}", self.etcd.replace("http://", "")))
            .args(["del", "--prefix", &self.prefix])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
        // Containers' namespaces, then the nodes' and the underlay's.
        let mut pins: Vec<PathBuf> = self
            .nodes
            .iter()
            .flat_map(|n| {
                std::fs::read_dir(n.netns_dir())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        pins.extend(self.nodes.iter().map(|n| n.netns.clone()));
        pins.push(self.underlay.clone());
        for pin in pins {
            let _ = Command::new("umount").arg("-l").arg(&pin).output();
            let _ = std::fs::remove_file(&pin);
        }
    }
}

/// What `busybox nc` reads from `to:port` inside namespace `ns` (3 s to
/// connect), when it connects and reads something.
fn fetch(ns: &Path, to: &str, port: u16) -> Option<String> {
    let out = in_ns(ns, "busybox")
        .args(["nc", "-w", "3", to, &port.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("busybox nc");
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !answer.is_empty()).then_some(answer)
}

/// Whether one `busybox ping` from namespace `ns` reaches `to`, and its
/// round trip.
fn ping(ns: &Path, to: &str) -> Option<Duration> {
    let out = in_ns(ns, "busybox")
        .args(["ping", "-c", "1", "-W", "1", to])
        .output()
        .expect("busybox ping");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let ms: f64 = text
        .split("time=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(ms / 1000.0))
}

/// The median ping round trip from `ns` to `to` over `n` pings.
fn median_rtt(ns: &Path, to: &str, n: usize) -> Duration {
    let mut rtts: Vec<Duration> = (0..n).filter_map(|_| ping(ns, to)).collect();
    assert!(
        !rtts.is_empty(),
        "no ping from {} reached {to}",
        ns.display()
    );
    rtts.sort();
    rtts[rtts.len() / 2]
}

/// Neighbours, forwarding entries and links in each namespace, for a
/// failed reachability check to show.
fn diagnose(namespaces: &[(&PathBuf, &str)]) -> String {
    let mut out = String::new();
    for (ns, what) in namespaces {
        for args in [&["-br", "addr"][..], &["neigh"], &["-d", "link"]] {
            let shown = in_ns(ns, "ip").args(args).output().expect("ip");
            out += &format!(
                "{what}: ip {args:?}:\n{}\n",
                String::from_utf8_lossy(&shown.stdout)
            );
        }
        let shown = in_ns(ns, "bridge").args(["fdb"]).output().expect("bridge");
        out += &format!(
            "{what}: bridge fdb:\n{}\n",
            String::from_utf8_lossy(&shown.stdout)
        );
    }
    out
}

/// What node namespace `ns` holds of network `bridge`'s overlay, as a
/// user would look: `bridge fdb show dev zxx…` (the VXLAN device's
/// entries; empty without the device) and `ip neigh show dev BRIDGE nud
/// permanent`.
fn overlay_entries(ns: &Path, bridge: &str) -> (String, String) {
    let vxlan = format!("zxx{}", &bridge["zxb".len()..]);
    let shown = |program: &str, args: &[&str]| {
        let out = in_ns(ns, program).args(args).output().expect(program);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (
        shown("bridge", &["fdb", "show", "dev", &vxlan]),
        shown("ip", &["neigh", "show", "dev", bridge, "nud", "permanent"]),
    )
}

/// Whether `fdb` (see [`overlay_entries`]) sends `mac` through the tunnel
/// to `node` as a static entry (programmed, not learnt).
fn tunnels(fdb: &str, mac: &str, node: &str) -> bool {
    fdb.lines()
        .any(|l| l.starts_with(&format!("{mac} dst {node} ")) && l.contains(" static"))
}

/// The state of part `kind` on every node in `network get`'s JSON.
fn part_states(status: &serde_json::Value, kind: &str) -> Vec<String> {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            n["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["kind"] == kind)
                .map(|p| p["state"].as_str().unwrap_or_default().to_owned())
                .unwrap_or_else(|| format!("no {kind} part: {n}"))
        })
        .collect()
}

/// The bridge of network `name`, as the server stores it.
async fn client_network_bridge(cluster: &Cluster, name: &str) -> String {
    let network = cluster.client().get_network(name).await.expect("network");
    network.bridge.as_str().to_owned()
}

fn address(instance: &Instance) -> String {
    instance.attachments[0].addresses[0].address.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_spans_two_agent_processes_and_follows_a_failover() {
    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let Some(busybox) = runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox image") else {
        return;
    };
    let Some(etcd) = runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd") else {
        return;
    };
    let Some(kernel) = runtime_endpoint("ZIXIAO_TEST_MICROVM_KERNEL", "the microVM kernel") else {
        return;
    };
    let Some(initrd) = runtime_endpoint("ZIXIAO_TEST_MICROVM_INITRD", "the microVM initrd") else {
        return;
    };
    let began = Instant::now();
    let mut cluster = Cluster::start(socket, &busybox, etcd, [&kernel, &initrd]);
    // A host port of this run's: the nodes are namespaces of their own,
    // but the check reads better with one no other test uses.
    let port = 20_000 + (cluster.pid % 20_000) as u16;
    let publish = format!("{port}:80");
    let (a, b) = (cluster.nodes[0].name.clone(), cluster.nodes[1].name.clone());

    // Node A alone first, so `web` (which may go anywhere) lands there.
    cluster.start_agent(0).await;
    cluster.create_network("lan", "10.214.0.0/24", "4242");
    cluster.create_network("other", "10.215.0.0/24", "4243");
    cluster.create_answering(
        "web",
        &[
            "--network",
            "lan",
            "--publish",
            &publish,
            "--restart",
            "always",
        ],
        "hello-from-web",
    );
    let web = cluster.running_on("web", 0).await;
    let web_ip = address(&web);
    let web_ns_a = cluster.netns_of(&web, 0).await;

    // Node B, and `peer` on `lan` there (its zone is its node's name).
    cluster.start_agent(1).await;
    let created = Instant::now();
    cluster.create_answering(
        "peer",
        &["--network", "lan", "--zone", &b],
        "hello-from-peer",
    );
    let peer = cluster.running_on("peer", 1).await;
    let peer_ip = address(&peer);
    let peer_ns = cluster.netns_of(&peer, 1).await;

    // 1. Across nodes on one network: ping and TCP both ways.
    let reachable = {
        let (ns, ip) = (&peer_ns, &web_ip);
        wait_until("web reachable from peer's node", STEP, || async move {
            ping(ns, ip).map(|_| ())
        })
        .await;
        created.elapsed()
    };
    let answer = fetch(&peer_ns, &web_ip, 80).expect("peer reads web's answer");
    assert_eq!(answer.trim(), "hello-from-web");
    assert!(ping(&web_ns_a, &peer_ip).is_some(), "web pings peer");
    let answer = fetch(&web_ns_a, &peer_ip, 80).expect("web reads peer's answer");
    assert_eq!(answer.trim(), "hello-from-peer");
    // Programmed from the store, not learnt: each node sends the other's
    // container's MAC straight to that node, and resolves its address
    // itself.
    let lan_bridge = client_network_bridge(&cluster, "lan").await;
    let (web_mac, peer_mac) = (
        web.attachments[0].mac.clone(),
        peer.attachments[0].mac.clone(),
    );
    let (a_addr, b_addr) = (
        cluster.nodes[0].address.clone(),
        cluster.nodes[1].address.clone(),
    );
    let (fdb_b, neigh_b) = overlay_entries(&cluster.nodes[1].netns, &lan_bridge);
    assert!(tunnels(&fdb_b, &web_mac, &a_addr), "node B: {fdb_b}");
    assert!(
        neigh_b.contains(&format!("{web_ip} lladdr {web_mac} PERMANENT")),
        "node B: {neigh_b}"
    );
    let (fdb_a, neigh_a) = overlay_entries(&cluster.nodes[0].netns, &lan_bridge);
    assert!(tunnels(&fdb_a, &peer_mac, &b_addr), "node A: {fdb_a}");
    assert!(
        neigh_a.contains(&format!("{peer_ip} lladdr {peer_mac} PERMANENT")),
        "node A: {neigh_a}"
    );
    let shown = json(cluster.cli(&["network", "get", "lan"]));
    assert_eq!(
        part_states(&shown, "forwarding"),
        ["ok", "ok"],
        "network get: {shown}"
    );

    // A QEMU microVM on node A joins the same network: peer on B pings it.
    let vm = json(cluster.cli(&[
        "instance",
        "create",
        "--name",
        "vm",
        "--type",
        "microvm",
        "--backend",
        "qemu",
        "--kernel",
        "k1",
        "--initrd",
        "i1",
        "--cmdline",
        "console=ttyS0 panic=-1 quiet",
        "--cpus",
        "1",
        "--memory",
        "256",
        "--network",
        "lan",
        "--zone",
        &a,
    ]));
    let vm_id = vm["id"].as_str().expect("id").to_owned();
    cluster.instances.push(("vm".to_owned(), vm_id));
    let vm_ip = address(&cluster.running_on("vm", 0).await);
    let (ns, ip) = (&peer_ns, &vm_ip);
    wait_until(
        "the microVM on A answering peer on B",
        STEP,
        || async move { ping(ns, ip).map(|_| ()) },
    )
    .await;
    json(cluster.cli(&["instance", "delete", "vm"]));
    let client = cluster.client();
    wait_until("the microVM gone", STEP, || {
        let client = client.clone();
        async move { client.get_instance("vm").await.is_err().then_some(()) }
    })
    .await;

    // A container of another network on node B reaches neither.
    cluster.create(
        "outsider",
        &["--network", "other", "--zone", &b, "--", "sleep", "600"],
    );
    let outsider = cluster.running_on("outsider", 1).await;
    let outsider_ns = cluster.netns_of(&outsider, 1).await;
    let other_gateway = "10.215.0.1";
    let (ns, gw) = (&outsider_ns, other_gateway);
    wait_until("outsider reaches its gateway", STEP, || async move {
        ping(ns, gw).map(|_| ())
    })
    .await;
    assert_eq!(ping(&outsider_ns, &web_ip), None, "isolation across nodes");
    assert_eq!(
        fetch(&outsider_ns, &web_ip, 80),
        None,
        "isolation across nodes"
    );
    assert_eq!(ping(&outsider_ns, &peer_ip), None, "isolation on one node");

    // 2. The published port answers from the underlay at node A's address.
    let underlay = cluster.underlay.clone();
    let answer = {
        let (ul, at) = (&underlay, &a_addr);
        wait_until("web's published port at node A", STEP, || async move {
            fetch(ul, at, port).filter(|a| a.contains("hello-from-web"))
        })
        .await
    };
    assert_eq!(answer.trim(), "hello-from-web");
    let shown = json(cluster.cli(&["instance", "get", "web"]));
    assert!(
        shown.to_string().contains(&port.to_string()),
        "instance get shows the publish: {shown}"
    );
    // The same host port on node A again: refused, naming `web`; nothing
    // stored, and web still answers.
    assert_refused(
        cluster.cli(&[
            "instance",
            "create",
            "--name",
            "clash",
            "--type",
            "container",
            "--image",
            "busybox",
            "--network",
            "lan",
            "--zone",
            &a,
            "--publish",
            &publish,
            "--",
            "sleep",
            "600",
        ]),
        "a second publish of the port on node A",
        1,
        "failed_precondition",
        &format!("host port {port}/tcp is published by instance `web`"),
    );
    assert!(
        cluster.client().get_instance("clash").await.is_err(),
        "nothing stored"
    );
    assert!(fetch(&underlay, &a_addr, port).is_some_and(|a| a.contains("hello-from-web")));

    // Peer to web through the overlay now; on one node after the move.
    let across = median_rtt(&peer_ns, &web_ip, 5);

    // 3. Node A's agent dies: its watchdog fences web, the server moves
    // it to node B, where it keeps its address and its publish.
    let _ = cluster.nodes[0].agent.as_mut().expect("agent").child.kill();
    let killed = Instant::now();
    let moved = cluster.running_on("web", 1).await;
    assert_eq!(address(&moved), web_ip, "the same address after the move");
    // At once (no ageing): node B, where web runs now, no longer sends its
    // MAC to node A, nor resolves its address to the tunnel.
    let (fdb_b, neigh_b) = overlay_entries(&cluster.nodes[1].netns, &lan_bridge);
    assert!(!fdb_b.contains(&web_mac), "node B: {fdb_b}");
    assert!(!neigh_b.contains(&web_ip), "node B: {neigh_b}");
    let web_ns_b = cluster.netns_of(&moved, 1).await;
    let (ns, ip) = (&peer_ns, &web_ip);
    let nodes = (&cluster.nodes[0].netns, &cluster.nodes[1].netns, &web_ns_b);
    wait_until_ok("the moved web answering peer", STEP, || async move {
        fetch(ns, ip, 80)
            .filter(|a| a.contains("hello-from-web"))
            .ok_or_else(|| {
                diagnose(&[
                    (ns, "peer"),
                    (nodes.2, "web"),
                    (nodes.0, "node A"),
                    (nodes.1, "node B"),
                ])
            })
    })
    .await;
    let failover = killed.elapsed();
    assert!(
        ping(&web_ns_b, &peer_ip).is_some(),
        "the moved web pings peer"
    );
    let same_node = median_rtt(&peer_ns, &web_ip, 5);
    let (ul, at) = (&underlay, &b_addr);
    wait_until("web's published port at node B", STEP, || async move {
        fetch(ul, at, port).filter(|a| a.contains("hello-from-web"))
    })
    .await;
    let (ul, at) = (&underlay, &a_addr);
    wait_until(
        "web's published port gone from node A",
        STEP,
        || async move { fetch(ul, at, port).is_none().then_some(()) },
    )
    .await;

    // A network deleted while node A is down goes at once; node A
    // removes its bridge when it is back.
    let other_bridge = client.get_network("other").await.expect("other").bridge;
    json(cluster.cli(&["instance", "delete", "outsider"]));
    wait_until("outsider gone", STEP, || {
        let client = client.clone();
        async move { client.get_instance("outsider").await.is_err().then_some(()) }
    })
    .await;
    json(cluster.cli(&["network", "delete", "other"]));
    assert!(client.get_network("other").await.is_err(), "other is kept");
    let node_a_ns = cluster.nodes[0].netns.clone();
    let bridge_on_a = || {
        in_ns(&node_a_ns, "ip")
            .args(["link", "show", other_bridge.as_str()])
            .output()
            .expect("run ip")
            .status
            .success()
    };
    assert!(bridge_on_a(), "node A's copy went while it was down");

    // Node A comes back (its agent restarted): it keeps nothing of web,
    // and its old address still does not answer for it.
    cluster.start_agent(0).await;
    wait_until("node A to remove the deleted network", STEP, || async {
        (!bridge_on_a()).then_some(())
    })
    .await;
    let node_a = &cluster.nodes[0];
    let web_id = web.id.clone();
    let web_id = &web_id;
    wait_until("node A to drop its copy of web", STEP, || async move {
        node_a.container_netns(web_id).is_none().then_some(())
    })
    .await;
    assert_eq!(
        fetch(&underlay, &a_addr, port),
        None,
        "node A publishes nothing"
    );
    // Nor any forwarding entry of `lan`, which it no longer carries.
    let (ns, bridge) = (&cluster.nodes[0].netns, &lan_bridge);
    wait_until_ok("node A to drop its overlay entries", STEP, || async move {
        let (fdb, neigh) = overlay_entries(ns, bridge);
        (fdb.lines().all(|l| !l.contains(" dst ")) && neigh.trim().is_empty())
            .then_some(())
            .ok_or_else(|| format!("{fdb}{neigh}"))
    })
    .await;

    // 4. Clean up through the server while it runs, then check the nodes.
    for name in ["web", "peer"] {
        json(cluster.cli(&["instance", "delete", name]));
    }
    wait_until("the instances gone", STEP, || {
        let client = client.clone();
        async move {
            client
                .list_instances(Default::default())
                .await
                .ok()
                .filter(|l| l.is_empty())
        }
    })
    .await;
    json(cluster.cli(&["network", "delete", "lan"]));
    for node in &cluster.nodes {
        wait_until(
            "the nodes' containers' namespaces gone",
            STEP,
            || async move {
                std::fs::read_dir(node.netns_dir())
                    .map(|d| d.flatten().filter(|e| e.path().is_file()).count() == 0)
                    .unwrap_or(true)
                    .then_some(())
            },
        )
        .await;
    }

    println!("overlay across agent processes (busybox ping, median of 5):");
    println!("  {:<44} {:>10}", "measure", "value");
    println!(
        "  {:<44} {:>10.1?}",
        "peer create on B -> reaches web on A", reachable
    );
    println!(
        "  {:<44} {:>10.1?}",
        "ping RTT across nodes (overlay)", across
    );
    println!(
        "  {:<44} {:>10.1?}",
        "ping RTT same node (after the move)", same_node
    );
    println!(
        "  {:<44} {:>10.1?}",
        "kill -9 agent -> moved web answering", failover
    );
    println!("  {:<44} {:>10.1?}", "whole test", began.elapsed());
}
