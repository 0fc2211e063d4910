//! A published port's connection rate: TCP connections per second from
//! outside the node (a namespace linked to it, `zixiao_testing::underlay`)
//! through the DNAT of a published port (`8080:80`, the node's address),
//! against connecting to the instance's address directly (routed through
//! the node, no DNAT), in the same run, interleaved round by round so
//! both see the same machine. Each connection is opened, reads the
//! server's one-line answer to its end and is closed: what a short
//! request costs. The "instance" is a container endpoint (namespace, veth
//! on the network's bridge) made by zixiao-net, with a TCP server inside.
//!
//! ```text
//! eval "$(scripts/services/net.sh start)"
//! cargo bench -p zixiao-net --bench publish
//! ```
//! Needs root and `ZIXIAO_TEST_NETNS_DIR`; without them it prints why and
//! is skipped. Writes `target/bench-results/publish.json`.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zixiao_core::model::{
    mac_address, CreateNetwork, InstallationId, InterfaceKind, InterfaceName, IpConfig,
    NetworkAttachment, PublishedPort,
};
use zixiao_core::NetworkHost;
use zixiao_net::{netns, LinuxNetwork};
use zixiao_testing::underlay::{Underlay, NODE_ADDRESS};

/// Rounds, each measuring both paths.
const ROUNDS: usize = 5;
/// Connections per path per round.
const PER_ROUND: usize = 400;

fn measure(dir: PathBuf) -> Vec<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let installation = InstallationId::generate();
    let net = CreateNetwork::new("bench", ["10.79.0.0/24"])
        .validate(&installation, chrono::Utc::now())
        .expect("valid network");
    let host = runtime.block_on(async { LinuxNetwork::connect(&dir).expect("netlink") });
    let underlay = Underlay::new(&dir.join("outside"), "upl0");
    let id = "bench-web";
    let attachments = vec![NetworkAttachment {
        network: net.name.clone(),
        installation: Some(installation.clone()),
        interface: "eth0".into(),
        host_interface: InterfaceName::of(InterfaceKind::Veth, &installation, id, &net.name),
        bridge: net.bridge.clone(),
        mac: mac_address(id, &net.name),
        addresses: vec![IpConfig {
            address: "10.79.0.5".parse().expect("address"),
            prefix_len: 24,
            gateway: net.subnets[0].gateway,
        }],
    }];
    let instance_ns = runtime.block_on(async {
        host.ensure_network(&net).await.expect("network");
        let path = host
            .attach_container(id, &attachments)
            .await
            .expect("endpoint");
        let port = PublishedPort::try_from("8080:80").expect("port");
        host.publish_ports(id, &attachments, &[port])
            .await
            .expect("publish");
        path
    });
    let listener = netns::run_in(&instance_ns, || TcpListener::bind("0.0.0.0:80"))
        .expect("listen in the instance");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(b"ok\n");
        }
    });
    let published = SocketAddr::from((NODE_ADDRESS, 8080));
    let direct = SocketAddr::from(([10, 79, 0, 5], 80));
    let outside: &Path = underlay.path();
    let run = |to: SocketAddr, count: usize| {
        netns::run_in(outside, || Ok(common::connect_many(to, count))).expect("enter the outside")
    };
    // Warm up both paths (ARP, conntrack, caches).
    run(direct, 50);
    run(published, 50);
    let (mut through_dnat, mut straight) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        through_dnat += run(published, PER_ROUND);
        straight += run(direct, PER_ROUND);
    }
    let total = (ROUNDS * PER_ROUND) as f64;
    let rate = |d: Duration| total / d.as_secs_f64();
    let (dnat_rate, direct_rate) = (rate(through_dnat), rate(straight));
    println!(
        "publish/connections: {total} per path; through the published port {dnat_rate:.0}/s, \
         to the instance's address {direct_rate:.0}/s ({:.1}% of direct)",
        100.0 * dnat_rate / direct_rate
    );
    runtime.block_on(async {
        host.unpublish_ports(id, &attachments)
            .await
            .expect("unpublish");
        host.detach_container(id, &attachments)
            .await
            .expect("detach");
        host.remove_network(&net).await.expect("remove network");
    });
    vec![
        serde_json::json!({
            "path": "published port (DNAT, node address:8080)",
            "connections": total,
            "connections_per_second": dnat_rate,
        }),
        serde_json::json!({
            "path": "instance address:80 (routed, no DNAT)",
            "connections": total,
            "connections_per_second": direct_rate,
        }),
    ]
}

fn main() {
    common::run("publish", measure);
}
