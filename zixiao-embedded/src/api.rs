//! The embedded deployment's [`Api`]: the controller's, plus what needs
//! the caller's own files, which only a deployment on the caller's machine
//! reaches: copying a microVM snapshot out of the node's runtime
//! (`ExportSnapshot`) and creating an instance from such a copy
//! (`RestoreInstance`). Image requests without a node mean the local node.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use zixiao_core::api::{Api, Request, Response};
use zixiao_core::{CreateInstance, Error, Result};

use crate::Embedded;

#[async_trait]
impl Api for Embedded {
    async fn call(&self, request: Request) -> Result<Response> {
        let local = || Some(self.node.id.clone());
        match request {
            Request::CreateSnapshot {
                instance,
                name,
                to: Some(to),
            } => {
                // All or nothing: the directory is checked first, and a
                // snapshot whose copy fails is deleted again.
                let to = absolute(&to, "to")?;
                check_new_directory(&to, "to")?;
                let taken = self.controller.snapshot_instance(&instance, &name).await?;
                let id = self.controller.get_instance(&instance).await?.id;
                if let Err(e) = export_snapshot(self, &id, &name, &to) {
                    let _ = self.controller.delete_snapshot(&instance, &name).await;
                    return Err(e);
                }
                Ok(Response::Snapshot(taken))
            }
            Request::BackupState { to } => {
                let to = absolute(&to, "to")?;
                let store = self.store.clone();
                // A copy of the whole file: off the async threads.
                let summary = tokio::task::spawn_blocking(move || store.backup(&to))
                    .await
                    .map_err(|e| Error::Internal(format!("the backup task failed: {e}")))??;
                Ok(Response::StoreSummary(summary))
            }
            Request::ExportSnapshot { instance, name, to } => {
                let id = self.controller.get_instance(&instance).await?.id;
                export_snapshot(self, &id, &name, &absolute(&to, "to")?)?;
                Ok(Response::Done)
            }
            Request::RestoreInstance { name, from, wait } => {
                let request = restore_request(&name, &absolute(&from, "from")?)?;
                self.controller
                    .call(Request::CreateInstance { request, wait })
                    .await
            }
            Request::ImportImages {
                node,
                instance_type,
                archive,
                progress,
            } => {
                let archive = absolute(&archive, "archive")?;
                let node = node.or_else(local);
                let request = Request::ImportImages {
                    node,
                    instance_type,
                    archive,
                    progress,
                };
                self.controller.call(request).await
            }
            Request::ListImages {
                node,
                instance_type,
            } => {
                let node = node.or_else(local);
                let request = Request::ListImages {
                    node,
                    instance_type,
                };
                self.controller.call(request).await
            }
            Request::RemoveImage {
                node,
                instance_type,
                name,
            } => {
                let node = node.or_else(local);
                let request = Request::RemoveImage {
                    node,
                    instance_type,
                    name,
                };
                self.controller.call(request).await
            }
            other => self.controller.call(other).await,
        }
    }
}

/// Checks that `path` can become a new directory: it does not exist, and
/// its parent is a directory. Errors: `InvalidArgument` on `field`.
fn check_new_directory(path: &Path, field: &str) -> Result<()> {
    if path.exists() {
        return Err(Error::invalid(
            field,
            format!("`{}` exists already; name a new directory", path.display()),
        ));
    }
    match path.parent() {
        Some(parent) if parent.is_dir() => Ok(()),
        _ => Err(Error::invalid(
            field,
            format!(
                "the directory that would hold `{}` does not exist",
                path.display()
            ),
        )),
    }
}

/// `path` made absolute against the working directory: the runtime that
/// reads it may run elsewhere.
fn absolute(path: &Path, field: &str) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| Error::invalid(field, format!("cannot resolve {}: {e}", path.display())))
}

/// Copies a microVM's snapshot out of the driver's state.
#[cfg(feature = "microvm")]
fn export_snapshot(embedded: &Embedded, id: &str, name: &str, to: &Path) -> Result<()> {
    use zixiao_drivers::microvm;
    Ok(microvm::export_snapshot(
        &embedded.drivers.state_dir,
        id,
        name,
        to,
    )?)
}

#[cfg(not(feature = "microvm"))]
fn export_snapshot(_: &Embedded, _: &str, _: &str, _: &Path) -> Result<()> {
    Err(no_microvm("snapshot.export"))
}

/// The request that restores the snapshot in `from` as instance `name`.
#[cfg(feature = "microvm")]
fn restore_request(name: &str, from: &Path) -> Result<CreateInstance> {
    use zixiao_drivers::microvm::SnapshotManifest;
    let manifest = SnapshotManifest::read(from, "from")?;
    Ok(CreateInstance::new(name, manifest.restore_spec(from)))
}

#[cfg(not(feature = "microvm"))]
fn restore_request(_: &str, _: &Path) -> Result<CreateInstance> {
    Err(no_microvm("instance.restore"))
}

#[cfg(not(feature = "microvm"))]
fn no_microvm(what: &str) -> Error {
    Error::Unsupported(format!(
        "{what}: this build has no microvm driver (build it with the `microvm` feature)"
    ))
}
