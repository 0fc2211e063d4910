//! `zixiao server` and `zixiao agent` as processes, as a user starts them:
//! a server (embedded store, or etcd when `scripts/services/etcd.sh` runs),
//! an agent that joins it with its watchdog, the node going `not_ready`
//! when its agent is killed, and bad configurations refused with the field.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zixiao_core::{Client, NodeStatus};

mod processes;
#[cfg(any(all(feature = "etcd", feature = "containerd"), feature = "libvirt"))]
use processes::through;
use processes::{command, start, wait_for_status, Running};
#[cfg(feature = "libvirt")]
use processes::{embedded_server, import_node_images, virsh, DomainGuard};

/// Node `node`'s usage samples once one carries its host's CPU and memory,
/// which only its agent's heartbeats bring.
async fn wait_for_host_usage(client: &Client, node: &str) -> zixiao_core::api::NodeUsageSample {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let samples = client.node_stats_history(node).await.expect("history");
        if let Some(found) = samples
            .iter()
            .rev()
            .find(|s| s.host_cpu_millicores.is_some() && s.host_memory_bytes.is_some())
        {
            return found.clone();
        }
        assert!(Instant::now() < deadline, "no host usage: {samples:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    // Its heartbeats bring what its host (this machine) uses, and its size.
    let host = wait_for_host_usage(&client, "worker-1").await;
    let cpus = zixiao_testing::host::online_cpus();
    assert_eq!(
        host.host_memory_capacity_bytes,
        Some(zixiao_testing::host::mem_total_bytes()),
        "{host:?}"
    );
    assert_eq!(
        host.host_cpu_capacity_millicores,
        Some(cpus * 1000),
        "{host:?}"
    );
    assert!(host.host_cpu_millicores <= Some(cpus * 1000), "{host:?}");
    assert!(
        host.host_memory_bytes < host.host_memory_capacity_bytes,
        "{host:?}"
    );
    assert!(host.host_load1.is_some_and(|l| l >= 0.0), "{host:?}");

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

/// `zixiao --state-dir STATE --containerd-socket SOCKET agent ...` joining
/// `server` as node `name` in zone `zone`, with `extra` flags; started and
/// listening.
#[cfg(all(feature = "etcd", feature = "containerd"))]
fn onboarding_agent(
    state: &Path,
    socket: &str,
    server: &str,
    name: &str,
    extra: &[&str],
) -> Running {
    let mut args = vec![
        "--containerd-socket",
        socket,
        "agent",
        "--server",
        server,
        "--name",
        name,
        "--zone",
        name,
        "--no-networks",
        "--no-watchdog",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    start(state, &args)
}

/// Imports `busybox` into the containerd namespace every node of this
/// machine uses, and starts a server (`--id ID`) on etcd under a key
/// prefix of this run's, its files under `dir`.
#[cfg(all(feature = "etcd", feature = "containerd"))]
fn busybox_and_etcd_server(
    dir: &Path,
    socket: &str,
    busybox: &str,
    etcd: &str,
    id: &str,
) -> Running {
    let out = command(&dir.join("local"))
        .args(["--containerd-socket", socket, "image", "import", busybox])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("/zixiao-{id}-{}", std::process::id());
    start(
        &dir.join("server"),
        &[
            "server",
            "--etcd",
            etcd,
            "--etcd-prefix",
            &prefix,
            "--listen",
            "127.0.0.1:0",
            "--id",
            id,
        ],
    )
}

/// A busybox container that sleeps, for zone `zone`.
#[cfg(all(feature = "etcd", feature = "containerd"))]
fn sleeper(name: &str, zone: &str) -> zixiao_core::CreateInstance {
    let mut spec = zixiao_core::InstanceSpec::container("busybox").with_command(["sleep", "600"]);
    spec.placement.zone = Some(zone.to_owned());
    zixiao_core::CreateInstance::new(name, spec)
}

/// A smoke image only the TLS registry with a password holds (the
/// registry service's), and what reaching it takes.
#[cfg(all(feature = "etcd", feature = "containerd"))]
struct PrivateSmokeImage {
    image: String,
    ca: String,
    user: String,
    password: String,
}

#[cfg(all(feature = "etcd", feature = "containerd"))]
impl PrivateSmokeImage {
    /// Writes a docker-style config.json with the registry's credentials,
    /// readable by its owner only, as `docker login` leaves it.
    fn write_docker_config(&self, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let encoded = Command::new("sh")
            .args(["-c", "printf %s \"$1\" | base64 -w0", "sh"])
            .arg(format!("{}:{}", self.user, self.password))
            .output()
            .expect("run base64");
        let auth = String::from_utf8(encoded.stdout).expect("base64");
        let registry = self.image.split('/').next().expect("registry");
        let config = serde_json::json!({ "auths": { registry: { "auth": auth } } });
        std::fs::write(path, config.to_string()).expect("write docker config");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

/// `skopeo copy` of the busybox archive to `image`, with `flags`.
#[cfg(all(feature = "etcd", feature = "containerd"))]
fn push(busybox: &str, image: &str, flags: &[&str]) {
    zixiao_testing::registry::push_with_skopeo(&format!("oci-archive:{busybox}"), image, flags)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Pushes busybox as a tag of this run to the TLS registry with a
/// password; `None` (the check skipped) when that registry is not set up.
#[cfg(all(feature = "etcd", feature = "containerd"))]
fn private_registry_smoke_image(busybox: &str, pid: u32) -> Option<PrivateSmokeImage> {
    let env = |name: &str| zixiao_testing::wait::runtime_endpoint(name, "the TLS registry");
    let registry = env("ZIXIAO_TEST_TLS_REGISTRY")?;
    let ca = env("ZIXIAO_TEST_TLS_REGISTRY_CA")?;
    let user = env("ZIXIAO_TEST_TLS_REGISTRY_USER")?;
    let password_file = env("ZIXIAO_TEST_TLS_REGISTRY_PASSWORD_FILE")?;
    let password = std::fs::read_to_string(&password_file).expect("read the registry's password");
    let password = password.trim().to_owned();
    let image = format!("{registry}/busybox:smoke-{pid}");
    // skopeo reads a CA from a directory of *.crt files.
    let certs = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&ca, certs.path().join("ca.crt")).expect("copy the CA");
    let cert_dir = format!("--dest-cert-dir={}", certs.path().display());
    let creds = format!("--dest-creds={user}:{password}");
    push(busybox, &image, &[&cert_dir, &creds]);
    Some(PrivateSmokeImage {
        image,
        ca,
        user,
        password,
    })
}

/// Onboarding, as an operator sees it through a server on etcd (which has
/// no node of its own) with the real containerd: three agents join at
/// once. The one whose smoke image exists is `onboarding`, then `ready`,
/// its detail naming containerd and what it booted, and takes an instance;
/// the one whose smoke image does not exist ends `onboarding_failed` with
/// the runtime, step and error in `node get`, and an instance created for
/// it waits naming the status, until its agent is restarted with a good
/// image; `--skip-smoke-test` is ready at once, saying it skipped. A smoke
/// image only the real loopback registry holds is pulled first, and the
/// node's detail says so, also from a registry of a private CA that wants
/// a password (`--smoke-registry-ca`, `--smoke-registry-auth`); a
/// registry that cannot be reached fails the node at step `pull`.
#[cfg(all(feature = "etcd", feature = "containerd"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_take_work_only_once_their_smoke_test_passed() {
    use futures::StreamExt;
    use zixiao_core::api::Wait;
    use zixiao_core::InstanceStatus;

    let Some(socket) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")
    else {
        return;
    };
    let Some(busybox) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox image")
    else {
        return;
    };
    let Some(etcd) = zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")
    else {
        return;
    };
    let Some(registry) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry")
    else {
        return;
    };
    let pid = std::process::id();
    // A smoke image only the registry holds: a tag of this run, which
    // nothing has imported or pulled into containerd.
    let only_in_registry = format!("{registry}/busybox:smoke-{pid}");
    push(
        &busybox,
        &only_in_registry,
        &[zixiao_testing::registry::PLAIN_HTTP],
    );
    // The same, only in the registry that wants a password and whose
    // certificate a private CA issued: reached with the agent's
    // --smoke-registry-ca and --smoke-registry-auth.
    let private = private_registry_smoke_image(&busybox, pid);
    let dir = tempfile::tempdir().expect("tempdir");
    // The smoke image, in the containerd namespace every node of this
    // machine uses.
    let server = busybox_and_etcd_server(dir.path(), &socket, &busybox, &etcd, "onboarding");
    let client = zixiao_api::connect(&server.addr).expect("client");
    // Every status each node goes through, from before any joins.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, NodeStatus)>::new()));
    let mut events = client.watch_nodes(0).await.expect("watch nodes");
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if let Some(node) = event.node {
                    seen.lock().expect("lock").push((node.id, node.status));
                }
            }
        })
    };
    let statuses = |name: &str| -> Vec<NodeStatus> {
        let seen = seen.lock().expect("lock");
        let mut statuses: Vec<NodeStatus> = seen
            .iter()
            .filter(|(id, _)| id == name)
            .map(|(_, s)| *s)
            .collect();
        statuses.dedup();
        statuses
    };

    let (good, bad, skip, pulls) = (
        format!("ob-good-{pid}"),
        format!("ob-bad-{pid}"),
        format!("ob-skip-{pid}"),
        format!("ob-pull-{pid}"),
    );
    let bad_state = dir.path().join("bad");
    let _good = onboarding_agent(
        &dir.path().join("good"),
        &socket,
        &server.addr,
        &good,
        &["--smoke-image", "busybox"],
    );
    let bad_agent = onboarding_agent(
        &bad_state,
        &socket,
        &server.addr,
        &bad,
        // Nothing listens on port 1: the pull fails at once.
        &["--smoke-image", "127.0.0.1:1/no-such-image:404"],
    );
    let _skip = onboarding_agent(
        &dir.path().join("skip"),
        &socket,
        &server.addr,
        &skip,
        &["--skip-smoke-test"],
    );
    let _pulls = onboarding_agent(
        &dir.path().join("pulls"),
        &socket,
        &server.addr,
        &pulls,
        &["--smoke-image", &only_in_registry],
    );
    let tls = format!("ob-tls-{pid}");
    let _tls = private.as_ref().map(|p| {
        let auth = dir.path().join("docker-config.json");
        p.write_docker_config(&auth);
        onboarding_agent(
            &dir.path().join("tls"),
            &socket,
            &server.addr,
            &tls,
            &[
                "--smoke-image",
                &p.image,
                "--smoke-registry-ca",
                &p.ca,
                "--smoke-registry-auth",
                auth.to_str().expect("utf-8"),
            ],
        )
    });
    wait_for_status(&client, &good, NodeStatus::Ready).await;
    wait_for_status(&client, &bad, NodeStatus::OnboardingFailed).await;
    wait_for_status(&client, &skip, NodeStatus::Ready).await;

    // Onboarding, then ready: the smoke test came first.
    assert_eq!(
        statuses(&good),
        [NodeStatus::Onboarding, NodeStatus::Ready],
        "{:?}",
        seen.lock()
    );
    let node_get = |name: &str, json: bool| {
        let mut args = vec!["--endpoint", &server.addr];
        if json {
            args.extend(["-o", "json"]);
        }
        args.extend(["node", "get", name]);
        let out = command(&dir.path().join("client"))
            .args(&args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    // A node as `node get -o json` shows it, and its container check.
    let container_check = |name: &str| {
        let shown: serde_json::Value = serde_json::from_str(&node_get(name, true)).expect("json");
        let container = shown["onboarding"]["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["runtime"] == "container")
            .cloned()
            .unwrap_or_else(|| panic!("no container check: {shown}"));
        (shown, container)
    };
    let (shown, container) = container_check(&good);
    assert_eq!(shown["onboarding"]["state"], "passed", "{shown}");
    let checks = shown["onboarding"]["checks"].as_array().expect("checks");
    assert_eq!(container["outcome"], "booted", "{shown}");
    let detail = container["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("containerd") && detail.contains("busybox"),
        "{detail}"
    );
    // Runtimes without a smoke workload are never reported booted.
    for other in checks.iter().filter(|c| c["runtime"] != "container") {
        assert_eq!(other["outcome"], "reachable", "{shown}");
        let detail = other["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("not booted"), "{detail}");
    }
    let human = node_get(&good, false);
    assert!(human.contains("container: booted in"), "{human}");
    // Held already: nothing pulled.
    assert!(!detail.contains("pulled"), "{detail}");

    // Only in the registry: pulled first, then booted, and it says so.
    wait_for_status(&client, &pulls, NodeStatus::Ready).await;
    assert_eq!(
        statuses(&pulls),
        [NodeStatus::Onboarding, NodeStatus::Ready],
        "{:?}",
        seen.lock()
    );
    let (shown, container) = container_check(&pulls);
    assert_eq!(shown["onboarding"]["state"], "passed", "{shown}");
    assert_eq!(container["outcome"], "booted", "{shown}");
    let detail = container["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("pulled `{only_in_registry}`"))
            && detail.contains("1 layer)")
            && detail.contains("booted"),
        "{detail}"
    );
    // It is in containerd now, as `zixiao image list` shows it.
    let out = command(&dir.path().join("local"))
        .args(["--containerd-socket", &socket, "image", "list"])
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&only_in_registry),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // From the private registry, with its CA and credentials.
    if let Some(private) = &private {
        wait_for_status(&client, &tls, NodeStatus::Ready).await;
        let (shown, container) = container_check(&tls);
        assert_eq!(container["outcome"], "booted", "{shown}");
        let detail = container["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("pulled `{}`", private.image)),
            "{detail}"
        );
    }

    // The failure is in `node get`: runtime, step, error.
    let shown: serde_json::Value = serde_json::from_str(&node_get(&bad, true)).expect("json");
    assert_eq!(shown["status"], "onboarding_failed", "{shown}");
    assert_eq!(shown["onboarding"]["state"], "failed", "{shown}");
    let human = node_get(&bad, false);
    // The registry cannot be reached: the pull fails, naming it.
    assert!(
        human.contains("container: failed at pull") && human.contains("127.0.0.1:1"),
        "{human}"
    );

    // Skipped: ready without ever onboarding, and it says so.
    assert_eq!(statuses(&skip), [NodeStatus::Ready], "{:?}", seen.lock());
    let human = node_get(&skip, false);
    assert!(human.contains("skipped"), "{human}");

    // Placement: the ready node takes work; the failed one does not, and
    // the waiting instance says why.
    let placed = client
        .create_instance(sleeper("onboarded", &good), Wait::Settled)
        .await
        .expect("create");
    assert_eq!(placed.status, InstanceStatus::Running, "{placed:?}");
    assert_eq!(placed.node.as_deref(), Some(good.as_str()));
    let waiting = client
        .create_instance(sleeper("waits", &bad), Wait::Settled)
        .await
        .expect("create");
    assert_eq!(waiting.status, InstanceStatus::Pending, "{waiting:?}");
    let why = waiting.problem().unwrap_or_default().to_owned();
    assert!(why.contains("onboarding failed"), "{why}");

    // Restarting its agent with a smoke image that exists retries: the
    // node onboards, and the waiting instance is placed there.
    drop(bad_agent);
    let _bad = onboarding_agent(
        &bad_state,
        &socket,
        &server.addr,
        &bad,
        &["--smoke-image", "busybox"],
    );
    wait_for_status(&client, &bad, NodeStatus::Ready).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = client.get_instance("waits").await.expect("get");
        if now.node.as_deref() == Some(bad.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "never placed: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in ["onboarded", "waits"] {
        client
            .delete_instance(name, Wait::Settled)
            .await
            .expect("delete");
    }
    // This run's tags are no use to anyone after it.
    let tags = [Some(&only_in_registry), private.as_ref().map(|p| &p.image)];
    for tag in tags.into_iter().flatten() {
        let _ = command(&dir.path().join("local"))
            .args(["--containerd-socket", &socket, "image", "rm", tag])
            .output();
    }
    recorder.abort();
}

/// An embedded server under `dir/server` on loopback (no TLS) and an
/// agent on libvirt (`uri`) with state `agent_state` joined to it as node
/// `node` in zone `zone`, once the node is Ready.
#[cfg(feature = "libvirt")]
async fn server_and_libvirt_agent(
    dir: &Path,
    agent_state: &Path,
    uri: &str,
    node: &str,
    zone: &str,
) -> (Running, Running) {
    let server = embedded_server(&dir.join("server"));
    let agent = start(
        agent_state,
        &[
            "--libvirt-uri",
            uri,
            "agent",
            "--server",
            &server.addr,
            "--no-networks",
            "--no-watchdog",
            "--name",
            node,
            "--zone",
            zone,
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let client = zixiao_api::connect(&server.addr).expect("client");
    wait_for_status(&client, node, NodeStatus::Ready).await;
    (server, agent)
}

/// `instance get` through a server shows the size a VM on an agent's node
/// really runs with: the server's driver for that node (`RemoteDriver`)
/// asks the agent (`GetRunningSize`), which asks libvirt. A VM of 1 CPU
/// created with `--max-cpus 2` gets its second vCPU out of band (`virsh
/// setvcpus --live`): its `runtime_size` shows 2 CPUs while `spec.cpus`
/// stays 1.
#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_on_an_agent_shows_its_running_size_through_the_server() {
    use std::os::unix::fs::PermissionsExt;
    use zixiao_testing::output::{json, ok};
    use zixiao_testing::wait::runtime_endpoint;

    let Some(uri) = runtime_endpoint("ZIXIAO_TEST_LIBVIRT_URI", "libvirt") else {
        return;
    };
    let files = [
        ("ZIXIAO_TEST_VM_BASE_IMAGE", "disk", "base"),
        ("ZIXIAO_TEST_VM_KERNEL", "kernel", "k1"),
        ("ZIXIAO_TEST_VM_INITRD", "initrd", "i1"),
    ];
    let mut paths = Vec::new();
    for (var, kind, _) in files {
        let Some(path) = runtime_endpoint(var, kind) else {
            return;
        };
        paths.push(path);
    }
    // Short and readable by libvirt's QEMU, which opens the node's images.
    let dir = tempfile::Builder::new()
        .prefix("zx-size-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let agent_state = dir.path().join("agent");
    // The VM's disk, kernel and initrd, in the agent's node image store.
    let images: Vec<(&str, &str, &str)> = files
        .iter()
        .zip(&paths)
        .map(|((_, kind, name), path)| (path.as_str(), *kind, *name))
        .collect();
    import_node_images(&agent_state, &uri, &images);
    let (server, _agent) =
        server_and_libvirt_agent(dir.path(), &agent_state, &uri, "vm-node", "zone-vm").await;

    let remote = |args: &[&str]| {
        command(&dir.path().join("client"))
            .args(["--endpoint", &server.addr])
            .args(args)
            .output()
            .expect("run zixiao")
    };
    let name = format!("size-{}", std::process::id());
    let created = json(remote(&[
        "-o",
        "json",
        "instance",
        "create",
        "--name",
        &name,
        "--type",
        "vm",
        "--zone",
        "zone-vm",
        "--image",
        "base",
        "--disk",
        "1",
        "--kernel",
        "k1",
        "--initrd",
        "i1",
        "--cmdline",
        "console=ttyS0",
        "--cpus",
        "1",
        "--max-cpus",
        "2",
        "--memory",
        "128",
    ]));
    let id = created["id"].as_str().expect("id").to_owned();
    let _domain = DomainGuard {
        uri: uri.clone(),
        id: id.clone(),
    };
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["node"], "vm-node", "{created}");
    let get = || json(remote(&["-o", "json", "instance", "get", &name]));
    // Running with its spec's size: nothing to show.
    let before = get();
    assert!(before["runtime_size"].is_null(), "{before}");

    // Out of band: libvirt hot-plugs the second vCPU --max-cpus allows.
    let out = virsh(&uri, &["setvcpus", &id, "2", "--live"]);
    assert!(
        out.status.success(),
        "virsh setvcpus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = get();
    assert_eq!(after["spec"]["cpus"], 1, "the spec is the user's: {after}");
    assert_eq!(
        after["runtime_size"],
        serde_json::json!({"cpus": 2, "memory_mib": 128}),
        "the running size, through the server: {after}"
    );
    let table = ok(remote(&["instance", "get", &name]));
    let shown = table
        .lines()
        .find(|l| l.contains("running with"))
        .unwrap_or_else(|| panic!("no `running with` line: {table}"));
    assert!(shown.contains("2 cpus, 128 MiB"), "{table}");

    ok(remote(&["instance", "delete", &name]));
}

/// The test VM's disk, kernel and initrd pushed to the loopback registry
/// as Zixiao artifacts, and a directory for the test's state.
#[cfg(feature = "libvirt")]
struct VmArtifacts {
    uri: String,
    /// `h-ociart/PREFIX-{disk,kernel,initrd}-PID:1` in the registry.
    disk: String,
    kernel: String,
    initrd: String,
    /// Short and searchable by libvirt's QEMU, which opens the node's images.
    dir: tempfile::TempDir,
}

/// Pushes the test VM's files under `prefix`; `None` (skip) without
/// libvirtd, the registry or the test VM's files.
#[cfg(feature = "libvirt")]
fn pushed_vm_artifacts(prefix: &str) -> Option<VmArtifacts> {
    use std::os::unix::fs::PermissionsExt;
    use zixiao_testing::wait::runtime_endpoint;
    let uri = runtime_endpoint("ZIXIAO_TEST_LIBVIRT_URI", "libvirt")?;
    let registry = runtime_endpoint("ZIXIAO_TEST_REGISTRY", "the loopback registry")?;
    let pid = std::process::id();
    // zixiao-registry's media types, as a user's push writes them.
    let mut pushed = Vec::new();
    for (var, name, media_type) in [
        (
            "ZIXIAO_TEST_VM_BASE_IMAGE",
            "disk",
            "application/vnd.zixiao.disk.v1.qcow2",
        ),
        (
            "ZIXIAO_TEST_VM_KERNEL",
            "kernel",
            "application/vnd.zixiao.kernel.v1",
        ),
        (
            "ZIXIAO_TEST_VM_INITRD",
            "initrd",
            "application/vnd.zixiao.initrd.v1",
        ),
    ] {
        let file = runtime_endpoint(var, var)?;
        let image = format!("{registry}/h-ociart/{prefix}-{name}-{pid}:1");
        zixiao_testing::registry::push_artifact(&image, media_type, Path::new(&file))
            .expect("push the artifact");
        pushed.push(image);
    }
    let [disk, kernel, initrd]: [String; 3] = pushed.try_into().ok()?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("zx-{prefix}-"))
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Some(VmArtifacts {
        uri,
        disk,
        kernel,
        initrd,
        dir,
    })
}

/// Waits until `logs` (an `instance logs` run) shows the test initramfs's
/// marker: the pulled kernel booted.
#[cfg(feature = "libvirt")]
async fn wait_for_boot_marker(logs: impl Fn() -> std::process::Output) {
    zixiao_testing::wait::wait_until(
        "the VM of pulled images to boot to its marker",
        Duration::from_secs(90),
        || {
            let booted = String::from_utf8_lossy(&logs().stdout).contains("ZIXIAO-BOOT-OK");
            async move { booted.then_some(()) }
        },
    )
    .await;
}

/// On the embedded default, as a user checks it: `image pull` of a disk
/// artifact (no `--kind`, no container runtime here) stores it in the
/// node's image store under the reference's name, and a VM created from it
/// by name, with its kernel and initrd by registry reference (pulled by the
/// create), boots to its marker.
#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_images_pulled_on_the_embedded_default_boot() {
    use zixiao_testing::output::{json, ok};

    let Some(VmArtifacts {
        uri,
        disk,
        kernel,
        initrd,
        dir,
    }) = pushed_vm_artifacts("embedded")
    else {
        return;
    };
    let pid = std::process::id();
    let run = |args: &[&str]| {
        command(dir.path())
            .args(["--libvirt-uri", &uri])
            .args(args)
            .output()
            .expect("run zixiao")
    };
    let pulled = json(run(&["-o", "json", "image", "pull", &disk]));
    assert_eq!(pulled["kind"], "disk", "{pulled}");
    assert_eq!(pulled["format"], "qcow2", "{pulled}");
    let disk_name = format!("embedded-disk-{pid}-1");
    assert_eq!(pulled["name"], disk_name.as_str(), "{pulled}");

    let name = format!("pulled-embedded-{pid}");
    let created = json(run(&[
        "-o",
        "json",
        "instance",
        "create",
        "--name",
        &name,
        "--type",
        "vm",
        "--image",
        &disk_name,
        "--disk",
        "1",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        "console=ttyS0",
        "--cpus",
        "1",
        "--memory",
        "128",
    ]));
    let _domain = DomainGuard {
        uri: uri.clone(),
        id: created["id"].as_str().expect("id").to_owned(),
    };
    assert_eq!(created["status"], "running", "{created}");
    wait_for_boot_marker(|| run(&["instance", "logs", &name])).await;
    let listed = ok(run(&["image", "list", "--type", "vm"]));
    for held in [
        disk_name,
        format!("embedded-kernel-{pid}-1"),
        format!("embedded-initrd-{pid}-1"),
    ] {
        assert!(listed.contains(&held), "{held} not in:\n{listed}");
    }
    // In use: not removable, by its name or through the reference it came from.
    let out = run(&[
        "image",
        "rm",
        &format!("embedded-kernel-{pid}-1"),
        "--kind",
        "kernel",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&name),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(run(&["instance", "delete", &name]));
}

/// Disk, kernel and initrd OCI artifacts in the loopback registry, through
/// a server with an agent on libvirt, as a user checks them: `image pull
/// --kind` through the server is done by the agent (its node's store lists
/// the images, the progress reaches the client), a kind the artifact does
/// not have is refused naming both, and a VM created with registry
/// references (a disk no node holds yet among them) boots on the agent,
/// whose node pulled the disk on create.
#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_images_pulled_from_a_registry_boot_on_an_agent() {
    use zixiao_testing::output::{json, ok};

    let Some(VmArtifacts {
        uri,
        disk,
        kernel,
        initrd,
        dir,
    }) = pushed_vm_artifacts("cluster")
    else {
        return;
    };
    let pid = std::process::id();
    let (server, _agent) = server_and_libvirt_agent(
        dir.path(),
        &dir.path().join("agent"),
        &uri,
        "pull-node",
        "zone-pull",
    )
    .await;
    let remote = |args: &[&str]| {
        command(&dir.path().join("client"))
            .args(["--endpoint", &server.addr])
            .args(args)
            .output()
            .expect("run zixiao")
    };

    // The kernel: its kind from its media types, no --kind needed.
    let out = remote(&[
        "-o",
        "json",
        "image",
        "pull",
        &kernel,
        "--node",
        "pull-node",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let pulled = json(out);
    assert_eq!(pulled["kind"], "kernel", "{pulled}");
    assert_eq!(
        pulled["name"],
        format!("cluster-kernel-{pid}-1"),
        "{pulled}"
    );
    assert!(stderr.contains("[1/1] sha256:"), "{stderr}");
    let pulled = json(remote(&[
        "-o",
        "json",
        "image",
        "pull",
        &initrd,
        "--kind",
        "initrd",
        "--node",
        "pull-node",
    ]));
    assert_eq!(pulled["format"], "gzip", "{pulled}");
    // A kind the artifact does not have: refused, naming both.
    let out = remote(&[
        "image",
        "pull",
        &disk,
        "--kind",
        "kernel",
        "--node",
        "pull-node",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("a disk artifact") && stderr.contains("kernel"),
        "{stderr}"
    );
    let listed = json(remote(&[
        "-o",
        "json",
        "image",
        "list",
        "--type",
        "vm",
        "--node",
        "pull-node",
    ]));
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            format!("cluster-initrd-{pid}-1"),
            format!("cluster-kernel-{pid}-1")
        ],
        "the agent's node holds what it pulled, and nothing of the refused pull"
    );

    // The disk by reference: the agent's node pulls it on create.
    let name = format!("pulled-{pid}");
    let created = json(remote(&[
        "-o",
        "json",
        "instance",
        "create",
        "--name",
        &name,
        "--type",
        "vm",
        "--zone",
        "zone-pull",
        "--image",
        &disk,
        "--disk",
        "1",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        "console=ttyS0",
        "--cpus",
        "1",
        "--memory",
        "128",
    ]));
    let id = created["id"].as_str().expect("id").to_owned();
    let _domain = DomainGuard {
        uri: uri.clone(),
        id,
    };
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["node"], "pull-node", "{created}");
    wait_for_boot_marker(|| remote(&["instance", "logs", &name])).await;
    let listed = json(remote(&[
        "-o",
        "json",
        "image",
        "list",
        "--type",
        "vm",
        "--node",
        "pull-node",
    ]));
    assert!(
        listed
            .as_array()
            .expect("a list")
            .iter()
            .any(|i| i["name"] == format!("cluster-disk-{pid}-1") && i["kind"] == "disk"),
        "{listed}"
    );
    ok(remote(&["instance", "delete", &name]));
}

/// `instance migrate` through a server on etcd, with two (then three)
/// agents on the real containerd, as a user checks it: a container moves
/// `--to` another node and keeps its id and name, `instance get` shows the
/// new node, it runs there (its log, read through the new node's agent,
/// shows it started there), and the source agent keeps nothing of it; the
/// operation lists its steps. Refusals name the reason and change nothing
/// (its own node, an unknown node, a node its constraints rule out, cold
/// and live); a target whose runtime cannot create it sends it back,
/// running, to the node it left.
#[cfg(all(feature = "etcd", feature = "containerd"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_migrates_to_another_agent_and_a_failed_move_leaves_it_where_it_was() {
    use zixiao_testing::output::{assert_refused, json};
    use zixiao_testing::runtimes::ContainerdNamespace;
    use zixiao_testing::wait::runtime_endpoint;

    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let Some(busybox) = runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox image") else {
        return;
    };
    let Some(etcd) = runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd") else {
        return;
    };
    let pid = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");
    let client_dir = dir.path().join("client");
    let server = busybox_and_etcd_server(dir.path(), &socket, &busybox, &etcd, "migrate");
    let client = zixiao_api::connect(&server.addr).expect("client");
    let (a, b, c) = (
        format!("mig-a-{pid}"),
        format!("mig-b-{pid}"),
        format!("mig-c-{pid}"),
    );
    let (a_state, b_state, c_state) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let skip = ["--skip-smoke-test"];
    let _a = onboarding_agent(&a_state, &socket, &server.addr, &a, &skip);
    wait_for_status(&client, &a, NodeStatus::Ready).await;
    let run = |args: &[&str]| through(&client_dir, &server.addr, args);
    // Both land on the only node there is: `mover` may go anywhere,
    // `pinned` only to zone `a` (each agent's zone is its name).
    let mover = json(run(&[
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
        "--name",
        "mover",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 600",
    ]));
    assert_eq!(mover["node"], a.as_str(), "{mover}");
    let pinned = json(run(&[
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
        "--name",
        "pinned",
        "--zone",
        &a,
        "--",
        "sleep",
        "600",
    ]));
    assert_eq!(pinned["node"], a.as_str(), "{pinned}");
    let id = mover["id"].as_str().expect("id").to_owned();
    let _b = onboarding_agent(&b_state, &socket, &server.addr, &b, &skip);
    wait_for_status(&client, &b, NodeStatus::Ready).await;

    // Refusals, each naming why, and nothing moves.
    let refused = |args: &[&str], code, kind, part: &str| {
        let mut all = vec!["instance", "migrate"];
        all.extend_from_slice(args);
        assert_refused(run(&all), &format!("migrate {args:?}"), code, kind, part);
    };
    refused(
        &["mover", "--to", &a],
        2,
        "invalid_argument",
        "already on node",
    );
    refused(
        &["mover", "--to", "no-such-node"],
        1,
        "not_found",
        "no-such-node",
    );
    refused(&["pinned", "--to", &b], 1, "failed_precondition", "zone");
    refused(&["pinned"], 1, "failed_precondition", "zone");
    refused(
        &["mover", "--cold"],
        1,
        "failed_precondition",
        "has no disk to copy",
    );
    refused(
        &["mover", "--live"],
        1,
        "unsupported",
        "cannot migrate a running instance live: a container restarts elsewhere, pass --restart",
    );
    refused(&["nope", "--to", &b], 1, "not_found", "nope");
    for name in ["mover", "pinned"] {
        let shown = json(run(&["instance", "get", name]));
        assert_eq!(shown["node"], a.as_str(), "{shown}");
        assert_eq!(shown["status"], "running", "{shown}");
    }
    let listed = client
        .list_all_operations(zixiao_core::api::OperationFilter {
            kind: Some(zixiao_core::OperationKind::Migrate),
            ..Default::default()
        })
        .await
        .expect("operations");
    assert!(listed.is_empty(), "a refusal records nothing: {listed:?}");

    // The move: same id and name, on the new node, running there.
    // An agent's containerd driver keeps each instance's files (its log,
    // its record) under `STATE/runtime/containerd/NAMESPACE/ID`.
    let instance_dir = |state: &Path| state.join("runtime/containerd/zixiao").join(&id);
    assert!(
        instance_dir(&a_state).exists(),
        "the source holds its files"
    );
    let moved = json(run(&["instance", "migrate", "mover", "--to", &b]));
    assert_eq!(moved["id"], id.as_str(), "{moved}");
    assert_eq!(moved["name"], "mover", "{moved}");
    assert_eq!(moved["node"], b.as_str(), "{moved}");
    assert_eq!(moved["status"], "running", "{moved}");
    let shown = json(run(&["instance", "get", "mover"]));
    assert_eq!(shown["node"], b.as_str(), "{shown}");
    assert_eq!(shown["id"], id.as_str(), "{shown}");
    let running = ContainerdNamespace::new(&socket, "zixiao")
        .only([id.clone()])
        .tasks()
        .expect("containerd tasks");
    assert_eq!(running.len(), 1, "one task for it: {running:?}");
    assert_eq!(running[0].status, "RUNNING", "{running:?}");
    // Nothing of it is left with the source's agent; the target's has it.
    assert!(!instance_dir(&a_state).exists(), "the source keeps nothing");
    assert!(
        instance_dir(&b_state).exists(),
        "the target holds its files"
    );
    // Its log, read through the target's agent, is the new start's.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = command(&client_dir)
            .args(["--endpoint", &server.addr, "instance", "logs", "mover"])
            .output()
            .expect("run");
        if String::from_utf8_lossy(&out.stdout) == "started\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "its log on the target: {:?} {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The operation names its steps.
    let op = moved["operation"].as_str().expect("its operation");
    let operation = json(run(&["operation", "get", op]));
    assert_eq!(operation["kind"], "migrate", "{operation}");
    assert_eq!(operation["phase"], "succeeded", "{operation}");
    assert_eq!(
        operation["steps"],
        serde_json::json!(["placing", "stopping", "starting", "done"]),
        "{operation}"
    );
    let human = command(&client_dir)
        .args(["--endpoint", &server.addr, "operation", "get", op])
        .output()
        .expect("run");
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("placing, stopping, starting, done"),
        "{human}"
    );

    // A target whose runtime cannot create it (its agent cannot open the
    // instance's log: a directory stands where the file goes): the
    // instance goes back to the node it left, running.
    let _c = onboarding_agent(&c_state, &socket, &server.addr, &c, &skip);
    wait_for_status(&client, &c, NodeStatus::Ready).await;
    // Not before C's first orphan sweep (an agent's first, at its start,
    // is reported on its node): the sweep removes an instance directory
    // of an instance placed elsewhere, the blocker with it.
    zixiao_testing::wait::wait_until(
        "node C's first orphan sweep",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let c = c.clone();
            async move {
                let node = client.get_node(&c).await.ok()?;
                node.orphan_sweep.is_some().then_some(())
            }
        },
    )
    .await;
    std::fs::create_dir_all(instance_dir(&c_state).join("output.log"))
        .expect("block the log on the target");
    refused(
        &["mover", "--to", &c],
        1,
        "failed_precondition",
        &format!("back on node `{b}`"),
    );
    let shown = json(run(&["instance", "get", "mover"]));
    assert_eq!(shown["node"], b.as_str(), "{shown}");
    assert_eq!(shown["status"], "running", "{shown}");
    assert_eq!(shown["id"], id.as_str(), "{shown}");
    let failed = client
        .list_all_operations(zixiao_core::api::OperationFilter {
            kind: Some(zixiao_core::OperationKind::Migrate),
            ..Default::default()
        })
        .await
        .expect("operations");
    let failed = failed
        .iter()
        .find(|o| o.phase == zixiao_core::OperationPhase::Failed)
        .unwrap_or_else(|| panic!("no failed migration: {failed:?}"));
    assert!(
        failed.steps.ends_with(&["returning".to_owned()]),
        "{failed:?}"
    );
    for name in ["mover", "pinned"] {
        let out = run(&["instance", "delete", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The embedded default has one node: nowhere to migrate to, said plainly,
/// and nothing changes.
#[cfg(feature = "containerd")]
#[tokio::test]
async fn on_the_embedded_default_there_is_no_other_node_to_migrate_to() {
    use zixiao_testing::output::{assert_refused, json};
    use zixiao_testing::wait::runtime_endpoint;

    let Some(socket) = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd") else {
        return;
    };
    let Some(busybox) = runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox image") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        command(dir.path())
            .args(["--containerd-socket", &socket, "-o", "json"])
            .args(args)
            .output()
            .expect("run zixiao")
    };
    let out = run(&["image", "import", &busybox]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let web = json(run(&[
        "instance",
        "create",
        "--type",
        "container",
        "--image",
        "busybox",
        "--name",
        "web",
        "--",
        "sleep",
        "600",
    ]));
    assert_refused(
        run(&["instance", "migrate", "web", "--restart"]),
        "an embedded migrate",
        1,
        "failed_precondition",
        "no other node to migrate",
    );
    let shown = json(run(&["instance", "get", "web"]));
    assert_eq!(shown["node"], web["node"], "{shown}");
    assert_eq!(shown["status"], "running", "{shown}");
    let out = run(&["instance", "delete", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `instance migrate --live` through a server and two agents, each on its
/// own libvirtd (`ZIXIAO_TEST_LIBVIRT_URI`, then the second daemon,
/// `ZIXIAO_TEST_LIBVIRT2_URI`, which node B names as where it takes
/// migrations), as a user checks it: a VM whose guest prints a counter
/// moves to node B and keeps counting (no reboot: no second `C0`, the
/// count goes on from where it was), `instance get` shows node B with the
/// same id, the first daemon no longer holds its domain, the operation
/// lists the live steps. Before that, a live migration to a node whose
/// libvirtd cannot be reached (node C names a socket that is not there),
/// asked with `--live` and chosen by `auto`, fails naming the step, and
/// leaves the VM running on node A, counting, with nothing reserved or
/// prepared on C. A container cannot migrate live (the other
/// migration test).
#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counting_vm_migrates_live_between_two_agents_and_a_failed_one_stays() {
    use zixiao_testing::output::{assert_refused, json};

    let Some(mut pair) = processes::LibvirtPair::start("lm").await else {
        return;
    };
    let (a, b, uri1, uri2) = pair.names();
    let pid = std::process::id();
    let c = format!("lm-c-{pid}");
    pair.import_images(&c, &uri2, false);
    let name = format!("counter-{pid}");
    let created = pair.create_counter(&name, &[]);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["node"], a.as_str(), "{created}");
    assert_eq!(created["status"], "running", "{created}");
    pair.counts_past(&name, 20).await;

    // Node B takes migrations on the second daemon; node C names one
    // that is not there.
    pair.start_b().await;
    pair.start_agent(
        &c,
        &uri2,
        &[
            "--libvirt-migration-uri",
            "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
            "--libvirt-migration-address",
            "127.0.0.1",
        ],
    )
    .await;
    let (set, client) = (&*pair, &pair.client);
    let dir = &set.dir;
    let run = |args: &[&str]| set.run(args);
    let counts_past = |above: u64| set.counts_past(&name, above);

    // The failed one, asked for and chosen by `auto` (both nodes' vm
    // drivers migrate live): named, and nothing moved.
    for mode in [&["--live"][..], &[]] {
        let mut args = vec!["instance", "migrate", &name, "--to", &c];
        args.extend_from_slice(mode);
        assert_refused(
            run(&args),
            &format!("a live migration to a daemon that is not there ({mode:?})"),
            1,
            "internal",
            &format!("at step `migrating` (it still runs on node `{a}`)"),
        );
    }
    let shown = json(run(&["instance", "get", &name]));
    assert_eq!(shown["node"], a.as_str(), "{shown}");
    assert_eq!(shown["status"], "running", "{shown}");
    assert!(shown["migrate_to"].is_null(), "{shown}");
    let node_c = client.get_node(&c).await.expect("node c");
    assert_eq!(
        node_c.allocated.instances, 0,
        "nothing held on C: {node_c:?}"
    );
    let prepared = dir.path().join(&c).join("runtime/libvirt").join(&id);
    assert!(!prepared.exists(), "C keeps what it prepared");
    let recorded = dir
        .path()
        .join(&c)
        .join("instances")
        .join(format!("{id}.json"));
    assert!(!recorded.exists(), "C's agent still records it");
    let state = virsh(&uri1, &["domstate", &id]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "running");
    let before = *counts_past(0).await.last().expect("counts");
    counts_past(before + 20).await;

    // The live one, watched from both nodes' console logs.
    let log = |node: &str| {
        dir.path()
            .join(node)
            .join("runtime/libvirt")
            .join(&id)
            .join("console.log")
    };
    let watcher = zixiao_testing::guest::CounterWatcher::start(vec![log(&a), log(&b)]);
    let started = Instant::now();
    let moved = json(run(&["instance", "migrate", &name, "--live", "--to", &b]));
    let took = started.elapsed();
    assert_eq!(moved["id"], id.as_str(), "{moved}");
    assert_eq!(moved["name"], name.as_str(), "{moved}");
    assert_eq!(moved["node"], b.as_str(), "{moved}");
    assert_eq!(moved["status"], "running", "{moved}");
    let shown = json(run(&["instance", "get", &name]));
    assert_eq!(shown["node"], b.as_str(), "{shown}");
    assert_eq!(shown["attachments"], created["attachments"], "{shown}");
    // The first daemon no longer holds it; the second runs it.
    let gone = virsh(&uri1, &["domstate", &id]);
    assert!(!gone.status.success(), "the source still holds the domain");
    let state = virsh(&uri2, &["domstate", &id]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "running");
    // It counts on, on B: no reboot (no second C0), on from where it was.
    let seen = watcher.counts().last().map_or(before, |&(_, n)| n);
    let after = counts_past(seen + 50).await;
    assert!(!after.contains(&0), "the guest rebooted: {after:?}");
    assert!(
        after.first().is_some_and(|&first| first > before),
        "B's console starts at {:?}; A had reached {before}",
        after.first()
    );
    assert!(
        after.windows(2).all(|w| w[1] == w[0] + 1),
        "the counts on B are not consecutive: {after:?}"
    );
    let (gap, _) = zixiao_testing::guest::longest_gap(&watcher.finish());
    println!(
        "live migration through the CLI: {} ms in all, longest counter gap {} ms",
        took.as_millis(),
        gap.as_millis()
    );
    // Allocations moved with it: B holds it, A nothing.
    let node_a = client.get_node(&a).await.expect("node a");
    let node_b = client.get_node(&b).await.expect("node b");
    assert_eq!(node_a.allocated.instances, 0, "{node_a:?}");
    assert_eq!(node_b.allocated.instances, 1, "{node_b:?}");
    let op = moved["operation"].as_str().expect("its operation");
    let operation = json(run(&["operation", "get", op]));
    assert_eq!(operation["phase"], "succeeded", "{operation}");
    assert_eq!(
        operation["steps"],
        serde_json::json!(["placing", "preparing", "migrating", "switching", "done"]),
        "{operation}"
    );
    // B's agent records it as its own, A's no longer; and it is still B's
    // after more than one clean-up round of both agents (5 s each; 600
    // counts are at least 6 s of the guest's time): nothing undid it.
    let record = |node: &str| {
        dir.path()
            .join(node)
            .join("instances")
            .join(format!("{id}.json"))
    };
    assert!(record(&b).exists(), "B's agent has no record of it");
    assert!(!record(&a).exists(), "A's agent still records it");
    counts_past(seen + 600).await;
    let shown = json(run(&["instance", "get", &name]));
    assert_eq!(shown["node"], b.as_str(), "{shown}");
    assert_eq!(shown["status"], "running", "{shown}");
    let state = virsh(&uri2, &["domstate", &id]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "running");

    let out = run(&["instance", "delete", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Evacuation by migration, through a server and two agents on the two
/// libvirtds (as the live test above), as an operator checks it: `node
/// drain A` with two counting VMs on A, one restarting (`always`) and one
/// not (`never`), migrates both live to B, and both keep counting there
/// (no reboot); the report says so per instance and A ends cordoned with
/// nothing on it. Then `node maintenance on B`, where nothing can migrate
/// live (node A takes no live migrations): the `always` VM migrates cold
/// to A (stopped, its disk copied, started there), the `never` one stops
/// on B (a cold migration would restart it), and the report names why
/// neither migrated live.
#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_maintenance_migrate_running_vms_live_and_say_why_not() {
    use zixiao_testing::output::json;

    let Some(mut pair) = processes::LibvirtPair::start("ev").await else {
        return;
    };
    let pid = std::process::id();
    let names = [format!("evac-always-{pid}"), format!("evac-never-{pid}")];
    for (name, restart) in names.iter().zip(["always", "never"]) {
        let created = pair.create_counter(name, &["--restart", restart]);
        assert_eq!(created["node"], pair.a.as_str(), "{created}");
    }
    let mut reached = Vec::new();
    for name in &names {
        reached.push(*pair.counts_past(name, 20).await.last().expect("counts"));
    }
    pair.start_b().await;
    let (a, b) = (pair.a.clone(), pair.b.clone());

    // The drain: both migrate live, the `never` one too (a live move does
    // not restart it), and keep counting on B from where they were.
    let report = json(pair.run(&["node", "drain", &a]));
    assert_eq!(report["status"], "cordoned", "{report}");
    let migrated: Vec<(String, String, String)> = report["migrated"]
        .as_array()
        .expect("migrated")
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (field("name"), field("mode"), field("to"))
        })
        .collect();
    let expected: Vec<(String, String, String)> = names
        .iter()
        .map(|name| (name.clone(), "live".to_owned(), b.clone()))
        .collect();
    assert_eq!(migrated, expected, "{report}");
    for list in ["moved", "pending", "stopped"] {
        assert_eq!(report[list], serde_json::json!([]), "{list}: {report}");
    }
    assert_eq!(report["not_migrated"], serde_json::json!({}), "{report}");
    for (name, before) in names.iter().zip(&reached) {
        let shown = json(pair.run(&["instance", "get", name]));
        assert_eq!(shown["node"], b.as_str(), "{shown}");
        assert_eq!(shown["status"], "running", "{shown}");
        let after = pair.counts_past(name, before + 50).await;
        assert!(!after.contains(&0), "{name} rebooted: {after:?}");
    }
    let node_a = pair.client.get_node(&a).await.expect("node a");
    assert_eq!(node_a.allocated.instances, 0, "{node_a:?}");

    // Maintenance on B: A takes no live migrations, so the report says
    // why; the `always` one migrates cold to A, the `never` one stops
    // where it is.
    zixiao_testing::output::ok(pair.run(&["node", "uncordon", &a]));
    let report = json(pair.run(&["node", "maintenance", &b, "on"]));
    assert_eq!(report["status"], "maintenance", "{report}");
    assert_eq!(
        report["migrated"],
        serde_json::json!([{ "name": names[0], "mode": "cold", "to": a }]),
        "{report}"
    );
    assert_eq!(report["moved"], serde_json::json!([]), "{report}");
    assert_eq!(report["stopped"], serde_json::json!([names[1]]), "{report}");
    for name in &names {
        let why = report["not_migrated"][name].as_str().unwrap_or_default();
        assert!(why.starts_with("live: "), "{name}: {report}");
    }
    let cold = json(pair.run(&["instance", "get", &names[0]]));
    assert_eq!(cold["node"], a.as_str(), "{cold}");
    assert_eq!(cold["status"], "running", "{cold}");
    let stopped = json(pair.run(&["instance", "get", &names[1]]));
    assert_eq!(stopped["node"], b.as_str(), "{stopped}");
    assert_eq!(stopped["status"], "stopped", "{stopped}");

    for name in &names {
        zixiao_testing::output::ok(pair.run(&["instance", "delete", name]));
    }
}

/// A server that crashes in the middle of a live migration, as an
/// operator sees it once the server is back: the migration is ended as
/// the runtime left it (within a minute: its operation is first ended as
/// interrupted, after 30 s without renewal), the instance is recorded on
/// the node whose daemon runs it, exactly one daemon runs it, it is no
/// longer marked as migrating, and its guest kept counting (no reboot).
#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_migration_whose_server_crashed_ends_with_one_running_copy() {
    use zixiao_testing::output::json;
    use zixiao_testing::wait::wait_until;

    let Some(mut pair) = processes::LibvirtPair::start("crash").await else {
        return;
    };
    let name = format!("crash-mig-{}", std::process::id());
    let created = pair.create_counter(&name, &[]);
    let id = created["id"].as_str().expect("id").to_owned();
    let before = *pair.counts_past(&name, 20).await.last().expect("counts");
    pair.start_b().await;
    let (a, b) = (pair.a.clone(), pair.b.clone());

    // The migration, and the crash once it has begun (its target marked).
    let mut migrating = command(&pair.dir.path().join("client"))
        .args(["--endpoint", &pair.server.addr, "-o", "json"])
        .args(["instance", "migrate", &name, "--live", "--to", &b])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run zixiao");
    wait_until("the migration to begin", Duration::from_secs(60), || {
        let begun = json(pair.run(&["instance", "get", &name]))["migrate_to"] == b.as_str();
        async move { begun.then_some(()) }
    })
    .await;
    pair.restart_server();
    let _ = migrating.wait();

    let ended = wait_until(
        "the migration to be ended",
        Duration::from_secs(120),
        || {
            let shown = json(pair.run(&["instance", "get", &name]));
            async move { shown["migrate_to"].is_null().then_some(shown) }
        },
    )
    .await;
    let running = |uri: &str| {
        String::from_utf8_lossy(&virsh(uri, &["domstate", &id]).stdout).trim() == "running"
    };
    let (on_a, on_b) = (running(&pair.uri1), running(&pair.uri2));
    assert!(on_a != on_b, "running on A: {on_a}, on B: {on_b}");
    let node = if on_b { &b } else { &a };
    assert_eq!(ended["node"], node.as_str(), "{ended}");
    assert_eq!(ended["status"], "running", "{ended}");
    // A reboot would start the count again: it only goes up.
    let after = pair.counts_past(&name, before + 100).await;
    assert!(
        after.windows(2).all(|w| w[1] > w[0]),
        "the guest rebooted: {after:?}"
    );
    println!("after the crash the migration was ended on node {node}");
    let nodes = [&a, &b].map(|n| {
        let node = json(pair.run(&["node", "get", n]));
        node["allocated"]["instances"].as_u64().unwrap_or_default()
    });
    assert_eq!(nodes.iter().sum::<u64>(), 1, "allocations {nodes:?}");
    zixiao_testing::output::ok(pair.run(&["instance", "delete", &name]));
}

/// `qemu-img compare -U A B`: whether the two disks show a guest the same
/// bytes (whatever their backing files' paths), as `qemu-img` says.
#[cfg(feature = "libvirt")]
fn same_guest_content(a: &Path, b: &Path) -> std::process::Output {
    Command::new("qemu-img")
        .args(["compare", "-U"])
        .args([a, b])
        .output()
        .expect("run qemu-img")
}

/// `instance migrate --cold` through a server and two agents, each on its
/// own libvirtd (the live test's set-up), as a user checks it: a counter
/// VM whose disk holds a marker (written with `qemu-io` while it was
/// stopped) moves to node B: same id, name and attachments, B's libvirtd
/// runs it (it boots again: a cold migration restarts the guest), A's
/// holds nothing of it, the disk on B shows the guest exactly what A's
/// did (`qemu-img compare`, marker and all), the operation lists the cold
/// steps and counted every byte of the copy. Before that, a cold
/// migration to node C, whose image store lacks the VM's base image (so
/// its agent refuses the copy), fails naming step `copying`, and leaves
/// the VM running on A again (its guest counting), its disk as it was,
/// nothing of it on C. Prints the cold migration's time as the CLI saw
/// it.
#[cfg(feature = "libvirt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_migrates_cold_with_its_disk_and_a_failed_one_starts_again_where_it_was() {
    use zixiao_testing::output::{assert_refused, json, ok};
    use zixiao_testing::wait::wait_until;

    let Some(mut pair) = processes::LibvirtPair::start("cm").await else {
        return;
    };
    let (a, b, uri1, uri2) = pair.names();
    let pid = std::process::id();
    let (c, d) = (format!("cm-c-{pid}"), format!("cm-d-{pid}"));
    pair.import_images(&c, &uri2, true);
    // D's store has an image named `base` too, but another one.
    pair.import_images(&d, &uri2, true);
    let other_base = pair.dir.path().join("other-base.qcow2");
    ok(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&other_base)
        .arg("1G")
        .output()
        .expect("run qemu-img"));
    import_node_images(
        &pair.dir.path().join(&d),
        &uri2,
        &[(&other_base.to_string_lossy(), "disk", "base")],
    );
    let name = format!("cold-{pid}");
    let created = pair.create_counter(&name, &[]);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["node"], a.as_str(), "{created}");
    // B and C join once it is placed on A (it stays there through its
    // stop and start below).
    pair.start_b().await;
    pair.start_agent(&c, &uri2, &[]).await;
    pair.start_agent(&d, &uri2, &[]).await;
    let (set, client) = (&*pair, &pair.client);
    let run = |args: &[&str]| set.run(args);
    let status_is = |wanted: &'static str| {
        let name = name.clone();
        async move {
            wait_until(
                &format!("instance {name} to be {wanted}"),
                Duration::from_secs(120),
                || {
                    let shown = json(run(&["instance", "get", &name]));
                    async move { (shown["status"] == wanted).then_some(shown) }
                },
            )
            .await
        }
    };
    status_is("running").await;

    // The marker, written while it is stopped; the reference copy of the
    // disk as the guest sees it.
    ok(run(&["instance", "stop", &name]));
    status_is("stopped").await;
    let disk_a = set.instance_file(&a, &id, "disk.qcow2");
    ok(Command::new("qemu-io")
        .args(["-c", "write -P 0x5a 1M 64k"])
        .arg(&disk_a)
        .output()
        .expect("run qemu-io"));
    let reference = set.dir.path().join("reference.qcow2");
    std::fs::copy(&disk_a, &reference).expect("copy the disk");
    ok(run(&["instance", "start", &name]));
    status_is("running").await;
    set.counts_past(&name, 10).await;

    // Refused before anything stops: D's `base` is another image. The
    // domain keeps its libvirt id (a stop and start would give it a new one).
    let domain_id = || String::from_utf8_lossy(&virsh(&uri1, &["domid", &id]).stdout).into_owned();
    let running_as = domain_id();
    assert_refused(
        run(&["instance", "migrate", &name, "--cold", "--to", &d]),
        "a cold migration to a node whose base image differs",
        1,
        "failed_precondition",
        &format!("is based on image `base`, which differs on node `{a}`"),
    );
    let shown = json(run(&["instance", "get", &name]));
    assert_eq!(shown["node"], a.as_str(), "{shown}");
    assert_eq!(shown["status"], "running", "{shown}");
    assert!(shown["migrate_to"].is_null(), "{shown}");
    assert_eq!(domain_id(), running_as, "the domain was stopped");

    // The failed one: C has no base image, so its agent refuses the copy
    // after A stopped it; A starts it again, its disk as it was.
    assert_refused(
        run(&["instance", "migrate", &name, "--cold", "--to", &c]),
        "a cold migration to a node without the base image",
        1,
        "internal",
        &format!("at step `copying` (it runs on node `{a}` again, its disk as it was)"),
    );
    let shown = status_is("running").await;
    assert_eq!(shown["node"], a.as_str(), "{shown}");
    assert!(shown["migrate_to"].is_null(), "{shown}");
    let state = virsh(&uri1, &["domstate", &id]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "running");
    ok(same_guest_content(&reference, &disk_a));
    let node_c = client.get_node(&c).await.expect("node c");
    assert_eq!(node_c.allocated.instances, 0, "{node_c:?}");
    let on_c = set.dir.path().join(&c).join("runtime/libvirt").join(&id);
    assert!(!on_c.exists(), "C keeps files of it");
    let record = |node: &str| {
        set.dir
            .path()
            .join(node)
            .join("instances")
            .join(format!("{id}.json"))
    };
    assert!(!record(&c).exists(), "C's agent still records it");
    set.counts_past(&name, 10).await;

    // The cold one, to B.
    let started = Instant::now();
    let moved = json(run(&["instance", "migrate", &name, "--cold", "--to", &b]));
    let took = started.elapsed();
    assert_eq!(moved["id"], id.as_str(), "{moved}");
    assert_eq!(moved["name"], name.as_str(), "{moved}");
    assert_eq!(moved["node"], b.as_str(), "{moved}");
    let shown = status_is("running").await;
    assert_eq!(shown["node"], b.as_str(), "{shown}");
    assert_eq!(shown["attachments"], created["attachments"], "{shown}");
    let gone = virsh(&uri1, &["domstate", &id]);
    assert!(!gone.status.success(), "the source still holds the domain");
    let state = virsh(&uri2, &["domstate", &id]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "running");
    assert!(!disk_a.exists(), "A keeps the disk");
    let disk_b = set.instance_file(&b, &id, "disk.qcow2");
    ok(same_guest_content(&reference, &disk_b));
    ok(Command::new("qemu-io")
        .args(["-r", "-U", "-c", "read -P 0x5a 1M 64k"])
        .arg(&disk_b)
        .output()
        .expect("run qemu-io"));
    // It boots on B from the copy and counts there.
    set.counts_past(&name, 10).await;
    println!(
        "cold migration through the CLI (test output): {} ms in all",
        took.as_millis()
    );
    let node_a = client.get_node(&a).await.expect("node a");
    let node_b = client.get_node(&b).await.expect("node b");
    assert_eq!(node_a.allocated.instances, 0, "{node_a:?}");
    assert_eq!(node_b.allocated.instances, 1, "{node_b:?}");
    assert!(record(&b).exists(), "B's agent has no record of it");
    assert!(!record(&a).exists(), "A's agent still records it");
    let op = moved["operation"].as_str().expect("its operation");
    let operation = json(run(&["operation", "get", op]));
    assert_eq!(operation["phase"], "succeeded", "{operation}");
    assert_eq!(
        operation["steps"],
        serde_json::json!(["placing", "stopping", "copying", "starting", "done"]),
        "{operation}"
    );
    // It counted the copy: every byte of the disk that came.
    let progress = &operation["progress"];
    assert_eq!(progress["unit"], "bytes", "{operation}");
    assert!(
        progress["done"].as_u64().is_some_and(|n| n > 0),
        "{operation}"
    );
    assert_eq!(progress["done"], progress["total"], "{operation}");
    let out = run(&["instance", "delete", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
