//! The container lifecycle on containerd: container records with their
//! rootfs snapshots (create, delete) and runc tasks (start, stop, pause,
//! inspect, metrics). Every step checks what exists first, so each call is
//! idempotent and a call interrupted by a crash is simply made again: a
//! create finds the snapshot (key = id) and the network a cut-off create
//! left, a start finds a task created but never started. Before anything
//! exists a create writes its record (see `record`), and its lease carries
//! the instance id, so even what a cut-off create left is found by id.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, MetricsRequest,
    PauseTaskRequest, ResumeTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::{Code, Status};
use containerd_client::types::v1::{Process, Status as TaskStatus};
use zixiao_core::driver::{Images, PullOptions};
use zixiao_core::model::{ImageRef, PullPolicy};
use zixiao_core::{DriverError, Instance, RuntimeState};

use super::connection::Lease;
use super::error::{invalid, io, is_already_exists, is_not_found};
use super::images;
use super::record::{self, Record};
use super::spec::{self, SpecDefaults};
use super::stats::{self, Sample};
use super::{console, logs, shims, ContainerdDriver};
use crate::errors::at_field;

/// The type URL containerd expects on a container's runtime spec.
pub(super) const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Label carrying the instance's name on its container, for people using `ctr`.
const NAME_LABEL: &str = "zixiao.io/instance";

/// How long a task may take to die after SIGKILL before stop gives up.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code of a process ended by SIGKILL.
const SIGKILL_EXIT: i32 = 128 + 9;

/// How long a start waits for containerd to remove the task bundle of a
/// task create whose client was cut off (it does once the shim it started
/// for that create disconnects: about 2 s after the cut, measured on
/// containerd 1.6.20) before it reports the bundle as stale.
const STALE_BUNDLE_WAIT: Duration = Duration::from_secs(15);
/// How often the task create is tried again meanwhile.
const STALE_BUNDLE_POLL: Duration = Duration::from_millis(250);
/// How long a bundle may stay before the shim holding it counts as one
/// containerd lost track of, and is removed with it (see `shims`).
const UNTRACKED_SHIM_GRACE: Duration = Duration::from_secs(5);

impl ContainerdDriver {
    pub(super) fn tasks(&self) -> TasksClient<containerd_client::tonic::transport::Channel> {
        TasksClient::new(self.conn.client().channel())
    }

    pub(super) fn snapshots(
        &self,
    ) -> SnapshotsClient<containerd_client::tonic::transport::Channel> {
        SnapshotsClient::new(self.conn.client().channel())
    }

    /// The container record, or `None`.
    pub(super) async fn container(&self, id: &str) -> Result<Option<Container>, DriverError> {
        let request = self.conn.request(GetContainerRequest { id: id.to_owned() });
        match ContainersClient::new(self.conn.client().channel())
            .get(request)
            .await
        {
            Ok(response) => Ok(response.into_inner().container),
            Err(status) if is_not_found(&status) => Ok(None),
            Err(status) => Err(self
                .conn
                .rpc_error(format!("look up container {id}"), status)),
        }
    }

    /// The container's task (its init process), or `None`.
    pub(super) async fn task(&self, id: &str) -> Result<Option<Process>, DriverError> {
        let request = self.conn.request(GetRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        });
        match self.tasks().get(request).await {
            Ok(response) => Ok(response.into_inner().process),
            Err(status) if is_not_found(&status) => Ok(None),
            Err(status) => Err(self.conn.rpc_error(format!("look up task {id}"), status)),
        }
    }

    pub(super) async fn create_container(&self, instance: &Instance) -> Result<(), DriverError> {
        let id = Self::container_id(instance)?;
        if self.container(id).await?.is_some() {
            // Ours (the record is written before anything else): an
            // earlier create, perhaps cut off, made it.
            if record::read(&self.instance_dir(id)).await.is_some() {
                return Ok(());
            }
            self.remove_foreign_copy(instance, id).await?;
        }
        let reference = instance
            .spec
            .image
            .as_deref()
            .ok_or_else(|| invalid("spec.image", "a container needs an image"))?;
        let image = self.image_for(reference, instance.spec.pull).await?;
        let defaults = SpecDefaults {
            pids_limit: self.options.pids_limit,
            cgroups_path: self.cgroups_path(instance),
        };
        // Everything the user can get wrong is checked before anything is written.
        console::wants_stdin(instance)?;
        self.check_ports(instance).await?;
        let runtime_spec = spec::runtime_spec(
            instance,
            &image.config.config.clone().unwrap_or_default(),
            &defaults,
        )?;
        // Write-ahead: recorded before the network, the snapshot or the
        // container exist, so a create cut off after this is found by id.
        let dir = self.instance_dir(id);
        let made = match record::write(&dir, &Record::of(instance)).await {
            Ok(()) => {
                self.create_objects(instance, id, &image, runtime_spec)
                    .await
            }
            Err(e) => Err(e),
        };
        if made.is_err() && !matches!(self.container(id).await, Ok(Some(_))) {
            // No container: nothing of the instance was created before
            // this call (or only by a create cut off), so all of it goes.
            self.remove_snapshot(id).await.ok();
            self.detach_network(instance).await.ok();
            remove_dir(&dir).await.ok();
        }
        made
    }

    /// Removes container `id` that this node did not create: a stopped
    /// copy of the same instance that another node sharing this containerd
    /// made before the instance moved here (failed over from a node that
    /// fenced it). Its runtime spec joins that node's network namespace,
    /// so starting it here would run the instance on the other node's
    /// network. Errors: `FailedPrecondition` while its task still runs
    /// (the other node has not stopped it yet; a later converge retries),
    /// and those of [`ContainerdDriver::remove_objects`].
    async fn remove_foreign_copy(&self, instance: &Instance, id: &str) -> Result<(), DriverError> {
        if let Some(process) = self.task(id).await? {
            if matches!(
                status_of(&process),
                TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing
            ) {
                return Err(DriverError::FailedPrecondition(format!(
                    "a copy of instance `{}` that another node made still runs on this \
                     containerd; it is created here once that node has stopped it",
                    instance.name
                )));
            }
        }
        tracing::info!(
            instance = %instance.name,
            "removing a stopped copy another node left on this containerd"
        );
        self.remove_objects(id, &instance.name, Duration::ZERO)
            .await
    }

    /// The image `reference` names, pulled first as `policy` says (see
    /// [`PullPolicy::wants_pull`]), anonymously and over HTTPS except to
    /// loopback: a registry that wants credentials, a CA or plain HTTP is
    /// pulled from with `zixiao image pull` beforehand. Errors: those of
    /// [`images::resolve`] and of a pull, naming `spec.image`;
    /// `FailedPrecondition` under `never` for an image not here.
    async fn image_for(
        &self,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<images::Resolved, DriverError> {
        let held = match images::resolve(&self.conn, reference).await {
            Ok(image) => Some(image),
            Err(DriverError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if !policy.wants_pull(held.is_some(), "spec.image", reference)? {
            if let Some(image) = held {
                return Ok(image);
            }
        }
        let parsed =
            ImageRef::try_from(reference).map_err(|e| invalid("spec.image", e.to_string()))?;
        tracing::info!(image = %parsed, %policy, "pulling a container image for a create");
        Images::pull(self, &parsed, &PullOptions::default(), &|_| {})
            .await
            .map_err(|e| at_field("spec.image", e))?;
        images::resolve(&self.conn, reference).await
    }

    /// The network, then under a lease the rootfs snapshot and the container.
    async fn create_objects(
        &self,
        instance: &Instance,
        id: &str,
        image: &images::Resolved,
        mut runtime_spec: serde_json::Value,
    ) -> Result<(), DriverError> {
        self.attach_network(instance, &mut runtime_spec).await?;
        let spec_json = serde_json::to_vec(&runtime_spec)
            .map_err(|e| invalid("spec", format!("cannot encode the runtime spec: {e}")))?;
        let lease = self.conn.lease("create", Some(id)).await?;
        let created = self
            .create_under(&lease, instance, id, image, spec_json)
            .await;
        if created.is_err() {
            self.remove_snapshot(id).await.ok();
        }
        let released = self.conn.release(lease, created.is_err()).await;
        created?;
        released
    }

    async fn create_under(
        &self,
        lease: &Lease,
        instance: &Instance,
        id: &str,
        image: &images::Resolved,
        spec_json: Vec<u8>,
    ) -> Result<(), DriverError> {
        let snapshotter = &self.options.snapshotter;
        let parent = images::unpack(&self.conn, lease, snapshotter, image).await?;
        let prepare = PrepareSnapshotRequest {
            snapshotter: snapshotter.clone(),
            key: id.to_owned(),
            parent,
            labels: HashMap::new(),
        };
        match self
            .snapshots()
            .prepare(self.conn.leased(prepare, lease))
            .await
        {
            Ok(_) => {}
            // Left by a create that crashed before its container existed.
            Err(status) if is_already_exists(&status) => {}
            Err(status) => {
                return Err(self
                    .conn
                    .rpc_error(format!("prepare rootfs of {}", instance.name), status))
            }
        }
        let container = Container {
            id: id.to_owned(),
            labels: HashMap::from([(NAME_LABEL.to_owned(), instance.name.clone())]),
            image: image.name.clone(),
            runtime: Some(Runtime {
                name: self.options.runtime.clone(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_owned(),
                value: spec_json,
            }),
            snapshotter: snapshotter.clone(),
            snapshot_key: id.to_owned(),
            ..Container::default()
        };
        let request = self.conn.leased(
            CreateContainerRequest {
                container: Some(container),
            },
            lease,
        );
        match ContainersClient::new(self.conn.client().channel())
            .create(request)
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if is_already_exists(&status) => Ok(()),
            Err(status) => Err(self
                .conn
                .rpc_error(format!("create container {}", instance.name), status)),
        }
    }

    async fn remove_snapshot(&self, key: &str) -> Result<(), DriverError> {
        let request = RemoveSnapshotRequest {
            snapshotter: self.options.snapshotter.clone(),
            key: key.to_owned(),
        };
        match self.snapshots().remove(self.conn.request(request)).await {
            Ok(_) => Ok(()),
            Err(status) if is_not_found(&status) => Ok(()),
            Err(status) => Err(self
                .conn
                .rpc_error(format!("remove snapshot {key}"), status)),
        }
    }

    pub(super) async fn start_task(&self, instance: &Instance) -> Result<(), DriverError> {
        let id = Self::container_id(instance)?;
        if self.container(id).await?.is_none() {
            return Err(DriverError::NotFound(format!(
                "container of instance `{}`",
                instance.name
            )));
        }
        // Before the task runs (a running one keeps its rules, replaced
        // with the same): refused here when a host port was taken since
        // the create.
        self.publish_ports(instance).await?;
        match self.task(id).await?.map(|p| status_of(&p)) {
            Some(TaskStatus::Running) => return Ok(()),
            Some(TaskStatus::Paused | TaskStatus::Pausing) => {
                return self.resume_task(instance).await
            }
            Some(TaskStatus::Created) => return self.start_created(instance, id).await,
            // An exited task must go before a new one can run.
            Some(TaskStatus::Stopped | TaskStatus::Unknown) => self.delete_task(id).await?,
            None => {}
        }
        let mounts = self
            .snapshots()
            .mounts(self.conn.request(MountsRequest {
                snapshotter: self.options.snapshotter.clone(),
                key: id.to_owned(),
            }))
            .await
            .map_err(|s| {
                self.conn
                    .rpc_error(format!("mount rootfs of {}", instance.name), s)
            })?
            .into_inner()
            .mounts;
        let dir = self.instance_dir(id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io(format!("create {}", dir.display()), e))?;
        let log = logs::log_path(&dir);
        // The shim opens the log without creating it.
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .await
            .map_err(|e| io(format!("create {}", log.display()), e))?;
        let (stdout, stderr) = logs::stdio_paths(&log);
        let stdin = if console::wants_stdin(instance)? {
            let fifo = console::stdin_path(&dir);
            console::make_fifo(&fifo)?;
            fifo.display().to_string()
        } else {
            String::new()
        };
        let request = CreateTaskRequest {
            container_id: id.to_owned(),
            rootfs: mounts,
            stdin,
            stdout,
            stderr,
            // containerd 1.6's shim cannot copy a terminal into a file://
            // log ("failed to start console copy"), so no TTY yet.
            terminal: false,
            checkpoint: None,
            options: None,
            runtime_path: String::new(),
        };
        let started = Instant::now();
        let deadline = started + STALE_BUNDLE_WAIT;
        let mut cleaned = false;
        loop {
            match self
                .tasks()
                .create(self.conn.request(request.clone()))
                .await
            {
                Ok(_) => break,
                // A concurrent start made it first.
                Err(status) if is_already_exists(&status) => break,
                // The bundle of a task create whose client was cut off:
                // containerd still works on that create, and removes the
                // bundle once the shim it started disconnects. Wait for
                // that (or for the task it made) rather than fail.
                Err(status) if is_stale_shim_dir(status.message()) && Instant::now() < deadline => {
                    // Still there when containerd would have removed it: a
                    // shim it lost track of holds it (a task delete cut off).
                    if !cleaned && started.elapsed() >= UNTRACKED_SHIM_GRACE {
                        cleaned = true;
                        self.remove_untracked_shims(id).await?;
                        let namespace = &self.options.namespace;
                        if let Some(bundle) =
                            shims::bundle_in_message(status.message(), namespace, id)
                        {
                            shims::remove_bundle(&bundle, namespace, id)?;
                        }
                    }
                    tokio::time::sleep(STALE_BUNDLE_POLL).await;
                    match self.task(id).await?.map(|p| status_of(&p)) {
                        Some(TaskStatus::Running) => return Ok(()),
                        Some(TaskStatus::Created) => break,
                        Some(TaskStatus::Paused | TaskStatus::Pausing) => {
                            return self.resume_task(instance).await
                        }
                        Some(TaskStatus::Stopped | TaskStatus::Unknown) => {
                            self.delete_task(id).await?
                        }
                        None => {}
                    }
                }
                // containerd's clean-up of the cut-off create removed the
                // bundle after this create made its own in the same place:
                // the new shim found no working directory. Nothing of this
                // create is left; try again once that clean-up is done.
                Err(status)
                    if is_bundle_removed_under_shim(status.message())
                        && Instant::now() < deadline =>
                {
                    self.delete_task(id).await.ok();
                    tokio::time::sleep(STALE_BUNDLE_POLL).await;
                }
                Err(status) => {
                    // runc may leave a task record behind when its create fails.
                    self.delete_task(id).await.ok();
                    return Err(self.start_error(instance, status));
                }
            }
        }
        self.start_created(instance, id).await
    }

    async fn start_created(&self, instance: &Instance, id: &str) -> Result<(), DriverError> {
        let request = self.conn.request(StartRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        });
        match self.tasks().start(request).await {
            Ok(_) => Ok(()),
            Err(status) => {
                // A task that exists but never ran would block the next start.
                self.kill(id, libc::SIGKILL).await.ok();
                self.delete_task(id).await.ok();
                Err(self.start_error(instance, status))
            }
        }
    }

    /// A failed task create or start: a command the image lacks is the
    /// user's mistake (`InvalidArgument` on `spec.command`), not the runtime's;
    /// a stale shim directory is containerd's (`FailedPrecondition`).
    fn start_error(&self, instance: &Instance, status: Status) -> DriverError {
        let message = status.message();
        if is_stale_shim_dir(message) {
            // It outlived the wait for containerd's own clean-up: no API
            // removes it, containerd does when it starts.
            return DriverError::FailedPrecondition(format!(
                "containerd holds a stale task directory of instance `{}` (left when containerd \
                 stopped in the middle of starting it, and not removed within {} s); restarting \
                 containerd removes it ({message})",
                instance.name,
                STALE_BUNDLE_WAIT.as_secs()
            ));
        }
        let missing = message.contains("executable file not found")
            || (message.contains("exec:") && message.contains("no such file or directory"));
        if missing {
            let command = instance
                .spec
                .command
                .first()
                .map(String::as_str)
                .unwrap_or("the image's entrypoint");
            return invalid(
                "spec.command",
                format!(
                    "`{command}` does not exist in image `{}`",
                    instance.spec.image.as_deref().unwrap_or("")
                ),
            );
        }
        if message.contains("unable to set memory limit") {
            return invalid(
                "spec.memory_mib",
                format!(
                    "{} MiB is less than the container's runtime needs: {message}",
                    instance.spec.memory_mib
                ),
            );
        }
        if message.contains("permission denied") && message.contains("exec") {
            return invalid(
                "spec.command",
                format!("the command cannot be executed: {message}"),
            );
        }
        self.conn
            .rpc_error(format!("start container {}", instance.name), status)
    }

    /// Sends `signal` to every process of the task. A task already gone is fine.
    async fn kill(&self, id: &str, signal: i32) -> Result<(), DriverError> {
        let request = self.conn.request(KillRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
            signal: u32::try_from(signal).unwrap_or(9),
            all: true,
        });
        match self.tasks().kill(request).await {
            Ok(_) => Ok(()),
            Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {
                Ok(())
            }
            Err(status) => Err(self.conn.rpc_error(format!("signal task {id}"), status)),
        }
    }

    /// Waits up to `timeout` for the task to exit; true if it did.
    async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<bool, DriverError> {
        let request = self.conn.request(WaitRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        });
        let mut tasks = self.tasks();
        match tokio::time::timeout(timeout, tasks.wait(request)).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(status)) if is_not_found(&status) => Ok(true),
            Ok(Err(status)) => Err(self.conn.rpc_error(format!("wait for task {id}"), status)),
        }
    }

    async fn delete_task(&self, id: &str) -> Result<(), DriverError> {
        let request = self.conn.request(DeleteTaskRequest {
            container_id: id.to_owned(),
        });
        match self.tasks().delete(request).await {
            Ok(_) => Ok(()),
            Err(status) if is_not_found(&status) => Ok(()),
            Err(status) => Err(self.conn.rpc_error(format!("delete task {id}"), status)),
        }
    }

    pub(super) async fn stop_task(
        &self,
        instance: &Instance,
        grace: Duration,
    ) -> Result<(), DriverError> {
        let id = Self::container_id(instance)?;
        self.stop_task_of(id, &instance.name, grace).await?;
        crate::net::unpublish_instance(self.network.as_ref(), instance).await
    }

    /// Stops the task of container `id` (instance `name`, for messages):
    /// SIGTERM, `grace`, SIGKILL; then deletes it. Without a task, stops a
    /// shim containerd lost track of (see `shims`). Idempotent.
    async fn stop_task_of(&self, id: &str, name: &str, grace: Duration) -> Result<(), DriverError> {
        let Some(process) = self.task(id).await? else {
            return self.remove_untracked_shims(id).await;
        };
        let status = status_of(&process);
        if matches!(status, TaskStatus::Paused | TaskStatus::Pausing) {
            // A frozen process cannot act on a signal, not even SIGKILL.
            self.resume_raw(id).await?;
        }
        if status != TaskStatus::Stopped {
            self.kill(id, libc::SIGTERM).await?;
            if !self.wait_exit(id, grace).await? {
                self.kill(id, libc::SIGKILL).await?;
                if !self.wait_exit(id, KILL_TIMEOUT).await? {
                    return Err(DriverError::Runtime {
                        operation: format!("stop container {name}"),
                        source: format!("the task did not exit within {KILL_TIMEOUT:?} of SIGKILL")
                            .into(),
                    });
                }
            }
        }
        // Deleting the task unmounts its rootfs and removes its cgroup; the
        // container stays, ready to start again.
        self.delete_task(id).await
    }

    /// Stops the shims of container `id` that containerd does not track
    /// (it has no task for `id`, checked just before) and removes their
    /// bundles.
    async fn remove_untracked_shims(&self, id: &str) -> Result<(), DriverError> {
        shims::remove_untracked(&self.options.socket, &self.options.namespace, id).await
    }

    pub(super) async fn delete_container(&self, instance: &Instance) -> Result<(), DriverError> {
        let id = Self::container_id(instance)?;
        self.remove_objects(id, &instance.name, Duration::ZERO)
            .await?;
        self.detach_network(instance).await?;
        remove_dir(&self.instance_dir(id)).await
    }

    /// Removes what containerd holds of container `id` (instance `name`,
    /// for messages): its task (stopped with `grace`), the container, its
    /// snapshot, and the leases of creates cut off before they released
    /// them. Idempotent.
    pub(super) async fn remove_objects(
        &self,
        id: &str,
        name: &str,
        grace: Duration,
    ) -> Result<(), DriverError> {
        self.stop_task_of(id, name, grace).await?;
        let request = self
            .conn
            .request(DeleteContainerRequest { id: id.to_owned() });
        match ContainersClient::new(self.conn.client().channel())
            .delete(request)
            .await
        {
            Ok(_) => {}
            Err(status) if is_not_found(&status) => {}
            Err(status) => {
                return Err(self
                    .conn
                    .rpc_error(format!("delete container {name}"), status))
            }
        }
        self.remove_snapshot(id).await?;
        for (lease, _) in self.conn.instance_leases(Some(id)).await? {
            self.conn.release(lease, true).await?;
        }
        Ok(())
    }

    pub(super) async fn inspect_container(
        &self,
        instance: &Instance,
    ) -> Result<RuntimeState, DriverError> {
        let id = Self::container_id(instance)?;
        if self.container(id).await?.is_none() {
            return Ok(RuntimeState::Missing);
        }
        let Some(process) = self.task(id).await? else {
            return Ok(RuntimeState::Created);
        };
        Ok(match status_of(&process) {
            TaskStatus::Running => RuntimeState::Running,
            TaskStatus::Paused | TaskStatus::Pausing => RuntimeState::Paused,
            TaskStatus::Created | TaskStatus::Unknown => RuntimeState::Created,
            TaskStatus::Stopped => {
                let code = i32::try_from(process.exit_status).unwrap_or(i32::MAX);
                RuntimeState::Exited {
                    code,
                    oom_killed: self.oom_killed(id, code).await,
                    at: process.exited_at.and_then(|t| {
                        chrono::DateTime::from_timestamp(
                            t.seconds,
                            u32::try_from(t.nanos).unwrap_or(0),
                        )
                    }),
                }
            }
        })
    }

    /// Whether the OOM killer ended the exited task: its cgroup lives until
    /// the task is deleted, and counts OOM kills. Without metrics (a runtime
    /// that keeps none) the answer is no.
    async fn oom_killed(&self, id: &str, code: i32) -> bool {
        if code != SIGKILL_EXIT {
            return false;
        }
        match self.metrics(id).await {
            Ok(Some(sample)) => sample.oom_kills > 0,
            _ => false,
        }
    }

    async fn metrics(&self, id: &str) -> Result<Option<Sample>, DriverError> {
        let request = self.conn.request(MetricsRequest {
            filters: vec![format!("id=={id}")],
        });
        let metrics = self
            .tasks()
            .metrics(request)
            .await
            .map_err(|s| self.conn.rpc_error(format!("read metrics of {id}"), s))?
            .into_inner()
            .metrics;
        Ok(metrics
            .iter()
            .filter(|m| m.id == id)
            .find_map(|m| m.data.as_ref().and_then(stats::decode)))
    }

    pub(super) async fn sample(&self, instance: &Instance) -> Result<Sample, DriverError> {
        let id = Self::container_id(instance)?;
        let task = self.task(id).await?;
        let pid = match &task {
            Some(p)
                if matches!(
                    status_of(p),
                    TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing
                ) =>
            {
                p.pid
            }
            _ => {
                return Err(DriverError::FailedPrecondition(format!(
                    "instance `{}` is not running",
                    instance.name
                )))
            }
        };
        let mut sample = self
            .metrics(id)
            .await?
            .ok_or_else(|| DriverError::Runtime {
                operation: format!("read metrics of {}", instance.name),
                source: "containerd returned no cgroup metrics for the task".into(),
            })?;
        // The cgroup has no network figures: the task's network namespace
        // has them, read through its init process (whichever namespace
        // this process runs in).
        if let Ok(dev) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) {
            if let Some((rx, tx)) = stats::network_totals(&dev) {
                sample.stats.net_rx_bytes = Some(rx);
                sample.stats.net_tx_bytes = Some(tx);
            }
        }
        Ok(sample)
    }

    pub(super) async fn pause_task(&self, instance: &Instance) -> Result<(), DriverError> {
        let id = Self::container_id(instance)?;
        match self.task(id).await?.map(|p| status_of(&p)) {
            Some(TaskStatus::Paused) => Ok(()),
            Some(TaskStatus::Running | TaskStatus::Pausing) => {
                let request = self.conn.request(PauseTaskRequest {
                    container_id: id.to_owned(),
                });
                self.tasks()
                    .pause(request)
                    .await
                    .map_err(|s| self.conn.rpc_error(format!("pause {}", instance.name), s))?;
                Ok(())
            }
            _ => Err(DriverError::FailedPrecondition(format!(
                "instance `{}` is not running",
                instance.name
            ))),
        }
    }

    pub(super) async fn resume_task(&self, instance: &Instance) -> Result<(), DriverError> {
        let id = Self::container_id(instance)?;
        match self.task(id).await?.map(|p| status_of(&p)) {
            Some(TaskStatus::Running) => Ok(()),
            Some(TaskStatus::Paused | TaskStatus::Pausing) => self.resume_raw(id).await,
            _ => Err(DriverError::FailedPrecondition(format!(
                "instance `{}` is not paused",
                instance.name
            ))),
        }
    }

    async fn resume_raw(&self, id: &str) -> Result<(), DriverError> {
        let request = self.conn.request(ResumeTaskRequest {
            container_id: id.to_owned(),
        });
        self.tasks()
            .resume(request)
            .await
            .map_err(|s| self.conn.rpc_error(format!("resume {id}"), s))?;
        Ok(())
    }
}

/// Removes `dir` and everything in it. Idempotent.
pub(super) async fn remove_dir(dir: &std::path::Path) -> Result<(), DriverError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("remove {}", dir.display()), e)),
    }
}

/// Whether a task create failed because containerd's state still holds the
/// shim directory (bundle) of an earlier task of the container, which a
/// containerd stopped mid-create leaves: every later create fails alike.
fn is_stale_shim_dir(message: &str) -> bool {
    message.contains("failed to start shim") && message.contains("file exists")
}

/// Whether a task create failed because its shim's working directory (the
/// bundle containerd had just made) was removed before the shim started:
/// containerd's clean-up of an earlier create of the container, whose
/// client was cut off, ran at the same time. The shim notices it wherever it
/// next touches its directory; the CLI's crash test found two places:
/// `failed to start shim: start failed: io.containerd.runc.v2: getwd: no
/// such file or directory` and `… rename <bundle>/.address <bundle>/address:
/// no such file or directory`.
fn is_bundle_removed_under_shim(message: &str) -> bool {
    let gone = |what: &str| message.contains(&format!("{what}: no such file or directory"));
    message.contains("failed to start shim") && (gone("getwd") || gone("/address"))
}

pub(super) fn status_of(process: &Process) -> TaskStatus {
    TaskStatus::try_from(process.status).unwrap_or(TaskStatus::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_shim_directory_is_recognised() {
        // As containerd 1.6 says it.
        assert!(is_stale_shim_dir(
            "failed to start shim: mkdir /var/run/containerd/io.containerd.runtime.v2.task/zixiao/x: \
             file exists: unknown"
        ));
        assert!(!is_stale_shim_dir(
            "failed to create shim task: OCI runtime create failed: exec: \"nope\": \
             executable file not found in $PATH: unknown"
        ));
    }

    #[test]
    fn a_bundle_removed_under_a_starting_shim_is_recognised() {
        // As containerd 1.6 said it in the crash test.
        assert!(is_bundle_removed_under_shim(
            "failed to start shim: start failed: io.containerd.runc.v2: getwd: no such file or \
             directory: exit status 1"
        ));
        assert!(is_bundle_removed_under_shim(
            "failed to start shim: start failed: io.containerd.runc.v2: rename \
             /run/containerd/io.containerd.runtime.v2.task/zixiao/x/.address \
             /run/containerd/io.containerd.runtime.v2.task/zixiao/x/address: no such file or \
             directory: exit status 1"
        ));
        assert!(!is_bundle_removed_under_shim(
            "failed to create shim task: OCI runtime create failed: exec: \"nope\": no such file \
             or directory: unknown"
        ));
    }
}
