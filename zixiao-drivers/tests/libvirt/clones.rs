//! Clones of VMs under the controller and a real libvirtd: a full clone
//! (a copy of the source's disk, the source paused for it) and a linked
//! clone (an overlay on a frozen base of it) each boot to the marker as new
//! instances; the source is not deleted while a linked clone uses its
//! disk; a linked clone of a VM without a disk is refused.

use std::path::Path;

use zixiao_core::{
    Controller, CreateInstance, ErrorKind, Instance, InstanceSpec, InstanceStatus, InstanceType,
};
use zixiao_testing::wait::wait_until;

use super::controller::{controller, converged};
use super::{fixture, searchable, unique, wait_for_boots, BOOT_TIMEOUT};

/// What `qemu-img info` says of `disk`, as JSON.
fn disk_info(disk: &Path) -> serde_json::Value {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--force-share", "--output=json"])
        .arg(disk)
        .output()
        .expect("qemu-img info");
    serde_json::from_slice(&out.stdout).expect("qemu-img json")
}

#[tokio::test]
async fn full_and_linked_clones_of_a_vm_boot_and_a_linked_source_is_kept() {
    let Some(fx) = fixture().await else {
        return;
    };
    let dir = fx.dir.path().join("clones");
    std::fs::create_dir_all(&dir).expect("dir");
    searchable(&dir);
    let (c, driver) = controller(&dir, &fx.uri).await;
    let name = unique("src");
    let source = c
        .create_instance(CreateInstance::new(&name, fx.vm("")))
        .await
        .expect("create");
    let source = converged(&c, &source.id, "the source to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    wait_for_boots(&driver, &source, 1).await;

    // The host has two cores: the source and one clone fill it, so each
    // clone is checked while the other waits for room on the source's node.
    let full_name = unique("full");
    let full = c
        .clone_instance(&name, &full_name, false, None)
        .await
        .expect("full clone");
    let linked_name = unique("linked");
    let linked = c
        .clone_instance(&name, &linked_name, true, None)
        .await
        .expect("linked clone");
    for clone in [&full, &linked] {
        assert_ne!(clone.id, source.id);
        let origin = clone.clone_of.as_ref().expect("clone_of");
        assert_eq!(origin.source, source.id);
        assert_eq!(origin.node, "local");
    }
    let full = running(&c, &full.id).await;
    wait_for_boots(&driver, &full, 1).await;
    let waiting = c
        .converge(&linked.id)
        .await
        .expect("converge")
        .expect("linked");
    assert_eq!(waiting.status, InstanceStatus::Pending);
    let why = waiting.problem().unwrap_or_default().to_owned();
    assert!(why.contains("insufficient cpu"), "{why}");
    // The full clone owns a standalone disk.
    let full_disk = disk_info(&driver.overlay_path(&full).expect("a UUID id"));
    assert!(full_disk.get("backing-filename").is_none(), "{full_disk}");
    c.delete_instance(&full.id)
        .await
        .expect("delete the full clone");
    gone(&c, &full.id).await;
    let linked = running(&c, &linked.id).await;
    wait_for_boots(&driver, &linked, 1).await;
    // The source was resumed after the copy.
    let source = converged(&c, &source.id, "the source to run on", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    assert_eq!(
        driver_state(&driver, &source).await,
        zixiao_core::RuntimeState::Running
    );
    // The linked clone's disk is an overlay on the frozen base kept with
    // the source.
    let linked_disk = disk_info(&driver.overlay_path(&linked).expect("a UUID id"));
    let base = driver
        .instance_dir(&source)
        .expect("a UUID id")
        .join("clone-base.qcow2");
    assert_eq!(
        linked_disk["backing-filename"].as_str(),
        Some(&*base.to_string_lossy()),
        "{linked_disk}"
    );

    // The source backs the linked clone: its delete is refused, naming it.
    let refused = c.delete_instance(&name).await.expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::FailedPrecondition, "{refused}");
    assert!(refused.to_string().contains(&linked_name), "{refused}");
    let kept = c.get_instance(&name).await.expect("source kept");
    assert_eq!(kept.desired, zixiao_core::DesiredState::Running);

    // Bad input changes nothing: a taken name, a linked clone of a VM
    // without a disk, an unknown snapshot.
    let err = c
        .clone_instance(&name, &linked_name, false, None)
        .await
        .expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let bare_name = unique("bare");
    let mut bare = InstanceSpec::empty(InstanceType::Vm, 1, 256);
    bare.kernel = Some(fx.kernel.clone());
    bare.initrd = Some(fx.initrd.clone());
    bare.cmdline = Some("console=ttyS0 panic=-1 quiet".to_owned());
    let bare = c
        .create_instance(CreateInstance::new(&bare_name, bare))
        .await
        .expect("create diskless");
    let err = c
        .clone_instance(&bare_name, &unique("nope"), true, None)
        .await
        .expect_err("no disk");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("linked"), "{err}");
    let snapshot = zixiao_core::model::SnapshotName::try_from("missing".to_owned()).unwrap();
    let err = c
        .clone_instance(&name, &unique("nope"), false, Some(snapshot))
        .await
        .expect_err("no such snapshot");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(c.get_instance(&unique("nope")).await.is_err());

    // Once the clones are gone, the source deletes.
    for id in [&linked.id, &bare.id, &source.id] {
        c.delete_instance(id).await.expect("delete");
        gone(&c, id).await;
    }
    assert!(!driver.instance_dir(&source).expect("a UUID id").exists());
}

async fn running(c: &Controller, id: &str) -> Instance {
    converged(c, id, "the vm to run", |i| {
        assert_ne!(i.status, InstanceStatus::Failed, "{:?}", i.conditions);
        i.status == InstanceStatus::Running
    })
    .await
}

async fn gone(c: &Controller, id: &str) {
    wait_until("the instance to be gone", BOOT_TIMEOUT, || async {
        let _ = c.converge(id).await;
        c.get_instance(id).await.is_err().then_some(())
    })
    .await;
}

async fn driver_state(
    driver: &zixiao_drivers::libvirt::LibvirtDriver,
    instance: &zixiao_core::Instance,
) -> zixiao_core::RuntimeState {
    use zixiao_core::Driver;
    driver.inspect(instance).await.expect("inspect")
}
