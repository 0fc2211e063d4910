//! A disk file copied between nodes in pieces, for a cold migration: read
//! out as [`DiskChunk`]s with the SHA-256 of every byte last
//! ([`export_file`]), and written from them into a staging file that takes
//! its final name only once its size and digest are right ([`import_file`]).
//! The one owner of the copy's checks, whatever driver's disk it is.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zixiao_core::driver::{DiskChunk, DiskChunks, DiskExport, MAX_DISK_CHUNK};
use zixiao_core::DriverError;

use crate::errors::{invalid, io};

/// The disk file at `path`, read in pieces of at most [`MAX_DISK_CHUNK`]
/// bytes, then its digest. The file must not change while it is read (its
/// instance is stopped, and its driver holds it). Errors: `NotFound` (no
/// such file), `Internal` (reading it).
pub(crate) async fn export_file(path: &Path, what: &str) -> Result<DiskExport, DriverError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DriverError::NotFound(format!("the disk of {what}")))
        }
        Err(e) => return Err(io(format!("open {}", path.display()), e)),
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| io(format!("read the size of {}", path.display()), e))?
        .len();
    let shown = path.display().to_string();
    let state = Some((file, Sha256::new()));
    let chunks = futures::stream::unfold(state, move |state| {
        let shown = shown.clone();
        async move {
            let (mut file, mut digest) = state?;
            let mut buffer = vec![0; MAX_DISK_CHUNK];
            match read_full(&mut file, &mut buffer).await {
                Ok(0) => {
                    let sha256 = digest.finalize().into();
                    Some((Ok(DiskChunk::End { sha256 }), None))
                }
                Ok(n) => {
                    buffer.truncate(n);
                    digest.update(&buffer);
                    Some((Ok(DiskChunk::Data(buffer)), Some((file, digest))))
                }
                Err(e) => Some((Err(io(format!("read {shown}"), e)), None)),
            }
        }
    });
    Ok(DiskExport {
        size,
        chunks: chunks.boxed(),
    })
}

/// Fills `buffer` from `file` as far as the file goes: the bytes read
/// (fewer only at its end).
async fn read_full(file: &mut tokio::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes `size` bytes from `chunks` to `path` (mode 0644: the hypervisor's
/// own user reads it), through a staging file next to it that is renamed
/// only once exactly `size` bytes came and their SHA-256 is the one the
/// chunks end with; on any failure nothing is left at either name.
/// Returns the bytes written. Errors: `InvalidArgument` (a piece over
/// [`MAX_DISK_CHUNK`], more or fewer bytes than `size`, a missing or
/// different digest, data after the digest), whatever ended `chunks`,
/// `Internal` (writing).
pub(crate) async fn import_file(
    path: &Path,
    size: u64,
    mut chunks: DiskChunks,
) -> Result<u64, DriverError> {
    let staging = staging_path(path);
    let written = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staging)
            .await
            .map_err(|e| io(format!("create {}", staging.display()), e))?;
        let mut digest = Sha256::new();
        let mut written = 0u64;
        let mut expected = None;
        while let Some(chunk) = chunks.next().await {
            match chunk? {
                _ if expected.is_some() => {
                    return Err(refused("the disk's pieces go on after its digest"))
                }
                DiskChunk::Data(data) if data.len() > MAX_DISK_CHUNK => {
                    return Err(refused(format!(
                        "a piece of {} bytes is over the {MAX_DISK_CHUNK} a piece may carry",
                        data.len()
                    )))
                }
                DiskChunk::Data(data) => {
                    written += data.len() as u64;
                    if written > size {
                        return Err(refused(format!(
                            "more than the {size} bytes announced came"
                        )));
                    }
                    digest.update(&data);
                    file.write_all(&data)
                        .await
                        .map_err(|e| io(format!("write {}", staging.display()), e))?;
                }
                DiskChunk::End { sha256 } => expected = Some(sha256),
            }
        }
        let Some(expected) = expected else {
            return Err(refused(format!(
                "the copy ended after {written} of {size} bytes, without its digest"
            )));
        };
        if written != size {
            return Err(refused(format!(
                "{written} bytes came of the {size} announced"
            )));
        }
        let got: [u8; 32] = digest.finalize().into();
        if got != expected {
            return Err(refused(format!(
                "the disk's SHA-256 is {} here, {} where it came from",
                hex(&got),
                hex(&expected)
            )));
        }
        file.sync_all()
            .await
            .map_err(|e| io(format!("sync {}", staging.display()), e))?;
        Ok(written)
    }
    .await;
    let renamed = match written {
        Ok(written) => {
            set_readable(&staging)?;
            tokio::fs::rename(&staging, path)
                .await
                .map(|()| written)
                .map_err(|e| {
                    io(
                        format!("rename {} to {}", staging.display(), path.display()),
                        e,
                    )
                })
        }
        Err(e) => Err(e),
    };
    if renamed.is_err() {
        let _ = tokio::fs::remove_file(&staging).await;
    }
    renamed
}

/// Where [`import_file`] writes before the copy is known good.
pub(crate) fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn set_readable(path: &Path) -> Result<(), DriverError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io(format!("set the mode of {}", path.display()), e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn refused(reason: impl Into<String>) -> DriverError {
    invalid("disk", reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn copy(data: &[u8]) -> (tempfile::TempDir, DiskExport) {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("source.qcow2");
        std::fs::write(&source, data).expect("write");
        let export = export_file(&source, "test").await.expect("export");
        (dir, export)
    }

    #[tokio::test]
    async fn a_disk_arrives_byte_for_byte_across_pieces() {
        let data: Vec<u8> = (0..(MAX_DISK_CHUNK * 2 + 7)).map(|i| i as u8).collect();
        let (dir, export) = copy(&data).await;
        assert_eq!(export.size, data.len() as u64);
        let target = dir.path().join("target.qcow2");
        let written = import_file(&target, export.size, export.chunks)
            .await
            .expect("import");
        assert_eq!(written, data.len() as u64);
        assert_eq!(std::fs::read(&target).expect("read"), data);
        assert!(!staging_path(&target).exists());
    }

    #[tokio::test]
    async fn a_wrong_digest_a_short_copy_or_a_missing_end_leave_nothing() {
        let (dir, export) = copy(b"marker").await;
        let pieces: Vec<_> = export.chunks.collect().await;
        let target = dir.path().join("target.qcow2");
        // The pieces sent, the size announced, what the refusal names.
        type Case<'a> = (Vec<Result<DiskChunk, DriverError>>, u64, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![
                    Ok(DiskChunk::Data(b"marker".to_vec())),
                    Ok(DiskChunk::End { sha256: [0; 32] }),
                ],
                6,
                "SHA-256",
            ),
            (
                vec![Ok(DiskChunk::Data(b"marker".to_vec()))],
                6,
                "without its digest",
            ),
            (
                pieces
                    .iter()
                    .map(|p| Ok(p.as_ref().expect("piece").clone()))
                    .collect(),
                7,
                "6 bytes came of the 7",
            ),
            (
                vec![Ok(DiskChunk::Data(vec![0; MAX_DISK_CHUNK + 1]))],
                u64::MAX,
                "over the",
            ),
        ];
        for (chunks, size, part) in cases {
            let err = import_file(&target, size, futures::stream::iter(chunks).boxed())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{err}");
            assert!(format!("{err}").contains(part), "{err}");
            assert!(!target.exists() && !staging_path(&target).exists());
        }
    }

    #[tokio::test]
    async fn a_missing_disk_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = export_file(&dir.path().join("none"), "instance x")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::NotFound);
    }
}
