//! `zixiao.Controller` (blocking) and `zixiao.AsyncController` (asyncio):
//! one [`Client`] call per method, over the embedded deployment (`open`) or
//! a server (`connect`) alike. A blocking method releases the GIL while it
//! waits; an async one returns an awaitable that runs on the module's
//! runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use pyo3::prelude::*;
use tokio::sync::mpsc;
use zixiao_client::OpenOptions;
use zixiao_core::api::{InstancePage, OperationFilter, Page, Progress};
use zixiao_core::controller::DrainReport;
use zixiao_core::driver::{
    ImageInfo, ImagePlatform, ImportProgress, PullOptions, PullProgress, RegistryCa,
    RegistryCredentials, SnapshotInfo,
};
use zixiao_core::model::{
    Aggregate, CarbonIntensity, CreateNetwork, FromTemplate, ImageKind, ImageName, Network,
    NetworkStatus, NodeImageName, Operation, OperationId, OperationKind, TemplateInfo,
    TemplateSpec,
};
use zixiao_core::store::StoreSummary;
use zixiao_core::{
    AllocationRatio, Client, CreateInstance, ImageRef, Instance, InstanceFilter, InstanceType,
    InstanceUpdate, Wait,
};

use crate::console::{PyAsyncConsole, PyConsole};
use crate::convert::{from_py, Json, Outcome, PyLogChunk};
use crate::streams::{PyInstanceWatch, PyLogStream, PyNodeWatch};
use crate::{awaitable, awaitable_of, bridge, error, wait};

/// Bytes a log read returns at most by default.
const DEFAULT_LOG_MAX: u64 = 64 * 1024;

fn filter_from(filter: Option<&Bound<'_, PyAny>>) -> PyResult<InstanceFilter> {
    filter.map_or(Ok(InstanceFilter::default()), |f| {
        from_py(Some("filter"), f)
    })
}

/// A page request from keyword arguments. Errors: `InvalidArgument`
/// (`page_token`).
fn page_from(size: u32, token: Option<&str>) -> PyResult<Page> {
    Page::parse(size, token).map_err(error::to_py)
}

fn instance_type(value: &str) -> PyResult<InstanceType> {
    zixiao_client::instance_type("instance_type", value).map_err(error::to_py)
}

fn snapshot_name(value: Option<String>) -> PyResult<Option<zixiao_core::model::SnapshotName>> {
    value
        .map(zixiao_core::model::SnapshotName::try_from)
        .transpose()
        .map_err(error::to_py)
}

fn migration_mode(value: &str) -> PyResult<zixiao_core::MigrationMode> {
    value.parse().map_err(error::to_py)
}

fn image_name(value: Option<&str>) -> PyResult<Option<ImageName>> {
    value
        .map(|n| zixiao_client::image_name("name", n))
        .transpose()
        .map_err(error::to_py)
}

fn open_options(
    state_dir: Option<PathBuf>,
    containerd_socket: Option<PathBuf>,
    containerd_namespace: Option<String>,
    libvirt_uri: Option<String>,
) -> OpenOptions {
    OpenOptions {
        state_dir,
        containerd_socket,
        containerd_namespace,
        libvirt_uri,
        libvirt_domain_type: None,
        log_limit_mib: None,
        allow_host_paths: None,
    }
}

/// A [`Progress`] whose reports come out of the receiver as `arguments`
/// makes them: the arguments of the caller's progress callback.
fn progress_channel<P, R>(arguments: fn(P) -> R) -> (Progress<P>, mpsc::UnboundedReceiver<R>)
where
    P: Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Progress::new(move |p: P| {
        let _ = tx.send(arguments(p));
    });
    (progress, rx)
}

/// An image import's progress as the callback's arguments `(done, total)`.
fn import_arguments(p: ImportProgress) -> (u64, u64) {
    (p.done, p.total)
}

/// A pull's progress as the callback's one argument, a dict with `event`.
fn pull_arguments(p: PullProgress) -> (Json<PullProgress>,) {
    (Json(p),)
}

/// Blocks on `work` with the GIL released, calling `progress(*report)` on
/// this thread, with the GIL, for each report between waits; an exception
/// it raises stops the work (dropping it) and is raised.
fn wait_reporting<T, R>(
    py: Python<'_>,
    work: impl std::future::Future<Output = zixiao_core::Result<T>> + Send,
    mut reports: mpsc::UnboundedReceiver<R>,
    progress: Option<&Py<PyAny>>,
) -> PyResult<T>
where
    T: Send,
    R: Send
        + for<'a> IntoPyObject<
            'a,
            Target = pyo3::types::PyTuple,
            Output = Bound<'a, pyo3::types::PyTuple>,
        >,
{
    enum Step<R, T> {
        Report(R),
        Done(zixiao_core::Result<T>),
    }
    let mut work = Box::pin(work);
    loop {
        let step = py.detach(|| {
            bridge::runtime().block_on(async {
                tokio::select! {
                    biased;
                    Some(report) = reports.recv() => Step::Report(report),
                    done = &mut work => Step::Done(done),
                }
            })
        });
        match step {
            Step::Report(args) => {
                if let Some(progress) = progress {
                    progress.call1(py, args.into_pyobject(py).map_err(Into::into)?)?;
                }
            }
            Step::Done(done) => return done.map_err(error::to_py),
        }
    }
}

/// Registry credentials from keyword arguments. Errors: `InvalidArgument`.
fn credentials(
    username: Option<String>,
    password: Option<String>,
) -> PyResult<Option<RegistryCredentials>> {
    zixiao_client::registry_credentials(username, password).map_err(error::to_py)
}

/// A pull's reference and options from keyword arguments. Errors:
/// `InvalidArgument` naming the field.
fn pull_request(
    reference: &str,
    username: Option<String>,
    password: Option<String>,
    insecure_registries: Vec<String>,
    registry_cas: Vec<String>,
    platform: Option<&str>,
    kind: Option<&str>,
) -> PyResult<(ImageRef, PullOptions)> {
    let reference =
        ImageRef::try_from(reference).map_err(|e| error::to_py(zixiao_core::Error::from(e)))?;
    let credentials = credentials(username, password)?;
    let registry_cas = registry_cas
        .into_iter()
        .map(RegistryCa::try_from)
        .collect::<Result<_, _>>()
        .map_err(error::to_py)?;
    let platform = platform
        .map(ImagePlatform::try_from)
        .transpose()
        .map_err(error::to_py)?;
    let options = zixiao_client::pull_options(
        &reference,
        credentials,
        insecure_registries,
        registry_cas,
        platform,
        kind,
    )
    .map_err(error::to_py)?;
    Ok((reference, options))
}

/// A carbon intensity given as a Python int; `None` clears it. Raises
/// `InvalidArgument` naming `carbon_intensity`.
fn carbon_intensity(grams: Option<i64>) -> PyResult<Option<CarbonIntensity>> {
    grams
        .map(CarbonIntensity::try_from)
        .transpose()
        .map_err(error::to_py)
}

/// An allocation ratio from Python, its errors naming `field`.
fn allocation_ratio(field: &str, ratio: Option<f64>) -> PyResult<Option<AllocationRatio>> {
    ratio
        .map(AllocationRatio::try_from)
        .transpose()
        .map_err(|e| error::invalid(field, e.to_string()))
}

/// What `connect` is given, as zixiao-client reads it.
#[allow(clippy::too_many_arguments)]
fn connect_args(
    endpoint: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    config: Option<PathBuf>,
    context: Option<String>,
) -> zixiao_client::ConnectArgs {
    zixiao_client::ConnectArgs {
        endpoint,
        token,
        ca_cert,
        client_cert,
        client_key,
        config,
        context,
    }
}

/// Connects to the Zixiao server at `endpoint` (`https://host:port`) with
/// a bearer `token` and the cluster CA `ca_cert` (a PEM file), or as
/// context `context` of the client configuration file `config`: a
/// `Controller` whose calls the server carries out.
///
/// Raises `InvalidArgument` naming the argument; calls raise
/// `Unauthenticated` and `PermissionDenied` when the server refuses them.
#[pyfunction]
#[pyo3(signature = (endpoint=None, *, token=None, ca_cert=None, client_cert=None, client_key=None, config=None, context=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect(
    py: Python<'_>,
    endpoint: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    config: Option<PathBuf>,
    context: Option<String>,
) -> PyResult<PyController> {
    let args = connect_args(
        endpoint,
        token,
        ca_cert,
        client_cert,
        client_key,
        config,
        context,
    );
    wait(
        py,
        async move { zixiao_client::connect(args.options()?).await },
    )
    .map(PyController::from)
}

/// [`connect`], as an awaitable of an `AsyncController`.
#[pyfunction]
#[pyo3(signature = (endpoint=None, *, token=None, ca_cert=None, client_cert=None, client_key=None, config=None, context=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect_async(
    py: Python<'_>,
    endpoint: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    config: Option<PathBuf>,
    context: Option<String>,
) -> PyResult<Bound<'_, PyAny>> {
    let args = connect_args(
        endpoint,
        token,
        ca_cert,
        client_cert,
        client_key,
        config,
        context,
    );
    awaitable_of(py, async move {
        zixiao_client::connect(args.options()?)
            .await
            .map(PyAsyncController::from)
    })
}

/// Test support (built with the `testing` feature only): the path of
/// zixiao-vmm's test guest kernel, or `None` when it was not built.
#[cfg(feature = "testing")]
#[pyfunction]
pub(crate) fn _vmm_test_guest() -> Option<PathBuf> {
    zixiao_client::testing::vmm_test_guest()
}

/// Test support (built with the `testing` feature only): the path of
/// zixiao-vmm's virtio test guest kernel (it echoes on vsock port 1234),
/// or `None` when it was not built.
#[cfg(feature = "testing")]
#[pyfunction]
pub(crate) fn _vmm_virtio_guest() -> Option<PathBuf> {
    zixiao_client::testing::vmm_virtio_guest()
}

/// Drives nodes, instances, images and networks: the API the `zixiao` CLI
/// uses, in-process (`Controller.open`) or on a server (`zixiao.connect`).
///
/// Every method blocks until the deployment answers and releases the GIL
/// meanwhile. Results are dicts shaped like the CLI's JSON output. Errors
/// are `zixiao.ZixiaoError` subclasses, one per error kind.
#[pyclass(name = "Controller", module = "zixiao", frozen)]
pub(crate) struct PyController {
    // `Client` is itself a cheap handle over an `Arc<dyn Api>`.
    inner: Client,
}

impl From<Client> for PyController {
    fn from(inner: Client) -> Self {
        PyController { inner }
    }
}

#[pymethods]
impl PyController {
    /// Opens the embedded deployment over the state directory `state_dir`
    /// (default: the CLI's, `ZIXIAO_STATE_DIR` or `~/.local/share/zixiao`),
    /// registering this machine as its node with the runtimes found here:
    /// containerd at `containerd_socket` (default `ZIXIAO_CONTAINERD_SOCKET`
    /// or `/run/containerd/containerd.sock`) in `containerd_namespace`
    /// (default `zixiao`), libvirt at `libvirt_uri`
    /// (default `ZIXIAO_LIBVIRT_URI` or `qemu:///system`), and the microVM
    /// monitors. One process at a time may hold a directory.
    ///
    /// Raises `Unavailable` when another process holds it.
    #[staticmethod]
    #[pyo3(signature = (
        state_dir=None, *, containerd_socket=None, containerd_namespace=None, libvirt_uri=None
    ))]
    fn open(
        py: Python<'_>,
        state_dir: Option<PathBuf>,
        containerd_socket: Option<PathBuf>,
        containerd_namespace: Option<String>,
        libvirt_uri: Option<String>,
    ) -> PyResult<Self> {
        let options = open_options(
            state_dir,
            containerd_socket,
            containerd_namespace,
            libvirt_uri,
        );
        wait(py, zixiao_client::open(options)).map(PyController::from)
    }

    /// Test support (built with the `testing` feature only): the embedded
    /// deployment whose node runs every instance type on a fake runtime.
    #[cfg(feature = "testing")]
    #[staticmethod]
    fn _open_with_fake_runtimes(py: Python<'_>, state_dir: PathBuf) -> PyResult<Self> {
        let open = zixiao_client::testing::open_with_fake_runtimes(&state_dir);
        wait(py, open).map(PyController::from)
    }

    /// Every node, in id order.
    fn list_nodes(&self, py: Python<'_>) -> PyResult<Json<Vec<zixiao_core::Node>>> {
        wait(py, self.inner.list_nodes()).map(Json)
    }

    /// The node with id (or hostname) `node`. Raises `NotFound`.
    fn get_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<zixiao_core::Node>> {
        wait(py, self.inner.get_node(node)).map(Json)
    }

    /// What the node's instances used together recently, oldest first
    /// (`NodeUsageSample`s), as the server sampled them. Raises
    /// `NotFound`, `Unsupported` (no server keeps a history: an embedded
    /// deployment without a daemon).
    fn node_stats_history(
        &self,
        py: Python<'_>,
        node: &str,
    ) -> PyResult<Json<Vec<zixiao_core::api::NodeUsageSample>>> {
        wait(py, self.inner.node_stats_history(node)).map(Json)
    }

    /// Stops new placements on a node. Raises `NotFound`, `FailedPrecondition`.
    fn cordon_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<zixiao_core::Node>> {
        wait(py, self.inner.cordon_node(node)).map(Json)
    }

    /// Allows placements on a cordoned node again. Raises `NotFound`, `FailedPrecondition`.
    fn uncordon_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<zixiao_core::Node>> {
        wait(py, self.inner.uncordon_node(node)).map(Json)
    }

    /// Empties a node (moves or stops its instances); it ends cordoned.
    /// Returns what moved, waits and stopped.
    fn drain_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<DrainReport>> {
        wait(py, self.inner.drain_node(node)).map(Json)
    }

    /// Puts a node in maintenance (`on=True`: emptied as by a drain) or
    /// takes it out. Raises `NotFound`, `FailedPrecondition`.
    fn set_maintenance(&self, py: Python<'_>, node: &str, on: bool) -> PyResult<Json<DrainReport>> {
        wait(py, self.inner.set_maintenance(node, on)).map(Json)
    }

    /// Retires a node for good: empties it as a drain does, then marks it
    /// decommissioned, offering no runtime. Returns what moved, waits and
    /// stopped. Raises `NotFound`.
    fn decommission_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<DrainReport>> {
        wait(py, self.inner.decommission_node(node)).map(Json)
    }

    /// Removes a node that holds no instances. Raises `NotFound`,
    /// `FailedPrecondition` (it holds instances: decommission or drain it,
    /// then delete those that stayed).
    fn deregister_node(&self, py: Python<'_>, node: &str) -> PyResult<()> {
        wait(py, self.inner.deregister_node(node))
    }

    /// Sets and removes labels operators declare on a node, as `kubectl
    /// label` takes them (`["disk=ssd", "old-"]`): kept when its agent
    /// registers again, merged with what the agent reports into the
    /// node's `labels`. Instances waiting for a node are tried again.
    /// Raises `InvalidArgument` naming `labels`, `NotFound`,
    /// `FailedPrecondition` (a label the agent reports: read-only).
    fn label_node(
        &self,
        py: Python<'_>,
        node: &str,
        labels: Vec<String>,
    ) -> PyResult<Json<zixiao_core::Node>> {
        wait(py, self.inner.label_node(node, &labels)).map(Json)
    }

    /// Changes how far a node's CPU and memory may be promised beyond what
    /// it has (`cpu=4`: four times its cores); a ratio not given stays.
    /// Instances waiting for a node are tried again. Raises
    /// `InvalidArgument` naming `cpu` or `memory` (0.1 to 64, or neither
    /// given), `NotFound`.
    #[pyo3(signature = (node, cpu=None, memory=None))]
    fn set_allocation_ratios(
        &self,
        py: Python<'_>,
        node: &str,
        cpu: Option<f64>,
        memory: Option<f64>,
    ) -> PyResult<Json<zixiao_core::Node>> {
        let (cpu, memory) = (
            allocation_ratio("cpu", cpu)?,
            allocation_ratio("memory", memory)?,
        );
        wait(py, self.inner.set_allocation_ratios(node, cpu, memory)).map(Json)
    }

    /// Sets the carbon intensity of a node's power (gCO2e/kWh, at most
    /// 5000), which carbon-aware placement reads; `None` clears it. It wins
    /// over the figure the node's agent reports. Instances waiting for a
    /// node are tried again. Raises `InvalidArgument` naming
    /// `carbon_intensity`, `NotFound`.
    #[pyo3(signature = (node, intensity))]
    fn set_node_carbon(
        &self,
        py: Python<'_>,
        node: &str,
        intensity: Option<i64>,
    ) -> PyResult<Json<zixiao_core::Node>> {
        let intensity = carbon_intensity(intensity)?;
        wait(py, self.inner.set_node_carbon(node, intensity)).map(Json)
    }

    /// Declares `traits` on a node (see `label_node`). Raises
    /// `InvalidArgument` naming `traits`, `NotFound`, `FailedPrecondition`.
    fn add_node_traits(
        &self,
        py: Python<'_>,
        node: &str,
        traits: Vec<String>,
    ) -> PyResult<Json<zixiao_core::Node>> {
        wait(py, self.inner.add_node_traits(node, &traits)).map(Json)
    }

    /// Takes back `traits` operators declared on a node. Raises
    /// `InvalidArgument`, `NotFound`, `FailedPrecondition` (one the agent
    /// reports).
    fn remove_node_traits(
        &self,
        py: Python<'_>,
        node: &str,
        traits: Vec<String>,
    ) -> PyResult<Json<zixiao_core::Node>> {
        wait(py, self.inner.remove_node_traits(node, &traits)).map(Json)
    }

    /// Stores host aggregate `name` with `metadata` (a dict) and no nodes.
    /// Raises `InvalidArgument` naming `name` or `metadata`, `AlreadyExists`.
    #[pyo3(signature = (name, metadata=BTreeMap::new()))]
    fn create_aggregate(
        &self,
        py: Python<'_>,
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> PyResult<Json<Aggregate>> {
        wait(py, self.inner.create_aggregate(name, metadata)).map(Json)
    }

    /// Deletes an aggregate without nodes. Raises `NotFound`,
    /// `FailedPrecondition` (it has nodes: they are named).
    fn delete_aggregate(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        wait(py, self.inner.delete_aggregate(name))
    }

    /// Every aggregate, in name order.
    fn list_aggregates(&self, py: Python<'_>) -> PyResult<Json<Vec<Aggregate>>> {
        wait(py, self.inner.list_aggregates()).map(Json)
    }

    /// Aggregate `name`. Raises `NotFound`.
    fn get_aggregate(&self, py: Python<'_>, name: &str) -> PyResult<Json<Aggregate>> {
        wait(py, self.inner.get_aggregate(name)).map(Json)
    }

    /// Sets (`"k=v"`) and removes (`"k-"`) metadata of aggregate `name`;
    /// instances waiting for a node are tried again. Raises `NotFound`,
    /// `InvalidArgument` on `metadata`.
    fn set_aggregate_metadata(
        &self,
        py: Python<'_>,
        name: &str,
        metadata: Vec<String>,
    ) -> PyResult<Json<Aggregate>> {
        wait(py, self.inner.set_aggregate_metadata(name, &metadata)).map(Json)
    }

    /// Makes node `node` a member of aggregate `name`; instances waiting
    /// for a node are tried again. Raises `NotFound` (either).
    fn add_aggregate_node(
        &self,
        py: Python<'_>,
        name: &str,
        node: &str,
    ) -> PyResult<Json<Aggregate>> {
        wait(py, self.inner.add_aggregate_node(name, node)).map(Json)
    }

    /// Takes node `node` out of aggregate `name`. Raises `NotFound`.
    fn remove_aggregate_node(
        &self,
        py: Python<'_>,
        name: &str,
        node: &str,
    ) -> PyResult<Json<Aggregate>> {
        wait(py, self.inner.remove_aggregate_node(name, node)).map(Json)
    }

    /// Node changes after store revision `after` (0: from now), in order,
    /// then live, as a `NodeWatch` (an iterator and async iterator of dicts).
    #[pyo3(signature = (after=0))]
    fn watch_nodes(&self, py: Python<'_>, after: u64) -> PyResult<PyNodeWatch> {
        wait(py, self.inner.watch_nodes(after)).map(PyNodeWatch::new)
    }

    /// A summary of nodes, instances, capacity and allocation.
    fn cluster_info(&self, py: Python<'_>) -> PyResult<Json<zixiao_core::ClusterInfo>> {
        wait(py, self.inner.cluster_info()).map(Json)
    }

    /// Validates `request` (a dict or `zixiao.CreateInstance`) and stores the
    /// instance, wanted running. With `wait` (the default) returns once it
    /// has settled: running, or waiting for capacity, a back-off or a
    /// person (its `conditions` say which); else at once, pending.
    ///
    /// Raises `InvalidArgument` naming the field, `AlreadyExists`,
    /// `Unsupported` (no node can run that type), `ResourceExhausted`.
    #[pyo3(signature = (request, *, wait=true))]
    fn create_instance(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        wait: bool,
    ) -> PyResult<Json<Instance>> {
        let request: CreateInstance = from_py(None, request)?;
        crate::wait(py, self.inner.create_instance(request, Wait::from(wait))).map(Json)
    }

    /// The instance with id or name `instance`. Raises `NotFound`.
    fn get_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.get_instance(instance)).map(Json)
    }

    /// The instances `filter` accepts (a dict with any of `instance_type`,
    /// `status`, `node`, `labels`), in name order.
    #[pyo3(signature = (filter=None))]
    fn list_instances(
        &self,
        py: Python<'_>,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Json<Vec<Instance>>> {
        let filter = filter_from(filter)?;
        wait(py, self.inner.list_instances(filter)).map(Json)
    }

    /// One page of the instances `filter` accepts, in name order: a dict
    /// with `instances` and, when there are more, `next_page_token` to pass
    /// back as `page_token`. `page_size` 0 is every instance here, a
    /// server's default page (500) through one. Raises `InvalidArgument`
    /// (`page_token`).
    #[pyo3(signature = (filter=None, *, page_size=0, page_token=None))]
    fn list_instances_page(
        &self,
        py: Python<'_>,
        filter: Option<&Bound<'_, PyAny>>,
        page_size: u32,
        page_token: Option<&str>,
    ) -> PyResult<Json<InstancePage>> {
        let filter = filter_from(filter)?;
        let page = page_from(page_size, page_token)?;
        wait(py, self.inner.list_instances_page(filter, page)).map(Json)
    }

    /// Wants the instance running; with `wait`, returns once it settled.
    /// Raises `NotFound`, `FailedPrecondition` (being deleted).
    #[pyo3(signature = (instance, *, wait=true))]
    fn start_instance(
        &self,
        py: Python<'_>,
        instance: &str,
        wait: bool,
    ) -> PyResult<Json<Instance>> {
        crate::wait(py, self.inner.start_instance(instance, Wait::from(wait))).map(Json)
    }

    /// Wants the instance stopped; with `wait`, returns once it settled.
    /// Raises `NotFound`, `FailedPrecondition` (being deleted).
    #[pyo3(signature = (instance, *, wait=true))]
    fn stop_instance(
        &self,
        py: Python<'_>,
        instance: &str,
        wait: bool,
    ) -> PyResult<Json<Instance>> {
        crate::wait(py, self.inner.stop_instance(instance, Wait::from(wait))).map(Json)
    }

    /// Stops and starts the instance; with `wait`, returns once it settled.
    #[pyo3(signature = (instance, *, wait=true))]
    fn restart_instance(
        &self,
        py: Python<'_>,
        instance: &str,
        wait: bool,
    ) -> PyResult<Json<Instance>> {
        crate::wait(py, self.inner.restart_instance(instance, Wait::from(wait))).map(Json)
    }

    /// Changes the instance's labels, restart policy, CPUs, memory or
    /// snapshot schedule (`update`: a dict with any of `set_labels`,
    /// `remove_labels`, `restart`, `cpus`, `memory_mib`,
    /// `restart_if_needed`, `snapshot_every` (`"1h"`), `snapshot_keep`,
    /// `clear_snapshot_schedule`). A running container takes a new size
    /// live; a running VM or microVM only with `restart_if_needed` (it
    /// restarts; with `wait`, returns once it settled). Raises
    /// `InvalidArgument` naming the field (an empty update too, an
    /// interval below one minute), `NotFound`, `FailedPrecondition` (being
    /// deleted, or a restart needed and not allowed), `Unsupported` (a
    /// snapshot schedule for an instance that cannot be snapshotted),
    /// `ResourceExhausted` (the node's shortfall or the project's quota);
    /// nothing changes then.
    #[pyo3(signature = (instance, update, *, wait=true))]
    fn update_instance(
        &self,
        py: Python<'_>,
        instance: &str,
        update: &Bound<'_, PyAny>,
        wait: bool,
    ) -> PyResult<Json<Instance>> {
        let update: InstanceUpdate = from_py(None, update)?;
        crate::wait(
            py,
            self.inner
                .update_instance(instance, update, Wait::from(wait)),
        )
        .map(Json)
    }

    /// Wants the instance deleted. With `wait` (the default) returns `None`
    /// once it is gone, or the instance as it is when something holds it up
    /// (its conditions say what); without, the instance being deleted.
    /// Raises `NotFound`.
    #[pyo3(signature = (instance, *, wait=true))]
    fn delete_instance(
        &self,
        py: Python<'_>,
        instance: &str,
        wait: bool,
    ) -> PyResult<Json<Option<Instance>>> {
        crate::wait(py, self.inner.delete_instance(instance, Wait::from(wait))).map(Json)
    }

    /// Freezes a running instance. Raises `FailedPrecondition`, `Unsupported`.
    fn pause_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.pause_instance(instance)).map(Json)
    }

    /// Thaws a paused instance. Raises `FailedPrecondition`, `Unsupported`.
    fn resume_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.resume_instance(instance)).map(Json)
    }

    /// Current resource usage of a placed instance. Raises `NotFound`,
    /// `FailedPrecondition` (not on a node), `Unsupported`.
    fn instance_stats(
        &self,
        py: Python<'_>,
        instance: &str,
    ) -> PyResult<Json<zixiao_core::InstanceStats>> {
        wait(py, self.inner.instance_stats(instance)).map(Json)
    }

    /// The instance's recent resource usage, oldest first (`StatsSample`s),
    /// as the server sampled it. Raises `NotFound`, `Unsupported` (no
    /// server keeps a history: an embedded deployment without a daemon).
    fn instance_stats_history(
        &self,
        py: Python<'_>,
        instance: &str,
    ) -> PyResult<Json<Vec<zixiao_core::api::StatsSample>>> {
        wait(py, self.inner.instance_stats_history(instance)).map(Json)
    }

    /// Up to `max` bytes of the instance's log (its console, or stdout and
    /// stderr) from `offset`, as a `LogChunk`; read again from its
    /// `next_offset` to go on. Raises `NotFound`, `FailedPrecondition` (not
    /// on a node yet).
    #[pyo3(signature = (instance, offset=0, max=DEFAULT_LOG_MAX))]
    fn read_log(
        &self,
        py: Python<'_>,
        instance: &str,
        offset: u64,
        max: u64,
    ) -> PyResult<PyLogChunk> {
        wait(py, self.inner.read_log(instance, offset, max)).map(PyLogChunk::from)
    }

    /// The instance's log from `offset` as it grows: a `LogStream` of
    /// `bytes` pieces that ends once the instance stops running and all it
    /// wrote was read. Raises `NotFound`, `FailedPrecondition`.
    #[pyo3(signature = (instance, offset=0))]
    fn follow_log(&self, py: Python<'_>, instance: &str, offset: u64) -> PyResult<PyLogStream> {
        wait(py, self.inner.follow_log(instance, offset)).map(PyLogStream::new)
    }

    /// Opens the instance's interactive console: a `Console` to `write`
    /// bytes to, `read` or iterate its output, and `close`. Raises
    /// `NotFound`, `FailedPrecondition` (not running), `Unsupported` (its
    /// runtime has no console).
    fn attach_console(&self, py: Python<'_>, instance: &str) -> PyResult<PyConsole> {
        wait(py, self.inner.attach_console(instance)).map(PyConsole::new)
    }

    /// Instance changes after store revision `after` (0: from now), in
    /// order, then live, as an `InstanceWatch` (an iterator and async
    /// iterator of dicts). Raises `FailedPrecondition` when that history
    /// was compacted.
    #[pyo3(signature = (after=0))]
    fn watch_instances(&self, py: Python<'_>, after: u64) -> PyResult<PyInstanceWatch> {
        wait(py, self.inner.watch_instances(after)).map(PyInstanceWatch::new)
    }

    /// Takes snapshot `name` of the instance (its disks, and its memory
    /// when it runs); idempotent. Raises `NotFound`, `InvalidArgument`
    /// (the name), `FailedPrecondition`, `Unsupported` (its runtime takes
    /// no snapshots).
    fn create_snapshot(
        &self,
        py: Python<'_>,
        instance: &str,
        name: &str,
    ) -> PyResult<Json<SnapshotInfo>> {
        wait(py, self.inner.create_snapshot(instance, name)).map(Json)
    }

    /// The instance's snapshots, oldest first. Raises `NotFound`, `Unsupported`.
    fn list_snapshots(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Vec<SnapshotInfo>>> {
        wait(py, self.inner.list_snapshots(instance)).map(Json)
    }

    /// Puts the instance back to snapshot `name`. Raises `NotFound`, `Unsupported`.
    fn revert_snapshot(&self, py: Python<'_>, instance: &str, name: &str) -> PyResult<()> {
        wait(py, self.inner.revert_snapshot(instance, name))
    }

    /// Deletes snapshot `name`; idempotent. Raises `NotFound`, `Unsupported`.
    fn delete_snapshot(&self, py: Python<'_>, instance: &str, name: &str) -> PyResult<()> {
        wait(py, self.inner.delete_snapshot(instance, name))
    }

    /// Copies snapshot `name` into the new directory `to` on this machine,
    /// for `restore_instance`. Raises `NotFound`, `AlreadyExists` (`to` is
    /// not empty), `Unsupported` (not the embedded deployment, or no
    /// microVM runtime in this build).
    fn export_snapshot(
        &self,
        py: Python<'_>,
        instance: &str,
        name: &str,
        to: PathBuf,
    ) -> PyResult<()> {
        wait(py, self.inner.export_snapshot(instance, name, to))
    }

    /// Creates instance `name` from a snapshot directory written by
    /// `export_snapshot`; it resumes where the snapshot was taken. With
    /// `wait`, returns once it settled. Raises what `create_instance`
    /// raises, `InvalidArgument` (`from`: not a snapshot directory).
    #[pyo3(signature = (name, snapshot_dir, *, wait=true))]
    fn restore_instance(
        &self,
        py: Python<'_>,
        name: &str,
        snapshot_dir: PathBuf,
        wait: bool,
    ) -> PyResult<Json<Instance>> {
        let restore = self
            .inner
            .restore_instance(name, snapshot_dir, Wait::from(wait));
        crate::wait(py, restore).map(Json)
    }

    /// Creates instance `name` as a clone of `source` (id or name) on the
    /// source's node: a new instance (its own id, MACs and addresses) with
    /// the source's labels and spec and `clone_of` naming the source. A
    /// container is a new container of the same spec; a VM starts from a
    /// copy of the source's disk, or with `linked` from an overlay on a
    /// frozen base of it; a microVM resumes where the source was, at
    /// `snapshot` or at one taken for it. With `wait`, returns once it
    /// settled. Raises `AlreadyExists`, `NotFound` (source, snapshot),
    /// `InvalidArgument` (the name, `linked`), `FailedPrecondition`,
    /// `Unsupported`; nothing is stored then.
    #[pyo3(signature = (source, name, *, linked=false, snapshot=None, wait=true))]
    fn clone_instance(
        &self,
        py: Python<'_>,
        source: &str,
        name: &str,
        linked: bool,
        snapshot: Option<String>,
        wait: bool,
    ) -> PyResult<Json<Instance>> {
        let snapshot = snapshot_name(snapshot)?;
        let cloned = self
            .inner
            .clone_instance(source, name, linked, snapshot, Wait::from(wait));
        crate::wait(py, cloned).map(Json)
    }

    /// Moves running instance `instance` (id or name) to node `to` (id or
    /// hostname; default: the scheduler's pick among the other ready
    /// nodes), keeping its id, name, MACs and addresses. `mode` is `auto`,
    /// `restart` (the workload starts afresh on the target), `cold`
    /// (stopped, its disk copied, started on the target from the copy) or
    /// `live` (both for VMs between libvirt nodes; `Unsupported` where a
    /// node's driver cannot). Returns the instance on its
    /// new node, its `operation` naming the migration. Raises `NotFound`,
    /// `InvalidArgument` (`mode`; `to` is its node), `FailedPrecondition`
    /// (no other node, or none can take it, naming why; `auto` would lose
    /// a disk; the target could not run it and it is back on its node),
    /// `Unsupported`.
    #[pyo3(signature = (instance, *, to=None, mode="auto"))]
    fn migrate_instance(
        &self,
        py: Python<'_>,
        instance: &str,
        to: Option<&str>,
        mode: &str,
    ) -> PyResult<Json<Instance>> {
        let mode = migration_mode(mode)?;
        crate::wait(py, self.inner.migrate_instance(instance, to, mode)).map(Json)
    }

    /// Imports every image of the archive `archive` (an OCI layout or
    /// docker-archive tar on this machine) into the `instance_type` runtime
    /// of `node` (default: the only node), its one image under `name`
    /// (`NAME[:TAG]`) if given, calling `progress(done, total)` in bytes as
    /// it reads; an exception it raises stops the import. Returns the
    /// images imported. With `kind` `disk`, `kernel` or `initrd`, `archive`
    /// is one such file, copied into the node's image store under `name`
    /// (required) after its content is checked. Raises `NotFound` (node or
    /// file), `InvalidArgument` (not an archive or not a file of that kind,
    /// a bad name, a name for several images), `AlreadyExists`, `Unsupported`.
    #[pyo3(signature = (archive, *, name=None, kind="container", instance_type="container", node=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn import_images(
        &self,
        py: Python<'_>,
        archive: PathBuf,
        name: Option<&str>,
        kind: &str,
        instance_type: &str,
        node: Option<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Json<Vec<ImageInfo>>> {
        let ty = self::instance_type(instance_type)?;
        let kind = ImageKind::from_str(kind).map_err(error::to_py)?;
        if kind.in_node_store() {
            let name = NodeImageName::try_from(name.unwrap_or_default()).map_err(error::to_py)?;
            let import = self
                .inner
                .import_node_image(node.as_deref(), archive, kind, name);
            return wait(py, import).map(|image| Json(vec![image]));
        }
        let name = image_name(name)?;
        let (report, reports) = progress_channel(import_arguments);
        let import = self
            .inner
            .import_images(node.as_deref(), ty, archive, name, report);
        wait_reporting(py, import, reports, progress.as_ref()).map(Json)
    }

    /// Pulls `reference` (`[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`) from its
    /// registry into the `instance_type` runtime of `node` (default: the
    /// only node), with `username` and `password` if given, else the
    /// credentials of the user's docker config file for that registry.
    /// Registries in `insecure_registries` (`host[:port]`) may be reached
    /// over plain HTTP; loopback ones always may. `registry_cas` are PEM
    /// CA certificates (text) trusted besides the node's roots, for a
    /// registry whose certificate a private CA issued. `platform`
    /// (`os/arch[/variant]`, such as `linux/arm64`) picks the manifest of a
    /// multi-platform image (default: the node's own). `kind` (`container`,
    /// `disk`, `kernel`, `initrd`) is the kind of image wanted (default:
    /// what the artifact's media types say; a disk, kernel or initrd goes
    /// into the node's image store). `progress(event)` is
    /// called with each step, a dict whose `event` is `resolved`, `fetched`
    /// or `unpacking`; an exception it raises stops the pull. Returns the
    /// image. Raises `InvalidArgument` (naming the part of the reference),
    /// `NotFound` (no such image or tag), `Unauthenticated`, `Unavailable`
    /// (the registry), `Unsupported`.
    #[pyo3(signature = (reference, *, instance_type="container", node=None, username=None, password=None, insecure_registries=Vec::new(), registry_cas=Vec::new(), platform=None, kind=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn pull_image(
        &self,
        py: Python<'_>,
        reference: &str,
        instance_type: &str,
        node: Option<String>,
        username: Option<String>,
        password: Option<String>,
        insecure_registries: Vec<String>,
        registry_cas: Vec<String>,
        platform: Option<&str>,
        kind: Option<&str>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Json<ImageInfo>> {
        let ty = self::instance_type(instance_type)?;
        let (reference, options) = pull_request(
            reference,
            username,
            password,
            insecure_registries,
            registry_cas,
            platform,
            kind,
        )?;
        let (report, reports) = progress_channel(pull_arguments);
        let pull = self
            .inner
            .pull_image(node.as_deref(), ty, reference, options, report);
        wait_reporting(py, pull, reports, progress.as_ref()).map(Json)
    }

    /// The images the `instance_type` runtime of `node` (default: the only
    /// node) holds. Raises `NotFound`, `Unsupported`.
    #[pyo3(signature = (*, instance_type="container", node=None))]
    fn list_images(
        &self,
        py: Python<'_>,
        instance_type: &str,
        node: Option<String>,
    ) -> PyResult<Json<Vec<ImageInfo>>> {
        let ty = self::instance_type(instance_type)?;
        wait(py, self.inner.list_images(node.as_deref(), ty)).map(Json)
    }

    /// Removes image `name` of `kind` (`container`, `disk`, `kernel`,
    /// `initrd`) from the `instance_type` runtime or the image store of
    /// `node`. Raises `NotFound`, `FailedPrecondition` (an instance uses
    /// it), `Unsupported`.
    #[pyo3(signature = (name, *, kind="container", instance_type="container", node=None))]
    fn remove_image(
        &self,
        py: Python<'_>,
        name: &str,
        kind: &str,
        instance_type: &str,
        node: Option<String>,
    ) -> PyResult<()> {
        let ty = self::instance_type(instance_type)?;
        let kind = ImageKind::from_str(kind).map_err(error::to_py)?;
        let removed = self
            .inner
            .remove_image_of_kind(node.as_deref(), ty, kind, name);
        wait(py, removed)
    }

    /// Copies the deployment's state, while it stays in use, into the new
    /// file `to` and checks the copy; returns its `revision`, `keys`,
    /// `history` and `leases`. Raises `InvalidArgument` (`to` exists),
    /// `Unsupported` (not the embedded deployment).
    fn backup_state(&self, py: Python<'_>, to: PathBuf) -> PyResult<Json<StoreSummary>> {
        wait(py, self.inner.backup_state(to)).map(Json)
    }

    /// Validates `request` (a dict shaped like the CLI's `network create`:
    /// `name`, `subnets`, optional `gateways`, `reserved`, `nat`, `isolated`, `vni`)
    /// and stores the network, setting it up on every node that can.
    ///
    /// Raises `InvalidArgument` naming the field (`subnets[0]` also when it
    /// overlaps another network's), `AlreadyExists`, `Unsupported`.
    fn create_network(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Json<Network>> {
        let request: CreateNetwork = from_py(None, request)?;
        wait(py, self.inner.create_network(request)).map(Json)
    }

    /// The network named `name`. Raises `NotFound`.
    fn get_network(&self, py: Python<'_>, name: &str) -> PyResult<Json<Network>> {
        wait(py, self.inner.get_network(name)).map(Json)
    }

    /// Every network, in name order.
    fn list_networks(&self, py: Python<'_>) -> PyResult<Json<Vec<Network>>> {
        wait(py, self.inner.list_networks()).map(Json)
    }

    /// The network named `name` (its fields) with `nodes`: its state on
    /// every node that sets up networks, part by part (`bridge`, `vxlan`,
    /// `peers`, `rules`, `dhcp`, `links`, each `ok`, `missing`, `drifted`
    /// or `not_needed`). Raises `NotFound`.
    fn network_status(&self, py: Python<'_>, name: &str) -> PyResult<Json<NetworkStatus>> {
        wait(py, self.inner.network_status(name)).map(Json)
    }

    /// Puts the network back as the store says on every node and returns
    /// its state as `network_status` does, with `repaired`: what was
    /// mended. Raises `NotFound`, `FailedPrecondition` (being deleted).
    fn repair_network(&self, py: Python<'_>, name: &str) -> PyResult<Json<NetworkStatus>> {
        wait(py, self.inner.repair_network(name)).map(Json)
    }

    /// Removes the network from every node and from the store. Raises
    /// `NotFound`, `FailedPrecondition` naming the instances still on it.
    fn delete_network(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        wait(py, self.inner.delete_network(name))
    }

    /// Validates `spec` (a dict with the `labels` and `spec` of an
    /// instance's request) and stores template `name` with it as version 1.
    /// Raises `InvalidArgument` naming the field, `AlreadyExists`.
    fn create_template(
        &self,
        py: Python<'_>,
        name: &str,
        spec: &Bound<'_, PyAny>,
    ) -> PyResult<Json<TemplateInfo>> {
        let spec: TemplateSpec = from_py(None, spec)?;
        wait(py, self.inner.create_template(name, spec)).map(Json)
    }

    /// Stores `spec` as template `name`'s next version; the versions it has
    /// stay as they are. Raises `InvalidArgument`, `NotFound`.
    fn update_template(
        &self,
        py: Python<'_>,
        name: &str,
        spec: &Bound<'_, PyAny>,
    ) -> PyResult<Json<TemplateInfo>> {
        let spec: TemplateSpec = from_py(None, spec)?;
        wait(py, self.inner.update_template(name, spec)).map(Json)
    }

    /// Template `name` (only `version`, if given): each version with
    /// `in_use` and the names of the `instances` that use it. Raises
    /// `NotFound`.
    #[pyo3(signature = (name, *, version=None))]
    fn get_template(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
    ) -> PyResult<Json<TemplateInfo>> {
        wait(py, self.inner.get_template(name, version)).map(Json)
    }

    /// Every template, in name order, with the users of each version.
    fn list_templates(&self, py: Python<'_>) -> PyResult<Json<Vec<TemplateInfo>>> {
        wait(py, self.inner.list_templates()).map(Json)
    }

    /// The operations kept (long calls: creates until the instance runs,
    /// stops, deletes, snapshots, drains, image pulls), oldest first: the
    /// unfinished ones, or with `all` every one; only those on `target`
    /// (an instance's id or name, a node, an image) or of `kind`
    /// (`"create"`, `"image-pull"`...). Raises `InvalidArgument` naming `kind`.
    #[pyo3(signature = (*, all=false, target=None, kind=None))]
    fn list_operations(
        &self,
        py: Python<'_>,
        all: bool,
        target: Option<String>,
        kind: Option<&str>,
    ) -> PyResult<Json<Vec<Operation>>> {
        let filter = operation_filter(all, target, kind)?;
        wait(py, self.inner.list_all_operations(filter)).map(Json)
    }

    /// Operation `id` (`"op-..."`: what `instance["operation"]` names).
    /// Raises `InvalidArgument` (not an operation id), `NotFound`.
    fn get_operation(&self, py: Python<'_>, id: &str) -> PyResult<Json<Operation>> {
        let id = operation_id(id)?;
        wait(py, self.inner.get_operation(&id)).map(Json)
    }

    /// Cancels running operation `id`: a create's instance is deleted, a
    /// start's or a clone's stopped. Raises `NotFound`,
    /// `FailedPrecondition` (finished, or a kind that cannot be
    /// cancelled); nothing changes then.
    fn cancel_operation(&self, py: Python<'_>, id: &str) -> PyResult<Json<Operation>> {
        let id = operation_id(id)?;
        wait(py, self.inner.cancel_operation(&id)).map(Json)
    }

    /// Waits until operation `id` has finished (at most `timeout`
    /// seconds) and returns it as it ended: `phase` says whether it
    /// succeeded. Raises `NotFound`, `Unavailable` once the timeout passed.
    #[pyo3(signature = (id, timeout=None))]
    fn wait_operation(
        &self,
        py: Python<'_>,
        id: &str,
        timeout: Option<f64>,
    ) -> PyResult<Json<Operation>> {
        let id = operation_id(id)?;
        let timeout = seconds(timeout)?;
        wait(py, self.inner.wait_operation_within(&id, timeout)).map(Json)
    }

    /// Deletes version `version` of template `name`, or every version.
    /// Raises `NotFound`, `FailedPrecondition` naming the instances that
    /// use it.
    #[pyo3(signature = (name, *, version=None))]
    fn delete_template(&self, py: Python<'_>, name: &str, version: Option<u32>) -> PyResult<()> {
        wait(py, self.inner.delete_template(name, version))
    }

    /// Creates instance `name` from `template` (`"web"`: its latest
    /// version, `"web@2"`: version 2), changing the fields `set` names
    /// (`["cpus=2", "labels.tier=front"]`); the instance records the
    /// version (`instance["template"]`). Waits as `create_instance` does.
    /// Raises `InvalidArgument` naming the field (an unknown one in `set`
    /// too), `NotFound` (template or version), and what `create_instance`
    /// raises.
    #[pyo3(signature = (name, template, *, set=Vec::new(), wait=true))]
    fn create_from_template(
        &self,
        py: Python<'_>,
        name: &str,
        template: &str,
        set: Vec<String>,
        wait: bool,
    ) -> PyResult<Json<Instance>> {
        let request = FromTemplate::parse(name, template, &set).map_err(error::to_py)?;
        crate::wait(
            py,
            self.inner.create_from_template(request, Wait::from(wait)),
        )
        .map(Json)
    }

    fn __repr__(&self) -> &'static str {
        "zixiao.Controller"
    }
}

/// The asyncio twin of `Controller`: the same methods, each returning an
/// awaitable that runs on the module's runtime without holding the GIL.
#[pyclass(name = "AsyncController", module = "zixiao", frozen)]
pub(crate) struct PyAsyncController {
    // `Client` is itself a cheap handle over an `Arc<dyn Api>`.
    inner: Client,
}

impl From<Client> for PyAsyncController {
    fn from(inner: Client) -> Self {
        PyAsyncController { inner }
    }
}

/// An awaitable of one call on a clone of the client, its result as a dict.
/// `id` as an operation id. Raises `InvalidArgument` naming `operation`.
fn operation_id(id: &str) -> PyResult<OperationId> {
    OperationId::try_from(id).map_err(error::to_py)
}

/// The filter of `list_operations`. Raises `InvalidArgument` naming `kind`.
fn operation_filter(
    all: bool,
    target: Option<String>,
    kind: Option<&str>,
) -> PyResult<OperationFilter> {
    Ok(OperationFilter {
        target,
        kind: kind
            .map(OperationKind::from_str)
            .transpose()
            .map_err(error::to_py)?,
        unfinished: !all,
    })
}

/// A timeout in seconds. Raises `InvalidArgument` naming `timeout` for a
/// negative or non-finite one.
fn seconds(timeout: Option<f64>) -> PyResult<Option<std::time::Duration>> {
    timeout
        .map(|t| {
            std::time::Duration::try_from_secs_f64(t).map_err(|_| {
                error::to_py(zixiao_core::Error::invalid(
                    "timeout",
                    format!("{t} is not a number of seconds"),
                ))
            })
        })
        .transpose()
}

macro_rules! call {
    ($self:ident, $py:ident, |$c:ident| $call:expr) => {{
        let $c = $self.inner.clone();
        awaitable($py, async move { $call.await })
    }};
}

/// An awaitable of one call on a clone of the client, its result wrapped by `$wrap`.
macro_rules! call_as {
    ($self:ident, $py:ident, $wrap:expr, |$c:ident| $call:expr) => {{
        let $c = $self.inner.clone();
        awaitable_of($py, async move { $call.await.map($wrap) })
    }};
}

#[pymethods]
impl PyAsyncController {
    /// Opens the embedded deployment (see `Controller.open`).
    #[staticmethod]
    #[pyo3(signature = (
        state_dir=None, *, containerd_socket=None, containerd_namespace=None, libvirt_uri=None
    ))]
    fn open(
        py: Python<'_>,
        state_dir: Option<PathBuf>,
        containerd_socket: Option<PathBuf>,
        containerd_namespace: Option<String>,
        libvirt_uri: Option<String>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let options = open_options(
            state_dir,
            containerd_socket,
            containerd_namespace,
            libvirt_uri,
        );
        awaitable_of(py, async move {
            zixiao_client::open(options)
                .await
                .map(PyAsyncController::from)
        })
    }

    /// Test support (built with the `testing` feature only): see
    /// `Controller._open_with_fake_runtimes`.
    #[cfg(feature = "testing")]
    #[staticmethod]
    fn _open_with_fake_runtimes(py: Python<'_>, state_dir: PathBuf) -> PyResult<Bound<'_, PyAny>> {
        awaitable_of(py, async move {
            zixiao_client::testing::open_with_fake_runtimes(&state_dir)
                .await
                .map(PyAsyncController::from)
        })
    }

    /// Every node, in id order.
    fn list_nodes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.list_nodes())
    }

    /// The node with id (or hostname) `node`. Raises `NotFound`.
    fn get_node<'py>(&self, py: Python<'py>, node: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.get_node(&node))
    }

    /// The node's recent usage (see `Controller.node_stats_history`).
    fn node_stats_history<'py>(
        &self,
        py: Python<'py>,
        node: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.node_stats_history(&node))
    }

    /// Stops new placements on a node.
    fn cordon_node<'py>(&self, py: Python<'py>, node: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.cordon_node(&node))
    }

    /// Allows placements on a cordoned node again.
    fn uncordon_node<'py>(&self, py: Python<'py>, node: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.uncordon_node(&node))
    }

    /// Empties a node (moves or stops its instances); it ends cordoned.
    fn drain_node<'py>(&self, py: Python<'py>, node: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.drain_node(&node))
    }

    /// Puts a node in maintenance or takes it out (see `Controller.set_maintenance`).
    fn set_maintenance<'py>(
        &self,
        py: Python<'py>,
        node: String,
        on: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.set_maintenance(&node, on))
    }

    /// Retires a node for good (see `Controller.decommission_node`).
    fn decommission_node<'py>(&self, py: Python<'py>, node: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.decommission_node(&node))
    }

    /// Removes a node that holds no instances.
    fn deregister_node<'py>(&self, py: Python<'py>, node: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.deregister_node(&node))
    }

    /// Sets and removes a node's labels (see `Controller.label_node`).
    fn label_node<'py>(
        &self,
        py: Python<'py>,
        node: String,
        labels: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.label_node(&node, &labels))
    }

    /// Changes a node's allocation ratios (see `Controller.set_allocation_ratios`).
    #[pyo3(signature = (node, cpu=None, memory=None))]
    fn set_allocation_ratios<'py>(
        &self,
        py: Python<'py>,
        node: String,
        cpu: Option<f64>,
        memory: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (cpu, memory) = (
            allocation_ratio("cpu", cpu)?,
            allocation_ratio("memory", memory)?,
        );
        call!(self, py, |c| c.set_allocation_ratios(&node, cpu, memory))
    }

    /// Sets a node's carbon intensity (see `Controller.set_node_carbon`).
    #[pyo3(signature = (node, intensity))]
    fn set_node_carbon<'py>(
        &self,
        py: Python<'py>,
        node: String,
        intensity: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let intensity = carbon_intensity(intensity)?;
        call!(self, py, |c| c.set_node_carbon(&node, intensity))
    }

    /// Declares traits on a node (see `Controller.add_node_traits`).
    fn add_node_traits<'py>(
        &self,
        py: Python<'py>,
        node: String,
        traits: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.add_node_traits(&node, &traits))
    }

    /// Takes back traits of a node (see `Controller.remove_node_traits`).
    fn remove_node_traits<'py>(
        &self,
        py: Python<'py>,
        node: String,
        traits: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.remove_node_traits(&node, &traits))
    }

    /// Stores a host aggregate (see `Controller.create_aggregate`).
    #[pyo3(signature = (name, metadata=BTreeMap::new()))]
    fn create_aggregate<'py>(
        &self,
        py: Python<'py>,
        name: String,
        metadata: BTreeMap<String, String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.create_aggregate(&name, metadata))
    }

    /// Deletes an aggregate without nodes.
    fn delete_aggregate<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.delete_aggregate(&name))
    }

    /// Every aggregate, in name order.
    fn list_aggregates<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.list_aggregates())
    }

    /// One aggregate.
    fn get_aggregate<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.get_aggregate(&name))
    }

    /// Sets and removes metadata of an aggregate.
    fn set_aggregate_metadata<'py>(
        &self,
        py: Python<'py>,
        name: String,
        metadata: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.set_aggregate_metadata(&name, &metadata))
    }

    /// Makes a node a member of an aggregate.
    fn add_aggregate_node<'py>(
        &self,
        py: Python<'py>,
        name: String,
        node: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.add_aggregate_node(&name, &node))
    }

    /// Takes a node out of an aggregate.
    fn remove_aggregate_node<'py>(
        &self,
        py: Python<'py>,
        name: String,
        node: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.remove_aggregate_node(&name, &node))
    }

    /// A `NodeWatch` of node changes after revision `after`; use `async for`.
    #[pyo3(signature = (after=0))]
    fn watch_nodes<'py>(&self, py: Python<'py>, after: u64) -> PyResult<Bound<'py, PyAny>> {
        call_as!(self, py, PyNodeWatch::new, |c| c.watch_nodes(after))
    }

    /// A summary of nodes, instances, capacity and allocation.
    fn cluster_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.cluster_info())
    }

    /// Validates and stores an instance (see `Controller.create_instance`).
    #[pyo3(signature = (request, *, wait=true))]
    fn create_instance<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request: CreateInstance = from_py(None, request)?;
        call!(self, py, |c| c.create_instance(request, Wait::from(wait)))
    }

    /// The instance with id or name `instance`. Raises `NotFound`.
    fn get_instance<'py>(&self, py: Python<'py>, instance: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.get_instance(&instance))
    }

    /// The instances `filter` accepts, in name order.
    #[pyo3(signature = (filter=None))]
    fn list_instances<'py>(
        &self,
        py: Python<'py>,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let filter = filter_from(filter)?;
        call!(self, py, |c| c.list_instances(filter))
    }

    /// One page of the instances `filter` accepts (see
    /// `Controller.list_instances_page`).
    #[pyo3(signature = (filter=None, *, page_size=0, page_token=None))]
    fn list_instances_page<'py>(
        &self,
        py: Python<'py>,
        filter: Option<&Bound<'py, PyAny>>,
        page_size: u32,
        page_token: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let filter = filter_from(filter)?;
        let page = page_from(page_size, page_token)?;
        call!(self, py, |c| c.list_instances_page(filter, page))
    }

    /// Wants the instance running (see `Controller.start_instance`).
    #[pyo3(signature = (instance, *, wait=true))]
    fn start_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.start_instance(&instance, Wait::from(wait)))
    }

    /// Wants the instance stopped (see `Controller.stop_instance`).
    #[pyo3(signature = (instance, *, wait=true))]
    fn stop_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.stop_instance(&instance, Wait::from(wait)))
    }

    /// Stops and starts the instance (see `Controller.restart_instance`).
    #[pyo3(signature = (instance, *, wait=true))]
    fn restart_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c
            .restart_instance(&instance, Wait::from(wait)))
    }

    /// Changes the instance's labels, restart policy, CPUs or memory (see
    /// `Controller.update_instance`).
    #[pyo3(signature = (instance, update, *, wait=true))]
    fn update_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        update: &Bound<'py, PyAny>,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let update: InstanceUpdate = from_py(None, update)?;
        call!(self, py, |c| c.update_instance(
            &instance,
            update,
            Wait::from(wait)
        ))
    }

    /// Wants the instance deleted; `None` once it is gone (see `Controller.delete_instance`).
    #[pyo3(signature = (instance, *, wait=true))]
    fn delete_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.delete_instance(&instance, Wait::from(wait)))
    }

    /// Freezes a running instance.
    fn pause_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.pause_instance(&instance))
    }

    /// Thaws a paused instance.
    fn resume_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.resume_instance(&instance))
    }

    /// Current resource usage of a placed instance.
    fn instance_stats<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.instance_stats(&instance))
    }

    /// The instance's recent resource usage (see `Controller.instance_stats_history`).
    fn instance_stats_history<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.instance_stats_history(&instance))
    }

    /// A `LogChunk` of the instance's log (see `Controller.read_log`).
    #[pyo3(signature = (instance, offset=0, max=DEFAULT_LOG_MAX))]
    fn read_log<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        offset: u64,
        max: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_as!(self, py, PyLogChunk::from, |c| c
            .read_log(&instance, offset, max))
    }

    /// A `LogStream` of the instance's log as it grows; use `async for`.
    #[pyo3(signature = (instance, offset=0))]
    fn follow_log<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        offset: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_as!(self, py, PyLogStream::new, |c| c
            .follow_log(&instance, offset))
    }

    /// An `AsyncConsole` of the instance (see `Controller.attach_console`).
    fn attach_console<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_as!(self, py, PyAsyncConsole::new, |c| c
            .attach_console(&instance))
    }

    /// An `InstanceWatch` of changes after revision `after`; use `async for`.
    #[pyo3(signature = (after=0))]
    fn watch_instances<'py>(&self, py: Python<'py>, after: u64) -> PyResult<Bound<'py, PyAny>> {
        call_as!(self, py, PyInstanceWatch::new, |c| c.watch_instances(after))
    }

    /// Takes snapshot `name` of the instance.
    fn create_snapshot<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        name: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.create_snapshot(&instance, &name))
    }

    /// The instance's snapshots, oldest first.
    fn list_snapshots<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.list_snapshots(&instance))
    }

    /// Puts the instance back to snapshot `name`.
    fn revert_snapshot<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        name: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.revert_snapshot(&instance, &name))
    }

    /// Deletes snapshot `name`.
    fn delete_snapshot<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        name: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.delete_snapshot(&instance, &name))
    }

    /// Copies snapshot `name` into the new directory `to` (see `Controller.export_snapshot`).
    fn export_snapshot<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        name: String,
        to: PathBuf,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.export_snapshot(&instance, &name, to))
    }

    /// Creates an instance from a snapshot directory (see `Controller.restore_instance`).
    #[pyo3(signature = (name, snapshot_dir, *, wait=true))]
    fn restore_instance<'py>(
        &self,
        py: Python<'py>,
        name: String,
        snapshot_dir: PathBuf,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.restore_instance(
            &name,
            snapshot_dir,
            Wait::from(wait)
        ))
    }

    /// Creates a clone of an instance (see `Controller.clone_instance`).
    #[pyo3(signature = (source, name, *, linked=false, snapshot=None, wait=true))]
    fn clone_instance<'py>(
        &self,
        py: Python<'py>,
        source: String,
        name: String,
        linked: bool,
        snapshot: Option<String>,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let snapshot = snapshot_name(snapshot)?;
        call!(self, py, |c| c.clone_instance(
            &source,
            &name,
            linked,
            snapshot,
            Wait::from(wait)
        ))
    }

    /// Moves an instance to another node (see `Controller.migrate_instance`).
    #[pyo3(signature = (instance, *, to=None, mode="auto"))]
    fn migrate_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
        to: Option<String>,
        mode: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mode = migration_mode(mode)?;
        call!(self, py, |c| c.migrate_instance(
            &instance,
            to.as_deref(),
            mode
        ))
    }

    /// Imports an image archive (see `Controller.import_images`);
    /// `progress(done, total)` is called on the event loop's thread.
    #[pyo3(signature = (archive, *, name=None, instance_type="container", node=None, progress=None))]
    fn import_images<'py>(
        &self,
        py: Python<'py>,
        archive: PathBuf,
        name: Option<&str>,
        instance_type: &str,
        node: Option<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ty = self::instance_type(instance_type)?;
        let name = image_name(name)?;
        let (report, reports) = progress_channel(import_arguments);
        let c = self.inner.clone();
        let import = async move {
            let images = c
                .import_images(node.as_deref(), ty, archive, name, report)
                .await;
            Ok(Outcome(images.map(Json)))
        };
        bridge::awaitable_reporting(py, import, reports, progress)
    }

    /// Pulls an image from its registry (see `Controller.pull_image`);
    /// `progress(event)` is called on the event loop's thread.
    #[pyo3(signature = (reference, *, instance_type="container", node=None, username=None, password=None, insecure_registries=Vec::new(), registry_cas=Vec::new(), platform=None, kind=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn pull_image<'py>(
        &self,
        py: Python<'py>,
        reference: &str,
        instance_type: &str,
        node: Option<String>,
        username: Option<String>,
        password: Option<String>,
        insecure_registries: Vec<String>,
        registry_cas: Vec<String>,
        platform: Option<&str>,
        kind: Option<&str>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ty = self::instance_type(instance_type)?;
        let (reference, options) = pull_request(
            reference,
            username,
            password,
            insecure_registries,
            registry_cas,
            platform,
            kind,
        )?;
        let (report, reports) = progress_channel(pull_arguments);
        let c = self.inner.clone();
        let pull = async move {
            let image = c
                .pull_image(node.as_deref(), ty, reference, options, report)
                .await;
            Ok(Outcome(image.map(Json)))
        };
        bridge::awaitable_reporting(py, pull, reports, progress)
    }

    /// The images a node's runtime holds (see `Controller.list_images`).
    #[pyo3(signature = (*, instance_type="container", node=None))]
    fn list_images<'py>(
        &self,
        py: Python<'py>,
        instance_type: &str,
        node: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ty = self::instance_type(instance_type)?;
        call!(self, py, |c| c.list_images(node.as_deref(), ty))
    }

    /// Removes an image from a node's runtime (see `Controller.remove_image`).
    #[pyo3(signature = (name, *, instance_type="container", node=None))]
    fn remove_image<'py>(
        &self,
        py: Python<'py>,
        name: String,
        instance_type: &str,
        node: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ty = self::instance_type(instance_type)?;
        call!(self, py, |c| c.remove_image(node.as_deref(), ty, &name))
    }

    /// Backs the deployment's state up into the new file `to` (see `Controller.backup_state`).
    fn backup_state<'py>(&self, py: Python<'py>, to: PathBuf) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.backup_state(to))
    }

    /// Validates and stores a network (see `Controller.create_network`).
    fn create_network<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request: CreateNetwork = from_py(None, request)?;
        call!(self, py, |c| c.create_network(request))
    }

    /// The network named `name`. Raises `NotFound`.
    fn get_network<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.get_network(&name))
    }

    /// Every network, in name order.
    fn list_networks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.list_networks())
    }

    /// The network and its state per node (see `Controller.network_status`).
    fn network_status<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.network_status(&name))
    }

    /// Repairs the network on every node (see `Controller.repair_network`).
    fn repair_network<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.repair_network(&name))
    }

    /// Removes the network; `None` once it is gone (see `Controller.delete_network`).
    fn delete_network<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.delete_network(&name))
    }

    /// Stores a template (see `Controller.create_template`).
    fn create_template<'py>(
        &self,
        py: Python<'py>,
        name: String,
        spec: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec: TemplateSpec = from_py(None, spec)?;
        call!(self, py, |c| c.create_template(&name, spec))
    }

    /// Adds a template's next version (see `Controller.update_template`).
    fn update_template<'py>(
        &self,
        py: Python<'py>,
        name: String,
        spec: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec: TemplateSpec = from_py(None, spec)?;
        call!(self, py, |c| c.update_template(&name, spec))
    }

    /// A template with its users (see `Controller.get_template`).
    #[pyo3(signature = (name, *, version=None))]
    fn get_template<'py>(
        &self,
        py: Python<'py>,
        name: String,
        version: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.get_template(&name, version))
    }

    /// Every template (see `Controller.list_templates`).
    fn list_templates<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.list_templates())
    }

    /// The operations kept (see `Controller.list_operations`).
    #[pyo3(signature = (*, all=false, target=None, kind=None))]
    fn list_operations<'py>(
        &self,
        py: Python<'py>,
        all: bool,
        target: Option<String>,
        kind: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let filter = operation_filter(all, target, kind)?;
        call!(self, py, |c| c.list_all_operations(filter))
    }

    /// One operation (see `Controller.get_operation`).
    fn get_operation<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = operation_id(id)?;
        call!(self, py, |c| c.get_operation(&id))
    }

    /// Cancels an operation (see `Controller.cancel_operation`).
    fn cancel_operation<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = operation_id(id)?;
        call!(self, py, |c| c.cancel_operation(&id))
    }

    /// Waits for an operation to finish (see `Controller.wait_operation`).
    #[pyo3(signature = (id, timeout=None))]
    fn wait_operation<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = operation_id(id)?;
        let timeout = seconds(timeout)?;
        call!(self, py, |c| c.wait_operation_within(&id, timeout))
    }

    /// Deletes a template or a version (see `Controller.delete_template`).
    #[pyo3(signature = (name, *, version=None))]
    fn delete_template<'py>(
        &self,
        py: Python<'py>,
        name: String,
        version: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.delete_template(&name, version))
    }

    /// Creates an instance from a template (see `Controller.create_from_template`).
    #[pyo3(signature = (name, template, *, set=Vec::new(), wait=true))]
    fn create_from_template<'py>(
        &self,
        py: Python<'py>,
        name: String,
        template: String,
        set: Vec<String>,
        wait: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = FromTemplate::parse(name, &template, &set).map_err(error::to_py)?;
        call!(self, py, |c| c
            .create_from_template(request, Wait::from(wait)))
    }

    fn __repr__(&self) -> &'static str {
        "zixiao.AsyncController"
    }
}
