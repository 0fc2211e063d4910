//! Idempotency and recovery, counted from containerd itself: a create or
//! start made twice leaves one container and one task; what a create cut
//! off after its snapshot (a lease holding the snapshot, no container) and
//! a start cut off after its task create (a task never started) leave is
//! taken up by the next create and start; the inventory lists what the
//! namespace holds and `remove_orphan` removes it knowing only the id, and
//! refuses ids that are not instance ids without touching anything.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest, CreateTaskRequest, DeleteContainerRequest,
    ListContainersRequest, ListTasksRequest, Resource,
};
use containerd_client::types::v1::Status as TaskStatus;
use zixiao_core::driver::Inventory;
use zixiao_core::{Driver, ErrorKind, Instance, RuntimeState};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};

use super::{busybox, fixture, instance, Fixture};

/// The label a create's lease carries: the instance it works for.
const INSTANCE_ID_LABEL: &str = "zixiao.io/instance-id";

impl Fixture {
    /// The containers of the namespace whose id is `id`.
    async fn containers_of(&self, id: &str) -> usize {
        let client = self.client().await;
        ContainersClient::new(client.channel())
            .list(self.request(ListContainersRequest { filters: vec![] }))
            .await
            .expect("list containers")
            .into_inner()
            .containers
            .iter()
            .filter(|c| c.id == id)
            .count()
    }

    /// The statuses of the namespace's tasks of container `id`.
    async fn tasks_of(&self, id: &str) -> Vec<TaskStatus> {
        let client = self.client().await;
        TasksClient::new(client.channel())
            .list(self.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .expect("list tasks")
            .into_inner()
            .tasks
            .iter()
            .filter(|t| t.id == id)
            .map(|t| TaskStatus::try_from(t.status).unwrap_or(TaskStatus::Unknown))
            .collect()
    }

    /// Everything the namespace holds that names `id` (see `leftovers`).
    async fn leftovers_of(&self, id: &str) -> Vec<String> {
        let mut left: Vec<String> = self
            .leftovers()
            .await
            .into_iter()
            .filter(|l| l.ends_with(id))
            .collect();
        let client = self.client().await;
        let leases = LeasesClient::new(client.channel())
            .list(self.request(containerd_client::services::v1::ListRequest {
                filters: vec![format!("labels.\"{INSTANCE_ID_LABEL}\"=={id}")],
            }))
            .await
            .expect("list leases")
            .into_inner()
            .leases;
        left.extend(leases.into_iter().map(|l| format!("lease {}", l.id)));
        left
    }

    /// Turns `created` into what a create cut off after preparing its
    /// rootfs leaves: a lease labelled with the instance's id holding the
    /// snapshot, the instance's directory, and no container.
    async fn cut_after_snapshot(&self, created: &Instance) {
        let client = self.client().await;
        let lease = format!("zixiao-create-cut-{}", std::process::id());
        let expiry = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        LeasesClient::new(client.channel())
            .create(
                self.request(CreateRequest {
                    id: lease.clone(),
                    labels: [
                        ("containerd.io/gc.expire".to_owned(), expiry),
                        (INSTANCE_ID_LABEL.to_owned(), created.id.clone()),
                    ]
                    .into(),
                }),
            )
            .await
            .expect("take a lease");
        LeasesClient::new(client.channel())
            .add_resource(self.request(AddResourceRequest {
                id: lease,
                resource: Some(Resource {
                    id: created.id.clone(),
                    r#type: "snapshots/overlayfs".to_owned(),
                }),
            }))
            .await
            .expect("hold the snapshot");
        ContainersClient::new(client.channel())
            .delete(self.request(DeleteContainerRequest {
                id: created.id.clone(),
            }))
            .await
            .expect("delete the container record");
    }

    /// Creates the task of `created` without starting it, as a start cut
    /// off between its task create and its task start leaves it.
    async fn cut_after_task_create(&self, created: &Instance) {
        let client = self.client().await;
        let mounts = SnapshotsClient::new(client.channel())
            .mounts(self.request(MountsRequest {
                snapshotter: "overlayfs".to_owned(),
                key: created.id.clone(),
            }))
            .await
            .expect("mounts")
            .into_inner()
            .mounts;
        let log = self.driver.log_path(created);
        std::fs::File::create(&log).expect("the log file");
        // Two spellings of the log, as the driver gives them (see its `logs`).
        let dir = log.parent().expect("the log's directory");
        let stderr = dir.join(".").join(log.file_name().expect("name"));
        TasksClient::new(client.channel())
            .create(self.request(CreateTaskRequest {
                container_id: created.id.clone(),
                rootfs: mounts,
                stdout: log.display().to_string(),
                stderr: stderr.display().to_string(),
                ..CreateTaskRequest::default()
            }))
            .await
            .expect("create the task");
    }
}

#[tokio::test]
async fn creates_and_starts_made_twice_or_cut_off_leave_one_container_and_one_task() {
    let Some(fx) = fixture("recovery").await else {
        return;
    };
    let twice = instance("twice", busybox(&["sleep", "1000"]));
    fx.driver.create(&twice).await.expect("create");
    fx.driver.create(&twice).await.expect("create again");
    assert_eq!(fx.containers_of(&twice.id).await, 1);
    fx.driver.start(&twice).await.expect("start");
    fx.driver.start(&twice).await.expect("start again");
    assert_eq!(fx.tasks_of(&twice.id).await, [TaskStatus::Running]);

    // A create cut off after its snapshot: the next create takes it up.
    let cut = instance(
        "cut-create",
        busybox(&["sh", "-c", "echo recovered; sleep 1000"]),
    );
    fx.driver.create(&cut).await.expect("create");
    fx.cut_after_snapshot(&cut).await;
    assert_eq!(fx.containers_of(&cut.id).await, 0);
    assert_eq!(
        fx.driver.inspect(&cut).await.expect("inspect"),
        RuntimeState::Missing
    );
    fx.driver.create(&cut).await.expect("create after the cut");
    fx.driver.create(&cut).await.expect("create again");
    assert_eq!(fx.containers_of(&cut.id).await, 1);
    fx.driver.start(&cut).await.expect("start");
    fx.driver.start(&cut).await.expect("start again");
    assert_eq!(fx.tasks_of(&cut.id).await, [TaskStatus::Running]);
    fx.wait_log_lines(&cut, &["recovered"]).await;

    // A start cut off between its task create and start: the next start
    // starts that task.
    let unstarted = instance(
        "cut-start",
        busybox(&["sh", "-c", "echo started; sleep 1000"]),
    );
    fx.driver.create(&unstarted).await.expect("create");
    fx.cut_after_task_create(&unstarted).await;
    assert_eq!(fx.tasks_of(&unstarted.id).await, [TaskStatus::Created]);
    fx.driver
        .start(&unstarted)
        .await
        .expect("start after the cut");
    fx.driver.start(&unstarted).await.expect("start again");
    assert_eq!(fx.tasks_of(&unstarted.id).await, [TaskStatus::Running]);
    fx.wait_log_lines(&unstarted, &["started"]).await;

    for done in [&twice, &cut, &unstarted] {
        fx.driver.delete(done).await.expect("delete");
        // The cut create's lease goes too.
        assert_eq!(fx.leftovers_of(&done.id).await, Vec::<String>::new());
        assert!(!fx.driver.log_path(done).exists());
    }
    fx.finish().await;
}

#[tokio::test]
async fn the_inventory_lists_the_namespace_and_remove_orphan_removes_by_id_alone() {
    let Some(fx) = fixture("inventory").await else {
        return;
    };
    let root = fx.dir.path().parent().expect("the state dir's parent");
    let canary = tempfile::Builder::new()
        .prefix("canary-")
        .tempdir_in(root)
        .expect("canary dir");
    std::fs::write(canary.path().join("keep"), b"canary").expect("canary");

    let running = instance("running", busybox(&["sleep", "1000"]));
    fx.driver.create(&running).await.expect("create");
    fx.driver.start(&running).await.expect("start");
    let cut = instance("cut", busybox(&["sleep", "1000"]));
    fx.driver.create(&cut).await.expect("create");
    fx.cut_after_snapshot(&cut).await;
    let deleted = instance("deleted", busybox(&["true"]));
    fx.driver.create(&deleted).await.expect("create");
    fx.driver.delete(&deleted).await.expect("delete");

    let ids = fx.driver.instance_ids().await.expect("inventory");
    assert!(
        ids.contains(&running.id) && ids.contains(&cut.id),
        "{ids:?}"
    );
    assert!(!ids.contains(&deleted.id), "{ids:?}");

    let canary_name = canary.path().file_name().expect("name").to_string_lossy();
    let hostile = [
        String::new(),
        "/".to_owned(),
        "..".to_owned(),
        "../../etc".to_owned(),
        "a/b".to_owned(),
        // From <state_dir>/containerd/<namespace>/ to the canary.
        format!("../../../../{canary_name}"),
        canary.path().to_string_lossy().into_owned(),
        "running".to_owned(),
    ];
    for id in &hostile {
        let err = fx
            .driver
            .remove_orphan(id)
            .await
            .expect_err("not an instance id");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id:?}: {err}");
        assert!(err.to_string().starts_with("invalid id:"), "{err}");
    }
    assert!(
        canary.path().join("keep").exists(),
        "the canary is untouched"
    );
    assert_eq!(fx.tasks_of(&running.id).await, [TaskStatus::Running]);

    // Given only their ids: the running container, and what the cut
    // create left (a snapshot under a lease, a directory).
    for orphan in [&running, &cut] {
        fx.driver
            .remove_orphan(&orphan.id)
            .await
            .expect("remove the orphan");
        fx.driver
            .remove_orphan(&orphan.id)
            .await
            .expect("removing it again is fine");
        assert_eq!(fx.leftovers_of(&orphan.id).await, Vec::<String>::new());
        assert_eq!(
            fx.driver.inspect(orphan).await.expect("inspect"),
            RuntimeState::Missing
        );
        assert!(!fx.driver.log_path(orphan).parent().expect("dir").exists());
    }
    let ids = fx.driver.instance_ids().await.expect("inventory");
    assert!(ids.is_empty(), "{ids:?}");
    fx.finish().await;
}

/// Two installations (state directories) sharing one containerd namespace,
/// as two `--state-dir`s on a laptop, or an agent next to the embedded
/// default: each lists only its own containers, so neither's orphan sweep
/// ever removes the other's running container.
#[tokio::test]
async fn the_inventory_lists_only_this_installations_containers() {
    let Some(fx) = fixture("two-installations").await else {
        return;
    };
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = ContainerdDriver::connect(
        ContainerdOptions::new(&fx.socket, other_dir.path()).with_namespace(&fx.namespace),
    )
    .await
    .expect("connect to containerd");
    let theirs = instance("theirs", busybox(&["sleep", "1000"]));
    other.create(&theirs).await.expect("create");
    other.start(&theirs).await.expect("start");
    let ours = instance("ours", busybox(&["sleep", "1000"]));
    fx.driver.create(&ours).await.expect("create");

    let listed = fx.driver.instance_ids().await.expect("inventory");
    assert!(listed.contains(&ours.id), "{listed:?}");
    assert!(!listed.contains(&theirs.id), "{listed:?}");
    let listed = other.instance_ids().await.expect("inventory");
    assert!(
        listed.contains(&theirs.id) && !listed.contains(&ours.id),
        "{listed:?}"
    );
    assert_eq!(fx.tasks_of(&theirs.id).await, [TaskStatus::Running]);

    other.delete(&theirs).await.expect("delete");
    fx.driver.delete(&ours).await.expect("delete");
    fx.finish().await;
}
