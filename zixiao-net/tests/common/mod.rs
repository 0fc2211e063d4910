//! Test support: every networking test runs in a network namespace of its
//! own, so the host's network is never touched and everything a test
//! creates there (bridges, veths, nftables tables) dies with it.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use zixiao_core::host::HostFacts;
use zixiao_core::model::{
    mac_address, CreateNetwork, InstallationId, Instance, InterfaceKind, InterfaceName, IpConfig,
    Network, NetworkAttachment,
};
use zixiao_core::{
    AddressAllocator, Controller, CreateInstance, InstanceSpec, InstanceType, LocalAgent,
    NetworkHost, Resources, Store,
};
use zixiao_net::StoreIpam;
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

/// The directory under which tests pin container namespaces, exported by
/// `scripts/services/net.sh start`; `None` (skip) when absent.
pub fn netns_base() -> Option<PathBuf> {
    zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_NETNS_DIR", "netlink and nftables")
        .map(PathBuf::from)
}

/// Runs `body` on a new thread moved into a fresh network namespace, on a
/// current-thread runtime, and returns its result (a panic fails the test).
/// `body` gets a private directory for container namespaces.
pub fn in_fresh_netns<F, Fut>(body: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let Some(base) = netns_base() else { return };
    std::fs::create_dir_all(&base).expect("netns base dir");
    let dir = tempfile::tempdir_in(&base).expect("netns dir");
    // DHCP responders (dnsmasq as `nobody`) read their host entries below it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("netns dir mode");
    let path = dir.path().to_path_buf();
    let outcome = zixiao_net::netns::run_isolated(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(body(path));
    });
    // A DHCP responder left running would keep the namespace alive.
    let _ = zixiao_net::dhcp::stop_responders(dir.path());
    // Whatever a failed test left pinned goes with the directory.
    if let Ok(entries) = std::fs::read_dir(dir.path()) {
        for entry in entries.flatten() {
            let _ = zixiao_net::netns::remove(&entry.path());
        }
    }
    match outcome {
        Ok(entered) => entered.expect("unshare(CLONE_NEWNET): networking tests run as root"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The installation of the tests' networks (each test has a namespace of
/// its own, so one fixed id does not make them share anything).
pub fn here() -> InstallationId {
    InstallationId::try_from("0123456789abcdef").expect("an installation id")
}

/// A validated network of installation [`here`].
pub fn network(name: &str, subnet: &str, nat: bool, isolated: bool) -> Network {
    network_of(&here(), name, subnet, nat, isolated)
}

/// A validated network of `installation`.
pub fn network_of(
    installation: &InstallationId,
    name: &str,
    subnet: &str,
    nat: bool,
    isolated: bool,
) -> Network {
    let mut req = CreateNetwork::new(name, [subnet]);
    req.nat = nat;
    req.isolated = isolated;
    req.validate(installation, chrono::Utc::now())
        .expect("valid network")
}

/// An attachment of `instance` to `network` at `address` (host bits of its
/// subnet), with a veth.
pub fn attachment(
    instance: &str,
    network: &Network,
    index: usize,
    address: &str,
) -> NetworkAttachment {
    attachment_with(InterfaceKind::Veth, instance, network, index, address)
}

/// An attachment of `instance` to `network` at `address` with a `kind` device.
pub fn attachment_with(
    kind: InterfaceKind,
    instance: &str,
    network: &Network,
    index: usize,
    address: &str,
) -> NetworkAttachment {
    let subnet = &network.subnets[0];
    let installation = network.installation.clone().expect("a current network");
    NetworkAttachment {
        network: network.name.clone(),
        host_interface: InterfaceName::of(kind, &installation, instance, &network.name),
        installation: Some(installation),
        interface: format!("eth{index}"),
        bridge: network.bridge.clone(),
        mac: mac_address(instance, &network.name),
        addresses: vec![IpConfig {
            address: address.parse().expect("address"),
            prefix_len: subnet.cidr.prefix_len(),
            gateway: subnet.gateway,
        }],
    }
}

/// An instance record with id `id` holding `attachments`.
pub fn instance(id: &str, attachments: Vec<NetworkAttachment>) -> Instance {
    let mut i = Instance::new(
        id,
        CreateInstance::new(id, InstanceSpec::container("busybox")),
        chrono::Utc::now(),
    );
    i.attachments = attachments;
    i
}

/// Whether one ping from the calling thread's namespace reaches `address`.
pub fn ping(address: IpAddr) -> bool {
    Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "2", &address.to_string()])
        .output()
        .expect("busybox ping")
        .status
        .success()
}

/// Whether one ping from inside the namespace at `netns` reaches `address`.
pub fn ping_from(netns: &std::path::Path, address: IpAddr) -> bool {
    zixiao_net::netns::run_in(netns, || Ok(ping(address))).expect("enter namespace")
}

/// `ip -o <args>` in the calling thread's namespace.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft <args>` in the calling thread's namespace.
pub fn nft(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().expect("nft");
    assert!(out.status.success(), "nft {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a namespace holds that Zixiao could change: its links (with
/// details: kind, alias, master), addresses, routes and nftables ruleset.
#[derive(Debug, PartialEq, Eq)]
pub struct HostState {
    pub links: String,
    pub addresses: String,
    pub routes: String,
    /// `nft list ruleset`, one table per entry, sorted: replacing a table
    /// (as ensuring a network does) lists it last without changing it.
    pub ruleset: Vec<String>,
}

/// The calling thread's namespace as `ip` and `nft` show it. The bridge
/// timers `ip -d link` prints (they count down by themselves) are left out.
pub fn host_state() -> HostState {
    let links = ip(&["-d", "link", "show"])
        .lines()
        .map(|line| {
            let mut kept = Vec::new();
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                kept.push(word);
                if word.ends_with("_timer") {
                    words.next();
                }
            }
            kept.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut ruleset: Vec<String> = nft(&["list", "ruleset"])
        .split("\ntable ")
        .map(|t| t.trim_start_matches("table ").trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    ruleset.sort();
    HostState {
        links,
        addresses: ip(&["addr", "show"]),
        routes: ip(&["route", "show", "table", "all"]),
        ruleset,
    }
}

/// Turns IPv6 off in the calling thread's namespace, so no link-local
/// address comes and goes by itself between two [`host_state`]s.
pub fn without_ipv6() {
    for path in [
        "/proc/sys/net/ipv6/conf/all/disable_ipv6",
        "/proc/sys/net/ipv6/conf/default/disable_ipv6",
    ] {
        std::fs::write(path, "1").expect(path);
    }
}

/// A controller over a fresh embedded store (so an installation of its
/// own) with node `node-a` (fake container and VM drivers) whose networks
/// `host` sets up.
pub struct Setup {
    pub controller: Controller,
    pub ipam: StoreIpam,
    pub _dir: tempfile::TempDir,
}

/// See [`Setup`].
pub async fn setup(host: Arc<dyn NetworkHost>) -> Setup {
    setup_with(host, |ipam| Arc::new(ipam)).await
}

/// As [`setup`], with the controller's allocator made from the StoreIpam.
pub async fn setup_with(
    host: Arc<dyn NetworkHost>,
    allocator: impl FnOnce(StoreIpam) -> Arc<dyn AddressAllocator>,
) -> Setup {
    setup_on(host, allocator, |store| store).await
}

/// As [`setup_with`], with the controller's store (and the allocator's)
/// wrapped by `wrap`, as a test that fails some commits needs.
pub async fn setup_on(
    host: Arc<dyn NetworkHost>,
    allocator: impl FnOnce(StoreIpam) -> Arc<dyn AddressAllocator>,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = wrap(Arc::new(
        EmbeddedStore::open(&dir.path().join("s.redb")).expect("store"),
    ));
    let ipam = StoreIpam::new(store.clone());
    let agent = Arc::new(
        LocalAgent::new(HostFacts {
            hostname: "test".into(),
            capacity: Resources {
                cpus: zixiao_core::Cpus::cores(16),
                memory_mib: 65536,
                disk_gib: 100,
                instances: 64,
            },
        })
        .with_driver(Arc::new(FakeDriver::new(InstanceType::Container)))
        .with_driver(Arc::new(FakeDriver::new(InstanceType::Vm))),
    );
    let registration = agent.registration("node-a");
    let controller = Controller::builder(store, Arc::new(PluginScheduler::default()))
        .agent("node-a", agent)
        .address_allocator(allocator(ipam.clone()))
        .network_host("node-a", host)
        .build();
    controller
        .register_node(registration)
        .await
        .expect("register");
    Setup {
        controller,
        ipam,
        _dir: dir,
    }
}

/// A request for container `name` on `networks`.
pub fn on(name: &str, networks: &[&str]) -> CreateInstance {
    let mut spec = InstanceSpec::container("busybox");
    spec.networks = networks.iter().map(|n| n.to_string()).collect();
    CreateInstance::new(name, spec)
}
