//! The QEMU backend: `qemu-system-x86_64 -M microvm`, with KVM where it is
//! hardware-backed and software emulation (TCG) otherwise.
//!
//! QEMU runs detached (its own process group, under a small `sh` wrapper
//! that records its exit status in `qemu.exit`), so it outlives the
//! controller; the driver finds it again through `qemu.pid` and the QMP
//! socket in the instance's directory. Create launches it with `-S`
//! (kernel and initrd loaded, vCPUs not started), so a file QEMU cannot
//! boot is refused at create; start sends `cont`. The serial console goes
//! to a socket chardev that appends everything to `console.log`. Each
//! network attachment is a virtio-net card on the TAP device the driver
//! made (`-netdev tap,ifname=…`), so QEMU starts in the TAPs' namespace.
//!
//! A guest that dies while booting must not pass for one that ran and
//! powered off: `-no-reboot` makes a reset (a triple fault, or a panic,
//! which `panic=-1` on the command line turns into a reset) end QEMU, and
//! QEMU traces each shutdown request with its cause into `qemu.events`
//! (`-D` with the `qemu_system_shutdown_request` trace event), which a
//! reset never makes. So an exit with status 0 and no shutdown request in
//! the trace is a guest reset: it counts as a failure ([`GUEST_RESET_EXIT`]).
//! A start watches the first moments of the boot ([`BOOT_WATCH`]) and
//! fails with the console's last lines when the guest resets then.

mod qmp;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use tokio::net::UnixStream;
use zixiao_core::driver::ConsoleStream;
use zixiao_core::{DriverError, InstanceStats, RuntimeState};
use zixiao_net::LinuxNetwork;

use self::qmp::{Qmp, QmpError};
use super::layout::InstanceDir;
use super::plan::BootPlan;
use super::process;
use crate::errors::io;

/// How long QEMU may take to load the kernel and open its QMP socket.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long QEMU may take to exit after `quit` before it is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the power button is pressed again during a graceful stop.
const POWERDOWN_REPEAT: Duration = Duration::from_secs(2);
/// How long a QEMU whose guest powered off may take to exit before it is
/// killed: it has stopped answering its monitor, and a loaded host may be
/// slow to reap it. QEMU 7.2 was seen never to finish such an exit (main
/// loop left, main thread asleep in `poll`), so the wait is bounded.
const SHUTDOWN_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the wrapper may take to record the exit status once QEMU ended.
const EXIT_RECORD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a start watches the guest boot for a reset before it answers:
/// a kernel that cannot even decompress itself (too little memory, a
/// damaged image) resets within a fraction of a second, under TCG too.
pub(crate) const BOOT_WATCH: Duration = Duration::from_secs(2);
/// The exit code recorded for a guest that reset (`-no-reboot` ends QEMU
/// instead): a failure, so a restart policy `on_failure` boots it again.
pub(crate) const GUEST_RESET_EXIT: i32 = 1;
/// The trace event QEMU logs for every shutdown request but a reset.
const SHUTDOWN_TRACE_EVENT: &str = "qemu_system_shutdown_request";
/// The same event when the guest itself powered off
/// (`SHUTDOWN_CAUSE_GUEST_SHUTDOWN`).
const GUEST_POWER_OFF_TRACE: &str = "qemu_system_shutdown_request reason=6";
/// How many lines of the console a boot failure quotes.
const CONSOLE_TAIL_LINES: usize = 12;

/// The wrapper: runs QEMU (the arguments after the directory), then records
/// its exit status atomically in `qemu.exit`.
const WRAPPER: &str = r#"dir=$1; shift
"$@"
code=$?
echo "$code" >"$dir/qemu.exit.tmp" && mv "$dir/qemu.exit.tmp" "$dir/qemu.exit""#;

/// How QEMU accelerates the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// The QEMU binary and how it runs guests on this node.
#[derive(Debug, Clone)]
pub(crate) struct QemuBackend {
    pub(crate) binary: PathBuf,
    pub(crate) accel: Accel,
}

/// The QEMU files of one instance.
struct Files<'a>(&'a InstanceDir);

impl Files<'_> {
    fn pid(&self) -> PathBuf {
        self.0.file("qemu.pid")
    }
    fn wrapper_pid(&self) -> PathBuf {
        self.0.file("wrapper.pid")
    }
    fn qmp(&self) -> PathBuf {
        self.0.file("qmp.sock")
    }
    fn console(&self) -> PathBuf {
        self.0.file("console.sock")
    }
    fn log(&self) -> PathBuf {
        self.0.file("console.log")
    }
    fn exit(&self) -> PathBuf {
        self.0.file("qemu.exit")
    }
    fn stderr(&self) -> PathBuf {
        self.0.file("qemu.stderr")
    }
    fn events(&self) -> PathBuf {
        self.0.file("qemu.events")
    }
    /// Written just before the driver kills a QEMU that never finished the
    /// exit its guest's power-off asked for: the exit status the wrapper
    /// then records is the kill's, not the guest's.
    fn killed_after_power_off(&self) -> PathBuf {
        self.0.file("qemu.killed-after-power-off")
    }
}

/// The console log of an instance of this backend.
pub(crate) fn console_log(dir: &InstanceDir) -> PathBuf {
    Files(dir).log()
}

fn qmp_failed(operation: &str, e: QmpError) -> DriverError {
    match e {
        // A monitor that does not answer says nothing about the guest: QEMU
        // may be busy on a loaded host. The caller may ask again.
        QmpError::Timeout(_) => DriverError::Unavailable {
            runtime: format!("QEMU's monitor (to {operation})"),
            source: Box::new(e),
        },
        e => DriverError::Runtime {
            operation: operation.to_owned(),
            source: Box::new(e),
        },
    }
}

impl QemuBackend {
    /// QEMU's command line for `plan`, with its files in `dir`.
    fn argv(&self, name: &str, dir: &InstanceDir, plan: &BootPlan) -> Vec<String> {
        let files = Files(dir);
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut argv = vec![
            "-name".to_owned(),
            format!("zixiao-{name}"),
            "-M".to_owned(),
            "microvm".to_owned(),
        ];
        match self.accel {
            Accel::Kvm => argv.extend(["-accel", "kvm", "-cpu", "host"].map(str::to_owned)),
            // Guest time from the instructions executed, not the host clock:
            // on a busy host a guest without HPET or PM timer (microvm has
            // neither) otherwise hangs calibrating its TSC and timers
            // against a PIT whose ticks arrive in bursts.
            Accel::Tcg => {
                argv.extend(["-accel", "tcg", "-icount", "shift=auto"].map(str::to_owned))
            }
        }
        argv.extend([
            "-smp".to_owned(),
            plan.cpus.to_string(),
            "-m".to_owned(),
            format!("{}M", plan.memory_mib),
            "-kernel".to_owned(),
            path(plan.kernel.clone()),
            "-append".to_owned(),
            qemu_cmdline(&plan.cmdline),
        ]);
        if let Some(initrd) = &plan.initrd {
            argv.extend(["-initrd".to_owned(), path(initrd.clone())]);
        }
        // One virtio-net card per attachment on its (persistent) TAP, which
        // QEMU opens by name; no scripts: the driver plumbed the TAP.
        for (i, nic) in plan.nics.iter().enumerate() {
            argv.extend([
                "-netdev".to_owned(),
                format!(
                    "tap,id=net{i},ifname={},script=no,downscript=no",
                    escape_opt(&nic.tap)
                ),
                "-device".to_owned(),
                format!(
                    "virtio-net-device,netdev=net{i},mac={}",
                    escape_opt(&nic.mac)
                ),
            ]);
        }
        // The spec's disks, raw, in order (the driver made each writable
        // one's copy); before the seed, so they are the first block devices.
        for (i, disk) in plan.disks.iter().enumerate() {
            let read_only = if disk.read_only { ",readonly=on" } else { "" };
            argv.extend([
                "-drive".to_owned(),
                format!(
                    "file={},if=none,id=disk{i},format=raw{read_only}",
                    escape_opt(&path(disk.path.clone()))
                ),
                "-device".to_owned(),
                format!("virtio-blk-device,drive=disk{i}"),
            ]);
        }
        // The cloud-init seed, read-only: the guest finds it by its label.
        if plan.seed.is_some() {
            argv.extend([
                "-drive".to_owned(),
                format!(
                    "file={},if=none,id=cidata,format=raw,readonly=on",
                    escape_opt(&path(crate::cloud_init::seed_file(&dir.path)))
                ),
                "-device".to_owned(),
                "virtio-blk-device,drive=cidata".to_owned(),
            ]);
        }
        argv.extend(
            [
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-S",
            ]
            .map(str::to_owned),
        );
        argv.extend([
            "-chardev".to_owned(),
            format!(
                "socket,id=console,path={},server=on,wait=off,logfile={},logappend=on",
                escape_opt(&path(files.console())),
                escape_opt(&path(files.log())),
            ),
            "-serial".to_owned(),
            "chardev:console".to_owned(),
            "-qmp".to_owned(),
            format!("unix:{},server=on,wait=off", escape_opt(&path(files.qmp()))),
            "-pidfile".to_owned(),
            path(files.pid()),
            // Why QEMU ends: a reset leaves no shutdown request here.
            "-D".to_owned(),
            path(files.events()),
            "-trace".to_owned(),
            format!("enable={SHUTDOWN_TRACE_EVENT}"),
        ]);
        argv
    }

    /// Starts QEMU for `plan` with vCPUs stopped and waits until its QMP
    /// socket answers. QEMU starts in `network`'s namespace, where the
    /// plan's TAP devices are. On failure QEMU is gone and its error is
    /// returned, classified (a kernel QEMU cannot load is `InvalidArgument`).
    pub(crate) async fn launch(
        &self,
        name: &str,
        dir: &InstanceDir,
        plan: &BootPlan,
        network: Option<&LinuxNetwork>,
    ) -> Result<(), DriverError> {
        let files = Files(dir);
        // Never two monitors for one microVM: anything still running here
        // was launched by a call cut off before it recorded it.
        process::kill_monitors(&dir.path, &[]).await;
        for stale in [
            files.exit(),
            files.pid(),
            files.qmp(),
            files.console(),
            files.stderr(),
            files.events(),
            files.killed_after_power_off(),
        ] {
            let _ = std::fs::remove_file(stale);
        }
        if let Some(seed) = &plan.seed {
            crate::cloud_init::write_seed_files(&dir.path, seed).await?;
        }
        let stderr = std::fs::File::create(files.stderr())
            .map_err(|e| io(format!("create {}", files.stderr().display()), e))?;
        let stdout = stderr
            .try_clone()
            .map_err(|e| io("duplicate QEMU's log file", e))?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg(process::WRAPPER_ARG0)
            .arg(&dir.path)
            .arg(&self.binary)
            .args(self.argv(name, dir, plan))
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // Its own process group: a Ctrl-C at the terminal that started the
        // controller does not reach the guest's monitor.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let spawned = match network {
            Some(network) => network.run_in_netns(|| command.spawn()),
            None => command.spawn(),
        };
        let mut child = spawned.map_err(|e| io(format!("start {}", self.binary.display()), e))?;
        std::fs::write(files.wrapper_pid(), child.id().to_string())
            .map_err(|e| io("write wrapper.pid", e))?;
        // Reap the wrapper when it ends while we live; after we exit, init does.
        std::thread::spawn(move || child.wait());

        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        loop {
            if files.exit().exists() {
                return Err(launch_error(
                    &std::fs::read_to_string(files.stderr()).unwrap_or_default(),
                ));
            }
            if let Ok(mut qmp) = Qmp::connect(&files.qmp()).await {
                if qmp.status().await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill(dir).await;
                return Err(DriverError::Runtime {
                    operation: "start QEMU".to_owned(),
                    source: format!(
                        "QEMU did not open its QMP socket within {} s",
                        LAUNCH_TIMEOUT.as_secs()
                    )
                    .into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the QEMU that a create cut off after the launch left in
    /// `dir` runs and answers on QMP, given up to the launch timeout to
    /// finish starting (and to write its pid file): then it is this
    /// microVM's monitor, and any other monitor of `dir` is killed. False
    /// when no monitor of `dir` runs, or none answers in time.
    pub(crate) async fn adopt(&self, dir: &InstanceDir) -> bool {
        let files = Files(dir);
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        let pid = loop {
            match self.running_pid(dir) {
                Some(pid) => {
                    if let Ok(mut qmp) = Qmp::connect(&files.qmp()).await {
                        if qmp.status().await.is_ok() {
                            break pid;
                        }
                    }
                }
                None if process::monitors_of(&dir.path).is_empty() => return false,
                // Still starting: QEMU writes its pid file early on.
                None => {}
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Its wrapper records the exit status; the cut may have come
        // before its pid was written.
        let wrapper =
            process::parent_pid(pid).filter(|p| process::monitors_of(&dir.path).contains(p));
        if let Some(wrapper) = wrapper {
            if process::read_pid(&files.wrapper_pid()) != Some(wrapper) {
                let _ = std::fs::write(files.wrapper_pid(), wrapper.to_string());
            }
        }
        let keep: Vec<i32> = [Some(pid), wrapper].into_iter().flatten().collect();
        process::kill_monitors(&dir.path, &keep).await;
        true
    }

    /// QEMU's pid when it runs.
    fn running_pid(&self, dir: &InstanceDir) -> Option<i32> {
        process::read_pid(&Files(dir).pid()).filter(|pid| process::is_ours(*pid, &dir.path))
    }

    async fn qmp(&self, dir: &InstanceDir) -> Result<Qmp, DriverError> {
        Qmp::connect(&Files(dir).qmp())
            .await
            .map_err(|e| qmp_failed("connect to QEMU's monitor", e))
    }

    /// The instance's state: from QMP while QEMU runs, else from its exit
    /// record. A QEMU that is exiting (the guest powered off) is waited for
    /// until it is gone, and killed if it never goes.
    pub(crate) async fn inspect(&self, dir: &InstanceDir) -> Result<RuntimeState, DriverError> {
        // A QEMU on its way out may hold its pid for a while (CI saw the
        // monitor's handshake time out three times in a row on a loaded
        // machine): it is asked until it is gone, as long as a quit may take.
        let deadline = Instant::now() + QUIT_TIMEOUT;
        while self.running_pid(dir).is_some() {
            // Once the guest asked to power off, QEMU is exiting and its
            // monitor is no longer asked: a QMP session opened during the
            // exit is one more thing for QEMU to wind down.
            if self.shutdown_requested(dir) {
                self.finish_exit(dir).await?;
                break;
            }
            let status = match self.qmp(dir).await {
                Ok(mut qmp) => qmp
                    .status()
                    .await
                    .map_err(|e| qmp_failed("query QEMU's status", e)),
                Err(e) => Err(e),
            };
            match status {
                Ok(status) => return Ok(state_of(&status)),
                // The request may have come while the monitor was asked.
                Err(_) if self.shutdown_requested(dir) => {}
                Err(e) if Instant::now() >= deadline && self.running_pid(dir).is_some() => {
                    return Err(e)
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(self.exit_state(dir).await)
    }

    /// Waits for a QEMU that traced a shutdown request to exit, however long
    /// a loaded host keeps its pid, and kills it when it has not exited
    /// after [`SHUTDOWN_EXIT_TIMEOUT`]: its guest is off, so nothing is lost,
    /// and a QEMU stuck in its exit would otherwise look alive for ever.
    /// Errors: `Unavailable` when even the kill does not end it.
    async fn finish_exit(&self, dir: &InstanceDir) -> Result<(), DriverError> {
        let Some(pid) = self.running_pid(dir) else {
            return Ok(());
        };
        if process::wait_gone(pid, &dir.path, SHUTDOWN_EXIT_TIMEOUT).await {
            return Ok(());
        }
        let files = Files(dir);
        let events = std::fs::read_to_string(files.events()).unwrap_or_default();
        if events.contains(GUEST_POWER_OFF_TRACE) {
            std::fs::write(files.killed_after_power_off(), b"")
                .map_err(|e| io("record the kill of a QEMU stuck exiting", e))?;
        }
        process::signal(pid, libc::SIGKILL);
        if process::wait_gone(pid, &dir.path, QUIT_TIMEOUT).await {
            Ok(())
        } else {
            Err(DriverError::Unavailable {
                runtime: format!("QEMU (pid {pid}), which is exiting"),
                source: "it did not exit after its shutdown request, nor when killed".into(),
            })
        }
    }

    /// Whether the guest asked QEMU to shut down (QEMU logs the request
    /// before it exits; a reset logs none).
    fn shutdown_requested(&self, dir: &InstanceDir) -> bool {
        std::fs::read_to_string(Files(dir).events())
            .is_ok_and(|events| events.contains(SHUTDOWN_TRACE_EVENT))
    }

    /// How QEMU ended. A QEMU that has just exited gets a moment for its
    /// wrapper to record the status; with none recorded (its wrapper was
    /// killed, or the host rebooted) it counts as failed with code 1.
    async fn exit_state(&self, dir: &InstanceDir) -> RuntimeState {
        let files = Files(dir);
        let wrapper = process::read_pid(&files.wrapper_pid());
        if let Some(pid) = wrapper {
            process::wait_gone(pid, &dir.path, EXIT_RECORD_TIMEOUT).await;
        }
        let exited = |code, at| RuntimeState::Exited {
            code,
            oom_killed: false,
            at,
        };
        match std::fs::read_to_string(files.exit()) {
            Ok(text) => {
                let at = std::fs::metadata(files.exit())
                    .and_then(|m| m.modified())
                    .ok()
                    .map(DateTime::<Utc>::from);
                let code = text.trim().parse().unwrap_or(1);
                let events = std::fs::read_to_string(files.events()).ok();
                let killed = files.killed_after_power_off().exists();
                exited(exit_code(code, events.as_deref(), killed), at)
            }
            Err(_) => exited(1, Some(DateTime::<Utc>::from(SystemTime::now()))),
        }
    }

    /// Starts the vCPUs of a QEMU launched with `-S`, launching it again
    /// first when it has exited. Idempotent.
    pub(crate) async fn start(
        &self,
        name: &str,
        dir: &InstanceDir,
        plan: Option<&BootPlan>,
        network: Option<&LinuxNetwork>,
    ) -> Result<(), DriverError> {
        match self.inspect(dir).await? {
            RuntimeState::Running | RuntimeState::Paused => return Ok(()),
            RuntimeState::Created => {}
            RuntimeState::Exited { .. } | RuntimeState::Missing => {
                let plan = plan.ok_or_else(|| {
                    DriverError::FailedPrecondition("the microVM has no boot plan".to_owned())
                })?;
                self.launch(name, dir, plan, network).await?;
            }
        }
        let console_from = std::fs::metadata(Files(dir).log()).map_or(0, |m| m.len());
        let mut qmp = self.qmp(dir).await?;
        qmp.execute("cont", None)
            .await
            .map_err(|e| qmp_failed("start the guest (QMP cont)", e))?;
        drop(qmp);
        // The first moments of the boot: a guest that resets now never ran.
        let started = Instant::now();
        while started.elapsed() < BOOT_WATCH {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.running_pid(dir).is_some() {
                continue;
            }
            // Ended: a guest that powered off ran; one that reset did not.
            if let RuntimeState::Exited { code, .. } = self.exit_state(dir).await {
                if code != 0 {
                    let console = console_tail(&Files(dir).log(), console_from);
                    return Err(boot_failed(name, started.elapsed(), &console));
                }
            }
            break;
        }
        Ok(())
    }

    /// Presses the power button (repeatedly) until QEMU exits or `grace`
    /// passes, then quits QEMU, then kills it. A guest that is paused or
    /// never started cannot react to the button, so it is quit at once.
    pub(crate) async fn stop(&self, dir: &InstanceDir, grace: Duration) -> Result<(), DriverError> {
        let Some(pid) = self.running_pid(dir) else {
            return Ok(());
        };
        if grace.is_zero() {
            // No grace (a fencing watchdog, an orphan's removal): SIGKILL at
            // once, not a QMP round trip and a quit that may take seconds
            // while the instance may be starting on another node.
            if process::is_ours(pid, &dir.path) {
                process::signal(pid, libc::SIGKILL);
                process::wait_gone(pid, &dir.path, QUIT_TIMEOUT).await;
            }
            self.exit_state(dir).await;
            return Ok(());
        }
        if let Ok(mut qmp) = self.qmp(dir).await {
            if qmp.status().await.ok().as_deref() == Some("running") {
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline {
                    let _ = qmp.execute("system_powerdown", None).await;
                    let left = deadline.saturating_duration_since(Instant::now());
                    if process::wait_gone(pid, &dir.path, left.min(POWERDOWN_REPEAT)).await {
                        break;
                    }
                }
            }
        }
        if process::is_ours(pid, &dir.path) {
            self.kill(dir).await;
        }
        // Leave the exit record in place for inspect.
        self.exit_state(dir).await;
        Ok(())
    }

    /// Quits QEMU over QMP, then kills it if it lingers.
    pub(crate) async fn kill(&self, dir: &InstanceDir) {
        let Some(pid) = self.running_pid(dir) else {
            return;
        };
        if let Ok(mut qmp) = self.qmp(dir).await {
            let _ = qmp.execute("quit", None).await;
        }
        if !process::wait_gone(pid, &dir.path, QUIT_TIMEOUT).await {
            process::signal(pid, libc::SIGKILL);
            process::wait_gone(pid, &dir.path, QUIT_TIMEOUT).await;
        }
    }

    /// Stops QEMU at once and waits for its wrapper, so the directory can go.
    pub(crate) async fn destroy(&self, dir: &InstanceDir) {
        self.kill(dir).await;
        if let Some(pid) = process::read_pid(&Files(dir).wrapper_pid()) {
            if !process::wait_gone(pid, &dir.path, EXIT_RECORD_TIMEOUT).await {
                process::signal(pid, libc::SIGKILL);
                process::wait_gone(pid, &dir.path, EXIT_RECORD_TIMEOUT).await;
            }
        }
    }

    /// Freezes the vCPUs (QMP `stop`). Idempotent.
    pub(crate) async fn pause(&self, dir: &InstanceDir) -> Result<(), DriverError> {
        match self.inspect(dir).await? {
            RuntimeState::Paused => Ok(()),
            RuntimeState::Running => {
                let mut qmp = self.qmp(dir).await?;
                qmp.execute("stop", None)
                    .await
                    .map(drop)
                    .map_err(|e| qmp_failed("pause the guest (QMP stop)", e))
            }
            other => Err(not_running("pause", &other)),
        }
    }

    /// Thaws the vCPUs (QMP `cont`). Idempotent.
    pub(crate) async fn resume(&self, dir: &InstanceDir) -> Result<(), DriverError> {
        match self.inspect(dir).await? {
            RuntimeState::Running => Ok(()),
            RuntimeState::Paused => {
                let mut qmp = self.qmp(dir).await?;
                qmp.execute("cont", None)
                    .await
                    .map(drop)
                    .map_err(|e| qmp_failed("resume the guest (QMP cont)", e))
            }
            other => Err(DriverError::FailedPrecondition(format!(
                "cannot resume the microVM: it is not paused ({})",
                describe(&other)
            ))),
        }
    }

    /// CPU time and resident memory of the QEMU process, and its vCPU count.
    pub(crate) async fn stats(
        &self,
        dir: &InstanceDir,
        memory_mib: u64,
    ) -> Result<InstanceStats, DriverError> {
        let Some(pid) = self.running_pid(dir) else {
            return Err(DriverError::FailedPrecondition(
                "the microVM is not running".to_owned(),
            ));
        };
        let vcpus = self
            .qmp(dir)
            .await?
            .vcpu_threads()
            .await
            .map_err(|e| qmp_failed("query the vCPUs", e))?;
        Ok(InstanceStats {
            cpu_time_ns: process::cpu_time_ns(&format!("/proc/{pid}")).unwrap_or(0),
            memory_bytes: process::rss_bytes(pid).unwrap_or(0),
            memory_limit_bytes: Some(memory_mib << 20),
            pids: Some(vcpus.len() as u64),
            ..InstanceStats::default()
        })
    }

    /// Connects to the serial console's socket. QEMU serves one client at
    /// a time: a second attach waits until the first detaches.
    pub(crate) async fn attach(&self, dir: &InstanceDir) -> Result<ConsoleStream, DriverError> {
        if self.running_pid(dir).is_none() {
            return Err(DriverError::FailedPrecondition(
                "the microVM is not running".to_owned(),
            ));
        }
        let socket = Files(dir).console();
        let stream = UnixStream::connect(&socket)
            .await
            .map_err(|e| io(format!("connect to {}", socket.display()), e))?;
        let (output, input) = stream.into_split();
        Ok(ConsoleStream {
            output: Box::new(output),
            input: Box::new(input),
        })
    }
}

/// Maps QEMU's run state: `prelaunch` (launched with `-S`, never started)
/// is `Created`; the paused states are `Paused`; a guest that shut down or
/// panicked (QEMU exits right after) has exited.
fn state_of(status: &str) -> RuntimeState {
    match status {
        "prelaunch" => RuntimeState::Created,
        "paused" | "suspended" | "save-vm" | "restore-vm" | "io-error" | "watchdog" => {
            RuntimeState::Paused
        }
        "shutdown" => RuntimeState::Exited {
            code: 0,
            oom_killed: false,
            at: None,
        },
        "guest-panicked" | "internal-error" => RuntimeState::Exited {
            code: 1,
            oom_killed: false,
            at: None,
        },
        _ => RuntimeState::Running,
    }
}

fn describe(state: &RuntimeState) -> String {
    match state {
        RuntimeState::Missing => "it does not exist".to_owned(),
        RuntimeState::Created => "it was never started".to_owned(),
        RuntimeState::Running => "it runs".to_owned(),
        RuntimeState::Paused => "it is paused".to_owned(),
        RuntimeState::Exited { code, .. } => format!("it exited with code {code}"),
    }
}

fn not_running(what: &str, state: &RuntimeState) -> DriverError {
    DriverError::FailedPrecondition(format!(
        "cannot {what} the microVM: it is not running ({})",
        describe(state)
    ))
}

/// The kernel command line QEMU boots: `cmdline`, with `panic=-1` unless
/// it sets `panic=` itself, so a kernel that panics resets at once (and
/// `-no-reboot` ends QEMU) instead of hanging while it looks alive.
pub(crate) fn qemu_cmdline(cmdline: &str) -> String {
    if cmdline.split_whitespace().any(|a| a.starts_with("panic=")) {
        cmdline.to_owned()
    } else if cmdline.trim().is_empty() {
        PANIC_RESETS.to_owned()
    } else {
        format!("{cmdline} {PANIC_RESETS}")
    }
}

/// What [`qemu_cmdline`] adds.
pub(crate) const PANIC_RESETS: &str = "panic=-1";

/// The exit code of a QEMU whose wrapper recorded `code`, given its trace
/// of shutdown requests (`None`: no trace, as of a QEMU launched without
/// one or built without the log trace backend) and whether the driver
/// killed it after its guest powered off. An exit 0 without any shutdown
/// request was a guest reset; a kill that finished a guest's power-off is
/// the guest's clean exit.
fn exit_code(code: i32, events: Option<&str>, killed_after_power_off: bool) -> i32 {
    match events {
        Some(events) if killed_after_power_off && events.contains(GUEST_POWER_OFF_TRACE) => 0,
        Some(events) if code == 0 && !events.contains(SHUTDOWN_TRACE_EVENT) => GUEST_RESET_EXIT,
        _ => code,
    }
}

/// The last lines of the console log after `from`, printable, one string.
fn console_tail(log: &Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX: u64 = 16 * 1024;
    let Ok(mut file) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = from.max(len.saturating_sub(MAX)).min(len);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(CONSOLE_TAIL_LINES)..];
    tail.join("\n")
}

/// The error of a guest that reset `after` its start, quoting its console.
fn boot_failed(name: &str, after: Duration, console: &str) -> DriverError {
    let why = if console.contains("Kernel panic") {
        "its kernel panicked"
    } else {
        "it reset: its kernel faulted, or cannot boot in its memory"
    };
    let console = if console.is_empty() {
        "its console is empty".to_owned()
    } else {
        format!("its console's last lines:\n{console}")
    };
    DriverError::FailedPrecondition(format!(
        "the guest of microVM `{name}` died while booting, {:.1} s after it started ({why}); \
         {console}",
        after.as_secs_f64()
    ))
}

/// Escapes a value inside QEMU's `key=value,...` option syntax (a comma is doubled).
fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// Classifies QEMU's complaint when it would not start.
fn launch_error(stderr: &str) -> DriverError {
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let message = message
        .strip_prefix("qemu-system-x86_64: ")
        .unwrap_or(&message)
        .to_owned();
    let lower = message.to_lowercase();
    if lower.contains("initrd") || lower.contains("ram disk") {
        crate::errors::invalid("spec.initrd", format!("QEMU cannot load it: {message}"))
    } else if lower.contains("kernel") || lower.contains("pvh") {
        crate::errors::invalid("spec.kernel", format!("QEMU cannot boot it: {message}"))
    } else if lower.contains("memory") {
        DriverError::ResourceExhausted(format!("QEMU cannot allocate the guest: {message}"))
    } else {
        DriverError::Runtime {
            operation: "start QEMU".to_owned(),
            source: message.into(),
        }
    }
}

/// Whether `binary` looks like a usable QEMU (for discovery): it exists and is executable.
pub(crate) fn is_executable(binary: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(binary).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::ErrorKind;

    #[test]
    fn qemu_complaints_name_the_field() {
        let e = launch_error(
            "qemu-system-x86_64: Error loading uncompressed kernel without PVH ELF Note\n",
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("spec.kernel"), "{e}");
        let e = launch_error("qemu-system-x86_64: could not load initrd 'x'\n");
        assert!(e.to_string().contains("spec.initrd"), "{e}");
        assert_eq!(launch_error("boom").kind(), ErrorKind::Internal);
        assert_eq!(state_of("prelaunch"), RuntimeState::Created);
        assert_eq!(state_of("paused"), RuntimeState::Paused);
        assert_eq!(state_of("running"), RuntimeState::Running);
        assert_eq!(escape_opt("/a,b"), "/a,,b");
    }

    #[test]
    fn a_guest_reset_is_a_failure_and_a_power_off_is_not() {
        let powered_off = "qemu_system_shutdown_request reason=6\n";
        let quit = "qemu_system_shutdown_request reason=2\n";
        assert_eq!(exit_code(0, Some(powered_off), false), 0);
        assert_eq!(exit_code(0, Some(quit), false), 0);
        // No shutdown request: -no-reboot ended QEMU on a reset.
        assert_eq!(exit_code(0, Some(""), false), GUEST_RESET_EXIT);
        // Without a trace nothing is known beyond QEMU's status.
        assert_eq!(exit_code(0, None, false), 0);
        assert_eq!(exit_code(137, Some(""), false), 137);
        // Killed by the driver once the guest had powered off: the guest's
        // exit was clean. Killed after a quit, or without a power-off
        // traced, the kill is what is recorded.
        assert_eq!(exit_code(137, Some(powered_off), true), 0);
        assert_eq!(exit_code(137, Some(quit), true), 137);
        assert_eq!(exit_code(137, None, true), 137);
        assert_eq!(qemu_cmdline("console=ttyS0"), "console=ttyS0 panic=-1");
        assert_eq!(
            qemu_cmdline("console=ttyS0 panic=5"),
            "console=ttyS0 panic=5"
        );
        assert_eq!(qemu_cmdline(""), "panic=-1");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("console.log");
        std::fs::write(&log, "old boot\n\x1b[6nKernel panic - not syncing: x\r\n\n").expect("log");
        assert_eq!(console_tail(&log, 9), "[6nKernel panic - not syncing: x");
        let e = boot_failed(
            "m",
            Duration::from_millis(300),
            "Kernel panic - not syncing: x",
        );
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        assert!(e.to_string().contains("its kernel panicked"), "{e}");
        assert!(e.to_string().contains("last lines:\nKernel panic"), "{e}");
    }

    #[test]
    fn each_nic_and_disk_is_a_virtio_device_in_spec_order() {
        let backend = QemuBackend {
            binary: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            accel: Accel::Tcg,
        };
        let dir = InstanceDir {
            path: PathBuf::from("/state/microvm/x"),
        };
        let nic = |tap: &str, mac: &str| super::super::plan::Nic {
            tap: tap.to_owned(),
            mac: mac.to_owned(),
        };
        let plan = BootPlan {
            kernel: PathBuf::from("/k"),
            initrd: None,
            cmdline: "console=ttyS0 ip=10.0.0.5::10.0.0.1:255.255.255.0::eth0:off".to_owned(),
            cpus: 1,
            memory_mib: 64,
            max_memory_mib: 64,
            nics: vec![
                nic("zxt0000000001", "02:00:00:00:00:01"),
                nic("zxt0000000002", "02:00:00:00:00:02"),
            ],
            seed: Some(crate::cloud_init::SeedFiles(vec![(
                "user-data",
                "#cloud-config\n".to_owned(),
            )])),
            disks: vec![
                super::super::plan::PlannedDisk {
                    path: PathBuf::from("/state/microvm/x/disks/disk0.img"),
                    copy_of: Some(PathBuf::from("/state/images/disk/ab")),
                    read_only: false,
                },
                super::super::plan::PlannedDisk {
                    path: PathBuf::from("/state/images/disk/cd"),
                    copy_of: None,
                    read_only: true,
                },
            ],
            vsock: None,
        };
        let argv = backend.argv("vm", &dir, &plan).join(" ");
        // The instance's copy, writable; the image itself, read-only; then the seed.
        assert!(
            argv.contains(
                "-drive file=/state/microvm/x/disks/disk0.img,if=none,id=disk0,format=raw \
                 -device virtio-blk-device,drive=disk0 \
                 -drive file=/state/images/disk/cd,if=none,id=disk1,format=raw,readonly=on \
                 -device virtio-blk-device,drive=disk1 \
                 -drive file=/state/microvm/x/cidata.iso,if=none,id=cidata,format=raw,readonly=on \
                 -device virtio-blk-device,drive=cidata"
            ),
            "{argv}"
        );
        assert!(
            argv.contains(
                "-netdev tap,id=net0,ifname=zxt0000000001,script=no,downscript=no \
                 -device virtio-net-device,netdev=net0,mac=02:00:00:00:00:01 \
                 -netdev tap,id=net1,ifname=zxt0000000002,script=no,downscript=no \
                 -device virtio-net-device,netdev=net1,mac=02:00:00:00:00:02"
            ),
            "{argv}"
        );
        assert!(
            argv.contains("-append console=ttyS0 ip=10.0.0.5::"),
            "{argv}"
        );
    }
}
