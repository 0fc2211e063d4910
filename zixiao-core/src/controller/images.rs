//! Images on a node: import from a local archive, pull from a registry,
//! list, remove, through the
//! node's driver for an instance type (containers' images live in containerd;
//! disks, kernels and initrds in the node's image store, which the vm and
//! microvm drivers share).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::Controller;
use crate::driver::{ImageInfo, Images, ImportProgress, PullOptions, PullProgress};
use crate::model::{
    held_image_names, uses_node_image, ImageKind, ImageName, ImageRef, Instance, InstanceType,
    Node, NodeImageName, MAX_NODE_IMAGES,
};
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
        let imported = images_of(&driver)?.import(archive, name, progress).await?;
        self.record_node_images(node).await;
        Ok(imported)
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
        let pulled = self
            .pull_into(node, instance_type, reference, options, progress)
            .await?;
        self.record_node_images(node).await;
        Ok(pulled)
    }

    /// [`Self::pull_image`] without recording the node's images.
    async fn pull_into(
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
        let imported = images_of(&store)?.import_file(file, name, kind).await?;
        self.record_node_images(node).await;
        Ok(imported)
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
        images.remove(name.as_str()).await?;
        self.record_node_images(node).await;
        Ok(())
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
        images_of(&driver)?.remove(name).await?;
        self.record_node_images(node).await;
        Ok(())
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
    /// Lists the images `node`'s runtimes hold and records their names on
    /// the node ([`Node::images`], at most [`MAX_NODE_IMAGES`] in name
    /// order) for the image-locality score. Called after a pull, import or
    /// removal through the API, and after a create that may have pulled.
    /// Best effort: a failure is logged, never the caller's error, since
    /// the images are as the caller asked and the next call lists again.
    pub(crate) async fn record_node_images(&self, node: &str) {
        let recorded = async {
            let id = self.get_node(node).await?.id;
            let names = self.held_images(&id).await?;
            let now = self.now();
            self.update_object::<Node, _>(&id, |n| {
                if n.images == names {
                    return Ok(false);
                }
                n.images = names.clone();
                n.updated_at = now;
                Ok(true)
            })
            .await
        };
        if let Err(e) = recorded.await {
            tracing::warn!(%node, error = %e, "could not record the node's images");
        }
    }

    /// [`Self::record_node_images`] of `instance`'s node when it names
    /// images the node is not recorded to hold yet (so a create of an
    /// image already recorded costs no listing). `driver` made it: one that
    /// keeps no image store cannot have pulled anything, so the create path
    /// pays no node read for it.
    pub(crate) async fn note_images_of(&self, driver: &dyn Driver, instance: &Instance) {
        let Some(node) = &instance.node else {
            return;
        };
        if driver.images().is_none() {
            return;
        }
        let wanted = held_image_names(&instance.spec);
        if wanted.is_empty() {
            return;
        }
        let recorded = match self.get_node(node).await {
            Ok(n) => n.images,
            Err(_) => return,
        };
        if wanted
            .iter()
            .all(|names| names.iter().any(|n| recorded.contains(n)))
        {
            return;
        }
        self.record_node_images(node).await;
    }

    /// The names of the images every runtime of node `id` holds (the
    /// node's image store once, though two drivers share it), the first
    /// [`MAX_NODE_IMAGES`] in name order. A runtime that cannot list its
    /// images now adds none.
    async fn held_images(&self, id: &str) -> Result<BTreeSet<String>> {
        let agent = self.agent(id)?;
        let mut names = BTreeSet::new();
        for instance_type in InstanceType::ALL {
            let Ok(driver) = agent.driver(instance_type) else {
                continue;
            };
            let Some(images) = driver.images() else {
                continue;
            };
            match images.list().await {
                Ok(listed) => names.extend(listed.into_iter().map(|i| i.name)),
                Err(e) => {
                    tracing::debug!(node = %id, %instance_type, error = %e, "no image list")
                }
            }
        }
        Ok(names.into_iter().take(MAX_NODE_IMAGES).collect())
    }

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
