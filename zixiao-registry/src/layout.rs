//! Writing a pulled image as an OCI image layout tar, the format the node's
//! runtime already imports (and checks) from local archives: a blob is
//! written as it streams in and is refused, before the archive is used, if
//! its length or digest is not what its descriptor says.

use std::collections::HashSet;
use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::error::RegistryError;

/// A tar block.
const BLOCK: usize = 512;

/// An OCI image layout tar being written.
pub(crate) struct LayoutWriter {
    file: BufWriter<tokio::fs::File>,
    path: String,
    blobs: HashSet<String>,
}

/// One blob being written into the archive: counts and hashes what it is given.
pub(crate) struct BlobWriter<'a> {
    layout: &'a mut LayoutWriter,
    verifier: Verifier,
}

/// One blob being written to a file of its own (an artifact's file).
pub(crate) struct FileBlob {
    file: BufWriter<tokio::fs::File>,
    path: String,
    verifier: Verifier,
}

/// Where a fetched blob streams to, each checking the blob against its
/// descriptor as it comes.
pub(crate) trait BlobSink {
    /// Appends `data`; `Err(reason)` if the blob grows past its size.
    async fn write(&mut self, data: &[u8]) -> Result<Result<(), String>, RegistryError>;
    /// Ends the blob; `Err(reason)` if its length or digest is not `digest`'s.
    async fn finish(self, digest: &str) -> Result<Result<(), String>, RegistryError>;
}

/// Counts and hashes a blob as it streams, against its descriptor's size
/// and digest: the one check every blob of a pull passes.
struct Verifier {
    expected: u64,
    written: u64,
    hasher: Sha256,
}

impl Verifier {
    fn new(expected: u64) -> Self {
        Verifier {
            expected,
            written: 0,
            hasher: Sha256::new(),
        }
    }

    /// Takes `data`; `Err(reason)` once the blob is longer than its size.
    fn update(&mut self, data: &[u8]) -> Result<(), String> {
        self.written += data.len() as u64;
        if self.written > self.expected {
            return Err(format!(
                "it is longer than the {} bytes its descriptor says",
                self.expected
            ));
        }
        self.hasher.update(data);
        Ok(())
    }

    /// `Err(reason)` if what it took is not `expected` bytes hashing to `digest`.
    fn finish(self, digest: &str) -> Result<(), String> {
        if self.written != self.expected {
            return Err(format!(
                "it ended after {} of the {} bytes its descriptor says",
                self.written, self.expected
            ));
        }
        let actual = hex_digest(self.hasher);
        if actual != digest {
            return Err(format!("its bytes hash to {actual}"));
        }
        Ok(())
    }
}

impl FileBlob {
    /// Creates `path` (which must not exist) for a blob of `size` bytes,
    /// readable by all: QEMU, which libvirt may run as another user, reads
    /// the image it becomes.
    pub(crate) async fn create(path: &Path, size: u64) -> Result<FileBlob, RegistryError> {
        let shown = path.display().to_string();
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .await
            .map_err(|e| RegistryError::io(format!("create {shown}"), e))?;
        Ok(FileBlob {
            file: BufWriter::with_capacity(1 << 20, file),
            path: shown,
            verifier: Verifier::new(size),
        })
    }
}

impl BlobSink for FileBlob {
    async fn write(&mut self, data: &[u8]) -> Result<Result<(), String>, RegistryError> {
        if let Err(reason) = self.verifier.update(data) {
            return Ok(Err(reason));
        }
        let path = &self.path;
        self.file
            .write_all(data)
            .await
            .map_err(|e| RegistryError::io(format!("write {path}"), e))
            .map(Ok)
    }

    /// Flushes and syncs the file once the blob checks out: a later step
    /// renames it into a store that must not hold a torn file.
    async fn finish(mut self, digest: &str) -> Result<Result<(), String>, RegistryError> {
        if let Err(reason) = self.verifier.finish(digest) {
            return Ok(Err(reason));
        }
        let path = self.path;
        self.file
            .flush()
            .await
            .map_err(|e| RegistryError::io(format!("write {path}"), e))?;
        self.file
            .get_ref()
            .sync_all()
            .await
            .map_err(|e| RegistryError::io(format!("sync {path}"), e))?;
        Ok(Ok(()))
    }
}

impl LayoutWriter {
    /// Creates the archive at `path`, with its `oci-layout` file.
    pub(crate) async fn create(path: &Path) -> Result<LayoutWriter, RegistryError> {
        let shown = path.display().to_string();
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|e| RegistryError::io(format!("create {shown}"), e))?;
        let mut layout = LayoutWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            path: shown,
            blobs: HashSet::new(),
        };
        layout
            .add_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .await?;
        Ok(layout)
    }

    /// Whether the blob `digest` is in the archive already (an image may
    /// list a layer twice).
    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blobs.contains(digest)
    }

    /// Adds a small file.
    pub(crate) async fn add_file(&mut self, name: &str, data: &[u8]) -> Result<(), RegistryError> {
        self.header(name, data.len() as u64).await?;
        self.write(data).await?;
        self.pad(data.len() as u64).await
    }

    /// Starts the blob `digest` (checked by the caller to be `sha256:<hex>`)
    /// of `size` bytes.
    pub(crate) async fn begin_blob(
        &mut self,
        digest: &str,
        size: u64,
    ) -> Result<BlobWriter<'_>, RegistryError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.header(&format!("blobs/sha256/{hex}"), size).await?;
        self.blobs.insert(digest.to_owned());
        Ok(BlobWriter {
            layout: self,
            verifier: Verifier::new(size),
        })
    }

    /// Ends the archive and flushes it.
    pub(crate) async fn finish(mut self) -> Result<(), RegistryError> {
        self.write(&[0u8; 2 * BLOCK]).await?;
        let path = self.path.clone();
        self.file
            .flush()
            .await
            .map_err(|e| RegistryError::io(format!("write {path}"), e))
    }

    async fn header(&mut self, name: &str, size: u64) -> Result<(), RegistryError> {
        let mut header = tar::Header::new_ustar();
        header
            .set_path(name)
            .map_err(|e| RegistryError::io(format!("name {name} in {}", self.path), e))?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.write(header.as_bytes()).await
    }

    async fn pad(&mut self, size: u64) -> Result<(), RegistryError> {
        let rest = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.write(&[0u8; BLOCK][..rest]).await
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), RegistryError> {
        let path = &self.path;
        self.file
            .write_all(data)
            .await
            .map_err(|e| RegistryError::io(format!("write {path}"), e))
    }
}

impl BlobSink for BlobWriter<'_> {
    async fn write(&mut self, data: &[u8]) -> Result<Result<(), String>, RegistryError> {
        if let Err(reason) = self.verifier.update(data) {
            return Ok(Err(reason));
        }
        self.layout.write(data).await.map(Ok)
    }

    async fn finish(self, digest: &str) -> Result<Result<(), String>, RegistryError> {
        let expected = self.verifier.expected;
        if let Err(reason) = self.verifier.finish(digest) {
            return Ok(Err(reason));
        }
        self.layout.pad(expected).await.map(Ok)
    }
}

/// `sha256:<hex>` of what `hasher` has seen.
pub(crate) fn hex_digest(hasher: Sha256) -> String {
    let bytes = hasher.finalize();
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `sha256:<hex>` of `data`.
pub(crate) fn digest_of(data: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(data);
    hex_digest(hasher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_layout_is_a_tar_with_checked_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.tar");
        let mut layout = LayoutWriter::create(&path).await.unwrap();
        let good = digest_of(b"hello");
        let mut blob = layout.begin_blob(&good, 5).await.unwrap();
        blob.write(b"hel").await.unwrap().unwrap();
        blob.write(b"lo").await.unwrap().unwrap();
        blob.finish(&good).await.unwrap().unwrap();
        assert!(layout.has_blob(&good));
        let mut bad = layout.begin_blob(&good, 5).await.unwrap();
        bad.write(b"jello").await.unwrap().unwrap();
        let reason = bad.finish(&good).await.unwrap().unwrap_err();
        assert!(reason.contains("hash to"), "{reason}");
        let mut long = layout.begin_blob(&good, 5).await.unwrap();
        assert!(long.write(b"hello!").await.unwrap().is_err());
        layout.finish().await.unwrap();

        let mut archive = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .take(2)
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names[0], "oci-layout");
        assert_eq!(names[1], format!("blobs/sha256/{}", &good[7..]));
    }
}
