//! Facts about the machine this process runs on: hostname, CPUs, memory and
//! the disk under a directory, read from the kernel.

use std::io;
use std::path::Path;

use crate::model::{Cpus, Resources};

/// The instance limit of a node that does not set one.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// What this machine offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The hostname.
    pub hostname: String,
    /// Its capacity: online CPUs, total memory, total disk under the state directory.
    pub capacity: Resources,
}

impl HostFacts {
    /// Reads the facts of this machine, measuring disk on the filesystem
    /// that holds `state_dir`.
    pub fn probe(state_dir: &Path) -> io::Result<HostFacts> {
        Ok(HostFacts {
            hostname: hostname()?,
            capacity: Resources {
                cpus: Cpus::cores(cpu_count()),
                memory_mib: memory_mib()?,
                disk_gib: disk_gib(state_dir)?,
                instances: DEFAULT_MAX_INSTANCES,
            },
        })
    }
}

fn hostname() -> io::Result<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(raw.trim().to_owned())
}

fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

fn memory_mib() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    parse_mem_total_kib(&meminfo)
        .map(|kib| kib / 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/meminfo has no MemTotal"))
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn disk_gib(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to
    // writable memory of the right type; statvfs fills it on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field widths differ between libcs
    let bytes = (stat.f_blocks as u64).saturating_mul(stat.f_frsize as u64);
    Ok(bytes / (1024 * 1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mem_total() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total_kib(meminfo), Some(24_576_000));
        assert_eq!(parse_mem_total_kib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn probes_this_machine() {
        let facts = HostFacts::probe(Path::new("/")).expect("probe");
        assert!(!facts.hostname.is_empty());
        assert!(facts.capacity.cpus >= Cpus::cores(1));
        assert!(facts.capacity.memory_mib >= 64, "{facts:?}");
        assert!(facts.capacity.disk_gib >= 1, "{facts:?}");
    }
}
