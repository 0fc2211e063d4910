//! The microvm driver under the controller, end to end: create and converge
//! to a booted guest, logs, pause and resume, stats, the recorded backend,
//! recovery after a controller restart, stop and delete leaving nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::controller::ControllerOptions;
use zixiao_core::host::HostFacts;
use zixiao_core::{Controller, CreateInstance, Instance, InstanceStatus, LocalAgent};
use zixiao_drivers::microvm::MicrovmDriver;
use zixiao_store::EmbeddedStore;
use zixiao_testing::wait::wait_until;

use super::{assert_nothing_left, fixture, qemu_pid, unique, Fixture, BOOT_TIMEOUT, MARKER};

/// A controller over the store in `dir` with one local node running a fresh
/// microvm driver (as after a restart).
async fn controller(fx: &Fixture, dir: &Path) -> (Controller, Arc<MicrovmDriver>) {
    let driver = Arc::new(fx.driver());
    let agent =
        LocalAgent::new(HostFacts::probe(dir).expect("host facts")).with_driver(driver.clone());
    let registration = agent.registration("local");
    let store = EmbeddedStore::open(&dir.join("store.redb")).expect("open store");
    let controller = Controller::builder(
        Arc::new(store),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    .options(ControllerOptions {
        stop_grace: Duration::from_secs(30),
        ..ControllerOptions::default()
    })
    .build();
    controller
        .register_node(registration)
        .await
        .expect("register node");
    (controller, driver)
}

async fn converged(
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
