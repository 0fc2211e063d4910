//! This machine's size as a user would check it (`/proc/meminfo`'s
//! MemTotal, `nproc --all`), to compare what zixiao reports of its host
//! against, read independently of zixiao's own `/proc` parsers.

/// This machine's memory: `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024
}

/// This machine's online CPUs (`nproc --all`).
pub fn online_cpus() -> u64 {
    // SAFETY: sysconf reads a system setting; no memory is touched.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u64::try_from(n).expect("a count of online CPUs")
}
