//! One network spanning two nodes through its VXLAN overlay, end to end
//! through the controller (see `overlay_nodes` for the two nodes): ping and
//! TCP between containers on different nodes, isolation from another
//! network across nodes, peers following instances, nothing left. The
//! host's network is never touched.

use std::net::IpAddr;

use zixiao_core::model::CreateNetwork;
use zixiao_core::{ErrorKind, InstanceStatus};
use zixiao_testing::wait::wait_until_ok;

use super::network::{address, isolated, on_network, until_status};
use super::overlay_nodes::{in_zone, nodes, two_nodes, UNDERLAY_1, UNDERLAY_2};
use super::{fixture, TIMEOUT};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn containers_on_one_network_on_two_nodes_talk_through_the_overlay_and_networks_stay_apart() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture("overlay").await else {
            return;
        };
        let (host1, host2) = nodes(&netns_dir);
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
        // ARP/ND suppression is on for each node's VXLAN port; the pings
        // and TCP below cross nodes with it on.
        assert!(host1.neigh_suppressed(&net).await.unwrap());
        assert!(host2.inner.neigh_suppressed(&net).await.unwrap());

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

        // `b` on node 2 pings a, then sends it a message, again every
        // second (a message that reached a's listener as it was torn down
        // on a loaded machine never shows in a's log; the next one does).
        let script = format!(
            "i=0; while [ $i -lt 240 ]; do ping -c 1 -W 1 {a_ip} >/dev/null && echo reached-a && \
             echo hello-from-b | nc -w 2 {a_ip} 7000 && echo sent; i=$((i+1)); \
             sleep 1; done; sleep 600"
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
