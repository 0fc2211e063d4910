//! A node runtime's capabilities (snapshots, pause and resume, images,
//! inventory) through both hops: Client → the user services → the
//! controller → RemoteDriver → AgentService → the node's driver. The node holds a
//! hand-written fake (the layer under test is the protocol; the runtimes'
//! snapshots and pauses have their own tests).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use zixiao_api::agent::{AgentServer, Gate};
use zixiao_api::remote::RemoteAgent;
use zixiao_core::driver::{
    ImageInfo, Images, ImportProgress, Inventory, PullOptions, PullProgress, RegistryCredentials,
    SnapshotInfo, Snapshots,
};
use zixiao_core::host::HostFacts;
use zixiao_core::model::SnapshotName;
use zixiao_core::Api;
use zixiao_core::{
    Client, Controller, CreateInstance, Driver, DriverError, ErrorKind, Instance, InstanceSpec,
    InstanceStatus, InstanceType, LocalAgent, LogChunk, NodeAgent, NodeRegistration, Resources,
    RuntimeState, Wait,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

/// A fake runtime that keeps snapshots per instance and records reverts.
#[derive(Debug, Default)]
struct Snapshotting {
    fake: Option<FakeDriver>,
    taken: Mutex<BTreeMap<String, Vec<SnapshotInfo>>>,
    reverted: Mutex<Vec<(String, String)>>,
}

impl Snapshotting {
    fn fake(&self) -> &FakeDriver {
        self.fake.as_ref().expect("a fake driver")
    }
}

#[async_trait]
impl Driver for Snapshotting {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Vm
    }
    fn name(&self) -> &str {
        "snapshotting"
    }
    async fn create(&self, i: &Instance) -> Result<(), DriverError> {
        self.fake().create(i).await
    }
    async fn start(&self, i: &Instance) -> Result<(), DriverError> {
        self.fake().start(i).await
    }
    async fn stop(&self, i: &Instance, grace: Duration) -> Result<(), DriverError> {
        self.fake().stop(i, grace).await
    }
    async fn delete(&self, i: &Instance) -> Result<(), DriverError> {
        self.fake().delete(i).await
    }
    async fn inspect(&self, i: &Instance) -> Result<RuntimeState, DriverError> {
        self.fake().inspect(i).await
    }
    async fn read_log(&self, i: &Instance, o: u64, m: usize) -> Result<LogChunk, DriverError> {
        self.fake().read_log(i, o, m).await
    }
    fn snapshots(&self) -> Option<&dyn Snapshots> {
        Some(self)
    }
}

#[async_trait]
impl Snapshots for Snapshotting {
    async fn create(&self, i: &Instance, name: &SnapshotName) -> Result<SnapshotInfo, DriverError> {
        let running = self.fake().state_of(&i.id) == RuntimeState::Running;
        let info = SnapshotInfo {
            name: name.as_str().to_owned(),
            created_at: Some(chrono::Utc::now()),
            includes_memory: running,
            current: true,
        };
        let mut taken = self.taken.lock().expect("lock");
        let list = taken.entry(i.id.clone()).or_default();
        list.iter_mut().for_each(|s| s.current = false);
        list.push(info.clone());
        Ok(info)
    }
    async fn list(&self, i: &Instance) -> Result<Vec<SnapshotInfo>, DriverError> {
        Ok(self
            .taken
            .lock()
            .expect("lock")
            .get(&i.id)
            .cloned()
            .unwrap_or_default())
    }
    async fn revert(&self, i: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        let known = self
            .taken
            .lock()
            .expect("lock")
            .get(&i.id)
            .is_some_and(|l| l.iter().any(|s| s.name == name.as_str()));
        if !known {
            return Err(DriverError::NotFound(format!(
                "snapshot `{name}` of instance `{}`",
                i.name
            )));
        }
        self.reverted
            .lock()
            .expect("lock")
            .push((i.id.clone(), name.as_str().to_owned()));
        Ok(())
    }
    async fn delete(&self, i: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        if let Some(list) = self.taken.lock().expect("lock").get_mut(&i.id) {
            list.retain(|s| s.name != name.as_str());
        }
        Ok(())
    }
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

/// Serves `router` on a loopback port of its own.
async fn serve(router: tonic::transport::server::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    addr
}

/// A client of a server whose only node holds `driver`, reached over gRPC.
async fn rig(driver: Arc<dyn Driver>) -> (Client, Controller, tempfile::TempDir) {
    rig_gated(driver, None).await
}

/// As `rig`, with the node's agent refusing what `gate` refuses (as a
/// fenced node's agent does).
async fn rig_gated(
    driver: Arc<dyn Driver>,
    gate: Option<Gate>,
) -> (Client, Controller, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("store");
    let local = LocalAgent::new(host()).with_driver(driver);
    let registration = local.registration("node-a");
    let mut agent = AgentServer::new(Arc::new(local));
    if let Some(gate) = gate {
        agent = agent.with_gate(gate);
    }
    let agent_addr =
        serve(tonic::transport::Server::builder().add_service(agent.into_service())).await;
    let registration = NodeRegistration {
        address: agent_addr.to_string(),
        ..registration
    };
    let remote = RemoteAgent::registered(&registration).expect("remote");
    let controller = Controller::builder(Arc::new(store), Arc::new(PluginScheduler::default()))
        .agent("node-a", Arc::new(remote))
        .build();
    controller
        .register_node(registration)
        .await
        .expect("register");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = Arc::new(controller.clone());
    tokio::spawn(zixiao_api::server::serve(
        api,
        listener,
        std::future::pending(),
    ));
    let client = zixiao_api::connect(&addr.to_string()).expect("client");
    (client, controller, dir)
}

/// A server whose node runs `Snapshotting`, and VM `vm1` running there.
async fn running_vm1() -> (Arc<Snapshotting>, Client, tempfile::TempDir, Instance) {
    let driver = Arc::new(Snapshotting {
        fake: Some(FakeDriver::new(InstanceType::Vm)),
        ..Default::default()
    });
    let (client, _controller, dir) = rig(driver.clone()).await;
    let vm1 = client
        .create_instance(
            CreateInstance::new("vm1", InstanceSpec::vm("debian")),
            Wait::Settled,
        )
        .await
        .expect("create");
    (driver, client, dir, vm1)
}

#[tokio::test]
async fn snapshots_are_taken_listed_reverted_and_deleted_on_the_node() {
    let (driver, client, _dir, vm1) = running_vm1().await;

    let s1 = client.create_snapshot("vm1", "s1").await.expect("take");
    assert_eq!(s1.name, "s1");
    assert!(s1.includes_memory, "taken while running");
    client.create_snapshot("vm1", "s2").await.expect("take");
    let listed = client.list_snapshots("vm1").await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.name.as_str(), s.current))
            .collect::<Vec<_>>(),
        [("s1", false), ("s2", true)]
    );
    assert_eq!(
        listed,
        driver.taken.lock().expect("lock")[&vm1.id],
        "what the node's runtime holds"
    );

    client.revert_snapshot("vm1", "s1").await.expect("revert");
    assert_eq!(
        *driver.reverted.lock().expect("lock"),
        [(vm1.id.clone(), "s1".to_owned())]
    );
    let missing = client
        .revert_snapshot("vm1", "nope")
        .await
        .expect_err("no such snapshot");
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert!(
        missing.chain().contains("snapshot `nope`"),
        "{}",
        missing.chain()
    );

    // Names that are no file name never reach the runtime: refused where
    // they come in, naming the field, whichever call carries them.
    for name in ["", "../x", ".hidden", "a/b"] {
        for bad in [
            client.create_snapshot("vm1", name).await.expect_err(name),
            client.revert_snapshot("vm1", name).await.expect_err(name),
            client.delete_snapshot("vm1", name).await.expect_err(name),
        ] {
            assert_eq!(bad.kind(), ErrorKind::InvalidArgument, "{}", bad.chain());
            assert!(bad.to_string().starts_with("invalid snapshot:"), "{bad}");
        }
    }

    client.delete_snapshot("vm1", "s2").await.expect("delete");
    let left = client.list_snapshots("vm1").await.expect("list");
    assert_eq!(
        left.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["s1"]
    );

    let unknown = client.list_snapshots("nope").await.expect_err("unknown");
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_runtime_without_snapshots_is_unsupported_through_both_hops() {
    let (client, _controller, _dir) = rig(Arc::new(FakeDriver::new(InstanceType::Container))).await;
    client
        .create_instance(
            CreateInstance::new("web", InstanceSpec::container("busybox")),
            Wait::Settled,
        )
        .await
        .expect("create");
    let error = client
        .create_snapshot("web", "s1")
        .await
        .expect_err("no snapshots");
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{}", error.chain());
    assert!(
        error.chain().contains("fake driver cannot take snapshots"),
        "{}",
        error.chain()
    );
}

#[tokio::test]
async fn pause_and_resume_freeze_and_thaw_the_instance_on_its_node() {
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    let fenced = Arc::new(AtomicBool::new(false));
    let gate: Gate = {
        let fenced = fenced.clone();
        Arc::new(move || {
            if fenced.load(Ordering::SeqCst) {
                return Err(DriverError::FailedPrecondition("node-a is fenced".into()));
            }
            Ok(())
        })
    };
    let (client, _controller, _dir) = rig_gated(driver.clone(), Some(gate)).await;
    let web = client
        .create_instance(
            CreateInstance::new("web", InstanceSpec::container("busybox")),
            Wait::Settled,
        )
        .await
        .expect("create");

    let paused = client.pause_instance("web").await.expect("pause");
    assert_eq!(paused.status, InstanceStatus::Paused);
    assert_eq!(
        driver.state_of(&web.id),
        RuntimeState::Paused,
        "frozen on the node"
    );
    let again = client
        .pause_instance("web")
        .await
        .expect("pause is idempotent");
    assert_eq!(again.status, InstanceStatus::Paused);

    // A fenced node does not thaw: its instance may run elsewhere by now.
    fenced.store(true, Ordering::SeqCst);
    let refused = client.resume_instance("web").await.expect_err("fenced");
    assert_eq!(
        refused.kind(),
        ErrorKind::FailedPrecondition,
        "{}",
        refused.chain()
    );
    assert!(refused.chain().contains("fenced"), "{}", refused.chain());
    assert_eq!(driver.state_of(&web.id), RuntimeState::Paused);
    let stored = client.get_instance("web").await.expect("get");
    assert_eq!(stored.status, InstanceStatus::Paused, "nothing changed");
    fenced.store(false, Ordering::SeqCst);

    let resumed = client.resume_instance("web").await.expect("resume");
    assert_eq!(resumed.status, InstanceStatus::Running);
    assert_eq!(
        driver.state_of(&web.id),
        RuntimeState::Running,
        "thawed on the node"
    );

    client
        .stop_instance("web", Wait::Settled)
        .await
        .expect("stop");
    let error = client.pause_instance("web").await.expect_err("stopped");
    assert_eq!(
        error.kind(),
        ErrorKind::FailedPrecondition,
        "{}",
        error.chain()
    );
    assert!(
        error.chain().contains("instance `web`"),
        "{}",
        error.chain()
    );
    assert!(
        matches!(driver.state_of(&web.id), RuntimeState::Exited { .. }),
        "still stopped on the node"
    );

    let unknown = client.resume_instance("nope").await.expect_err("unknown");
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_runtime_without_pause_is_unsupported_through_both_hops() {
    let (driver, client, _dir, vm1) = running_vm1().await;
    let error = client.pause_instance("vm1").await.expect_err("no pause");
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{}", error.chain());
    assert!(
        error.chain().contains("snapshotting driver cannot pause"),
        "{}",
        error.chain()
    );
    let after = client.get_instance("vm1").await.expect("get");
    assert_eq!(after.status, InstanceStatus::Running, "nothing changed");
    assert_eq!(driver.fake().state_of(&vm1.id), RuntimeState::Running);
}

/// A fake runtime that keeps images and lists what it holds.
#[derive(Debug)]
struct Stocked {
    fake: FakeDriver,
    images: Mutex<Vec<ImageInfo>>,
    held: Mutex<BTreeSet<String>>,
    /// The options of the last pull, as they reached the node.
    pulled_with: Mutex<Option<PullOptions>>,
}

#[async_trait]
impl Driver for Stocked {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Container
    }
    fn name(&self) -> &str {
        "stocked"
    }
    async fn create(&self, i: &Instance) -> Result<(), DriverError> {
        self.fake.create(i).await
    }
    async fn start(&self, i: &Instance) -> Result<(), DriverError> {
        self.fake.start(i).await
    }
    async fn stop(&self, i: &Instance, grace: Duration) -> Result<(), DriverError> {
        self.fake.stop(i, grace).await
    }
    async fn delete(&self, i: &Instance) -> Result<(), DriverError> {
        self.fake.delete(i).await
    }
    async fn inspect(&self, i: &Instance) -> Result<RuntimeState, DriverError> {
        self.fake.inspect(i).await
    }
    async fn read_log(&self, i: &Instance, o: u64, m: usize) -> Result<LogChunk, DriverError> {
        self.fake.read_log(i, o, m).await
    }
    fn images(&self) -> Option<&dyn Images> {
        Some(self)
    }
    fn inventory(&self) -> Option<&dyn Inventory> {
        Some(self)
    }
}

#[async_trait]
impl Images for Stocked {
    async fn import(
        &self,
        _archive: &std::path::Path,
        _name: Option<&zixiao_core::model::ImageName>,
        _progress: &(dyn Fn(ImportProgress) + Send + Sync),
    ) -> Result<Vec<ImageInfo>, DriverError> {
        Err(DriverError::Unsupported("not in this test".into()))
    }
    /// Only `busybox` repositories exist; each pull reports one blob.
    async fn pull(
        &self,
        reference: &zixiao_core::ImageRef,
        options: &PullOptions,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<ImageInfo, DriverError> {
        *self.pulled_with.lock().expect("lock") = Some(options.clone());
        if !reference.repository().ends_with("busybox") {
            return Err(DriverError::NotFound(format!("image `{reference}`")));
        }
        let digest = "sha256:0456".to_owned();
        progress(PullProgress::Resolved {
            digest: digest.clone(),
            blobs: 1,
            bytes: 4096,
        });
        progress(PullProgress::Fetched {
            digest: digest.clone(),
            size: 4096,
            index: 1,
            count: 1,
        });
        progress(PullProgress::Unpacking);
        let image = ImageInfo::container(reference.to_string(), digest, 4096);
        self.images.lock().expect("lock").push(image.clone());
        Ok(image)
    }
    async fn list(&self) -> Result<Vec<ImageInfo>, DriverError> {
        Ok(self.images.lock().expect("lock").clone())
    }
    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        let mut images = self.images.lock().expect("lock");
        let before = images.len();
        images.retain(|i| i.name != name);
        if images.len() == before {
            return Err(DriverError::NotFound(format!("image `{name}`")));
        }
        Ok(())
    }
}

#[async_trait]
impl Inventory for Stocked {
    async fn instance_ids(&self) -> Result<BTreeSet<String>, DriverError> {
        Ok(self.held.lock().expect("lock").clone())
    }
    async fn remove_orphan(&self, id: &str) -> Result<(), DriverError> {
        self.held.lock().expect("lock").remove(id);
        Ok(())
    }
}

/// What the node's runtime holds of an instance it has no record of.
const ORPHAN: &str = "5f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f";

#[tokio::test]
async fn images_and_inventory_are_reached_on_the_node_through_its_agent() {
    let busybox = ImageInfo::container(
        "docker.io/library/busybox:latest".into(),
        "sha256:0123".into(),
        2048,
    );
    let driver = Arc::new(Stocked {
        fake: FakeDriver::new(InstanceType::Container),
        images: Mutex::new(vec![busybox.clone()]),
        held: Mutex::new([ORPHAN.to_owned()].into()),
        pulled_with: Mutex::new(None),
    });
    let (client, controller, _dir) = rig(driver.clone()).await;

    // Through the server: the controller's image calls reach the node.
    let listed = client
        .list_images(None, InstanceType::Container)
        .await
        .expect("list");
    assert_eq!(listed, std::slice::from_ref(&busybox));
    let missing = client
        .remove_image(Some("node-a"), InstanceType::Container, "nope")
        .await
        .expect_err("no such image");
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{}", missing.chain());
    client
        .remove_image(Some("node-a"), InstanceType::Container, &busybox.name)
        .await
        .expect("remove");
    assert!(driver.images.lock().expect("lock").is_empty());
    // A pull runs on the node, its progress and options crossing both hops.
    let options = PullOptions {
        credentials: Some(RegistryCredentials {
            username: "me".into(),
            password: "secret".into(),
        }),
        insecure_registries: vec!["reg.lan:5000".into()],
        registry_cas: vec![zixiao_core::driver::RegistryCa::try_from(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned(),
        )
        .expect("a CA")],
        platform: Some(
            zixiao_core::driver::ImagePlatform::try_from("linux/arm64/v8").expect("a platform"),
        ),
        // A kind sends the pull to the node's image store instead of the
        // container runtime (cli/tests/cluster.rs pulls artifacts through
        // an agent); its wire form is checked with the other options'.
        kind: None,
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let reference = zixiao_core::ImageRef::try_from("reg.lan:5000/busybox:1").expect("ref");
    let pulled = client
        .pull_image(
            Some("node-a"),
            InstanceType::Container,
            reference,
            options.clone(),
            zixiao_core::api::Progress::new(move |p| seen.lock().expect("lock").push(p)),
        )
        .await
        .expect("pull");
    assert_eq!(pulled.name, "reg.lan:5000/busybox:1");
    assert_eq!(
        events.lock().expect("lock").len(),
        3,
        "resolved, fetched, unpacking"
    );
    assert_eq!(
        driver.pulled_with.lock().expect("lock").as_ref(),
        Some(&options)
    );
    assert_eq!(driver.images.lock().expect("lock").clone(), [pulled]);
    let unknown = zixiao_core::ImageRef::try_from("reg.lan:5000/nothing:1").expect("ref");
    let missing = client
        .pull_image(
            None,
            InstanceType::Container,
            unknown,
            PullOptions::default(),
            Default::default(),
        )
        .await
        .expect_err("no such image");
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{}", missing.chain());
    driver.images.lock().expect("lock").clear();
    // The archive of an import is a file of the server's machine.
    let import = controller
        .call(zixiao_core::api::Request::ImportImages {
            node: None,
            instance_type: InstanceType::Container,
            archive: "/tmp/busybox.tar".into(),
            import_as: zixiao_core::api::ImportAs::Container { name: None },
            progress: Default::default(),
        })
        .await
        .expect_err("not the node's file");
    assert_eq!(import.kind(), ErrorKind::Unsupported, "{}", import.chain());

    // The node's inventory, as a server's orphan sweep would see it.
    let node = controller.get_node("node-a").await.expect("node");
    let remote = RemoteAgent::new(&node).expect("remote");
    let runtime = remote.driver(InstanceType::Container).expect("driver");
    let inventory = runtime.require_inventory().expect("an inventory");
    assert_eq!(
        inventory.instance_ids().await.expect("ids"),
        [ORPHAN.to_owned()].into()
    );
    inventory.remove_orphan(ORPHAN).await.expect("remove");
    // An orphan is named by an instance id (a UUID), never by a path.
    let refused = inventory
        .remove_orphan("../..")
        .await
        .expect_err("not an instance id");
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{refused}");
    assert!(driver.held.lock().expect("lock").is_empty());
}
