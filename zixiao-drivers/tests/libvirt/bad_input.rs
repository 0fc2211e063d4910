//! Bad input against the real daemon: each is refused with the right error
//! kind, naming the cause, and leaves no domain and no file behind.

use zixiao_core::{Driver, ErrorKind, Instance};

use super::{assert_nothing_left, fixture, instance, unique};

async fn refused(
    driver: &zixiao_drivers::libvirt::LibvirtDriver,
    vm: &Instance,
    kind: ErrorKind,
    says: &str,
) {
    let err = driver.create(vm).await.expect_err("bad input is refused");
    let message = format!("{err}");
    assert_eq!(err.kind(), kind, "{message}");
    assert!(message.contains(says), "`{message}` does not say `{says}`");
    assert_nothing_left(driver, vm).await;
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing_behind() {
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;

    let mut spec = fx.vm("");
    spec.image = Some("/nonexistent/base.qcow2".to_owned());
    refused(
        d,
        &instance(&unique("noimage"), spec),
        ErrorKind::NotFound,
        "/nonexistent/base.qcow2",
    )
    .await;

    let mut spec = fx.vm("");
    spec.kernel = Some("/nonexistent/vmlinuz".into());
    refused(
        d,
        &instance(&unique("nokernel"), spec),
        ErrorKind::NotFound,
        "kernel /nonexistent/vmlinuz",
    )
    .await;

    // A 2 GiB base (sparse) and a 1 GiB disk asked.
    let big = fx.dir.path().join("big.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&big)
        .arg("2G")
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let mut spec = fx.vm("");
    spec.image = Some(big.to_string_lossy().into_owned());
    spec.disk_gib = 1;
    refused(
        d,
        &instance(&unique("small"), spec),
        ErrorKind::InvalidArgument,
        "spec.disk_gib",
    )
    .await;

    let host = d.host().clone();
    let mut spec = fx.vm("");
    spec.memory_mib = host.memory_mib + 1024;
    refused(
        d,
        &instance(&unique("bigmem"), spec),
        ErrorKind::ResourceExhausted,
        "spec.memory_mib",
    )
    .await;
    let mut spec = fx.vm("");
    spec.cpus = zixiao_core::Cpus::cores(host.cpus + 1);
    refused(
        d,
        &instance(&unique("bigcpu"), spec),
        ErrorKind::ResourceExhausted,
        "spec.cpus",
    )
    .await;

    // Not a disk image at all.
    let junk = fx.dir.path().join("junk.img");
    std::fs::write(&junk, b"").expect("junk");
    let mut spec = fx.vm("");
    spec.image = Some(junk.to_string_lossy().into_owned());
    refused(
        d,
        &instance(&unique("junk"), spec),
        ErrorKind::InvalidArgument,
        "spec.image",
    )
    .await;

    // Bases that are not one stand-alone raw or qcow2 file: qemu-img
    // would make the VM's disk out of another file of the host.
    let qemu_img = |args: &[&str]| {
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q"])
            .args(args)
            .status()
            .expect("qemu-img");
        assert!(made.success(), "qemu-img create {args:?}");
    };
    let path = |name: &str| fx.dir.path().join(name).to_string_lossy().into_owned();
    let (plain, gone) = (path("plain.raw"), path("gone.raw"));
    let (chained, orphan) = (path("chained.qcow2"), path("orphan.qcow2"));
    let (data, external, vmdk) = (path("data.raw"), path("external.qcow2"), path("disk.vmdk"));
    qemu_img(&["-f", "raw", &plain, "64M"]);
    qemu_img(&["-f", "raw", &gone, "64M"]);
    qemu_img(&["-f", "qcow2", "-F", "raw", "-b", &plain, &chained]);
    qemu_img(&["-f", "qcow2", "-F", "raw", "-b", &gone, &orphan]);
    qemu_img(&[
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={data}"),
        &external,
        "64M",
    ]);
    qemu_img(&["-f", "vmdk", &vmdk, "64M"]);
    std::fs::remove_file(&gone).expect("orphan an overlay");
    for (base, says) in [
        (&chained, "backing file"),
        (&orphan, "gone.raw"),
        (&external, "external file"),
        (&vmdk, "bases are raw or qcow2"),
    ] {
        let mut spec = fx.vm("");
        spec.image = Some(base.clone());
        refused(
            d,
            &instance(&unique("chain"), spec),
            ErrorKind::InvalidArgument,
            says,
        )
        .await;
    }

    // A domain of that name that is someone else's, and an id that is no
    // UUID but a path: refused naming the id, before anything is made or
    // removed. (With a UUID id the new domain is named after its id
    // instead; see `recovery`.)
    let name = unique("clash");
    let other = instance(&name, fx.vm(""));
    d.create(&other).await.expect("create the other");
    let mut ours = instance(&name, fx.vm(""));
    ours.id = "../..".to_owned();
    let err = d.create(&ours).await.expect_err("a path as id");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().starts_with("invalid id:"), "{err}");
    let err = d.delete(&ours).await.expect_err("a path as id");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        d.overlay_path(&other).expect("a UUID").exists(),
        "the other's disk is untouched"
    );
    d.delete(&other).await.expect("delete the other");
    assert_nothing_left(d, &other).await;
}
