//! Images on a node: import from a local archive, pull from a registry,
//! list, remove, through the
//! node's driver for an instance type (containers' images live in containerd;
//! disks, kernels and initrds in the node's image store, which the vm and
//! microvm drivers share).

use std::path::Path;
use std::sync::Arc;

use super::Controller;
use crate::driver::{ImageInfo, Images, ImportProgress, PullOptions, PullProgress};
use crate::model::{uses_node_image, ImageKind, ImageName, ImageRef, InstanceType, NodeImageName};
use crate::{Driver, Error, ErrorKind, Result};

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
    /// [`Images::pull`] for the checks and error kinds. A disk, kernel or
    /// initrd artifact (`options.kind`, or any pull for a vm or microvm)
    /// goes into the node's image store; so does one pulled for containers
    /// with no kind given, once the container runtime (or its absence) has
    /// refused it as `Unsupported`: the artifact's media types then say
    /// its kind, and when the store refuses it as no artifact either, the
    /// runtime's reason is the one given.
    pub async fn pull_image(
        &self,
        node: &str,
        instance_type: InstanceType,
        reference: &ImageRef,
        options: &PullOptions,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<ImageInfo> {
        let into_store = options
            .kind
            .map_or(instance_type != InstanceType::Container, |k| {
                k.in_node_store()
            });
        if into_store {
            let store = self.node_store(node).await?;
            return Ok(images_of(&store)?
                .pull(reference, options, progress)
                .await?);
        }
        let pulled = async {
            let driver = self.image_driver(node, instance_type).await?;
            Ok::<_, Error>(
                images_of(&driver)?
                    .pull(reference, options, progress)
                    .await?,
            )
        };
        let refused = match pulled.await {
            Ok(image) => return Ok(image),
            Err(e) if options.kind.is_none() && e.kind() == ErrorKind::Unsupported => e,
            Err(e) => return Err(e),
        };
        let Ok(store) = self.node_store(node).await else {
            return Err(refused);
        };
        match images_of(&store)?.pull(reference, options, progress).await {
            Ok(image) => Ok(image),
            // Not an artifact either: the runtime's reason is the one to give.
            Err(e) if e.kind() == ErrorKind::Unsupported => Err(refused),
            Err(e) => Err(e.into()),
        }
    }

    /// The images `node`'s runtime for `instance_type` holds, by name; for
    /// containers, the node store's images too, when the node has one.
    pub async fn list_images(
        &self,
        node: &str,
        instance_type: InstanceType,
    ) -> Result<Vec<ImageInfo>> {
        let driver = self.image_driver(node, instance_type).await?;
        let mut images = images_of(&driver)?.list().await?;
        if instance_type == InstanceType::Container {
            if let Ok(store) = self.node_store(node).await {
                images.extend(images_of(&store)?.list().await?);
            }
        }
        Ok(images)
    }

    /// Copies `file` (on the node) into `node`'s image store as image
    /// `name` of `kind`, after checking its content. Errors: those of
    /// [`Images::import_file`], `InvalidArgument` (`kind` is container),
    /// `Unsupported` (no vm or microvm runtime on the node keeps a store).
    pub async fn import_node_image(
        &self,
        node: &str,
        file: &Path,
        kind: ImageKind,
        name: &NodeImageName,
    ) -> Result<ImageInfo> {
        if !kind.in_node_store() {
            return Err(Error::invalid(
                "kind",
                "container images are imported from archives, not as node images",
            ));
        }
        let store = self.node_store(node).await?;
        Ok(images_of(&store)?.import_file(file, name, kind).await?)
    }

    /// Removes image `name` of `kind` from `node`'s image store. Errors:
    /// `NotFound` (no image of that name and kind), `FailedPrecondition`
    /// (instances on the node use it, named), `Unsupported`, `Unavailable`.
    pub async fn remove_node_image(
        &self,
        node: &str,
        kind: ImageKind,
        name: &NodeImageName,
    ) -> Result<()> {
        let store = self.node_store(node).await?;
        let images = images_of(&store)?;
        let held = images.list().await?;
        if !held
            .iter()
            .any(|i| i.kind == kind && i.name == name.as_str())
        {
            return Err(Error::not_found(format!(
                "{kind} image `{name}` on node {node}"
            )));
        }
        let users: Vec<String> = self
            .instances_on(node)
            .await?
            .into_iter()
            .filter(|i| uses_node_image(&i.spec, kind, name))
            .map(|i| i.name)
            .collect();
        if !users.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "{kind} image `{name}` is in use by instance(s) {}; delete them first",
                users.join(", ")
            )));
        }
        Ok(images.remove(name.as_str()).await?)
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

impl Controller {
    /// The driver of `node` that keeps its image store: the microvm
    /// driver, else the vm driver (both share the one store of the node).
    async fn node_store(&self, node: &str) -> Result<Arc<dyn Driver>> {
        match self.image_driver(node, InstanceType::Microvm).await {
            Ok(driver) if driver.images().is_some() => Ok(driver),
            _ => match self.image_driver(node, InstanceType::Vm).await {
                Ok(driver) if driver.images().is_some() => Ok(driver),
                _ => Err(Error::Unsupported(format!(
                    "node {node} has no vm or microvm runtime to keep disk, kernel and initrd images"
                ))),
            },
        }
    }
}

fn images_of(driver: &Arc<dyn Driver>) -> Result<&dyn Images> {
    Ok(driver.require_images()?)
}
