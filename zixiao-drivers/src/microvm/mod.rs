//! The microvm driver: microVMs booted straight from a kernel, under one of
//! two monitors chosen per instance and recorded at create:
//!
//! - `vmm`: Zixiao's own KVM monitor (`zixiao-vmm`, one process per microVM),
//!   with pause, stats, console and snapshot/restore (`vmm`);
//! - `qemu`: `qemu-system-x86_64 -M microvm`, with KVM where it is
//!   hardware-backed and software emulation otherwise, controlled over QMP
//!   (`qemu`).
//!
//! `auto` (the default, per node in [`MicrovmOptions::default_backend`],
//! per instance in `spec.backend`) picks `vmm` where KVM is hardware-backed
//! and `qemu` otherwise. Both monitors run detached and outlive the
//! controller; the driver keeps nothing in memory and finds them again in
//! `<state_dir>/microvm/<instance id>/` (see `layout`).
//!
//! Networks: on both backends each attachment is a virtio-net card (with
//! the attachment's MAC) on a persistent TAP device that zixiao-net plugs
//! into the network's bridge at create (removed at delete), and an `ip=`
//! argument on the kernel command line that the guest's init reads; the
//! monitor starts inside the network's namespace, where it attaches to the
//! TAPs by name (QEMU's `-netdev tap`, zixiao-vmm's `nets`). Published
//! ports are checked at create, forwarded at each start and removed at
//! stop and delete (see `crate::net`). A microVM restored from a snapshot
//! cannot join networks yet (its cards name the snapshotted VM's TAPs).
//!
//! Disks (`spec.disks`): raw images of the node's store (or host paths),
//! checked at create, attached as virtio-block devices in spec order
//! before the network cards on both backends; a writable one is the
//! instance's own copy (see `disks`), a read-only one the image itself. A
//! restored or cloned microVM cannot take disks yet (`Unsupported`).
//!
//! Cold migration (`cold`): the writable disks' copies move to another
//! node's microvm driver; the images come from that node's store. Live
//! migration (`live`), of `vmm` microVMs without writable disks: the
//! VMM's pre-copy stream, carried over TCP between the nodes' drivers.

mod clones;
mod cold;
mod disks;
mod kernel;
mod layout;
mod live;
mod plan;
mod process;
mod qemu;
mod resize;
mod snapshots;
mod vmm;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zixiao_core::driver::{Console, ConsoleStream, Images, Inventory, Pause, Snapshots, Stats};
use zixiao_core::model::{ImageKind, NetworkAttachment};
use zixiao_core::{
    Driver, DriverError, Instance, InstanceSpec, InstanceStats, InstanceType, LogChunk,
    MicrovmBackend, RuntimeState,
};
pub use zixiao_vmm::KvmSupport;

pub use layout::Backend;
pub use plan::DEFAULT_CMDLINE;
pub use snapshots::{export_snapshot, SnapshotManifest, MANIFEST_FILE};

use crate::instance_id::InstanceId;
use crate::log_file::LogKeeper;
use crate::node_images::NodeImageStore;
use layout::{InstanceDir, Record, Stage};
use plan::BootPlan;
use qemu::{Accel, QemuBackend};
use vmm::{VmmBackend, VmmBoot};

/// The environment variable naming the `zixiao-vmm` binary.
pub const VMM_BIN_ENV: &str = "ZIXIAO_VMM_BIN";
/// The environment variable naming the QEMU binary (default: `qemu-system-x86_64` on `$PATH`).
pub const QEMU_BIN_ENV: &str = "ZIXIAO_QEMU_BIN";
/// The name of QEMU's x86-64 system emulator.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// How the microvm driver finds its monitors and lays out its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicrovmOptions {
    /// Where per-instance files go: `<state_dir>/microvm/<instance id>/`.
    pub state_dir: PathBuf,
    /// The node's backend for instances that ask for `auto`.
    pub default_backend: MicrovmBackend,
    /// The QEMU binary; `None` finds it (`ZIXIAO_QEMU_BIN`, else `qemu-system-x86_64` on `$PATH`).
    pub qemu_binary: Option<PathBuf>,
    /// The `zixiao-vmm` binary; `None` finds it (`ZIXIAO_VMM_BIN`, next to
    /// this program, one directory up, `$PATH`).
    pub vmm_binary: Option<PathBuf>,
    /// How much of each microVM's console output is kept on disk.
    pub log_limit: crate::LogLimit,
    /// The address other nodes' drivers send live migrations to this node
    /// on (an ephemeral TCP port each); `None`: this node takes none.
    pub migration_address: Option<std::net::IpAddr>,
}

impl MicrovmOptions {
    /// The defaults, with files under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        MicrovmOptions {
            state_dir: state_dir.into(),
            default_backend: MicrovmBackend::Auto,
            qemu_binary: None,
            vmm_binary: None,
            log_limit: crate::LogLimit::default(),
            migration_address: None,
        }
    }

    /// The options of a node's microvm driver under `config`: its files
    /// under `config.state_dir`, its binaries, and the node's default
    /// backend (`config.microvm_backend`, else `ZIXIAO_MICROVM_BACKEND`,
    /// else `auto`). Errors: `InvalidArgument` when the variable names no
    /// backend.
    pub fn from_config(config: &crate::DriverConfig) -> Result<Self, DriverError> {
        let default_backend = match config.microvm_backend {
            Some(backend) => backend,
            None => match std::env::var(crate::MICROVM_BACKEND_ENV) {
                Ok(value) if !value.is_empty() => {
                    value.parse().map_err(|e: zixiao_core::Error| {
                        crate::errors::invalid(crate::MICROVM_BACKEND_ENV, e.to_string())
                    })?
                }
                _ => MicrovmBackend::Auto,
            },
        };
        Ok(MicrovmOptions {
            default_backend,
            qemu_binary: config.qemu_binary.clone(),
            vmm_binary: config.vmm_binary.clone(),
            log_limit: config.log_limit,
            migration_address: config.migration_address(),
            ..MicrovmOptions::new(&config.state_dir)
        })
    }
}

/// The microvm driver (`InstanceType::Microvm`).
///
/// ```no_run
/// # async fn demo() -> Result<(), zixiao_core::DriverError> {
/// use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
/// let driver = MicrovmDriver::new(MicrovmOptions::new("/var/lib/zixiao"))?;
/// println!("qemu: {:?}, vmm: {:?}", driver.qemu_binary(), driver.vmm_binary());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MicrovmDriver {
    options: MicrovmOptions,
    qemu: Result<QemuBackend, String>,
    vmm: Result<VmmBackend, String>,
    kvm: KvmSupport,
    host: (u32, u64),
    network: Option<zixiao_net::LinuxNetwork>,
    /// The node's disks, kernels and initrds, which specs name.
    images: NodeImageStore,
    /// Trims the microVMs' console logs while the driver lives.
    _log_keeper: Option<Arc<LogKeeper>>,
    /// The live migrations this node is prepared to receive.
    incoming: live::IncomingListeners,
}

impl MicrovmDriver {
    /// Finds the monitors and checks KVM. Errors: `Unsupported` when
    /// neither monitor can run here, saying what is missing for each.
    pub fn new(options: MicrovmOptions) -> Result<MicrovmDriver, DriverError> {
        let kvm = zixiao_vmm::kvm_support();
        let accel = match kvm {
            KvmSupport::Hardware => Accel::Kvm,
            _ => Accel::Tcg,
        };
        let qemu =
            find_qemu(options.qemu_binary.as_deref()).map(|binary| QemuBackend { binary, accel });
        let vmm = vmm::find_binary(options.vmm_binary.as_deref()).and_then(|binary| match &kvm {
            KvmSupport::Absent(why) => Err(format!("/dev/kvm is not usable: {why}")),
            _ => Ok(VmmBackend { binary }),
        });
        if let (Err(no_qemu), Err(no_vmm)) = (&qemu, &vmm) {
            return Err(DriverError::Unsupported(format!(
                "no microvm runtime: {no_qemu}; and {no_vmm}"
            )));
        }
        let root = layout::root(&options.state_dir);
        let log_keeper = LogKeeper::spawn(options.log_limit, move || {
            crate::log_file::in_subdirectories(&root, |path| {
                let dir = InstanceDir {
                    path: path.to_owned(),
                };
                match dir.record().ok().flatten().map(|r| r.backend) {
                    Some(Backend::Vmm) => vmm::console_log(&dir),
                    _ => qemu::console_log(&dir),
                }
            })
        });
        Ok(MicrovmDriver {
            images: NodeImageStore::new(&options.state_dir),
            options,
            qemu,
            vmm,
            kvm,
            host: process::host_capacity(),
            network: None,
            _log_keeper: log_keeper,
            incoming: live::IncomingListeners::default(),
        })
    }

    /// The same driver, plugging microVMs' network attachments into
    /// `network`'s bridges through TAP devices (without one, a microVM that
    /// joins a network fails with `Unsupported`).
    pub fn with_network(mut self, network: zixiao_net::LinuxNetwork) -> Self {
        self.network = Some(network);
        self
    }

    /// The options it was made with.
    pub fn options(&self) -> &MicrovmOptions {
        &self.options
    }

    /// The QEMU binary, or why the qemu backend cannot run here.
    pub fn qemu_binary(&self) -> Result<&Path, &str> {
        self.qemu
            .as_ref()
            .map(|q| q.binary.as_path())
            .map_err(String::as_str)
    }

    /// The `zixiao-vmm` binary, or why the vmm backend cannot run here.
    pub fn vmm_binary(&self) -> Result<&Path, &str> {
        self.vmm
            .as_ref()
            .map(|v| v.binary.as_path())
            .map_err(String::as_str)
    }

    /// What KVM offers on this node.
    pub fn kvm_support(&self) -> &KvmSupport {
        &self.kvm
    }

    /// The directory of the instance's files.
    pub fn instance_dir(&self, instance: &Instance) -> PathBuf {
        layout::root(&self.options.state_dir).join(&instance.id)
    }

    /// The file the instance's serial console is appended to.
    pub fn console_log_path(&self, instance: &Instance) -> PathBuf {
        let dir = InstanceDir {
            path: self.instance_dir(instance),
        };
        self.console_log(&dir)
    }

    fn console_log(&self, dir: &InstanceDir) -> PathBuf {
        match self.recorded(dir).unwrap_or(Backend::Qemu) {
            Backend::Qemu => qemu::console_log(dir),
            Backend::Vmm => vmm::console_log(dir),
        }
    }

    /// The backend that runs (or would run) `instance`: its record, else
    /// `spec.backend`, else the node default, else `vmm` where KVM is
    /// hardware-backed and the VMM is present and `qemu` otherwise.
    /// Errors: `Unsupported` when the chosen monitor cannot run here.
    pub fn backend_of(&self, instance: &Instance) -> Result<Backend, DriverError> {
        if let Some(recorded) = self.dir(instance).ok().and_then(|d| self.recorded(&d)) {
            return Ok(recorded);
        }
        self.choose(instance)
    }

    /// The instance's directory. Errors: `InvalidArgument` on `id` when the
    /// id is not a UUID, so no id ever reaches outside the state directory.
    fn dir(&self, instance: &Instance) -> Result<InstanceDir, DriverError> {
        let id = InstanceId::try_from(instance.id.as_str())?;
        Ok(InstanceDir::new(&self.options.state_dir, &id))
    }

    fn recorded(&self, dir: &InstanceDir) -> Option<Backend> {
        dir.record().ok().flatten().map(|r| r.backend)
    }

    fn choose(&self, instance: &Instance) -> Result<Backend, DriverError> {
        self.choose_for(&instance.spec)
    }

    fn choose_for(&self, spec: &InstanceSpec) -> Result<Backend, DriverError> {
        let wanted = match (spec.backend, self.options.default_backend) {
            (MicrovmBackend::Auto, node) => node,
            (asked, _) => asked,
        };
        let backend = match wanted {
            MicrovmBackend::Vmm => Backend::Vmm,
            MicrovmBackend::Qemu => Backend::Qemu,
            // A restore needs the VMM; otherwise the VMM only where KVM is
            // fast enough to boot a real kernel, QEMU where it is present.
            MicrovmBackend::Auto if spec.restore_from.is_some() => Backend::Vmm,
            MicrovmBackend::Auto => match (&self.kvm, &self.vmm, &self.qemu) {
                (KvmSupport::Hardware, Ok(_), _) | (_, Ok(_), Err(_)) => Backend::Vmm,
                _ => Backend::Qemu,
            },
        };
        match backend {
            Backend::Qemu => self.qemu_backend().map(|_| backend),
            Backend::Vmm => self.vmm_backend().map(|_| backend),
        }
    }

    fn qemu_backend(&self) -> Result<&QemuBackend, DriverError> {
        self.qemu.as_ref().map_err(|why| {
            DriverError::Unsupported(format!("the qemu backend cannot run on this node: {why}"))
        })
    }

    fn vmm_backend(&self) -> Result<&VmmBackend, DriverError> {
        self.vmm.as_ref().map_err(|why| {
            DriverError::Unsupported(format!("the vmm backend cannot run on this node: {why}"))
        })
    }

    /// The instance's directory and backend; `NotFound` when it was never created here.
    fn existing(&self, instance: &Instance) -> Result<(InstanceDir, Backend), DriverError> {
        self.existing_record(instance)
            .map(|(dir, record)| (dir, record.backend))
    }

    /// The instance's directory and record; `NotFound` when it was never created here.
    fn existing_record(&self, instance: &Instance) -> Result<(InstanceDir, Record), DriverError> {
        let dir = self.dir(instance)?;
        match dir.record()? {
            Some(record) => Ok((dir, record)),
            None => Err(DriverError::NotFound(format!(
                "microVM of instance `{}` on this node",
                instance.name
            ))),
        }
    }

    /// What a fresh boot of `instance` on `backend` needs, checked.
    fn boot_plan(&self, instance: &Instance, backend: Backend) -> Result<BootPlan, DriverError> {
        let resolved = Instance {
            spec: self.resolved(&instance.spec)?,
            ..instance.clone()
        };
        plan::plan(
            &resolved,
            self.host,
            backend,
            &disks::dir(&self.dir(instance)?),
        )
    }

    /// `spec` with its kernel, initrd and disk image names replaced by the
    /// node store's files. Errors: `NotFound` naming the field (no such
    /// image on this node), `InvalidArgument`.
    fn resolved(&self, spec: &InstanceSpec) -> Result<InstanceSpec, DriverError> {
        let mut spec = spec.clone();
        if let Some(kernel) = &spec.kernel {
            spec.kernel = Some(
                self.images
                    .resolve("spec.kernel", ImageKind::Kernel, kernel)?,
            );
        }
        if let Some(initrd) = &spec.initrd {
            spec.initrd = Some(
                self.images
                    .resolve("spec.initrd", ImageKind::Initrd, initrd)?,
            );
        }
        for (i, disk) in spec.disks.iter_mut().enumerate() {
            let field = zixiao_core::model::disk_field(i);
            let path = self
                .images
                .resolve(&field, ImageKind::Disk, Path::new(&disk.image))?;
            disk.image = path
                .into_os_string()
                .into_string()
                .map_err(|_| crate::errors::invalid(&field, "the image's path is not UTF-8"))?;
        }
        Ok(spec)
    }

    /// Checks a microVM create of `spec` before it is stored: everything
    /// its create would check first (the backend it would run on, its
    /// kernel, initrd, command line and sizes against their files, the
    /// backend and this host, or the snapshot a restore resumes), so a
    /// request that cannot boot here is refused at once, with the field
    /// named, and leaves nothing behind. Networks are not allocated yet:
    /// each counts with the longest `ip=` argument it could add. Reads
    /// only the files' headers.
    ///
    /// Errors: `InvalidArgument` naming the field (a disk that is not a
    /// raw image), `NotFound` (a kernel, initrd, disk or snapshot
    /// directory that is not on this node),
    /// `Unsupported` (the backend cannot run here, or cannot join
    /// networks), `ResourceExhausted` (more than this host has).
    pub fn check_create(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let backend = self.choose_for(spec)?;
        if let Some(from) = &spec.restore_from {
            if backend == Backend::Qemu {
                return Err(crate::errors::invalid(
                    "spec.restore_from",
                    "restoring a snapshot needs the vmm backend",
                ));
            }
            if !spec.networks.is_empty() {
                return Err(restore_has_no_network());
            }
            if !spec.disks.is_empty() {
                return Err(restore_has_no_disks());
            }
            plan::check_vsock(spec, backend)?;
            return snapshots::check_restore(from, spec);
        }
        let cmdline = (0..spec.networks.len())
            .map(|i| format!("ip=255.255.255.255::255.255.255.255:255.255.255.255::eth{i}:off"))
            .fold(
                spec.cmdline
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CMDLINE.to_owned()),
                |line, arg| format!("{line} {arg}"),
            );
        plan::check(&self.resolved(spec)?, &cmdline, backend, self.host)
    }

    /// Creates the microVM: checks everything, writes the record with
    /// stage `Launching` (write-ahead: the backend and the TAPs are named
    /// before either exists), plugs the TAPs, launches the monitor with
    /// vCPUs stopped, then marks the record `Created`. A record left at
    /// `Launching` by a create cut off (`kill -9`) is completed instead.
    async fn create_microvm(&self, instance: &Instance) -> Result<(), DriverError> {
        let dir = self.dir(instance)?;
        if let Some(record) = dir.record()? {
            return match record.stage {
                Stage::Created => Ok(()),
                Stage::Launching => self.finish_create(instance, &dir, record).await,
            };
        }
        let backend = self.choose(instance)?;
        // Everything the user can get wrong is checked before anything is written.
        self.network_for(instance, backend)?;
        crate::net::check_ports(self.network.as_ref(), instance, DRIVER).await?;
        let plan = self.create_plan(instance, backend)?;
        dir.check_socket_paths(instance.spec.vsock.is_some())?;
        std::fs::create_dir_all(&dir.path)
            .map_err(|e| crate::errors::io(format!("create {}", dir.path.display()), e))?;
        let record = Record {
            id: instance.id.clone(),
            name: instance.name.clone(),
            backend,
            stage: Stage::Launching,
            attachments: instance.attachments.clone(),
        };
        if let Err(e) = dir.write_record(&record) {
            let _ = dir.remove().await;
            return Err(e);
        }
        self.launch_recorded(instance, &dir, record, plan.as_ref())
            .await
    }

    /// What a create boots on `backend`: a checked boot plan, or `None` for
    /// a restore (its snapshot checked). Errors: as `create`.
    fn create_plan(
        &self,
        instance: &Instance,
        backend: Backend,
    ) -> Result<Option<BootPlan>, DriverError> {
        match &instance.spec.restore_from {
            Some(_) if backend == Backend::Qemu => Err(crate::errors::invalid(
                "spec.restore_from",
                "restoring a snapshot needs the vmm backend",
            )),
            Some(_) if !instance.spec.disks.is_empty() => Err(restore_has_no_disks()),
            Some(from) => snapshots::check_restore(from, &instance.spec).map(|()| None),
            None => self.boot_plan(instance, backend).map(Some),
        }
    }

    /// Plugs the TAPs and launches the monitor of a record at `Launching`,
    /// then marks it `Created`. On failure everything of the instance on
    /// this node goes: nothing of it was created yet (its record said
    /// `Launching`), so nothing an earlier successful create made is lost.
    async fn launch_recorded(
        &self,
        instance: &Instance,
        dir: &InstanceDir,
        record: Record,
        plan: Option<&BootPlan>,
    ) -> Result<(), DriverError> {
        let made = async {
            // On both backends the TAPs exist, plugged, before the monitor
            // attaches to them inside the network's namespace.
            let network = self
                .plug(instance, record.backend, &record.attachments)
                .await?;
            if let Some(plan) = plan {
                disks::make_copies(&plan.disks).await?;
            }
            match record.backend {
                Backend::Qemu => {
                    let plan = plan.ok_or_else(|| {
                        crate::errors::invalid(
                            "spec.restore_from",
                            "restoring a snapshot needs the vmm backend",
                        )
                    })?;
                    self.qemu_backend()?
                        .launch(&instance.name, dir, plan, network)
                        .await?
                }
                Backend::Vmm => {
                    let boot = match (&instance.spec.restore_from, plan) {
                        (Some(from), _) => VmmBoot::Restore(from),
                        (None, Some(plan)) => VmmBoot::Fresh(plan),
                        (None, None) => {
                            return Err(DriverError::FailedPrecondition(
                                "the microVM has neither a kernel nor a snapshot to boot"
                                    .to_owned(),
                            ))
                        }
                    };
                    self.vmm_backend()?.launch(dir, boot, network).await?
                }
            }
            dir.write_record(&Record {
                stage: Stage::Created,
                ..record.clone()
            })
        }
        .await;
        if let Err(e) = made {
            self.remove_everything(&instance.id, dir, Some(record.backend), &record.attachments)
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// Completes a create that was cut off after it wrote its record: the
    /// monitor it launched is adopted when it runs and answers, else what
    /// it left is killed and the monitor launched again.
    async fn finish_create(
        &self,
        instance: &Instance,
        dir: &InstanceDir,
        record: Record,
    ) -> Result<(), DriverError> {
        let adopted = match record.backend {
            Backend::Qemu => self.qemu_backend()?.adopt(dir).await,
            Backend::Vmm => self.vmm_backend()?.adopt(dir).await,
        };
        if adopted {
            return dir.write_record(&Record {
                stage: Stage::Created,
                ..record
            });
        }
        process::kill_monitors(&dir.path, &[]).await;
        let plan = match self.create_plan(instance, record.backend) {
            Ok(plan) => plan,
            Err(e) => {
                self.remove_everything(&instance.id, dir, None, &record.attachments)
                    .await;
                return Err(e);
            }
        };
        self.launch_recorded(instance, dir, record, plan.as_ref())
            .await
    }

    /// Stops every monitor of the microVM at once, removes its TAPs and its
    /// directory; `backend` first asks that backend to stop it (a quit,
    /// then a kill). Best effort: used where an error is already on its way.
    async fn remove_everything(
        &self,
        id: &str,
        dir: &InstanceDir,
        backend: Option<Backend>,
        attachments: &[NetworkAttachment],
    ) {
        if let Some(backend) = backend {
            self.destroy(dir, backend).await;
        }
        process::kill_monitors(&dir.path, &[]).await;
        let _ = self.unplug(id, attachments).await;
        let _ = dir.remove().await;
    }

    /// The host network that plugs `instance`'s attachments (TAPs, on
    /// either backend); `None` without attachments. Errors: `Unsupported`
    /// (no host network on this node, or a restore that would join
    /// networks).
    fn network_for(
        &self,
        instance: &Instance,
        _backend: Backend,
    ) -> Result<Option<&zixiao_net::LinuxNetwork>, DriverError> {
        if instance.attachments.is_empty() {
            return Ok(None);
        }
        if instance.spec.restore_from.is_some() {
            return Err(restore_has_no_network());
        }
        self.network.as_ref().map(Some).ok_or_else(|| {
            DriverError::Unsupported(format!(
                "spec.networks: microVM `{}` joins networks, but this node's microvm driver has \
                 no host network (no netlink socket)",
                instance.name
            ))
        })
    }

    /// Plugs the TAPs of `attachments` of `instance` on `backend` (see
    /// [`Self::network_for`]) and returns the host network they are on;
    /// `None` without attachments. Idempotent. Errors: as `network_for`,
    /// and zixiao-net's `attach_tap`.
    async fn plug(
        &self,
        instance: &Instance,
        backend: Backend,
        attachments: &[NetworkAttachment],
    ) -> Result<Option<&zixiao_net::LinuxNetwork>, DriverError> {
        let network = self.network_for(instance, backend)?;
        if let Some(network) = network {
            network
                .attach_tap(&instance.id, attachments)
                .await
                .map_err(|e| crate::net::net_error("plug the microVM's TAP devices", e))?;
        }
        Ok(network)
    }

    /// Removes the published ports and the TAP devices of `attachments` of
    /// instance `id`. Idempotent.
    async fn unplug(&self, id: &str, attachments: &[NetworkAttachment]) -> Result<(), DriverError> {
        crate::net::unpublish_ports(self.network.as_ref(), id, attachments).await?;
        match &self.network {
            Some(network) if !attachments.is_empty() => network
                .detach_tap(id, attachments)
                .await
                .map_err(|e| crate::net::net_error("remove the microVM's TAP devices", e)),
            _ => Ok(()),
        }
    }

    /// Stops the monitor at once, whatever it is doing.
    async fn destroy(&self, dir: &InstanceDir, backend: Backend) {
        match backend {
            Backend::Qemu => {
                if let Ok(qemu) = self.qemu_backend() {
                    qemu.destroy(dir).await;
                }
            }
            Backend::Vmm => {
                if let Ok(vmm) = self.vmm_backend() {
                    let _ = vmm.stop(dir, Duration::ZERO).await;
                }
            }
        }
    }
}

/// The driver, as messages name it.
const DRIVER: &str = "microvm driver";

/// Why a microVM restored from a snapshot cannot join a network: the
/// snapshot's network cards name the TAPs of the microVM it was taken
/// from, and re-pointing them at the new instance's TAPs is not done yet.
fn restore_has_no_network() -> DriverError {
    DriverError::Unsupported(
        "spec.networks: a microVM restored from a snapshot cannot join networks yet (its \
         network cards would still name the snapshotted microVM's TAP devices)"
            .to_owned(),
    )
}

/// Why a microVM restored from a snapshot (or a clone) cannot take disks:
/// the snapshot's block devices name the files of the microVM it was taken
/// from, which the restored one would then write to.
fn restore_has_no_disks() -> DriverError {
    DriverError::Unsupported(
        "spec.disks: a microVM restored from a snapshot (or cloned) cannot take disks yet (its \
         block devices would still name the snapshotted microVM's disk files)"
            .to_owned(),
    )
}

/// Finds QEMU: `configured`, else `ZIXIAO_QEMU_BIN`, else `qemu-system-x86_64` on `$PATH`.
fn find_qemu(configured: Option<&Path>) -> Result<PathBuf, String> {
    let configured = configured.map(Path::to_owned).or_else(|| {
        std::env::var_os(QEMU_BIN_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    match configured {
        Some(path) if qemu::is_executable(&path) => Ok(path),
        Some(path) => Err(format!(
            "QEMU at {} is not an executable file",
            path.display()
        )),
        None => search_path(QEMU_BINARY)
            .into_iter()
            .find(|c| qemu::is_executable(c))
            .ok_or_else(|| {
                format!("{QEMU_BINARY} is not on PATH (install Debian's qemu-system-x86)")
            }),
    }
}

/// `name` in every directory of `$PATH`.
fn search_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|d| d.join(name)).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Driver for MicrovmDriver {
    fn instance_type(&self) -> InstanceType {
        InstanceType::Microvm
    }

    fn name(&self) -> &str {
        "microvm"
    }

    fn runtime_of(&self, instance: &Instance) -> String {
        match self.backend_of(instance) {
            Ok(backend) => backend.as_str().to_owned(),
            Err(_) => self.name().to_owned(),
        }
    }

    /// `vsock.sock` in the VMM's run directory, for a microVM whose spec
    /// has a vsock device (only the vmm backend runs one).
    fn vsock_of(&self, instance: &Instance) -> Option<zixiao_core::model::VsockEndpoint> {
        let cid = instance.spec.vsock?.cid;
        let dir = self.dir(instance).ok()?;
        (self.backend_of(instance).ok()? == Backend::Vmm).then(|| {
            zixiao_core::model::VsockEndpoint {
                socket: vmm::vsock_socket(&dir),
                cid,
            }
        })
    }

    /// Registry references in the spec are pulled into the node's store
    /// first, as the spec's pull policy says.
    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        self.images
            .pull_for(&instance.spec, &Default::default())
            .await?;
        match &instance.clone_of {
            Some(origin) => {
                use zixiao_core::driver::Clones as _;
                self.create_clone(instance, origin).await
            }
            None => self.create_microvm(instance).await,
        }
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        let instance = &*self.as_restored(instance)?;
        let (dir, record) = self.existing_record(instance)?;
        let backend = record.backend;
        if record.stage == Stage::Launching {
            self.finish_create(instance, &dir, record).await?;
        }
        // A relaunch after an exit boots the spec again: check it again.
        let exited = matches!(self.inspect(instance).await?, RuntimeState::Exited { .. });
        let plan = if exited && instance.spec.restore_from.is_none() {
            Some(self.boot_plan(instance, backend)?)
        } else {
            None
        };
        // Only a relaunch needs the network: the TAPs outlive the monitor,
        // but may be gone (a host reboot).
        let network = match &plan {
            Some(_) => self.plug(instance, backend, &instance.attachments).await?,
            None => None,
        };
        // Before the guest runs: refused here when a host port was taken
        // since the create.
        crate::net::publish_ports(self.network.as_ref(), instance, DRIVER).await?;
        match backend {
            Backend::Qemu => {
                self.qemu_backend()?
                    .start(&instance.name, &dir, plan.as_ref(), network)
                    .await
            }
            Backend::Vmm => {
                let boot = match &instance.spec.restore_from {
                    Some(from) => Some(VmmBoot::Restore(from)),
                    None => plan.as_ref().map(VmmBoot::Fresh),
                };
                self.vmm_backend()?.start(&dir, boot, network).await
            }
        }
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError> {
        let dir = self.dir(instance)?;
        let Some(record) = dir.record()? else {
            return Ok(());
        };
        if record.stage == Stage::Launching {
            // Never started: nothing to shut down gracefully.
            process::kill_monitors(&dir.path, &[]).await;
            return Ok(());
        }
        match record.backend {
            Backend::Qemu => {
                self.qemu_backend()?.stop(&dir, grace).await?;
                crate::net::unpublish_instance(self.network.as_ref(), instance).await
            }
            Backend::Vmm => {
                self.vmm_backend()?.stop(&dir, grace).await?;
                crate::net::unpublish_instance(self.network.as_ref(), instance).await
            }
        }
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        let dir = self.dir(instance)?;
        let record = dir.record()?;
        if let Some(record) = &record {
            self.destroy(&dir, record.backend).await;
            self.unplug(&instance.id, &record.attachments).await?;
        }
        // Anything a cut-off call launched that no pid file names.
        process::kill_monitors(&dir.path, &[]).await;
        self.unplug(&instance.id, &instance.attachments).await?;
        dir.remove().await
    }

    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError> {
        let dir = self.dir(instance)?;
        let Some(record) = dir.record()? else {
            return Ok(RuntimeState::Missing);
        };
        if record.stage == Stage::Launching {
            // A create that was cut off has not created it (yet).
            return Ok(RuntimeState::Missing);
        }
        match record.backend {
            Backend::Qemu => self.qemu_backend()?.inspect(&dir).await,
            Backend::Vmm => {
                live::settle_arrival(&dir).await;
                self.vmm_backend()?.inspect(&dir).await
            }
        }
    }

    async fn read_log(
        &self,
        instance: &Instance,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        let what = format!("console log of instance `{}`", instance.name);
        let dir = self.dir(instance)?;
        crate::log_file::read(&self.console_log(&dir), &what, offset, max).await
    }

    fn stats(&self) -> Option<&dyn Stats> {
        Some(self)
    }

    fn console(&self) -> Option<&dyn Console> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn Pause> {
        Some(self)
    }

    /// Memory down (by the balloon) on the vmm backend (see `resize`).
    fn resize(&self) -> Option<&dyn zixiao_core::driver::Resize> {
        Some(self)
    }

    fn snapshots(&self) -> Option<&dyn Snapshots> {
        Some(self)
    }

    fn images(&self) -> Option<&dyn Images> {
        Some(&self.images)
    }

    fn inventory(&self) -> Option<&dyn Inventory> {
        Some(self)
    }

    fn clones(&self) -> Option<&dyn zixiao_core::driver::Clones> {
        Some(self)
    }

    fn cold_migrate(&self) -> Option<&dyn zixiao_core::driver::ColdMigrate> {
        Some(self)
    }

    /// For `vmm` microVMs; the others are refused with `Unsupported` (see `live`).
    fn live_migrate(&self) -> Option<&dyn zixiao_core::driver::LiveMigrate> {
        Some(self)
    }
}

/// What the microvm driver holds of an instance on this node: its
/// directory under `<state_dir>/microvm/` and the monitor processes (QEMU,
/// its wrapper, zixiao-vmm) whose command lines run in it.
#[async_trait]
impl Inventory for MicrovmDriver {
    async fn instance_ids(&self) -> Result<BTreeSet<String>, DriverError> {
        let root = layout::root(&self.options.state_dir);
        let mut ids: BTreeSet<String> =
            process::monitors(&root).into_iter().map(|m| m.id).collect();
        match std::fs::read_dir(&root) {
            Ok(entries) => ids.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::errors::io(format!("list {}", root.display()), e)),
        }
        // Only what `remove_orphan` could remove: a stray file is no instance.
        ids.retain(|id| InstanceId::try_from(id.as_str()).is_ok());
        Ok(ids)
    }

    async fn remove_orphan(&self, id: &str) -> Result<(), DriverError> {
        let id = InstanceId::try_from(id)?;
        let dir = InstanceDir::new(&self.options.state_dir, &id);
        // A damaged record still leaves the monitors and the directory to remove.
        let attachments = dir
            .record()
            .ok()
            .flatten()
            .map(|r| r.attachments)
            .unwrap_or_default();
        process::kill_monitors(&dir.path, &[]).await;
        self.unplug(id.as_str(), &attachments).await?;
        dir.remove().await
    }
}

#[async_trait]
impl Stats for MicrovmDriver {
    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError> {
        let (dir, backend) = self.existing(instance)?;
        match backend {
            Backend::Qemu => {
                self.qemu_backend()?
                    .stats(&dir, instance.spec.memory_mib)
                    .await
            }
            Backend::Vmm => self.vmm_backend()?.stats(&dir).await,
        }
    }
}

#[async_trait]
impl Pause for MicrovmDriver {
    async fn pause(&self, instance: &Instance) -> Result<(), DriverError> {
        let (dir, backend) = self.existing(instance)?;
        match backend {
            Backend::Qemu => self.qemu_backend()?.pause(&dir).await,
            Backend::Vmm => self.vmm_backend()?.pause(&dir).await,
        }
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        let (dir, backend) = self.existing(instance)?;
        match backend {
            Backend::Qemu => self.qemu_backend()?.resume(&dir).await,
            Backend::Vmm => self.vmm_backend()?.resume(&dir).await,
        }
    }
}

#[async_trait]
impl Console for MicrovmDriver {
    async fn attach(&self, instance: &Instance) -> Result<ConsoleStream, DriverError> {
        let (dir, backend) = self.existing(instance)?;
        match backend {
            Backend::Qemu => self.qemu_backend()?.attach(&dir).await,
            Backend::Vmm => self.vmm_backend()?.attach(&dir).await,
        }
    }
}
