//! A pull: resolve the reference to this platform's manifest, fetch its
//! config and layers by digest, verify each against its descriptor while it
//! streams, and write the lot as an OCI image layout tar for the runtime to
//! import.

use std::path::{Path, PathBuf};

use hyper::body::Incoming;
use hyper::header::{HeaderName, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use zixiao_core::driver::{PullOptions, PullProgress};
use zixiao_core::model::{ImageRef, DEFAULT_REGISTRY};

use crate::auth::{authorize, parse_challenge};
use crate::error::RegistryError;
use crate::layout::{digest_of, LayoutWriter};
use crate::manifest::{self, classify, Descriptor, Document, ImageManifest, Platform};
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
    let transport = Transport::new(&options.insecure_registries, &options.registry_cas)?;
    let base = transport.base(api_authority(reference.registry())).await;
    let mut session = Session {
        transport,
        options,
        reference,
        base,
        authorization: None,
    };
    std::fs::create_dir_all(work_dir)
        .map_err(|e| RegistryError::io(format!("create {}", work_dir.display()), e))?;
    let dir = tempfile::Builder::new()
        .prefix("pull-")
        .tempdir_in(work_dir)
        .map_err(|e| {
            RegistryError::io(format!("create a directory in {}", work_dir.display()), e)
        })?;
    let archive = dir.path().join("image.oci.tar");

    let (manifest_data, media_type, manifest) = session.resolve().await?;
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
            session.fetch_blob(blob, &mut layout).await?;
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
    manifest_blob
        .write(&manifest_data)
        .await?
        .map_err(|r| RegistryError::corrupt(reference.registry(), "manifest", r))?;
    manifest_blob
        .finish(&digest)
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
    /// none was): its bytes, media type and parsed form. A pinned digest,
    /// and every index entry, is verified.
    async fn resolve(&mut self) -> Result<(Vec<u8>, String, ImageManifest), RegistryError> {
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
            match document {
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
                }
                Document::Manifest(manifest) => {
                    let media_type = serde_json::from_slice::<serde_json::Value>(&data)
                        .ok()
                        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
                        .or(content_type.filter(|c| c == manifest::DOCKER_MANIFEST))
                        .unwrap_or_else(|| manifest::OCI_MANIFEST.to_owned());
                    return Ok((data, media_type, manifest));
                }
            }
        }
        Err(RegistryError::corrupt(
            self.registry(),
            format!("index of `{}`", self.reference),
            format!("indexes nest more than {MAX_INDEX_DEPTH} deep"),
        ))
    }

    /// Streams the blob `blob` (its size already checked against its cap)
    /// into `layout`, checking its length and digest as it comes.
    async fn fetch_blob(
        &mut self,
        blob: &Descriptor,
        layout: &mut LayoutWriter,
    ) -> Result<(), RegistryError> {
        let what = format!("blob {}", blob.digest);
        let path = format!("/v2/{}/blobs/{}", self.reference.repository(), blob.digest);
        let (url, response) = self.get(&path, None).await?;
        self.check_status(&url, response.status(), &what)?;
        let mut body = response.into_body();
        let registry = self.registry().to_owned();
        let mut writer = layout.begin_blob(&blob.digest, blob.size).await?;
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
