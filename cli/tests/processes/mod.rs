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
    start_logging(state, args, Stdio::null())
}

/// [`start`], its log (stderr) going to `log`.
pub(crate) fn start_logging(state: &Path, args: &[&str], log: impl Into<Stdio>) -> Running {
    let mut command = command(state);
    command.stderr(log);
    listening(command, args)
}

/// Starts node `node`'s agent, its state in `state`, joining the server at
/// `server` in zone `zone` on loopback, as the migration tests run their
/// nodes: without host networks, watchdog or smoke test. `global` flags
/// go before `agent` (a runtime's settings), `extra` ones after it.
pub(crate) fn lab_agent(
    state: &Path,
    server: &str,
    (node, zone): (&str, &str),
    global: &[&str],
    extra: &[&str],
) -> Running {
    let mut args = global.to_vec();
    args.extend([
        "agent",
        "--server",
        server,
        "--no-networks",
        "--no-watchdog",
        "--skip-smoke-test",
        "--name",
        node,
        "--zone",
        zone,
        "--listen",
        "127.0.0.1:0",
    ]);
    args.extend_from_slice(extra);
    start(state, &args)
}

/// Starts `zixiao ARGS` as [`start`] does, inside the network namespace
/// pinned at `netns` (a node's "host" in a test): it, and what it starts,
/// see only that namespace's links and addresses.
pub(crate) fn start_in_netns(netns: &Path, state: &Path, args: &[&str]) -> Running {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let ns = std::fs::File::open(netns).expect("open the network namespace");
    let mut command = command(state);
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setns(2), which is async-signal-safe; `ns` is an open file the
    // closure owns, so its descriptor is valid there.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    // Its log, for a failing test to show.
    let log = std::fs::File::create(state.with_extension("log")).expect("the process's log");
    command.stderr(log);
    listening(command, args)
}

/// Spawns `command ARGS` and waits for its "... listening on ADDR" line.
fn listening(mut command: Command, args: &[&str]) -> Running {
    let mut child = command
        .args(args)
        .stdout(Stdio::piped())
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
#[cfg(any(feature = "libvirt", feature = "microvm"))]
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
#[cfg(any(
    all(feature = "etcd", feature = "containerd"),
    feature = "libvirt",
    feature = "microvm"
))]
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

/// What the live and cold migration tests run on: the two libvirtds
/// (`ZIXIAO_TEST_LIBVIRT_URI` and `ZIXIAO_TEST_LIBVIRT2_URI`), a directory
/// both daemons' QEMU can search (short and plain: they open the nodes'
/// images and overlays), an embedded server, and the VM artifacts
/// (the test kernel, base disk and a counter initramfs).
#[cfg(feature = "libvirt")]
pub(crate) struct TwoLibvirts {
    pub(crate) uri1: String,
    pub(crate) uri2: String,
    pub(crate) kernel: String,
    pub(crate) base: String,
    pub(crate) counter: String,
    pub(crate) zone: String,
    pub(crate) server: Running,
    pub(crate) dir: tempfile::TempDir,
}

#[cfg(feature = "libvirt")]
impl TwoLibvirts {
    /// The set-up under a directory named from `prefix`, or `None` (the
    /// test is skipped, or fails under `ZIXIAO_REQUIRE_RUNTIMES`) when a
    /// daemon or artifact is missing.
    pub(crate) fn start(prefix: &str) -> Option<TwoLibvirts> {
        use std::os::unix::fs::PermissionsExt;
        use zixiao_testing::wait::runtime_endpoint;
        let uri1 = runtime_endpoint("ZIXIAO_TEST_LIBVIRT_URI", "libvirt")?;
        let uri2 = runtime_endpoint("ZIXIAO_TEST_LIBVIRT2_URI", "the second libvirtd")?;
        let kernel = runtime_endpoint("ZIXIAO_TEST_VM_KERNEL", "kernel")?;
        let base = runtime_endpoint("ZIXIAO_TEST_VM_BASE_IMAGE", "disk")?;
        let root = std::path::PathBuf::from(
            std::env::var("ZIXIAO_TEST_DIR").unwrap_or_else(|_| "/tmp/zixiao-test".to_owned()),
        )
        .join("libvirt");
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&root)
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let counter = dir.path().join("counter.cpio");
        zixiao_testing::guest::counter_initramfs(&counter).expect("the counter initramfs");
        let server = embedded_server(&dir.path().join("server"));
        Some(TwoLibvirts {
            uri1,
            uri2,
            kernel,
            base,
            counter: counter.to_string_lossy().into_owned(),
            zone: format!("{prefix}{}", std::process::id()),
            server,
            dir,
        })
    }

    /// Imports the VM's artifacts into node `node`'s image store on `uri`:
    /// the kernel and initrd, and the base disk unless `without_disk`.
    pub(crate) fn import_images(&self, node: &str, uri: &str, without_disk: bool) {
        let mut images = vec![
            (self.kernel.as_str(), "kernel", "k1"),
            (self.counter.as_str(), "initrd", "counter"),
        ];
        if !without_disk {
            images.push((self.base.as_str(), "disk", "base"));
        }
        import_node_images(&self.dir.path().join(node), uri, &images);
    }

    /// Starts node `node`'s agent on libvirt `uri` with `extra` flags.
    pub(crate) fn agent(&self, node: &str, uri: &str, extra: &[&str]) -> Running {
        lab_agent(
            &self.dir.path().join(node),
            &self.server.addr,
            (node, &self.zone),
            &["--libvirt-uri", uri],
            extra,
        )
    }

    /// Runs the CLI through the server, its own state in `client/`.
    pub(crate) fn run(&self, args: &[&str]) -> std::process::Output {
        through(&self.dir.path().join("client"), &self.server.addr, args)
    }

    /// Creates counter VM `name` (1 GiB disk on the base image, 256 MiB).
    pub(crate) fn create_counter(&self, name: &str) -> serde_json::Value {
        self.create_counter_with(name, &[])
    }

    /// Creates counter VM `name` as [`TwoLibvirts::create_counter`] does,
    /// with `extra` arguments.
    pub(crate) fn create_counter_with(&self, name: &str, extra: &[&str]) -> serde_json::Value {
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
        zixiao_testing::output::json(self.run(&args))
    }

    /// Node `node`'s file `name` of instance `id` (its libvirt state).
    pub(crate) fn instance_file(&self, node: &str, id: &str, name: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join(node)
            .join("runtime/libvirt")
            .join(id)
            .join(name)
    }

    /// Waits until counter VM `name`'s console, read through the server,
    /// shows a count past `above`; returns the counts.
    pub(crate) async fn counts_past(&self, name: &str, above: u64) -> Vec<u64> {
        let client_dir = self.dir.path().join("client");
        zixiao_testing::wait::wait_until(
            &format!("the guest to count past {above}"),
            Duration::from_secs(120),
            || {
                let counts = logged_counts(&client_dir, &self.server.addr, name);
                async move { counts.iter().any(|&n| n > above).then_some(counts) }
            },
        )
        .await
    }
}

/// Two nodes of a [`TwoLibvirts`] set-up: node A on the first daemon,
/// ready once [`LibvirtPair::start`] returns, and node B on the second
/// ([`LibvirtPair::start_b`]), which takes live migrations (the first
/// cannot be reached from the second, so migrations go from A to B). Each
/// node's image store holds the counting guest: disk `base`, kernel `k1`,
/// initrd `counter`. What it starts is stopped, and the domains of the VMs
/// it created destroyed, when dropped; the set-up is reached through it
/// (`pair.run(...)`, `pair.counts_past(...)`).
#[cfg(feature = "libvirt")]
pub(crate) struct LibvirtPair {
    pub(crate) a: String,
    pub(crate) b: String,
    pub(crate) client: Client,
    agents: Vec<Running>,
    guards: Vec<DomainGuard>,
    /// Last: its server stops and its directory goes once the agents
    /// stopped and the domains are gone.
    set: TwoLibvirts,
}

#[cfg(feature = "libvirt")]
impl std::ops::Deref for LibvirtPair {
    type Target = TwoLibvirts;

    fn deref(&self) -> &TwoLibvirts {
        &self.set
    }
}

#[cfg(feature = "libvirt")]
impl LibvirtPair {
    /// The server and node A, once A is ready; `None` (saying why) when
    /// the libvirt services are not running and the tests may skip.
    /// `prefix` names the nodes, the zone and the directory.
    pub(crate) async fn start(prefix: &str) -> Option<LibvirtPair> {
        let set = TwoLibvirts::start(&format!("zx-{prefix}-"))?;
        let pid = std::process::id();
        let (a, b) = (format!("{prefix}-a-{pid}"), format!("{prefix}-b-{pid}"));
        set.import_images(&a, &set.uri1, false);
        set.import_images(&b, &set.uri2, false);
        let client = zixiao_api::connect(&set.server.addr).expect("client");
        let mut pair = LibvirtPair {
            a,
            b,
            client,
            agents: Vec::new(),
            guards: Vec::new(),
            set,
        };
        let (a, uri1) = (pair.a.clone(), pair.set.uri1.clone());
        pair.start_agent(&a, &uri1, &[]).await;
        Some(pair)
    }

    /// Node A's and B's names and the first and second daemons' URIs,
    /// owned, for a test that goes on to start more on the pair.
    pub(crate) fn names(&self) -> (String, String, String, String) {
        (
            self.a.clone(),
            self.b.clone(),
            self.set.uri1.clone(),
            self.set.uri2.clone(),
        )
    }

    /// Starts node B, taking live migrations on the second daemon, and
    /// waits until it is ready.
    pub(crate) async fn start_b(&mut self) {
        let (b, uri2) = (self.b.clone(), self.set.uri2.clone());
        let extra = [
            "--libvirt-migration-uri",
            &uri2,
            "--libvirt-migration-address",
            "127.0.0.1",
        ];
        self.start_agent(&b, &uri2, &extra).await;
    }

    /// Starts an agent for node `node` on libvirt `uri` with `extra`
    /// arguments (see [`TwoLibvirts::agent`]), and waits until the node is
    /// ready.
    pub(crate) async fn start_agent(&mut self, node: &str, uri: &str, extra: &[&str]) {
        let agent = self.set.agent(node, uri, extra);
        self.agents.push(agent);
        wait_for_status(&self.client, node, NodeStatus::Ready).await;
    }

    /// Kills the server (as a crash does: no clean shutdown) and starts it
    /// again on the same state and address, where the agents find it.
    pub(crate) fn restart_server(&mut self) {
        let set = &mut self.set;
        let addr = set.server.addr.clone();
        let _ = set.server.child.kill();
        let _ = set.server.child.wait();
        set.server = start(
            &set.dir.path().join("server"),
            &[
                "server",
                "--embedded",
                "--insecure-no-tls",
                "--listen",
                &addr,
            ],
        );
        assert_eq!(set.server.addr, addr, "the server moved");
    }

    /// Creates counter VM `name` (see [`TwoLibvirts::create_counter`])
    /// with `extra` arguments; its domain is destroyed on both daemons
    /// when the pair is dropped.
    pub(crate) fn create_counter(&mut self, name: &str, extra: &[&str]) -> serde_json::Value {
        let created = self.set.create_counter_with(name, extra);
        let id = created["id"].as_str().expect("id").to_owned();
        for uri in [&self.set.uri1, &self.set.uri2] {
            self.guards.push(DomainGuard {
                uri: uri.clone(),
                id: id.clone(),
            });
        }
        created
    }
}
