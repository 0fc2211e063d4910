//! DHCP for guests against the real dnsmasq and busybox's `udhcpc`, each
//! test in a network namespace of its own (see `common`): a client with a
//! plugged attachment's MAC gets exactly its IPAM address and gateway, an
//! unknown MAC gets nothing, unplugging takes the entry back, and a
//! reconcile restarts a dead responder and removes what the store no
//! longer names.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{attachment_with, here, in_fresh_netns, instance, network};
use zixiao_core::model::{mac_address, mac_octets, CreateNetwork, InterfaceKind, NetworkPartKind};
use zixiao_core::NetworkHost;
use zixiao_net::dhcp::DhcpState;
use zixiao_net::{netns, LinuxNetwork};
use zixiao_testing::wait::wait_until;

/// The udhcpc script: prints what a client would configure, one line per event.
const SCRIPT: &str = "#!/bin/sh\necho \"$1 ip=$ip router=$router subnet=$subnet\"\n";

/// A client namespace `<dir>/client` with `eth0` (MAC `mac`) whose peer
/// joins `bridge`, and the path of the udhcpc script.
fn client(dir: &Path, bridge: &str, mac: &str) -> (PathBuf, PathBuf) {
    let ns = dir.join("client");
    netns::create(&ns).expect("client namespace");
    run(
        "ip",
        &[
            "link", "add", "dhcpc0", "type", "veth", "peer", "name", "dhcpp0",
        ],
    );
    run("ip", &["link", "set", "dhcpc0", "master", bridge, "up"]);
    run(
        "ip",
        &["link", "set", "dhcpp0", "netns", &ns.to_string_lossy()],
    );
    netns::run_in(&ns, || {
        run("ip", &["link", "set", "dhcpp0", "name", "eth0"]);
        run("ip", &["link", "set", "eth0", "address", mac, "up"]);
        Ok(())
    })
    .unwrap();
    let script = dir.join("udhcpc.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    run("chmod", &["755", &script.to_string_lossy()]);
    (ns, script)
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

fn set_mac(ns: &Path, mac: &str) {
    netns::run_in(ns, || {
        run("ip", &["link", "set", "eth0", "down"]);
        run("ip", &["link", "set", "eth0", "address", mac, "up"]);
        Ok(())
    })
    .unwrap();
}

/// One udhcpc run in `ns` (3 discovers, a second apart): the `bound` line
/// of the lease it got, or `None` when it got none.
fn lease(ns: &Path, script: &Path) -> Option<String> {
    let out = netns::run_in(ns, || {
        Command::new("busybox")
            .args([
                "udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "1", "-i", "eth0", "-s",
            ])
            .arg(script)
            .output()
    })
    .expect("busybox udhcpc");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let bound = stdout
        .lines()
        .find(|l| l.starts_with("bound "))
        .map(str::to_owned);
    assert_eq!(out.status.success(), bound.is_some(), "{out:?}");
    bound
}

/// The pid of the dnsmasq serving `bridge`, from its pid file.
fn responder_pid(dir: &Path, bridge: &str) -> i32 {
    let file = dir
        .join("dhcp")
        .join(here().as_str())
        .join(bridge)
        .join("pid");
    std::fs::read_to_string(&file)
        .expect("pid file")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_plugged_guest_gets_exactly_its_address_and_no_one_else_gets_any() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(&dir).unwrap();
        let net = network("dh", "10.71.0.0/24", false, true);
        host.ensure_network(&net).await.unwrap();
        assert_eq!(host.dhcp_state(&net).unwrap(), DhcpState::Serving);
        let vm = attachment_with(InterfaceKind::Tap, "vm", &net, 0, "10.71.0.57");
        host.attach_tap("vm", std::slice::from_ref(&vm))
            .await
            .unwrap();
        assert!(host.dhcp_serves(std::slice::from_ref(&vm)));

        let (ns, script) = client(&dir, &net.bridge, &vm.mac);
        let bound = lease(&ns, &script).expect("a lease for the plugged MAC");
        assert_eq!(
            bound,
            "bound ip=10.71.0.57 router=10.71.0.1 subnet=255.255.255.0"
        );

        set_mac(&ns, "02:00:00:00:71:99");
        assert_eq!(lease(&ns, &script), None, "an unknown MAC gets no lease");

        set_mac(&ns, &vm.mac);
        host.detach_tap("vm", std::slice::from_ref(&vm))
            .await
            .unwrap();
        assert_eq!(lease(&ns, &script), None, "unplugged: no lease any more");

        host.remove_network(&net).await.unwrap();
        assert!(!dir
            .join("dhcp")
            .join(here().as_str())
            .join(net.bridge.as_str())
            .exists());
        assert_ne!(host.dhcp_state(&net).unwrap(), DhcpState::Serving);
        netns::remove(&ns).unwrap();
    });
}

/// `ip <args>` in namespace `ns`: its standard output.
fn ip_in(ns: &Path, args: &[&str]) -> String {
    let out = netns::run_in(ns, || Command::new("ip").args(args).output()).expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_guest_forms_its_ipam_address_from_the_router_advertisements() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(&dir).unwrap();
        // As an older Zixiao left it: a responder without advertisements.
        let before = network("ra", "10.94.0.0/24", false, true);
        host.ensure_network(&before).await.unwrap();
        let old = responder_pid(&dir, &before.bridge);
        let net = CreateNetwork::new("ra", ["10.94.0.0/24", "fd00:9e37::/64"])
            .validate(&here(), chrono::Utc::now())
            .unwrap();
        host.ensure_network(&net).await.unwrap();
        assert_eq!(host.dhcp_state(&net).unwrap(), DhcpState::Serving);
        let pid = responder_pid(&dir, &net.bridge);
        assert_ne!(pid, old, "the responder was replaced");
        assert!(exited(old), "the old one is gone");
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(cmdline.contains("--enable-ra"), "{cmdline:?}");
        host.ensure_network(&net).await.unwrap();
        assert_eq!(
            responder_pid(&dir, &net.bridge),
            pid,
            "kept while it is right"
        );
        let parts = host
            .inspect_network(&net, &zixiao_core::model::OverlayView::empty(), &[])
            .await
            .unwrap();
        let dhcp = parts
            .iter()
            .find(|p| p.kind == NetworkPartKind::Dhcp)
            .unwrap();
        assert_eq!(
            dhcp.detail, "serving DHCPv4 and IPv6 router advertisements",
            "{parts:?}"
        );

        // A guest NIC with the MAC the controller would give instance
        // `guest`: no host entry, no DHCPv6, only the advertisements.
        let (ns, _script) = client(&dir, &net.bridge, &mac_address("guest", "ra"));
        let expected = net.subnets[1]
            .slaac_address(mac_octets("guest", "ra"))
            .unwrap();
        let formed = wait_until(
            "the guest to form its address and learn its router",
            Duration::from_secs(30),
            || async {
                let addresses = ip_in(&ns, &["-6", "-o", "addr", "show", "dev", "eth0"]);
                let routes = ip_in(&ns, &["-6", "route", "show", "default"]);
                // Usable once the guest's own duplicate detection is done.
                let usable = addresses
                    .lines()
                    .any(|l| l.contains(&format!("{expected}/64")) && !l.contains("tentative"));
                (usable && routes.contains("via fe80::")).then_some((addresses, routes))
            },
        )
        .await;
        assert!(formed.1.contains("proto ra"), "{formed:?}");
        // The gateway answers at the address every node's bridge holds.
        let ping = netns::run_in(&ns, || {
            Command::new("busybox")
                .args(["ping", "-c", "1", "-W", "3", "fd00:9e37::1"])
                .output()
        })
        .expect("busybox ping");
        assert!(ping.status.success(), "{ping:?}");

        host.remove_network(&net).await.unwrap();
        netns::remove(&ns).unwrap();
    });
}

#[test]
fn reconcile_restarts_a_dead_responder_and_removes_what_the_store_does_not_name() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(&dir).unwrap();
        let kept = network("kept", "10.72.1.0/24", false, true);
        let gone = network("gone", "10.72.2.0/24", false, true);
        host.ensure_network(&kept).await.unwrap();
        host.ensure_network(&gone).await.unwrap();
        let alive = attachment_with(InterfaceKind::Tap, "alive", &kept, 0, "10.72.1.5");
        let ghost = attachment_with(InterfaceKind::Tap, "ghost", &kept, 0, "10.72.1.6");
        host.plug_dhcp(&[alive.clone(), ghost.clone()]).unwrap();
        let gone_pid = responder_pid(&dir, &gone.bridge);

        // The responder dies.
        let pid = responder_pid(&dir, &kept.bridge);
        // SAFETY: kill has no memory preconditions; `pid` is this test's dnsmasq.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_until("dnsmasq to die", Duration::from_secs(10), || async {
            (host.dhcp_state(&kept).unwrap() == DhcpState::Stopped).then_some(())
        })
        .await;

        let seen = host.inventory().await.unwrap();
        let removed = host
            .reconcile(
                &here(),
                std::slice::from_ref(&kept),
                &[instance("alive", vec![alive.clone()])],
                &seen,
            )
            .await
            .unwrap()
            .join("\n");
        assert_eq!(
            host.dhcp_state(&kept).unwrap(),
            DhcpState::Serving,
            "restarted"
        );
        assert!(
            removed.contains(&format!(
                "DHCP host {} of {}",
                ghost.host_interface, kept.bridge
            )),
            "{removed}"
        );
        assert!(
            removed.contains(&format!("DHCP responder of {}", gone.bridge)),
            "{removed}"
        );
        assert!(exited(gone_pid), "its dnsmasq stopped");
        assert!(
            !removed.contains(alive.host_interface.as_str()),
            "{removed}"
        );

        // The restarted responder serves the entry it kept, and not the removed one.
        let (ns, script) = client(&dir, &kept.bridge, &alive.mac);
        let bound = lease(&ns, &script).expect("a lease after the restart");
        assert!(bound.starts_with("bound ip=10.72.1.5 "), "{bound}");
        set_mac(&ns, &ghost.mac);
        assert_eq!(lease(&ns, &script), None, "the orphan's entry is gone");

        host.remove_network(&kept).await.unwrap();
        host.remove_network(&gone).await.unwrap();
        netns::remove(&ns).unwrap();
    });
}

#[test]
fn without_dnsmasq_or_anything_to_serve_a_network_is_made_without_dhcp() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(&dir)
            .unwrap()
            .with_dnsmasq(dir.join("no-such-dnsmasq"));
        let net = network("nodh", "10.73.0.0/24", false, true);
        host.ensure_network(&net)
            .await
            .expect("a network without DHCP is still made");
        assert_eq!(
            host.dhcp_state(&net).unwrap(),
            DhcpState::Unavailable("dnsmasq not found".into())
        );
        assert_eq!(
            host.dhcp_state(&net).unwrap().to_string(),
            "unavailable (dnsmasq not found)"
        );
        host.remove_network(&net).await.unwrap();

        let host = LinuxNetwork::connect(&dir).unwrap();
        // Not a /64: no advertisements (and no DHCPv4) to send.
        let v6 = network("six", "fd00:73::/80", false, true);
        host.ensure_network(&v6)
            .await
            .expect("an IPv6-only network");
        assert_eq!(host.dhcp_state(&v6).unwrap(), DhcpState::Off);
        assert!(!dir
            .join("dhcp")
            .join(here().as_str())
            .join(v6.bridge.as_str())
            .exists());
        host.remove_network(&v6).await.unwrap();
    });
}

/// Whether process `pid` has exited: gone, or a zombie its parent (init,
/// for a daemon) has not reaped yet.
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}
