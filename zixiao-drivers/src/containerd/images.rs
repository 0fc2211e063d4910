//! Images: importing local archives into containerd's content and image
//! stores, unpacking their layers into snapshots, resolving an instance's
//! image reference, listing and removing. A pull from a registry
//! (zixiao-registry) arrives here as a verified OCI layout archive and takes
//! the import's path, so both are checked and stored one way.

use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image,
    ListContainersRequest, ListImagesRequest, UpdateImageRequest,
};
use containerd_client::types::Descriptor as ProtoDescriptor;
use serde::{Deserialize, Serialize};
use zixiao_core::driver::{ImageInfo, ImportProgress, PullOptions, PullProgress};
use zixiao_core::model::{ImageName, ImageRef};
use zixiao_core::DriverError;

use super::archive::{self, Archive, Entry, MAX_JSON_BYTES};
use super::connection::{Connection, Lease};
use super::content::{self, Blob, Source};
use super::error::{invalid, is_already_exists, is_not_found};
use super::layer_size;
use super::spec::ImageConfig;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The annotation containerd (`ctr export`) stores an image's full name in.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest in an index (often only a tag).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI content descriptor, as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: i64,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub(crate) annotations: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
}

/// The platform of a manifest in an index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) architecture: String,
}

/// An image index (or Docker manifest list).
#[derive(Debug, Clone, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    media_type: String,
    pub(crate) config: Descriptor,
    #[serde(default)]
    pub(crate) layers: Vec<Descriptor>,
}

/// An image config file: the runtime config and the layers' diff ids.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub(crate) config: Option<ImageConfig>,
    #[serde(default)]
    rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// An image found for an instance, ready to unpack and run.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Its name in the image store.
    pub(crate) name: String,
    /// The manifest for this machine's platform.
    pub(crate) manifest: Manifest,
    /// Its config.
    pub(crate) config: ConfigFile,
}

impl Resolved {
    /// The chain id of the image's top layer: the snapshot a container's rootfs grows from.
    pub(crate) fn chain_id(&self) -> Result<String, DriverError> {
        chain_ids(&self.config.rootfs.diff_ids)
            .pop()
            .ok_or_else(|| invalid("spec.image", format!("image `{}` has no layers", self.name)))
    }
}

/// The chain ids of a stack of layers: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match chain.last() {
            None => diff.clone(),
            Some(parent) => archive::sha256_of(format!("{parent} {diff}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// The full name of an image reference, as Docker and nerdctl expand it:
/// `busybox` is `docker.io/library/busybox:latest`.
/// Errors: `InvalidArgument` on `field` for an empty or malformed reference.
pub(crate) fn normalize(reference: &str, field: &str) -> Result<String, DriverError> {
    let bad = |why: &str| {
        invalid(
            field,
            format!("`{reference}` is not an image reference: {why}"),
        )
    };
    if reference.is_empty() {
        return Err(bad("it is empty"));
    }
    if !reference
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
    {
        return Err(bad(
            "it has characters other than letters, digits and . _ - / : @",
        ));
    }
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    let (first, rest) = match name.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    let has_domain =
        rest.is_some() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = match (has_domain, rest) {
        (true, _) => name.to_owned(),
        (false, Some(_)) => format!("docker.io/{name}"),
        (false, None) => format!("docker.io/library/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if last.is_empty() || last.starts_with(':') {
        return Err(bad("the repository name is empty"));
    }
    if !last.contains(':') && digest.is_none() {
        full.push_str(":latest");
    }
    if let Some(digest) = digest {
        full.push('@');
        full.push_str(digest);
    }
    Ok(full)
}

/// The `GOARCH` name of this machine's architecture, as image indexes use
/// it (the registry client owns the mapping, and pulls choose by it too).
fn host_architecture() -> String {
    zixiao_registry::manifest::Platform::host().architecture
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Picks the manifest for this machine from an index's entries.
fn pick_platform<'a>(
    manifests: &'a [Descriptor],
    image: &str,
) -> Result<&'a Descriptor, DriverError> {
    let arch = host_architecture();
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| manifests.iter().find(|m| m.platform.is_none()))
        .ok_or_else(|| {
            invalid(
                "spec.image",
                format!("image `{image}` has no linux/{arch} manifest"),
            )
        })
}

fn parse<T: for<'de> Deserialize<'de>>(data: &[u8], what: &str) -> Result<T, DriverError> {
    serde_json::from_slice(data)
        .map_err(|e| invalid("image", format!("{what} is not valid JSON: {e}")))
}

/// Finds `reference` in the image store (as given, then by its full name)
/// and reads its manifest and config. Errors: `NotFound` naming the image,
/// `InvalidArgument` (a malformed reference or image).
pub(crate) async fn resolve(conn: &Connection, reference: &str) -> Result<Resolved, DriverError> {
    let full = normalize(reference, "spec.image")?;
    let mut client = ImagesClient::new(conn.client().channel());
    let mut found = None;
    for name in [reference, full.as_str()] {
        match client
            .get(conn.request(GetImageRequest {
                name: name.to_owned(),
            }))
            .await
        {
            Ok(response) => {
                found = response.into_inner().image;
                break;
            }
            Err(status) if is_not_found(&status) => {}
            Err(status) => return Err(conn.rpc_error(format!("look up image {name}"), status)),
        }
    }
    let Some(image) = found else {
        return Err(DriverError::NotFound(format!(
            "image `{reference}` ({full}; pull it with `zixiao image pull {reference}` or import it with `zixiao image import`)"
        )));
    };
    let target = image.target.unwrap_or_default();
    let mut descriptor = Descriptor {
        media_type: target.media_type,
        digest: target.digest,
        size: target.size,
        ..Descriptor::default()
    };
    // An index may nest indexes; two levels is more than any real image uses.
    for _ in 0..3 {
        let data = content::read(conn, &descriptor.digest, MAX_JSON_BYTES).await?;
        let value: serde_json::Value = parse(&data, &format!("manifest {}", descriptor.digest))?;
        if is_index(&descriptor.media_type) || value.get("manifests").is_some() {
            let index: Index = parse(&data, &format!("index {}", descriptor.digest))?;
            descriptor = pick_platform(&index.manifests, &image.name)?.clone();
            continue;
        }
        let manifest: Manifest = parse(&data, &format!("manifest {}", descriptor.digest))?;
        let config_data = content::read(conn, &manifest.config.digest, MAX_JSON_BYTES).await?;
        let config: ConfigFile =
            parse(&config_data, &format!("config {}", manifest.config.digest))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(invalid(
                "spec.image",
                format!(
                    "image `{}` lists {} layers but its config {} diff ids",
                    image.name,
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        return Ok(Resolved {
            name: image.name,
            manifest,
            config,
        });
    }
    Err(invalid(
        "spec.image",
        format!("image `{}` nests indexes too deeply", image.name),
    ))
}

/// Unpacks the image's layers into committed snapshots named by their chain
/// ids (skipping those that exist), under `lease`, and labels the config so
/// the snapshots live as long as the image. Returns the top chain id.
pub(crate) async fn unpack(
    conn: &Connection,
    lease: &Lease,
    snapshotter: &str,
    image: &Resolved,
) -> Result<String, DriverError> {
    let chain = chain_ids(&image.config.rootfs.diff_ids);
    let mut snapshots = SnapshotsClient::new(conn.client().channel());
    let mut parent = String::new();
    let mut unpacked_any = false;
    let layers = image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .zip(&chain);
    for ((layer, diff_id), chain_id) in layers {
        let stat = StatSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: chain_id.clone(),
        };
        match snapshots.stat(conn.request(stat)).await {
            Ok(_) => {
                parent = chain_id.clone();
                continue;
            }
            Err(status) if is_not_found(&status) => {}
            Err(status) => {
                return Err(conn.rpc_error(format!("look up snapshot {chain_id}"), status))
            }
        }
        let key = format!("zixiao-unpack-{}", uuid::Uuid::new_v4().simple());
        let target = Unpacked {
            key: &key,
            parent: &parent,
            diff_id,
            chain_id,
        };
        let applied = apply_layer(conn, lease, snapshotter, layer, &target).await;
        if applied.is_err() {
            let remove = RemoveSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.clone(),
            };
            // Best effort: the lease's release collects it anyway.
            let _ = snapshots.remove(conn.request(remove)).await;
        }
        applied?;
        unpacked_any = true;
        parent = chain_id.clone();
    }
    let top = image.chain_id()?;
    let label = format!("containerd.io/gc.ref.snapshot.{snapshotter}");
    let config = &image.manifest.config.digest;
    // A write to the metadata store costs a sync; most creates find the
    // image unpacked and labelled already.
    if unpacked_any || content::label(conn, config, &label).await?.as_deref() != Some(top.as_str())
    {
        content::set_labels(conn, config, HashMap::from([(label, top.clone())])).await?;
    }
    Ok(top)
}

/// Where one layer is unpacked: the active snapshot `key` on `parent`,
/// committed as `chain_id` once its content is the config's `diff_id`.
struct Unpacked<'a> {
    key: &'a str,
    parent: &'a str,
    diff_id: &'a str,
    chain_id: &'a str,
}

/// Unpacks `layer` into a snapshot and commits it under its chain id, but
/// only when what it unpacked to is the `diff_id` the image's config names:
/// snapshots are shared by chain id across images, so a layer committed
/// under a chain id its content does not have would become the root file
/// system of every other image naming that chain.
async fn apply_layer(
    conn: &Connection,
    lease: &Lease,
    snapshotter: &str,
    layer: &Descriptor,
    target: &Unpacked<'_>,
) -> Result<(), DriverError> {
    let Unpacked {
        key,
        parent,
        diff_id,
        chain_id,
    } = *target;
    let mut snapshots = SnapshotsClient::new(conn.client().channel());
    let prepare = PrepareSnapshotRequest {
        snapshotter: snapshotter.to_owned(),
        key: key.to_owned(),
        parent: parent.to_owned(),
        labels: HashMap::new(),
    };
    let mounts = snapshots
        .prepare(conn.leased(prepare, lease))
        .await
        .map_err(|s| conn.rpc_error(format!("prepare snapshot for layer {}", layer.digest), s))?
        .into_inner()
        .mounts;
    let apply = ApplyRequest {
        diff: Some(ProtoDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            annotations: HashMap::new(),
        }),
        mounts,
        payloads: HashMap::new(),
        sync_fs: false,
    };
    let applied = DiffClient::new(conn.client().channel())
        .apply(conn.leased(apply, lease))
        .await
        .map_err(|s| conn.rpc_error(format!("unpack layer {}", layer.digest), s))?
        .into_inner()
        .applied
        .map(|d| d.digest)
        .unwrap_or_default();
    if applied != diff_id {
        return Err(invalid(
            "image",
            format!(
                "layer {} unpacks to {applied}, but the image's config names its content \
                 {diff_id} (rootfs.diff_ids): the image is inconsistent, nothing of it was kept",
                layer.digest
            ),
        ));
    }
    let commit = CommitSnapshotRequest {
        snapshotter: snapshotter.to_owned(),
        name: chain_id.to_owned(),
        key: key.to_owned(),
        labels: HashMap::new(),
    };
    match snapshots.commit(conn.leased(commit, lease)).await {
        Ok(_) => Ok(()),
        // Another create unpacked the same layer first: use theirs.
        Err(status) if is_already_exists(&status) => {
            let remove = RemoveSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.to_owned(),
            };
            let _ = snapshots.remove(conn.request(remove)).await;
            Ok(())
        }
        Err(status) => Err(conn.rpc_error(format!("commit snapshot {chain_id}"), status)),
    }
}

/// What an archive holds: blobs to write and images to name.
#[derive(Debug, Default)]
struct ImportPlan {
    blobs: Vec<Blob>,
    images: Vec<(String, Descriptor)>,
}

/// The one image of an archive that is to be stored under `name`: the
/// digest every entry of `listing` names (one image may be listed under
/// several tags). Errors: `InvalidArgument` on `name` when the entries name
/// several images, since which one gets the name would be a guess.
fn only_image<'a>(
    mut images: impl Iterator<Item = &'a str>,
    name: &str,
    listing: &str,
) -> Result<&'a str, DriverError> {
    let first = images.next().unwrap_or_default();
    let mut others: Vec<&str> = images.filter(|d| *d != first).collect();
    if others.is_empty() {
        return Ok(first);
    }
    others.sort_unstable();
    others.dedup();
    Err(invalid(
        "name",
        format!(
            "`{name}` can name an archive of one image, and {listing} lists {}: {first}, {}; \
             import it without a name, or one image per archive",
            others.len() + 1,
            others.join(", ")
        ),
    ))
}

/// The name of an image in an OCI layout: containerd's annotation, a full
/// `org.opencontainers.image.ref.name`, or a bare tag on the archive's file
/// name (`busybox.oci.tar` with tag `latest` is `busybox:latest`).
fn layout_image_name(descriptor: &Descriptor, archive: &Path) -> Result<String, DriverError> {
    if let Some(name) = descriptor.annotations.get(CONTAINERD_NAME) {
        return normalize(name, "archive");
    }
    let Some(reference) = descriptor.annotations.get(OCI_REF_NAME) else {
        return Err(invalid(
            "archive",
            format!(
                "manifest {} in index.json has no name ({OCI_REF_NAME} or {CONTAINERD_NAME} \
                 annotation): give it one on import",
                descriptor.digest
            ),
        ));
    };
    if reference.contains('/') || reference.contains(':') {
        return normalize(reference, "archive");
    }
    let file = archive
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut stem = file.as_str();
    for suffix in [".tar", ".oci", ".docker"] {
        stem = stem.strip_suffix(suffix).unwrap_or(stem);
    }
    normalize(&format!("{stem}:{reference}"), "archive")
}

/// Plans the import of an OCI image layout: every blob reachable from
/// index.json, with labels tying parents to children; its one image under
/// `name` when given. Blocking.
fn plan_oci_layout(archive: &Archive, name: Option<&str>) -> Result<ImportPlan, DriverError> {
    let index: Index = parse(&archive.read("index.json")?, "index.json")?;
    if index.manifests.is_empty() {
        return Err(invalid("archive", "index.json lists no manifests"));
    }
    let mut plan = ImportPlan::default();
    let mut seen = std::collections::HashSet::new();
    if let Some(name) = name {
        let images = index.manifests.iter().map(|d| d.digest.as_str());
        let target = only_image(images, name, "index.json")?;
        let descriptor = index.manifests.iter().find(|d| d.digest == target);
        plan.images
            .extend(descriptor.map(|d| (name.to_owned(), d.clone())));
    } else {
        for descriptor in &index.manifests {
            plan.images.push((
                layout_image_name(descriptor, archive.path())?,
                descriptor.clone(),
            ));
        }
    }
    let mut queue: Vec<Descriptor> = index.manifests.clone();
    while let Some(descriptor) = queue.pop() {
        if !seen.insert(descriptor.digest.clone()) {
            continue;
        }
        let entry = blob_entry(archive, &descriptor)?;
        let mut labels = HashMap::new();
        let json_kind = is_index(&descriptor.media_type)
            || descriptor.media_type.contains("manifest")
            || descriptor.media_type.is_empty();
        if json_kind {
            let data = archive.read(&blob_path(&descriptor.digest)?)?;
            if archive::sha256_of(&data) != descriptor.digest {
                return Err(invalid(
                    "archive",
                    format!("blob {} does not match its digest", descriptor.digest),
                ));
            }
            let value: serde_json::Value = parse(&data, &format!("blob {}", descriptor.digest))?;
            if value.get("manifests").is_some() {
                let child: Index = parse(&data, &format!("index {}", descriptor.digest))?;
                for (i, m) in child.manifests.iter().enumerate() {
                    labels.insert(
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        m.digest.clone(),
                    );
                    queue.push(m.clone());
                }
            } else if value.get("config").is_some() {
                let manifest: Manifest = parse(&data, &format!("manifest {}", descriptor.digest))?;
                labels.insert(
                    "containerd.io/gc.ref.content.config".to_owned(),
                    manifest.config.digest.clone(),
                );
                queue.push(manifest.config.clone());
                for (i, layer) in manifest.layers.iter().enumerate() {
                    labels.insert(
                        format!("containerd.io/gc.ref.content.l.{i}"),
                        layer.digest.clone(),
                    );
                    queue.push(layer.clone());
                }
            }
        }
        plan.blobs.push(Blob {
            digest: descriptor.digest.clone(),
            size: entry.size,
            source: Source::File {
                path: archive.path().to_path_buf(),
                offset: entry.offset,
            },
            labels,
        });
    }
    Ok(plan)
}

/// `blobs/sha256/<hex>` for `sha256:<hex>`.
fn blob_path(digest: &str) -> Result<String, DriverError> {
    match digest.split_once(':') {
        Some((algorithm, hex))
            if !algorithm.is_empty()
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(format!("blobs/{algorithm}/{hex}"))
        }
        _ => Err(invalid("archive", format!("`{digest}` is not a digest"))),
    }
}

fn blob_entry(archive: &Archive, descriptor: &Descriptor) -> Result<Entry, DriverError> {
    let path = blob_path(&descriptor.digest)?;
    let entry = archive.entry(&path).ok_or_else(|| {
        invalid(
            "archive",
            format!("it lacks blob {} ({path})", descriptor.digest),
        )
    })?;
    if i64::try_from(entry.size).ok() != Some(descriptor.size) {
        return Err(invalid(
            "archive",
            format!(
                "blob {} is {} bytes, its descriptor says {}",
                descriptor.digest, entry.size, descriptor.size
            ),
        ));
    }
    Ok(entry)
}

/// One image of a docker-archive `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Plans the import of a docker-archive: hashes its config and layers and
/// writes an OCI manifest for each image; its one image under `name` when
/// given. Blocking.
fn plan_docker_archive(archive: &Archive, name: Option<&str>) -> Result<ImportPlan, DriverError> {
    let images: Vec<DockerImage> = parse(&archive.read("manifest.json")?, "manifest.json")?;
    if images.is_empty() {
        return Err(invalid("archive", "manifest.json lists no images"));
    }
    if let Some(name) = name {
        only_image(
            images.iter().map(|i| i.config.as_str()),
            name,
            "manifest.json",
        )?;
    }
    let mut plan = ImportPlan::default();
    let mut planned = std::collections::HashSet::new();
    for image in images {
        let config_data = archive.read(&image.config)?;
        let config_digest = archive::sha256_of(&config_data);
        let mut manifest = Manifest {
            schema_version: 2,
            media_type: OCI_MANIFEST.to_owned(),
            config: Descriptor {
                media_type: OCI_CONFIG.to_owned(),
                digest: config_digest.clone(),
                size: config_data.len() as i64,
                ..Descriptor::default()
            },
            layers: Vec::new(),
        };
        let mut labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            config_digest.clone(),
        )]);
        if planned.insert(config_digest.clone()) {
            plan.blobs.push(Blob {
                digest: config_digest,
                size: config_data.len() as u64,
                source: Source::Bytes(config_data),
                labels: HashMap::new(),
            });
        }
        for (i, layer) in image.layers.iter().enumerate() {
            let entry = archive.entry(layer).ok_or_else(|| {
                invalid(
                    "archive",
                    format!("manifest.json names layer `{layer}`, which it lacks"),
                )
            })?;
            let (digest, gzip) = archive.digest(entry)?;
            manifest.layers.push(Descriptor {
                media_type: if gzip { OCI_LAYER_GZIP } else { OCI_LAYER }.to_owned(),
                digest: digest.clone(),
                size: entry.size as i64,
                ..Descriptor::default()
            });
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                digest.clone(),
            );
            if planned.insert(digest.clone()) {
                plan.blobs.push(Blob {
                    digest,
                    size: entry.size,
                    source: Source::File {
                        path: archive.path().to_path_buf(),
                        offset: entry.offset,
                    },
                    labels: HashMap::new(),
                });
            }
        }
        let manifest_data = serde_json::to_vec(&manifest)
            .map_err(|e| invalid("archive", format!("cannot encode a manifest: {e}")))?;
        let manifest_digest = archive::sha256_of(&manifest_data);
        let target = Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest: manifest_digest.clone(),
            size: manifest_data.len() as i64,
            ..Descriptor::default()
        };
        let tags = match name {
            Some(name) => vec![name.to_owned()],
            None => image.repo_tags.unwrap_or_default(),
        };
        if tags.is_empty() {
            return Err(invalid(
                "archive",
                format!(
                    "image with config `{}` has no RepoTags to name it: give it one on import",
                    image.config
                ),
            ));
        }
        for tag in tags {
            plan.images
                .push((normalize(&tag, "archive")?, target.clone()));
        }
        if planned.insert(manifest_digest.clone()) {
            plan.blobs.push(Blob {
                digest: manifest_digest,
                size: manifest_data.len() as u64,
                source: Source::Bytes(manifest_data),
                labels,
            });
        }
    }
    Ok(plan)
}

/// Imports every image of the archive at `path` (see
/// [`zixiao_core::driver::Images::import`]), unpacking each for `snapshotter`.
pub(crate) async fn import(
    conn: &Connection,
    unpack_to: &UnpackTo<'_>,
    path: &Path,
    name: Option<&ImageName>,
    progress: &(dyn Fn(ImportProgress) + Send + Sync),
) -> Result<Vec<ImageInfo>, DriverError> {
    let owned = path.to_path_buf();
    let name = name.map(ImageName::to_string);
    let (archive, plan) = tokio::task::spawn_blocking(move || {
        let archive = Archive::open(&owned)?;
        let plan = if archive.entry("index.json").is_some() {
            plan_oci_layout(&archive, name.as_deref())?
        } else if archive.entry("manifest.json").is_some() {
            plan_docker_archive(&archive, name.as_deref())?
        } else {
            return Err(invalid(
                "archive",
                format!(
                    "{} is neither an OCI image layout (no index.json) nor a docker archive (no manifest.json)",
                    owned.display()
                ),
            ));
        };
        Ok((archive, plan))
    })
    .await
    .map_err(|e| DriverError::Runtime { operation: "read image archive".into(), source: Box::new(e) })??;
    check_layer_sizes(conn, &plan, unpack_to.max_layer_bytes).await?;

    let total = archive.len();
    progress(ImportProgress { done: 0, total });
    let lease = conn.lease("import", None).await?;
    let snapshotter = unpack_to.snapshotter;
    let outcome = write_and_name(conn, &lease, snapshotter, &plan, total, progress).await;
    // Released either way: on success the images now hold what the lease
    // held; on failure the release collects every blob and snapshot written.
    let released = conn.release(lease, outcome.is_err()).await;
    let infos = outcome?;
    released?;
    progress(ImportProgress { done: total, total });
    Ok(infos)
}

/// Pulls `reference` (see [`zixiao_core::driver::Images::pull`]) into a
/// temporary OCI layout under `work_dir`, then imports it: the registry
/// client has verified every blob, and the import checks the layout and
/// each layer's diff id again as it stores and unpacks.
pub(crate) async fn pull(
    conn: &Connection,
    unpack_to: &UnpackTo<'_>,
    work_dir: &Path,
    reference: &ImageRef,
    options: &PullOptions,
    progress: &(dyn Fn(PullProgress) + Send + Sync),
) -> Result<ImageInfo, DriverError> {
    let pulled = zixiao_registry::pull(reference, options, work_dir, progress)
        .await
        .map_err(super::error::registry)?;
    progress(PullProgress::Unpacking);
    let images = import(conn, unpack_to, pulled.archive(), None, &|_| {}).await?;
    // Best effort: the directory is temporary, and dropping removes it too.
    let name = pulled.name.clone();
    let _ = pulled.close();
    images
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| DriverError::Runtime {
            operation: format!("pull image {name}"),
            source: "the pulled archive imported under another name".into(),
        })
}

/// Where and how an import unpacks its layers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnpackTo<'a> {
    /// The snapshotter the layers are unpacked with.
    pub(crate) snapshotter: &'a str,
    /// The most bytes one layer may unpack to ([`layer_size`]).
    pub(crate) max_layer_bytes: u64,
}

/// Checks every archive entry of `plan` that the content store lacks
/// against the layer cap, off the async threads, before anything is
/// written: a layer already stored was checked by the import that stored
/// it, and blobs in memory are the manifests and configs the driver wrote.
async fn check_layer_sizes(
    conn: &Connection,
    plan: &ImportPlan,
    max_layer_bytes: u64,
) -> Result<(), DriverError> {
    let mut unseen = Vec::new();
    let entries = plan
        .blobs
        .iter()
        .filter(|blob| matches!(blob.source, Source::File { .. }));
    for blob in entries {
        if !content::exists(conn, &blob.digest).await? {
            unseen.push(blob.clone());
        }
    }
    tokio::task::spawn_blocking(move || {
        unseen
            .iter()
            .try_for_each(|blob| layer_size::check(blob, max_layer_bytes))
    })
    .await
    .map_err(|e| DriverError::Runtime {
        operation: "measure the image's layers".into(),
        source: Box::new(e),
    })?
}

async fn write_and_name(
    conn: &Connection,
    lease: &Lease,
    snapshotter: &str,
    plan: &ImportPlan,
    total: u64,
    progress: &(dyn Fn(ImportProgress) + Send + Sync),
) -> Result<Vec<ImageInfo>, DriverError> {
    let mut done = 0u64;
    for blob in &plan.blobs {
        let before = done;
        let report = |written: u64| {
            progress(ImportProgress {
                done: (before + written).min(total),
                total,
            })
        };
        content::write(conn, lease, blob, &report).await?;
        done += blob.size;
    }
    let mut client = ImagesClient::new(conn.client().channel());
    let mut infos = Vec::new();
    for (name, target) in &plan.images {
        let image = Image {
            name: name.clone(),
            labels: HashMap::new(),
            target: Some(ProtoDescriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let created = client
            .create(conn.leased(
                CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await;
        let named_here = created.is_ok();
        match created {
            Ok(_) => {}
            Err(status) if is_already_exists(&status) => {
                let update = UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                };
                client
                    .update(conn.leased(update, lease))
                    .await
                    .map_err(|s| conn.rpc_error(format!("update image {name}"), s))?;
            }
            Err(status) => return Err(conn.rpc_error(format!("create image {name}"), status)),
        }
        let resolved = resolve(conn, name).await?;
        if let Err(e) = unpack(conn, lease, snapshotter, &resolved).await {
            // A name this import made goes with the content the lease's
            // release takes back, so no image names missing content.
            if named_here {
                let delete = DeleteImageRequest {
                    name: name.clone(),
                    sync: true,
                    target: None,
                };
                let _ = client.delete(conn.request(delete)).await;
            }
            return Err(e);
        }
        infos.push(ImageInfo::container(
            name.clone(),
            target.digest.clone(),
            image_size(&resolved, target),
        ));
    }
    Ok(infos)
}

/// Compressed size of an image: its manifest, config and layers.
fn image_size(image: &Resolved, target: &Descriptor) -> u64 {
    let layers: i64 = image.manifest.layers.iter().map(|l| l.size).sum();
    u64::try_from(target.size + image.manifest.config.size + layers).unwrap_or(0)
}

/// Every image in the namespace, by name.
pub(crate) async fn list(conn: &Connection) -> Result<Vec<ImageInfo>, DriverError> {
    let images = ImagesClient::new(conn.client().channel())
        .list(conn.request(ListImagesRequest {
            filters: Vec::new(),
        }))
        .await
        .map_err(|s| conn.rpc_error("list images", s))?
        .into_inner()
        .images;
    let mut infos = Vec::with_capacity(images.len());
    for image in images {
        let target = image.target.clone().unwrap_or_default();
        let descriptor = Descriptor {
            media_type: target.media_type,
            digest: target.digest.clone(),
            size: target.size,
            ..Descriptor::default()
        };
        // An image whose content is incomplete is still listed, with the
        // size of what is known.
        let size_bytes = match resolve(conn, &image.name).await {
            Ok(resolved) => image_size(&resolved, &descriptor),
            Err(DriverError::Unavailable { runtime, source }) => {
                return Err(DriverError::Unavailable { runtime, source })
            }
            Err(_) => u64::try_from(target.size).unwrap_or(0),
        };
        infos.push(ImageInfo::container(image.name, target.digest, size_bytes));
    }
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(infos)
}

/// Removes the image `name` (as given or by its full name), refusing while
/// a container uses it. Errors: `NotFound`, `FailedPrecondition`, `Unavailable`.
pub(crate) async fn remove(conn: &Connection, name: &str) -> Result<(), DriverError> {
    let full = normalize(name, "image")?;
    let mut client = ImagesClient::new(conn.client().channel());
    let mut stored = None;
    for candidate in [name, full.as_str()] {
        match client
            .get(conn.request(GetImageRequest {
                name: candidate.to_owned(),
            }))
            .await
        {
            Ok(_) => {
                stored = Some(candidate.to_owned());
                break;
            }
            Err(status) if is_not_found(&status) => {}
            Err(status) => return Err(conn.rpc_error(format!("look up image {candidate}"), status)),
        }
    }
    let Some(stored) = stored else {
        return Err(DriverError::NotFound(format!("image `{name}`")));
    };
    let filter = format!("image=={stored}");
    let users = ContainersClient::new(conn.client().channel())
        .list(conn.request(ListContainersRequest {
            filters: vec![filter],
        }))
        .await
        .map_err(|s| conn.rpc_error("list containers", s))?
        .into_inner()
        .containers;
    if !users.is_empty() {
        let ids: Vec<&str> = users.iter().map(|c| c.id.as_str()).collect();
        return Err(DriverError::FailedPrecondition(format!(
            "image `{stored}` is used by {} container(s): {}",
            ids.len(),
            ids.join(", ")
        )));
    }
    client
        .delete(conn.request(DeleteImageRequest {
            name: stored.clone(),
            sync: true,
            target: None,
        }))
        .await
        .map_err(|s| conn.rpc_error(format!("remove image {stored}"), s))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_like_docker() {
        let n = |r: &str| normalize(r, "spec.image").expect(r);
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            n("registry.local:5000/app"),
            "registry.local:5000/app:latest"
        );
        assert_eq!(n("localhost/app:v1"), "localhost/app:v1");
        assert!(normalize("", "spec.image").is_err());
        assert!(normalize("Bad Name", "spec.image").is_err());
    }

    #[test]
    fn chain_ids_hash_parent_and_diff() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(ids[1], archive::sha256_of(b"sha256:a sha256:b"));
    }

    #[test]
    fn a_name_goes_to_an_archive_of_one_image_only() {
        let one = ["sha256:a", "sha256:a"];
        assert_eq!(
            only_image(one.into_iter(), "x", "index.json").ok(),
            Some("sha256:a")
        );
        let three = ["sha256:a", "sha256:c", "sha256:b", "sha256:c"];
        let err = only_image(three.into_iter(), "x", "index.json").expect_err("three");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument);
        let shown = err.to_string();
        assert!(
            shown.contains("lists 3: sha256:a, sha256:b, sha256:c") && shown.contains("name"),
            "{shown}"
        );
    }

    #[test]
    fn tag_only_layout_names_come_from_the_file() {
        let d = Descriptor {
            annotations: HashMap::from([(OCI_REF_NAME.to_owned(), "latest".to_owned())]),
            ..Descriptor::default()
        };
        let name = layout_image_name(&d, Path::new("/tmp/busybox.oci.tar")).expect("name");
        assert_eq!(name, "docker.io/library/busybox:latest");
    }
}
