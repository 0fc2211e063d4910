//! Live migration between the two libvirt daemons `libvirt.sh start` runs
//! (`ZIXIAO_TEST_LIBVIRT_URI` and `ZIXIAO_TEST_LIBVIRT2_URI`, two nodes on
//! one machine): a guest printing a counter moves from the first to the
//! second and keeps counting; a migration to a daemon that is not there
//! leaves it running where it was; bad calls change nothing.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::driver::{LiveMigrate, MigrationTarget};
use zixiao_core::{Driver, ErrorKind, Instance, RuntimeState};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_testing::guest::{console_counts, counter_initramfs};
use zixiao_testing::wait::{runtime_endpoint, wait_until};

use crate::{console, fixture, instance, searchable, unique, Fixture};

/// The loopback both test daemons share (their network namespace).
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long a TCG guest may take to print its first counts.
const COUNT_TIMEOUT: Duration = Duration::from_secs(90);

/// The second node: a driver on the second daemon, taking migrations, with
/// a state directory of its own (kept alive by the returned guard).
async fn second_node() -> Option<(Arc<LibvirtDriver>, tempfile::TempDir)> {
    let uri = runtime_endpoint("ZIXIAO_TEST_LIBVIRT2_URI", "the second libvirtd")?;
    let root = Path::new(
        &std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".to_owned()),
    )
    .join("libvirt");
    let dir = tempfile::Builder::new()
        .prefix("node2-")
        .tempdir_in(&root)
        .expect("tempdir");
    searchable(dir.path());
    let options = LibvirtOptions::new(&uri, dir.path()).with_migration(&uri, LOOPBACK);
    let driver = LibvirtDriver::connect(options)
        .await
        .expect("connect to the second libvirtd");
    Some((Arc::new(driver), dir))
}

/// A 256 MiB VM on the fixture's kernel and base image whose initramfs
/// prints the counter. The initramfs is outside both nodes' state
/// directories, where both find it (kept by the returned guard), as a
/// node's kernels and images are.
fn counting_vm(fx: &Fixture, name: &str) -> (Instance, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("counter-")
        .tempdir_in(fx.dir.path().parent().expect("the fixture's root"))
        .expect("tempdir");
    searchable(dir.path());
    let initrd = dir.path().join("counter.cpio");
    counter_initramfs(&initrd).expect("write the counter initramfs");
    let mut spec = fx.vm("");
    spec.initrd = Some(initrd);
    (instance(&unique(name), spec), dir)
}

/// Waits until `driver`'s console of `vm` shows a count above `above`,
/// and returns the console's counts.
async fn counts_above(driver: &LibvirtDriver, vm: &Instance, above: u64) -> Vec<u64> {
    wait_until(
        &format!("{} to count past {above}", vm.name),
        COUNT_TIMEOUT,
        || async {
            let counts = console_counts(&console(driver, vm).await);
            counts.iter().any(|&c| c > above).then_some(counts)
        },
    )
    .await
}

#[tokio::test]
async fn a_counting_guest_migrates_live_and_keeps_counting() {
    let Some(fx) = fixture().await else { return };
    let Some((node2, dir2)) = second_node().await else {
        return;
    };
    let (vm, _initrd) = counting_vm(&fx, "migrating");
    fx.driver.create(&vm).await.expect("create");
    fx.driver.start(&vm).await.expect("start");
    counts_above(&fx.driver, &vm, 50).await;

    // A target daemon that is not there: the source keeps running, counting.
    let nowhere = MigrationTarget::new(
        "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
        LOOPBACK,
        dir2.path(),
    )
    .expect("a well-formed target");
    let failed = fx.driver.migrate_live(&vm, &nowhere).await;
    assert!(failed.is_err(), "migrated to a daemon that is not there");
    assert_eq!(
        fx.driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running,
        "the source stops running after a failed migration: {failed:?}"
    );
    let seen = *console_counts(&console(&fx.driver, &vm).await)
        .last()
        .expect("counts");
    counts_above(&fx.driver, &vm, seen + 20).await;

    // Into the second daemon, live.
    let target = node2.prepare_incoming(&vm).await.expect("prepare incoming");
    let before = *console_counts(&console(&fx.driver, &vm).await)
        .last()
        .expect("counts");
    let report = fx
        .driver
        .migrate_live(&vm, &target)
        .await
        .expect("migrate live");
    println!("live migration: {report:?}");
    assert_eq!(
        node2.inspect(&vm).await.expect("inspect on the target"),
        RuntimeState::Running
    );
    assert_eq!(
        fx.driver.inspect(&vm).await.expect("inspect on the source"),
        RuntimeState::Missing,
        "the source still holds the domain"
    );
    assert!(
        !fx.driver.instance_dir(&vm).expect("a UUID id").exists(),
        "the source's files are left"
    );
    // The guest counts on where it was: no reboot (a second C0), no jump back.
    let after = counts_above(&node2, &vm, before + 50).await;
    assert!(
        !after.contains(&0),
        "the guest rebooted on the target: {after:?}"
    );
    assert!(
        after.first().is_some_and(|&first| first > before),
        "the target's console starts at {:?}, the source had reached {before}",
        after.first()
    );
    assert!(
        after.windows(2).all(|w| w[1] == w[0] + 1),
        "the counts on the target are not consecutive: {after:?}"
    );
    assert!(report.total > Duration::ZERO);

    // The target holds it now: a second prepare is refused, an abort keeps it.
    let again = node2.prepare_incoming(&vm).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
    node2
        .abort_incoming(&vm)
        .await
        .expect("abort after success");
    assert_eq!(
        node2.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );

    node2.delete(&vm).await.expect("delete on the target");
    crate::assert_nothing_left(&node2, &vm).await;
}

#[tokio::test]
async fn bad_migrations_are_refused_and_change_nothing() {
    let Some(fx) = fixture().await else { return };
    let Some((node2, dir2)) = second_node().await else {
        return;
    };
    let target =
        MigrationTarget::new(node2.options().uri.as_str(), LOOPBACK, dir2.path()).expect("target");

    // An instance the source does not hold.
    let (ghost, _initrd) = counting_vm(&fx, "ghost");
    let err = fx.driver.migrate_live(&ghost, &target).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // A created vm that does not run.
    let (idle, _idle_initrd) = counting_vm(&fx, "idle");
    fx.driver.create(&idle).await.expect("create");
    let err = fx.driver.migrate_live(&idle, &target).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("not running"), "{err}");
    assert_eq!(
        fx.driver.inspect(&idle).await.expect("inspect"),
        RuntimeState::Created
    );
    fx.driver.delete(&idle).await.expect("delete");

    // A node that takes no migrations says so.
    let err = fx.driver.prepare_incoming(&ghost).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");

    // An abort with nothing prepared is fine; one after a prepare removes it.
    node2
        .abort_incoming(&ghost)
        .await
        .expect("abort of nothing");
    node2.prepare_incoming(&ghost).await.expect("prepare");
    assert!(node2
        .instance_dir(&ghost)
        .expect("a UUID id")
        .join("disk.qcow2")
        .exists());
    node2.abort_incoming(&ghost).await.expect("abort");
    assert!(!node2.instance_dir(&ghost).expect("a UUID id").exists());

    // Targets are parsed before anything is asked of libvirt.
    for (uri, dir, field) in [
        ("", "/var/lib/z", "target.uri"),
        ("qemu:///system x", "/var/lib/z", "target.uri"),
        ("no-scheme", "/var/lib/z", "target.uri"),
        ("qemu:///system'", "/var/lib/z", "target.uri"),
        ("qemu:///system", "relative", "target.state_dir"),
        ("qemu:///system", "/var/../etc", "target.state_dir"),
        ("qemu:///system", "/var/lib/a&b", "target.state_dir"),
    ] {
        let err = MigrationTarget::new(uri, LOOPBACK, Path::new(dir)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{uri} {dir}: {err}");
        assert!(err.to_string().contains(field), "{uri} {dir}: {err}");
    }
}
