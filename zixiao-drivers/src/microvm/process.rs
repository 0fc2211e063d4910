//! The monitor processes of microVMs, seen through `/proc`: whether a
//! recorded pid is still the process the driver started (pids are reused),
//! every monitor running for a microVM directory whether a pid file names
//! it or not, signals, and the CPU time and memory a stats call reports.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a process is checked on while waiting for it to end.
const POLL: Duration = Duration::from_millis(20);

/// How long killed monitors may take to go (a VMM frees its guest's memory first).
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The `$0` of QEMU's `sh` wrapper, followed by the microVM's directory:
/// how a wrapper is told from any other shell.
pub(crate) const WRAPPER_ARG0: &str = "zixiao-microvm";

/// A monitor process of one microVM, found in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Monitor {
    pub(crate) pid: i32,
    /// The name of its microVM's directory: the instance id.
    pub(crate) id: String,
}

/// Every live process running as a monitor of a microVM directly under
/// `root` (`<state_dir>/microvm`), whether or not a pid file names it:
/// QEMU (`-pidfile <root>/<id>/qemu.pid`), its wrapper (`sh -c … zixiao-microvm
/// <root>/<id> …`), zixiao-vmm (`--run-dir <root>/<id>/vmm`). Only these
/// shapes of command line count, so a shell that merely names a file of the
/// directory (a `tail` of the console log) is never taken for a monitor.
pub(crate) fn monitors(root: &Path) -> Vec<Monitor> {
    // zixiao-vmm names its run directory canonicalised.
    let roots: Vec<PathBuf> = [Some(root.to_owned()), root.canonicalize().ok()]
        .into_iter()
        .flatten()
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let Some(dir) = monitor_dir(&cmdline) else {
            continue;
        };
        let in_root = dir.parent().is_some_and(|p| roots.iter().any(|r| r == p));
        let id = dir.file_name().and_then(OsStr::to_str);
        if let (true, Some(id)) = (in_root, id) {
            if !is_zombie(pid) {
                found.push(Monitor {
                    pid,
                    id: id.to_owned(),
                });
            }
        }
    }
    found.sort_by_key(|m| m.pid);
    found
}

/// The pids of the live monitors of the microVM directory `dir`.
pub(crate) fn monitors_of(dir: &Path) -> Vec<i32> {
    let (Some(root), Some(id)) = (dir.parent(), dir.file_name().and_then(OsStr::to_str)) else {
        return Vec::new();
    };
    monitors(root)
        .into_iter()
        .filter(|m| m.id == id)
        .map(|m| m.pid)
        .collect()
}

/// The microVM directory a monitor's command line (NUL-separated) runs in,
/// if it is a monitor's.
fn monitor_dir(cmdline: &[u8]) -> Option<PathBuf> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let arg = |i: usize| args.get(i).map(|a| Path::new(OsStr::from_bytes(a)));
    // sh -c SCRIPT zixiao-microvm DIR QEMU ARGS...
    if args.get(1) == Some(&&b"-c"[..]) && args.get(3) == Some(&WRAPPER_ARG0.as_bytes()) {
        return arg(4).map(Path::to_owned);
    }
    let after = |flag: &[u8]| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| arg(i + 1))
    };
    if let Some(pid_file) = after(b"-pidfile") {
        return pid_file.parent().map(Path::to_owned);
    }
    match after(b"--run-dir") {
        Some(run_dir) if run_dir.file_name() == Some(OsStr::new("vmm")) => {
            run_dir.parent().map(Path::to_owned)
        }
        _ => None,
    }
}

/// Kills every monitor of the microVM directory `dir` but `keep`, at once
/// (SIGKILL), and waits until they are gone.
pub(crate) async fn kill_monitors(dir: &Path, keep: &[i32]) {
    let pids: Vec<i32> = monitors_of(dir)
        .into_iter()
        .filter(|pid| !keep.contains(pid))
        .collect();
    for pid in &pids {
        signal(*pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + KILL_TIMEOUT;
    // By pid, not by command line: a VMM freeing its guest's memory reads
    // an empty command line while it still runs.
    while pids.iter().any(|pid| is_alive(*pid)) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `pid` exists and is not a zombie.
fn is_alive(pid: i32) -> bool {
    !is_zombie(pid)
}

/// The parent of `pid`.
pub(crate) fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.get(1)?.parse().ok()
}

/// Reads a pid file; `None` when it is missing or not a pid.
pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pid: &i32| *pid > 0)
}

/// Whether `pid` runs (a zombie does not) and its command line mentions
/// `marker`, the instance's directory: a pid reused by another process
/// after a reboot is never taken for the instance's monitor.
pub(crate) fn is_ours(pid: i32, marker: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let marker = marker.as_os_str().as_encoded_bytes();
    let mentions = cmdline.windows(marker.len()).any(|w| w == marker);
    mentions && !is_zombie(pid)
}

/// Whether `pid` is a zombie, dead, or gone.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat_fields(&stat).and_then(|f| f.first().map(|s| matches!(*s, "Z" | "X")))
        })
        .unwrap_or(true)
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces and parentheses), starting with the state.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// Sends `signal` to `pid`. A process that is gone already is not an error.
pub(crate) fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // callers pass pids they checked with `is_ours` just before.
    let _ = unsafe { libc::kill(pid, signal) };
}

/// Waits until `pid` is no longer ours (exited, or reaped) or `timeout`
/// passes; true when it ended.
pub(crate) async fn wait_gone(pid: i32, marker: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_ours(pid, marker) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// User plus system CPU time of a process (all its threads) or, with
/// `/proc/<pid>/task/<tid>`, of one thread, in nanoseconds.
pub(crate) fn cpu_time_ns(proc_dir: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).ok()?;
    let fields = stat_fields(&stat)?;
    // utime and stime are fields 14 and 15 of stat(5); the slice starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime).saturating_mul(1_000_000_000 / clock_ticks()))
}

/// The resident memory of a process, in bytes.
pub(crate) fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// The host's online CPUs and total memory in MiB.
pub(crate) fn host_capacity() -> (u32, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kib| kib / 1024);
    (cpus, memory_mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_time_ns(&format!("/proc/{me}")).is_some());
        assert!(rss_bytes(me as i32).unwrap_or(0) > 0);
        // Our command line does not name a microVM directory.
        assert!(!is_ours(me as i32, Path::new("/nonexistent/microvm/dir")));
        let (cpus, memory) = host_capacity();
        assert!(cpus >= 1 && memory > 0);
    }

    #[test]
    fn monitors_are_told_by_the_shape_of_their_command_line() {
        let line = |args: &[&str]| args.join("\0").into_bytes();
        let dir = Some(PathBuf::from(
            "/s/microvm/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        ));
        let qemu = line(&[
            "/usr/bin/qemu-system-x86_64",
            "-S",
            "-pidfile",
            "/s/microvm/1b4e28ba-2fa1-11d2-883f-0016d3cca427/qemu.pid",
        ]);
        assert_eq!(monitor_dir(&qemu), dir);
        let wrapper = line(&[
            "/bin/sh",
            "-c",
            "dir=$1; shift",
            WRAPPER_ARG0,
            "/s/microvm/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "/usr/bin/qemu-system-x86_64",
        ]);
        assert_eq!(monitor_dir(&wrapper), dir);
        let vmm = line(&[
            "zixiao-vmm",
            "--run-dir",
            "/s/microvm/1b4e28ba-2fa1-11d2-883f-0016d3cca427/vmm",
            "--boot",
            "{}",
        ]);
        assert_eq!(monitor_dir(&vmm), dir);
        let reader = line(&[
            "tail",
            "-f",
            "/s/microvm/1b4e28ba-2fa1-11d2-883f-0016d3cca427/console.log",
        ]);
        assert_eq!(monitor_dir(&reader), None);
        // Nothing of ours runs under a directory that does not exist.
        assert!(monitors(Path::new("/nonexistent/microvm")).is_empty());
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        let fields = stat_fields(stat).expect("fields");
        assert_eq!(fields[0], "S");
        assert_eq!(fields[11], "250");
    }
}
