//! A pull: resolve the reference to this platform's manifest, fetch its
//! config and layers by digest, verify each against its descriptor while it
//! streams, and write the lot as an OCI image layout tar for the runtime to
//! import; or, for a Zixiao VM artifact, fetch its one file
//! ([`pull_artifact`]).

use std::path::{Path, PathBuf};

use hyper::body::Incoming;
use hyper::header::{HeaderName, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use zixiao_core::driver::{PullOptions, PullProgress};
use zixiao_core::model::{ImageKind, ImageRef, DEFAULT_REGISTRY};

use crate::auth::{authorize, parse_challenge};
use crate::error::RegistryError;
use crate::layout::{digest_of, BlobSink, FileBlob, LayoutWriter};
use crate::manifest::{
    self, classify, ArtifactManifest, Descriptor, Document, ImageManifest, Platform,
};
use crate::transport::{next_chunk, read_limited, StatusError, Transport, Url};

/// The largest manifest or index read.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// The largest image config read (the import reads it into memory too).
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;
/// The largest layer fetched.
pub const MAX_LAYER_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// How deep indexes may nest (real images use one level).
const MAX_INDEX_DEPTH: usize = 2;

/// The API host of a registry name (Docker Hub's API is not at `docker.io`).
fn api_authority(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// An image pulled into a temporary OCI image layout tar, removed when this
/// is dropped.
#[derive(Debug)]
pub struct PulledImage {
    dir: tempfile::TempDir,
    archive: PathBuf,
    /// The name the archive gives the image (the reference, in full).
    pub name: String,
    /// The digest of the image manifest for this platform.
    pub digest: String,
    /// The manifest, config and layers' size in bytes.
    pub size_bytes: u64,
}

impl PulledImage {
    /// The OCI image layout tar, inside a temporary directory.
    pub fn archive(&self) -> &Path {
        &self.archive
    }

    /// Removes the temporary files now (dropping does the same, ignoring errors).
    pub fn close(self) -> std::io::Result<()> {
        self.dir.close()
    }
}

/// What a reference resolved to, past any index.
enum Resolved {
    /// A container image's manifest.
    Image(ImageManifest),
    /// A Zixiao VM artifact's.
    Artifact(ArtifactManifest),
}

/// One pull's connection to one repository: the transport, the base URL
/// and the `Authorization` the registry last accepted.
struct Session<'a> {
    transport: Transport,
    options: &'a PullOptions,
    reference: &'a ImageRef,
    base: Url,
    authorization: Option<String>,
}

/// Pulls `reference` for this machine's platform into an OCI image layout
/// tar in a new temporary directory under `work_dir`, reporting each blob
/// to `progress`. Nothing is kept on failure.
///
/// Errors (by [`RegistryError::kind`]): `NotFound` (repository, tag, digest
/// or platform), `InvalidArgument` (content that does not match its digest
/// or size, malformed manifests, caps exceeded), `FailedPrecondition`
/// (plain HTTP refused, credentials wanted or refused), `Unsupported`
/// (schema 1, artifacts, unknown layer types), `Unavailable`, `Internal`.
pub async fn pull(
    reference: &ImageRef,
    options: &PullOptions,
    work_dir: &Path,
    progress: &(dyn Fn(PullProgress) + Send + Sync),
) -> Result<PulledImage, RegistryError> {
    let (mut session, dir) = Session::start(reference, options, work_dir).await?;
    let archive = dir.path().join("image.oci.tar");

    let (manifest_data, media_type, document) = session.resolve().await?;
    let manifest = match document {
        Resolved::Image(manifest) => manifest,
        Resolved::Artifact(artifact) => {
            let kind = artifact.kind;
            return Err(RegistryError::Unsupported(format!(
                "`{reference}` is a {kind} artifact, not a container image: pull it into the \
                 node's image store (`zixiao image pull {reference} --kind {kind}`)"
            )));
        }
    };
    let digest = digest_of(&manifest_data);
    let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .collect();
    // Every size is checked against its cap before any is added up, so a
    // manifest of absurd sizes is refused rather than overflowing the sum.
    for (i, blob) in blobs.iter().enumerate() {
        let limit = if i == 0 {
            MAX_CONFIG_BYTES
        } else {
            MAX_LAYER_BYTES
        };
        if blob.size > limit {
            return Err(RegistryError::corrupt(
                reference.registry(),
                format!("blob {}", blob.digest),
                format!(
                    "its descriptor says {} bytes, more than the {limit} allowed",
                    blob.size
                ),
            ));
        }
    }
    let bytes: u64 = blobs.iter().map(|b| b.size).sum();
    progress(PullProgress::Resolved {
        digest: digest.clone(),
        blobs: blobs.len(),
        bytes,
    });
    let mut layout = LayoutWriter::create(&archive).await?;
    for (i, blob) in blobs.iter().enumerate() {
        if !layout.has_blob(&blob.digest) {
            let writer = layout.begin_blob(&blob.digest, blob.size).await?;
            session.fetch_blob(blob, writer).await?;
        }
        progress(PullProgress::Fetched {
            digest: blob.digest.clone(),
            size: blob.size,
            index: i + 1,
            count: blobs.len(),
        });
    }
    let mut manifest_blob = layout
        .begin_blob(&digest, manifest_data.len() as u64)
        .await?;
    BlobSink::write(&mut manifest_blob, &manifest_data)
        .await?
        .map_err(|r| RegistryError::corrupt(reference.registry(), "manifest", r))?;
    BlobSink::finish(manifest_blob, &digest)
        .await?
        .map_err(|r| RegistryError::corrupt(reference.registry(), "manifest", r))?;
    let name = reference.to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": manifest_data.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": reference.manifest_reference(),
            },
        }],
    });
    layout
        .add_file("index.json", index.to_string().as_bytes())
        .await?;
    layout.finish().await?;
    Ok(PulledImage {
        dir,
        archive,
        name,
        digest,
        size_bytes: bytes + manifest_data.len() as u64,
    })
}

/// A Zixiao VM artifact (a disk, kernel or initrd) pulled into a file of
/// its own in a temporary directory, removed when this is dropped unless
/// the file was moved out first.
#[derive(Debug)]
pub struct PulledArtifact {
    dir: tempfile::TempDir,
    file: PathBuf,
    /// What the artifact's media types say it is.
    pub kind: ImageKind,
    /// The media type of its file, such as
    /// [`manifest::ARTIFACT_DISK_QCOW2`].
    pub media_type: String,
    /// The digest of the file, verified as it streamed (`sha256:<hex>`).
    pub digest: String,
    /// The digest of the artifact's manifest.
    pub manifest_digest: String,
    /// The file's size in bytes.
    pub size_bytes: u64,
}

impl PulledArtifact {
    /// The file, inside a temporary directory.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Removes the temporary files now (dropping does the same, ignoring errors).
    pub fn close(self) -> std::io::Result<()> {
        self.dir.close()
    }
}

/// Pulls the Zixiao VM artifact `reference` (see [`ArtifactManifest`] and
/// the media types in [`manifest`]) into a file in a new temporary
/// directory under `work_dir`, its size checked against `limit` of its
/// kind before the fetch and its digest verified as it streams; refused
/// unless it is a `wanted` one, when given. Nothing is kept on failure;
/// what a killed process leaves is a `pull-*` directory no store names.
/// The content of the file (a disk that is qcow2 or raw, a kernel that is
/// a kernel) is the image store's to check.
///
/// Errors: those of [`pull`], plus `InvalidArgument` for a kind other than
/// `wanted` ([`RegistryError::KindMismatch`], naming both) or a file over
/// `limit`, and `Unsupported` for a container image without `wanted`.
pub async fn pull_artifact(
    reference: &ImageRef,
    options: &PullOptions,
    wanted: Option<ImageKind>,
    limit: &(dyn Fn(ImageKind) -> u64 + Send + Sync),
    work_dir: &Path,
    progress: &(dyn Fn(PullProgress) + Send + Sync),
) -> Result<PulledArtifact, RegistryError> {
    let (mut session, dir) = Session::start(reference, options, work_dir).await?;
    let (manifest_data, _, document) = session.resolve().await?;
    let ArtifactManifest { kind, layer } = match document {
        Resolved::Artifact(artifact) => artifact,
        Resolved::Image(_) => {
            return Err(match wanted {
                Some(wanted) => RegistryError::KindMismatch {
                    reference: reference.to_string(),
                    wanted,
                    found: "a container image".to_owned(),
                },
                None => RegistryError::Unsupported(format!(
                    "`{reference}` is a container image, not a disk, kernel or initrd artifact \
                     (media types {}, {}, {} or {}): pull it into the container runtime",
                    manifest::ARTIFACT_DISK_QCOW2,
                    manifest::ARTIFACT_DISK_RAW,
                    manifest::ARTIFACT_KERNEL,
                    manifest::ARTIFACT_INITRD
                )),
            })
        }
    };
    if let Some(wanted) = wanted.filter(|w| *w != kind) {
        return Err(RegistryError::KindMismatch {
            reference: reference.to_string(),
            wanted,
            found: format!("a {kind} artifact (`{}`)", layer.media_type),
        });
    }
    let cap = limit(kind);
    if layer.size > cap {
        return Err(RegistryError::corrupt(
            reference.registry(),
            format!("{kind} {}", layer.digest),
            format!(
                "its descriptor says {} bytes, more than the {cap} a {kind} image may have",
                layer.size
            ),
        ));
    }
    let manifest_digest = digest_of(&manifest_data);
    progress(PullProgress::Resolved {
        digest: manifest_digest.clone(),
        blobs: 1,
        bytes: layer.size,
    });
    let file = dir.path().join(kind.as_str());
    let sink = FileBlob::create(&file, layer.size).await?;
    session.fetch_blob(&layer, sink).await?;
    progress(PullProgress::Fetched {
        digest: layer.digest.clone(),
        size: layer.size,
        index: 1,
        count: 1,
    });
    Ok(PulledArtifact {
        dir,
        file,
        kind,
        media_type: layer.media_type,
        digest: layer.digest,
        manifest_digest,
        size_bytes: layer.size,
    })
}

impl<'a> Session<'a> {
    /// A session for `reference`, and a new temporary directory under
    /// `work_dir` for what it pulls.
    async fn start(
        reference: &'a ImageRef,
        options: &'a PullOptions,
        work_dir: &Path,
    ) -> Result<(Session<'a>, tempfile::TempDir), RegistryError> {
        let transport = Transport::new(&options.insecure_registries, &options.registry_cas)?;
        let base = transport.base(api_authority(reference.registry())).await;
        std::fs::create_dir_all(work_dir)
            .map_err(|e| RegistryError::io(format!("create {}", work_dir.display()), e))?;
        let dir = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(work_dir)
            .map_err(|e| {
                RegistryError::io(format!("create a directory in {}", work_dir.display()), e)
            })?;
        let session = Session {
            transport,
            options,
            reference,
            base,
            authorization: None,
        };
        Ok((session, dir))
    }
}

impl Session<'_> {
    fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// GETs `path` on the registry, answering one auth challenge.
    async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<(Url, Response<Incoming>), RegistryError> {
        let url = Url {
            path: path.to_owned(),
            ..self.base.clone()
        };
        let mut answered = false;
        loop {
            let mut headers: Vec<(HeaderName, String)> = Vec::new();
            if let Some(accept) = accept {
                headers.push((ACCEPT, accept.to_owned()));
            }
            if let Some(authorization) = &self.authorization {
                headers.push((AUTHORIZATION, authorization.clone()));
            }
            let response = self.transport.get(&url, &headers).await?;
            if response.status() != StatusCode::UNAUTHORIZED || answered {
                return Ok((url, response));
            }
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(parse_challenge)
                .ok_or_else(|| RegistryError::Unauthorized {
                    registry: self.registry().to_owned(),
                    reason: "it answered 401 without a Basic or Bearer challenge".into(),
                })?;
            self.authorization = Some(
                authorize(
                    &self.transport,
                    self.registry(),
                    self.reference.repository(),
                    &challenge,
                    self.options.credentials.as_ref(),
                )
                .await?,
            );
            answered = true;
        }
    }

    /// Turns a status other than 200 into the error for `what`.
    fn check_status(&self, url: &Url, status: StatusCode, what: &str) -> Result<(), RegistryError> {
        let registry = self.registry().to_owned();
        match status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                registry,
                what: what.to_owned(),
            }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RegistryError::Unauthorized {
                registry,
                reason: format!(
                    "{what}: {} ({status})",
                    if self.options.credentials.is_some() {
                        "the credentials were refused"
                    } else {
                        "an anonymous pull was refused; give a user name and password"
                    }
                ),
            }),
            status => Err(RegistryError::Unavailable {
                registry,
                operation: format!("get {what}"),
                source: Box::new(StatusError {
                    url: url.to_string(),
                    status,
                }),
            }),
        }
    }

    /// Fetches the manifest for the platform asked for (this node's when
    /// none was): its bytes, media type and parsed form (an image manifest
    /// or an artifact, never an index). A pinned digest, and every index
    /// entry, is verified.
    async fn resolve(&mut self) -> Result<(Vec<u8>, String, Resolved), RegistryError> {
        let platform = self
            .options
            .platform
            .as_ref()
            .map_or_else(Platform::host, Platform::from);
        let repository = self.reference.repository().to_owned();
        let mut wanted = self.reference.manifest_reference().to_owned();
        let mut expected: Option<Descriptor> = self.reference.digest().map(|d| Descriptor {
            digest: d.to_owned(),
            ..Descriptor::default()
        });
        for _ in 0..=MAX_INDEX_DEPTH {
            let what = format!("manifest `{repository}:{wanted}`");
            let path = format!("/v2/{repository}/manifests/{wanted}");
            let (url, response) = self.get(&path, Some(manifest::ACCEPT)).await?;
            self.check_status(&url, response.status(), &what)?;
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .map(str::to_owned);
            let data = read_limited(response, &url, MAX_MANIFEST_BYTES, &what).await?;
            let actual = digest_of(&data);
            if let Some(expected) = &expected {
                if actual != expected.digest {
                    return Err(RegistryError::corrupt(
                        self.registry(),
                        &what,
                        format!("its bytes hash to {actual}"),
                    ));
                }
                if expected.size != 0 && expected.size != data.len() as u64 {
                    return Err(RegistryError::corrupt(
                        self.registry(),
                        &what,
                        format!(
                            "it is {} bytes, its descriptor says {}",
                            data.len(),
                            expected.size
                        ),
                    ));
                }
            }
            let document =
                classify(content_type.as_deref(), &data).map_err(|(unsupported, reason)| {
                    if unsupported {
                        RegistryError::Unsupported(format!("image `{}`: {reason}", self.reference))
                    } else {
                        RegistryError::corrupt(self.registry(), &what, reason)
                    }
                })?;
            let resolved = match document {
                Document::Index(index) => {
                    let chosen = manifest::select(&index, &platform).map_err(|available| {
                        RegistryError::NoPlatform {
                            reference: self.reference.to_string(),
                            platform: platform.to_string(),
                            available,
                        }
                    })?;
                    wanted = chosen.digest.clone();
                    expected = Some(chosen.clone());
                    continue;
                }
                Document::Manifest(manifest) => Resolved::Image(manifest),
                Document::Artifact(artifact) => Resolved::Artifact(artifact),
            };
            let media_type = serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
                .or(content_type.filter(|c| c == manifest::DOCKER_MANIFEST))
                .unwrap_or_else(|| manifest::OCI_MANIFEST.to_owned());
            return Ok((data, media_type, resolved));
        }
        Err(RegistryError::corrupt(
            self.registry(),
            format!("index of `{}`", self.reference),
            format!("indexes nest more than {MAX_INDEX_DEPTH} deep"),
        ))
    }

    /// Streams the blob `blob` (its size already checked against its cap)
    /// into `writer`, checking its length and digest as it comes.
    async fn fetch_blob(
        &mut self,
        blob: &Descriptor,
        mut writer: impl BlobSink,
    ) -> Result<(), RegistryError> {
        let what = format!("blob {}", blob.digest);
        let path = format!("/v2/{}/blobs/{}", self.reference.repository(), blob.digest);
        let (url, response) = self.get(&path, None).await?;
        self.check_status(&url, response.status(), &what)?;
        let mut body = response.into_body();
        let registry = self.registry().to_owned();
        while let Some(chunk) = next_chunk(&mut body, &url).await? {
            writer
                .write(&chunk)
                .await?
                .map_err(|r| RegistryError::corrupt(&registry, &what, r))?;
        }
        writer
            .finish(&blob.digest)
            .await?
            .map_err(|r| RegistryError::corrupt(&registry, &what, r))?;
        tracing::debug!(registry = %registry, blob = %blob.digest, size = blob.size, "fetched and verified");
        Ok(())
    }
}
