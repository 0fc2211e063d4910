//! VMs on networks, end to end through the controller: IPAM on the embedded
//! store, the bridge from zixiao-net, and a guest on the real libvirtd whose
//! NIC libvirt plugs into that bridge. libvirtd runs in a network namespace
//! of its own (`scripts/services/libvirt.sh` pins it and exports
//! `ZIXIAO_TEST_LIBVIRT_NETNS`); the test runs in that namespace, so the
//! bridge is where libvirt creates the TAP devices, and the host's network
//! is never touched. A published port reaches the guest through the node
//! (its DNAT to the IPAM address), as it does a container.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::host::HostFacts;
use zixiao_core::model::{CreateNetwork, PublishedPort, TAP_PREFIX};
use zixiao_core::{
    Controller, CreateInstance, Driver, ErrorKind, Instance, InstanceStatus, LocalAgent,
    NetworkHost,
};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_net::ports::PortsTable;
use zixiao_net::{nft, LinuxNetwork, StoreIpam};
use zixiao_store::EmbeddedStore;
use zixiao_testing::wait::{runtime_endpoint, wait_until};

use super::{
    assert_nothing_left, console, fixture, on_console, unique, wait_for_boots, BOOT_TIMEOUT,
};

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

/// Deletes `instance` through `c` and waits until the store has it no
/// more (converging it meanwhile).
async fn delete_and_wait(c: &Controller, instance: &Instance) {
    c.delete_instance(&instance.name).await.expect("delete");
    wait_until(
        &format!("{} to be gone", instance.name),
        BOOT_TIMEOUT,
        || async {
            let _ = c.converge(&instance.id).await;
            c.get_instance(&instance.id).await.is_err().then_some(())
        },
    )
    .await;
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
        delete_and_wait(&c, &vm).await;
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

/// What a TCP connection from this thread's namespace to `to` reads until
/// the server closes it; `None` when it cannot connect or reads nothing.
fn fetch(to: std::net::SocketAddr) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    (!answer.is_empty()).then_some(answer)
}

/// Host ports of this test's (unusual, so other tests publishing in
/// libvirtd's namespace at the same time do not clash with them).
const PUBLISHED_PORT: u16 = 18026;
const BOUND_PORT: u16 = 18027;

#[test]
fn a_vm_publishes_a_port_reached_through_the_node_that_survives_a_restart() {
    in_libvirt_netns(|| async {
        let Some(fx) = fixture().await else {
            return;
        };
        let dir = state_dir(&fx);
        let host = LinuxNetwork::connect(dir.join("netns")).expect("netlink");
        let (c, driver) = controller(&dir, &fx.uri, &host).await;
        c.create_network(CreateNetwork::new("pubvm", ["10.226.26.0/24"]))
            .await
            .expect("create network");

        // The guest's init answers every TCP connection on port 80.
        let name = unique("pubvm");
        let mut spec = fx.vm("zixiao.serve=80");
        spec.networks = vec!["pubvm".to_owned()];
        spec.publish = vec![PublishedPort::try_from(format!("{PUBLISHED_PORT}:80")).unwrap()];
        c.create_instance(CreateInstance::new(&name, spec))
            .await
            .expect("create");
        let vm = until_status(&c, &name, InstanceStatus::Running).await;
        let address = vm.attachments[0].addresses[0].address;
        // The node's own address on the bridge: connections the node opens
        // to one of its addresses take the `output` DNAT, as ones arriving
        // from the underlay take `prerouting`.
        let gateway = vm.attachments[0].addresses[0].gateway;
        let published = std::net::SocketAddr::new(gateway, PUBLISHED_PORT);
        let served = || async move {
            tokio::task::spawn_blocking(move || fetch(published))
                .await
                .expect("fetch thread")
                .filter(|a| a.contains("ZIXIAO-SERVED"))
        };
        wait_until(
            "the guest to answer through the published port",
            BOOT_TIMEOUT,
            served,
        )
        .await;
        let table = PortsTable::new(&c.installation().await.unwrap(), &vm.id)
            .unwrap()
            .to_string();
        let rules = nft::show_table(&table).await.unwrap().expect("the table");
        assert!(
            rules.contains(&format!("dnat ip to {address}:80")),
            "{rules}"
        );

        // Another instance asking for the same host port is refused by the
        // controller, naming the holder; nothing is stored.
        let tables_before = nft::our_tables().await.unwrap();
        let mut clash = fx.vm("");
        clash.networks = vec!["pubvm".to_owned()];
        clash.publish = vec![PublishedPort::try_from(format!("{PUBLISHED_PORT}:8080")).unwrap()];
        let err = c
            .create_instance(CreateInstance::new(unique("clash"), clash))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(
            err.to_string().contains(&format!(
                "host port {PUBLISHED_PORT}/tcp is published by instance `{name}`"
            )),
            "{err}"
        );
        // A port a process of the node holds: the node refuses at create,
        // naming the process, and defines no domain.
        let held = std::net::TcpListener::bind(("0.0.0.0", BOUND_PORT)).unwrap();
        let bound_name = unique("bound");
        let mut bound = fx.vm("");
        bound.networks = vec!["pubvm".to_owned()];
        bound.publish = vec![PublishedPort::try_from(format!("{BOUND_PORT}:80")).unwrap()];
        c.create_instance(CreateInstance::new(&bound_name, bound))
            .await
            .expect("stored");
        let bound = until_status(&c, &bound_name, InstanceStatus::Failed).await;
        let problem = bound.problem().unwrap_or_default().to_owned();
        assert!(
            problem.contains(&format!("host port {BOUND_PORT}/tcp is taken on this node"))
                && problem.contains(&format!("process {} (`", std::process::id())),
            "{problem}"
        );
        assert_nothing_left(&driver, &bound).await;
        assert_eq!(nft::our_tables().await.unwrap(), tables_before);
        delete_and_wait(&c, &bound).await;
        drop(held);

        // A new controller and driver over the same store (a restart): the
        // reconcile keeps the table the store names, and the port answers.
        drop(c);
        drop(driver);
        let (c, driver) = controller(&dir, &fx.uri, &host).await;
        until_status(&c, &name, InstanceStatus::Running).await;
        let report = c.reconcile_networks().await.expect("reconcile networks");
        assert!(report.removed.is_empty(), "{report:?}");
        assert!(nft::show_table(&table).await.unwrap().is_some());
        wait_until(
            "the published port to answer after a restart",
            BOOT_TIMEOUT,
            served,
        )
        .await;

        // A stop takes the rules away; a delete leaves nothing.
        c.stop_instance(&name).await.expect("stop");
        until_status(&c, &name, InstanceStatus::Stopped).await;
        assert_eq!(nft::show_table(&table).await.unwrap(), None);
        assert_eq!(fetch(published), None);
        delete_and_wait(&c, &vm).await;
        assert_nothing_left(&driver, &vm).await;
        assert_eq!(nft::show_table(&table).await.unwrap(), None);
        c.delete_network("pubvm").await.expect("delete network");
    });
}

/// A veth pair (`name` and `<name>p`) with one address on `name` in this
/// thread's namespace, deleted on drop: a node's underlay for a test with
/// one node (this kernel has no dummy links).
struct UnderlayLink(&'static str);

impl UnderlayLink {
    fn new(name: &'static str, address: &str) -> UnderlayLink {
        let peer = format!("{name}p");
        for args in [
            vec!["link", "add", name, "type", "veth", "peer", "name", &peer],
            vec!["addr", "add", address, "dev", name],
            vec!["link", "set", name, "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("ip");
            assert!(status.success(), "ip {args:?}");
        }
        UnderlayLink(name)
    }
}

impl Drop for UnderlayLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).status();
    }
}

#[test]
fn a_vm_on_an_overlay_network_gets_the_overlay_mtu() {
    in_libvirt_netns(|| async {
        let Some(fx) = fixture().await else {
            return;
        };
        // The node's underlay: an address of its own on a 1500-byte link,
        // so the overlay's MTU is 1450.
        let _underlay = UnderlayLink::new("hnet26ul", "198.51.100.26/32");
        let dir = state_dir(&fx);
        let host = LinuxNetwork::connect(dir.join("netns"))
            .expect("netlink")
            .with_underlay("198.51.100.26".parse().expect("underlay"));
        let (c, driver) = controller(&dir, &fx.uri, &host).await;
        let mut overlay = CreateNetwork::new("mtuvm", ["10.226.27.0/24"]);
        overlay.vni = Some(22627);
        let net = c.create_network(overlay).await.expect("create network");
        assert!(
            link_line(&net.bridge).contains(" mtu 1450 "),
            "{}",
            link_line(&net.bridge)
        );
        // The DHCP responder hands the MTU out.
        let installation = net.installation.as_ref().expect("installation");
        let pid_file = dir
            .join("netns")
            .join("dhcp")
            .join(installation.as_str())
            .join(net.bridge.as_str())
            .join("pid");
        let pid = std::fs::read_to_string(&pid_file).expect("dnsmasq's pid file");
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).expect("cmdline");
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains("option:mtu,1450"), "{cmdline}");

        // The VM's NIC carries it, and the guest's eth0 has it.
        let name = unique("mtuvm");
        let mut spec = fx.vm("");
        spec.networks = vec!["mtuvm".to_owned()];
        c.create_instance(CreateInstance::new(&name, spec))
            .await
            .expect("create");
        let vm = until_status(&c, &name, InstanceStatus::Running).await;
        let tap = link_line(&vm.attachments[0].host_interface);
        assert!(tap.contains(" mtu 1450 "), "{tap}");
        wait_for_boots(&driver, &vm, 1).await;
        on_console(
            &driver,
            &vm,
            "echo zixiao-mtu-$(cat /sys/class/net/eth0/mtu)-end",
            "zixiao-mtu-1450-end",
        )
        .await;

        delete_and_wait(&c, &vm).await;
        assert_nothing_left(&driver, &vm).await;
        c.delete_network("mtuvm").await.expect("delete network");
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

        delete_and_wait(&c, &vm).await;
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
