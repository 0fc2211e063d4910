//! Images: importing OCI layouts and docker archives, listing, removing.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use zixiao_core::driver::{Images, ImportProgress};
use zixiao_core::{Driver, DriverError, ErrorKind, RuntimeState};

use super::{busybox, fixture, instance};

/// Every file of a tar, by name without `./`.
pub(crate) fn tar_files(path: &Path) -> HashMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("open archive"));
    let mut files = HashMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        files.insert(name, data);
    }
    files
}

/// Writes `files` as a tar at `path`.
pub(crate) fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).expect("create tar"));
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, data.as_slice())
            .expect("append");
    }
    builder.finish().expect("finish tar");
}

fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.trim_start_matches("sha256:");
    files
        .get(&format!("blobs/sha256/{hex}"))
        .expect("blob in layout")
}

/// The busybox OCI layout rewritten as `docker save` would write it.
fn docker_archive(oci: &Path, out: &Path, tag: &str) {
    let files = tar_files(oci);
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
    let manifest: serde_json::Value = serde_json::from_slice(blob(
        &files,
        index["manifests"][0]["digest"].as_str().expect("digest"),
    ))
    .expect("manifest");
    let config_digest = manifest["config"]["digest"].as_str().expect("config");
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    let mut entries = vec![(config_name.clone(), blob(&files, config_digest).to_vec())];
    let mut layers = Vec::new();
    for (n, layer) in manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .enumerate()
    {
        let name = format!("layer{n}/layer.tar");
        entries.push((
            name.clone(),
            blob(&files, layer["digest"].as_str().expect("digest")).to_vec(),
        ));
        layers.push(name);
    }
    let docker_manifest =
        serde_json::json!([{ "Config": config_name, "RepoTags": [tag], "Layers": layers }]);
    entries.push((
        "manifest.json".to_owned(),
        serde_json::to_vec(&docker_manifest).expect("json"),
    ));
    write_tar(out, &entries);
}

#[tokio::test]
async fn imports_oci_layouts_and_docker_archives_lists_and_removes() {
    let Some(fx) = fixture("images").await else {
        return;
    };
    // Importing again is idempotent, and progress ends at the archive's size.
    let seen = Mutex::new(Vec::<ImportProgress>::new());
    let images = fx
        .driver
        .import(&fx.busybox, None, &|p| seen.lock().expect("lock").push(p))
        .await
        .expect("import again");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "docker.io/library/busybox:latest");
    let seen = seen.into_inner().expect("lock");
    let total = std::fs::metadata(&fx.busybox).expect("stat").len();
    assert_eq!(
        seen.last().copied(),
        Some(ImportProgress { done: total, total })
    );
    assert!(
        seen.windows(2).all(|w| w[0].done <= w[1].done),
        "progress only grows"
    );

    let archive = fx.dir.path().join("dockerbox.tar");
    docker_archive(&fx.busybox, &archive, "dockerbox:v1");
    let imported = fx
        .driver
        .import(&archive, None, &|_| {})
        .await
        .expect("import docker archive");
    assert_eq!(imported[0].name, "docker.io/library/dockerbox:v1");
    let names = fx.image_names().await;
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:latest",
            "docker.io/library/dockerbox:v1"
        ]
    );
    assert!(fx
        .driver
        .list()
        .await
        .expect("list")
        .iter()
        .all(|i| i.size_bytes > 1_000_000));

    // A container of the docker-archive image runs, and pins its image.
    let mut spec = busybox(&["echo", "from docker"]);
    spec.image = Some("dockerbox:v1".into());
    let i = instance("docker", spec);
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    fx.wait_state(&i, "exit", |s| matches!(s, RuntimeState::Exited { .. }))
        .await;
    fx.wait_log_lines(&i, &["from docker"]).await;
    let busy = fx.driver.remove("dockerbox:v1").await.expect_err("in use");
    assert_eq!(busy.kind(), ErrorKind::FailedPrecondition, "{busy}");
    fx.driver.delete(&i).await.expect("delete");
    fx.driver.remove("dockerbox:v1").await.expect("remove");
    assert!(matches!(
        fx.driver.remove("dockerbox:v1").await,
        Err(DriverError::NotFound(_))
    ));
    let names = fx.image_names().await;
    assert_eq!(names, ["docker.io/library/busybox:latest"]);
    fx.finish().await;
}
