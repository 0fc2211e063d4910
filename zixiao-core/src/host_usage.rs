//! What the machine this process runs on uses as a whole, read from the
//! kernel: CPU from `/proc/stat`, memory from `/proc/meminfo`, load from
//! `/proc/loadavg`. The one place that reads them: an agent sends its
//! reading with each heartbeat, and a server samples its own local node
//! (the embedded deployment's) with the same [`HostSampler`].
//!
//! The parsers are pure functions over the files' text, so malformed
//! input is an error (never a panic) and a counter that went back or did
//! not move gives no CPU figure rather than a made-up one.

use std::io;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the host uses, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostUsage {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// The CPU every process on the host used since the previous reading,
    /// in thousandths of a core; `None` for a first reading, or when the
    /// counters went back or did not move.
    pub cpu_millicores_used: Option<u64>,
    /// Its online CPUs, in thousandths of a core.
    pub cpu_millicores_total: u64,
    /// The memory in use: `MemTotal - MemAvailable`, in bytes (what could
    /// not be given to a new process without swapping).
    pub memory_used_bytes: u64,
    /// Its memory, in bytes.
    pub memory_total_bytes: u64,
    /// The one-minute load average.
    pub load1: f64,
}

/// Why the host's usage could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostUsageError {
    /// A file could not be read.
    #[error("reading {file}")]
    Read {
        /// Which file.
        file: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file did not look as the kernel writes it.
    #[error("{file} is malformed: {reason}")]
    Malformed {
        /// Which file.
        file: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl HostUsageError {
    fn malformed(file: &'static str, reason: impl Into<String>) -> Self {
        HostUsageError::Malformed {
            file,
            reason: reason.into(),
        }
    }
}

/// The host's CPU time counters from `/proc/stat`, in clock ticks since
/// boot, summed over every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent running something (user, nice, system, irq, softirq,
    /// steal; guest time is inside user already).
    pub busy: u64,
    /// Ticks spent idle or waiting for I/O.
    pub idle: u64,
    /// How many CPUs are online (`cpuN` lines).
    pub cpus: u32,
}

const STAT: &str = "/proc/stat";
const MEMINFO: &str = "/proc/meminfo";
const LOADAVG: &str = "/proc/loadavg";

/// Parses `/proc/stat`'s aggregate `cpu` line and counts its `cpuN` lines.
pub fn parse_stat(stat: &str) -> Result<CpuTimes, HostUsageError> {
    let mut total = None;
    let mut cpus = 0u32;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => total = Some(fields.collect::<Vec<_>>()),
            Some(name) if name.strip_prefix("cpu").is_some_and(is_digits) => cpus += 1,
            _ => {}
        }
    }
    let fields = total.ok_or_else(|| HostUsageError::malformed(STAT, "no cpu line"))?;
    // user nice system idle iowait irq softirq steal (guest guest_nice):
    // kernels since 2.6.33 write at least these eight.
    if fields.len() < 8 {
        return Err(HostUsageError::malformed(
            STAT,
            format!("the cpu line has {} fields, not 8 or more", fields.len()),
        ));
    }
    let ticks = fields[..8]
        .iter()
        .map(|f| f.parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|e| HostUsageError::malformed(STAT, format!("the cpu line: {e}")))?;
    if cpus == 0 {
        return Err(HostUsageError::malformed(STAT, "no cpuN line"));
    }
    let sum = |picked: &[usize]| {
        picked
            .iter()
            .fold(0u64, |sum, &i| sum.saturating_add(ticks[i]))
    };
    Ok(CpuTimes {
        busy: sum(&[0, 1, 2, 5, 6, 7]),
        idle: sum(&[3, 4]),
        cpus,
    })
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The CPU used between two readings, in thousandths of a core: the busy
/// share of the ticks that passed, times the CPUs. `None` when no tick
/// passed or a counter went back (a reset, or a different host).
pub fn cpu_millicores(before: &CpuTimes, now: &CpuTimes) -> Option<u64> {
    let busy = now.busy.checked_sub(before.busy)?;
    let idle = now.idle.checked_sub(before.idle)?;
    let ticks = busy.checked_add(idle).filter(|&t| t > 0)?;
    let millicores = u128::from(busy) * u128::from(now.cpus) * 1000 / u128::from(ticks);
    u64::try_from(millicores).ok()
}

/// Parses `/proc/meminfo` into (used, total) bytes: `MemTotal -
/// MemAvailable` and `MemTotal`.
pub fn parse_meminfo(meminfo: &str) -> Result<(u64, u64), HostUsageError> {
    let field = |name: &str| -> Result<u64, HostUsageError> {
        let line = meminfo
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| HostUsageError::malformed(MEMINFO, format!("no {name}")))?;
        let mut parts = line.split_whitespace();
        let kib = parts
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| HostUsageError::malformed(MEMINFO, format!("{name} is not a number")))?;
        if parts.next() != Some("kB") {
            return Err(HostUsageError::malformed(
                MEMINFO,
                format!("{name} is not in kB"),
            ));
        }
        kib.checked_mul(1024)
            .ok_or_else(|| HostUsageError::malformed(MEMINFO, format!("{name} is too large")))
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    Ok((total.saturating_sub(available), total))
}

/// Parses the one-minute load average, the first field of `/proc/loadavg`.
pub fn parse_loadavg(loadavg: &str) -> Result<f64, HostUsageError> {
    loadavg
        .split_whitespace()
        .next()
        .and_then(|f| f.parse::<f64>().ok())
        .filter(|load| load.is_finite() && *load >= 0.0)
        .ok_or_else(|| HostUsageError::malformed(LOADAVG, "the first field is not a load"))
}

fn read(file: &'static str) -> Result<String, HostUsageError> {
    std::fs::read_to_string(file).map_err(|source| HostUsageError::Read { file, source })
}

/// Reads this host's usage again and again, keeping the previous CPU
/// counters so that each reading has the CPU used since the one before.
#[derive(Debug, Default)]
pub struct HostSampler {
    previous: Option<CpuTimes>,
}

impl HostSampler {
    /// A sampler with no previous reading: its first gives no CPU figure.
    pub fn new() -> Self {
        HostSampler::default()
    }

    /// Reads the host now. Errors: a file unreadable or malformed (not
    /// Linux, or no `/proc`); the previous reading is kept then.
    pub fn read(&mut self) -> Result<HostUsage, HostUsageError> {
        let cpu = parse_stat(&read(STAT)?)?;
        let (memory_used_bytes, memory_total_bytes) = parse_meminfo(&read(MEMINFO)?)?;
        let load1 = parse_loadavg(&read(LOADAVG)?)?;
        let used = self
            .previous
            .replace(cpu)
            .and_then(|before| cpu_millicores(&before, &cpu));
        let total = u64::from(cpu.cpus) * 1000;
        Ok(HostUsage {
            at: Utc::now(),
            // Busy ticks can run ahead of idle ones by a tick per CPU.
            cpu_millicores_used: used.map(|used| used.min(total)),
            cpu_millicores_total: total,
            memory_used_bytes,
            memory_total_bytes,
            load1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From a 2-CPU machine.
    const STAT_SAMPLE: &str = "cpu  5676912 1558573 2013616 2246078 64994 0 45563 59083 82 26\n\
        cpu0 2735510 767776 1005581 1254456 21020 0 15870 29852 45 14\n\
        cpu1 2941402 790796 1008035 991622 43974 0 29692 29230 36 12\n\
        intr 1 2 3\nctxt 4242\nbtime 1765000000\nprocesses 5\n";

    const MEMINFO_SAMPLE: &str = "MemTotal:       24683784 kB\n\
        MemFree:        20333040 kB\n\
        MemAvailable:   23334784 kB\n\
        Buffers:          100000 kB\n";

    #[test]
    fn parses_proc_stat() {
        let times = parse_stat(STAT_SAMPLE).expect("parsed");
        assert_eq!(times.cpus, 2);
        assert_eq!(
            times.busy,
            5_676_912 + 1_558_573 + 2_013_616 + 45_563 + 59_083
        );
        assert_eq!(times.idle, 2_246_078 + 64_994);
    }

    #[test]
    fn malformed_proc_stat_is_an_error() {
        for bad in [
            "",
            "intr 1 2\n",
            "cpu 1 2 3\ncpu0 1 2 3 4 5 6 7 8\n",
            "cpu 1 2 3 x 5 6 7 8\ncpu0 1 2 3 4 5 6 7 8\n",
            "cpu 1 2 3 4 5 6 7 8\n",
            "cpu -1 2 3 4 5 6 7 8\ncpu0 1 2 3 4 5 6 7 8\n",
        ] {
            assert!(
                matches!(parse_stat(bad), Err(HostUsageError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cpu_is_the_busy_share_of_the_ticks_times_the_cpus() {
        let at = |busy, idle| CpuTimes {
            busy,
            idle,
            cpus: 4,
        };
        // A quarter of the ticks busy on four CPUs: one core.
        assert_eq!(cpu_millicores(&at(100, 100), &at(200, 400)), Some(1000));
        // All busy: every core.
        assert_eq!(cpu_millicores(&at(0, 0), &at(400, 0)), Some(4000));
        // No tick passed: no figure, not a division by zero.
        assert_eq!(cpu_millicores(&at(5, 5), &at(5, 5)), None);
        // A counter went back (a reset): no figure, not a wrap-around.
        assert_eq!(cpu_millicores(&at(500, 5), &at(10, 50)), None);
        assert_eq!(cpu_millicores(&at(5, 500), &at(50, 10)), None);
    }

    #[test]
    fn parses_proc_meminfo() {
        let (used, total) = parse_meminfo(MEMINFO_SAMPLE).expect("parsed");
        assert_eq!(total, 24_683_784 * 1024);
        assert_eq!(used, (24_683_784 - 23_334_784) * 1024);
        for bad in [
            "",
            "MemTotal: 10 kB\n",
            "MemTotal: ten kB\nMemAvailable: 1 kB\n",
            "MemTotal: 10 MB\nMemAvailable: 1 kB\n",
            "MemTotal: 99999999999999999999 kB\nMemAvailable: 1 kB\n",
        ] {
            assert!(parse_meminfo(bad).is_err(), "{bad:?}");
        }
        // MemTotalX is not MemTotal.
        assert!(parse_meminfo("MemTotalX: 5 kB\nMemAvailable: 1 kB\n").is_err());
    }

    #[test]
    fn parses_proc_loadavg() {
        assert_eq!(
            parse_loadavg("2.25 1.68 1.93 6/294 32611\n").ok(),
            Some(2.25)
        );
        for bad in ["", "x 1 2", "-1 0 0 1/1 1", "NaN 0 0", "inf 0 0"] {
            assert!(parse_loadavg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn samples_this_host() {
        let mut sampler = HostSampler::new();
        let first = sampler.read().expect("read /proc");
        assert_eq!(first.cpu_millicores_used, None, "{first:?}");
        assert!(first.cpu_millicores_total >= 1000, "{first:?}");
        assert!(first.memory_used_bytes <= first.memory_total_bytes);
        // Some ticks pass while the test spins.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let second = loop {
            let reading = sampler.read().expect("read /proc");
            if reading.cpu_millicores_used.is_some() || std::time::Instant::now() > deadline {
                break reading;
            }
            std::hint::spin_loop();
        };
        let used = second.cpu_millicores_used.expect("a CPU figure");
        assert!(used <= second.cpu_millicores_total, "{second:?}");
    }
}
