//! `kill -9` against the embedded default: the `zixiao` binary is killed at
//! seeded random moments of `instance create`, `stop`, `start`, `snapshot
//! create` and `delete`, on every real runtime (containers on containerd,
//! microVMs on QEMU and on zixiao-vmm, VMs on libvirt). After each kill one
//! more command runs (`instance get` after a create, which converges it in
//! the embedded deployment; the same command again otherwise), and then
//! the runtimes, seen from outside the product (`ctr` in the namespace, the
//! process table and the monitors' own sockets, `virsh`), must hold exactly
//! what the store says: no leaked task, shim, domain or monitor, no
//! duplicate, nothing frozen that the store has running, and the command's
//! intent met. At the end everything is deleted and nothing may be left.
//!
//! Each kill is drawn from a window that covers the command's work on its
//! runtime (measured on a 2-core machine with software-nested KVM, where
//! QEMU and libvirt guests run under TCG), narrowed to the longest whole
//! run seen on a faster machine. The runtimes are tested at once, each in
//! its own thread. The seed is printed; set `ZIXIAO_CRASH_SEED` to replay
//! a run, `ZIXIAO_CRASH_KILLS` to change the kills per runtime (default
//! 26, so over 100 in all), `ZIXIAO_CRASH_RUNTIMES` to test some only.
#![cfg(all(feature = "containerd", feature = "libvirt", feature = "microvm"))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use zixiao_core::store::StoreExt;
use zixiao_core::{Instance, InstanceStatus};
use zixiao_testing::kill::{run_killed, KillOutcome};
use zixiao_testing::rng::SeededRng;
use zixiao_testing::runtimes::{
    discrepancies, ContainerdNamespace, LibvirtDomains, MonitorProcesses, NodeRuntimes, RuntimeView,
};
use zixiao_testing::wait::{runtime_endpoint, runtimes_required};

/// The environment variable that replays a run.
const SEED_ENV: &str = "ZIXIAO_CRASH_SEED";
/// The environment variable with the kills per runtime.
const KILLS_ENV: &str = "ZIXIAO_CRASH_KILLS";
const DEFAULT_KILLS: usize = 26;
/// The environment variable that limits the runtimes tested.
const RUNTIMES_ENV: &str = "ZIXIAO_CRASH_RUNTIMES";

/// The commands killed, in the order a cycle runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Stop,
    Start,
    Snapshot,
    Delete,
}

/// One runtime under test: how its subject is created and how long each
/// command works on it (the window the kill is drawn from).
struct Subject {
    label: &'static str,
    create: Vec<String>,
    snapshots: bool,
    window: fn(Op) -> Duration,
    view: ViewOf,
}

/// How a test sees its runtime, from the run's state.
type ViewOf = fn(&Crash) -> Box<dyn RuntimeView>;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The seed of this process's run: every runtime derives its own
/// sequence from it, so runtimes tested in parallel replay alike.
fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| SeededRng::from_env(SEED_ENV, "crash test").1)
}

fn kills_per_runtime() -> usize {
    std::env::var(KILLS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KILLS)
}

/// A run of one subject in its own state directory.
struct Crash {
    label: &'static str,
    state: tempfile::TempDir,
    name: String,
    socket: String,
    uri: String,
    rng: SeededRng,
    kills: usize,
    runs: usize,
    /// Every instance id the store ever held: the containerd view looks at
    /// these only (the namespace is shared with other tests).
    seen: BTreeSet<String>,
    node: String,
    log: Vec<String>,
    /// The view of the runtime under test, for the checks and for a failure's report.
    view: Option<ViewOf>,
    /// The longest run of each command that ended well before its kill.
    whole: BTreeMap<Op, Duration>,
}

impl Crash {
    fn new(label: &'static str, socket: &str, uri: &str) -> Crash {
        // Short, for the monitors' socket paths; readable by libvirt's QEMU.
        let state = tempfile::Builder::new()
            .prefix("zx-crash-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(
            state.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let unique = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
                ^ std::process::id()
        );
        let mut crash = Crash {
            label,
            name: format!("crash-{label}-{unique}"),
            state,
            socket: socket.to_owned(),
            uri: uri.to_owned(),
            rng: SeededRng::derive(seed(), label),
            kills: 0,
            runs: 0,
            seen: BTreeSet::new(),
            node: String::new(),
            log: Vec::new(),
            view: None,
            whole: BTreeMap::new(),
        };
        let nodes = crash.ok(&["-o", "json", "node", "list"]);
        let nodes: serde_json::Value = serde_json::from_str(&nodes).expect("node list JSON");
        crash.node = nodes[0]["id"].as_str().expect("node id").to_owned();
        crash
    }

    fn state(&self) -> &Path {
        self.state.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
        command
            .arg("--state-dir")
            .arg(self.state())
            .args(["--containerd-socket", &self.socket])
            .args(["--libvirt-uri", &self.uri])
            .args(args)
            .env_remove("ZIXIAO_STATE_DIR")
            .env_remove("ZIXIAO_ENDPOINT")
            .env_remove("ZIXIAO_MICROVM_BACKEND");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run zixiao")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            self.fail(&format!(
                "`zixiao {}` failed ({:?}): {}{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args` and kills it at a moment drawn from `window`, narrowed
    /// to a quarter more than the longest whole run of `op` seen: on a
    /// machine faster than the one the windows were measured on, as many
    /// commands are cut off, still at any moment of their work.
    fn killed(&mut self, op: Op, window: Duration, args: &[&str]) -> KillOutcome {
        let window = match self.whole.get(&op) {
            Some(longest) => window.min(*longest * 5 / 4),
            None => window,
        };
        let delay = self.rng.duration(Duration::ZERO..window);
        let outcome = run_killed(&mut self.command(args), delay);
        self.runs += 1;
        if outcome.killed {
            self.kills += 1;
        } else if outcome.status.success() {
            let longest = self.whole.entry(op).or_default();
            *longest = (*longest).max(outcome.ran);
        }
        self.log.push(format!(
            "{op:?} `{}`: {} at {delay:?} (ran {:?}){}",
            args.join(" "),
            if outcome.killed {
                "killed"
            } else {
                "finished before the kill"
            },
            outcome.ran,
            if outcome.killed {
                String::new()
            } else {
                format!(
                    ", exit {:?}: {}",
                    outcome.status.code(),
                    outcome.stderr.trim()
                )
            }
        ));
        self.remember();
        outcome
    }

    /// What the store holds now, read from its file (no command converges it).
    fn stored(&self) -> Vec<Instance> {
        let path = self.state().join("state.redb");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let store = zixiao_store::EmbeddedStore::open(&path).expect("open the store");
            store
                .list_objects::<Instance, _>(|_| true)
                .await
                .expect("list instances")
                .0
        })
    }

    fn remember(&mut self) {
        let ids: Vec<String> = self.stored().into_iter().map(|i| i.id).collect();
        self.seen.extend(ids);
    }

    fn subject(&self) -> Option<Instance> {
        self.stored().into_iter().find(|i| i.name == self.name)
    }

    /// The runtimes must hold what the store says; `expect` is the status
    /// the last command asked for (`None`: the instance is gone).
    fn check(&mut self, subject: &Subject, expect: Option<InstanceStatus>) {
        self.remember();
        let stored = self.stored();
        let node = NodeRuntimes {
            node: self.node.clone(),
            reachable: true,
            views: vec![(subject.view)(self)],
        };
        let found = discrepancies(&stored, &[node]);
        if !found.is_empty() {
            self.fail(&format!(
                "the runtimes disagree with the store:\n  {}",
                found.join("\n  ")
            ));
        }
        let status = self.subject().map(|i| i.status);
        if status != expect {
            self.fail(&format!(
                "the store has {status:?} after the command that asked for {expect:?}"
            ));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let instances: Vec<String> = self
            .stored()
            .iter()
            .map(|i| {
                format!(
                    "{} {} {:?} desired {:?} conditions {:?}",
                    i.name,
                    i.id,
                    i.status,
                    i.desired,
                    i.conditions
                        .iter()
                        .map(|c| format!(
                            "{:?}={} {}: {}",
                            c.condition_type, c.status, c.reason, c.message
                        ))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        let runtime = match self.view {
            Some(view) => match view(self).held() {
                Ok(held) => held
                    .iter()
                    .map(|h| format!("{} {:?} {}", h.instance, h.presence, h.what))
                    .collect::<Vec<_>>()
                    .join("\n  "),
                Err(e) => e,
            },
            None => String::new(),
        };
        panic!(
            "{} (seed {}: replay with {SEED_ENV}={}):\n{what}\nstore:\n  {}\nruntime:\n  {runtime}\nsteps:\n  {}",
            self.label,
            seed(),
            seed(),
            instances.join("\n  "),
            self.log.join("\n  ")
        );
    }
}

impl Drop for Crash {
    /// Deletes what a failed run left, so the runtimes shared with other
    /// tests (containerd's namespace, libvirt) are not littered.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for instance in self.stored() {
            let _ = self.run(&["instance", "delete", &instance.id]);
        }
    }
}

/// Kills each command of the cycle create, stop, start, (snapshot,)
/// delete at a random moment, then runs one more command and checks,
/// until `kills_per_runtime()` commands were really cut off.
fn crash_cycles(subject: &Subject, socket: &str, uri: &str) {
    let started = Instant::now();
    let mut crash = Crash::new(subject.label, socket, uri);
    crash.view = Some(subject.view);
    let name = crash.name.clone();
    let target = kills_per_runtime();
    let mut cycle = 0;
    while crash.kills < target {
        cycle += 1;
        assert!(
            cycle <= target * 2,
            "{}: only {} of {} commands were cut off in {} runs: the kill windows are too wide",
            subject.label,
            crash.kills,
            target,
            crash.runs
        );
        // Create: reads never write, so the one more command is `instance
        // start`, which converges what a cut-off create stored.
        let mut create: Vec<&str> = vec!["instance", "create", "--name", &name];
        create.extend(subject.create.iter().map(String::as_str));
        crash.killed(Op::Create, (subject.window)(Op::Create), &create);
        let start = crash.run(&["instance", "start", &name]);
        if !start.status.success() {
            // Cut off before the intent was stored: nothing may be there.
            crash.check(subject, None);
            crash.ok(&create);
        }
        crash.check(subject, Some(InstanceStatus::Running));

        let stop = ["instance", "stop", name.as_str()];
        crash.killed(Op::Stop, (subject.window)(Op::Stop), &stop);
        crash.ok(&stop);
        crash.check(subject, Some(InstanceStatus::Stopped));

        let start = ["instance", "start", name.as_str()];
        crash.killed(Op::Start, (subject.window)(Op::Start), &start);
        crash.ok(&start);
        crash.check(subject, Some(InstanceStatus::Running));

        if subject.snapshots {
            let snapshot = format!("s{cycle}");
            let take = ["instance", "snapshot", "create", name.as_str(), &snapshot];
            crash.killed(Op::Snapshot, (subject.window)(Op::Snapshot), &take);
            crash.ok(&take);
            crash.check(subject, Some(InstanceStatus::Running));
            let listed = crash.ok(&["-o", "json", "instance", "snapshot", "list", &name]);
            if !listed.contains(&format!("\"{snapshot}\"")) {
                crash.fail(&format!("snapshot {snapshot} is not listed: {listed}"));
            }
        }

        let delete = ["instance", "delete", name.as_str()];
        crash.killed(Op::Delete, (subject.window)(Op::Delete), &delete);
        let again = crash.run(&delete);
        let gone = String::from_utf8_lossy(&again.stderr).contains("not found");
        if !again.status.success() && !gone {
            crash.fail(&format!(
                "the delete after a cut-off delete failed: {}",
                String::from_utf8_lossy(&again.stderr)
            ));
        }
        crash.check(subject, None);
    }
    // Nothing of any instance may be left anywhere.
    let left = crash.stored();
    if !left.is_empty() {
        crash.fail("instances are left in the store");
    }
    let held = (subject.view)(&crash).held().expect("read the runtime");
    if !held.is_empty() {
        crash.fail(&format!("the runtime still holds: {held:?}"));
    }
    eprintln!(
        "{}: {} of {} commands cut off in {cycle} cycles, {:?}",
        subject.label,
        crash.kills,
        crash.runs,
        started.elapsed()
    );
}

/// The endpoints of every runtime, or `None` (skipped) outside CI.
fn runtimes() -> Option<(String, String)> {
    let socket = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")?;
    let uri = runtime_endpoint("ZIXIAO_TEST_LIBVIRT_URI", "libvirt")?;
    Some((socket, uri))
}

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is set with the runtimes"))
}

fn monitors(crash: &Crash) -> Box<dyn RuntimeView> {
    Box::new(MonitorProcesses::new(crash.state().join("runtime").join("microvm")).asking_monitors())
}

/// Every runtime at once, each in its own thread and state directory: the
/// commands mostly wait on their runtimes and guests, so together they
/// take about as long as the slowest alone (the test harness would run
/// only as many tests at a time as there are cores). `ZIXIAO_CRASH_RUNTIMES`
/// (a comma-separated list of `container`, `qemu`, `vmm`, `vm`) runs some.
#[test]
fn killed_commands_leave_every_runtime_as_the_store_says() {
    let Some((socket, uri)) = runtimes() else {
        return;
    };
    let chosen = std::env::var(RUNTIMES_ENV).ok();
    let chosen = |label: &str| {
        chosen
            .as_deref()
            .is_none_or(|list| list.split(',').any(|l| l.trim() == label))
    };
    let mut subjects = vec![container(), qemu()];
    subjects.extend(vmm());
    subjects.push(vm());
    subjects.retain(|s| chosen(s.label));
    if subjects.iter().any(|s| s.label == "container") {
        // The image, imported once (not killed).
        let importer = Crash::new("import", &socket, &uri);
        importer.ok(&["image", "import", &env("ZIXIAO_TEST_BUSYBOX_OCI")]);
    }
    let failed: Vec<&str> = std::thread::scope(|scope| {
        let runs: Vec<_> = subjects
            .iter()
            .map(|subject| {
                let (socket, uri) = (&socket, &uri);
                (
                    subject.label,
                    scope.spawn(move || crash_cycles(subject, socket, uri)),
                )
            })
            .collect();
        runs.into_iter()
            .filter_map(|(label, run)| run.join().is_err().then_some(label))
            .collect()
    });
    // Each failure was printed by its thread, with its seed and steps.
    assert!(failed.is_empty(), "failed on: {}", failed.join(", "));
}

fn container() -> Subject {
    Subject {
        label: "container",
        create: [
            "--type",
            "container",
            "--image",
            "busybox",
            "--memory",
            "32",
            "--",
            "sh",
            "-c",
            // Ends at once on SIGTERM, so a stop takes no grace period.
            "trap 'exit 0' TERM; sleep 600 & wait",
        ]
        .map(str::to_owned)
        .to_vec(),
        snapshots: false,
        window: |op| match op {
            Op::Create | Op::Delete => ms(600),
            Op::Stop | Op::Start | Op::Snapshot => ms(500),
        },
        view: |crash| {
            Box::new(
                ContainerdNamespace::new(&crash.socket, "zixiao").only(crash.seen.iter().cloned()),
            )
        },
    }
}

fn qemu() -> Subject {
    Subject {
        label: "qemu",
        create: [
            "--type",
            "microvm",
            "--backend",
            "qemu",
            "--kernel",
            &env("ZIXIAO_TEST_MICROVM_KERNEL"),
            "--initrd",
            &env("ZIXIAO_TEST_MICROVM_INITRD"),
            "--cmdline",
            "console=ttyS0 quiet",
            "--memory",
            "128",
        ]
        .map(str::to_owned)
        .to_vec(),
        snapshots: false,
        window: |op| match op {
            Op::Create | Op::Start => ms(3000),
            Op::Stop => ms(3000),
            Op::Snapshot | Op::Delete => ms(800),
        },
        view: monitors,
    }
}

/// The VMM's subject, or `None` (skipped) where KVM is missing outside CI.
fn vmm() -> Option<Subject> {
    if let Some(reason) = zixiao_vmm::kvm_skip_reason() {
        assert!(!runtimes_required(), "{reason}");
        eprintln!("vmm skipped: {reason}");
        return None;
    }
    let guest: PathBuf = zixiao_vmm::test_guest::kernel_path().expect("the VMM's test guest");
    let vmm = Path::new(env!("CARGO_BIN_EXE_zixiao")).with_file_name("zixiao-vmm");
    assert!(
        vmm.is_file(),
        "{} is not built (cargo build -p zixiao-vmm)",
        vmm.display()
    );
    Some(Subject {
        label: "vmm",
        create: [
            "--type",
            "microvm",
            "--backend",
            "vmm",
            "--kernel",
            &guest.to_string_lossy(),
            "--cmdline",
            "console=ttyS0 zx.mode=loop",
            "--memory",
            "64",
        ]
        .map(str::to_owned)
        .to_vec(),
        snapshots: true,
        window: |_| ms(500),
        view: monitors,
    })
}

fn vm() -> Subject {
    Subject {
        label: "vm",
        create: [
            "--type",
            "vm",
            "--image",
            &env("ZIXIAO_TEST_VM_BASE_IMAGE"),
            "--disk",
            "1",
            "--kernel",
            &env("ZIXIAO_TEST_VM_KERNEL"),
            "--initrd",
            &env("ZIXIAO_TEST_VM_INITRD"),
            "--cmdline",
            "console=ttyS0",
            "--memory",
            "128",
        ]
        .map(str::to_owned)
        .to_vec(),
        snapshots: true,
        window: |op| match op {
            Op::Create | Op::Start => ms(1200),
            Op::Stop => ms(3000),
            Op::Snapshot => ms(800),
            Op::Delete => ms(1500),
        },
        view: |crash| {
            Box::new(LibvirtDomains::new(
                &crash.uri,
                format!("zixiao-{}", crash.name),
            ))
        },
    }
}

/// What one cut-off command leaves, made on purpose: a VMM guest paused by
/// a snapshot that never resumed it (the VMM pauses it, the driver resumes
/// it afterwards, and a kill can fall in between).
#[test]
fn a_guest_left_paused_by_a_cut_off_snapshot_runs_again() {
    let Some((socket, uri)) = runtimes() else {
        return;
    };
    if let Some(reason) = zixiao_vmm::kvm_skip_reason() {
        assert!(!runtimes_required(), "{reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    let guest = zixiao_vmm::test_guest::kernel_path().expect("the VMM's test guest");
    let crash = Crash::new("paused", &socket, &uri);
    let name = crash.name.clone();
    crash.ok(&[
        "instance",
        "create",
        "--name",
        &name,
        "--type",
        "microvm",
        "--backend",
        "vmm",
        "--kernel",
        &guest.to_string_lossy(),
        "--cmdline",
        "console=ttyS0 zx.mode=loop",
        "--memory",
        "64",
    ]);
    let id = crash.subject().expect("stored").id;
    let run_dir = crash
        .state()
        .join("runtime")
        .join("microvm")
        .join(&id)
        .join("vmm");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let vmm = |pause: bool| {
        runtime.block_on(async {
            let client = zixiao_vmm::VmmClient::connect(&run_dir)
                .await
                .expect("the VMM");
            if pause {
                client.pause().await.expect("pause");
            }
            client.info().await.expect("info").state
        })
    };
    // The snapshot is taken again, and the guest runs afterwards.
    assert_eq!(vmm(true), zixiao_vmm::VmState::Paused);
    crash.ok(&["instance", "snapshot", "create", &name, "s1"]);
    assert_eq!(vmm(false), zixiao_vmm::VmState::Running);
    // `resume` puts the runtime right even though the store has it running.
    assert_eq!(vmm(true), zixiao_vmm::VmState::Paused);
    crash.ok(&["instance", "resume", &name]);
    assert_eq!(vmm(false), zixiao_vmm::VmState::Running);
    crash.ok(&["instance", "delete", &name]);
}

/// A domain a cut-off start left paused (libvirtd was still starting it,
/// or it was left so) is running after the next start.
#[test]
fn a_domain_left_paused_by_a_cut_off_start_is_running_after_a_start() {
    let Some((socket, uri)) = runtimes() else {
        return;
    };
    let crash = Crash::new("paused-vm", &socket, &uri);
    let name = crash.name.clone();
    crash.ok(&[
        "instance",
        "create",
        "--name",
        &name,
        "--type",
        "vm",
        "--kernel",
        &env("ZIXIAO_TEST_VM_KERNEL"),
        "--initrd",
        &env("ZIXIAO_TEST_VM_INITRD"),
        "--cmdline",
        "console=ttyS0",
        "--memory",
        "128",
    ]);
    crash.ok(&["instance", "stop", &name]);
    let domains = LibvirtDomains::new(&uri, format!("zixiao-{name}"));
    let domain = domains.domains().expect("domains").remove(0).name;
    let virsh = |args: &[&str]| {
        let out = Command::new("virsh")
            .args(["-c", &uri])
            .args(args)
            .output()
            .expect("virsh");
        assert!(
            out.status.success(),
            "virsh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    virsh(&["start", "--paused", &domain]);
    assert_eq!(virsh(&["domstate", &domain]), "paused");
    crash.ok(&["instance", "start", &name]);
    assert_eq!(virsh(&["domstate", &domain]), "running");
    crash.ok(&["instance", "delete", &name]);
}
