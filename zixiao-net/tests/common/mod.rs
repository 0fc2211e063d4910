//! Test support: every networking test runs in a network namespace of its
//! own, so the host's network is never touched and everything a test
//! creates there (bridges, veths, nftables tables) dies with it.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use zixiao_core::model::{
    mac_address, CreateNetwork, InstallationId, Instance, InterfaceKind, InterfaceName, IpConfig,
    Network, NetworkAttachment,
};
use zixiao_core::{CreateInstance, InstanceSpec};

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
    let path = dir.path().to_path_buf();
    let outcome = zixiao_net::netns::run_isolated(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(body(path));
    });
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
