//! Instance log files that runtimes append to (a container's stdout and
//! stderr, a VM's serial console), read from an offset so callers can follow
//! them without any daemon.

use std::io::SeekFrom;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use zixiao_core::{DriverError, LogChunk};

use crate::errors::io;

/// The largest chunk one read returns, whatever the caller asks for.
const MAX_READ: usize = 4 << 20;

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
