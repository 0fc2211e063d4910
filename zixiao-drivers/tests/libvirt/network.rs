//! VMs on networks, end to end through the controller: IPAM on the embedded
//! store, the bridge from zixiao-net, and a guest on the real libvirtd whose
//! NIC libvirt plugs into that bridge. libvirtd runs in a network namespace
//! of its own (`scripts/services/libvirt.sh` pins it and exports
//! `ZIXIAO_TEST_LIBVIRT_NETNS`); the test runs in that namespace, so the
//! bridge is where libvirt creates the TAP devices, and the host's network
//! is never touched.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use zixiao_core::host::HostFacts;
use zixiao_core::model::{CreateNetwork, TAP_PREFIX};
use zixiao_core::{
    Controller, CreateInstance, Driver, Instance, InstanceStatus, LocalAgent, NetworkHost,
};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_net::{nft, LinuxNetwork, StoreIpam};
use zixiao_store::EmbeddedStore;
use zixiao_testing::wait::{runtime_endpoint, wait_until};

use super::{assert_nothing_left, console, fixture, unique, wait_for_boots, BOOT_TIMEOUT};

/// Runs `body` inside libvirtd's network namespace on a current-thread
/// runtime (threads and processes it starts stay there); skips without one.
pub(crate) fn in_libvirt_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    let Some(netns) = runtime_endpoint("ZIXIAO_TEST_LIBVIRT_NETNS", "libvirtd's network namespace")
    else {
        return;
    };
    zixiao_net::netns::run_in(Path::new(&netns), || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(body());
        Ok(())
    })
    // The body's panic message is printed above this one.
    .expect("the test in libvirtd's network namespace failed");
}

/// A controller over `dir/store.redb` whose one node runs VMs on libvirt
/// and sets up networks with `host` (as after a restart when the store exists).
pub(crate) async fn controller(
    dir: &Path,
    uri: &str,
    host: &LinuxNetwork,
) -> (Controller, Arc<LibvirtDriver>) {
    controller_with(dir, uri, host, Vec::new()).await
}

/// [`controller`], its node also running the instance types of `others`.
pub(crate) async fn controller_with(
    dir: &Path,
    uri: &str,
    host: &LinuxNetwork,
    others: Vec<Arc<dyn Driver>>,
) -> (Controller, Arc<LibvirtDriver>) {
    let driver = Arc::new(
        LibvirtDriver::connect(LibvirtOptions::new(uri, dir))
            .await
            .expect("connect")
            .with_network(host.clone()),
    );
    let mut agent =
        LocalAgent::new(HostFacts::probe(dir).expect("host facts")).with_driver(driver.clone());
    for other in others {
        agent = agent.with_driver(other);
    }
    let mut registration = agent.registration("local");
    registration.labels.extend(driver.host().labels());
    let store = Arc::new(EmbeddedStore::open(&dir.join("store.redb")).expect("open store"));
    let controller = Controller::builder(
        store.clone(),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    .address_allocator(Arc::new(StoreIpam::new(store)))
    .network_host("local", Arc::new(host.clone()))
    .options(zixiao_core::controller::ControllerOptions {
        stop_grace: std::time::Duration::from_secs(3),
        ..Default::default()
    })
    .build();
    controller
        .register_node(registration)
        .await
        .expect("register node");
    (controller, driver)
}

pub(crate) async fn until_status(c: &Controller, name: &str, want: InstanceStatus) -> Instance {
    wait_until(
        &format!("{name} to be {}", want.as_str()),
        BOOT_TIMEOUT,
        || async {
            let i = c.converge(name).await.expect("converge").expect("exists");
            (i.status == want).then_some(i)
        },
    )
    .await
}

/// Whether one ping from this thread's namespace reaches `address`.
pub(crate) fn ping(address: IpAddr) -> bool {
    Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "2", &address.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("busybox ping")
        .success()
}

/// Waits until `address` answers pings (a guest under TCG is slow).
pub(crate) async fn until_pingable(address: IpAddr) {
    wait_until(
        &format!("{address} to answer pings"),
        BOOT_TIMEOUT,
        || async {
            tokio::task::spawn_blocking(move || ping(address))
                .await
                .expect("ping thread")
                .then_some(())
        },
    )
    .await;
}

/// `ip -o link show dev <name>` in this thread's namespace.
fn link_line(name: &str) -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn state_dir(fx: &super::Fixture) -> PathBuf {
    let dir = fx.dir.path().join("network");
    std::fs::create_dir_all(&dir).expect("dir");
    super::searchable(&dir);
    dir
}

#[test]
fn a_vm_on_a_network_is_reachable_survives_a_restart_and_delete_leaves_nothing() {
    in_libvirt_netns(|| async {
        let Some(fx) = fixture().await else {
            return;
        };
        let dir = state_dir(&fx);
        let host = LinuxNetwork::connect(dir.join("netns")).expect("netlink");
        let (c, driver) = controller(&dir, &fx.uri, &host).await;
        let net = c
            .create_network(CreateNetwork::new("vmnet", ["10.68.0.0/24"]))
            .await
            .expect("create network");

        let name = unique("netvm");
        let mut spec = fx.vm("");
        spec.networks = vec!["vmnet".to_owned()];
        c.create_instance(CreateInstance::new(&name, spec))
            .await
            .expect("create");
        let vm = until_status(&c, &name, InstanceStatus::Running).await;
        let attachment = vm.attachments[0].clone();
        assert_eq!(attachment.interface, "eth0");
        assert!(attachment.host_interface.starts_with(TAP_PREFIX));
        let address = attachment.addresses[0].address;
        assert!(net.subnets[0].cidr.contains(address), "{address}");

        // libvirt made the TAP on the network's bridge with the attachment's
        // MAC; the guest's init configured eth0 from the kernel's `ip=`.
        let tap = link_line(&attachment.host_interface);
        assert!(tap.contains(&format!("master {}", net.bridge)), "{tap}");
        let xml = driver.domain_xml(&vm).expect("domain xml");
        assert!(xml.contains(&attachment.mac), "{xml}");
        // The node's DHCP responder serves the network and knows the NIC;
        // without cloud-init data the guest is still told by `ip=`.
        let dhcp_entry = format!(
            "dhcp-host {}/{}/{}",
            net.installation.as_ref().expect("installation"),
            net.bridge,
            attachment.host_interface
        );
        assert!(host.dhcp_serves(&vm.attachments));
        let seen = host.inventory().await.expect("inventory");
        assert!(seen.contains(&dhcp_entry), "{seen:?}");
        assert!(xml.contains(" ip=10.68.0."), "{xml}");
        wait_for_boots(&driver, &vm, 1).await;
        let log = console(&driver, &vm).await;
        assert!(
            log.contains(&format!("ZIXIAO-NET eth0 {address}")),
            "the guest configured eth0: {log}"
        );
        until_pingable(address).await;

        // A new controller and driver over the same store (a restart) find
        // the VM running with its NIC, and reconciling the node's networks
        // keeps the TAP the attachment names.
        drop(c);
        drop(driver);
        let (c, driver) = controller(&dir, &fx.uri, &host).await;
        let vm = until_status(&c, &name, InstanceStatus::Running).await;
        assert_eq!(vm.attachments[0], attachment);
        let report = c.reconcile_networks().await.expect("reconcile networks");
        assert!(report.removed.is_empty(), "{report:?}");
        assert!(host
            .link_index(&attachment.host_interface)
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            console(&driver, &vm).await.matches(super::MARKER).count(),
            1
        );
        until_pingable(address).await;

        // Delete: the domain, its TAP and its address go; then the network.
        c.delete_instance(&name).await.expect("delete");
        wait_until("the vm to be gone", BOOT_TIMEOUT, || async {
            let _ = c.converge(&vm.id).await;
            c.get_instance(&vm.id).await.is_err().then_some(())
        })
        .await;
        assert_nothing_left(&driver, &vm).await;
        assert_eq!(
            host.link_index(&attachment.host_interface).await.unwrap(),
            None,
            "the TAP is gone"
        );
        assert!(!ping(address));
        let seen = host.inventory().await.expect("inventory");
        assert!(
            !seen.contains(&dhcp_entry),
            "the DHCP entry is gone: {seen:?}"
        );
        c.delete_network("vmnet").await.expect("delete network");
        assert_eq!(
            host.dhcp_state(&net).expect("state"),
            zixiao_net::dhcp::DhcpState::Stopped,
            "the responder stopped with the network"
        );
        // (The other test shares the namespace: look only at ours.)
        assert_eq!(host.link_index(&net.bridge).await.unwrap(), None);
        assert_eq!(nft::show_table(&net.nft_table()).await.unwrap(), None);
    });
}

#[test]
fn a_vm_on_a_network_missing_on_the_node_fails_and_leaves_nothing() {
    in_libvirt_netns(|| async {
        let Some(fx) = fixture().await else {
            return;
        };
        let dir = state_dir(&fx);
        let host = LinuxNetwork::connect(dir.join("netns")).expect("netlink");
        let (c, driver) = controller(&dir, &fx.uri, &host).await;
        let net = c
            .create_network(CreateNetwork::new("gone", ["10.69.0.0/24"]))
            .await
            .expect("create network");
        // The node lost the bridge (someone removed it by hand).
        host.delete_link(&net.bridge, &net.mark().expect("a current network"))
            .await
            .expect("delete bridge");

        let name = unique("lostnet");
        let mut spec = fx.vm("");
        spec.networks = vec!["gone".to_owned()];
        c.create_instance(CreateInstance::new(&name, spec))
            .await
            .expect("create");
        let vm = until_status(&c, &name, InstanceStatus::Failed).await;
        let problem = vm.problem().unwrap_or_default().to_owned();
        assert!(
            problem.contains("not set up on this node") && problem.contains(net.bridge.as_str()),
            "{problem}"
        );
        assert_nothing_left(&driver, &vm).await;

        // Without the pre-check (a driver with no host network), starting
        // the domain fails with the same error, read from libvirt's.
        let bare = LibvirtDriver::connect(LibvirtOptions::new(&fx.uri, &dir))
            .await
            .expect("connect");
        bare.create(&vm).await.expect("define without the check");
        let err = bare.start(&vm).await.expect_err("start without the bridge");
        assert_eq!(
            err.kind(),
            zixiao_core::ErrorKind::FailedPrecondition,
            "{err}"
        );
        assert!(err.to_string().contains(net.bridge.as_str()), "{err}");
        bare.delete(&vm).await.expect("delete");
        assert_nothing_left(&bare, &vm).await;

        c.delete_instance(&name).await.expect("delete instance");
        wait_until("the instance to be gone", BOOT_TIMEOUT, || async {
            let _ = c.converge(&vm.id).await;
            c.get_instance(&vm.id).await.is_err().then_some(())
        })
        .await;
        c.delete_network("gone").await.expect("delete network");
        assert_eq!(nft::show_table(&net.nft_table()).await.unwrap(), None);
    });
}

/// Against libvirt's mock (no daemon, runs everywhere): each attachment is a
/// virtio NIC on its bridge with its TAP name and MAC, and an `ip=` on the
/// kernel command line; a bad attachment is refused and defines nothing.
#[tokio::test]
async fn attachments_are_nics_and_kernel_ip_arguments_and_bad_ones_are_refused() {
    use zixiao_core::model::{IpConfig, NetworkAttachment};
    use zixiao_core::{ErrorKind, InstanceSpec, InstanceType};

    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"never booted by the mock").expect("kernel");
    let driver = LibvirtDriver::connect(LibvirtOptions::new("test:///default", dir.path()))
        .await
        .expect("the mock needs no daemon");
    let mut spec = InstanceSpec::microvm(&kernel).with_size(1, 128);
    spec.instance_type = InstanceType::Vm;
    spec.cmdline = Some("console=ttyS0".to_owned());
    spec.networks = vec!["lan".to_owned()];
    let mut vm = super::instance(&unique("nic"), spec);
    vm.attachments = vec![NetworkAttachment {
        network: "lan".try_into().unwrap(),
        installation: None,
        interface: "eth0".into(),
        host_interface: "zxt0123456789".try_into().unwrap(),
        bridge: "zxb01234567".try_into().unwrap(),
        mac: "02:12:34:56:78:9a".into(),
        addresses: vec![IpConfig {
            address: "10.70.0.7".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.70.0.1".parse().unwrap(),
        }],
    }];

    let xml = driver.domain_xml(&vm).expect("xml");
    for part in [
        r#"<interface type="bridge">"#,
        r#"<source bridge="zxb01234567"/>"#,
        r#"<target dev="zxt0123456789"/>"#,
        r#"<mac address="02:12:34:56:78:9a"/>"#,
        r#"<model type="virtio"/>"#,
        "<cmdline>console=ttyS0 ip=10.70.0.7::10.70.0.1:255.255.255.0::eth0:off</cmdline>",
    ] {
        assert!(xml.contains(part), "{part} in {xml}");
    }
    // libvirt accepts the definition (the mock checks no bridge).
    driver.create(&vm).await.expect("create");
    driver.delete(&vm).await.expect("delete");

    vm.attachments[0].mac = "01:00:5e:00:00:01".into();
    let err = driver.create(&vm).await.expect_err("a multicast MAC");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("attachments[0].mac"), "{err}");
    assert_nothing_left(&driver, &vm).await;
}
