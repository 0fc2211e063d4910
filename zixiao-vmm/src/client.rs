//! The client side (async, tokio): `launch()` spawns one detached VMM process
//! per microVM and waits until it is ready; `VmmClient` talks to it over its
//! API socket, and re-attaches to a running VMM after a controller restart.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::UnixStream;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::api::{
    files, Boot, ExitRecord, Handshake, Request, Response, VmInfo, VmRecord, VmState, VmmStats,
};
use crate::jail::{self, LauncherJail};
use crate::{
    cgroup, pidns_spawn, snapshot, support, Confinement, MigrationParams, MigrationReport, VmmError,
};

/// How long a VMM may take to load its guest and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Spawns `binary --run-dir RUN_DIR --boot JSON` in its own session, jailed
/// and seccomp-filtered ([`Confinement::default`]), and waits until it is
/// ready. Fresh: configured, call `start()`. Restore: paused, call
/// `resume()`. Incoming: listening on [`VmmClient::migration_socket`] for a
/// source's [`VmmClient::migrate`]; its API answers once the VM runs. On error nothing is left running and the files it created
/// are gone. Errors: `InvalidArgument` (the field), `NotFound` (a missing
/// kernel, initrd or snapshot), `AlreadyExists` (a VMM runs in `run_dir`),
/// `Unsupported`/`Unavailable` (no KVM, no binary, not root for the jail).
pub async fn launch(binary: &Path, run_dir: &Path, boot: Boot) -> Result<VmmClient, VmmError> {
    launch_with(binary, run_dir, boot, &Confinement::default()).await
}

/// [`launch`] with an explicit confinement: [`Confinement::seccomp_only`]
/// for a launcher that is not root, [`Confinement::none`] to measure what
/// the jail costs.
pub async fn launch_with(
    binary: &Path,
    run_dir: &Path,
    boot: Boot,
    confinement: &Confinement,
) -> Result<VmmClient, VmmError> {
    launch_in(binary, run_dir, boot, confinement, None).await
}

/// [`launch_with`], the VMM started inside the network namespace `netns`
/// (an open `/proc/PID/ns/net` or `/run/netns/NAME`), where it attaches to
/// the TAPs its network cards name and stays. The launcher's own threads
/// are not moved. Errors: as [`launch`]; a TAP that does not exist there is
/// `NotFound` naming `nets[N].tap`.
pub async fn launch_in_netns(
    binary: &Path,
    run_dir: &Path,
    boot: Boot,
    confinement: &Confinement,
    netns: &std::fs::File,
) -> Result<VmmClient, VmmError> {
    use std::os::fd::AsRawFd;
    launch_in(binary, run_dir, boot, confinement, Some(netns.as_raw_fd())).await
}

async fn launch_in(
    binary: &Path,
    run_dir: &Path,
    boot: Boot,
    confinement: &Confinement,
    netns: Option<std::os::fd::RawFd>,
) -> Result<VmmClient, VmmError> {
    // Paths reach the VMM as given; a jailed VMM sees them at the same
    // absolute path, and its working directory is the jail's root.
    let absolute = |field: &str, p: &Path| {
        std::path::absolute(p)
            .map_err(|e| VmmError::invalid(field, format!("{}: {e}", p.display())))
    };
    let boot = match boot {
        Boot::Fresh(mut config) => {
            config.validate()?;
            config.kernel = absolute("kernel", &config.kernel)?;
            config.initrd = config.initrd.map(|i| absolute("initrd", &i)).transpose()?;
            Boot::Fresh(config)
        }
        Boot::Incoming(config) => {
            config.validate()?;
            Boot::Incoming(config)
        }
        Boot::Restore { snapshot_dir } => {
            if !snapshot_dir.join(snapshot::STATE_FILE).is_file() {
                return Err(VmmError::NotFound {
                    message: format!("snapshot {} (no state.json)", snapshot_dir.display()),
                });
            }
            Boot::Restore {
                snapshot_dir: absolute("snapshot_dir", &snapshot_dir)?,
            }
        }
    };
    if let Some(jail) = &confinement.jail {
        jail.validate()?;
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(VmmError::Unavailable {
                message: "the VMM jail (namespaces, pivot_root, cgroup, uid drop) needs root; \
                          run as root or launch with Confinement::seccomp_only()"
                    .into(),
            });
        }
    }
    drop(support::open_kvm()?);
    if !binary.is_file() {
        return Err(VmmError::Unsupported {
            message: format!(
                "the VMM binary {} does not exist (build it with `cargo build -p zixiao-vmm` or set ZIXIAO_VMM_BIN)",
                binary.display()
            ),
        });
    }
    let dir_created = !run_dir.exists();
    std::fs::create_dir_all(run_dir)
        .map_err(|e| VmmError::internal(format!("creating {}", run_dir.display()), e))?;
    // One spelling of the run dir everywhere: the VMM's command line names it,
    // and `alive()` recognises the process by it.
    let run_dir = &run_dir
        .canonicalize()
        .map_err(|e| VmmError::internal(format!("resolving {}", run_dir.display()), e))?;
    wait_unserved(&run_dir.join(files::API_SOCK)).await?;
    let log_existed = run_dir.join(files::VMM_LOG).exists();
    let cleanup = |err: VmmError| {
        if dir_created {
            let _ = std::fs::remove_dir_all(run_dir);
        } else if !log_existed {
            let _ = std::fs::remove_file(run_dir.join(files::VMM_LOG));
        }
        err
    };
    let result = spawn(binary, run_dir, &boot, confinement, netns).await;
    let pid = result.map_err(cleanup)?;
    Ok(VmmClient {
        run_dir: run_dir.to_path_buf(),
        pid,
    })
}

async fn spawn(
    binary: &Path,
    run_dir: &Path,
    boot: &Boot,
    confinement: &Confinement,
    netns: Option<std::os::fd::RawFd>,
) -> Result<u32, VmmError> {
    crate::timeline::mark("L:spawn");
    let boot_json =
        serde_json::to_string(boot).map_err(|e| VmmError::internal("encoding boot", e))?;
    let confinement_json = serde_json::to_string(confinement)
        .map_err(|e| VmmError::internal("encoding the confinement", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join(files::VMM_LOG))
        .map_err(|e| VmmError::internal("creating vmm.log", e))?;
    let fd_arg = pidns_spawn::EXTRA_FD.to_string();
    let mut args = vec![
        OsStr::new("--run-dir"),
        run_dir.as_os_str(),
        OsStr::new("--boot"),
        OsStr::new(&boot_json),
        OsStr::new("--confinement"),
        OsStr::new(&confinement_json),
    ];
    // What became of a jailed VMM's cgroup and jail.
    let mut jail_outcome = None;
    // A jailed VMM is started in its own PID namespace (it is pid 1 there,
    // our child, `jailed`), and its cgroup and jail are made while it
    // starts; any other as a plain child (`child`).
    let (mut child, stdout, mut jailed): (Option<tokio::process::Child>, _, Option<u32>) =
        if let Some(jail) = &confinement.jail {
            let (go_child, go) = pidns_spawn::inherited_socket()?;
            args.extend([OsStr::new(LauncherJail::ARG), OsStr::new(&fd_arg)]);
            let spawned =
                pidns_spawn::spawn(binary, &args, &log, Some(go_child.as_raw_fd()), netns)?;
            drop(go_child);
            let pid = spawned.pid;
            crate::timeline::mark("L:exec");
            let limits = cgroup::Limits::of(boot, jail);
            match make_jail(pid, limits, run_dir, go) {
                Ok(outcome) => jail_outcome = Some(outcome),
                Err(err) => {
                    // The VMM sees the socket closed without a word and fails.
                    reap_jailed(pid).await;
                    return Err(err);
                }
            }
            let stdout = tokio::fs::File::from_std(spawned.stdout);
            (
                None,
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                Some(pid),
            )
        } else {
            let mut command = tokio::process::Command::new(binary);
            if let Some(ns) = netns {
                // SAFETY: the closure runs in the forked child before exec and only
                // makes one async-signal-safe system call, on a descriptor the
                // child inherited (the caller keeps it open across the spawn).
                unsafe {
                    command.pre_exec(move || {
                        if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let mut child = command
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .kill_on_drop(false)
                .spawn()
                .map_err(|e| VmmError::Unavailable {
                    message: format!("cannot run the VMM binary {}: {e}", binary.display()),
                })?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| VmmError::internal("spawning the VMM", "no stdout pipe"))?;
            (Some(child), Box::new(stdout) as _, None)
        };
    crate::timeline::mark("L:spawned");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let outcome = loop {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => break None,
        };
        match serde_json::from_str::<Handshake>(&line) {
            // A VMM binary that clones itself into its PID namespace (one
            // not started there, e.g. an older binary) makes the jailed VMM
            // a sibling of `child` (CLONE_PARENT): it announces itself first.
            Ok(Handshake::Spawned(pid)) => jailed = Some(pid),
            Ok(Handshake::Ready(pid) | Handshake::Listening(pid)) => {
                crate::timeline::mark("L:ready");
                break Some(Ok(pid));
            }
            Ok(Handshake::Failed(err)) => break Some(Err(err)),
            Err(_) => break None,
        }
    };
    let run = run_dir.to_path_buf();
    match outcome {
        Some(Ok(pid)) => {
            // Reap the VMM when it exits, as long as this process lives, and
            // record an end the VMM could not: a death by signal (a blocked
            // syscall) or its panic hook's exit.
            if let Some(mut child) = child {
                tokio::spawn(async move {
                    let direct = child.id();
                    let ended = child.wait().await.ok().and_then(Ended::of);
                    if let (Some(ended), None) = (ended, jailed) {
                        record_end(&run, ended.record(direct.unwrap_or(pid)));
                    }
                });
            }
            if let Some(vmm) = jailed {
                let run = run_dir.to_path_buf();
                tokio::spawn(async move {
                    if let Some(ended) = wait_jailed(vmm).await {
                        record_end(&run, ended.record(vmm));
                    }
                    // This VMM's group, then those of VMMs whose launcher
                    // was gone when they exited: after an exit, off every
                    // boot path (an rmdir of a memory cgroup can take
                    // milliseconds).
                    let _ = tokio::task::spawn_blocking(move || {
                        cgroup::remove(vmm);
                        cgroup::sweep();
                    })
                    .await;
                });
                // And once per launcher process, for the groups left while
                // no launcher ran. (A sweep after every ready line ran on
                // the launcher's other CPU while the guest booted: +0.1 ms
                // a boot at the median here.)
                static SWEPT: std::sync::Once = std::sync::Once::new();
                SWEPT.call_once(|| drop(tokio::task::spawn_blocking(cgroup::sweep)));
            }
            Ok(pid)
        }
        Some(Err(err)) => {
            if let Some(child) = &mut child {
                let _ = child.wait().await;
            }
            if let Some(vmm) = jailed {
                reap_jailed(vmm).await;
            }
            // A VMM whose cgroup or jail could not be made only knows it
            // got no word: the jail's worker knows why (off the runtime's
            // threads: it may take the worker a moment to say).
            let why = match jail_outcome {
                Some(outcome) if jail::got_no_word(&err) => {
                    tokio::task::spawn_blocking(move || outcome.error())
                        .await
                        .ok()
                        .flatten()
                }
                _ => None,
            };
            Err(why.unwrap_or(err))
        }
        None => {
            let mut died = None;
            if let Some(child) = &mut child {
                let _ = child.start_kill();
                let direct = child.wait().await.ok().and_then(Ended::of);
                died = direct.filter(|_| jailed.is_none());
            }
            if let Some(vmm) = jailed {
                // SAFETY: kill(2) on our own child, which is not reaped yet
                // (so its pid cannot have been reused).
                unsafe { libc::kill(vmm as libc::pid_t, libc::SIGKILL) };
                died = wait_jailed(vmm).await;
                cgroup::remove(vmm);
            }
            let log = std::fs::read_to_string(run_dir.join(files::VMM_LOG)).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            let why = match died {
                Some(Ended::Signal(signal)) if signal != libc::SIGKILL => {
                    ExitRecord::signalled(0, signal).reason
                }
                _ if tail.is_empty() => "no output".to_string(),
                _ => tail,
            };
            Err(VmmError::internal(
                "the VMM process did not become ready",
                why,
            ))
        }
    }
}

/// Has the launcher's jail worker create the cgroup of the jailed VMM
/// `pid` (our child, just exec'd), with its limits, then build its jail
/// (the mount namespace showing only `run_dir`) and send it on `go`: the
/// VMM then moves itself into the group and, once in the jail, creates
/// its bare VM. All of it runs while the VMM loads, off its boot path,
/// and nothing here waits for it; the outcome says why the VMM got no
/// word, if it failed. On an error `go` closes without a word and the VMM
/// fails.
fn make_jail(
    pid: u32,
    limits: cgroup::Limits,
    run_dir: &Path,
    go: std::os::unix::net::UnixStream,
) -> Result<jail::Outcome, VmmError> {
    jail::Namespace::build_on_worker(
        run_dir,
        move || {
            cgroup::create(pid, limits)?;
            crate::timeline::mark("L:cgroup");
            Ok(())
        },
        move |namespace| {
            crate::timeline::mark("L:jail");
            // A VMM that is already gone (EPIPE) is noticed on its stdout.
            let _ = jail::send_jail(&go, &namespace);
        },
    )
}

/// Reaps the jailed VMM `pid`, which failed or was told to (killed after
/// 10 s if it has not exited by then), and removes its cgroup.
async fn reap_jailed(pid: u32) {
    if tokio::time::timeout(Duration::from_secs(10), wait_jailed(pid))
        .await
        .is_err()
    {
        // SAFETY: kill(2) on our own child, which is not reaped yet (so
        // its pid cannot have been reused).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        wait_jailed(pid).await;
    }
    cgroup::remove(pid);
}

/// How long a killed VMM may take to close its sockets.
const DYING_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns once nothing serves `api`; `AlreadyExists` when a live VMM does.
/// A VMM that was just killed can still accept connections for a while:
/// its main thread is already a zombie, but its sockets close only when
/// its last thread has exited (after freeing guest memory). So the server
/// of the socket (SO_PEERCRED) counts as running only while its main
/// thread is not a zombie, and a dying one is waited for.
async fn wait_unserved(api: &Path) -> Result<(), VmmError> {
    let deadline = Instant::now() + DYING_TIMEOUT;
    loop {
        let Ok(stream) = UnixStream::connect(api).await else {
            return Ok(());
        };
        let server = stream.peer_cred().ok().and_then(|c| c.pid());
        let dying = server.is_some_and(|pid| running_stat(pid as u32).is_none());
        if !dying || Instant::now() >= deadline {
            return Err(VmmError::AlreadyExists {
                message: format!(
                    "a VMM already runs in {}",
                    api.parent().unwrap_or(api).display()
                ),
            });
        }
        drop(stream);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How a reaped VMM process ended, as its parent learns it.
#[derive(Debug, Clone, Copy)]
enum Ended {
    /// Killed by this signal.
    Signal(i32),
    /// Exited with this code.
    Code(i32),
}

impl Ended {
    fn of(status: std::process::ExitStatus) -> Option<Ended> {
        (status.signal().map(Ended::Signal)).or(status.code().map(Ended::Code))
    }

    /// The exit record of VMM `pid` for an end it could not record itself
    /// (None: an exit code the VMM does not leave unrecorded).
    fn record(self, pid: u32) -> Option<ExitRecord> {
        match self {
            Ended::Signal(signal) => Some(ExitRecord::signalled(pid, signal)),
            Ended::Code(code) => ExitRecord::exited(pid, code),
        }
    }
}

/// Waits for our child `pid` (a jailed VMM, in its own PID namespace) to
/// exit and reaps it; how it ended.
async fn wait_jailed(pid: u32) -> Option<Ended> {
    // SAFETY: pidfd_open(2) takes integers; a new descriptor is returned.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw >= 0 {
        // SAFETY: `raw` is a pidfd just opened for us; OwnedFd closes it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        // A pidfd polls readable once its process has exited.
        // SAFETY: an OwnedFd is a valid open descriptor that stays the same
        // until the AsyncFd that owns it is dropped.
        if let Ok(fd) = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            let _ = fd.readable().await;
        }
    }
    // SAFETY: a zeroed siginfo_t is a valid out-parameter; waitid(2) fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let waited = tokio::task::spawn_blocking(move || {
        // SAFETY: `info` is a live local the kernel writes into.
        let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED) };
        (rc == 0).then_some(info)
    })
    .await
    .ok()
    .flatten()?;
    // SAFETY: si_status is the valid union member for CLD_* codes.
    let status = unsafe { waited.si_status() };
    match waited.si_code {
        libc::CLD_KILLED | libc::CLD_DUMPED => Some(Ended::Signal(status)),
        libc::CLD_EXITED => Some(Ended::Code(status)),
        _ => None,
    }
}

/// Records `record` (of a VMM that could not) in `run_dir`'s exit.json,
/// unless an exit record is there already (the VMM's own, or an earlier one).
fn record_end(run_dir: &Path, record: Option<ExitRecord>) {
    let Some(record) = record else { return };
    let Ok(json) = serde_json::to_vec(&record) else {
        return;
    };
    let tmp = run_dir.join(format!(".exit.{}.tmp", record.pid));
    if std::fs::write(&tmp, json).is_ok() {
        // A hard link never replaces: the first record wins.
        let _ = std::fs::hard_link(&tmp, run_dir.join(files::EXIT));
        let _ = std::fs::remove_file(&tmp);
    }
}

/// A handle on one VMM process, by its run directory.
#[derive(Debug, Clone)]
pub struct VmmClient {
    run_dir: PathBuf,
    pid: u32,
}

impl VmmClient {
    /// Re-attaches to the VMM of `run_dir` (running, or exited with an exit.json).
    pub async fn connect(run_dir: &Path) -> Result<VmmClient, VmmError> {
        let run_dir = &run_dir.canonicalize().map_err(|_| VmmError::NotFound {
            message: format!("no VMM in {} (no such directory)", run_dir.display()),
        })?;
        if let Ok(pid) = std::fs::read_to_string(run_dir.join(files::PID)) {
            if let Ok(pid) = pid.trim().parse() {
                return Ok(VmmClient {
                    run_dir: run_dir.to_path_buf(),
                    pid,
                });
            }
        }
        if let Some(record) = read_exit(run_dir) {
            return Ok(VmmClient {
                run_dir: run_dir.to_path_buf(),
                pid: record.pid,
            });
        }
        Err(VmmError::NotFound {
            message: format!("no VMM in {}", run_dir.display()),
        })
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The VMM process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// All serial output so far.
    pub fn console_log(&self) -> PathBuf {
        self.run_dir.join(files::CONSOLE_LOG)
    }

    /// State, pid and config; answered from exit.json once the VMM is gone.
    pub async fn info(&self) -> Result<VmInfo, VmmError> {
        match self.request(Request::Info).await {
            Ok(v) => serde_json::from_value(v).map_err(|e| VmmError::internal("decoding info", e)),
            Err(err) => match (read_exit(&self.run_dir), read_vm(&self.run_dir)) {
                (Some(r), Some(vm)) => Ok(VmInfo {
                    state: VmState::Exited {
                        reason: r.reason,
                        code: r.code,
                    },
                    pid: r.pid,
                    config: vm.config,
                    restored_from: vm.restored_from,
                }),
                _ => Err(err),
            },
        }
    }

    /// Starts the vCPUs of a configured VM.
    pub async fn start(&self) -> Result<(), VmmError> {
        crate::timeline::mark("C:start");
        self.request(Request::Start).await.map(drop)
    }

    /// Parks every vCPU (idempotent).
    pub async fn pause(&self) -> Result<(), VmmError> {
        self.request(Request::Pause).await.map(drop)
    }

    /// Lets a paused VM run again (idempotent).
    pub async fn resume(&self) -> Result<(), VmmError> {
        self.request(Request::Resume).await.map(drop)
    }

    /// Pauses the VM and writes a snapshot into `dir`; the VM stays paused.
    /// This process creates `dir`'s files and hands them to the VMM over
    /// the API socket, so a jailed VMM needs no view of `dir`. Errors:
    /// `AlreadyExists` (a snapshot is in `dir`), `FailedPrecondition` (the
    /// VM never started), `Internal` (I/O); on error the files are removed.
    pub async fn snapshot(&self, dir: &Path) -> Result<(), VmmError> {
        let dir = std::path::absolute(dir)
            .map_err(|e| VmmError::invalid("dir", format!("{}: {e}", dir.display())))?;
        if dir.join(snapshot::STATE_FILE).exists() {
            return Err(VmmError::AlreadyExists {
                message: format!("a snapshot in {}", dir.display()),
            });
        }
        let io = |what: &str, e: std::io::Error| {
            VmmError::internal(format!("snapshot {what} in {}", dir.display()), e)
        };
        let dir_created = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(|e| io("directory", e))?;
        let create = |name: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(dir.join(name))
                .map_err(|e| io(name, e))
        };
        let taken = async {
            let state = create(snapshot::STATE_TMP_FILE)?;
            let memory = create(snapshot::MEMORY_FILE)?;
            self.request_with_fds(
                Request::Snapshot { dir: dir.clone() },
                &[state.as_raw_fd(), memory.as_raw_fd()],
            )
            .await?;
            // Renamed last: a state.json means a complete snapshot.
            std::fs::rename(
                dir.join(snapshot::STATE_TMP_FILE),
                dir.join(snapshot::STATE_FILE),
            )
            .map_err(|e| io(snapshot::STATE_FILE, e))?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        .await;
        if taken.is_err() {
            let _ = std::fs::remove_file(dir.join(snapshot::STATE_TMP_FILE));
            let _ = std::fs::remove_file(dir.join(snapshot::MEMORY_FILE));
            if dir_created {
                let _ = std::fs::remove_dir(&dir);
            }
        }
        taken
    }

    /// Where a VMM launched with [`Boot::Incoming`] takes its migration
    /// stream (until a source connected).
    pub fn migration_socket(&self) -> PathBuf {
        self.run_dir.join(files::MIGRATE_SOCK)
    }

    /// Live-migrates this VM (running or paused) to the VMM listening on
    /// `target` (its [`VmmClient::migration_socket`]): copies memory while
    /// the guest runs, then stops it, sends the rest and the machine state,
    /// and returns once the target has taken over; this VMM has then
    /// exited (reason `migrated`). The call lasts as long as the migration.
    /// Errors, after which this VM runs on unharmed: `NotFound` (nothing
    /// listens on `target`), `FailedPrecondition` (it did not converge
    /// within the rounds and downtime asked, with the figures; the target
    /// refused the stream, with its reason; the VM is not started),
    /// `Unavailable` (the target died or the stream broke).
    ///
    /// ```no_run
    /// # async fn f(source: zixiao_vmm::VmmClient, target: zixiao_vmm::VmmClient) {
    /// let params = zixiao_vmm::MigrationParams::new(30, 50).unwrap();
    /// let report = source.migrate(&target.migration_socket(), params).await.unwrap();
    /// println!("{} rounds, {} ms down", report.rounds, report.downtime_ms);
    /// # }
    /// ```
    pub async fn migrate(
        &self,
        target: &Path,
        params: MigrationParams,
    ) -> Result<MigrationReport, VmmError> {
        let stream = UnixStream::connect(target)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    VmmError::NotFound {
                        message: format!(
                            "no migration target listens on {}: {e}",
                            target.display()
                        ),
                    }
                }
                _ => VmmError::Unavailable {
                    message: format!("migration target {}: {e}", target.display()),
                },
            })?;
        let stream = stream
            .into_std()
            .map_err(|e| VmmError::internal("migration stream", e))?;
        self.migrate_over(OwnedFd::from(stream), params).await
    }

    /// [`VmmClient::migrate`] over a stream socket already connected to a
    /// receiving VMM (for example a TCP connection to a node agent that
    /// bridges it to the target's migration socket). The descriptor is
    /// handed to the VMM.
    pub async fn migrate_over(
        &self,
        stream: OwnedFd,
        params: MigrationParams,
    ) -> Result<MigrationReport, VmmError> {
        let v = self
            .request_with_fds(Request::Migrate { params }, &[stream.as_raw_fd()])
            .await?;
        drop(stream);
        serde_json::from_value(v)
            .map_err(|e| VmmError::internal("decoding the migration report", e))
    }

    /// Test builds only: asks the VMM to make a syscall its filter forbids.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn test_blocked_syscall(&self) -> Result<(), VmmError> {
        self.request(Request::TestBlockedSyscall).await.map(drop)
    }

    /// Test builds only: asks the VMM to panic.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn test_panic(&self) -> Result<(), VmmError> {
        self.request(Request::TestPanic).await.map(drop)
    }

    /// Memory, RSS, vCPU time and exit counts.
    pub async fn stats(&self) -> Result<VmmStats, VmmError> {
        let v = self.request(Request::Stats).await?;
        serde_json::from_value(v).map_err(|e| VmmError::internal("decoding stats", e))
    }

    /// Sets the balloon's target: the guest should give `target_mib` MiB
    /// of its memory back to the host (0: take it all back). Returns once
    /// the target is set and the guest's driver told (configuration-change
    /// interrupt); the guest inflates or deflates in its own time, and
    /// reports what it holds in [`VmmStats::balloon`]'s `actual_pages`.
    /// Errors: `InvalidArgument` naming `target_mib` (more than the
    /// guest's memory), `FailedPrecondition` (the VM has no balloon, see
    /// [`crate::VmConfig::balloon`], or the VMM has exited).
    pub async fn set_balloon(&self, target_mib: u64) -> Result<(), VmmError> {
        self.request(Request::SetBalloon { target_mib })
            .await
            .map(drop)
    }

    /// The balloon's target, what the guest holds and the counters:
    /// [`VmmStats::balloon`]; `FailedPrecondition` when the VM has none.
    pub async fn balloon(&self) -> Result<crate::BalloonStats, VmmError> {
        self.stats().await?.balloon.ok_or_else(|| {
            VmmError::precondition("the VM has no balloon (boot it with VmConfig::balloon)")
        })
    }

    /// Connects to the live console: reads get serial output from now on,
    /// writes become serial input.
    pub async fn attach_console(&self) -> Result<UnixStream, VmmError> {
        crate::timeline::mark("C:console");
        UnixStream::connect(self.run_dir.join(files::CONSOLE_SOCK))
            .await
            .map_err(|e| self.gone(e))
    }

    /// Stops the guest and the VMM (SIGKILL after `grace`). Ok if already gone.
    pub async fn shutdown(&self, grace: Duration) -> Result<(), VmmError> {
        if !self.alive() {
            self.clear_after_kill(false);
            return Ok(());
        }
        let asked = tokio::time::timeout(grace, self.request(Request::Shutdown)).await;
        let deadline = Instant::now() + if asked.is_ok() { grace } else { Duration::ZERO };
        while self.alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self.alive() {
            // SAFETY: kill(2) on a pid we checked is our VMM (its cmdline names
            // our run dir); no memory is shared with the callee.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.alive() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.clear_after_kill(true);
        }
        cgroup::remove(self.pid);
        Ok(())
    }

    /// After a kill: records how it ended (if the VMM could not) and removes its sockets.
    fn clear_after_kill(&self, killed: bool) {
        if killed {
            record_end(
                &self.run_dir,
                Some(ExitRecord::signalled(self.pid, libc::SIGKILL)),
            );
        }
        for f in [files::API_SOCK, files::CONSOLE_SOCK, files::PID] {
            let _ = std::fs::remove_file(self.run_dir.join(f));
        }
    }

    /// Whether our VMM process still runs (not a zombie, not a reused pid).
    fn alive(&self) -> bool {
        let Some(stat) = running_stat(self.pid) else {
            // Its main thread has exited; another thread may still be
            // finishing a system call in the run directory (the exit
            // record's rename). A zombie's pid is not reused, so it is ours.
            return exiting_threads(self.pid);
        };
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        if cmdline.is_empty() {
            // A killed VMM releases its memory (guest RAM too, which takes
            // a while) before it becomes a zombie, and meanwhile its
            // command line reads empty: it is still ours and still going.
            // A kernel thread that reused the pid reads empty too.
            return !is_kernel_thread(&stat);
        }
        let needle = self.run_dir.as_os_str().as_encoded_bytes();
        cmdline.windows(needle.len().max(1)).any(|w| w == needle)
    }

    fn gone(&self, err: std::io::Error) -> VmmError {
        match read_exit(&self.run_dir) {
            Some(r) => VmmError::precondition(format!(
                "the VMM in {} has exited ({}, code {})",
                self.run_dir.display(),
                r.reason,
                r.code
            )),
            None => VmmError::Unavailable {
                message: format!(
                    "the VMM in {} does not answer: {err}",
                    self.run_dir.display()
                ),
            },
        }
    }

    async fn request(&self, req: Request) -> Result<serde_json::Value, VmmError> {
        self.request_with_fds(req, &[]).await
    }

    /// One request line, with `fds` passed along (SCM_RIGHTS), and its answer.
    async fn request_with_fds(
        &self,
        req: Request,
        fds: &[RawFd],
    ) -> Result<serde_json::Value, VmmError> {
        let stream = UnixStream::connect(self.run_dir.join(files::API_SOCK))
            .await
            .map_err(|e| self.gone(e))?;
        crate::timeline::mark("C:connected");
        let mut line =
            serde_json::to_string(&req).map_err(|e| VmmError::internal("encoding", e))?;
        line.push('\n');
        let mut sent = 0;
        if !fds.is_empty() {
            // The descriptors travel with the first bytes of the line.
            sent = loop {
                stream.writable().await.map_err(|e| self.gone(e))?;
                let raw = RawSocket(stream.as_raw_fd());
                match stream.try_io(Interest::WRITABLE, || {
                    raw.send_with_fds(&[line.as_bytes()], fds)
                        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(self.gone(e)),
                }
            };
        }
        let (read, mut write) = stream.into_split();
        write
            .write_all(&line.as_bytes()[sent..])
            .await
            .map_err(|e| self.gone(e))?;
        crate::timeline::mark("C:sent");
        let mut answer = String::new();
        BufReader::new(read)
            .read_line(&mut answer)
            .await
            .map_err(|e| self.gone(e))?;
        crate::timeline::mark("C:answered");
        if answer.is_empty() {
            return Err(self.gone(std::io::Error::other("connection closed")));
        }
        let response: Response = serde_json::from_str(&answer)
            .map_err(|e| VmmError::internal("decoding the VMM's answer", e))?;
        response
    }
}

/// A socket descriptor borrowed for `sendmsg` with descriptors.
struct RawSocket(RawFd);

impl ScmSocket for RawSocket {
    fn socket_fd(&self) -> RawFd {
        self.0
    }
}

fn read_exit(run_dir: &Path) -> Option<ExitRecord> {
    let raw = std::fs::read(run_dir.join(files::EXIT)).ok()?;
    serde_json::from_slice(&raw).ok()
}

fn read_vm(run_dir: &Path) -> Option<VmRecord> {
    let raw = std::fs::read(run_dir.join(files::VM)).ok()?;
    serde_json::from_slice(&raw).ok()
}

/// `/proc/<pid>/stat` of a process whose main thread runs: `None` once it
/// is a zombie (its other threads may still be exiting) or gone.
fn running_stat(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    (!matches!(state, Some("Z") | Some("X") | None)).then_some(stat)
}

/// Whether `pid` is a zombie whose other threads have not all exited yet
/// (`num_threads`, field 20 of proc(5)'s stat, the 18th after the name).
fn exiting_threads(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    fields.first() == Some(&"Z") && fields.get(17).and_then(|n| n.parse::<u64>().ok()) > Some(1)
}

/// Whether a `/proc/<pid>/stat` line is a kernel thread's: `PF_KTHREAD` in
/// its `flags` (field 9 of proc(5)'s stat, the seventh after the name).
fn is_kernel_thread(stat: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(6))
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

#[cfg(test)]
mod kernel_thread_tests {
    use super::is_kernel_thread;

    #[test]
    fn kthreadd_is_a_kernel_thread_and_this_process_is_not() {
        let kthreadd = std::fs::read_to_string("/proc/2/stat").expect("pid 2");
        assert!(is_kernel_thread(&kthreadd), "{kthreadd}");
        let me = std::fs::read_to_string("/proc/self/stat").expect("self");
        assert!(!is_kernel_thread(&me), "{me}");
    }
}
