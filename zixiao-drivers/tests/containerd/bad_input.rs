//! Bad input: each gives an error of the right kind naming the cause, and
//! leaves no container, snapshot, lease or ingest behind.

use std::path::Path;

use zixiao_core::driver::Images;
use zixiao_core::model::PullPolicy;
use zixiao_core::{Driver, ErrorKind, InstanceSpec};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};

use super::images::{tar_files, write_tar};
use super::{busybox, fixture, fixture_with, instance, Fixture};

async fn assert_clean(fx: &Fixture) {
    let left = fx.leftovers().await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn unknown_image_is_not_found() {
    let Some(fx) = fixture("unknown-image").await else {
        return;
    };
    // Under `never` nothing reaches a registry (none is reachable here
    // but loopback): the image is missing, named, and nothing is made.
    let mut spec = busybox(&["true"]);
    spec.image = Some("nosuchimage:1".into());
    spec.pull = PullPolicy::Never;
    let err = fx
        .driver
        .create(&instance("x", spec))
        .await
        .expect_err("no such image");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("`nosuchimage:1`"), "{err}");
    let mut spec = busybox(&["true"]);
    spec.image = Some("Not A Ref".into());
    let err = fx
        .driver
        .create(&instance("x", spec))
        .await
        .expect_err("malformed");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("spec.image"), "{err}");
    assert_clean(&fx).await;
    fx.finish().await;
}

#[tokio::test]
async fn corrupt_or_missing_archives_are_rejected() {
    let Some(fx) = fixture("corrupt").await else {
        return;
    };
    let before = fx.driver.list().await.expect("list");
    let dir = fx.dir.path();

    let missing = fx
        .driver
        .import(&dir.join("nope.tar"), None, &|_| {})
        .await
        .expect_err("missing");
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    assert!(missing.to_string().contains("nope.tar"), "{missing}");

    let garbage = dir.join("garbage.tar");
    std::fs::write(&garbage, vec![0x42u8; 4096]).expect("write");
    let err = fx
        .driver
        .import(&garbage, None, &|_| {})
        .await
        .expect_err("garbage");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("garbage.tar"), "{err}");

    // A layer whose bytes do not match its digest: containerd refuses the
    // commit, and the import takes back everything it wrote.
    let mut files: Vec<(String, Vec<u8>)> = tar_files(&fx.busybox).into_iter().collect();
    let (name, data) = files
        .iter_mut()
        .max_by_key(|(_, d)| d.len())
        .expect("a layer");
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    let corrupt_blob = name.clone();
    let corrupt = dir.join("corrupt.oci.tar");
    // Under another name, so the blob is not already in the store.
    files.retain(|(n, _)| n != "index.json");
    let index = tar_files(&fx.busybox).remove("index.json").expect("index");
    let index = String::from_utf8(index)
        .expect("utf8")
        .replace("\"latest\"", "\"other:v2\"");
    files.push(("index.json".into(), index.into_bytes()));
    write_tar(&corrupt, &files);
    // Remove the good image first so the corrupt blob is really written.
    fx.driver.remove("busybox").await.expect("remove busybox");
    let err = fx
        .driver
        .import(&corrupt, None, &|_| {})
        .await
        .expect_err("corrupt");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let digest = corrupt_blob.trim_start_matches("blobs/sha256/");
    assert!(
        format!("{err}").contains(digest),
        "{err} should name {digest}"
    );
    assert!(fx.driver.list().await.expect("list").is_empty());
    assert_clean(&fx).await;

    // An index naming a blob the archive lacks.
    let lacking = dir.join("lacking.oci.tar");
    let keep: Vec<(String, Vec<u8>)> = tar_files(&fx.busybox)
        .into_iter()
        .filter(|(n, _)| n == "index.json" || n == "oci-layout")
        .collect();
    write_tar(&lacking, &keep);
    let err = fx
        .driver
        .import(&lacking, None, &|_| {})
        .await
        .expect_err("lacking");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("lacks blob"), "{err}");

    fx.driver
        .import(&fx.busybox, None, &|_| {})
        .await
        .expect("the good archive still imports");
    assert_eq!(fx.driver.list().await.expect("list").len(), before.len());
    assert_clean(&fx).await;
    fx.finish().await;
}

#[tokio::test]
async fn a_command_missing_from_the_image_fails_to_start() {
    let Some(fx) = fixture("no-command").await else {
        return;
    };
    let i = instance("ghost", busybox(&["/no/such/binary", "arg"]));
    fx.driver.create(&i).await.expect("create");
    let err = fx.driver.start(&i).await.expect_err("no such binary");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("spec.command"), "{err}");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    // No task is left: the container is as created.
    assert_eq!(
        fx.driver.inspect(&i).await.expect("inspect"),
        zixiao_core::RuntimeState::Created
    );
    fx.driver.delete(&i).await.expect("delete");
    assert_clean(&fx).await;
    fx.finish().await;
}

#[tokio::test]
async fn limits_below_what_runc_honours_are_rejected_before_anything_is_made() {
    let Some(fx) = fixture("limits").await else {
        return;
    };
    let tiny = instance("tiny", busybox(&["true"]).with_size(1, 3));
    let err = fx.driver.create(&tiny).await.expect_err("3 MiB");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("spec.memory_mib"), "{err}");
    let mut no_pids = instance("nopids", busybox(&["true"]));
    no_pids.labels.insert(
        zixiao_drivers::containerd::spec::PIDS_LIMIT_LABEL.into(),
        "0".into(),
    );
    let err = fx.driver.create(&no_pids).await.expect_err("0 pids");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("pids-limit"), "{err}");
    assert_eq!(
        fx.driver.inspect(&tiny).await.expect("inspect"),
        zixiao_core::RuntimeState::Missing
    );
    assert_clean(&fx).await;
    fx.finish().await;
}

#[tokio::test]
async fn containerd_not_running_is_unavailable_naming_the_socket() {
    let Some(fx) = fixture("unreachable").await else {
        return;
    };
    let dir = fx.dir.path();
    let missing = dir.join("missing.sock");
    let err = ContainerdDriver::connect(ContainerdOptions::new(&missing, dir))
        .await
        .expect_err("no socket");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("missing.sock"), "{err}");
    // A socket file nobody listens on (a containerd that died).
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let err = ContainerdDriver::connect(ContainerdOptions::new(&stale, dir))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("stale.sock"), "{err}");
    assert!(Path::new(&stale).exists());
    fx.finish().await;
}

/// The hex sha256 of `data`, as OCI blob names and digests use it.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The files of an OCI archive being rewritten.
struct Rewrite {
    files: std::collections::HashMap<String, Vec<u8>>,
}

impl Rewrite {
    /// The blob named by `digest` (`sha256:HEX`).
    fn blob(&self, digest: &serde_json::Value) -> &[u8] {
        let hex = digest
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        &self.files[&format!("blobs/sha256/{hex}")]
    }

    fn json(&self, digest: &serde_json::Value) -> serde_json::Value {
        serde_json::from_slice(self.blob(digest)).expect("a JSON blob")
    }

    /// Adds `bytes` as a blob; returns its digest and size.
    fn put(&mut self, bytes: Vec<u8>) -> (String, usize) {
        let hex = sha256_hex(&bytes);
        let size = bytes.len();
        self.files.insert(format!("blobs/sha256/{hex}"), bytes);
        (format!("sha256:{hex}"), size)
    }

    fn put_json(&mut self, value: &serde_json::Value) -> (String, usize) {
        self.put(serde_json::to_vec(value).expect("json"))
    }
}

/// Busybox's OCI archive with its manifest as `edit` changes it (it may
/// add blobs), stored again under its new digest, written to `name` in the
/// fixture's directory.
fn rewritten_busybox(
    fx: &Fixture,
    name: &str,
    edit: impl FnOnce(&mut Rewrite, &mut serde_json::Value),
) -> std::path::PathBuf {
    let mut archive = Rewrite {
        files: tar_files(&fx.busybox),
    };
    let mut index: serde_json::Value =
        serde_json::from_slice(&archive.files["index.json"]).expect("index.json");
    let mut manifest = archive.json(&index["manifests"][0]["digest"]);
    edit(&mut archive, &mut manifest);
    let (digest, size) = archive.put_json(&manifest);
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    archive.files.insert(
        "index.json".into(),
        serde_json::to_vec(&index).expect("json"),
    );
    let path = fx.dir.path().join(name);
    let files: Vec<(String, Vec<u8>)> = archive.files.into_iter().collect();
    write_tar(&path, &files);
    path
}

/// An image whose config names content (`rootfs.diff_ids`) other than what
/// its layer unpacks to. Snapshots are shared by chain id, so unpacking it
/// would hand that layer to any image naming the forged chain: the import
/// is refused, naming the layer and the forged diff_id, and keeps nothing.
#[tokio::test]
async fn an_image_whose_layer_is_not_its_diff_id_is_refused() {
    let Some(fx) = fixture("diffid").await else {
        return;
    };
    let before = fx.driver.list().await.expect("list");
    let forged = format!("sha256:{}", "ab".repeat(32));
    let archive = rewritten_busybox(&fx, "forged.oci.tar", |archive, manifest| {
        let mut config = archive.json(&manifest["config"]["digest"]);
        config["rootfs"]["diff_ids"][0] = serde_json::Value::String(forged.clone());
        let (digest, size) = archive.put_json(&config);
        manifest["config"]["digest"] = digest.into();
        manifest["config"]["size"] = size.into();
    });

    let err = fx
        .driver
        .import(&archive, None, &|_| {})
        .await
        .expect_err("an inconsistent image is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains(&forged) && err.to_string().contains("diff_ids"),
        "{err}"
    );
    let after = fx.driver.list().await.expect("list");
    assert_eq!(
        after.len(),
        before.len(),
        "no image named by the refused import: {after:?}"
    );
    assert_clean(&fx).await;
    fx.finish().await;
}

/// Busybox's archive with its layer recompressed as zstd (same tar, so the
/// same diff_id; new blob digest, size and media type).
fn busybox_as_zstd(fx: &Fixture) -> std::path::PathBuf {
    use std::io::Read;
    rewritten_busybox(fx, "busybox-zstd.oci.tar", |archive, manifest| {
        let layer = &manifest["layers"][0];
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(archive.blob(&layer["digest"]))
            .read_to_end(&mut tar)
            .expect("gunzip the layer");
        let zstd = ruzstd::encoding::compress_to_vec(
            tar.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let (digest, size) = archive.put(zstd);
        manifest["layers"][0] = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
            "digest": digest,
            "size": size,
        });
    })
}

/// A layer that unpacks to more than the node's cap is refused before
/// containerd writes it, whatever its compressed size or compression:
/// busybox's one layer (about 2 MiB gzip) unpacks to over 4 MiB, and so
/// does the same layer as zstd (before, zstd went to containerd
/// unmeasured). Under a cap it fits, each imports and runs.
#[tokio::test]
async fn a_layer_that_unpacks_beyond_the_cap_is_refused_and_nothing_is_kept() {
    let Some(fx) = fixture_with("layer-cap", |mut options| {
        options.max_layer_bytes = 1 << 20;
        options
    })
    .await
    else {
        return;
    };
    let roomy = ContainerdDriver::connect(ContainerdOptions {
        max_layer_bytes: 64 << 20,
        ..fx.driver.options().clone()
    })
    .await
    .expect("connect");
    for (compression, archive) in [("gzip", fx.busybox.clone()), ("zstd", busybox_as_zstd(&fx))] {
        let err = fx
            .driver
            .import(&archive, None, &|_| {})
            .await
            .expect_err("a layer over the cap is refused");
        assert_eq!(
            err.kind(),
            ErrorKind::ResourceExhausted,
            "{compression}: {err}"
        );
        assert!(
            err.to_string().contains("more than 1 MiB")
                && err.to_string().contains("max_layer_bytes"),
            "{compression}: {err}"
        );
        let images = fx.driver.list().await.expect("list");
        assert!(images.is_empty(), "nothing named: {images:?}");
        assert_clean(&fx).await;

        let imported = roomy
            .import(&archive, None, &|_| {})
            .await
            .expect("import under a cap it fits");
        assert_eq!(imported.len(), 1, "{imported:?}");
        let spec = InstanceSpec::container(&imported[0].name)
            .with_command(["echo", &format!("unpacked-from-{compression}")]);
        let i = instance(&format!("from-{compression}"), spec);
        roomy.create(&i).await.expect("create");
        roomy.start(&i).await.expect("start");
        fx.wait_log_lines(&i, &[&format!("unpacked-from-{compression}")])
            .await;
        roomy.delete(&i).await.expect("delete");
        roomy
            .remove(&imported[0].name)
            .await
            .expect("remove the image");
    }
    fx.finish().await;
}
