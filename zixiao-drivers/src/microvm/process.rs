//! The monitor processes of microVMs, seen through `/proc`: whether a
//! recorded pid is still the process the driver started (pids are reused),
//! signals, and the CPU time and memory a stats call reports.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often a process is checked on while waiting for it to end.
const POLL: Duration = Duration::from_millis(20);

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

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_fields(&stat).and_then(|f| f.first().map(|s| *s == "Z")))
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
    fn parses_stat_with_odd_command_names() {
        let stat = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        let fields = stat_fields(stat).expect("fields");
        assert_eq!(fields[0], "S");
        assert_eq!(fields[11], "250");
    }
}
