//! Overlay disks on the real host (no boot): sized from the spec, backed
//! by the image or blank, and removed with the instance.

use zixiao_core::{Driver, InstanceSpec};

use super::{assert_nothing_left, fixture, instance, unique};

fn qemu_img_info(path: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--force-share", "--output=json"])
        .arg(path)
        .output()
        .expect("qemu-img info");
    serde_json::from_slice(&out.stdout).expect("qemu-img json")
}

#[tokio::test]
async fn overlays_are_sized_from_the_spec_and_removed_with_the_instance() {
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;

    // On the 64 MiB base, grown to the 1 GiB asked.
    let mut spec = fx.vm("");
    spec.disk_gib = 1;
    let backed = instance(&unique("grown"), spec);
    d.create(&backed).await.expect("create");
    let info = qemu_img_info(&d.overlay_path(&backed).expect("a UUID id"));
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 1u64 << 30);
    assert_eq!(
        info["backing-filename"].as_str(),
        Some(&*fx.base.to_string_lossy())
    );

    // No image: a blank disk next to the kernel.
    let mut spec = InstanceSpec::vm("").with_size(1, 128);
    spec.image = None;
    spec.kernel = Some(fx.kernel.clone());
    spec.disk_gib = 2;
    let blank = instance(&unique("blank"), spec);
    d.create(&blank).await.expect("create");
    let info = qemu_img_info(&d.overlay_path(&blank).expect("a UUID id"));
    assert_eq!(info["virtual-size"], 2u64 << 30);
    assert!(info.get("backing-filename").is_none(), "{info}");

    for vm in [&backed, &blank] {
        d.delete(vm).await.expect("delete");
        assert_nothing_left(d, vm).await;
    }
    assert!(fx.base.exists(), "the base image is never touched");
}

/// The sha256 of `path`'s content, as `sha256sum` computes it.
fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().expect("a digest").to_owned()
}

/// A VM whose disk, kernel and initrd are images of the node's store (by
/// name) boots to its marker on an overlay backed by the store's disk
/// image, which is unchanged afterwards; a name the store lacks is
/// `NotFound` naming the field, and leaves nothing.
#[tokio::test]
async fn a_vm_of_store_images_boots_and_leaves_the_disk_image_unchanged() {
    use zixiao_core::model::{ImageKind, NodeImageName};
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;
    let images = d
        .images()
        .expect("the vm driver keeps the node's image store");
    for (file, kind, name) in [
        (&fx.base, ImageKind::Disk, "base"),
        (&fx.kernel, ImageKind::Kernel, "k"),
        (&fx.initrd, ImageKind::Initrd, "i"),
    ] {
        let name = NodeImageName::try_from(name).expect("name");
        images.import_file(file, &name, kind).await.expect("import");
    }
    let listed = images.list().await.expect("list");
    let disk = listed.iter().find(|i| i.name == "base").expect("the disk");
    assert_eq!(disk.kind, ImageKind::Disk);
    assert_eq!(disk.format, "qcow2", "{disk:?}");
    let hex = disk
        .digest
        .strip_prefix("sha256:")
        .expect("a sha256 digest");
    let stored = fx.dir.path().join("images").join("disk").join(hex);
    assert_eq!(sha256(&fx.base), hex, "the store holds the file imported");

    let mut spec = fx.vm("");
    spec.image = Some("base".to_owned());
    spec.kernel = Some("k".into());
    spec.initrd = Some("i".into());
    let vm = instance(&unique("stored"), spec.clone());
    d.create(&vm).await.expect("create");
    let info = qemu_img_info(&d.overlay_path(&vm).expect("a UUID id"));
    assert_eq!(
        info["backing-filename"].as_str(),
        Some(&*stored.to_string_lossy()),
        "{info}"
    );
    d.start(&vm).await.expect("start");
    super::wait_for_boots(d, &vm, 1).await;
    d.delete(&vm).await.expect("delete");
    assert_nothing_left(d, &vm).await;
    assert_eq!(sha256(&stored), hex, "the store's disk image was written");

    spec.image = Some("no-such-disk".to_owned());
    let missing = instance(&unique("missing"), spec);
    let err = d.create(&missing).await.expect_err("no such image");
    assert_eq!(err.kind(), zixiao_core::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("spec.image"), "{err}");
    assert_nothing_left(d, &missing).await;
}
