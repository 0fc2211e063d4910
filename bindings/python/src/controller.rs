//! `zixiao.Controller` (blocking) and `zixiao.AsyncController` (asyncio):
//! the same [`Controller`] calls, one per method. A blocking method releases
//! the GIL while it waits; an async one returns an awaitable that runs on
//! the module's runtime.

use std::path::PathBuf;

use pyo3::prelude::*;
use zixiao_core::controller::{DrainReport, NetworkReconcileReport, ReconcileReport};
use zixiao_core::model::{CreateNetwork, Network};
use zixiao_core::{
    ClusterInfo, Controller, CreateInstance, Error, Instance, InstanceFilter, InstanceStats, Node,
};
use zixiao_embedded::EmbeddedConfig;

use crate::convert::{from_py, Json};
use crate::logs::{PyAsyncLogReader, PyLogReader};
use crate::watch::PyInstanceWatch;
use crate::{awaitable, awaitable_of, error, wait};

/// The embedded deployment's configuration for `state_dir`, or for the
/// CLI's default directory when it is `None`.
fn embedded_config(state_dir: Option<PathBuf>) -> zixiao_core::Result<EmbeddedConfig> {
    // The same default as the CLI's `--state-dir`, so both drive one store.
    let dir = match state_dir {
        Some(dir) => dir,
        None => zixiao_embedded::default_state_dir()?,
    };
    Ok(EmbeddedConfig::new(dir))
}

async fn open_embedded(state_dir: Option<PathBuf>) -> zixiao_core::Result<Controller> {
    Ok(zixiao_embedded::open(embedded_config(state_dir)?)
        .await?
        .controller)
}

fn server_unsupported(endpoint: &str) -> Error {
    Error::Unsupported(format!(
        "cannot connect to `{endpoint}`: the server API (gRPC client) is not built yet; \
         use Controller.open() for the embedded controller"
    ))
}

fn filter_from(filter: Option<&Bound<'_, PyAny>>) -> PyResult<InstanceFilter> {
    filter.map_or(Ok(InstanceFilter::default()), |f| {
        from_py(Some("filter"), f)
    })
}

/// Connects to a Zixiao server at `endpoint`.
///
/// Always raises `Unsupported` for now: the server API is not built yet.
/// Use `Controller.open()` for the embedded controller.
#[pyfunction]
pub(crate) fn connect(endpoint: &str) -> PyResult<PyController> {
    Err(error::to_py(server_unsupported(endpoint)))
}

/// Connects to a Zixiao server at `endpoint`, returning an `AsyncController`.
///
/// Always raises `Unsupported` for now: the server API is not built yet.
#[pyfunction]
pub(crate) fn connect_async<'py>(py: Python<'py>, endpoint: String) -> PyResult<Bound<'py, PyAny>> {
    awaitable(
        py,
        async move { Err::<(), _>(server_unsupported(&endpoint)) },
    )
}

/// Drives nodes, instances and networks: the controller the `zixiao` CLI uses.
///
/// Every method blocks until the controller answers and releases the GIL
/// meanwhile. Results are dicts shaped like the CLI's JSON output. Errors
/// are `zixiao.ZixiaoError` subclasses, one per error kind.
#[pyclass(name = "Controller", module = "zixiao", frozen)]
pub(crate) struct PyController {
    // `Controller` is itself a cheap handle over an `Arc`.
    inner: Controller,
}

#[pymethods]
impl PyController {
    /// Opens the embedded controller over the state directory `state_dir`
    /// (default: the CLI's, `~/.local/share/zixiao`), registering this
    /// machine as its node. One process at a time may hold a directory.
    ///
    /// Raises `Unavailable` when another process holds it.
    #[staticmethod]
    #[pyo3(signature = (state_dir=None))]
    fn open(py: Python<'_>, state_dir: Option<PathBuf>) -> PyResult<Self> {
        wait(py, open_embedded(state_dir)).map(|inner| PyController { inner })
    }

    /// Test support (built with the `testing` feature only): a controller
    /// whose node runs every instance type on an in-memory fake runtime.
    #[cfg(feature = "testing")]
    #[staticmethod]
    fn _open_with_fake_runtimes(py: Python<'_>, state_dir: PathBuf) -> PyResult<Self> {
        wait(py, crate::testing::open_with_fake_runtimes(&state_dir))
            .map(|inner| PyController { inner })
    }

    /// Every node, in id order.
    fn list_nodes(&self, py: Python<'_>) -> PyResult<Json<Vec<Node>>> {
        wait(py, self.inner.list_nodes()).map(Json)
    }

    /// The node with id (or hostname) `node`. Raises `NotFound`.
    fn get_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<Node>> {
        wait(py, self.inner.get_node(node)).map(Json)
    }

    /// Stops new placements on a node. Raises `NotFound`, `FailedPrecondition`.
    fn cordon_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<Node>> {
        wait(py, self.inner.cordon_node(node)).map(Json)
    }

    /// Allows placements on a cordoned node again. Raises `NotFound`, `FailedPrecondition`.
    fn uncordon_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<Node>> {
        wait(py, self.inner.uncordon_node(node)).map(Json)
    }

    /// Empties a node (moves or stops its instances); it ends cordoned.
    fn drain_node(&self, py: Python<'_>, node: &str) -> PyResult<Json<DrainReport>> {
        wait(py, self.inner.drain_node(node)).map(Json)
    }

    /// A summary of nodes, instances, capacity and allocation.
    fn cluster_info(&self, py: Python<'_>) -> PyResult<Json<ClusterInfo>> {
        wait(py, self.inner.cluster_info()).map(Json)
    }

    /// Validates `request` (a dict or `zixiao.CreateInstance`) and stores the
    /// instance's intent. Returns the pending instance before anything runs:
    /// call `converge` to wait for the outcome.
    ///
    /// Raises `InvalidArgument` naming the field, `AlreadyExists`, `Unsupported`.
    fn create_instance(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Json<Instance>> {
        let request: CreateInstance = from_py(None, request)?;
        wait(py, self.inner.create_instance(request)).map(Json)
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
        wait(py, self.inner.list_instances(&filter)).map(Json)
    }

    /// Asks for the instance to run (call `converge` to wait). Raises `NotFound`, `FailedPrecondition`.
    fn start_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.start_instance(instance)).map(Json)
    }

    /// Asks for the instance to stop (call `converge` to wait). Raises `NotFound`, `FailedPrecondition`.
    fn stop_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.stop_instance(instance)).map(Json)
    }

    /// Asks for the instance to restart (call `converge` to wait). Raises `NotFound`, `FailedPrecondition`.
    fn restart_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.restart_instance(instance)).map(Json)
    }

    /// Asks for the instance to be deleted (call `converge`, which returns
    /// `None` once it is gone). Raises `NotFound`.
    fn delete_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.delete_instance(instance)).map(Json)
    }

    /// Freezes a running instance. Raises `FailedPrecondition`, `Unsupported`.
    fn pause_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.pause_instance(instance)).map(Json)
    }

    /// Thaws a paused instance. Raises `FailedPrecondition`, `Unsupported`.
    fn resume_instance(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Instance>> {
        wait(py, self.inner.resume_instance(instance)).map(Json)
    }

    /// Carries out the instance's intent and waits until it is met or must
    /// wait (capacity, back-off, a person). Returns the instance, or `None`
    /// once it is deleted. Raises `NotFound`, `Unavailable`.
    fn converge(&self, py: Python<'_>, instance: &str) -> PyResult<Json<Option<Instance>>> {
        wait(py, self.inner.converge(instance)).map(Json)
    }

    /// Converges every instance and reports how many converged, wait, or failed.
    fn reconcile_all(&self, py: Python<'_>) -> PyResult<Json<ReconcileReport>> {
        wait(py, self.inner.reconcile_all()).map(Json)
    }

    /// Current resource usage of a placed instance. Raises `NotFound`,
    /// `FailedPrecondition` (not on a node), `Unsupported`.
    fn instance_stats(&self, py: Python<'_>, instance: &str) -> PyResult<Json<InstanceStats>> {
        wait(py, self.inner.instance_stats(instance)).map(Json)
    }

    /// A reader of the instance's console output (or stdout and stderr).
    /// Raises `NotFound`, `FailedPrecondition` (not on a node yet), `Unsupported`.
    fn logs(&self, py: Python<'_>, instance: &str) -> PyResult<PyLogReader> {
        wait(py, self.inner.logs(instance)).map(PyLogReader::new)
    }

    /// The store's current revision, to watch from "now".
    fn current_revision(&self, py: Python<'_>) -> PyResult<u64> {
        wait(py, self.inner.current_revision())
    }

    /// Instance changes after store revision `after` (0: the oldest kept),
    /// in order, then live, as an iterator (and async iterator) of dicts.
    /// Raises `FailedPrecondition` when that history was compacted.
    #[pyo3(signature = (after=0))]
    fn watch_instances(&self, py: Python<'_>, after: u64) -> PyResult<PyInstanceWatch> {
        wait(py, self.inner.watch_instances(after)).map(PyInstanceWatch::new)
    }

    /// Validates `request` (a dict shaped like the CLI's `network create`:
    /// `name`, `subnets`, optional `gateways`, `reserved`, `nat`, `isolated`)
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

    /// Removes the network from every node and from the store. Raises
    /// `NotFound`, `FailedPrecondition` naming the instances still on it.
    fn delete_network(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        wait(py, self.inner.delete_network(name))
    }

    /// Releases addresses of instances that are gone and makes every node's
    /// networking match the store; reports what it removed and released.
    fn reconcile_networks(&self, py: Python<'_>) -> PyResult<Json<NetworkReconcileReport>> {
        wait(py, self.inner.reconcile_networks()).map(Json)
    }

    fn __repr__(&self) -> &'static str {
        "zixiao.Controller(embedded)"
    }
}

/// The asyncio twin of `Controller`: the same methods, each returning an
/// awaitable that runs on the module's runtime without holding the GIL.
#[pyclass(name = "AsyncController", module = "zixiao", frozen)]
pub(crate) struct PyAsyncController {
    // `Controller` is itself a cheap handle over an `Arc`.
    inner: Controller,
}

/// An awaitable of one call on a clone of the controller.
macro_rules! call {
    ($self:ident, $py:ident, |$c:ident| $call:expr) => {{
        let $c = $self.inner.clone();
        awaitable($py, async move { $call.await })
    }};
}

#[pymethods]
impl PyAsyncController {
    /// Opens the embedded controller over `state_dir` (see `Controller.open`).
    #[staticmethod]
    #[pyo3(signature = (state_dir=None))]
    fn open(py: Python<'_>, state_dir: Option<PathBuf>) -> PyResult<Bound<'_, PyAny>> {
        awaitable_of(py, async move {
            let inner = open_embedded(state_dir).await?;
            Ok(PyAsyncController { inner })
        })
    }

    /// Test support (built with the `testing` feature only): see
    /// `Controller._open_with_fake_runtimes`.
    #[cfg(feature = "testing")]
    #[staticmethod]
    fn _open_with_fake_runtimes(py: Python<'_>, state_dir: PathBuf) -> PyResult<Bound<'_, PyAny>> {
        awaitable_of(py, async move {
            let inner = crate::testing::open_with_fake_runtimes(&state_dir).await?;
            Ok(PyAsyncController { inner })
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

    /// A summary of nodes, instances, capacity and allocation.
    fn cluster_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.cluster_info())
    }

    /// Validates `request` and stores the instance's intent (see `Controller.create_instance`).
    fn create_instance<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request: CreateInstance = from_py(None, request)?;
        call!(self, py, |c| c.create_instance(request))
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
        call!(self, py, |c| c.list_instances(&filter))
    }

    /// Asks for the instance to run.
    fn start_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.start_instance(&instance))
    }

    /// Asks for the instance to stop.
    fn stop_instance<'py>(&self, py: Python<'py>, instance: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.stop_instance(&instance))
    }

    /// Asks for the instance to restart.
    fn restart_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.restart_instance(&instance))
    }

    /// Asks for the instance to be deleted.
    fn delete_instance<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.delete_instance(&instance))
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

    /// Carries out the instance's intent; the instance, or `None` once deleted.
    fn converge<'py>(&self, py: Python<'py>, instance: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.converge(&instance))
    }

    /// Converges every instance and reports what it found.
    fn reconcile_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.reconcile_all())
    }

    /// Current resource usage of a placed instance.
    fn instance_stats<'py>(
        &self,
        py: Python<'py>,
        instance: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.instance_stats(&instance))
    }

    /// An `AsyncLogReader` of the instance's console output.
    fn logs<'py>(&self, py: Python<'py>, instance: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        awaitable_of(py, async move {
            Ok(PyAsyncLogReader::new(c.logs(&instance).await?))
        })
    }

    /// The store's current revision, to watch from "now".
    fn current_revision<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.current_revision())
    }

    /// An `InstanceWatch` of changes after revision `after`; use `async for`.
    #[pyo3(signature = (after=0))]
    fn watch_instances<'py>(&self, py: Python<'py>, after: u64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        awaitable_of(py, async move {
            Ok(PyInstanceWatch::new(c.watch_instances(after).await?))
        })
    }

    /// Validates `request` and stores the network (see `Controller.create_network`).
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

    /// Removes the network; `None` once it is gone (see `Controller.delete_network`).
    fn delete_network<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.delete_network(&name))
    }

    /// Releases stale addresses and makes every node's networking match the store.
    fn reconcile_networks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        call!(self, py, |c| c.reconcile_networks())
    }

    fn __repr__(&self) -> &'static str {
        "zixiao.AsyncController(embedded)"
    }
}
