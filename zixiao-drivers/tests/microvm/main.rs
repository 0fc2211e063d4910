//! Integration tests of the microvm driver against real monitors.
//!
//! The QEMU backend boots the Debian cloud kernel with a busybox initramfs
//! that `scripts/services/microvm.sh start` prepares and prints:
//!
//! ```text
//! scripts/services/microvm.sh install
//! eval "$(scripts/services/microvm.sh start)"
//! cargo test -p zixiao-drivers --features microvm --test microvm
//! ```
//!
//! The VMM backend runs `zixiao-vmm` (built by cargo next to the test
//! binaries, or `ZIXIAO_VMM_BIN`) on `/dev/kvm` with zixiao-vmm's own test
//! guest. Guests boot under TCG here (seconds each), so the boot tests are
//! few and each checks many things on one booted microVM. The network
//! tests also need `eval "$(scripts/services/net.sh start)"` and root: they
//! run in a network namespace of their own.

#![cfg(feature = "microvm")]

mod bad_input;
mod clones;
mod controller;
mod live;
mod network;
mod qemu;
mod recovery;
mod schedule;
mod vmm;

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zixiao_core::{Driver, ErrorKind, Instance, InstanceSpec, MicrovmBackend, RuntimeState};
use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
use zixiao_testing::wait::{runtime_endpoint, wait_until};

/// Tests name their snapshots with literals: `snap("s1")`.
pub(crate) use zixiao_testing::fake_driver::snapshot_name as snap;

/// How long a guest may take to boot to the marker under TCG on a busy machine.
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// What the test initramfs prints on the serial console once booted.
pub(crate) const MARKER: &str = "ZIXIAO-BOOT-OK";

/// What the QEMU-backend tests need.
pub(crate) struct Fixture {
    pub(crate) qemu: PathBuf,
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    /// The driver's state dir, under ZIXIAO_TEST_DIR/microvm (where
    /// `microvm.sh stop` looks for left-overs).
    pub(crate) dir: tempfile::TempDir,
}

/// The fixture, or `None` (skip) without QEMU and the test kernel.
pub(crate) fn fixture() -> Option<Fixture> {
    let qemu = runtime_endpoint("ZIXIAO_TEST_MICROVM_QEMU", "QEMU for microVMs")?;
    let kernel = runtime_endpoint("ZIXIAO_TEST_MICROVM_KERNEL", "the test microVM kernel")?;
    let initrd = runtime_endpoint("ZIXIAO_TEST_MICROVM_INITRD", "the test microVM initramfs")?;
    Some(Fixture {
        qemu: qemu.into(),
        kernel: kernel.into(),
        initrd: initrd.into(),
        dir: state_dir(),
    })
}

/// A fresh state directory under ZIXIAO_TEST_DIR/microvm, short enough for socket paths.
pub(crate) fn state_dir() -> tempfile::TempDir {
    let root = PathBuf::from(
        std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".to_owned()),
    )
    .join("microvm");
    std::fs::create_dir_all(&root).expect("test dir");
    tempfile::Builder::new()
        .prefix("s-")
        .tempdir_in(&root)
        .expect("tempdir")
}

/// A test that fails midway must not leave its microVMs running: every
/// monitor that recorded a pid under the state dir, and whose command line
/// names it, is killed when the fixture goes.
impl Drop for Fixture {
    fn drop(&mut self) {
        kill_left_overs(self.dir.path());
    }
}

/// Kills the monitors (QEMU, its wrapper, zixiao-vmm) recorded under
/// `dir`, and any process whose command line names `dir` (a create cut
/// off may leave a monitor that no pid file names).
pub(crate) fn kill_left_overs(dir: &std::path::Path) {
    for pid in processes_naming(dir, None) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "pid") {
                let Some(pid) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok())
                else {
                    continue;
                };
                let names_dir = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()));
                if names_dir {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}

impl Fixture {
    /// Driver options with this fixture's QEMU and state dir.
    pub(crate) fn options(&self) -> MicrovmOptions {
        MicrovmOptions {
            qemu_binary: Some(self.qemu.clone()),
            ..MicrovmOptions::new(self.dir.path())
        }
    }

    /// A driver with this fixture's QEMU.
    pub(crate) fn driver(&self) -> MicrovmDriver {
        MicrovmDriver::new(self.options()).expect("microvm driver")
    }

    /// A microVM on the QEMU backend booting the test kernel and initramfs.
    pub(crate) fn spec(&self, cmdline_extra: &str) -> InstanceSpec {
        let mut spec = InstanceSpec::microvm(&self.kernel).with_size(1, 256);
        spec.initrd = Some(self.initrd.clone());
        spec.cmdline = Some(format!("console=ttyS0 panic=-1 quiet {cmdline_extra}"));
        spec.backend = MicrovmBackend::Qemu;
        spec
    }
}

/// A unique instance name for this process.
pub(crate) fn unique(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// An instance as the controller would pass it, placed on `local`.
pub(crate) fn instance(name: &str, spec: InstanceSpec) -> Instance {
    zixiao_testing::fake_driver::placed_instance(name, spec)
}

/// The instance's console log so far.
pub(crate) async fn console(driver: &MicrovmDriver, instance: &Instance) -> String {
    match driver.read_log(instance, 0, 1 << 20).await {
        Ok(chunk) => String::from_utf8_lossy(&chunk.data).into_owned(),
        Err(_) => String::new(),
    }
}

/// Waits until the console log shows `text` `count` times.
pub(crate) async fn wait_for_log(
    driver: &MicrovmDriver,
    instance: &Instance,
    text: &str,
    count: usize,
) {
    wait_until(
        &format!("{} to print {text} {count} time(s)", instance.name),
        BOOT_TIMEOUT,
        || async { (console(driver, instance).await.matches(text).count() >= count).then_some(()) },
    )
    .await;
}

/// Waits until the driver reports `want`. An `Unavailable` answer (QEMU's
/// monitor silent on a loaded host) is asked again, as a controller does;
/// any other error fails the test.
pub(crate) async fn wait_for_state(
    driver: &MicrovmDriver,
    instance: &Instance,
    what: &str,
    want: impl Fn(&RuntimeState) -> bool,
) -> RuntimeState {
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    loop {
        let last = match driver.inspect(instance).await {
            Ok(state) if want(&state) => return state,
            Ok(state) => format!("{state:?}"),
            Err(e) if e.kind() == ErrorKind::Unavailable => format!("{e}"),
            Err(e) => panic!("inspect: {e:?}"),
        };
        if std::time::Instant::now() >= deadline {
            let dir = driver.instance_dir(instance);
            let file = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            let console = console(driver, instance).await;
            let tail: String = console
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "timed out after {BOOT_TIMEOUT:?} waiting for {what}; the driver said last: \
                 {last}\nqemu.stderr: {}\nqemu.events: {}\nconsole (last lines, newest \
                 first):\n{tail}\n{}",
                file("qemu.stderr"),
                file("qemu.events"),
                monitor_threads(driver, instance)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where the threads of the instance's QEMU, if one runs, wait in the
/// kernel: for a timed-out wait to say why the monitor was silent.
fn monitor_threads(driver: &MicrovmDriver, instance: &Instance) -> String {
    let Some(pid) = std::fs::read_to_string(driver.instance_dir(instance).join("qemu.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return "no QEMU pid file".to_owned();
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("QEMU {pid} is gone");
    };
    let mut out = format!("QEMU {pid}'s threads:");
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        out.push_str(&format!(
            "\n  {} {} wchan={}\n{}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan").trim(),
            read("stack").trim_end()
        ));
    }
    out
}

/// Types `command` into the console and waits for `expect` in what comes back.
pub(crate) async fn console_roundtrip(
    driver: &MicrovmDriver,
    instance: &Instance,
    command: &str,
    expect: &str,
) {
    use zixiao_core::driver::Console;
    let mut stream = Console::attach(driver, instance).await.expect("attach");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + BOOT_TIMEOUT;
    let mut last_sent = None;
    loop {
        // Retype the command now and then: the shell may not be reading yet.
        if last_sent.is_none_or(|t: tokio::time::Instant| t.elapsed() > Duration::from_secs(5)) {
            stream
                .input
                .write_all(format!("{command}\n").as_bytes())
                .await
                .expect("type into the console");
            last_sent = Some(tokio::time::Instant::now());
        }
        match tokio::time::timeout(Duration::from_millis(500), stream.output.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("the console closed; saw {}", String::from_utf8_lossy(&seen)),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("console read: {e}"),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&seen).contains(expect) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {expect} on the console; saw {}",
            String::from_utf8_lossy(&seen)
        );
    }
}

/// Checks that nothing of `instance` is left: no monitor process, no files.
pub(crate) fn assert_nothing_left(driver: &MicrovmDriver, instance: &Instance, pids: &[i32]) {
    let dir = driver.instance_dir(instance);
    assert!(!dir.exists(), "{} is left", dir.display());
    // A killed process finishes exiting on its own time (tearing down a
    // guest's memory takes a moment on a loaded machine): give it a few
    // seconds, no more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for pid in pids {
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| !stat.contains(") Z "))
                .unwrap_or(false)
        };
        while alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            !alive(),
            "process {pid} of {} is still running",
            instance.name
        );
    }
}

/// The live processes whose command line names `dir` (as given or
/// canonicalised), and whose program is named `program` when given
/// (`qemu-system-x86_64`, `zixiao-vmm`): what `ps` would show a user.
pub(crate) fn processes_naming(dir: &std::path::Path, program: Option<&str>) -> Vec<i32> {
    let spellings: Vec<String> = [Some(dir.to_owned()), dir.canonicalize().ok()]
        .into_iter()
        .flatten()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        let argv0 = cmdline.split('\0').next().unwrap_or("");
        let named = program.is_none_or(|p| std::path::Path::new(argv0).ends_with(p));
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|stat| stat.contains(") Z ") || stat.contains(") X "))
            .unwrap_or(true);
        if named && !zombie && spellings.iter().any(|d| cmdline.contains(d.as_str())) {
            found.push(pid);
        }
    }
    found
}

/// The live QEMU processes of `instance`'s directory.
pub(crate) fn qemu_processes(driver: &MicrovmDriver, instance: &Instance) -> Vec<i32> {
    processes_naming(&driver.instance_dir(instance), Some("qemu-system-x86_64"))
}

/// The pid QEMU recorded for `instance`.
pub(crate) fn qemu_pid(driver: &MicrovmDriver, instance: &Instance) -> i32 {
    std::fs::read_to_string(driver.instance_dir(instance).join("qemu.pid"))
        .expect("qemu.pid")
        .trim()
        .parse()
        .expect("a pid")
}
