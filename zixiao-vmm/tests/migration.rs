//! Live migration between two VMM processes on /dev/kvm, with the test
//! guest's `dirty` mode (a counter kept in guest memory, printed every
//! tick, and a set number of pages written per tick): the counter goes on
//! in the target; a guest that dirties too fast fails to converge and
//! keeps running; a target killed mid-way leaves the source running; a
//! garbage stream is refused by the target, which exits.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::*;
use zixiao_core::ErrorKind;
use zixiao_vmm::{launch, Boot, MigrationParams, VmState, VmmClient};

const T: Duration = Duration::from_secs(60);
/// A guest that writes 1024 pages per tick, ticks back to back.
const FAST: &str = "zx.pages=1024 zx.delay=1";

fn count_now(vmm: &VmmClient) -> u64 {
    let log = std::fs::read_to_string(vmm.console_log()).unwrap_or_default();
    last_count(&log).unwrap_or(0)
}

async fn wait_count_above(vmm: &VmmClient, above: u64) -> u64 {
    zixiao_testing::wait::wait_until(&format!("count above {above}"), T, || async {
        let n = count_now(vmm);
        (n > above).then_some(n)
    })
    .await
}

/// Waits until `next` counts past `last`, and checks that its first
/// complete line followed `last` (the guest may have been mid-line when it
/// stopped): no restart, no gap. Returns the count seen.
async fn goes_on_from(next: &VmmClient, last: u64) -> u64 {
    let seen = wait_count_above(next, last).await;
    let first = counts(&std::fs::read_to_string(next.console_log()).unwrap())[0];
    assert!(
        first > last && first <= last + 2,
        "it ended at {last}, then began at {first}"
    );
    seen
}

async fn wait_exited(pid: u32) {
    zixiao_testing::wait::wait_until(&format!("VMM {pid} to exit"), T, || async {
        (!alive(pid)).then_some(())
    })
    .await
}

/// The reason in `run_dir`'s exit.json.
fn exit_reason(run_dir: &Path) -> String {
    let raw = std::fs::read(run_dir.join(zixiao_vmm::files::EXIT)).unwrap_or_default();
    let record: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
    record["reason"].as_str().unwrap_or_default().to_string()
}

/// A running source guest in `dirty` mode with `options` (`zx.pages`,
/// `zx.delay`), and a target launched to receive it (listening on its
/// migration socket).
async fn pair(kernel: &Path, tmp: &Path, options: &str) -> (VmmClient, VmmClient, Reaper, Reaper) {
    let config = guest_config(kernel, &format!("zx.mode=dirty {options}"));
    let source = launch(
        &vmm_binary(),
        &tmp.join("source"),
        Boot::Fresh(config.clone()),
    )
    .await
    .unwrap();
    let source_reaper = Reaper(source.pid());
    source.start().await.unwrap();
    wait_count_above(&source, 2).await;
    let target = launch(&vmm_binary(), &tmp.join("target"), Boot::Incoming(config))
        .await
        .unwrap();
    let target_reaper = Reaper(target.pid());
    assert!(target.migration_socket().exists());
    (source, target, source_reaper, target_reaper)
}

/// Starts a migration that never converges and may take up to 1000 rounds
/// (long enough to be cut in the middle), SIGKILLs `victim` (either VMM)
/// once the source has connected, and returns how the migration ended.
async fn migrate_and_kill(
    source: &VmmClient,
    target: &VmmClient,
    victim: u32,
) -> Result<zixiao_vmm::MigrationReport, zixiao_vmm::VmmError> {
    let params = MigrationParams::new(1000, 1).unwrap();
    let migrating = {
        let source = source.clone();
        let socket = target.migration_socket();
        tokio::spawn(async move { source.migrate(&socket, params).await })
    };
    // The target removes its socket once the source has connected.
    let socket = target.migration_socket();
    zixiao_testing::wait::wait_until("the source to connect", T, || async {
        (!socket.exists()).then_some(())
    })
    .await;
    std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    migrating.await.unwrap()
}

#[tokio::test]
async fn a_running_guest_moves_to_the_target_and_its_counter_goes_on() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, target, _r1, _r2) = pair(&kernel, tmp.path(), "zx.pages=4").await;
    let params = MigrationParams::new(30, 500).unwrap();
    let report = source
        .migrate(&target.migration_socket(), params)
        .await
        .unwrap();
    assert!(report.converged, "{report:?}");
    assert!(report.rounds >= 1 && report.rounds <= 30, "{report:?}");
    assert!(report.memory_bytes_sent >= 4096, "{report:?}");

    // The source is gone, and says why.
    wait_exited(source.pid()).await;
    match source.info().await.unwrap().state {
        VmState::Exited { reason, code } => assert_eq!((reason.as_str(), code), ("migrated", 0)),
        other => panic!("source state {other:?}"),
    }
    let last_on_source = count_now(&source);
    assert!(last_on_source > 2);

    // The target runs the same guest: its first complete line follows the
    // source's last (the guest may have been mid-line when it stopped).
    let above = goes_on_from(&target, last_on_source).await;
    wait_count_above(&target, above + 2).await;
    assert_eq!(target.info().await.unwrap().state, VmState::Running);
    assert!(!target.migration_socket().exists());

    // A migrated-in VM moves on again (a node drained twice).
    let config = target.info().await.unwrap().config;
    let third = launch(
        &vmm_binary(),
        &tmp.path().join("third"),
        Boot::Incoming(config),
    )
    .await
    .unwrap();
    let _r3 = Reaper(third.pid());
    target
        .migrate(&third.migration_socket(), params)
        .await
        .unwrap();
    wait_exited(target.pid()).await;
    goes_on_from(&third, count_now(&target)).await;
    third.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_guest_dirtying_faster_than_the_link_does_not_converge_and_keeps_running() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // 1024 pages (4 MiB) per tick, ticks back to back, and 1 ms to send
    // what is left: never.
    let (source, target, _r1, _r2) = pair(&kernel, tmp.path(), FAST).await;
    let params = MigrationParams::new(2, 1).unwrap();
    let err = source
        .migrate(&target.migration_socket(), params)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("did not converge: 2 rounds") && message.contains("downtime target 1 ms"),
        "{message}"
    );

    // The source never stopped: its counter goes on, state running.
    assert_eq!(source.info().await.unwrap().state, VmState::Running);
    let now = count_now(&source);
    wait_count_above(&source, now + 3).await;

    // The target was told and is gone, saying why.
    wait_exited(target.pid()).await;
    let reason = exit_reason(target.run_dir());
    assert!(
        reason.contains("source aborted") && reason.contains("did not converge"),
        "{reason}"
    );
    source.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_target_killed_mid_migration_leaves_the_source_running() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, target, _r1, _r2) = pair(&kernel, tmp.path(), FAST).await;
    let err = migrate_and_kill(&source, &target, target.pid())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("migration stream"), "{err}");

    assert_eq!(source.info().await.unwrap().state, VmState::Running);
    let now = count_now(&source);
    wait_count_above(&source, now + 3).await;
    source.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_garbage_stream_is_refused_and_the_target_exits() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = guest_config(&kernel, "zx.mode=dirty");
    let target = launch(
        &vmm_binary(),
        &tmp.path().join("target"),
        Boot::Incoming(config),
    )
    .await
    .unwrap();
    let _reaper = Reaper(target.pid());
    let mut conn = std::os::unix::net::UnixStream::connect(target.migration_socket()).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: zixiao\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(T)).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    // An abort frame (kind 4) saying what was wrong.
    assert_eq!(answer.first(), Some(&4u8), "{answer:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("wrong magic"), "{text}");

    wait_exited(target.pid()).await;
    let reason = exit_reason(target.run_dir());
    assert!(reason.contains("wrong magic"), "{reason}");
    // Nothing is left behind to connect to.
    assert!(!target.migration_socket().exists());
    assert!(!target.run_dir().join(zixiao_vmm::files::API_SOCK).exists());
}

#[tokio::test]
async fn migrating_to_nowhere_or_a_mismatched_target_changes_nothing() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = guest_config(&kernel, "zx.mode=dirty zx.pages=1");
    let source = launch(
        &vmm_binary(),
        &tmp.path().join("source"),
        Boot::Fresh(config.clone()),
    )
    .await
    .unwrap();
    let _r1 = Reaper(source.pid());
    source.start().await.unwrap();
    wait_count_above(&source, 1).await;
    let params = MigrationParams::new(5, 100).unwrap();

    let err = source
        .migrate(&tmp.path().join("nobody.sock"), params)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // A target launched for a bigger VM refuses the source's config.
    let mut bigger = config;
    bigger.memory_mib = 64;
    let target = launch(
        &vmm_binary(),
        &tmp.path().join("target"),
        Boot::Incoming(bigger),
    )
    .await
    .unwrap();
    let _r2 = Reaper(target.pid());
    let err = source
        .migrate(&target.migration_socket(), params)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(
        err.to_string().contains("config.memory_mib"),
        "the target's reason reaches the caller: {err}"
    );
    wait_exited(target.pid()).await;

    assert_eq!(source.info().await.unwrap().state, VmState::Running);
    let now = count_now(&source);
    wait_count_above(&source, now + 2).await;
    source.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_paused_guest_arrives_paused_and_goes_on_when_resumed() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, target, _r1, _r2) = pair(&kernel, tmp.path(), "zx.pages=4").await;
    source.pause().await.unwrap();
    let at_pause = count_now(&source);
    let params = MigrationParams::new(5, 100).unwrap();
    source
        .migrate(&target.migration_socket(), params)
        .await
        .unwrap();
    wait_exited(source.pid()).await;
    assert_eq!(target.info().await.unwrap().state, VmState::Paused);
    let idle = std::fs::read_to_string(target.console_log()).unwrap();
    assert_eq!(counts(&idle), Vec::<u64>::new(), "it ran while paused");
    target.resume().await.unwrap();
    goes_on_from(&target, at_pause).await;
    target.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_source_killed_mid_migration_ends_the_target_and_leaves_nothing() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, target, _r1, _r2) = pair(&kernel, tmp.path(), FAST).await;
    assert!(migrate_and_kill(&source, &target, source.pid())
        .await
        .is_err());

    // The stream ended inside the rounds: the target says so and is gone,
    // with nothing left to connect to.
    wait_exited(target.pid()).await;
    let reason = exit_reason(target.run_dir());
    assert!(
        reason.contains("truncated") || reason.contains("migration stream"),
        "{reason}"
    );
    assert!(!target.run_dir().join(zixiao_vmm::files::API_SOCK).exists());
}

#[tokio::test]
async fn the_source_migrates_over_a_tcp_stream_it_is_handed() {
    let Some(kernel) = guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, target, _r1, _r2) = pair(&kernel, tmp.path(), "zx.pages=4").await;
    // What a node agent would do: a TCP connection on one side, the
    // target's Unix socket on the other.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let target_socket = target.migration_socket();
    let bridge = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut unix = tokio::net::UnixStream::connect(target_socket)
            .await
            .unwrap();
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
    });
    let tcp = std::net::TcpStream::connect(address).unwrap();
    let params = MigrationParams::new(30, 500).unwrap();
    source
        .migrate_over(std::os::fd::OwnedFd::from(tcp), params)
        .await
        .unwrap();
    wait_exited(source.pid()).await;
    goes_on_from(&target, count_now(&source)).await;
    target.shutdown(Duration::from_secs(5)).await.unwrap();
    bridge.await.unwrap();
}
