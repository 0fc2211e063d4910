//! The ACPI tables and power registers on /dev/kvm, with the ACPI test
//! guest (guest/acpi.c), which finds and reads the tables as Linux does:
//! valid checksums, one local APIC per vCPU, a hardware-reduced FADT whose
//! sleep control register ends the VMM with `poweroff` and whose reset
//! register (or the stub at the reset vector) ends it with `reboot`, also
//! after a snapshot and restore into a new process. (Linux itself powering off and rebooting through them is in
//! tests/linux.rs, which needs hardware KVM.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use zixiao_vmm::{files, launch, Boot, VmState, VmmClient};

const T: Duration = Duration::from_secs(30);

/// Waits for `vmm` to have exited and its process to be gone; returns the
/// recorded state.
async fn exited(vmm: &VmmClient) -> VmState {
    let info = zixiao_testing::wait::wait_until("the VMM to exit", T, || async {
        let info = vmm.info().await.ok()?;
        matches!(info.state, VmState::Exited { .. }).then_some(info)
    })
    .await;
    zixiao_testing::wait::wait_until("the VMM process to end", T, || async {
        (!alive(info.pid)).then_some(())
    })
    .await;
    info.state
}

fn reason(state: &VmState) -> (&str, i32) {
    match state {
        VmState::Exited { reason, code } => (reason, *code),
        other => panic!("not exited: {other:?}"),
    }
}

/// Boots the ACPI guest with `vcpus` and `zx.acpi=<mode>` in `run`.
async fn boot(kernel: &Path, run: &Path, vcpus: u8, mode: &str) -> VmmClient {
    let mut config = guest_config(kernel, &format!("console=ttyS0 zx.acpi={mode}"));
    config.vcpus = vcpus;
    let vmm = launch(&vmm_binary(), run, Boot::Fresh(config))
        .await
        .unwrap();
    vmm.start().await.unwrap();
    vmm
}

#[tokio::test]
async fn the_guest_finds_valid_tables_and_its_s5_ends_the_vmm_with_poweroff() {
    let Some(kernel) = acpi_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("h-acpi-off");
    let vmm = boot(&kernel, &run, 2, "poweroff").await;
    let _reaper = Reaper(vmm.pid());
    let log = wait_console(&vmm.console_log(), "ZX: poweroff\n", T).await;
    assert!(log.contains("ZX: acpi rsdp at 0xe0000 rev=2 ok\n"), "{log}");
    for table in ["XSDT", "FACP", "APIC", "DSDT"] {
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("ZX: acpi table {table} ")))
            .unwrap_or_else(|| panic!("no {table} in {log}"));
        assert!(line.ends_with(" ok"), "{line}");
    }
    // Both vCPUs and the I/O APIC are in the MADT.
    assert!(log.contains("ZX: acpi madt cpus=2 ioapics=1\n"), "{log}");
    assert!(
        log.contains("ZX: acpi fadt hw_reduced=1 reset_reg_sup=1\n"),
        "{log}"
    );
    // Port I/O (space 1) registers, as the VMM serves them.
    assert!(
        log.contains(
            "ZX: acpi s5=5 sleep_control=1:0x600 sleep_status=1:0x601 reset=1:0x602 value=1\n"
        ),
        "{log}"
    );

    let state = exited(&vmm).await;
    assert_eq!(reason(&state), ("poweroff", 0));
    let log = std::fs::read_to_string(vmm.console_log()).unwrap();
    assert!(!log.contains("ZX: still running"), "{log}");
    // exit.json says so, and the sockets are gone.
    let record = std::fs::read_to_string(run.join(files::EXIT)).unwrap();
    assert!(record.contains("\"reason\":\"poweroff\""), "{record}");
    assert!(!run.join(files::API_SOCK).exists());
}

#[tokio::test]
async fn the_reset_register_ends_the_vmm_with_reboot() {
    let Some(kernel) = acpi_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let vmm = boot(&kernel, &tmp.path().join("h-acpi-reboot"), 1, "reboot").await;
    let _reaper = Reaper(vmm.pid());
    wait_console(&vmm.console_log(), "ZX: reboot\n", T).await;
    let state = exited(&vmm).await;
    assert_eq!(reason(&state), ("reboot", 0));
    let log = std::fs::read_to_string(vmm.console_log()).unwrap();
    assert!(!log.contains("ZX: still running"), "{log}");
}

#[tokio::test]
async fn the_reset_vector_stub_writes_the_reset_register() {
    // Linux with hardware-reduced ACPI and no EFI reboots by jumping to the
    // reset vector; the stub there must end the VMM with `reboot`.
    let Some(kernel) = acpi_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let vmm = boot(&kernel, &tmp.path().join("h-acpi-vector"), 1, "vector").await;
    let _reaper = Reaper(vmm.pid());
    wait_console(&vmm.console_log(), "ZX: reset vector\n", T).await;
    let state = exited(&vmm).await;
    assert_eq!(reason(&state), ("reboot", 0));
}

#[tokio::test]
async fn a_restored_guest_still_powers_off_and_reboots_through_acpi() {
    let Some(kernel) = acpi_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let first = boot(&kernel, &tmp.path().join("h-acpi-a"), 2, "console").await;
    let _reaper_first = Reaper(first.pid());
    wait_console(&first.console_log(), "ZX: waiting\n", T).await;
    first.pause().await.unwrap();
    let snap = tmp.path().join("snap");
    first.snapshot(&snap).await.unwrap();
    first.shutdown(Duration::from_secs(5)).await.unwrap();

    // Two restores of the same snapshot: one powers off, one reboots.
    for (name, key, expected) in [("h-acpi-b", b"p", "poweroff"), ("h-acpi-c", b"r", "reboot")] {
        let restored = restore(&tmp.path().join(name), &snap).await;
        let _reaper = Reaper(restored.pid());
        restored.resume().await.unwrap();
        let mut console = restored.attach_console().await.unwrap();
        console.write_all(key).await.unwrap();
        let state = exited(&restored).await;
        assert_eq!(reason(&state), (expected, 0));
        let log = std::fs::read_to_string(restored.console_log()).unwrap();
        assert!(log.contains(&format!("ZX: {expected}\n")), "{log}");
    }
}
