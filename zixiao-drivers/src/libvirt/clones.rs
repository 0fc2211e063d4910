//! Clones of VMs: the disk a clone's domain is defined with, made from its
//! source's overlay on this node. A full clone owns a standalone copy
//! (`qemu-img convert`, which flattens the backing chain); a linked clone
//! gets a qcow2 overlay on a read-only base frozen from the source's disk
//! once and kept in the source's directory for every later linked clone
//! (the controller refuses to delete the source while they use it). The
//! source's disk is read at a named internal snapshot, whose content never
//! changes, or with the source paused for the copy and resumed after, so
//! the copy is of one moment.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use zixiao_core::driver::Clones;
use zixiao_core::model::CloneOrigin;
use zixiao_core::{DriverError, Instance};

use super::disks;
use super::{error, LibvirtDriver};

/// The base of linked clones, in the source's directory: frozen at
/// `snapshot`, or from the disk as it was when the first one was made.
fn base_path(source_dir: &Path, snapshot: Option<&str>) -> PathBuf {
    match snapshot {
        Some(snapshot) => source_dir.join(format!("clone-base@{snapshot}.qcow2")),
        None => source_dir.join("clone-base.qcow2"),
    }
}

#[async_trait]
impl Clones for LibvirtDriver {
    /// The create of a clone: [`Driver::create`](zixiao_core::Driver::create)
    /// makes its disk with [`LibvirtDriver::clone_disk`].
    async fn create_clone(&self, clone: &Instance, _: &CloneOrigin) -> Result<(), DriverError> {
        self.create_domain(clone).await
    }
}

impl LibvirtDriver {
    /// Makes the disk `disk` of a clone (its directory exists) of `size`
    /// bytes from its source `origin`: a copy, or an overlay on the
    /// source's frozen base. Errors: `NotFound` (the source's disk is not
    /// on this node), `InvalidArgument` on `linked` (the source has no
    /// disk), `Internal` (qemu-img failed).
    pub(crate) async fn clone_disk(
        &self,
        origin: &CloneOrigin,
        disk: PathBuf,
        size: u64,
    ) -> Result<(), DriverError> {
        let source_dir = self.dir_of(&origin.source)?;
        let source_disk = disks::overlay_path(&source_dir);
        if !source_disk.is_file() {
            return Err(if origin.linked {
                error::invalid(
                    "linked",
                    format!(
                        "instance {} has no disk on this node to share",
                        origin.source
                    ),
                )
            } else {
                DriverError::NotFound(format!(
                    "the disk of instance {} on this node",
                    origin.source
                ))
            });
        }
        let snapshot = origin.snapshot.as_ref().map(|s| s.as_str().to_owned());
        disks::remove_file(&disk)?;
        if !origin.linked {
            return self
                .copy_consistent(&origin.source, source_disk, disk, snapshot)
                .await;
        }
        let base = base_path(&source_dir, snapshot.as_deref());
        if !base.is_file() {
            // Frozen once, under a temporary name, so a cut-off copy is
            // never taken for a base.
            let partial = base.with_extension("partial");
            disks::remove_file(&partial)?;
            self.copy_consistent(&origin.source, source_disk, partial.clone(), snapshot)
                .await?;
            let frozen = std::fs::set_permissions(
                &partial,
                std::os::unix::fs::PermissionsExt::from_mode(0o444),
            )
            .and_then(|()| std::fs::rename(&partial, &base));
            if let Err(e) = frozen {
                let _ = std::fs::remove_file(&partial);
                return Err(error::io(format!("freeze {}", base.display()), e));
            }
        }
        blocking(move || {
            let info = disks::inspect_base(&base)?;
            disks::create_overlay(&disk, Some((&base, &info)), size.max(info.virtual_size))
        })
        .await
    }

    /// Copies the source's disk `from` to the standalone qcow2 `to`: at
    /// internal snapshot `snapshot`, or with the source's domain (if it
    /// runs) paused during the copy and resumed after. `to` is removed if
    /// the copy fails.
    async fn copy_consistent(
        &self,
        source: &str,
        from: PathBuf,
        to: PathBuf,
        snapshot: Option<String>,
    ) -> Result<(), DriverError> {
        let paused = match &snapshot {
            Some(_) => false,
            None => self.pause_for_copy(source).await?,
        };
        let copy_to = to.clone();
        let copied = blocking(move || {
            let option = snapshot.map(|s| format!("snapshot.name={s}"));
            let mut args: Vec<&OsStr> = vec!["convert".as_ref(), "-U".as_ref()];
            if let Some(option) = &option {
                args.extend::<[&OsStr; 2]>(["-l".as_ref(), option.as_ref()]);
            }
            args.extend::<[&OsStr; 4]>([
                "-O".as_ref(),
                "qcow2".as_ref(),
                from.as_os_str(),
                copy_to.as_os_str(),
            ]);
            disks::qemu_img(&args).map(drop)
        })
        .await;
        if paused {
            self.resume_after_copy(source).await?;
        }
        if copied.is_err() {
            let _ = std::fs::remove_file(&to);
        }
        copied
    }
}

/// Runs `call` off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| DriverError::Runtime {
            operation: "copy a disk for a clone".to_owned(),
            source: Box::new(e),
        })?
}
