//! `zixiao operation` as a user meets it, with real containers through
//! containerd: on the embedded deployment (`instance create --no-wait`
//! prints the operation's id, `operation watch` follows it to success),
//! and through a secured server with an agent, where `operation watch`
//! follows a create through a restart of the server. Bad input (a cancel
//! of a finished operation, a get of an unknown id) is refused with its
//! kind and changes nothing.
//!
//! Needs the containerd and etcd of `scripts/services/`; skips with a
//! reason elsewhere (and fails in CI, where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(all(feature = "containerd", feature = "etcd"))]

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use zixiao_testing::output::{assert_refused, json, ok};
use zixiao_testing::wait::wait_until;

use support::{
    agent, cluster, containerd, import_busybox, serve_on, start_agent, wait_ready, zixiao, Running,
};

/// `zixiao` on the embedded deployment in `state`.
fn embedded(state: &Path, socket: &str) -> Command {
    let mut command = zixiao(state);
    command
        .arg("--state-dir")
        .arg(state.join("state"))
        .args(["--containerd-socket", socket]);
    command
}

fn run(mut command: Command, args: &[&str]) -> Output {
    command.args(args).output().expect("run zixiao")
}

#[test]
fn a_create_without_waiting_is_watched_to_success() {
    let Some((socket, busybox)) = containerd() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let zx = |args: &[&str]| run(embedded(state, &socket), args);
    ok(zx(&["image", "import", &busybox]));

    let printed = ok(zx(&[
        "instance",
        "create",
        "--no-wait",
        "--name",
        "ops-web",
        "--type",
        "container",
        "--image",
        "busybox",
        "--",
        "sleep",
        "600",
    ]));
    let id = printed.trim().to_owned();
    assert!(
        id.starts_with("op-") && !id.contains('\n'),
        "only the id: {printed}"
    );
    let listed = json(zx(&["operation", "list", "-o", "json"]));
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["phase"], "running", "{listed}");

    let watched = ok(zx(&["operation", "watch", &id]));
    let last = watched.lines().last().unwrap_or_default();
    assert!(last.starts_with("succeeded"), "{watched}");
    let instance = json(zx(&["instance", "get", "ops-web", "-o", "json"]));
    assert_eq!(instance["status"], "running");
    assert_eq!(instance["operation"], id.as_str());
    let operation = json(zx(&["operation", "get", &id, "-o", "json"]));
    assert_eq!(operation["phase"], "succeeded");
    assert_eq!(operation["kind"], "create");
    assert_eq!(operation["result"], instance["id"]);

    // Bad input: refused with its kind, nothing changed.
    assert_refused(
        zx(&["operation", "cancel", &id, "-o", "json"]),
        "cancel of a finished operation",
        1,
        "failed_precondition",
        "has already succeeded",
    );
    let unknown = format!("op-{}", "0".repeat(32));
    assert_refused(
        zx(&["operation", "get", &unknown, "-o", "json"]),
        "get of an unknown operation",
        1,
        "not_found",
        &unknown,
    );
    assert_refused(
        zx(&["operation", "get", "web", "-o", "json"]),
        "get of no operation id",
        2,
        "invalid_argument",
        "not an operation id",
    );
    assert_eq!(
        json(zx(&["operation", "get", &id, "-o", "json"])),
        operation
    );

    // A stop without waiting prints its own operation, watched to success.
    let stop = ok(zx(&["instance", "stop", "--no-wait", "ops-web"]));
    let stopped = ok(zx(&["operation", "watch", stop.trim()]));
    assert!(
        stopped
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("succeeded"),
        "{stopped}"
    );
    ok(zx(&["instance", "delete", "ops-web"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn operation_watch_follows_a_create_through_a_server_restart() {
    let (Some((socket, busybox)), Some(mut cluster)) = (containerd(), cluster().await) else {
        return;
    };
    let admin = cluster.admin();
    let token: Value = json(cluster.run(&admin, &["token", "create", "--role", "agent"]));
    let token = token["secret"].as_str().expect("secret").to_owned();
    let _agent = start_agent(agent(&cluster, &socket, "ops-worker", Some(&token)));
    wait_ready(&cluster, "ops-worker").await;
    import_busybox(&cluster, &socket, &busybox);

    // With the only node cordoned, the create waits for a node: still
    // running when the server goes away.
    json(cluster.run(&admin, &["node", "cordon", "ops-worker"]));
    let created = json(cluster.run(
        &admin,
        &[
            "instance",
            "create",
            "--no-wait",
            "--name",
            "ops-web",
            "--type",
            "container",
            "--image",
            "busybox",
            "--memory",
            "32",
            "--",
            "sleep",
            "600",
        ],
    ));
    let id = created["operation"].as_str().expect("operation").to_owned();
    // The scheduler records why it waits a moment after the create is
    // stored; the watch below starts from that step.
    let operation = wait_until(
        "the create to wait for a node",
        Duration::from_secs(60),
        || async {
            let operation = json(cluster.run(&admin, &["operation", "get", &id]));
            operation["step"]
                .as_str()
                .is_some_and(|s| s.starts_with("waiting for a node"))
                .then_some(operation)
        },
    )
    .await;
    assert_eq!(operation["phase"], "running", "{operation}");
    assert_eq!(
        operation["requested_by"]
            .as_str()
            .map(|s| s.contains("admin")),
        Some(true),
        "{operation}"
    );

    let watch = zixiao(&cluster.dir)
        .arg("--config")
        .arg(&admin)
        .args(["--endpoint", &cluster.endpoint, "operation", "watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run operation watch");

    // The server stops and starts again where the agent and the watch expect it.
    let listen = cluster
        .endpoint
        .strip_prefix("https://")
        .expect("https")
        .to_owned();
    cluster._server.0.kill().expect("kill the server");
    cluster._server.0.wait().expect("reap the server");
    let (server, endpoint) = serve_on(
        &cluster.dir,
        &cluster.etcd,
        &cluster.prefix,
        &cluster.pki,
        "secure-1",
        &listen,
    );
    cluster._server = server;
    assert_eq!(endpoint, cluster.endpoint);
    // The node stays cordoned (the store kept it) until the new server
    // answers an uncordon.
    wait_until(
        "the restarted server to uncordon",
        Duration::from_secs(60),
        || async {
            let out = cluster.run(&admin, &["node", "uncordon", "ops-worker"]);
            out.status.success().then_some(())
        },
    )
    .await;

    // Bounded: an operation nobody picked up would keep the watch waiting.
    let watch = std::sync::Mutex::new(Running(watch));
    let status = wait_until(
        "operation watch to end",
        Duration::from_secs(120),
        || async { watch.lock().expect("watch").0.try_wait().expect("try_wait") },
    )
    .await;
    let mut watch = watch.into_inner().expect("watch");
    let watch = &mut watch.0;
    let (mut out, mut err) = (String::new(), String::new());
    let stdout = watch.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_to_string(&mut out)
        .expect("read");
    let stderr = watch.stderr.take().expect("stderr");
    std::io::BufReader::new(stderr)
        .read_to_string(&mut err)
        .expect("read");
    assert!(
        status.success(),
        "exit {status}\nstdout: {out}\nstderr: {err}"
    );
    assert!(
        out.lines().any(|l| l.contains("waiting for a node")),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap_or_default()
            .starts_with("succeeded"),
        "{out}"
    );
    let instance = json(cluster.run(&admin, &["instance", "get", "ops-web"]));
    assert_eq!(instance["status"], "running");
    json(cluster.run(&admin, &["instance", "delete", "ops-web"]));
}
