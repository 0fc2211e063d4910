//! The VMM backend through the driver, with zixiao-vmm's own test guest on
//! `/dev/kvm`: boot, console, pause and resume, stats, a snapshot taken
//! while the guest counts, restore into a new instance that goes on
//! counting, revert, stop and delete leaving nothing; and the restore
//! inputs the driver refuses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use zixiao_core::driver as cap;
use zixiao_core::{Driver, ErrorKind, Instance, InstanceSpec, MicrovmBackend, RuntimeState};
use zixiao_drivers::microvm::{export_snapshot, MicrovmDriver, MicrovmOptions, SnapshotManifest};
use zixiao_testing::wait::runtimes_required;

use super::{
    assert_nothing_left, console, instance, kill_left_overs, processes_naming, snap, state_dir,
    unique, wait_for_log, wait_for_state,
};

/// A VMM-backend driver and the test guest, or `None` (skip, printing why;
/// a failure under ZIXIAO_REQUIRE_RUNTIMES=1).
pub(super) struct VmmFixture {
    pub(super) driver: MicrovmDriver,
    guest: PathBuf,
    pub(super) dir: tempfile::TempDir,
}

impl Drop for VmmFixture {
    fn drop(&mut self) {
        kill_left_overs(self.dir.path());
    }
}

fn skip(reason: &str) -> Option<VmmFixture> {
    assert!(
        !runtimes_required(),
        "the vmm backend is required (ZIXIAO_REQUIRE_RUNTIMES=1) but {reason}"
    );
    eprintln!("skipped: {reason}");
    None
}

pub(super) fn fixture() -> Option<VmmFixture> {
    if let Some(reason) = zixiao_vmm::kvm_skip_reason() {
        return skip(&reason);
    }
    let Some(guest) = zixiao_vmm::test_guest::kernel_path() else {
        return skip("zixiao-vmm's test guest was not built (gcc/as missing at build time)");
    };
    let dir = state_dir();
    let driver = match MicrovmDriver::new(MicrovmOptions::new(dir.path())) {
        Ok(driver) => driver,
        Err(e) => return skip(&e.to_string()),
    };
    if let Err(why) = driver.vmm_binary() {
        return skip(why);
    }
    Some(VmmFixture { driver, guest, dir })
}

impl VmmFixture {
    pub(super) fn spec(&self, mode: &str) -> InstanceSpec {
        let mut spec = InstanceSpec::microvm(&self.guest).with_size(1, 64);
        spec.cmdline = Some(format!("console=ttyS0 zx.mode={mode}"));
        spec.backend = MicrovmBackend::Vmm;
        spec
    }
}

/// The highest `ZX: count=<n>` in `log`.
pub(super) fn last_count(log: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix("ZX: count="))
        .filter_map(|n| n.trim().parse().ok())
        .max()
}

pub(super) fn vmm_pid(driver: &MicrovmDriver, vm: &Instance) -> u32 {
    std::fs::read_to_string(driver.instance_dir(vm).join("vmm").join("vmm.pid"))
        .expect("vmm.pid")
        .trim()
        .parse()
        .expect("a pid")
}

#[tokio::test]
async fn vmm_backend_boots_pauses_snapshots_and_restores_a_counting_guest() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = &fx.driver;
    let vm = instance(&unique("count"), fx.spec("loop"));
    driver.create(&vm).await.expect("create");
    assert_eq!(driver.runtime_of(&vm), "vmm");
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Created
    );
    driver.start(&vm).await.expect("start");
    wait_for_log(driver, &vm, "ZX: ready", 1).await;
    wait_for_log(driver, &vm, "ZX: count=", 2).await;
    assert!(console(driver, &vm).await.contains("zx.mode=loop"));
    let pid = vmm_pid(driver, &vm);

    let stats = cap::Stats::stats(driver, &vm).await.expect("stats");
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert_eq!(stats.pids, Some(1));
    assert_eq!(stats.memory_limit_bytes, Some(64 << 20));

    // Paused, the count stops.
    cap::Pause::pause(driver, &vm).await.expect("pause");
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Paused
    );
    let paused_at = last_count(&console(driver, &vm).await).expect("a count");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(last_count(&console(driver, &vm).await), Some(paused_at));

    // A snapshot of the paused guest leaves it paused.
    let taken = cap::Snapshots::create(driver, &vm, &snap("s1"))
        .await
        .expect("snapshot");
    assert!(taken.includes_memory && taken.current);
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Paused
    );
    let listed = cap::Snapshots::list(driver, &vm).await.expect("list");
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["s1"]
    );

    // Resumed, it counts on.
    cap::Pause::resume(driver, &vm).await.expect("resume");
    wait_until_count_above(driver, &vm, paused_at).await;

    // Exported and restored as a new instance, the guest continues from
    // the snapshot's count without booting again.
    let exported = fx.dir.path().join("exported");
    export_snapshot(&driver.options().state_dir, &vm.id, &snap("s1"), &exported).expect("export");
    let manifest = SnapshotManifest::read(&exported, "from").expect("manifest");
    assert_eq!((manifest.cpus, manifest.memory_mib), (1, 64));
    let copy = instance(&unique("copy"), manifest.restore_spec(&exported));
    driver
        .create(&copy)
        .await
        .expect("create from the snapshot");
    assert_eq!(
        driver.inspect(&copy).await.expect("inspect"),
        RuntimeState::Created
    );
    driver.start(&copy).await.expect("start the restored guest");
    wait_until_count_above(driver, &copy, paused_at).await;
    let restored = console(driver, &copy).await;
    assert!(
        !restored.contains("ZX: ready"),
        "the restored guest booted again: {restored}"
    );
    let first_restored = restored
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ZX: count="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next()
        .expect("a count");
    assert!(
        first_restored > paused_at,
        "{first_restored} <= {paused_at}"
    );

    // Revert puts the original back to the snapshot, running as it was.
    cap::Snapshots::revert(driver, &vm, &snap("s1"))
        .await
        .expect("revert");
    assert_eq!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );
    let reverted_pid = vmm_pid(driver, &vm);
    assert_ne!(reverted_pid, pid, "revert runs a fresh VMM");

    driver
        .stop(&vm, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(matches!(
        driver.inspect(&vm).await.expect("inspect"),
        RuntimeState::Exited { .. }
    ));
    let copy_pid = vmm_pid(driver, &copy);
    driver.delete(&copy).await.expect("delete the copy");
    driver.delete(&vm).await.expect("delete");
    assert_nothing_left(driver, &vm, &[pid as i32, reverted_pid as i32]);
    assert_nothing_left(driver, &copy, &[copy_pid as i32]);
}

/// The live zixiao-vmm processes of `vm`'s directory, from `/proc`.
fn vmm_processes(driver: &MicrovmDriver, vm: &Instance) -> Vec<i32> {
    processes_naming(&driver.instance_dir(vm), Some("zixiao-vmm"))
}

/// Rewrites `vm`'s record as a create cut off after the launch leaves it.
fn cut_after_launch(driver: &MicrovmDriver, vm: &Instance) {
    let path = driver.instance_dir(vm).join("instance.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("record")).expect("json");
    record["stage"] = "launching".into();
    std::fs::write(&path, record.to_string()).expect("write the record");
}

#[tokio::test]
async fn the_vmm_backend_runs_one_vmm_per_microvm_whatever_was_cut_off() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = &fx.driver;

    // Create and start made twice: one VMM.
    let vm = instance(&unique("twice"), fx.spec("loop"));
    driver.create(&vm).await.expect("create");
    driver.create(&vm).await.expect("create again");
    let first = vmm_processes(driver, &vm);
    assert_eq!(first.len(), 1, "{first:?}");
    driver.start(&vm).await.expect("start");
    driver.start(&vm).await.expect("start again");
    assert_eq!(vmm_processes(driver, &vm), first);
    wait_for_log(driver, &vm, "ZX: ready", 1).await;

    // A create cut off after the launch: its VMM is adopted, not doubled.
    let cut = instance(&unique("cut"), fx.spec("loop"));
    driver.create(&cut).await.expect("create");
    let launched = vmm_processes(driver, &cut);
    cut_after_launch(driver, &cut);
    assert_eq!(
        driver.inspect(&cut).await.expect("inspect"),
        RuntimeState::Missing
    );
    driver.create(&cut).await.expect("create after the cut");
    assert_eq!(vmm_processes(driver, &cut), launched, "the VMM is adopted");
    driver.start(&cut).await.expect("start");
    wait_for_log(driver, &cut, "ZX: ready", 1).await;
    assert_eq!(vmm_processes(driver, &cut), launched);

    // A start after a cut create finishes the create first.
    let cut_start = instance(&unique("cutstart"), fx.spec("loop"));
    driver.create(&cut_start).await.expect("create");
    let launched_too = vmm_processes(driver, &cut_start);
    cut_after_launch(driver, &cut_start);
    driver.start(&cut_start).await.expect("start after the cut");
    assert_eq!(vmm_processes(driver, &cut_start), launched_too);
    wait_for_log(driver, &cut_start, "ZX: ready", 1).await;

    // A VMM that no record explains is replaced, never doubled.
    let stray = instance(&unique("stray"), fx.spec("loop"));
    driver.create(&stray).await.expect("create");
    let old = vmm_processes(driver, &stray);
    std::fs::remove_file(driver.instance_dir(&stray).join("instance.json")).expect("forget");
    driver.create(&stray).await.expect("create again");
    let new = vmm_processes(driver, &stray);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_ne!(new, old, "the stray VMM was replaced");
    driver.start(&stray).await.expect("start");
    wait_for_log(driver, &stray, "ZX: ready", 1).await;

    // Listed, and removed knowing only the id.
    let ids = cap::Inventory::instance_ids(driver)
        .await
        .expect("inventory");
    for listed in [&vm, &cut, &cut_start, &stray] {
        assert!(
            ids.contains(&listed.id),
            "{} is listed: {ids:?}",
            listed.name
        );
    }
    cap::Inventory::remove_orphan(driver, &stray.id)
        .await
        .expect("remove the orphan");
    assert!(vmm_processes(driver, &stray).is_empty());
    assert_nothing_left(driver, &stray, &[old[0], new[0]]);
    assert!(!cap::Inventory::instance_ids(driver)
        .await
        .expect("inventory")
        .contains(&stray.id));

    for (done, pids) in [(&vm, first), (&cut, launched), (&cut_start, launched_too)] {
        driver.delete(done).await.expect("delete");
        assert_nothing_left(driver, done, &pids);
    }
}

pub(super) async fn wait_until_count_above(driver: &MicrovmDriver, vm: &Instance, above: u64) {
    zixiao_testing::wait::wait_until(
        &format!("{} to count past {above}", vm.name),
        super::BOOT_TIMEOUT,
        || async { (last_count(&console(driver, vm).await)? > above).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_guest_that_powers_off_under_the_vmm_has_exited() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = &fx.driver;
    let vm = instance(&unique("bye"), fx.spec("poweroff"));
    driver.create(&vm).await.expect("create");
    driver.start(&vm).await.expect("start");
    let state = wait_for_state(driver, &vm, "the guest to power off", |s| {
        matches!(s, RuntimeState::Exited { .. })
    })
    .await;
    assert!(
        matches!(state, RuntimeState::Exited { code: 0, .. }),
        "{state:?}"
    );
    assert!(console(driver, &vm).await.contains("ZX: bye"));
    // Started again, it boots again.
    driver.start(&vm).await.expect("start again");
    wait_for_log(driver, &vm, "ZX: ready", 2).await;
    driver.delete(&vm).await.expect("delete");
    assert!(!driver.instance_dir(&vm).exists());
}

#[tokio::test]
async fn an_acpi_power_off_is_a_normal_stop_and_an_acpi_reboot_a_guest_reset() {
    let Some(fx) = fixture() else {
        return;
    };
    let Some(kernel) = zixiao_vmm::test_guest::acpi_kernel_path() else {
        skip("zixiao-vmm's ACPI test guest was not built (gcc/ld missing at build time)");
        return;
    };
    let driver = &fx.driver;
    // The guest finds the ACPI tables and enters S5, or writes the reset
    // register; a reboot counts as the QEMU backend counts a guest reset.
    for (mode, expected) in [("poweroff", 0), ("reboot", 1)] {
        let mut spec = InstanceSpec::microvm(&kernel).with_size(1, 64);
        spec.cmdline = Some(format!("console=ttyS0 zx.acpi={mode}"));
        spec.backend = MicrovmBackend::Vmm;
        let vm = instance(&unique(&format!("h-acpi-{mode}")), spec);
        driver.create(&vm).await.expect("create");
        driver.start(&vm).await.expect("start");
        let state = wait_for_state(driver, &vm, "the guest to end", |s| {
            matches!(s, RuntimeState::Exited { .. })
        })
        .await;
        assert!(
            matches!(state, RuntimeState::Exited { code, .. } if code == expected),
            "{mode}: {state:?}"
        );
        assert!(console(driver, &vm).await.contains(&format!("ZX: {mode}")));
        driver.delete(&vm).await.expect("delete");
    }
}

#[tokio::test]
async fn restores_from_something_that_is_not_a_fitting_snapshot_are_refused() {
    let Some(fx) = fixture() else {
        return;
    };
    let driver = &fx.driver;
    let empty = fx.dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let restore = |from: &Path| {
        let mut spec = fx.spec("loop");
        spec.restore_from = Some(from.to_owned());
        instance(&unique("restore"), spec)
    };
    let err = driver
        .create(&restore(&fx.dir.path().join("missing")))
        .await
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = driver.create(&restore(&empty)).await.expect_err("empty");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("spec.restore_from"), "{err}");
    // The qemu backend cannot restore a VMM snapshot.
    let mut spec = fx.spec("loop");
    spec.backend = MicrovmBackend::Qemu;
    spec.restore_from = Some(empty.clone());
    assert!(spec.validate().is_err());
    let microvms = fx.dir.path().join("microvm");
    assert!(
        std::fs::read_dir(&microvms).map_or(true, |mut d| d.next().is_none()),
        "files left under {}",
        microvms.display()
    );
}

/// A running VMM microVM shrinks its memory by its balloon: the guest (the
/// balloon test guest, 64 MiB, touching 32) hands the pages over and the
/// VMM reports them; growing back within what it booted with deflates;
/// more memory or other vCPUs need a restart; a stopped one just takes
/// the stored size at its next start.
#[tokio::test]
async fn resizing_a_running_vmm_microvm_down_sets_its_balloon() {
    let Some(fx) = fixture() else {
        return;
    };
    let Some(kernel) = zixiao_vmm::test_guest::balloon_kernel_path() else {
        skip("zixiao-vmm's balloon test guest was not built (gcc/ld missing at build time)");
        return;
    };
    let driver = &fx.driver;
    let mut spec = InstanceSpec::microvm(&kernel).with_size(1, 64);
    spec.cmdline = Some("console=ttyS0".into());
    spec.backend = MicrovmBackend::Vmm;
    let mut vm = instance(&unique("h-balloon"), spec);
    driver.create(&vm).await.expect("create");
    driver.start(&vm).await.expect("start");
    wait_for_log(driver, &vm, "ZX: ready", 1).await;
    // The balloon (device id 5) is the VMM microVM's only virtio device.
    assert!(console(driver, &vm)
        .await
        .contains("ZX: balloon features=4 target=0"));

    let resize = driver.resize().expect("the microvm driver resizes");
    let running = vm.spec.clone();
    let smaller = running.clone().with_size(1, 40);
    assert_eq!(resize.restart_needed(&running, &smaller), None);
    for (cpus, memory, why) in [(1, 65, "memory 65 MiB is above"), (2, 64, "cpus 2")] {
        let next = running.clone().with_size(cpus, memory);
        let said = resize.restart_needed(&running, &next).expect("a restart");
        assert!(said.contains(why), "{said}");
    }
    // With a maximum it booted with, memory up to it is taken live.
    let mut with_max = running.clone();
    with_max.max_memory_mib = Some(128);
    assert_eq!(
        resize.restart_needed(&with_max, &with_max.clone().with_size(1, 128)),
        None
    );
    let said = resize
        .restart_needed(&with_max, &with_max.clone().with_size(1, 129))
        .expect("a restart");
    assert!(said.contains("above max_memory_mib 128"), "{said}");

    vm.spec = smaller;
    resize.resize(&vm).await.expect("resize down");
    wait_for_log(driver, &vm, "ZX: balloon actual=6144\n", 1).await;
    let stats = zixiao_vmm::VmmClient::connect(&driver.instance_dir(&vm).join("vmm"))
        .await
        .expect("the VMM")
        .balloon()
        .await
        .expect("its balloon");
    assert_eq!((stats.target_mib(), stats.actual_mib()), (24, 24));

    // Back up to what it booted with: the guest takes its pages back.
    vm.spec = running.clone();
    resize.resize(&vm).await.expect("resize up");
    wait_for_log(driver, &vm, "ZX: balloon actual=0\n", 1).await;

    // A size above what it booted with, asked anyway, is refused by name.
    vm.spec = running.clone().with_size(1, 80);
    let err = resize.resize(&vm).await.expect_err("above boot memory");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("spec.memory_mib"), "{err}");

    // Stopped: nothing runs to resize; the next start takes the size.
    driver
        .stop(&vm, Duration::from_secs(5))
        .await
        .expect("stop");
    vm.spec = running.with_size(1, 48);
    resize.resize(&vm).await.expect("resize a stopped microVM");
    driver.delete(&vm).await.expect("delete");
}

/// Through the controller: `instance resize --memory` (UpdateInstance) of
/// a running VMM microVM to less than it booted with is taken live by its
/// balloon, with no restart (the same VMM process, the guest reports the
/// pages); more than it runs with still needs a restart, named.
#[tokio::test]
async fn the_controller_resizes_a_running_vmm_microvm_down_without_a_restart() {
    use zixiao_core::InstanceUpdate;

    let Some(fx) = fixture() else {
        return;
    };
    let Some((c, vm)) = balloon_microvm_on_controller(&fx, "h-balloon-ctl", |s| s).await else {
        return;
    };
    let name = vm.name.clone();
    let pid = vmm_pid(&fx.driver, &vm);

    let shrink = InstanceUpdate {
        memory_mib: Some(40),
        ..InstanceUpdate::default()
    };
    let updated = c.update_instance(&name, shrink).await.expect("resize live");
    assert_eq!(updated.spec.memory_mib, 40);
    assert_eq!(
        updated.restarts_requested, vm.restarts_requested,
        "no restart"
    );
    wait_for_log(&fx.driver, &vm, "ZX: balloon actual=6144\n", 1).await;
    assert_eq!(vmm_pid(&fx.driver, &vm), pid, "the same VMM");

    let grow = InstanceUpdate {
        memory_mib: Some(64),
        ..InstanceUpdate::default()
    };
    let err = c
        .update_instance(&name, grow)
        .await
        .expect_err("needs a restart");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("--restart-if-needed"), "{err}");
    assert_eq!(
        c.get_instance(&name).await.expect("get").spec.memory_mib,
        40
    );

    delete_through(&c, &name).await;
}

/// A controller on its own store in `fx`'s state directory (`tag`), and
/// the balloon test guest running on it as a VMM microVM of `spec`
/// (`with_size`, `max_memory_mib`, the command line's `zx.touch`...) once
/// it is ready; `None` when the balloon guest was not built (skip).
async fn balloon_microvm_on_controller(
    fx: &VmmFixture,
    tag: &str,
    spec: impl FnOnce(InstanceSpec) -> InstanceSpec,
) -> Option<(zixiao_core::Controller, Instance)> {
    use std::sync::Arc;
    use zixiao_core::{CreateInstance, InstanceStatus, SystemClock};

    let Some(kernel) = zixiao_vmm::test_guest::balloon_kernel_path() else {
        skip("zixiao-vmm's balloon test guest was not built (gcc/ld missing at build time)");
        return None;
    };
    let dir = fx.dir.path().join(tag);
    std::fs::create_dir_all(&dir).expect("dir");
    let driver = Arc::new(MicrovmDriver::new(MicrovmOptions::new(fx.dir.path())).expect("driver"));
    let c = super::controller::controller_on(&dir, driver, Arc::new(SystemClock)).await;
    let mut base = InstanceSpec::microvm(&kernel).with_size(1, 64);
    base.cmdline = Some("console=ttyS0".into());
    base.backend = MicrovmBackend::Vmm;
    let created = c
        .create_instance(CreateInstance::new(unique(tag), spec(base)))
        .await
        .expect("create");
    let vm = super::controller::converged(&c, &created.id, "the microVM to run", |i| {
        i.status == InstanceStatus::Running
    })
    .await;
    wait_for_log(&fx.driver, &vm, "ZX: ready", 1).await;
    Some((c, vm))
}

/// Deletes `name` through `c` and waits until it is gone.
async fn delete_through(c: &zixiao_core::Controller, name: &str) {
    c.delete_instance(name).await.expect("delete");
    zixiao_testing::wait::wait_until(
        "the instance to be deleted",
        Duration::from_secs(60),
        || async {
            c.converge(name)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// `instance get` of a VMM microVM shrunk live shows what it really runs
/// with (`runtime_size`: the memory it booted with less what its balloon
/// holds) until the guest has given the memory back, then only the spec.
/// The guest is paused across the update so that moment is there to see:
/// a paused guest takes no balloon request until it runs again.
#[tokio::test]
async fn instance_get_shows_a_shrinking_vmm_microvm_s_running_size() {
    use std::sync::Arc;
    use zixiao_core::api::{Client, Wait};
    use zixiao_core::model::RuntimeSize;
    use zixiao_core::{Cpus, InstanceStatus, InstanceUpdate};

    let Some(fx) = fixture() else {
        return;
    };
    let Some((c, vm)) = balloon_microvm_on_controller(&fx, "h-microsize-get", |s| s).await else {
        return;
    };
    let api = Client::new(Arc::new(c.clone()));
    let name = vm.name.clone();
    let seen = api.get_instance(&name).await.expect("get");
    assert_eq!(seen.runtime_size, None, "it runs its spec's size: {seen:?}");

    api.pause_instance(&name).await.expect("pause");
    super::controller::converged(&c, &name, "the microVM to pause", |i| {
        i.status == InstanceStatus::Paused
    })
    .await;
    let shrink = InstanceUpdate {
        memory_mib: Some(40),
        ..InstanceUpdate::default()
    };
    let updated = api
        .update_instance(&name, shrink, Wait::No)
        .await
        .expect("resize live");
    assert_eq!(updated.spec.memory_mib, 40);
    assert_eq!(
        updated.restarts_requested, vm.restarts_requested,
        "no restart"
    );
    let seen = api.get_instance(&name).await.expect("get");
    assert_eq!(seen.spec.memory_mib, 40);
    assert_eq!(
        seen.runtime_size,
        Some(RuntimeSize {
            cpus: Cpus::cores(1),
            memory_mib: 64
        }),
        "the paused guest still holds all it booted with"
    );

    api.resume_instance(&name).await.expect("resume");
    // The guest writes what it holds, then says so on its console.
    wait_for_log(&fx.driver, &vm, "ZX: balloon actual=6144\n", 1).await;
    let seen = api.get_instance(&name).await.expect("get");
    assert_eq!(
        (seen.spec.memory_mib, seen.runtime_size),
        (40, None),
        "it runs its spec's size again"
    );
    delete_through(&c, &name).await;
}

/// A VMM microVM created with `max_memory_mib` 128 and memory 64 boots
/// with 128 MiB and its balloon holding 64 back: `instance get` shows 64
/// once the guest has inflated; an update to 96 is taken live (the same
/// VMM, no restart, the guest deflates), and one to 160 is refused naming
/// the maximum and `--restart-if-needed`, changing nothing.
#[tokio::test]
async fn a_vmm_microvm_grows_live_up_to_its_max_memory() {
    use std::sync::Arc;
    use zixiao_core::api::{Client, Wait};
    use zixiao_core::InstanceUpdate;

    let Some(fx) = fixture() else {
        return;
    };
    let Some((c, vm)) = balloon_microvm_on_controller(&fx, "h-microsize-max", |mut s| {
        s.max_memory_mib = Some(128);
        // Enough touched pages for the guest to hand over 64 MiB.
        s.cmdline = Some("console=ttyS0 zx.touch=96".into());
        s
    })
    .await
    else {
        return;
    };
    let api = Client::new(Arc::new(c.clone()));
    let name = vm.name.clone();
    // The balloon's target at boot: 64 MiB in 4 KiB pages.
    assert!(console(&fx.driver, &vm)
        .await
        .contains("ZX: balloon features=4 target=16384"));
    wait_for_log(&fx.driver, &vm, "ZX: balloon actual=16384\n", 1).await;
    let seen = api.get_instance(&name).await.expect("get");
    assert_eq!(
        (
            seen.spec.memory_mib,
            seen.spec.max_memory_mib,
            seen.runtime_size
        ),
        (64, Some(128), None),
        "it runs with its spec's 64 MiB"
    );
    let stats = api.instance_stats(&name).await.expect("stats");
    assert_eq!(stats.memory_limit_bytes, Some(128 << 20), "booted with max");
    let pid = vmm_pid(&fx.driver, &vm);

    let grow = InstanceUpdate {
        memory_mib: Some(96),
        ..InstanceUpdate::default()
    };
    let grown = api
        .update_instance(&name, grow, Wait::No)
        .await
        .expect("grow live");
    assert_eq!(grown.spec.memory_mib, 96);
    assert_eq!(
        grown.restarts_requested, vm.restarts_requested,
        "no restart"
    );
    wait_for_log(&fx.driver, &vm, "ZX: balloon actual=8192\n", 1).await;
    let seen = api.get_instance(&name).await.expect("get");
    assert_eq!((seen.spec.memory_mib, seen.runtime_size), (96, None));
    assert_eq!(vmm_pid(&fx.driver, &vm), pid, "the same VMM");

    let beyond = InstanceUpdate {
        memory_mib: Some(160),
        ..InstanceUpdate::default()
    };
    let err = api
        .update_instance(&name, beyond, Wait::No)
        .await
        .expect_err("above the maximum");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let said = err.to_string();
    assert!(said.contains("max_memory_mib 128"), "{said}");
    assert!(said.contains("--restart-if-needed"), "{said}");
    let seen = api.get_instance(&name).await.expect("get");
    assert_eq!(
        (seen.spec.memory_mib, seen.spec.max_memory_mib),
        (96, Some(128))
    );
    assert_eq!(vmm_pid(&fx.driver, &vm), pid, "still the same VMM");
    delete_through(&c, &name).await;
}
