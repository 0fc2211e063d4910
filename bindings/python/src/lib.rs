//! The `zixiao` Python module: Zixiao's API ([`zixiao_core::Client`]) for
//! Python, as a blocking class ([`controller::PyController`]) and an asyncio
//! class ([`controller::PyAsyncController`]) over the same client, whether
//! it reaches the embedded deployment in this process (`open`) or a server
//! (`connect`).
//!
//! Each method is one `Client` call plus conversion: requests are read
//! from dicts (or the dataclasses of `python/zixiao/types.py`), results
//! are dicts shaped like the CLI's JSON output, and errors become the
//! exception classes of [`error`]. Blocking calls release the GIL while they
//! wait; async calls run on the module's one tokio runtime and never hold it
//! (see [`bridge`]).

mod bridge;
mod console;
mod controller;
mod convert;
mod error;
mod streams;

use std::future::Future;

use pyo3::prelude::*;

/// Runs `future` on the module's runtime, with the GIL released meanwhile.
fn wait<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = zixiao_core::Result<T>> + Send,
{
    py.detach(|| bridge::runtime().block_on(future))
        .map_err(error::to_py)
}

/// A Python awaitable of `future` on the module's runtime; the result becomes a dict.
fn awaitable<'py, T, F>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    T: serde::Serialize + Send + 'static,
    F: Future<Output = zixiao_core::Result<T>> + Send + 'static,
{
    awaitable_of(py, async move { future.await.map(convert::Json) })
}

/// A Python awaitable of `future` on the module's runtime, converted as `T` converts.
fn awaitable_of<'py, T, F>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    F: Future<Output = zixiao_core::Result<T>> + Send + 'static,
{
    bridge::awaitable(py, async move { Ok(convert::Outcome(future.await)) })
}

/// The extension module, imported as `zixiao._native` and re-exported by `zixiao`.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<controller::PyController>()?;
    m.add_class::<controller::PyAsyncController>()?;
    m.add_class::<streams::PyInstanceWatch>()?;
    m.add_class::<streams::PyNodeWatch>()?;
    m.add_class::<streams::PyLogStream>()?;
    m.add_class::<console::PyConsole>()?;
    m.add_class::<console::PyAsyncConsole>()?;
    m.add_class::<convert::PyLogChunk>()?;
    m.add_function(wrap_pyfunction!(controller::connect, m)?)?;
    m.add_function(wrap_pyfunction!(controller::connect_async, m)?)?;
    #[cfg(feature = "testing")]
    m.add_function(wrap_pyfunction!(controller::_vmm_test_guest, m)?)?;
    #[cfg(feature = "testing")]
    m.add_function(wrap_pyfunction!(controller::_vmm_virtio_guest, m)?)?;
    error::register(m)?;
    Ok(())
}
