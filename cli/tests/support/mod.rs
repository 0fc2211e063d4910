//! The harness of the tests that run a secured cluster as processes: a
//! PKI and a `zixiao server --pki` on etcd under a key prefix of their own,
//! `zixiao agent`s that join it, and the store to compare before and after.
//! Each test file that uses it takes only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use zixiao_core::Store;
use zixiao_testing::output::json as ok;
use zixiao_testing::wait::{runtime_endpoint, wait_until};

/// A child process, killed when dropped.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `zixiao` with no configuration of this machine's: only what a test names.
pub(crate) fn zixiao(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ENDPOINT")
        .env_remove("ZIXIAO_CONFIG")
        .env_remove("ZIXIAO_CONTEXT")
        .env_remove("ZIXIAO_ETCD_ENDPOINTS")
        // No user configuration of this machine's: only what a test names.
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("HOME", dir);
    command
}

/// A cluster: a PKI directory, its first admin's configuration, and a
/// server on etcd under a key prefix of its own.
pub(crate) struct Cluster {
    pub(crate) _temp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) pki: PathBuf,
    pub(crate) endpoint: String,
    pub(crate) prefix: String,
    pub(crate) etcd: String,
    pub(crate) _server: Running,
}

impl Cluster {
    /// `zixiao --config CONFIG --endpoint <the server> -o json ARGS...`.
    pub(crate) fn run(&self, config: &Path, args: &[&str]) -> Output {
        zixiao(&self.dir)
            .arg("--config")
            .arg(config)
            .args(["--endpoint", &self.endpoint, "-o", "json"])
            .args(args)
            .output()
            .expect("run zixiao")
    }

    pub(crate) fn admin(&self) -> PathBuf {
        self.pki.join("admin.yaml")
    }

    pub(crate) async fn store(&self) -> Box<dyn Store> {
        let options = zixiao_store::EtcdStoreOptions::new(self.etcd.split(','))
            .key_prefix(self.prefix.clone());
        Box::new(
            zixiao_store::EtcdStore::connect(options)
                .await
                .expect("etcd"),
        )
    }

    /// Every key of the cluster but the audit log's and the leader's
    /// (renewed as time passes), with its revision.
    pub(crate) async fn snapshot(&self) -> BTreeMap<String, u64> {
        let listing = self.store().await.list("/").await.expect("list");
        listing
            .items
            .into_iter()
            .filter(|kv| !kv.key.starts_with("/zixiao/auth/audit/") && kv.key != "/zixiao/leader")
            .map(|kv| (kv.key, kv.mod_revision))
            .collect()
    }
}

/// `zixiao server init` on etcd under `prefix`, into `pki`.
pub(crate) fn init(dir: &Path, etcd: &str, prefix: &str, pki: &Path) {
    let out = zixiao(dir)
        .args(["-o", "json", "server", "init", "--dir"])
        .arg(pki)
        .args(["--etcd", etcd, "--etcd-prefix", prefix])
        .output()
        .expect("run");
    let made = ok(out);
    assert!(made["admin_config"].as_str().is_some(), "{made}");
    use std::os::unix::fs::PermissionsExt;
    for file in ["ca-key.pem", "admin.yaml"] {
        let mode = std::fs::metadata(pki.join(file))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is {mode:o}");
    }
}

pub(crate) async fn cluster() -> Option<Cluster> {
    let etcd = runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")?;
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_owned();
    let prefix = format!(
        "/zixiao-secure-test-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let pki = dir.join("pki");
    init(&dir, &etcd, &prefix, &pki);
    let (server, endpoint) = serve(&dir, &etcd, &prefix, &pki, "secure-1");
    Some(Cluster {
        _temp: temp,
        dir,
        pki,
        endpoint,
        prefix,
        etcd,
        _server: server,
    })
}

/// A `zixiao server` replica `id` on etcd under `prefix`, serving TLS
/// with a certificate from `pki`, and its endpoint.
pub(crate) fn serve(
    dir: &Path,
    etcd: &str,
    prefix: &str,
    pki: &Path,
    id: &str,
) -> (Running, String) {
    serve_on(dir, etcd, prefix, pki, id, "127.0.0.1:0")
}

/// [`serve`] listening on `listen` (a server started again where its
/// agents and clients expect it).
pub(crate) fn serve_on(
    dir: &Path,
    etcd: &str,
    prefix: &str,
    pki: &Path,
    id: &str,
    listen: &str,
) -> (Running, String) {
    let mut child = zixiao(dir)
        .args(["server", "--etcd", etcd, "--etcd-prefix", prefix])
        .arg("--pki")
        .arg(pki)
        .args(["--listen", listen, "--id", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run zixiao server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let endpoint = line
        .trim()
        .rsplit_once(" listening on ")
        .map(|(_, addr)| addr.to_owned())
        .unwrap_or_else(|| panic!("zixiao server did not start: {line:?}"));
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    (Running(child), endpoint)
}

/// The tests' containerd socket and the busybox OCI archive to import, or
/// `None` (having said why) where containerd does not run.
pub(crate) fn containerd() -> Option<(String, String)> {
    let socket = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")?;
    let busybox =
        std::env::var("ZIXIAO_TEST_BUSYBOX_OCI").expect("ZIXIAO_TEST_BUSYBOX_OCI with the socket");
    Some((socket, busybox))
}

/// Imports the `busybox` archive on the node (a file there), into the
/// containerd namespace the agents use.
pub(crate) fn import_busybox(cluster: &Cluster, socket: &str, busybox: &str) {
    let out = zixiao(&cluster.dir)
        .arg("--state-dir")
        .arg(cluster.dir.join("importer"))
        .args(["--containerd-socket", socket, "image", "import", busybox])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        zixiao_testing::output::text(&out.stderr)
    );
}

/// `zixiao agent --server URL --ca-cert ca.pem --join-token T ...`, its
/// stdout piped (its first line says where it listens).
pub(crate) fn agent(cluster: &Cluster, socket: &str, name: &str, token: Option<&str>) -> Command {
    let mut command = agent_with_networks(cluster, socket, name, token);
    command.arg("--no-networks");
    command
}

/// [`agent`] setting up the cluster's networks on this host (containers'
/// namespaces pinned in its state directory).
pub(crate) fn agent_with_networks(
    cluster: &Cluster,
    socket: &str,
    name: &str,
    token: Option<&str>,
) -> Command {
    let state = cluster.dir.join(format!("agent-{name}"));
    let mut command = zixiao(&cluster.dir);
    command
        .arg("--state-dir")
        .arg(&state)
        .args(["--containerd-socket", socket])
        .args(["agent", "--server", &cluster.endpoint, "--ca-cert"])
        .arg(cluster.pki.join("ca.pem"))
        .args(["--name", name, "--listen", "127.0.0.1:0"])
        .arg("--netns-dir")
        .arg(state.join("netns"))
        .arg("--no-watchdog");
    if let Some(token) = token {
        command.args(["--join-token", token]);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    command
}

/// Starts an agent and waits for the line saying where it listens.
pub(crate) fn start_agent(mut command: Command) -> Running {
    let mut child = command.spawn().expect("run zixiao agent");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(
        line.contains(" listening on "),
        "the agent did not start: {line:?}"
    );
    Running(child)
}

/// Waits until node `name` is registered and ready.
pub(crate) async fn wait_ready(cluster: &Cluster, name: &str) {
    let admin = cluster.admin();
    wait_until(
        &format!("node {name} to be ready"),
        Duration::from_secs(30),
        || async {
            let nodes = ok(cluster.run(&admin, &["node", "list"]));
            nodes
                .as_array()
                .is_some_and(|nodes| {
                    nodes
                        .iter()
                        .any(|n| n["id"] == name && n["status"] == "ready")
                })
                .then_some(())
        },
    )
    .await;
}
