//! Clones of microVMs on the vmm backend under the controller, with
//! zixiao-vmm's counting test guest: a clone resumes where its source was
//! (its count goes on past the source's at the snapshot, without booting),
//! from a snapshot taken for it or a named one; a linked clone of a
//! microVM is refused.

use std::sync::Arc;

use zixiao_core::model::SnapshotName;
use zixiao_core::{Controller, CreateInstance, ErrorKind, Instance, InstanceStatus};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
use zixiao_testing::wait::wait_until;

use super::controller::{controller_on, converged};
use super::vmm::{fixture, last_count};
use super::{console, unique, wait_for_log, BOOT_TIMEOUT};

async fn running(c: &Controller, id: &str) -> Instance {
    converged(c, id, "the microVM to run", |i| {
        assert_ne!(i.status, InstanceStatus::Failed, "{:?}", i.conditions);
        i.status == InstanceStatus::Running
    })
    .await
}

/// Waits until `vm` counts past `above`; its console then.
async fn counted_past(driver: &MicrovmDriver, vm: &Instance, above: u64) -> String {
    wait_until(
        &format!("{} to count past {above}", vm.name),
        BOOT_TIMEOUT,
        || async {
            let log = console(driver, vm).await;
            (last_count(&log)? > above).then_some(log)
        },
    )
    .await
}

/// The first `ZX: count=` of a console log.
fn first_count(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix("ZX: count="))
        .find_map(|n| n.trim().parse().ok())
        .expect("a count")
}

#[tokio::test]
async fn a_microvm_clone_resumes_where_its_source_was() {
    let Some(fx) = fixture() else {
        return;
    };
    let dir = fx.dir.path();
    let driver = Arc::new(MicrovmDriver::new(MicrovmOptions::new(dir)).expect("driver"));
    let c = controller_on(dir, driver.clone(), Arc::new(zixiao_core::SystemClock)).await;
    let name = unique("src");
    let source = c
        .create_instance(CreateInstance::new(&name, fx.spec("loop")))
        .await
        .expect("create");
    let source = running(&c, &source.id).await;
    wait_for_log(&driver, &source, "ZX: count=", 3).await;

    // Without a snapshot: one is taken for the clone, which resumes from it.
    let at_clone = last_count(&console(&driver, &source).await).expect("a count");
    let clone = c
        .clone_instance(&name, &unique("copy"), false, None)
        .await
        .expect("clone");
    let origin = clone.clone_of.clone().expect("clone_of");
    let taken = origin.snapshot.clone().expect("a snapshot taken for it");
    assert!(taken.as_str().starts_with("clone-"), "{taken}");
    let clone = running(&c, &clone.id).await;
    assert_eq!(clone.runtime.as_deref(), Some("vmm"));
    let log = counted_past(&driver, &clone, at_clone).await;
    assert!(!log.contains("ZX: ready"), "the clone booted afresh: {log}");
    assert!(first_count(&log) >= at_clone, "{log}");
    // The source runs on, a separate guest.
    let source_now = last_count(&console(&driver, &source).await).expect("a count");
    counted_past(&driver, &source, source_now).await;
    // (The test host's two cores hold the source and one clone.)
    c.delete_instance(&clone.id)
        .await
        .expect("delete the clone");
    gone(&c, &clone.id).await;

    // From a named snapshot, which may go once the clone is created: the
    // clone holds its own copy.
    let before = last_count(&console(&driver, &source).await).expect("a count");
    c.snapshot_instance(&name, "s1").await.expect("snapshot");
    let named = c
        .clone_instance(
            &name,
            &unique("named"),
            false,
            Some(SnapshotName::try_from("s1".to_owned()).unwrap()),
        )
        .await
        .expect("clone from s1");
    let named = running(&c, &named.id).await;
    c.delete_snapshot(&name, "s1").await.expect("delete s1");
    let log = counted_past(&driver, &named, before).await;
    assert!(!log.contains("ZX: ready"), "{log}");

    // Refused, nothing stored: a linked microVM clone, an unknown snapshot.
    let err = c
        .clone_instance(&name, &unique("linked"), true, None)
        .await
        .expect_err("linked");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let err = c
        .clone_instance(
            &name,
            &unique("missing"),
            false,
            Some(SnapshotName::try_from("missing".to_owned()).unwrap()),
        )
        .await
        .expect_err("no such snapshot");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    for id in [&named.id, &source.id] {
        c.delete_instance(id).await.expect("delete");
        gone(&c, id).await;
    }
}

async fn gone(c: &Controller, id: &str) {
    wait_until("the microVM to be gone", BOOT_TIMEOUT, || async {
        let _ = c.converge(id).await;
        c.get_instance(id).await.is_err().then_some(())
    })
    .await;
}
