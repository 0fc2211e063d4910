//! Cold migration of a stopped domain's disk: the [`ColdMigrate`]
//! capability of the vm driver.
//!
//! What moves is the instance's qcow2 overlay, the only file of its disk
//! that a guest writes: every node keeps its own copy of the base images
//! by name. The source reads the overlay of the stopped domain as it is
//! ([`disk_copy::export_file`]); the target first checks what a create
//! would (the images are here, no domain of it is), then writes the copy
//! next to where the overlay goes, as `disk.qcow2.imported`, checked
//! against the source's digest. The next create of the instance on the
//! target takes that file as its overlay instead of a fresh one
//! ([`LibvirtDriver::take_imported_disk`]), pointing its backing file at
//! this node's copy of the base image (`qemu-img rebase -u`: the base's
//! content is the same, only its path differs). A clone does not move: its
//! disk may sit on its source's frozen base, which only its node holds.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use zixiao_core::driver::{ColdMigrate, DiskChunks, DiskExport};
use zixiao_core::{DriverError, Instance, RuntimeState};

use super::lifecycle::{create_dir, read_state, OverlayPlan};
use super::migration::refuse_clone;
use super::{disks, error, LibvirtDriver};
use crate::disk_copy;

#[async_trait]
impl ColdMigrate for LibvirtDriver {
    async fn export_disk(&self, instance: &Instance) -> Result<DiskExport, DriverError> {
        refuse_clone(instance)?;
        if self.runs_here(instance).await? {
            return Err(DriverError::FailedPrecondition(format!(
                "instance `{}` is running: its disk is copied only once it is stopped",
                instance.name
            )));
        }
        let what = format!("instance `{}` on this node", instance.name);
        disk_copy::export_file(&self.overlay_path(instance)?, &what).await
    }

    async fn import_disk(
        &self,
        instance: &Instance,
        sizes: &[u64],
        chunks: DiskChunks,
    ) -> Result<u64, DriverError> {
        refuse_clone(instance)?;
        // A domain's one disk: its overlay.
        let &[size] = sizes else {
            return Err(error::invalid(
                "disk",
                format!(
                    "{} disks came; a domain of the vm driver has one (its overlay)",
                    sizes.len()
                ),
            ));
        };
        // What a create checks, before a byte is written.
        if self.plan(instance)?.overlay.is_none() {
            return Err(DriverError::FailedPrecondition(format!(
                "instance `{}` has no disk on this node's libvirt (no image, no disk size)",
                instance.name
            )));
        }
        if self
            .with_domain_if_any(instance, "look up domain", |_, _| Ok(()))
            .await?
            .is_some()
        {
            return Err(DriverError::AlreadyExists(format!(
                "the libvirt at {} holds a domain of instance `{}` already",
                self.options.uri, instance.name
            )));
        }
        create_dir(&self.instance_dir(instance)?)?;
        disk_copy::import_file(&self.imported_path(instance)?, size, chunks).await
    }

    async fn abort_import(&self, instance: &Instance) -> Result<(), DriverError> {
        if self.runs_here(instance).await? {
            return Err(DriverError::FailedPrecondition(format!(
                "instance `{}` runs on this node's libvirt: its migration went through, \
                 nothing is removed",
                instance.name
            )));
        }
        // A create may have defined it from the copy: the domain, its
        // files, the copy itself go (the source still has the disk).
        self.delete_domain(instance).await
    }
}

impl LibvirtDriver {
    /// Whether this node's libvirt runs (or holds paused) a domain of
    /// `instance`. Errors: `Unavailable`, `Internal`.
    async fn runs_here(&self, instance: &Instance) -> Result<bool, DriverError> {
        let state = self
            .with_domain_if_any(instance, "read state", |domain, name| {
                read_state(domain, name)
            })
            .await?;
        Ok(matches!(
            state,
            Some(RuntimeState::Running | RuntimeState::Paused)
        ))
    }

    /// Where [`ColdMigrate::import_disk`] keeps the copy until a create
    /// takes it.
    fn imported_path(&self, instance: &Instance) -> Result<PathBuf, DriverError> {
        Ok(self.instance_dir(instance)?.join("disk.qcow2.imported"))
    }

    /// Makes `overlay` from the disk a cold migration imported for
    /// `instance`, if there is one: renamed into place, its backing file
    /// set to this node's base (or none). `Ok(false)`: nothing imported,
    /// the caller makes a fresh overlay. Errors: `InvalidArgument` (an id
    /// that is no UUID), `Internal` (qemu-img).
    pub(crate) async fn take_imported_disk(
        &self,
        instance: &Instance,
        overlay: &OverlayPlan,
    ) -> Result<bool, DriverError> {
        let imported = self.imported_path(instance)?;
        if !imported.exists() {
            return Ok(false);
        }
        let overlay = overlay.clone();
        tokio::task::spawn_blocking(move || adopt(&imported, &overlay))
            .await
            .map_err(|e| DriverError::Runtime {
                operation: "take in a migrated disk".to_owned(),
                source: Box::new(e),
            })??;
        Ok(true)
    }
}

/// `imported` made into `overlay`'s file: rebased (`-u`: only its header
/// changes) onto this node's base, so it never names a file of another
/// node or one a caller chose, then renamed into place.
fn adopt(imported: &Path, overlay: &OverlayPlan) -> Result<(), DriverError> {
    let info = disks::inspect(imported)?;
    if info.format != "qcow2" {
        return Err(error::invalid(
            "disk",
            format!("the migrated disk is a {} image, not qcow2", info.format),
        ));
    }
    let mut args: Vec<&std::ffi::OsStr> = vec!["rebase".as_ref(), "-u".as_ref()];
    match overlay.base() {
        Some((base, info)) => args.extend::<[&std::ffi::OsStr; 4]>([
            "-b".as_ref(),
            base.as_os_str(),
            "-F".as_ref(),
            info.format.as_ref(),
        ]),
        None => args.extend::<[&std::ffi::OsStr; 2]>(["-b".as_ref(), "".as_ref()]),
    }
    args.push(imported.as_os_str());
    disks::qemu_img(&args)?;
    std::fs::rename(imported, overlay.path())
        .map_err(|e| error::io(format!("rename {}", imported.display()), e))
}
