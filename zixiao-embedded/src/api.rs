//! The embedded deployment's [`Api`]: the controller's, plus what needs
//! the caller's own files, which only a deployment on the caller's machine
//! reaches: copying a microVM snapshot out of the node's runtime
//! (`ExportSnapshot`) and creating an instance from such a copy
//! (`RestoreInstance`). Image requests without a node mean the local node.
//!
//! Because it runs on the node, it also checks what only the node's files
//! can tell before a create is stored (a microVM's kernel, initrd and
//! sizes, a snapshot's manifest against its files), and it says what a
//! call that waited did change when a runtime could not be reached: the
//! intent is stored, and is carried out once the runtime answers.
//!
//! A request that changes an existing instance holds the instance's lock
//! (the controller's [`InstanceLocks`](zixiao_core::InstanceLocks)) from
//! before it stores anything until it has settled, so another process of
//! the same state directory that is changing the instance makes it fail
//! with `Conflict` having changed nothing, rather than both carrying out
//! their intents at once.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use zixiao_core::api::{Api, Handling, Request, Response, Wait};
use zixiao_core::model::{FromTemplate, HostPathRefusal};
use zixiao_core::{CreateInstance, DriverError, Error, ErrorKind, Instance, InstanceSpec, Result};

use crate::Embedded;

#[async_trait]
impl Api for Embedded {
    async fn call(&self, request: Request) -> Result<Response> {
        if !self.allow_host_paths {
            zixiao_core::api::refuse_host_paths_because(&request, HostPathRefusal::NodeSetting)?;
        }
        let _held = match changed_instance(&request) {
            Some(instance) => {
                self.controller
                    .hold_instance(instance, request.operation())
                    .await?
            }
            None => None,
        };
        self.dispatch(request).await
    }
}

impl Embedded {
    /// The handling of `request`: its handler's future, not yet polled
    /// (see [`Handling`] for why each is a future of its own).
    fn dispatch(&self, request: Request) -> Handling<'_> {
        let local = || Some(self.node.id.clone());
        match request {
            Request::CreateSnapshot {
                instance,
                name,
                to: Some(to),
            } => self.snapshot_and_copy(instance, name, to),
            Request::BackupState { to } => self.backup_state(to),
            Request::CreateInstance { request, wait } => self.create(request, wait),
            Request::CreateFromTemplate { request, wait } => {
                self.create_from_template(request, wait)
            }
            Request::StartInstance { instance, wait } => {
                let asked = Request::StartInstance {
                    instance,
                    wait: Wait::No,
                };
                self.intent("start", asked, wait)
            }
            Request::StopInstance { instance, wait } => {
                let asked = Request::StopInstance {
                    instance,
                    wait: Wait::No,
                };
                self.intent("stop", asked, wait)
            }
            Request::RestartInstance { instance, wait } => {
                let asked = Request::RestartInstance {
                    instance,
                    wait: Wait::No,
                };
                self.intent("restart", asked, wait)
            }
            Request::UpdateInstance {
                instance,
                update,
                wait,
            } => {
                let asked = Request::UpdateInstance {
                    instance,
                    update,
                    wait: Wait::No,
                };
                self.intent("update", asked, wait)
            }
            Request::CloneInstance {
                source,
                name,
                linked,
                snapshot,
                wait,
            } => {
                let asked = Request::CloneInstance {
                    source,
                    name,
                    linked,
                    snapshot,
                    wait: Wait::No,
                };
                self.intent("clone", asked, wait)
            }
            Request::DeleteInstance { instance, wait } => self.delete(instance, wait),
            Request::ExportSnapshot { instance, name, to } => self.export(instance, name, to),
            Request::RestoreInstance { name, from, wait } => self.restore(name, from, wait),
            Request::ImportImages {
                node,
                instance_type,
                archive,
                import_as,
                progress,
            } => match absolute(&archive, "archive") {
                Ok(archive) => self.controller.call(Request::ImportImages {
                    node: node.or_else(local),
                    instance_type,
                    archive,
                    import_as,
                    progress,
                }),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            },
            Request::PullImage {
                node,
                instance_type,
                reference,
                options,
                progress,
            } => self.controller.call(Request::PullImage {
                node: node.or_else(local),
                instance_type,
                reference,
                options,
                progress,
            }),
            Request::ListImages {
                node,
                instance_type,
            } => self.controller.call(Request::ListImages {
                node: node.or_else(local),
                instance_type,
            }),
            Request::RemoveImage {
                node,
                instance_type,
                kind,
                name,
            } => self.controller.call(Request::RemoveImage {
                node: node.or_else(local),
                instance_type,
                kind,
                name,
            }),
            other => self.controller.call(other),
        }
    }

    /// Takes a snapshot and copies it to `to`, all or nothing: the
    /// directory is checked first, and a snapshot whose copy fails is
    /// deleted again.
    fn snapshot_and_copy(&self, instance: String, name: String, to: PathBuf) -> Handling<'_> {
        Box::pin(async move {
            let to = absolute(&to, "to")?;
            check_new_directory(&to, "to")?;
            let taken = self.controller.snapshot_instance(&instance, &name).await?;
            let id = self.controller.get_instance(&instance).await?.id;
            if let Err(e) = export_snapshot(self, &id, &name, &to) {
                let _ = self.controller.delete_snapshot(&instance, &name).await;
                return Err(e);
            }
            Ok(Response::Snapshot(taken))
        })
    }

    /// Copies the store to `to`.
    fn backup_state(&self, to: PathBuf) -> Handling<'_> {
        Box::pin(async move {
            let to = absolute(&to, "to")?;
            let store = self.store.clone();
            // A copy of the whole file: off the async threads.
            let summary = tokio::task::spawn_blocking(move || store.backup(&to))
                .await
                .map_err(|e| Error::Internal(format!("the backup task failed: {e}")))??;
            Ok(Response::StoreSummary(summary))
        })
    }

    /// Validates `request`, checks it against this node's files, stores it
    /// and, with [`Wait::Settled`], waits until it has settled.
    fn create(&self, request: CreateInstance, wait: Wait) -> Handling<'_> {
        Box::pin(async move {
            check_on_node(self, &request)?;
            let asked = Request::CreateInstance {
                request,
                wait: Wait::No,
            };
            self.intent("create", asked, wait).await
        })
    }

    /// What the version makes is checked against this node's files as a
    /// plain create is; the controller resolves it again when it stores
    /// it (a version never changes, so it is the same).
    fn create_from_template(&self, request: FromTemplate, wait: Wait) -> Handling<'_> {
        Box::pin(async move {
            let create = self.controller.template_request(&request).await?;
            check_on_node(self, &create)?;
            let asked = Request::CreateFromTemplate {
                request,
                wait: Wait::No,
            };
            self.intent("create", asked, wait).await
        })
    }

    /// Creates the instance `name` from the snapshot copied to `from`.
    fn restore(&self, name: String, from: PathBuf, wait: Wait) -> Handling<'_> {
        Box::pin(async move {
            let request = restore_request(&name, &absolute(&from, "from")?)?;
            self.create(request, wait).await
        })
    }

    /// Copies the snapshot `name` of `instance` out to `to`.
    fn export(&self, instance: String, name: String, to: PathBuf) -> Handling<'_> {
        Box::pin(async move {
            let id = self.controller.get_instance(&instance).await?.id;
            export_snapshot(self, &id, &name, &absolute(&to, "to")?)?;
            Ok(Response::Done)
        })
    }

    /// Stores the deletion of `instance` and, with [`Wait::Settled`],
    /// waits until it is gone (or has settled otherwise).
    fn delete(&self, instance: String, wait: Wait) -> Handling<'_> {
        Box::pin(async move {
            let asked = Request::DeleteInstance {
                instance,
                wait: Wait::No,
            };
            let deleting = match self.controller.call(asked).await? {
                Response::MaybeInstance(Some(deleting)) => deleting,
                other => return Ok(other),
            };
            Ok(Response::MaybeInstance(match wait {
                Wait::No => Some(deleting),
                Wait::Settled => {
                    let settled = self.settle("delete", &deleting).await;
                    self.follow_up(&deleting).await;
                    settled?.map(|mut left| {
                        left.operation = deleting.operation;
                        left
                    })
                }
            }))
        })
    }

    /// Stores an intent (`asked`, which does not wait) and, with
    /// [`Wait::Settled`], waits until the instance has settled.
    fn intent(&self, operation: &'static str, asked: Request, wait: Wait) -> Handling<'_> {
        Box::pin(async move {
            let stored = match self.controller.call(asked).await? {
                Response::Instance(stored) => stored,
                other => return Ok(other),
            };
            if !wait.settled() {
                return Ok(Response::Instance(stored));
            }
            let settled = self.settle(operation, &stored).await;
            self.follow_up(&stored).await;
            match settled? {
                Some(mut settled) => {
                    settled.operation = stored.operation;
                    Ok(Response::Instance(settled))
                }
                None => Err(Error::not_found(format!(
                    "instance `{}` (deleted meanwhile)",
                    stored.name
                ))),
            }
        })
    }

    /// Writes how the operation `stored`'s call started ended, now that it
    /// settled: no background follower runs here. A failure is not the
    /// call's: its work is done, and a read shows the operation as it
    /// would be written, a watch or a daemon writes it later.
    async fn follow_up(&self, stored: &Instance) {
        if let Some(operation) = &stored.operation {
            let _ = self.controller.refresh_operation(operation).await;
        }
    }

    /// Waits until `stored` (its intent just stored by `operation`) has
    /// settled; `None` once it is gone. When its runtime cannot be reached
    /// the error says that the intent is recorded and completes later.
    async fn settle(&self, operation: &str, stored: &Instance) -> Result<Option<Instance>> {
        self.controller
            .settle(&stored.id)
            .await
            .map_err(|e| recorded(operation, &stored.name, e))
    }
}

/// Validates a create and checks it against this node before anything is
/// stored: its microVM files ([`check_create`]) and its host ports. This
/// node runs it, so a host port a process of this machine holds is
/// refused here. (The controller refuses one another instance holds; the
/// node checks both again at create and start, as a distributed
/// deployment's node does.)
fn check_on_node(embedded: &Embedded, request: &CreateInstance) -> Result<()> {
    request.validate()?;
    check_create(embedded, &request.spec)?;
    zixiao_net::ports::check_unbound(&request.spec.publish)?;
    Ok(())
}

/// The existing instance `request` changes (its intent, or its runtime
/// directly), if any: what this process holds against others while the
/// request runs. A create's instance is held by the converge that follows
/// its store, which waits (bounded) if another process took it first.
fn changed_instance(request: &Request) -> Option<&str> {
    match request {
        Request::StartInstance { instance, .. }
        | Request::StopInstance { instance, .. }
        | Request::RestartInstance { instance, .. }
        | Request::UpdateInstance { instance, .. }
        | Request::DeleteInstance { instance, .. }
        | Request::PauseInstance { instance }
        | Request::ResumeInstance { instance }
        | Request::CreateSnapshot { instance, .. }
        | Request::RevertSnapshot { instance, .. }
        | Request::DeleteSnapshot { instance, .. } => Some(instance),
        // Its node pauses or snapshots the source for the clone.
        Request::CloneInstance { source, .. } => Some(source),
        _ => None,
    }
}

/// The error of an `operation` of instance `name` whose intent was stored
/// but whose runtime could not be reached: says that it is recorded and
/// completes when the runtime answers (what a later command does). Other
/// errors are returned as they are.
fn recorded(operation: &str, name: &str, error: Error) -> Error {
    if error.kind() != ErrorKind::Unavailable {
        return error;
    }
    let (runtime, source) = match error {
        Error::Driver(DriverError::Unavailable { runtime, source }) => (runtime, Some(source)),
        Error::Unavailable { what, source } => (what, source),
        other => (
            "its runtime".to_owned(),
            Some(Box::new(other) as Box<dyn std::error::Error + Send + Sync>),
        ),
    };
    Error::Unavailable {
        what: format!(
            "the {operation} of instance `{name}` is recorded and completes when {runtime} \
             answers; {runtime}"
        ),
        source,
    }
}

/// Checks a create of `spec` against what only this node's files tell: a
/// microVM's kernel, initrd and sizes for the backend it would run on, or
/// the snapshot it restores (see `MicrovmDriver::check_create`). Here, not
/// in the controller: the files are this node's, and only the embedded
/// deployment stores intents on the node that runs them.
#[cfg(feature = "microvm")]
fn check_create(embedded: &Embedded, spec: &InstanceSpec) -> Result<()> {
    use zixiao_drivers::microvm::{MicrovmDriver, MicrovmOptions};
    check_node_images(embedded, spec)?;
    // A kernel or initrd from a registry is there only once the driver's
    // create has pulled it; that create checks the rest then.
    if spec.instance_type != zixiao_core::InstanceType::Microvm || names_a_reference(spec) {
        return Ok(());
    }
    let options = MicrovmOptions::from_config(&embedded.drivers)?;
    // No microVM runtime here: the controller refuses the create, saying why.
    let Ok(driver) = MicrovmDriver::new(options) else {
        return Ok(());
    };
    Ok(driver.check_create(spec)?)
}

#[cfg(not(feature = "microvm"))]
fn check_create(embedded: &Embedded, spec: &InstanceSpec) -> Result<()> {
    check_node_images(embedded, spec)
}

/// Whether `spec` names a disk, kernel or initrd by registry reference.
#[cfg(feature = "microvm")]
fn names_a_reference(spec: &InstanceSpec) -> bool {
    use zixiao_core::model::NodeFile;
    zixiao_core::model::node_files(spec)
        .into_iter()
        .any(|file| {
            matches!(
                NodeFile::parse(&file.field, file.value),
                Ok(NodeFile::Reference(_))
            )
        })
}

/// Checks that every image `spec` names by name (a VM's disk, a kernel,
/// an initrd) is in this node's image store, so a create naming one that
/// is not is refused (`NotFound`, naming the field) before it is stored;
/// a registry reference the store lacks is pulled by the driver's create.
#[cfg(any(feature = "microvm", feature = "libvirt"))]
fn check_node_images(embedded: &Embedded, spec: &InstanceSpec) -> Result<()> {
    use zixiao_core::model::NodeFile;
    let store = zixiao_drivers::node_images::NodeImageStore::new(&embedded.drivers.state_dir);
    for file in zixiao_core::model::node_files(spec) {
        if !matches!(
            NodeFile::parse(&file.field, file.value),
            Ok(NodeFile::Reference(_))
        ) {
            store.resolve(&file.field, file.kind, file.value)?;
        }
    }
    Ok(())
}

#[cfg(not(any(feature = "microvm", feature = "libvirt")))]
fn check_node_images(_: &Embedded, _: &InstanceSpec) -> Result<()> {
    Ok(())
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
    let name = zixiao_core::model::SnapshotName::try_from(name.to_owned())?;
    Ok(microvm::export_snapshot(
        &embedded.drivers.state_dir,
        id,
        &name,
        to,
    )?)
}

#[cfg(not(feature = "microvm"))]
fn export_snapshot(_: &Embedded, _: &str, _: &str, _: &Path) -> Result<()> {
    Err(no_microvm("snapshot.export"))
}

/// The request that restores the snapshot in `from` as instance `name`,
/// its manifest checked against the snapshot's files.
#[cfg(feature = "microvm")]
fn restore_request(name: &str, from: &Path) -> Result<CreateInstance> {
    use zixiao_drivers::microvm::SnapshotManifest;
    let manifest = SnapshotManifest::read_checked(from, "from")?;
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
