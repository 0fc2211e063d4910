//! The overlay's cost, between two "nodes": this bench's namespace
//! (node 1) and a second one linked to it by a veth pair (node 2, made
//! with `zixiao_testing::underlay`, the underlay between them), each with
//! its own [`LinuxNetwork`] using its end of the pair as its underlay, one
//! network with a VNI on both, and the [`OverlayView`] each would get
//! from the controller set on it (replication to the other node, static
//! forwarding and neighbour entries for the other node's endpoints).
//! Endpoints are container namespaces with a veth on the bridge, made by
//! zixiao-net as a container's are: `a1` and `a2` on node 1, `b1` on
//! node 2.
//!
//! Measured, in the same run, interleaved round by round:
//! - TCP throughput to a receiver in `a1` from `b1` (across the nodes,
//!   through VXLAN) against from `a2` (the same pair on one node, through
//!   the bridge only): one connection each, 128 KiB writes for
//!   [`SECONDS_PER_ROUND`] s. A small Rust sender and receiver run in the
//!   namespaces (iperf3 is not in Debian's package list here).
//! - A published port's connection rate: connections per second from node
//!   2 (another machine of the underlay) to node 1's address, through the
//!   DNAT of `a1`'s `8080:80`; each connection reads a one-line answer to
//!   its end.
//!
//! ```text
//! eval "$(scripts/services/net.sh start)"
//! cargo bench -p zixiao-net --bench overlay
//! ```
//! Needs root and `ZIXIAO_TEST_NETNS_DIR`; without them it prints why and
//! is skipped. Prints a table and writes `target/bench-results/overlay.json`.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zixiao_core::model::{
    mac_address, CreateNetwork, InstallationId, InterfaceKind, InterfaceName, IpConfig, MacAddress,
    Network, NetworkAttachment, OverlayEndpoint, OverlayView, PublishedPort,
};
use zixiao_core::NetworkHost;
use zixiao_net::overlay::Underlay as NodeUnderlay;
use zixiao_net::{netns, LinuxNetwork};
use zixiao_testing::underlay::{Underlay, NODE_ADDRESS, OUTSIDE_ADDRESS};

/// Rounds, each measuring every path.
const ROUNDS: usize = 3;
/// How long each throughput measure sends.
const SECONDS_PER_ROUND: u64 = 2;
/// Connections through the published port per round.
const CONNECTIONS_PER_ROUND: usize = 400;
/// The receiver's port in `a1`.
const SINK_PORT: u16 = 5201;

fn attachment(
    installation: &InstallationId,
    net: &Network,
    id: &str,
    host: u8,
) -> NetworkAttachment {
    NetworkAttachment {
        network: net.name.clone(),
        installation: Some(installation.clone()),
        interface: "eth0".into(),
        host_interface: InterfaceName::of(InterfaceKind::Veth, installation, id, &net.name),
        bridge: net.bridge.clone(),
        mac: mac_address(id, &net.name),
        addresses: vec![IpConfig {
            address: IpAddr::from([10, 78, 0, host]),
            prefix_len: 24,
            gateway: net.subnets[0].gateway,
        }],
    }
}

/// What the controller would tell a node: the other node as its peer, and
/// the attachments on it.
fn view_of(peer: IpAddr, remote: &[&NetworkAttachment]) -> OverlayView {
    let endpoints = remote
        .iter()
        .map(|a| OverlayEndpoint {
            mac: MacAddress::try_from(a.mac.as_str()).expect("MAC"),
            addresses: a.addresses.iter().map(|c| c.address).collect(),
            node: peer,
        })
        .collect();
    OverlayView::new(vec![peer], endpoints).expect("view")
}

/// Bytes sent to `to` in `seconds`, over one connection, and the time.
fn send_for(to: SocketAddr, seconds: u64) -> (u64, Duration) {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
    let chunk = vec![0x5au8; 128 * 1024];
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut sent = 0u64;
    while Instant::now() < until {
        stream.write_all(&chunk).expect("send");
        sent += chunk.len() as u64;
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    // The receiver closes once it has read everything: then it all arrived.
    let mut rest = [0u8; 1];
    let _ = stream.read(&mut rest);
    (sent, started.elapsed())
}

/// Serves `listener` on a thread: each connection gets `answer` or is read
/// to its end (`None`).
fn serve(listener: TcpListener, answer: Option<&'static [u8]>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            match answer {
                Some(text) => {
                    let _ = stream.write_all(text);
                }
                None => {
                    std::thread::spawn(move || {
                        let mut buffer = vec![0u8; 256 * 1024];
                        while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
                    });
                }
            }
        }
    });
}

fn measure(dir: PathBuf) -> Vec<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let installation = InstallationId::generate();
    let net = CreateNetwork::new("ovbench", ["10.78.0.0/24"])
        .validate(&installation, chrono::Utc::now())
        .expect("valid network");
    assert!(net.vni.is_some(), "a new network has a VNI");
    let node2 = Underlay::new(&dir.join("node2"), "ovb0");
    let (dir1, dir2) = (dir.join("n1"), dir.join("n2"));
    for d in [&dir1, &dir2] {
        std::fs::create_dir_all(d).expect("netns dir");
    }
    let (ul1, ul2) = (IpAddr::V4(NODE_ADDRESS), IpAddr::V4(OUTSIDE_ADDRESS));
    let underlay = |a: IpAddr| NodeUnderlay::try_from(a).expect("underlay");
    let host1 = runtime.block_on(async {
        LinuxNetwork::connect(&dir1)
            .expect("netlink")
            .with_underlay(underlay(ul1))
    });
    // Node 2's host works from its namespace: its netlink socket is opened
    // there, and every call runs there (nft runs in the caller's).
    let host2 = netns::run_in(node2.path(), || {
        Ok(runtime.block_on(async {
            LinuxNetwork::connect(&dir2)
                .expect("netlink")
                .with_underlay(underlay(ul2))
        }))
    })
    .expect("node 2");
    let a1 = vec![attachment(&installation, &net, "ovb-a1", 5)];
    let a2 = vec![attachment(&installation, &net, "ovb-a2", 6)];
    let b1 = vec![attachment(&installation, &net, "ovb-b1", 7)];
    let (a1_ns, a2_ns) = runtime.block_on(async {
        host1.ensure_network(&net).await.expect("network on node 1");
        let a1_ns = host1.attach_container("ovb-a1", &a1).await.expect("a1");
        let a2_ns = host1.attach_container("ovb-a2", &a2).await.expect("a2");
        host1
            .set_overlay(&net, &view_of(ul2, &[&b1[0]]))
            .await
            .expect("node 1's overlay");
        let port = PublishedPort::try_from("8080:80").expect("port");
        host1
            .publish_ports("ovb-a1", &a1, &[port])
            .await
            .expect("publish");
        (a1_ns, a2_ns)
    });
    let b1_ns = netns::run_in(node2.path(), || {
        Ok(runtime.block_on(async {
            host2.ensure_network(&net).await.expect("network on node 2");
            let ns = host2.attach_container("ovb-b1", &b1).await.expect("b1");
            host2
                .set_overlay(&net, &view_of(ul1, &[&a1[0], &a2[0]]))
                .await
                .expect("node 2's overlay");
            ns
        }))
    })
    .expect("node 2");
    let sink = netns::run_in(&a1_ns, || TcpListener::bind(("0.0.0.0", SINK_PORT))).expect("sink");
    serve(sink, None);
    let web = netns::run_in(&a1_ns, || TcpListener::bind("0.0.0.0:80")).expect("web");
    serve(web, Some(b"ok\n"));
    let to_sink = SocketAddr::from(([10, 78, 0, 5], SINK_PORT));
    let published = SocketAddr::from((NODE_ADDRESS, 8080));
    let send_from =
        |ns: &Path, seconds| netns::run_in(ns, || Ok(send_for(to_sink, seconds))).expect("sender");
    // Warm up every path (neighbours, conntrack, caches).
    send_from(&b1_ns, 1);
    send_from(&a2_ns, 1);
    netns::run_in(node2.path(), || Ok(common::connect_many(published, 50))).expect("warm up");
    let (mut across, mut local) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    let mut dnat = Duration::ZERO;
    for _ in 0..ROUNDS {
        let (bytes, took) = send_from(&b1_ns, SECONDS_PER_ROUND);
        across = (across.0 + bytes, across.1 + took);
        let (bytes, took) = send_from(&a2_ns, SECONDS_PER_ROUND);
        local = (local.0 + bytes, local.1 + took);
        dnat += netns::run_in(node2.path(), || {
            Ok(common::connect_many(published, CONNECTIONS_PER_ROUND))
        })
        .expect("connect");
    }
    let gbits = |(bytes, took): (u64, Duration)| bytes as f64 * 8.0 / took.as_secs_f64() / 1e9;
    let (across_gbps, local_gbps) = (gbits(across), gbits(local));
    let connections = (ROUNDS * CONNECTIONS_PER_ROUND) as f64;
    let dnat_rate = connections / dnat.as_secs_f64();
    println!("overlay ({ROUNDS} rounds, interleaved):");
    println!("  {:<58} {:>14}", "measure", "value");
    println!(
        "  {:<58} {:>9.2} Gb/s",
        "TCP b1 (node 2) -> a1 (node 1), through the overlay", across_gbps
    );
    println!(
        "  {:<58} {:>9.2} Gb/s",
        "TCP a2 -> a1, both on node 1 (bridge only)", local_gbps
    );
    println!(
        "  {:<58} {:>11.1} %",
        "overlay / same node",
        100.0 * across_gbps / local_gbps
    );
    println!(
        "  {:<58} {:>9.0} /s",
        "connections node 2 -> node 1:8080 (published, DNAT)", dnat_rate
    );
    runtime.block_on(async {
        host1
            .unpublish_ports("ovb-a1", &a1)
            .await
            .expect("unpublish");
        host1.detach_container("ovb-a1", &a1).await.expect("detach");
        host1.detach_container("ovb-a2", &a2).await.expect("detach");
        host1.remove_network(&net).await.expect("remove network");
    });
    netns::run_in(node2.path(), || {
        runtime.block_on(async {
            host2.detach_container("ovb-b1", &b1).await.expect("detach");
            host2.remove_network(&net).await.expect("remove network");
        });
        Ok(())
    })
    .expect("node 2");
    vec![
        serde_json::json!({
            "path": "TCP across nodes (VXLAN overlay)",
            "seconds": across.1.as_secs_f64(),
            "gbit_per_second": across_gbps,
        }),
        serde_json::json!({
            "path": "TCP same node (bridge)",
            "seconds": local.1.as_secs_f64(),
            "gbit_per_second": local_gbps,
        }),
        serde_json::json!({
            "path": "published port from another node (DNAT)",
            "connections": connections,
            "connections_per_second": dnat_rate,
        }),
    ]
}

fn main() {
    common::run("overlay", measure);
}
