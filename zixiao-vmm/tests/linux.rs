//! Boots a real Linux kernel (the Debian cloud bzImage) with the busybox
//! initramfs of scripts/images to its `ZIXIAO-BOOT-OK` marker: with ACPI
//! (the MADT shows both vCPUs; `poweroff -f` ends the VMM with `poweroff`,
//! `reboot -f` with `reboot`) and with `acpi=off` (the MP table shows both
//! vCPUs; the i8042 reset ends it). Runs only where KVM is
//! hardware-backed: under software-nested KVM (`kvm_pvm`) stock kernels hit
//! emulation failures, so there it is skipped with the reason.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use zixiao_vmm::{kvm_support, launch, Boot, KvmSupport, VmConfig, VmState, VmmClient};

fn env_path(vars: &[&str]) -> Option<PathBuf> {
    vars.iter()
        .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()))
        .map(PathBuf::from)
}

/// The Debian kernel and the test initramfs where Linux can run (hardware
/// KVM); `None`, after printing why, elsewhere.
fn linux_on_hardware_kvm() -> Option<(PathBuf, PathBuf)> {
    match kvm_support() {
        KvmSupport::Hardware => {}
        KvmSupport::SoftwareNested => {
            eprintln!(
                "skipped: KVM here is software-nested (kvm_pvm): stock Linux kernels do not boot \
                 under it; this test runs where KVM is hardware-backed"
            );
            return None;
        }
        KvmSupport::Absent(why) => {
            let _ = zixiao_vmm::kvm_skip_reason();
            eprintln!("skipped: no KVM: {why}");
            return None;
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
        return None;
    };
    Some((kernel, initrd))
}

/// Boots Linux with 2 vCPUs and `cmdline` in `run` to the initramfs's
/// marker; returns the VMM, its reaper (made before the wait, so a guest
/// that never gets there leaves no VMM behind) and the console so far.
async fn boot_linux(
    kernel: PathBuf,
    initrd: PathBuf,
    run: &Path,
    cmdline: &str,
) -> (VmmClient, Reaper, String) {
    let config = VmConfig {
        kernel,
        initrd: Some(initrd),
        cmdline: format!("console=ttyS0 panic=-1 pci=off {cmdline}"),
        vcpus: 2,
        memory_mib: 256,
        disks: Vec::new(),
        nets: Vec::new(),
        vsock: None,
        balloon: None,
    };
    let vmm = launch(&vmm_binary(), run, Boot::Fresh(config))
        .await
        .unwrap();
    let reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    let log = wait_console(
        &vmm.console_log(),
        "ZIXIAO-BOOT-OK",
        Duration::from_secs(60),
    )
    .await;
    (vmm, reaper, log)
}

/// Types `command` on the guest's shell (the initramfs serves one on the
/// console after its marker) and waits for the VMM to end; returns how.
async fn run_until_exit(vmm: &VmmClient, command: &str) -> VmState {
    let mut console = vmm.attach_console().await.unwrap();
    console
        .write_all(format!("{command}\n").as_bytes())
        .await
        .unwrap();
    let info =
        zixiao_testing::wait::wait_until("the VMM to exit", Duration::from_secs(30), || async {
            let info = vmm.info().await.ok()?;
            matches!(info.state, VmState::Exited { .. }).then_some(info)
        })
        .await;
    zixiao_testing::wait::wait_until(
        "the VMM process to end",
        Duration::from_secs(30),
        || async { (!alive(info.pid)).then_some(()) },
    )
    .await;
    info.state
}

#[tokio::test]
async fn linux_powers_off_through_acpi_and_the_vmm_ends_with_poweroff_on_hardware_kvm() {
    let Some((kernel, initrd)) = linux_on_hardware_kvm() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vmm, _reaper_vmm, log) = boot_linux(kernel, initrd, &tmp.path().join("vm"), "").await;
    // ACPI on: the MADT made the second vCPU visible to Linux.
    assert!(
        log.contains("Using ACPI (MADT) for SMP configuration"),
        "{log}"
    );
    assert!(log.contains("smp: Brought up 1 node, 2 CPUs"), "{log}");
    let state = run_until_exit(&vmm, "poweroff -f").await;
    assert_eq!(
        state,
        VmState::Exited {
            reason: "poweroff".into(),
            code: 0
        }
    );
}

#[tokio::test]
async fn linux_reboots_through_the_acpi_reset_register_and_the_vmm_ends_with_reboot_on_hardware_kvm(
) {
    let Some((kernel, initrd)) = linux_on_hardware_kvm() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // No `reboot=`: with hardware-reduced ACPI and no EFI, Linux's default
    // ends at the reset vector, whose stub writes the ACPI reset register.
    let (vmm, _reaper_vmm, _) = boot_linux(kernel, initrd, &tmp.path().join("vm"), "").await;
    let state = run_until_exit(&vmm, "reboot -f").await;
    assert_eq!(
        state,
        VmState::Exited {
            reason: "reboot".into(),
            code: 0
        }
    );
}

#[tokio::test]
async fn linux_with_acpi_off_finds_both_cpus_through_the_mp_table_on_hardware_kvm() {
    let Some((kernel, initrd)) = linux_on_hardware_kvm() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vmm, _reaper_vmm, log) = boot_linux(
        kernel,
        initrd,
        &tmp.path().join("vm"),
        "acpi=off reboot=k i8042.noaux i8042.nomux i8042.dumbkbd",
    )
    .await;
    assert!(!log.contains("Using ACPI (MADT)"), "{log}");
    assert!(log.contains("smp: Brought up 1 node, 2 CPUs"), "{log}");
    // Without ACPI a reboot still ends the VM, through the i8042.
    let state = run_until_exit(&vmm, "reboot -f").await;
    assert_eq!(
        state,
        VmState::Exited {
            reason: "guest_reset".into(),
            code: 0
        }
    );
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
        balloon: None,
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
