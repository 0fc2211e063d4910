//! Where a microVM's files live, and the record of which backend runs it.
//!
//! `<state_dir>/microvm/<instance id>/` holds `instance.json` (the backend
//! chosen at create, so a node default changed later does not move a
//! running microVM; the TAP devices it plugs; and how far the create got),
//! the QEMU backend's files (`qemu.pid`, `qmp.sock`, `console.sock`,
//! `console.log`, `qemu.exit`), the VMM backend's run directory `vmm/`, and
//! `snapshots/<name>/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zixiao_core::model::NetworkAttachment;
use zixiao_core::DriverError;

use crate::errors::io;
use crate::instance_id::InstanceId;

/// The longest Unix socket path Linux accepts (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The monitor a microVM runs under, as recorded at create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// `zixiao-vmm`, Zixiao's own KVM monitor.
    Vmm,
    /// `qemu-system-x86_64 -M microvm`.
    Qemu,
}

impl Backend {
    /// `vmm` or `qemu`: what [`zixiao_core::Instance::runtime`] records.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vmm => "vmm",
            Backend::Qemu => "qemu",
        }
    }
}

/// How far a create got, as `instance.json` records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    /// Written before anything is launched or plugged: a monitor may run,
    /// half started, or not at all. The next create or start adopts it or
    /// launches again.
    Launching,
    /// The monitor was launched and answered: the create is done. (Records
    /// written before stages existed have none and mean this.)
    #[default]
    Created,
}

/// What `instance.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The instance's id (the directory's name) and name, for people reading it.
    pub(crate) id: String,
    pub(crate) name: String,
    /// The backend that runs it.
    pub(crate) backend: Backend,
    /// How far the create got.
    #[serde(default)]
    pub(crate) stage: Stage,
    /// The network attachments whose TAP devices the driver plugs for it,
    /// so they can be removed knowing only the instance id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) attachments: Vec<NetworkAttachment>,
}

/// The directory every microVM's directory is in: `<state_dir>/microvm`.
pub(crate) fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("microvm")
}

/// One microVM's directory.
#[derive(Debug, Clone)]
pub(crate) struct InstanceDir {
    pub(crate) path: PathBuf,
}

impl InstanceDir {
    /// The directory of instance `id`: a UUID, so always directly under
    /// [`root`].
    pub(crate) fn new(state_dir: &Path, id: &InstanceId) -> Self {
        InstanceDir {
            path: root(state_dir).join(id.as_str()),
        }
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub(crate) fn record_path(&self) -> PathBuf {
        self.file("instance.json")
    }

    pub(crate) fn vmm_run_dir(&self) -> PathBuf {
        self.file("vmm")
    }

    pub(crate) fn snapshots(&self) -> PathBuf {
        self.file("snapshots")
    }

    /// The recorded backend; `None` when the instance was never created here.
    pub(crate) fn record(&self) -> Result<Option<Record>, DriverError> {
        let path = self.record_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io(
                    format!("read {}", path.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("read {}", path.display()), e)),
        }
    }

    /// Writes the record atomically (the directory must exist).
    pub(crate) fn write_record(&self, record: &Record) -> Result<(), DriverError> {
        let path = self.record_path();
        let tmp = self.file("instance.json.tmp");
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| {
            io(
                "encode instance.json",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        std::fs::write(&tmp, bytes).map_err(|e| io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(format!("write {}", path.display()), e))
    }

    /// Checks that the sockets the backends make here fit a Unix socket
    /// address, before anything is created: with a vsock device, the
    /// longest is the one a guest connection to host port 4294967295 goes to.
    pub(crate) fn check_socket_paths(&self, vsock: bool) -> Result<(), DriverError> {
        let longest = match vsock {
            true => self.vmm_run_dir().join(format!(
                "{}_{}",
                zixiao_vmm::VsockConfig::DEFAULT_SOCKET,
                u32::MAX
            )),
            false => self.vmm_run_dir().join("console.sock"),
        };
        let len = longest.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(DriverError::FailedPrecondition(format!(
                "the microvm driver's state directory is too deep: {} is {len} bytes, \
                 longer than a Unix socket path may be ({MAX_SOCKET_PATH}); use a shorter state directory",
                longest.display()
            )));
        }
        Ok(())
    }

    /// Removes the directory and everything in it. Idempotent.
    ///
    /// Called once the microVM's processes are gone; a process that has
    /// just died can still land a last file (its exit record) after the
    /// directory was read, which shows as "directory not empty". That is
    /// tried again for a moment; anything still appearing after that is
    /// a live writer, and an error.
    pub(crate) async fn remove(&self) -> Result<(), DriverError> {
        const TRIES: u32 = 20;
        let mut tried = 0;
        loop {
            tried += 1;
            match std::fs::remove_dir_all(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tried < TRIES => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(io(format!("remove {}", self.path.display()), e)),
            }
        }
    }
}
