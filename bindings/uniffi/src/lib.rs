//! Zixiao's API for Kotlin, Swift and Python through uniffi (proc-macro
//! style): the same [`Client`] as the CLI and the Python and Node bindings,
//! over the embedded deployment ([`open`]) or a server ([`connect`]).
//!
//! The embedded deployment finds its runtimes as the CLI does:
//! `ZIXIAO_CONTAINERD_SOCKET`, `ZIXIAO_LIBVIRT_URI`, `ZIXIAO_VMM_BIN`, ...
//!
//! Two objects with the same methods: [`Controller`] blocks the calling
//! thread (for JVM threads, scripts, tests), [`AsyncController`] is async
//! (Kotlin `suspend`, Swift `async`). Each method is one `Client` call plus
//! conversion into the records of [`model`] and the error enum of
//! [`error`]. The calls run on this library's one tokio runtime whichever
//! foreign executor awaits them.

mod error;
mod model;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use zixiao_client::{OpenOptions, CALL_STACK_BYTES};
use zixiao_core::api::{Page, Progress};
use zixiao_core::model::{FromTemplate, ImageName, SnapshotName};
use zixiao_core::{Client, ImageRef, Wait};

pub use error::ZixiaoError;
pub use model::*;

uniffi::setup_scaffolding!();

/// The library's one multi-thread tokio runtime.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        zixiao_client::runtime("zixiao-runtime").expect("cannot start the zixiao tokio runtime")
    })
}

/// Runs `call` on the runtime and blocks the calling (foreign) thread until
/// it ends. The call is polled on a thread of this library's with a stack
/// of [`CALL_STACK_BYTES`], not on the caller's: a call that converges
/// instances nests deep (in a debug build, deeper than the 1 MiB of a JVM
/// thread, which then dies of SIGSEGV), and a foreign thread's stack is
/// whatever its runtime chose.
fn block<T: Send>(
    call: impl Future<Output = zixiao_core::Result<T>> + Send,
) -> Result<T, ZixiaoError> {
    std::thread::scope(|scope| {
        let polled = std::thread::Builder::new()
            .name("zixiao-call".to_owned())
            .stack_size(CALL_STACK_BYTES)
            .spawn_scoped(scope, || runtime().block_on(call))
            .map_err(|e| {
                zixiao_core::Error::Internal(format!("cannot start a thread for the call: {e}"))
            })?;
        match polled.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
    .map_err(ZixiaoError::from)
}

/// Runs `call` on the runtime; the returned future may be polled by any
/// executor (Kotlin's coroutines, Swift's tasks), which only wait for it.
async fn spawn<T, F>(call: F) -> Result<T, ZixiaoError>
where
    T: Send + 'static,
    F: Future<Output = zixiao_core::Result<T>> + Send + 'static,
{
    runtime()
        .spawn(call)
        .await
        .map_err(|e| {
            ZixiaoError::from(zixiao_core::Error::Internal(format!(
                "the call failed: {e}"
            )))
        })?
        .map_err(ZixiaoError::from)
}

fn open_options(state_dir: Option<String>) -> OpenOptions {
    OpenOptions::new(state_dir.map(PathBuf::from))
}

fn wait(wait: bool) -> Wait {
    Wait::from(wait)
}

/// The image name `name` gives, parsed. Errors: `InvalidArgument` (`name`).
fn image_name(name: Option<String>) -> Result<Option<ImageName>, ZixiaoError> {
    Ok(name
        .map(|n| zixiao_client::image_name("name", &n))
        .transpose()?)
}

/// The snapshot name `snapshot` gives, parsed. Errors: `InvalidArgument`
/// (`snapshot`).
fn snapshot_name(snapshot: Option<String>) -> Result<Option<SnapshotName>, ZixiaoError> {
    Ok(snapshot.map(SnapshotName::try_from).transpose()?)
}

/// Opens the embedded deployment over the state directory `state_dir`
/// (default: the CLI's), registering this machine as its node with the
/// runtimes found here; through its daemon's socket when one serves it.
/// Errors: `Unavailable` (the store stays locked), `InvalidArgument`.
#[uniffi::export]
pub fn open(state_dir: Option<String>) -> Result<Arc<Controller>, ZixiaoError> {
    block(zixiao_client::open(open_options(state_dir))).map(Controller::new)
}

/// [`open`], awaited.
#[uniffi::export]
pub async fn open_async(state_dir: Option<String>) -> Result<Arc<AsyncController>, ZixiaoError> {
    spawn(zixiao_client::open(open_options(state_dir)))
        .await
        .map(AsyncController::new)
}

/// Connects to the Zixiao server at `endpoint` (`https://host:port`) with
/// a bearer `token` and the cluster CA file `ca_cert` (PEM): a controller
/// whose calls the server carries out. Errors: `InvalidArgument` naming
/// the argument; calls the server refuses fail with `Unauthenticated` or
/// `PermissionDenied`.
#[uniffi::export(default(token = None, ca_cert = None))]
pub fn connect(
    endpoint: String,
    token: Option<String>,
    ca_cert: Option<String>,
) -> Result<Arc<Controller>, ZixiaoError> {
    let args = connect_args(Some(endpoint), token, ca_cert);
    block(async move { zixiao_client::connect(args.options()?).await }).map(Controller::new)
}

/// Connects as context `context` (`None`: the current one) of the client
/// configuration file `config` (`None`: the default one).
#[uniffi::export(default(config = None, context = None))]
pub fn connect_with_config(
    config: Option<String>,
    context: Option<String>,
) -> Result<Arc<Controller>, ZixiaoError> {
    let args = zixiao_client::ConnectArgs {
        config: config.map(PathBuf::from),
        context,
        ..zixiao_client::ConnectArgs::default()
    };
    block(async move { zixiao_client::connect(args.options()?).await }).map(Controller::new)
}

fn connect_args(
    endpoint: Option<String>,
    token: Option<String>,
    ca_cert: Option<String>,
) -> zixiao_client::ConnectArgs {
    zixiao_client::ConnectArgs {
        endpoint,
        token,
        ca_cert: ca_cert.map(PathBuf::from),
        ..zixiao_client::ConnectArgs::default()
    }
}

/// [`connect`], awaited.
#[uniffi::export(default(token = None, ca_cert = None))]
pub async fn connect_async(
    endpoint: String,
    token: Option<String>,
    ca_cert: Option<String>,
) -> Result<Arc<AsyncController>, ZixiaoError> {
    let args = connect_args(Some(endpoint), token, ca_cert);
    spawn(async move { zixiao_client::connect(args.options()?).await })
        .await
        .map(AsyncController::new)
}

/// Drives instances, nodes and networks; every method blocks until the
/// deployment answers. From [`open`] or [`connect`].
#[derive(uniffi::Object)]
pub struct Controller {
    // `Client` is itself a cheap handle over an `Arc<dyn Api>`.
    inner: Client,
}

impl Controller {
    fn new(inner: Client) -> Arc<Self> {
        Arc::new(Controller { inner })
    }
}

#[uniffi::export]
impl Controller {
    /// Validates `request` and stores the instance, wanted running; with
    /// `wait`, returns once it has settled (running, or waiting for
    /// capacity, a back-off or a person). Errors: `InvalidArgument` naming
    /// the field, `AlreadyExists`, `Unsupported` (no node runs that type),
    /// `ResourceExhausted`.
    pub fn create_instance(
        &self,
        request: CreateInstance,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        let request = request.into();
        block(self.inner.create_instance(request, self::wait(wait))).map(Instance::from)
    }

    /// The instance with id or name `instance`. Errors: `NotFound`.
    pub fn get_instance(&self, instance: String) -> Result<Instance, ZixiaoError> {
        block(self.inner.get_instance(&instance)).map(Instance::from)
    }

    /// The instances `filter` accepts, in name order.
    pub fn list_instances(&self, filter: InstanceFilter) -> Result<Vec<Instance>, ZixiaoError> {
        block(self.inner.list_instances(filter.into())).map(model::instances)
    }

    /// One page of the instances `filter` accepts, in name order: at most
    /// `page_size` (0: the deployment's default), after `page_token` (from
    /// the previous page; `None` for the first). Errors: `InvalidArgument`
    /// (`page_token`, `page_size`).
    pub fn list_instances_page(
        &self,
        filter: InstanceFilter,
        page_size: u32,
        page_token: Option<String>,
    ) -> Result<InstancePage, ZixiaoError> {
        let page = Page::parse(page_size, page_token.as_deref())?;
        block(self.inner.list_instances_page(filter.into(), page)).map(InstancePage::from)
    }

    /// Changes the instance's labels, restart policy, size or snapshot
    /// schedule; with `wait`,
    /// returns once it settled. Errors: `NotFound`, `InvalidArgument`
    /// naming the field, `FailedPrecondition` (a resize its runtime cannot
    /// do live without `restart_if_needed`), `ResourceExhausted`.
    pub fn update_instance(
        &self,
        instance: String,
        update: InstanceUpdate,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        let update = update.try_into()?;
        block(
            self.inner
                .update_instance(&instance, update, self::wait(wait)),
        )
        .map(Instance::from)
    }

    /// Wants the instance running; with `wait`, returns once it settled.
    /// Errors: `NotFound`, `FailedPrecondition` (being deleted).
    pub fn start_instance(&self, instance: String, wait: bool) -> Result<Instance, ZixiaoError> {
        block(self.inner.start_instance(&instance, self::wait(wait))).map(Instance::from)
    }

    /// Wants the instance stopped; with `wait`, returns once it settled.
    /// Errors: `NotFound`, `FailedPrecondition` (being deleted).
    pub fn stop_instance(&self, instance: String, wait: bool) -> Result<Instance, ZixiaoError> {
        block(self.inner.stop_instance(&instance, self::wait(wait))).map(Instance::from)
    }

    /// Wants the instance deleted; with `wait`, `None` once it is gone (or
    /// the instance, when something holds it up). Errors: `NotFound`.
    pub fn delete_instance(
        &self,
        instance: String,
        wait: bool,
    ) -> Result<Option<Instance>, ZixiaoError> {
        block(self.inner.delete_instance(&instance, self::wait(wait)))
            .map(|i| i.map(Instance::from))
    }

    /// Creates instance `name` as a clone of `source` (id or name) on the
    /// source's node: a new instance (its own id, MACs and addresses) with
    /// the source's labels and spec and `clone_of` naming the source. A
    /// container is a new container of the same spec; a VM starts from a
    /// copy of the source's disk, or with `linked` from an overlay on a
    /// frozen base of it; a microVM resumes where the source was, at
    /// `snapshot` or at one taken for it. With `wait`, returns once it
    /// settled. Errors: `AlreadyExists`, `NotFound` (source, snapshot),
    /// `InvalidArgument` (the name, `linked`, `snapshot`),
    /// `FailedPrecondition`, `Unsupported`; nothing is stored then.
    #[uniffi::method(default(linked = false, snapshot = None, wait = true))]
    pub fn clone_instance(
        &self,
        source: String,
        name: String,
        linked: bool,
        snapshot: Option<String>,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        let snapshot = snapshot_name(snapshot)?;
        let cloned = self
            .inner
            .clone_instance(&source, &name, linked, snapshot, self::wait(wait));
        block(cloned).map(Instance::from)
    }

    /// Moves running instance `instance` (id or name) to node `to` (id or
    /// hostname; `None`: the scheduler's pick among the other ready
    /// nodes), keeping its id, name, MACs and addresses; `mode` is `auto`,
    /// `restart`, `cold` or `live` (both for VMs between libvirt nodes).
    /// Returns
    /// the instance on its new node. Errors: `NotFound`, `InvalidArgument`
    /// (`mode`; `to` is its node), `FailedPrecondition` (no other node, or
    /// none can take it; `auto` would lose a disk; the target could not
    /// run it and it is back on its node; cold with no disk), `Unsupported`
    /// (live or cold where a node's runtime cannot).
    #[uniffi::method(default(to = None, mode = "auto"))]
    pub fn migrate_instance(
        &self,
        instance: String,
        to: Option<String>,
        mode: String,
    ) -> Result<Instance, ZixiaoError> {
        let mode: zixiao_core::MigrationMode = mode.parse()?;
        let moved = self.inner.migrate_instance(&instance, to.as_deref(), mode);
        block(moved).map(Instance::from)
    }

    /// Current resource usage of a placed instance. Errors: `NotFound`,
    /// `FailedPrecondition` (not on a node), `Unsupported`.
    pub fn instance_stats(&self, instance: String) -> Result<InstanceStats, ZixiaoError> {
        block(self.inner.instance_stats(&instance)).map(InstanceStats::from)
    }

    /// The instance's recent resource usage, oldest first, as the server
    /// sampled it. Errors: `NotFound`, `Unsupported` (no server keeps a
    /// history: an embedded deployment without a daemon).
    pub fn instance_stats_history(
        &self,
        instance: String,
    ) -> Result<Vec<StatsSample>, ZixiaoError> {
        block(self.inner.instance_stats_history(&instance)).map(model::samples)
    }

    /// What node `node`'s instances used together recently, oldest first,
    /// as the server sampled them. Errors: `NotFound`, `Unsupported` (as
    /// for [`Controller::instance_stats_history`]).
    pub fn node_stats_history(&self, node: String) -> Result<Vec<NodeUsageSample>, ZixiaoError> {
        block(self.inner.node_stats_history(&node)).map(model::node_samples)
    }

    /// Up to `max` bytes of the instance's log from `offset`; read again
    /// from `next_offset` to go on. Errors: `NotFound`, `FailedPrecondition`.
    pub fn read_log(
        &self,
        instance: String,
        offset: u64,
        max: u64,
    ) -> Result<LogChunk, ZixiaoError> {
        block(self.inner.read_log(&instance, offset, max)).map(LogChunk::from)
    }

    /// Every node, in id order.
    pub fn list_nodes(&self) -> Result<Vec<Node>, ZixiaoError> {
        block(self.inner.list_nodes()).map(model::nodes)
    }

    /// Sets and removes labels operators declare on node `node`, as
    /// `kubectl label` takes them (`"disk=ssd"`, `"old-"`): kept when its
    /// agent registers again. Instances waiting for a node are tried
    /// again. Errors: `InvalidArgument` naming `labels`, `NotFound`,
    /// `FailedPrecondition` (a label its agent reports: read-only).
    pub fn label_node(&self, node: String, labels: Vec<String>) -> Result<Node, ZixiaoError> {
        block(self.inner.label_node(&node, &labels)).map(Node::from)
    }

    /// Declares `traits` on node `node` (see `label_node`). Errors:
    /// `InvalidArgument` naming `traits`, `NotFound`, `FailedPrecondition`.
    pub fn add_node_traits(&self, node: String, traits: Vec<String>) -> Result<Node, ZixiaoError> {
        block(self.inner.add_node_traits(&node, &traits)).map(Node::from)
    }

    /// Takes back `traits` operators declared on node `node`. Errors:
    /// `InvalidArgument`, `NotFound`, `FailedPrecondition`.
    pub fn remove_node_traits(
        &self,
        node: String,
        traits: Vec<String>,
    ) -> Result<Node, ZixiaoError> {
        block(self.inner.remove_node_traits(&node, &traits)).map(Node::from)
    }

    /// Stores host aggregate `name` with `metadata` and no nodes. Errors:
    /// `InvalidArgument` naming `name` or `metadata`, `AlreadyExists`.
    pub fn create_aggregate(
        &self,
        name: String,
        metadata: HashMap<String, String>,
    ) -> Result<Aggregate, ZixiaoError> {
        let metadata = metadata.into_iter().collect();
        block(self.inner.create_aggregate(&name, metadata)).map(Aggregate::from)
    }

    /// Deletes an aggregate without nodes. Errors: `NotFound`,
    /// `FailedPrecondition` (it has nodes: they are named).
    pub fn delete_aggregate(&self, name: String) -> Result<(), ZixiaoError> {
        block(self.inner.delete_aggregate(&name))
    }

    /// Every aggregate, in name order.
    pub fn list_aggregates(&self) -> Result<Vec<Aggregate>, ZixiaoError> {
        block(self.inner.list_aggregates()).map(model::aggregates)
    }

    /// Aggregate `name`. Errors: `NotFound`.
    pub fn get_aggregate(&self, name: String) -> Result<Aggregate, ZixiaoError> {
        block(self.inner.get_aggregate(&name)).map(Aggregate::from)
    }

    /// Sets (`KEY=VALUE`) and removes (`KEY-`) metadata of aggregate
    /// `name`; instances waiting for a node are tried again. Errors:
    /// `NotFound`, `InvalidArgument` on `metadata`.
    pub fn set_aggregate_metadata(
        &self,
        name: String,
        metadata: Vec<String>,
    ) -> Result<Aggregate, ZixiaoError> {
        block(self.inner.set_aggregate_metadata(&name, &metadata)).map(Aggregate::from)
    }

    /// Makes node `node` a member of aggregate `name`; instances waiting
    /// for a node are tried again. Errors: `NotFound` (either).
    pub fn add_aggregate_node(&self, name: String, node: String) -> Result<Aggregate, ZixiaoError> {
        block(self.inner.add_aggregate_node(&name, &node)).map(Aggregate::from)
    }

    /// Takes node `node` out of aggregate `name`. Errors: `NotFound`.
    pub fn remove_aggregate_node(
        &self,
        name: String,
        node: String,
    ) -> Result<Aggregate, ZixiaoError> {
        block(self.inner.remove_aggregate_node(&name, &node)).map(Aggregate::from)
    }

    /// Imports every image of the archive `archive` (an OCI layout or
    /// docker-archive tar on this machine) into the only node's runtime for
    /// `instance_type`; with `name` (`NAME[:TAG]`), its one image is stored
    /// under that name. Errors: `NotFound` (the file), `InvalidArgument`
    /// (not an archive, `name`, several images with a name), `Unsupported`
    /// (that runtime keeps no images).
    #[uniffi::method(default(name = None))]
    pub fn import_images(
        &self,
        archive: String,
        instance_type: InstanceType,
        name: Option<String>,
    ) -> Result<Vec<Image>, ZixiaoError> {
        let name = image_name(name)?;
        let import = self.inner.import_images(
            None,
            instance_type.into(),
            archive.into(),
            name,
            Progress::ignore(),
        );
        block(import).map(model::images)
    }

    /// Pulls `reference` (`[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`) from its
    /// registry into the only node's runtime for `instance_type`, with
    /// `username` and `password` if given, else the credentials of the
    /// user's docker config file for that registry (loopback registries
    /// over plain HTTP, every other one over HTTPS). Errors:
    /// `InvalidArgument` (naming the part of the reference, or
    /// `username`/`password`), `NotFound` (no such image or tag),
    /// `Unauthenticated`, `Unavailable` (the registry), `Unsupported`.
    #[uniffi::method(default(username = None, password = None))]
    pub fn pull_image(
        &self,
        reference: String,
        instance_type: InstanceType,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<Image, ZixiaoError> {
        let reference = ImageRef::try_from(reference.as_str()).map_err(zixiao_core::Error::from)?;
        let credentials = zixiao_client::registry_credentials(username, password)?;
        let options = zixiao_client::pull_options(
            &reference,
            credentials,
            Vec::new(),
            Vec::new(),
            None,
            None,
        )?;
        let pull = self.inner.pull_image(
            None,
            instance_type.into(),
            reference,
            options,
            Progress::ignore(),
        );
        block(pull).map(Image::from)
    }

    /// The images the only node's runtime for `instance_type` holds.
    pub fn list_images(&self, instance_type: InstanceType) -> Result<Vec<Image>, ZixiaoError> {
        block(self.inner.list_images(None, instance_type.into())).map(model::images)
    }

    /// Stores template `name` with `spec` as its version 1. Errors:
    /// `InvalidArgument` naming the field, `AlreadyExists`.
    pub fn create_template(
        &self,
        name: String,
        spec: TemplateSpec,
    ) -> Result<Template, ZixiaoError> {
        block(self.inner.create_template(&name, spec.into())).map(Template::from)
    }

    /// Adds `spec` as the next version of template `name`; the versions it
    /// has stay as they are. Errors: `InvalidArgument`, `NotFound`.
    pub fn update_template(
        &self,
        name: String,
        spec: TemplateSpec,
    ) -> Result<Template, ZixiaoError> {
        block(self.inner.update_template(&name, spec.into())).map(Template::from)
    }

    /// Template `name` with every version (or only `version`) and the
    /// instances made from each. Errors: `NotFound`.
    #[uniffi::method(default(version = None))]
    pub fn get_template(
        &self,
        name: String,
        version: Option<u32>,
    ) -> Result<Template, ZixiaoError> {
        block(self.inner.get_template(&name, version)).map(Template::from)
    }

    /// Every template, in name order.
    pub fn list_templates(&self) -> Result<Vec<Template>, ZixiaoError> {
        block(self.inner.list_templates()).map(model::templates)
    }

    /// Deletes template `name` (or only its `version`). Errors:
    /// `NotFound`, `FailedPrecondition` naming the instances that use it.
    #[uniffi::method(default(version = None))]
    pub fn delete_template(&self, name: String, version: Option<u32>) -> Result<(), ZixiaoError> {
        block(self.inner.delete_template(&name, version))
    }

    /// Creates instance `name` from `template` (`"web"`: its latest
    /// version, `"web@2"`), changing the fields `set` names (`"cpus=2"`,
    /// `"labels.tier=front"`); waits as `create_instance` does. Errors:
    /// `InvalidArgument` naming the field (`template`, `set`), `NotFound`,
    /// and what `create_instance` returns.
    pub fn create_from_template(
        &self,
        name: String,
        template: String,
        set: Vec<String>,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        let request = FromTemplate::parse(name, &template, &set)?;
        block(self.inner.create_from_template(request, self::wait(wait))).map(Instance::from)
    }

    /// Validates and stores a network, setting it up on every node that
    /// can. Errors: `InvalidArgument` naming the field (`subnets[0]`),
    /// `AlreadyExists`, `Unsupported`.
    pub fn create_network(&self, request: CreateNetwork) -> Result<Network, ZixiaoError> {
        block(self.inner.create_network(request.into())).map(Network::from)
    }

    /// The network named `name`. Errors: `NotFound`.
    pub fn get_network(&self, name: String) -> Result<Network, ZixiaoError> {
        block(self.inner.get_network(&name)).map(Network::from)
    }

    /// Every network, in name order.
    pub fn list_networks(&self) -> Result<Vec<Network>, ZixiaoError> {
        block(self.inner.list_networks()).map(model::networks)
    }

    /// The network named `name` and its state on every node that sets up
    /// networks, part by part. Errors: `NotFound`.
    pub fn network_status(&self, name: String) -> Result<NetworkStatus, ZixiaoError> {
        block(self.inner.network_status(&name)).map(NetworkStatus::from)
    }

    /// Puts the network back as the store says on every node; its state
    /// afterwards, with what was mended. Errors: `NotFound`,
    /// `FailedPrecondition` (being deleted).
    pub fn repair_network(&self, name: String) -> Result<NetworkStatus, ZixiaoError> {
        block(self.inner.repair_network(&name)).map(NetworkStatus::from)
    }

    /// Removes a network no instance uses. Errors: `NotFound`,
    /// `FailedPrecondition` naming the instances on it.
    pub fn delete_network(&self, name: String) -> Result<(), ZixiaoError> {
        block(self.inner.delete_network(&name))
    }
}

/// [`Controller`]'s methods as async functions (Kotlin `suspend`, Swift
/// `async`). From [`open_async`] or [`connect_async`].
#[derive(uniffi::Object)]
pub struct AsyncController {
    // `Client` is itself a cheap handle over an `Arc<dyn Api>`.
    inner: Client,
}

impl AsyncController {
    fn new(inner: Client) -> Arc<Self> {
        Arc::new(AsyncController { inner })
    }
}

/// Spawns one call on a clone of the client and awaits it.
macro_rules! call {
    ($self:ident, |$c:ident| $call:expr) => {{
        let $c = $self.inner.clone();
        spawn(async move { $call.await }).await
    }};
}

#[uniffi::export]
impl AsyncController {
    /// See [`Controller::create_instance`].
    pub async fn create_instance(
        &self,
        request: CreateInstance,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        let request = request.into();
        call!(self, |c| c.create_instance(request, self::wait(wait))).map(Instance::from)
    }

    /// See [`Controller::get_instance`].
    pub async fn get_instance(&self, instance: String) -> Result<Instance, ZixiaoError> {
        call!(self, |c| c.get_instance(&instance)).map(Instance::from)
    }

    /// See [`Controller::list_instances`].
    pub async fn list_instances(
        &self,
        filter: InstanceFilter,
    ) -> Result<Vec<Instance>, ZixiaoError> {
        let filter = filter.into();
        call!(self, |c| c.list_instances(filter)).map(model::instances)
    }

    /// See [`Controller::list_instances_page`].
    pub async fn list_instances_page(
        &self,
        filter: InstanceFilter,
        page_size: u32,
        page_token: Option<String>,
    ) -> Result<InstancePage, ZixiaoError> {
        let (filter, page) = (
            filter.into(),
            Page::parse(page_size, page_token.as_deref())?,
        );
        call!(self, |c| c.list_instances_page(filter, page)).map(InstancePage::from)
    }

    /// See [`Controller::update_instance`].
    pub async fn update_instance(
        &self,
        instance: String,
        update: InstanceUpdate,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        let update = update.try_into()?;
        call!(self, |c| c.update_instance(
            &instance,
            update,
            self::wait(wait)
        ))
        .map(Instance::from)
    }

    /// See [`Controller::start_instance`].
    pub async fn start_instance(
        &self,
        instance: String,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        call!(self, |c| c.start_instance(&instance, self::wait(wait))).map(Instance::from)
    }

    /// See [`Controller::stop_instance`].
    pub async fn stop_instance(
        &self,
        instance: String,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        call!(self, |c| c.stop_instance(&instance, self::wait(wait))).map(Instance::from)
    }

    /// See [`Controller::delete_instance`].
    pub async fn delete_instance(
        &self,
        instance: String,
        wait: bool,
    ) -> Result<Option<Instance>, ZixiaoError> {
        call!(self, |c| c.delete_instance(&instance, self::wait(wait)))
            .map(|i| i.map(Instance::from))
    }

    /// See [`Controller::clone_instance`].
    #[uniffi::method(default(linked = false, snapshot = None, wait = true))]
    pub async fn clone_instance(
        &self,
        source: String,
        name: String,
        linked: bool,
        snapshot: Option<String>,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        let snapshot = snapshot_name(snapshot)?;
        call!(self, |c| c.clone_instance(
            &source,
            &name,
            linked,
            snapshot,
            self::wait(wait)
        ))
        .map(Instance::from)
    }

    /// See [`Controller::migrate_instance`].
    #[uniffi::method(default(to = None, mode = "auto"))]
    pub async fn migrate_instance(
        &self,
        instance: String,
        to: Option<String>,
        mode: String,
    ) -> Result<Instance, ZixiaoError> {
        let mode: zixiao_core::MigrationMode = mode.parse()?;
        call!(self, |c| c.migrate_instance(&instance, to.as_deref(), mode)).map(Instance::from)
    }

    /// See [`Controller::instance_stats`].
    pub async fn instance_stats(&self, instance: String) -> Result<InstanceStats, ZixiaoError> {
        call!(self, |c| c.instance_stats(&instance)).map(InstanceStats::from)
    }

    /// See [`Controller::instance_stats_history`].
    pub async fn instance_stats_history(
        &self,
        instance: String,
    ) -> Result<Vec<StatsSample>, ZixiaoError> {
        call!(self, |c| c.instance_stats_history(&instance)).map(model::samples)
    }

    /// See [`Controller::node_stats_history`].
    pub async fn node_stats_history(
        &self,
        node: String,
    ) -> Result<Vec<NodeUsageSample>, ZixiaoError> {
        call!(self, |c| c.node_stats_history(&node)).map(model::node_samples)
    }

    /// See [`Controller::read_log`].
    pub async fn read_log(
        &self,
        instance: String,
        offset: u64,
        max: u64,
    ) -> Result<LogChunk, ZixiaoError> {
        call!(self, |c| c.read_log(&instance, offset, max)).map(LogChunk::from)
    }

    /// See [`Controller::list_nodes`].
    pub async fn list_nodes(&self) -> Result<Vec<Node>, ZixiaoError> {
        call!(self, |c| c.list_nodes()).map(model::nodes)
    }

    /// See [`Controller::label_node`].
    pub async fn label_node(&self, node: String, labels: Vec<String>) -> Result<Node, ZixiaoError> {
        call!(self, |c| c.label_node(&node, &labels)).map(Node::from)
    }

    /// See [`Controller::add_node_traits`].
    pub async fn add_node_traits(
        &self,
        node: String,
        traits: Vec<String>,
    ) -> Result<Node, ZixiaoError> {
        call!(self, |c| c.add_node_traits(&node, &traits)).map(Node::from)
    }

    /// See [`Controller::remove_node_traits`].
    pub async fn remove_node_traits(
        &self,
        node: String,
        traits: Vec<String>,
    ) -> Result<Node, ZixiaoError> {
        call!(self, |c| c.remove_node_traits(&node, &traits)).map(Node::from)
    }

    /// See [`Controller::create_aggregate`].
    pub async fn create_aggregate(
        &self,
        name: String,
        metadata: HashMap<String, String>,
    ) -> Result<Aggregate, ZixiaoError> {
        let metadata = metadata.into_iter().collect();
        call!(self, |c| c.create_aggregate(&name, metadata)).map(Aggregate::from)
    }

    /// See [`Controller::delete_aggregate`].
    pub async fn delete_aggregate(&self, name: String) -> Result<(), ZixiaoError> {
        call!(self, |c| c.delete_aggregate(&name))
    }

    /// See [`Controller::list_aggregates`].
    pub async fn list_aggregates(&self) -> Result<Vec<Aggregate>, ZixiaoError> {
        call!(self, |c| c.list_aggregates()).map(model::aggregates)
    }

    /// See [`Controller::get_aggregate`].
    pub async fn get_aggregate(&self, name: String) -> Result<Aggregate, ZixiaoError> {
        call!(self, |c| c.get_aggregate(&name)).map(Aggregate::from)
    }

    /// See [`Controller::set_aggregate_metadata`].
    pub async fn set_aggregate_metadata(
        &self,
        name: String,
        metadata: Vec<String>,
    ) -> Result<Aggregate, ZixiaoError> {
        call!(self, |c| c.set_aggregate_metadata(&name, &metadata)).map(Aggregate::from)
    }

    /// See [`Controller::add_aggregate_node`].
    pub async fn add_aggregate_node(
        &self,
        name: String,
        node: String,
    ) -> Result<Aggregate, ZixiaoError> {
        call!(self, |c| c.add_aggregate_node(&name, &node)).map(Aggregate::from)
    }

    /// See [`Controller::remove_aggregate_node`].
    pub async fn remove_aggregate_node(
        &self,
        name: String,
        node: String,
    ) -> Result<Aggregate, ZixiaoError> {
        call!(self, |c| c.remove_aggregate_node(&name, &node)).map(Aggregate::from)
    }

    /// See [`Controller::import_images`].
    #[uniffi::method(default(name = None))]
    pub async fn import_images(
        &self,
        archive: String,
        instance_type: InstanceType,
        name: Option<String>,
    ) -> Result<Vec<Image>, ZixiaoError> {
        let (ty, name) = (instance_type.into(), image_name(name)?);
        call!(self, |c| c.import_images(
            None,
            ty,
            archive.into(),
            name,
            Progress::ignore()
        ))
        .map(model::images)
    }

    /// See [`Controller::create_template`].
    pub async fn create_template(
        &self,
        name: String,
        spec: TemplateSpec,
    ) -> Result<Template, ZixiaoError> {
        let spec = spec.into();
        call!(self, |c| c.create_template(&name, spec)).map(Template::from)
    }

    /// See [`Controller::update_template`].
    pub async fn update_template(
        &self,
        name: String,
        spec: TemplateSpec,
    ) -> Result<Template, ZixiaoError> {
        let spec = spec.into();
        call!(self, |c| c.update_template(&name, spec)).map(Template::from)
    }

    /// See [`Controller::get_template`].
    #[uniffi::method(default(version = None))]
    pub async fn get_template(
        &self,
        name: String,
        version: Option<u32>,
    ) -> Result<Template, ZixiaoError> {
        call!(self, |c| c.get_template(&name, version)).map(Template::from)
    }

    /// See [`Controller::list_templates`].
    pub async fn list_templates(&self) -> Result<Vec<Template>, ZixiaoError> {
        call!(self, |c| c.list_templates()).map(model::templates)
    }

    /// See [`Controller::delete_template`].
    #[uniffi::method(default(version = None))]
    pub async fn delete_template(
        &self,
        name: String,
        version: Option<u32>,
    ) -> Result<(), ZixiaoError> {
        call!(self, |c| c.delete_template(&name, version))
    }

    /// See [`Controller::create_from_template`].
    pub async fn create_from_template(
        &self,
        name: String,
        template: String,
        set: Vec<String>,
        wait: bool,
    ) -> Result<Instance, ZixiaoError> {
        let request = FromTemplate::parse(name, &template, &set)?;
        call!(self, |c| c.create_from_template(request, self::wait(wait))).map(Instance::from)
    }

    /// See [`Controller::list_images`].
    pub async fn list_images(
        &self,
        instance_type: InstanceType,
    ) -> Result<Vec<Image>, ZixiaoError> {
        let ty = instance_type.into();
        call!(self, |c| c.list_images(None, ty)).map(model::images)
    }

    /// See [`Controller::create_network`].
    pub async fn create_network(&self, request: CreateNetwork) -> Result<Network, ZixiaoError> {
        let request = request.into();
        call!(self, |c| c.create_network(request)).map(Network::from)
    }

    /// See [`Controller::get_network`].
    pub async fn get_network(&self, name: String) -> Result<Network, ZixiaoError> {
        call!(self, |c| c.get_network(&name)).map(Network::from)
    }

    /// See [`Controller::list_networks`].
    pub async fn list_networks(&self) -> Result<Vec<Network>, ZixiaoError> {
        call!(self, |c| c.list_networks()).map(model::networks)
    }

    /// See [`Controller::network_status`].
    pub async fn network_status(&self, name: String) -> Result<NetworkStatus, ZixiaoError> {
        call!(self, |c| c.network_status(&name)).map(NetworkStatus::from)
    }

    /// See [`Controller::repair_network`].
    pub async fn repair_network(&self, name: String) -> Result<NetworkStatus, ZixiaoError> {
        call!(self, |c| c.repair_network(&name)).map(NetworkStatus::from)
    }

    /// See [`Controller::delete_network`].
    pub async fn delete_network(&self, name: String) -> Result<(), ZixiaoError> {
        call!(self, |c| c.delete_network(&name))
    }
}
