//! The harness of the multi-process tests: it starts servers and agents as
//! child processes (the test binary in a role), kills them, waits for what
//! a user would see through the API, checks from every node's own records
//! that no instance ever ran on two nodes at once, and checks that the
//! nodes' runtimes hold exactly what the store says
//! ([`Harness::runtimes_agree`]). Its nodes run the fake file runtime or
//! the real ones ([`Runtime`]).
//!
//! Everything speaks TLS, as a cluster on a network must: the harness
//! makes the cluster's CA, an admin and a reusable join token
//! ([`Harness::secure`]); servers serve TLS with certificates they issue
//! themselves, agents join with the token and then talk mutual TLS with
//! their node certificates, and the test's clients call with the admin's
//! token.
//!
//! A node that dies ([`Harness::kill_node`]) loses its power: its agent and
//! watchdog get `kill -9`, and so do its workloads, fake or real (every
//! task of its containerd namespace, every QEMU naming its directory:
//! zixiao-testing's `RuntimeView::power_off`); what they leave (containers,
//! run directories) stays, as on a disk, for the node to clean up when it
//! comes back.
//!
//! Dropping it kills every process it started and everything its nodes
//! ran, and removes their containerd namespaces, on success and on failure
//! alike; on failure (or with `ZIXIAO_TEST_KEEP_LOGS=1`) it keeps the
//! processes' logs and node directories and prints where.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zixiao_cluster::timing::monotonic_ms;
use zixiao_cluster::watchdog;
use zixiao_core::{Client, InstanceStatus, NodeStatus};
use zixiao_testing::counting_driver::CreateHold;
use zixiao_testing::runtime_events::{never_twice, EventLog, Run};
use zixiao_testing::runtimes::{
    discrepancies, ContainerdNamespace, MonitorProcesses, NodeRuntimes, RuntimeView,
};
use zixiao_testing::wait::{runtime_endpoint, wait_until, wait_until_ok};

use super::file_driver::FileRuntime;
use super::roles::{log_file, ROLE};

/// A child process in a role, and the address it serves on.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

/// Starts the test binary in `role` with `vars`; returns once it serves.
pub(crate) fn spawn(role: &str, vars: &[(&str, String)], log: Stdio) -> Proc {
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command.env(ROLE, role).stdout(Stdio::piped()).stderr(log);
    for (k, v) in vars {
        command.env(k, v);
    }
    die_with_parent(&mut command);
    let mut child = command.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
    let addr = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("{role} did not start: {line:?}"))
        .to_owned();
    Proc { child, addr }
}

/// Makes `command`'s process get SIGKILL when the test dies, even by
/// `kill -9` (children it forks, like an agent's watchdog, do not inherit this).
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
    // SAFETY: kill(2) with a pid this test started; no memory is touched.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// What the nodes' agents run instances on.
#[derive(Debug, Clone)]
pub(crate) enum Runtime {
    /// The fake file-backed runtime of `file_driver`.
    Files,
    /// containerd and QEMU, from `scripts/services/{containerd,microvm}.sh`.
    Real(RealRuntimes),
}

/// Where the real runtimes and what they run are.
#[derive(Debug, Clone)]
pub(crate) struct RealRuntimes {
    pub(crate) containerd_socket: PathBuf,
    /// The busybox OCI archive every node imports.
    pub(crate) busybox: PathBuf,
    pub(crate) qemu: PathBuf,
    /// The microVMs' kernel and initramfs (whose /init prints `ZIXIAO-BOOT-OK`).
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
}

impl RealRuntimes {
    /// From the `ZIXIAO_TEST_*` variables the services' scripts export;
    /// `None` (after saying why) when one is missing and runtimes are not
    /// required, a panic when they are.
    pub(crate) fn from_env() -> Option<Self> {
        let var = |name: &str, what: &str| runtime_endpoint(name, what).map(PathBuf::from);
        Some(RealRuntimes {
            containerd_socket: var("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")?,
            busybox: var("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox image")?,
            qemu: var("ZIXIAO_TEST_MICROVM_QEMU", "QEMU")?,
            kernel: var("ZIXIAO_TEST_MICROVM_KERNEL", "the test microVM kernel")?,
            initrd: var("ZIXIAO_TEST_MICROVM_INITRD", "the test microVM initramfs")?,
        })
    }
}

/// One compute node: its agent process (with its watchdog) and its state.
pub(crate) struct NodeProc {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) agent: Option<Proc>,
    /// When the whole node was last killed (monotonic ms).
    pub(crate) deaths: Vec<u64>,
    /// The network namespace its processes join (none: the test's own).
    pub(crate) netns: Option<PathBuf>,
    /// Where its agent listens (none: loopback).
    pub(crate) listen: Option<String>,
}

impl NodeProc {
    /// Node `name` with its state under `dir`, in the test's namespace.
    pub(crate) fn new(name: String, dir: PathBuf) -> Self {
        NodeProc {
            name,
            dir,
            agent: None,
            deaths: Vec::new(),
            netns: None,
            listen: None,
        }
    }

    /// The directory of its runtimes' files and of its event log.
    pub(crate) fn runtime(&self) -> PathBuf {
        self.dir.join("runtime")
    }

    /// Its log of what reached its runtime.
    pub(crate) fn events(&self) -> EventLog {
        EventLog::in_dir(&self.runtime())
    }

    /// What holds its creates halfway.
    pub(crate) fn hold(&self) -> CreateHold {
        CreateHold::in_dir(&self.runtime())
    }

    /// Where its microVMs' run directories are (`<id>/` each).
    pub(crate) fn microvm_dir(&self) -> PathBuf {
        self.runtime().join("microvm")
    }
}

/// What the harness's clients and agents present.
struct Tokens {
    /// The cluster CA certificate, PEM.
    ca_pem: String,
    /// The admin's bearer token.
    admin: String,
    /// A reusable join token for the agents.
    join: String,
}

/// Servers and agents of one test cluster.
pub(crate) struct Harness {
    /// Prefix of the progress lines it prints.
    pub(crate) tag: &'static str,
    pub(crate) etcd: String,
    pub(crate) prefix: String,
    /// Where servers listen (none: loopback).
    pub(crate) server_listen: Option<String>,
    pub(crate) servers: Vec<Option<Proc>>,
    pub(crate) server_addrs: Vec<String>,
    pub(crate) nodes: Vec<NodeProc>,
    /// The cluster's CA and its key: every server gets this directory.
    pub(crate) pki: PathBuf,
    /// The admin's token and the agents' join token, once
    /// [`Harness::secure`] made them.
    tokens: Option<Tokens>,
    /// What the nodes run instances on (set before agents start).
    pub(crate) runtime: Runtime,
    /// Each node's memory in MiB (none: plenty).
    pub(crate) node_memory_mib: Option<u64>,
    pub(crate) root: tempfile::TempDir,
}

impl Harness {
    /// A harness on the etcd at `etcd` with a fresh key prefix and `nodes`
    /// nodes named `node-N` under `root`; nothing started yet.
    pub(crate) fn new(
        tag: &'static str,
        etcd: String,
        root: tempfile::TempDir,
        nodes: usize,
    ) -> Self {
        Harness {
            tag,
            etcd,
            prefix: format!("/zixiao-test-{}", uuid::Uuid::new_v4().simple()),
            server_listen: None,
            servers: Vec::new(),
            server_addrs: Vec::new(),
            nodes: (0..nodes)
                .map(|i| NodeProc::new(format!("node-{i}"), root.path().join(format!("node-{i}"))))
                .collect(),
            pki: root.path().join("pki"),
            tokens: None,
            runtime: Runtime::Files,
            node_memory_mib: None,
            root,
        }
    }

    /// The real runtimes, when the nodes run them.
    pub(crate) fn real(&self) -> Option<&RealRuntimes> {
        match &self.runtime {
            Runtime::Files => None,
            Runtime::Real(real) => Some(real),
        }
    }

    /// Node `i`'s containerd namespace: its own, named after this run, so
    /// nodes never see each other's containers, nor another run's.
    pub(crate) fn containerd_namespace(&self, i: usize) -> String {
        let run = self.prefix.trim_start_matches("/zixiao-test-");
        format!("zixiao-test-{}-{}", &run[..8], self.nodes[i].name)
    }

    /// Node `i`'s runtimes, seen from outside.
    pub(crate) fn views(&self, i: usize) -> Vec<Box<dyn RuntimeView>> {
        let node = &self.nodes[i];
        match &self.runtime {
            Runtime::Files => vec![Box::new(FileRuntime {
                dir: node.runtime(),
            })],
            Runtime::Real(real) => vec![
                Box::new(ContainerdNamespace::new(
                    &real.containerd_socket,
                    self.containerd_namespace(i),
                )),
                Box::new(MonitorProcesses::new(node.microvm_dir())),
            ],
        }
    }

    /// Waits until every node's runtimes hold exactly what the store says
    /// (zixiao-testing's `discrepancies`): a workload runs only for an
    /// instance the store has running on that node, each running instance
    /// runs exactly once, and a node whose agent is up and not in `away`
    /// holds nothing of what it no longer should. Nodes without an agent
    /// and those in `away` (cut off) may keep residue, never a workload.
    /// Failover and clean-up take seconds: it polls for 60 s, then panics
    /// with what still disagrees.
    pub(crate) async fn runtimes_agree(&self, away: &[usize]) {
        let compute = self.compute();
        let started = Instant::now();
        wait_until_ok(
            &format!("{}: the runtimes to hold what the store says", self.tag),
            Duration::from_secs(60),
            || async {
                let instances = compute
                    .list_instances(Default::default())
                    .await
                    .map_err(|e| format!("listing instances: {e}"))?;
                let nodes: Vec<NodeRuntimes> = (0..self.nodes.len())
                    .map(|i| NodeRuntimes {
                        node: self.nodes[i].name.clone(),
                        reachable: self.nodes[i].agent.is_some() && !away.contains(&i),
                        views: self.views(i),
                    })
                    .collect();
                let found = discrepancies(&instances, &nodes);
                if found.is_empty() {
                    Ok(())
                } else {
                    Err(found.join("\n"))
                }
            },
        )
        .await;
        self.note(&format!(
            "the runtimes agree with the store after {:?}",
            started.elapsed()
        ));
    }

    /// Makes the cluster's CA (in [`Harness::pki`]), its admin with a
    /// token for the test's clients, and a reusable join token for the
    /// agents, as `zixiao server init` and `zixiao token create --role
    /// agent --reusable` do. Once; before any server starts.
    pub(crate) async fn secure(&mut self) {
        if self.tokens.is_some() {
            return;
        }
        let pki = zixiao_auth::Pki::init(&self.pki, "zixiao-test").expect("the cluster CA");
        let store = super::roles::etcd_store(&self.etcd, &self.prefix).await;
        let accounts =
            zixiao_auth::AuthStore::new(store, std::sync::Arc::new(zixiao_core::SystemClock));
        let admin = zixiao_auth::UserName::try_from("admin").expect("a user name");
        accounts
            .create_user(admin.clone(), zixiao_auth::Role::Admin, Default::default())
            .await
            .expect("the admin");
        let (_, admin_token) = accounts
            .issue_user_token(&admin, zixiao_auth::Role::Admin, None, None)
            .await
            .expect("the admin's token");
        let (_, join) = accounts
            .issue_join_token(&admin, true, None)
            .await
            .expect("a join token");
        self.tokens = Some(Tokens {
            ca_pem: pki.ca_pem().to_owned(),
            admin: admin_token.expose().to_owned(),
            join: join.expose().to_owned(),
        });
        self.note("the cluster CA, its admin and a join token are made");
    }

    fn tokens(&self) -> &Tokens {
        self.tokens
            .as_ref()
            .expect("the harness made its CA and tokens (Harness::secure)")
    }

    /// Starts `n` servers and remembers their addresses for the agents.
    pub(crate) fn start_servers(&mut self, n: usize) {
        for i in 0..n {
            let server = self.start_server(i);
            self.server_addrs.push(server.addr.clone());
            self.servers.push(Some(server));
        }
    }

    /// Starts `servers` servers and every node's agent, and waits until
    /// every node is Ready.
    pub(crate) async fn start_cluster(&mut self, servers: usize) {
        self.secure().await;
        self.start_servers(servers);
        for i in 0..self.nodes.len() {
            self.start_agent(i);
        }
        ready_nodes(&self.cluster(), self.nodes.len()).await;
    }

    /// Starts node `i`'s agent (which starts its watchdog).
    pub(crate) fn start_agent(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut vars = vec![
            ("ZX_NAME", node.name.clone()),
            ("ZX_DIR", node.dir.display().to_string()),
            ("ZX_SERVERS", self.server_addrs.join(",")),
            (
                "ZX_CA",
                self.pki
                    .join(zixiao_auth::pki::CA_CERT_FILE)
                    .display()
                    .to_string(),
            ),
            ("ZX_JOIN_TOKEN", self.tokens().join.clone()),
        ];
        if let Some(real) = self.real() {
            vars.extend([
                ("ZX_RUNTIME", "real".to_owned()),
                (
                    "ZX_CONTAINERD_SOCKET",
                    real.containerd_socket.display().to_string(),
                ),
                ("ZX_CONTAINERD_NAMESPACE", self.containerd_namespace(i)),
                ("ZX_QEMU", real.qemu.display().to_string()),
                ("ZX_IMAGE_ARCHIVE", real.busybox.display().to_string()),
                ("ZX_MICROVM_KERNEL", real.kernel.display().to_string()),
                ("ZX_MICROVM_INITRD", real.initrd.display().to_string()),
            ]);
        }
        if let Some(memory) = self.node_memory_mib {
            vars.push(("ZX_MEMORY_MIB", memory.to_string()));
        }
        if let Some(netns) = &node.netns {
            vars.push(("ZX_NETNS", netns.display().to_string()));
        }
        if let Some(listen) = &node.listen {
            vars.push(("ZX_LISTEN", listen.clone()));
        }
        let proc = spawn("agent", &vars, log_file(&node.dir, "agent.log"));
        self.note(&format!(
            "agent of {} started: pid {} at {}",
            node.name,
            proc.child.id(),
            proc.addr
        ));
        self.nodes[i].agent = Some(proc);
    }

    /// Starts server `i` (`server-i`).
    pub(crate) fn start_server(&mut self, i: usize) -> Proc {
        let mut vars = vec![
            ("ZX_ETCD", self.etcd.clone()),
            ("ZX_PREFIX", self.prefix.clone()),
            ("ZX_ID", format!("server-{i}")),
            ("ZX_PKI", self.pki.display().to_string()),
        ];
        if let Some(listen) = &self.server_listen {
            vars.push(("ZX_LISTEN", listen.clone()));
        }
        let proc = spawn(
            "server",
            &vars,
            log_file(self.root.path(), &format!("server-{i}.log")),
        );
        self.note(&format!(
            "server-{i} started: pid {} at {}",
            proc.child.id(),
            proc.addr
        ));
        proc
    }

    /// Starts server `i` again where it served before (agents and clients
    /// know its address), after it was killed.
    pub(crate) fn restart_server(&mut self, i: usize) {
        let listen = self.server_addrs[i].clone();
        let saved = self.server_listen.replace(listen);
        let server = self.start_server(i);
        self.server_listen = saved;
        assert_eq!(server.addr, self.server_addrs[i], "server-{i} moved");
        self.servers[i] = Some(server);
    }

    /// Appends `what` with the monotonic time to `harness.log` in the
    /// test's directory, next to the processes' logs.
    pub(crate) fn note(&self, what: &str) {
        use std::io::Write;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("harness.log"));
        if let Ok(mut log) = log {
            let _ = writeln!(log, "{} {what}", monotonic_ms());
        }
    }

    fn live_server(&self) -> String {
        self.servers
            .iter()
            .flatten()
            .next()
            .expect("a live server")
            .addr
            .clone()
    }

    /// An admin's client of the server at `addr`, over TLS.
    fn client(&self, addr: &str) -> Client {
        let tokens = self.tokens();
        zixiao_api::connect_with(zixiao_api::ConnectOptions {
            endpoint: format!("https://{addr}"),
            ca_pem: Some(tokens.ca_pem.clone()),
            token: Some(tokens.admin.clone()),
            client_identity: None,
        })
        .expect("client")
    }

    /// A client of the first live server.
    pub(crate) fn compute(&self) -> Client {
        self.client(&self.live_server())
    }

    /// A client of server `i`.
    pub(crate) fn compute_of(&self, i: usize) -> Client {
        self.client(&self.server_addrs[i])
    }

    /// The index of a live server that does not lead: requests through it
    /// are served by one process while the leader's loop converges in
    /// another, where converging twice would show.
    pub(crate) async fn follower(&self) -> usize {
        let cluster = self.cluster();
        wait_until("a leader", Duration::from_secs(20), || async {
            let leader = cluster.cluster_info().await.ok()?.leader?;
            (0..self.servers.len())
                .find(|i| self.servers[*i].is_some() && leader != format!("server-{i}"))
        })
        .await
    }

    /// A client of the first live server, for node operations.
    pub(crate) fn cluster(&self) -> Client {
        self.client(&self.live_server())
    }

    /// The index of node `name`.
    pub(crate) fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("node")
    }

    /// Kills every process of node `i` at once, its workloads too (see the
    /// module's doc); its instances die with it.
    pub(crate) fn kill_node(&mut self, i: usize) -> u64 {
        let watchdog_pid = watchdog::WatchdogFiles::new(&self.nodes[i].dir).pid();
        let mut agent = self.nodes[i].agent.take().expect("agent");
        self.note(&format!(
            "node {} killed: agent pid {}, watchdog pid {watchdog_pid:?}",
            self.nodes[i].name,
            agent.child.id()
        ));
        kill9(agent.child.id() as i32);
        if let Some(pid) = watchdog_pid {
            kill9(pid);
        }
        let _ = agent.child.wait();
        // The node's power is gone: what ran there stopped.
        for view in self.views(i) {
            view.power_off()
                .unwrap_or_else(|e| panic!("powering {} off: {e}", self.nodes[i].name));
        }
        let at = monotonic_ms();
        self.nodes[i].events().stop_all(at).expect("log");
        self.nodes[i].deaths.push(at);
        at
    }

    /// Kills node `i`'s agent alone (its watchdog lives on).
    pub(crate) fn kill_agent(&mut self, i: usize) {
        let mut agent = self.nodes[i].agent.take().expect("agent");
        self.note(&format!(
            "agent of {} killed: pid {}",
            self.nodes[i].name,
            agent.child.id()
        ));
        kill9(agent.child.id() as i32);
        let _ = agent.child.wait();
    }

    /// Asks node `i`'s agent to leave the cluster (SIGTERM: it drains,
    /// deregisters and stops its watchdog) and waits for it to exit.
    /// Returns whether it exited cleanly.
    pub(crate) fn leave(&mut self, i: usize) -> bool {
        let mut agent = self.nodes[i].agent.take().expect("agent");
        self.note(&format!("agent of {} leaves", self.nodes[i].name));
        // SAFETY: kill(2) with a pid this test started; no memory is touched.
        unsafe {
            libc::kill(agent.child.id() as i32, libc::SIGTERM);
        }
        agent.child.wait().is_ok_and(|status| status.success())
    }

    /// From each node's own event log: the intervals in which it ran each
    /// instance never overlap another node's. `ids` must all have records.
    pub(crate) fn check_never_twice(&self, ids: &[String]) {
        let now = monotonic_ms();
        let per_node: Vec<(String, Vec<Run>)> = self
            .nodes
            .iter()
            .map(|node| (node.name.clone(), node.events().runs(now)))
            .collect();
        for id in ids {
            assert!(
                per_node
                    .iter()
                    .any(|(_, runs)| runs.iter().any(|r| &r.instance == id)),
                "{id} has no records"
            );
        }
        let checked = never_twice(&per_node).unwrap_or_else(|overlap| panic!("{overlap}"));
        eprintln!(
            "{}: {checked} instances never ran on two nodes at once",
            self.tag
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut agent) = node.agent.take() {
                kill9(agent.child.id() as i32);
                let _ = agent.child.wait();
            }
            if let Some(pid) = watchdog::WatchdogFiles::new(&node.dir).pid() {
                kill9(pid);
            }
        }
        for server in self.servers.iter_mut().flatten() {
            kill9(server.child.id() as i32);
            let _ = server.child.wait();
        }
        // What the nodes ran goes with them; a shared containerd keeps no
        // namespace of a finished test.
        for i in 0..self.nodes.len() {
            for view in self.views(i) {
                if let Err(e) = view.power_off() {
                    eprintln!("{}: cleaning up {}: {e}", self.tag, self.nodes[i].name);
                }
            }
            if let Some(real) = self.real() {
                let namespace =
                    ContainerdNamespace::new(&real.containerd_socket, self.containerd_namespace(i));
                if let Err(e) = namespace.remove() {
                    eprintln!("{}: removing {}: {e}", self.tag, namespace.namespace());
                }
            }
        }
        let keep = std::env::var("ZIXIAO_TEST_KEEP_LOGS").is_ok_and(|v| v == "1");
        if std::thread::panicking() || keep {
            if let Ok(empty) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.root, empty).keep();
                eprintln!("{}: logs kept in {}", self.tag, kept.display());
            }
        }
    }
}

/// Waits until `n` nodes are Ready.
pub(crate) async fn ready_nodes(cluster: &Client, n: usize) {
    wait_until("every node ready", Duration::from_secs(30), || async {
        let nodes = cluster.list_nodes().await.ok()?;
        (nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Ready)
            .count()
            == n)
            .then_some(())
    })
    .await;
}

/// Waits until none of `ids` is on `node` and all run elsewhere; returns
/// when. On timeout it panics with what it saw last.
pub(crate) async fn all_moved(compute: &Client, ids: &[String], node: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = Vec::new();
        for id in ids {
            match compute.get_instance(id).await {
                Ok(i) => seen.push(Ok((i.name, i.node, i.status))),
                Err(e) => seen.push(Err(e.to_string())),
            }
        }
        let moved = seen.iter().all(|i| {
            i.as_ref().is_ok_and(|(_, at, status)| {
                at.is_some() && at.as_deref() != Some(node) && *status == InstanceStatus::Running
            })
        });
        if moved {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for instances to leave {node} and run elsewhere: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `p`th percentile of `samples` (nearest rank).
pub(crate) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p / 100.0) * (samples.len() as f64)).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}
