//! Two installations on one host, as two state directories of the embedded
//! deployment are: two controllers over two stores (so two installation
//! ids), each with its own LinuxNetwork, in one network namespace and
//! sharing one directory for container namespaces (as the default
//! `/run/zixiao/netns` is shared). Both create network `race7`; neither
//! ever changes or removes the other's bridge, addresses, table, veths or
//! namespaces, by deleting the network or by reconciling.

mod common;

use std::sync::Arc;

use common::{in_fresh_netns, ip, nft, on, setup, without_ipv6};
use zixiao_core::model::{CreateNetwork, Network};
use zixiao_core::{ErrorKind, Instance, NetworkHost};
use zixiao_net::LinuxNetwork;

/// Asserts that what `network` and `instance` of one installation have on
/// the node is all there: the bridge (with its mark and address), the
/// table with its rules, the veth (in `host_links`) and the namespace.
fn held(host_links: &str, network: &Network, instance: &Instance, netns: &std::path::Path) {
    let bridge = ip(&["-d", "-o", "link", "show", &network.bridge]);
    let mark = network.mark().expect("a current network").to_string();
    assert!(bridge.contains(&format!("alias {mark}")), "{bridge}");
    let addresses = ip(&["-o", "addr", "show", "dev", &network.bridge]);
    assert!(
        addresses.contains(&format!("{}/24", network.subnets[0].gateway)),
        "{addresses}"
    );
    let rules = nft(&["list", "ruleset"]);
    assert!(
        rules.contains(&format!("table inet {}", network.nft_table()))
            && rules.contains(&format!("ip saddr {}", network.subnets[0].cidr)),
        "{rules}"
    );
    let veth = instance.attachments[0].host_interface.as_str();
    assert!(host_links.contains(veth), "{veth} in {host_links}");
    assert!(netns.exists(), "{}", netns.display());
}

#[test]
fn two_installations_on_one_host_never_touch_each_others_network() {
    in_fresh_netns(|dir| async move {
        without_ipv6();
        let host_a = Arc::new(LinuxNetwork::connect(&dir).expect("netlink"));
        let host_b = Arc::new(LinuxNetwork::connect(&dir).expect("netlink"));
        let a = setup(host_a.clone()).await;
        let b = setup(host_b.clone()).await;
        let (id_a, id_b) = (
            a.controller.installation().await.expect("id"),
            b.controller.installation().await.expect("id"),
        );
        assert_ne!(id_a, id_b);
        assert_eq!(a.controller.installation().await.expect("id"), id_a);

        let race_a = a
            .controller
            .create_network(CreateNetwork::new("race7", ["10.88.0.0/24"]))
            .await
            .expect("a's race7");
        // The same subnet would take a's traffic: refused, naming a's address.
        let err = b
            .controller
            .create_network(CreateNetwork::new("race7", ["10.88.0.0/24"]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("address 10.88.0.1/24 on {}", race_a.bridge)),
            "{err}"
        );
        assert!(b.controller.list_networks().await.unwrap().is_empty());
        let race_b = b
            .controller
            .create_network(CreateNetwork::new("race7", ["10.89.0.0/24"]))
            .await
            .expect("b's race7");
        assert_ne!(race_a.bridge, race_b.bridge, "two bridges");
        assert_ne!(race_a.nft_table(), race_b.nft_table(), "two tables");

        // An instance on each, plumbed as their container drivers would.
        let web_a = a.controller.create_instance(on("web", &["race7"])).await;
        let web_a = web_a.expect("a's web");
        let web_b = b.controller.create_instance(on("web", &["race7"])).await;
        let web_b = web_b.expect("b's web");
        let ns_a = host_a
            .attach_container(&web_a.id, &web_a.attachments)
            .await
            .expect("a's endpoint");
        let ns_b = host_b
            .attach_container(&web_b.id, &web_b.attachments)
            .await
            .expect("b's endpoint");
        held(&ip(&["link", "show"]), &race_a, &web_a, &ns_a);
        held(&ip(&["link", "show"]), &race_b, &web_b, &ns_b);

        // Each reconcile sees the other's objects in its inventory and
        // leaves them; its own orphans (a network its store lost) go.
        let ghost = CreateNetwork::new("ghost", ["10.87.0.0/24"])
            .validate(&id_a, chrono::Utc::now())
            .expect("valid");
        host_a.ensure_network(&ghost).await.expect("a's orphan");
        let seen = host_a.inventory().await.expect("inventory");
        assert!(
            seen.contains(&format!("link {}", race_b.bridge)),
            "{seen:?}"
        );
        let report = a.controller.reconcile_networks().await.expect("reconcile");
        let mut removed = report.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                format!("node-a: DHCP responder of {}", ghost.bridge),
                format!("node-a: link {}", ghost.bridge),
                format!("node-a: nftables table inet {}", ghost.nft_table()),
            ]
        );
        let report = b.controller.reconcile_networks().await.expect("reconcile");
        assert!(report.removed.is_empty(), "{report:?}");
        held(&ip(&["link", "show"]), &race_a, &web_a, &ns_a);
        held(&ip(&["link", "show"]), &race_b, &web_b, &ns_b);

        // a deletes its race7: its instance, endpoint, bridge and table go.
        a.controller.delete_instance("web").await.expect("delete");
        assert!(a.controller.converge(&web_a.id).await.unwrap().is_none());
        host_a
            .detach_container(&web_a.id, &web_a.attachments)
            .await
            .expect("a's endpoint");
        a.controller
            .delete_network("race7")
            .await
            .expect("delete a's race7");
        assert_eq!(host_a.link_index(&race_a.bridge).await.unwrap(), None);
        assert!(!nft(&["list", "tables"]).contains(&race_a.nft_table()));
        assert!(!ns_a.exists());
        // b's, everything.
        held(&ip(&["link", "show"]), &race_b, &web_b, &ns_b);

        // A reconcile of a, whose store has no network left, removes
        // nothing of b's either.
        let report = a.controller.reconcile_networks().await.expect("reconcile");
        assert!(report.removed.is_empty(), "{report:?}");
        held(&ip(&["link", "show"]), &race_b, &web_b, &ns_b);
        assert!(
            common::ping_from(&ns_b, race_b.subnets[0].gateway),
            "b's container still reaches its gateway"
        );
    });
}
