//! Per-instance log files. The runc shim writes a task's stdout and stderr
//! straight into one file (a `file://` stdio URI), so logs keep flowing while
//! no Zixiao process runs, and reading them needs no daemon at all.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use zixiao_core::{DriverError, LogChunk};

use super::error::io;

/// The file name of an instance's combined stdout and stderr.
const LOG_FILE: &str = "output.log";

/// The largest chunk one read returns, whatever the caller asks for.
const MAX_READ: usize = 4 << 20;

/// Where the driver keeps an instance's files.
pub(crate) fn instance_dir(state_dir: &Path, namespace: &str, id: &str) -> PathBuf {
    state_dir.join("containerd").join(namespace).join(id)
}

/// The instance's log file in `dir`.
pub(crate) fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

/// The stdio URI that makes the shim append to `path`.
pub(crate) fn log_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Reads up to `max` bytes of the log at `path` from `offset`. An offset
/// past the end returns no data and the end as `next_offset`.
/// Errors: `NotFound` (no log yet, named by `instance`).
pub(crate) async fn read(
    path: &Path,
    instance: &str,
    offset: u64,
    max: usize,
) -> Result<LogChunk, DriverError> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DriverError::NotFound(format!(
                "log of instance `{instance}`"
            )))
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
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| io(format!("read {}", path.display()), e))?;
    let want = usize::try_from(len - offset)
        .unwrap_or(usize::MAX)
        .min(max)
        .min(MAX_READ);
    let mut data = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
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
        next_offset: offset + filled as u64,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_from_an_offset_and_reports_missing_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path());
        assert!(matches!(
            read(&path, "web", 0, 10).await,
            Err(DriverError::NotFound(_))
        ));
        tokio::fs::write(&path, b"hello\nworld\n")
            .await
            .expect("write");
        let chunk = read(&path, "web", 6, 100).await.expect("read");
        assert_eq!(chunk.data, b"world\n");
        assert_eq!(chunk.next_offset, 12);
        let chunk = read(&path, "web", 0, 3).await.expect("read");
        assert_eq!((chunk.data.as_slice(), chunk.next_offset), (&b"hel"[..], 3));
        let end = read(&path, "web", 50, 3).await.expect("read");
        assert!(end.data.is_empty());
        assert_eq!(log_uri(&path), format!("file://{}", path.display()));
    }
}
