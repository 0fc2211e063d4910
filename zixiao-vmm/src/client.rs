//! The client side (async, tokio): `launch()` spawns one detached VMM process
//! per microVM and waits until it is ready; `VmmClient` talks to it over its
//! API socket, and re-attaches to a running VMM after a controller restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::api::{
    files, Boot, ExitRecord, Ready, Request, Response, VmInfo, VmRecord, VmState, VmmStats,
};
use crate::{support, VmmError};

/// How long a VMM may take to load its guest and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Spawns `binary --run-dir RUN_DIR --boot JSON` in its own session and waits
/// until it is ready. Fresh: configured, call `start()`. Restore: paused,
/// call `resume()`. On error nothing is left running and the files it
/// created are gone.
pub async fn launch(binary: &Path, run_dir: &Path, boot: Boot) -> Result<VmmClient, VmmError> {
    match &boot {
        Boot::Fresh(config) => config.validate()?,
        Boot::Restore { snapshot_dir } => {
            if !snapshot_dir.join("state.json").is_file() {
                return Err(VmmError::NotFound {
                    message: format!("snapshot {} (no state.json)", snapshot_dir.display()),
                });
            }
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
    let api = run_dir.join(files::API_SOCK);
    if UnixStream::connect(&api).await.is_ok() {
        return Err(VmmError::AlreadyExists {
            message: format!("a VMM already runs in {}", run_dir.display()),
        });
    }
    let log_existed = run_dir.join(files::VMM_LOG).exists();
    let cleanup = |err: VmmError| {
        if dir_created {
            let _ = std::fs::remove_dir_all(run_dir);
        } else if !log_existed {
            let _ = std::fs::remove_file(run_dir.join(files::VMM_LOG));
        }
        err
    };
    let result = spawn(binary, run_dir, &boot).await;
    let pid = result.map_err(cleanup)?;
    Ok(VmmClient {
        run_dir: run_dir.to_path_buf(),
        pid,
    })
}

async fn spawn(binary: &Path, run_dir: &Path, boot: &Boot) -> Result<u32, VmmError> {
    let boot_json =
        serde_json::to_string(boot).map_err(|e| VmmError::internal("encoding boot", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join(files::VMM_LOG))
        .map_err(|e| VmmError::internal("creating vmm.log", e))?;
    let mut child = tokio::process::Command::new(binary)
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--boot")
        .arg(boot_json)
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
    let mut line = String::new();
    let read =
        tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    let ready: Option<Ready> = match read {
        Ok(Ok(n)) if n > 0 => serde_json::from_str(&line).ok(),
        _ => None,
    };
    match ready {
        Some(Ok(pid)) => {
            // Reap the VMM when it exits, as long as this process lives.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            Ok(pid)
        }
        Some(Err(err)) => {
            let _ = child.wait().await;
            Err(err)
        }
        None => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let log = std::fs::read_to_string(run_dir.join(files::VMM_LOG)).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            Err(VmmError::internal(
                "the VMM process did not become ready",
                if tail.is_empty() {
                    "no output".to_string()
                } else {
                    tail
                },
            ))
        }
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
    pub async fn snapshot(&self, dir: &Path) -> Result<(), VmmError> {
        let dir = std::path::absolute(dir)
            .map_err(|e| VmmError::invalid("dir", format!("{}: {e}", dir.display())))?;
        self.request(Request::Snapshot { dir }).await.map(drop)
    }

    /// Memory, RSS, vCPU time and exit counts.
    pub async fn stats(&self) -> Result<VmmStats, VmmError> {
        let v = self.request(Request::Stats).await?;
        serde_json::from_value(v).map_err(|e| VmmError::internal("decoding stats", e))
    }

    /// Connects to the live console: reads get serial output from now on,
    /// writes become serial input.
    pub async fn attach_console(&self) -> Result<UnixStream, VmmError> {
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
        Ok(())
    }

    /// After a kill: records how it ended (if the VMM could not) and removes its sockets.
    fn clear_after_kill(&self, killed: bool) {
        if killed && read_exit(&self.run_dir).is_none() {
            let _ = std::fs::write(
                self.run_dir.join(files::EXIT),
                format!(r#"{{"reason":"killed","code":-9,"pid":{}}}"#, self.pid),
            );
        }
        for f in [files::API_SOCK, files::CONSOLE_SOCK, files::PID] {
            let _ = std::fs::remove_file(self.run_dir.join(f));
        }
    }

    /// Whether our VMM process still runs (not a zombie, not a reused pid).
    fn alive(&self) -> bool {
        let stat = match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(s) => s,
            Err(_) => return false,
        };
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if matches!(state, Some("Z") | Some("X") | None) {
            return false;
        }
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
        let stream = UnixStream::connect(self.run_dir.join(files::API_SOCK))
            .await
            .map_err(|e| self.gone(e))?;
        let (read, mut write) = stream.into_split();
        let mut line =
            serde_json::to_string(&req).map_err(|e| VmmError::internal("encoding", e))?;
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| self.gone(e))?;
        let mut answer = String::new();
        BufReader::new(read)
            .read_line(&mut answer)
            .await
            .map_err(|e| self.gone(e))?;
        if answer.is_empty() {
            return Err(self.gone(std::io::Error::other("connection closed")));
        }
        let response: Response = serde_json::from_str(&answer)
            .map_err(|e| VmmError::internal("decoding the VMM's answer", e))?;
        response
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
