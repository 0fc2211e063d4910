//! Instance log files that runtimes append to (a container's stdout and
//! stderr, a VM's serial console), read from an offset so callers can follow
//! them without any daemon, and kept to a size on disk ([`LogKeeper`]).
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use zixiao_core::{DriverError, LogChunk};

use crate::errors::io;
use crate::LogLimit;

/// The largest chunk one read returns, whatever the caller asks for.
const MAX_READ: usize = 4 << 20;

/// The unit a log is trimmed in: file systems free whole blocks.
const BLOCK: u64 = 4096;

/// Trims, every [`LogLimit::check_every`], each log a driver lists to its
/// [`LogLimit::max_bytes`]; stops when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct LogKeeper(tokio::task::JoinHandle<()>);

impl Drop for LogKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LogKeeper {
    /// Starts keeping the logs `logs` lists (called on a blocking thread
    /// each time); `None` outside a tokio runtime, where nothing can run
    /// in the background.
    pub(crate) fn spawn(
        limit: LogLimit,
        logs: impl Fn() -> Vec<PathBuf> + Send + Sync + 'static,
    ) -> Option<Arc<LogKeeper>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let logs = Arc::new(logs);
        let max_bytes = limit.max_bytes.max(LogLimit::MIN_BYTES);
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(limit.check_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Each log that cannot be trimmed is reported once, not at
            // every look (a file system without hole punching, say).
            let mut reported = std::collections::HashSet::new();
            loop {
                ticks.tick().await;
                let logs = Arc::clone(&logs);
                let failed = tokio::task::spawn_blocking(move || {
                    logs()
                        .into_iter()
                        .filter_map(|path| trim(&path, max_bytes).err().map(|e| (path, e)))
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                for (path, e) in failed {
                    if reported.insert(path.clone()) {
                        tracing::warn!(log = %path.display(), error = %e, "cannot keep a log within its size limit");
                    }
                }
            }
        });
        Some(Arc::new(LogKeeper(task)))
    }
}

/// The log `log_of` names for each directory in `root` (an instance's
/// directory): what a driver's [`LogKeeper`] looks at. Nothing when `root`
/// is not there yet.
pub(crate) fn in_subdirectories(root: &Path, log_of: impl Fn(&Path) -> PathBuf) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| log_of(&entry.path()))
        .collect()
}

/// Discards the oldest part of the log at `path` once it holds more than
/// `max_bytes`, keeping about the newest half of that, in whole blocks.
/// Half, so that a busy log is trimmed once per half a limit of output,
/// not at every look. A log that is not there is left alone.
pub(crate) fn trim(path: &Path, max_bytes: u64) -> std::io::Result<()> {
    let file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len <= max_bytes || len - first_kept(&file, 0)? <= max_bytes {
        return Ok(());
    }
    let cut = (len - max_bytes / 2) / BLOCK * BLOCK;
    let cut = libc::off_t::try_from(cut).map_err(std::io::Error::other)?;
    // SAFETY: fallocate on an open descriptor we own, with no pointers.
    let punched = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            cut,
        )
    };
    if punched != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

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

    /// Bytes the file takes on disk.
    fn on_disk(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("stat").blocks() * 512
    }

    #[tokio::test]
    async fn a_trimmed_log_keeps_its_offsets_and_says_what_it_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        let lines: String = (0..30_000).map(|i| format!("line {i:08}\n")).collect();
        std::fs::write(&path, &lines).expect("write");
        let len = lines.len() as u64;
        let max = 128 * 1024;
        trim(&path, max).expect("trim");
        // The same length, the oldest part freed: at most the limit on disk.
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), len);
        assert!(on_disk(&path) <= max, "{} bytes on disk", on_disk(&path));
        let cut = (len - max / 2) / BLOCK * BLOCK;
        // A read from the start says what went, then goes on at the cut.
        let chunk = read(&path, "log", 0, 64).await.expect("read");
        let text = String::from_utf8(chunk.data).expect("text");
        let (line, rest) = text.split_once('\n').expect("a line");
        assert_eq!(
            line,
            format!("[zixiao: {cut} bytes of older log discarded to keep the log within its size limit]")
        );
        assert_eq!(
            rest.as_bytes(),
            &lines.as_bytes()[cut as usize..cut as usize + 64]
        );
        assert_eq!(chunk.next_offset, cut + 64);
        // A reader already past the cut sees nothing change.
        let chunk = read(&path, "log", len - 14, 100).await.expect("read");
        assert_eq!(chunk.data, b"line 00029999\n");
        assert_eq!(chunk.next_offset, len);
        // The writer appends on; a second look within the limit does nothing.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut file, b"more\n").expect("append");
        trim(&path, max).expect("trim again");
        let chunk = read(&path, "log", len, 100).await.expect("read");
        assert_eq!(chunk.data, b"more\n");
        assert_eq!(
            read(&path, "log", cut, 1).await.expect("read").data,
            &lines.as_bytes()[cut as usize..=cut as usize]
        );
        // A log that is not there is not an error.
        trim(&dir.path().join("gone.log"), max).expect("nothing to trim");
    }
}
