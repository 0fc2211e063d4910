//! `zixiao server` and `zixiao agent` as processes, for the cluster tests
//! and the cluster benchmarks: starting them as a user does, waiting for a
//! node's status, calling through the server, and (with libvirt) a pair of
//! nodes on the two libvirtds of `scripts/services/libvirt.sh`, between
//! which VMs migrate live. Each user takes only part of it.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zixiao_core::{Client, NodeStatus};

/// A `zixiao` process, killed when dropped, and the address it listens on.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `zixiao --state-dir STATE` with no configuration of this machine's.
pub(crate) fn command(state: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .arg("--state-dir")
        .arg(state)
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ETCD_ENDPOINTS")
        .env_remove("ZIXIAO_SERVERS")
        // Servers sample usage twice a second, so a history grows within a test.
        .env("ZIXIAO_STATS_SAMPLE_MS", "500");
    command
}

/// Starts `zixiao ARGS` and waits for its "... listening on ADDR" line.
pub(crate) fn start(state: &Path, args: &[&str]) -> Running {
    let mut child = command(state)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run zixiao");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read");
    let addr = line
        .trim()
        .rsplit_once(" listening on ")
        .map(|(_, addr)| addr.to_owned())
        .unwrap_or_else(|| panic!("zixiao {args:?} did not start: {line:?}"));
    Running { child, addr }
}

/// Waits (20 s at most) until node `node` has `status`.
pub(crate) async fn wait_for_status(client: &Client, node: &str, status: NodeStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(found) = client.get_node(node).await {
            if found.status == status {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {node} never became {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `virsh -q -c URI ARGS`, its output whatever its status.
#[cfg(feature = "libvirt")]
pub(crate) fn virsh(uri: &str, args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .args(["-q", "-c", uri])
        .args(args)
        .output()
        .expect("run virsh")
}

/// Destroys and undefines the domain of instance `id` when dropped, so a
/// failed test leaves no VM running on the shared libvirtd.
#[cfg(feature = "libvirt")]
pub(crate) struct DomainGuard {
    pub(crate) uri: String,
    pub(crate) id: String,
}

#[cfg(feature = "libvirt")]
impl Drop for DomainGuard {
    fn drop(&mut self) {
        let _ = virsh(&self.uri, &["destroy", &self.id]);
        let _ = virsh(&self.uri, &["undefine", &self.id, "--nvram"]);
    }
}

/// Imports each `(path, kind, name)` into the node image store of the
/// agent whose state is `state`, on libvirt `uri`: an agent boots only
/// what its node holds, never a host path.
#[cfg(feature = "libvirt")]
pub(crate) fn import_node_images(state: &Path, uri: &str, images: &[(&str, &str, &str)]) {
    for (path, kind, name) in images {
        zixiao_testing::output::ok(
            command(state)
                .args(["--libvirt-uri", uri, "image", "import", path])
                .args(["--kind", kind, "--name", name])
                .output()
                .expect("run zixiao"),
        );
    }
}

/// `zixiao server --embedded` on loopback without TLS, its files in `state`.
#[cfg(feature = "libvirt")]
pub(crate) fn embedded_server(state: &Path) -> Running {
    start(
        state,
        &[
            "server",
            "--embedded",
            "--insecure-no-tls",
            "--listen",
            "127.0.0.1:0",
        ],
    )
}

/// `zixiao --endpoint SERVER -o json ARGS...` from a client directory.
#[cfg(any(all(feature = "etcd", feature = "containerd"), feature = "libvirt"))]
pub(crate) fn through(client: &Path, server: &str, args: &[&str]) -> std::process::Output {
    command(client)
        .args(["--endpoint", server, "-o", "json"])
        .args(args)
        .output()
        .expect("run zixiao")
}

/// The counts a counter guest printed, as `instance logs NAME` shows them
/// through the server (read through the agent of the node it runs on).
#[cfg(feature = "libvirt")]
pub(crate) fn logged_counts(client: &Path, server: &str, name: &str) -> Vec<u64> {
    let out = command(client)
        .args(["--endpoint", server, "instance", "logs", name])
        .output()
        .expect("run zixiao");
    zixiao_testing::guest::console_counts(&String::from_utf8_lossy(&out.stdout))
}

/// Two nodes on the two libvirtds of `scripts/services/libvirt.sh`, joined
/// to one embedded server in a zone of their own: node A on the first
/// daemon, node B ([`LibvirtPair::start_b`]) on the second, which takes
/// live migrations (the first cannot be reached from the second, so
/// migrations go from A to B). Each node's image store holds a counting
/// guest: disk `base`, kernel `k1`, initrd `counter`. What it starts is
/// stopped, and the domains of the VMs it created destroyed, when dropped.
#[cfg(feature = "libvirt")]
pub(crate) struct LibvirtPair {
    pub(crate) uri1: String,
    pub(crate) uri2: String,
    pub(crate) a: String,
    pub(crate) b: String,
    pub(crate) zone: String,
    pub(crate) server: Running,
    pub(crate) client: Client,
    agents: Vec<Running>,
    guards: Vec<DomainGuard>,
    /// Last: removed once everything using it stopped.
    pub(crate) dir: tempfile::TempDir,
}

#[cfg(feature = "libvirt")]
impl LibvirtPair {
    /// The server and node A, once A is ready; `None` (saying why) when
    /// the libvirt services are not running and the tests may skip.
    /// `prefix` names the nodes, the zone and the directory.
    pub(crate) async fn start(prefix: &str) -> Option<LibvirtPair> {
        use std::os::unix::fs::PermissionsExt;
        use zixiao_testing::wait::runtime_endpoint;

        let uri1 = runtime_endpoint("ZIXIAO_TEST_LIBVIRT_URI", "libvirt")?;
        let uri2 = runtime_endpoint("ZIXIAO_TEST_LIBVIRT2_URI", "the second libvirtd")?;
        let kernel = runtime_endpoint("ZIXIAO_TEST_VM_KERNEL", "kernel")?;
        let base = runtime_endpoint("ZIXIAO_TEST_VM_BASE_IMAGE", "disk")?;
        // Short, plain and searchable by both daemons' QEMU, which open
        // the nodes' images and overlays.
        let root = std::path::PathBuf::from(
            std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".to_owned()),
        )
        .join("libvirt");
        let dir = tempfile::Builder::new()
            .prefix(&format!("zx-{prefix}-"))
            .tempdir_in(&root)
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let counter = dir.path().join("counter.cpio");
        zixiao_testing::guest::counter_initramfs(&counter).expect("the counter initramfs");
        let counter = counter.to_string_lossy().into_owned();
        let pid = std::process::id();
        let (a, b) = (format!("{prefix}-a-{pid}"), format!("{prefix}-b-{pid}"));
        for (node, uri) in [(&a, &uri1), (&b, &uri2)] {
            import_node_images(
                &dir.path().join(node),
                uri,
                &[
                    (&base, "disk", "base"),
                    (&kernel, "kernel", "k1"),
                    (&counter, "initrd", "counter"),
                ],
            );
        }
        let server = embedded_server(&dir.path().join("server"));
        let client = zixiao_api::connect(&server.addr).expect("client");
        let mut pair = LibvirtPair {
            zone: format!("{prefix}-{pid}"),
            uri1,
            uri2,
            a,
            b,
            server,
            client,
            agents: Vec::new(),
            guards: Vec::new(),
            dir,
        };
        let (a, uri1) = (pair.a.clone(), pair.uri1.clone());
        pair.start_agent(&a, &uri1, &[]).await;
        Some(pair)
    }

    /// Starts node B, taking live migrations on the second daemon, and
    /// waits until it is ready.
    pub(crate) async fn start_b(&mut self) {
        let (b, uri2) = (self.b.clone(), self.uri2.clone());
        let extra = [
            "--libvirt-migration-uri",
            &uri2,
            "--libvirt-migration-address",
            "127.0.0.1",
        ];
        self.start_agent(&b, &uri2, &extra).await;
    }

    /// Starts an agent for node `node` on libvirt `uri` (no networks, no
    /// watchdog, no smoke test) with `extra` arguments, and waits until
    /// the node is ready.
    pub(crate) async fn start_agent(&mut self, node: &str, uri: &str, extra: &[&str]) {
        let mut args = vec![
            "--libvirt-uri",
            uri,
            "agent",
            "--server",
            &self.server.addr,
            "--no-networks",
            "--no-watchdog",
            "--skip-smoke-test",
            "--name",
            node,
            "--zone",
            &self.zone,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        self.agents.push(start(&self.dir.path().join(node), &args));
        wait_for_status(&self.client, node, NodeStatus::Ready).await;
    }

    /// Kills the server (as a crash does: no clean shutdown) and starts it
    /// again on the same state and address, where the agents find it.
    pub(crate) fn restart_server(&mut self) {
        let addr = self.server.addr.clone();
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        self.server = start(
            &self.dir.path().join("server"),
            &[
                "server",
                "--embedded",
                "--insecure-no-tls",
                "--listen",
                &addr,
            ],
        );
        assert_eq!(self.server.addr, addr, "the server moved");
    }

    /// `zixiao --endpoint SERVER -o json ARGS...`.
    pub(crate) fn run(&self, args: &[&str]) -> std::process::Output {
        through(&self.dir.path().join("client"), &self.server.addr, args)
    }

    /// Creates VM `name` in the pair's zone (1 CPU, 256 MiB, the counting
    /// guest on a 1 GiB disk from `base`) with `extra` arguments, and
    /// answers what `instance create -o json` printed. Its domain is
    /// destroyed on both daemons when the pair is dropped.
    pub(crate) fn create_counter(&mut self, name: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "instance",
            "create",
            "--name",
            name,
            "--type",
            "vm",
            "--zone",
            &self.zone,
            "--image",
            "base",
            "--disk",
            "1",
            "--kernel",
            "k1",
            "--initrd",
            "counter",
            "--cmdline",
            "console=ttyS0 panic=-1 quiet",
            "--cpus",
            "1",
            "--memory",
            "256",
        ];
        args.extend_from_slice(extra);
        let created = zixiao_testing::output::json(self.run(&args));
        let id = created["id"].as_str().expect("id").to_owned();
        for uri in [&self.uri1, &self.uri2] {
            self.guards.push(DomainGuard {
                uri: uri.clone(),
                id: id.clone(),
            });
        }
        created
    }

    /// The counts VM `name` printed, once one is above `above` (two
    /// minutes at most).
    pub(crate) async fn counts_past(&self, name: &str, above: u64) -> Vec<u64> {
        let client_dir = self.dir.path().join("client");
        zixiao_testing::wait::wait_until(
            &format!("{name} to count past {above}"),
            Duration::from_secs(120),
            || {
                let counts = logged_counts(&client_dir, &self.server.addr, name);
                async move { counts.iter().any(|&n| n > above).then_some(counts) }
            },
        )
        .await
    }
}
