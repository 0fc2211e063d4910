//! One network spanning two nodes through its VXLAN overlay, end to end
//! through the controller: two "nodes" are two network namespaces the test
//! makes (the test's own and a pinned one), each with its own LinuxNetwork
//! and underlay address on a veth pair between them, and containers on the
//! real containerd placed on each (by zone). The host's network is never
//! touched.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zixiao_core::host::HostFacts;
use zixiao_core::model::{CreateNetwork, InstallationId};
use zixiao_core::{
    Controller, CreateInstance, ErrorKind, Instance, InstanceStatus, LocalAgent, Network,
    NetworkHost,
};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};
use zixiao_net::{LinuxNetwork, StoreIpam, Underlay};
use zixiao_store::EmbeddedStore;
use zixiao_testing::wait::wait_until_ok;

use super::network::{address, isolated, on_network, until_status};
use super::{fixture, TIMEOUT};

const UNDERLAY_1: &str = "10.250.0.1";
const UNDERLAY_2: &str = "10.250.0.2";

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

/// Runs `ip args` in the namespace pinned at `ns`.
fn ip_in(ns: &Path, args: &[&str]) {
    let net = format!("--net={}", ns.display());
    let mut all = vec![net.as_str(), "ip"];
    all.extend_from_slice(args);
    run("nsenter", &all);
}

/// A [`NetworkHost`] whose calls run on a thread inside another network
/// namespace: the nftables processes a host runs are started from the
/// calling thread, so node 2's must start from a thread in node 2.
#[derive(Debug, Clone)]
struct OnThread {
    runtime: tokio::runtime::Handle,
    inner: LinuxNetwork,
}

impl OnThread {
    /// A LinuxNetwork made (with `underlay`) and served on a thread in the
    /// namespace at `ns`, pinning containers' namespaces in `netns_dir`.
    fn start(ns: &Path, netns_dir: PathBuf, underlay: Underlay) -> OnThread {
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = std::fs::File::open(ns).expect("open node 2's namespace");
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: `ns` is an open namespace file; setns only moves this
            // thread, which serves node 2 until the process ends.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let host = LinuxNetwork::connect(netns_dir)
                    .expect("netlink in node 2")
                    .with_underlay(underlay);
                tx.send((tokio::runtime::Handle::current(), host))
                    .expect("send");
                std::future::pending::<()>().await;
            });
        });
        let (runtime, inner) = rx.recv().expect("node 2's thread");
        OnThread { runtime, inner }
    }

    async fn on<T: Send + 'static>(
        &self,
        f: impl FnOnce(LinuxNetwork) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
            + Send
            + 'static,
    ) -> T {
        let inner = self.inner.clone();
        self.runtime
            .spawn(async move { f(inner).await })
            .await
            .expect("node 2's task")
    }
}

#[async_trait::async_trait]
impl NetworkHost for OnThread {
    async fn ensure_network(&self, network: &Network) -> zixiao_core::Result<()> {
        let network = network.clone();
        self.on(move |h| Box::pin(async move { h.ensure_network(&network).await }))
            .await
    }
    async fn remove_network(&self, network: &Network) -> zixiao_core::Result<()> {
        let network = network.clone();
        self.on(move |h| Box::pin(async move { h.remove_network(&network).await }))
            .await
    }
    async fn inventory(&self) -> zixiao_core::Result<Vec<String>> {
        self.on(|h| Box::pin(async move { h.inventory().await }))
            .await
    }
    async fn reconcile(
        &self,
        installation: &InstallationId,
        networks: &[Network],
        instances: &[Instance],
        seen: &[String],
    ) -> zixiao_core::Result<Vec<String>> {
        let args = (
            installation.clone(),
            networks.to_vec(),
            instances.to_vec(),
            seen.to_vec(),
        );
        self.on(move |h| {
            Box::pin(async move {
                let (i, n, x, s) = args;
                h.reconcile(&i, &n, &x, &s).await
            })
        })
        .await
    }
    async fn underlay(&self) -> zixiao_core::Result<Option<IpAddr>> {
        NetworkHost::underlay(&self.inner).await
    }
    async fn set_overlay_peers(
        &self,
        network: &Network,
        peers: &[IpAddr],
    ) -> zixiao_core::Result<()> {
        let (network, peers) = (network.clone(), peers.to_vec());
        self.on(move |h| Box::pin(async move { h.set_overlay_peers(&network, &peers).await }))
            .await
    }
}

/// A controller with nodes `n1` (zone `z1`, `host1`) and `n2` (zone `z2`,
/// `host2`), each running containers on containerd with its own network.
async fn two_nodes(
    dir: &Path,
    options: &ContainerdOptions,
    host1: LinuxNetwork,
    host2: OnThread,
) -> Controller {
    let store = Arc::new(EmbeddedStore::open(&dir.join("store.redb")).expect("open store"));
    let mut builder = Controller::builder(
        store.clone(),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .address_allocator(Arc::new(StoreIpam::new(store)))
    .network_host("n1", Arc::new(host1.clone()))
    .network_host("n2", Arc::new(host2.clone()));
    let mut registrations = Vec::new();
    for (node, zone, network) in [("n1", "z1", host1), ("n2", "z2", host2.inner.clone())] {
        let driver = ContainerdDriver::connect(options.clone())
            .await
            .expect("connect")
            .with_network(network);
        let agent = LocalAgent::new(HostFacts::probe(dir).expect("host facts"))
            .with_driver(Arc::new(driver));
        let mut registration = agent.registration(node);
        registration.zone = zone.to_owned();
        registration.capacity.cpus = registration.capacity.cpus.max(zixiao_core::Cpus::cores(16));
        registrations.push(registration);
        builder = builder.agent(node, Arc::new(agent));
    }
    let controller = builder.build();
    for registration in registrations {
        controller
            .register_node(registration)
            .await
            .expect("register");
    }
    controller
}

fn in_zone(mut request: CreateInstance, zone: &str) -> CreateInstance {
    request.spec.placement.zone = Some(zone.to_owned());
    request
}

fn underlay(text: &str) -> Underlay {
    text.parse().expect("underlay")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn containers_on_one_network_on_two_nodes_talk_through_the_overlay_and_networks_stay_apart() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture("overlay").await else {
            return;
        };
        // Node 2's namespace, and the underlay between the two nodes.
        let node2 = netns_dir.join("node2");
        zixiao_net::netns::create(&node2).expect("node 2's namespace");
        let node2_pins = netns_dir.join("node2-pins");
        run(
            "ip",
            &["link", "add", "ul1", "type", "veth", "peer", "name", "ul2"],
        );
        run(
            "ip",
            &["link", "set", "ul2", "netns", node2.to_str().unwrap()],
        );
        run(
            "ip",
            &["addr", "add", &format!("{UNDERLAY_1}/24"), "dev", "ul1"],
        );
        run("ip", &["link", "set", "ul1", "up"]);
        ip_in(
            &node2,
            &["addr", "add", &format!("{UNDERLAY_2}/24"), "dev", "ul2"],
        );
        ip_in(&node2, &["link", "set", "ul2", "up"]);
        ip_in(&node2, &["link", "set", "lo", "up"]);

        let host1 = LinuxNetwork::connect(&netns_dir)
            .expect("netlink")
            .with_underlay(underlay(UNDERLAY_1));
        let host2 = OnThread::start(&node2, node2_pins, underlay(UNDERLAY_2));
        let c = two_nodes(
            fx.dir.path(),
            fx.driver.options(),
            host1.clone(),
            host2.clone(),
        )
        .await;

        // Bad input first: nothing is stored for it.
        let mut out_of_range = CreateNetwork::new("bad", ["10.71.0.0/24"]);
        out_of_range.vni = Some(1 << 24);
        let err = c.create_network(out_of_range).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("vni"), "{err}");
        let mut lan = CreateNetwork::new("lan", ["10.70.0.0/24"]);
        lan.vni = Some(7001);
        let net = c.create_network(lan).await.expect("create lan");
        assert_eq!(net.vni.map(|v| v.get()), Some(7001));
        let mut taken = CreateNetwork::new("other", ["10.72.0.0/24"]);
        taken.vni = Some(7001);
        let err = c.create_network(taken).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
        assert!(err.to_string().contains("`lan`"), "names the holder: {err}");
        let mut other = CreateNetwork::new("other", ["10.72.0.0/24"]);
        other.vni = Some(7002);
        let other = c.create_network(other).await.expect("create other");

        // Each node has the network's VXLAN device, with the overlay MTU.
        let vxlan = zixiao_net::overlay::VxlanName::of(&net.bridge).to_string();
        assert!(host1.link_index(&vxlan).await.unwrap().is_some());
        assert!(host2.inner.link_index(&vxlan).await.unwrap().is_some());

        // `a` on node 1 listens (again and again: a message that arrives
        // while it restarts the listener is retried by b).
        c.create_instance(in_zone(
            on_network(
                "a",
                "lan",
                "ip -o link show eth0; while true; do nc -l -p 7000; done",
            ),
            "z1",
        ))
        .await
        .expect("create a");
        let a = until_status(&c, "a", InstanceStatus::Running).await;
        assert_eq!(a.node.as_deref(), Some("n1"));
        let a_ip = address(&a);
        // Node 1 alone carries it: no peers yet.
        assert_eq!(
            host1.overlay_peers(&net).await.unwrap(),
            Vec::<IpAddr>::new()
        );

        // `b` on node 2 pings a, then sends it a message (retried).
        let script = format!(
            "i=0; while [ $i -lt 120 ]; do ping -c 1 -W 1 {a_ip} >/dev/null && echo reached-a && \
             echo hello-from-b | nc -w 2 {a_ip} 7000 && echo sent && break; i=$((i+1)); \
             sleep 0.5; done; sleep 600"
        );
        c.create_instance(in_zone(on_network("b", "lan", &script), "z2"))
            .await
            .expect("create b");
        let b = until_status(&c, "b", InstanceStatus::Running).await;
        assert_eq!(b.node.as_deref(), Some("n2"));
        assert_eq!(
            host1.overlay_peers(&net).await.unwrap(),
            vec![ip(UNDERLAY_2)]
        );
        assert_eq!(
            host2.inner.overlay_peers(&net).await.unwrap(),
            vec![ip(UNDERLAY_1)]
        );

        let (fx_ref, a_ref, b_ref) = (&fx, &a, &b);
        let log = wait_until_ok("a's log to show b's message", TIMEOUT, || async move {
            let log = fx_ref.log(a_ref).await;
            if log.contains("hello-from-b") {
                return Ok(log);
            }
            Err(format!(
                "a's log: {log:?}\nb's log: {:?}",
                fx_ref.log(b_ref).await
            ))
        })
        .await;
        assert!(
            log.contains("mtu 1450"),
            "a's eth0 has the overlay MTU: {log}"
        );
        assert!(fx.log(&b).await.contains("reached-a"), "b pinged a");

        // A container of another network on node 2 reaches its own gateway
        // but not a: isolation holds across nodes.
        let gateway = other.subnets[0].gateway;
        let script = format!(
            "ping -c 2 -W 2 {gateway} >/dev/null && echo gateway-ok; \
             if ping -c 3 -W 1 {a_ip} >/dev/null; then echo reached-a; else echo blocked; fi; \
             if echo x | nc -w 2 {a_ip} 7000; then echo sent; else echo refused; fi; sleep 600"
        );
        c.create_instance(in_zone(on_network("x", "other", &script), "z2"))
            .await
            .expect("create x");
        let x = until_status(&c, "x", InstanceStatus::Running).await;
        let x_ref = &x;
        let x_log = wait_until_ok("x's verdict", TIMEOUT, || async move {
            let log = fx_ref.log(x_ref).await;
            if log.contains("sent") || log.contains("refused") {
                Ok(log)
            } else {
                Err(format!("x's log: {log:?}"))
            }
        })
        .await;
        assert!(x_log.contains("gateway-ok"), "x is on its network: {x_log}");
        assert!(
            x_log.contains("blocked") && x_log.contains("refused"),
            "x must not reach a: {x_log}"
        );
        // `other` spans no nodes (x alone, on node 2): no peers anywhere.
        assert!(host2.inner.overlay_peers(&other).await.unwrap().is_empty());

        // b leaves node 2: no node is a peer of another on `lan` any more.
        c.delete_instance("b").await.expect("delete b");
        assert!(c.converge("b").await.expect("converge").is_none());
        assert!(host1.overlay_peers(&net).await.unwrap().is_empty());
        assert!(host2.inner.overlay_peers(&net).await.unwrap().is_empty());

        for name in ["a", "x"] {
            c.delete_instance(name).await.expect("delete");
            assert!(c.converge(name).await.expect("converge").is_none());
        }
        c.delete_network("lan").await.expect("delete lan");
        c.delete_network("other").await.expect("delete other");
        for host in [&host1, &host2.inner] {
            assert!(
                host.links_with_prefix("zxx").await.unwrap().is_empty(),
                "no VXLAN device left"
            );
        }
        assert!(fx.leftovers().await.is_empty());
    });
}
