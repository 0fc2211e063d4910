//! Real Linux under libvirtd: one booted guest carries most checks, since
//! each TCG boot costs seconds.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zixiao_core::model::CloudInit;
use zixiao_core::{Driver, RuntimeState};
use zixiao_drivers::libvirt::{LifecycleKind, KEEP_DISK_LABEL};
use zixiao_testing::wait::wait_until;

use super::{
    assert_nothing_left, console, fixture, instance, snap, unique, wait_for_boots, BOOT_TIMEOUT,
};

#[tokio::test]
async fn a_vm_boots_linux_and_goes_through_its_lifecycle() {
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;
    // With cloud-init data: the guest's /init prints the seed disk it finds.
    let mut spec = fx.vm("zixiao.cidata");
    spec.cloud_init = Some(CloudInit {
        user_data: Some("#cloud-config\nruncmd:\n  - echo from-user-data\n".to_owned()),
        ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 tester@zixiao".to_owned()],
        ..CloudInit::default()
    });
    let vm = instance(&unique("boot"), spec);

    d.create(&vm).await.expect("create");
    // The overlay is qcow2 on the base image, with the base's size (64 MiB).
    let overlay = d.overlay_path(&vm).expect("a UUID id");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--force-share", "--output=json"])
        .arg(&overlay)
        .output()
        .expect("qemu-img info");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains(&*fx.base.to_string_lossy()), "{info}");
    assert!(info.contains("\"virtual-size\": 67108864"), "{info}");

    d.start(&vm).await.expect("start");
    wait_for_boots(d, &vm, 1).await;
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );

    // The seed: a read-only disk labelled cidata, with the user data as
    // given and the meta-data naming the instance and carrying the key.
    let log = console(d, &vm).await;
    let seed = zixiao_testing::guest::cidata_seed(&log);
    assert!(zixiao_testing::guest::labelled_cidata(seed), "{seed}");
    assert!(seed.contains("== user-data"), "{seed}");
    assert!(seed.contains("  - echo from-user-data"), "{seed}");
    assert!(
        seed.contains(&format!("\"instance-id\": \"{}\"", vm.id)),
        "{seed}"
    );
    assert!(
        seed.contains(&format!("\"local-hostname\": \"{}\"", vm.name)),
        "{seed}"
    );
    assert!(seed.contains("tester@zixiao"), "{seed}");
    assert!(
        !seed.contains("== network-config"),
        "no network, no network-config: {seed}"
    );
    let xml = d.domain_xml(&vm).expect("xml");
    assert!(xml.contains("<readonly/>"), "{xml}");

    // Stats of a running guest.
    let stats = d
        .stats()
        .expect("stats capability")
        .stats(&vm)
        .await
        .expect("stats");
    assert!(stats.cpu_time_ns > 0, "{stats:?}");
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert_eq!(stats.pids, Some(1), "{stats:?}");
    assert!(stats.disk_read_bytes.is_some(), "{stats:?}");

    // The interactive console reaches the guest's shell.
    let mut stream = d
        .console()
        .expect("console capability")
        .attach(&vm)
        .await
        .expect("attach");
    stream
        .input
        .write_all(b"echo zixiao-$((6*7))\n")
        .await
        .expect("type");
    let mut seen = Vec::new();
    let found = tokio::time::timeout(BOOT_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.output.read(&mut buf).await.expect("read console");
            assert!(n > 0, "the console closed");
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("zixiao-42") {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no answer on the console: {}",
        String::from_utf8_lossy(&seen)
    );
    drop(stream);

    // Suspend and resume.
    d.pause()
        .expect("pause capability")
        .pause(&vm)
        .await
        .expect("suspend");
    assert_eq!(d.inspect(&vm).await.expect("inspect"), RuntimeState::Paused);
    d.pause()
        .expect("pause capability")
        .resume(&vm)
        .await
        .expect("resume");
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );

    // Snapshots with memory: take one, change the disk, go back.
    let snapshot = d
        .snapshots()
        .expect("snapshots")
        .create(&vm, &snap("booted"))
        .await
        .expect("snapshot");
    assert!(snapshot.includes_memory, "{snapshot:?}");
    d.snapshots()
        .expect("snapshots")
        .revert(&vm, &snap("booted"))
        .await
        .expect("revert");
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );
    let names: Vec<_> = d
        .snapshots()
        .expect("snapshots")
        .list(&vm)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["booted"]);
    d.snapshots()
        .expect("snapshots")
        .delete(&vm, &snap("booted"))
        .await
        .expect("delete snapshot");
    assert!(d
        .snapshots()
        .expect("snapshots")
        .list(&vm)
        .await
        .expect("list")
        .is_empty());

    // A reboot (the power button, then libvirt restarts the guest) and a
    // hard reset each boot the guest again, the log kept across boots.
    d.reboot(&vm).await.expect("reboot");
    wait_for_boots(d, &vm, 2).await;
    d.reset(&vm).await.expect("reset");
    wait_for_boots(d, &vm, 3).await;

    // A graceful stop: the guest's acpid powers it off on the button.
    let mut events = d.lifecycle_events();
    d.stop(&vm, BOOT_TIMEOUT).await.expect("stop");
    let stopped = d.inspect(&vm).await.expect("inspect");
    assert!(
        matches!(stopped, RuntimeState::Exited { code: 0, .. }),
        "a clean shutdown, not a destroy: {stopped:?}"
    );
    let name = d.domain_name(&vm);
    let stopped_event = tokio::time::timeout(BOOT_TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(e) if e.domain == name && e.kind == LifecycleKind::Stopped => return,
                Ok(_) => {}
                Err(e) => panic!("no stopped event: {e}"),
            }
        }
    })
    .await;
    assert!(stopped_event.is_ok(), "no stopped event of {name}");

    // Started again; a paused guest cannot react to the button, so a stop
    // destroys it once the grace is over.
    d.start(&vm).await.expect("start again");
    wait_for_boots(d, &vm, 4).await;
    d.pause()
        .expect("pause capability")
        .pause(&vm)
        .await
        .expect("pause");
    d.stop(&vm, Duration::from_millis(500)).await.expect("stop");
    let destroyed = d.inspect(&vm).await.expect("inspect");
    assert!(
        matches!(destroyed, RuntimeState::Exited { code: 137, .. }),
        "{destroyed:?}"
    );

    d.delete(&vm).await.expect("delete");
    assert_nothing_left(d, &vm).await;
    assert!(!overlay.exists());
}

#[tokio::test]
async fn a_guest_that_powers_off_shows_stopped_and_a_kept_disk_stays() {
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;
    let mut vm = instance(&unique("poweroff"), fx.vm("zixiao.poweroff"));
    vm.labels
        .insert(KEEP_DISK_LABEL.to_owned(), "true".to_owned());
    d.create(&vm).await.expect("create");
    d.start(&vm).await.expect("start");
    // libvirt reports the domain shut off a moment before its lifecycle
    // event reaches our event loop; the exit time comes with the event.
    let state = wait_until(
        "the guest to power itself off and its stop event to arrive",
        BOOT_TIMEOUT,
        || async {
            match d.inspect(&vm).await.expect("inspect") {
                RuntimeState::Running | RuntimeState::Exited { at: None, .. } => None,
                other => Some(other),
            }
        },
    )
    .await;
    match state {
        RuntimeState::Exited { code, at, .. } => {
            assert_eq!(code, 0, "a clean power-off");
            assert!(at.is_some(), "the stop event gave the time");
        }
        other => panic!("expected an exit, got {other:?}"),
    }
    assert!(console(d, &vm).await.contains(super::MARKER));
    d.delete(&vm).await.expect("delete");
    assert!(
        d.overlay_path(&vm).expect("a UUID id").exists(),
        "the kept disk stays"
    );
    std::fs::remove_dir_all(d.instance_dir(&vm).expect("a UUID id"))
        .expect("clean up the kept disk");
}
