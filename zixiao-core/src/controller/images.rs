//! Images on a node: import from a local archive, pull from a registry,
//! list, remove, through the
//! node's driver for an instance type (containers' images live in containerd).

use std::path::Path;
use std::sync::Arc;

use super::Controller;
use crate::driver::{ImageInfo, Images, ImportProgress, PullOptions, PullProgress};
use crate::model::{ImageName, ImageRef, InstanceType};
use crate::{Driver, Result};

impl Controller {
    /// Imports every image of a local archive (OCI layout or docker-archive
    /// tar) into `node`'s runtime for `instance_type`, the archive's one
    /// image under `name` if given, calling `progress` as it reads. Errors:
    /// `NotFound` (node or file), `InvalidArgument` (not an archive, an
    /// unnamed image, `name` for several images), `Unsupported` (that
    /// runtime keeps no images), `Unavailable`.
    pub async fn import_images(
        &self,
        node: &str,
        instance_type: InstanceType,
        archive: &Path,
        name: Option<&ImageName>,
        progress: &(dyn Fn(ImportProgress) + Send + Sync),
    ) -> Result<Vec<ImageInfo>> {
        let driver = self.image_driver(node, instance_type).await?;
        Ok(images_of(&driver)?.import(archive, name, progress).await?)
    }

    /// Pulls `reference` from its registry into `node`'s runtime for
    /// `instance_type`, calling `progress` per blob; see
    /// [`Images::pull`] for the checks and error kinds.
    pub async fn pull_image(
        &self,
        node: &str,
        instance_type: InstanceType,
        reference: &ImageRef,
        options: &PullOptions,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<ImageInfo> {
        let driver = self.image_driver(node, instance_type).await?;
        Ok(images_of(&driver)?
            .pull(reference, options, progress)
            .await?)
    }

    /// The images `node`'s runtime for `instance_type` holds, by name.
    pub async fn list_images(
        &self,
        node: &str,
        instance_type: InstanceType,
    ) -> Result<Vec<ImageInfo>> {
        let driver = self.image_driver(node, instance_type).await?;
        Ok(images_of(&driver)?.list().await?)
    }

    /// Removes image `name` from `node`'s runtime for `instance_type`.
    /// Errors: `NotFound`, `FailedPrecondition` (in use), `Unsupported`, `Unavailable`.
    pub async fn remove_image(
        &self,
        node: &str,
        instance_type: InstanceType,
        name: &str,
    ) -> Result<()> {
        let driver = self.image_driver(node, instance_type).await?;
        Ok(images_of(&driver)?.remove(name).await?)
    }

    async fn image_driver(
        &self,
        node: &str,
        instance_type: InstanceType,
    ) -> Result<Arc<dyn Driver>> {
        let node = self.get_node(node).await?;
        Ok(self.agent(&node.id)?.driver(instance_type)?)
    }
}

fn images_of(driver: &Arc<dyn Driver>) -> Result<&dyn Images> {
    Ok(driver.require_images()?)
}
