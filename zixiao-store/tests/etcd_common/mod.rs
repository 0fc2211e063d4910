//! What the etcd tests share: a store on the shared test cluster with a key
//! prefix of its own, and throwaway private clusters (started from
//! `ZIXIAO_TEST_ETCD_BIN` on fresh ports) for tests that kill members.

#![allow(dead_code, unreachable_pub)] // Each test file uses a part of it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zixiao_store::{EtcdStore, EtcdStoreOptions};
use zixiao_testing::wait::runtime_endpoint;

/// The shared cluster's endpoints, or `None` (the test skips) when
/// `scripts/services/etcd.sh start` was not run.
pub fn shared_endpoints() -> Option<Vec<String>> {
    let endpoints = runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")?;
    Some(endpoints.split(',').map(str::to_owned).collect())
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("/zixiao-test/{}", uuid::Uuid::new_v4())
}

/// A store on the shared cluster under a fresh key prefix.
pub async fn shared_store() -> Option<EtcdStore> {
    let endpoints = shared_endpoints()?;
    let store = EtcdStore::connect(EtcdStoreOptions::new(endpoints).key_prefix(unique_prefix()))
        .await
        .expect("connect to the shared etcd cluster");
    Some(store)
}

/// The etcd binary for private clusters, or `None` (the test skips).
pub fn etcd_bin() -> Option<String> {
    runtime_endpoint("ZIXIAO_TEST_ETCD_BIN", "etcd")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One member of a private cluster.
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A private etcd cluster on loopback, killed and deleted on drop.
pub struct Cluster {
    bin: String,
    members: Vec<Member>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` members and waits until every one sees a leader.
    pub async fn start(bin: &str, size: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                data: dir.path().join(format!("m{i}.data")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            bin: bin.to_owned(),
            members,
            initial_cluster,
            _dir: dir,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_for_leader(Duration::from_secs(30)).await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("the member's log file");
        let mut command = Command::new(&self.bin);
        command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data)
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url])
            .args(["--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "zixiao-private"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if std::env::consts::ARCH == "aarch64" {
            command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        let child = command.spawn().expect("start an etcd member");
        self.members[i].child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url.clone()
    }

    /// Kills member `i` with SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// The index of the member that is leader now, asked of the live members.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for member in &self.members {
            let status = match member.child {
                Some(_) => member_status(&member.client_url).await,
                None => None,
            };
            ids.push(status.map(|(id, _)| id));
            if let Some((_, l)) = status.filter(|(_, l)| *l != 0) {
                leader = Some(l);
            }
        }
        let leader = leader?;
        ids.iter().position(|id| *id == Some(leader))
    }

    /// Waits until every live member reports the same leader.
    pub async fn wait_for_leader(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for member in self.members.iter().filter(|m| m.child.is_some()) {
                leaders.push(member_status(&member.client_url).await.map(|(_, l)| l));
            }
            let first = leaders.first().copied().flatten();
            if matches!(first, Some(l) if l != 0) && leaders.iter().all(|l| *l == first) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private etcd cluster has no agreed leader after {timeout:?}: {leaders:?}; logs in {}",
                self._dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// (member id, leader id) of the member at `url`, if it answers.
async fn member_status(url: &str) -> Option<(u64, u64)> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1));
    let status = async {
        let mut client = etcd_client::Client::connect([url], Some(options))
            .await
            .ok()?;
        let status = client.status().await.ok()?;
        let member = status.header()?.member_id();
        Some((member, status.leader()))
    };
    tokio::time::timeout(Duration::from_secs(2), status)
        .await
        .ok()
        .flatten()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
