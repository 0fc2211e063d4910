//! Instance log files that runtimes append to (a container's stdout and
//! stderr, a VM's serial console), read from an offset so callers can follow
//! them without any daemon, and kept to a size on disk (`keeper`).
//!
//! A log is trimmed by punching its oldest whole blocks out
//! (`FALLOC_FL_PUNCH_HOLE`), not by renaming or truncating it: the runtime
//! that writes it (a containerd shim, QEMU, our VMM) keeps its handle and
//! its place, the file keeps its length, so every offset a reader holds
//! stays valid and `logs -f` follows on as if nothing happened. A read
//! from an offset in the discarded part starts at the oldest byte kept,
//! after a line saying how much was discarded.

use std::io::SeekFrom;
use std::os::fd::AsRawFd;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use zixiao_core::{DriverError, LogChunk};

use crate::errors::io;

// Only the runtimes whose logs we write keep them to size: libvirt's
// console logs are written and rotated by virtlogd.
#[cfg(any(feature = "containerd", feature = "microvm"))]
mod keeper;
#[cfg(any(feature = "containerd", feature = "microvm"))]
pub(crate) use keeper::{in_subdirectories, LogKeeper};

/// The largest chunk one read returns, whatever the caller asks for.
const MAX_READ: usize = 4 << 20;

/// The offset of the first byte at or after `offset` that was not
/// discarded (logs have no holes of their own): `offset` itself unless it
/// falls in the trimmed part.
fn first_kept(file: &impl AsRawFd, offset: u64) -> std::io::Result<u64> {
    let at = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
    // SAFETY: lseek on an open descriptor, with no pointers.
    let found = unsafe { libc::lseek(file.as_raw_fd(), at, libc::SEEK_DATA) };
    if found < 0 {
        let e = std::io::Error::last_os_error();
        // ENXIO: nothing kept at or after `offset` (past the end).
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(offset)
        } else {
            Err(e)
        };
    }
    Ok(found as u64)
}

/// The line a read gets in place of the `bytes` a trim discarded.
fn discarded_line(bytes: u64) -> Vec<u8> {
    format!(
        "[zixiao: {bytes} bytes of older log discarded to keep the log within its size limit]\n"
    )
    .into_bytes()
}

/// Reads up to `max` bytes of the log at `path` from `offset`. An offset
/// past the end returns no data and the end as `next_offset`.
/// Errors: `NotFound` (no log yet, naming `what`, such as ``log of instance `web` ``).
pub(crate) async fn read(
    path: &Path,
    what: &str,
    offset: u64,
    max: usize,
) -> Result<LogChunk, DriverError> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DriverError::NotFound(what.to_owned()))
        }
        Err(e) => return Err(io(format!("open {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| io(format!("stat {}", path.display()), e))?
        .len();
    if offset >= len {
        return Ok(LogChunk {
            data: Vec::new(),
            next_offset: len.max(offset),
        });
    }
    let start = first_kept(&file, offset).map_err(|e| io(format!("read {}", path.display()), e))?;
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| io(format!("read {}", path.display()), e))?;
    let want = usize::try_from(len - start)
        .unwrap_or(usize::MAX)
        .min(max)
        .min(MAX_READ);
    let mut data = if start > offset {
        discarded_line(start - offset)
    } else {
        Vec::new()
    };
    let skipped = data.len();
    data.resize(skipped + want, 0);
    let mut filled = skipped;
    while filled < data.len() {
        let n = file
            .read(&mut data[filled..])
            .await
            .map_err(|e| io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    data.truncate(filled);
    Ok(LogChunk {
        next_offset: start + (filled - skipped) as u64,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_from_an_offset_and_reports_missing_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        assert!(matches!(
            read(&path, "log of instance `web`", 0, 10).await,
            Err(DriverError::NotFound(_))
        ));
        tokio::fs::write(&path, b"hello\nworld\n")
            .await
            .expect("write");
        let chunk = read(&path, "log of instance `web`", 6, 100)
            .await
            .expect("read");
        assert_eq!(chunk.data, b"world\n");
        assert_eq!(chunk.next_offset, 12);
        let chunk = read(&path, "log of instance `web`", 0, 3)
            .await
            .expect("read");
        assert_eq!((chunk.data.as_slice(), chunk.next_offset), (&b"hel"[..], 3));
        let end = read(&path, "log of instance `web`", 50, 3)
            .await
            .expect("read");
        assert!(end.data.is_empty());
    }
}
