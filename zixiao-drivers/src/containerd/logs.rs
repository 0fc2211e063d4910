//! Per-instance log files. The runc shim writes a task's stdout and stderr
//! straight into one file (a `file://` stdio URI), so logs keep flowing while
//! no Zixiao process runs, and reading them needs no daemon at all.

use std::path::{Path, PathBuf};

/// The file name of an instance's combined stdout and stderr.
const LOG_FILE: &str = "output.log";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_appends_to_the_log_file() {
        let path = log_path(Path::new("/var/lib/zixiao/web"));
        assert_eq!(path, Path::new("/var/lib/zixiao/web/output.log"));
        assert_eq!(log_uri(&path), "file:///var/lib/zixiao/web/output.log");
    }
}
