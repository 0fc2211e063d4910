//! A real cloud image booted under cloud-init: the Debian image of
//! scripts/images/debian-cloud.sh (debootstrap, cloud-init, the cloud
//! kernel), on a Zixiao network, with user data whose `runcmd` prints the
//! guest's hostname, addresses, kernel command line, the network
//! configuration cloud-init wrote and its DHCP lease. It shows the seed end
//! to end: cloud-init found the `cidata` disk, ran the user data, took the
//! hostname from the meta-data and rendered the network-config; and DHCP:
//! with the node's responder serving the network, the guest boots without
//! `ip=`, is told to ask by DHCP, and gets exactly its IPAM address and
//! gateway from the responder. The one slow test of this binary (a minute or two under
//! TCG); the image is built in the background by
//! scripts/services/cloudimg.sh while the tests compile.

use std::path::PathBuf;
use std::time::Duration;

use zixiao_core::model::{CloudInit, CreateNetwork, InstanceSpec};
use zixiao_core::{CreateInstance, InstanceStatus};
use zixiao_net::LinuxNetwork;
use zixiao_testing::wait::{runtime_endpoint, wait_until};

use super::network::{controller, in_libvirt_netns, state_dir, until_pingable, until_status};
use super::{console, fixture, unique};

/// How long the image build may still take when the test starts.
const IMAGE_TIMEOUT: Duration = Duration::from_secs(25 * 60);
/// How long a systemd boot with cloud-init may take under TCG on a busy
/// 2-core machine (about 90 s idle).
const CLOUD_BOOT_TIMEOUT: Duration = Duration::from_secs(8 * 60);

/// The built image's directory, once `cloudimg.sh` has finished it.
async fn cloud_image() -> Option<PathBuf> {
    let dir = PathBuf::from(runtime_endpoint(
        "ZIXIAO_TEST_CLOUD_IMAGE_DIR",
        "the Debian cloud image (scripts/services/cloudimg.sh start)",
    )?);
    wait_until("the cloud image build", IMAGE_TIMEOUT, || {
        let dir = dir.clone();
        async move {
            if let Ok(why) = std::fs::read_to_string(dir.join("failed")) {
                panic!("the cloud image build failed:\n{why}");
            }
            dir.join("ready").exists().then_some(())
        }
    })
    .await;
    Some(dir)
}

#[test]
fn a_debian_cloud_image_runs_its_user_data_with_its_name_and_address() {
    in_libvirt_netns(|| async {
        let Some(fx) = fixture().await else {
            return;
        };
        let Some(image) = cloud_image().await else {
            return;
        };
        let dir = state_dir(&fx);
        let host = LinuxNetwork::connect(dir.join("netns")).expect("netlink");
        let (c, driver) = controller(&dir, &fx.uri, &host).await;
        c.create_network(CreateNetwork::new("cloudnet", ["10.67.0.0/24"]))
            .await
            .expect("create network");

        let name = unique("cloud");
        let mut spec =
            InstanceSpec::vm(image.join("disk.qcow2").to_string_lossy()).with_size(1, 512);
        spec.kernel = Some(image.join("vmlinuz"));
        spec.initrd = Some(image.join("initrd.img"));
        spec.cmdline = Some("root=LABEL=root rw console=ttyS0".to_owned());
        spec.networks = vec!["cloudnet".to_owned()];
        spec.cloud_init = Some(CloudInit {
            user_data: Some(
                "#cloud-config\nruncmd:\n  - [sh, -c, 'exec >/dev/ttyS0 2>&1; \
                 echo ZIXIAO-CLOUD-INIT-RAN host=$(hostname); ip -o -4 addr show; \
                 echo cmdline: $(cat /proc/cmdline); \
                 cat /etc/network/interfaces.d/50-cloud-init; cat /var/lib/dhcp/dhclient*.leases; \
                 echo ZIXIAO-CLOUD-INIT-END']\n"
                    .to_owned(),
            ),
            ..CloudInit::default()
        });
        c.create_instance(CreateInstance::new(&name, spec))
            .await
            .expect("create");
        let vm = until_status(&c, &name, InstanceStatus::Running).await;
        let address = vm.attachments[0].addresses[0].address;

        let (driver_ref, vm_ref) = (&driver, &vm);
        let log = wait_until(
            "cloud-init to run the user data",
            CLOUD_BOOT_TIMEOUT,
            || async move {
                let log = console(driver_ref, vm_ref).await;
                log.contains("ZIXIAO-CLOUD-INIT-END").then_some(log)
            },
        )
        .await;
        let ran = log
            .split("ZIXIAO-CLOUD-INIT-RAN")
            .nth(1)
            .and_then(|rest| rest.split("ZIXIAO-CLOUD-INIT-END").next())
            .expect("the user data's output");
        assert!(
            ran.starts_with(&format!(" host={name}")),
            "the hostname: {ran}"
        );
        assert!(
            ran.contains(&format!("inet {address}/24")),
            "the address: {ran}"
        );
        // No static address on the kernel command line: with the node's
        // DHCP responder serving, cloud-init rendered the network-config
        // Zixiao wrote (the NIC by its MAC, by DHCP), and the guest's DHCP
        // client got exactly its IPAM address and gateway from the responder.
        let cmdline = ran
            .lines()
            .find(|l| l.starts_with("cmdline: "))
            .expect("the kernel command line");
        assert!(!cmdline.contains("ip="), "{cmdline}");
        assert!(ran.contains("inet dhcp"), "the NIC by DHCP: {ran}");
        assert!(!ran.contains(&format!("address {address}/24")), "{ran}");
        assert!(
            ran.contains(&format!("fixed-address {address};")),
            "the lease: {ran}"
        );
        assert!(
            ran.contains("option routers 10.67.0.1;"),
            "the gateway: {ran}"
        );
        until_pingable(address).await;

        c.delete_instance(&name).await.expect("delete");
        wait_until("the vm to be gone", super::BOOT_TIMEOUT, || async {
            let _ = c.converge(&vm.id).await;
            c.get_instance(&vm.id).await.is_err().then_some(())
        })
        .await;
        super::assert_nothing_left(&driver, &vm).await;
        c.delete_network("cloudnet").await.expect("delete network");
    });
}
