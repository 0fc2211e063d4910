//! virtio-block on /dev/kvm with the freestanding C guest (guest/blk.c): it
//! finds the disks on the kernel command line, reads, writes, flushes, and
//! the host checks the files afterwards; a read-only disk refuses writes and
//! stays unchanged; a snapshot taken while the guest does I/O restores into
//! a new process whose guest goes on with it; bad disks and old or newer
//! snapshot formats get clear errors.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use zixiao_core::ErrorKind;
use zixiao_vmm::{launch, Boot, DiskConfig, JailConfig, VmConfig, VmState, VmmClient};

const T: Duration = Duration::from_secs(60);
const SECTOR: usize = 512;

/// A disk image of `sectors` sectors filled with a pattern seeded by `seed`.
fn disk_image(path: &Path, sectors: usize, seed: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..sectors * SECTOR)
        .map(|i| ((i * 7 + usize::from(seed)) % 251) as u8)
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

/// What the guest writes to sector 1 of disk `n`.
fn guest_pattern(n: usize) -> Vec<u8> {
    (0..SECTOR).map(|j| (j * 13 + 7 + n) as u8).collect()
}

fn config(kernel: &Path, cmdline: &str, disks: Vec<DiskConfig>) -> VmConfig {
    VmConfig {
        disks,
        ..guest_config(kernel, cmdline)
    }
}

async fn wait_exited(vmm: &VmmClient) -> VmState {
    zixiao_testing::wait::wait_until("the VMM to exit", T, || async {
        let info = vmm.info().await.ok()?;
        matches!(info.state, VmState::Exited { .. }).then_some(info.state)
    })
    .await
}

#[tokio::test]
async fn guest_reads_writes_and_flushes_and_a_read_only_disk_refuses_writes() {
    let Some(kernel) = virtio_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (rw, ro) = (tmp.path().join("rw.img"), tmp.path().join("ro.img"));
    let rw_before = disk_image(&rw, 128, 1);
    let ro_before = disk_image(&ro, 16, 2);
    let disks = vec![
        DiskConfig::new(&rw),
        DiskConfig {
            path: ro.clone(),
            read_only: true,
        },
    ];
    let vmm = launch(
        &vmm_binary(),
        &tmp.path().join("vm"),
        Boot::Fresh(config(&kernel, "console=ttyS0", disks)),
    )
    .await
    .unwrap();
    let _reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    let log = wait_console(&vmm.console_log(), "ZX: bye", T).await;

    // The devices are announced on the command line, where the guest found them.
    assert!(
        log.contains(
            "ZX: cmdline=console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6\n"
        ),
        "{log}"
    );
    let expect = |line: String| assert!(log.contains(&format!("{line}\n")), "{line} in:\n{log}");
    expect("ZX: virtio0 at 0xd0000000 irq=5 version=2 id=2".into());
    expect("ZX: virtio1 at 0xd0001000 irq=6 version=2 id=2".into());

    // Disk 0, writable: capacity, id, what the host wrote, the guest's
    // write (flushed, read back), and a read past the end refused.
    expect("ZX: blk0 capacity=128 ro=0 flush=1".into());
    expect("ZX: blk0 id=zixiao-disk0".into());
    // The device raised its interrupt (InterruptStatus bit 0) for the
    // completion the guest polled.
    expect(format!(
        "ZX: blk0 read sector 0 crc={:08x} status=0 isr=1",
        crc32(&rw_before[..SECTOR])
    ));
    expect("ZX: blk0 write ok".into());
    expect("ZX: blk0 flush ok".into());
    expect(format!(
        "ZX: blk0 read sector 1 crc={:08x} status=0",
        crc32(&guest_pattern(0))
    ));
    expect("ZX: blk0 read past end status=1".into());
    let rw_after = std::fs::read(&rw).unwrap();
    assert_eq!(&rw_after[SECTOR..2 * SECTOR], guest_pattern(0).as_slice());
    assert_eq!(&rw_after[..SECTOR], &rw_before[..SECTOR]);
    assert_eq!(&rw_after[2 * SECTOR..], &rw_before[2 * SECTOR..]);

    // Disk 1, read-only: offered as such, the write answered with an I/O
    // error, and the file is byte for byte what it was.
    expect("ZX: blk1 capacity=16 ro=1 flush=1".into());
    expect(format!(
        "ZX: blk1 read sector 0 crc={:08x} status=0 isr=1",
        crc32(&ro_before[..SECTOR])
    ));
    expect("ZX: blk1 write refused (ro)".into());
    expect(format!(
        "ZX: blk1 read sector 1 crc={:08x} status=0",
        crc32(&ro_before[SECTOR..2 * SECTOR])
    ));
    assert_eq!(std::fs::read(&ro).unwrap(), ro_before);

    assert_eq!(
        wait_exited(&vmm).await,
        VmState::Exited {
            reason: "guest_reset".into(),
            code: 0
        }
    );
}

/// The last `ZX: blk0 iter=N ok` of `text`; panics on a mismatch line.
fn last_iter(text: &str) -> Option<u64> {
    assert!(!text.contains("mismatch"), "{text}");
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("ZX: blk0 iter=")?.strip_suffix(" ok"))
        .find_map(|n| n.parse().ok())
}

/// The first iteration in `log` follows `before` (the one in flight when
/// the guest stopped may be done again): no restart at 1.
fn assert_goes_on(log: &str, before: u64) {
    let first = log
        .lines()
        .find_map(|l| l.strip_prefix("ZX: blk0 iter="))
        .and_then(|l| l.split(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!(
        first == before + 1 || first == before + 2,
        "{first} after {before}"
    );
}

async fn wait_iter_above(vmm: &VmmClient, above: u64) -> u64 {
    zixiao_testing::wait::wait_until(&format!("disk iteration above {above}"), T, || async {
        let log = std::fs::read_to_string(vmm.console_log()).unwrap_or_default();
        last_iter(&log).filter(|&n| n > above)
    })
    .await
}

/// The iteration number the guest last wrote into sector 2 of `disk`.
fn iter_on_disk(disk: &Path) -> u64 {
    let mut sector = [0u8; SECTOR];
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut sector, 2 * SECTOR as u64)
        .unwrap();
    let text = String::from_utf8_lossy(&sector);
    text.trim_end_matches('\0')
        .strip_prefix("iter=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("sector 2 holds {text:?}"))
}

#[tokio::test]
async fn snapshot_with_an_active_disk_restores_and_the_guest_continues_its_io() {
    let Some(kernel) = virtio_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.img");
    disk_image(&disk, 64, 3);
    let snap = tmp.path().join("snap");
    let first = launch(
        &vmm_binary(),
        &tmp.path().join("a"),
        Boot::Fresh(config(&kernel, "zx.blk=loop", vec![DiskConfig::new(&disk)])),
    )
    .await
    .unwrap();
    let _reaper_first = Reaper(first.pid());
    first.start().await.unwrap();
    wait_iter_above(&first, 2).await;
    first.snapshot(&snap).await.unwrap();
    let log = std::fs::read_to_string(first.console_log()).unwrap();
    let at_snapshot = last_iter(&log).unwrap();
    first.shutdown(Duration::from_secs(5)).await.unwrap();
    // The guest's writes reached the file: the last completed iteration, or
    // the one in flight when the VM was paused.
    let on_disk = iter_on_disk(&disk);
    assert!(
        on_disk == at_snapshot || on_disk == at_snapshot + 1,
        "{on_disk} vs {at_snapshot}"
    );
    let state = std::fs::read_to_string(snap.join("state.json")).unwrap();
    assert!(state.contains("\"version\":2"), "{state:.200}");
    assert!(state.contains("\"virtio\":[{\"device_type\":2"));

    // A restored VMM opens its snapshot's disks only after dropping to the
    // jail's user (the state file is not trusted): a root-only disk is
    // refused, saying so; once the disk is that user's, it restores.
    let Err(refused) = launch(
        &vmm_binary(),
        &tmp.path().join("b"),
        Boot::Restore {
            snapshot_dir: snap.clone(),
        },
    )
    .await
    else {
        panic!("restored with a disk the jail's user cannot open");
    };
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{refused}");
    let text = refused.to_string();
    assert!(
        text.contains("disks[0].path") && text.contains("jail's user"),
        "{text}"
    );
    let jail = JailConfig::default();
    std::os::unix::fs::chown(&disk, Some(jail.uid), Some(jail.gid)).unwrap();
    let second = restore(&tmp.path().join("b"), &snap).await;
    let _reaper_second = Reaper(second.pid());
    assert_eq!(second.info().await.unwrap().config.disks.len(), 1);
    second.resume().await.unwrap();
    let after = wait_iter_above(&second, at_snapshot + 2).await;
    let restored_log = std::fs::read_to_string(second.console_log()).unwrap();
    assert!(
        !restored_log.contains("ZX: ready"),
        "the restored guest must not boot again: {restored_log}"
    );
    // It went on from where it was (no restart at 1), with its queue state:
    // every write read back equal, and the host file follows.
    assert_goes_on(&restored_log, at_snapshot);
    second.pause().await.unwrap();
    assert!(iter_on_disk(&disk) >= after);
    second.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_version_1_snapshot_still_restores_and_a_newer_one_is_refused() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let first = launch(
        &vmm_binary(),
        &tmp.path().join("a"),
        Boot::Fresh(guest_config(&kernel, "zx.mode=loop")),
    )
    .await
    .unwrap();
    let _reaper_first = Reaper(first.pid());
    first.start().await.unwrap();
    wait_console(&first.console_log(), "ZX: count=2", T).await;
    first.snapshot(&snap).await.unwrap();
    let at_snapshot = last_count(&std::fs::read_to_string(first.console_log()).unwrap()).unwrap();
    first.shutdown(Duration::from_secs(5)).await.unwrap();

    // Rewrite it as the previous format wrote it: version 1, no disks, no
    // device states.
    let path = snap.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state["version"] = 1.into();
    state["config"].as_object_mut().unwrap().remove("disks");
    state["machine"].as_object_mut().unwrap().remove("virtio");
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let second = restore(&tmp.path().join("b"), &snap).await;
    let _reaper_second = Reaper(second.pid());
    second.resume().await.unwrap();
    zixiao_testing::wait::wait_until("the restored loop to go on", T, || async {
        let log = std::fs::read_to_string(second.console_log()).unwrap_or_default();
        last_count(&log).filter(|&n| n > at_snapshot)
    })
    .await;
    second.shutdown(Duration::from_secs(5)).await.unwrap();

    // A format from a newer VMM is refused, saying which versions this one reads.
    state["version"] = 3.into();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let run = tmp.path().join("c");
    let err = launch(&vmm_binary(), &run, Boot::Restore { snapshot_dir: snap })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string()
            .contains("snapshot format version 3, this VMM reads versions 1 to 2"),
        "{err}"
    );
    assert!(!run.exists(), "no stray run dir");
}

#[tokio::test]
async fn missing_unreadable_and_non_file_disks_are_refused_naming_the_disk() {
    let Some(kernel) = virtio_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.img");
    disk_image(&good, 8, 0);
    let refused = |disks: Vec<DiskConfig>| {
        let kernel = kernel.clone();
        let run = tmp.path().join("vm");
        async move {
            let err = launch(&vmm_binary(), &run, Boot::Fresh(config(&kernel, "", disks)))
                .await
                .unwrap_err();
            assert!(!run.exists(), "stray run dir after: {err}");
            err
        }
    };

    let err = refused(vec![
        DiskConfig::new(&good),
        DiskConfig::new(tmp.path().join("missing.img")),
    ])
    .await;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("disks[1].path"), "{err}");
    assert!(err.to_string().contains("missing.img"), "{err}");

    // A directory is no disk (opened for writing, the kernel says so first).
    let err = refused(vec![DiskConfig {
        path: tmp.path().to_path_buf(),
        read_only: true,
    }])
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("disks[0].path"), "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let err = refused(vec![DiskConfig::new(&good), DiskConfig::new(tmp.path())]).await;
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("disks[1].path"), "{err}");

    // A path that cannot be opened (through a file, as if it were a
    // directory: root's permissions cannot hide a file from root).
    let err = refused(vec![DiskConfig {
        path: good.join("inside"),
        read_only: true,
    }])
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("disks[0].path"), "{err}");
    assert!(err.to_string().contains("cannot open"), "{err}");

    let err = refused(vec![DiskConfig::new(&good); 9]).await;
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("at most 8"), "{err}");
}

#[tokio::test]
async fn a_guest_doing_disk_io_live_migrates_and_goes_on_verifying_its_reads() {
    let Some(kernel) = virtio_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.img");
    disk_image(&disk, 64, 5);
    let config = config(&kernel, "zx.blk=loop", vec![DiskConfig::new(&disk)]);
    let source = launch(
        &vmm_binary(),
        &tmp.path().join("a"),
        Boot::Fresh(config.clone()),
    )
    .await
    .unwrap();
    let _reaper_source = Reaper(source.pid());
    source.start().await.unwrap();
    wait_iter_above(&source, 2).await;
    // Same host, same disk file: the target opens it too.
    let target = launch(&vmm_binary(), &tmp.path().join("b"), Boot::Incoming(config))
        .await
        .unwrap();
    let _reaper_target = Reaper(target.pid());
    let params = zixiao_vmm::MigrationParams::new(30, 500).unwrap();
    let report = source
        .migrate(&target.migration_socket(), params)
        .await
        .unwrap();
    // The device writes guest memory behind KVM's dirty log, so the final
    // round resent every populated page: at least what round 1 sent.
    assert!(report.final_bytes >= report.first_round_bytes, "{report:?}");
    wait_exited(&source).await;
    let at_move = last_iter(&std::fs::read_to_string(source.console_log()).unwrap()).unwrap();

    // The guest goes on in the target with the next iterations (its queue
    // state and the buffers the device filled came along), every write
    // read back equal (last_iter fails on a mismatch), no new boot.
    let after = wait_iter_above(&target, at_move + 2).await;
    let log = std::fs::read_to_string(target.console_log()).unwrap();
    assert!(!log.contains("ZX: ready"), "{log}");
    assert_goes_on(&log, at_move);
    target.pause().await.unwrap();
    assert!(iter_on_disk(&disk) >= after);
    target.shutdown(Duration::from_secs(5)).await.unwrap();
}
