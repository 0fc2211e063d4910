//! Retiring a node, as an operator checks it with the real `zixiao` binary
//! on the real containerd: `node decommission` stops what cannot move (its
//! container's task is gone from containerd), the node shows
//! `decommissioned` with no runtime, nothing new is placed there and what
//! stayed cannot start there again, and `node delete` waits for what stayed,
//! naming it. On the embedded default (every command registers the local
//! node again) and through a server on etcd whose agent is restarted: its
//! registrations never bring the node back.
//!
//! Needs the private containerd (and etcd for the server) of
//! `scripts/services/`; skips with a reason elsewhere (and fails in CI,
//! where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(feature = "containerd")]

use std::process::{Command, Output};
use std::time::Duration;

use zixiao_testing::output::{assert_refused, json, ok, text};
#[cfg(feature = "etcd")]
use zixiao_testing::process::{start_listening, Running};
use zixiao_testing::runtimes::ContainerdNamespace;
use zixiao_testing::wait::{runtime_endpoint, wait_until_ok};

/// The containerd namespace the CLI's nodes use.
const NAMESPACE: &str = "zixiao";

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

/// `instance create` of a busybox container `name` that sleeps, with
/// restart policy `restart`.
fn create_args<'a>(name: &'a str, restart: &'a str) -> Vec<&'a str> {
    vec![
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
        "--name",
        name,
        "--restart",
        restart,
        "-o",
        "json",
        "--",
        "sleep",
        "600",
    ]
}

/// Whether containerd runs a task for instance `id` now.
fn task_runs(socket: &str, id: &str) -> bool {
    ContainerdNamespace::new(socket, NAMESPACE)
        .only([id.to_owned()])
        .tasks()
        .expect("list containerd's tasks")
        .iter()
        .any(|t| t.status == "RUNNING")
}

/// `node get NODE -o json`.
fn node(target: &[&str], socket: &str, node: &str) -> serde_json::Value {
    json(run(target, socket, &["-o", "json", "node", "get", node]))
}

/// The node is retired: decommissioned, offering no runtime, the
/// container runtime listed as missing because of it.
fn assert_retired(node: &serde_json::Value) {
    assert_eq!(node["status"], "decommissioned", "{node}");
    assert_eq!(node["runtimes"], serde_json::json!([]), "{node}");
    let why = node["missing_runtimes"]["container"].as_str().unwrap_or("");
    assert!(why.contains("decommissioned"), "{node}");
}

#[tokio::test]
async fn on_the_embedded_default_a_decommissioned_node_stops_what_stayed_and_takes_nothing() {
    let Some((socket, busybox)) = containerd_and_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_string_lossy().into_owned();
    let local = ["--state-dir", state.as_str()];
    ok(run(&local, &socket, &["image", "import", &busybox]));
    let stays = json(run(&local, &socket, &create_args("stays", "never")));
    assert_eq!(stays["status"], "running", "{stays}");
    let id = stays["id"].as_str().expect("id").to_owned();
    let node_id = stays["node"].as_str().expect("placed").to_owned();
    assert!(task_runs(&socket, &id), "the container runs before");

    let report = json(run(
        &local,
        &socket,
        &["-o", "json", "node", "decommission", &node_id],
    ));
    assert_eq!(report["stopped"], serde_json::json!(["stays"]), "{report}");
    assert_eq!(report["status"], "decommissioned", "{report}");
    assert!(
        !task_runs(&socket, &id),
        "its task is stopped in containerd"
    );
    // Every command registers the local node again: it stays retired.
    assert_retired(&node(&local, &socket, &node_id));
    let shown = ok(run(&local, &socket, &["node", "get", &node_id]));
    assert!(shown.contains("decommissioned"), "{shown}");

    // Nothing new is placed there (it was the only node: the create is
    // refused, storing nothing); what stayed cannot start there again; both
    // say why.
    let out = run(&local, &socket, &create_args("new", "always"));
    assert_refused(out, "a create", 1, "unsupported", "decommissioned");
    let listed = json(run(&local, &socket, &["-o", "json", "instance", "list"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let out = run(
        &local,
        &socket,
        &["-o", "json", "instance", "start", "stays"],
    );
    assert_refused(out, "a start", 1, "failed_precondition", "decommissioned");
    assert!(!task_runs(&socket, &id), "nothing started it");

    // The record goes only once what stayed is gone, and the refusal names it.
    let out = run(&local, &socket, &["-o", "json", "node", "delete", &node_id]);
    assert_refused(out, "a node delete", 1, "failed_precondition", "stays");
    assert_retired(&node(&local, &socket, &node_id));
    ok(run(&local, &socket, &["instance", "delete", "stays"]));
    let deleted = json(run(
        &local,
        &socket,
        &["-o", "json", "node", "delete", &node_id],
    ));
    assert_eq!(deleted["deleted"], node_id.as_str(), "{deleted}");
    // The next command registers this machine anew, ready.
    let again = node(&local, &socket, &node_id);
    assert_eq!(again["status"], "ready", "{again}");
    assert!(
        again["runtimes"]
            .as_array()
            .is_some_and(|r| r.contains(&serde_json::json!("container"))),
        "{again}"
    );
}

/// Starts `zixiao ARGS` and returns it with the address it listens on.
#[cfg(feature = "etcd")]
fn start(socket: &str, args: &[&str]) -> (Running, String) {
    let mut command = zixiao(socket);
    command.args(args);
    start_listening(command)
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn through_a_server_a_restarted_agent_does_not_bring_a_decommissioned_node_back() {
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
    let prefix = format!("/zixiao-decommission-{}", std::process::id());
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
            "decommission",
        ],
    );
    let node_id = format!("dc-{}", std::process::id());
    let agent_state = dir.path().join("agent").to_string_lossy().into_owned();
    let agent_args = [
        "--state-dir",
        agent_state.as_str(),
        "agent",
        "--server",
        server.as_str(),
        "--name",
        node_id.as_str(),
        "--no-networks",
        "--listen",
        "127.0.0.1:0",
    ];
    let (agent, _) = start(&socket, &agent_args);
    let remote = ["--endpoint", server.as_str()];
    wait_until_ok(
        "the agent's node to be ready",
        Duration::from_secs(30),
        || async {
            let got = run(&remote, &socket, &["-o", "json", "node", "get", &node_id]);
            let got: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap_or_default();
            match got["status"].as_str() {
                Some("ready") => Ok(()),
                _ => Err(format!("{got}")),
            }
        },
    )
    .await;
    // It restarts elsewhere, but there is no elsewhere: it waits.
    let _ = run(&remote, &socket, &create_args("web", "always"));
    let running_id = wait_until_ok("web to run", Duration::from_secs(60), || async {
        let got = json(run(
            &remote,
            &socket,
            &["-o", "json", "instance", "get", "web"],
        ));
        let id = got["id"].as_str().unwrap_or_default().to_owned();
        if got["status"] == "running" && task_runs(&socket, &id) {
            Ok(id)
        } else {
            Err(format!("{got}"))
        }
    })
    .await;

    let report = json(run(
        &remote,
        &socket,
        &["-o", "json", "node", "decommission", &node_id],
    ));
    assert_eq!(report["status"], "decommissioned", "{report}");
    assert_eq!(report["pending"], serde_json::json!(["web"]), "{report}");
    wait_until_ok(
        "web's task to end on the retired node",
        Duration::from_secs(30),
        || async {
            if task_runs(&socket, &running_id) {
                Err("still running".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert_retired(&node(&remote, &socket, &node_id));

    // The agent restarts and registers again: the node stays retired and
    // the waiting instance is not placed back on it.
    let before = node(&remote, &socket, &node_id);
    drop(agent);
    let (agent, _) = start(&socket, &agent_args);
    wait_until_ok(
        "the restarted agent to register again",
        Duration::from_secs(30),
        || async {
            let now = node(&remote, &socket, &node_id);
            if now["address"] != before["address"] {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        },
    )
    .await;
    assert_retired(&node(&remote, &socket, &node_id));
    let web = json(run(
        &remote,
        &socket,
        &["-o", "json", "instance", "get", "web"],
    ));
    assert_eq!(web["status"], "pending", "{web}");
    assert!(web["node"].is_null(), "{web}");
    assert!(!task_runs(&socket, &running_id), "nothing runs it there");

    // Retired for good: its agent is stopped, and the record deleted.
    drop(agent);
    ok(run(&remote, &socket, &["node", "delete", &node_id]));
    let out = run(&remote, &socket, &["node", "get", &node_id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    ok(run(&remote, &socket, &["instance", "delete", "web"]));
}
