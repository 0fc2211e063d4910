//! The roles a multi-process test binary plays when it is re-executed with
//! `ZIXIAO_TEST_ROLE` set: a server, an agent (which spawns its node's
//! watchdog) or a watchdog. Each prints `ready ADDR` on stdout once it
//! serves. Optional variables place it: `ZX_NETNS` (a pinned network
//! namespace it joins before anything else), `ZX_LISTEN` (its listen
//! address, loopback by default). Servers serve TLS with the cluster PKI
//! in `ZX_PKI`; agents join with the CA `ZX_CA` and the join token
//! `ZX_JOIN_TOKEN`, then talk mutual TLS.
//!
//! An agent and its watchdog run the node's runtimes named by `ZX_RUNTIME`:
//! `files` (the default: the fake [`FileDriver`]) or `real`: the drivers of
//! zixiao-drivers found by `discover`, as `zixiao agent` finds them, with
//! containerd at `ZX_CONTAINERD_SOCKET` in the node's own namespace
//! `ZX_CONTAINERD_NAMESPACE` (nodes on one machine never see each other's
//! containers) and QEMU microVMs (`ZX_QEMU`), each node's files in its own
//! directory. Each real driver is wrapped in zixiao-testing's
//! `CountingDriver`, which logs what reaches the runtime to the node's
//! event log, as the fake runtime does itself. The agent imports the image
//! archive `ZX_IMAGE_ARCHIVE` into its node first, when given.
//! `ZX_MEMORY_MIB` sets the node's memory (64 GiB by default).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use zixiao_cluster::agent::{AgentTls, RENEW_BEFORE, RENEW_CHECK};
use zixiao_cluster::timing::monotonic_ms;
use zixiao_cluster::{agent, server, watchdog, AgentOptions, ServerOptions, Timing};
use zixiao_core::host::HostFacts;
use zixiao_core::model::{ImageKind, NodeImageName};
use zixiao_core::{InstanceType, LocalAgent, MicrovmBackend, NodeAgent, Resources};
use zixiao_drivers::{discover, DriverConfig};
use zixiao_testing::counting_driver::{CountingDriver, CreateHold};
use zixiao_testing::runtime_events::EventLog;

use super::file_driver::FileDriver;

/// The variable naming the role a re-executed test binary plays.
pub(crate) const ROLE: &str = "ZIXIAO_TEST_ROLE";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("role needs {name}"))
}

fn listen() -> std::net::SocketAddr {
    std::env::var("ZX_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:0".to_owned())
        .parse()
        .expect("ZX_LISTEN")
}

/// Node `name`'s agent over the runtimes `ZX_RUNTIME` names, its files under `dir`.
async fn local(name: &str, dir: &Path) -> LocalAgent {
    let memory_mib = std::env::var("ZX_MEMORY_MIB")
        .ok()
        .map(|m| m.parse().expect("ZX_MEMORY_MIB"))
        .unwrap_or(65536);
    let host = HostFacts {
        hostname: format!("{name}-host"),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(64),
            memory_mib,
            disk_gib: 100,
            instances: 64,
        },
    };
    match std::env::var("ZX_RUNTIME").as_deref() {
        Ok("real") => real_drivers(LocalAgent::new(host), dir).await,
        Ok("files") | Err(_) => LocalAgent::new(host).with_driver(Arc::new(FileDriver::new(dir))),
        Ok(other) => panic!("unknown ZX_RUNTIME {other}"),
    }
}

/// `agent` with the real container and microVM drivers, each behind a
/// `CountingDriver` logging to the node's event log.
async fn real_drivers(mut agent: LocalAgent, dir: &Path) -> LocalAgent {
    let runtime = dir.join("runtime");
    let mut config = DriverConfig::new(&runtime);
    config.containerd_socket = PathBuf::from(env("ZX_CONTAINERD_SOCKET"));
    config.containerd_namespace = env("ZX_CONTAINERD_NAMESPACE");
    config.microvm_backend = Some(MicrovmBackend::Qemu);
    config.qemu_binary = Some(PathBuf::from(env("ZX_QEMU")));
    config.netns_dir = dir.join("netns");
    let found = discover(&config).await;
    for (instance_type, reason) in &found.missing {
        assert!(
            !matches!(
                instance_type,
                InstanceType::Container | InstanceType::Microvm
            ),
            "the node's {instance_type} runtime is missing: {reason}"
        );
    }
    let log = EventLog::in_dir(&runtime);
    let hold = CreateHold::in_dir(&runtime);
    for driver in found.drivers {
        let counted =
            CountingDriver::new(driver, log.clone(), monotonic_ms).with_hold(hold.clone());
        agent = agent.with_driver(Arc::new(counted));
    }
    agent
}

/// Imports the image archive `ZX_IMAGE_ARCHIVE`, if given, into `agent`'s container runtime.
async fn import_image(agent: &LocalAgent) {
    let Ok(archive) = std::env::var("ZX_IMAGE_ARCHIVE") else {
        return;
    };
    let driver = agent
        .driver(InstanceType::Container)
        .expect("a container runtime");
    let images = driver.images().expect("the container runtime keeps images");
    images
        .import(Path::new(&archive), None, &|_| {})
        .await
        .unwrap_or_else(|e| panic!("importing {archive}: {e}"));
    // Agents boot only images of their node's store: the test microVM's
    // kernel and initramfs, by the names `workloads::microvm` gives.
    for (var, kind, name) in [
        ("ZX_MICROVM_KERNEL", ImageKind::Kernel, TEST_KERNEL),
        ("ZX_MICROVM_INITRD", ImageKind::Initrd, TEST_INITRD),
    ] {
        let Ok(file) = std::env::var(var) else {
            continue;
        };
        let driver = agent
            .driver(InstanceType::Microvm)
            .expect("a microvm runtime");
        let store = driver
            .images()
            .expect("the microvm runtime keeps an image store");
        let name = NodeImageName::try_from(name).expect("an image name");
        store
            .import_file(Path::new(&file), &name, kind)
            .await
            .unwrap_or_else(|e| panic!("importing {file}: {e}"));
    }
}

/// The names of the test microVM's kernel and initramfs in each node's store.
pub(crate) const TEST_KERNEL: &str = "test-kernel";
/// See [`TEST_KERNEL`].
pub(crate) const TEST_INITRD: &str = "test-initrd";

/// Moves the calling thread into the network namespace pinned at `path`.
/// Called on the main thread before any other thread exists, so every
/// thread and process started later lives there too.
pub(crate) fn enter_netns(path: &Path) {
    let ns = std::fs::File::open(path).expect("open the namespace");
    // SAFETY: `ns` is an open namespace file for the duration of the call;
    // setns only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Plays `role` until killed.
pub(crate) fn run_role(role: &str) {
    if let Ok(path) = std::env::var("ZX_NETNS") {
        enter_netns(Path::new(&path));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match role {
            "server" => {
                let store = etcd_store(&env("ZX_ETCD"), &env("ZX_PREFIX")).await;
                let listen = listen();
                // Its certificate names loopback and the address it serves
                // on, as `zixiao server --pki` issues it.
                let pki = Arc::new(zixiao_auth::Pki::load(Path::new(&env("ZX_PKI"))).expect("pki"));
                let mut names = vec![
                    zixiao_auth::SubjectName::Dns("localhost".to_owned()),
                    zixiao_auth::SubjectName::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
                ];
                if !listen.ip().is_loopback() {
                    names.push(zixiao_auth::SubjectName::Ip(listen.ip()));
                }
                let tls = zixiao_api::secure::ServerTls::issue(&pki, &names).expect("server TLS");
                let handle = server::start_secure(
                    server::controller(store),
                    ServerOptions {
                        limits: Default::default(),
                        id: env("ZX_ID"),
                        listen,
                        timing: Timing::default(),
                        metrics: None,
                    },
                    tls,
                    pki,
                )
                .await
                .expect("server");
                println!("ready {}", handle.addr());
                handle.wait().await;
            }
            "agent" => {
                let dir = PathBuf::from(env("ZX_DIR"));
                let name = env("ZX_NAME");
                let mut watchdog = Command::new(std::env::current_exe().expect("exe"));
                watchdog
                    .env(ROLE, "watchdog")
                    .stderr(log_file(&dir, "watchdog.log"));
                watchdog::spawn_detached(watchdog).expect("watchdog");
                let local = local(&name, &dir).await;
                import_image(&local).await;
                let handle = agent::start(
                    AgentOptions {
                        limits: Default::default(),
                        onboarding: Default::default(),
                        name: name.clone(),
                        servers: env("ZX_SERVERS").split(',').map(str::to_owned).collect(),
                        region: "default".into(),
                        zone: "default".into(),
                        labels: BTreeMap::new(),
                        listen: listen(),
                        advertise: None,
                        state_dir: dir.clone(),
                        timing: Timing::default(),
                        tls: Some(AgentTls {
                            ca_pem: std::fs::read_to_string(env("ZX_CA")).expect("the CA"),
                            join_token: Some(env("ZX_JOIN_TOKEN")),
                            renew_before: RENEW_BEFORE,
                            renew_check: RENEW_CHECK,
                        }),
                    },
                    local,
                )
                .await
                .expect("agent");
                println!("ready {}", handle.addr());
                // SIGTERM is the agent leaving for good; a death is kill -9.
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                term.recv().await;
                handle.leave().await.expect("leave");
            }
            "watchdog" => {
                let dir = PathBuf::from(env("ZX_DIR"));
                let agent = Arc::new(local(&env("ZX_NAME"), &dir).await);
                watchdog::run(&dir, Timing::default().fence_after(), agent)
                    .await
                    .expect("watchdog");
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// A store on the etcd at `endpoints` (comma-separated) under `prefix`.
#[cfg(feature = "etcd")]
pub(crate) async fn etcd_store(endpoints: &str, prefix: &str) -> Arc<dyn zixiao_core::Store> {
    let options =
        zixiao_store::EtcdStoreOptions::new(endpoints.split(',')).key_prefix(prefix.to_owned());
    Arc::new(
        zixiao_store::EtcdStore::connect(options)
            .await
            .expect("etcd"),
    )
}

/// Without the `etcd` feature there is no store to serve.
#[cfg(not(feature = "etcd"))]
pub(crate) async fn etcd_store(_: &str, _: &str) -> Arc<dyn zixiao_core::Store> {
    panic!("built without the etcd feature")
}

/// An append-mode log file `name` in `dir` (created), as a child's stdio.
pub(crate) fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}
