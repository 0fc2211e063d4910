//! The overlay's forwarding and neighbour entries against real netlink,
//! in a namespace of the test's own: what [`LinuxNetwork::set_overlay`]
//! programs for remote endpoints is there as `bridge` and `ip` show it,
//! replaced when an endpoint moves, removed when it goes, judged by
//! `inspect`, and entries on any other link are left alone.

mod common;

use std::process::Command;

use common::{in_fresh_netns, network};
use zixiao_core::model::{MacAddress, NetworkPartKind, OverlayEndpoint, OverlayView, PartState};
use zixiao_core::NetworkHost;
use zixiao_net::overlay::VxlanName;
use zixiao_net::LinuxNetwork;

/// `program ARGS` in this thread's namespace; its output, which it must succeed to give.
fn run(program: &str, args: &str) -> String {
    let out = Command::new(program)
        .args(args.split(' '))
        .output()
        .expect(program);
    assert!(out.status.success(), "{program} {args}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn endpoint(mac: &str, address: &str, node: &str) -> OverlayEndpoint {
    OverlayEndpoint {
        mac: MacAddress::try_from(mac).unwrap(),
        addresses: vec![address.parse().unwrap()],
        node: node.parse().unwrap(),
    }
}

fn view(endpoints: Vec<OverlayEndpoint>) -> OverlayView {
    let peers = vec!["10.94.0.2".parse().unwrap(), "10.94.0.3".parse().unwrap()];
    OverlayView::new(peers, endpoints).unwrap()
}

const MAC_A: &str = "02:00:00:00:94:0a";
const MAC_B: &str = "02:00:00:00:94:0b";

#[test]
fn remote_endpoints_are_programmed_moved_and_removed_and_foreign_entries_stay() {
    in_fresh_netns(|dir| async move {
        // This node's underlay, on a veth of its own.
        run("ip", "link add ul type veth peer name ulp");
        run("ip", "addr add 10.94.0.1/24 dev ul");
        run("ip", "link set ul up");
        run("ip", "link set ulp up");
        let host = LinuxNetwork::connect(dir)
            .unwrap()
            .with_underlay("10.94.0.1".parse().unwrap());
        let lan = network("lan", "10.74.0.0/24", false, false);
        host.ensure_network(&lan).await.unwrap();
        let vxlan = VxlanName::of(&lan.bridge).to_string();
        let bridge = lan.bridge.as_str().to_owned();

        // Learning is off on the device and on its bridge port, and so is
        // flooding of unknown unicast to the port.
        let device = run("ip", &format!("-d link show dev {vxlan}"));
        assert!(device.contains("nolearning"), "{device}");
        let port = run("bridge", &format!("-d link show dev {vxlan}"));
        for setting in ["learning off", "flood off", "neigh_suppress on"] {
            assert!(port.contains(setting), "{setting}: {port}");
        }

        // Someone else's entries: a bridge of theirs with a static entry,
        // a permanent neighbour on another link, a learnt-like one on ours.
        run("ip", "link add fbr type bridge");
        run("ip", "link add fdum type veth peer name fdump");
        run("ip", "link set fdum master fbr");
        run("bridge", "fdb add 02:00:00:00:94:f1 dev fdum master static");
        run(
            "ip",
            "neigh add 10.94.0.50 lladdr 02:00:00:00:94:f2 dev ul nud permanent",
        );
        run(
            "ip",
            &format!("neigh add 10.74.0.77 lladdr 02:00:00:00:94:f3 dev {bridge} nud stale"),
        );
        let foreign = || {
            (
                run("bridge", "fdb show dev fdum"),
                run("ip", "neigh show dev ul nud permanent"),
                run("ip", &format!("neigh show dev {bridge} nud stale")),
            )
        };
        let before = foreign();
        assert!(before.0.contains("02:00:00:00:94:f1"), "{before:?}");

        // Two remote endpoints on two nodes.
        let a = endpoint(MAC_A, "10.74.0.5", "10.94.0.2");
        let b = endpoint(MAC_B, "10.74.0.6", "10.94.0.3");
        let both = view(vec![a.clone(), b.clone()]);
        host.set_overlay(&lan, &both).await.unwrap();
        let fdb = run("bridge", &format!("fdb show dev {vxlan}"));
        for (mac, node) in [(MAC_A, "10.94.0.2"), (MAC_B, "10.94.0.3")] {
            assert!(
                fdb.lines()
                    .any(|l| l.starts_with(&format!("{mac} dst {node} self static"))),
                "{mac} through the tunnel to {node}: {fdb}"
            );
            assert!(
                fdb.lines()
                    .any(|l| l.starts_with(mac) && l.contains("master") && l.contains("static")),
                "{mac} on the bridge port: {fdb}"
            );
        }
        let neigh = run("ip", &format!("neigh show dev {bridge} nud permanent"));
        assert!(
            neigh.contains(&format!("10.74.0.5 lladdr {MAC_A} PERMANENT")),
            "{neigh}"
        );
        assert!(
            neigh.contains(&format!("10.74.0.6 lladdr {MAC_B} PERMANENT")),
            "{neigh}"
        );
        let part = |parts: Vec<zixiao_core::model::NetworkPart>| {
            parts
                .into_iter()
                .find(|p| p.kind == NetworkPartKind::Forwarding)
                .expect("forwarding part")
        };
        let judged = part(host.inspect(&lan, &both, &[]).await.unwrap());
        assert_eq!(judged.state, PartState::Ok, "{judged:?}");
        assert_eq!(judged.detail, "4 of 4 FDB, 2 of 2 neighbour entries");

        // Again: nothing changes.
        host.set_overlay(&lan, &both).await.unwrap();
        assert_eq!(run("bridge", &format!("fdb show dev {vxlan}")), fdb);

        // `a` moves to the other node: its entry is replaced at once.
        let moved = endpoint(MAC_A, "10.74.0.5", "10.94.0.3");
        let after_move = view(vec![moved, b.clone()]);
        let judged = part(host.inspect(&lan, &after_move, &[]).await.unwrap());
        assert_eq!(judged.state, PartState::Missing, "{judged:?}");
        assert!(judged.detail.ends_with("; 1 missing"), "{judged:?}");
        host.set_overlay(&lan, &after_move).await.unwrap();
        let fdb = run("bridge", &format!("fdb show dev {vxlan}"));
        assert!(
            fdb.contains(&format!("{MAC_A} dst 10.94.0.3 self static")),
            "{fdb}"
        );
        assert!(!fdb.contains(&format!("{MAC_A} dst 10.94.0.2")), "{fdb}");

        // `b` goes: its entries go, a neighbour removed by hand comes back.
        run("ip", &format!("neigh del 10.74.0.5 dev {bridge}"));
        let only_a = view(vec![endpoint(MAC_A, "10.74.0.5", "10.94.0.3")]);
        let judged = part(host.inspect(&lan, &only_a, &[]).await.unwrap());
        assert_eq!(judged.state, PartState::Drifted, "{judged:?}");
        assert!(judged.detail.ends_with("1 missing, 3 stale"), "{judged:?}");
        host.set_overlay(&lan, &only_a).await.unwrap();
        let fdb = run("bridge", &format!("fdb show dev {vxlan}"));
        assert!(!fdb.contains(MAC_B), "{fdb}");
        let neigh = run("ip", &format!("neigh show dev {bridge} nud permanent"));
        assert!(!neigh.contains("10.74.0.6"), "{neigh}");
        assert!(
            neigh.contains(&format!("10.74.0.5 lladdr {MAC_A}")),
            "{neigh}"
        );

        // The network carried for no one: nothing of the overlay is left.
        host.set_overlay(&lan, &OverlayView::empty()).await.unwrap();
        let fdb = run("bridge", &format!("fdb show dev {vxlan}"));
        assert!(!fdb.contains("dst"), "{fdb}");
        assert!(!fdb.contains(MAC_A), "{fdb}");
        let neigh = run("ip", &format!("neigh show dev {bridge} nud permanent"));
        assert!(neigh.trim().is_empty(), "{neigh}");
        assert_eq!(foreign(), before, "foreign entries untouched");

        host.remove_network(&lan).await.unwrap();
    });
}
