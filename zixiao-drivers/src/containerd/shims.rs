//! Shims containerd lost track of. containerd 1.6 forgets a task whose
//! delete was cut off (its client killed) after the task was removed and
//! before its shim was shut down: the shim lives on, holding the task's
//! bundle directory, and no task lists it until containerd restarts (found
//! by the CLI's crash test). Its bundle then blocks every later start of
//! the container (`mkdir …: file exists`).
//!
//! The driver acts only on its own containers: a shim is one of
//! `containerd-shim-* -namespace NS -id ID -address SOCKET` with the
//! driver's namespace, the instance id and the driver's socket, found in
//! `/proc`, and only while containerd has no task for that container. It
//! is stopped, and its bundle removed as containerd's own clean-up after
//! a dead shim removes it (`Bundle.Delete`): the rootfs unmounted, the
//! bundle directory and its work directory removed.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zixiao_core::DriverError;

use super::error::io;

/// How long a killed shim may take to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A shim process of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shim {
    pid: i32,
    /// Its working directory: the task's bundle, where containerd starts it.
    bundle: Option<PathBuf>,
}

/// The live shims of container `id` in `namespace` of the containerd at `socket`.
pub(super) fn find(socket: &Path, namespace: &str, id: &str) -> Vec<Shim> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_shim = args.first().is_some_and(|program| {
            Path::new(std::ffi::OsStr::from_bytes(program))
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"containerd-shim"))
        });
        let after = |flag: &[u8]| {
            args.iter()
                .position(|a| *a == flag)
                .and_then(|i| args.get(i + 1))
                .copied()
        };
        let ours = after(b"-namespace") == Some(namespace.as_bytes())
            && after(b"-id") == Some(id.as_bytes())
            && after(b"-address").is_some_and(|address| same_file(address, socket));
        if is_shim && ours && is_alive(pid) {
            found.push(Shim {
                pid,
                bundle: std::fs::read_link(entry.path().join("cwd")).ok(),
            });
        }
    }
    found
}

/// Stops the shims of container `id` that containerd no longer tracks
/// (the caller has checked that it has no task for `id`) and removes
/// their bundles. Idempotent. Errors: `Internal` (a bundle that cannot
/// be removed).
pub(super) async fn remove_untracked(
    socket: &Path,
    namespace: &str,
    id: &str,
) -> Result<(), DriverError> {
    for shim in find(socket, namespace, id) {
        // SAFETY: kill(2) takes plain integers; the pid is a shim of this
        // container found just now.
        unsafe {
            libc::kill(shim.pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        while is_alive(shim.pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(bundle) = &shim.bundle {
            remove_bundle(bundle, namespace, id)?;
        }
    }
    Ok(())
}

/// Removes the task bundle `bundle` of container `id` in `namespace`, as
/// containerd does after a dead shim: unmounts its rootfs, removes it and
/// its work directory (where its `work` link points). Touches nothing that
/// is not `…/<namespace>/<id>`. Idempotent. Errors: `Internal`.
pub(super) fn remove_bundle(bundle: &Path, namespace: &str, id: &str) -> Result<(), DriverError> {
    if !is_task_dir(bundle, namespace, id) {
        return Ok(());
    }
    let rootfs = bundle.join("rootfs");
    if is_mount_point(&rootfs) {
        let path = std::ffi::CString::new(rootfs.as_os_str().as_bytes())
            .map_err(|e| io(format!("unmount {}", rootfs.display()), e.into()))?;
        // SAFETY: `path` is a valid NUL-terminated string for the call.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io(
                format!("unmount {}", rootfs.display()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    let work = std::fs::read_link(bundle.join("work"))
        .ok()
        .filter(|w| is_task_dir(w, namespace, id));
    for dir in std::iter::once(bundle.to_owned()).chain(work) {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("remove {}", dir.display()), e)),
        }
    }
    Ok(())
}

/// The bundle that a task create reports as existing (`mkdir <path>:
/// file exists`), when it is container `id`'s in `namespace`.
pub(super) fn bundle_in_message(message: &str, namespace: &str, id: &str) -> Option<PathBuf> {
    let start = message.find("mkdir ")? + "mkdir ".len();
    let end = start + message[start..].find(": file exists")?;
    let path = PathBuf::from(&message[start..end]);
    is_task_dir(&path, namespace, id).then_some(path)
}

/// Whether `dir` is an absolute `…/<namespace>/<id>` directory path.
fn is_task_dir(dir: &Path, namespace: &str, id: &str) -> bool {
    dir.is_absolute()
        && dir
            .file_name()
            .is_some_and(|n| n.as_bytes() == id.as_bytes())
        && dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n.as_bytes() == namespace.as_bytes())
}

fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(inner), Some(Ok(outer))) => inner.dev() != outer.dev(),
        _ => false,
    }
}

/// Whether the path `named` (a shim's `-address`) is the socket `socket`.
fn same_file(named: &[u8], socket: &Path) -> bool {
    let named = Path::new(std::ffi::OsStr::from_bytes(named));
    named == socket
        || matches!(
            (std::fs::canonicalize(named), std::fs::canonicalize(socket)),
            (Ok(a), Ok(b)) if a == b
        )
}

/// Whether `pid` runs (a zombie does not).
fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after
                .split_whitespace()
                .next()
                .map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_containers_own_bundle_is_named() {
        let message = "failed to start shim: mkdir /run/containerd/io.containerd.runtime.v2.task/\
                       zixiao/abc: file exists: unknown";
        assert_eq!(
            bundle_in_message(message, "zixiao", "abc"),
            Some(PathBuf::from(
                "/run/containerd/io.containerd.runtime.v2.task/zixiao/abc"
            ))
        );
        assert_eq!(bundle_in_message(message, "other", "abc"), None);
        assert_eq!(bundle_in_message(message, "zixiao", "abd"), None);
        assert_eq!(
            bundle_in_message("mkdir x: file exists", "zixiao", "x"),
            None
        );
    }

    #[test]
    fn a_bundle_is_removed_with_its_work_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let bundle = root.path().join("state").join("ns").join("id");
        let work = root.path().join("root").join("ns").join("id");
        std::fs::create_dir_all(bundle.join("rootfs")).expect("bundle");
        std::fs::create_dir_all(&work).expect("work");
        std::fs::write(bundle.join("config.json"), b"{}").expect("write");
        std::os::unix::fs::symlink(&work, bundle.join("work")).expect("link");
        // Not this container's: left alone.
        remove_bundle(&bundle, "ns", "other").expect("remove");
        assert!(bundle.exists());
        remove_bundle(&bundle, "ns", "id").expect("remove");
        assert!(!bundle.exists() && !work.exists());
        remove_bundle(&bundle, "ns", "id").expect("again");
        assert!(find(Path::new("/nonexistent.sock"), "ns", "id").is_empty());
    }
}
