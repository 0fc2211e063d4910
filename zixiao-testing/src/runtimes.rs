//! What the runtimes of a test's nodes really hold, compared with what the
//! store says ([`discrepancies`]): every workload that runs belongs to an
//! instance the store has running or paused on that node, every instance
//! the store has running runs exactly once, and a node that is up holds
//! nothing (not even a stopped container or a run directory) of an
//! instance deleted or placed elsewhere.
//!
//! A [`RuntimeView`] looks at one runtime of one node from outside the
//! product: [`ContainerdNamespace`] through `ctr` (containerd's own client),
//! [`MonitorProcesses`] through the process table (a microVM's QEMU or
//! zixiao-vmm names its run directory on its command line; asked, the
//! monitors say whether their guests are frozen), [`LibvirtDomains`]
//! through `virsh`. The same views
//! "pull the plug" of a node that dies ([`RuntimeView::power_off`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use zixiao_core::{Instance, InstanceStatus};

/// Whether something a runtime holds runs, or is only left over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A workload that runs or could run at once: a containerd task not
    /// stopped, a monitor process (even one whose vCPUs have not started).
    /// A view that cannot tell a frozen workload from a running one says
    /// `Live` for both.
    Live,
    /// A workload that is frozen (paused): it holds its memory and runs
    /// again on a resume. Only views that can tell say so.
    Paused,
    /// What is left without a workload: a container without a running
    /// task, a run directory without its monitor.
    Residue,
}

/// One thing a runtime holds of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The instance's id.
    pub instance: String,
    /// Whether it runs.
    pub presence: Presence,
    /// What it is, for a person reading a failure (`containerd task RUNNING pid 42`).
    pub what: String,
}

/// One runtime of one node, seen from outside the product.
pub trait RuntimeView: Send + Sync + std::fmt::Debug {
    /// Everything the runtime holds now. Errors: why it cannot be read.
    fn held(&self) -> Result<Vec<Held>, String>;

    /// Kills every workload at once, as a node losing its power does; what
    /// is left (containers, run directories) stays, as on a disk. Returns
    /// once nothing runs. Errors: what could not be killed.
    fn power_off(&self) -> Result<(), String>;
}

/// The runtimes of one node.
#[derive(Debug)]
pub struct NodeRuntimes {
    /// The node's name in the store.
    pub node: String,
    /// Whether its agent is up and reaches the servers, so it must have
    /// removed what it no longer should hold. A node that is down or cut
    /// off may keep residue; it must run nothing that moved.
    pub reachable: bool,
    /// Its runtimes.
    pub views: Vec<Box<dyn RuntimeView>>,
}

/// Where the runtimes of `nodes` disagree with the store's `instances`;
/// empty when they agree. A workload may run only for an instance the
/// store has running or paused on that node; an instance the store has
/// running or paused runs exactly once, on its node; one the store has
/// running is not frozen; a reachable node holds nothing of an instance it
/// is not placed on.
pub fn discrepancies(instances: &[Instance], nodes: &[NodeRuntimes]) -> Vec<String> {
    let by_id: BTreeMap<&str, &Instance> = instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut found = Vec::new();
    // (node, instance) -> live workloads seen there.
    let mut live: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    let mut held_by_node = Vec::new();
    for node in nodes {
        let mut held = Vec::new();
        for view in &node.views {
            match view.held() {
                Ok(h) => held.extend(h),
                Err(e) => found.push(format!("cannot read a runtime of {}: {e}", node.node)),
            }
        }
        held_by_node.push((node, held));
    }
    for (node, held) in &held_by_node {
        for h in held {
            let stored = by_id.get(h.instance.as_str());
            let here = stored.is_some_and(|i| i.node.as_deref() == Some(node.node.as_str()));
            match h.presence {
                Presence::Live | Presence::Paused => {
                    live.entry((node.node.as_str(), h.instance.as_str()))
                        .or_default()
                        .push(h.what.clone());
                    let runs = stored.is_some_and(|i| {
                        matches!(i.status, InstanceStatus::Running | InstanceStatus::Paused)
                    });
                    if !here || !runs {
                        found.push(format!(
                            "{} runs {} of instance {}, which {}",
                            node.node,
                            h.what,
                            h.instance,
                            describe(stored.copied())
                        ));
                    } else if h.presence == Presence::Paused
                        && stored.is_some_and(|i| i.status == InstanceStatus::Running)
                    {
                        found.push(format!(
                            "{} holds {} of instance {} frozen, which {}",
                            node.node,
                            h.what,
                            h.instance,
                            describe(stored.copied())
                        ));
                    }
                }
                Presence::Residue if node.reachable && !here => found.push(format!(
                    "{} still holds {} of instance {}, which {}",
                    node.node,
                    h.what,
                    h.instance,
                    describe(stored.copied())
                )),
                Presence::Residue => {}
            }
        }
    }
    for instance in instances {
        if !matches!(
            instance.status,
            InstanceStatus::Running | InstanceStatus::Paused
        ) {
            continue;
        }
        let Some(node) = instance.node.as_deref() else {
            found.push(format!(
                "instance {} is {:?} on no node",
                instance.id, instance.status
            ));
            continue;
        };
        if !nodes.iter().any(|n| n.node == node) {
            continue;
        }
        let copies = live.get(&(node, instance.id.as_str())).map_or(0, Vec::len);
        if copies != 1 {
            found.push(format!(
                "instance {} ({}) is {:?} on {node} in the store, and {node} runs {copies} \
                 workloads of it: {:?}",
                instance.id,
                instance.name,
                instance.status,
                live.get(&(node, instance.id.as_str()))
            ));
        }
    }
    found
}

fn describe(stored: Option<&Instance>) -> String {
    match stored {
        None => "the store does not have (deleted, or never stored)".to_owned(),
        Some(i) => format!(
            "the store has {:?} on {}",
            i.status,
            i.node.as_deref().unwrap_or("no node")
        ),
    }
}

/// How long a containerd shim without a task may take to go before it
/// counts as leaked.
const SHIM_EXIT_GRACE: Duration = Duration::from_secs(5);

/// One containerd namespace, through `ctr`.
#[derive(Debug, Clone)]
pub struct ContainerdNamespace {
    address: PathBuf,
    namespace: String,
    only: Option<BTreeSet<String>>,
}

/// A task as `ctr tasks ls` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Its container's id (the instance's id).
    pub id: String,
    /// Its init process.
    pub pid: u32,
    /// `RUNNING`, `STOPPED`, `PAUSED`, `CREATED`, ...
    pub status: String,
}

impl ContainerdNamespace {
    /// Namespace `namespace` of the containerd at `address`.
    pub fn new(address: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        ContainerdNamespace {
            address: address.into(),
            namespace: namespace.into(),
            only: None,
        }
    }

    /// The same view, seeing only the containers of `ids` (a namespace
    /// other tests share).
    pub fn only(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.only = Some(ids.into_iter().collect());
        self
    }

    /// Its name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn seen(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(id))
    }

    fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(["--namespace", &self.namespace])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ctr: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Its tasks.
    pub fn tasks(&self) -> Result<Vec<Task>, String> {
        let listed = self.ctr(&["tasks", "ls"])?;
        Ok(listed
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                Some(Task {
                    id: words.next()?.to_owned(),
                    pid: words.next()?.parse().ok()?,
                    status: words.next()?.to_owned(),
                })
            })
            .filter(|t| self.seen(&t.id))
            .collect())
    }

    /// Its containers' ids.
    pub fn containers(&self) -> Result<Vec<String>, String> {
        Ok(self
            .ctr(&["containers", "ls", "-q"])?
            .lines()
            .map(str::trim)
            .filter(|id| !id.is_empty() && self.seen(id))
            .map(str::to_owned)
            .collect())
    }

    /// The shim processes of the namespace (`containerd-shim-* -namespace
    /// NS -id ID`): pid and container id.
    pub fn shims(&self) -> Vec<(i32, String)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first().is_some_and(|program| {
                Path::new(program)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim"))
            });
            let after = |flag: &str| {
                args.iter()
                    .position(|a| a == flag)
                    .and_then(|i| args.get(i + 1))
            };
            if is_shim
                && after("-namespace").is_some_and(|ns| *ns == self.namespace)
                && !is_zombie(pid)
            {
                if let Some(id) = after("-id") {
                    found.push((pid, id.clone()));
                }
            }
        }
        found
    }

    /// Removes every task, container, lease and image of the namespace,
    /// then the namespace and the cgroups runc left for it: a test's clean-up.
    pub fn remove(&self) -> Result<(), String> {
        let _ = self.power_off();
        for task in self.tasks()? {
            self.ctr(&["tasks", "rm", "-f", &task.id])?;
        }
        for id in self.containers()? {
            self.ctr(&["containers", "rm", &id])?;
        }
        // `--sync`: what they held (content, snapshots) goes now, not at
        // the next garbage collection, so the namespace is empty.
        for lease in self.ctr(&["leases", "ls", "-q"])?.lines() {
            self.ctr(&["leases", "rm", "--sync", lease.trim()])?;
        }
        for image in self.ctr(&["images", "ls", "-q"])?.lines() {
            self.ctr(&["images", "rm", "--sync", image.trim()])?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let output = Command::new("ctr")
                .arg("--address")
                .arg(&self.address)
                .args(["namespaces", "rm", &self.namespace])
                .output()
                .map_err(|e| format!("cannot run ctr: {e}"))?;
            if output.status.success() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ctr namespaces rm {}: {}",
                    self.namespace,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // runc leaves the namespace's parent cgroup in each hierarchy.
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .chain([PathBuf::from("/sys/fs/cgroup")]);
        for hierarchy in hierarchies {
            let _ = std::fs::remove_dir(hierarchy.join(&self.namespace));
        }
        Ok(())
    }
}

impl RuntimeView for ContainerdNamespace {
    fn held(&self) -> Result<Vec<Held>, String> {
        // Tasks first: a container listed after its task was read cannot
        // look stopped when it runs.
        let tasks: BTreeMap<String, Task> = self
            .tasks()?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let containers = self.containers()?;
        let mut held = Vec::new();
        // A shim without a task is one containerd lost track of (a task
        // create cut off): it holds the bundle, and runc's init with it.
        // Shims go a moment after their task is deleted, and containerd
        // removes the shim of a cut-off create once it disconnects (about
        // 2 s): only one that outlives that is held.
        let deadline = Instant::now() + SHIM_EXIT_GRACE;
        let orphans = loop {
            let orphans: Vec<(i32, String)> = self
                .shims()
                .into_iter()
                .filter(|(_, id)| self.seen(id) && !tasks.contains_key(id))
                .collect();
            if orphans.is_empty() || Instant::now() >= deadline {
                break orphans;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for (pid, id) in orphans {
            held.push(Held {
                instance: id,
                presence: Presence::Live,
                what: format!(
                    "containerd shim pid {pid} without a task in namespace {}",
                    self.namespace
                ),
            });
        }
        for id in containers
            .iter()
            .chain(tasks.keys().filter(|id| !containers.contains(id)))
        {
            let (presence, what) = match tasks.get(id) {
                Some(task) if task.status == "PAUSED" => (
                    Presence::Paused,
                    format!(
                        "containerd task PAUSED pid {} in namespace {}",
                        task.pid, self.namespace
                    ),
                ),
                Some(task) if task.status != "STOPPED" => (
                    Presence::Live,
                    format!(
                        "containerd task {} pid {} in namespace {}",
                        task.status, task.pid, self.namespace
                    ),
                ),
                Some(_) => (
                    Presence::Residue,
                    format!(
                        "a container with a stopped task in namespace {}",
                        self.namespace
                    ),
                ),
                None => (
                    Presence::Residue,
                    format!("a container in namespace {}", self.namespace),
                ),
            };
            held.push(Held {
                instance: id.clone(),
                presence,
                what,
            });
        }
        Ok(held)
    }

    fn power_off(&self) -> Result<(), String> {
        for task in self.tasks()?.iter().filter(|t| t.status != "STOPPED") {
            // A task that ended meanwhile is no error.
            let _ = self.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", &task.id]);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let running: Vec<Task> = self
                .tasks()?
                .into_iter()
                .filter(|t| t.status != "STOPPED")
                .collect();
            if running.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("tasks still run after SIGKILL: {running:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The microVM monitors of one node: processes whose command line names a
/// run directory `<root>/<instance id>` (QEMU's `-pidfile`, sockets and
/// console log; zixiao-vmm's run directory), and those directories.
#[derive(Debug, Clone)]
pub struct MonitorProcesses {
    root: PathBuf,
    ask: bool,
}

/// A process whose command line names a microVM's run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// Its pid.
    pub pid: i32,
    /// The instance whose run directory it names.
    pub instance: String,
    /// Its program (`argv[0]`).
    pub program: String,
}

impl MonitorProcesses {
    /// The monitors of run directories under `root` (the microvm driver's
    /// `<state dir>/microvm`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MonitorProcesses {
            root: root.into(),
            ask: false,
        }
    }

    /// The same view, asking each monitor whether its guest runs: QEMU
    /// over its QMP socket (`<root>/<id>/qmp.sock`), zixiao-vmm over its
    /// API socket (`<root>/<id>/vmm/api.sock`). A guest that is paused or
    /// whose vCPUs never started is [`Presence::Paused`]; a monitor that
    /// does not answer within a second counts as [`Presence::Live`]. Only
    /// while nothing else talks to the monitors: QEMU serves one QMP
    /// client at a time.
    pub fn asking_monitors(mut self) -> Self {
        self.ask = true;
        self
    }

    /// What the monitor `monitor` says of its guest, when asked and it answers.
    fn guest_state(&self, monitor: &Monitor) -> Option<String> {
        if !self.ask {
            return None;
        }
        let dir = self.root.join(&monitor.instance);
        let program = Path::new(&monitor.program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if program.starts_with("qemu") {
            monitor_protocol::qmp_status(&dir.join("qmp.sock"))
        } else if program.starts_with("zixiao-vmm") {
            monitor_protocol::vmm_state(&dir.join("vmm").join("api.sock"))
        } else {
            None
        }
    }

    /// Every live process naming a run directory under the root, the shell
    /// wrapper that waits for QEMU to record its exit status aside: one per
    /// running microVM.
    pub fn monitors(&self) -> Vec<Monitor> {
        let prefix = format!("{}/", self.root.display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if is_zombie(pid) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let Some(program) = args.first().cloned() else {
                continue;
            };
            let shell = Path::new(&program)
                .file_name()
                .is_some_and(|n| matches!(n.to_str(), Some("sh" | "bash" | "dash")));
            if shell {
                continue;
            }
            let instance = args.iter().find_map(|arg| {
                let at = arg.find(&prefix)?;
                let rest = &arg[at + prefix.len()..];
                let id = rest.split(['/', ',']).next()?;
                (!id.is_empty()).then(|| id.to_owned())
            });
            if let Some(instance) = instance {
                found.push(Monitor {
                    pid,
                    instance,
                    program,
                });
            }
        }
        found
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after
                .split_whitespace()
                .next()
                .map(|s| s == "Z" || s == "X")
        })
        .unwrap_or(true)
}

impl RuntimeView for MonitorProcesses {
    fn held(&self) -> Result<Vec<Held>, String> {
        let mut held: Vec<Held> = self
            .monitors()
            .into_iter()
            .map(|m| {
                let state = self.guest_state(&m);
                // QEMU's `prelaunch` and the VMM's `configured`: loaded, never started.
                let frozen = matches!(
                    state.as_deref(),
                    Some("paused" | "prelaunch" | "configured" | "suspended")
                );
                let what = match &state {
                    Some(state) => format!("monitor process {} ({}, {state})", m.pid, m.program),
                    None => format!("monitor process {} ({})", m.pid, m.program),
                };
                Held {
                    instance: m.instance,
                    presence: if frozen {
                        Presence::Paused
                    } else {
                        Presence::Live
                    },
                    what,
                }
            })
            .collect();
        for entry in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().is_dir() {
                held.push(Held {
                    instance: entry.file_name().to_string_lossy().into_owned(),
                    presence: Presence::Residue,
                    what: format!("run directory {}", entry.path().display()),
                });
            }
        }
        Ok(held)
    }

    fn power_off(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The wrappers too: a dead machine records no exit status.
            let prefix = format!("{}/", self.root.display());
            let mut left = self.monitors();
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                let names_root = std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&prefix));
                if names_root && !is_zombie(pid) {
                    kill9(pid);
                }
            }
            left.retain(|m| !is_zombie(m.pid));
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("monitors still run after SIGKILL: {left:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Asking a monitor how its guest is, in its own protocol, with short
/// timeouts: QEMU's QMP and zixiao-vmm's line-delimited JSON API.
mod monitor_protocol {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(1);

    fn connect(socket: &Path) -> Option<(BufReader<UnixStream>, UnixStream)> {
        let stream = UnixStream::connect(socket).ok()?;
        stream.set_read_timeout(Some(TIMEOUT)).ok()?;
        stream.set_write_timeout(Some(TIMEOUT)).ok()?;
        Some((BufReader::new(stream.try_clone().ok()?), stream))
    }

    /// The next reply to a command, skipping QMP's asynchronous events.
    fn reply(reader: &mut BufReader<UnixStream>) -> Option<serde_json::Value> {
        for _ in 0..64 {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let message: serde_json::Value = serde_json::from_str(&line).ok()?;
            if message.get("event").is_none() {
                return Some(message);
            }
        }
        None
    }

    /// QEMU's run state (`running`, `paused`, `prelaunch`, ...).
    pub(super) fn qmp_status(socket: &Path) -> Option<String> {
        let (mut reader, mut writer) = connect(socket)?;
        reply(&mut reader)?.get("QMP")?;
        writer
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .ok()?;
        reply(&mut reader)?.get("return")?;
        writer.write_all(b"{\"execute\":\"query-status\"}\n").ok()?;
        let status = reply(&mut reader)?;
        Some(status["return"]["status"].as_str()?.to_owned())
    }

    /// zixiao-vmm's state (`configured`, `running`, `paused`).
    pub(super) fn vmm_state(socket: &Path) -> Option<String> {
        let (mut reader, mut writer) = connect(socket)?;
        writer.write_all(b"{\"op\":\"info\"}\n").ok()?;
        let info = reply(&mut reader)?;
        Some(info["Ok"]["state"]["state"].as_str()?.to_owned())
    }
}

/// The domains of one libvirt daemon whose names start with a prefix,
/// through `virsh` (libvirt's own client). A domain's UUID is its
/// instance's id (the vm driver defines them so).
#[derive(Debug, Clone)]
pub struct LibvirtDomains {
    uri: String,
    prefix: String,
}

/// A domain as `virsh list --all` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// `running`, `paused`, `shut off`, ...
    pub state: String,
}

impl LibvirtDomains {
    /// The domains of the daemon at `uri` named `<prefix>...` (a test's
    /// instance names, behind the driver's `zixiao-`).
    pub fn new(uri: impl Into<String>, prefix: impl Into<String>) -> Self {
        LibvirtDomains {
            uri: uri.into(),
            prefix: prefix.into(),
        }
    }

    fn virsh(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("virsh")
            .args(["-c", &self.uri])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run virsh: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "virsh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Its domains, defined or running.
    pub fn domains(&self) -> Result<Vec<Domain>, String> {
        let listed = self.virsh(&["list", "--all"])?;
        let mut domains = Vec::new();
        // ` Id   Name   State`, a rule, then `<id or ->  <name>  <state words>`.
        for line in listed.lines().skip(2) {
            let mut words = line.split_whitespace();
            let (Some(_id), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            if !name.starts_with(&self.prefix) {
                continue;
            }
            let state = words.collect::<Vec<_>>().join(" ");
            // Undefined between the listing and now: not held any more.
            let Ok(uuid) = self.virsh(&["domuuid", name]) else {
                continue;
            };
            domains.push(Domain {
                name: name.to_owned(),
                uuid: uuid.trim().to_owned(),
                state,
            });
        }
        Ok(domains)
    }
}

impl RuntimeView for LibvirtDomains {
    fn held(&self) -> Result<Vec<Held>, String> {
        Ok(self
            .domains()?
            .into_iter()
            .map(|d| Held {
                presence: match d.state.as_str() {
                    "shut off" => Presence::Residue,
                    "paused" | "pmsuspended" => Presence::Paused,
                    _ => Presence::Live,
                },
                what: format!("libvirt domain {} ({})", d.name, d.state),
                instance: d.uuid,
            })
            .collect())
    }

    fn power_off(&self) -> Result<(), String> {
        for domain in self.domains()? {
            if domain.state != "shut off" {
                // One that stopped meanwhile is no error.
                let _ = self.virsh(&["destroy", &domain.name]);
            }
        }
        let left: Vec<Domain> = self
            .domains()?
            .into_iter()
            .filter(|d| d.state != "shut off")
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("domains still run after destroy: {left:?}"))
        }
    }
}

fn kill9(pid: i32) {
    // SAFETY: kill(2) touches no memory; `pid` names a process whose
    // command line names a directory the test made.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Listed(Mutex<Vec<Held>>);

    impl RuntimeView for Listed {
        fn held(&self) -> Result<Vec<Held>, String> {
            Ok(self.0.lock().expect("lock").clone())
        }
        fn power_off(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn instance(id: &str, node: Option<&str>, status: InstanceStatus) -> Instance {
        let mut i = Instance::new(
            id,
            zixiao_core::CreateInstance::new(id, zixiao_core::InstanceSpec::container("busybox")),
            chrono::Utc::now(),
        );
        i.node = node.map(str::to_owned);
        i.status = status;
        i
    }

    fn held(id: &str, presence: Presence) -> Held {
        Held {
            instance: id.to_owned(),
            presence,
            what: "it".to_owned(),
        }
    }

    fn node(name: &str, reachable: bool, held: Vec<Held>) -> NodeRuntimes {
        NodeRuntimes {
            node: name.to_owned(),
            reachable,
            views: vec![Box::new(Listed(Mutex::new(held)))],
        }
    }

    #[test]
    fn one_workload_per_running_instance_on_its_node_agrees() {
        let store = [
            instance("a", Some("n1"), InstanceStatus::Running),
            instance("b", Some("n1"), InstanceStatus::Stopped),
            instance("c", None, InstanceStatus::Pending),
        ];
        let nodes = [
            node(
                "n1",
                true,
                vec![held("a", Presence::Live), held("b", Presence::Residue)],
            ),
            // A dead node keeps its residue of what moved.
            node("n2", false, vec![held("a", Presence::Residue)]),
        ];
        assert_eq!(discrepancies(&store, &nodes), Vec::<String>::new());
    }

    #[test]
    fn leaks_doubles_and_missing_workloads_are_found() {
        let store = [
            instance("a", Some("n1"), InstanceStatus::Running),
            instance("f", Some("n1"), InstanceStatus::Failed),
            instance("m", Some("n2"), InstanceStatus::Running),
        ];
        let nodes = [
            node(
                "n1",
                true,
                vec![
                    held("a", Presence::Live),
                    held("a", Presence::Live),
                    held("f", Presence::Live),
                    held("gone", Presence::Residue),
                ],
            ),
            node("n2", false, vec![held("a", Presence::Live)]),
        ];
        let found = discrepancies(&store, &nodes);
        let has = |needle: &str| found.iter().any(|f| f.contains(needle));
        assert!(has("runs 2 workloads of it"), "{found:?}");
        assert!(
            has("n1 runs it of instance f, which the store has Failed"),
            "{found:?}"
        );
        assert!(has("n1 still holds it of instance gone"), "{found:?}");
        assert!(
            has("n2 runs it of instance a, which the store has Running on n1"),
            "{found:?}"
        );
        assert!(
            has("instance m (m) is Running on n2 in the store, and n2 runs 0"),
            "{found:?}"
        );
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn a_frozen_workload_of_an_instance_the_store_has_running_is_found() {
        let store = [
            instance("r", Some("n1"), InstanceStatus::Running),
            instance("p", Some("n1"), InstanceStatus::Paused),
        ];
        let nodes = [node(
            "n1",
            true,
            vec![held("r", Presence::Paused), held("p", Presence::Paused)],
        )];
        let found = discrepancies(&store, &nodes);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("holds it of instance r frozen, which the store has Running"),
            "{found:?}"
        );
    }

    #[test]
    fn monitors_are_found_by_their_run_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run_dir = dir.path().join("inst-1");
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let log = run_dir.join("console.log");
        std::fs::write(&log, b"").expect("log");
        let mut child = Command::new("tail")
            .arg("-f")
            .arg(&log)
            .spawn()
            .expect("tail");
        let view = MonitorProcesses::new(dir.path());
        let monitor = Held {
            instance: "inst-1".to_owned(),
            presence: Presence::Live,
            what: format!("monitor process {} (tail)", child.id()),
        };
        // `spawn` returns before the child has run `tail` (CI saw the
        // scan find only the run directory): ask until it has.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let held = view.held().expect("held");
            if held.contains(&monitor) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{held:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        view.power_off().expect("power off");
        let _ = child.wait();
        let after = view.held().expect("held");
        assert!(
            after.iter().all(|h| h.presence == Presence::Residue),
            "{after:?}"
        );
    }
}
