//! `Controller`: one [`Client`] call per Promise-returning method, over
//! the embedded deployment (`Controller.open`) or a server (`connect`) alike.

use std::collections::BTreeMap;
use std::path::PathBuf;

use napi::bindgen_prelude::{Buffer, PromiseRaw, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use zixiao_core::api::{OperationFilter, Page, Progress};
use zixiao_core::driver::{
    ImagePlatform, ImportProgress as CoreProgress, PullProgress, RegistryCa,
};
use zixiao_core::model::{
    CarbonIntensity, CreateNetwork, FromTemplate, ImageKind, NodeImageName, TemplateSpec,
};
use zixiao_core::{
    AllocationRatio, Client, CreateInstance, Error, ImageRef, InstanceFilter, InstanceType,
    InstanceUpdate, OperationId, Wait,
};

use crate::console::Console;
use crate::convert::{from_js, promise, promise_with};
use crate::streams::{InstanceWatch, LogStream, NodeWatch};

type Pending<'env> = napi::Result<PromiseRaw<'env, Unknown<'env>>>;

/// Bytes a log read returns at most by default.
const DEFAULT_LOG_MAX: u32 = 64 * 1024;

/// Where `Controller.open` finds the runtimes; absent keys take the CLI's
/// defaults and environment variables.
#[napi(object)]
pub struct OpenOptions {
    /// containerd's socket (default `ZIXIAO_CONTAINERD_SOCKET`, else
    /// `/run/containerd/containerd.sock`).
    pub containerd_socket: Option<String>,
    /// The containerd namespace of the node's containers and images (default `zixiao`).
    pub containerd_namespace: Option<String>,
    /// libvirt's URI (default `ZIXIAO_LIBVIRT_URI`, else `qemu:///system`).
    pub libvirt_uri: Option<String>,
}

/// Whether a call that changes an instance resolves once the instance has
/// settled (`wait: true`, the default) or once its intent is stored.
#[napi(object)]
pub struct WaitOptions {
    /// Wait until it has settled (default true).
    pub wait: Option<bool>,
}

/// How `cloneInstance` makes its clone.
#[napi(object)]
#[derive(Default)]
pub struct CloneOptions {
    /// Share a frozen base of the source's disk instead of copying it (VMs with a disk).
    pub linked: Option<bool>,
    /// The source's snapshot to start from.
    pub snapshot: Option<String>,
    /// Wait until it has settled (default true).
    pub wait: Option<bool>,
}

/// Where and how `migrateInstance` moves an instance.
#[napi(object)]
#[derive(Default)]
pub struct MigrateOptions {
    /// The target node's id or hostname (default: the scheduler's pick).
    pub to: Option<String>,
    /// `auto` (default), `restart`, `cold` (stopped, its disk copied,
    /// started on the target from the copy) or `live` (both for VMs
    /// between libvirt nodes).
    pub mode: Option<String>,
}

/// Which page of a list: at most `size` items, after `token` (a list's
/// `next_page_token`).
#[napi(object)]
#[derive(Default)]
pub struct PageRequest {
    /// At most this many (0 or absent: every item here, a server's default page).
    pub size: Option<u32>,
    /// Go on after the page that answered this `next_page_token`.
    pub token: Option<String>,
}

/// Which runtime of which node an image call means.
#[napi(object)]
pub struct ImageTarget {
    /// The runtime's instance type (default `container`).
    pub instance_type: Option<String>,
    /// What the image holds, for `removeImage`: `container` (the default),
    /// `disk`, `kernel` or `initrd`.
    pub kind: Option<String>,
    /// The node (default: the only node).
    pub node: Option<String>,
}

/// How far an image import has come, in bytes of the archive read.
#[napi(object)]
pub struct ImportProgress {
    /// Bytes read.
    pub done: i64,
    /// Bytes in all.
    pub total: i64,
}

/// A progress callback, called on the event loop.
type ProgressCallback = ThreadsafeFunction<ImportProgress, (), ImportProgress, Status, false, true>;

/// Where an import goes and whom it tells how far it has come.
#[napi(object, object_to_js = false)]
pub struct ImportOptions {
    /// The name (`NAME[:TAG]`) to store the archive's one image under,
    /// whatever the archive names it.
    pub name: Option<String>,
    /// What the file holds: `container` (an image archive, the default),
    /// or one `disk`, `kernel` or `initrd` file for the node's image store,
    /// stored under `name` (required then).
    pub kind: Option<String>,
    /// The runtime's instance type (default `container`).
    pub instance_type: Option<String>,
    /// The node (default: the only node).
    pub node: Option<String>,
    /// Called with `{ done, total }` as the archive is read.
    #[napi(ts_type = "(progress: ImportProgress) => void")]
    pub progress: Option<ProgressCallback>,
}

/// A step of an image pull, as `pullImage`'s progress callback gets it.
#[napi(object)]
pub struct PullEvent {
    /// `resolved` (the manifest was found), `fetched` (a blob was fetched
    /// and verified) or `unpacking` (the runtime is storing the image).
    pub event: String,
    /// Resolved: the manifest's digest; fetched: the blob's.
    pub digest: Option<String>,
    /// Resolved: how many blobs follow.
    pub blobs: Option<i64>,
    /// Resolved: their size in bytes.
    pub bytes: Option<i64>,
    /// Fetched: the blob's size in bytes.
    pub size: Option<i64>,
    /// Fetched: the blob's position, from 1.
    pub index: Option<i64>,
    /// Fetched: how many blobs there are.
    pub count: Option<i64>,
}

impl From<PullProgress> for PullEvent {
    fn from(p: PullProgress) -> Self {
        let count = |n: usize| Some(number(n as u64));
        let mut event = PullEvent {
            event: String::new(),
            digest: None,
            blobs: None,
            bytes: None,
            size: None,
            index: None,
            count: None,
        };
        match p {
            PullProgress::Resolved {
                digest,
                blobs,
                bytes,
            } => {
                event.event = "resolved".to_owned();
                event.digest = Some(digest);
                event.blobs = count(blobs);
                event.bytes = Some(number(bytes));
            }
            PullProgress::Fetched {
                digest,
                size,
                index,
                count: blobs,
            } => {
                event.event = "fetched".to_owned();
                event.digest = Some(digest);
                event.size = Some(number(size));
                event.index = count(index);
                event.count = count(blobs);
            }
            PullProgress::Unpacking => event.event = "unpacking".to_owned(),
        }
        event
    }
}

/// A pull's progress callback, called on the event loop.
type PullCallback = ThreadsafeFunction<PullEvent, (), PullEvent, Status, false, true>;

/// Where a pull goes, as whom, and whom it tells how far it has come.
#[napi(object, object_to_js = false)]
pub struct PullOptions {
    /// The runtime's instance type (default `container`).
    pub instance_type: Option<String>,
    /// The node (default: the only node).
    pub node: Option<String>,
    /// The registry user (with `password`); without both, the user's
    /// docker config file's credentials for that registry, if any.
    pub username: Option<String>,
    /// The registry password (with `username`).
    pub password: Option<String>,
    /// Registries (`host[:port]`) that may be reached over plain HTTP;
    /// loopback ones always may.
    pub insecure_registries: Option<Vec<String>>,
    /// PEM CA certificates (text) trusted besides the node's roots, for a
    /// registry whose certificate a private CA issued.
    pub registry_cas: Option<Vec<String>>,
    /// The platform to take from a multi-platform image, `os/arch[/variant]`
    /// such as `linux/arm64` (default: the node's own).
    pub platform: Option<String>,
    /// The kind of image wanted: `container`, or `disk`, `kernel`,
    /// `initrd` for the node's image store (default: what the artifact's
    /// media types say; one that says another kind is refused).
    pub kind: Option<String>,
    /// Called with each step of the pull.
    #[napi(ts_type = "(event: PullEvent) => void")]
    pub progress: Option<PullCallback>,
}

fn wait(options: Option<WaitOptions>) -> Wait {
    Wait::from(options.and_then(|o| o.wait).unwrap_or(true))
}

fn instance_type(value: Option<&str>) -> zixiao_core::Result<InstanceType> {
    zixiao_client::instance_type("instanceType", value.unwrap_or("container"))
}

fn revision(after: Option<i64>) -> zixiao_core::Result<u64> {
    u64::try_from(after.unwrap_or(0))
        .map_err(|_| Error::invalid("after", "a revision is not negative"))
}

fn number(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Connects to the Zixiao server at `endpoint` (`https://host:port`) with
/// `options` (a token and the cluster CA, or a configuration file's
/// context): a `Controller` whose calls the server carries out. Calls the
/// server refuses reject with code `unauthenticated` or `permission_denied`.
#[napi]
// Exported to JavaScript by #[napi], which rustc cannot see; napi registers
// nothing in a test build, so there it is unused.
#[allow(unreachable_pub)]
#[cfg_attr(test, allow(dead_code))]
pub fn connect(
    env: &Env,
    endpoint: Option<String>,
    options: Option<ConnectOptions>,
) -> napi::Result<PromiseRaw<'_, Controller>> {
    let options = options.unwrap_or_default();
    let args = zixiao_client::ConnectArgs {
        endpoint,
        token: options.token,
        ca_cert: options.ca_cert.map(Into::into),
        client_cert: options.client_cert.map(Into::into),
        client_key: options.client_key.map(Into::into),
        config: options.config.map(Into::into),
        context: options.context,
    };
    promise_with(
        env,
        async move { zixiao_client::connect(args.options()?).await },
        |_, inner| Ok(Controller { inner }),
    )
}

/// How `connect` reaches a server: a token, the cluster CA and a client
/// certificate as files, or a context of a client configuration file.
#[napi(object)]
#[derive(Debug, Default)]
#[allow(unreachable_pub)]
pub struct ConnectOptions {
    /// The bearer token.
    pub token: Option<String>,
    /// The cluster CA certificate file (PEM): required for https.
    pub ca_cert: Option<String>,
    /// A client certificate file (PEM), with `clientKey`.
    pub client_cert: Option<String>,
    /// The client certificate's key file (PEM).
    pub client_key: Option<String>,
    /// A client configuration file.
    pub config: Option<String>,
    /// A context of it (default: its current one).
    pub context: Option<String>,
}

/// Test support (built with the `testing` feature only): the path of
/// zixiao-vmm's test guest kernel, or `null` when it was not built.
#[cfg(feature = "testing")]
#[napi(js_name = "_vmmTestGuest")]
#[allow(unreachable_pub)]
#[cfg_attr(test, allow(dead_code))]
pub fn vmm_test_guest() -> Option<String> {
    zixiao_client::testing::vmm_test_guest().map(|p| p.to_string_lossy().into_owned())
}

/// Drives nodes, instances, images and networks: the API the `zixiao` CLI
/// uses, in-process (`Controller.open`) or on a server (`connect`).
///
/// Every method returns a Promise; the work runs off the event loop. Results
/// are plain objects shaped like the CLI's JSON output. Errors carry the
/// error kind as `code` (`not_found`, `invalid_argument`, ...).
#[napi]
pub struct Controller {
    // `Client` is itself a cheap handle over an `Arc<dyn Api>`.
    inner: Client,
}

/// A Promise of one call on a clone of the client, its result a plain object.
/// The image kind `value` names (default `container`).
fn image_kind(value: Option<&str>) -> zixiao_core::Result<ImageKind> {
    value.map_or(Ok(ImageKind::Container), str::parse)
}

macro_rules! call {
    ($self:ident, $env:ident, |$c:ident| $call:expr) => {{
        let $c = $self.inner.clone();
        promise($env, async move { $call.await })
    }};
}

/// Test support, in an impl block of its own: napi registers every method
/// of a block, so a method behind a `cfg` cannot share one with the rest.
#[cfg(feature = "testing")]
#[napi]
impl Controller {
    /// Test support (built with the `testing` feature only): the embedded
    /// deployment whose node runs every instance type on a fake runtime.
    #[napi(js_name = "_openWithFakeRuntimes")]
    pub fn open_with_fake_runtimes(
        env: &Env,
        state_dir: String,
    ) -> napi::Result<PromiseRaw<'_, Controller>> {
        promise_with(
            env,
            async move { zixiao_client::testing::open_with_fake_runtimes(state_dir.as_ref()).await },
            |_, inner| Ok(Controller { inner }),
        )
    }
}

#[napi]
impl Controller {
    /// Opens the embedded deployment over the state directory `stateDir`
    /// (default: the CLI's, `ZIXIAO_STATE_DIR` or `~/.local/share/zixiao`),
    /// registering this machine as its node with the runtimes found here
    /// (containerd, libvirt, the microVM monitors; see `options`). One
    /// process at a time may hold a directory: rejects with `unavailable`
    /// when another holds it.
    #[napi]
    pub fn open(
        env: &Env,
        state_dir: Option<String>,
        options: Option<OpenOptions>,
    ) -> napi::Result<PromiseRaw<'_, Controller>> {
        let options = options.unwrap_or(OpenOptions {
            containerd_socket: None,
            containerd_namespace: None,
            libvirt_uri: None,
        });
        let options = zixiao_client::OpenOptions {
            state_dir: state_dir.map(PathBuf::from),
            containerd_socket: options.containerd_socket.map(PathBuf::from),
            containerd_namespace: options.containerd_namespace,
            libvirt_uri: options.libvirt_uri,
            libvirt_domain_type: None,
            log_limit_mib: None,
            allow_host_paths: None,
        };
        promise_with(
            env,
            async move { zixiao_client::open(options).await },
            |_, inner| Ok(Controller { inner }),
        )
    }

    /// Every node, in id order.
    #[napi(ts_return_type = "Promise<Node[]>")]
    pub fn list_nodes<'env>(&self, env: &'env Env) -> Pending<'env> {
        call!(self, env, |c| c.list_nodes())
    }

    /// The node with id (or hostname) `node`. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn get_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        call!(self, env, |c| c.get_node(&node))
    }

    /// What the node's instances used together recently, oldest first, as
    /// the server sampled them. Rejects with `not_found`, `unsupported` (no
    /// server keeps a history: an embedded deployment without a daemon).
    #[napi(ts_return_type = "Promise<NodeUsageSample[]>")]
    pub fn node_stats_history<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        call!(self, env, |c| c.node_stats_history(&node))
    }

    /// Stops new placements on a node.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn cordon_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        call!(self, env, |c| c.cordon_node(&node))
    }

    /// Allows placements on a cordoned node again.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn uncordon_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        call!(self, env, |c| c.uncordon_node(&node))
    }

    /// Empties a node (moves or stops its instances); it ends cordoned.
    #[napi(ts_return_type = "Promise<DrainReport>")]
    pub fn drain_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        call!(self, env, |c| c.drain_node(&node))
    }

    /// Puts a node in maintenance (`on`: emptied as by a drain) or takes it
    /// out. Rejects with `not_found`, `failed_precondition`.
    #[napi(ts_return_type = "Promise<DrainReport>")]
    pub fn set_maintenance<'env>(&self, env: &'env Env, node: String, on: bool) -> Pending<'env> {
        call!(self, env, |c| c.set_maintenance(&node, on))
    }

    /// Retires a node for good: empties it as a drain does, then marks it
    /// decommissioned, offering no runtime. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<DrainReport>")]
    pub fn decommission_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        call!(self, env, |c| c.decommission_node(&node))
    }

    /// Removes a node that holds no instances. Rejects with `not_found`,
    /// `failed_precondition` (it holds instances: decommission or drain it,
    /// then delete those that stayed).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn deregister_node<'env>(&self, env: &'env Env, node: String) -> Pending<'env> {
        call!(self, env, |c| c.deregister_node(&node))
    }

    /// Sets and removes labels operators declare on a node, as `kubectl
    /// label` takes them (`['disk=ssd', 'old-']`): kept when its agent
    /// registers again, merged with what the agent reports into the node's
    /// `labels`. Instances waiting for a node are tried again. Rejects with
    /// `invalid_argument` naming `labels`, `not_found`,
    /// `failed_precondition` (a label the agent reports: read-only).
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn label_node<'env>(
        &self,
        env: &'env Env,
        node: String,
        labels: Vec<String>,
    ) -> Pending<'env> {
        call!(self, env, |c| c.label_node(&node, &labels))
    }

    /// Changes how far a node's CPU and memory may be promised beyond what
    /// it has (`cpu: 4`: four times its cores); a ratio not given stays.
    /// Instances waiting for a node are tried again. Rejects with
    /// `invalid_argument` naming `cpu` or `memory` (0.1 to 64, or neither
    /// given), `not_found`.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn set_allocation_ratios<'env>(
        &self,
        env: &'env Env,
        node: String,
        cpu: Option<f64>,
        memory: Option<f64>,
    ) -> Pending<'env> {
        call!(self, env, |c| {
            let ratio = |field: &str, r: Option<f64>| {
                r.map(AllocationRatio::try_from)
                    .transpose()
                    .map_err(|e| Error::invalid(field, e.to_string()))
            };
            let (cpu, memory) = (ratio("cpu", cpu)?, ratio("memory", memory)?);
            c.set_allocation_ratios(&node, cpu, memory)
        })
    }

    /// Sets the carbon intensity of a node's power (gCO2e/kWh, at most
    /// 5000), which carbon-aware placement reads; `null` clears it. It wins
    /// over the figure the node's agent reports. Instances waiting for a
    /// node are tried again. Rejects with `invalid_argument` naming
    /// `carbon_intensity`, `not_found`.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn set_node_carbon<'env>(
        &self,
        env: &'env Env,
        node: String,
        intensity: Option<i64>,
    ) -> Pending<'env> {
        call!(self, env, |c| {
            let intensity = intensity.map(CarbonIntensity::try_from).transpose()?;
            c.set_node_carbon(&node, intensity)
        })
    }

    /// Declares `traits` on a node (see `labelNode`). Rejects with
    /// `invalid_argument` naming `traits`, `not_found`, `failed_precondition`.
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn add_node_traits<'env>(
        &self,
        env: &'env Env,
        node: String,
        traits: Vec<String>,
    ) -> Pending<'env> {
        call!(self, env, |c| c.add_node_traits(&node, &traits))
    }

    /// Takes back `traits` operators declared on a node. Rejects with
    /// `invalid_argument`, `not_found`, `failed_precondition` (one the
    /// agent reports).
    #[napi(ts_return_type = "Promise<Node>")]
    pub fn remove_node_traits<'env>(
        &self,
        env: &'env Env,
        node: String,
        traits: Vec<String>,
    ) -> Pending<'env> {
        call!(self, env, |c| c.remove_node_traits(&node, &traits))
    }

    /// Stores host aggregate `name` with `metadata` (an object of strings)
    /// and no nodes. Rejects with `invalid_argument` naming `name` or
    /// `metadata`, `already_exists`.
    #[napi(
        ts_args_type = "name: string, metadata?: Record<string, string>",
        ts_return_type = "Promise<Aggregate>"
    )]
    pub fn create_aggregate<'env>(
        &self,
        env: &'env Env,
        name: String,
        metadata: Option<serde_json::Value>,
    ) -> Pending<'env> {
        let metadata = metadata
            .map(|m| from_js::<BTreeMap<String, String>>(Some("metadata"), m))
            .transpose();
        call!(self, env, |c| c
            .create_aggregate(&name, metadata?.unwrap_or_default()))
    }

    /// Deletes an aggregate without nodes. Rejects with `not_found`,
    /// `failed_precondition` (it has nodes: they are named).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete_aggregate<'env>(&self, env: &'env Env, name: String) -> Pending<'env> {
        call!(self, env, |c| c.delete_aggregate(&name))
    }

    /// Every aggregate, in name order.
    #[napi(ts_return_type = "Promise<Aggregate[]>")]
    pub fn list_aggregates<'env>(&self, env: &'env Env) -> Pending<'env> {
        call!(self, env, |c| c.list_aggregates())
    }

    /// Aggregate `name`. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Aggregate>")]
    pub fn get_aggregate<'env>(&self, env: &'env Env, name: String) -> Pending<'env> {
        call!(self, env, |c| c.get_aggregate(&name))
    }

    /// Sets (`'k=v'`) and removes (`'k-'`) metadata of aggregate `name`;
    /// instances waiting for a node are tried again. Rejects with
    /// `not_found`, `invalid_argument` on `metadata`.
    #[napi(ts_return_type = "Promise<Aggregate>")]
    pub fn set_aggregate_metadata<'env>(
        &self,
        env: &'env Env,
        name: String,
        metadata: Vec<String>,
    ) -> Pending<'env> {
        call!(self, env, |c| c.set_aggregate_metadata(&name, &metadata))
    }

    /// Makes node `node` a member of aggregate `name`; instances waiting
    /// for a node are tried again. Rejects with `not_found` (either).
    #[napi(ts_return_type = "Promise<Aggregate>")]
    pub fn add_aggregate_node<'env>(
        &self,
        env: &'env Env,
        name: String,
        node: String,
    ) -> Pending<'env> {
        call!(self, env, |c| c.add_aggregate_node(&name, &node))
    }

    /// Takes node `node` out of aggregate `name`. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Aggregate>")]
    pub fn remove_aggregate_node<'env>(
        &self,
        env: &'env Env,
        name: String,
        node: String,
    ) -> Pending<'env> {
        call!(self, env, |c| c.remove_aggregate_node(&name, &node))
    }

    /// Node changes after store revision `after` (default 0: from now), in
    /// order, then live: `for await (const event of watch)`.
    #[napi]
    pub fn watch_nodes<'env>(
        &self,
        env: &'env Env,
        after: Option<i64>,
    ) -> napi::Result<PromiseRaw<'env, NodeWatch>> {
        let c = self.inner.clone();
        let after = revision(after);
        promise_with(env, async move { c.watch_nodes(after?).await }, |_, s| {
            Ok(NodeWatch::new(s))
        })
    }

    /// A summary of nodes, instances, capacity and allocation.
    #[napi(ts_return_type = "Promise<ClusterInfo>")]
    pub fn cluster_info<'env>(&self, env: &'env Env) -> Pending<'env> {
        call!(self, env, |c| c.cluster_info())
    }

    /// Validates `request` and stores the instance, wanted running. With
    /// `wait` (the default) resolves once it has settled: running, or
    /// waiting for capacity, a back-off or a person (its `conditions` say
    /// which); else at once, pending. Rejects with `invalid_argument`
    /// (naming the field in the message and in `field`), `already_exists`,
    /// `unsupported`, `resource_exhausted`.
    #[napi(
        ts_args_type = "request: CreateInstance, options?: WaitOptions",
        ts_return_type = "Promise<Instance>"
    )]
    pub fn create_instance<'env>(
        &self,
        env: &'env Env,
        request: serde_json::Value,
        options: Option<WaitOptions>,
    ) -> Pending<'env> {
        let request = from_js::<CreateInstance>(None, request);
        let wait = wait(options);
        call!(self, env, |c| c.create_instance(request?, wait))
    }

    /// The instance with id or name `instance`. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn get_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        call!(self, env, |c| c.get_instance(&instance))
    }

    /// The instances `filter` accepts, in name order.
    #[napi(
        ts_args_type = "filter?: InstanceFilter",
        ts_return_type = "Promise<Instance[]>"
    )]
    pub fn list_instances<'env>(
        &self,
        env: &'env Env,
        filter: Option<serde_json::Value>,
    ) -> Pending<'env> {
        let filter = filter.map_or(Ok(InstanceFilter::default()), |f| {
            from_js::<InstanceFilter>(Some("filter"), f)
        });
        call!(self, env, |c| c.list_instances(filter?))
    }

    /// One page of the instances `filter` accepts, in name order, with
    /// `next_page_token` to pass back as `page.token` while there are
    /// more. A `page.size` of 0 (or none) is every instance here, a
    /// server's default page (500) through one. Rejects with
    /// `invalid_argument` (`page_token`).
    #[napi(
        ts_args_type = "filter?: InstanceFilter, page?: PageRequest",
        ts_return_type = "Promise<InstancePage>"
    )]
    pub fn list_instances_page<'env>(
        &self,
        env: &'env Env,
        filter: Option<serde_json::Value>,
        page: Option<PageRequest>,
    ) -> Pending<'env> {
        let filter = filter.map_or(Ok(InstanceFilter::default()), |f| {
            from_js::<InstanceFilter>(Some("filter"), f)
        });
        let page = page.unwrap_or_default();
        let page = Page::parse(page.size.unwrap_or(0), page.token.as_deref());
        call!(self, env, |c| c.list_instances_page(filter?, page?))
    }

    /// Wants the instance running; with `wait` (the default), resolves once
    /// it settled. Rejects with `not_found`, `failed_precondition`.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn start_instance<'env>(
        &self,
        env: &'env Env,
        instance: String,
        options: Option<WaitOptions>,
    ) -> Pending<'env> {
        let wait = wait(options);
        call!(self, env, |c| c.start_instance(&instance, wait))
    }

    /// Wants the instance stopped; with `wait` (the default), resolves once
    /// it settled. Rejects with `not_found`, `failed_precondition`.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn stop_instance<'env>(
        &self,
        env: &'env Env,
        instance: String,
        options: Option<WaitOptions>,
    ) -> Pending<'env> {
        let wait = wait(options);
        call!(self, env, |c| c.stop_instance(&instance, wait))
    }

    /// Stops and starts the instance; with `wait` (the default), resolves
    /// once it settled.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn restart_instance<'env>(
        &self,
        env: &'env Env,
        instance: String,
        options: Option<WaitOptions>,
    ) -> Pending<'env> {
        let wait = wait(options);
        call!(self, env, |c| c.restart_instance(&instance, wait))
    }

    /// Changes the instance's labels, restart policy, CPUs, memory or
    /// snapshot schedule (`snapshot_every`, `snapshot_keep`,
    /// `clear_snapshot_schedule`). A running container takes a new size
    /// live; a running VM or microVM only with `restart_if_needed` (it
    /// restarts; with `wait`, the default, resolves once it settled).
    /// Rejects with `invalid_argument` (naming the field; an empty update
    /// too, an interval below one minute), `not_found`,
    /// `failed_precondition` (being deleted, or a restart needed and not
    /// allowed), `unsupported` (a snapshot schedule for an instance that
    /// cannot be snapshotted), `resource_exhausted` (the node's shortfall
    /// or the project's quota); nothing changes then.
    #[napi(
        ts_args_type = "instance: string, update: InstanceUpdate, options?: WaitOptions",
        ts_return_type = "Promise<Instance>"
    )]
    pub fn update_instance<'env>(
        &self,
        env: &'env Env,
        instance: String,
        update: serde_json::Value,
        options: Option<WaitOptions>,
    ) -> Pending<'env> {
        let update = from_js::<InstanceUpdate>(None, update);
        let wait = wait(options);
        call!(self, env, |c| c.update_instance(&instance, update?, wait))
    }

    /// Wants the instance deleted. With `wait` (the default) resolves to
    /// `null` once it is gone, or to the instance as it is when something
    /// holds it up (its conditions say what); without, to the instance
    /// being deleted. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Instance | null>")]
    pub fn delete_instance<'env>(
        &self,
        env: &'env Env,
        instance: String,
        options: Option<WaitOptions>,
    ) -> Pending<'env> {
        let wait = wait(options);
        call!(self, env, |c| c.delete_instance(&instance, wait))
    }

    /// Freezes a running instance. Rejects with `failed_precondition`, `unsupported`.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn pause_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        call!(self, env, |c| c.pause_instance(&instance))
    }

    /// Thaws a paused instance. Rejects with `failed_precondition`, `unsupported`.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn resume_instance<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        call!(self, env, |c| c.resume_instance(&instance))
    }

    /// Current resource usage of a placed instance.
    #[napi(ts_return_type = "Promise<InstanceStats>")]
    pub fn instance_stats<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        call!(self, env, |c| c.instance_stats(&instance))
    }

    /// The instance's recent resource usage, oldest first, as the server
    /// sampled it. Rejects with `not_found`, `unsupported` (no server keeps
    /// a history: an embedded deployment without a daemon).
    #[napi(ts_return_type = "Promise<StatsSample[]>")]
    pub fn instance_stats_history<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        call!(self, env, |c| c.instance_stats_history(&instance))
    }

    /// Up to `max` bytes (default 64 KiB) of the instance's log (its
    /// console, or stdout and stderr) from `offset` (default 0); read again
    /// from `nextOffset` to go on. Rejects with `not_found`,
    /// `failed_precondition` (not on a node yet).
    #[napi]
    pub fn read_log<'env>(
        &self,
        env: &'env Env,
        instance: String,
        offset: Option<i64>,
        max: Option<u32>,
    ) -> napi::Result<PromiseRaw<'env, LogChunk>> {
        let c = self.inner.clone();
        let offset = u64::try_from(offset.unwrap_or(0))
            .map_err(|_| Error::invalid("offset", "an offset is not negative"));
        let max = u64::from(max.unwrap_or(DEFAULT_LOG_MAX));
        promise_with(
            env,
            async move { c.read_log(&instance, offset?, max).await },
            |_, chunk| {
                Ok(LogChunk {
                    data: chunk.data.into(),
                    next_offset: number(chunk.next_offset),
                })
            },
        )
    }

    /// The instance's log from `offset` (default 0) as it grows:
    /// `for await (const piece of stream)` yields Buffers and ends once the
    /// instance stops running and all it wrote was read. Rejects with
    /// `not_found`, `failed_precondition`.
    #[napi]
    pub fn follow_log<'env>(
        &self,
        env: &'env Env,
        instance: String,
        offset: Option<i64>,
    ) -> napi::Result<PromiseRaw<'env, LogStream>> {
        let c = self.inner.clone();
        let offset = u64::try_from(offset.unwrap_or(0))
            .map_err(|_| Error::invalid("offset", "an offset is not negative"));
        promise_with(
            env,
            async move { c.follow_log(&instance, offset?).await },
            |_, s| Ok(LogStream::new(s)),
        )
    }

    /// Opens the instance's interactive console: a `Console` to `write` to,
    /// `read` or `for await` its output, and `close`. Rejects with
    /// `not_found`, `failed_precondition` (not running), `unsupported` (its
    /// runtime has no console).
    #[napi]
    pub fn attach_console<'env>(
        &self,
        env: &'env Env,
        instance: String,
    ) -> napi::Result<PromiseRaw<'env, Console>> {
        let c = self.inner.clone();
        promise_with(
            env,
            async move { c.attach_console(&instance).await },
            |_, console| Ok(Console::new(console)),
        )
    }

    /// Instance changes after store revision `after` (default 0: from now),
    /// in order, then live: `for await (const event of watch)`. Rejects with
    /// `failed_precondition` when that history was compacted.
    #[napi]
    pub fn watch_instances<'env>(
        &self,
        env: &'env Env,
        after: Option<i64>,
    ) -> napi::Result<PromiseRaw<'env, InstanceWatch>> {
        let c = self.inner.clone();
        let after = revision(after);
        promise_with(
            env,
            async move { c.watch_instances(after?).await },
            |_, stream| Ok(InstanceWatch::new(stream)),
        )
    }

    /// Takes snapshot `name` of the instance (its disks, and its memory
    /// when it runs); idempotent. Rejects with `not_found`,
    /// `invalid_argument` (the name), `failed_precondition`, `unsupported`.
    #[napi(ts_return_type = "Promise<Snapshot>")]
    pub fn create_snapshot<'env>(
        &self,
        env: &'env Env,
        instance: String,
        name: String,
    ) -> Pending<'env> {
        call!(self, env, |c| c.create_snapshot(&instance, &name))
    }

    /// The instance's snapshots, oldest first.
    #[napi(ts_return_type = "Promise<Snapshot[]>")]
    pub fn list_snapshots<'env>(&self, env: &'env Env, instance: String) -> Pending<'env> {
        call!(self, env, |c| c.list_snapshots(&instance))
    }

    /// Puts the instance back to snapshot `name`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn revert_snapshot<'env>(
        &self,
        env: &'env Env,
        instance: String,
        name: String,
    ) -> Pending<'env> {
        call!(self, env, |c| c.revert_snapshot(&instance, &name))
    }

    /// Deletes snapshot `name`; idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete_snapshot<'env>(
        &self,
        env: &'env Env,
        instance: String,
        name: String,
    ) -> Pending<'env> {
        call!(self, env, |c| c.delete_snapshot(&instance, &name))
    }

    /// Copies snapshot `name` into the new directory `to` on this machine,
    /// for `restoreInstance`. Rejects with `not_found`, `already_exists`
    /// (`to` is not empty), `unsupported` (not the embedded deployment).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn export_snapshot<'env>(
        &self,
        env: &'env Env,
        instance: String,
        name: String,
        to: String,
    ) -> Pending<'env> {
        call!(self, env, |c| c.export_snapshot(
            &instance,
            &name,
            to.into()
        ))
    }

    /// Creates instance `name` as a clone of `source` (id or name) on the
    /// source's node: a new instance (its own id, MACs and addresses) with
    /// the source's labels and spec and `clone_of` naming the source. A
    /// container is a new container of the same spec; a VM starts from a
    /// copy of the source's disk, or with `linked` from an overlay on a
    /// frozen base of it; a microVM resumes where the source was, at
    /// `snapshot` or at one taken for it. Rejects with `already_exists`,
    /// `not_found` (source, snapshot), `invalid_argument` (the name,
    /// `linked`), `failed_precondition`, `unsupported`; nothing is stored
    /// then.
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn clone_instance<'env>(
        &self,
        env: &'env Env,
        source: String,
        name: String,
        options: Option<CloneOptions>,
    ) -> Pending<'env> {
        let options = options.unwrap_or_default();
        let wait = Wait::from(options.wait.unwrap_or(true));
        let linked = options.linked.unwrap_or(false);
        let snapshot = options
            .snapshot
            .map(zixiao_core::model::SnapshotName::try_from)
            .transpose();
        call!(self, env, |c| c
            .clone_instance(&source, &name, linked, snapshot?, wait))
    }

    /// Moves running instance `instance` (id or name) to another node,
    /// keeping its id, name, MACs and addresses: `options.to`, or the
    /// scheduler's pick among the other ready nodes. Resolves to the
    /// instance on its new node, its `operation` naming the migration.
    /// Rejects with `not_found`, `invalid_argument` (`mode`; `to` is its
    /// node), `failed_precondition` (no other node, or none can take it,
    /// naming why; `auto` would lose a disk; the target could not run it
    /// and it is back on its node; cold with no disk), `unsupported`
    /// (live or cold where a node's runtime cannot).
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn migrate_instance<'env>(
        &self,
        env: &'env Env,
        instance: String,
        options: Option<MigrateOptions>,
    ) -> Pending<'env> {
        let options = options.unwrap_or_default();
        let mode = options
            .mode
            .as_deref()
            .unwrap_or("auto")
            .parse::<zixiao_core::MigrationMode>();
        let to = options.to;
        call!(self, env, |c| c.migrate_instance(
            &instance,
            to.as_deref(),
            mode?
        ))
    }

    /// Creates instance `name` from a snapshot directory written by
    /// `exportSnapshot`; it resumes where the snapshot was taken. Rejects
    /// as `createInstance` does, and with `invalid_argument` (`from`: not a
    /// snapshot directory).
    #[napi(ts_return_type = "Promise<Instance>")]
    pub fn restore_instance<'env>(
        &self,
        env: &'env Env,
        name: String,
        snapshot_dir: String,
        options: Option<WaitOptions>,
    ) -> Pending<'env> {
        let wait = wait(options);
        call!(self, env, |c| c.restore_instance(
            &name,
            snapshot_dir.into(),
            wait
        ))
    }

    /// Imports every image of the archive `archive` (an OCI layout or
    /// docker-archive tar on this machine) into a node's runtime, its one
    /// image under `options.name` if given, calling `options.progress` as it
    /// reads. Resolves to the images imported. Rejects with `not_found`
    /// (node or file), `invalid_argument` (not an archive, a bad name, a
    /// name for several images), `unsupported`.
    #[napi(ts_return_type = "Promise<Image[]>")]
    pub fn import_images<'env>(
        &self,
        env: &'env Env,
        archive: String,
        options: Option<ImportOptions>,
    ) -> Pending<'env> {
        let (ty, node, raw_name, kind, callback) = match options {
            Some(o) => (
                instance_type(o.instance_type.as_deref()),
                o.node,
                o.name,
                o.kind,
                o.progress,
            ),
            None => (instance_type(None), None, None, None, None),
        };
        let kind = image_kind(kind.as_deref());
        if matches!(kind, Ok(k) if k.in_node_store()) {
            let name = NodeImageName::try_from(raw_name.unwrap_or_default());
            return call!(self, env, |c| async move {
                let image = c
                    .import_node_image(node.as_deref(), archive.into(), kind?, name?)
                    .await?;
                Ok::<_, zixiao_core::Error>(vec![image])
            });
        }
        let name = raw_name
            .map(|n| zixiao_client::image_name("name", &n))
            .transpose();
        let progress = match callback {
            Some(callback) => Progress::new(move |p: CoreProgress| {
                let progress = ImportProgress {
                    done: number(p.done),
                    total: number(p.total),
                };
                callback.call(progress, ThreadsafeFunctionCallMode::NonBlocking);
            }),
            None => Progress::ignore(),
        };
        call!(self, env, |c| async move {
            kind?;
            c.import_images(node.as_deref(), ty?, archive.into(), name?, progress)
                .await
        })
    }

    /// Pulls `reference` (`[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`) from its
    /// registry into a node's runtime, calling `options.progress` with each
    /// step. Resolves to the image. Rejects with `invalid_argument` (naming
    /// the part of the reference, or `username`/`password`), `not_found`
    /// (no such image or tag), `unauthenticated`, `unavailable` (the
    /// registry), `unsupported`.
    #[napi(ts_return_type = "Promise<Image>")]
    pub fn pull_image<'env>(
        &self,
        env: &'env Env,
        reference: String,
        options: Option<PullOptions>,
    ) -> Pending<'env> {
        let options = options.unwrap_or(PullOptions {
            instance_type: None,
            node: None,
            username: None,
            password: None,
            insecure_registries: None,
            registry_cas: None,
            platform: None,
            kind: None,
            progress: None,
        });
        let ty = instance_type(options.instance_type.as_deref());
        let request = ImageRef::try_from(reference.as_str())
            .map_err(zixiao_core::Error::from)
            .and_then(|reference| {
                let credentials =
                    zixiao_client::registry_credentials(options.username, options.password)?;
                let registry_cas = options
                    .registry_cas
                    .unwrap_or_default()
                    .into_iter()
                    .map(RegistryCa::try_from)
                    .collect::<Result<_, _>>()?;
                let platform = options
                    .platform
                    .as_deref()
                    .map(ImagePlatform::try_from)
                    .transpose()?;
                let pull = zixiao_client::pull_options(
                    &reference,
                    credentials,
                    options.insecure_registries.unwrap_or_default(),
                    registry_cas,
                    platform,
                    options.kind.as_deref(),
                )?;
                Ok((reference, pull))
            });
        let progress = match options.progress {
            Some(callback) => Progress::new(move |p: PullProgress| {
                callback.call(PullEvent::from(p), ThreadsafeFunctionCallMode::NonBlocking);
            }),
            None => Progress::ignore(),
        };
        let node = options.node;
        call!(self, env, |c| {
            let (reference, pull) = request?;
            c.pull_image(node.as_deref(), ty?, reference, pull, progress)
        })
    }

    /// The images a node's runtime holds.
    #[napi(ts_return_type = "Promise<Image[]>")]
    pub fn list_images<'env>(&self, env: &'env Env, target: Option<ImageTarget>) -> Pending<'env> {
        let (ty, node) = match target {
            Some(t) => (instance_type(t.instance_type.as_deref()), t.node),
            None => (instance_type(None), None),
        };
        call!(self, env, |c| c.list_images(node.as_deref(), ty?))
    }

    /// Removes image `name` from a node's runtime. Rejects with
    /// `not_found`, `failed_precondition` (an instance uses it), `unsupported`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove_image<'env>(
        &self,
        env: &'env Env,
        name: String,
        target: Option<ImageTarget>,
    ) -> Pending<'env> {
        let (ty, node, kind) = match target {
            Some(t) => (
                instance_type(t.instance_type.as_deref()),
                t.node,
                image_kind(t.kind.as_deref()),
            ),
            None => (instance_type(None), None, image_kind(None)),
        };
        call!(self, env, |c| c.remove_image_of_kind(
            node.as_deref(),
            ty?,
            kind?,
            &name
        ))
    }

    /// Copies the deployment's state, while it stays in use, into the new
    /// file `to` and checks the copy. Rejects with `invalid_argument` (`to`
    /// exists), `unsupported` (not the embedded deployment).
    #[napi(ts_return_type = "Promise<StoreSummary>")]
    pub fn backup_state<'env>(&self, env: &'env Env, to: String) -> Pending<'env> {
        call!(self, env, |c| c.backup_state(to.into()))
    }

    /// Validates `request` (shaped like the CLI's `network create`: `name`,
    /// `subnets`, optional `gateways`, `reserved`, `nat`, `isolated`, `vni`) and
    /// stores the network, setting it up on every node that can. Rejects
    /// with `invalid_argument` naming the field (`subnets[0]` also when it
    /// overlaps another network's), `already_exists`, `unsupported`.
    #[napi(
        ts_args_type = "request: CreateNetwork",
        ts_return_type = "Promise<Network>"
    )]
    pub fn create_network<'env>(
        &self,
        env: &'env Env,
        request: serde_json::Value,
    ) -> Pending<'env> {
        let request = from_js::<CreateNetwork>(None, request);
        call!(self, env, |c| c.create_network(request?))
    }

    /// The network named `name`. Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<Network>")]
    pub fn get_network<'env>(&self, env: &'env Env, name: String) -> Pending<'env> {
        call!(self, env, |c| c.get_network(&name))
    }

    /// Every network, in name order.
    #[napi(ts_return_type = "Promise<Network[]>")]
    pub fn list_networks<'env>(&self, env: &'env Env) -> Pending<'env> {
        call!(self, env, |c| c.list_networks())
    }

    /// The network named `name` (its fields) with `nodes`: its state on
    /// every node that sets up networks, part by part (`bridge`, `vxlan`,
    /// `peers`, `rules`, `dhcp`, `links`, each `ok`, `missing`, `drifted`
    /// or `not_needed`). Rejects with `not_found`.
    #[napi(ts_return_type = "Promise<NetworkStatus>")]
    pub fn network_status<'env>(&self, env: &'env Env, name: String) -> Pending<'env> {
        call!(self, env, |c| c.network_status(&name))
    }

    /// Puts the network back as the store says on every node; resolves to
    /// its state as `networkStatus` does, with `repaired`: what was
    /// mended. Rejects with `not_found`, `failed_precondition`.
    #[napi(ts_return_type = "Promise<NetworkStatus>")]
    pub fn repair_network<'env>(&self, env: &'env Env, name: String) -> Pending<'env> {
        call!(self, env, |c| c.repair_network(&name))
    }

    /// Removes the network from every node and from the store. Rejects with
    /// `not_found`, `failed_precondition` naming the instances still on it.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete_network<'env>(&self, env: &'env Env, name: String) -> Pending<'env> {
        call!(self, env, |c| c.delete_network(&name))
    }

    /// Validates `spec` (the `labels` and `spec` of an instance's request)
    /// and stores template `name` with it as version 1. Rejects with
    /// `invalid_argument` naming the field, `already_exists`.
    #[napi(
        ts_args_type = "name: string, spec: TemplateSpec",
        ts_return_type = "Promise<Template>"
    )]
    pub fn create_template<'env>(
        &self,
        env: &'env Env,
        name: String,
        spec: serde_json::Value,
    ) -> Pending<'env> {
        let spec = from_js::<TemplateSpec>(None, spec);
        call!(self, env, |c| c.create_template(&name, spec?))
    }

    /// Stores `spec` as template `name`'s next version; the versions it
    /// has stay as they are. Rejects with `invalid_argument`, `not_found`.
    #[napi(
        ts_args_type = "name: string, spec: TemplateSpec",
        ts_return_type = "Promise<Template>"
    )]
    pub fn update_template<'env>(
        &self,
        env: &'env Env,
        name: String,
        spec: serde_json::Value,
    ) -> Pending<'env> {
        let spec = from_js::<TemplateSpec>(None, spec);
        call!(self, env, |c| c.update_template(&name, spec?))
    }

    /// Template `name` (only `version`, if given), each version with
    /// `in_use` and the names of the `instances` using it. Rejects with
    /// `not_found`.
    #[napi(ts_return_type = "Promise<Template>")]
    pub fn get_template<'env>(
        &self,
        env: &'env Env,
        name: String,
        version: Option<u32>,
    ) -> Pending<'env> {
        call!(self, env, |c| c.get_template(&name, version))
    }

    /// Every template, in name order, with the users of each version.
    #[napi(ts_return_type = "Promise<Template[]>")]
    pub fn list_templates<'env>(&self, env: &'env Env) -> Pending<'env> {
        call!(self, env, |c| c.list_templates())
    }

    /// The operations kept (long calls: creates until the instance runs,
    /// stops, deletes, snapshots, drains, image pulls) that `filter`
    /// accepts (`{ target, kind, unfinished }`; none: every one), oldest
    /// first. Rejects with `invalid_argument` naming the field.
    #[napi(
        ts_args_type = "filter?: OperationFilter",
        ts_return_type = "Promise<Operation[]>"
    )]
    pub fn list_operations<'env>(
        &self,
        env: &'env Env,
        filter: Option<serde_json::Value>,
    ) -> Pending<'env> {
        let filter = filter.map_or(Ok(OperationFilter::default()), |f| {
            from_js::<OperationFilter>(Some("filter"), f)
        });
        call!(self, env, |c| c.list_all_operations(filter?))
    }

    /// Operation `id` (`"op-..."`: what `instance.operation` names).
    /// Rejects with `invalid_argument` (not an operation id), `not_found`.
    #[napi(ts_return_type = "Promise<Operation>")]
    pub fn get_operation<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        call!(self, env, |c| async move {
            c.get_operation(&OperationId::try_from(id)?).await
        })
    }

    /// Cancels running operation `id`: a create's instance is deleted, a
    /// start's or a clone's stopped. Rejects with `not_found`,
    /// `failed_precondition` (finished, or a kind that cannot be
    /// cancelled); nothing changes then.
    #[napi(ts_return_type = "Promise<Operation>")]
    pub fn cancel_operation<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        call!(self, env, |c| async move {
            c.cancel_operation(&OperationId::try_from(id)?).await
        })
    }

    /// Resolves once operation `id` has finished (within `timeoutMs` when
    /// given), with the operation as it ended: `phase` says whether it
    /// succeeded. Rejects with `not_found`, `unavailable` once the timeout
    /// passed (the operation goes on).
    #[napi(ts_return_type = "Promise<Operation>")]
    pub fn wait_operation<'env>(
        &self,
        env: &'env Env,
        id: String,
        timeout_ms: Option<u32>,
    ) -> Pending<'env> {
        let timeout = timeout_ms.map(|ms| std::time::Duration::from_millis(ms.into()));
        call!(self, env, |c| async move {
            c.wait_operation_within(&OperationId::try_from(id)?, timeout)
                .await
        })
    }

    /// Deletes version `version` of template `name`, or every version.
    /// Rejects with `not_found`, `failed_precondition` naming the
    /// instances that use it.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete_template<'env>(
        &self,
        env: &'env Env,
        name: String,
        version: Option<u32>,
    ) -> Pending<'env> {
        call!(self, env, |c| c.delete_template(&name, version))
    }

    /// Creates instance `name` from `template` (`"web"`: its latest
    /// version, `"web@2"`: version 2), changing the fields `set` names
    /// (`["cpus=2", "labels.tier=front"]`); the instance records the
    /// version (`instance.template`). Waits as `createInstance` does.
    /// Rejects with `invalid_argument` naming the field (an unknown one in
    /// `set` too), `not_found` (template or version), and what
    /// `createInstance` rejects with.
    #[napi(
        ts_args_type = "name: string, template: string, set?: string[], options?: WaitOptions",
        ts_return_type = "Promise<Instance>"
    )]
    pub fn create_from_template<'env>(
        &self,
        env: &'env Env,
        name: String,
        template: String,
        set: Option<Vec<String>>,
        options: Option<WaitOptions>,
    ) -> Pending<'env> {
        let request = FromTemplate::parse(name, &template, &set.unwrap_or_default());
        let wait = wait(options);
        call!(self, env, |c| c.create_from_template(request?, wait))
    }
}

/// A piece of an instance's log.
#[napi(object)]
pub struct LogChunk {
    /// The bytes read.
    pub data: Buffer,
    /// The offset to read from next to follow the log.
    pub next_offset: i64,
}
