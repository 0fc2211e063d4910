//! LinuxNetwork against the real kernel (netlink, nftables, namespaces),
//! each test inside a network namespace it creates (see `common`).

mod common;

use std::net::IpAddr;

use common::{attachment, here, in_fresh_netns, instance, ip, network, ping, ping_from};
use zixiao_core::{ErrorKind, NetworkHost};
use zixiao_net::{nft, LinuxNetwork};

#[test]
fn a_network_gets_a_bridge_and_nat_rules_and_removal_leaves_nothing() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(dir).unwrap();
        let net = network("web", "10.61.0.0/24", true, true);
        host.ensure_network(&net).await.unwrap();
        host.ensure_network(&net)
            .await
            .expect("ensure is idempotent");

        let addr = ip(&["-o", "addr", "show", "dev", &net.bridge]);
        assert!(
            addr.contains("10.61.0.1/24"),
            "gateway on the bridge: {addr}"
        );
        assert!(ip(&["-o", "link", "show", &net.bridge]).contains("UP"));
        let rules = nft::show_table(&net.nft_table())
            .await
            .unwrap()
            .expect("table exists");
        assert!(rules.contains("masquerade"), "{rules}");
        assert!(rules.contains("ip saddr 10.61.0.0/24"), "{rules}");
        assert!(rules.contains("drop"), "isolation rules: {rules}");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "1"
        );

        host.remove_network(&net).await.unwrap();
        host.remove_network(&net)
            .await
            .expect("remove is idempotent");
        assert_eq!(host.link_index(&net.bridge).await.unwrap(), None);
        assert_eq!(nft::show_table(&net.nft_table()).await.unwrap(), None);
        assert!(nft::our_tables().await.unwrap().is_empty());
    });
}

#[test]
fn endpoints_on_one_network_reach_each_other_and_the_host_reaches_both() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(dir).unwrap();
        let net = network("lan", "10.62.0.0/24", false, true);
        host.ensure_network(&net).await.unwrap();
        let a = [attachment("a", &net, 0, "10.62.0.10")];
        let b = [attachment("b", &net, 0, "10.62.0.11")];
        let ns_a = host.attach_container("a", &a).await.unwrap();
        let ns_b = host.attach_container("b", &b).await.unwrap();
        let (ip_a, ip_b): (IpAddr, IpAddr) =
            ("10.62.0.10".parse().unwrap(), "10.62.0.11".parse().unwrap());

        assert!(ping_from(&ns_a, ip_b), "a reaches b");
        assert!(ping_from(&ns_b, ip_a), "b reaches a");
        assert!(ping(ip_a) && ping(ip_b), "the host reaches both");
        assert!(
            ping_from(&ns_a, net.subnets[0].gateway),
            "a reaches its gateway"
        );
        let inside =
            zixiao_net::netns::run_in(&ns_a, || Ok(ip(&["-o", "addr", "show", "dev", "eth0"])))
                .unwrap();
        assert!(inside.contains("10.62.0.10/24"), "{inside}");
        let link =
            zixiao_net::netns::run_in(&ns_a, || Ok(ip(&["-o", "link", "show", "eth0"]))).unwrap();
        assert!(link.contains(&a[0].mac), "stable MAC: {link}");
        let route =
            zixiao_net::netns::run_in(&ns_a, || Ok(ip(&["route", "show", "default"]))).unwrap();
        assert!(route.contains("via 10.62.0.1"), "{route}");

        // Attaching again replaces the endpoint (a retried create).
        let again = host.attach_container("a", &a).await.unwrap();
        assert!(ping_from(&again, ip_b));

        host.detach_container("a", &a).await.unwrap();
        host.detach_container("b", &b).await.unwrap();
        host.detach_container("b", &b)
            .await
            .expect("detach is idempotent");
        assert!(!ns_a.exists() && !ns_b.exists(), "namespaces unpinned");
        assert!(
            host.links_with_prefix("zxv").await.unwrap().is_empty(),
            "no veth left"
        );
        assert!(!ping(ip_a));
    });
}

#[test]
fn isolated_networks_do_not_reach_each_other_and_open_ones_do() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(dir).unwrap();
        // NAT on everywhere, so forwarding is on and only the isolation rules stop traffic.
        let red = network("red", "10.63.1.0/24", true, true);
        let blue = network("blue", "10.63.2.0/24", true, true);
        let open1 = network("open1", "10.63.3.0/24", true, false);
        let open2 = network("open2", "10.63.4.0/24", true, false);
        for net in [&red, &blue, &open1, &open2] {
            host.ensure_network(net).await.unwrap();
        }
        let ns_red = host
            .attach_container("r", &[attachment("r", &red, 0, "10.63.1.5")])
            .await
            .unwrap();
        let ns_blue = host
            .attach_container("b", &[attachment("b", &blue, 0, "10.63.2.5")])
            .await
            .unwrap();
        let ns_o1 = host
            .attach_container("o1", &[attachment("o1", &open1, 0, "10.63.3.5")])
            .await
            .unwrap();
        host.attach_container("o2", &[attachment("o2", &open2, 0, "10.63.4.5")])
            .await
            .unwrap();

        assert!(
            ping_from(&ns_o1, "10.63.4.5".parse().unwrap()),
            "open networks route to each other"
        );
        assert!(
            !ping_from(&ns_red, "10.63.2.5".parse().unwrap()),
            "red must not reach blue"
        );
        assert!(
            !ping_from(&ns_blue, "10.63.1.5".parse().unwrap()),
            "blue must not reach red"
        );
        assert!(
            !ping_from(&ns_o1, "10.63.1.5".parse().unwrap()),
            "an open network must not reach an isolated one"
        );
        assert!(
            ping_from(&ns_red, red.subnets[0].gateway),
            "red still reaches its gateway"
        );
    });
}

#[test]
fn reconcile_removes_orphans_and_keeps_what_the_store_names() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(dir).unwrap();
        let kept = network("kept", "10.64.1.0/24", true, true);
        let gone = network("gone", "10.64.2.0/24", true, true);
        host.ensure_network(&kept).await.unwrap();
        host.ensure_network(&gone).await.unwrap();
        let alive = [attachment("alive", &kept, 0, "10.64.1.5")];
        let ghost = [attachment("ghost", &kept, 0, "10.64.1.6")];
        let ns_alive = host.attach_container("alive", &alive).await.unwrap();
        let ns_ghost = host.attach_container("ghost", &ghost).await.unwrap();
        // The agent restarts: the store knows `kept` and instance `alive` only.
        let restarted = LinuxNetwork::connect(host.netns_dir()).unwrap();
        let seen = restarted.inventory().await.unwrap();
        let removed = restarted
            .reconcile(
                &here(),
                std::slice::from_ref(&kept),
                &[instance("alive", alive.to_vec())],
                &seen,
            )
            .await
            .unwrap();
        let removed = removed.join("\n");
        assert!(removed.contains(&gone.nft_table()), "{removed}");
        assert!(
            removed.contains(&format!("link {}", gone.bridge)),
            "{removed}"
        );
        assert!(
            removed.contains(&format!("link {}", ghost[0].host_interface)),
            "{removed}"
        );
        assert!(
            removed.contains(&format!("namespace zx-{}-ghost", here())),
            "{removed}"
        );
        assert_eq!(host.link_index(&gone.bridge).await.unwrap(), None);
        assert!(!ns_ghost.exists());
        assert_eq!(nft::our_tables().await.unwrap(), vec![kept.nft_table()]);
        assert!(ns_alive.exists());
        assert!(
            ping("10.64.1.5".parse().unwrap()),
            "the live endpoint still works"
        );
        let seen = restarted.inventory().await.unwrap();
        let again = restarted
            .reconcile(
                &here(),
                std::slice::from_ref(&kept),
                &[instance("alive", alive.to_vec())],
                &seen,
            )
            .await
            .unwrap();
        assert!(again.is_empty(), "nothing more to remove: {again:?}");
    });
}

#[test]
fn reconcile_never_removes_what_was_plumbed_after_its_inventory() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(dir).unwrap();
        let net = network("race", "10.64.3.0/24", false, true);
        host.ensure_network(&net).await.unwrap();
        // The inventory is taken, then the store is read (no instance yet)...
        let seen = host.inventory().await.unwrap();
        assert!(
            seen.contains(&format!("link {}", net.bridge)),
            "the bridge is in the inventory: {seen:?}"
        );
        // ...while an instance created meanwhile is plumbed.
        let late = [attachment("late", &net, 0, "10.64.3.5")];
        let ns_late = host.attach_container("late", &late).await.unwrap();
        let removed = host
            .reconcile(&here(), std::slice::from_ref(&net), &[], &seen)
            .await
            .unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(host
            .link_index(&late[0].host_interface)
            .await
            .unwrap()
            .is_some());
        assert!(ns_late.exists());
        // Names that are not Zixiao's are never touched, whatever `seen` says.
        let forged = ["link lo".to_owned(), "namespace ../../etc".to_owned()];
        let removed = host
            .reconcile(&here(), std::slice::from_ref(&net), &[], &forged)
            .await
            .unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(host.link_index("lo").await.unwrap().is_some());
        // The next reconcile, with a fresh inventory, removes the veth no
        // instance names.
        let seen = host.inventory().await.unwrap();
        let removed = host
            .reconcile(&here(), std::slice::from_ref(&net), &[], &seen)
            .await
            .unwrap();
        assert!(
            removed.contains(&format!("link {}", late[0].host_interface)),
            "{removed:?}"
        );
        assert!(!ns_late.exists());
    });
}

#[test]
fn attaching_to_a_network_missing_on_the_node_fails_cleanly() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(dir).unwrap();
        let here = network("here", "10.65.1.0/24", false, true);
        let absent = network("absent", "10.65.2.0/24", false, true);
        host.ensure_network(&here).await.unwrap();
        let attachments = [
            attachment("x", &here, 0, "10.65.1.5"),
            attachment("x", &absent, 1, "10.65.2.5"),
        ];
        let err = host.attach_container("x", &attachments).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("`absent`"), "{err}");
        assert!(
            !host.netns_path("x", &attachments).unwrap().exists(),
            "no namespace left"
        );
        assert!(
            host.links_with_prefix("zxv").await.unwrap().is_empty(),
            "no veth left"
        );
    });
}
