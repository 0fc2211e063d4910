//! Hostile input through zixiao-net's public API: every bad value the
//! "Harden every boundary" review found is refused, and the namespace is
//! left exactly as it was: `ip -d link`, `ip addr`, `ip route` and
//! `nft list ruleset` are identical before and after. Each test runs in a
//! network namespace of its own (see `common`), set up as a [`Scene`].

mod common;

use common::{
    attachment, attachment_with, here, host_state, in_fresh_netns, network, network_of, nft,
    without_ipv6,
};
use zixiao_core::model::{
    BridgeName, InstallationId, InterfaceKind, Network, NetworkAttachment, NetworkName,
};
use zixiao_core::{ErrorKind, NetworkHost};
use zixiao_net::LinuxNetwork;

/// Another installation on the same host.
fn elsewhere() -> InstallationId {
    InstallationId::try_from("fedcba9876543210").expect("an installation id")
}

/// Runs `program args`, which must succeed.
fn must(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .expect(program);
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

/// What a hostile call meets: network `lan`, set up by Zixiao (bridge,
/// gateway address, rules); a host interface `eth0` (one end of a veth
/// pair) with an address and a route; a table of the host's own; and,
/// under names Zixiao's networks of this installation would use, links
/// that are not theirs: an unmarked bridge where network `taken` puts its
/// bridge, a bridge marked by another installation where network `shared`
/// puts its own, a veth where network `odd` puts its bridge, an unmarked
/// TAP and an unmarked veth where instance `x` on `lan` puts its devices.
struct Scene {
    host: LinuxNetwork,
    lan: Network,
    taken: Network,
    shared: Network,
    odd: Network,
}

async fn scene(dir: std::path::PathBuf) -> Scene {
    without_ipv6();
    let host = LinuxNetwork::connect(dir).expect("netlink");
    let lan = network("lan", "10.80.0.0/24", true, true);
    host.ensure_network(&lan).await.expect("lan");
    // (A veth pair: this kernel may have no dummy devices.)
    must(
        "ip",
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "uplink",
        ],
    );
    must("ip", &["addr", "add", "10.90.0.5/24", "dev", "eth0"]);
    must("ip", &["link", "set", "uplink", "up"]);
    must("ip", &["link", "set", "eth0", "up"]);
    must("ip", &["route", "add", "10.91.0.0/16", "dev", "eth0"]);
    must("nft", &["add", "table", "inet", "filter"]);
    must(
        "nft",
        &["add chain inet filter input { type filter hook input priority 0; policy accept; }"],
    );
    must("nft", &["add rule inet filter input iifname eth0 accept"]);

    let taken = network("taken", "10.81.0.0/24", true, true);
    must("ip", &["link", "add", &taken.bridge, "type", "bridge"]);
    let shared = network("shared", "10.82.0.0/24", true, true);
    must("ip", &["link", "add", &shared.bridge, "type", "bridge"]);
    let theirs = format!("zixiao:{}:shared", elsewhere());
    must("ip", &["link", "set", &shared.bridge, "alias", &theirs]);
    let odd = network("odd", "10.83.0.0/24", true, true);
    must(
        "ip",
        &[
            "link",
            "add",
            &odd.bridge,
            "type",
            "veth",
            "peer",
            "name",
            "oddpeer",
        ],
    );
    let tap = attachment_with(InterfaceKind::Tap, "x", &lan, 0, "10.80.0.7");
    must("ip", &["tuntap", "add", &tap.host_interface, "mode", "tap"]);
    let veth = attachment("x", &lan, 0, "10.80.0.7");
    must(
        "ip",
        &[
            "link",
            "add",
            &veth.host_interface,
            "type",
            "veth",
            "peer",
            "name",
            "peer0",
        ],
    );
    Scene {
        host,
        lan,
        taken,
        shared,
        odd,
    }
}

#[test]
fn injected_names_cannot_be_deserialized_built_or_passed_on() {
    in_fresh_netns(|dir| async move {
        let s = scene(dir).await;
        let before = host_state();

        // The review's example: a newline in a bridge name added
        // `flush ruleset` to the nft script. Such a network cannot be read.
        let json = serde_json::to_value(&s.lan).expect("json");
        for (field, value) in [
            ("bridge", "zxb12345678\nflush ruleset"),
            ("bridge", "zxb12345678\"; flush ruleset; \""),
            ("bridge", "eth0"),
            ("bridge", s.taken.bridge.as_str()),
            ("name", "lan\nflush ruleset"),
            ("name", "../../lan"),
            ("installation", "0123456789abcdef\n"),
        ] {
            let mut hostile = json.clone();
            hostile[field] = value.into();
            let err = serde_json::from_value::<Network>(hostile).expect_err(value);
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        assert!(BridgeName::try_from("zxb12345678\nflush ruleset").is_err());
        // Built in code with another network's (valid) bridge: refused too.
        let mut borrowed = s.lan.clone();
        borrowed.bridge = s.taken.bridge.clone();
        for err in [
            s.host.ensure_network(&borrowed).await.unwrap_err(),
            s.host.remove_network(&borrowed).await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(err.to_string().starts_with("invalid bridge"), "{err}");
        }
        let mut borrowed = attachment("y", &s.lan, 0, "10.80.0.8");
        borrowed.bridge = s.taken.bridge.clone();
        let err = s.host.check_bridge(&borrowed).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(NetworkName::try_from("lan\nflush ruleset").is_err());
        let json = serde_json::to_value(attachment("x", &s.lan, 0, "10.80.0.7")).expect("json");
        for (field, value) in [
            ("host_interface", "eth0"),
            ("host_interface", "zxv0123456789\nflush"),
            ("bridge", "zxb12345678\nflush ruleset"),
            ("bridge", s.taken.bridge.as_str()),
            ("network", "lan\n"),
        ] {
            let mut hostile = json.clone();
            hostile[field] = value.into();
            serde_json::from_value::<NetworkAttachment>(hostile).expect_err(value);
        }

        // Nothing reaches nft's command line or netlink by name either.
        let err = zixiao_net::nft::show_table("filter; flush ruleset")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let err = s
            .host
            .delete_link("eth0", &s.lan.mark().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let err = s
            .host
            .attach_container("../../etc", &[attachment("y", &s.lan, 0, "10.80.0.8")])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("instance"), "{err}");

        assert_eq!(host_state(), before);
        assert!(
            before.ruleset.iter().any(|t| t.starts_with("inet filter")),
            "{before:?}"
        );
    });
}

#[test]
fn subnets_that_could_hurt_the_host_are_refused_before_anything_is_touched() {
    in_fresh_netns(|dir| async move {
        let s = scene(dir).await;
        let before = host_state();

        // Default routes and overly broad prefixes, held to the rules of a
        // request even when they come from the wire or an old store.
        for cidr in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/4",
            "127.0.0.0/8",
            "fe80::/64",
        ] {
            let mut bad = network("bad", "10.84.0.0/24", true, true);
            bad.subnets[0].cidr = cidr.parse().expect(cidr);
            bad.subnets[0].gateway = bad.subnets[0].cidr.address();
            let err = s.host.ensure_network(&bad).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{cidr}: {err}");
            assert!(err.to_string().contains("subnets[0]"), "{cidr}: {err}");
        }

        // What the node already uses: an address, a route, another bridge.
        for (subnet, named) in [
            ("10.90.0.0/24", "address 10.90.0.5/24 on eth0"),
            ("10.90.0.128/25", "address 10.90.0.5/24 on eth0"),
            ("10.91.7.0/24", "route 10.91.0.0/16 (dev eth0)"),
            ("10.80.0.0/25", "address 10.80.0.1/24 on zxb"),
        ] {
            let clash = network("clash", subnet, true, true);
            let err = s.host.ensure_network(&clash).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{subnet}: {err}");
            assert!(err.to_string().contains(named), "{subnet}: {err}");
        }

        assert_eq!(host_state(), before);
    });
}

#[test]
fn links_that_are_not_ours_are_refused_by_name_and_left_untouched() {
    in_fresh_netns(|dir| async move {
        let s = scene(dir).await;
        let before = host_state();
        let refused = |result: zixiao_core::Result<()>, name: &str, why: &str| {
            let err = result.expect_err(name);
            assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
            assert!(
                err.to_string().contains(name) && err.to_string().contains(why),
                "{name}, {why}: {err}"
            );
        };

        // Networks whose bridge's name is held by a link that is not theirs.
        for (net, why) in [
            (&s.taken, "no Zixiao mark"),
            (&s.shared, "another Zixiao installation"),
            (&s.odd, "not Zixiao's bridge"),
        ] {
            refused(s.host.ensure_network(net).await, &net.bridge, why);
            refused(s.host.remove_network(net).await, &net.bridge, why);
            let mark = net.mark().unwrap();
            refused(
                s.host.delete_link(&net.bridge, &mark).await,
                &net.bridge,
                why,
            );
            // Nothing plugs into it either.
            let tap = attachment_with(InterfaceKind::Tap, "v", net, 0, "10.81.0.9");
            refused(s.host.attach_tap("v", &[tap]).await, &net.bridge, why);
            let veth = attachment("c", net, 0, "10.81.0.9");
            let attached = s.host.attach_container("c", &[veth]).await;
            refused(attached.map(|_| ()), &net.bridge, why);
        }

        // Devices under the names instance `x` would use on `lan`.
        let tap = attachment_with(InterfaceKind::Tap, "x", &s.lan, 0, "10.80.0.7");
        let veth = attachment("x", &s.lan, 0, "10.80.0.7");
        for (result, name) in [
            (
                s.host.attach_tap("x", std::slice::from_ref(&tap)).await,
                &tap.host_interface,
            ),
            (
                s.host.detach_tap("x", std::slice::from_ref(&tap)).await,
                &tap.host_interface,
            ),
            (
                s.host
                    .attach_container("x", std::slice::from_ref(&veth))
                    .await
                    .map(|_| ()),
                &veth.host_interface,
            ),
            (
                s.host
                    .detach_container("x", std::slice::from_ref(&veth))
                    .await,
                &veth.host_interface,
            ),
        ] {
            refused(result, name, "no Zixiao mark");
        }

        assert_eq!(host_state(), before);
    });
}

#[test]
fn a_forged_or_foreign_inventory_removes_nothing() {
    in_fresh_netns(|dir| async move {
        let s = scene(dir.clone()).await;
        // Tables of another installation and of an older Zixiao, and a
        // namespace file of another installation.
        let foreign_table = format!("zx_{}_shared", elsewhere());
        must("nft", &["add", "table", "inet", &foreign_table]);
        must("nft", &["add", "table", "inet", "zx_zxb9060dcf0"]);
        let foreign_ns = dir.join(format!("zx-{}-x", elsewhere()));
        std::fs::write(&foreign_ns, "").expect("a namespace file");
        let before = host_state();

        let mut seen = s.host.inventory().await.expect("inventory");
        assert!(
            seen.contains(&format!("link {}", s.shared.bridge)),
            "{seen:?}"
        );
        seen.extend(
            [
                "link eth0",
                "link lo",
                "link zxb12345678\nflush ruleset",
                "table filter",
                "table zx_; flush ruleset",
                "namespace ../../etc",
                "namespace zx-../..",
                "route default",
                "garbage",
            ]
            .map(str::to_owned),
        );
        let removed = s
            .host
            .reconcile(&here(), std::slice::from_ref(&s.lan), &[], &seen)
            .await
            .expect("reconcile");
        assert!(removed.is_empty(), "{removed:?}");
        assert!(foreign_ns.exists());
        assert_eq!(host_state(), before);
        assert!(nft(&["list", "tables"]).contains(&foreign_table));
    });
}

#[test]
fn networks_and_attachments_stored_before_installation_ids_are_refused() {
    in_fresh_netns(|dir| async move {
        let s = scene(dir).await;
        // What an older Zixiao stored for network `old`, and left on the node.
        let old: Network = serde_json::from_value(serde_json::json!({
            "name": "old", "subnets": [{"cidr": "10.85.0.0/24", "gateway": "10.85.0.1"}],
            "bridge": BridgeName::before_installations(&NetworkName::try_from("old").unwrap()),
            "nat": true, "isolated": true, "created_at": "2024-01-01T00:00:00Z"
        }))
        .expect("an older record still reads");
        let legacy_table = old.nft_table();
        must("ip", &["link", "add", &old.bridge, "type", "bridge"]);
        must("nft", &["add", "table", "inet", &legacy_table]);
        let recorded_before = |mut a: NetworkAttachment| {
            a.installation = None;
            a.network = old.name.clone();
            a.bridge = old.bridge.clone();
            a
        };
        let attachment = recorded_before(attachment("x", &s.lan, 0, "10.85.0.7"));
        let tap = recorded_before(attachment_with(
            InterfaceKind::Tap,
            "x",
            &s.lan,
            0,
            "10.85.0.7",
        ));
        let before = host_state();

        let err = s.host.ensure_network(&old).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        let err = s.host.remove_network(&old).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("ip link del {}", old.bridge))
                && text.contains(&format!("nft delete table inet {legacy_table}")),
            "says what to do: {text}"
        );
        for err in [
            s.host
                .attach_container("x", std::slice::from_ref(&attachment))
                .await
                .map(|_| ())
                .unwrap_err(),
            s.host
                .attach_tap("x", std::slice::from_ref(&tap))
                .await
                .unwrap_err(),
            // Its TAP is still there (an unmarked link of the same name).
            s.host
                .detach_tap("x", std::slice::from_ref(&tap))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        }
        // Its veth is still there (an unmarked link of the same name).
        let err = s
            .host
            .detach_container("x", std::slice::from_ref(&attachment))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert_eq!(host_state(), before);

        // Once its objects are removed by hand, deleting it goes through.
        must("ip", &["link", "del", &old.bridge]);
        must("nft", &["delete", "table", "inet", &legacy_table]);
        must("ip", &["link", "del", &attachment.host_interface]);
        must("ip", &["link", "del", &tap.host_interface]);
        s.host.remove_network(&old).await.expect("nothing left");
        s.host
            .detach_tap("x", std::slice::from_ref(&tap))
            .await
            .expect("nothing left");
        s.host
            .detach_container("x", std::slice::from_ref(&attachment))
            .await
            .expect("nothing left");
    });
}

#[test]
fn a_valid_ruleset_is_still_applied_and_replaced_in_one_transaction() {
    in_fresh_netns(|dir| async move {
        without_ipv6();
        let host = LinuxNetwork::connect(dir).expect("netlink");
        let mut lan = network("lan", "10.86.0.0/24", true, true);
        host.ensure_network(&lan).await.expect("ensure");
        let table = lan.nft_table();
        let rules = nft(&["list", "table", "inet", &table]);
        assert!(
            rules.contains(&format!(
                "ip saddr 10.86.0.0/24 ip daddr != 10.86.0.0/24 oifname != \"{}\" masquerade",
                lan.bridge
            )),
            "{rules}"
        );
        assert!(
            rules.contains(&format!(
                "iifname \"{0}\" oifname \"zxb*\" oifname != \"{0}\" drop",
                lan.bridge
            )),
            "{rules}"
        );
        // Ensuring again replaces the table: the same rules, once.
        host.ensure_network(&lan).await.expect("ensure again");
        assert_eq!(nft(&["list", "table", "inet", &table]), rules);
        lan.nat = false;
        host.ensure_network(&lan).await.expect("without NAT");
        let replaced = nft(&["list", "table", "inet", &table]);
        assert!(!replaced.contains("masquerade"), "{replaced}");
        assert_eq!(replaced.matches(" drop").count(), 2, "{replaced}");
        // Another installation's network of the same name is another table.
        let theirs = network_of(&elsewhere(), "lan", "10.87.0.0/24", true, true);
        host.ensure_network(&theirs).await.expect("theirs");
        assert_ne!(theirs.nft_table(), table);
        assert_eq!(nft(&["list", "table", "inet", &table]), replaced);
    });
}
