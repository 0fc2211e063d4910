//! The jail of a VMM process, as Firecracker's jailer builds it: a new PID
//! namespace (the VMM is its pid 1; see the binary), a new mount namespace
//! whose root is a small read-only tmpfs holding only the run directory,
//! bind-mounted at its own absolute path (the VMM opens the KVM device and
//! the guest's files before, and keeps them open); its own cgroup (see
//! `cgroup.rs`); and an unprivileged uid and gid with no capabilities.
//!
//! The mount namespace ([`Namespace`]) is built on a thread of its own,
//! normally by the launcher while the VMM execs, and the VMM joins it with
//! one `setns`: its boot path has no mount work left.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::VmmError;

/// The uid and gid a jailed VMM runs as when no `zixiao-vmm` user exists.
pub const DEFAULT_JAIL_ID: u32 = 64000;
/// The user whose uid and gid a jailed VMM takes, when it exists.
pub const JAIL_USER: &str = "zixiao-vmm";
/// The directory in the run dir the jail's root is mounted on (empty on the host).
pub const JAIL_DIR: &str = "jail";

/// How a VMM process is confined. [`Confinement::default`] is the production
/// setting: jailed and seccomp-filtered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Namespaces, pivot_root, cgroup and the uid/gid drop. `None` runs the
    /// VMM in the launcher's namespaces, as the launcher's user (for hosts
    /// where the launcher is not root, and to measure what the jail costs).
    pub jail: Option<JailConfig>,
    /// Per-thread seccomp allow-lists; a syscall outside them kills the VMM
    /// with SIGSYS. Off only to debug or to measure the filters' cost.
    pub seccomp: bool,
}

impl Default for Confinement {
    fn default() -> Self {
        Confinement {
            jail: Some(JailConfig::default()),
            seccomp: true,
        }
    }
}

impl Confinement {
    /// Neither jail nor seccomp: the VMM as it ran before the jail existed.
    pub fn none() -> Self {
        Confinement {
            jail: None,
            seccomp: false,
        }
    }

    /// Seccomp only: for launchers that are not root.
    pub fn seccomp_only() -> Self {
        Confinement {
            jail: None,
            seccomp: true,
        }
    }
}

/// The jail's identity and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailConfig {
    /// The uid the VMM drops to after opening its inputs (not 0).
    pub uid: u32,
    /// The gid the VMM drops to (not 0); no supplementary groups are kept.
    pub gid: u32,
    /// The cgroup caps the VMM's memory at the guest's memory plus this
    /// much (MiB): the VMM itself, page cache of snapshot files, slack.
    pub memory_overhead_mib: u64,
    /// The cgroup caps the VMM's tasks at one per vCPU and one for the
    /// devices' I/O thread (network cards, vsock) plus this many (the API, console and
    /// lifecycle threads, and one for KVM's per-VM worker thread).
    pub extra_pids: u32,
}

impl Default for JailConfig {
    /// The `zixiao-vmm` user's uid and gid when it exists, else 64000.
    fn default() -> Self {
        let (uid, gid) = user_ids(JAIL_USER).unwrap_or((DEFAULT_JAIL_ID, DEFAULT_JAIL_ID));
        JailConfig {
            uid,
            gid,
            memory_overhead_mib: 64,
            extra_pids: 4,
        }
    }
}

impl JailConfig {
    /// Rejects a jail that would run as root.
    pub fn validate(&self) -> Result<(), VmmError> {
        if self.uid == 0 {
            return Err(VmmError::invalid("jail.uid", "the jail never runs as root"));
        }
        if self.gid == 0 {
            return Err(VmmError::invalid("jail.gid", "the jail never runs as root"));
        }
        if self.extra_pids < 3 {
            return Err(VmmError::invalid(
                "jail.extra_pids",
                "at least 3 (API, console and lifecycle threads)",
            ));
        }
        Ok(())
    }
}

/// uid and gid of `name` from the user database.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: zeroed passwd is a valid out-parameter (plain C struct).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is a NUL-terminated
    // string, `pwd` and `result` are live locals, `buf` has `buf.len()` bytes.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// The socket on which `launch()` tells a VMM it started that its cgroup
/// and its jail are ready ([`LauncherJail::ARG`] names the descriptor): one
/// byte with the jail's mount namespace attached once they are, end of
/// file if they could not be (the VMM then fails). The launcher makes them
/// while the VMM starts; the VMM moves itself into the group
/// ([`LauncherJail::join`]) before it starts a thread or allocates guest
/// memory, so nothing of the guest is charged outside it.
#[derive(Debug)]
pub struct LauncherJail(std::os::unix::net::UnixStream);

impl LauncherJail {
    /// The VMM's argument that names the descriptor.
    pub const ARG: &'static str = "--jail-fd";

    /// Waits for the launcher's word, then moves this (single-threaded)
    /// process into the group of the VMM with host pid `pid`. Returns the
    /// jail the launcher built, to enter once the host's tree is no longer
    /// needed.
    pub(crate) fn join(self, pid: u32) -> Result<Namespace, VmmError> {
        use vmm_sys_util::sock_ctrl_msg::ScmSocket;
        let unavailable = |why: String| VmmError::Unavailable {
            message: format!("jail: {why}"),
        };
        let mut byte = [0u8; 1];
        let mut fds = [-1 as RawFd; 1];
        let (n, nfds) = loop {
            // SAFETY: the iovec points into `byte`, which lives and is not
            // otherwise borrowed during the call.
            let mut iov = [libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: byte.len(),
            }];
            // SAFETY: as above; any byte may be written there.
            match unsafe { self.0.recv_with_fds(&mut iov, &mut fds) } {
                Err(e) if e.errno() == libc::EINTR => continue,
                Err(e) => return Err(unavailable(format!("waiting for the launcher: {e}"))),
                Ok(received) => break received,
            }
        };
        // SAFETY: recvmsg installed the descriptors it reports in this
        // process; each is owned by exactly one OwnedFd from here on.
        let mut received = fds[..nfds]
            .iter()
            .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
        let namespace = match (n, received.next()) {
            (1, Some(fd)) => Namespace(fd),
            _ => {
                return Err(unavailable(
                    "the launcher could not make this VMM's cgroup and jail".into(),
                ))
            }
        };
        crate::timeline::mark("cgroup-go");
        crate::cgroup::enter(pid)?;
        Ok(namespace)
    }
}

impl TryFrom<&str> for LauncherJail {
    type Error = VmmError;

    /// Takes the inherited descriptor `arg` names: a number from 3 up,
    /// open, a socket. Called once per process, by the binary for its
    /// argument.
    fn try_from(arg: &str) -> Result<Self, VmmError> {
        let bad = |reason: String| VmmError::invalid(LauncherJail::ARG, reason);
        let fd: RawFd = arg
            .parse()
            .map_err(|_| bad(format!("{arg:?} is not a descriptor number")))?;
        if fd < 3 {
            return Err(bad(format!("{fd} is one of stdin, stdout and stderr")));
        }
        // SAFETY: a zeroed stat is a valid out-parameter; fstat(2) writes
        // into the live local and reads nothing else.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(bad(format!(
                "descriptor {fd}: {}",
                std::io::Error::last_os_error()
            )));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(bad(format!("descriptor {fd} is not a socket")));
        }
        // SAFETY: fcntl(2) on a descriptor just checked to be open; the
        // VMM starts nothing that should inherit it.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: the descriptor is open (fstat above) and was inherited
        // across exec: nothing else in this process owns it, and the
        // binary takes it once.
        Ok(LauncherJail(unsafe {
            std::os::unix::net::UnixStream::from(OwnedFd::from_raw_fd(fd))
        }))
    }
}

/// Tells the VMM on `socket` that its cgroup and its jail (`namespace`)
/// are ready: the launcher's side of [`LauncherJail::join`].
pub(crate) fn send_jail(
    socket: &std::os::unix::net::UnixStream,
    namespace: &Namespace,
) -> Result<(), VmmError> {
    use std::os::fd::AsRawFd;
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;
    socket
        .send_with_fd(&b"1"[..], namespace.0.as_raw_fd())
        .map(drop)
        .map_err(|e| VmmError::internal("telling the VMM its jail is ready", e))
}

fn last_os(what: impl std::fmt::Display) -> VmmError {
    VmmError::Unavailable {
        message: format!("jail: {what}: {}", std::io::Error::last_os_error()),
    }
}

fn cpath(path: &Path) -> Result<CString, VmmError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| VmmError::invalid("path", format!("{} contains a NUL", path.display())))
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), VmmError> {
    let source_c = source.map(cpath).transpose()?;
    let target_c = cpath(target)?;
    let fstype_c = fstype.map(|f| CString::new(f).unwrap_or_default());
    let data_c = data.map(|d| CString::new(d).unwrap_or_default());
    // SAFETY: every pointer is NULL or a NUL-terminated string that lives
    // until the call returns.
    let rc = unsafe {
        libc::mount(
            source_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data_c
                .as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc != 0 {
        return Err(last_os(format!(
            "mounting {} on {}",
            source.map_or("-".into(), |s| s.display().to_string()),
            target.display()
        )));
    }
    Ok(())
}

/// `path` below `root`: the same absolute path, inside the jail.
fn inside(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => out.push(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// A VMM's jail: a mount namespace whose root is a read-only tmpfs holding
/// only the run dir, at its own absolute path. Held by its descriptor: it
/// lives while this does or a process is in it.
#[derive(Debug)]
pub(crate) struct Namespace(OwnedFd);

impl Namespace {
    /// Builds the jail of `run_dir` (an absolute path) on a thread of its
    /// own, which unshares its mount namespace from the caller's (a mount
    /// namespace and the root directory are per thread) and ends once it
    /// is built: the calling thread and process stay in the host's tree.
    /// Needs root. The launcher builds it while the VMM execs; a VMM
    /// started by hand builds its own.
    pub(crate) fn build(run_dir: &Path) -> Result<Namespace, VmmError> {
        let run_dir = run_dir.to_path_buf();
        std::thread::Builder::new()
            .name("jail".into())
            .spawn(move || build_on_this_thread(&run_dir))
            .map_err(|e| VmmError::ResourceExhausted {
                message: format!("jail: cannot spawn a thread to build it: {e}"),
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(VmmError::internal(
                    "building the jail",
                    "its thread panicked",
                ))
            })
    }

    /// Moves this process, single-threaded and root, into the jail: its
    /// mount namespace, with the jail's root as root and working
    /// directory. No host path is reachable once this returns.
    pub(crate) fn enter(self) -> Result<(), VmmError> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a descriptor this value owns; it reads no
        // memory.
        if unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
            return Err(last_os("entering the jail (setns)"));
        }
        Ok(())
    }
}

/// [`Namespace::build`]'s thread: a new mount namespace for this thread,
/// the jail's tree in it, pivot_root into it and the old root detached.
fn build_on_this_thread(run_dir: &Path) -> Result<Namespace, VmmError> {
    if !run_dir.is_absolute() {
        return Err(VmmError::invalid(
            "run_dir",
            format!(
                "{} must be an absolute path for a jailed VMM",
                run_dir.display()
            ),
        ));
    }
    // SAFETY: unshare(2) takes no pointers. This thread gets its own mount
    // namespace and its own copy of the filesystem context it shared with
    // the process's other threads, which keep theirs.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(last_os("unshare(CLONE_NEWNS)"));
    }
    // Opened while `/proc` is still in this thread's tree: what keeps the
    // namespace once this thread has ended.
    let namespace = std::fs::File::open("/proc/thread-self/ns/mnt")
        .map(|f| Namespace(OwnedFd::from(f)))
        .map_err(|e| VmmError::Unavailable {
            message: format!("jail: opening its mount namespace: {e}"),
        })?;
    // Nothing mounted from here on propagates back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let root = run_dir.join(JAIL_DIR);
    std::fs::create_dir_all(&root).map_err(|e| VmmError::Unavailable {
        message: format!("jail: creating {}: {e}", root.display()),
    })?;
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // Room for the directories down to the run dir.
    mount(
        Some(Path::new("zixiao-jail")),
        &root,
        Some("tmpfs"),
        nosuid,
        Some("size=64k,nr_inodes=256,mode=0755"),
    )?;
    bind_run_dir(&root, run_dir, nosuid)?;
    // The jail's own tree is fixed from here on. Made read-only here, by
    // its path on the host, rather than as `/` after the pivot: until the
    // old root is detached a remount of `/` could reach the host's root
    // filesystem.
    mount(
        None,
        &root,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | nosuid,
        None,
    )?;
    pivot_into(&root)?;
    // A failure above leaves nothing: the mounts were made in this
    // thread's namespace only, which ends with `namespace`.
    Ok(namespace)
}

/// Bind-mounts `run_dir` (read-write, `nosuid,nodev,noexec`) at its own
/// absolute path under `root`.
fn bind_run_dir(root: &Path, run_dir: &Path, flags: libc::c_ulong) -> Result<(), VmmError> {
    let target = inside(root, run_dir);
    std::fs::create_dir_all(&target).map_err(|e| VmmError::Unavailable {
        message: format!("jail: mount point {}: {e}", target.display()),
    })?;
    mount(Some(run_dir), &target, None, libc::MS_BIND, None)?;
    // A bind keeps its source's flags: they are set by a remount.
    mount(
        None,
        &target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | flags,
        None,
    )
}

/// pivot_root(2) into `root`, then detaches the old root, so that no host
/// path is reachable once this returns. The detach waits for an RCU grace
/// period (0.2-3 ms on a loaded host).
fn pivot_into(root: &Path) -> Result<(), VmmError> {
    std::env::set_current_dir(root).map_err(|e| VmmError::Unavailable {
        message: format!("jail: chdir {}: {e}", root.display()),
    })?;
    let dot = c".";
    // SAFETY: pivot_root(".", ".") stacks the old root on the new one; both
    // pointers are static NUL-terminated strings.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(last_os("pivot_root"));
    }
    // SAFETY: umount2 with a static path; MNT_DETACH drops the old root
    // that pivot_root left stacked on ".".
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(last_os("detaching the old root"));
    }
    Ok(())
}

/// Gives the run dir to the jail's user: the VMM binds its sockets and
/// writes `vm.json` and `exit.json` there after dropping root.
pub(crate) fn give_run_dir(run_dir: &Path, config: &JailConfig) -> Result<(), VmmError> {
    std::os::unix::fs::chown(run_dir, Some(config.uid), Some(config.gid)).map_err(|e| {
        VmmError::Unavailable {
            message: format!("jail: chown {}: {e}", run_dir.display()),
        }
    })
}

/// Runs `open` with the file permissions of `config`'s user: filesystem
/// uid and gid, and no supplementary groups (dropped for good here, as the
/// uid drop would), then takes root's back. What `open` opened, that user
/// could have opened; root's capabilities other than the filesystem ones
/// stay, but a file system call has no use for them.
pub(crate) fn with_jail_user_files<T>(
    config: &JailConfig,
    open: impl FnOnce() -> T,
) -> Result<T, VmmError> {
    // SAFETY: setgroups with a count of 0 reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(last_os("setgroups"));
    }
    // The gid first, while the fsuid is still root's (CAP_SETGID stays in
    // any case). Each call returns the previous id; an id of -1 is never
    // set and reads the current one.
    // SAFETY: setfsgid/setfsuid take plain integers.
    let (gid, uid) = unsafe { (libc::setfsgid(config.gid), libc::setfsuid(config.uid)) };
    // SAFETY: as above.
    let now = unsafe { (libc::setfsgid(u32::MAX), libc::setfsuid(u32::MAX)) };
    let switched = now == (config.gid as libc::c_int, config.uid as libc::c_int);
    let out = switched.then(open);
    // Back to root's: the uid first, which gives back the filesystem
    // capabilities.
    // SAFETY: as above.
    unsafe {
        libc::setfsuid(uid as u32);
        libc::setfsgid(gid as u32);
    }
    out.ok_or_else(|| VmmError::Unavailable {
        message: format!(
            "jail: cannot take the file permissions of uid {} gid {}",
            config.uid, config.gid
        ),
    })
}

/// Drops every supplementary group, then to `config`'s gid and uid (real,
/// effective and saved): root's capabilities go with it.
pub(crate) fn drop_privileges(config: &JailConfig) -> Result<(), VmmError> {
    // SAFETY: setgroups with a count of 0 reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(last_os("setgroups"));
    }
    // SAFETY: setresgid/setresuid take plain integers.
    if unsafe { libc::setresgid(config.gid, config.gid, config.gid) } != 0 {
        return Err(last_os("setresgid"));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(config.uid, config.uid, config.uid) } != 0 {
        return Err(last_os("setresuid"));
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(last_os("PR_SET_NO_NEW_PRIVS"));
    }
    Ok(())
}

/// The pid of this process in the PID namespace of the mounted `/proc`
/// (the launcher's), read before the jail replaces `/proc`.
pub fn host_pid() -> Option<u32> {
    std::fs::read_link("/proc/self")
        .ok()?
        .to_str()?
        .parse()
        .ok()
}

/// Clones this (single-threaded) process into a new PID namespace, as a
/// child of this process's parent (`CLONE_PARENT`), so the launcher reaps
/// it and sees how it died. Returns `Ok(true)` in the new process (pid 1 of
/// the namespace) and `Ok(false)` in the caller, which should exit at once.
pub fn clone_into_pid_namespace() -> Result<bool, VmmError> {
    let flags = (libc::CLONE_NEWPID | libc::CLONE_PARENT) as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM and with a NULL stack behaves as
    // fork(2): the child gets a copy of this single-threaded process and
    // resumes here with a return value of 0. No pointers are passed.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    match pid {
        -1 => Err(last_os("clone(CLONE_NEWPID)")),
        0 => Ok(true),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_their_absolute_name_inside_the_jail() {
        assert_eq!(
            inside(Path::new("/run/vm/jail"), Path::new("/boot/vmlinuz")),
            PathBuf::from("/run/vm/jail/boot/vmlinuz")
        );
    }

    #[test]
    fn a_jail_never_runs_as_root() {
        let mut config = JailConfig::default();
        assert!(config.uid != 0 && config.gid != 0);
        config.validate().unwrap();
        config.uid = 0;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("jail.uid"));
    }
}
