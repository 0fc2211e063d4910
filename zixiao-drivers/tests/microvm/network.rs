//! microVMs on networks: through the controller, IPAM on the embedded store
//! and the bridge from zixiao-net, a QEMU microVM gets a TAP on the bridge,
//! its address on the kernel command line, and answers ping, also after a
//! stop and start; delete removes the TAP. A published port reaches the
//! guest from outside the node until it stops. A VMM-backend microVM gets
//! its TAP on the bridge too, and frames cross it both ways (with
//! zixiao-vmm's C test guest), next to disks from the node's image store:
//! the guest writes its own copy of a writable one, and a read-only one
//! refuses writes, while the store's files stay as they were. Refusals (no host network, a network not set
//! up on the node, a restore joining a network) leave nothing. Everything runs inside a network namespace
//! the test creates; QEMU starts in it, so the host's network is never
//! touched.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::controller::ControllerOptions;
use zixiao_core::driver::Inventory;
use zixiao_core::host::HostFacts;
use zixiao_core::model::{
    mac_address, CreateNetwork, InstallationId, InterfaceKind, InterfaceName, IpConfig, Network,
    NetworkAttachment, PublishedPort, TAP_PREFIX,
};
use zixiao_core::{
    Controller, CreateInstance, Driver, ErrorKind, Instance, InstanceStatus, LocalAgent,
    MicrovmBackend, NetworkHost,
};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
use zixiao_net::ports::PortsTable;
use zixiao_net::{nft, LinuxNetwork, StoreIpam};
use zixiao_store::EmbeddedStore;
use zixiao_testing::packet::{echo_from_guest, interface_mac, mac_bytes};
use zixiao_testing::underlay::{Underlay, NODE_ADDRESS};
use zixiao_testing::wait::{runtime_endpoint, runtimes_required, wait_until};

use super::{
    assert_nothing_left, console, fixture, instance, qemu_pid, unique, Fixture, BOOT_TIMEOUT,
    MARKER,
};

/// Runs `body` in a fresh network namespace on a current-thread runtime.
fn isolated<F, Fut>(body: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let Some(base) = runtime_endpoint("ZIXIAO_TEST_NETNS_DIR", "netlink and nftables") else {
        return;
    };
    std::fs::create_dir_all(&base).expect("netns base");
    let dir = tempfile::tempdir_in(&base).expect("netns dir");
    let netns_dir = dir.path().to_path_buf();
    let outcome = zixiao_net::netns::run_isolated(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body(netns_dir))
    });
    // A DHCP responder left running would keep the namespace alive.
    let _ = zixiao_net::dhcp::stop_responders(dir.path());
    match outcome {
        Ok(entered) => entered.expect("unshare(CLONE_NEWNET): networking tests run as root"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A controller whose one node runs `driver` with `network` as its host network.
async fn controller(dir: &Path, driver: Arc<MicrovmDriver>, network: LinuxNetwork) -> Controller {
    let agent = LocalAgent::new(HostFacts::probe(dir).expect("host facts")).with_driver(driver);
    let registration = agent.registration("local");
    let store = Arc::new(EmbeddedStore::open(&dir.join("store.redb")).expect("open store"));
    let controller = Controller::builder(
        store.clone(),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    .address_allocator(Arc::new(StoreIpam::new(store)))
    .network_host("local", Arc::new(network))
    .options(ControllerOptions {
        stop_grace: Duration::from_secs(10),
        ..ControllerOptions::default()
    })
    .build();
    controller
        .register_node(registration)
        .await
        .expect("register node");
    controller
}

/// A node with a microvm driver on the host network of `netns_dir`, its
/// controller, and network `name` over `subnet` created on it.
async fn on_network(
    fx: &Fixture,
    netns_dir: &Path,
    name: &str,
    subnet: &str,
) -> (LinuxNetwork, Arc<MicrovmDriver>, Controller, Network) {
    let host = LinuxNetwork::connect(netns_dir).expect("netlink");
    let driver = Arc::new(fx.driver().with_network(host.clone()));
    let dir = fx.dir.path().join("ctl");
    std::fs::create_dir_all(&dir).expect("dir");
    let c = controller(&dir, driver.clone(), host.clone()).await;
    let net = c
        .create_network(CreateNetwork::new(name, [subnet]))
        .await
        .expect("create network");
    (host, driver, c, net)
}

async fn until(c: &Controller, id: &str, what: &str, want: InstanceStatus) -> Instance {
    wait_until(what, BOOT_TIMEOUT, || async {
        let i = c.converge(id).await.expect("converge").expect("exists");
        (i.status == want).then_some(i)
    })
    .await
}

fn ping(address: IpAddr) -> bool {
    std::process::Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "3", &address.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("busybox ping")
        .success()
}

/// `ip <args>` in the calling thread's namespace.
fn ip(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_qemu_microvm_on_a_network_answers_ping_across_a_restart_and_delete_removes_its_tap() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture() else {
            return;
        };
        let (host, driver, c, net) = on_network(&fx, &netns_dir, "mvnet", "10.67.0.0/24").await;

        let name = unique("net");
        let mut spec = fx.spec("");
        spec.networks = vec!["mvnet".to_owned()];
        let created = c
            .create_instance(CreateInstance::new(&name, spec))
            .await
            .expect("create");
        let vm = until(
            &c,
            &created.id,
            "the microVM to run",
            InstanceStatus::Running,
        )
        .await;
        let attachment = &vm.attachments[0];
        let address = attachment.addresses[0].address;
        let tap = attachment.host_interface.clone();
        assert!(tap.starts_with(TAP_PREFIX), "{tap}");

        // The TAP is on the network's bridge, and QEMU's card carries the
        // attachment's MAC.
        let link = ip(&["-d", "-o", "link", "show", &tap]);
        assert!(link.contains("tun type tap"), "{link}");
        assert!(link.contains(&format!("master {}", net.bridge)), "{link}");
        // The guest's init configured eth0 from the kernel command line.
        let configured = format!("ZIXIAO-NET eth0 {address}");
        wait_until("the guest to configure eth0", BOOT_TIMEOUT, || async {
            let log = console(&driver, &vm).await;
            (log.contains(&configured) && log.contains(MARKER)).then_some(())
        })
        .await;
        assert!(ping(address), "the host reaches the guest at {address}");
        let neighbour = ip(&["neigh", "show", &address.to_string()]);
        assert!(
            neighbour.contains(&attachment.mac),
            "the guest answers with its attachment's MAC {}: {neighbour}",
            attachment.mac
        );

        // Stopped, QEMU is gone but the TAP stays; started again, a new
        // QEMU joins it and the guest answers again.
        c.stop_instance(&name).await.expect("stop");
        until(&c, &vm.id, "the microVM to stop", InstanceStatus::Stopped).await;
        assert!(host.link_index(&tap).await.expect("lookup").is_some());
        c.start_instance(&name).await.expect("start");
        until(
            &c,
            &vm.id,
            "the microVM to run again",
            InstanceStatus::Running,
        )
        .await;
        wait_until(
            "the guest to configure eth0 again",
            BOOT_TIMEOUT,
            || async {
                let log = console(&driver, &vm).await;
                (log.matches(&configured).count() >= 2).then_some(())
            },
        )
        .await;
        assert!(ping(address), "the restarted guest answers at {address}");
        let pid = qemu_pid(&driver, &vm);

        c.delete_instance(&name).await.expect("delete");
        wait_until("the microVM to be gone", BOOT_TIMEOUT, || async {
            let _ = c.converge(&vm.id).await;
            c.get_instance(&vm.id).await.is_err().then_some(())
        })
        .await;
        assert_nothing_left(&driver, &vm, &[pid]);
        assert_eq!(host.link_index(&tap).await.expect("lookup"), None);
        assert!(!ping(address), "nothing answers at {address} any more");
        c.delete_network("mvnet").await.expect("delete network");
        assert_eq!(host.link_index(&net.bridge).await.expect("lookup"), None);
    });
}

/// Network `lan` of a new installation, not set up on any node.
fn lan() -> Network {
    CreateNetwork::new("lan", ["10.68.0.0/24"])
        .validate(&InstallationId::generate(), chrono::Utc::now())
        .expect("valid network")
}

/// An attachment of `vm` to `network`, with a TAP.
fn attachment(vm: &Instance, network: &Network) -> NetworkAttachment {
    let installation = network.installation.clone().expect("a current network");
    NetworkAttachment {
        network: network.name.clone(),
        interface: "eth0".to_owned(),
        host_interface: InterfaceName::of(InterfaceKind::Tap, &installation, &vm.id, &network.name),
        installation: Some(installation),
        bridge: network.bridge.clone(),
        mac: mac_address(&vm.id, &network.name),
        addresses: vec![IpConfig {
            address: "10.68.0.5".parse().expect("address"),
            prefix_len: 24,
            gateway: "10.68.0.1".parse().expect("gateway"),
        }],
    }
}

/// Nothing of `vm` on this node: no directory, no TAP.
async fn assert_untouched(
    fx: &Fixture,
    driver: &MicrovmDriver,
    host: &LinuxNetwork,
    vm: &Instance,
) {
    assert!(
        !driver.instance_dir(vm).exists(),
        "{} is left",
        driver.instance_dir(vm).display()
    );
    let tap = &vm.attachments[0].host_interface;
    assert_eq!(host.link_index(tap).await.expect("lookup"), None, "{tap}");
    assert!(fx.dir.path().exists());
}

#[test]
fn networks_the_driver_cannot_plug_are_refused_and_leave_nothing() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture() else {
            return;
        };
        let host = LinuxNetwork::connect(&netns_dir).expect("netlink");
        let mut vm = instance(&unique("nonet"), fx.spec(""));
        let net = lan();
        let with_tap = attachment(&vm, &net);
        vm.attachments = vec![with_tap];

        // The bridge is not on this node: the network was never set up here.
        let driver = fx.driver().with_network(host.clone());
        let err = driver.create(&vm).await.expect_err("no bridge");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(err.to_string().contains(net.bridge.as_str()), "{err}");
        assert_untouched(&fx, &driver, &host, &vm).await;

        // A driver without a host network cannot plug anything.
        let bare = fx.driver();
        let err = bare.create(&vm).await.expect_err("no host network");
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("spec.networks"), "{err}");
        assert_untouched(&fx, &bare, &host, &vm).await;

        // The vmm backend plugs TAPs like QEMU, so it refuses the same way
        // (asked for, or chosen by `auto` with QEMU missing); and a restore
        // cannot join networks (its cards name the snapshotted VM's TAPs).
        let no_qemu = MicrovmDriver::new(MicrovmOptions {
            qemu_binary: Some(fx.dir.path().join("no-qemu")),
            ..fx.options()
        });
        let no_qemu = match no_qemu {
            Ok(driver) => driver,
            Err(e) => {
                assert!(!runtimes_required(), "the vmm backend is required: {e}");
                eprintln!("skipped the vmm part: {e}");
                return;
            }
        };
        let no_qemu = no_qemu.with_network(host.clone());
        for backend in [MicrovmBackend::Vmm, MicrovmBackend::Auto] {
            let mut on_vmm = vm.clone();
            on_vmm.spec.backend = backend;
            let err = no_qemu.create(&on_vmm).await.expect_err("no bridge");
            assert_eq!(
                err.kind(),
                ErrorKind::FailedPrecondition,
                "{backend:?}: {err}"
            );
            assert!(err.to_string().contains(net.bridge.as_str()), "{err}");
            assert_untouched(&fx, &no_qemu, &host, &on_vmm).await;
        }
        let mut restored = vm.clone();
        restored.spec.backend = MicrovmBackend::Vmm;
        restored.spec.restore_from = Some(fx.dir.path().join("some-snapshot"));
        let err = no_qemu
            .create(&restored)
            .await
            .expect_err("restore on a network");
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("spec.networks"), "{err}");
        assert_untouched(&fx, &no_qemu, &host, &restored).await;
    });
}

/// A raw disk image of `sectors` 512-byte sectors, filled with a pattern seeded by `seed`.
fn raw_disk(path: &Path, sectors: usize, seed: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..sectors * 512)
        .map(|i| ((i * 7 + seed) % 251) as u8)
        .collect();
    std::fs::write(path, &data).expect("write the disk image");
    data
}

/// The CRC-32 (IEEE) the test guest prints of a sector.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_vmm_microvm_with_disks_on_a_network_writes_its_own_copy_and_frames_cross_the_bridge() {
    isolated(|netns_dir| async move {
        let Some(vfx) = super::vmm::fixture() else {
            return;
        };
        // zixiao-vmm's C test guest drives the virtio-net card: it sends a
        // broadcast frame, then answers the first frame of EtherType
        // 0x88b6 it gets by sending it back (EtherType 0x88b5).
        let guest = zixiao_vmm::test_guest::virtio_kernel_path().expect("the virtio test guest");
        let host = LinuxNetwork::connect(&netns_dir).expect("netlink");
        let dir = vfx.dir.path().join("net");
        // Two raw disks in the node's image store: one the guest writes
        // (through the instance's copy), one it may only read.
        let store = zixiao_drivers::node_images::NodeImageStore::new(&dir);
        let images = vfx.dir.path().join("images");
        std::fs::create_dir_all(&images).expect("dir");
        let data_before = raw_disk(&images.join("data.img"), 64, 1);
        let tools_before = raw_disk(&images.join("tools.img"), 16, 2);
        for name in ["data", "tools"] {
            store
                .import(
                    &images.join(format!("{name}.img")),
                    &name.try_into().expect("name"),
                    zixiao_core::model::ImageKind::Disk,
                )
                .expect("import");
        }
        let stored = |name: &str, field: &str| {
            store
                .resolve(field, zixiao_core::model::ImageKind::Disk, Path::new(name))
                .expect("stored")
        };
        let driver = Arc::new(
            MicrovmDriver::new(MicrovmOptions::new(&dir))
                .expect("driver")
                .with_network(host.clone()),
        );
        let ctl = vfx.dir.path().join("ctl");
        std::fs::create_dir_all(&ctl).expect("dir");
        let c = controller(&ctl, driver.clone(), host.clone()).await;
        let net = c
            .create_network(CreateNetwork::new("vmnet", ["10.69.0.0/24"]))
            .await
            .expect("create network");

        let name = unique("vmmnet");
        let mut spec = zixiao_core::InstanceSpec::microvm(&guest).with_size(1, 64);
        spec.cmdline = Some("console=ttyS0".to_owned());
        spec.backend = MicrovmBackend::Vmm;
        spec.networks = vec!["vmnet".to_owned()];
        spec.disks = vec![
            "data".parse().expect("disk"),
            "tools:ro".parse().expect("disk"),
        ];
        let created = c
            .create_instance(CreateInstance::new(&name, spec))
            .await
            .expect("create");
        let vm = until(
            &c,
            &created.id,
            "the microVM to run",
            InstanceStatus::Running,
        )
        .await;
        let attachment = &vm.attachments[0];
        let tap = attachment.host_interface.clone();

        // Its TAP is on the network's bridge, and the VMM's card has the
        // attachment's MAC.
        let link = ip(&["-d", "-o", "link", "show", &tap]);
        assert!(link.contains("tun type tap"), "{link}");
        assert!(link.contains(&format!("master {}", net.bridge)), "{link}");
        let hello = format!("ZX: net mac={} link=1", attachment.mac);
        wait_until("the guest's card", BOOT_TIMEOUT, || async {
            let log = console(&driver, &vm).await;
            (log.contains(&hello) && log.contains("ZX: net tx hello")).then_some(())
        })
        .await;

        // The disks come first, in spec order, then the card; the guest
        // read the image's bytes, and wrote and flushed disk 0 but not 1.
        let log = console(&driver, &vm).await;
        for line in [
            "ZX: virtio0 at 0xd0000000 irq=5 version=2 id=2".to_owned(),
            "ZX: virtio1 at 0xd0001000 irq=6 version=2 id=2".to_owned(),
            "ZX: virtio2 at 0xd0002000 irq=7 version=2 id=1".to_owned(),
            "ZX: blk0 capacity=64 ro=0 flush=1".to_owned(),
            format!(
                "ZX: blk0 read sector 0 crc={:08x} status=0 isr=1",
                crc32(&data_before[..512])
            ),
            "ZX: blk0 write ok".to_owned(),
            "ZX: blk0 flush ok".to_owned(),
            "ZX: blk1 capacity=16 ro=1 flush=1".to_owned(),
            "ZX: blk1 write refused (ro)".to_owned(),
        ] {
            assert!(log.contains(&format!("{line}\n")), "{line} in:\n{log}");
        }
        // The guest wrote the instance's copy of `data`; the store's files
        // are byte for byte what was imported.
        let copy = driver.instance_dir(&vm).join("disks").join("disk0.img");
        let written = std::fs::read(&copy).expect("the instance's copy");
        let pattern: Vec<u8> = (0..512).map(|j| (j * 13 + 7) as u8).collect();
        assert_eq!(&written[512..1024], pattern.as_slice());
        assert_eq!(&written[..512], &data_before[..512]);
        assert_eq!(
            std::fs::read(stored("data", "d")).expect("data"),
            data_before
        );
        assert_eq!(
            std::fs::read(stored("tools", "t")).expect("tools"),
            tools_before
        );

        // A frame from the bridge reaches the guest, which sends it back
        // through the TAP and the bridge.
        let guest_mac = mac_bytes(&attachment.mac).expect("the attachment's MAC");
        let payload = b"through the bridge and back";
        let echo = echo_from_guest(net.bridge.as_str(), guest_mac, payload, BOOT_TIMEOUT)
            .expect("a packet socket on the bridge")
            .expect("the guest's echo");
        let bridge_mac = interface_mac(net.bridge.as_str()).expect("the bridge's MAC");
        assert_eq!(echo[..6], bridge_mac);
        assert_eq!(echo[6..12], guest_mac);

        c.delete_instance(&name).await.expect("delete");
        wait_until("the microVM to be gone", BOOT_TIMEOUT, || async {
            let _ = c.converge(&vm.id).await;
            c.get_instance(&vm.id).await.is_err().then_some(())
        })
        .await;
        assert_eq!(host.link_index(&tap).await.expect("lookup"), None);
        // The copy went with the instance; the images stay in the store.
        assert!(!copy.exists(), "{}", copy.display());
        assert_eq!(
            std::fs::read(stored("data", "d")).expect("data"),
            data_before
        );
        c.delete_network("vmnet").await.expect("delete network");
    });
}

#[test]
fn remove_orphan_removes_a_microvms_qemu_and_tap_knowing_only_its_id() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture() else {
            return;
        };
        let host = LinuxNetwork::connect(&netns_dir).expect("netlink");
        // The network is on the node; the store that made it is gone.
        let net = lan();
        host.ensure_network(&net)
            .await
            .expect("the network's bridge");
        let mut vm = instance(&unique("lost"), fx.spec(""));
        vm.attachments = vec![attachment(&vm, &net)];
        let tap = vm.attachments[0].host_interface.clone();
        let driver = fx.driver().with_network(host.clone());
        driver.create(&vm).await.expect("create");
        assert!(host.link_index(&tap).await.expect("lookup").is_some());
        let pid = qemu_pid(&driver, &vm);

        // A node that lost its record of the instance knows only its id.
        let fresh = fx.driver().with_network(host.clone());
        assert!(Inventory::instance_ids(&fresh)
            .await
            .expect("inventory")
            .contains(&vm.id));
        Inventory::remove_orphan(&fresh, &vm.id)
            .await
            .expect("remove the orphan");
        assert_eq!(host.link_index(&tap).await.expect("lookup"), None, "{tap}");
        assert_nothing_left(&fresh, &vm, &[pid]);
        assert!(!Inventory::instance_ids(&fresh)
            .await
            .expect("inventory")
            .contains(&vm.id));
        host.remove_network(&net).await.expect("remove the bridge");
    });
}

#[test]
fn a_qemu_microvm_publishes_a_port_reached_from_outside_the_node() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture() else {
            return;
        };
        let (_, driver, c, _) = on_network(&fx, &netns_dir, "pubnet", "10.68.0.0/24").await;
        let underlay = Underlay::new(&netns_dir.join("outside"), "upl0");

        // The guest's init answers TCP connections on port 80.
        let name = unique("pub");
        let mut spec = fx.spec("zixiao.serve=80");
        spec.networks = vec!["pubnet".to_owned()];
        spec.publish = vec![PublishedPort::try_from("8080:80").unwrap()];
        let created = c
            .create_instance(CreateInstance::new(&name, spec))
            .await
            .expect("create");
        let vm = until(
            &c,
            &created.id,
            "the microVM to run",
            InstanceStatus::Running,
        )
        .await;
        let published = SocketAddr::from((NODE_ADDRESS, 8080));
        let underlay = &underlay;
        wait_until(
            "the guest to answer through the published port",
            BOOT_TIMEOUT,
            || async move {
                underlay
                    .fetch(published)
                    .filter(|a| a.contains("ZIXIAO-SERVED"))
            },
        )
        .await;
        let table = PortsTable::new(&c.installation().await.unwrap(), &vm.id)
            .unwrap()
            .to_string();
        let rules = nft::show_table(&table).await.unwrap().expect("the table");
        let to = format!("dnat ip to {}:80", vm.attachments[0].addresses[0].address);
        assert!(rules.contains(&to), "{rules}");

        // A stop takes the rules away (the TAP stays); a delete leaves nothing.
        let pid = qemu_pid(&driver, &vm);
        c.stop_instance(&name).await.expect("stop");
        until(&c, &vm.id, "the microVM to stop", InstanceStatus::Stopped).await;
        assert_eq!(nft::show_table(&table).await.unwrap(), None);
        assert_eq!(underlay.fetch(published), None);
        c.delete_instance(&name).await.expect("delete");
        wait_until("the microVM to be gone", BOOT_TIMEOUT, || async {
            let _ = c.converge(&vm.id).await;
            c.get_instance(&vm.id).await.is_err().then_some(())
        })
        .await;
        assert_nothing_left(&driver, &vm, &[pid]);
        c.delete_network("pubnet").await.expect("delete network");
        assert!(nft::our_tables().await.unwrap().is_empty());
    });
}
