//! A microVM's writable disks: each is the instance's own copy of its
//! image, made once at create in `<instance dir>/disks/` and kept across
//! restarts until the instance is deleted, so the image store's file,
//! which every instance naming the image shares, is never written. A
//! read-only disk is the image itself, which the monitor opens read-only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zixiao_core::DriverError;

use super::layout::InstanceDir;
use super::plan::PlannedDisk;
use crate::errors::io;

/// The directory of the instance's disk copies.
pub(crate) fn dir(dir: &InstanceDir) -> PathBuf {
    dir.file("disks")
}

/// Makes the copies of `disks` that do not exist yet; those that do are
/// the instance's, and kept. Each is written under a temporary name and
/// renamed into place, so a copy cut off half way is never booted; the
/// kernel clones the blocks where the filesystem can (`copy_file_range`).
/// Errors: `Runtime` (the copy failed: a full disk, an unreadable image).
pub(crate) async fn make_copies(disks: &[PlannedDisk]) -> Result<(), DriverError> {
    let copies: Vec<(PathBuf, PathBuf)> = disks
        .iter()
        .filter_map(|d| Some((d.copy_of.clone()?, d.path.clone())))
        .filter(|(_, copy)| !copy.is_file())
        .collect();
    if copies.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || {
        for (image, copy) in copies {
            copy_once(&image, &copy)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| DriverError::Runtime {
        operation: "copy the microVM's disks".to_owned(),
        source: Box::new(e),
    })?
}

fn copy_once(image: &Path, copy: &Path) -> Result<(), DriverError> {
    let failed = |e| io(format!("copy {} to {}", image.display(), copy.display()), e);
    let parent = copy.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(failed)?;
    let partial = copy.with_extension("partial");
    let copied = std::fs::copy(image, &partial)
        // The guest's data: readable by the node's administrator only.
        .and_then(|_| std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600)))
        .and_then(|()| std::fs::rename(&partial, copy));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(failed(e));
    }
    tracing::info!(image = %image.display(), copy = %copy.display(), "copied a microVM's disk");
    Ok(())
}
