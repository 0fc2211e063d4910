//! Private files: keys, the CA and client configurations (which hold
//! tokens) are written 0600 in directories made 0700.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells apart the temporary files of writes running at once in this process.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Creates `dir` (and its parents) with mode 0700 if it is missing; an
/// existing directory is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `contents` to `path` with mode 0600. With `exclusive`, only into
/// a new file (`AlreadyExists` otherwise: race-free, two writers cannot
/// both succeed); else through a temporary file renamed over the old one,
/// so a reader never sees half a file. Either way the mode holds from the
/// first byte.
pub(crate) fn write_private(path: &Path, contents: &[u8], exclusive: bool) -> io::Result<()> {
    let target = if exclusive {
        path.to_owned()
    } else {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        let n = TEMPORARY.fetch_add(1, Ordering::Relaxed);
        name.push(format!(".tmp{}.{n}", std::process::id()));
        path.with_file_name(name)
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if exclusive {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let written = (|| {
        let mut file = options.open(&target)?;
        // A leftover temporary file keeps its old mode through `open`.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        if !exclusive || e.kind() != io::ErrorKind::AlreadyExists {
            let _ = fs::remove_file(&target);
        }
        return Err(e);
    }
    if !exclusive {
        fs::rename(&target, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_new_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/secret");
        create_private_dir(path.parent().unwrap()).unwrap();
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        write_private(&path, b"one", true).unwrap();
        let err = write_private(&path, b"two", true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            fs::read(&path).unwrap(),
            b"one",
            "an exclusive write replaced nothing"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"three", false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
