//! The vm driver under the embedded controller, end to end: create and
//! converge to a booted guest, recovery after a controller restart, and
//! the exit of a guest that powers itself off.

use std::path::Path;
use std::sync::Arc;

use zixiao_core::controller::ControllerOptions;
use zixiao_core::host::HostFacts;
use zixiao_core::{Controller, CreateInstance, Instance, InstanceStatus, LocalAgent};
use zixiao_drivers::libvirt::{LibvirtDriver, LibvirtOptions};
use zixiao_store::EmbeddedStore;
use zixiao_testing::wait::wait_until;

use super::{fixture, searchable, unique, wait_for_boots, BOOT_TIMEOUT};

/// A controller over the store at `dir/store.redb` with one local node
/// running a fresh vm driver (as after a restart).
pub(crate) async fn controller(dir: &Path, uri: &str) -> (Controller, Arc<LibvirtDriver>) {
    let driver = Arc::new(
        LibvirtDriver::connect(LibvirtOptions::new(uri, dir))
            .await
            .expect("connect"),
    );
    // No overcommit: what tests count on filling the node is the host's
    // own cores.
    let agent = LocalAgent::new(HostFacts::probe(dir).expect("host facts"))
        .with_driver(driver.clone())
        .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT);
    let mut registration = agent.registration("local");
    registration.labels.extend(driver.host().labels());
    let store = EmbeddedStore::open(&dir.join("store.redb")).expect("open store");
    let controller = Controller::builder(
        Arc::new(store),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    // The test guest may ignore the power button: do not wait long.
    .options(ControllerOptions {
        stop_grace: std::time::Duration::from_secs(3),
        ..ControllerOptions::default()
    })
    .build();
    controller
        .register_node(registration)
        .await
        .expect("register node");
    (controller, driver)
}

pub(crate) async fn converged(
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

#[tokio::test]
async fn controller_boots_vms_snapshots_them_and_recovers_after_a_restart() {
    let Some(fx) = fixture().await else {
        return;
    };
    let dir = fx.dir.path().join("controller");
    std::fs::create_dir_all(&dir).expect("dir");
    searchable(&dir);
    let (first, driver) = controller(&dir, &fx.uri).await;
    let node = first.get_node("local").await.expect("node");
    assert!(
        node.labels.contains_key("libvirt.zixiao.dev/version"),
        "{:?}",
        node.labels
    );

    let vm_name = unique("ctl");
    let vm = first
        .create_instance(CreateInstance::new(&vm_name, fx.vm("")))
        .await
        .expect("create");
    let vm = converged(&first, &vm.id, "the vm to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    wait_for_boots(&driver, &vm, 1).await;
    let stats = first.instance_stats(&vm_name).await.expect("stats");
    assert!(stats.cpu_time_ns > 0);

    // The controller's snapshot API, through the driver's capability.
    first
        .snapshot_instance(&vm_name, "one")
        .await
        .expect("snapshot");
    let listed = first.list_snapshots(&vm_name).await.expect("list");
    assert_eq!(listed.len(), 1);
    first
        .revert_snapshot(&vm_name, "one")
        .await
        .expect("revert");
    first
        .delete_snapshot(&vm_name, "one")
        .await
        .expect("delete snapshot");

    // The controller goes away; a new one over the same store and a fresh
    // driver finds the domain running, then stops and deletes it.
    drop(first);
    drop(driver);
    let (second, driver) = controller(&dir, &fx.uri).await;
    let found = driver.managed_domains().await.expect("list");
    assert!(found.iter().any(|d| d.instance_id == vm.id), "{found:?}");
    let vm = converged(&second, &vm_name, "the vm to be seen running", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    second.stop_instance(&vm_name).await.expect("stop");
    converged(&second, &vm_name, "the vm to stop", |i| {
        i.status == InstanceStatus::Stopped
    })
    .await;
    second.delete_instance(&vm_name).await.expect("delete");
    wait_until("the vm to be gone", BOOT_TIMEOUT, || async {
        let _ = second.converge(&vm.id).await;
        second.get_instance(&vm.id).await.is_err().then_some(())
    })
    .await;
    super::assert_nothing_left(&driver, &vm).await;
}
