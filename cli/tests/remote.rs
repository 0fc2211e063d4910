//! The CLI as a client of a cluster (`--endpoint`): a server and an agent
//! run in this process (zixiao-cluster, as `zixiao server`/`zixiao agent`
//! run them), the `zixiao` binary talks to the server.
//!
//! - networks: the agent sets them up with the real LinuxNetwork, in a
//!   network namespace the test creates (loopback up for gRPC), so its
//!   bridges never touch the host; a restarted agent's devices are
//!   reconciled with the store;
//! - `logs --follow`, `console` and snapshots: through the server to the agent, over a
//!   hand-written driver whose log the test appends to and whose console
//!   echoes upper-cased (the layer under test is the CLI and the protocol).

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zixiao_cluster::{
    agent, server, AgentHandle, AgentOptions, ServerHandle, ServerOptions, Timing,
};
use zixiao_core::driver::{Console, ConsoleStream, Pause};
use zixiao_core::host::HostFacts;
use zixiao_core::model::Network;
use zixiao_core::{
    CreateInstance, Driver, DriverError, Instance, InstanceSpec, InstanceStatus, InstanceType,
    LocalAgent, LogChunk, NetworkHost, NodeStatus, Resources, RuntimeState, Wait,
};
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

/// Runs `body` on a thread in a fresh network namespace with loopback up,
/// on a runtime whose threads (and the processes they start) all live in
/// that namespace. Skips when `scripts/services/net.sh` has not run.
fn in_fresh_netns<F, Fut>(body: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    zixiao_testing::netns::in_fresh_netns(move |base| {
        std::fs::create_dir_all(&base).expect("netns base dir");
        let dir = tempfile::tempdir_in(&base).expect("netns dir");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body(dir.path().to_path_buf()));
    });
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("ip")
}

fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).status.success()
}

/// `zixiao --endpoint ENDPOINT ARGS...`, run to completion off the runtime.
async fn zixiao(endpoint: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .env_remove("ZIXIAO_ENDPOINT")
        .env_remove("ZIXIAO_STATE_DIR")
        .arg("--endpoint")
        .arg(endpoint)
        .args(args);
    tokio::task::spawn_blocking(move || command.output().expect("run zixiao"))
        .await
        .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn host(name: &str) -> HostFacts {
    HostFacts {
        hostname: format!("{name}-host"),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(8),
            memory_mib: 8192,
            disk_gib: 100,
            instances: 32,
        },
    }
}

async fn start_server(dir: &Path) -> ServerHandle {
    let store = Arc::new(EmbeddedStore::open(&dir.join("state.redb")).expect("store"));
    server::start(
        server::controller(store),
        ServerOptions {
            limits: Default::default(),
            id: "s1".to_owned(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            timing: Timing::default(),
            metrics: None,
        },
    )
    .await
    .expect("server starts")
}

async fn start_agent(
    server: SocketAddr,
    dir: &Path,
    driver: Arc<dyn Driver>,
    network: Option<Arc<dyn NetworkHost>>,
) -> AgentHandle {
    agent::start_with_network(
        AgentOptions {
            limits: Default::default(),
            onboarding: Default::default(),
            name: "node-a".to_owned(),
            servers: vec![server.to_string()],
            region: "default".into(),
            zone: "default".into(),
            labels: Default::default(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            advertise: None,
            state_dir: dir.to_path_buf(),
            timing: Timing::default(),
            tls: None,
        },
        LocalAgent::new(host("node-a")).with_driver(driver),
        network,
    )
    .await
    .expect("agent starts")
}

/// Waits (up to 20 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ready(server: SocketAddr) -> zixiao_core::Node {
    let client = zixiao_api::connect(&server.to_string()).expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(node) = client.get_node("node-a").await {
            if node.status == NodeStatus::Ready {
                return node;
            }
        }
        assert!(Instant::now() < deadline, "node-a never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn networks_through_an_endpoint_are_set_up_on_the_agents_node() {
    in_fresh_netns(|netns| async move {
        let server_dir = tempfile::tempdir().expect("tempdir");
        let agent_dir = tempfile::tempdir().expect("tempdir");
        let server = start_server(server_dir.path()).await;
        let endpoint = server.addr().to_string();
        let driver: Arc<dyn Driver> = Arc::new(FakeDriver::new(InstanceType::Container));
        let network = agent::linux_network(&netns, None).expect("netlink");
        let agent = start_agent(
            server.addr(),
            agent_dir.path(),
            driver.clone(),
            Some(network.clone()),
        )
        .await;
        let node = wait_ready(server.addr()).await;
        assert!(
            node.traits.contains("networks"),
            "an agent with a network host says so: {:?}",
            node.traits
        );

        let out = zixiao(
            &endpoint,
            &[
                "network",
                "create",
                "lan",
                "--subnet",
                "10.77.0.0/24",
                "--no-nat",
                "-o",
                "json",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let lan: Network = serde_json::from_slice(&out.stdout).expect("a network as JSON");
        assert_eq!(lan.name, "lan");
        assert!(!lan.nat);
        assert!(
            link_exists(&lan.bridge),
            "bridge {} on the node",
            lan.bridge
        );
        let addresses = text(&ip(&["-o", "addr", "show", "dev", &lan.bridge]).stdout);
        assert!(addresses.contains("10.77.0.1/24"), "{addresses}");

        let out = zixiao(&endpoint, &["network", "list"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let listed = text(&out.stdout);
        assert!(
            listed.contains("lan") && listed.contains("10.77.0.0/24"),
            "{listed}"
        );
        let out = zixiao(&endpoint, &["network", "get", "lan"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(lan.bridge.as_str()),
            "{}",
            text(&out.stdout)
        );
        // Per node, part by part; `repair` puts back what was removed by hand.
        let rows = |out: &std::process::Output| -> Vec<(String, String)> {
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            assert_eq!(status["name"], "lan", "the network's own fields: {status}");
            status["nodes"][0]["parts"]
                .as_array()
                .expect("parts")
                .iter()
                .map(|p| {
                    (
                        p["kind"].as_str().unwrap().to_owned(),
                        p["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let out = zixiao(&endpoint, &["network", "get", "lan", "-o", "json"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            rows(&out).contains(&("bridge".into(), "ok".into())),
            "{:?}",
            rows(&out)
        );
        ip(&["addr", "flush", "dev", &lan.bridge]);
        let out = zixiao(&endpoint, &["network", "get", "lan"]).await;
        assert!(
            text(&out.stdout).contains("drifted")
                && text(&out.stdout).contains("lacks gateway 10.77.0.1"),
            "{}",
            text(&out.stdout)
        );
        let out = zixiao(&endpoint, &["network", "repair", "lan", "-o", "json"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            rows(&out).contains(&("bridge".into(), "ok".into())),
            "{:?}",
            rows(&out)
        );
        let addresses = text(&ip(&["-o", "addr", "show", "dev", &lan.bridge]).stdout);
        assert!(addresses.contains("10.77.0.1/24"), "repaired: {addresses}");

        // Dual stack: a second, IPv6 subnet; a /64 is SLAAC's, and its
        // router advertisements come from the node's responder.
        let out = zixiao(
            &endpoint,
            &[
                "network",
                "create",
                "dual",
                "--subnet",
                "10.95.0.0/24",
                "--subnet",
                "fd00:9e38::/64",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = zixiao(&endpoint, &["network", "get", "dual"]).await;
        let shown = text(&out.stdout);
        assert!(
            shown.contains("fd00:9e38::/64 gateway fd00:9e38::1, SLAAC")
                && shown.contains("serving DHCPv4 and IPv6 router advertisements"),
            "{shown}"
        );
        let out = zixiao(&endpoint, &["network", "delete", "dual"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = zixiao(
            &endpoint,
            &[
                "network",
                "create",
                "bad",
                "--subnet",
                "fd00:9e38::/64",
                "--reserve",
                "fd00:9e38::/72",
            ],
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "invalid argument");
        assert!(
            text(&out.stderr).contains("reserved[0]") && text(&out.stderr).contains("SLAAC"),
            "{}",
            text(&out.stderr)
        );

        let out = zixiao(
            &endpoint,
            &["network", "create", "bad", "--subnet", "10.78.0.0/99"],
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "invalid argument");
        assert!(
            text(&out.stderr).contains("subnets[0]"),
            "{}",
            text(&out.stderr)
        );
        let out = zixiao(&endpoint, &["network", "get", "bad"]).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("not found"),
            "{}",
            text(&out.stderr)
        );

        // The agent restarts; meanwhile its node lost the bridge and gained
        // an orphan (a network of this installation the store does not
        // know), next to a bridge of someone else's under a Zixiao name.
        agent.shutdown().await;
        assert!(ip(&["link", "del", &lan.bridge]).status.success());
        let installation = lan.installation.clone().expect("an installation");
        for (bridge, alias) in [
            ("zxbdeadbeef", format!("zixiao:{installation}:orphan")),
            ("zxbfeedf00d", "someone else's".to_owned()),
        ] {
            assert!(ip(&["link", "add", bridge, "type", "bridge"])
                .status
                .success());
            assert!(ip(&["link", "set", bridge, "alias", &alias])
                .status
                .success());
        }
        let agent = start_agent(
            server.addr(),
            agent_dir.path(),
            driver.clone(),
            Some(network.clone()),
        )
        .await;
        eventually("the orphan bridge's removal", || {
            !link_exists("zxbdeadbeef")
        })
        .await;
        eventually("the network's bridge coming back", || {
            link_exists(&lan.bridge)
        })
        .await;
        assert!(link_exists("zxbfeedf00d"), "not ours: left alone");

        let out = zixiao(&endpoint, &["network", "delete", "lan"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "deleted network lan\n");
        assert!(!link_exists(&lan.bridge), "bridge removed from the node");
        let out = zixiao(&endpoint, &["network", "list", "-o", "json"]).await;
        let left: Vec<Network> = serde_json::from_slice(&out.stdout).expect("json");
        assert!(left.is_empty(), "{left:?}");

        // Back without networks (`--no-networks`): the servers leave the node out.
        agent.shutdown().await;
        let agent = start_agent(server.addr(), agent_dir.path(), driver.clone(), None).await;
        let cluster = zixiao_api::connect(&endpoint).expect("client");
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster
            .get_node("node-a")
            .await
            .expect("node")
            .traits
            .contains("networks")
        {
            assert!(
                Instant::now() < deadline,
                "the node kept its networks trait"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = zixiao(
            &endpoint,
            &[
                "network",
                "create",
                "dmz",
                "--subnet",
                "10.79.0.0/24",
                "-o",
                "json",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let dmz: Network = serde_json::from_slice(&out.stdout).expect("json");
        assert!(
            !link_exists(&dmz.bridge),
            "nothing set up on an opted-out node"
        );

        agent.shutdown().await;
        server.shutdown().await;
    });
}

type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DriverError>> + Send + 'a>>;

/// A fake container runtime whose log the test writes, and whose console
/// echoes what is typed, upper-cased.
#[derive(Debug)]
struct Scripted {
    fake: FakeDriver,
    log: Arc<Mutex<Vec<u8>>>,
}

// Written out as `#[async_trait]` expands it (this crate does not depend on async-trait).
impl Driver for Scripted {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Container
    }
    fn name(&self) -> &str {
        "scripted"
    }
    fn create<'a, 'b, 'c>(&'a self, i: &'b Instance) -> DriverFuture<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.fake.create(i)
    }
    fn start<'a, 'b, 'c>(&'a self, i: &'b Instance) -> DriverFuture<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.fake.start(i)
    }
    fn stop<'a, 'b, 'c>(&'a self, i: &'b Instance, grace: Duration) -> DriverFuture<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.fake.stop(i, grace)
    }
    fn delete<'a, 'b, 'c>(&'a self, i: &'b Instance) -> DriverFuture<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.fake.delete(i)
    }
    fn inspect<'a, 'b, 'c>(&'a self, i: &'b Instance) -> DriverFuture<'c, RuntimeState>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.fake.inspect(i)
    }
    fn read_log<'a, 'b, 'c>(
        &'a self,
        _i: &'b Instance,
        offset: u64,
        max: usize,
    ) -> DriverFuture<'c, LogChunk>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let log = self.log.lock().expect("log").clone();
        Box::pin(async move {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
            let end = start.saturating_add(max).min(log.len());
            Ok(LogChunk {
                data: log[start..end].to_vec(),
                next_offset: end as u64,
            })
        })
    }
    fn pause(&self) -> Option<&dyn Pause> {
        Driver::pause(&self.fake)
    }

    fn console(&self) -> Option<&dyn Console> {
        Some(self)
    }
}

impl Console for Scripted {
    fn attach<'a, 'b, 'c>(&'a self, _i: &'b Instance) -> DriverFuture<'c, ConsoleStream>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (ours, theirs) = tokio::io::duplex(1024);
            let (mut read, mut write) = tokio::io::split(ours);
            tokio::spawn(async move {
                let mut buffer = [0u8; 256];
                while let Ok(n) = read.read(&mut buffer).await {
                    if n == 0
                        || write
                            .write_all(&buffer[..n].to_ascii_uppercase())
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
            let (output, input) = tokio::io::split(theirs);
            Ok(ConsoleStream {
                output: Box::new(output),
                input: Box::new(input),
            })
        })
    }
}

/// Reads `child`'s stdout on a thread until it contains `wanted` (or 20 s pass).
fn read_until(stdout: &mut impl Read, seen: &mut Vec<u8>, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buffer = [0u8; 256];
    while !text(seen).contains(wanted) {
        assert!(
            Instant::now() < deadline,
            "never printed {wanted:?}: {}",
            text(seen)
        );
        let n = stdout.read(&mut buffer).expect("read");
        assert!(n > 0, "closed before printing {wanted:?}: {}", text(seen));
        seen.extend_from_slice(&buffer[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_and_console_work_through_an_endpoint() {
    let server_dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(server_dir.path()).await;
    let endpoint = server.addr().to_string();
    let log = Arc::new(Mutex::new(b"first line\n".to_vec()));
    let driver = Arc::new(Scripted {
        fake: FakeDriver::new(InstanceType::Container),
        log: log.clone(),
    });
    let agent = start_agent(server.addr(), agent_dir.path(), driver, None).await;
    wait_ready(server.addr()).await;
    let client = zixiao_api::connect(&endpoint).expect("client");
    let web = client
        .create_instance(
            CreateInstance::new("web", InstanceSpec::container("busybox")),
            Wait::Settled,
        )
        .await
        .expect("create");
    assert_eq!(web.status, InstanceStatus::Running);

    // Follow: what is there, then what is written later, until it stops.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .env_remove("ZIXIAO_ENDPOINT")
        .args([
            "--endpoint",
            &endpoint,
            "instance",
            "logs",
            "web",
            "--follow",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zixiao");
    let mut stdout = follower.stdout.take().expect("stdout");
    let (stdout, mut seen) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        read_until(&mut stdout, &mut seen, "first line\n");
        (stdout, seen)
    })
    .await
    .expect("join");
    log.lock().expect("log").extend_from_slice(b"second line\n");
    let mut stdout = tokio::task::spawn_blocking(move || {
        let mut stdout = stdout;
        read_until(&mut stdout, &mut seen, "second line\n");
        assert_eq!(text(&seen), "first line\nsecond line\n");
        stdout
    })
    .await
    .expect("join");
    assert!(
        follower.try_wait().expect("wait").is_none(),
        "still following while the instance runs"
    );
    log.lock().expect("log").extend_from_slice(b"last words\n");
    client
        .stop_instance("web", Wait::Settled)
        .await
        .expect("stop");
    let status = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).expect("read");
        assert_eq!(rest, "last words\n", "what it wrote last, then the end");
        follower.wait().expect("wait")
    })
    .await
    .expect("join");
    assert!(
        status.success(),
        "the follower ends once the instance stopped"
    );

    // A console session through the server to the node.
    client
        .start_instance("web", Wait::Settled)
        .await
        .expect("start");
    let mut console = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .env_remove("ZIXIAO_ENDPOINT")
        .args(["--endpoint", &endpoint, "instance", "console", "web"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zixiao");
    let mut stdin = console.stdin.take().expect("stdin");
    let mut stdout = console.stdout.take().expect("stdout");
    tokio::task::spawn_blocking(move || {
        stdin.write_all(b"hello console\n").expect("type");
        stdin.flush().expect("flush");
        let mut seen = Vec::new();
        read_until(&mut stdout, &mut seen, "HELLO CONSOLE\n");
        let _ = console.kill();
        let _ = console.wait();
        drop(stdin);
    })
    .await
    .expect("join");

    // Pause and resume freeze and thaw it on the node; `-o json` for scripts.
    for (verb, status) in [("pause", "paused"), ("resume", "running")] {
        let out = zixiao(&endpoint, &["-o", "json", "instance", verb, "web"]).await;
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["status"], status, "{verb}: {json}");
    }
    let out = zixiao(&endpoint, &["instance", "pause", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // Unknown instances and node-local commands say what is wrong.
    let out = zixiao(&endpoint, &["instance", "console", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    // Snapshots reach the node's runtime, which cannot take them here.
    let out = zixiao(&endpoint, &["instance", "snapshot", "list", "web"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the scripted driver cannot take snapshots"),
        "{stderr}"
    );
    let out = zixiao(
        &endpoint,
        &[
            "instance", "snapshot", "create", "web", "s1", "--to", "/tmp/x",
        ],
    )
    .await;
    // The copy needs this machine's files, which the server cannot reach:
    // refused before anything is taken.
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/tmp/x") && stderr.contains("run it on the node"),
        "{stderr}"
    );
    // Images are the node's: asked of its agent, whose runtime keeps none here.
    let out = zixiao(&endpoint, &["image", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("does not keep images"), "{stderr}");

    agent.shutdown().await;
    server.shutdown().await;
}
