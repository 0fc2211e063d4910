//! A private three-member etcd cluster for one test, started from
//! `ZIXIAO_TEST_ETCD_BIN` with its data in a temporary directory, on
//! loopback ports of the caller's network namespace (the fault tests run it
//! in a namespace of their own, so the ports clash with nothing). It finds
//! its raft leader with `etcdctl` and kills members; dropping it kills
//! every member.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::harness::{die_with_parent, kill9};
use super::roles::log_file;

const MEMBERS: usize = 3;
const FIRST_PORT: u16 = 12379;

/// The members (none: killed).
pub(crate) struct EtcdCluster {
    etcdctl: PathBuf,
    members: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

fn client_url(m: usize) -> String {
    format!("http://127.0.0.1:{}", FIRST_PORT + 2 * m as u16)
}

fn peer_url(m: usize) -> String {
    format!("http://127.0.0.1:{}", FIRST_PORT + 1 + 2 * m as u16)
}

impl EtcdCluster {
    /// Starts the members of `bin` and waits until they elect a leader.
    pub(crate) fn start(bin: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster: Vec<String> = (0..MEMBERS)
            .map(|m| format!("m{m}={}", peer_url(m)))
            .collect();
        let mut members = Vec::new();
        for m in 0..MEMBERS {
            let mut command = Command::new(bin);
            command
                .args(["--name", &format!("m{m}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{m}.data")))
                .args(["--listen-client-urls", &client_url(m)])
                .args(["--advertise-client-urls", &client_url(m)])
                .args(["--listen-peer-urls", &peer_url(m)])
                .args(["--initial-advertise-peer-urls", &peer_url(m)])
                .args(["--initial-cluster", &cluster.join(",")])
                .args(["--initial-cluster-token", "zixiao-faults"])
                .args(["--initial-cluster-state", "new"])
                // As zixiao-cluster/README.md asks: an election well inside the fencing margin.
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdout(std::process::Stdio::null())
                .stderr(log_file(dir.path(), &format!("m{m}.log")));
            // etcd 3.4 refuses architectures other than amd64, ppc64le and s390x unless told.
            if cfg!(target_arch = "aarch64") {
                command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
            }
            die_with_parent(&mut command);
            members.push(Some(command.spawn().expect("start etcd")));
        }
        let etcdctl = bin.with_file_name("etcdctl");
        let me = EtcdCluster {
            etcdctl: if etcdctl.exists() {
                etcdctl
            } else {
                PathBuf::from("etcdctl")
            },
            members,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while me.leader().is_none() {
            assert!(Instant::now() < deadline, "etcd elected no leader in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    /// The live members' client URLs, comma-separated.
    pub(crate) fn endpoints(&self) -> String {
        self.live().map(client_url).collect::<Vec<_>>().join(",")
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MEMBERS).filter(|m| self.members[*m].is_some())
    }

    /// The member that leads, once every live member agrees on one.
    pub(crate) fn leader(&self) -> Option<usize> {
        let output = Command::new(&self.etcdctl)
            .args(["--endpoints", &self.endpoints()])
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
        (0..MEMBERS).find(|m| client_url(*m) == endpoint)
    }

    /// `kill -9` of member `m`.
    pub(crate) fn kill(&mut self, m: usize) {
        if let Some(mut child) = self.members[m].take() {
            kill9(child.id() as i32);
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in 0..MEMBERS {
            self.kill(m);
        }
    }
}
