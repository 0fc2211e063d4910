//! Disks, kernels and initrds pulled from the loopback registry
//! (`ZIXIAO_TEST_REGISTRY`) as OCI artifacts into the node's image store:
//! a VM boots from them, and an artifact that is not what it says (another
//! kind than asked for, a qcow2 with a backing file, a VMDK passed off as
//! raw, a kernel that is no kernel, a blob cut short) is refused and leaves
//! nothing the store lists or a later pull trusts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zixiao_core::driver::PullOptions;
use zixiao_core::model::{ImageKind, ImageRef};
use zixiao_core::{Driver, ErrorKind};
use zixiao_registry::manifest::{
    ARTIFACT_DISK_QCOW2, ARTIFACT_DISK_RAW, ARTIFACT_INITRD, ARTIFACT_KERNEL, OCI_EMPTY,
    OCI_MANIFEST,
};
use zixiao_testing::canned_http::{CannedResponse, CannedServer};
use zixiao_testing::registry::{push_artifact, sha256_digest};
use zixiao_testing::wait::runtime_endpoint;

use super::{assert_nothing_left, fixture, instance, unique};

/// Pushes `file` as an artifact of `media_type` to this process's
/// repository `name` in `registry`, and returns its reference.
fn pushed(registry: &str, name: &str, media_type: &str, file: &Path) -> ImageRef {
    let image = format!("{registry}/h-ociart/{name}-{}:1", std::process::id());
    push_artifact(&image, media_type, file).expect("push the artifact");
    ImageRef::try_from(image.as_str()).expect("a reference")
}

fn kind(kind: ImageKind) -> PullOptions {
    PullOptions {
        kind: Some(kind),
        ..PullOptions::default()
    }
}

fn qemu_img(args: &[&str]) {
    let status = std::process::Command::new("qemu-img")
        .args(args)
        .status()
        .expect("run qemu-img");
    assert!(status.success(), "qemu-img {args:?}");
}

/// What the store keeps on its way in: nothing once a pull has ended.
fn in_flight(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("images").join("tmp"))
        .map(|entries| entries.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_vm_boots_from_a_pulled_disk_kernel_and_initrd() {
    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;
    let images = d
        .images()
        .expect("the vm driver keeps the node's image store");
    let disk = pushed(&registry, "base", ARTIFACT_DISK_QCOW2, &fx.base);
    let kernel = pushed(&registry, "kernel", ARTIFACT_KERNEL, &fx.kernel);
    let initrd = pushed(&registry, "initrd", ARTIFACT_INITRD, &fx.initrd);

    // The kind comes from the media types when none is asked for.
    let events = std::sync::Mutex::new(0usize);
    let pulled_disk = images
        .pull(&disk, &PullOptions::default(), &|_| {
            *events.lock().expect("lock") += 1;
        })
        .await
        .expect("pull the disk");
    assert!(*events.lock().expect("lock") >= 2, "progress was told");
    assert_eq!(pulled_disk.kind, ImageKind::Disk);
    assert_eq!(pulled_disk.format, "qcow2");
    assert_eq!(pulled_disk.name, format!("base-{}-1", std::process::id()));
    assert_eq!(
        pulled_disk.size_bytes,
        std::fs::metadata(&fx.base).expect("base").len()
    );
    let pulled_kernel = images
        .pull(&kernel, &kind(ImageKind::Kernel), &|_| {})
        .await
        .expect("pull the kernel");
    let pulled_initrd = images
        .pull(&initrd, &kind(ImageKind::Initrd), &|_| {})
        .await
        .expect("pull the initrd");
    // Pulled again, nothing changes.
    assert_eq!(
        images
            .pull(&disk, &kind(ImageKind::Disk), &|_| {})
            .await
            .expect("pull again")
            .digest,
        pulled_disk.digest
    );
    assert!(in_flight(fx.dir.path()).is_empty());

    let mut spec = fx.vm("");
    spec.image = Some(pulled_disk.name.clone());
    spec.kernel = Some(pulled_kernel.name.clone().into());
    spec.initrd = Some(pulled_initrd.name.clone().into());
    let vm = instance(&unique("pulled"), spec);
    d.create(&vm).await.expect("create");
    d.start(&vm).await.expect("start");
    super::wait_for_boots(d, &vm, 1).await;
    d.delete(&vm).await.expect("delete");
    assert_nothing_left(d, &vm).await;
}

#[tokio::test]
async fn artifacts_that_are_not_what_they_say_are_refused_and_leave_nothing() {
    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let Some(fx) = fixture().await else {
        return;
    };
    let images = fx.driver.images().expect("the node's image store");
    let files = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| files.path().join(name);

    let backed = path("backed.qcow2");
    let base = fx.base.to_string_lossy().into_owned();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        &base,
        backed.to_str().expect("utf-8"),
    ]);
    let vmdk = path("disk.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        vmdk.to_str().expect("utf-8"),
        "1M",
    ]);
    let script = path("not-a-kernel");
    std::fs::write(&script, "#!/bin/sh\necho not a kernel\n").expect("write");
    let small = path("small.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        small.to_str().expect("utf-8"),
        "1M",
    ]);

    let cases = [
        (
            pushed(&registry, "backed", ARTIFACT_DISK_QCOW2, &backed),
            None,
            "backing file",
        ),
        (
            pushed(&registry, "vmdk", ARTIFACT_DISK_RAW, &vmdk),
            None,
            "VMDK",
        ),
        (
            pushed(&registry, "script", ARTIFACT_KERNEL, &script),
            None,
            "is not a kernel",
        ),
        (
            pushed(&registry, "small", ARTIFACT_DISK_QCOW2, &small),
            Some(ImageKind::Kernel),
            "a kernel image was asked for",
        ),
    ];
    for (reference, wanted, reason) in cases {
        let options = PullOptions {
            kind: wanted,
            ..PullOptions::default()
        };
        let err = images
            .pull(&reference, &options, &|_| {})
            .await
            .expect_err(reason);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{reference}: {err}");
        assert!(err.to_string().contains(reason), "{reference}: {err}");
        assert!(
            images.list().await.expect("list").is_empty(),
            "{reference} was stored"
        );
        assert!(
            in_flight(fx.dir.path()).is_empty(),
            "{:?}",
            in_flight(fx.dir.path())
        );
    }
}

/// A pull whose blob stops half way, and one whose process was killed
/// half way (what it leaves: a `pull-*` directory with part of the file),
/// leave nothing the store lists; the next pull starts afresh and stores
/// the whole file.
#[tokio::test]
async fn an_interrupted_pull_is_not_trusted_and_a_retry_stores_the_whole_file() {
    let Some(fx) = fixture().await else {
        return;
    };
    let images = fx.driver.images().expect("the node's image store");
    let kernel = std::fs::read(&fx.kernel).expect("the test kernel");
    let digest = sha256_digest(&kernel);
    let serve = |body: Vec<u8>| {
        let config_digest = sha256_digest(b"{}");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_KERNEL,
            "config": {"mediaType": OCI_EMPTY, "digest": config_digest, "size": 2},
            "layers": [{"mediaType": ARTIFACT_KERNEL, "digest": digest, "size": kernel.len()}],
        });
        let routes = HashMap::from([
            (
                "/v2/vmlinuz/manifests/1".to_owned(),
                CannedResponse::ok(OCI_MANIFEST, manifest.to_string()),
            ),
            (
                format!("/v2/vmlinuz/blobs/{digest}"),
                CannedResponse::ok("application/octet-stream", body),
            ),
        ]);
        CannedServer::start(routes)
    };

    let half = serve(kernel[..kernel.len() / 2].to_vec())
        .await
        .expect("server");
    let reference = ImageRef::try_from(format!("{}/vmlinuz:1", half.address())).expect("ref");
    let err = images
        .pull(&reference, &PullOptions::default(), &|_| {})
        .await
        .expect_err("half a kernel");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("ended after"), "{err}");
    assert!(images.list().await.expect("list").is_empty());
    assert!(in_flight(fx.dir.path()).is_empty());

    // What a process killed mid-pull leaves behind.
    let killed = fx.dir.path().join("images").join("tmp").join("pull-killed");
    std::fs::create_dir_all(&killed).expect("mkdir");
    std::fs::write(killed.join("kernel"), &kernel[..kernel.len() / 2]).expect("write");
    assert!(images.list().await.expect("list").is_empty());

    let whole = serve(kernel.clone()).await.expect("server");
    let reference = ImageRef::try_from(format!("{}/vmlinuz:1", whole.address())).expect("ref");
    let stored = images
        .pull(&reference, &PullOptions::default(), &|_| {})
        .await
        .expect("the retry");
    assert_eq!(stored.name, "vmlinuz-1");
    assert_eq!(stored.digest, digest);
    let path = fx
        .dir
        .path()
        .join("images")
        .join("kernel")
        .join(digest.trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(path).expect("the stored kernel"), kernel);
}

/// `spec.pull` for the node's image store, against the loopback registry
/// (no VM boots: the store alone): `never` refuses an initrd the store
/// lacks, naming the field and the reference, and pulls nothing;
/// `missing` pulls it once and keeps it when the tag moves; `always`
/// takes the moved tag's content under the reference's name, the old
/// content staying listed under its digest's name for what boots from it.
#[tokio::test]
async fn the_node_store_pulls_as_the_pull_policy_says() {
    use zixiao_core::model::{NodeImageName, PullPolicy};
    use zixiao_core::InstanceSpec;
    use zixiao_drivers::node_images::NodeImageStore;

    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = NodeImageStore::new(&dir.path().join("state"));
    let (old, new) = (dir.path().join("a.cpio"), dir.path().join("b.cpio"));
    std::fs::write(&old, b"070701 the old initrd").expect("write");
    std::fs::write(&new, b"070701 the new initrd").expect("write");
    let image = pushed(&registry, "policy-initrd", ARTIFACT_INITRD, &old);
    let mut spec = InstanceSpec::microvm("/boot/vmlinux");
    spec.kernel = None;
    spec.initrd = Some(image.to_string().into());
    let digests = || -> HashMap<String, String> {
        store
            .list()
            .expect("list")
            .into_iter()
            .map(|i| (i.name, i.digest))
            .collect()
    };
    let name = NodeImageName::for_reference(&image).to_string();
    let sha = |file: &Path| sha256_digest(&std::fs::read(file).expect("read"));

    spec.pull = PullPolicy::Never;
    let err = store
        .pull_for(&spec, &PullOptions::default())
        .await
        .expect_err("never pulls");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("spec.initrd") && message.contains(&image.to_string()),
        "{message}"
    );
    assert!(digests().is_empty() && in_flight(&dir.path().join("state")).is_empty());

    spec.pull = PullPolicy::Missing;
    store
        .pull_for(&spec, &PullOptions::default())
        .await
        .expect("missing");
    assert_eq!(digests(), HashMap::from([(name.clone(), sha(&old))]));

    // The tag moves to other content.
    push_artifact(&image.to_string(), ARTIFACT_INITRD, &new).expect("push again");
    for policy in [PullPolicy::Missing, PullPolicy::Never] {
        spec.pull = policy;
        store
            .pull_for(&spec, &PullOptions::default())
            .await
            .expect("held");
        assert_eq!(digests().get(&name), Some(&sha(&old)), "{policy} keeps it");
    }

    spec.pull = PullPolicy::Always;
    store
        .pull_for(&spec, &PullOptions::default())
        .await
        .expect("always");
    let old_hex = sha(&old).trim_start_matches("sha256:")[..12].to_owned();
    let kept = format!("policy-initrd-{}-sha256-{old_hex}", std::process::id());
    assert_eq!(
        digests(),
        HashMap::from([(name.clone(), sha(&new)), (kept, sha(&old))]),
        "the name holds the new content; the old keeps its digest's name"
    );
    let file = store
        .resolve(
            "spec.initrd",
            ImageKind::Initrd,
            Path::new(&image.to_string()),
        )
        .expect("resolve");
    assert_eq!(std::fs::read(file).expect("read"), b"070701 the new initrd");
    // Pulled again with nothing moved: no change.
    store
        .pull_for(&spec, &PullOptions::default())
        .await
        .expect("again");
    assert_eq!(digests().len(), 2);
    assert!(in_flight(&dir.path().join("state")).is_empty());
}

/// A VM whose disk the node lacks, created under `never`: refused as
/// `FailedPrecondition` naming the disk's reference, and nothing of it
/// is left (no domain, no overlay, nothing pulled).
#[tokio::test]
async fn a_vm_under_never_is_refused_when_its_disk_is_missing() {
    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let Some(fx) = fixture().await else {
        return;
    };
    let d = &fx.driver;
    let disk = pushed(&registry, "never-disk", ARTIFACT_DISK_QCOW2, &fx.base);
    let mut spec = fx.vm("");
    spec.image = Some(disk.to_string());
    spec.pull = zixiao_core::model::PullPolicy::Never;
    let vm = instance(&unique("pull-never"), spec);
    let err = d.create(&vm).await.expect_err("never pulls");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains(&disk.to_string()), "{err}");
    let images = d.images().expect("images").list().await.expect("list");
    assert!(images.is_empty(), "{images:?}");
    assert_nothing_left(d, &vm).await;
}
