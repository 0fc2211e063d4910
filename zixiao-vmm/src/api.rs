//! The VMM process's API: the types clients see (state, info, stats, how to
//! boot) and the JSON-lines protocol on `RUN_DIR/api.sock` (one request line,
//! one response line per connection).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{VmConfig, VmmError};

/// Files in a VMM run directory.
pub mod files {
    /// The API socket.
    pub const API_SOCK: &str = "api.sock";
    /// Live console attach socket.
    pub const CONSOLE_SOCK: &str = "console.sock";
    /// All serial output of the guest.
    pub const CONSOLE_LOG: &str = "console.log";
    /// The VMM's process id.
    pub const PID: &str = "vmm.pid";
    /// The VMM's own diagnostics (its stderr).
    pub const VMM_LOG: &str = "vmm.log";
    /// Written when the VMM stops: how it stopped.
    pub const EXIT: &str = "exit.json";
    /// What the VM boots (config, snapshot it came from), kept after exit.
    pub const VM: &str = "vm.json";
    /// Where a VMM launched with `Boot::Incoming` takes the one migration
    /// stream it receives (removed once a source connected).
    pub const MIGRATE_SOCK: &str = "migrate.sock";
}

/// The `reason` of a VM the guest ended through ACPI (see [`VmState::Exited`]).
pub mod exit_reasons {
    /// The guest powered off (ACPI S5).
    pub const POWEROFF: &str = "poweroff";
    /// The guest rebooted (the ACPI reset register): the VMM process ends
    /// and whoever runs the VM boots it again in a new one.
    pub const REBOOT: &str = "reboot";
    /// The VMM panicked (a bug): its panic hook printed the message to
    /// vmm.log and ended the process with [`PANIC_EXIT_CODE`]; the launcher
    /// records this reason, followed by where to look.
    pub const PANICKED: &str = "panicked";
    /// The exit code a panicking VMM ends with, whatever thread panicked
    /// and however it was built (101, as a Rust `main` that panics).
    pub const PANIC_EXIT_CODE: i32 = 101;
}

/// How the VMM process starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boot {
    /// Boot `VmConfig` from scratch; the vCPUs start on `start()`.
    Fresh(VmConfig),
    /// Restore a snapshot; the VM is paused until `resume()`.
    Restore {
        /// A directory written by `snapshot()`.
        snapshot_dir: PathBuf,
    },
    /// Receive a live migration of a VM of this config (memory, vCPUs,
    /// disks and network cards must match the source's; the kernel is not
    /// read): the VMM listens on `RUN_DIR/migrate.sock` and `launch`
    /// returns as soon as it does. Once the source's final state arrived
    /// the VM runs here (paused, if it was paused at the source); a bad or
    /// broken stream ends this VMM with the
    /// reason in exit.json.
    Incoming(VmConfig),
}

/// Lifecycle state of a microVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum VmState {
    /// Loaded, vCPUs not started.
    Configured,
    /// vCPUs running.
    Running,
    /// vCPUs parked.
    Paused,
    /// The VMM process is gone.
    Exited {
        /// `guest_reset` (the i8042 reset line: Linux `reboot=k`, the test
        /// guest's power-off), `guest_shutdown` (a triple fault or a halt
        /// nothing can wake), `poweroff` (the guest entered ACPI S5),
        /// `reboot` (the guest wrote the ACPI reset register: the VM ends
        /// and whoever runs it boots a new one), `shutdown`, `migrated` (the
        /// VM runs on in the migration target), `killed` or `error: ...`.
        reason: String,
        /// 0 for an orderly stop.
        code: i32,
    },
}

/// What `info()` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Current state.
    pub state: VmState,
    /// The VMM process id.
    pub pid: u32,
    /// What it boots (for a restore: the config of the snapshotted VM).
    pub config: VmConfig,
    /// The snapshot it was restored from, if any.
    pub restored_from: Option<PathBuf>,
}

/// Resource use of one microVM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmStats {
    /// Guest memory size.
    pub guest_memory_bytes: u64,
    /// Resident set of the VMM process (includes guest pages touched).
    pub vmm_rss_bytes: u64,
    /// CPU time of each vCPU thread.
    pub vcpu_time_ns: Vec<u64>,
    /// VM exits by reason (`io_in`, `io_out`, `mmio`, `hlt`, `shutdown`, `intr`, `other`).
    pub exits: BTreeMap<String, u64>,
    /// The balloon's target, what the guest holds and what it gave back,
    /// if the VM has a balloon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<crate::BalloonStats>,
}

/// One API request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Info,
    Start,
    Pause,
    Resume,
    Shutdown,
    /// Sent with two descriptors (SCM_RIGHTS): the state file and the
    /// memory file, which the client created in `dir`; `dir` only names
    /// them in messages. The VMM never opens a path given at run time.
    Snapshot {
        dir: PathBuf,
    },
    Stats,
    /// Sets the balloon's target (MiB the guest should give back).
    SetBalloon {
        target_mib: u64,
    },
    /// Sent with one descriptor (SCM_RIGHTS): a stream socket connected to
    /// a receiving VMM.
    Migrate {
        params: crate::MigrationParams,
    },
    /// Test builds only: the API thread makes a syscall its seccomp filter
    /// forbids (`socket(AF_INET)`), which must kill the VMM.
    #[cfg(feature = "test-hooks")]
    TestBlockedSyscall,
    /// Test builds only: the API thread panics, which must end the VMM
    /// with a clear record.
    #[cfg(feature = "test-hooks")]
    TestPanic,
}

/// One API response.
pub(crate) type Response = Result<serde_json::Value, VmmError>;

/// What the VMM process writes on its stdout pipe, one JSON line each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Handshake {
    /// First, from a VMM in its own PID namespace: its host pid. It is a
    /// child of the launcher (`CLONE_PARENT`), which must reap it.
    Spawned(u32),
    /// Configured (or restored, paused) and serving `api.sock`; its host pid.
    Ready(u32),
    /// Launched with `Boot::Incoming`: listening on `migrate.sock` (its
    /// API is served once the migration arrived); its host pid.
    Listening(u32),
    /// It could not start; it has removed what it created and exits.
    Failed(VmmError),
}

/// The content of exit.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub reason: String,
    pub code: i32,
    pub pid: u32,
}

impl ExitRecord {
    /// How a VMM that died of `signal` ended: a blocked syscall (SIGSYS
    /// from its seccomp filter) says so; SIGKILL is `killed`.
    pub(crate) fn signalled(pid: u32, signal: i32) -> ExitRecord {
        let reason = match signal {
            libc::SIGSYS => {
                "killed: blocked syscall (SIGSYS from the seccomp filter; see vmm.log and the kernel audit log for which)".to_string()
            }
            libc::SIGKILL => "killed".to_string(),
            other => format!("killed by signal {other}"),
        };
        ExitRecord {
            reason,
            code: -signal,
            pid,
        }
    }

    /// How a VMM that exited with `code` without writing exit.json ended:
    /// [`exit_reasons::PANIC_EXIT_CODE`] is its panic hook's; None for
    /// any other code (the VMM records those itself, or failed to start).
    pub(crate) fn exited(pid: u32, code: i32) -> Option<ExitRecord> {
        (code == exit_reasons::PANIC_EXIT_CODE).then(|| ExitRecord {
            reason: format!(
                "{}: the VMM hit a bug (its message is in {})",
                exit_reasons::PANICKED,
                files::VMM_LOG
            ),
            code,
            pid,
        })
    }
}

/// The content of vm.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VmRecord {
    pub config: VmConfig,
    pub restored_from: Option<PathBuf>,
}
