//! A private etcd cluster on loopback for a benchmark or a simulation: its
//! members are child processes with their data in a temporary directory,
//! on ports of its own; it finds the raft leader with `etcdctl`, kills and
//! restarts members, and kills every member when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::SimError;

/// The etcd binary: `ZIXIAO_TEST_ETCD_BIN` (what `scripts/services/etcd.sh`
/// prints), else `etcd` on the `PATH`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ZIXIAO_TEST_ETCD_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.exists())
}

/// A private etcd cluster; see the module documentation.
#[derive(Debug)]
pub struct EtcdCluster {
    bin: PathBuf,
    etcdctl: PathBuf,
    base_port: u16,
    members: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    fn client_url(&self, m: usize) -> String {
        format!("http://127.0.0.1:{}", self.base_port + 2 * m as u16)
    }

    fn peer_url(&self, m: usize) -> String {
        format!("http://127.0.0.1:{}", self.base_port + 1 + 2 * m as u16)
    }

    /// Starts `members` members of `bin` on ports from `base_port` and
    /// waits until they elect a leader. Errors: `Etcd` when they cannot be
    /// started or elect nobody within 30 s.
    pub fn start(bin: &Path, base_port: u16, members: usize) -> Result<Self, SimError> {
        let dir = tempfile::tempdir().map_err(|e| SimError::io("a temporary directory", e))?;
        let etcdctl = bin.with_file_name("etcdctl");
        let mut cluster = EtcdCluster {
            bin: bin.to_owned(),
            etcdctl: if etcdctl.exists() {
                etcdctl
            } else {
                PathBuf::from("etcdctl")
            },
            base_port,
            members: (0..members).map(|_| None).collect(),
            dir,
        };
        for m in 0..members {
            cluster.spawn(m, "new")?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.leader().is_none() {
            if Instant::now() >= deadline {
                return Err(SimError::Etcd(
                    "the members elected no leader in 30 s".to_owned(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    fn spawn(&mut self, m: usize, state: &str) -> Result<(), SimError> {
        let peers: Vec<String> = (0..self.members.len())
            .map(|i| format!("m{i}={}", self.peer_url(i)))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{m}.log")))
            .map_err(|e| SimError::io("an etcd log", e))?;
        let mut command = Command::new(&self.bin);
        command
            .args(["--name", &format!("m{m}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{m}.data")))
            .args(["--listen-client-urls", &self.client_url(m)])
            .args(["--advertise-client-urls", &self.client_url(m)])
            .args(["--listen-peer-urls", &self.peer_url(m)])
            .args(["--initial-advertise-peer-urls", &self.peer_url(m)])
            .args(["--initial-cluster", &peers.join(",")])
            .args(["--initial-cluster-token", "zixiao-sim"])
            .args(["--initial-cluster-state", state])
            // As zixiao-cluster/README.md asks: an election well inside the fencing margin.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // Keep the history short and the database roomy: a simulation
            // writes hundreds of thousands of revisions.
            .args(["--auto-compaction-mode", "revision"])
            .args(["--auto-compaction-retention", "50000"])
            .args(["--quota-backend-bytes", &(8u64 << 30).to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(Stdio::null())
            .stderr(log);
        if cfg!(target_arch = "aarch64") {
            command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| SimError::io("starting etcd", e))?;
        self.members[m] = Some(child);
        Ok(())
    }

    /// The live members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.live().map(|m| self.client_url(m)).collect()
    }

    /// Every member's client URL, live or not.
    pub fn all_endpoints(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|m| self.client_url(m))
            .collect()
    }

    /// The live members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().flatten().map(Child::id).collect()
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|m| self.members[*m].is_some())
    }

    /// The member that leads, once every live member agrees on one.
    pub fn leader(&self) -> Option<usize> {
        let output = Command::new(&self.etcdctl)
            .args(["--endpoints", &self.endpoints().join(",")])
            .args(["--dial-timeout=1s", "--command-timeout=2s"])
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let statuses: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).ok()?;
        if statuses.len() != self.live().count() {
            return None;
        }
        let leaders: Vec<u64> = statuses
            .iter()
            .map(|s| s["Status"]["leader"].as_u64())
            .collect::<Option<_>>()?;
        let leader = *leaders.first()?;
        if leader == 0 || leaders.iter().any(|l| *l != leader) {
            return None;
        }
        let endpoint = statuses
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))?["Endpoint"]
            .as_str()?
            .to_owned();
        (0..self.members.len()).find(|m| self.client_url(*m) == endpoint)
    }

    /// `kill -9` of member `m`.
    pub fn kill(&mut self, m: usize) {
        if let Some(mut child) = self.members[m].take() {
            kill9(child.id() as i32);
            let _ = child.wait();
        }
    }

    /// Starts member `m` again on its data. Errors: `Etcd`.
    pub fn restart(&mut self, m: usize) -> Result<(), SimError> {
        if self.members[m].is_none() {
            self.spawn(m, "existing")?;
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in 0..self.members.len() {
            self.kill(m);
        }
    }
}

/// Makes `command`'s process die with this one.
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `kill -9 pid`.
pub(crate) fn kill9(pid: i32) {
    // SAFETY: kill(2) with a pid this process started; no memory is touched.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// CPU time (user + system) and resident memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// CPU seconds used so far.
    pub cpu_s: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
}

impl ProcessStats {
    /// The figures of process `pid`, or `None` when it is gone.
    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces: fields count from after its ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 (11 and 12 after the name).
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Some(ProcessStats {
            cpu_s: ticks / hz.max(1.0),
            rss_mib: rss_kib / 1024.0,
        })
    }

    /// The sum over `pids` (the gone ones count nothing).
    pub fn sum(pids: &[u32]) -> Self {
        pids.iter()
            .filter_map(|p| ProcessStats::of(*p))
            .fold(ProcessStats::default(), |a, b| ProcessStats {
                cpu_s: a.cpu_s + b.cpu_s,
                rss_mib: a.rss_mib + b.rss_mib,
            })
    }
}
