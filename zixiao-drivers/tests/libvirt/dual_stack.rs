//! A container (containerd) and a VM (libvirt) on one dual-stack network,
//! end to end through the controller, in libvirtd's network namespace (see
//! `network`): the VM's kernel forms its IPv6 address from the node's
//! router advertisements alone (its `/init` is told only its IPv4 address),
//! and that address is the one IPAM recorded; the container has its
//! address and IPv6 default route in its namespace; each pings the other
//! over IPv6.

use std::sync::Arc;

use zixiao_core::driver::Images;
use zixiao_core::model::{CreateNetwork, NetworkPartKind, PartState};
use zixiao_core::{CreateInstance, Driver, Instance, InstanceSpec, InstanceStatus};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};
use zixiao_net::LinuxNetwork;
use zixiao_testing::wait::{runtime_endpoint, wait_until, wait_until_ok};

use super::network::{controller_with, in_libvirt_netns, ping, state_dir, until_status};
use super::on_console;
use super::{fixture, unique, wait_for_boots, BOOT_TIMEOUT};

/// This test's subnets: used by no other test.
const V4: &str = "10.93.0.0/24";
const V6: &str = "fd00:9e36::/64";

/// The IPv6 address of `instance`'s first attachment.
fn ipv6(instance: &Instance) -> std::net::IpAddr {
    instance.attachments[0]
        .addresses
        .iter()
        .map(|ip| ip.address)
        .find(|a| a.is_ipv6())
        .expect("an IPv6 address")
}

#[test]
fn a_container_and_a_vm_get_their_ipv6_addresses_and_ping_each_other() {
    in_libvirt_netns(|| async {
        let Some(fx) = fixture().await else {
            return;
        };
        let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
            return;
        };
        let Some(busybox) = runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox OCI archive")
        else {
            return;
        };
        let dir = state_dir(&fx);
        let host = LinuxNetwork::connect(dir.join("netns")).expect("netlink");
        let namespace = format!("zixiao-test-h-v6-dual-{}", std::process::id());
        let containers = Arc::new(
            ContainerdDriver::connect(
                ContainerdOptions::new(&socket, dir.join("containerd")).with_namespace(&namespace),
            )
            .await
            .expect("connect to containerd")
            .with_network(host.clone()),
        );
        containers
            .import(std::path::Path::new(&busybox), None, &|_| {})
            .await
            .expect("import busybox");
        let (c, vms) = controller_with(&dir, &fx.uri, &host, vec![containers.clone()]).await;

        let network = unique("v6").replace('-', "");
        let net = c
            .create_network(CreateNetwork::new(&network, [V4, V6]))
            .await
            .expect("create a dual-stack network");
        assert!(net.subnets[1].is_slaac());
        let status = c.network_status(&network).await.expect("network get");
        let dhcp = status.nodes[0]
            .parts
            .iter()
            .find(|p| p.kind == NetworkPartKind::Dhcp)
            .expect("a dhcp part");
        assert_eq!(dhcp.state, PartState::Ok, "{status:?}");
        assert_eq!(dhcp.detail, "serving DHCPv4 and IPv6 router advertisements");

        // The VM: `ip=` tells its /init the IPv4 address only.
        let vm_name = unique("v6vm");
        let mut spec = fx.vm("");
        spec.networks = vec![network.clone()];
        c.create_instance(CreateInstance::new(&vm_name, spec))
            .await
            .expect("create the vm");
        let vm = until_status(&c, &vm_name, InstanceStatus::Running).await;
        let vm_v6 = ipv6(&vm);
        assert_eq!(
            Some(vm_v6),
            net.subnets[1].slaac_address(
                zixiao_net::dhcp::MacAddress::try_from(vm.attachments[0].mac.as_str())
                    .unwrap()
                    .octets()
            ),
            "IPAM recorded the address the VM's MAC forms"
        );
        let xml = vms.domain_xml(&vm).expect("domain xml");
        assert!(!xml.contains(&vm_v6.to_string()), "not told: {xml}");
        wait_for_boots(&vms, &vm, 1).await;

        // The container pings the VM over IPv6 until it answers, and stays.
        let script = format!(
            "ip -o -6 addr show eth0; ip -6 route show default; \
             i=0; while [ $i -lt 240 ]; do ping -c 1 -W 1 {vm_v6} >/dev/null && \
             echo reached-the-vm && break; i=$((i+1)); sleep 0.5; done; sleep 600"
        );
        let mut spec = InstanceSpec::container("busybox").with_command(["sh", "-c", &script]);
        spec.networks = vec![network.clone()];
        let ctr_name = unique("v6ctr");
        c.create_instance(CreateInstance::new(&ctr_name, spec))
            .await
            .expect("create the container");
        let ctr = until_status(&c, &ctr_name, InstanceStatus::Running).await;
        let ctr_v6 = ipv6(&ctr);
        assert!(net.subnets[1].cidr.contains(ctr_v6), "{ctr_v6}");

        // The VM formed its address (from the RAs only) when the node
        // reaches it there.
        super::network::until_pingable(vm_v6).await;
        let log = wait_until_ok("the container to reach the VM", BOOT_TIMEOUT, || async {
            let chunk = containers
                .read_log(&ctr, 0, 1 << 20)
                .await
                .expect("container log");
            let log = String::from_utf8_lossy(&chunk.data).into_owned();
            if log.contains("reached-the-vm") {
                Ok(log)
            } else {
                Err(format!("the container's log: {log:?}"))
            }
        })
        .await;
        assert!(
            log.contains(&format!("{ctr_v6}/64")),
            "the container holds its address: {log}"
        );
        assert!(
            log.contains(&format!("default via {} dev eth0", net.subnets[1].gateway)),
            "and its IPv6 default route: {log}"
        );
        // Set from IPAM, not from the advertisements: no second route,
        // and the address never expires.
        assert!(!log.contains("via fe80::"), "{log}");
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("{ctr_v6}/64")) && l.contains("valid_lft forever")),
            "{log}"
        );

        // The VM's side, from its console: the address it formed (global,
        // from the advertised prefix), the router the RAs named, and a
        // ping to the container.
        let seen = on_console(
            &vms,
            &vm,
            &format!(
                "ip -6 -o addr show dev eth0; ip -6 route show default; \
                 ping -c 3 -W 3 {ctr_v6} && echo PING6-$((1+1))-OK; echo ZX6-$((40+2))"
            ),
            "ZX6-42",
        )
        .await;
        assert!(
            seen.contains(&format!("inet6 {vm_v6}/64 scope global")),
            "the VM formed its IPAM address: {seen}"
        );
        assert!(seen.contains("default via fe80::"), "an RA router: {seen}");
        assert!(
            seen.contains("PING6-2-OK"),
            "the VM reached the container: {seen}"
        );

        // Delete: instances, then the network and its responder.
        for name in [&ctr_name, &vm_name] {
            c.delete_instance(name).await.expect("delete");
        }
        wait_until("the instances to be gone", BOOT_TIMEOUT, || async {
            let mut gone = true;
            for i in [&vm, &ctr] {
                let _ = c.converge(&i.id).await;
                gone &= c.get_instance(&i.id).await.is_err();
            }
            gone.then_some(())
        })
        .await;
        assert!(!ping(vm_v6) && !ping(ctr_v6));
        c.delete_network(&network).await.expect("delete network");
        assert_eq!(host.link_index(&net.bridge).await.unwrap(), None);
    });
}
