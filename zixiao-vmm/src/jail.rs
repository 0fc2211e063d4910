//! The jail of a VMM process, as Firecracker's jailer builds it: a new PID
//! namespace (the VMM is its pid 1; see the binary), a new mount namespace
//! holding no host mount but the run directory, bind-mounted at its own
//! absolute path under a small read-only tmpfs the VMM chroots into (the
//! VMM opens the KVM device and the guest's files before, and keeps them
//! open); its own cgroup (see `cgroup.rs`); and an unprivileged uid and
//! gid with no capabilities.
//!
//! The mount namespace ([`Namespace`]) is built on a thread of its own,
//! normally the launcher's jail worker while the VMM execs, as a copy of a
//! template namespace made once per process (the host's tree copied and
//! detached once, not per boot); the VMM joins it with one `setns` and a
//! `chroot`.

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
/// The directory in the run dir that VMMs before the jail's template
/// mounted their jail's root on: still reserved (no vsock socket may take
/// its name) and removed at clean-up.
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
            message: format!("{NO_WORD}{why}"),
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
                Err(e) => return Err(unavailable(format!("waiting for it: {e}"))),
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
                    "it could not make this VMM's cgroup and jail".into(),
                ))
            }
        };
        crate::timeline::mark("cgroup-go");
        crate::cgroup::enter(pid)?;
        Ok(namespace)
    }
}

/// How the error of a VMM that got no word from the launcher begins
/// ([`LauncherJail::join`]): the launcher's jail worker knows why.
const NO_WORD: &str = "jail: no word from the launcher: ";

/// Whether `err`, a VMM's answer to its launch, says only that it got no
/// word from the launcher. A VMM that failed on its own (a TAP that is not
/// there, say) says why itself, whatever the worker met meanwhile: its
/// cgroup may have been swept as a dead VMM's while the worker filled it.
pub(crate) fn got_no_word(err: &VmmError) -> bool {
    matches!(err, VmmError::Unavailable { message } if message.starts_with(NO_WORD))
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

/// A VMM's jail: a mount namespace holding no host mount but the run dir.
/// Its root is the process's [`Template`] (an empty read-only tmpfs);
/// on the template's [`JAIL_ROOT`] it has a tmpfs of its own (read-only)
/// holding only the run dir, bind-mounted at its own absolute path. A VMM
/// enters it and chroots into [`JAIL_ROOT`]. Held by its descriptor: it
/// lives while this does or a process is in it.
#[derive(Debug)]
pub(crate) struct Namespace(OwnedFd);

/// Where, in the template's root, each jail's own root is mounted.
const JAIL_ROOT: &str = "/vmm";

impl Namespace {
    /// Builds the jail of `run_dir` (an absolute path) on a thread of its
    /// own, which leaves the caller's mount namespace (a mount namespace
    /// and the root directory are per thread) and ends once it is built:
    /// the calling thread and process stay in the host's tree. Needs root.
    /// A VMM started by hand builds its own jail so; the launcher has its
    /// worker build them ([`Namespace::build_on_worker`]).
    pub(crate) fn build(run_dir: &Path) -> Result<Namespace, VmmError> {
        absolute(run_dir)?;
        let template = Template::of_this_process()?;
        let run_dir = run_dir.to_path_buf();
        on_own_thread(move || build_from_template(&template, &run_dir))?
            .join()
            .unwrap_or_else(|_| {
                Err(VmmError::internal(
                    "building the jail",
                    "its thread panicked",
                ))
            })
    }

    /// On this process's jail worker ([`Worker`]): `first` in the host's
    /// tree, then, if it succeeded, the jail of `run_dir` built and handed
    /// to `then`. Returns at once, with the outcome to come. The launcher's
    /// `first` makes the VMM's cgroup and its `then` sends the jail to the
    /// VMM: nothing on the launch's path waits for either, and no thread
    /// is started or ended per launch (a thread's start, page faults and
    /// exit beside a starting VMM slowed its start here; a thread that
    /// left the process's mount namespace took ~0.8 ms to be joined).
    pub(crate) fn build_on_worker(
        run_dir: &Path,
        first: impl FnOnce() -> Result<(), VmmError> + Send + 'static,
        then: impl FnOnce(Namespace) + Send + 'static,
    ) -> Result<Outcome, VmmError> {
        absolute(run_dir)?;
        let run_dir = run_dir.to_path_buf();
        let (tell, outcome) = std::sync::mpsc::channel();
        Worker::run(Box::new(move |worker: &Worker| {
            let built = first().and_then(|()| worker.build(&run_dir));
            let _ = tell.send(built.map(then));
        }))?;
        Ok(Outcome(outcome))
    }

    /// Moves this process, single-threaded and root, into the jail: its
    /// mount namespace, then a chroot into its own root (the template's
    /// empty tmpfs is all that lies outside it). No host path is reachable
    /// once this returns.
    pub(crate) fn enter(self) -> Result<(), VmmError> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a descriptor this value owns; it reads no
        // memory.
        if unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
            return Err(last_os("entering the jail (setns)"));
        }
        let root = cpath(Path::new(JAIL_ROOT))?;
        // SAFETY: chroot(2) and chdir(2) with NUL-terminated paths that
        // live until they return.
        if unsafe { libc::chroot(root.as_ptr()) } != 0 {
            return Err(last_os("chroot into the jail"));
        }
        // SAFETY: as above.
        if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            return Err(last_os("chdir into the jail"));
        }
        Ok(())
    }
}

/// What became of a [`Namespace::build_on_worker`].
pub(crate) struct Outcome(std::sync::mpsc::Receiver<Result<(), VmmError>>);

impl Outcome {
    /// The error, if the worker met one (waiting for it at most a second:
    /// a VMM reports that it got no word only once the worker is done).
    pub(crate) fn error(self) -> Option<VmmError> {
        match self.0.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(Ok(())) | Err(_) => None,
            Ok(Err(err)) => Some(err),
        }
    }
}

/// A job for the [`Worker`].
type Job = Box<dyn FnOnce(&Worker) + Send>;

/// The thread that builds this process's jails, one at a time, started
/// with the first and kept: its own filesystem context, so that it can
/// enter a jail's mount namespace to build it and come back to the host's.
struct Worker {
    /// The host's mount namespace, to come back to.
    host: OwnedFd,
    template: Template,
    /// Whether it could not come back: it then ends after its job.
    lost: std::cell::Cell<bool>,
}

impl Worker {
    /// Runs `job` on the worker, started if there is none (or it ended).
    fn run(job: Job) -> Result<(), VmmError> {
        static JOBS: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>> =
            std::sync::Mutex::new(None);
        let mut jobs = JOBS.lock().unwrap_or_else(|p| p.into_inner());
        // A worker that ended (it could not come back from a jail) gives
        // the job back: a new one takes it.
        let job = match jobs.as_ref() {
            Some(to) => match to.send(job) {
                Ok(()) => return Ok(()),
                Err(returned) => returned.0,
            },
            None => job,
        };
        let template = Template::of_this_process()?;
        let (to, from) = std::sync::mpsc::channel::<Job>();
        let (started, start) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("jail-worker".into())
            .spawn(move || {
                let worker = match Worker::start(template) {
                    Ok(worker) => worker,
                    Err(err) => {
                        let _ = started.send(Err(err));
                        return;
                    }
                };
                let _ = started.send(Ok(()));
                while let Ok(job) = from.recv() {
                    job(&worker);
                    if worker.lost.get() {
                        return;
                    }
                }
            })
            .map_err(|e| VmmError::ResourceExhausted {
                message: format!("jail: cannot spawn its worker thread: {e}"),
            })?;
        start.recv().unwrap_or_else(|_| {
            Err(VmmError::internal(
                "the jail's worker",
                "it ended before it started",
            ))
        })?;
        let _ = to.send(job);
        *jobs = Some(to);
        Ok(())
    }

    /// On the worker's thread: a filesystem context of its own and the
    /// host's mount namespace, to come back to.
    fn start(template: Template) -> Result<Worker, VmmError> {
        // SAFETY: unshare(2) takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
            return Err(last_os("unshare(CLONE_FS)"));
        }
        let host =
            std::fs::File::open("/proc/thread-self/ns/mnt").map_err(|e| VmmError::Unavailable {
                message: format!("jail: the host's mount namespace: {e}"),
            })?;
        Ok(Worker {
            host: host.into(),
            template,
            lost: std::cell::Cell::new(false),
        })
    }

    /// Builds the jail of `run_dir`, then comes back to the host's tree.
    fn build(&self, run_dir: &Path) -> Result<Namespace, VmmError> {
        use std::os::fd::AsRawFd;
        let built = build_from_template(&self.template, run_dir);
        // SAFETY: setns(2) on a descriptor this worker owns. It also makes
        // the host's root this thread's root and working directory.
        if unsafe { libc::setns(self.host.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
            self.lost.set(true);
        }
        built
    }
}

/// Refuses a relative run dir: the jail shows it at its absolute path.
fn absolute(run_dir: &Path) -> Result<(), VmmError> {
    if run_dir.is_absolute() {
        return Ok(());
    }
    Err(VmmError::invalid(
        "run_dir",
        format!(
            "{} must be an absolute path for a jailed VMM",
            run_dir.display()
        ),
    ))
}

/// Runs `build` on a new thread, whose mount namespace and filesystem
/// context it may change: they end with it.
fn on_own_thread<T: Send + 'static>(
    build: impl FnOnce() -> Result<T, VmmError> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T, VmmError>>, VmmError> {
    std::thread::Builder::new()
        .name("jail".into())
        .spawn(build)
        .map_err(|e| VmmError::ResourceExhausted {
            message: format!("jail: cannot spawn a thread to build it: {e}"),
        })
}

/// The mount namespace every jail of this process is copied from: an
/// empty read-only tmpfs as its root (holding only the directory
/// [`JAIL_ROOT`]), the host's tree detached. Built once per process: the
/// host's mounts are copied, made private and detached (an RCU grace
/// period, 0.2-3 ms on a loaded host) once, not on every boot; a jail is a
/// copy of this namespace's two mounts.
struct Template(std::sync::Arc<OwnedFd>);

impl Template {
    fn of_this_process() -> Result<Template, VmmError> {
        static TEMPLATE: std::sync::Mutex<Option<std::sync::Arc<OwnedFd>>> =
            std::sync::Mutex::new(None);
        let mut template = TEMPLATE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fd) = &*template {
            return Ok(Template(fd.clone()));
        }
        let built = on_own_thread(build_template)?.join().unwrap_or_else(|_| {
            Err(VmmError::internal(
                "building the jail's template",
                "its thread panicked",
            ))
        })?;
        let fd = std::sync::Arc::new(built);
        *template = Some(fd.clone());
        Ok(Template(fd))
    }
}

/// [`Template`]'s thread: a new mount namespace for this thread, private,
/// a tmpfs holding [`JAIL_ROOT`] made read-only, pivot_root into it and
/// the old root detached.
fn build_template() -> Result<OwnedFd, VmmError> {
    let namespace = unshare_mount_namespace(&this_threads_namespaces()?)?;
    // Nothing mounted from here on propagates back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    // Mounted over any directory of this private namespace: `/` is swapped
    // for it below.
    let root = Path::new("/tmp");
    mount(
        Some(Path::new("zixiao-jail-template")),
        root,
        Some("tmpfs"),
        NOSUID,
        Some("size=4k,nr_inodes=4,mode=0755"),
    )?;
    let jail_root = inside(root, Path::new(JAIL_ROOT));
    std::fs::create_dir(&jail_root).map_err(|e| VmmError::Unavailable {
        message: format!("jail: creating {}: {e}", jail_root.display()),
    })?;
    // Read-only by its path here, before the pivot: until the old root is
    // detached a remount of `/` could reach the host's root filesystem.
    remount_read_only(root)?;
    pivot_into(root)?;
    Ok(namespace)
}

/// This thread's namespaces' directory in `/proc` (`ns/`), opened while
/// this thread still sees the host's `/proc`.
fn this_threads_namespaces() -> Result<std::fs::File, VmmError> {
    std::fs::File::open("/proc/thread-self/ns").map_err(|e| VmmError::Unavailable {
        message: format!("jail: /proc/thread-self/ns: {e}"),
    })
}

/// Gives this thread a mount namespace of its own (a copy of its current
/// one) and returns it, opened through `task` (this thread's
/// [`this_threads_namespaces`]): the descriptor keeps it once the thread
/// has ended.
fn unshare_mount_namespace(task: &std::fs::File) -> Result<OwnedFd, VmmError> {
    // SAFETY: unshare(2) takes no pointers. This thread gets its own mount
    // namespace and its own copy of the filesystem context it shared with
    // the process's other threads, which keep theirs.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(last_os("unshare(CLONE_NEWNS)"));
    }
    use std::os::fd::AsRawFd;
    // SAFETY: openat(2) relative to the open directory `task`, with a
    // static NUL-terminated name; the result is checked and owned below.
    let fd = unsafe {
        libc::openat(
            task.as_raw_fd(),
            c"mnt".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_os("opening the jail's mount namespace"));
    }
    // SAFETY: openat just returned this descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Builds a jail on the calling thread (one that may leave the process's
/// mount namespace: [`Namespace::build`]'s or the [`Worker`]), which ends
/// in the jail's namespace: the run dir's tree cloned while this thread
/// still sees the host's, then a copy of the template's namespace
/// with a read-only tmpfs on [`JAIL_ROOT`] holding that tree at the run
/// dir's absolute path. No host mount is copied or detached.
fn build_from_template(template: &Template, run_dir: &Path) -> Result<Namespace, VmmError> {
    use std::os::fd::AsRawFd;
    let run_tree = clone_tree(run_dir)?;
    // The template shows no `/proc`.
    let task = this_threads_namespaces()?;
    // setns(CLONE_NEWNS) wants a filesystem context no other thread shares.
    // SAFETY: unshare(2) and setns(2) take no pointers; the descriptor is
    // the template's, open while `template` lives.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(last_os("unshare(CLONE_FS)"));
    }
    // SAFETY: as above.
    if unsafe { libc::setns(template.0.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(last_os("entering the jail's template (setns)"));
    }
    let namespace = Namespace(unshare_mount_namespace(&task)?);
    let root = Path::new(JAIL_ROOT);
    // Room for the directories down to the run dir.
    mount(
        Some(Path::new("zixiao-jail")),
        root,
        Some("tmpfs"),
        NOSUID,
        Some("size=64k,nr_inodes=256,mode=0755"),
    )?;
    let target = inside(root, run_dir);
    std::fs::create_dir_all(&target).map_err(|e| VmmError::Unavailable {
        message: format!("jail: mount point {}: {e}", target.display()),
    })?;
    let target_c = cpath(&target)?;
    // SAFETY: move_mount(2) of the detached tree this thread owns onto a
    // NUL-terminated path that lives until it returns.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            run_tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved != 0 {
        return Err(last_os(format!(
            "mounting the run dir on {}",
            target.display()
        )));
    }
    // The jail's own tree is fixed from here on.
    remount_read_only(root)?;
    Ok(namespace)
}

/// The jail's tmpfs mounted at `root`, made read-only (and still
/// `nosuid,nodev,noexec`).
fn remount_read_only(root: &Path) -> Result<(), VmmError> {
    mount(
        None,
        root,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | NOSUID,
        None,
    )
}

/// The flags of every mount in a jail.
const NOSUID: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// `move_mount(2)`: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// `open_tree(2)`: a detached copy of the mount, not the mount itself.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `mount_setattr(2)` flags (linux/mount.h).
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached bind of `run_dir` (not recursive), `nosuid,nodev,noexec`.
fn clone_tree(run_dir: &Path) -> Result<OwnedFd, VmmError> {
    use std::os::fd::AsRawFd;
    let path = cpath(run_dir)?;
    // SAFETY: open_tree(2) with a NUL-terminated path that lives until it
    // returns; the result is checked and owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_os(format!("cloning {}", run_dir.display())));
    }
    // SAFETY: open_tree just returned this descriptor, owned by nothing
    // else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) on the tree just made, reading `attr` (a
    // live local of the size passed) and an empty NUL-terminated path.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set != 0 {
        return Err(last_os(format!(
            "making {} nosuid,nodev,noexec",
            run_dir.display()
        )));
    }
    Ok(tree)
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

    /// The launcher's worker explains a VMM's failure only when the VMM
    /// says it got no word; a VMM's own reason is never replaced.
    #[test]
    fn a_vmm_that_got_no_word_says_so_and_only_then() {
        let (vmm, launcher) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        drop(launcher);
        let Err(err) = LauncherJail(vmm).join(std::process::id()) else {
            panic!("joined without the launcher's word");
        };
        assert!(got_no_word(&err), "{err}");
        let own = VmmError::NotFound {
            message: "nets[0].tap: no TAP zxnothere0".into(),
        };
        assert!(!got_no_word(&own));
        let other = VmmError::Unavailable {
            message: "jail: cannot open /dev/kvm".into(),
        };
        assert!(!got_no_word(&other));
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
