//! `zixiao server --embedded` as a user runs it, with the `zixiao` binary as
//! its client through `--endpoint`: the README's main job on the real
//! containerd (busybox imported on the node, a container that says hello
//! and sleeps: get, logs, stats, delete) and a QEMU microVM whose console
//! reaches the boot marker, then delete. The server converges in its
//! leader's loop while the CLI's calls wait, so every create reaches the
//! runtime once: the container runs (it is not `failed`), and afterwards
//! containerd and the process table hold nothing of either instance.
//!
//! Needs the private containerd and the microVM kernel of
//! `scripts/services/{containerd,microvm}.sh`; skips with a reason
//! elsewhere (and fails in CI, where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(all(feature = "containerd", feature = "microvm"))]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use zixiao_testing::output::{json, ok, text};
use zixiao_testing::runtimes::{ContainerdNamespace, MonitorProcesses, RuntimeView};
use zixiao_testing::wait::{runtime_endpoint, wait_until_ok};

/// The containerd namespace the CLI's nodes use.
const NAMESPACE: &str = "zixiao";

/// What the test microVM's /init prints on its console once it booted.
const BOOT_MARKER: &str = "ZIXIAO-BOOT-OK";

/// The real runtimes this test needs, or `None` after saying why not.
struct Runtimes {
    socket: String,
    busybox: String,
    qemu: String,
    kernel: String,
    initrd: String,
}

impl Runtimes {
    fn from_env() -> Option<Self> {
        Some(Runtimes {
            socket: runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")?,
            busybox: runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox image")?,
            qemu: runtime_endpoint("ZIXIAO_TEST_MICROVM_QEMU", "QEMU")?,
            kernel: runtime_endpoint("ZIXIAO_TEST_MICROVM_KERNEL", "the test microVM kernel")?,
            initrd: runtime_endpoint("ZIXIAO_TEST_MICROVM_INITRD", "the test microVM initramfs")?,
        })
    }
}

/// `zixiao` with a clean environment.
fn zixiao() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ENDPOINT")
        .env_remove("ZIXIAO_MICROVM_BACKEND")
        .env_remove("ZIXIAO_ETCD_ENDPOINTS");
    command
}

/// `zixiao --state-dir STATE`: on the node itself, through the daemon's
/// socket while the server holds the state directory.
fn local(state: &Path, runtimes: &Runtimes) -> Command {
    let mut command = zixiao();
    command
        .arg("--state-dir")
        .arg(state)
        .args(["--containerd-socket", &runtimes.socket])
        .env("ZIXIAO_QEMU_BIN", &runtimes.qemu);
    command
}

/// `zixiao --config ADMIN_CONFIG ARGS...`, run to completion: the client
/// configuration the server wrote when it made its PKI (its endpoint, its
/// CA, an admin token).
fn remote(admin: &str, args: &[&str]) -> Output {
    zixiao()
        .args(["--config", admin])
        .args(args)
        .output()
        .expect("run zixiao")
}

/// `zixiao server --embedded` on `state`, until dropped.
struct Server {
    child: Child,
    /// Its admin's client configuration.
    admin: String,
    /// Where it serves its metrics (`--metrics-listen 127.0.0.1:0`).
    metrics: String,
}

/// The stats history of `instance` once it holds `at_least` samples.
async fn wait_for_history(admin: &str, instance: &str, at_least: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let args = ["-o", "json", "instance", "stats", instance, "--history"];
        let samples = json(remote(admin, &args));
        let samples = samples.as_array().expect("a list").clone();
        if samples.len() >= at_least || std::time::Instant::now() > deadline {
            assert!(samples.len() >= at_least, "{samples:?}");
            return samples;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The usage series of `node` once its latest sample counts an instance
/// using memory.
async fn wait_for_node_usage(admin: &str, node: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let samples = json(remote(admin, &["-o", "json", "node", "stats", node]));
        let samples = samples.as_array().expect("a list").clone();
        let counted = samples.last().is_some_and(|last| {
            last["instances"].as_u64() >= Some(1)
                && last["memory_bytes"].as_u64().is_some_and(|m| m > 0)
        });
        if counted || std::time::Instant::now() > deadline {
            assert!(counted, "{samples:?}");
            return samples;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The usage series of `node` once a sample carries its host's memory
/// (the server reads its own node's host each round).
async fn wait_for_host_usage(admin: &str, node: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let samples = json(remote(admin, &["-o", "json", "node", "stats", node]));
        let samples = samples.as_array().expect("a list").clone();
        let hosted = samples
            .iter()
            .any(|s| s["host_memory_capacity_bytes"].is_u64() && s["host_cpu_millicores"].is_u64());
        if hosted || std::time::Instant::now() > deadline {
            assert!(hosted, "{samples:?}");
            return samples;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

impl Server {
    fn start(state: &Path, runtimes: &Runtimes) -> Self {
        // Stats samples twice a second, so a history grows within the test.
        let config = state.with_extension("server.yaml");
        std::fs::write(&config, "timing:\n  stats_sample_ms: 500\n").expect("server config");
        let mut child = zixiao()
            .arg("--state-dir")
            .arg(state)
            .args(["--containerd-socket", &runtimes.socket])
            .args(["server", "--embedded", "--listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&config)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("ZIXIAO_QEMU_BIN", &runtimes.qemu)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run zixiao server");
        // It announces its API, its daemon socket, then its metrics.
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut line = || lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let first = line();
        let endpoint = first
            .trim()
            .rsplit_once(" listening on ")
            .map(|(_, addr)| addr.to_owned())
            .unwrap_or_else(|| panic!("zixiao server did not start: {first:?}"));
        assert!(endpoint.starts_with("https://"), "{endpoint}");
        let metrics = (0..2)
            .map(|_| line())
            .find_map(|l| {
                l.trim()
                    .rsplit_once(" metrics on http://")
                    .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
                    .map(str::to_owned)
            })
            .expect("the server announces its metrics address");
        let admin = state.join("pki/admin.yaml").display().to_string();
        Server {
            child,
            admin,
            metrics,
        }
    }

    /// `GET /metrics`, as Prometheus scrapes it.
    fn scrape(&self) -> std::collections::BTreeMap<String, f64> {
        zixiao_testing::scrape::scrape(&self.metrics)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the server this test started; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// A state directory short enough for the microVM monitor's socket paths.
fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("zx-")
        .tempdir()
        .expect("tempdir")
}

/// Polls `zixiao instance logs NAME` through the server until it contains
/// `text` (each call exits 0).
async fn wait_for_log(admin: &str, name: &str, wanted: &str) -> String {
    wait_until_ok(
        &format!("{wanted:?} in the log of {name}"),
        Duration::from_secs(120),
        || async {
            let log = ok(remote(admin, &["instance", "logs", name]));
            if log.contains(wanted) {
                Ok(log)
            } else {
                Err(format!("the log so far: {log:?}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_main_job_and_a_qemu_microvm_through_an_embedded_server() {
    let Some(runtimes) = Runtimes::from_env() else {
        return;
    };
    let state = state_dir();
    // Images live in the node's runtime: imported on the node, before the
    // server holds its state directory.
    let imported = ok(zixiao()
        .arg("--state-dir")
        .arg(state.path())
        .args(["--containerd-socket", &runtimes.socket])
        .args(["image", "import", &runtimes.busybox])
        .output()
        .expect("run zixiao"));
    assert!(imported.contains("busybox"), "{imported}");
    // So are the microVM's kernel and initrd, into the node's image store.
    for (file, kind, name) in [
        (&runtimes.kernel, "kernel", "k1"),
        (&runtimes.initrd, "initrd", "i1"),
    ] {
        ok(local(state.path(), &runtimes)
            .args(["image", "import", file, "--kind", kind, "--name", name])
            .output()
            .expect("run zixiao"));
    }
    let server = Server::start(state.path(), &runtimes);
    let admin = server.admin.as_str();

    // The main job: a container that says hello and sleeps.
    let created = json(remote(
        admin,
        &[
            "-o",
            "json",
            "instance",
            "create",
            "--type",
            "container",
            "--image",
            "busybox",
            "--name",
            "hello",
            "--",
            "sh",
            "-c",
            "echo hello; sleep 300",
        ],
    ));
    assert_eq!(created["status"], "running", "{created}");
    let hello_id = created["id"].as_str().expect("id").to_owned();
    // The metrics show it, the node, and the create that made it.
    let metrics = server.scrape();
    let running = r#"zixiao_instances{type="container",status="running"}"#;
    assert_eq!(metrics.get(running), Some(&1.0), "{metrics:?}");
    assert_eq!(metrics.get(r#"zixiao_nodes{status="ready"}"#), Some(&1.0));
    assert_eq!(metrics.get("zixiao_up"), Some(&1.0));
    let creates = r#"zixiao_api_requests_total{operation="instance.create",code="ok"}"#;
    assert_eq!(metrics.get(creates), Some(&1.0), "{metrics:?}");
    let timed = r#"zixiao_api_request_duration_seconds_count{operation="instance.create"}"#;
    assert_eq!(metrics.get(timed), Some(&1.0));
    // The controller's own work behind that create: a placement, commits
    // and a converge, and a queue with nothing left in it.
    let at_least_one = |series: &str| {
        assert!(
            metrics.get(series).is_some_and(|v| *v >= 1.0),
            "{series}: {metrics:?}"
        )
    };
    at_least_one(r#"zixiao_placements_total{outcome="placed"}"#);
    at_least_one("zixiao_placement_duration_seconds_count");
    at_least_one(r#"zixiao_store_commits_total{outcome="ok"}"#);
    at_least_one(r#"zixiao_converges_total{outcome="ok"}"#);
    assert!(
        metrics.contains_key("zixiao_converge_queue_depth"),
        "{metrics:?}"
    );
    // The server samples it: a history of two samples or more, oldest
    // first, whose table shows the cores used between them.
    let history = wait_for_history(admin, "hello", 2).await;
    let at = |i: usize| history[i]["at"].as_str().expect("at").to_owned();
    assert!(at(0) < at(1), "{history:?}");
    assert!(history[1]["memory_bytes"].as_u64().is_some_and(|m| m > 0));
    // The state directory's socket answers from the same samples.
    let here = json(
        local(state.path(), &runtimes)
            .args(["-o", "json", "instance", "stats", "hello", "--history"])
            .output()
            .expect("run zixiao"),
    );
    assert!(here.as_array().is_some_and(|s| s.len() >= 2), "{here}");
    let table = ok(remote(admin, &["instance", "stats", "hello", "--history"]));
    let second = table.lines().nth(2).expect("two samples");
    let cpu = second.split_whitespace().nth(1).expect("cpu column");
    assert!(cpu.parse::<f64>().is_ok(), "{table}");
    // The node's series counts it: one running instance, its memory in.
    let nodes = json(remote(admin, &["-o", "json", "node", "list"]));
    let node = nodes[0]["id"].as_str().expect("a node id").to_owned();
    let usage = wait_for_node_usage(admin, &node).await;
    let last = usage.last().expect("a sample");
    assert_eq!(last["instances"], 1, "{usage:?}");
    assert!(last["cpu_millicores"].is_u64(), "{usage:?}");
    let table = ok(remote(admin, &["node", "stats", &node]));
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.lines().count() >= 2, "{table}");
    // Beside its instances, the whole host: this machine's memory and
    // CPUs, more memory in use than the instance alone, a load.
    let usage = wait_for_host_usage(admin, &node).await;
    let hosted = usage
        .iter()
        .rev()
        .find(|s| s["host_cpu_millicores"].is_u64())
        .expect("a host sample");
    assert_eq!(
        hosted["host_memory_capacity_bytes"],
        zixiao_testing::host::mem_total_bytes(),
        "{hosted}"
    );
    assert_eq!(
        hosted["host_cpu_capacity_millicores"],
        zixiao_testing::host::online_cpus() * 1000,
        "{hosted}"
    );
    let host_memory = hosted["host_memory_bytes"].as_u64().expect("host memory");
    assert!(
        host_memory > hosted["memory_bytes"].as_u64().expect("memory"),
        "{hosted}"
    );
    assert!(
        host_memory < zixiao_testing::host::mem_total_bytes(),
        "{hosted}"
    );
    let host_cpu = hosted["host_cpu_millicores"].as_u64().expect("host cpu");
    assert!(
        host_cpu <= zixiao_testing::host::online_cpus() * 1000,
        "{hosted}"
    );
    assert!(
        hosted["host_load1"].as_f64().is_some_and(|l| l >= 0.0),
        "{hosted}"
    );
    let table = ok(remote(admin, &["node", "stats", &node]));
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("HOST MEMORY")),
        "{table}"
    );
    let details = ok(remote(admin, &["node", "get", &node]));
    let host = details
        .lines()
        .find(|l| l.starts_with("host:"))
        .unwrap_or_else(|| panic!("no host line: {details}"));
    assert!(
        host.contains(&format!("/{} cores", zixiao_testing::host::online_cpus()))
            && host.contains("load "),
        "{host}"
    );
    // Prometheus has the same node: what it offers and holds from the
    // store, what it uses from the newest sample.
    let metrics = server.scrape();
    let of_node = |name: &str| {
        let series = format!(r#"{name}{{node="{node}"}}"#);
        *metrics
            .get(&series)
            .unwrap_or_else(|| panic!("no {series}: {metrics:?}"))
    };
    assert_eq!(of_node("zixiao_node_instances"), 1.0);
    let capacity = &nodes[0]["capacity"];
    assert_eq!(
        of_node("zixiao_node_memory_capacity_bytes"),
        capacity["memory_mib"].as_f64().expect("memory_mib") * 1048576.0,
        "{capacity}"
    );
    assert!(
        of_node("zixiao_node_cpu_allocatable_cores") >= of_node("zixiao_node_cpu_capacity_cores")
    );
    assert!(of_node("zixiao_node_cpu_allocated_cores") > 0.0);
    assert!(of_node("zixiao_node_instances_memory_bytes") > 0.0);
    let host_memory = of_node("zixiao_node_host_memory_bytes");
    assert!(
        host_memory > 0.0 && host_memory < zixiao_testing::host::mem_total_bytes() as f64,
        "{host_memory}"
    );
    assert!(of_node("zixiao_node_host_load1") >= 0.0);
    let unknown = remote(admin, &["node", "stats", "no-such-node"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown.stderr));
    assert!(
        text(&unknown.stderr).contains("not found"),
        "{}",
        text(&unknown.stderr)
    );
    let got = json(remote(admin, &["-o", "json", "instance", "get", "hello"]));
    assert_eq!(got["status"], "running", "not failed: {got}");
    assert!(got["failure"].is_null(), "{got}");
    let table = ok(remote(admin, &["instance", "get", "hello"]));
    assert!(table.contains("running"), "{table}");
    let log = wait_for_log(admin, "hello", "hello\n").await;
    assert_eq!(log, "hello\n");
    let stats = json(remote(admin, &["-o", "json", "instance", "stats", "hello"]));
    assert!(stats["pids"].as_u64().is_some_and(|p| p >= 1), "{stats}");
    assert!(
        stats["memory_bytes"].as_u64().is_some_and(|m| m > 0),
        "{stats}"
    );
    // Still running after all that: nothing marked it failed meanwhile.
    let got = json(remote(admin, &["-o", "json", "instance", "get", "hello"]));
    assert_eq!(got["status"], "running", "{got}");
    ok(remote(admin, &["instance", "stop", "hello"]));
    let metrics = server.scrape();
    assert_eq!(metrics.get(running), None, "{metrics:?}");
    let stopped = r#"zixiao_instances{type="container",status="stopped"}"#;
    assert_eq!(metrics.get(stopped), Some(&1.0), "{metrics:?}");
    ok(remote(admin, &["instance", "delete", "hello"]));
    let placed = format!(r#"zixiao_node_instances{{node="{node}"}}"#);
    assert_eq!(server.scrape().get(&placed), Some(&0.0));
    let gone = remote(admin, &["instance", "get", "hello"]);
    let refused = r#"zixiao_api_requests_total{operation="instance.get",code="not_found"}"#;
    assert_eq!(server.scrape().get(refused), Some(&1.0));
    assert_ne!(
        gone.status.code(),
        Some(0),
        "deleted: {}",
        text(&gone.stdout)
    );

    // Over TCP, a spec naming host paths is refused: a remote caller could
    // make the node read any of its files. Nothing is stored.
    let microvm = |name: &'static str, kernel: &str, initrd: &str| {
        [
            "-o",
            "json",
            "instance",
            "create",
            "--name",
            name,
            "--type",
            "microvm",
            "--backend",
            "qemu",
            "--cmdline",
            "console=ttyS0 quiet",
            "--memory",
            "256",
            "--kernel",
            kernel,
            "--initrd",
            initrd,
        ]
        .map(str::to_owned)
    };
    let args = microvm("m0", &runtimes.kernel, &runtimes.initrd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = remote(admin, &args);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let why = text(&refused.stderr);
    assert!(
        why.contains("spec.kernel") && why.contains("host paths are refused"),
        "{why}"
    );
    // Errors over TCP show no host path, not even the caller's own.
    assert!(
        why.contains("`<host path>`") && !why.contains(&runtimes.kernel),
        "{why}"
    );
    let listed = json(remote(admin, &["-o", "json", "instance", "list"]));
    assert_eq!(listed, serde_json::json!([]));
    // The same spec through the state directory's socket (the node's own
    // administrator) is taken.
    let created = json(
        local(state.path(), &runtimes)
            .args(&args)
            .output()
            .expect("run zixiao"),
    );
    assert_eq!(
        created["spec"]["kernel"],
        runtimes.kernel.as_str(),
        "{created}"
    );
    ok(local(state.path(), &runtimes)
        .args(["instance", "delete", "m0"])
        .output()
        .expect("run zixiao"));

    // A container whose program is missing fails, and the runtime's reason
    // names the path. Over TCP the conditions show no path; on the node's
    // own socket they do.
    let lost = [
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
        "--name",
        "lost",
        "--",
        "/no/such/program",
    ];
    let failed = remote(admin, &lost);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let got = json(remote(admin, &["-o", "json", "instance", "get", "lost"]));
    let conditions = got["conditions"].to_string();
    assert!(
        conditions.contains("<host path>") && !conditions.contains("/no/such/program"),
        "{conditions}"
    );
    let here = json(
        local(state.path(), &runtimes)
            .args(["-o", "json", "instance", "get", "lost"])
            .output()
            .expect("run zixiao"),
    );
    let conditions = here["conditions"].to_string();
    assert!(conditions.contains("/no/such/program"), "{conditions}");
    ok(remote(admin, &["instance", "delete", "lost"]));

    // A QEMU microVM of the store's images: its console reaches the boot marker.
    let args = microvm("m1", "k1", "i1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let created = json(remote(admin, &args));
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["runtime"], "qemu", "{created}");
    let vm_id = created["id"].as_str().expect("id").to_owned();
    let monitors = MonitorProcesses::new(state.path().join("runtime").join("microvm"));
    let running: Vec<_> = monitors
        .monitors()
        .into_iter()
        .filter(|m| m.instance == vm_id)
        .collect();
    assert_eq!(running.len(), 1, "one QEMU for the microVM: {running:?}");
    wait_for_log(admin, "m1", BOOT_MARKER).await;
    ok(remote(admin, &["instance", "delete", "m1"]));

    // Nothing is left: no container or task, no QEMU, no run directory.
    let containers = ContainerdNamespace::new(&runtimes.socket, NAMESPACE).only([hello_id]);
    for view in [
        &containers as &dyn RuntimeView,
        &monitors as &dyn RuntimeView,
    ] {
        let left = view.held().expect("the runtime");
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    let listed = json(remote(admin, &["-o", "json", "instance", "list"]));
    assert_eq!(listed, serde_json::json!([]));
}

/// `instance create` through `--endpoint` of an instance that cannot run
/// exits 1 and says why, as it does without `--endpoint`.
#[tokio::test]
async fn a_create_through_the_endpoint_that_cannot_run_exits_1() {
    let Some(runtimes) = Runtimes::from_env() else {
        return;
    };
    let state = state_dir();
    let server = Server::start(state.path(), &runtimes);
    // 8 TiB: valid, but more than this machine has.
    let out = remote(
        &server.admin,
        &[
            "instance",
            "create",
            "--type",
            "container",
            "--image",
            "busybox",
            "--name",
            "huge",
            "--memory",
            "8388608",
        ],
    );
    let get = ok(remote(&server.admin, &["instance", "get", "huge"]));
    assert!(get.contains("pending"), "{get}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a create that leaves the instance pending must fail; stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("insufficient memory"),
        "{}",
        text(&out.stderr)
    );
    ok(remote(&server.admin, &["instance", "delete", "huge"]));
}

#[tokio::test]
async fn an_image_pulled_through_the_server_runs() {
    let Some(runtimes) = Runtimes::from_env() else {
        return;
    };
    let Some(image) = runtime_endpoint("ZIXIAO_TEST_REGISTRY_BUSYBOX", "the loopback registry")
    else {
        return;
    };
    let state = state_dir();
    let server = Server::start(state.path(), &runtimes);
    let admin = server.admin.as_str();
    // Over gRPC: the server's node pulls, and the progress reaches the client.
    let out = remote(admin, &["-o", "json", "image", "pull", &image]);
    let stderr = text(&out.stderr);
    let pulled = json(out);
    assert_eq!(pulled["name"], image.as_str());
    assert!(
        stderr.contains("[2/2] sha256:") && stderr.contains("unpacking"),
        "{stderr}"
    );
    let name = format!("pulled-{}", std::process::id());
    ok(remote(
        admin,
        &[
            "instance",
            "create",
            "--type",
            "container",
            "--image",
            &image,
            "--name",
            &name,
            "--",
            "echo",
            "hi",
        ],
    ));
    wait_for_log(admin, &name, "hi").await;
    ok(remote(admin, &["instance", "delete", &name]));
    ok(remote(admin, &["image", "rm", &image]));
    // A malformed reference is refused before anything is sent, naming the part.
    let bad = remote(admin, &["image", "pull", "Registry.Example/UPPER:1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("repository"),
        "{}",
        text(&bad.stderr)
    );
}
