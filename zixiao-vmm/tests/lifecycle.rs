//! Pause/resume, snapshot/restore into a fresh VMM process, re-attaching,
//! stats, and shutdown with cleanup — all on /dev/kvm with the test guest.

mod common;

use std::time::Duration;

use common::*;
use zixiao_core::ErrorKind;
use zixiao_vmm::{files, launch, Boot, VmState, VmmClient};

const T: Duration = Duration::from_secs(30);

async fn count_now(vmm: &VmmClient) -> u64 {
    let log = std::fs::read_to_string(vmm.console_log()).unwrap_or_default();
    last_count(&log).unwrap_or(0)
}

async fn wait_count_above(vmm: &VmmClient, above: u64) -> u64 {
    zixiao_testing::wait::wait_until(&format!("count above {above}"), T, || async {
        let n = count_now(vmm).await;
        (n > above).then_some(n)
    })
    .await
}

#[tokio::test]
async fn pause_stops_the_guest_and_resume_continues_it() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let vmm = launch(
        &vmm_binary(),
        &tmp.path().join("vm"),
        Boot::Fresh(guest_config(&kernel, "zx.mode=loop")),
    )
    .await
    .unwrap();
    let _reaper_vmm = Reaper(vmm.pid());
    // Not started yet: pause has nothing to pause.
    assert_eq!(
        vmm.pause().await.unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    vmm.start().await.unwrap();
    assert_eq!(
        vmm.start().await.unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    wait_count_above(&vmm, 1).await;

    vmm.pause().await.unwrap();
    vmm.pause().await.unwrap(); // idempotent
    assert_eq!(vmm.info().await.unwrap().state, VmState::Paused);
    let at_pause = std::fs::read_to_string(vmm.console_log()).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        std::fs::read_to_string(vmm.console_log()).unwrap(),
        at_pause,
        "output while paused"
    );

    vmm.resume().await.unwrap();
    assert_eq!(vmm.info().await.unwrap().state, VmState::Running);
    let paused_count = last_count(&at_pause).unwrap();
    wait_count_above(&vmm, paused_count).await;

    let stats = vmm.stats().await.unwrap();
    assert_eq!(stats.guest_memory_bytes, 32 << 20);
    assert!(stats.vmm_rss_bytes > 0);
    assert!(stats.exits["io_out"] > 0, "{stats:?}");
    assert!(
        stats.exits["intr"] > 0,
        "pause kicks vCPUs out of KVM_RUN: {stats:?}"
    );
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn snapshot_restores_into_a_new_process_and_the_loop_continues() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    // Two vCPUs: the second one (started by the guest, then halted) is saved too.
    let mut config = guest_config(&kernel, "zx.smp=1 zx.mode=loop");
    config.vcpus = 2;
    let first = launch(&vmm_binary(), &tmp.path().join("a"), Boot::Fresh(config))
        .await
        .unwrap();
    let _reaper_first = Reaper(first.pid());
    first.start().await.unwrap();
    wait_count_above(&first, 2).await;
    assert!(std::fs::read_to_string(first.console_log())
        .unwrap()
        .contains("ZX: cpu1 up"));
    first.snapshot(&snap).await.unwrap();
    // Left paused; the count at the snapshot is the last one printed.
    assert_eq!(first.info().await.unwrap().state, VmState::Paused);
    let at_snapshot = count_now(&first).await;
    // A second snapshot into the same directory is refused, the first kept.
    assert_eq!(
        first.snapshot(&snap).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let first_pid = first.info().await.unwrap().pid;
    first.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(!alive(first_pid));

    let state = std::fs::read_to_string(snap.join("state.json")).unwrap();
    assert!(state.contains("\"magic\":\"zixiao-vmm-snapshot\""));
    assert!(state.contains("\"version\":2"));
    assert_eq!(
        std::fs::metadata(snap.join("memory.bin")).unwrap().len(),
        32 << 20
    );

    let second = restore(&tmp.path().join("b"), &snap).await;
    let _reaper_second = Reaper(second.pid());
    let info = second.info().await.unwrap();
    assert_eq!(info.state, VmState::Paused);
    assert_ne!(info.pid, first_pid);
    assert_eq!(info.restored_from.as_deref(), Some(snap.as_path()));
    assert_eq!(info.config.cmdline, "zx.smp=1 zx.mode=loop");
    assert_eq!(info.config.vcpus, 2);
    second.resume().await.unwrap();
    let after = wait_count_above(&second, at_snapshot).await;
    // It continued from the snapshot, not from a fresh boot: the restored
    // console continues the first one (a line cut by the pause included) and
    // the counter goes on without a gap or a restart.
    let before = std::fs::read_to_string(first.console_log()).unwrap();
    let log = std::fs::read_to_string(second.console_log()).unwrap();
    assert!(
        !log.contains("ZX: ready"),
        "the restored guest must not boot again: {log}"
    );
    let all = counts(&(before + &log));
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    assert_eq!(all.first(), Some(&1), "{all:?}");
    assert!(all.last().is_some_and(|&n| n > at_snapshot), "{all:?}");
    assert!(after > at_snapshot);

    // A restored VM (memory mapped copy-on-write from the first snapshot) can
    // be snapshotted and restored again.
    let snap2 = tmp.path().join("snap2");
    second.snapshot(&snap2).await.unwrap();
    let at_second = count_now(&second).await;
    second.shutdown(Duration::from_secs(5)).await.unwrap();
    let third = restore(&tmp.path().join("c"), &snap2).await;
    let _reaper_third = Reaper(third.pid());
    third.resume().await.unwrap();
    wait_count_above(&third, at_second).await;
    third.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn restore_rejects_missing_and_corrupt_snapshots() {
    let Some(_kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vm");
    let err = launch(
        &vmm_binary(),
        &run,
        Boot::Restore {
            snapshot_dir: tmp.path().join("none"),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(
        bad.join("state.json"),
        r#"{"magic":"something-else","version":1}"#,
    )
    .unwrap();
    let err = launch(
        &vmm_binary(),
        &run,
        Boot::Restore {
            snapshot_dir: bad.clone(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("magic"), "{err}");
    std::fs::write(
        bad.join("state.json"),
        r#"{"magic":"zixiao-vmm-snapshot","version":99}"#,
    )
    .unwrap();
    let err = launch(&vmm_binary(), &run, Boot::Restore { snapshot_dir: bad })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
    assert!(!run.exists(), "no stray run dir");
}

#[tokio::test]
async fn reconnect_finds_a_running_vmm_and_shutdown_cleans_up() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vm");
    let pid = {
        let vmm = launch(
            &vmm_binary(),
            &run,
            Boot::Fresh(guest_config(&kernel, "zx.mode=halt")),
        )
        .await
        .unwrap();
        vmm.start().await.unwrap();
        wait_console(&vmm.console_log(), "ZX: halted", T).await;
        vmm.info().await.unwrap().pid
        // The client is dropped: the VMM keeps running on its own.
    };
    let _reaper = Reaper(pid);
    assert!(alive(pid));
    // A second launch into the same run dir is refused.
    let err = launch(
        &vmm_binary(),
        &run,
        Boot::Fresh(guest_config(&kernel, "zx.mode=halt")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let vmm = VmmClient::connect(&run).await.unwrap();
    assert_eq!(vmm.info().await.unwrap().state, VmState::Running);
    assert_eq!(vmm.info().await.unwrap().pid, pid);

    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(!alive(pid));
    assert!(!run.join(files::API_SOCK).exists());
    assert!(!run.join(files::CONSOLE_SOCK).exists());
    assert!(!run.join(files::PID).exists());
    assert_eq!(
        vmm.info().await.unwrap().state,
        VmState::Exited {
            reason: "shutdown".into(),
            code: 0
        }
    );
    vmm.shutdown(Duration::from_secs(1)).await.unwrap(); // idempotent
    assert_eq!(
        VmmClient::connect(&tmp.path().join("never"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}
