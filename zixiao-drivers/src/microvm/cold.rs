//! Cold migration of a stopped microVM: the [`ColdMigrate`] capability of
//! the microvm driver, on both backends (their disks are laid out alike).
//!
//! What moves is what its guest wrote: the instance's own copies of its
//! writable disks (`<instance dir>/disks/disk<i>.img`, `i` the disk's
//! place in `spec.disks`), in spec order. Its kernel, initrd and read-only
//! disks are images of the node's store, named by the spec: the target
//! boots its own copies of them, and its import checks first, as a create
//! would, that they are there (`NotFound` otherwise). The copies are
//! written where a create keeps a writable disk's copy, so the target's
//! next create takes them as the instance's instead of copying the image
//! afresh (`disks::make_copies` keeps a copy that exists). A microVM
//! without writable disks exports nothing: its migration is a stop here
//! and a start there. A clone or a restored microVM does not move: it
//! resumes from a memory snapshot that only its node holds.

use async_trait::async_trait;
use zixiao_core::driver::{ColdMigrate, DiskChunks, DiskExport};
use zixiao_core::{Driver as _, DriverError, Instance, RuntimeState};

use super::{disks, plan, MicrovmDriver};
use crate::disk_copy;
use crate::errors::invalid;

#[async_trait]
impl ColdMigrate for MicrovmDriver {
    async fn export_disk(&self, instance: &Instance) -> Result<DiskExport, DriverError> {
        refuse_snapshot_based(instance)?;
        self.existing(instance)?;
        self.refuse_running(instance, "its disks are copied only once it is stopped")
            .await?;
        let what = format!("microVM `{}` on this node", instance.name);
        disk_copy::export_files(&self.writable_disks(instance)?, &what).await
    }

    async fn import_disk(
        &self,
        instance: &Instance,
        sizes: &[u64],
        chunks: DiskChunks,
    ) -> Result<u64, DriverError> {
        refuse_snapshot_based(instance)?;
        if self.dir(instance)?.record()?.is_some() {
            return Err(DriverError::AlreadyExists(format!(
                "this node's microvm driver holds instance `{}` already",
                instance.name
            )));
        }
        // What a create checks, before a byte is written: the images it
        // boots (fetched as a create would), the backend, its sizes.
        self.images
            .pull_for(&instance.spec, &Default::default())
            .await?;
        self.check_create(&instance.spec)?;
        let paths = self.writable_disks(instance)?;
        if paths.len() != sizes.len() {
            return Err(invalid(
                "disk",
                format!(
                    "{} disks came; microVM `{}` has {} writable",
                    sizes.len(),
                    instance.name,
                    paths.len()
                ),
            ));
        }
        if paths.is_empty() {
            // Nothing to copy; the stream must say so too.
            return disk_copy::import_files(&[], 0o600, chunks).await;
        }
        let dir = disks::dir(&self.dir(instance)?);
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::errors::io(format!("create {}", dir.display()), e))?;
        let disks: Vec<_> = paths.into_iter().zip(sizes.iter().copied()).collect();
        // The guest's data: readable by the node's administrator only, as
        // a copy made at create is.
        disk_copy::import_files(&disks, 0o600, chunks).await
    }

    async fn abort_import(&self, instance: &Instance) -> Result<(), DriverError> {
        self.refuse_running(instance, "its migration went through, nothing is removed")
            .await?;
        // A create may have made it from the copies: its monitor, TAPs and
        // directory go, the copies with them (the source still has its disks).
        self.delete(instance).await
    }
}

impl MicrovmDriver {
    /// Refuses with `FailedPrecondition` saying `why` when this node runs
    /// (or holds paused) `instance`.
    async fn refuse_running(&self, instance: &Instance, why: &str) -> Result<(), DriverError> {
        match self.inspect(instance).await? {
            RuntimeState::Running | RuntimeState::Paused => Err(DriverError::FailedPrecondition(
                format!("microVM `{}` runs on this node: {why}", instance.name),
            )),
            _ => Ok(()),
        }
    }

    /// The files of `instance`'s writable disks on this node, in spec
    /// order: what a cold migration copies.
    fn writable_disks(&self, instance: &Instance) -> Result<Vec<std::path::PathBuf>, DriverError> {
        let dir = disks::dir(&self.dir(instance)?);
        Ok(instance
            .spec
            .disks
            .iter()
            .enumerate()
            .filter(|(_, disk)| !disk.read_only)
            .map(|(i, _)| plan::disk_copy(&dir, i))
            .collect())
    }
}

/// Refuses a clone or a microVM restored from a snapshot: it resumes from
/// memory only its node holds. Errors: `Unsupported`.
fn refuse_snapshot_based(instance: &Instance) -> Result<(), DriverError> {
    if instance.clone_of.is_some() || instance.spec.restore_from.is_some() {
        return Err(DriverError::Unsupported(format!(
            "microVM `{}` resumes from a memory snapshot that only its node holds: it cannot \
             migrate cold (restart it elsewhere instead, afresh from its kernel)",
            instance.name
        )));
    }
    Ok(())
}
