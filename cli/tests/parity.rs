//! One CLI, two deployments: the same scenario (create, get, list, stop,
//! start, logs, a live resize, bad requests, delete) on the embedded default and through
//! `--endpoint` against a real server on etcd with a `zixiao agent`, both on
//! the real containerd. Every command prints the same `-o json` (ids,
//! revisions and times aside) and exits with the same code, because both
//! are the same commands over one `Client`; only the implementation behind
//! it differs.
//!
//! Needs the private containerd and etcd of `scripts/services/`; skips with
//! a reason elsewhere (and fails in CI, where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(all(feature = "containerd", feature = "etcd"))]

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use zixiao_testing::process::{start_listening, Running};
use zixiao_testing::wait::{runtime_endpoint, wait_until_ok};

fn zixiao(socket: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .args(["--containerd-socket", socket])
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ENDPOINT")
        .env_remove("ZIXIAO_ETCD_ENDPOINTS");
    command
}

/// Starts `zixiao ARGS` and returns it with the address it listens on.
fn start(socket: &str, args: &[&str]) -> (Running, String) {
    let mut command = zixiao(socket);
    command.args(args);
    start_listening(command)
}

/// One command of the scenario: its exit code and its output as JSON
/// (stdout on success, the JSON error on stderr otherwise), or as text.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    output: Value,
}

fn run(target: &[&str], socket: &str, args: &[&str]) -> Outcome {
    let out = zixiao(socket)
        .args(target)
        .args(args)
        .output()
        .expect("run zixiao");
    let bytes = if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    };
    let output = serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
    Outcome {
        code: out.status.code(),
        output,
    }
}

/// `value` without what differs between any two runs: ids (an
/// operation's too), revisions, times, and the node's name (the embedded node is named after this
/// machine, the agent's after itself).
fn comparable(mut value: Value, node: &str) -> Value {
    fn scrub(value: &mut Value, node: &str) {
        match value {
            Value::Object(map) => {
                for key in [
                    "id",
                    "deleted",
                    "revision",
                    "since",
                    "at",
                    "created_at",
                    "updated_at",
                    "started_at",
                    "operation",
                ] {
                    if map.contains_key(key) {
                        map.insert(key.to_owned(), Value::String("…".to_owned()));
                    }
                }
                for v in map.values_mut() {
                    scrub(v, node);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, node)),
            Value::String(s) => *s = s.replace(node, "NODE"),
            _ => {}
        }
    }
    scrub(&mut value, node);
    value
}

const SCENARIO: &[&[&str]] = &[
    &[
        "-o",
        "json",
        "instance",
        "create",
        "--name",
        "par",
        "--type",
        "container",
        "--image",
        "busybox",
        "--memory",
        "32",
        "--",
        "sh",
        "-c",
        "echo hello; exec sleep 300",
    ],
    &["-o", "json", "instance", "get", "par"],
    &["-o", "json", "instance", "list"],
    &["-o", "json", "instance", "stop", "par"],
    &["-o", "json", "instance", "start", "par"],
    &["instance", "logs", "par"],
    &[
        "-o",
        "json",
        "instance",
        "update",
        "par",
        "--cpus",
        "2",
        "--cpu-limit",
        "2",
        "--memory",
        "64",
        "--label",
        "tier=front",
    ],
    &["-o", "json", "instance", "update", "par", "--cpus", "0"],
    &[
        "-o",
        "json",
        "instance",
        "create",
        "--name",
        "bad",
        "--type",
        "container",
        "--image",
        "busybox",
        "--memory",
        "1",
    ],
    &["-o", "json", "instance", "get", "nope"],
    &["-o", "json", "instance", "delete", "par"],
    &["-o", "json", "instance", "list"],
];

#[test]
fn the_same_commands_print_the_same_json_and_exit_the_same_locally_and_through_a_server() {
    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let Some(etcd) = runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd") else {
        return;
    };
    let busybox =
        std::env::var("ZIXIAO_TEST_BUSYBOX_OCI").expect("ZIXIAO_TEST_BUSYBOX_OCI with the socket");
    let dir = tempfile::tempdir().expect("tempdir");
    let local_state = dir.path().join("local");
    let local_dir = local_state.to_string_lossy().into_owned();
    let local: Vec<&str> = vec!["--state-dir", &local_dir];
    // The image, in the containerd namespace both nodes use.
    let imported = run(&local, &socket, &["image", "import", &busybox]);
    assert_eq!(imported.code, Some(0), "{imported:?}");
    let nodes = run(&local, &socket, &["-o", "json", "node", "list"]);
    let node = nodes.output[0]["id"]
        .as_str()
        .expect("the local node")
        .to_owned();

    // A server on etcd and an agent named like the local node.
    let prefix = format!("/zixiao-parity-{}", std::process::id());
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
            "parity",
        ],
    );
    let agent_state = dir.path().join("agent");
    let (_agent, _) = start(
        &socket,
        &[
            "--state-dir",
            &agent_state.to_string_lossy(),
            "agent",
            "--server",
            &server,
            "--name",
            &node,
            "--no-networks",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let remote: Vec<&str> = vec!["--endpoint", &server];
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(wait_until_ok(
            "the agent's node to be ready",
            Duration::from_secs(30),
            || async {
                let nodes = run(&remote, &socket, &["-o", "json", "node", "list"]);
                match nodes.output[0]["status"].as_str() {
                    Some("ready") => Ok(()),
                    _ => Err(format!("{nodes:?}")),
                }
            },
        ));

    let mut outcomes = Vec::new();
    for args in SCENARIO {
        let here = run(&local, &socket, args);
        let there = run(&remote, &socket, args);
        if args.contains(&"update") && here.code == Some(0) {
            // Live on both nodes: the container's cgroup has the new limits.
            for output in [&here.output, &there.output] {
                let id = output["id"].as_str().expect("an instance");
                assert_eq!(
                    cgroup_value(id, "memory", "memory.limit_in_bytes"),
                    64 << 20
                );
                assert_eq!(cgroup_value(id, "cpu", "cpu.cfs_quota_us"), 200_000);
            }
        }
        outcomes.push((here.code, there.output.clone()));
        assert_eq!(
            here.code, there.code,
            "zixiao {args:?}: exit codes differ: {here:?} / {there:?}"
        );
        assert_eq!(
            comparable(here.output, &node),
            comparable(there.output, &node),
            "zixiao {args:?}: outputs differ"
        );
    }
    // What a user checks, so the comparison above compared real work.
    assert_eq!(outcomes[0].1["status"], "running", "{:?}", outcomes[0]);
    assert_eq!(outcomes[3].1["status"], "stopped", "{:?}", outcomes[3]);
    assert_eq!(outcomes[4].1["status"], "running", "{:?}", outcomes[4]);
    assert!(
        outcomes[5]
            .1
            .as_str()
            .is_some_and(|log| log.contains("hello")),
        "{:?}",
        outcomes[5]
    );
    assert_eq!(outcomes[6].1["spec"]["memory_mib"], 64, "{:?}", outcomes[6]);
    assert_eq!(
        outcomes[6].1["labels"]["tier"], "front",
        "{:?}",
        outcomes[6]
    );
    assert_eq!(outcomes[7].0, Some(2), "{:?}", outcomes[7]);
    assert_eq!(outcomes[8].0, Some(2), "{:?}", outcomes[8]);
    assert_eq!(outcomes[9].0, Some(1), "{:?}", outcomes[9]);
    assert_eq!(outcomes[11].1, serde_json::json!([]), "{:?}", outcomes[11]);
}

/// The value in cgroup v1 file `file` of hierarchy `hierarchy` of container
/// `id`, under whichever containerd namespace holds it.
fn cgroup_value(id: &str, hierarchy: &str, file: &str) -> u64 {
    let root = std::path::Path::new("/sys/fs/cgroup").join(hierarchy);
    let path = std::fs::read_dir(&root)
        .expect("cgroup v1 hierarchy")
        .flatten()
        .map(|namespace| namespace.path().join(id).join(file))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no {file} of {id} under {}", root.display()));
    std::fs::read_to_string(&path)
        .expect("cgroup file")
        .trim()
        .parse()
        .expect("a number")
}
