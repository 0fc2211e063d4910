//! What operators declare for placement, as a user checks it with the real
//! `zixiao` binary on the real containerd: a node label, a trait and a host
//! aggregate declared through the CLI; an instance that asks for a trait or
//! an aggregate no node has stays pending and `instance get` names what it
//! waits for; once declared, it is placed and its container runs. On the
//! embedded default (every command registers the local node again, so what
//! operators set must survive that), and through `--endpoint` against a
//! server on etcd with a `zixiao agent` that is restarted.
//!
//! Needs the private containerd (and etcd for the server) of
//! `scripts/services/`; skips with a reason elsewhere (and fails in CI,
//! where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(feature = "containerd")]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use zixiao_testing::output::{assert_refused, json, ok, text};
#[cfg(feature = "etcd")]
use zixiao_testing::process::{start_listening, Running};
use zixiao_testing::wait::{runtime_endpoint, wait_until_ok};

/// `zixiao` with a clean environment and the test's containerd.
fn zixiao(socket: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .args(["--containerd-socket", socket])
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ENDPOINT")
        .env_remove("ZIXIAO_ETCD_ENDPOINTS");
    command
}

/// `zixiao TARGET ARGS...`, run to completion; TARGET is `--state-dir
/// DIR` or `--endpoint URL`.
fn run(target: &[&str], socket: &str, args: &[&str]) -> Output {
    zixiao(socket)
        .args(target)
        .args(args)
        .output()
        .expect("run zixiao")
}

/// containerd's socket and the busybox OCI archive that comes with it.
fn containerd_and_busybox() -> Option<(String, String)> {
    let socket = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")?;
    let busybox = runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox image")?;
    Some((socket, busybox))
}

/// `instance create` of a busybox container `name` that says `name` and
/// sleeps, with `extra` flags (`--trait ssd`).
fn create_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", "echo $0 up; sleep 600", name]);
    args
}

/// Waits until instance `name` runs on `node` and its container has said
/// it is up (polled: a server places it in the background).
async fn wait_running(target: &[&str], socket: &str, name: &str, node: &str) {
    wait_until_ok(
        &format!("{name} running on {node}"),
        Duration::from_secs(60),
        || async {
            let got = json(run(
                target,
                socket,
                &["-o", "json", "instance", "get", name],
            ));
            if got["status"] != "running" || got["node"] != node {
                return Err(format!("{got}"));
            }
            let log = text(&run(target, socket, &["instance", "logs", name]).stdout);
            if log.contains(&format!("{name} up")) {
                Ok(())
            } else {
                Err(format!("the log so far: {log:?}"))
            }
        },
    )
    .await
}

/// The scenario, the same on both deployments: a trait, an aggregate, the
/// refusals, and what a node shows afterwards. `placed_by_the_call`: the
/// deployment converges in the caller (the embedded default), so the
/// command that declares the trait returns with the instance running.
async fn traits_and_aggregates_steer_placement(
    target: &[&str],
    socket: &str,
    node: &str,
    placed_by_the_call: bool,
) {
    let node_json = |args: &[&str]| json(run(target, socket, args));

    // A label, shown as the operators'.
    let labelled = ok(run(
        target,
        socket,
        &["node", "label", node, "disk=ssd", "tier=front"],
    ));
    assert!(labelled.contains("disk=ssd (operator)"), "{labelled}");

    // Asks for a trait no node has: pending, and both the create and
    // `instance get` say which.
    let out = run(target, socket, &create_args("db", &["--trait", "ssd"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("instance db is pending: 1 node: missing trait `ssd`"),
        "{}",
        text(&out.stderr)
    );
    let get = ok(run(target, socket, &["instance", "get", "db"]));
    assert!(get.contains("required traits: ssd"), "{get}");
    assert!(
        get.contains("Unschedulable: 1 node: missing trait `ssd`"),
        "{get}"
    );

    // Declared: placed, and its container runs.
    let traits = ok(run(target, socket, &["node", "trait", node, "add", "ssd"]));
    assert!(traits.contains("ssd (operator)"), "{traits}");
    if placed_by_the_call {
        let db = node_json(&["-o", "json", "instance", "get", "db"]);
        assert_eq!(
            db["status"], "running",
            "placed before `node trait` returned: {db}"
        );
    }
    wait_running(target, socket, "db", node).await;

    // An aggregate that does not exist yet, then one the node is not in.
    let out = run(
        target,
        socket,
        &create_args("web", &["--aggregate", "fast"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("aggregate `fast` does not exist"),
        "{}",
        text(&out.stderr)
    );
    let fast = node_json(&[
        "-o",
        "json",
        "aggregate",
        "create",
        "fast",
        "--meta",
        "tier=gold",
    ]);
    assert_eq!(fast["metadata"]["tier"], "gold", "{fast}");
    let get = wait_until_ok(
        "web's reason to follow",
        Duration::from_secs(30),
        || async {
            let get = ok(run(target, socket, &["instance", "get", "web"]));
            if get.contains("Unschedulable: 1 node: not in aggregate `fast`") {
                Ok(get)
            } else {
                Err(get)
            }
        },
    )
    .await;
    assert!(get.contains("aggregates: fast"), "{get}");

    let added = node_json(&["-o", "json", "aggregate", "add-node", "fast", node]);
    assert_eq!(added["nodes"], serde_json::json!([node]), "{added}");
    wait_running(target, socket, "web", node).await;
    let listed = node_json(&["-o", "json", "aggregate", "list"]);
    assert_eq!(listed[0]["name"], "fast", "{listed}");
    let table = ok(run(target, socket, &["aggregate", "list"]));
    assert!(
        table.contains("tier=gold") && table.contains(node),
        "{table}"
    );
    // Its metadata is edited in place; a bad key is refused naming it.
    let set = node_json(&[
        "-o",
        "json",
        "aggregate",
        "set",
        "fast",
        "tier=silver",
        "disk-",
    ]);
    assert_eq!(
        set["metadata"],
        serde_json::json!({"tier": "silver"}),
        "{set}"
    );
    assert_refused(
        run(
            target,
            socket,
            &["-o", "json", "aggregate", "set", "fast", "no key=v"],
        ),
        "a bad metadata key",
        2,
        "invalid_argument",
        "no key",
    );
    let set = node_json(&["-o", "json", "aggregate", "set", "fast", "tier=gold"]);
    assert_eq!(
        set["metadata"],
        serde_json::json!({"tier": "gold"}),
        "{set}"
    );

    // Refusals, each with its kind and exit code, changing nothing.
    assert_refused(
        run(
            target,
            socket,
            &["-o", "json", "aggregate", "delete", "fast"],
        ),
        "delete a used aggregate",
        1,
        "failed_precondition",
        node,
    );
    assert_refused(
        run(
            target,
            socket,
            &["-o", "json", "node", "label", node, "Bad Key=1"],
        ),
        "a bad label key",
        2,
        "invalid_argument",
        "labels",
    );
    assert_refused(
        run(
            target,
            socket,
            &["-o", "json", "aggregate", "create", "Fast"],
        ),
        "a bad aggregate name",
        2,
        "invalid_argument",
        "name",
    );
    assert_refused(
        run(target, socket, &["-o", "json", "aggregate", "get", "slow"]),
        "an unknown aggregate",
        1,
        "not_found",
        "slow",
    );
    assert_refused(
        run(
            target,
            socket,
            &["-o", "json", "node", "trait", "no-such-node", "add", "x"],
        ),
        "an unknown node",
        1,
        "not_found",
        "no-such-node",
    );

    // db and web hold the cores of a 2-core machine: green comes after.
    for name in ["db", "web"] {
        ok(run(target, socket, &["instance", "delete", name]));
    }
    carbon_steers_placement(target, socket, node, placed_by_the_call).await;
    ok(run(target, socket, &["instance", "delete", "green"]));
    let removed = node_json(&["-o", "json", "aggregate", "rm-node", "fast", node]);
    assert_eq!(removed["nodes"], serde_json::json!([]), "{removed}");
    ok(run(target, socket, &["aggregate", "delete", "fast"]));
    assert_eq!(
        node_json(&["-o", "json", "aggregate", "list"]),
        serde_json::json!([])
    );
}

/// `node set --carbon`: an instance that refuses power dirtier than 200
/// gCO2e/kWh waits while the node says 300, and is placed once it says
/// 150; a figure out of range or not a number changes nothing; `none`
/// takes it back.
async fn carbon_steers_placement(
    target: &[&str],
    socket: &str,
    node: &str,
    placed_by_the_call: bool,
) {
    let set = ok(run(
        target,
        socket,
        &["node", "set", node, "--carbon", "300"],
    ));
    assert!(set.contains("300 gCO2e/kWh (operators')"), "{set}");
    let spec = tempfile::NamedTempFile::new().expect("a spec file");
    std::fs::write(
        spec.path(),
        "name: green\nspec:\n  type: container\n  image: busybox\n  cpus: 1\n  memory_mib: 64\n  \
         command: [sh, -c, \"echo green up; sleep 600\"]\n  placement:\n    carbon: {max_intensity: 200}\n",
    )
    .expect("write the spec");
    let path = spec.path().to_str().expect("utf-8");
    let out = run(target, socket, &["instance", "create", "-f", path]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("carbon intensity above 200 gCO2e/kWh"),
        "{}",
        text(&out.stderr)
    );
    for (bad, reason) in [
        ("9000", "more than the 5000"),
        ("dirty", "not a whole number"),
    ] {
        let out = run(
            target,
            socket,
            &["-o", "json", "node", "set", node, "--carbon", bad],
        );
        assert_refused(
            out,
            "a bad carbon intensity",
            2,
            "invalid_argument",
            "carbon_intensity",
        );
        let out = run(target, socket, &["node", "set", node, "--carbon", bad]);
        assert!(text(&out.stderr).contains(reason), "{}", text(&out.stderr));
    }
    let got = json(run(target, socket, &["-o", "json", "node", "get", node]));
    assert_eq!(got["carbon_intensity"], 300, "unchanged: {got}");

    ok(run(
        target,
        socket,
        &["node", "set", node, "--carbon", "150"],
    ));
    if placed_by_the_call {
        let green = json(run(
            target,
            socket,
            &["-o", "json", "instance", "get", "green"],
        ));
        assert_eq!(
            green["status"], "running",
            "placed before `node set` returned: {green}"
        );
    }
    wait_running(target, socket, "green", node).await;
    let cleared = json(run(
        target,
        socket,
        &["-o", "json", "node", "set", node, "--carbon", "none"],
    ));
    assert_eq!(
        cleared["carbon_intensity"],
        serde_json::Value::Null,
        "{cleared}"
    );
}

/// The operator metadata node `node` shows: its labels and traits.
fn operator_metadata(target: &[&str], socket: &str, node: &str) -> serde_json::Value {
    let got = json(run(target, socket, &["-o", "json", "node", "get", node]));
    got["operator"].clone()
}

#[tokio::test]
async fn on_the_embedded_default_a_declared_trait_or_aggregate_places_the_waiting_instance() {
    let Some((socket, busybox)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_string_lossy().into_owned();
    let local = ["--state-dir", state.as_str()];
    ok(run(&local, &socket, &["image", "import", &busybox]));
    let nodes = json(run(&local, &socket, &["-o", "json", "node", "list"]));
    let node = nodes[0]["id"].as_str().expect("the local node").to_owned();

    traits_and_aggregates_steer_placement(&local, &socket, &node, true).await;

    // Every command above registered the local node again: what the
    // operator set is still there.
    let operator = operator_metadata(&local, &socket, &node);
    assert_eq!(operator["labels"]["disk"], "ssd", "{operator}");
    assert_eq!(operator["traits"], serde_json::json!(["ssd"]), "{operator}");
    let get = ok(run(&local, &socket, &["node", "get", &node]));
    assert!(get.contains("disk=ssd (operator)"), "{get}");
    ok(run(&local, &socket, &["node", "trait", &node, "rm", "ssd"]));
    ok(run(
        &local,
        &socket,
        &["node", "label", &node, "disk-", "tier-"],
    ));
    let operator = operator_metadata(&local, &socket, &node);
    assert!(operator.is_null(), "nothing left: {operator}");
    assert_dir_holds_nothing(dir.path());
}

/// The state directory's instances are all gone (so containerd's are too).
fn assert_dir_holds_nothing(state: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(state)
        .args(["-o", "json", "instance", "list"])
        .env_remove("ZIXIAO_STATE_DIR")
        .output()
        .expect("run zixiao");
    assert_eq!(json(out), serde_json::json!([]));
}

/// Starts `zixiao ARGS` and returns it with the address it listens on.
#[cfg(feature = "etcd")]
fn start(socket: &str, args: &[&str]) -> (Running, String) {
    let mut command = zixiao(socket);
    command.args(args);
    start_listening(command)
}

/// Waits until node `node` is ready through the server.
#[cfg(feature = "etcd")]
async fn wait_ready(remote: &[&str], socket: &str, node: &str) {
    wait_until_ok(
        &format!("node {node} to be ready"),
        Duration::from_secs(30),
        || async {
            let got = run(remote, socket, &["-o", "json", "node", "get", node]);
            let got: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap_or_default();
            match got["status"].as_str() {
                Some("ready") => Ok(()),
                _ => Err(format!("{got}")),
            }
        },
    )
    .await
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn through_a_server_on_etcd_declarations_place_instances_and_survive_an_agent_restart() {
    let Some((socket, busybox)) = containerd_and_busybox() else {
        return;
    };
    let Some(etcd) = runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The image, in the containerd namespace every node of this machine uses.
    let local_state = dir.path().join("local").to_string_lossy().into_owned();
    ok(run(
        &["--state-dir", &local_state],
        &socket,
        &["image", "import", &busybox],
    ));

    let prefix = format!("/zixiao-node-metadata-{}", std::process::id());
    let (_server, server) = start(
        &socket,
        &[
            "server",
            "--etcd",
            &etcd,
            "--etcd-prefix",
            &prefix,
            "--listen",
            "127.0.0.1:0",
            "--id",
            "metadata",
        ],
    );
    let node = format!("nm-{}", std::process::id());
    let agent_state = dir.path().join("agent").to_string_lossy().into_owned();
    let agent_args = [
        "--state-dir",
        agent_state.as_str(),
        "agent",
        "--server",
        server.as_str(),
        "--name",
        node.as_str(),
        "--no-networks",
        "--listen",
        "127.0.0.1:0",
    ];
    let (agent, _) = start(&socket, &agent_args);
    let remote = ["--endpoint", server.as_str()];
    wait_ready(&remote, &socket, &node).await;

    traits_and_aggregates_steer_placement(&remote, &socket, &node, false).await;

    // The agent restarts and registers its node again: what operators
    // declared stays.
    ok(run(&remote, &socket, &["node", "label", &node, "disk=ssd"]));
    ok(run(
        &remote,
        &socket,
        &["node", "trait", &node, "add", "gpu"],
    ));
    let before = json(run(&remote, &socket, &["-o", "json", "node", "get", &node]));
    drop(agent);
    let (_agent, _) = start(&socket, &agent_args);
    wait_until_ok(
        "the restarted agent to register again",
        Duration::from_secs(30),
        || async {
            let now = json(run(&remote, &socket, &["-o", "json", "node", "get", &node]));
            if now["status"] == "ready" && now["address"] != before["address"] {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        },
    )
    .await;
    let operator = operator_metadata(&remote, &socket, &node);
    assert_eq!(operator["labels"]["disk"], "ssd", "{operator}");
    assert_eq!(operator["labels"]["tier"], "front", "{operator}");
    assert_eq!(
        operator["traits"],
        serde_json::json!(["gpu", "ssd"]),
        "{operator}"
    );
    let get = ok(run(&remote, &socket, &["node", "get", &node]));
    assert!(
        get.contains("disk=ssd (operator)") && get.contains("gpu (operator)"),
        "{get}"
    );
}

/// The first processor's line `key` of /proc/cpuinfo.
fn cpuinfo(key: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    let first = info.split("\n\n").next().unwrap_or_default().to_owned();
    first.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

#[tokio::test]
async fn the_local_node_reports_its_cpu_numa_cells_and_kvm_as_facts_operators_cannot_change() {
    let Some((socket, busybox)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_string_lossy().into_owned();
    let local = ["--state-dir", state.as_str()];
    let nodes = json(run(&local, &socket, &["-o", "json", "node", "list"]));
    let node = &nodes[0];
    let id = node["id"].as_str().expect("the local node").to_owned();
    let reported = &node["reported"];

    // What /proc/cpuinfo says, as labels and traits of the agent's.
    let vendor = cpuinfo("vendor_id").expect("a vendor");
    assert_eq!(reported["labels"]["zixiao.io/cpu-vendor"], vendor.as_str());
    assert_eq!(node["labels"]["zixiao.io/cpu-vendor"], vendor.as_str());
    let flags = cpuinfo("flags").expect("flags");
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let traits: Vec<&str> = reported["traits"]
        .as_array()
        .expect("reported traits")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    for flag in ["aes", "avx", "avx2", "sse4_2", "svm", "vmx"] {
        assert_eq!(
            traits.contains(&format!("cpu.{flag}").as_str()),
            flags.contains(&flag),
            "cpu.{flag} in {traits:?}"
        );
    }
    let cells = std::fs::read_dir("/sys/devices/system/node")
        .expect("NUMA nodes")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("node"))
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(
        reported["labels"]["zixiao.io/numa-cells"],
        cells.to_string().as_str()
    );
    // The suite needs /dev/kvm (the microVM tests run on it).
    let kvm = reported["labels"]["zixiao.io/kvm"].as_str().unwrap_or("");
    assert!(["hardware", "software-nested"].contains(&kvm), "{reported}");
    assert!(traits.contains(&"kvm"), "{traits:?}");

    // Facts: an operator cannot take them away.
    let out = run(
        &local,
        &socket,
        &["-o", "json", "node", "trait", &id, "rm", "kvm"],
    );
    assert_refused(
        out,
        "a reported trait removed",
        1,
        "failed_precondition",
        "kvm",
    );
    let out = run(
        &local,
        &socket,
        &["-o", "json", "node", "label", &id, "zixiao.io/kvm=absent"],
    );
    assert_refused(
        out,
        "a reported label changed",
        1,
        "failed_precondition",
        "zixiao.io/kvm",
    );

    // Placement matches them like any other.
    ok(run(&local, &socket, &["image", "import", &busybox]));
    let placed = json(run(
        &local,
        &socket,
        &create_args("needs-kvm", &["--trait", "kvm", "-o", "json"]),
    ));
    assert_eq!(placed["status"], "running", "{placed}");
    let out = run(
        &local,
        &socket,
        &create_args("needs-nothing-here", &["--trait", "cpu.no-such-flag"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    ok(run(&local, &socket, &["instance", "delete", "needs-kvm"]));
    ok(run(
        &local,
        &socket,
        &["instance", "delete", "needs-nothing-here"],
    ));
    assert_dir_holds_nothing(dir.path());
}
