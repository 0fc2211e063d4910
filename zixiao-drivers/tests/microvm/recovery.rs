//! Idempotency and recovery on the QEMU backend, counted from `/proc` as a
//! user would: a create or start made twice runs one QEMU; a create killed
//! (`kill -9` of the process making it) after QEMU was launched is finished
//! by the next create, with one QEMU that boots; a QEMU no record explains
//! is replaced, never doubled; the inventory lists what runs and
//! `remove_orphan` removes it knowing only the id, and refuses ids that are
//! not instance ids without touching anything.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use zixiao_core::driver::Inventory;
use zixiao_core::{Driver, ErrorKind, Instance, RuntimeState};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
use zixiao_testing::wait::wait_until;

use super::{
    assert_nothing_left, fixture, instance, qemu_pid, qemu_processes, unique, wait_for_log,
    Fixture, MARKER,
};

/// The variable that makes [`child_create`] run, holding what it creates.
const CHILD_ENV: &str = "ZIXIAO_TEST_CHILD_CREATE";

/// How long a QEMU may take to appear once a create started.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Not a test of its own: the process the recovery test starts with
/// `CHILD_ENV` set and kills with SIGKILL while it creates a microVM.
#[tokio::test]
#[ignore = "run as a child process by a_create_killed_after_the_launch_is_finished_by_the_next_create"]
async fn child_create() {
    let Ok(job) = std::env::var(CHILD_ENV) else {
        eprintln!("{CHILD_ENV} is not set: nothing to create");
        return;
    };
    let job: serde_json::Value = serde_json::from_str(&job).expect("job");
    let options = MicrovmOptions {
        qemu_binary: Some(PathBuf::from(job["qemu"].as_str().expect("qemu"))),
        ..MicrovmOptions::new(job["state_dir"].as_str().expect("state_dir"))
    };
    let instance: Instance = serde_json::from_value(job["instance"].clone()).expect("instance");
    let driver = MicrovmDriver::new(options).expect("driver");
    driver.create(&instance).await.expect("create");
}

/// Starts this test binary as a child process that creates `vm`.
fn spawn_create(fx: &Fixture, vm: &Instance) -> Child {
    let job = json!({
        "qemu": fx.qemu,
        "state_dir": fx.dir.path(),
        "instance": vm,
    });
    Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "recovery::child_create",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, job.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the child")
}

/// The `stage` `instance.json` records for `vm`.
fn stage(driver: &MicrovmDriver, vm: &Instance) -> String {
    let record = std::fs::read(driver.instance_dir(vm).join("instance.json")).expect("record");
    let record: serde_json::Value = serde_json::from_slice(&record).expect("json");
    record["stage"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_create_killed_after_the_launch_is_finished_by_the_next_create() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = fx.driver();
    // The kill must come between QEMU's launch and the record's last
    // write: QEMU takes far longer to load the guest than the wait below
    // takes to see it, but a fast machine may finish first; then again.
    let mut attempts = 0;
    let (vm, leftover) = loop {
        attempts += 1;
        let vm = instance(&unique(&format!("cut{attempts}")), fx.spec(""));
        let mut child = spawn_create(&fx, &vm);
        let leftover = wait_until("the child to launch QEMU", LAUNCH_TIMEOUT, || async {
            qemu_processes(&driver, &vm).first().copied()
        })
        .await;
        child.kill().expect("kill -9 the child");
        child.wait().expect("reap the child");
        if stage(&driver, &vm) == "launching" {
            break (vm, leftover);
        }
        assert!(attempts < 3, "the create finished before each kill");
        driver.delete(&vm).await.expect("delete");
    };
    // What the cut left: a QEMU, a record that says the create goes on.
    assert_eq!(qemu_processes(&driver, &vm), [leftover]);
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Missing,
        "a create cut off has not created it"
    );
    assert!(Inventory::instance_ids(&driver)
        .await
        .expect("inventory")
        .contains(&vm.id));

    driver.create(&vm).await.expect("create after the cut");
    let after = qemu_processes(&driver, &vm);
    assert_eq!(after.len(), 1, "one QEMU: {after:?}");
    assert_eq!(stage(&driver, &vm), "created");
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Created
    );
    driver.create(&vm).await.expect("create again");
    driver.start(&vm).await.expect("start");
    driver.start(&vm).await.expect("start again");
    assert_eq!(qemu_processes(&driver, &vm), after, "still that one QEMU");
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );
    wait_for_log(&driver, &vm, MARKER, 1).await;
    assert_eq!(qemu_processes(&driver, &vm), after);

    driver.delete(&vm).await.expect("delete");
    assert!(!Inventory::instance_ids(&driver)
        .await
        .expect("inventory")
        .contains(&vm.id));
    assert_nothing_left(&driver, &vm, &[leftover, after[0]]);
    assert!(qemu_processes(&driver, &vm).is_empty());
}

#[tokio::test]
async fn a_qemu_no_record_explains_is_replaced_not_doubled() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = fx.driver();
    let vm = instance(&unique("stray"), fx.spec(""));
    driver.create(&vm).await.expect("create");
    let stray = qemu_pid(&driver, &vm);
    // What a create cut off before it wrote any record would leave (the
    // hole the write-ahead record closes): QEMU runs, nothing names it.
    let dir = driver.instance_dir(&vm);
    for file in ["instance.json", "qemu.pid", "wrapper.pid"] {
        std::fs::remove_file(dir.join(file)).expect("remove");
    }
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Missing
    );
    driver.create(&vm).await.expect("create again");
    let running = qemu_processes(&driver, &vm);
    assert_eq!(running.len(), 1, "one QEMU: {running:?}");
    assert_ne!(running[0], stray, "the stray QEMU was replaced");
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Created
    );
    driver.delete(&vm).await.expect("delete");
    assert_nothing_left(&driver, &vm, &[stray, running[0]]);
}

/// A canary directory with a file, beside the driver's state directory,
/// and ids that would reach it (or worse) if used as paths.
fn hostile_ids(state_dir: &Path, canary: &Path) -> Vec<String> {
    let canary_name = canary
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(canary.parent(), state_dir.parent());
    vec![
        String::new(),
        "/".to_owned(),
        ".".to_owned(),
        "..".to_owned(),
        "../../etc".to_owned(),
        "a/b".to_owned(),
        // From <state_dir>/microvm/ to the canary.
        format!("../../{canary_name}"),
        canary.to_string_lossy().into_owned(),
    ]
}

#[tokio::test]
async fn the_inventory_lists_what_runs_and_remove_orphan_removes_it_by_id_alone() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = fx.driver();
    let root = fx.dir.path().parent().expect("the state dir's parent");
    let canary = tempfile::Builder::new()
        .prefix("canary-")
        .tempdir_in(root)
        .expect("canary dir");
    std::fs::write(canary.path().join("keep"), b"canary").expect("canary");

    let kept = instance(&unique("kept"), fx.spec(""));
    let orphan = instance(&unique("orphan"), fx.spec(""));
    for vm in [&kept, &orphan] {
        driver.create(vm).await.expect("create");
    }
    let ids = Inventory::instance_ids(&driver).await.expect("inventory");
    assert!(
        ids.contains(&kept.id) && ids.contains(&orphan.id),
        "{ids:?}"
    );
    let kept_qemu = qemu_processes(&driver, &kept);
    let orphan_qemu = qemu_processes(&driver, &orphan);
    assert_eq!((kept_qemu.len(), orphan_qemu.len()), (1, 1));

    for id in hostile_ids(fx.dir.path(), canary.path()) {
        let err = Inventory::remove_orphan(&driver, &id)
            .await
            .expect_err("not an instance id");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id:?}: {err}");
        assert!(err.to_string().starts_with("invalid id:"), "{err}");
    }
    assert!(
        canary.path().join("keep").exists(),
        "the canary is untouched"
    );
    assert!(fx.dir.path().exists());
    assert_eq!(qemu_processes(&driver, &kept), kept_qemu);
    assert_eq!(qemu_processes(&driver, &orphan), orphan_qemu);

    // Given only its id, the orphan goes: its QEMU at once, its files.
    Inventory::remove_orphan(&driver, &orphan.id)
        .await
        .expect("remove the orphan");
    Inventory::remove_orphan(&driver, &orphan.id)
        .await
        .expect("removing it again is fine");
    assert_nothing_left(&driver, &orphan, &orphan_qemu);
    assert!(qemu_processes(&driver, &orphan).is_empty());
    assert_eq!(
        driver.inspect(&orphan).await.expect("inspect"),
        RuntimeState::Missing
    );
    let ids = Inventory::instance_ids(&driver).await.expect("inventory");
    assert!(!ids.contains(&orphan.id), "{ids:?}");
    assert!(ids.contains(&kept.id), "{ids:?}");

    // A QEMU whose directory is gone is still listed, and removed, by id.
    std::fs::remove_dir_all(driver.instance_dir(&kept)).expect("lose the directory");
    let ids = Inventory::instance_ids(&driver).await.expect("inventory");
    assert!(ids.contains(&kept.id), "a live QEMU is listed: {ids:?}");
    Inventory::remove_orphan(&driver, &kept.id)
        .await
        .expect("remove the QEMU");
    assert_nothing_left(&driver, &kept, &kept_qemu);
    assert!(!Inventory::instance_ids(&driver)
        .await
        .expect("inventory")
        .contains(&kept.id));
}
