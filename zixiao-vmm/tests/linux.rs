//! Boots a real Linux kernel (the Debian cloud bzImage) with the busybox
//! initramfs of scripts/images to its `ZIXIAO-BOOT-OK` marker. Runs only where
//! KVM is hardware-backed: under software-nested KVM (`kvm_pvm`) stock kernels
//! hit emulation failures, so there it is skipped with the reason.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use zixiao_vmm::{kvm_support, launch, Boot, KvmSupport, VmConfig};

fn env_path(vars: &[&str]) -> Option<PathBuf> {
    vars.iter()
        .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()))
        .map(PathBuf::from)
}

#[tokio::test]
async fn boots_linux_with_an_initramfs_to_its_marker_on_hardware_kvm() {
    match kvm_support() {
        KvmSupport::Hardware => {}
        KvmSupport::SoftwareNested => {
            eprintln!(
                "skipped: KVM here is software-nested (kvm_pvm): stock Linux kernels do not boot \
                 under it; this test runs where KVM is hardware-backed"
            );
            return;
        }
        KvmSupport::Absent(why) => {
            let _ = zixiao_vmm::kvm_skip_reason();
            eprintln!("skipped: no KVM: {why}");
            return;
        }
    }
    let kernel = env_path(&["ZIXIAO_TEST_MICROVM_KERNEL", "ZIXIAO_TEST_VM_KERNEL"]);
    let initrd = env_path(&["ZIXIAO_TEST_MICROVM_INITRD", "ZIXIAO_TEST_VM_INITRD"]);
    let (Some(kernel), Some(initrd)) = (kernel, initrd) else {
        assert!(
            !zixiao_testing::wait::runtimes_required(),
            "ZIXIAO_TEST_MICROVM_KERNEL/INITRD are required (ZIXIAO_REQUIRE_RUNTIMES=1); run scripts/services/microvm.sh start"
        );
        eprintln!("skipped: ZIXIAO_TEST_MICROVM_KERNEL / ZIXIAO_TEST_MICROVM_INITRD not set (scripts/services/microvm.sh start)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = VmConfig {
        kernel,
        initrd: Some(initrd),
        cmdline: "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd"
            .into(),
        vcpus: 2,
        memory_mib: 256,
        disks: Vec::new(),
        nets: Vec::new(),
        vsock: None,
    };
    let vmm = launch(&vmm_binary(), &tmp.path().join("vm"), Boot::Fresh(config))
        .await
        .unwrap();
    let _reaper_vmm = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    let log = wait_console(
        &vmm.console_log(),
        "ZIXIAO-BOOT-OK",
        Duration::from_secs(60),
    )
    .await;
    // The MP table made the second vCPU visible to Linux.
    assert!(
        log.contains("Brought up 1 node, 2 CPUs") || log.contains("smp: Brought up"),
        "{log}"
    );
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn loads_the_debian_bzimage_and_initramfs_on_any_kvm() {
    let Some(_) = guest() else { return };
    let Some(kernel) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_MICROVM_KERNEL", "microvm kernel")
    else {
        return;
    };
    let Some(initrd) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_MICROVM_INITRD", "microvm initramfs")
    else {
        return;
    };
    assert_eq!(
        zixiao_vmm::kernel_format(kernel.as_ref()).unwrap(),
        zixiao_vmm::KernelFormat::BzImage
    );
    // Loading (linux-loader's bzImage path, boot_params from its setup
    // header, initrd at the top of memory) works everywhere; running it
    // needs hardware KVM (the test above).
    let tmp = tempfile::tempdir().unwrap();
    let config = VmConfig {
        kernel: kernel.into(),
        initrd: Some(initrd.into()),
        cmdline: "console=ttyS0 reboot=k panic=-1".into(),
        vcpus: 2,
        memory_mib: 128,
        disks: Vec::new(),
        nets: Vec::new(),
        vsock: None,
    };
    let vmm = launch(
        &vmm_binary(),
        &tmp.path().join("vm"),
        Boot::Fresh(config.clone()),
    )
    .await
    .unwrap();
    let _reaper_vmm = Reaper(vmm.pid());
    let info = vmm.info().await.unwrap();
    assert_eq!(info.state, zixiao_vmm::VmState::Configured);
    assert_eq!(info.config, config);
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}
