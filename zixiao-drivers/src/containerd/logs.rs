//! Per-instance log files. The runc shim appends a task's stdout and stderr
//! straight into one file, so logs keep flowing while no Zixiao process
//! runs, and reading them needs no daemon at all.
//!
//! Why plain paths rather than one `file://` URI: containerd 1.6's shim,
//! given the same path for stdout and stderr, shares one file handle
//! between the two copiers but lets the stdout copier close it when its
//! pipe ends, so stderr written after that moment is lost (seen here as a
//! missing last stderr line in about one run in three under load). Two
//! different spellings of the same path get two handles, each opened with
//! `O_APPEND` and closed by its own copier; writes still interleave in
//! order on the one file.

use std::path::{Path, PathBuf};

/// The file name of an instance's combined stdout and stderr.
const LOG_FILE: &str = "output.log";

/// Where the driver keeps the files of the instances of `namespace`.
pub(crate) fn namespace_dir(state_dir: &Path, namespace: &str) -> PathBuf {
    state_dir.join("containerd").join(namespace)
}

/// Where the driver keeps an instance's files.
pub(crate) fn instance_dir(state_dir: &Path, namespace: &str, id: &str) -> PathBuf {
    namespace_dir(state_dir, namespace).join(id)
}

/// The instance's log file in `dir`.
pub(crate) fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

/// The stdout and stderr paths that make the shim append to `path`
/// (which must exist): the same file, spelled differently (see the module
/// docs).
pub(crate) fn stdio_paths(path: &Path) -> (String, String) {
    let stdout = path.display().to_string();
    let stderr = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => dir.join(".").join(name).display().to_string(),
        _ => stdout.clone(),
    };
    (stdout, stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_appends_to_the_log_file() {
        let path = log_path(Path::new("/var/lib/zixiao/web"));
        assert_eq!(path, Path::new("/var/lib/zixiao/web/output.log"));
        let (stdout, stderr) = stdio_paths(&path);
        assert_eq!(stdout, "/var/lib/zixiao/web/output.log");
        assert_eq!(stderr, "/var/lib/zixiao/web/./output.log");
    }
}
