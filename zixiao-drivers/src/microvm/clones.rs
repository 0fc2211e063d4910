//! Clones of microVMs: a clone resumes where its source was, from a copy
//! of the source's memory snapshot kept in the clone's own directory (so
//! the source may delete its snapshot, or itself, without harming the
//! clone). Only the vmm backend takes the snapshots this needs.

use std::borrow::Cow;

use async_trait::async_trait;
use zixiao_core::driver::Clones;
use zixiao_core::model::CloneOrigin;
use zixiao_core::{DriverError, Instance};

use super::layout::InstanceDir;
use super::snapshots::{copy_dir, MANIFEST_FILE};
use super::MicrovmDriver;
use crate::errors::io;
use crate::instance_id::InstanceId;

/// The clone's copy of its source's snapshot, in its directory.
const ORIGIN_DIR: &str = "clone-origin";

#[async_trait]
impl Clones for MicrovmDriver {
    async fn create_clone(
        &self,
        clone: &Instance,
        origin: &CloneOrigin,
    ) -> Result<(), DriverError> {
        let dir = self.dir(clone)?;
        let copy = dir.file(ORIGIN_DIR);
        if dir.record()?.is_none() && !copy.join(MANIFEST_FILE).is_file() {
            let snapshot = origin.snapshot.as_ref().ok_or_else(|| {
                DriverError::FailedPrecondition(format!(
                    "clone `{}` names no snapshot of its source to resume from",
                    clone.name
                ))
            })?;
            let source = InstanceDir::new(
                &self.options.state_dir,
                &InstanceId::try_from(origin.source.as_str())?,
            );
            let from = source.snapshots().join(snapshot.as_str());
            if !from.join(MANIFEST_FILE).is_file() {
                return Err(DriverError::NotFound(format!(
                    "snapshot `{snapshot}` of instance {} on this node",
                    origin.source
                )));
            }
            // Copied under a temporary name: a cut-off copy is never resumed.
            let partial = dir.file(".clone-origin.partial");
            let _ = std::fs::remove_dir_all(&partial);
            let copied = tokio::task::spawn_blocking({
                let partial = partial.clone();
                let copy = copy.clone();
                move || copy_dir(&from, &partial).and_then(|()| std::fs::rename(&partial, &copy))
            })
            .await
            .map_err(|e| DriverError::Runtime {
                operation: "copy the source's snapshot".to_owned(),
                source: Box::new(e),
            })?;
            if let Err(e) = copied {
                let _ = std::fs::remove_dir_all(&dir.path);
                return Err(io("copy the source's snapshot for the clone", e));
            }
        }
        let restored = self.as_restored(clone)?;
        self.create_microvm(&restored).await
    }
}

impl MicrovmDriver {
    /// `instance` as its monitor runs it: a clone resumes from its copy of
    /// its source's snapshot; any other instance is as it is.
    pub(crate) fn as_restored<'a>(
        &self,
        instance: &'a Instance,
    ) -> Result<Cow<'a, Instance>, DriverError> {
        if instance.clone_of.is_none() {
            return Ok(Cow::Borrowed(instance));
        }
        let mut restored = instance.clone();
        restored.spec.restore_from = Some(self.dir(instance)?.file(ORIGIN_DIR));
        Ok(Cow::Owned(restored))
    }
}
