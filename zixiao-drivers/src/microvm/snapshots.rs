//! Snapshots of microVMs run by the `vmm` backend: guest memory and device
//! state in `<instance dir>/snapshots/<name>/` (the VMM's versioned files
//! plus [`MANIFEST_FILE`], which says what the guest was booted with), revert
//! into a fresh VMM, export to a directory of the user's, and the checks a
//! restore (`spec.restore_from`) passes before anything starts. The qemu
//! backend takes no snapshots: it answers `Unsupported`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zixiao_core::driver::{SnapshotInfo, Snapshots};
use zixiao_core::model::SnapshotName;
use zixiao_core::{
    Driver, DriverError, Instance, InstanceSpec, InstanceStatus, InstanceType, RuntimeState,
};

use super::layout::{Backend, InstanceDir};
use super::vmm::VmmBoot;
use super::MicrovmDriver;
use crate::errors::{invalid, io};
use crate::instance_id::InstanceId;

/// The file in a snapshot directory that describes the guest.
pub const MANIFEST_FILE: &str = "zixiao-snapshot.json";
/// The manifest's format version.
const MANIFEST_VERSION: u32 = 1;
/// The file naming the snapshot an instance last took or reverted to.
const CURRENT_FILE: &str = "current";
/// The largest manifest read: it is a few hundred bytes.
const MAX_MANIFEST: u64 = 64 * 1024;
/// zixiao-vmm's files in a snapshot directory (its format versions 1 and 2
/// alike: only `memory_bytes` and `config` are read here).
const VMM_STATE_FILE: &str = "state.json";
const VMM_MEMORY_FILE: &str = "memory.bin";
/// The largest VMM state read: registers and device state, some KiB.
const MAX_VMM_STATE: u64 = 16 * 1024 * 1024;

/// What a restore needs of zixiao-vmm's `state.json`: the guest's size.
#[derive(Debug, Deserialize)]
struct VmmSnapshotState {
    memory_bytes: u64,
    config: VmmSnapshotConfig,
}

#[derive(Debug, Deserialize)]
struct VmmSnapshotConfig {
    vcpus: u8,
    memory_mib: u64,
    /// Absent in states written before the VMM had a vsock device.
    #[serde(default)]
    vsock: Option<zixiao_vmm::VsockConfig>,
}

/// Reads a regular file of at most `max` bytes without blocking on a FIFO
/// or a device; the reason it cannot, otherwise.
fn read_bounded(path: &Path, field: &str, max: u64) -> Result<Vec<u8>, String> {
    zixiao_core::files::read_regular(path, field, max).map_err(|e| match e {
        zixiao_core::Error::InvalidArgument { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// What a snapshot directory holds besides the VMM's state: the guest it
/// was taken of, so a restore can be scheduled with the same size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// The manifest's format version.
    pub version: u32,
    /// The snapshot's name.
    pub name: String,
    /// The instance it was taken of.
    pub instance: String,
    /// The kernel the guest booted.
    pub kernel: Option<PathBuf>,
    /// The initrd it booted with.
    pub initrd: Option<PathBuf>,
    /// Its command line.
    pub cmdline: Option<String>,
    /// Its vCPUs.
    pub cpus: u32,
    /// Its memory in MiB.
    pub memory_mib: u64,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// Its vsock device's guest CID, if it has one (none in manifests
    /// written before microVMs could have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_cid: Option<u32>,
}

impl SnapshotManifest {
    /// Reads the manifest of the snapshot in `dir` (a regular file of at
    /// most 64 KiB). Errors: `NotFound` (no such
    /// directory), `InvalidArgument` on `field` (not a microVM snapshot).
    pub fn read(dir: &Path, field: &str) -> Result<SnapshotManifest, DriverError> {
        if !dir.is_dir() {
            return Err(DriverError::NotFound(format!(
                "snapshot directory {}",
                dir.display()
            )));
        }
        let path = dir.join(MANIFEST_FILE);
        let bytes = read_bounded(&path, field, MAX_MANIFEST).map_err(|reason| {
            invalid(
                field,
                format!(
                    "{} is not a microVM snapshot ({MANIFEST_FILE}: {reason})",
                    dir.display()
                ),
            )
        })?;
        let manifest: SnapshotManifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(field, format!("{} is damaged: {e}", path.display())))?;
        if manifest.version != MANIFEST_VERSION {
            return Err(invalid(
                field,
                format!(
                    "{} has format version {}, this build reads {MANIFEST_VERSION}",
                    path.display(),
                    manifest.version
                ),
            ));
        }
        Ok(manifest)
    }

    /// Reads the manifest of the snapshot in `dir` and checks it against
    /// the snapshot itself: the vCPUs and memory it claims are those of
    /// the VMM's state (`state.json`) and memory image (`memory.bin`). A
    /// restore is scheduled by the manifest's sizes, so an edited manifest
    /// must not pass. Errors: those of [`SnapshotManifest::read`];
    /// `InvalidArgument` on `field` naming what disagrees.
    pub fn read_checked(dir: &Path, field: &str) -> Result<SnapshotManifest, DriverError> {
        let manifest = SnapshotManifest::read(dir, field)?;
        let damaged = |what: String| {
            invalid(
                field,
                format!(
                    "{} does not match its snapshot: {what} (the manifest was edited, or the \
                     snapshot is damaged)",
                    dir.join(MANIFEST_FILE).display()
                ),
            )
        };
        let state_path = dir.join(VMM_STATE_FILE);
        let state = read_bounded(&state_path, field, MAX_VMM_STATE)
            .and_then(|bytes| {
                serde_json::from_slice::<VmmSnapshotState>(&bytes).map_err(|e| e.to_string())
            })
            .map_err(|reason| damaged(format!("{VMM_STATE_FILE}: {reason}")))?;
        let memory_len = std::fs::symlink_metadata(dir.join(VMM_MEMORY_FILE))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .ok_or_else(|| damaged(format!("{VMM_MEMORY_FILE} is missing")))?;
        let claimed = manifest.memory_mib.saturating_mul(1 << 20);
        if claimed != memory_len || claimed != state.memory_bytes {
            return Err(damaged(format!(
                "it says {} MiB of memory, the memory image holds {} MiB ({VMM_MEMORY_FILE}) \
                 and the VMM's state {} MiB",
                manifest.memory_mib,
                memory_len >> 20,
                state.memory_bytes >> 20
            )));
        }
        if u64::from(manifest.cpus) != u64::from(state.config.vcpus)
            || state.config.memory_mib != manifest.memory_mib
        {
            return Err(damaged(format!(
                "it says {} vCPUs and {} MiB, the VMM's state {} vCPUs and {} MiB",
                manifest.cpus, manifest.memory_mib, state.config.vcpus, state.config.memory_mib
            )));
        }
        let vsock_cid = state.config.vsock.as_ref().map(|v| v.guest_cid.get());
        if manifest.vsock_cid != vsock_cid {
            return Err(damaged(format!(
                "it says vsock CID {:?}, the VMM's state {vsock_cid:?}",
                manifest.vsock_cid
            )));
        }
        Ok(manifest)
    }

    /// The spec of a new instance resuming from the snapshot in `dir`: the
    /// guest's kernel, size, command line and vsock device, on the vmm
    /// backend.
    pub fn restore_spec(&self, dir: &Path) -> InstanceSpec {
        let mut spec = InstanceSpec::empty(InstanceType::Microvm, self.cpus, self.memory_mib);
        spec.kernel = self.kernel.clone();
        spec.initrd = self.initrd.clone();
        spec.cmdline = self.cmdline.clone();
        spec.backend = zixiao_core::MicrovmBackend::Vmm;
        spec.restore_from = Some(dir.to_owned());
        spec.vsock = self.vsock_cid.and_then(|cid| {
            Some(zixiao_core::model::VsockSpec {
                cid: cid.try_into().ok()?,
            })
        });
        spec
    }

    fn info(&self, current: bool) -> SnapshotInfo {
        SnapshotInfo {
            name: self.name.clone(),
            created_at: Some(self.created_at),
            includes_memory: true,
            current,
        }
    }
}

/// Checks that `from` is a snapshot `spec` can resume from: its manifest
/// agrees with its files, and its guest has the vCPUs and memory the spec
/// asks for (the scheduler reserved those).
pub(crate) fn check_restore(from: &Path, spec: &InstanceSpec) -> Result<(), DriverError> {
    let manifest = SnapshotManifest::read_checked(from, "spec.restore_from")?;
    if zixiao_core::Cpus::cores(manifest.cpus) != spec.cpus {
        return Err(invalid(
            "spec.cpus",
            format!(
                "the snapshot's guest has {} vCPUs, the spec asks for {}",
                manifest.cpus, spec.cpus
            ),
        ));
    }
    if manifest.memory_mib != spec.memory_mib {
        return Err(invalid(
            "spec.memory_mib",
            format!(
                "the snapshot's guest has {} MiB, the spec asks for {}",
                manifest.memory_mib, spec.memory_mib
            ),
        ));
    }
    // The restored VMM gets the snapshot's device, whatever the spec says:
    // the spec must say the same, so `instance get` tells the truth.
    let asked = spec.vsock.map(|v| v.cid.get());
    if manifest.vsock_cid != asked {
        let has = |cid: Option<u32>| match cid {
            Some(cid) => format!("a vsock device with CID {cid}"),
            None => "no vsock device".to_owned(),
        };
        return Err(invalid(
            "spec.vsock",
            format!(
                "the snapshot's guest has {}, the spec asks for {}",
                has(manifest.vsock_cid),
                has(asked)
            ),
        ));
    }
    Ok(())
}

/// Copies snapshot `name` of the instance with id `instance_id`, kept under
/// the microvm driver's `state_dir`, to the new directory `to` (what
/// `zixiao instance snapshot create NAME SNAP --to DIR` does). `to` is
/// checked before anything is copied (`check_export_target`), and a copy
/// that fails midway is removed. Errors: `InvalidArgument` on `id` (an
/// instance id that is no UUID) or `to`, `NotFound` (no such snapshot),
/// `Internal` (the copy failed).
pub fn export_snapshot(
    state_dir: &Path,
    instance_id: &str,
    name: &SnapshotName,
    to: &Path,
) -> Result<(), DriverError> {
    let instance_id = InstanceId::try_from(instance_id)?;
    let name = name.as_str();
    check_export_target(to)?;
    let from = InstanceDir::new(state_dir, &instance_id)
        .snapshots()
        .join(name);
    if !from.join(MANIFEST_FILE).is_file() {
        return Err(DriverError::NotFound(format!(
            "snapshot `{name}` on this node"
        )));
    }
    let made = !to.exists();
    copy_dir(&from, to).map_err(|e| {
        if made {
            let _ = std::fs::remove_dir_all(to);
        }
        io(format!("copy the snapshot to {}", to.display()), e)
    })
}

/// Checks that `to` can take a snapshot's copy, touching nothing: it does
/// not exist and its parent is a directory this process can write into,
/// or it is an empty directory it can write into. Errors:
/// `InvalidArgument` on `to`, saying which.
pub(crate) fn check_export_target(to: &Path) -> Result<(), DriverError> {
    let shown = to.display();
    match std::fs::symlink_metadata(to) {
        Ok(meta) if meta.is_dir() => {
            let empty = std::fs::read_dir(to).is_ok_and(|mut entries| entries.next().is_none());
            if !empty {
                return Err(invalid("to", format!("`{shown}` exists and is not empty")));
            }
            writable(to)
        }
        Ok(_) => Err(invalid(
            "to",
            format!("`{shown}` exists and is not a directory"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = to
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                let what = if parent.exists() {
                    "is not a directory"
                } else {
                    "does not exist"
                };
                return Err(invalid("to", format!("`{}` {what}", parent.display())));
            }
            writable(parent)
        }
        Err(e) => Err(invalid("to", format!("cannot use `{shown}`: {e}"))),
    }
}

/// Whether this process may make entries in directory `dir` (access(2)).
fn writable(dir: &Path) -> Result<(), DriverError> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| invalid("to", format!("`{}` contains a NUL byte", dir.display())))?;
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        return Ok(());
    }
    Err(invalid(
        "to",
        format!(
            "cannot write into `{}`: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ),
    ))
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

impl MicrovmDriver {
    /// The directory and backend of an instance whose backend can take
    /// snapshots. Errors: `NotFound`, `Unsupported` (the qemu backend).
    fn snapshot_target(&self, instance: &Instance) -> Result<InstanceDir, DriverError> {
        let (dir, backend) = self.existing(instance)?;
        match backend {
            Backend::Vmm => Ok(dir),
            Backend::Qemu => Err(DriverError::Unsupported(format!(
                "instance `{}` runs on the qemu backend, which takes no snapshots; \
                 create it with --backend vmm to snapshot it",
                instance.name
            ))),
        }
    }

    fn current_snapshot(dir: &InstanceDir) -> Option<String> {
        std::fs::read_to_string(dir.snapshots().join(CURRENT_FILE))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn set_current(dir: &InstanceDir, name: &str) -> Result<(), DriverError> {
        std::fs::write(dir.snapshots().join(CURRENT_FILE), name)
            .map_err(|e| io("record the current snapshot", e))
    }
}

#[async_trait]
impl Snapshots for MicrovmDriver {
    async fn create(
        &self,
        instance: &Instance,
        name: &SnapshotName,
    ) -> Result<SnapshotInfo, DriverError> {
        let name = name.as_str();
        let dir = self.snapshot_target(instance)?;
        let target = dir.snapshots().join(name);
        if let Ok(existing) = SnapshotManifest::read(&target, "snapshot") {
            let current = Self::current_snapshot(&dir).as_deref() == Some(name);
            return Ok(existing.info(current));
        }
        // Left as the store has it: running unless paused on purpose (the
        // runtime may show a pause that a cut-off snapshot left).
        let running = match self.inspect(instance).await? {
            RuntimeState::Running => instance.status != InstanceStatus::Paused,
            RuntimeState::Paused => instance.status == InstanceStatus::Running,
            other => {
                return Err(DriverError::FailedPrecondition(format!(
                    "instance `{}` is not running ({other:?}): only a running microVM has memory to snapshot",
                    instance.name
                )))
            }
        };
        let tmp = dir.snapshots().join(format!(".{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(dir.snapshots())
            .map_err(|e| io(format!("create {}", dir.snapshots().display()), e))?;
        let taken = async {
            self.vmm_backend()?.snapshot(&dir, &tmp, running).await?;
            let spec = &instance.spec;
            let manifest = SnapshotManifest {
                version: MANIFEST_VERSION,
                name: name.to_owned(),
                instance: instance.name.clone(),
                kernel: spec.kernel.clone(),
                initrd: spec.initrd.clone(),
                cmdline: spec.cmdline.clone(),
                cpus: crate::errors::vcpus(spec)?,
                memory_mib: spec.memory_mib,
                created_at: Utc::now(),
                vsock_cid: spec.vsock.map(|v| v.cid.get()),
            };
            let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| {
                io(
                    "encode the snapshot manifest",
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })?;
            std::fs::write(tmp.join(MANIFEST_FILE), bytes)
                .map_err(|e| io("write the snapshot manifest", e))?;
            std::fs::rename(&tmp, &target)
                .map_err(|e| io(format!("keep the snapshot in {}", target.display()), e))?;
            Self::set_current(&dir, name)?;
            Ok::<_, DriverError>(manifest.info(true))
        }
        .await;
        if taken.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        taken
    }

    async fn list(&self, instance: &Instance) -> Result<Vec<SnapshotInfo>, DriverError> {
        let (dir, _) = self.existing(instance)?;
        let current = Self::current_snapshot(&dir);
        let mut all: Vec<SnapshotManifest> = match std::fs::read_dir(dir.snapshots()) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| SnapshotManifest::read(&e.path(), "snapshot").ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        all.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(all
            .iter()
            .map(|m| m.info(current.as_deref() == Some(m.name.as_str())))
            .collect())
    }

    async fn revert(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        let name = name.as_str();
        let dir = self.snapshot_target(instance)?;
        let snapshot = dir.snapshots().join(name);
        SnapshotManifest::read(&snapshot, "snapshot").map_err(|e| match e {
            DriverError::NotFound(_) => {
                DriverError::NotFound(format!("snapshot `{name}` of instance `{}`", instance.name))
            }
            other => other,
        })?;
        let before = self.inspect(instance).await?;
        let vmm = self.vmm_backend()?;
        // The snapshot's network cards name this microVM's own TAPs, which
        // stay plugged: the restored VMM reattaches to them by name.
        let network = self.network_for(instance, Backend::Vmm)?;
        vmm.stop(&dir, Duration::ZERO).await?;
        vmm.launch(&dir, VmmBoot::Restore(&snapshot), network)
            .await?;
        // The guest goes on as it was: running, or paused.
        match before {
            RuntimeState::Running => vmm.start(&dir, None, network).await?,
            RuntimeState::Paused => vmm.mark_started(&dir)?,
            _ => {}
        }
        Self::set_current(&dir, name)
    }

    async fn delete(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        let name = name.as_str();
        let (dir, _) = self.existing(instance)?;
        match std::fs::remove_dir_all(dir.snapshots().join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("delete snapshot {name}"), e)),
        }
        if Self::current_snapshot(&dir).as_deref() == Some(name) {
            let _ = std::fs::remove_file(dir.snapshots().join(CURRENT_FILE));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_a_manifest_is_not_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = SnapshotManifest::read(dir.path(), "spec.restore_from").expect_err("empty");
        assert!(err.to_string().contains("spec.restore_from"), "{err}");
        let err = SnapshotManifest::read(&dir.path().join("nope"), "spec.restore_from")
            .expect_err("missing");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::NotFound);
    }
}
