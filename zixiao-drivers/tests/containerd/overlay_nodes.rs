//! Two "nodes" for overlay tests and benchmarks, in one process: node 1 is
//! the calling thread's network namespace, node 2 a namespace pinned in the
//! test's directory, joined by a veth pair carrying their underlay
//! addresses; a controller places containers on each (zones `z1`, `z2`)
//! with a LinuxNetwork per node. Shared by `tests/containerd/overlay.rs`
//! and `benches/overlay.rs` (included by path), so both measure and check
//! the same set-up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zixiao_core::host::HostFacts;
use zixiao_core::model::InstallationId;
use zixiao_core::{Controller, CreateInstance, Instance, LocalAgent, Network, NetworkHost};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};
use zixiao_net::{LinuxNetwork, StoreIpam, Underlay};
use zixiao_store::EmbeddedStore;

pub(crate) const UNDERLAY_1: &str = "10.250.0.1";
pub(crate) const UNDERLAY_2: &str = "10.250.0.2";

pub(crate) fn run(program: &str, args: &[&str]) {
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
pub(crate) struct OnThread {
    runtime: tokio::runtime::Handle,
    pub(crate) inner: LinuxNetwork,
}

impl OnThread {
    /// A LinuxNetwork made (with `underlay`) and served on a thread in the
    /// namespace at `ns`, pinning containers' namespaces in `netns_dir`.
    pub(crate) fn start(ns: &Path, netns_dir: PathBuf, underlay: Underlay) -> OnThread {
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
    async fn set_overlay(
        &self,
        network: &Network,
        view: &zixiao_core::model::OverlayView,
    ) -> zixiao_core::Result<()> {
        let (network, view) = (network.clone(), view.clone());
        self.on(move |h| Box::pin(async move { h.set_overlay(&network, &view).await }))
            .await
    }
}

/// A controller with nodes `n1` (zone `z1`, `host1`) and `n2` (zone `z2`,
/// `host2`), each running containers on containerd with its own network.
pub(crate) async fn two_nodes(
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

/// Makes node 2's namespace (pinned at `<netns_dir>/node2`) and the
/// underlay between the two, and returns node 1's and node 2's hosts (node
/// 1's in the calling thread's namespace, containers' namespaces pinned in
/// `netns_dir` and `<netns_dir>/node2-pins`).
pub(crate) fn nodes(netns_dir: &Path) -> (LinuxNetwork, OnThread) {
    let node2 = netns_dir.join("node2");
    zixiao_net::netns::create(&node2).expect("node 2's namespace");
    run(
        "ip",
        &["link", "add", "ul1", "type", "veth", "peer", "name", "ul2"],
    );
    run(
        "ip",
        &[
            "link",
            "set",
            "ul2",
            "netns",
            node2.to_str().expect("utf-8 path"),
        ],
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
    let host1 = LinuxNetwork::connect(netns_dir)
        .expect("netlink")
        .with_underlay(underlay(UNDERLAY_1));
    let host2 = OnThread::start(&node2, netns_dir.join("node2-pins"), underlay(UNDERLAY_2));
    (host1, host2)
}

/// `request` placed in `zone` (`z1`: node 1, `z2`: node 2).
pub(crate) fn in_zone(mut request: CreateInstance, zone: &str) -> CreateInstance {
    request.spec.placement.zone = Some(zone.to_owned());
    request
}

fn underlay(text: &str) -> Underlay {
    text.parse().expect("underlay")
}
