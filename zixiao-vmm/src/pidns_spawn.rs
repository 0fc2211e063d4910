//! Starting a jailed VMM straight in a new PID namespace: the launcher
//! clones (vfork-style) with `CLONE_NEWPID` and the child execs the VMM
//! binary, which is then pid 1 of its namespace from its first
//! instruction. Without this the VMM had to clone itself into the
//! namespace, one more process whose start waited for a CPU (1-4 ms on a
//! loaded host) on every jailed boot.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::VmmError;

/// A VMM process started by [`spawn`]: its pid (in the launcher's PID
/// namespace; the launcher is its parent and reaps it) and the read end of
/// its stdout.
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) stdout: File,
}

fn cstring(what: &str, bytes: &[u8]) -> Result<CString, VmmError> {
    CString::new(bytes).map_err(|_| VmmError::invalid(what, "contains a NUL byte"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), VmmError> {
    let mut ends = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the live two-element array.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(VmmError::internal(
            "creating a pipe to the VMM",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 just returned these descriptors, owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) })
}

/// The descriptor [`spawn`]'s `extra` becomes in the child.
pub(crate) const EXTRA_FD: RawFd = 3;

/// A socket pair: the first end for a child to inherit as [`EXTRA_FD`],
/// the second for the launcher. Both ends are close-on-exec here.
pub(crate) fn inherited_socket() -> Result<(OwnedFd, UnixStream), VmmError> {
    let (child, launcher) =
        UnixStream::pair().map_err(|e| VmmError::internal("creating a socket to the VMM", e))?;
    let child = OwnedFd::from(child);
    if child.as_raw_fd() >= EXTRA_FD {
        return Ok((child, launcher));
    }
    // Below 3 (the launcher's stdio was closed), the child's dup2 of its
    // own stdio would overwrite it first: moved up.
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one.
    let moved = unsafe { libc::fcntl(child.as_raw_fd(), libc::F_DUPFD_CLOEXEC, EXTRA_FD) };
    if moved < 0 {
        return Err(VmmError::internal(
            "creating a socket to the VMM",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fcntl just returned this descriptor, owned by nothing else.
    Ok((unsafe { OwnedFd::from_raw_fd(moved) }, launcher))
}

/// Runs `binary args...` in a new PID namespace, with stdin from
/// /dev/null, stdout to a pipe, stderr to `stderr` and `extra` (from
/// [`inherited_socket`]) as [`EXTRA_FD`], inside the network namespace
/// `netns` if given. Returns once the binary is executing (or with the
/// reason it could not be): `Unavailable` naming the binary.
pub(crate) fn spawn(
    binary: &Path,
    args: &[&OsStr],
    stderr: &File,
    extra: Option<RawFd>,
    netns: Option<RawFd>,
) -> Result<Spawned, VmmError> {
    // Everything the child touches is prepared here: between fork and exec
    // a child of a multi-threaded process may only make system calls.
    let path = cstring("binary", binary.as_os_str().as_bytes())?;
    let argv: Vec<CString> = std::iter::once(Ok(path.clone()))
        .chain(args.iter().map(|a| cstring("arguments", a.as_bytes())))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let stdin = File::open("/dev/null")
        .map_err(|e| VmmError::internal("opening /dev/null for the VMM", e))?;
    let (stdout_read, stdout_write) = pipe()?;
    // Closed by the exec; carries errno if the exec (or setns) failed.
    let (error_read, error_write) = pipe()?;
    let fds = [
        stdin.as_raw_fd(),
        stdout_write.as_raw_fd(),
        stderr.as_raw_fd(),
        extra.unwrap_or(-1),
    ];
    // The child shares this memory until it execs (as posix_spawn's does:
    // no copy of the launcher's page tables). No signal handler of the
    // launcher may run in it meanwhile: every signal is blocked across the
    // clone, and the child restores the mask only after resetting every
    // disposition to the default.
    let mut setup = ChildSetup {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        fds,
        netns: netns.unwrap_or(-1),
        error_fd: error_write.as_raw_fd(),
        // SAFETY: an all-zero sigset_t is a valid value (overwritten below).
        mask: unsafe { std::mem::zeroed() },
    };
    // SAFETY: as above.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigfillset and pthread_sigmask write only to the live locals.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut setup.mask);
    }
    let mut stack = vec![0u8; CHILD_STACK];
    // The ABI wants the stack pointer 16-byte aligned at the call; a
    // byte vector's start need not be, so the top is aligned as an address.
    let end = stack.as_mut_ptr_range().end;
    let top = end.wrapping_sub(end as usize % 16);
    // SAFETY: the child's stack grows down from `top`, inside `stack`;
    // CLONE_VFORK suspends this thread until the child has exec'd or
    // exited, so `stack` and `setup` outlive every use by it.
    let pid = unsafe {
        let top = top.cast::<libc::c_void>();
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_NEWPID | libc::SIGCHLD,
            (&raw mut setup).cast(),
        )
    };
    let clone_error = std::io::Error::last_os_error();
    // SAFETY: restores this thread's mask from the live local.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &setup.mask, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(VmmError::Unavailable {
            message: format!(
                "cannot start the VMM binary {} in a new PID namespace: {clone_error}",
                binary.display(),
            ),
        });
    }
    drop(error_write);
    drop(stdout_write);
    // The child has exec'd (end of file) or failed (its errno).
    let mut errno = [0u8; 4];
    let mut error = File::from(error_read);
    let failed = std::io::Read::read_exact(&mut error, &mut errno).is_ok();
    if failed {
        let mut status = 0;
        // SAFETY: waits for our own child, which has exited or is exiting.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        return Err(VmmError::Unavailable {
            message: format!(
                "cannot run the VMM binary {}: {}",
                binary.display(),
                std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno))
            ),
        });
    }
    Ok(Spawned {
        pid: pid as u32,
        stdout: File::from(stdout_read),
    })
}

/// The child's stack: enough for a handful of system calls.
const CHILD_STACK: usize = 64 * 1024;

/// What the child of [`spawn`] needs, prepared by the parent.
struct ChildSetup {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Its stdin, stdout, stderr and [`EXTRA_FD`] (-1: none).
    fds: [RawFd; 4],
    netns: RawFd,
    error_fd: RawFd,
    /// The signal mask to exec with (the launcher thread's).
    mask: libc::sigset_t,
}

/// The child of [`spawn`]'s clone: runs on its own stack in the parent's
/// memory, makes only system calls, then execs or exits.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's live ChildSetup (the parent is
    // suspended until this process execs or exits); every call below is a
    // plain system call on descriptors, signal numbers and the prepared
    // NUL-terminated strings and arrays.
    unsafe {
        let setup = &*arg.cast::<ChildSetup>();
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=libc::SIGRTMAX() {
            // Fails harmlessly for SIGKILL, SIGSTOP and libc's own signals.
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
        libc::sigprocmask(libc::SIG_SETMASK, &setup.mask, std::ptr::null_mut());
        for (target, &fd) in setup.fds.iter().enumerate() {
            let target = target as libc::c_int;
            if fd < 0 {
                continue;
            }
            // dup2 onto itself keeps close-on-exec: clear it instead.
            let done = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if done < 0 {
                child_failed(setup.error_fd);
            }
        }
        if setup.netns >= 0 && libc::setns(setup.netns, libc::CLONE_NEWNET) != 0 {
            child_failed(setup.error_fd);
        }
        libc::execve(setup.path, setup.argv, setup.envp);
        child_failed(setup.error_fd)
    }
}

/// In the child: reports errno on `error_fd` and exits.
///
/// # Safety
/// Only to be called in the child of [`spawn`]'s clone.
unsafe fn child_failed(error_fd: RawFd) -> ! {
    // SAFETY: reads this thread's errno.
    let errno = unsafe { *libc::__errno_location() }.to_ne_bytes();
    // SAFETY: writes 4 bytes from a live local; _exit never returns.
    unsafe {
        libc::write(error_fd, errno.as_ptr().cast(), errno.len());
        libc::_exit(127)
    }
}
