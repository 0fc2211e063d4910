//! Integration tests of the container driver against a real containerd
//! (`scripts/services/containerd.sh start` prints the variables they read).
//! Each test works in its own containerd namespace, so they run in parallel
//! on one daemon, and each checks that what it deleted left nothing behind.

#![cfg(feature = "containerd")]

mod bad_input;
mod controller;
mod driver;
mod images;
mod logs;
mod network;
mod overlay;
mod overlay_nodes;
mod publish;
mod pull;
mod recovery;
mod resize;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{Kind, ListSnapshotsRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    ListContainersRequest, ListRequest, ListStatusesRequest, ListTasksRequest,
};
use containerd_client::tonic::Request;
use zixiao_core::driver::Images;
use zixiao_core::{Driver, Instance, InstanceSpec, RuntimeState};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};
use zixiao_testing::wait::{runtime_endpoint, wait_until};

/// How long a container may take to reach a state: generous, for a 2-core
/// CI machine where 15 tests start containers at once.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One test's view of the shared containerd: its own namespace and state dir.
pub(crate) struct Fixture {
    pub(crate) driver: Arc<ContainerdDriver>,
    pub(crate) socket: PathBuf,
    pub(crate) namespace: String,
    pub(crate) busybox: PathBuf,
    pub(crate) dir: tempfile::TempDir,
}

/// The fixture for test `name`, with busybox imported, or `None` (skip)
/// when no containerd is configured.
pub(crate) async fn fixture(name: &str) -> Option<Fixture> {
    let fx = empty_fixture(name).await?;
    fx.driver
        .import(&fx.busybox, None, &|_| {})
        .await
        .expect("import busybox");
    Some(fx)
}

/// The fixture for test `name` with no image in its namespace, or `None`
/// (skip) when no containerd is configured.
pub(crate) async fn empty_fixture(name: &str) -> Option<Fixture> {
    fixture_with(name, |options| options).await
}

/// [`empty_fixture`], its driver's options as `adjust` makes them.
pub(crate) async fn fixture_with(
    name: &str,
    adjust: impl FnOnce(ContainerdOptions) -> ContainerdOptions,
) -> Option<Fixture> {
    let socket = runtime_endpoint("ZIXIAO_TEST_CONTAINERD_SOCKET", "containerd")?;
    let busybox = runtime_endpoint("ZIXIAO_TEST_BUSYBOX_OCI", "the busybox OCI archive")?;
    let namespace = format!(
        "zixiao-test-{}-{}",
        name.replace('_', "-"),
        std::process::id()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let options = adjust(ContainerdOptions::new(&socket, dir.path()).with_namespace(&namespace));
    let driver = ContainerdDriver::connect(options)
        .await
        .expect("connect to containerd");
    Some(Fixture {
        driver: Arc::new(driver),
        socket: PathBuf::from(socket),
        namespace,
        busybox: PathBuf::from(busybox),
        dir,
    })
}

/// An instance as the controller would hand it to the driver.
pub(crate) fn instance(name: &str, spec: InstanceSpec) -> Instance {
    zixiao_testing::fake_driver::placed_instance(name, spec)
}

/// A busybox container running `command`.
pub(crate) fn busybox(command: &[&str]) -> InstanceSpec {
    InstanceSpec::container("busybox").with_command(command.iter().copied())
}

impl Fixture {
    async fn client(&self) -> containerd_client::Client {
        containerd_client::Client::from_path(&self.socket)
            .await
            .expect("client")
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let namespace = self.namespace.parse().expect("ascii namespace");
        request
            .metadata_mut()
            .insert("containerd-namespace", namespace);
        request
    }

    /// Everything in the namespace that an instance or a failed call could
    /// leave: containers, tasks, active snapshots, leases, unfinished ingests.
    pub(crate) async fn leftovers(&self) -> Vec<String> {
        let client = self.client().await;
        let mut found = Vec::new();
        let containers = ContainersClient::new(client.channel())
            .list(self.request(ListContainersRequest { filters: vec![] }))
            .await
            .expect("list containers")
            .into_inner()
            .containers;
        found.extend(
            containers
                .into_iter()
                .map(|c| format!("container {}", c.id)),
        );
        let tasks = TasksClient::new(client.channel())
            .list(self.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .expect("list tasks")
            .into_inner()
            .tasks;
        found.extend(tasks.into_iter().map(|t| format!("task {}", t.id)));
        let mut snapshots = SnapshotsClient::new(client.channel())
            .list(self.request(ListSnapshotsRequest {
                snapshotter: "overlayfs".into(),
                filters: vec![],
            }))
            .await
            .expect("list snapshots")
            .into_inner();
        while let Some(page) = snapshots.message().await.expect("snapshots") {
            found.extend(
                page.info
                    .into_iter()
                    .filter(|s| s.kind != Kind::Committed as i32)
                    .map(|s| format!("active snapshot {}", s.name)),
            );
        }
        let leases = LeasesClient::new(client.channel())
            .list(self.request(ListRequest { filters: vec![] }))
            .await
            .expect("list leases")
            .into_inner()
            .leases;
        found.extend(leases.into_iter().map(|l| format!("lease {}", l.id)));
        let ingests = ContentClient::new(client.channel())
            .list_statuses(self.request(ListStatusesRequest { filters: vec![] }))
            .await
            .expect("list ingests")
            .into_inner()
            .statuses;
        found.extend(ingests.into_iter().map(|s| format!("ingest {}", s.r#ref)));
        found
    }

    /// Waits until `instance` reaches a state `matches` accepts, returning it.
    pub(crate) async fn wait_state<F>(
        &self,
        instance: &Instance,
        what: &str,
        matches: F,
    ) -> RuntimeState
    where
        F: Fn(&RuntimeState) -> bool,
    {
        wait_until(what, TIMEOUT, || async {
            let state = self.driver.inspect(instance).await.expect("inspect");
            matches(&state).then_some(state)
        })
        .await
    }

    /// The names of the images in the namespace, in order.
    pub(crate) async fn image_names(&self) -> Vec<String> {
        let images = self.driver.list().await.expect("list images");
        images.into_iter().map(|i| i.name).collect()
    }

    /// Reads the whole log of `instance` so far.
    pub(crate) async fn log(&self, instance: &Instance) -> String {
        let chunk = self
            .driver
            .read_log(instance, 0, 1 << 20)
            .await
            .expect("read log");
        String::from_utf8_lossy(&chunk.data).into_owned()
    }

    /// Waits until the log of `instance` is `want` once its lines are
    /// sorted: the shim copies stdout and stderr separately, and may finish
    /// copying a moment after the task's exit is reported.
    pub(crate) async fn wait_log_lines(&self, instance: &Instance, want: &[&str]) {
        self.wait_log(instance, &format!("log lines {want:?}"), |lines| {
            lines == want
        })
        .await;
    }

    /// Waits until the sorted lines of the log of `instance` satisfy `done`,
    /// and fails saying what the log held when they never do.
    pub(crate) async fn wait_log(
        &self,
        instance: &Instance,
        what: &str,
        done: impl Fn(&[String]) -> bool,
    ) {
        let last = std::sync::Mutex::new(String::new());
        let waited = tokio::time::timeout(
            TIMEOUT,
            wait_until("the log to be complete", TIMEOUT * 2, || async {
                let log = self.log(instance).await;
                let mut lines: Vec<String> = log.lines().map(str::to_owned).collect();
                lines.sort();
                *last.lock().unwrap_or_else(|p| p.into_inner()) = log;
                done(&lines).then_some(())
            }),
        )
        .await;
        // Say what the log held, so a failure shows what went wrong.
        assert!(
            waited.is_ok(),
            "timed out after {TIMEOUT:?} waiting for {what}; the log holds {:?}",
            last.lock().unwrap_or_else(|p| p.into_inner())
        );
    }

    /// Deletes every container and image of the namespace.
    pub(crate) async fn finish(self) {
        let client = self.client().await;
        let containers = ContainersClient::new(client.channel())
            .list(self.request(ListContainersRequest { filters: vec![] }))
            .await
            .expect("list containers")
            .into_inner()
            .containers;
        for c in containers {
            let mut leftover = instance("leftover", busybox(&["true"]));
            leftover.id = c.id;
            self.driver
                .delete(&leftover)
                .await
                .expect("delete leftover container");
        }
        for image in self.driver.list().await.expect("list images") {
            self.driver.remove(&image.name).await.expect("remove image");
        }
        let left = self.leftovers().await;
        assert!(left.is_empty(), "left behind: {left:?}");
        let delete = containerd_client::services::v1::DeleteNamespaceRequest {
            name: self.namespace.clone(),
        };
        let deleted = containerd_client::services::v1::namespaces_client::NamespacesClient::new(
            client.channel(),
        )
        .delete(delete)
        .await;
        // A test that stored nothing never made its namespace.
        if let Err(status) = deleted {
            assert_eq!(
                status.code(),
                containerd_client::tonic::Code::NotFound,
                "delete the test's namespace: {status}"
            );
        }
        // runc removes each container's cgroup but not the namespace's parent.
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(hierarchy.path().join(&self.namespace));
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.namespace));
    }
}
