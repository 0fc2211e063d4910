//! Network namespaces by path: create one pinned on a file (as `ip netns add`
//! does, but anywhere), remove it, and run code inside one.
//!
//! Namespace switches happen only on short-lived threads of our own: the
//! calling thread (often a tokio worker) never changes namespace.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates a new network namespace pinned on `path` (a new empty file; its
/// parent directory is created). On error nothing is left at `path`.
pub fn create(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().write(true).create_new(true).open(path)?;
    let target = cstring(path)?;
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<()> {
                // SAFETY: unshare only changes this thread's network
                // namespace; the thread ends right after and shares no
                // namespace-dependent state with the rest of the process.
                check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
                let source = CString::new(format!(
                    "/proc/self/task/{}/ns/net",
                    // SAFETY: gettid has no preconditions.
                    unsafe { libc::gettid() }
                ))
                .map_err(|_| io::Error::other("NUL in a /proc path"))?;
                // SAFETY: both paths are valid NUL-terminated strings that
                // outlive the call; a bind mount reads no other pointer.
                check(unsafe {
                    libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                })
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Unpins and removes the namespace at `path`; a missing one is not an error.
/// The namespace itself goes when nothing else (a process) holds it.
pub fn remove(path: &Path) -> io::Result<()> {
    let target = cstring(path)?;
    // SAFETY: `target` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // EINVAL: not a mount point (a half-created pin); ENOENT: gone.
        if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            return Err(err);
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a fresh thread inside the namespace at `path` and returns
/// its result. Sockets `f` opens stay in that namespace after it returns.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: `ns` is an open namespace file for the duration of
                // the call; setns only affects this short-lived thread.
                check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Runs `f` on a new thread moved into a new, empty network namespace (and
/// joins it): everything `f` does to the network (threads and processes it
/// starts included) stays there, and the namespace goes when `f` returns.
/// For tests and tools that must not touch the host's network. Returns
/// `Err` with the panic when `f` panics.
pub fn run_isolated<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::Result<io::Result<T>> {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this new thread's network namespace.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        Ok(f())
    })
    .join()
}
