//! The VMM process: owns one `Machine`, serves the JSON-lines API on
//! `api.sock`, fans the console out (`console.log`, `console.sock`), and
//! writes `exit.json` and removes its sockets when the guest or the VMM stops.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::api::{
    files, Boot, ExitRecord, Ready, Request, Response, VmInfo, VmRecord, VmState, VmmStats,
};
use crate::devices::ConsoleSink;
use crate::machine::{GuestEvent, Machine};
use crate::{snapshot, VmConfig, VmmError};

struct Inner {
    machine: Option<Machine>,
    state: VmState,
}

struct Vmm {
    run_dir: PathBuf,
    config: VmConfig,
    restored_from: Option<PathBuf>,
    pid: u32,
    events: Sender<GuestEvent>,
    console: Arc<ConsoleServer>,
    inner: Mutex<Inner>,
}

/// Accepts console readers. The listener is non-blocking so that every API
/// request can first take in readers that connected before it was sent: a
/// client that attaches and then calls `start()` sees all the boot output.
struct ConsoleServer {
    /// Held while accepting and attaching, so that an API request never
    /// overtakes a reader the console thread has accepted but not attached.
    accepting: Mutex<()>,
    listener: UnixListener,
    sink: ConsoleSink,
    devices: Arc<crate::devices::Devices>,
}

impl ConsoleServer {
    fn accept_pending(&self) {
        let _guard = lock(&self.accepting);
        while let Ok((conn, _)) = self.listener.accept() {
            let _ = conn.set_nonblocking(false);
            if let Ok(writer) = conn.try_clone() {
                self.sink.attach(writer);
            }
            let devices = self.devices.clone();
            std::thread::spawn(move || console_input(conn, &devices));
        }
    }

    fn serve(&self) {
        let mut fds = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.listener),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            self.accept_pending();
            // SAFETY: `fds` is one valid pollfd on the stack for the duration of
            // the call, and nfds is 1.
            let n = unsafe { libc::poll(&mut fds, 1, -1) };
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the VMM process for `run_dir`: reports readiness (or the error) as
/// one JSON line on `ready`, then serves until the VM stops. Returns the
/// process exit code.
pub fn run(run_dir: &Path, boot: Boot, mut ready: impl Write) -> i32 {
    let report = |ready: &mut dyn Write, r: &Ready| {
        let line = serde_json::to_string(r).unwrap_or_else(|_| "null".into());
        let _ = writeln!(ready, "{line}");
        let _ = ready.flush();
    };
    let pid = std::process::id();
    let created = match prepare(run_dir, pid) {
        Ok(created) => created,
        Err(err) => {
            report(&mut ready, &Err(err));
            return 1;
        }
    };
    match setup(run_dir, boot, pid) {
        Ok((vmm, api)) => {
            report(&mut ready, &Ok(pid));
            drop(ready);
            serve(vmm, api);
            0
        }
        Err(err) => {
            eprintln!("zixiao-vmm: {err}");
            cleanup(run_dir, &created);
            report(&mut ready, &Err(err));
            1
        }
    }
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
    for stale in [files::API_SOCK, files::CONSOLE_SOCK, files::EXIT] {
        let _ = std::fs::remove_file(run_dir.join(stale));
    }
    let mut created = vec![run_dir.join(files::PID)];
    if !run_dir.join(files::CONSOLE_LOG).exists() {
        created.push(run_dir.join(files::CONSOLE_LOG));
    }
    created.push(api);
    created.push(run_dir.join(files::VM));
    created.push(run_dir.join(files::CONSOLE_SOCK));
    std::fs::write(run_dir.join(files::PID), format!("{pid}\n")).map_err(io)?;
    Ok(created)
}

fn cleanup(_run_dir: &Path, created: &[PathBuf]) {
    for f in created {
        let _ = std::fs::remove_file(f);
    }
}

fn setup(run_dir: &Path, boot: Boot, pid: u32) -> Result<(Arc<Vmm>, UnixListener), VmmError> {
    let io = |what: &str, e: std::io::Error| {
        VmmError::internal(format!("{what} in {}", run_dir.display()), e)
    };
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join(files::CONSOLE_LOG))
        .map_err(|e| io(files::CONSOLE_LOG, e))?;
    let sink = ConsoleSink::new(log);
    let (events, guest_events) = channel();
    let (machine, config, restored_from, state) = match boot {
        Boot::Fresh(config) => {
            let machine = Machine::create(&config, sink.clone())?;
            (machine, config, None, VmState::Configured)
        }
        Boot::Restore { snapshot_dir } => {
            let (file, memory) = snapshot::read(&snapshot_dir)?;
            let mut machine = Machine::restore(&file.machine, memory, sink.clone())?;
            machine.start(true, events.clone())?;
            (machine, file.config, Some(snapshot_dir), VmState::Paused)
        }
    };
    let api =
        UnixListener::bind(run_dir.join(files::API_SOCK)).map_err(|e| io(files::API_SOCK, e))?;
    let console = UnixListener::bind(run_dir.join(files::CONSOLE_SOCK))
        .map_err(|e| io(files::CONSOLE_SOCK, e))?;
    console
        .set_nonblocking(true)
        .map_err(|e| io(files::CONSOLE_SOCK, e))?;
    let console = Arc::new(ConsoleServer {
        accepting: Mutex::new(()),
        listener: console,
        sink,
        devices: machine.devices().clone(),
    });
    let record = VmRecord {
        config: config.clone(),
        restored_from: restored_from.clone(),
    };
    let json =
        serde_json::to_vec(&record).map_err(|e| VmmError::internal("encoding vm.json", e))?;
    std::fs::write(run_dir.join(files::VM), json).map_err(|e| io(files::VM, e))?;
    let vmm = Arc::new(Vmm {
        run_dir: run_dir.to_path_buf(),
        config,
        restored_from,
        pid,
        events,
        console: console.clone(),
        inner: Mutex::new(Inner {
            machine: Some(machine),
            state,
        }),
    });
    // Guest stops end the VMM.
    let v = vmm.clone();
    std::thread::spawn(move || {
        if let Ok(event) = guest_events.recv() {
            let (reason, code) = match event {
                GuestEvent::Reset => ("guest_reset".to_string(), 0),
                GuestEvent::Shutdown => ("guest_shutdown".to_string(), 0),
                GuestEvent::Failed(why) => (format!("error: {why}"), 1),
            };
            v.finish(&reason, code);
        }
    });
    // Console readers: output is copied to them, what they write is serial input.
    std::thread::spawn(move || console.serve());
    Ok((vmm, api))
}

fn console_input(mut conn: UnixStream, devices: &crate::devices::Devices) {
    let mut buf = [0u8; 256];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            return;
        }
        let mut pending = &buf[..n];
        // The UART FIFO is small: wait for the guest to drain it.
        while !pending.is_empty() {
            let taken = devices.serial_input(pending);
            pending = &pending[taken..];
            if taken == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn serve(vmm: Arc<Vmm>, api: UnixListener) {
    for conn in api.incoming().flatten() {
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let request: Result<Request, _> = serde_json::from_str(&line);
        let (response, then_exit) = match request {
            Ok(Request::Shutdown) => (Ok(serde_json::Value::Null), true),
            Ok(req) => (vmm.handle(req), false),
            Err(e) => (Err(VmmError::invalid("request", e.to_string())), false),
        };
        let mut out = serde_json::to_string(&response).unwrap_or_else(|_| "null".into());
        out.push('\n');
        let _ = (&conn).write_all(out.as_bytes());
        drop(conn);
        if then_exit {
            vmm.finish("shutdown", 0);
        }
    }
}

impl Vmm {
    fn handle(&self, req: Request) -> Response {
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
                machine.start(false, self.events.clone())?;
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
                if dir.join("state.json").exists() {
                    return Err(VmmError::AlreadyExists {
                        message: format!("a snapshot in {}", dir.display()),
                    });
                }
                machine.pause()?;
                *state = VmState::Paused;
                let saved = machine.save_state()?;
                snapshot::write(
                    &dir,
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
            (Request::Stats, _) => to_value(&VmmStats {
                guest_memory_bytes: machine.memory_bytes(),
                vmm_rss_bytes: rss_bytes(),
                vcpu_time_ns: machine.vcpu_times_ns(),
                exits: machine.exit_counts(),
            }),
            (Request::Shutdown, _) => ok,
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
            let tmp = self.run_dir.join(".exit.json.tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, self.run_dir.join(files::EXIT));
            }
        }
        for f in [files::API_SOCK, files::CONSOLE_SOCK, files::PID] {
            let _ = std::fs::remove_file(self.run_dir.join(f));
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

/// VmRSS of this process in bytes.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}
