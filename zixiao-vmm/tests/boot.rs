//! Boots the test guest on /dev/kvm through the real loader, boot parameters
//! and serial port: command line, initrd checksum, power-off via i8042, the
//! console log and a live console reader, 2 vCPUs, and the quiet guest that
//! prints only its marker.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zixiao_vmm::{files, launch, Boot, VmState, VmmClient};

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn boots_echoes_cmdline_and_initrd_checksum_then_powers_off() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("initrd.img");
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&initrd, &data).unwrap();
    let expected_sum: u32 = data.iter().map(|&b| u32::from(b)).sum();
    let run = tmp.path().join("vm");
    let mut config = guest_config(&kernel, "console=ttyS0 hello=world zx.mode=poweroff");
    config.initrd = Some(initrd);

    let vmm = launch(&vmm_binary(), &run, Boot::Fresh(config.clone()))
        .await
        .unwrap();
    let _reaper_vmm = Reaper(vmm.pid());
    assert_eq!(vmm.info().await.unwrap().state, VmState::Configured);
    vmm.start().await.unwrap();

    let log = wait_console(&vmm.console_log(), "ZX: bye", T).await;
    assert!(
        log.contains("ZX: cmdline=console=ttyS0 hello=world zx.mode=poweroff\n"),
        "{log}"
    );
    assert!(
        log.contains(&format!("ZX: initrd=3000 sum={expected_sum:08x}\n")),
        "{log}"
    );
    assert!(log.contains("ZX: ready\n"), "{log}");

    // The guest's i8042 reset ends the VMM; info() is answered from exit.json.
    let info = zixiao_testing::wait::wait_until("the VMM to exit", T, || async {
        let info = vmm.info().await.ok()?;
        matches!(info.state, VmState::Exited { .. }).then_some(info)
    })
    .await;
    assert_eq!(
        info.state,
        VmState::Exited {
            reason: "guest_reset".into(),
            code: 0
        }
    );
    assert_eq!(info.config, config);
    zixiao_testing::wait::wait_until("the VMM process to end", T, || async {
        (!alive(info.pid)).then_some(())
    })
    .await;
    assert!(!run.join(files::API_SOCK).exists());
    assert!(!run.join(files::CONSOLE_SOCK).exists());
    // Re-attaching after the fact still finds how it ended.
    let again = VmmClient::connect(&run).await.unwrap();
    assert!(matches!(
        again.info().await.unwrap().state,
        VmState::Exited { .. }
    ));
    assert_eq!(
        again.start().await.unwrap_err().kind(),
        zixiao_core::ErrorKind::FailedPrecondition
    );
}

/// Launches `config` in `run` and starts it; the reaper kills the VMM if
/// the test fails.
async fn started(run: &std::path::Path, config: zixiao_vmm::VmConfig) -> (VmmClient, Reaper) {
    let vmm = launch(&vmm_binary(), run, Boot::Fresh(config))
        .await
        .unwrap();
    let reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    (vmm, reaper)
}

#[tokio::test]
async fn a_quiet_guest_prints_only_the_marker_before_its_mode() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vm");
    let config = guest_config(&kernel, "zx.quiet zx.mode=poweroff hello=world");
    let (vmm, _reaper_vmm) = started(&run, config).await;
    let log = wait_console(&vmm.console_log(), "ZX: bye\n", T).await;
    // No command line, no initrd line: the marker is the first output.
    assert_eq!(log, "ZX: ready\nZX: bye\n");
}

#[tokio::test]
async fn live_console_reader_sees_output_and_sends_input() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vm");
    let vmm = launch(
        &vmm_binary(),
        &run,
        Boot::Fresh(guest_config(&kernel, "zx.mode=echo")),
    )
    .await
    .unwrap();
    let _reaper_vmm = Reaper(vmm.pid());
    let mut console = vmm.attach_console().await.unwrap();
    let mut second = vmm.attach_console().await.unwrap();
    vmm.start().await.unwrap();
    wait_console(&vmm.console_log(), "ZX: echo", T).await;
    console.write_all(b"ping-42\n").await.unwrap();

    // Both live readers get all the guest's output, the boot lines included
    // (they attached before start()), and the echoed input.
    for reader in [&mut console, &mut second] {
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        tokio::time::timeout(T, async {
            while !String::from_utf8_lossy(&seen).contains("ping-42") {
                let n = reader.read(&mut buf).await.unwrap();
                assert!(n > 0, "console closed early");
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("echo within the timeout");
        let text = String::from_utf8_lossy(&seen);
        assert!(text.contains("ZX: ready"), "{text}");
    }
    let log = wait_console(&vmm.console_log(), "ping-42", T).await;
    assert!(log.contains("ZX: cmdline=zx.mode=echo"), "{log}");
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn two_vcpus_the_guest_starts_the_second_one() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vm");
    let mut config = guest_config(&kernel, "zx.smp=1 zx.mode=loop");
    config.vcpus = 2;
    let (vmm, _reaper_vmm) = started(&run, config).await;
    // The boot CPU wakes APIC id 1 with INIT/SIPI; it enters long mode and reports.
    let log = wait_console(&vmm.console_log(), "ZX: count=2", T).await;
    assert!(log.contains("ZX: cpu1 up\n"), "{log}");
    assert!(!log.contains("timeout"), "{log}");
    let stats = vmm.stats().await.unwrap();
    assert_eq!(stats.vcpu_time_ns.len(), 2);
    assert!(
        stats.vcpu_time_ns[0] > 0 && stats.vcpu_time_ns[1] > 0,
        "{stats:?}"
    );
    assert_eq!(vmm.info().await.unwrap().config.vcpus, 2);
    // Both vCPU threads obey pause/resume (the second sits in HLT).
    vmm.pause().await.unwrap();
    vmm.resume().await.unwrap();
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}
