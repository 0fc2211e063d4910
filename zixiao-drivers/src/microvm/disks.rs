//! A microVM's writable disks: each is the instance's own copy of its
//! image, made once at create in `<instance dir>/disks/` and kept across
//! restarts until the instance is deleted, so the image store's file,
//! which every instance naming the image shares, is never written. A
//! read-only disk is the image itself, which the monitor opens read-only.
//! A copy costs what the image holds, not its size: it shares the image's
//! blocks where the filesystem can (`FICLONE`), and otherwise copies only
//! the image's data ranges (`SEEK_DATA`/`SEEK_HOLE`, `copy_file_range`),
//! leaving its holes holes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zixiao_core::DriverError;

use super::layout::InstanceDir;
use super::plan::PlannedDisk;
use crate::errors::io;

/// The directory of the instance's disk copies.
pub(crate) fn dir(dir: &InstanceDir) -> PathBuf {
    dir.file("disks")
}

/// Makes the copies of `disks` that do not exist yet; those that do are
/// the instance's, and kept. Each is written under a temporary name and
/// renamed into place, so a copy cut off half way is never booted; see the
/// module documentation for how it stays sparse.
/// Errors: `Runtime` (the copy failed: a full disk, an unreadable image).
pub(crate) async fn make_copies(disks: &[PlannedDisk]) -> Result<(), DriverError> {
    let copies: Vec<(PathBuf, PathBuf)> = disks
        .iter()
        .filter_map(|d| Some((d.copy_of.clone()?, d.path.clone())))
        .filter(|(_, copy)| !copy.is_file())
        .collect();
    if copies.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || {
        for (image, copy) in copies {
            copy_once(&image, &copy)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| DriverError::Runtime {
        operation: "copy the microVM's disks".to_owned(),
        source: Box::new(e),
    })?
}

fn copy_once(image: &Path, copy: &Path) -> Result<(), DriverError> {
    let failed = |e| io(format!("copy {} to {}", image.display(), copy.display()), e);
    let parent = copy.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(failed)?;
    let partial = copy.with_extension("partial");
    let copied = sparse_copy(image, &partial).and_then(|()| std::fs::rename(&partial, copy));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(failed(e));
    }
    tracing::info!(image = %image.display(), copy = %copy.display(), "copied a microVM's disk");
    Ok(())
}

/// Copies `image` to a new file `to` (mode 0600: the guest's data, readable
/// by the node's administrator only), sharing blocks or keeping holes.
pub(crate) fn sparse_copy(image: &Path, to: &Path) -> std::io::Result<()> {
    let from = File::open(image)?;
    let _ = std::fs::remove_file(to);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both
    // descriptors are open for the call.
    if unsafe { libc::ioctl(out.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let len = from.metadata()?.len();
    // The size first: what no data range covers stays a hole.
    out.set_len(len)?;
    let mut offset = 0;
    while offset < len {
        let Some(data) = seek(&from, offset, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(&from, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        copy_range(&from, &out, data, end)?;
        offset = end;
    }
    Ok(())
}

/// `lseek(file, offset, whence)`; `None` for `ENXIO` (no data, or no hole,
/// at or after `offset`).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> std::io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
    // SAFETY: lseek on an open descriptor; the result is checked.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if at < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(at as u64))
}

/// Copies bytes `start..end` of `from` to the same offsets of `to`, in the
/// kernel (`copy_file_range`), or through a buffer where it cannot.
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = start;
    while at < end {
        let mut off_in = libc::off64_t::try_from(at).map_err(std::io::Error::other)?;
        let mut off_out = off_in;
        let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(1 << 30);
        // SAFETY: both descriptors are open; the offsets are ours and
        // written back by the kernel.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => at += n as u64,
            _ => {
                let e = std::io::Error::last_os_error();
                // Filesystems (and kernels) without it: a plain copy.
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
                ) {
                    return Err(e);
                }
                let mut buf = vec![0u8; want.min(1 << 20)];
                let n = from.read_at(&mut buf, at)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                to.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileExt, MetadataExt};

    use super::*;

    #[test]
    fn a_mostly_empty_image_is_copied_sparse_and_reads_back_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("image.raw");
        let file = File::create(&image).expect("create");
        file.set_len(64 << 20).expect("size");
        // Data at the start, in the middle (not block aligned) and at the end.
        for (at, byte) in [(0, 1u8), (20 << 20 | 123, 2), ((64 << 20) - 4096, 3)] {
            file.write_all_at(&[byte; 4096], at).expect("write");
        }
        drop(file);
        let copy = dir.path().join("copy.raw");
        sparse_copy(&image, &copy).expect("copy");

        assert_eq!(
            std::fs::read(&copy).expect("copy"),
            std::fs::read(&image).expect("image")
        );
        let meta = std::fs::metadata(&copy).expect("metadata");
        assert_eq!(meta.len(), 64 << 20);
        assert_eq!(meta.mode() & 0o777, 0o600);
        // 16 KiB of data: a few filesystem blocks each, far from 64 MiB
        // (st_blocks counts 512-byte units, shared blocks included).
        let used = meta.blocks() * 512;
        assert!(used <= 1 << 20, "the copy uses {used} bytes");
    }

    #[test]
    fn a_missing_image_is_an_error_and_makes_no_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("copy.raw");
        let err = sparse_copy(&dir.path().join("nosuch"), &copy).expect_err("no image");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(!copy.exists());
    }
}
