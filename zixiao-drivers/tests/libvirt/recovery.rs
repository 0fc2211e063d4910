//! Idempotency and recovery under a real libvirtd, counted with `virsh` as
//! a user would: a create or start made twice defines and runs one domain;
//! an orphan domain of the same name (a deleted instance's) neither blocks
//! a new instance nor is taken for it, and `remove_orphan` removes it
//! knowing only its id; a create cut off before its domain was defined is
//! made again; ids that are not instance ids are refused, touching nothing.

use std::path::Path;

use zixiao_core::driver::Inventory;
use zixiao_core::{Driver, ErrorKind, RuntimeState};

use super::{assert_nothing_left, fixture, instance, searchable, unique, wait_for_boots, Fixture};

/// The UUIDs `virsh list` prints with `flags` (`--all`, `--state-running`).
fn virsh_uuids(fx: &Fixture, flags: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("virsh")
        .args(["-q", "-c", &fx.uri, "list", "--uuid"])
        .args(flags)
        .output()
        .expect("virsh list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The names of the domains `virsh list --all` shows starting with `prefix`.
fn virsh_names(fx: &Fixture, prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("virsh")
        .args(["-q", "-c", &fx.uri, "list", "--all", "--name"])
        .output()
        .expect("virsh list");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn count(list: &[String], id: &str) -> usize {
    list.iter().filter(|u| *u == id).count()
}

#[tokio::test]
async fn an_orphan_of_the_same_name_blocks_nothing_and_goes_by_its_id_alone() {
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;
    let name = unique("same");
    // A domain of an instance deleted while its node was away.
    let orphan = instance(&name, fx.vm(""));
    d.create(&orphan).await.expect("create the orphan");
    let vm = instance(&name, fx.vm(""));
    d.create(&vm).await.expect("the orphan blocks nothing");
    d.create(&vm).await.expect("create again");
    let all = virsh_uuids(&fx, &["--all"]);
    assert_eq!((count(&all, &vm.id), count(&all, &orphan.id)), (1, 1));
    let preferred = d.domain_name(&vm);
    assert_eq!(
        virsh_names(&fx, &preferred),
        [preferred.clone(), format!("{preferred}-{}", vm.id)],
        "the orphan keeps its name, the new domain carries its id"
    );

    d.start(&vm).await.expect("start");
    d.start(&vm).await.expect("start again");
    let running = virsh_uuids(&fx, &["--state-running"]);
    assert_eq!(count(&running, &vm.id), 1);
    assert_eq!(count(&running, &orphan.id), 0, "the orphan was not started");
    wait_for_boots(d, &vm, 1).await;

    let ids = d.instance_ids().await.expect("inventory");
    assert!(ids.contains(&vm.id) && ids.contains(&orphan.id), "{ids:?}");

    // Ids that are not instance ids touch nothing, here or beside the
    // state directory.
    let root = fx.dir.path().parent().expect("the state dir's parent");
    let canary = tempfile::Builder::new()
        .prefix("canary-")
        .tempdir_in(root)
        .expect("canary dir");
    std::fs::write(canary.path().join("keep"), b"canary").expect("canary");
    let canary_name = canary.path().file_name().expect("name").to_string_lossy();
    for id in [
        String::new(),
        "/".to_owned(),
        "..".to_owned(),
        "../../etc".to_owned(),
        "a/b".to_owned(),
        format!("../../{canary_name}"),
        canary.path().to_string_lossy().into_owned(),
        name.clone(),
    ] {
        let err = d.remove_orphan(&id).await.expect_err("not an instance id");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id:?}: {err}");
        assert!(err.to_string().starts_with("invalid id:"), "{err}");
    }
    assert!(
        canary.path().join("keep").exists(),
        "the canary is untouched"
    );
    let still = virsh_uuids(&fx, &["--all"]);
    assert_eq!((count(&still, &vm.id), count(&still, &orphan.id)), (1, 1));

    // Given only its id, the orphan goes; the new instance runs on.
    d.remove_orphan(&orphan.id)
        .await
        .expect("remove the orphan");
    d.remove_orphan(&orphan.id)
        .await
        .expect("removing it again is fine");
    assert_eq!(count(&virsh_uuids(&fx, &["--all"]), &orphan.id), 0);
    assert_nothing_left(d, &orphan).await;
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Running
    );
    assert_eq!(count(&virsh_uuids(&fx, &["--state-running"]), &vm.id), 1);

    d.delete(&vm).await.expect("delete");
    assert!(!d.instance_ids().await.expect("inventory").contains(&vm.id));
    assert_eq!(count(&virsh_uuids(&fx, &["--all"]), &vm.id), 0);
    assert_nothing_left(d, &vm).await;
}

#[tokio::test]
async fn a_create_cut_off_before_its_domain_was_defined_is_made_again() {
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;
    let vm = instance(&unique("cut"), fx.vm(""));
    // What a create cut off between its overlay and its define leaves: the
    // directory and a half-written overlay.
    let dir = d.instance_dir(&vm).expect("a UUID id");
    std::fs::create_dir_all(&dir).expect("dir");
    searchable(&dir);
    std::fs::write(
        d.overlay_path(&vm).expect("a UUID id"),
        b"half a qcow2 header",
    )
    .expect("overlay");
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Missing
    );
    assert!(!d.instance_ids().await.expect("inventory").contains(&vm.id));

    d.create(&vm).await.expect("create after the cut");
    d.create(&vm).await.expect("create again");
    assert_eq!(count(&virsh_uuids(&fx, &["--all"]), &vm.id), 1);
    assert!(is_qcow2_on(
        d.overlay_path(&vm).expect("a UUID id").as_path(),
        &fx.base
    ));
    // Defined, not started: what a start cut off finds. The next start runs it.
    assert_eq!(
        d.inspect(&vm).await.expect("inspect"),
        RuntimeState::Created
    );
    d.start(&vm).await.expect("start");
    d.start(&vm).await.expect("start again");
    assert_eq!(count(&virsh_uuids(&fx, &["--state-running"]), &vm.id), 1);

    // The inventory lists it; removing it by id leaves nothing.
    assert!(d.instance_ids().await.expect("inventory").contains(&vm.id));
    d.remove_orphan(&vm.id).await.expect("remove by id");
    assert_eq!(count(&virsh_uuids(&fx, &["--all"]), &vm.id), 0);
    assert_nothing_left(d, &vm).await;
}

/// Whether `overlay` is a qcow2 image backed by `base`.
fn is_qcow2_on(overlay: &Path, base: &Path) -> bool {
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--force-share", "--output=json"])
        .arg(overlay)
        .output()
        .expect("qemu-img info");
    let info = String::from_utf8_lossy(&info.stdout);
    info.contains("\"format\": \"qcow2\"") && info.contains(&*base.to_string_lossy())
}
