//! The VMM backend: one `zixiao-vmm` process per microVM (Zixiao's own KVM
//! monitor), driven through `zixiao_vmm`'s client over the API socket in
//! the instance's run directory `vmm/`. The VMM process outlives the
//! controller; [`VmmClient::connect`] finds it again after a restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zixiao_core::driver::ConsoleStream;
use zixiao_core::model::RuntimeSize;
use zixiao_core::{Cpus, DriverError, InstanceStats, RuntimeState};
use zixiao_net::LinuxNetwork;
use zixiao_vmm::{
    exit_reasons, BalloonConfig, Boot, Confinement, DiskConfig, MacAddr, NetConfig, TapName,
    VmConfig, VmState, VmmClient, VmmError, VsockConfig,
};

use super::layout::InstanceDir;
use super::plan::{BootPlan, Nic};
use super::process;
use super::qemu::GUEST_RESET_EXIT;

/// How long a VMM left by a cut-off create may take to load its guest
/// before it is killed and launched again.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Marks a run directory whose guest has been started (or resumed after a
/// restore) at least once: a restored VMM waits paused until then.
const STARTED: &str = "zixiao-started";

/// The balloon's unit: the guest reports what it holds in 4 KiB pages
/// (virtio's, whatever the guest's own page size).
const BALLOON_PAGE_BYTES: u64 = 4096;

/// A VMM error as a driver error of the same kind, naming what was attempted.
pub(crate) fn vmm_failed(operation: &str, e: VmmError) -> DriverError {
    match e {
        VmmError::InvalidArgument { field, reason } => DriverError::InvalidArgument {
            field: spec_field(&field),
            reason,
        },
        VmmError::NotFound { message } => DriverError::NotFound(message),
        VmmError::AlreadyExists { message } => DriverError::AlreadyExists(message),
        VmmError::FailedPrecondition { message } => DriverError::FailedPrecondition(message),
        VmmError::Unsupported { message } => DriverError::Unsupported(message),
        VmmError::ResourceExhausted { message } => DriverError::ResourceExhausted(message),
        VmmError::Unavailable { .. } => DriverError::Unavailable {
            runtime: "zixiao-vmm".to_owned(),
            source: Box::new(e),
        },
        other => DriverError::Runtime {
            operation: operation.to_owned(),
            source: Box::new(other),
        },
    }
}

/// The VMM's network card for attachment `index`: its TAP and MAC,
/// checked again at this boundary (both come from the attachment record).
fn net_config(index: usize, nic: &Nic) -> Result<NetConfig, DriverError> {
    let field = format!("attachments[{index}]");
    Ok(NetConfig {
        tap: TapName::try_from(nic.tap.as_str())
            .map_err(|reason| crate::errors::invalid(&format!("{field}.host_interface"), reason))?,
        mac: MacAddr::try_from(nic.mac.as_str())
            .map_err(|reason| crate::errors::invalid(&format!("{field}.mac"), reason))?,
    })
}

/// The spec field a VMM config field comes from.
fn spec_field(field: &str) -> String {
    match field {
        "vcpus" => "spec.cpus".to_owned(),
        "kernel" | "initrd" | "cmdline" | "memory_mib" => format!("spec.{field}"),
        other => other.to_owned(),
    }
}

/// The VMM binary and the directories it runs in.
#[derive(Debug, Clone)]
pub(crate) struct VmmBackend {
    pub(crate) binary: PathBuf,
}

/// What the VMM boots: a fresh kernel, or a snapshot; or nothing yet,
/// waiting for a live migration of the plan's microVM (see `live`).
pub(crate) enum VmmBoot<'a> {
    Fresh(&'a BootPlan),
    Restore(&'a Path),
    Incoming(&'a BootPlan),
}

impl VmmBackend {
    /// Launches the VMM for `boot`, configured (or restored) and not running.
    /// With `network`, the VMM starts in its namespace, where the plan's
    /// TAPs are (plugged by the caller), and attaches one virtio-net card
    /// per attachment to them.
    pub(crate) async fn launch(
        &self,
        dir: &InstanceDir,
        boot: VmmBoot<'_>,
        network: Option<&LinuxNetwork>,
    ) -> Result<(), DriverError> {
        let run_dir = dir.vmm_run_dir();
        let incoming = matches!(boot, VmmBoot::Incoming(_));
        let boot = match boot {
            VmmBoot::Fresh(plan) | VmmBoot::Incoming(plan) => Boot::Fresh(VmConfig {
                kernel: plan.kernel.clone(),
                initrd: plan.initrd.clone(),
                cmdline: plan.cmdline.clone(),
                vcpus: u8::try_from(plan.cpus)
                    .map_err(|_| crate::errors::invalid("spec.cpus", "too many vCPUs"))?,
                memory_mib: plan.max_memory_mib,
                disks: plan
                    .disks
                    .iter()
                    .map(|disk| DiskConfig {
                        path: disk.path.clone(),
                        read_only: disk.read_only,
                    })
                    .collect(),
                nets: plan
                    .nics
                    .iter()
                    .enumerate()
                    .map(|(i, nic)| net_config(i, nic))
                    .collect::<Result<_, _>>()?,
                vsock: plan.vsock.map(VsockConfig::new),
                // Every VMM microVM can give memory back (see `resize`);
                // under memory pressure its guest may take some back. One
                // with a `max_memory_mib` boots with that and holds back
                // what is above its memory from the start.
                balloon: Some(BalloonConfig {
                    amount_mib: plan.max_memory_mib.saturating_sub(plan.memory_mib),
                    deflate_on_oom: true,
                }),
            }),
            VmmBoot::Restore(snapshot_dir) => Boot::Restore {
                snapshot_dir: snapshot_dir.to_owned(),
            },
        };
        let boot = match boot {
            Boot::Fresh(config) if incoming => Boot::Incoming(config),
            other => other,
        };
        // Never two monitors for one microVM: a VMM still running here was
        // launched by a call cut off before it recorded it.
        process::kill_monitors(&dir.path, &[]).await;
        let _ = std::fs::remove_file(run_dir.join(STARTED));
        let launched = match network {
            Some(network) => {
                // The namespace as a file the VMM's process can join.
                let netns = network
                    .run_in_netns(|| std::fs::File::open("/proc/thread-self/ns/net"))
                    .map_err(|e| crate::errors::io("open the network's namespace", e))?;
                zixiao_vmm::launch_in_netns(
                    &self.binary,
                    &run_dir,
                    boot,
                    &Confinement::default(),
                    &netns,
                )
                .await
            }
            None => zixiao_vmm::launch(&self.binary, &run_dir, boot).await,
        };
        launched
            .map(drop)
            .map_err(|e| vmm_failed("start zixiao-vmm", e))
    }

    /// Whether the VMM that a create cut off after the launch left in
    /// `dir` runs and has its guest loaded, not yet started (configured, or
    /// paused after a restore), given up to [`ADOPT_TIMEOUT`] to get there:
    /// then it is this microVM's monitor, and any other monitor of `dir` is
    /// killed.
    pub(crate) async fn adopt(&self, dir: &InstanceDir) -> bool {
        let deadline = Instant::now() + ADOPT_TIMEOUT;
        loop {
            if process::monitors_of(&dir.path).is_empty() {
                return false;
            }
            if let Ok(Some(client)) = self.client(dir).await {
                if let Ok(info) = client.info().await {
                    if !matches!(info.state, VmState::Configured | VmState::Paused) {
                        return false;
                    }
                    let pid = i32::try_from(client.pid()).unwrap_or(0);
                    process::kill_monitors(&dir.path, &[pid]).await;
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The client of the instance's VMM; `None` when none ever ran.
    async fn client(&self, dir: &InstanceDir) -> Result<Option<VmmClient>, DriverError> {
        match VmmClient::connect(&dir.vmm_run_dir()).await {
            Ok(client) => Ok(Some(client)),
            Err(VmmError::NotFound { .. }) => Ok(None),
            Err(e) => Err(vmm_failed("connect to zixiao-vmm", e)),
        }
    }

    async fn live_client(&self, dir: &InstanceDir) -> Result<VmmClient, DriverError> {
        self.client(dir).await?.ok_or_else(|| {
            DriverError::FailedPrecondition("the microVM's monitor is not running".to_owned())
        })
    }

    fn started(dir: &InstanceDir) -> bool {
        dir.vmm_run_dir().join(STARTED).exists()
    }

    /// The instance's state as its VMM reports it.
    pub(crate) async fn inspect(&self, dir: &InstanceDir) -> Result<RuntimeState, DriverError> {
        let Some(client) = self.client(dir).await? else {
            return Ok(RuntimeState::Exited {
                code: 1,
                oom_killed: false,
                at: None,
            });
        };
        let info = client
            .info()
            .await
            .map_err(|e| vmm_failed("query zixiao-vmm", e))?;
        Ok(match info.state {
            VmState::Configured => RuntimeState::Created,
            // A restored guest waits paused for its first start.
            VmState::Paused if !Self::started(dir) => RuntimeState::Created,
            VmState::Paused => RuntimeState::Paused,
            VmState::Running => RuntimeState::Running,
            VmState::Exited { code, reason } => RuntimeState::Exited {
                code: exit_code(&reason, code),
                oom_killed: false,
                at: None,
            },
        })
    }

    /// Starts the guest of a configured or restored VMM, launching a new
    /// VMM first when the last one has exited. Idempotent.
    pub(crate) async fn start(
        &self,
        dir: &InstanceDir,
        boot: Option<VmmBoot<'_>>,
        network: Option<&LinuxNetwork>,
    ) -> Result<(), DriverError> {
        let state = self.inspect(dir).await?;
        match state {
            RuntimeState::Running | RuntimeState::Paused => return Ok(()),
            RuntimeState::Created => {}
            RuntimeState::Exited { .. } | RuntimeState::Missing => {
                let boot = boot.ok_or_else(|| {
                    DriverError::FailedPrecondition("the microVM has no boot plan".to_owned())
                })?;
                self.launch(dir, boot, network).await?;
            }
        }
        let client = self.live_client(dir).await?;
        let info = client
            .info()
            .await
            .map_err(|e| vmm_failed("query zixiao-vmm", e))?;
        match info.state {
            VmState::Configured => client.start().await,
            _ => client.resume().await,
        }
        .map_err(|e| vmm_failed("start the guest", e))?;
        self.mark_started(dir)
    }

    /// Records that the guest of a freshly restored VMM has run before, so
    /// it counts as paused rather than waiting for its first start.
    pub(crate) fn mark_started(&self, dir: &InstanceDir) -> Result<(), DriverError> {
        std::fs::write(dir.vmm_run_dir().join(STARTED), b"")
            .map_err(|e| crate::errors::io("record the start", e))
    }

    /// Shuts the VMM down (forced after `grace`). Idempotent.
    pub(crate) async fn stop(&self, dir: &InstanceDir, grace: Duration) -> Result<(), DriverError> {
        match self.client(dir).await? {
            Some(client) => client
                .shutdown(grace)
                .await
                .map_err(|e| vmm_failed("stop zixiao-vmm", e)),
            None => Ok(()),
        }
    }

    /// Makes the running guest's memory `memory_mib`: its balloon takes
    /// back what the VMM booted with above that (none: all given back).
    /// Nothing to do without a running VMM: its next boot takes the size.
    /// Errors: `InvalidArgument` on `spec.memory_mib` above what it booted
    /// with; `FailedPrecondition` for a VMM without a balloon (restored
    /// from a snapshot taken before microVMs had one).
    pub(crate) async fn set_memory(
        &self,
        dir: &InstanceDir,
        memory_mib: u64,
    ) -> Result<(), DriverError> {
        let Some(client) = self.client(dir).await? else {
            return Ok(());
        };
        let info = client
            .info()
            .await
            .map_err(|e| vmm_failed("query zixiao-vmm", e))?;
        if matches!(info.state, VmState::Exited { .. }) {
            return Ok(());
        }
        let booted = info.config.memory_mib;
        let give_back = booted.checked_sub(memory_mib).ok_or_else(|| {
            crate::errors::invalid(
                "spec.memory_mib",
                format!(
                    "{memory_mib} MiB is above the {booted} MiB the microVM booted with; \
                     more needs a restart"
                ),
            )
        })?;
        client
            .set_balloon(give_back)
            .await
            .map_err(|e| vmm_failed("set the balloon", e))
    }

    /// What the guest runs with now: the vCPUs it booted with, and the
    /// memory it booted with less what its balloon holds (as the guest
    /// reports it, so a target it has not reached yet does not count).
    /// `None` when no VMM runs the guest (never started, stopped, exited).
    /// Errors: the VMM's, as for [`Self::inspect`].
    pub(crate) async fn running_size(
        &self,
        dir: &InstanceDir,
    ) -> Result<Option<RuntimeSize>, DriverError> {
        let Some(client) = self.client(dir).await? else {
            return Ok(None);
        };
        let info = client
            .info()
            .await
            .map_err(|e| vmm_failed("query zixiao-vmm", e))?;
        let runs = match info.state {
            VmState::Running => true,
            VmState::Paused => Self::started(dir),
            VmState::Configured | VmState::Exited { .. } => false,
        };
        if !runs {
            return Ok(None);
        }
        let stats = client
            .stats()
            .await
            .map_err(|e| vmm_failed("read the microVM's stats", e))?;
        // A VMM restored from a snapshot taken before microVMs had a
        // balloon has none: it runs with all it booted with.
        let ballooned = stats
            .balloon
            .map_or(0, |b| u64::from(b.actual_pages) * BALLOON_PAGE_BYTES);
        let booted = info.config.memory_mib.saturating_mul(1 << 20);
        Ok(Some(RuntimeSize {
            cpus: Cpus::cores(u32::from(info.config.vcpus)),
            memory_mib: booted.saturating_sub(ballooned) >> 20,
        }))
    }

    pub(crate) async fn pause(&self, dir: &InstanceDir) -> Result<(), DriverError> {
        self.live_client(dir)
            .await?
            .pause()
            .await
            .map_err(|e| vmm_failed("pause the guest", e))
    }

    pub(crate) async fn resume(&self, dir: &InstanceDir) -> Result<(), DriverError> {
        self.live_client(dir)
            .await?
            .resume()
            .await
            .map_err(|e| vmm_failed("resume the guest", e))
    }

    /// Guest memory and device state into `to`. The VMM pauses the guest
    /// meanwhile; it runs again afterwards when `running` (what the store
    /// has: a snapshot cut off between the VMM's pause and the resume
    /// leaves the guest paused, and the next snapshot must not keep it so).
    pub(crate) async fn snapshot(
        &self,
        dir: &InstanceDir,
        to: &Path,
        running: bool,
    ) -> Result<(), DriverError> {
        let client = self.live_client(dir).await?;
        client
            .snapshot(to)
            .await
            .map_err(|e| vmm_failed("snapshot the guest", e))?;
        if running {
            client
                .resume()
                .await
                .map_err(|e| vmm_failed("resume the guest after the snapshot", e))?;
        }
        Ok(())
    }

    pub(crate) async fn stats(&self, dir: &InstanceDir) -> Result<InstanceStats, DriverError> {
        let stats = self
            .live_client(dir)
            .await?
            .stats()
            .await
            .map_err(|e| vmm_failed("read the microVM's stats", e))?;
        Ok(InstanceStats {
            cpu_time_ns: stats.vcpu_time_ns.iter().sum(),
            memory_bytes: stats.vmm_rss_bytes,
            memory_limit_bytes: Some(stats.guest_memory_bytes),
            pids: Some(stats.vcpu_time_ns.len() as u64),
            ..InstanceStats::default()
        })
    }

    pub(crate) async fn attach(&self, dir: &InstanceDir) -> Result<ConsoleStream, DriverError> {
        let stream = self
            .live_client(dir)
            .await?
            .attach_console()
            .await
            .map_err(|e| vmm_failed("attach to the console", e))?;
        let (output, input) = stream.into_split();
        Ok(ConsoleStream {
            output: Box::new(output),
            input: Box::new(input),
        })
    }
}

/// Where the host socket of the vsock device of an instance of this
/// backend is: `vsock.sock` in its run directory, for a fresh boot and a
/// restore alike (the driver names no other socket, so a snapshot's
/// device binds it again in the restoring VMM's own run directory).
pub(crate) fn vsock_socket(dir: &InstanceDir) -> PathBuf {
    dir.vmm_run_dir().join(VsockConfig::DEFAULT_SOCKET)
}

/// The console log of an instance of this backend.
pub(crate) fn console_log(dir: &InstanceDir) -> PathBuf {
    dir.vmm_run_dir().join("console.log")
}

/// Finds the `zixiao-vmm` binary: `configured`, else `ZIXIAO_VMM_BIN`, else
/// next to the running executable (and one directory up, for cargo's
/// `target/*/deps` test binaries), else `$PATH`.
pub(crate) fn find_binary(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return if super::qemu::is_executable(path) {
            Ok(path.to_owned())
        } else {
            Err(format!(
                "the configured zixiao-vmm binary {} is not an executable file",
                path.display()
            ))
        };
    }
    if let Some(path) = std::env::var_os(super::VMM_BIN_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if super::qemu::is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{}={} is not an executable file",
                super::VMM_BIN_ENV,
                path.display()
            ))
        };
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("zixiao-vmm"));
            if let Some(up) = dir.parent() {
                candidates.push(up.join("zixiao-vmm"));
            }
        }
    }
    candidates.extend(super::search_path("zixiao-vmm"));
    candidates
        .into_iter()
        .find(|c| super::qemu::is_executable(c))
        .ok_or_else(|| {
            format!(
                "the zixiao-vmm binary is not found (next to this program, or on PATH); \
                 build it with `cargo build -p zixiao-vmm` or set {}",
                super::VMM_BIN_ENV
            )
        })
}

/// The exit code an ended VMM's guest is recorded with. A guest power-off
/// (`poweroff`) keeps the VMM's 0: the instance stopped normally. A guest
/// reboot ends the VMM too (it boots a guest once), and Linux's reboot and
/// its `panic=-1` reset take the same path, so it counts as the QEMU
/// backend counts a guest reset: a failure ([`GUEST_RESET_EXIT`]), which a
/// restart policy brings back.
fn exit_code(reason: &str, code: i32) -> i32 {
    if reason == exit_reasons::REBOOT {
        GUEST_RESET_EXIT
    } else {
        code
    }
}
