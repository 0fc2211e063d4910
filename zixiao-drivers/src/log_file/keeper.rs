//! Keeping instance logs to a size on disk: a [`LogKeeper`] task trims
//! every log a driver lists by punching out its oldest whole blocks (see
//! the parent module for why the file keeps its length).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::first_kept;
use crate::LogLimit;

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

#[cfg(test)]
mod tests {
    use super::super::read;
    use super::*;

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
