//! Zixiao's VM artifacts (a disk, kernel or initrd as an OCI artifact):
//! pulled from the loopback registry (`ZIXIAO_TEST_REGISTRY`, pushed there
//! with skopeo from a layout the test writes) into a file whose digest was
//! verified as it streamed; refused, leaving nothing, when the kind is not
//! the one asked for, when a canned registry serves bytes that do not hash
//! to the layer's digest, or when the blob stops half way.

use std::collections::HashMap;
use std::path::Path;

use zixiao_core::driver::{PullOptions, PullProgress};
use zixiao_core::model::{ImageKind, ImageRef};
use zixiao_core::ErrorKind;
use zixiao_registry::manifest::{ARTIFACT_DISK_QCOW2, ARTIFACT_KERNEL, OCI_EMPTY, OCI_MANIFEST};
use zixiao_testing::canned_http::{CannedResponse, CannedServer};
use zixiao_testing::registry::sha256_digest;
use zixiao_testing::wait::runtime_endpoint;

fn no_limit(_: ImageKind) -> u64 {
    u64::MAX
}

/// Pulls `reference` as an artifact of kind `wanted` (any, when `None`)
/// of at most `limit` bytes into a directory under `work`.
async fn pull(
    reference: &ImageRef,
    wanted: Option<ImageKind>,
    limit: u64,
    work: &Path,
) -> Result<zixiao_registry::PulledArtifact, zixiao_registry::RegistryError> {
    let limit = move |_: ImageKind| limit;
    zixiao_registry::pull_artifact(
        reference,
        &PullOptions::default(),
        wanted,
        &limit,
        work,
        &|_| {},
    )
    .await
}

/// A qcow2 image of `size` made by qemu-img in `dir`.
fn qcow2(dir: &Path, size: &str) -> std::path::PathBuf {
    let path = dir.join("disk.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg(size)
        .status()
        .expect("run qemu-img");
    assert!(made.success(), "qemu-img create");
    path
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_disk_artifact_is_pulled_verified_and_its_kind_checked() {
    let Some(registry) = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = qcow2(dir.path(), "16M");
    let image = format!("{registry}/h-ociart/disk-{}:1", std::process::id());
    let manifest_digest =
        zixiao_testing::registry::push_artifact(&image, ARTIFACT_DISK_QCOW2, &disk)
            .expect("push the artifact");
    let reference = ImageRef::try_from(image.as_str()).expect("ref");
    let work = dir.path().join("work");

    let events = std::sync::Mutex::new(Vec::new());
    let progress = |p: PullProgress| events.lock().expect("lock").push(p);
    let pulled = zixiao_registry::pull_artifact(
        &reference,
        &PullOptions::default(),
        None,
        &no_limit,
        &work,
        &progress,
    )
    .await
    .expect("pull the disk");
    let bytes = std::fs::read(&disk).expect("read the disk");
    assert_eq!(pulled.kind, ImageKind::Disk);
    assert_eq!(pulled.media_type, ARTIFACT_DISK_QCOW2);
    assert_eq!(pulled.manifest_digest, manifest_digest);
    assert_eq!(pulled.digest, sha256_digest(&bytes));
    assert_eq!(pulled.size_bytes, bytes.len() as u64);
    assert_eq!(std::fs::read(pulled.file()).expect("the file"), bytes);
    let events = events.lock().expect("lock").clone();
    assert!(
        matches!(
            &events[..],
            [
                PullProgress::Resolved { blobs: 1, .. },
                PullProgress::Fetched {
                    index: 1,
                    count: 1,
                    ..
                }
            ]
        ),
        "{events:?}"
    );
    pulled.close().expect("close");
    assert!(leftovers(&work).is_empty(), "{:?}", leftovers(&work));

    // Asked for a kernel: refused naming both, before any blob.
    let err = pull(&reference, Some(ImageKind::Kernel), u64::MAX, &work)
        .await
        .expect_err("a disk is no kernel");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("a disk artifact") && message.contains("a kernel image was asked for"),
        "{message}"
    );
    // A size over the caller's limit for its kind is refused before the fetch.
    let err = pull(&reference, Some(ImageKind::Disk), 1024, &work)
        .await
        .expect_err("over the limit");
    assert!(err.to_string().contains("more than the 1024"), "{err}");
    // The container path refuses an artifact and says how to pull it.
    let err = zixiao_registry::pull(&reference, &PullOptions::default(), &work, &|_| {})
        .await
        .expect_err("not a container image");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("--kind disk"), "{err}");
    assert!(leftovers(&work).is_empty(), "{:?}", leftovers(&work));
}

#[tokio::test]
async fn a_container_image_is_not_an_artifact() {
    let Some(busybox) = runtime_endpoint("ZIXIAO_TEST_REGISTRY_BUSYBOX", "the loopback registry")
    else {
        return;
    };
    let reference = ImageRef::try_from(busybox.as_str()).expect("ref");
    let dir = tempfile::tempdir().expect("tempdir");
    let err = pull(&reference, Some(ImageKind::Disk), u64::MAX, dir.path())
        .await
        .expect_err("busybox is no disk");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("a container image"), "{err}");
    let err = pull(&reference, None, u64::MAX, dir.path())
        .await
        .expect_err("busybox is no artifact");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(leftovers(dir.path()).is_empty());
}

/// A canned registry serving a kernel artifact whose manifest says
/// `layer_digest` and `layer_size` for the blob it serves as `served`.
async fn canned_kernel(layer_digest: &str, layer_size: usize, served: &[u8]) -> CannedServer {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_KERNEL,
        "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [{"mediaType": ARTIFACT_KERNEL, "digest": layer_digest, "size": layer_size}],
    });
    let routes = HashMap::from([
        (
            "/v2/k/manifests/1".to_owned(),
            CannedResponse::ok(OCI_MANIFEST, manifest.to_string()),
        ),
        (
            format!("/v2/k/blobs/{layer_digest}"),
            CannedResponse::ok("application/octet-stream", served.to_vec()),
        ),
    ]);
    CannedServer::start(routes).await.expect("canned registry")
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_or_stops_short_leaves_nothing() {
    let kernel = b"\x7fELF\x02\x01\x01\0 a kernel".to_vec();
    let dir = tempfile::tempdir().expect("tempdir");
    let pull_from = |server: &CannedServer| {
        let reference = ImageRef::try_from(format!("{}/k:1", server.address())).expect("ref");
        let work = dir.path().to_owned();
        async move { pull(&reference, Some(ImageKind::Kernel), u64::MAX, &work).await }
    };

    let mut evil = kernel.clone();
    evil[9] ^= 1;
    let server = canned_kernel(&sha256_digest(&kernel), kernel.len(), &evil).await;
    let err = pull_from(&server)
        .await
        .expect_err("the digest does not match");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("hash to"), "{err}");
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    // The connection ends half way: what came is not kept.
    let server = canned_kernel(&sha256_digest(&kernel), kernel.len(), &kernel[..8]).await;
    let err = pull_from(&server).await.expect_err("half a blob");
    assert!(err.to_string().contains("ended after 8 of"), "{err}");
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    // Served whole, the same pull succeeds.
    let server = canned_kernel(&sha256_digest(&kernel), kernel.len(), &kernel).await;
    let pulled = pull_from(&server).await.expect("a good pull");
    assert_eq!(std::fs::read(pulled.file()).expect("file"), kernel);
}
