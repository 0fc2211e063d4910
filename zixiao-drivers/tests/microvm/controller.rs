//! The microvm driver under the controller, end to end: create and converge
//! to a booted guest, logs, pause and resume, stats, the recorded backend,
//! recovery after a controller restart, stop and delete leaving nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::controller::ControllerOptions;
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Clock, Controller, CreateInstance, Instance, InstanceStatus, LocalAgent, SystemClock,
};
use zixiao_drivers::microvm::MicrovmDriver;
use zixiao_store::EmbeddedStore;
use zixiao_testing::wait::wait_until;

use super::{assert_nothing_left, fixture, qemu_pid, unique, Fixture, BOOT_TIMEOUT, MARKER};

/// A controller over the store in `dir` with one local node running a fresh
/// microvm driver (as after a restart).
async fn controller(fx: &Fixture, dir: &Path) -> (Controller, Arc<MicrovmDriver>) {
    let driver = Arc::new(fx.driver());
    let controller = controller_on(dir, driver.clone(), Arc::new(SystemClock)).await;
    (controller, driver)
}

/// A controller over the store in `dir` on `clock`, with one local node
/// `local` running `driver`.
pub(super) async fn controller_on(
    dir: &Path,
    driver: Arc<MicrovmDriver>,
    clock: Arc<dyn Clock>,
) -> Controller {
    let agent = LocalAgent::new(HostFacts::probe(dir).expect("host facts")).with_driver(driver);
    let registration = agent.registration("local");
    let store = EmbeddedStore::open(&dir.join("store.redb")).expect("open store");
    let controller = Controller::builder(
        Arc::new(store),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    .clock(clock)
    .options(ControllerOptions {
        stop_grace: Duration::from_secs(30),
        ..ControllerOptions::default()
    })
    .build();
    controller
        .register_node(registration)
        .await
        .expect("register node");
    controller
}

/// Converges `name` until `want` holds of it.
pub(super) async fn converged(
    controller: &Controller,
    name: &str,
    what: &str,
    want: impl Fn(&Instance) -> bool,
) -> Instance {
    wait_until(what, BOOT_TIMEOUT, || async {
        let instance = controller
            .converge(name)
            .await
            .expect("converge")
            .expect("instance exists");
        want(&instance).then_some(instance)
    })
    .await
}

/// The whole console log through the controller's log reader.
async fn logs(controller: &Controller, name: &str) -> String {
    let reader = controller.logs(name).await.expect("logs");
    let mut text = Vec::new();
    let mut offset = 0;
    loop {
        let chunk = reader.read(offset, 64 * 1024).await.expect("read log");
        if chunk.next_offset == offset {
            break;
        }
        offset = chunk.next_offset;
        text.extend_from_slice(&chunk.data);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn controller_runs_a_qemu_microvm_and_recovers_after_a_restart() {
    let Some(fx) = fixture() else {
        return;
    };
    let dir = fx.dir.path().join("ctl");
    std::fs::create_dir_all(&dir).expect("dir");
    let (first, driver) = controller(&fx, &dir).await;

    let name = unique("ctl");
    let created = first
        .create_instance(CreateInstance::new(&name, fx.spec("")))
        .await
        .expect("create");
    let vm = converged(&first, &created.id, "the microVM to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    assert_eq!(vm.runtime.as_deref(), Some("qemu"));
    wait_until("the marker in the logs", BOOT_TIMEOUT, || async {
        logs(&first, &name).await.contains(MARKER).then_some(())
    })
    .await;
    let pid = qemu_pid(&driver, &vm);

    first.pause_instance(&name).await.expect("pause");
    converged(&first, &name, "the microVM to pause", |i| {
        i.status == InstanceStatus::Paused
    })
    .await;
    first.resume_instance(&name).await.expect("resume");
    converged(&first, &name, "the microVM to resume", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    let stats = first.instance_stats(&name).await.expect("stats");
    assert!(stats.cpu_time_ns > 0 && stats.memory_bytes > 0, "{stats:?}");

    // The controller goes away; a new one with a fresh driver over the same
    // store and state finds the microVM still running, then stops and
    // deletes it.
    drop(first);
    drop(driver);
    let (second, driver) = controller(&fx, &dir).await;
    converged(&second, &name, "the microVM to be seen running", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    assert!(logs(&second, &name).await.contains(MARKER));
    second.stop_instance(&name).await.expect("stop");
    converged(&second, &name, "the microVM to stop", |i| {
        i.status == InstanceStatus::Stopped
    })
    .await;
    second.delete_instance(&name).await.expect("delete");
    wait_until("the microVM to be gone", BOOT_TIMEOUT, || async {
        let _ = second.converge(&vm.id).await;
        second.get_instance(&vm.id).await.is_err().then_some(())
    })
    .await;
    assert_nothing_left(&driver, &vm, &[pid]);
}

/// QEMU's command line, as the kernel shows it.
fn qemu_argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in `argv`.
fn flag<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
}

#[tokio::test]
async fn a_running_microvm_is_resized_only_with_a_restart_it_allows() {
    use zixiao_core::{ErrorKind, InstanceUpdate};

    let Some(fx) = fixture() else {
        return;
    };
    let dir = fx.dir.path().join("resize");
    std::fs::create_dir_all(&dir).expect("dir");
    let (c, driver) = controller(&fx, &dir).await;
    let name = unique("resize");
    let created = c
        .create_instance(CreateInstance::new(&name, fx.spec("")))
        .await
        .expect("create");
    let vm = converged(&c, &created.id, "the microVM to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    let pid = qemu_pid(&driver, &vm);
    assert_eq!(flag(&qemu_argv(pid), "-m"), Some("256M"));

    // Its runtime cannot resize it live: refused, naming the flag, and
    // nothing changed (the record, the running QEMU).
    let grow = InstanceUpdate {
        memory_mib: Some(320),
        ..InstanceUpdate::default()
    };
    let err = c
        .update_instance(&name, grow.clone())
        .await
        .expect_err("needs a restart");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{}", err.chain());
    assert!(err.to_string().contains("--restart-if-needed"), "{err}");
    let stored = c.get_instance(&name).await.expect("get");
    assert_eq!(stored.revision, vm.revision);
    assert_eq!(stored.spec.memory_mib, 256);
    assert_eq!(qemu_pid(&driver, &vm), pid);

    // Labels need no restart.
    let labelled = c
        .update_instance(
            &name,
            InstanceUpdate {
                set_labels: [("tier".to_owned(), "db".to_owned())].into(),
                ..InstanceUpdate::default()
            },
        )
        .await
        .expect("label");
    assert_eq!(labelled.status, InstanceStatus::Running);
    assert_eq!(qemu_pid(&driver, &vm), pid);

    // Allowed to restart: a new QEMU with the new size.
    let updated = c
        .update_instance(
            &name,
            InstanceUpdate {
                restart_if_needed: true,
                ..grow
            },
        )
        .await
        .expect("update with a restart");
    assert_eq!(updated.spec.memory_mib, 320);
    let restarted = converged(&c, &name, "the microVM to restart", |i| {
        i.status == InstanceStatus::Running && i.restarts_done >= updated.restarts_requested
    })
    .await;
    let new_pid = qemu_pid(&driver, &restarted);
    assert_ne!(new_pid, pid, "a new QEMU");
    assert_eq!(flag(&qemu_argv(new_pid), "-m"), Some("320M"));

    c.delete_instance(&name).await.expect("delete");
    wait_until("the microVM to be gone", BOOT_TIMEOUT, || async {
        let _ = c.converge(&vm.id).await;
        c.get_instance(&vm.id).await.is_err().then_some(())
    })
    .await;
    assert_nothing_left(&driver, &vm, &[pid, new_pid]);
}
