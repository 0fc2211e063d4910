//! The write-ahead record of a container: `instance.json` in its directory
//! (`<state_dir>/containerd/<namespace>/<id>/`), written before the host
//! network, containerd's snapshot or the container hold anything of the
//! instance. A create cut off after that point leaves the directory, so
//! the inventory finds the instance by its id, and the record names the
//! network attachments whose namespace and veths `remove_orphan` removes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zixiao_core::model::NetworkAttachment;
use zixiao_core::{DriverError, Instance};

use super::error::io;

/// The record's file name in the instance's directory.
const RECORD_FILE: &str = "instance.json";

/// What `instance.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The instance's id (the directory's name) and name, for people reading it.
    pub(crate) id: String,
    pub(crate) name: String,
    /// The attachments whose namespace and veths the driver plumbs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) attachments: Vec<NetworkAttachment>,
}

impl Record {
    pub(crate) fn of(instance: &Instance) -> Record {
        Record {
            id: instance.id.clone(),
            name: instance.name.clone(),
            attachments: instance.attachments.clone(),
        }
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(RECORD_FILE)
}

/// Creates `dir` and writes `record` in it atomically.
pub(crate) async fn write(dir: &Path, record: &Record) -> Result<(), DriverError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io(format!("create {}", dir.display()), e))?;
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| {
        io(
            format!("encode {RECORD_FILE}"),
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| io(format!("write {}", tmp.display()), e))?;
    tokio::fs::rename(&tmp, path(dir))
        .await
        .map_err(|e| io(format!("write {}", path(dir).display()), e))
}

/// The record in `dir`; `None` when there is none or it cannot be read (a
/// create cut off while writing it had made nothing else yet).
pub(crate) async fn read(dir: &Path) -> Option<Record> {
    let bytes = tokio::fs::read(path(dir)).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}
