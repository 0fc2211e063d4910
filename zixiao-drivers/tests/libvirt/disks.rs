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
    let info = qemu_img_info(&d.overlay_path(&backed));
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
    let info = qemu_img_info(&d.overlay_path(&blank));
    assert_eq!(info["virtual-size"], 2u64 << 30);
    assert!(info.get("backing-filename").is_none(), "{info}");

    for vm in [&backed, &blank] {
        d.delete(vm).await.expect("delete");
        assert_nothing_left(d, vm).await;
    }
    assert!(fx.base.exists(), "the base image is never touched");
}
