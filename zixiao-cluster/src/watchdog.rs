//! Self-fencing: a small per-node process that outlives the agent. The agent
//! "pets" it after every lease renewal it sends (a file holding the
//! monotonic time the renewal was sent); when the petting stops for longer
//! than the fencing deadline (shorter than the lease TTL), the watchdog
//! stops every instance the node recorded (running, paused, or created and
//! not started), through the node's runtimes. So
//! by the time the lease expires and the server moves the instances
//! elsewhere, the old copies are gone, whether the agent died, hung or was
//! cut off from the control plane.
//!
//! Files under `<state-dir>/watchdog/`: `pet` (the last renewal sent, in
//! monotonic ms), `lock` (held by the running watchdog: at most one per
//! node), `pid`, `stop` (asks it to exit: the agent left the cluster on
//! purpose), `fence.log` (one line per fenced instance: monotonic ms, id,
//! and how long its stop took in ms; lines from before that last field
//! have none).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::{Error, Instance, NodeAgent, Result, RuntimeState};

use crate::records::Records;
use crate::timing::monotonic_ms;

/// How often the watchdog looks at the pet file.
pub const POLL: Duration = Duration::from_millis(50);

/// How often a fenced node's instances are stopped again while it stays fenced.
const REFENCE: Duration = Duration::from_secs(1);

/// The watchdog's files of a node's state directory.
#[derive(Debug, Clone)]
pub struct WatchdogFiles {
    dir: PathBuf,
}

impl WatchdogFiles {
    /// The files under `state_dir/watchdog`.
    pub fn new(state_dir: &Path) -> Self {
        WatchdogFiles {
            dir: state_dir.join("watchdog"),
        }
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::Internal(format!("watchdog {what} in {}: {e}", self.dir.display()))
    }

    /// Records that a renewal was sent at `sent_ms` (monotonic). Atomic.
    pub fn pet(&self, sent_ms: u64) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io("directory", e))?;
        let tmp = self.dir.join("pet.tmp");
        std::fs::write(&tmp, sent_ms.to_string()).map_err(|e| self.io("pet", e))?;
        std::fs::rename(&tmp, self.dir.join("pet")).map_err(|e| self.io("pet", e))
    }

    /// The last renewal sent, if the agent ever petted.
    pub fn last_pet(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join("pet"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Asks the running watchdog to exit (the agent leaves on purpose).
    pub fn request_stop(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io("directory", e))?;
        std::fs::write(self.dir.join("stop"), b"").map_err(|e| self.io("stop", e))?;
        let _ = std::fs::remove_file(self.dir.join("pet"));
        Ok(())
    }

    /// The pid of the watchdog that last started here.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The fence log: (monotonic ms, instance id) per fenced instance.
    pub fn fence_log(&self) -> Vec<(u64, String)> {
        self.fences().into_iter().map(|f| (f.at_ms, f.id)).collect()
    }

    /// The fence log, each line in full. A line that does not parse (cut
    /// short by a crash mid-write) is skipped.
    pub fn fences(&self) -> Vec<Fence> {
        std::fs::read_to_string(self.dir.join("fence.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let at_ms = fields.next()?.parse().ok()?;
                let id = fields.next().filter(|id| !id.is_empty())?.to_owned();
                let stop_ms = fields.next().and_then(|ms| ms.parse().ok());
                Some(Fence { at_ms, id, stop_ms })
            })
            .collect()
    }
}

/// One instance the watchdog fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// When, in monotonic ms.
    pub at_ms: u64,
    /// The instance's id.
    pub id: String,
    /// How long stopping it took, in ms (`None` in lines written before
    /// the log had it).
    pub stop_ms: Option<u64>,
}

/// What [`run`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Another watchdog holds this node's lock.
    AlreadyRunning,
    /// The agent asked it to stop.
    Stopped,
    /// The node's state directory is gone (the node was removed, or a
    /// test's temporary directory deleted): no records are left to fence,
    /// and a watchdog that stayed would only leak.
    StateDirGone,
}

/// Runs the watchdog of the node whose state is in `state_dir` until it is
/// asked to stop or the directory is removed, fencing through `agent`'s drivers when the pets stop for
/// longer than `fence_after`. Errors: `Internal` (its files cannot be written).
pub async fn run(
    state_dir: &Path,
    fence_after: Duration,
    agent: Arc<dyn NodeAgent>,
) -> Result<Exit> {
    let files = WatchdogFiles::new(state_dir);
    std::fs::create_dir_all(&files.dir).map_err(|e| files.io("directory", e))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(files.dir.join("lock"))
        .map_err(|e| files.io("lock", e))?;
    // SAFETY: the descriptor belongs to `lock`, which stays open (and so
    // keeps the lock) for as long as this function runs.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Ok(Exit::AlreadyRunning);
    }
    let _ = std::fs::remove_file(files.dir.join("stop"));
    std::fs::write(files.dir.join("pid"), std::process::id().to_string())
        .map_err(|e| files.io("pid", e))?;
    let records = Records::new(state_dir);
    let fence_ms = u64::try_from(fence_after.as_millis()).unwrap_or(u64::MAX);
    let mut last_fence: Option<u64> = None;
    // The instances stopped while created, in this spell of fencing.
    let mut stopped_created = BTreeSet::new();
    loop {
        if files.dir.join("stop").exists() {
            let _ = std::fs::remove_file(files.dir.join("stop"));
            return Ok(Exit::Stopped);
        }
        if !files.dir.exists() {
            return Ok(Exit::StateDirGone);
        }
        let now = monotonic_ms();
        match files.last_pet() {
            Some(pet) if now.saturating_sub(pet) > fence_ms => {
                let due = last_fence
                    .is_none_or(|at| now.saturating_sub(at) >= REFENCE.as_millis() as u64);
                if due {
                    fence(&files, &records, agent.as_ref(), &mut stopped_created).await;
                    last_fence = Some(now);
                }
            }
            _ => {
                last_fence = None;
                stopped_created.clear();
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Stops every recorded instance that still runs or could run: one
/// created and not started holds a workload too (a QEMU launched with its
/// vCPUs stopped, a task not yet started), which must not outlive the
/// node's lease any more than a running one. A created one is stopped once
/// per spell of fencing (`stopped_created`): a stopped container reads
/// "created" again, and stopping it every second would only fill the log.
///
/// The instances are stopped all at once: the lease expires a second after
/// the fencing deadline whatever the node holds, so one slow stop (a
/// monitor that does not answer) must not hold up the others.
async fn fence(
    files: &WatchdogFiles,
    records: &Records,
    agent: &dyn NodeAgent,
    stopped_created: &mut BTreeSet<String>,
) {
    let fences = records.list().into_iter().map(|instance| {
        let created_stopped = stopped_created.contains(&instance.id);
        async move {
            let stopped = fence_one(files, agent, &instance, created_stopped).await;
            (instance.id, stopped)
        }
    });
    for (id, stopped) in futures::future::join_all(fences).await {
        if stopped == Some(RuntimeState::Created) {
            stopped_created.insert(id);
        }
    }
}

/// Stops `instance` if it runs, or is created and `created_stopped` is
/// false; returns the state it stopped it in, if it did.
async fn fence_one(
    files: &WatchdogFiles,
    agent: &dyn NodeAgent,
    instance: &Instance,
    created_stopped: bool,
) -> Option<RuntimeState> {
    let driver = match agent.driver(instance.spec.instance_type) {
        Ok(driver) => driver,
        Err(e) => {
            tracing::warn!(instance = %instance.name, "cannot fence: {e}");
            return None;
        }
    };
    let state = match driver.inspect(instance).await {
        Ok(state @ (RuntimeState::Running | RuntimeState::Paused)) => state,
        Ok(RuntimeState::Created) if !created_stopped => RuntimeState::Created,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(instance = %instance.name, "inspecting: {e}");
            RuntimeState::Running
        }
    };
    let stopping = std::time::Instant::now();
    match driver.stop(instance, Duration::ZERO).await {
        Ok(()) => {
            let line = format!(
                "{} {} {}\n",
                monotonic_ms(),
                instance.id,
                stopping.elapsed().as_millis()
            );
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(files.dir.join("fence.log"));
            if let Ok(mut log) = log {
                let _ = log.write_all(line.as_bytes());
            }
            tracing::info!(instance = %instance.name, "fenced");
            Some(state)
        }
        Err(e) => {
            tracing::warn!(instance = %instance.name, "cannot fence: {e}");
            None
        }
    }
}

/// Starts `command` (the node's watchdog) in a session of its own, so it
/// survives the agent and signals to the agent's process group. Errors:
/// `Internal` when it cannot be started.
pub fn spawn_detached(mut command: std::process::Command) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| Error::Internal(format!("cannot start the node's watchdog: {e}")))?;
    Ok(child.id())
}
