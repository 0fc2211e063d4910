//! TAP devices of VMs against the real kernel (`/dev/net/tun`, netlink),
//! each test inside a network namespace it creates (see `common`).

mod common;

use common::{attachment, attachment_with, here, in_fresh_netns, instance, ip, network};
use zixiao_core::model::{InterfaceKind, NetworkAttachment, TAP_PREFIX};
use zixiao_core::{ErrorKind, NetworkHost};
use zixiao_net::LinuxNetwork;

/// An attachment of `instance` with a TAP (not a veth) as its host device.
fn tap_attachment(
    instance: &str,
    net: &zixiao_core::model::Network,
    address: &str,
) -> NetworkAttachment {
    attachment_with(InterfaceKind::Tap, instance, net, 0, address)
}

#[test]
fn a_tap_joins_the_bridge_persists_and_detach_removes_it() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(dir).unwrap();
        let net = network("vms", "10.71.0.0/24", false, true);
        host.ensure_network(&net).await.unwrap();
        let a = [tap_attachment("vm-a", &net, "10.71.0.10")];
        let tap = a[0].host_interface.clone();

        host.attach_tap("vm-a", &a).await.unwrap();
        host.attach_tap("vm-a", &a)
            .await
            .expect("attach is idempotent");
        let details = ip(&["-d", "-o", "link", "show", &tap]);
        assert!(details.contains("tun type tap"), "a TAP: {details}");
        assert!(details.contains("persist"), "persistent: {details}");
        assert!(
            details.contains(&format!("master {}", net.bridge)),
            "on the bridge: {details}"
        );
        assert!(details.contains(",UP"), "up: {details}");
        assert!(
            !details.contains(&a[0].mac),
            "the guest's MAC is not the TAP's: {details}"
        );
        let ports = ip(&["-o", "link", "show", "master", &net.bridge]);
        assert!(ports.contains(tap.as_str()), "the bridge lists it: {ports}");

        // The agent's reconciliation keeps a TAP an instance names...
        let seen = host.inventory().await.unwrap();
        let removed = host
            .reconcile(
                &here(),
                std::slice::from_ref(&net),
                &[instance("vm-a", a.to_vec())],
                &seen,
            )
            .await
            .unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(host.link_index(&tap).await.unwrap().is_some());

        host.detach_tap("vm-a", &a).await.unwrap();
        host.detach_tap("vm-a", &a)
            .await
            .expect("detach is idempotent");
        assert_eq!(host.link_index(&tap).await.unwrap(), None);

        // ...and removes one no instance names (left by a crash).
        host.attach_tap("vm-a", &a).await.unwrap();
        let seen = host.inventory().await.unwrap();
        let removed = host
            .reconcile(&here(), std::slice::from_ref(&net), &[], &seen)
            .await
            .unwrap();
        // Its DHCP host entry goes with it.
        assert_eq!(
            removed,
            vec![
                format!("link {tap}"),
                format!("DHCP host {tap} of {}", net.bridge)
            ]
        );
        assert_eq!(host.link_index(&tap).await.unwrap(), None);
    });
}

#[test]
fn a_missing_bridge_or_a_bad_name_fails_and_leaves_no_tap() {
    in_fresh_netns(|dir| async move {
        let host = LinuxNetwork::connect(dir).unwrap();
        let up = network("up", "10.72.0.0/24", false, true);
        let down = network("down", "10.73.0.0/24", false, true);
        host.ensure_network(&up).await.unwrap();
        // The first TAP can be made; the second network's bridge is missing.
        let both = [
            tap_attachment("vm-b", &up, "10.72.0.10"),
            NetworkAttachment {
                interface: "eth1".into(),
                ..tap_attachment("vm-b", &down, "10.73.0.10")
            },
        ];
        let err = host.attach_tap("vm-b", &both).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(
            err.to_string().contains(down.bridge.as_str()) && err.to_string().contains("vm-b"),
            "{err}"
        );
        assert!(
            host.links_with_prefix(TAP_PREFIX).await.unwrap().is_empty(),
            "nothing half-made"
        );

        // A veth's name is no TAP's: refused before anything is touched.
        let bad = attachment("vm-c", &up, 0, "10.72.0.11");
        let err = host
            .attach_tap("vm-c", std::slice::from_ref(&bad))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("host_interface"), "{err}");
        let err = host.detach_tap("vm-c", &[bad]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

        // A device of another kind under a TAP's name is not taken over,
        // nor removed.
        let taken = tap_attachment("vm-d", &up, "10.72.0.12");
        let out = std::process::Command::new("ip")
            .args(["link", "add", &taken.host_interface, "type", "bridge"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let err = host
            .attach_tap("vm-d", std::slice::from_ref(&taken))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(
            err.to_string().contains(taken.host_interface.as_str()),
            "{err}"
        );
        let err = host
            .detach_tap("vm-d", std::slice::from_ref(&taken))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(host
            .link_index(&taken.host_interface)
            .await
            .unwrap()
            .is_some());
        // Nor a TAP that is not marked as the network's (made by hand).
        let unmarked = tap_attachment("vm-e", &up, "10.72.0.13");
        let out = std::process::Command::new("ip")
            .args(["tuntap", "add", &unmarked.host_interface, "mode", "tap"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let err = host
            .attach_tap("vm-e", std::slice::from_ref(&unmarked))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("no Zixiao mark"), "{err}");
        let details = ip(&["-d", "-o", "link", "show", &unmarked.host_interface]);
        assert!(!details.contains("master"), "not plugged: {details}");
    });
}
