//! The container driver: OCI containers on containerd, through its gRPC API.
//!
//! Each instance is one containerd container whose id is the instance's id,
//! in the driver's own namespace (`zixiao` by default), with a rootfs
//! snapshot prepared from its image's top chain id and a runc task whose
//! stdout and stderr the shim appends to a per-instance log file. Since
//! containerd keeps containers, tasks and exit statuses, the driver holds no
//! state of its own: after a restart it finds everything by instance id.
//!
//! Modules: `connection` (socket, namespace, leases), `error` (gRPC
//! statuses to error kinds), [`spec`] (the OCI runtime spec), `images`,
//! `archive` and `content` (import, unpack, resolve), `tasks` (lifecycle),
//! `logs`, `stats`, `console`, `network` (namespaces and veths through
//! zixiao-net), `record` (the write-ahead record of a create),
//! `resize` (CPU and memory limits changed live) and `inventory` (what the
//! runtime holds, by instance id, for orphan sweeps).

mod archive;
mod connection;
mod console;
mod content;
mod error;
mod images;
mod inventory;
pub mod layer_size;
mod logs;
mod network;
mod record;
mod resize;
mod shims;
pub mod spec;
mod stats;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zixiao_core::driver::{
    ImageInfo, Images, ImportProgress, Inventory, Pause, PullOptions, PullProgress, Resize, Stats,
};
use zixiao_core::model::ImageName;
use zixiao_core::{
    Driver, DriverError, Instance, InstanceStats, InstanceType, LogChunk, RuntimeState,
};

use crate::log_file::LogKeeper;
use connection::Connection;
pub use console::STDIN_LABEL;

/// The socket of a system containerd.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The namespace Zixiao's containers and images live in by default.
pub const DEFAULT_NAMESPACE: &str = "zixiao";
/// The pids limit of a container that does not set one (see [`spec::PIDS_LIMIT_LABEL`]).
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// How the container driver reaches containerd and lays out its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdOptions {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace for containers and images.
    pub namespace: String,
    /// Where per-instance files (logs) go: `<state_dir>/containerd/<namespace>/<id>/`.
    pub state_dir: PathBuf,
    /// The snapshotter rootfs snapshots are made with.
    pub snapshotter: String,
    /// The containerd runtime (shim) tasks run under.
    pub runtime: String,
    /// The pids limit of containers without the pids label.
    pub pids_limit: i64,
    /// How much of each container's output is kept on disk.
    pub log_limit: crate::LogLimit,
    /// The most bytes one image layer may unpack to; an import or pull
    /// with a larger layer is refused before containerd writes it
    /// ([`layer_size`]).
    pub max_layer_bytes: u64,
}

impl ContainerdOptions {
    /// The defaults for `socket`, with files under `state_dir`.
    pub fn new(socket: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        ContainerdOptions {
            socket: socket.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            state_dir: state_dir.into(),
            snapshotter: "overlayfs".to_owned(),
            runtime: "io.containerd.runc.v2".to_owned(),
            pids_limit: DEFAULT_PIDS_LIMIT,
            log_limit: crate::LogLimit::default(),
            max_layer_bytes: layer_size::DEFAULT_MAX_LAYER_BYTES,
        }
    }

    /// The same options in `namespace`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// The container driver (`InstanceType::Container`) on one containerd.
///
/// ```no_run
/// # async fn demo() -> Result<(), zixiao_core::DriverError> {
/// use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};
/// let options = ContainerdOptions::new("/run/containerd/containerd.sock", "/var/lib/zixiao");
/// let driver = ContainerdDriver::connect(options).await?;
/// # let _ = driver; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ContainerdDriver {
    conn: Connection,
    options: ContainerdOptions,
    network: Option<zixiao_net::LinuxNetwork>,
    /// Trims the containers' output files while the driver lives.
    _log_keeper: Option<Arc<LogKeeper>>,
}

impl ContainerdDriver {
    /// Connects to containerd and checks that it answers. Errors:
    /// `Unavailable` naming the socket (missing, refused, silent),
    /// `InvalidArgument` (a bad namespace or pids limit).
    pub async fn connect(options: ContainerdOptions) -> Result<ContainerdDriver, DriverError> {
        if options.pids_limit < 1 {
            return Err(error::invalid(
                "pids_limit",
                format!("{} is not positive", options.pids_limit),
            ));
        }
        let conn = Connection::connect(&options.socket, &options.namespace).await?;
        let namespace = logs::namespace_dir(&options.state_dir, &options.namespace);
        let log_keeper = LogKeeper::spawn(options.log_limit, move || {
            crate::log_file::in_subdirectories(&namespace, logs::log_path)
        });
        Ok(ContainerdDriver {
            conn,
            options,
            network: None,
            _log_keeper: log_keeper,
        })
    }

    /// The same driver, plumbing containers' network attachments through
    /// `network` (without one, an instance that joins a network fails with `Unsupported`).
    pub fn with_network(mut self, network: zixiao_net::LinuxNetwork) -> Self {
        self.network = Some(network);
        self
    }

    /// The options it was connected with.
    pub fn options(&self) -> &ContainerdOptions {
        &self.options
    }

    /// How this driver's imports unpack layers.
    fn unpack_to(&self) -> images::UnpackTo<'_> {
        images::UnpackTo {
            snapshotter: &self.options.snapshotter,
            max_layer_bytes: self.options.max_layer_bytes,
        }
    }

    /// The containerd container id of `instance` (its id).
    /// Errors: `InvalidArgument` if the id is not a valid containerd id.
    pub fn container_id(instance: &Instance) -> Result<&str, DriverError> {
        if connection::valid_identifier(&instance.id) {
            Ok(&instance.id)
        } else {
            Err(error::invalid(
                "id",
                format!("`{}` is not a valid containerd container id", instance.id),
            ))
        }
    }

    /// The file the instance's stdout and stderr go to.
    pub fn log_path(&self, instance: &Instance) -> PathBuf {
        logs::log_path(&self.instance_dir(&instance.id))
    }

    /// The cgroup path the kernel enforces the instance's limits under,
    /// relative to each cgroup hierarchy's root (`/<namespace>/<id>`, as
    /// containerd places containers by default).
    pub fn cgroups_path(&self, instance: &Instance) -> String {
        format!("/{}/{}", self.options.namespace, instance.id)
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        logs::instance_dir(&self.options.state_dir, &self.options.namespace, id)
    }
}

#[async_trait]
impl Driver for ContainerdDriver {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Container
    }

    fn name(&self) -> &str {
        "containerd"
    }

    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        self.create_container(instance).await
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        self.start_task(instance).await
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError> {
        self.stop_task(instance, grace).await
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        self.delete_container(instance).await
    }

    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError> {
        self.inspect_container(instance).await
    }

    async fn read_log(
        &self,
        instance: &Instance,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        let what = format!("log of instance `{}`", instance.name);
        crate::log_file::read(&self.log_path(instance), &what, offset, max).await
    }

    fn stats(&self) -> Option<&dyn Stats> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn Pause> {
        Some(self)
    }

    fn console(&self) -> Option<&dyn zixiao_core::driver::Console> {
        Some(self)
    }

    fn resize(&self) -> Option<&dyn Resize> {
        Some(self)
    }

    fn images(&self) -> Option<&dyn Images> {
        Some(self)
    }

    fn inventory(&self) -> Option<&dyn Inventory> {
        Some(self)
    }
}

#[async_trait]
impl Stats for ContainerdDriver {
    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError> {
        self.sample(instance).await.map(|s| s.stats)
    }
}

#[async_trait]
impl Pause for ContainerdDriver {
    async fn pause(&self, instance: &Instance) -> Result<(), DriverError> {
        self.pause_task(instance).await
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        self.resume_task(instance).await
    }
}

#[async_trait]
impl Resize for ContainerdDriver {
    async fn resize(&self, instance: &Instance) -> Result<(), DriverError> {
        self.resize_container(instance).await
    }
}

#[async_trait]
impl Images for ContainerdDriver {
    async fn import(
        &self,
        archive: &Path,
        name: Option<&ImageName>,
        progress: &(dyn Fn(ImportProgress) + Send + Sync),
    ) -> Result<Vec<ImageInfo>, DriverError> {
        images::import(&self.conn, &self.unpack_to(), archive, name, progress).await
    }

    async fn pull(
        &self,
        reference: &zixiao_core::model::ImageRef,
        options: &PullOptions,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<ImageInfo, DriverError> {
        let work_dir = self
            .options
            .state_dir
            .join("containerd")
            .join(&self.options.namespace)
            .join("pulls");
        images::pull(
            &self.conn,
            &self.unpack_to(),
            &work_dir,
            reference,
            options,
            progress,
        )
        .await
    }

    async fn list(&self) -> Result<Vec<ImageInfo>, DriverError> {
        images::list(&self.conn).await
    }

    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        images::remove(&self.conn, name).await
    }
}
