//! A VM's new size on a real libvirtd, seen as a user sees it with
//! `virsh`: within the maximums set at create, a running VM takes new
//! vCPUs (hot-plugged) and memory (its balloon) in place, the same domain
//! running on; beyond them (or with fewer vCPUs) the update is refused
//! unless a restart is allowed, which defines the domain anew; a disk grows live
//! (`virsh domblkinfo`) and stopped (`qemu-img resize`), and never shrinks.
//! While the balloon moves, a read shows the size the domain really has.
//! A VM started after an update of its stopped size boots with it.
//!
//! The guest's memory follows the balloon only when its initramfs loads
//! `virtio_balloon` (`scripts/images/vm-initramfs.sh` adds it).

use std::time::Duration;

use zixiao_core::{
    Cpus, CreateInstance, Driver, ErrorKind, Instance, InstanceStatus, InstanceUpdate,
};
use zixiao_testing::wait::wait_until;

use super::controller::{controller, converged};
use super::{fixture, instance, searchable, unique, wait_for_boots, BOOT_TIMEOUT};

/// `virsh` with `args` against `uri`; its standard output.
fn virsh(uri: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("virsh")
        .args(["-q", "-c", uri])
        .args(args)
        .output()
        .expect("virsh");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `name` (`CPU(s):`) in `virsh` output `text`.
fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(name))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no `{name}` in {text}"))
}

/// `virsh dominfo`'s CPU count, maximum memory and used memory of domain `uuid`.
fn dominfo(uri: &str, uuid: &str) -> (String, String, String) {
    let text = virsh(uri, &["dominfo", uuid]);
    (
        field(&text, "CPU(s):"),
        field(&text, "Max memory:"),
        field(&text, "Used memory:"),
    )
}

/// `virsh domblkinfo`'s capacity of the guest's disk, in bytes.
fn disk_capacity(uri: &str, uuid: &str) -> u64 {
    field(&virsh(uri, &["domblkinfo", uuid, "vda"]), "Capacity:")
        .parse()
        .expect("a number")
}

/// `virsh domid`: the running domain's id, which a restart changes.
fn domid(uri: &str, uuid: &str) -> String {
    virsh(uri, &["domid", uuid]).trim().to_owned()
}

const GIB: u64 = 1024 * 1024 * 1024;

#[tokio::test]
async fn a_vm_started_after_an_update_boots_with_the_new_size() {
    let Some(fx) = fixture().await else {
        return;
    };
    let mut vm = instance(&unique("resize"), fx.vm(""));
    fx.driver.create(&vm).await.expect("create");
    let size = |uri: &str, id: &str| {
        let (cpus, max, _) = dominfo(uri, id);
        (cpus, max)
    };
    assert_eq!(
        size(&fx.uri, &vm.id),
        ("1".to_owned(), "262144 KiB".to_owned())
    );
    fx.driver.start(&vm).await.expect("start");
    wait_for_boots(&fx.driver, &vm, 1).await;
    fx.driver
        .stop(&vm, Duration::from_secs(3))
        .await
        .expect("stop");

    // What the controller hands the driver after `instance update --cpus 2
    // --memory 384 --restart-if-needed` of the running instance.
    vm.spec = vm.spec.clone().with_size(2, 384);
    fx.driver.start(&vm).await.expect("start with the new size");
    assert_eq!(
        size(&fx.uri, &vm.id),
        ("2".to_owned(), "393216 KiB".to_owned())
    );
    wait_for_boots(&fx.driver, &vm, 2).await;

    fx.driver.delete(&vm).await.expect("delete");
}

/// An update expected to be refused with `kind`, its message containing
/// each of `says`; the record is left as it was.
async fn refused(
    c: &zixiao_core::Controller,
    name: &str,
    update: InstanceUpdate,
    kind: ErrorKind,
    says: &[&str],
) {
    let before = c.get_instance(name).await.expect("get");
    let err = c
        .update_instance(name, update.clone())
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), kind, "{update:?}: {err}");
    for part in says {
        assert!(err.to_string().contains(part), "{update:?}: {err}");
    }
    let after = c.get_instance(name).await.expect("get");
    assert_eq!(
        (after.spec, after.restarts_requested),
        (before.spec, before.restarts_requested),
        "a refused update changed the record"
    );
}

#[tokio::test]
async fn a_running_vm_resizes_live_within_its_maximums_and_restarts_beyond_them() {
    let Some(fx) = fixture().await else {
        return;
    };
    let dir = fx.dir.path().join("live");
    std::fs::create_dir_all(&dir).expect("dir");
    searchable(&dir);
    let (c, driver) = controller(&dir, &fx.uri).await;
    let name = unique("live");
    let mut spec = fx.vm("");
    spec.max_cpus = Some(Cpus::cores(2));
    spec.max_memory_mib = Some(512);

    // Maximums below the size are refused at create, and nothing is made.
    let mut low = spec.clone();
    low.max_memory_mib = Some(128);
    let err = c
        .create_instance(CreateInstance::new(&name, low))
        .await
        .expect_err("max below the size");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.to_string().starts_with("invalid spec.max_memory_mib"),
        "{err}"
    );
    assert!(c.get_instance(&name).await.is_err(), "an instance was made");

    let vm = c
        .create_instance(CreateInstance::new(&name, spec))
        .await
        .expect("create");
    let vm = converged(&c, &vm.id, "the vm to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    wait_for_boots(&driver, &vm, 1).await;
    // Defined with the maximums, running the size; the balloon holds the
    // rest once the guest's driver has inflated it.
    let (cpus, max, _) = dominfo(&fx.uri, &vm.id);
    assert_eq!((cpus, max), ("1".to_owned(), "524288 KiB".to_owned()));
    wait_until("the guest to balloon to 256 MiB", BOOT_TIMEOUT, || async {
        (dominfo(&fx.uri, &vm.id).2 == "262144 KiB").then_some(())
    })
    .await;
    let id = domid(&fx.uri, &vm.id);

    // Within the maximums: live, the same domain running on.
    let grown = c
        .update_instance(
            &name,
            InstanceUpdate {
                cpus: Some(Cpus::cores(2)),
                memory_mib: Some(384),
                ..InstanceUpdate::default()
            },
        )
        .await
        .expect("live resize");
    assert_eq!(
        (grown.spec.cpus, grown.spec.memory_mib),
        (Cpus::cores(2), 384)
    );
    assert_eq!(grown.restarts_requested, vm.restarts_requested);
    // The vCPU is there when the call returns; the guest's balloon
    // driver gives the memory back a moment later (about a second here).
    // Until then a read that asks the runtime shows both sizes.
    assert_eq!(dominfo(&fx.uri, &vm.id).0, "2");
    let seen = c.observed(c.get_instance(&name).await.expect("get")).await;
    let running = seen.runtime_size.expect("the balloon still moving");
    assert_eq!(running.cpus, Cpus::cores(2));
    assert!(running.memory_mib < 384, "{running:?}");
    wait_until("the guest to balloon to 384 MiB", BOOT_TIMEOUT, || async {
        (dominfo(&fx.uri, &vm.id).2 == "393216 KiB").then_some(())
    })
    .await;
    let seen = c.observed(c.get_instance(&name).await.expect("get")).await;
    assert_eq!(seen.runtime_size, None, "the runtime runs the spec's size");
    assert_eq!(domid(&fx.uri, &vm.id), id, "the domain restarted");

    // The disk grows live: the 64 MiB base's overlay to 1 GiB.
    assert!(disk_capacity(&fx.uri, &vm.id) < GIB);
    c.update_instance(
        &name,
        InstanceUpdate {
            disk_gib: Some(1),
            ..InstanceUpdate::default()
        },
    )
    .await
    .expect("grow the disk");
    assert_eq!(disk_capacity(&fx.uri, &vm.id), GIB);
    assert_eq!(domid(&fx.uri, &vm.id), id, "the domain restarted");

    // Beyond a maximum, or a smaller disk: refused, nothing changed.
    refused(
        &c,
        &name,
        InstanceUpdate {
            cpus: Some(Cpus::cores(3)),
            ..InstanceUpdate::default()
        },
        ErrorKind::FailedPrecondition,
        &[
            "cpus 3 is above max_cpus 2 set at create",
            "--restart-if-needed",
        ],
    )
    .await;
    refused(
        &c,
        &name,
        InstanceUpdate {
            cpus: Some(Cpus::cores(1)),
            ..InstanceUpdate::default()
        },
        ErrorKind::FailedPrecondition,
        &["cpus 1 is below the 2 vCPUs it runs"],
    )
    .await;
    let beyond = InstanceUpdate {
        memory_mib: Some(640),
        ..InstanceUpdate::default()
    };
    refused(
        &c,
        &name,
        beyond.clone(),
        ErrorKind::FailedPrecondition,
        &["memory 640 MiB is above max_memory_mib 512 set at create"],
    )
    .await;
    refused(
        &c,
        &name,
        InstanceUpdate {
            disk_gib: Some(0),
            ..InstanceUpdate::default()
        },
        ErrorKind::InvalidArgument,
        &["disks only grow: 0 GiB is below the current 1 GiB"],
    )
    .await;
    assert_eq!(
        dominfo(&fx.uri, &vm.id),
        (
            "2".to_owned(),
            "524288 KiB".to_owned(),
            "393216 KiB".to_owned()
        )
    );
    assert_eq!(disk_capacity(&fx.uri, &vm.id), GIB);

    // Allowed to restart: the domain is defined anew with the new size.
    let updated = c
        .update_instance(
            &name,
            InstanceUpdate {
                restart_if_needed: true,
                ..beyond
            },
        )
        .await
        .expect("update with a restart");
    assert_eq!(
        (updated.spec.memory_mib, updated.spec.max_memory_mib),
        (640, Some(640))
    );
    let restarted = converged(&c, &name, "the vm to restart", |i| {
        i.status == InstanceStatus::Running && i.restarts_done >= updated.restarts_requested
    })
    .await;
    assert_ne!(domid(&fx.uri, &vm.id), id, "the domain did not restart");
    let (cpus, max, _) = dominfo(&fx.uri, &vm.id);
    assert_eq!((cpus, max), ("2".to_owned(), "655360 KiB".to_owned()));
    wait_for_boots(&driver, &restarted, 2).await;

    // Stopped: the definition and the overlay take the new size at once.
    c.stop_instance(&name).await.expect("stop");
    converged(&c, &name, "the vm to stop", |i| {
        i.status == InstanceStatus::Stopped
    })
    .await;
    c.update_instance(
        &name,
        InstanceUpdate {
            cpus: Some(Cpus::cores(1)),
            disk_gib: Some(2),
            ..InstanceUpdate::default()
        },
    )
    .await
    .expect("resize the stopped vm");
    assert_eq!(disk_capacity(&fx.uri, &vm.id), 2 * GIB);
    assert_eq!(dominfo(&fx.uri, &vm.id).0, "1");

    delete(&c, &vm).await;
}

async fn delete(c: &zixiao_core::Controller, vm: &Instance) {
    c.delete_instance(&vm.id).await.expect("delete");
    wait_until("the vm to be gone", BOOT_TIMEOUT, || async {
        let _ = c.converge(&vm.id).await;
        c.get_instance(&vm.id).await.is_err().then_some(())
    })
    .await;
}
