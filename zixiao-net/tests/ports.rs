//! Published ports against the real kernel: DNAT from the node's address
//! to an instance's, reached over a real TCP connection from outside the
//! node (a namespace linked to it, see `zixiao_testing::underlay`), from
//! the node itself and from a neighbour on the same network; `nft list
//! table` shows exactly the instance's rules, and nothing once unpublished;
//! conflicts are refused naming the holder, changing nothing. Each test
//! runs inside a network namespace it creates (see `common`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use common::{attachment, here, in_fresh_netns, network, nft, on, setup, without_ipv6};
use zixiao_core::model::{CreateNetwork, NetworkAttachment, PublishedPort};
use zixiao_core::{ErrorKind, NetworkHost};
use zixiao_net::ports::PortsTable;
use zixiao_net::{netns, nft as zx_nft, LinuxNetwork};
use zixiao_testing::underlay::{Underlay, NODE_ADDRESS};

fn ports(texts: &[&str]) -> Vec<PublishedPort> {
    texts
        .iter()
        .map(|t| PublishedPort::try_from(*t).expect(t))
        .collect()
}

/// A TCP server inside the namespace at `netns` on `address` (`0.0.0.0:80`,
/// `[::]:80`) that answers every connection with `answer` and closes it,
/// on a thread of its own.
fn serve(netns: &Path, address: &str, answer: &'static str) {
    let listener = netns::run_in(netns, || TcpListener::bind(address))
        .expect("listen in the instance's namespace");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
}

/// What a TCP connection to `to` reads until the server closes it.
fn fetch(to: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// [`fetch`] from inside the namespace at `netns`.
fn fetch_from(netns: &Path, to: SocketAddr) -> std::io::Result<String> {
    netns::run_in(netns, || Ok(fetch(to))).expect("enter namespace")
}

/// The rules of `table` as `nft list table` prints them, one per line,
/// without handles: what a person would compare.
async fn rules(table: &str) -> Option<Vec<String>> {
    let text = zx_nft::show_table(table).await.expect("nft list table")?;
    Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("table") && *l != "}")
            .map(str::to_owned)
            .collect(),
    )
}

/// An instance endpoint: a container namespace on `net` at `address`.
async fn endpoint(
    host: &LinuxNetwork,
    id: &str,
    net: &zixiao_core::Network,
    address: &str,
) -> (Vec<NetworkAttachment>, std::path::PathBuf) {
    let attachments = vec![attachment(id, net, 0, address)];
    let path = host
        .attach_container(id, &attachments)
        .await
        .expect("attach");
    (attachments, path)
}

#[test]
fn a_published_port_is_reached_from_outside_the_node_and_unpublishing_leaves_nothing() {
    in_fresh_netns(|dir| async move {
        without_ipv6();
        let host = LinuxNetwork::connect(&dir).unwrap();
        let underlay = Underlay::new(&dir.join("outside"), "upl0");
        let net = network("pub", "10.71.0.0/24", true, true);
        host.ensure_network(&net).await.unwrap();
        let (web, web_ns) = endpoint(&host, "web-1", &net, "10.71.0.5").await;
        serve(&web_ns, "0.0.0.0:80", "hello from web-1\n");
        let (_, neighbour_ns) = endpoint(&host, "web-2", &net, "10.71.0.6").await;
        let other = network("other", "10.76.0.0/24", true, true);
        host.ensure_network(&other).await.unwrap();
        let (_, stranger_ns) = endpoint(&host, "stranger", &other, "10.76.0.5").await;
        let published = SocketAddr::from((NODE_ADDRESS, 8080));
        // Nothing is published yet: nothing listens on the node's port.
        assert!(fetch_from(underlay.path(), published).is_err());

        host.publish_ports("web-1", &web, &ports(&["8080:80"]))
            .await
            .expect("publish");
        let table = PortsTable::new(&here(), "web-1").unwrap().to_string();
        let expected = vec![
            "chain prerouting {",
            "type nat hook prerouting priority dstnat; policy accept;",
            r#"meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.71.0.5:80 comment "8080:80/tcp""#,
            "chain output {",
            "type nat hook output priority -100; policy accept;",
            "ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat ip to 10.71.0.5:80",
            "chain postrouting {",
            "type nat hook postrouting priority srcnat; policy accept;",
            "ct status dnat ip saddr 10.71.0.0/24 ip daddr 10.71.0.5 tcp dport 80 masquerade",
        ];
        assert_eq!(rules(&table).await.expect("the table"), expected);
        // Only the network's table and the instance's: nothing else of ours.
        let mut tables = zx_nft::our_tables().await.unwrap();
        tables.sort();
        let mut want = vec![net.nft_table(), other.nft_table(), table.clone()];
        want.sort();
        assert_eq!(tables, want);

        // From outside the node (prerouting), from the node itself
        // (output), and from a neighbour on the instance's own network
        // (hairpin: masqueraded, or the answer would bypass the DNAT).
        assert_eq!(
            fetch_from(underlay.path(), published).expect("from outside"),
            "hello from web-1\n"
        );
        assert_eq!(
            fetch(published).expect("from the node"),
            "hello from web-1\n"
        );
        assert_eq!(
            fetch_from(&neighbour_ns, published).expect("from a neighbour"),
            "hello from web-1\n"
        );
        // From an instance of another (isolated) network: the published
        // port is open to it, the instance's own address is not.
        assert_eq!(
            fetch_from(&stranger_ns, published).expect("from another network"),
            "hello from web-1\n"
        );
        let direct = SocketAddr::from(([10, 71, 0, 5], 80));
        assert!(
            fetch_from(&stranger_ns, direct).is_err(),
            "isolation still holds"
        );

        // Publishing again replaces the table with the same rules.
        host.publish_ports("web-1", &web, &ports(&["8080:80"]))
            .await
            .expect("publish again");
        assert_eq!(rules(&table).await.unwrap(), expected);

        host.unpublish_ports("web-1", &web)
            .await
            .expect("unpublish");
        assert_eq!(rules(&table).await, None, "the table is gone");
        let mut tables = zx_nft::our_tables().await.unwrap();
        tables.sort();
        assert_eq!(tables, vec![other.nft_table(), net.nft_table()]);
        assert!(fetch_from(underlay.path(), published).is_err());
        host.unpublish_ports("web-1", &web)
            .await
            .expect("unpublish is idempotent");
        // The instance itself is still reached at its own address.
        assert_eq!(fetch(direct).unwrap(), "hello from web-1\n");
    });
}

#[test]
fn a_taken_host_port_is_refused_naming_the_holder_and_nothing_changes() {
    in_fresh_netns(|dir| async move {
        without_ipv6();
        let host = LinuxNetwork::connect(&dir).unwrap();
        let net = network("pub", "10.72.0.0/24", true, true);
        host.ensure_network(&net).await.unwrap();
        let (a, _) = endpoint(&host, "a-1", &net, "10.72.0.5").await;
        let (b, _) = endpoint(&host, "b-1", &net, "10.72.0.6").await;
        host.publish_ports("a-1", &a, &ports(&["8080:80", "53:53/udp"]))
            .await
            .expect("publish a");
        let before = common::host_state();

        // Another instance's port: on every address, or on one of them.
        for taken in ["8080:80", "192.0.2.1:8080:81", "53:5353/udp"] {
            let err = host
                .publish_ports("b-1", &b, &ports(&["9000:90", taken]))
                .await
                .expect_err(taken);
            assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
            let message = err.to_string();
            assert!(
                message.starts_with("spec.publish[1]: host port")
                    && message.contains("instance a-1 publishes"),
                "{taken}: {message}"
            );
        }
        // Sockets of a process of the node: a listening TCP one, a bound UDP one.
        let tcp = TcpListener::bind("0.0.0.0:9090").unwrap();
        let udp = UdpSocket::bind("0.0.0.0:5353").unwrap();
        for taken in ["9090:80", "5353:53/udp"] {
            let err = host
                .publish_ports("b-1", &b, &ports(&[taken]))
                .await
                .expect_err(taken);
            assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
            let message = err.to_string();
            let pid = std::process::id();
            assert!(
                message.contains(&format!("process {pid} (`")),
                "{taken}: {message}"
            );
        }
        assert_eq!(common::host_state(), before, "nothing changed");
        // The same numbers on another protocol or another address are free.
        host.publish_ports("b-1", &b, &ports(&["9090:80/udp", "5353:53", "53:53"]))
            .await
            .expect("other protocols are other ports");
        // Bound to the gateway's address only.
        let elsewhere = TcpListener::bind("10.72.0.1:7070").unwrap();
        host.publish_ports("b-1", &b, &ports(&["192.0.2.9:7070:80"]))
            .await
            .expect("a socket on another address does not hold it");
        drop((tcp, udp, elsewhere));
    });
}

#[test]
fn a_reconcile_removes_the_ports_of_instances_the_store_no_longer_has_and_only_its_own() {
    in_fresh_netns(|dir| async move {
        without_ipv6();
        let host = LinuxNetwork::connect(&dir).unwrap();
        let net = network("pub", "10.73.0.0/24", true, true);
        host.ensure_network(&net).await.unwrap();
        let (kept, _) = endpoint(&host, "kept", &net, "10.73.0.5").await;
        let (gone, _) = endpoint(&host, "gone", &net, "10.73.0.6").await;
        host.publish_ports("kept", &kept, &ports(&["8080:80"]))
            .await
            .unwrap();
        host.publish_ports("gone", &gone, &ports(&["8081:80"]))
            .await
            .unwrap();
        // Another installation's ports table on the same node.
        let other = zixiao_core::model::InstallationId::try_from("fedcba9876543210").unwrap();
        let theirs = PortsTable::new(&other, "theirs").unwrap().to_string();
        nft(&["add", "table", "inet", &theirs]);

        let seen = host.inventory().await.unwrap();
        let mut stored = common::instance("kept", kept.clone());
        stored.spec.networks = vec!["pub".into()];
        stored.spec.publish = ports(&["8080:80"]);
        let removed = host
            .reconcile(&here(), std::slice::from_ref(&net), &[stored], &seen)
            .await
            .unwrap();
        let gone_table = PortsTable::new(&here(), "gone").unwrap().to_string();
        assert!(
            removed.contains(&format!("nftables table inet {gone_table}")),
            "{removed:?}"
        );
        let mut tables = zx_nft::our_tables().await.unwrap();
        tables.sort();
        let kept_table = PortsTable::new(&here(), "kept").unwrap().to_string();
        let mut want = vec![net.nft_table(), kept_table, theirs];
        want.sort();
        assert_eq!(tables, want);
    });
}

#[test]
fn the_controller_refuses_a_host_port_another_instance_holds_and_stores_nothing() {
    in_fresh_netns(|dir| async move {
        let host = Arc::new(LinuxNetwork::connect(&dir).unwrap());
        let s = setup(host).await;
        let c = &s.controller;
        c.create_network(CreateNetwork::new("lan", ["10.74.0.0/24"]))
            .await
            .unwrap();
        let mut a = on("a", &["lan"]);
        a.spec.publish = ports(&["8080:80"]);
        let a = c.create_instance(a).await.expect("create a");

        let mut b = on("b", &["lan"]);
        b.spec.publish = ports(&["9000:90", "192.0.2.1:8080:81"]);
        let err = c.create_instance(b).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(
            err.to_string(),
            "instance `b` cannot publish its ports: 1 node: host port 192.0.2.1:8080/tcp is \
             published by instance `a`"
        );
        // Nothing stored, no address held.
        let names: Vec<String> = c
            .list_instances(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["a"]);
        // A port on an IPv6 address of the node leads nowhere on an IPv4-only network.
        let mut v6 = on("v6", &["lan"]);
        v6.spec.publish = ports(&["[fd00::1]:8443:443"]);
        let err = c.create_instance(v6).await.unwrap_err();
        assert!(
            err.to_string().starts_with("invalid spec.publish[0]:")
                && err.to_string().contains("no IPv6 address on network `lan`"),
            "{err}"
        );
        use zixiao_core::AddressAllocator;
        assert_eq!(s.ipam.owners("lan").await.unwrap(), vec![a.id.clone()]);

        // The same port over UDP, or another port, is another resource.
        let mut d = on("d", &["lan"]);
        d.spec.publish = ports(&["8080:80/udp", "8081:80"]);
        c.create_instance(d).await.expect("create d");
        // Once `a` is gone its port is free again.
        c.delete_instance("a").await.unwrap();
        c.converge("a").await.unwrap();
        let mut e = on("e", &["lan"]);
        e.spec.publish = ports(&["8080:80"]);
        c.create_instance(e).await.expect("create e");
    });
}

#[test]
fn an_ipv6_published_port_forwards_to_the_instances_ipv6_address() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(&dir).unwrap();
        let net = CreateNetwork::new("dual", ["10.77.0.0/24", "fd77::/64"])
            .validate(&here(), chrono::Utc::now())
            .unwrap();
        host.ensure_network(&net).await.unwrap();
        let mut web = vec![attachment("web-6", &net, 0, "10.77.0.5")];
        web[0].addresses.push(zixiao_core::model::IpConfig {
            address: "fd77::5".parse().unwrap(),
            prefix_len: 64,
            gateway: "fd77::1".parse().unwrap(),
        });
        let web_ns = host.attach_container("web-6", &web).await.unwrap();
        serve(&web_ns, "[::]:80", "hello over ipv6\n");
        // Every address of the node, both families; and one IPv6 address only.
        host.publish_ports("web-6", &web, &ports(&["8080:80", "[fd77::1]:8443:80"]))
            .await
            .expect("publish");
        let table = PortsTable::new(&here(), "web-6").unwrap().to_string();
        let listed = rules(&table).await.expect("the table");
        for wanted in [
            r#"meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.77.0.5:80 comment "8080:80/tcp""#,
            r#"meta nfproto ipv6 fib daddr type local tcp dport 8080 dnat ip6 to [fd77::5]:80 comment "8080:80/tcp""#,
            r#"fib daddr type local ip6 daddr fd77::1 tcp dport 8443 dnat ip6 to [fd77::5]:80 comment "[fd77::1]:8443:80/tcp""#,
            "ip6 daddr != ::1 fib daddr type local tcp dport 8080 dnat ip6 to [fd77::5]:80",
            "ct status dnat ip6 saddr fd77::/64 ip6 daddr fd77::5 tcp dport 80 masquerade",
        ] {
            assert_eq!(
                listed.iter().filter(|r| *r == wanted).count(),
                1,
                "{wanted}\n{listed:#?}"
            );
        }
        // No IPv4 rule for the IPv6-only port.
        assert!(
            !listed
                .iter()
                .any(|r| r.contains("8443") && r.contains("dnat ip to")),
            "{listed:#?}"
        );
        // From the node to its own IPv6 address (the gateway's), through
        // the `output` DNAT; the addresses may still be tentative (DAD).
        for port in [8080, 8443] {
            let to: SocketAddr = format!("[fd77::1]:{port}").parse().unwrap();
            zixiao_testing::wait::wait_until(
                &format!("[fd77::1]:{port} to answer"),
                Duration::from_secs(10),
                || async move { fetch(to).ok() },
            )
            .await;
            assert_eq!(fetch(to).unwrap(), "hello over ipv6\n");
        }
        host.unpublish_ports("web-6", &web).await.unwrap();
        assert_eq!(rules(&table).await, None);
    });
}

#[test]
fn a_published_udp_port_answers_from_outside_the_node() {
    in_fresh_netns(|dir| async move {
        without_ipv6();
        let host = LinuxNetwork::connect(&dir).unwrap();
        let underlay = Underlay::new(&dir.join("outside"), "upl0");
        let net = network("pub", "10.78.0.0/24", true, true);
        host.ensure_network(&net).await.unwrap();
        let (dns, dns_ns) = endpoint(&host, "dns-1", &net, "10.78.0.5").await;
        // An echo server on the instance's UDP port 5353.
        let server = netns::run_in(&dns_ns, || UdpSocket::bind("0.0.0.0:5353")).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        });
        host.publish_ports("dns-1", &dns, &ports(&["53:5353/udp"]))
            .await
            .expect("publish");
        let published = SocketAddr::from((NODE_ADDRESS, 53));
        let answer = netns::run_in(underlay.path(), || {
            let client = UdpSocket::bind("0.0.0.0:0")?;
            client.set_read_timeout(Some(Duration::from_secs(2)))?;
            // Datagrams may be lost: a few tries.
            for _ in 0..5 {
                client.send_to(b"ping over udp", published)?;
                let mut buf = [0u8; 512];
                if let Ok((n, from)) = client.recv_from(&mut buf) {
                    return Ok(Some((buf[..n].to_vec(), from)));
                }
            }
            Ok(None)
        })
        .unwrap();
        let (answer, from) = answer.expect("an answer through the published UDP port");
        assert_eq!(answer, b"ping over udp");
        assert_eq!(
            from, published,
            "the answer comes from the published address"
        );
        host.unpublish_ports("dns-1", &dns).await.unwrap();
    });
}
