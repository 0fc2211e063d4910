//! The virtio balloon on /dev/kvm, jailed, with the C balloon guest
//! (guest/balloon.c): the guest touches 32 MiB, the host sets a target of
//! 24 MiB, the guest hands those pages over and reports them, and the
//! guest mapping's Rss in the VMM's /proc/PID/smaps drops by about that;
//! deflating gives them back; bad targets are refused and change nothing;
//! a snapshot taken inflated restores with the balloon's state, and the
//! restored guest deflates.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{balloon_guest, guest, guest_config, restore, vmm_binary, wait_console, Reaper};
use zixiao_vmm::{launch, BalloonConfig, BalloonStats, Boot, VmConfig, VmmClient, VmmError};

const T: Duration = Duration::from_secs(60);
const MEMORY_MIB: u64 = 64;
const MIB_PAGES: u32 = 256;

fn config(kernel: &Path) -> VmConfig {
    VmConfig {
        memory_mib: MEMORY_MIB,
        balloon: Some(BalloonConfig {
            amount_mib: 0,
            deflate_on_oom: true,
        }),
        ..guest_config(kernel, "console=ttyS0 zx.touch=32")
    }
}

/// Rss of the VMM's guest memory mapping (the one of the guest's size), in
/// bytes, from /proc/PID/smaps.
fn guest_rss(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let want = format!("{} kB", MEMORY_MIB << 10);
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some(size) = line.strip_prefix("Size:") {
            in_guest = size.trim() == want;
        } else if let Some(rss) = line.strip_prefix("Rss:").filter(|_| in_guest) {
            let kib: u64 = rss.trim().trim_end_matches(" kB").parse().unwrap();
            return kib << 10;
        }
    }
    panic!("no {want} mapping in the VMM's smaps");
}

async fn balloon(vmm: &VmmClient) -> BalloonStats {
    vmm.balloon().await.unwrap()
}

/// Waits until the guest reports `pages` (its console line and `actual`).
async fn wait_actual(vmm: &VmmClient, pages: u32) -> BalloonStats {
    wait_console(
        &vmm.console_log(),
        &format!("ZX: balloon actual={pages}\n"),
        T,
    )
    .await;
    zixiao_testing::wait::wait_until("the balloon's actual", T, || async {
        let stats = balloon(vmm).await;
        (stats.actual_pages == pages).then_some(stats)
    })
    .await
}

#[tokio::test]
async fn the_host_takes_24_mib_back_and_gives_it_back_and_bad_targets_change_nothing() {
    let Some(kernel) = balloon_guest() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let vmm = launch(
        &vmm_binary(),
        &tmp.path().join("vm"),
        Boot::Fresh(config(&kernel)),
    )
    .await
    .unwrap();
    let _reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    let log = wait_console(&vmm.console_log(), "ZX: ready\n", T).await;
    // DEFLATE_ON_OOM (bit 2) offered, as configured; no target at boot.
    assert!(log.contains("ZX: balloon features=4 target=0\n"), "{log}");
    assert!(log.contains("ZX: balloon touched=32\n"), "{log}");
    let before = guest_rss(vmm.pid());
    assert!(before >= 32 << 20, "the guest touched 32 MiB: Rss {before}");

    vmm.set_balloon(24).await.unwrap();
    let stats = wait_actual(&vmm, 24 * MIB_PAGES).await;
    assert_eq!(
        stats,
        BalloonStats {
            target_pages: 24 * MIB_PAGES,
            actual_pages: 24 * MIB_PAGES,
            given_back_pages: u64::from(24 * MIB_PAGES),
            taken_back_pages: 0,
            bad_pfns: 0,
        }
    );
    assert_eq!((stats.target_mib(), stats.actual_mib()), (24, 24));
    let inflated = guest_rss(vmm.pid());
    let dropped = before.saturating_sub(inflated);
    assert!(
        (23 << 20..=25 << 20).contains(&dropped),
        "Rss {before} -> {inflated}: dropped {dropped} bytes, about 24 MiB expected"
    );

    // More than the guest has: refused, naming the field; nothing changes.
    match vmm.set_balloon(MEMORY_MIB + 1).await {
        Err(VmmError::InvalidArgument { field, reason }) => {
            assert_eq!(field, "target_mib");
            assert!(reason.contains("64 MiB"), "{reason}");
        }
        other => panic!("a target above guest memory: {other:?}"),
    }
    assert_eq!(balloon(&vmm).await, stats);

    // Deflated to 0: the guest takes its pages back and uses them again.
    vmm.set_balloon(0).await.unwrap();
    let stats = wait_actual(&vmm, 0).await;
    assert_eq!(
        (stats.target_pages, stats.taken_back_pages, stats.bad_pfns),
        (0, u64::from(24 * MIB_PAGES), 0)
    );
    let deflated = guest_rss(vmm.pid());
    assert!(
        deflated >= inflated + (23 << 20),
        "the guest wrote its pages again: Rss {inflated} -> {deflated}"
    );
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn without_a_balloon_setting_a_target_fails_and_a_boot_target_is_validated() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // A boot target beyond guest memory: refused before anything runs.
    let mut bad = guest_config(&kernel, "console=ttyS0");
    bad.balloon = Some(BalloonConfig {
        amount_mib: 33,
        deflate_on_oom: false,
    });
    match launch(&vmm_binary(), &tmp.path().join("bad"), Boot::Fresh(bad)).await {
        Err(VmmError::InvalidArgument { field, .. }) => assert_eq!(field, "balloon.amount_mib"),
        other => panic!("a boot target above guest memory: {other:?}"),
    }
    assert!(!tmp.path().join("bad").exists());

    let vmm = launch(
        &vmm_binary(),
        &tmp.path().join("vm"),
        Boot::Fresh(guest_config(&kernel, "console=ttyS0")),
    )
    .await
    .unwrap();
    let _reaper = Reaper(vmm.pid());
    for result in [vmm.set_balloon(1).await, vmm.balloon().await.map(drop)] {
        assert!(
            matches!(result, Err(VmmError::FailedPrecondition { .. })),
            "{result:?}"
        );
    }
    assert_eq!(vmm.stats().await.unwrap().balloon, None);
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_taken_inflated_restores_with_the_balloon_and_deflates() {
    let Some(kernel) = balloon_guest() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let first = launch(
        &vmm_binary(),
        &tmp.path().join("a"),
        Boot::Fresh(config(&kernel)),
    )
    .await
    .unwrap();
    let _reaper = Reaper(first.pid());
    first.start().await.unwrap();
    wait_console(&first.console_log(), "ZX: ready\n", T).await;
    first.set_balloon(24).await.unwrap();
    let inflated = wait_actual(&first, 24 * MIB_PAGES).await;
    let snap = tmp.path().join("snap");
    first.snapshot(&snap).await.unwrap();
    first.shutdown(Duration::from_secs(5)).await.unwrap();
    // The released pages were never written to the memory file.
    let stored = std::fs::metadata(snap.join("memory.bin")).unwrap();
    let stored_bytes = std::os::unix::fs::MetadataExt::blocks(&stored) * 512;
    assert!(
        stored_bytes < (MEMORY_MIB - 20) << 20,
        "memory.bin holds {stored_bytes} bytes"
    );

    let second = restore(&tmp.path().join("b"), &snap).await;
    let _reaper2 = Reaper(second.pid());
    let restored = balloon(&second).await;
    assert_eq!(
        (restored.target_pages, restored.actual_pages),
        (inflated.target_pages, inflated.actual_pages),
        "the balloon's state came with the snapshot"
    );
    second.resume().await.unwrap();
    second.set_balloon(0).await.unwrap();
    let stats = wait_actual(&second, 0).await;
    assert_eq!(stats.taken_back_pages, u64::from(24 * MIB_PAGES));
    let log = std::fs::read_to_string(second.console_log()).unwrap();
    assert!(
        !log.contains("ZX: ready"),
        "the restored guest must not boot again: {log}"
    );
    second.shutdown(Duration::from_secs(5)).await.unwrap();
}
