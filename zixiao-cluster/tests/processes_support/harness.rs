//! The harness of the multi-process tests: it starts servers and agents as
//! child processes (the test binary in a role), kills them, waits for what
//! a user would see through the API, and checks from every node's own
//! records that no instance ever ran on two nodes at once. Dropping it
//! kills every process it started, on success and on failure alike; on
//! failure (or with `ZIXIAO_TEST_KEEP_LOGS=1`) it keeps the processes' logs
//! and node directories and prints where.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zixiao_cluster::timing::monotonic_ms;
use zixiao_cluster::watchdog;
use zixiao_core::{Client, InstanceStatus, NodeStatus};

use super::file_driver::log_event;
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

    /// The directory of its fake runtime (state files and `events.log`).
    pub(crate) fn runtime(&self) -> PathBuf {
        self.dir.join("runtime")
    }
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
            root,
        }
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
        ];
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

    /// A client of the first live server.
    pub(crate) fn compute(&self) -> Client {
        zixiao_api::connect(&self.live_server()).expect("client")
    }

    /// A client of the first live server, for node operations.
    pub(crate) fn cluster(&self) -> Client {
        zixiao_api::connect(&self.live_server()).expect("client")
    }

    /// The index of node `name`.
    pub(crate) fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("node")
    }

    /// Kills every process of node `i` at once; its instances die with it.
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
        let at = monotonic_ms();
        let _ = agent.child.wait();
        // The node's power is gone: what ran there stopped at `at`.
        let runtime = self.nodes[i].runtime();
        for entry in std::fs::read_dir(&runtime).into_iter().flatten().flatten() {
            let path = entry.path();
            if std::fs::read_to_string(&path).is_ok_and(|s| s == "running") {
                let id = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_owned();
                std::fs::write(&path, "exited").expect("power off");
                log_event(&runtime, "stop", &id, at).expect("log");
            }
        }
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
        let mut intervals: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
        let now = monotonic_ms();
        for node in &self.nodes {
            for (id, from, to) in runs(node, now) {
                intervals
                    .entry(id)
                    .or_default()
                    .push((from, to, node.name.clone()));
            }
        }
        for id in ids {
            assert!(intervals.contains_key(id), "{id} has no records");
        }
        let mut checked = 0;
        for (id, mut runs) in intervals {
            runs.sort();
            for pair in runs.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                assert!(
                    a.1 <= b.0 || a.2 == b.2,
                    "instance {id} ran on {} [{}, {}] and on {} [{}, {}] at once",
                    a.2,
                    a.0,
                    a.1,
                    b.2,
                    b.0,
                    b.1
                );
            }
            checked += 1;
        }
        assert!(checked >= ids.len(), "every instance has records");
        eprintln!(
            "{}: {checked} instances never ran on two nodes at once",
            self.tag
        );
    }
}

/// Node `node`'s runs of each instance, from its `events.log`: `(id, from,
/// to)` in monotonic ms, `to` = `now` for what still runs.
pub(crate) fn runs(node: &NodeProc, now: u64) -> Vec<(String, u64, u64)> {
    let log = std::fs::read_to_string(node.runtime().join("events.log")).unwrap_or_default();
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [what, id, at] = parts[..] else { continue };
        let at: u64 = at.parse().expect("time");
        match what {
            "start" => {
                open.insert(id.to_owned(), at);
            }
            _ => {
                if let Some(from) = open.remove(id) {
                    out.push((id.to_owned(), from, at));
                }
            }
        }
    }
    out.extend(open.into_iter().map(|(id, from)| (id, from, now)));
    out
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
        let keep = std::env::var("ZIXIAO_TEST_KEEP_LOGS").is_ok_and(|v| v == "1");
        if std::thread::panicking() || keep {
            if let Ok(empty) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.root, empty).keep();
                eprintln!("{}: logs kept in {}", self.tag, kept.display());
            }
        }
    }
}

/// Polls `probe` every 10 ms until it gives a value; panics after `limit`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `n` nodes are Ready.
pub(crate) async fn ready_nodes(cluster: &Client, n: usize) {
    wait_for("every node ready", Duration::from_secs(30), || async {
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
