//! Disk files copied between nodes in pieces, for a cold migration: read
//! out as [`DiskChunk`]s, each file's bytes followed by their SHA-256
//! ([`export_files`]), and written from them into staging files that take
//! their final names only once every file's size and digest are right
//! ([`import_files`]). The one owner of the copy's checks, whatever
//! driver's disks they are, and however many.

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
// The vm driver's one overlay; the microvm driver moves several files.
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
pub(crate) async fn export_file(path: &Path, what: &str) -> Result<DiskExport, DriverError> {
    export_files(&[path.to_owned()], what).await
}

/// The disk files at `paths`, one after the other, as [`export_file`]
/// reads one: every file's size first (each opened here, so a missing one
/// fails before a byte is sent), then each file's pieces and its digest.
/// No path: an empty export. Errors: as [`export_file`].
pub(crate) async fn export_files(paths: &[PathBuf], what: &str) -> Result<DiskExport, DriverError> {
    let mut sizes = Vec::with_capacity(paths.len());
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
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
        sizes.push(size);
        files.push((file, path.display().to_string()));
    }
    let chunks = futures::stream::iter(files)
        .flat_map(|(file, shown)| file_chunks(file, shown))
        .boxed();
    Ok(DiskExport { sizes, chunks })
}

/// `file`'s bytes in pieces, then their digest; a read error ends them.
fn file_chunks(
    file: tokio::fs::File,
    shown: String,
) -> impl futures::Stream<Item = Result<DiskChunk, DriverError>> {
    let state = Some((file, Sha256::new()));
    futures::stream::unfold(state, move |state| {
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
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
pub(crate) async fn import_file(
    path: &Path,
    size: u64,
    chunks: DiskChunks,
) -> Result<u64, DriverError> {
    import_files(&[(path.to_owned(), size)], 0o644, chunks).await
}

/// Writes each `(path, size)` of `disks` in turn from `chunks` (each
/// file's bytes, then its digest, as [`export_files`] sends them) as
/// [`import_file`] writes one, with `mode`: every file goes to a staging
/// file first, and all are renamed into place only once every one came
/// whole and checked; on any failure nothing is left at any name. Returns
/// the bytes written. Errors: as [`import_file`], naming the disk when
/// there are several.
pub(crate) async fn import_files(
    disks: &[(PathBuf, u64)],
    mode: u32,
    mut chunks: DiskChunks,
) -> Result<u64, DriverError> {
    let received = async {
        let mut written = 0;
        for (index, (path, size)) in disks.iter().enumerate() {
            let which = match disks.len() {
                1 => "the disk".to_owned(),
                _ => format!("disk {index}"),
            };
            written += receive(&staging_path(path), *size, &which, &mut chunks).await?;
        }
        if chunks.next().await.is_some() {
            return Err(refused("the pieces go on after the last disk's digest"));
        }
        for (path, _) in disks {
            set_mode(&staging_path(path), mode)?;
        }
        for (path, _) in disks {
            let staging = staging_path(path);
            tokio::fs::rename(&staging, path).await.map_err(|e| {
                io(
                    format!("rename {} to {}", staging.display(), path.display()),
                    e,
                )
            })?;
        }
        Ok(written)
    }
    .await;
    if received.is_err() {
        for (path, _) in disks {
            let _ = tokio::fs::remove_file(staging_path(path)).await;
            let _ = tokio::fs::remove_file(path).await;
        }
    }
    received
}

/// Writes one disk of `size` bytes from `chunks` to `staging`, up to and
/// with its digest (what follows is the next disk's), and checks it.
async fn receive(
    staging: &Path,
    size: u64,
    which: &str,
    chunks: &mut DiskChunks,
) -> Result<u64, DriverError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(staging)
        .await
        .map_err(|e| io(format!("create {}", staging.display()), e))?;
    let mut digest = Sha256::new();
    let mut written = 0u64;
    let mut expected = None;
    while let Some(chunk) = chunks.next().await {
        match chunk? {
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
                        "more than the {size} bytes announced for {which} came"
                    )));
                }
                digest.update(&data);
                file.write_all(&data)
                    .await
                    .map_err(|e| io(format!("write {}", staging.display()), e))?;
            }
            DiskChunk::End { sha256 } => {
                expected = Some(sha256);
                break;
            }
        }
    }
    let Some(expected) = expected else {
        return Err(refused(format!(
            "the copy of {which} ended after {written} of {size} bytes, without its digest"
        )));
    };
    if written != size {
        return Err(refused(format!(
            "{written} bytes came of the {size} announced for {which}"
        )));
    }
    let got: [u8; 32] = digest.finalize().into();
    if got != expected {
        return Err(refused(format!(
            "the SHA-256 of {which} is {} here, {} where it came from",
            hex(&got),
            hex(&expected)
        )));
    }
    file.sync_all()
        .await
        .map_err(|e| io(format!("sync {}", staging.display()), e))?;
    Ok(written)
}

/// Where [`import_files`] writes before the copy is known good.
pub(crate) fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DriverError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
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
        assert_eq!(export.sizes, [data.len() as u64]);
        let target = dir.path().join("target.qcow2");
        let written = import_file(&target, export.sizes[0], export.chunks)
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
                "6 bytes came of the 7 announced for the disk",
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
    async fn several_disks_arrive_each_whole_or_none_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first: Vec<u8> = (0..(MAX_DISK_CHUNK + 5)).map(|i| (i % 7) as u8).collect();
        let second = b"second disk".to_vec();
        let sources = [dir.path().join("a"), dir.path().join("b")];
        std::fs::write(&sources[0], &first).expect("write");
        std::fs::write(&sources[1], &second).expect("write");
        let targets = [dir.path().join("a.copy"), dir.path().join("b.copy")];
        let export = export_files(&sources, "test").await.expect("export");
        assert_eq!(export.sizes, [first.len() as u64, second.len() as u64]);
        let disks: Vec<(PathBuf, u64)> = targets.iter().cloned().zip(export.sizes).collect();
        let written = import_files(&disks, 0o600, export.chunks)
            .await
            .expect("import");
        assert_eq!(written, (first.len() + second.len()) as u64);
        assert_eq!(std::fs::read(&targets[0]).expect("read"), first);
        assert_eq!(std::fs::read(&targets[1]).expect("read"), second);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&targets[1])
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // The second disk's digest is wrong: neither is kept.
        let export = export_files(&sources, "test").await.expect("export");
        let mut pieces: Vec<_> = export.chunks.collect().await;
        *pieces.last_mut().expect("the last digest") = Ok(DiskChunk::End { sha256: [1; 32] });
        let err = import_files(&disks, 0o600, futures::stream::iter(pieces).boxed())
            .await
            .unwrap_err();
        assert!(format!("{err}").contains("SHA-256 of disk 1"), "{err}");
        for target in &targets {
            assert!(!target.exists() && !staging_path(target).exists());
        }

        // No disk: nothing sent, nothing written; a piece where none is due is refused.
        let none = export_files(&[], "test").await.expect("export");
        assert!(none.sizes.is_empty());
        assert_eq!(
            import_files(&[], 0o600, none.chunks).await.expect("none"),
            0
        );
        let stray = futures::stream::iter([Ok(DiskChunk::Data(vec![1]))]).boxed();
        let err = import_files(&[], 0o600, stray).await.unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{err}");
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
