//! Live migration of a VMM-backend microVM between two microvm drivers on
//! this machine (two state directories: two nodes, the target taking
//! migrations on loopback), with zixiao-vmm's test guest counting in its
//! `dirty` mode: the count goes on on the target, the source keeps
//! nothing; a refused token and a target killed mid-way leave the source
//! running and the target's abort removes what it prepared; what does not
//! migrate live is refused before anything is made.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use zixiao_core::driver::{LiveMigrate, MigrationTarget};
use zixiao_core::{Driver, ErrorKind, Instance, RuntimeState};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};

use super::vmm::{fixture, last_count, vmm_pid, wait_until_count_above, VmmFixture};
use super::{console, instance, kill_left_overs, processes_naming, state_dir, unique};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The target node: a second driver in a state directory of its own,
/// taking live migrations on loopback. Its VMMs are killed when it goes.
struct TargetNode {
    driver: MicrovmDriver,
    dir: tempfile::TempDir,
}

impl Drop for TargetNode {
    fn drop(&mut self) {
        kill_left_overs(self.dir.path());
    }
}

fn target_node() -> TargetNode {
    let dir = state_dir();
    let driver = MicrovmDriver::new(MicrovmOptions {
        migration_address: Some(LOOPBACK),
        ..MicrovmOptions::new(dir.path())
    })
    .expect("the target's driver");
    TargetNode { driver, dir }
}

/// A running microVM on the source counting in `dirty` mode with
/// `options`, past 2.
async fn counting(fx: &VmmFixture, name: &str, options: &str) -> Instance {
    let mut vm = instance(&unique(name), fx.spec(&format!("dirty {options}")));
    fx.driver.create(&vm).await.expect("create");
    fx.driver.start(&vm).await.expect("start");
    vm.runtime = Some(fx.driver.runtime_of(&vm));
    assert_eq!(vm.runtime.as_deref(), Some("vmm"));
    wait_until_count_above(&fx.driver, &vm, 2).await;
    vm
}

/// Every complete `ZX: count=N` value of `log`, in order.
fn counts(log: &str) -> Vec<u64> {
    log.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim().strip_prefix("ZX: count="))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// `err` and every cause under it, as one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !matches!(stat.rsplit(')').next().map(str::trim_start), Some(s) if s.starts_with('Z')))
}

/// Checks that `driver` holds nothing of `vm` (no directory, no process
/// naming it), within a few seconds for a killed process to finish.
async fn holds_nothing(driver: &MicrovmDriver, vm: &Instance) {
    let dir = driver.instance_dir(vm);
    zixiao_testing::wait::wait_until(
        &format!("{} to be gone from {}", vm.name, dir.display()),
        Duration::from_secs(10),
        || {
            let gone = !dir.exists() && processes_naming(&dir, None).is_empty();
            async move { gone.then_some(()) }
        },
    )
    .await;
}

/// After a migration of `vm` that `failed` with its stream cut: the
/// source still runs it and it counts on; the target's abort removes
/// everything it prepared.
async fn stays_on_the_source(
    fx: &VmmFixture,
    node_b: &TargetNode,
    vm: &Instance,
    failed: Result<zixiao_core::driver::MigrationReport, zixiao_core::DriverError>,
) {
    let err = failed.expect_err("a failed migration");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(chain(&err).contains("migration stream"), "{}", chain(&err));
    assert_eq!(
        fx.driver.inspect(vm).await.expect("inspect"),
        RuntimeState::Running
    );
    let now = last_count(&console(&fx.driver, vm).await).expect("a count");
    wait_until_count_above(&fx.driver, vm, now + 2).await;
    node_b.driver.abort_incoming(vm).await.expect("abort");
    holds_nothing(&node_b.driver, vm).await;
}

#[tokio::test]
async fn a_vmm_microvm_moves_live_and_its_counter_goes_on() {
    let Some(fx) = fixture() else {
        return;
    };
    let node_b = target_node();
    let vm = counting(&fx, "live", "zx.pages=4").await;
    let source_pid = vmm_pid(&fx.driver, &vm);
    // The source's console, kept open: its directory goes after the move,
    // the open file stays readable.
    let mut source_log =
        std::fs::File::open(fx.driver.console_log_path(&vm)).expect("the source's console");

    let target = node_b.driver.prepare_incoming(&vm).await.expect("prepare");
    assert!(
        target.uri().starts_with("zxvmm://127.0.0.1:"),
        "{}",
        target.uri()
    );
    assert_eq!(target.address(), LOOPBACK);
    assert_eq!(target.state_dir(), node_b.dir.path());
    // Prepared, not running: the guest is still the source's.
    assert_ne!(
        node_b.driver.inspect(&vm).await.ok(),
        Some(RuntimeState::Running)
    );
    let report = fx
        .driver
        .migrate_live(&vm, &target)
        .await
        .expect("migrate live");
    let rounds = report.rounds.expect("the rounds");
    assert!((1..=30).contains(&rounds), "{report:?}");
    assert!(report.downtime.is_some(), "{report:?}");
    assert!(report.memory_bytes.unwrap_or(0) >= 4096, "{report:?}");
    println!(
        "live migration of a 64 MiB vmm microVM over loopback TCP: {} ms, {} rounds, {} ms \
         downtime, {} KiB sent",
        report.total.as_millis(),
        rounds,
        report.downtime.unwrap_or_default().as_millis(),
        report.memory_bytes.unwrap_or(0) >> 10
    );

    // The source holds nothing of it: its VMM ended, its files are gone.
    holds_nothing(&fx.driver, &vm).await;
    assert!(
        !alive(source_pid),
        "the source's VMM {source_pid} still runs"
    );
    assert_eq!(
        fx.driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Missing
    );

    // It runs on the target, from its own run directory, and counts on.
    assert_eq!(
        node_b.driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );
    let target_pid = vmm_pid(&node_b.driver, &vm);
    assert!(alive(target_pid));
    // Its count goes on from where the source's ended: no new boot, no
    // restart from 0 (the guest may have been mid-line when it stopped).
    let mut text = String::new();
    std::io::Read::read_to_string(&mut source_log, &mut text).expect("read");
    let last = *counts(&text).last().expect("a count on the source");
    wait_until_count_above(&node_b.driver, &vm, last).await;
    let on_target = console(&node_b.driver, &vm).await;
    assert!(
        !on_target.contains("ZX: ready"),
        "the guest booted again on the target: {on_target}"
    );
    let first = counts(&on_target)[0];
    assert!(
        first > last && first <= last + 2,
        "the source ended at {last}, the target began at {first}"
    );
    // An abort after the fact keeps it.
    node_b.driver.abort_incoming(&vm).await.expect("abort");
    assert_eq!(
        node_b.driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );
    node_b.driver.delete(&vm).await.expect("delete");
    holds_nothing(&node_b.driver, &vm).await;
}

#[tokio::test]
async fn a_refused_token_or_a_killed_target_leaves_the_source_running() {
    let Some(fx) = fixture() else {
        return;
    };
    let node_b = target_node();

    // The right listener, the wrong token: the target closes it unread.
    let vm = counting(&fx, "token", "zx.pages=4").await;
    let target = node_b.driver.prepare_incoming(&vm).await.expect("prepare");
    let port = target
        .uri()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(port, _)| port.to_owned())
        .expect("a port");
    let forged = MigrationTarget::new(
        &format!("zxvmm://127.0.0.1:{port}/{}", "0".repeat(64)),
        LOOPBACK,
        node_b.dir.path(),
    )
    .expect("a target");
    let incoming_pid = vmm_pid(&node_b.driver, &vm);
    let failed = fx.driver.migrate_live(&vm, &forged).await;
    stays_on_the_source(&fx, &node_b, &vm, failed).await;
    assert!(!alive(incoming_pid), "the incoming VMM still runs");

    // A guest that dirties fast (the migration takes rounds), its target's
    // VMM killed once the source connected.
    let fast = counting(&fx, "killed", "zx.pages=1024 zx.delay=1").await;
    let target = node_b
        .driver
        .prepare_incoming(&fast)
        .await
        .expect("prepare");
    let incoming_pid = vmm_pid(&node_b.driver, &fast);
    let socket = node_b.driver.instance_dir(&fast).join("vmm/migrate.sock");
    let migrating = {
        let driver = fx.driver.clone();
        let fast = fast.clone();
        tokio::spawn(async move { driver.migrate_live(&fast, &target).await })
    };
    // The incoming VMM removes its socket once the stream reached it.
    zixiao_testing::wait::wait_until(
        "the source to reach the target's VMM",
        Duration::from_secs(60),
        || {
            let connected = !socket.exists();
            async move { connected.then_some(()) }
        },
    )
    .await;
    std::process::Command::new("kill")
        .args(["-9", &incoming_pid.to_string()])
        .status()
        .expect("kill");
    let failed = migrating.await.expect("the migration's task");
    stays_on_the_source(&fx, &node_b, &fast, failed).await;

    for vm in [&vm, &fast] {
        fx.driver.delete(vm).await.expect("delete");
    }
}

#[tokio::test]
async fn what_does_not_migrate_live_is_refused_before_anything_is_made() {
    let Some(fx) = fixture() else {
        return;
    };
    let node_b = target_node();
    let mut vm = instance(&unique("refused"), fx.spec("dirty"));
    vm.runtime = Some("vmm".to_owned());

    // Writable disks: --cold.
    let disk = node_b.dir.path().join("data.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 10))
        .expect("a disk image");
    let mut with_disk = vm.clone();
    with_disk.spec.disks = vec![zixiao_core::model::DiskSpec {
        image: disk.display().to_string(),
        read_only: false,
    }];
    let err = node_b
        .driver
        .prepare_incoming(&with_disk)
        .await
        .expect_err("a writable disk");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("--cold"), "{err}");

    // QEMU: --cold.
    let mut on_qemu = vm.clone();
    on_qemu.runtime = Some("qemu".to_owned());
    let err = node_b
        .driver
        .prepare_incoming(&on_qemu)
        .await
        .expect_err("qemu");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("--cold"), "{err}");

    // A node without a migration address takes none.
    let err = fx
        .driver
        .prepare_incoming(&vm)
        .await
        .expect_err("no address");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("migration address"), "{err}");

    // A target URI that is not a microVM's, on a running source.
    let running = counting(&fx, "badtarget", "zx.pages=1").await;
    let libvirt = MigrationTarget::new("qemu+tls://127.0.0.1/system", LOOPBACK, node_b.dir.path())
        .expect("a target");
    let err = fx
        .driver
        .migrate_live(&running, &libvirt)
        .await
        .expect_err("not a microVM target");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        fx.driver.inspect(&running).await.expect("inspect"),
        RuntimeState::Running
    );

    for v in [&vm, &with_disk, &on_qemu, &running] {
        holds_nothing(&node_b.driver, v).await;
    }
    fx.driver.delete(&running).await.expect("delete");
}
