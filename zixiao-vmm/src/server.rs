//! The VMM process: owns one `Machine`, serves the JSON-lines API on
//! `api.sock`, fans the console out (`console.log`, `console.sock`), and
//! writes `exit.json` and removes its sockets when the guest or the VMM stops.
//! A VMM launched with `Boot::Incoming` first receives a live migration on
//! `migrate.sock` (see `migration`), then serves like a resumed restore.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_ioctls::Kvm;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::api::{
    exit_reasons, files, Boot, ExitRecord, Handshake, Request, Response, VmInfo, VmRecord, VmState,
    VmmStats,
};
use crate::boot::BootFiles;
use crate::devices::ConsoleSink;
use crate::jail::{self, Confinement, JailConfig};
use crate::machine::{BareVm, GuestEvent, Machine};
use crate::seccomp::{self, ThreadKind};
use crate::tap::TapName;
use crate::virtio::vsock::HostSocket;
use crate::{cgroup, migration, snapshot, support, DiskConfig, VmConfig, VmmError};

struct Inner {
    machine: Option<Machine>,
    state: VmState,
}

struct Vmm {
    run_dir: PathBuf,
    config: VmConfig,
    restored_from: Option<PathBuf>,
    pid: u32,
    /// `/proc/self/statm`, opened before the jail (which has no `/proc`).
    statm: Option<File>,
    console: Arc<ConsoleServer>,
    inner: Mutex<Inner>,
}

/// Accepts console readers and feeds what they write to the UART, on one
/// thread that polls them all (no thread per reader: the VMM spawns no
/// thread once its seccomp filters are on). The listener is non-blocking
/// so that every API request can first take in readers that connected
/// before it was sent: a client that attaches and then calls `start()`
/// sees all the boot output.
struct ConsoleServer {
    /// Held while accepting and attaching, so that an API request never
    /// overtakes a reader the console thread has accepted but not attached.
    accepting: Mutex<()>,
    listener: UnixListener,
    sink: ConsoleSink,
    devices: Arc<crate::devices::Devices>,
    /// Readers accepted but not yet polled for input by the console thread.
    new_inputs: Mutex<Vec<UnixStream>>,
    /// Wakes the console thread when an API request accepted a reader.
    wake: EventFd,
}

/// A console reader's input side and the bytes the UART has not taken yet.
struct ConsoleInput {
    conn: UnixStream,
    pending: Vec<u8>,
}

fn poll_in(fd: RawFd, wanted: bool) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: if wanted { libc::POLLIN } else { 0 },
        revents: 0,
    }
}

impl ConsoleServer {
    fn accept_pending(&self) {
        let _guard = lock(&self.accepting);
        let mut accepted = false;
        while let Ok((conn, _)) = self.listener.accept() {
            let _ = conn.set_nonblocking(false);
            if let Ok(writer) = conn.try_clone() {
                self.sink.attach(writer);
            }
            lock(&self.new_inputs).push(conn);
            accepted = true;
        }
        if accepted {
            let _ = self.wake.write(1);
        }
    }

    fn serve(&self) {
        let mut inputs: Vec<ConsoleInput> = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            self.accept_pending();
            inputs.extend(lock(&self.new_inputs).drain(..).map(|conn| ConsoleInput {
                conn,
                pending: Vec::new(),
            }));
            // The UART FIFO is small: what it does not take waits for the
            // guest to drain it (retried every 2 ms meanwhile).
            for input in inputs.iter_mut().filter(|i| !i.pending.is_empty()) {
                let taken = self.devices.serial_input(&input.pending);
                input.pending.drain(..taken);
            }
            let waiting = inputs.iter().any(|i| !i.pending.is_empty());
            let mut fds = vec![
                poll_in(self.listener.as_raw_fd(), true),
                poll_in(self.wake.as_raw_fd(), true),
            ];
            // A reader whose input waits is not read further until it drains.
            fds.extend(
                inputs
                    .iter()
                    .map(|i| poll_in(i.conn.as_raw_fd(), i.pending.is_empty())),
            );
            let timeout = if waiting { 2 } else { -1 };
            // SAFETY: `fds` is a live array of `fds.len()` pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if fds[1].revents != 0 {
                let _ = self.wake.read();
            }
            let mut closed = Vec::new();
            for (i, input) in inputs.iter_mut().enumerate() {
                if fds[i + 2].revents == 0 {
                    continue;
                }
                match (&input.conn).read(&mut buf) {
                    Ok(0) | Err(_) => closed.push(i),
                    Ok(n) => input.pending.extend_from_slice(&buf[..n]),
                }
            }
            for i in closed.into_iter().rev() {
                inputs.swap_remove(i);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the VMM process for `run_dir`, confined as `confinement` says:
/// reports readiness (or the error) as one JSON line on `ready`, then serves
/// until the VM stops. `pid` is this process's pid as the launcher sees it
/// (it differs inside a PID namespace). A jailed VMM with a
/// `launcher_jail` has its cgroup and its mount namespace made by its
/// launcher; without one it makes its own. Returns the process exit code.
pub fn run(
    run_dir: &Path,
    boot: Boot,
    confinement: &Confinement,
    pid: u32,
    launcher_jail: Option<jail::LauncherJail>,
    mut ready: impl Write,
) -> i32 {
    let incoming = matches!(boot, Boot::Incoming(_));
    let created = match prepare(run_dir, pid) {
        Ok(created) => created,
        Err(err) => {
            report(&mut ready, &Handshake::Failed(err));
            return 1;
        }
    };
    crate::timeline::mark("prepared");
    match setup(run_dir, boot, confinement, pid, launcher_jail, &mut ready) {
        Ok((vmm, api, installing)) => {
            report(&mut ready, &Handshake::Ready(pid));
            drop(ready);
            // Every thread has its filter before the first request is
            // read: the guest runs only from a request (start or resume;
            // a migrated-in guest's threads were all waited for before
            // the ack), the other threads' bodies run only once filtered,
            // and this thread reads nothing a client or the guest controls
            // until its own filter is on, so nothing they control runs
            // unfiltered. This thread's install (the API filter is the
            // longest) and the last threads' overlap the launcher's
            // handshake and the client's first connection instead of
            // delaying the ready line.
            let filtered = api_filter(confinement).and_then(|()| {
                installing
                    .into_iter()
                    .try_for_each(seccomp::Installing::wait)
            });
            crate::timeline::mark("filtered");
            if let Some(line) = crate::timeline::line() {
                eprintln!("{line}");
            }
            if let Err(err) = filtered {
                eprintln!("zixiao-vmm: {err}");
                vmm.finish(&format!("error: {err}"), 1);
            }
            serve(vmm, api);
            0
        }
        Err(err) => {
            eprintln!("zixiao-vmm: {err}");
            cleanup(run_dir, &created);
            if incoming {
                // Its launcher returned when it listened: exit.json is
                // where a failed migration into it is told.
                let record = ExitRecord {
                    reason: format!("error: {err}"),
                    code: 1,
                    pid,
                };
                if let Ok(json) = serde_json::to_vec(&record) {
                    let _ = write_replacing(&run_dir.join(files::EXIT), &json);
                }
            }
            report(&mut ready, &Handshake::Failed(err));
            1
        }
    }
}

/// The names of the threads that end the VMM when the guest stops, and
/// that serve console readers.
const LIFECYCLE: &str = "lifecycle";
const CONSOLE: &str = "console";

/// Installs this (the API) thread's filter, if the VMM is filtered.
fn api_filter(confinement: &Confinement) -> Result<(), VmmError> {
    if confinement.seccomp {
        seccomp::install(ThreadKind::Api)?;
    }
    Ok(())
}

/// One handshake line on the launcher's pipe.
fn report(ready: &mut dyn Write, r: &Handshake) {
    let line = serde_json::to_string(r).unwrap_or_else(|_| "null".into());
    let _ = writeln!(ready, "{line}");
    let _ = ready.flush();
}

/// Refuses a run dir in use; clears stale files. Returns the files it created.
fn prepare(run_dir: &Path, pid: u32) -> Result<Vec<PathBuf>, VmmError> {
    let io = |e: std::io::Error| VmmError::internal(format!("run dir {}", run_dir.display()), e);
    std::fs::create_dir_all(run_dir).map_err(io)?;
    let api = run_dir.join(files::API_SOCK);
    if UnixStream::connect(&api).is_ok() {
        return Err(VmmError::AlreadyExists {
            message: format!("a VMM already serves {}", api.display()),
        });
    }
    for stale in [
        files::API_SOCK,
        files::CONSOLE_SOCK,
        files::MIGRATE_SOCK,
        files::EXIT,
    ] {
        let _ = std::fs::remove_file(run_dir.join(stale));
    }
    let mut created = vec![run_dir.join(files::PID)];
    if !run_dir.join(files::CONSOLE_LOG).exists() {
        created.push(run_dir.join(files::CONSOLE_LOG));
    }
    created.push(api);
    created.push(run_dir.join(files::VM));
    created.push(run_dir.join(files::CONSOLE_SOCK));
    created.push(run_dir.join(files::MIGRATE_SOCK));
    std::fs::write(run_dir.join(files::PID), format!("{pid}\n")).map_err(io)?;
    Ok(created)
}

fn cleanup(run_dir: &Path, created: &[PathBuf]) {
    for f in created {
        let _ = std::fs::remove_file(f);
    }
    // Left empty by a VMM from before the jail's template.
    let _ = std::fs::remove_dir(run_dir.join(jail::JAIL_DIR));
}

/// What a VMM opens before it builds its jail, still root and in the
/// host's mount namespace: the KVM device, the console log, its page map
/// and the guest's files. Held open, none of them needs to be visible in
/// the jail.
struct Inputs {
    kvm: Kvm,
    console_log: File,
    pagemap: Option<File>,
    statm: Option<File>,
    guest: GuestFiles,
}

/// The guest's files, open.
enum GuestFiles {
    /// The config and its files (kernel, initrd, disks).
    Fresh(VmConfig, BootFiles),
    /// The snapshot's files, and the disks its (unvalidated) state names.
    Restore(PathBuf, snapshot::SnapshotFiles, RestoreDisks),
    /// The config to receive a migration of, and its open disks.
    Incoming(VmConfig, Vec<File>),
}

/// The guest's files and the KVM device, once the VMM is in its cgroup.
enum GuestInputs {
    /// A fresh boot's VM with its memory, irqchip and PIT: nothing of the
    /// files is in it yet.
    Fresh(VmConfig, BootFiles, BareVm),
    Restore(PathBuf, snapshot::SnapshotFiles, RestoreDisks, Kvm),
    Incoming(VmConfig, Vec<File>, Kvm),
}

impl GuestFiles {
    /// For a fresh boot, creates the bare VM: `KVM_CREATE_VM`, the guest
    /// memory as slot 0, TSS, irqchip and PIT (fixed ioctls that read none
    /// of the guest's files).
    fn with_kvm(self, kvm: Kvm) -> Result<GuestInputs, VmmError> {
        Ok(match self {
            GuestFiles::Fresh(config, files) => {
                let memory = crate::boot::guest_memory(config.memory_bytes())?;
                let vm = BareVm::create(kvm, memory)?;
                GuestInputs::Fresh(config, files, vm)
            }
            GuestFiles::Restore(dir, files, disks) => GuestInputs::Restore(dir, files, disks, kvm),
            GuestFiles::Incoming(config, disks) => GuestInputs::Incoming(config, disks, kvm),
        })
    }
}

/// The disks a snapshot's state names, opened before the jail as its
/// state named them (untrusted until the state is validated), each as the
/// jail's user would open it when jailed, or why it could not be.
struct RestoreDisks {
    named: Vec<DiskConfig>,
    opened: Vec<Result<File, VmmError>>,
}

impl RestoreDisks {
    fn open(dir: &Path, jail: Option<&JailConfig>) -> Result<RestoreDisks, VmmError> {
        let named = snapshot::disks_in(dir);
        let open_all = || {
            named
                .iter()
                .enumerate()
                .map(|(index, disk)| disk.open(index))
                .collect::<Vec<_>>()
        };
        let opened = match jail {
            // The state is not trusted: its disks are opened with the jail
            // user's file permissions, so a forged state reaches nothing
            // that user could not open anyway.
            Some(jail) => jail::with_jail_user_files(jail, open_all)?
                .into_iter()
                .map(|opened| {
                    opened.map_err(|e| match e {
                        VmmError::InvalidArgument { field, reason } => VmmError::InvalidArgument {
                            field,
                            reason: format!(
                                "{reason} (a jailed restore opens its disks as the jail's user)"
                            ),
                        },
                        other => other,
                    })
                })
                .collect(),
            None => open_all(),
        };
        Ok(RestoreDisks { named, opened })
    }

    /// The open files of `disks`, the validated state's: they must be the
    /// ones opened before the jail.
    fn take(self, disks: &[DiskConfig]) -> Result<Vec<File>, VmmError> {
        if disks != self.named.as_slice() {
            return Err(VmmError::invalid(
                "config.disks",
                "the snapshot's disks changed while it was being restored",
            ));
        }
        self.opened.into_iter().collect()
    }
}

impl Inputs {
    /// Opens everything; `jail` is the jail the VMM is about to enter.
    fn open(run_dir: &Path, boot: Boot, jail: Option<&JailConfig>) -> Result<Inputs, VmmError> {
        let console_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join(files::CONSOLE_LOG))
            .map_err(|e| {
                VmmError::internal(
                    format!("{} in {}", files::CONSOLE_LOG, run_dir.display()),
                    e,
                )
            })?;
        let guest = match boot {
            Boot::Fresh(config) => {
                config.validate_limits()?;
                let files = BootFiles::open(&config)?;
                GuestFiles::Fresh(config, files)
            }
            Boot::Restore { snapshot_dir } => {
                let files = snapshot::open(&snapshot_dir)?;
                let disks = RestoreDisks::open(&snapshot_dir, jail)?;
                GuestFiles::Restore(snapshot_dir, files, disks)
            }
            Boot::Incoming(config) => {
                config.validate_limits()?;
                let disks = crate::boot::open_disks(&config.disks)?;
                GuestFiles::Incoming(config, disks)
            }
        };
        Ok(Inputs {
            kvm: support::open_kvm()?,
            console_log,
            // The kernel refuses it after the uid drop.
            pagemap: File::open("/proc/self/pagemap").ok(),
            statm: File::open("/proc/self/statm").ok(),
            guest,
        })
    }
}

/// Attaches to the TAP of every network card `boot` has (a fresh config's
/// `nets`, or the ones a snapshot's state names), in order; errors name
/// `nets[N].tap`. A snapshot's names are untrusted data, but valid
/// interface names ([`TapName`]), and only TAPs of the VMM's own network
/// namespace can be reached through them.
fn open_taps(boot: &Boot) -> Result<(Vec<TapName>, Vec<File>), VmmError> {
    let names: Vec<TapName> = match boot {
        Boot::Fresh(config) | Boot::Incoming(config) => {
            config.nets.iter().map(|n| n.tap.clone()).collect()
        }
        Boot::Restore { snapshot_dir } => snapshot::nets_in(snapshot_dir)
            .into_iter()
            .map(|n| n.tap)
            .collect(),
    };
    let taps = names
        .iter()
        .enumerate()
        .map(|(index, name)| crate::tap::open(&format!("nets[{index}].tap"), name))
        .collect::<Result<_, _>>()?;
    Ok((names, taps))
}

/// Binds the host socket of `config`'s vsock device, if it has one, in
/// `run_dir` (as the VMM's own user: after the jail's uid drop).
fn bind_vsock(run_dir: &Path, config: &VmConfig) -> Result<Option<HostSocket>, VmmError> {
    config
        .vsock
        .as_ref()
        .map(|vsock| HostSocket::bind(run_dir, vsock))
        .transpose()
}

/// Jails this process (still root, single-threaded, its inputs open, in
/// its cgroup unless its `launcher` puts it there): joins the cgroup, then
/// enters the mount namespace that shows only the run dir: the
/// launcher's, else one built here.
fn enter_jail(
    run_dir: &Path,
    jail: &JailConfig,
    pid: u32,
    launcher: Option<jail::LauncherJail>,
) -> Result<(), VmmError> {
    jail::give_run_dir(run_dir, jail)?;
    let namespace = match launcher {
        Some(launcher) => {
            let namespace = launcher.join(pid)?;
            crate::timeline::mark("cgroup");
            namespace
        }
        None => jail::Namespace::build(run_dir)?,
    };
    namespace.enter()
}

fn setup(
    run_dir: &Path,
    boot: Boot,
    confinement: &Confinement,
    pid: u32,
    launcher_jail: Option<jail::LauncherJail>,
    ready: &mut dyn Write,
) -> Result<(Arc<Vmm>, UnixListener, Vec<seccomp::Installing>), VmmError> {
    let io = |what: &str, e: std::io::Error| {
        VmmError::internal(format!("{what} in {}", run_dir.display()), e)
    };
    if let (None, Some(_)) = (&confinement.jail, &launcher_jail) {
        return Err(VmmError::invalid(
            jail::LauncherJail::ARG,
            "only a jailed VMM has a cgroup and a jail",
        ));
    }
    if let Some(jail) = &confinement.jail {
        jail.validate()?;
    }
    // The TAPs first: TUNSETIFF needs /dev/net/tun and CAP_NET_ADMIN (or
    // the TAP's owner), which the uid drop takes away.
    let (tap_names, taps) = open_taps(&boot)?;
    crate::timeline::mark("taps");
    if let (Some(jail), None) = (&confinement.jail, &launcher_jail) {
        // Started by hand: its own group, before it opens anything.
        cgroup::join(pid, cgroup::Limits::of(&boot, jail))?;
        crate::timeline::mark("cgroup");
    }
    // Every file the guest needs is opened before the jail is built, so
    // that the jail shows none of them.
    let inputs = Inputs::open(run_dir, boot, confinement.jail.as_ref())?;
    crate::timeline::mark("inputs");
    let Inputs {
        kvm,
        console_log,
        pagemap,
        statm,
        guest,
    } = inputs;
    if let Some(jail) = &confinement.jail {
        enter_jail(run_dir, jail, pid, launcher_jail)?;
        crate::timeline::mark("jail");
        // No host path is reachable by now; untrusted input is parsed only
        // after the drop.
        jail::drop_privileges(jail)?;
        crate::timeline::mark("dropped");
    }
    // A fresh boot's threads start now (after the drop, which they
    // inherit, and the cgroup join, which a cgroup v1 `tasks` write makes
    // per thread), so their starts and filter installs overlap the bare
    // VM's and the machine's creation. A restore or a migration learns its
    // vCPUs only from the state it parses: its threads start when they
    // are run.
    let mut threads = seccomp::Threads::new(confinement.seccomp);
    if let GuestFiles::Fresh(config, _) = &guest {
        for (name, kind) in crate::machine::threads_of(config)
            .chain([(LIFECYCLE.into(), ThreadKind::Lifecycle)])
            .chain([(CONSOLE.into(), ThreadKind::Console)])
        {
            threads.park(name, kind)?;
        }
        if confinement.seccomp {
            // This thread's own filter, compiled by a parked thread while
            // this one builds the machine: it goes on after the ready line
            // (see `run`).
            threads.prepare_on(LIFECYCLE, || seccomp::prepare(ThreadKind::Api));
        }
        crate::timeline::mark("parked");
    }
    // A fresh boot's bare VM, in the VMM's cgroup. Its slowest step, the
    // start of the PIT's kernel worker thread, mostly waits: the parked
    // threads use that time.
    let guest = guest.with_kvm(kvm)?;
    crate::timeline::mark("bare-vm");
    let sink = ConsoleSink::new(console_log);
    let (events, guest_events) = channel();
    // The stream a migrated-in VM came by, for the ack once it can run.
    let mut incoming = None;
    let (mut machine, config, restored_from, state) = match guest {
        GuestInputs::Fresh(config, files, vm) => {
            let vsock = bind_vsock(run_dir, &config)?;
            crate::timeline::mark("vsock-bind");
            let machine = Machine::create(vm, &config, files, taps, vsock, sink.clone())?;
            (machine, config, None, VmState::Configured)
        }
        GuestInputs::Restore(snapshot_dir, files, disks, kvm) => {
            let (file, memory) = snapshot::parse(&snapshot_dir, files)?;
            // Opened before the jail, by the names the unvalidated state
            // gave; the validated state must name the same ones.
            let disks = disks.take(&file.config.disks)?;
            // The TAPs were attached by the names read before the jail; the
            // validated state must name the same ones.
            let named: Vec<&TapName> = file.config.nets.iter().map(|n| &n.tap).collect();
            if named != tap_names.iter().collect::<Vec<_>>() {
                return Err(VmmError::invalid(
                    "config.nets",
                    "the snapshot's network cards changed while it was being restored",
                ));
            }
            let machine = Machine::restore(
                kvm,
                &file.machine,
                memory,
                (&file.config.disks, disks),
                (&file.config.nets, taps),
                bind_vsock(run_dir, &file.config)?,
                file.config.balloon.as_ref(),
                sink.clone(),
            )?;
            (machine, file.config, Some(snapshot_dir), VmState::Paused)
        }
        GuestInputs::Incoming(config, disks, kvm) => {
            let memory = crate::boot::guest_memory(config.memory_bytes())?;
            let stream = accept_migration(run_dir, pid, ready)?;
            let received = migration::receive(&stream, &config, &memory)?;
            let restored = Machine::restore(
                kvm,
                &received.machine,
                memory,
                (&config.disks, disks),
                (&config.nets, taps),
                bind_vsock(run_dir, &config).inspect_err(|e| migration::refuse(&stream, e))?,
                config.balloon.as_ref(),
                sink.clone(),
            );
            let mut machine = restored.inspect_err(|e| migration::refuse(&stream, e))?;
            machine.set_anonymous_memory();
            let state = if received.running {
                VmState::Running
            } else {
                VmState::Paused
            };
            incoming = Some(stream);
            (machine, config, None, state)
        }
    };
    crate::timeline::mark("machine");
    machine.use_pagemap(pagemap);
    // Every thread exists before the API thread's filter goes on: a fresh
    // VM's vCPUs wait parked until start(). They start while this thread
    // goes on; the first request waits for all of them (see `run`).
    let mut installing = machine.start(true, events, &mut threads)?;
    crate::timeline::mark("vcpus");
    if let Some(stream) = &incoming {
        // The guest runs from the ack on: every vCPU filtered first.
        installing
            .drain(..)
            .try_for_each(seccomp::Installing::wait)?;
        // Every thread is up: the ack says so, and the source's commit
        // says it has ended; only then does the guest run here.
        migration::ack(stream).inspect_err(|e| migration::refuse(stream, e))?;
        if state == VmState::Running {
            machine.resume();
        }
    }
    let api =
        UnixListener::bind(run_dir.join(files::API_SOCK)).map_err(|e| io(files::API_SOCK, e))?;
    crate::timeline::mark("api-bind");
    let console = UnixListener::bind(run_dir.join(files::CONSOLE_SOCK))
        .map_err(|e| io(files::CONSOLE_SOCK, e))?;
    console
        .set_nonblocking(true)
        .map_err(|e| io(files::CONSOLE_SOCK, e))?;
    crate::timeline::mark("console-bind");
    let console = Arc::new(ConsoleServer {
        accepting: Mutex::new(()),
        listener: console,
        sink,
        devices: machine.devices().clone(),
        new_inputs: Mutex::new(Vec::new()),
        wake: EventFd::new(EFD_NONBLOCK).map_err(|e| VmmError::internal("eventfd", e))?,
    });
    let record = VmRecord {
        config: config.clone(),
        restored_from: restored_from.clone(),
    };
    let json =
        serde_json::to_vec(&record).map_err(|e| VmmError::internal("encoding vm.json", e))?;
    write_replacing(&run_dir.join(files::VM), &json).map_err(|e| io(files::VM, e))?;
    crate::timeline::mark("vm-json");
    let vmm = Arc::new(Vmm {
        run_dir: run_dir.to_path_buf(),
        config,
        restored_from,
        pid,
        statm,
        console: console.clone(),
        inner: Mutex::new(Inner {
            machine: Some(machine),
            state,
        }),
    });
    // Guest stops end the VMM.
    let v = vmm.clone();
    let (_, lifecycle) = threads.run(LIFECYCLE.into(), ThreadKind::Lifecycle, move || {
        if let Ok(event) = guest_events.recv() {
            let (reason, code) = match event {
                GuestEvent::Reset => ("guest_reset".to_string(), 0),
                GuestEvent::Shutdown => ("guest_shutdown".to_string(), 0),
                GuestEvent::PowerOff => (exit_reasons::POWEROFF.to_string(), 0),
                // A reboot ends this process too: a new VMM boots the
                // guest afresh (see `exit_reasons::REBOOT`).
                GuestEvent::Reboot => (exit_reasons::REBOOT.to_string(), 0),
                GuestEvent::Failed(why) => (format!("error: {why}"), 1),
            };
            v.finish(&reason, code);
        }
    })?;
    // Console readers: output is copied to them, what they write is serial input.
    let (_, console) = threads.run(CONSOLE.into(), ThreadKind::Console, move || console.serve())?;
    // This thread's own filter goes on after the ready line (see `run`).
    crate::timeline::mark("ready");
    installing.push(lifecycle);
    installing.push(console);
    Ok((vmm, api, installing))
}

/// How long a VMM launched to receive a migration waits for its source.
const MIGRATION_ACCEPT_TIMEOUT_MS: i32 = 120_000;

/// Listens on `RUN_DIR/migrate.sock`, tells the launcher (`Listening`),
/// and takes the first source that connects; the socket is removed then,
/// so no second source can.
fn accept_migration(
    run_dir: &Path,
    pid: u32,
    ready: &mut dyn Write,
) -> Result<UnixStream, VmmError> {
    let path = run_dir.join(files::MIGRATE_SOCK);
    let io = |e: std::io::Error| VmmError::internal(format!("{}", path.display()), e);
    let listener = UnixListener::bind(&path).map_err(io)?;
    report(ready, &Handshake::Listening(pid));
    let mut fds = [poll_in(listener.as_raw_fd(), true)];
    let waited = loop {
        // SAFETY: `fds` is a live array of one pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, MIGRATION_ACCEPT_TIMEOUT_MS) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    let accepted = (waited > 0).then(|| listener.accept());
    let _ = std::fs::remove_file(&path);
    match accepted {
        Some(Ok((stream, _))) => Ok(stream),
        Some(Err(e)) => Err(io(e)),
        None => Err(VmmError::Unavailable {
            message: format!(
                "no migration source connected to {} within {} s",
                path.display(),
                MIGRATION_ACCEPT_TIMEOUT_MS / 1000
            ),
        }),
    }
}

/// Writes `path` through a temporary file and a rename: the directory, not
/// the old file (which root may own from an earlier unjailed VMM), decides.
fn write_replacing(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Reads one request line and the descriptors sent with it (SCM_RIGHTS:
/// at most two, the snapshot files).
fn read_request(conn: &UnixStream) -> std::io::Result<(String, Vec<File>)> {
    let mut buf = vec![0u8; 4096];
    let mut fds = [-1 as RawFd; 2];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the iovec points into `buf`, which lives and is not otherwise
    // borrowed during the call; any bytes may be written there.
    let (n, nfds) = unsafe { conn.recv_with_fds(&mut iov, &mut fds) }
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    let files = fds[..nfds]
        .iter()
        // SAFETY: recvmsg installed these descriptors in this process; each
        // is owned by exactly one File from here on.
        .map(|&fd| unsafe { File::from_raw_fd(fd) })
        .collect();
    buf.truncate(n);
    if n > 0 && !buf.contains(&b'\n') {
        BufReader::new(conn)
            .take(1 << 20)
            .read_until(b'\n', &mut buf)?;
    }
    let line = String::from_utf8(buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok((line, files))
}

fn serve(vmm: Arc<Vmm>, api: UnixListener) {
    for conn in api.incoming().flatten() {
        let Ok((line, files)) = read_request(&conn) else {
            continue;
        };
        let request: Result<Request, _> = serde_json::from_str(&line);
        let (response, then_exit) = match request {
            Ok(Request::Shutdown) => (Ok(serde_json::Value::Null), true),
            Ok(req) => (vmm.handle(req, files), false),
            Err(e) => (Err(VmmError::invalid("request", e.to_string())), false),
        };
        let mut out = serde_json::to_string(&response).unwrap_or_else(|_| "null".into());
        out.push('\n');
        let _ = (&conn).write_all(out.as_bytes());
        drop(conn);
        if then_exit {
            vmm.finish("shutdown", 0);
        }
        // A request that ended the VM here (a completed migration).
        let state = lock(&vmm.inner).state.clone();
        if let VmState::Exited { reason, code } = state {
            vmm.finish(&reason, code);
        }
    }
}

impl Vmm {
    fn handle(&self, req: Request, files: Vec<File>) -> Response {
        self.console.accept_pending();
        let mut inner = lock(&self.inner);
        let Inner { machine, state } = &mut *inner;
        let machine = machine
            .as_mut()
            .ok_or_else(|| VmmError::precondition("the VM is stopping"))?;
        let ok = Ok(serde_json::Value::Null);
        match (req, state.clone()) {
            (Request::Info, state) => to_value(&VmInfo {
                state,
                pid: self.pid,
                config: self.config.clone(),
                restored_from: self.restored_from.clone(),
            }),
            (Request::Start, VmState::Configured) => {
                crate::timeline::mark("api:start");
                machine.resume();
                *state = VmState::Running;
                ok
            }
            (Request::Start, other) => Err(VmmError::precondition(format!(
                "start: the VM is {} (only a configured VM starts; use resume)",
                name(&other)
            ))),
            (Request::Pause, VmState::Running) => {
                machine.pause()?;
                *state = VmState::Paused;
                ok
            }
            (Request::Resume, VmState::Paused) => {
                machine.resume();
                *state = VmState::Running;
                ok
            }
            (Request::Pause, VmState::Paused) | (Request::Resume, VmState::Running) => ok,
            (Request::Pause | Request::Resume, other) => Err(VmmError::precondition(format!(
                "the VM is {}, start it first",
                name(&other)
            ))),
            (Request::Snapshot { dir }, VmState::Running | VmState::Paused) => {
                let [state_file, memory_file]: [File; 2] = files.try_into().map_err(|_| {
                    VmmError::invalid(
                        "snapshot",
                        "the request must carry the state and memory files (SCM_RIGHTS)",
                    )
                })?;
                for f in [&state_file, &memory_file] {
                    if !f.metadata().is_ok_and(|m| m.is_file()) {
                        return Err(VmmError::invalid(
                            "snapshot",
                            "the descriptors sent are not regular files",
                        ));
                    }
                }
                machine.pause()?;
                *state = VmState::Paused;
                let saved = machine.save_state()?;
                snapshot::write(
                    snapshot::Target {
                        dir: &dir,
                        state: state_file,
                        memory: memory_file,
                    },
                    &self.config,
                    saved,
                    machine.memory(),
                    machine.memory_bytes(),
                    machine.populated_pages().as_deref(),
                )?;
                ok
            }
            (Request::Snapshot { .. }, other) => Err(VmmError::precondition(format!(
                "snapshot: the VM is {}, start it first",
                name(&other)
            ))),
            (Request::Migrate { params }, VmState::Running | VmState::Paused) => {
                let running = *state == VmState::Running;
                let [socket]: [File; 1] = files.try_into().map_err(|_| {
                    VmmError::invalid(
                        "migrate",
                        "the request must carry one stream socket to the target (SCM_RIGHTS)",
                    )
                })?;
                if !socket.metadata().is_ok_and(|m| m.file_type().is_socket()) {
                    return Err(VmmError::invalid(
                        "migrate",
                        "the descriptor sent is not a socket",
                    ));
                }
                let stream = UnixStream::from(std::os::fd::OwnedFd::from(socket));
                let report = migration::send(machine, &self.config, &stream, params, running)?;
                // serve() ends this VMM once the answer is out.
                *state = VmState::Exited {
                    reason: "migrated".into(),
                    code: 0,
                };
                to_value(&report)
            }
            (Request::Migrate { .. }, other) => Err(VmmError::precondition(format!(
                "migrate: the VM is {}, start it first",
                name(&other)
            ))),
            (Request::Stats, _) => to_value(&VmmStats {
                guest_memory_bytes: machine.memory_bytes(),
                vmm_rss_bytes: rss_bytes(self.statm.as_ref()),
                vcpu_time_ns: machine.vcpu_times_ns(),
                exits: machine.exit_counts(),
                balloon: machine.balloon_stats(),
            }),
            (Request::SetBalloon { target_mib }, _) => {
                let pages = crate::virtio::balloon::target_pages(
                    "target_mib",
                    target_mib,
                    machine.memory_bytes(),
                )?;
                machine.set_balloon_target(pages)?;
                ok
            }
            (Request::Shutdown, _) => ok,
            #[cfg(feature = "test-hooks")]
            (Request::TestBlockedSyscall, _) => {
                // SAFETY: socket(2) takes integers; the descriptor, if the
                // filter lets it through, is closed right away.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                if fd >= 0 {
                    // SAFETY: `fd` was just returned by socket(2) and is ours.
                    unsafe { libc::close(fd) };
                }
                ok
            }
            #[cfg(feature = "test-hooks")]
            (Request::TestPanic, _) => panic!("test hook: a deliberate panic"),
        }
    }

    /// Stops the vCPUs, records how the VM ended, removes the sockets and exits.
    fn finish(&self, reason: &str, code: i32) {
        let mut inner = lock(&self.inner);
        if let Some(mut machine) = inner.machine.take() {
            machine.stop();
        }
        let record = ExitRecord {
            reason: reason.to_string(),
            code,
            pid: self.pid,
        };
        if let Ok(json) = serde_json::to_vec(&record) {
            let _ = write_replacing(&self.run_dir.join(files::EXIT), &json);
        }
        for f in [
            files::API_SOCK,
            files::CONSOLE_SOCK,
            files::MIGRATE_SOCK,
            files::PID,
        ] {
            let _ = std::fs::remove_file(self.run_dir.join(f));
        }
        if let Some(vsock) = &self.config.vsock {
            let _ = std::fs::remove_file(vsock.uds_path(&self.run_dir));
        }
        std::process::exit(code);
    }
}

fn name(state: &VmState) -> &'static str {
    match state {
        VmState::Configured => "configured",
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Exited { .. } => "exited",
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Response {
    serde_json::to_value(v).map_err(|e| VmmError::internal("encoding the response", e))
}

/// The resident set of this process in bytes, from its open `statm`
/// (read afresh at offset 0; 0 if it cannot be read).
fn rss_bytes(statm: Option<&File>) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 128];
    let Some(n) = statm.and_then(|f| f.read_at(&mut buf, 0).ok()) else {
        return 0;
    };
    // SAFETY: sysconf(3) takes an integer (glibc answers from the auxiliary
    // vector, no system call).
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// The handshake line announcing a VMM of host pid `pid` (see the binary).
pub fn spawned_line(pid: u32) -> String {
    serde_json::to_string(&Handshake::Spawned(pid)).unwrap_or_default()
}

/// Makes a panic in any thread end the VMM at once: one line to stderr
/// (vmm.log) saying which thread panicked where and why, then the process
/// exits with [`PANIC_EXIT_CODE`](crate::exit_reasons::PANIC_EXIT_CODE),
/// which the launcher records in exit.json. Left alone, a panicking vCPU or
/// device thread would end only itself and leave a VM that no longer runs
/// but answers; and the shipped build aborts on a panic (Cargo profile
/// `vmm`), whose SIGABRT a jailed VMM, pid 1 of its namespace, ignores.
/// Not std's default hook: it calls getcwd(2), which no thread's seccomp
/// filter allows. `_exit`: no destructor or atexit handler runs in a
/// process in an unknown state, and exit_group is allowed everywhere.
pub fn end_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let line = format!(
            "zixiao-vmm: thread '{}' panicked at {}: {}\n",
            thread.name().unwrap_or("unnamed"),
            info.location()
                .map_or_else(|| "an unknown place".to_string(), ToString::to_string),
            panic_message(info.payload()),
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        // SAFETY: _exit(2) takes an integer and does not return.
        unsafe { libc::_exit(crate::exit_reasons::PANIC_EXIT_CODE) };
    }));
}

/// The message of a panic (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The handshake line reporting `err` (see the binary).
pub fn failed_line(err: &VmmError) -> String {
    serde_json::to_string(&Handshake::Failed(err.clone())).unwrap_or_default()
}
