//! The controller driving nodes through a real gRPC AgentService on
//! loopback: the agent side holds hand-written fake drivers (the layer under
//! test is the protocol, not a runtime), the controller side sees only a
//! [`RemoteAgent`]. Also the ComputeService and its client, and the error
//! mapping end to end.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use zixiao_api::agent::AgentServer;
use zixiao_api::remote::RemoteAgent;
use zixiao_core::driver::Capability;
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, ErrorKind, InstanceSpec, InstanceStatus, InstanceType, LocalAgent,
    NodeAgent, NodeRegistration, Resources, RestartPolicy, RuntimeState, Wait,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::{Failure, FakeDriver, Op};

struct Rig {
    controller: Controller,
    driver: Arc<FakeDriver>,
    agent_addr: SocketAddr,
    agent_task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn host() -> HostFacts {
    HostFacts {
        hostname: "node-a-host".into(),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(8),
            memory_mib: 8192,
            disk_gib: 100,
            instances: 32,
        },
    }
}

async fn serve_agent(agent: LocalAgent) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = AgentServer::new(Arc::new(agent)).into_service();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, task)
}

async fn rig() -> Rig {
    rig_of(InstanceType::Container).await
}

/// A rig whose node's fake driver runs `instance_type`.
async fn rig_of(instance_type: InstanceType) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("store");
    let driver = Arc::new(FakeDriver::new(instance_type));
    let local = LocalAgent::new(host()).with_driver(driver.clone());
    let registration = NodeRegistration {
        address: "set below".into(),
        ..local.registration("node-a")
    };
    let (agent_addr, agent_task) = serve_agent(local).await;
    let remote = RemoteAgent::registered(&NodeRegistration {
        address: agent_addr.to_string(),
        ..registration.clone()
    })
    .expect("remote agent");
    let controller = Controller::builder(Arc::new(store), Arc::new(PluginScheduler::default()))
        .agent("node-a", Arc::new(remote))
        .build();
    controller
        .register_node(NodeRegistration {
            address: agent_addr.to_string(),
            ..registration
        })
        .await
        .expect("register");
    Rig {
        controller,
        driver,
        agent_addr,
        agent_task,
        _dir: dir,
    }
}

fn web(restart: RestartPolicy) -> CreateInstance {
    let mut spec = InstanceSpec::container("busybox");
    spec.restart = restart;
    CreateInstance::new("web", spec)
}

/// Where the node put a microVM's vsock socket rides back in the agent's
/// create answer and is recorded on the instance, as the runtime is.
#[tokio::test]
async fn the_node_says_where_a_microvms_vsock_socket_is() {
    let rig = rig_of(InstanceType::Microvm).await;
    let mut spec = InstanceSpec::microvm("kernel-image");
    spec.vsock = Some(zixiao_core::model::VsockSpec {
        cid: 42.try_into().expect("a CID"),
    });
    let created = rig
        .controller
        .create_instance(CreateInstance::new("m", spec))
        .await
        .expect("create");
    let running = rig
        .controller
        .converge(&created.id)
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(running.status, InstanceStatus::Running);
    let vsock = running.vsock.expect("the node's vsock socket");
    assert_eq!(vsock.cid.get(), 42);
    assert_eq!(
        vsock.socket,
        std::path::PathBuf::from(format!("/fake/{}/vsock.sock", created.id))
    );
    let got = rig.controller.get_instance("m").await.expect("get");
    assert_eq!(got.vsock.map(|v| v.socket), Some(vsock.socket));
}

#[tokio::test]
async fn the_controller_runs_an_instance_through_a_remote_agent() {
    let rig = rig().await;
    let created = rig
        .controller
        .create_instance(web(RestartPolicy::Never))
        .await
        .expect("create");
    let running = rig
        .controller
        .converge(&created.id)
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(running.status, InstanceStatus::Running);
    assert_eq!(running.node.as_deref(), Some("node-a"));
    assert_eq!(
        running.runtime.as_deref(),
        Some("fake"),
        "runtime name from the agent"
    );
    assert_eq!(rig.driver.state_of(&created.id), RuntimeState::Running);

    rig.controller.stop_instance("web").await.expect("stop");
    let stopped = rig.controller.converge("web").await.expect("converge");
    assert_eq!(stopped.expect("exists").status, InstanceStatus::Stopped);
    assert!(matches!(
        rig.driver.state_of(&created.id),
        RuntimeState::Exited { .. }
    ));

    rig.controller.delete_instance("web").await.expect("delete");
    let gone = rig
        .controller
        .converge(&created.id)
        .await
        .expect("converge");
    assert!(gone.is_none(), "deleted: {gone:?}");
    assert_eq!(
        rig.controller
            .get_instance("web")
            .await
            .expect_err("gone")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(rig.driver.state_of(&created.id), RuntimeState::Missing);
}

#[tokio::test]
async fn an_exit_on_the_node_is_observed_through_inspect() {
    let rig = rig().await;
    let created = rig
        .controller
        .create_instance(web(RestartPolicy::Never))
        .await
        .expect("create");
    rig.controller
        .converge(&created.id)
        .await
        .expect("converge");
    rig.driver.exit(&created.id, 3, false);
    let after = rig
        .controller
        .converge(&created.id)
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(after.status, InstanceStatus::Failed);
    assert_eq!(after.exit.expect("exit recorded").code, 3);
}

#[tokio::test]
async fn driver_errors_cross_the_wire_with_their_kind() {
    let rig = rig().await;
    rig.driver.fail(Op::Create, Failure::NotFound);
    let created = rig
        .controller
        .create_instance(web(RestartPolicy::Never))
        .await
        .expect("create");
    let failed = rig
        .controller
        .converge(&created.id)
        .await
        .expect("converge")
        .expect("exists");
    assert_eq!(failed.status, InstanceStatus::Failed);
    let problem = failed.problem().expect("a reason").to_owned();
    assert!(problem.contains("image `busybox` not found"), "{problem}");

    rig.driver.fail(Op::Start, Failure::Unavailable);
    rig.driver.fail(Op::Create, Failure::Unavailable);
    rig.controller.start_instance("web").await.expect("start");
    let error = rig
        .controller
        .converge("web")
        .await
        .expect_err("the runtime is down");
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(
        error.chain().contains("fake runtime is unavailable"),
        "{}",
        error.chain()
    );
}

#[tokio::test]
async fn a_dead_agent_is_unavailable_and_changes_nothing() {
    let rig = rig().await;
    let created = rig
        .controller
        .create_instance(web(RestartPolicy::Always))
        .await
        .expect("create");
    rig.agent_task.abort();
    let _ = rig.agent_task.await;
    let error = rig
        .controller
        .converge(&created.id)
        .await
        .expect_err("nobody answers");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{}", error.chain());
    let after = rig.controller.get_instance("web").await.expect("get");
    assert_ne!(
        after.status,
        InstanceStatus::Failed,
        "an unreachable node fails nothing"
    );
    assert_ne!(after.status, InstanceStatus::Running);
    let _ = rig.agent_addr;
}

#[tokio::test]
async fn a_remote_agent_describes_its_node_and_refuses_missing_runtimes() {
    let rig = rig().await;
    let local =
        LocalAgent::new(host()).with_driver(Arc::new(FakeDriver::new(InstanceType::Container)));
    let remote = RemoteAgent::registered(&NodeRegistration {
        address: rig.agent_addr.to_string(),
        missing_runtimes: [(InstanceType::Vm, "libvirtd is not running".to_owned())].into(),
        ..local.registration("node-a")
    })
    .expect("remote");
    let facts = remote.describe().await.expect("describe");
    assert_eq!(facts.hostname, "node-a-host");
    assert_eq!(facts.capacity.cpus, zixiao_core::Cpus::cores(8));
    assert!(facts.runtimes.contains(&InstanceType::Container));
    let fake = &facts.drivers[&InstanceType::Container];
    assert_eq!(fake.name, "fake");
    assert_eq!(
        fake.capabilities,
        [Capability::Stats, Capability::Pause, Capability::Resize].into(),
        "what the fake driver can do, as the node reports it"
    );
    let error = remote.driver(InstanceType::Vm).expect_err("no vm runtime");
    assert_eq!(error.kind(), ErrorKind::Unsupported);
    assert!(error.to_string().contains("libvirtd is not running"));

    // The remote driver offers what the node's driver can do, no more,
    // under its name, and says so as a local driver would.
    let driver = remote.driver(InstanceType::Container).expect("container");
    assert_eq!(driver.name(), "fake");
    assert!(driver.stats().is_some() && driver.pause().is_some() && driver.resize().is_some());
    assert!(driver.console().is_none() && driver.snapshots().is_none());
    assert!(driver.images().is_none() && driver.inventory().is_none());
    let error = driver.require_console().err().expect("no console");
    let local_driver: Arc<dyn zixiao_core::Driver> =
        Arc::new(FakeDriver::new(InstanceType::Container));
    let expected = local_driver.require_console().err().expect("no console");
    assert_eq!(error.to_string(), expected.to_string());
}

async fn serve_compute(controller: Controller) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = Arc::new(controller);
    tokio::spawn(zixiao_api::server::serve(
        api,
        listener,
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn the_compute_service_gives_clients_the_controllers_answers_and_errors() {
    let rig = rig().await;
    let addr = serve_compute(rig.controller.clone()).await;
    let client = zixiao_api::connect(&addr.to_string()).expect("client");

    let running = client
        .create_instance(web(RestartPolicy::Never), Wait::Settled)
        .await
        .expect("create");
    assert_eq!(running.status, InstanceStatus::Running);
    assert_eq!(rig.driver.state_of(&running.id), RuntimeState::Running);
    let listed = client
        .list_instances(Default::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    let stats = client.instance_stats("web").await.expect("stats");
    let direct = rig.controller.instance_stats("web").await.expect("stats");
    assert_eq!(stats.memory_limit_bytes, direct.memory_limit_bytes);

    // The same error, kind and message, as the controller itself gives.
    let remote = client.get_instance("nope").await.expect_err("unknown");
    let local = rig
        .controller
        .get_instance("nope")
        .await
        .expect_err("unknown");
    assert_eq!(remote.kind(), ErrorKind::NotFound);
    assert_eq!(remote.chain(), local.chain());

    let again = client
        .create_instance(web(RestartPolicy::Never), Wait::No)
        .await
        .expect_err("the name is taken");
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);

    let mut bad = web(RestartPolicy::Never);
    bad.name = "Not A DNS Label".into();
    let local = rig
        .controller
        .create_instance(bad.clone())
        .await
        .expect_err("bad");
    let remote = client
        .create_instance(bad, Wait::No)
        .await
        .expect_err("bad");
    assert_eq!(remote.kind(), ErrorKind::InvalidArgument);
    assert_eq!(remote.chain(), local.chain());

    let gone = client
        .delete_instance("web", Wait::Settled)
        .await
        .expect("delete");
    assert!(gone.is_none(), "deleted and waited: nothing left");
    assert_eq!(rig.driver.state_of(&running.id), RuntimeState::Missing);
}

#[tokio::test]
async fn an_update_resizes_live_through_the_compute_service_and_the_remote_agent() {
    use zixiao_core::InstanceUpdate;

    let rig = rig().await;
    let addr = serve_compute(rig.controller.clone()).await;
    let client = zixiao_api::connect(&addr.to_string()).expect("client");
    let running = client
        .create_instance(web(RestartPolicy::Never), Wait::Settled)
        .await
        .expect("create");
    let grow = InstanceUpdate {
        cpus: Some(zixiao_core::Cpus::cores(2)),
        memory_mib: Some(1024),
        set_labels: [("tier".to_owned(), "front".to_owned())].into(),
        ..InstanceUpdate::default()
    };
    let updated = client
        .update_instance("web", grow, Wait::Settled)
        .await
        .expect("update");
    assert_eq!(
        (updated.spec.cpus, updated.spec.memory_mib),
        (zixiao_core::Cpus::cores(2), 1024)
    );
    assert_eq!(
        updated.labels.get("tier").map(String::as_str),
        Some("front")
    );
    // The node's runtime took the new size over the AgentService.
    assert_eq!(rig.driver.count(Op::Resize, &running.id), 1);
    let on_node = rig.driver.spec_of(&running.id).expect("spec");
    assert_eq!(
        (on_node.cpus, on_node.memory_mib),
        (zixiao_core::Cpus::cores(2), 1024)
    );
    assert_eq!(
        rig.driver.count(Op::Stop, &running.id),
        0,
        "live, no restart"
    );

    // Refusals cross the wire with their kind and message, and change nothing.
    for (update, kind) in [
        (InstanceUpdate::default(), ErrorKind::InvalidArgument),
        (
            InstanceUpdate {
                cpus: Some(zixiao_core::Cpus::cores(0)),
                ..InstanceUpdate::default()
            },
            ErrorKind::InvalidArgument,
        ),
        (
            InstanceUpdate {
                memory_mib: Some(64 * 1024),
                ..InstanceUpdate::default()
            },
            ErrorKind::ResourceExhausted,
        ),
    ] {
        let remote = client
            .update_instance("web", update.clone(), Wait::No)
            .await
            .expect_err("refused");
        let local = rig
            .controller
            .update_instance("web", update)
            .await
            .expect_err("refused");
        assert_eq!(remote.kind(), kind);
        assert_eq!(remote.chain(), local.chain());
    }
    let err = client
        .update_instance(
            "nope",
            InstanceUpdate {
                cpus: Some(zixiao_core::Cpus::cores(2)),
                ..InstanceUpdate::default()
            },
            Wait::No,
        )
        .await
        .expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let stored = client.get_instance("web").await.expect("get");
    assert_eq!(stored.revision, updated.revision);

    // A runtime that fails the resize: the error crosses both hops and the
    // stored size is put back.
    rig.driver.fail(Op::Resize, Failure::Unavailable);
    let err = client
        .update_instance(
            "web",
            InstanceUpdate {
                memory_mib: Some(2048),
                ..InstanceUpdate::default()
            },
            Wait::No,
        )
        .await
        .expect_err("the runtime is down");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    rig.driver.heal();
    assert_eq!(
        client.get_instance("web").await.unwrap().spec.memory_mib,
        1024
    );
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments_naming_the_field_in_the_details() {
    use tonic_types::StatusExt;
    use zixiao_api::pb;

    let rig = rig().await;
    let addr = serve_compute(rig.controller.clone()).await;
    let mut raw =
        pb::instance_service_client::InstanceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    let field_of = |status: &tonic::Status| {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let details = status.get_error_details();
        let info = details.error_info().expect("an ErrorInfo").clone();
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, zixiao_api::status::DOMAIN);
        let violation = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations[0];
        assert_eq!(Some(&violation.field), info.metadata.get("field"));
        violation.field.clone()
    };
    let no_instance = pb::CreateInstanceRequest {
        instance: None,
        wait: false,
    };
    let status = raw.create_instance(no_instance).await.expect_err("empty");
    assert_eq!(field_of(&status), "instance");
    let mut untyped = pb::CreateInstance::from(web(RestartPolicy::Never));
    if let Some(spec) = untyped.spec.as_mut() {
        spec.r#type = 0;
    }
    let request = pb::CreateInstanceRequest {
        instance: Some(untyped.clone()),
        wait: false,
    };
    let status = raw.create_instance(request).await.expect_err("no type");
    assert_eq!(field_of(&status), "spec.type");
    if let Some(spec) = untyped.spec.as_mut() {
        spec.r#type = 42;
    }
    let request = pb::CreateInstanceRequest {
        instance: Some(untyped),
        wait: false,
    };
    let status = raw
        .create_instance(request)
        .await
        .expect_err("unknown type");
    assert_eq!(field_of(&status), "spec.type");
    assert!(status.message().contains("unknown value 42"), "{status:?}");
    let mut tiny = web(RestartPolicy::Never);
    tiny.spec.memory_mib = 1;
    let request = pb::CreateInstanceRequest {
        instance: Some(tiny.into()),
        wait: false,
    };
    let status = raw.create_instance(request).await.expect_err("too small");
    assert_eq!(field_of(&status), "spec.memory_mib");
    let status = raw
        .get_instance(pb::InstanceRef {
            instance: String::new(),
        })
        .await
        .expect_err("empty");
    assert_eq!(field_of(&status), "instance");
    let listed = rig
        .controller
        .list_instances(&Default::default())
        .await
        .expect("list");
    assert!(listed.is_empty(), "nothing was created");
}

/// A fake driver with a console that echoes what is typed, upper-cased.
#[derive(Debug)]
struct EchoConsole(FakeDriver);

#[async_trait::async_trait]
impl zixiao_core::Driver for EchoConsole {
    fn instance_type(&self) -> InstanceType {
        self.0.instance_type()
    }
    fn name(&self) -> &str {
        "echo"
    }
    async fn create(&self, i: &zixiao_core::Instance) -> Result<(), zixiao_core::DriverError> {
        self.0.create(i).await
    }
    async fn start(&self, i: &zixiao_core::Instance) -> Result<(), zixiao_core::DriverError> {
        self.0.start(i).await
    }
    async fn stop(
        &self,
        i: &zixiao_core::Instance,
        grace: std::time::Duration,
    ) -> Result<(), zixiao_core::DriverError> {
        self.0.stop(i, grace).await
    }
    async fn delete(&self, i: &zixiao_core::Instance) -> Result<(), zixiao_core::DriverError> {
        self.0.delete(i).await
    }
    async fn inspect(
        &self,
        i: &zixiao_core::Instance,
    ) -> Result<RuntimeState, zixiao_core::DriverError> {
        self.0.inspect(i).await
    }
    async fn read_log(
        &self,
        i: &zixiao_core::Instance,
        offset: u64,
        max: usize,
    ) -> Result<zixiao_core::LogChunk, zixiao_core::DriverError> {
        self.0.read_log(i, offset, max).await
    }
    fn console(&self) -> Option<&dyn zixiao_core::driver::Console> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl zixiao_core::driver::Console for EchoConsole {
    async fn attach(
        &self,
        _instance: &zixiao_core::Instance,
    ) -> Result<zixiao_core::driver::ConsoleStream, zixiao_core::DriverError> {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (mut read, mut write) = tokio::io::split(ours);
        tokio::spawn(async move {
            let mut buffer = [0u8; 256];
            while let Ok(n) = read.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                let upper = buffer[..n].to_ascii_uppercase();
                if write.write_all(&upper).await.is_err() {
                    break;
                }
            }
        });
        let (output, input) = tokio::io::split(theirs);
        Ok(zixiao_core::driver::ConsoleStream {
            output: Box::new(output),
            input: Box::new(input),
        })
    }
}

#[tokio::test]
async fn a_console_session_crosses_both_hops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("store");
    let local = LocalAgent::new(host()).with_driver(Arc::new(EchoConsole(FakeDriver::new(
        InstanceType::Container,
    ))));
    let registration = local.registration("node-a");
    let (agent_addr, _task) = serve_agent(local).await;
    let remote = RemoteAgent::registered(&NodeRegistration {
        address: agent_addr.to_string(),
        ..registration.clone()
    })
    .expect("remote");
    let controller = Controller::builder(Arc::new(store), Arc::new(PluginScheduler::default()))
        .agent("node-a", Arc::new(remote))
        .build();
    controller
        .register_node(registration)
        .await
        .expect("register");
    let addr = serve_compute(controller.clone()).await;
    let client = zixiao_api::connect(&addr.to_string()).expect("client");
    client
        .create_instance(web(RestartPolicy::Never), Wait::Settled)
        .await
        .expect("create");

    let mut console = client.attach_console("web").await.expect("attach");
    console
        .input
        .write_all(b"hello console")
        .await
        .expect("type");
    console.input.flush().await.expect("flush");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 64];
    while seen.len() < b"HELLO CONSOLE".len() {
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            console.output.read(&mut buffer),
        )
        .await
        .expect("echo in time")
        .expect("read");
        assert!(n > 0, "the console closed early");
        seen.extend_from_slice(&buffer[..n]);
    }
    assert_eq!(seen, b"HELLO CONSOLE");

    let error = client.attach_console("nope").await.expect_err("unknown");
    assert_eq!(error.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_driver_without_a_console_is_unsupported_through_both_hops() {
    let rig = rig().await;
    let addr = serve_compute(rig.controller.clone()).await;
    let client = zixiao_api::connect(&addr.to_string()).expect("client");
    client
        .create_instance(web(RestartPolicy::Never), Wait::Settled)
        .await
        .expect("create");
    let error = client.attach_console("web").await.expect_err("no console");
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{}", error.chain());
    assert!(
        error.chain().contains("no interactive console"),
        "{}",
        error.chain()
    );
}

/// A fake runtime that migrates live: it answers a fixed target and
/// records what it is asked.
#[derive(Debug)]
struct Migrating {
    fake: FakeDriver,
    moved: std::sync::Mutex<Vec<(String, zixiao_core::driver::MigrationTarget)>>,
    aborted: std::sync::Mutex<Vec<String>>,
    /// The bytes it exports, as two disks: its first half and the rest
    /// (each one's digest [`FAKE_SHA256`], not checked here).
    disk: Vec<u8>,
    /// What it imported.
    imported: std::sync::Mutex<Vec<Imported>>,
}

/// The disks [`Migrating`] imported: the sizes announced, the bytes of
/// them all, each one's digest.
type Imported = (Vec<u64>, Vec<u8>, Vec<[u8; 32]>);

fn answered_target() -> zixiao_core::driver::MigrationTarget {
    zixiao_core::driver::MigrationTarget::new(
        "qemu+tls://10.0.0.2/system",
        "10.0.0.2".parse().expect("ip"),
        std::path::Path::new("/var/lib/zixiao/runtime"),
    )
    .expect("a well-formed target")
}

#[async_trait::async_trait]
impl zixiao_core::Driver for Migrating {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Vm
    }
    fn name(&self) -> &str {
        "migrating"
    }
    async fn create(&self, i: &zixiao_core::Instance) -> Result<(), zixiao_core::DriverError> {
        self.fake.create(i).await
    }
    async fn start(&self, i: &zixiao_core::Instance) -> Result<(), zixiao_core::DriverError> {
        self.fake.start(i).await
    }
    async fn stop(
        &self,
        i: &zixiao_core::Instance,
        grace: std::time::Duration,
    ) -> Result<(), zixiao_core::DriverError> {
        self.fake.stop(i, grace).await
    }
    async fn delete(&self, i: &zixiao_core::Instance) -> Result<(), zixiao_core::DriverError> {
        self.fake.delete(i).await
    }
    async fn inspect(
        &self,
        i: &zixiao_core::Instance,
    ) -> Result<RuntimeState, zixiao_core::DriverError> {
        self.fake.inspect(i).await
    }
    async fn read_log(
        &self,
        i: &zixiao_core::Instance,
        offset: u64,
        max: usize,
    ) -> Result<zixiao_core::LogChunk, zixiao_core::DriverError> {
        self.fake.read_log(i, offset, max).await
    }
    fn live_migrate(&self) -> Option<&dyn zixiao_core::driver::LiveMigrate> {
        Some(self)
    }
    fn cold_migrate(&self) -> Option<&dyn zixiao_core::driver::ColdMigrate> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl zixiao_core::driver::LiveMigrate for Migrating {
    async fn prepare_incoming(
        &self,
        _: &zixiao_core::Instance,
    ) -> Result<zixiao_core::driver::MigrationTarget, zixiao_core::DriverError> {
        Ok(answered_target())
    }
    async fn migrate_live(
        &self,
        i: &zixiao_core::Instance,
        target: &zixiao_core::driver::MigrationTarget,
    ) -> Result<zixiao_core::driver::MigrationReport, zixiao_core::DriverError> {
        self.moved
            .lock()
            .expect("lock")
            .push((i.id.clone(), target.clone()));
        Ok(zixiao_core::driver::MigrationReport {
            total: std::time::Duration::from_millis(1500),
            downtime: Some(std::time::Duration::from_millis(40)),
            memory_bytes: Some(1 << 28),
            disk_bytes: None,
            rounds: Some(3),
        })
    }
    async fn abort_incoming(
        &self,
        i: &zixiao_core::Instance,
    ) -> Result<(), zixiao_core::DriverError> {
        self.aborted.lock().expect("lock").push(i.id.clone());
        Ok(())
    }
}

/// The three live-migration calls cross the AgentService: the node reports
/// the capability and the remote driver offers it (a driver without it is
/// offered none); the target's answer and the report arrive as sent; a
/// source moves only an instance whose live migration is recorded; a
/// target from the wire that does not parse (a relative state directory,
/// an address that is no IP) is refused naming the field, before the
/// driver is called.
#[tokio::test]
async fn live_migration_calls_cross_the_agent_service_and_a_bad_target_is_refused() {
    use zixiao_api::pb;

    let migrating = Arc::new(Migrating {
        fake: FakeDriver::new(InstanceType::Vm),
        moved: Default::default(),
        aborted: Default::default(),
        disk: Vec::new(),
        imported: Default::default(),
    });
    let local = LocalAgent::new(host()).with_driver(migrating.clone());
    let registration = local.registration("node-b");
    assert!(registration.drivers[&InstanceType::Vm]
        .capabilities
        .contains(&Capability::LiveMigrate));
    let (addr, _task) = serve_agent(local).await;
    let remote = RemoteAgent::registered(&NodeRegistration {
        address: addr.to_string(),
        ..registration
    })
    .expect("remote");
    let driver = remote.driver(InstanceType::Vm).expect("vm");
    let live = driver.require_live_migrate().expect("offered");
    let mut vm = zixiao_core::Instance::new(
        "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        CreateInstance::new("vm1", InstanceSpec::vm("base")),
        chrono::Utc::now(),
    );
    vm.node = Some("node-a".into());

    let target = live.prepare_incoming(&vm).await.expect("prepare");
    assert_eq!(target, answered_target());
    // A source moves only an instance whose live migration is recorded.
    let error = live
        .migrate_live(&vm, &target)
        .await
        .expect_err("not migrating");
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
    vm.migrate_to = Some("node-b".into());
    let report = live.migrate_live(&vm, &target).await.expect("migrate");
    assert_eq!(report.total, std::time::Duration::from_millis(1500));
    assert_eq!(report.downtime, Some(std::time::Duration::from_millis(40)));
    assert_eq!(report.memory_bytes, Some(1 << 28));
    assert_eq!(report.rounds, Some(3));
    assert_eq!(report.disk_bytes, None);
    assert_eq!(
        *migrating.moved.lock().expect("lock"),
        [(vm.id.clone(), answered_target())]
    );
    live.abort_incoming(&vm).await.expect("abort");
    assert_eq!(*migrating.aborted.lock().expect("lock"), [vm.id.clone()]);

    let mut raw = pb::agent_service_client::AgentServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let good: pb::MigrationTarget = (&answered_target()).into();
    for (bad, field) in [
        (
            pb::MigrationTarget {
                state_dir: "var/lib/zixiao".into(),
                ..good.clone()
            },
            "target.state_dir",
        ),
        (
            pb::MigrationTarget {
                address: "node-b".into(),
                ..good.clone()
            },
            "target.address",
        ),
        (
            pb::MigrationTarget {
                uri: "no scheme".into(),
                ..good.clone()
            },
            "target.uri",
        ),
    ] {
        let status = raw
            .migrate_live(pb::MigrateLiveRequest {
                instance: Some(vm.clone().into()),
                target: Some(bad),
            })
            .await
            .expect_err(field);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    assert_eq!(
        migrating.moved.lock().expect("lock").len(),
        1,
        "no call reached the driver"
    );

    // A node whose driver cannot is offered nothing.
    let rig = rig().await;
    let plain = RemoteAgent::registered(&NodeRegistration {
        address: rig.agent_addr.to_string(),
        ..LocalAgent::new(host())
            .with_driver(Arc::new(FakeDriver::new(InstanceType::Container)))
            .registration("node-a")
    })
    .expect("remote");
    let container = plain.driver(InstanceType::Container).expect("container");
    assert!(container.live_migrate().is_none());
    let error = container.require_live_migrate().err().expect("unsupported");
    assert_eq!(error.kind(), ErrorKind::Unsupported);
}

/// The digest the fake sends after its disk.
const FAKE_SHA256: [u8; 32] = [7; 32];

#[async_trait::async_trait]
impl zixiao_core::driver::ColdMigrate for Migrating {
    async fn export_disk(
        &self,
        _: &zixiao_core::Instance,
    ) -> Result<zixiao_core::driver::DiskExport, zixiao_core::DriverError> {
        use futures::StreamExt;
        use zixiao_core::driver::{DiskChunk, MAX_DISK_CHUNK};
        let (first, second) = self.disk.split_at(self.disk.len() / 2);
        let mut pieces = Vec::new();
        for disk in [first, second] {
            pieces.extend(
                disk.chunks(MAX_DISK_CHUNK)
                    .map(|piece| Ok(DiskChunk::Data(piece.to_vec()))),
            );
            pieces.push(Ok(DiskChunk::End {
                sha256: FAKE_SHA256,
            }));
        }
        Ok(zixiao_core::driver::DiskExport {
            sizes: vec![first.len() as u64, second.len() as u64],
            chunks: futures::stream::iter(pieces).boxed(),
        })
    }
    async fn import_disk(
        &self,
        _: &zixiao_core::Instance,
        sizes: &[u64],
        mut chunks: zixiao_core::driver::DiskChunks,
    ) -> Result<u64, zixiao_core::DriverError> {
        use futures::StreamExt;
        let (mut data, mut digests) = (Vec::new(), Vec::new());
        while let Some(chunk) = chunks.next().await {
            match chunk? {
                zixiao_core::driver::DiskChunk::Data(piece) => data.extend(piece),
                zixiao_core::driver::DiskChunk::End { sha256 } => digests.push(sha256),
            }
        }
        let written = data.len() as u64;
        if digests.len() != sizes.len() {
            return Err(zixiao_core::DriverError::FailedPrecondition(
                "not a digest per disk".into(),
            ));
        }
        self.imported
            .lock()
            .expect("lock")
            .push((sizes.to_vec(), data, digests));
        Ok(written)
    }
    async fn abort_import(
        &self,
        _: &zixiao_core::Instance,
    ) -> Result<(), zixiao_core::DriverError> {
        Ok(())
    }
}

/// A cold migration's disks cross the AgentService both ways: exported
/// from one node's agent in pieces (two disks, each with its size and its
/// digest) and imported into another's as a server relays them, byte for
/// byte with their digests; the node reports
/// the capability; a source hands out the disk only of an instance whose
/// migration is recorded, and an import that does not begin with the
/// disk's size, or carries more sizes than an instance has disks, is
/// refused before the driver is called.
#[tokio::test]
async fn a_cold_migrations_disk_crosses_the_agent_service_piece_by_piece() {
    use zixiao_api::pb;

    let disk: Vec<u8> = (0..(5 << 19) + 3).map(|i: u32| (i % 251) as u8).collect();
    let copying = Arc::new(Migrating {
        fake: FakeDriver::new(InstanceType::Vm),
        moved: Default::default(),
        aborted: Default::default(),
        disk: disk.clone(),
        imported: Default::default(),
    });
    let local = LocalAgent::new(host()).with_driver(copying.clone());
    let registration = local.registration("node-a");
    assert!(registration.drivers[&InstanceType::Vm]
        .capabilities
        .contains(&Capability::ColdMigrate));
    let (addr, _task) = serve_agent(local).await;
    let remote = RemoteAgent::registered(&NodeRegistration {
        address: addr.to_string(),
        ..registration
    })
    .expect("remote");
    let driver = remote.driver(InstanceType::Vm).expect("vm");
    let cold = driver.require_cold_migrate().expect("offered");
    let mut vm = zixiao_core::Instance::new(
        "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        CreateInstance::new("vm1", InstanceSpec::vm("base")),
        chrono::Utc::now(),
    );
    vm.node = Some("node-a".into());
    let error = cold.export_disk(&vm).await.expect_err("not migrating");
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");

    vm.migrate_to = Some("node-b".into());
    let export = cold.export_disk(&vm).await.expect("export");
    let half = disk.len() as u64 / 2;
    assert_eq!(export.sizes, [half, disk.len() as u64 - half]);
    let written = cold
        .import_disk(&vm, &export.sizes, export.chunks)
        .await
        .expect("import");
    assert_eq!(written, disk.len() as u64);
    let imported = copying.imported.lock().expect("lock").clone();
    assert_eq!(imported.len(), 1);
    let (sizes, data, digests) = &imported[0];
    assert_eq!(*sizes, [half, disk.len() as u64 - half]);
    assert!(*data == disk, "the disks changed on their way");
    assert_eq!(*digests, [FAKE_SHA256; 2]);

    let mut raw = pb::agent_service_client::AgentServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let sizeless = pb::ImportDiskRequest {
        instance: Some(vm.clone().into()),
        piece: Some(pb::DiskPiece {
            piece: Some(pb::disk_piece::Piece::Data(vec![1, 2, 3])),
        }),
    };
    let status = raw
        .import_disk(futures::stream::iter([sizeless]))
        .await
        .expect_err("no size");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(copying.imported.lock().expect("lock").len(), 1);
    // Nor one with more sizes than an instance has disks.
    let size = |instance: Option<pb::Instance>| pb::ImportDiskRequest {
        instance,
        piece: Some(pb::DiskPiece {
            piece: Some(pb::disk_piece::Piece::Size(1)),
        }),
    };
    let endless = std::iter::once(size(Some(vm.clone().into())))
        .chain(std::iter::repeat_with(move || size(None)).take(1000));
    let status = raw
        .import_disk(futures::stream::iter(endless))
        .await
        .expect_err("too many sizes");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("disk sizes"), "{status:?}");
    assert_eq!(copying.imported.lock().expect("lock").len(), 1);
}
