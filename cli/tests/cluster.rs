//! `zixiao server` and `zixiao agent` as processes, as a user starts them:
//! a server (embedded store, or etcd when `scripts/services/etcd.sh` runs),
//! an agent that joins it with its watchdog, the node going `not_ready`
//! when its agent is killed, and bad configurations refused with the field.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zixiao_core::{Client, NodeStatus};

struct Running {
    child: Child,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(state: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .arg("--state-dir")
        .arg(state)
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ETCD_ENDPOINTS")
        .env_remove("ZIXIAO_SERVERS");
    command
}

/// Starts `zixiao ARGS` and waits for its "... listening on ADDR" line.
fn start(state: &Path, args: &[&str]) -> Running {
    let mut child = command(state)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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

async fn wait_for_status(client: &Client, node: &str, status: NodeStatus) {
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

async fn an_agent_joins_and_its_death_is_noticed(server: &Running) {
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let mut agent = start(
        agent_dir.path(),
        &[
            "agent",
            "--server",
            &server.addr,
            // This test runs in the host's network namespace: leave its devices alone.
            "--no-networks",
            "--name",
            "worker-1",
            "--zone",
            "zone-a",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let client = zixiao_api::connect(&server.addr).expect("client");
    wait_for_status(&client, "worker-1", NodeStatus::Ready).await;
    let node = client.get_node("worker-1").await.expect("node");
    assert_eq!(node.zone, "zone-a");
    assert_eq!(
        node.address, agent.addr,
        "servers dial what the agent listens on"
    );

    // Its watchdog runs in a session of its own and outlives the agent.
    let watchdog_pid: i32 = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(pid) = std::fs::read_to_string(agent_dir.path().join("watchdog/pid")) {
                break pid.trim().parse().expect("pid");
            }
            assert!(Instant::now() < deadline, "no watchdog started");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(watchdog_pid, 0) };
    assert_eq!(alive, 0, "the watchdog outlives its agent");
    wait_for_status(&client, "worker-1", NodeStatus::NotReady).await;
    // SAFETY: kill(2) of the watchdog this test's agent started.
    unsafe { libc::kill(watchdog_pid, libc::SIGKILL) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_takes_agents_and_notices_their_death() {
    let server_dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        server_dir.path(),
        &[
            "server",
            "--embedded",
            // Agents join a TLS server with a join token and their own
            // certificate, which comes with the agents' step of "secure the
            // cluster": until then they reach a plain one, on loopback.
            "--insecure-no-tls",
            "--listen",
            "127.0.0.1:0",
            "--id",
            "s1",
        ],
    );
    let client = zixiao_api::connect(&server.addr).expect("client");
    let leader = client.cluster_info().await.expect("info").leader;
    assert!(
        leader.is_none() || leader.as_deref() == Some("s1"),
        "{leader:?}"
    );
    an_agent_joins_and_its_death_is_noticed(&server).await;

    // The CLI as a client of that server.
    let client_dir = tempfile::tempdir().expect("tempdir");
    let out = command(client_dir.path())
        .args(["--endpoint", &server.addr, "node", "list", "-o", "json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<&str> = nodes
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert!(ids.contains(&"worker-1"), "{ids:?}");
    assert!(
        !client_dir.path().join("state.redb").exists(),
        "a client opens no embedded store"
    );
    let out = command(client_dir.path())
        .args(["--endpoint", &server.addr, "instance", "get", "nope"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("instance `nope` not found"), "{stderr}");
    // A create sent to the server is validated there: exit 2 naming the
    // field, and nothing stored.
    let out = command(client_dir.path())
        .args([
            "--endpoint",
            &server.addr,
            "instance",
            "create",
            "--name",
            "Bad_Name",
        ])
        .args(["--type", "container", "--image", "busybox", "-o", "json"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(err["error"]["kind"], "invalid_argument");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("name"),
        "{err}"
    );
    let out = command(client_dir.path())
        .args(["--endpoint", &server.addr, "instance", "list", "-o", "json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed, serde_json::json!([]));
    let out = command(client_dir.path())
        .args(["--endpoint", "127.0.0.1:1", "node", "list"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unavailable"), "{stderr}");
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_etcd_from_its_config_file_takes_agents() {
    let Some(endpoints) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../zixiao-cluster/examples/server.yaml"),
    )
    .expect("example");
    let config = dir.path().join("server.yaml");
    std::fs::write(&config, example).expect("write");
    // The documented file, with the environment naming this machine's etcd
    // and a fresh key prefix, and the flags the address.
    let prefix = format!("/zixiao-cli-test-{}", std::process::id());
    let mut child = command(dir.path())
        .args(["server", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("ZIXIAO_ETCD_ENDPOINTS", &endpoints)
        .env("ZIXIAO_ETCD_PREFIX", &prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(
        line.contains("zixiao server server-1 listening on"),
        "{line:?}"
    );
    let addr = line
        .trim()
        .rsplit_once(" listening on ")
        .expect("addr")
        .1
        .to_owned();
    let server = Running { child, addr };
    an_agent_joins_and_its_death_is_noticed(&server).await;
}

#[test]
fn bad_server_and_agent_settings_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = command(dir.path()).arg("server").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("etcd"), "{stderr}");

    let config = dir.path().join("server.yaml");
    std::fs::write(&config, "timing:\n  fence_after_ms: 9000\n").expect("write");
    let out = command(dir.path())
        .args(["server", "--embedded", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timing.fence_after_ms"), "{stderr}");

    let out = command(dir.path())
        .args(["agent", "--name", "w1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--server"), "{stderr}");

    // A server without TLS stays on loopback unless told otherwise: it
    // would make everyone who reaches it an admin.
    let out = command(dir.path())
        .args([
            "server",
            "--etcd",
            "http://127.0.0.1:1",
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--pki") && stderr.contains("--insecure-no-tls"),
        "{stderr}"
    );

    // An agent has no TLS yet: off loopback only when told so, loudly.
    let out = command(dir.path())
        .args([
            "agent",
            "--server",
            "127.0.0.1:1",
            "--name",
            "w1",
            "--listen",
            "0.0.0.0:0",
            "--no-watchdog",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listen") && stderr.contains("--insecure-no-tls"),
        "{stderr}"
    );

    let out = command(dir.path())
        .args([
            "agent",
            "--server",
            "127.0.0.1:1",
            "--name",
            "Not_A_Label",
            "--no-watchdog",
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `drivers:` of agent.yaml is what the agent (and its watchdog) use when
/// no flag or variable names the runtime: here containerd at the test's
/// socket, which is nowhere near the default path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_config_file_names_its_container_runtime() {
    let Some(socket) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")
    else {
        return;
    };
    let server_dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        server_dir.path(),
        &[
            "server",
            "--embedded",
            "--insecure-no-tls",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let config = agent_dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!("drivers:\n  containerd_socket: {socket}\n"),
    )
    .expect("write agent.yaml");
    let mut command = command(agent_dir.path());
    command
        .env_remove("ZIXIAO_CONTAINERD_SOCKET")
        .args(["agent", "--config"])
        .arg(&config)
        .args([
            "--server",
            &server.addr,
            "--no-networks",
            "--no-watchdog",
            "--name",
            "worker-c",
            "--listen",
            "127.0.0.1:0",
        ]);
    let mut agent = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the agent");
    let mut line = String::new();
    std::io::BufReader::new(agent.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(line.contains(" listening on "), "{line:?}");
    let agent = Running {
        child: agent,
        addr: String::new(),
    };
    let client = zixiao_api::connect(&server.addr).expect("client");
    wait_for_status(&client, "worker-c", NodeStatus::Ready).await;
    let node = client.get_node("worker-c").await.expect("node");
    assert!(
        node.runtimes
            .contains(&zixiao_core::InstanceType::Container),
        "containerd from agent.yaml was not used: {:?}",
        node.missing_runtimes
    );
    drop(agent);
}
