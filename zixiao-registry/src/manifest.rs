//! Manifests as registries serve them: OCI image indexes and Docker
//! manifest lists (choosing this node's platform), OCI image manifests and
//! Docker v2 schema 2 manifests, and Zixiao's VM artifacts (a disk, a
//! kernel or an initrd as the one layer of an OCI manifest, see
//! [`ArtifactManifest`]); every descriptor checked before any of its
//! fields reaches a URL or a file name.

use serde::{Deserialize, Serialize};
use zixiao_core::model::{is_sha256_digest, ImageKind};

/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// A Docker v2 schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The media types a pull asks for, in the `Accept` header.
pub(crate) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The layer media types containerd unpacks.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
/// The config media types of an image (not another artifact).
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// A VM disk in qcow2 format (version 2 or 3, no backing or external data file).
pub const ARTIFACT_DISK_QCOW2: &str = "application/vnd.zixiao.disk.v1.qcow2";
/// A VM disk as raw bytes.
pub const ARTIFACT_DISK_RAW: &str = "application/vnd.zixiao.disk.v1.raw";
/// A kernel: a bzImage or an ELF file.
pub const ARTIFACT_KERNEL: &str = "application/vnd.zixiao.kernel.v1";
/// An initrd: a cpio (newc) archive, compressed or not.
pub const ARTIFACT_INITRD: &str = "application/vnd.zixiao.initrd.v1";
/// The OCI 1.1 empty config (`{}`) artifacts carry.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The kind of node image a Zixiao artifact media type marks, if it is one.
///
/// ```
/// use zixiao_core::model::ImageKind;
/// use zixiao_registry::manifest::{artifact_kind, ARTIFACT_DISK_QCOW2};
/// assert_eq!(artifact_kind(ARTIFACT_DISK_QCOW2), Some(ImageKind::Disk));
/// assert_eq!(artifact_kind("application/vnd.oci.image.layer.v1.tar"), None);
/// ```
pub fn artifact_kind(media_type: &str) -> Option<ImageKind> {
    match media_type {
        ARTIFACT_DISK_QCOW2 | ARTIFACT_DISK_RAW => Some(ImageKind::Disk),
        ARTIFACT_KERNEL => Some(ImageKind::Kernel),
        ARTIFACT_INITRD => Some(ImageKind::Initrd),
        _ => None,
    }
}

/// The most layers an image may have (overlayfs stacks a few hundred at most).
pub const MAX_LAYERS: usize = 256;

/// A content descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// What the blob is.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
    /// The platform of a manifest in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform a manifest in an index is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `amd64`, `arm64`…
    #[serde(default)]
    pub architecture: String,
    /// `v8`… (ignored when choosing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform, in the `GOOS`/`GOARCH` names indexes use.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

impl From<&zixiao_core::driver::ImagePlatform> for Platform {
    fn from(platform: &zixiao_core::driver::ImagePlatform) -> Self {
        Platform {
            os: platform.os().to_owned(),
            architecture: platform.architecture().to_owned(),
            variant: platform.variant().map(str::to_owned),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// An image index or manifest list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Index {
    /// The manifests it lists.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    /// `2`.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// What the manifest is, for an artifact (OCI 1.1).
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// What a manifest URL served.
#[derive(Debug, Clone)]
pub enum Document {
    /// An index: choose a manifest from it.
    Index(Index),
    /// An image manifest: fetch its blobs.
    Manifest(ImageManifest),
    /// A Zixiao disk, kernel or initrd: fetch its one layer.
    Artifact(ArtifactManifest),
}

/// A Zixiao VM artifact: an OCI manifest whose `artifactType` (or, for
/// registries and tools older than OCI 1.1, config media type) is one of
/// the `application/vnd.zixiao.*` types, and whose one layer, of such a
/// type too, is the file itself. The types it names must agree on the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactManifest {
    /// What the file is.
    pub kind: ImageKind,
    /// The file.
    pub layer: Descriptor,
}

/// Reads a manifest body, by its `mediaType` field, else the response's
/// `Content-Type`, else its shape. Errors: the reason, for `Corrupt` or
/// (`Err(true, …)`) `Unsupported`.
pub fn classify(content_type: Option<&str>, body: &[u8]) -> Result<Document, (bool, String)> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u32>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let head: Head =
        serde_json::from_slice(body).map_err(|e| (false, format!("it is not JSON: {e}")))?;
    if head.schema_version == Some(1) {
        return Err((
            true,
            "Docker v2 schema 1 manifests are not supported (push the image again with a current tool)"
                .into(),
        ));
    }
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
    let media_type = head.media_type.as_deref().or(content_type).unwrap_or("");
    let is_index = media_type == OCI_INDEX
        || media_type == DOCKER_LIST
        || (head.manifests.is_some()
            && media_type != OCI_MANIFEST
            && media_type != DOCKER_MANIFEST);
    if is_index {
        let index: Index =
            serde_json::from_slice(body).map_err(|e| (false, format!("bad index: {e}")))?;
        for m in &index.manifests {
            check_digest(m)?;
        }
        return Ok(Document::Index(index));
    }
    let manifest: ImageManifest =
        serde_json::from_slice(body).map_err(|e| (false, format!("bad manifest: {e}")))?;
    if manifest.schema_version != 2 {
        return Err((
            false,
            format!("schemaVersion is {}, not 2", manifest.schema_version),
        ));
    }
    check_digest(&manifest.config)?;
    if let Some(artifact) = artifact(&manifest)? {
        return Ok(Document::Artifact(artifact));
    }
    if !CONFIG_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Err((
            true,
            format!(
                "config media type `{}` is not a container image's (an artifact?)",
                manifest.config.media_type
            ),
        ));
    }
    if manifest.layers.len() > MAX_LAYERS {
        return Err((
            false,
            format!(
                "it has {} layers, more than {MAX_LAYERS}",
                manifest.layers.len()
            ),
        ));
    }
    for layer in &manifest.layers {
        check_digest(layer)?;
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err((
                true,
                format!(
                    "layer {} has media type `{}`, which containerd does not unpack",
                    layer.digest, layer.media_type
                ),
            ));
        }
    }
    Ok(Document::Manifest(manifest))
}

/// The artifact `manifest` is, if its artifact type, config or one layer
/// marks a Zixiao one; `Err` (corrupt) if it is one but malformed: not
/// exactly one layer, or types that say different kinds.
fn artifact(manifest: &ImageManifest) -> Result<Option<ArtifactManifest>, (bool, String)> {
    let marks = [
        manifest.artifact_type.as_deref(),
        Some(manifest.config.media_type.as_str()),
        manifest.layers.first().map(|l| l.media_type.as_str()),
    ];
    let kinds: Vec<(&str, ImageKind)> = marks
        .into_iter()
        .flatten()
        .filter_map(|m| artifact_kind(m).map(|k| (m, k)))
        .collect();
    let Some(&(_, kind)) = kinds.first() else {
        return Ok(None);
    };
    if let Some((other, other_kind)) = kinds.iter().find(|(_, k)| *k != kind) {
        return Err((
            false,
            format!(
                "artifact says both {kind} (`{}`) and {other_kind} (`{other}`)",
                kinds[0].0
            ),
        ));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err((
            false,
            format!(
                "a {kind} artifact has exactly one layer, the file; this one has {}",
                manifest.layers.len()
            ),
        ));
    };
    check_digest(layer)?;
    if artifact_kind(&layer.media_type).is_none() {
        return Err((
            false,
            format!(
                "the layer of a {kind} artifact has media type `{}`, not a Zixiao {kind} type",
                layer.media_type
            ),
        ));
    }
    Ok(Some(ArtifactManifest {
        kind,
        layer: layer.clone(),
    }))
}

fn check_digest(descriptor: &Descriptor) -> Result<(), (bool, String)> {
    if is_sha256_digest(&descriptor.digest) {
        Ok(())
    } else {
        Err((
            false,
            format!("`{}` is not a sha256 digest", descriptor.digest),
        ))
    }
}

/// The manifest of `index` for `platform` (its variant compared only when
/// `platform` names one); `Err` lists the platforms it has.
pub fn select<'a>(index: &'a Index, platform: &Platform) -> Result<&'a Descriptor, String> {
    index
        .manifests
        .iter()
        .find(|m| {
            m.platform.as_ref().is_some_and(|p| {
                p.os == platform.os
                    && p.architecture == platform.architecture
                    && (platform.variant.is_none() || p.variant == platform.variant)
            })
        })
        .ok_or_else(|| {
            let listed: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(Platform::to_string))
                .collect();
            if listed.is_empty() {
                "none".to_owned()
            } else {
                listed.join(", ")
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn index_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":11,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":12,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
            digest('a'),
            digest('b'),
            digest('c')
        )
    }

    #[test]
    fn an_index_yields_the_linux_amd64_manifest() {
        let Ok(Document::Index(index)) = classify(None, index_json().as_bytes()) else {
            panic!("not an index");
        };
        let amd64 = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(select(&index, &amd64).unwrap().digest, digest('b'));
        let riscv = Platform {
            os: "linux".into(),
            architecture: "riscv64".into(),
            variant: None,
        };
        assert_eq!(
            select(&index, &riscv).unwrap_err(),
            "linux/arm64/v8, linux/amd64, unknown/unknown"
        );
    }

    #[test]
    fn a_platform_asked_for_picks_its_manifest_and_its_variant_when_named() {
        let Ok(Document::Index(index)) = classify(None, index_json().as_bytes()) else {
            panic!("not an index");
        };
        let wanted = |text: &str| {
            Platform::from(&zixiao_core::driver::ImagePlatform::try_from(text).unwrap())
        };
        assert_eq!(
            select(&index, &wanted("linux/arm64")).unwrap().digest,
            digest('a')
        );
        assert_eq!(
            select(&index, &wanted("linux/arm64/v8")).unwrap().digest,
            digest('a')
        );
        assert!(select(&index, &wanted("linux/arm64/v7")).is_err());
    }

    #[test]
    fn oci_and_docker_manifests_are_read() {
        for (media, config, layer) in [
            (OCI_MANIFEST, CONFIG_TYPES[0], LAYER_TYPES[1]),
            (DOCKER_MANIFEST, CONFIG_TYPES[1], LAYER_TYPES[3]),
        ] {
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{media}","config":{{"mediaType":"{config}","digest":"{}","size":5}},"layers":[{{"mediaType":"{layer}","digest":"{}","size":7}}]}}"#,
                digest('1'),
                digest('2')
            );
            let Ok(Document::Manifest(m)) = classify(None, body.as_bytes()) else {
                panic!("{media} not read");
            };
            assert_eq!(m.layers[0].size, 7);
        }
    }

    #[test]
    fn bad_manifests_are_refused_with_a_reason() {
        let schema1 = r#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(classify(None, schema1.as_bytes()), Err((true, _))));
        let bad_digest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"sha256:../../etc","size":5}},"layers":[]}}"#,
            CONFIG_TYPES[0]
        );
        let (unsupported, reason) = classify(None, bad_digest.as_bytes()).unwrap_err();
        assert!(
            !unsupported && reason.contains("not a sha256 digest"),
            "{reason}"
        );
        assert!(matches!(classify(None, b"<html>"), Err((false, _))));
        let artifact = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.example+json","digest":"{}","size":5}},"layers":[]}}"#,
            digest('1')
        );
        assert!(matches!(
            classify(None, artifact.as_bytes()),
            Err((true, _))
        ));
    }

    fn artifact_json(artifact_type: Option<&str>, config: &str, layers: &[&str]) -> String {
        let layers: Vec<String> = layers
            .iter()
            .map(|m| {
                format!(
                    r#"{{"mediaType":"{m}","digest":"{}","size":9}}"#,
                    digest('2')
                )
            })
            .collect();
        let artifact_type = artifact_type
            .map(|t| format!(r#""artifactType":"{t}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{artifact_type}"config":{{"mediaType":"{config}","digest":"{}","size":2}},"layers":[{}]}}"#,
            digest('1'),
            layers.join(",")
        )
    }

    #[test]
    fn zixiao_artifacts_are_read_by_artifact_type_or_config() {
        for (body, kind) in [
            (
                artifact_json(Some(ARTIFACT_DISK_QCOW2), OCI_EMPTY, &[ARTIFACT_DISK_QCOW2]),
                ImageKind::Disk,
            ),
            (
                artifact_json(None, ARTIFACT_KERNEL, &[ARTIFACT_KERNEL]),
                ImageKind::Kernel,
            ),
            (
                artifact_json(None, OCI_EMPTY, &[ARTIFACT_INITRD]),
                ImageKind::Initrd,
            ),
        ] {
            let Ok(Document::Artifact(a)) = classify(None, body.as_bytes()) else {
                panic!("not an artifact: {body}");
            };
            assert_eq!(a.kind, kind);
            assert_eq!(a.layer.size, 9);
        }
    }

    #[test]
    fn malformed_artifacts_are_refused_with_a_reason() {
        for (body, reason) in [
            (
                artifact_json(Some(ARTIFACT_DISK_RAW), OCI_EMPTY, &[ARTIFACT_KERNEL]),
                "both disk",
            ),
            (
                artifact_json(
                    Some(ARTIFACT_KERNEL),
                    OCI_EMPTY,
                    &[ARTIFACT_KERNEL, ARTIFACT_KERNEL],
                ),
                "exactly one layer",
            ),
            (
                artifact_json(Some(ARTIFACT_KERNEL), OCI_EMPTY, &[]),
                "exactly one layer",
            ),
            (
                artifact_json(Some(ARTIFACT_KERNEL), OCI_EMPTY, &[LAYER_TYPES[0]]),
                "not a Zixiao kernel type",
            ),
        ] {
            let (unsupported, got) = classify(None, body.as_bytes()).unwrap_err();
            assert!(!unsupported && got.contains(reason), "{got}");
        }
    }
}
