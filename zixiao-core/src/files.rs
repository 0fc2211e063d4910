//! Reading a file a caller names (a spec file, a manifest): a regular file
//! only, and only up to a size cap, so `/dev/zero` cannot fill memory and a
//! FIFO with no writer cannot block a command forever. Errors are
//! `InvalidArgument` on the field that named the file, saying what it is.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Reads all of the regular file at `path`, refusing anything else and
/// anything larger than `max` bytes. Never blocks on a FIFO or a device:
/// the file is opened without waiting and its type checked before a byte
/// is read.
///
/// Errors: `InvalidArgument` on `field`: no such file, not a regular file,
/// too large, unreadable (the caller named it, so the caller can fix it).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let spec = dir.path().join("web.yaml");
/// std::fs::write(&spec, "name: web\n")?;
/// assert_eq!(zixiao_core::files::read_regular(&spec, "--file", 1024)?, b"name: web\n");
/// let err = zixiao_core::files::read_regular("/dev/zero".as_ref(), "--file", 1024).unwrap_err();
/// assert_eq!(err.to_string(), "invalid --file: `/dev/zero` is a character device, not a regular file");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_regular(path: &Path, field: &str, max: u64) -> Result<Vec<u8>> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO opens at once instead of waiting for a writer.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::invalid(field, format!("`{shown}` does not exist"))
            }
            _ => Error::invalid(field, format!("cannot open `{shown}`: {e}")),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::invalid(field, format!("cannot read `{shown}`: {e}")))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = kind_of(&kind);
        return Err(Error::invalid(
            field,
            format!("`{shown}` is {what}, not a regular file"),
        ));
    }
    let too_large = |size: u64| {
        Error::invalid(
            field,
            format!("`{shown}` is {size} bytes; at most {max} bytes are read"),
        )
    };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte past the cap tells a file that grew since it was checked.
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::invalid(field, format!("cannot read `{shown}`: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, in words for an error
/// message ("a directory", "a FIFO", ...): one wording for every place that
/// refuses such a file.
pub fn kind_of(kind: &std::fs::FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_fifo_without_a_writer_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("spec.fifo");
        let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_regular(&fifo, "--file", 1024).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[test]
    fn missing_files_devices_directories_and_large_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_regular(Path::new("/dev/zero"), "--file", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_regular(dir.path(), "--file", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'a'; 2048]).expect("write");
        let err = read_regular(&big, "--file", 1024).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("2048 bytes"), "{err}");
        assert_eq!(
            read_regular(&big, "--file", 2048).expect("fits").len(),
            2048
        );
        let err = read_regular(&dir.path().join("nope"), "--file", 10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
