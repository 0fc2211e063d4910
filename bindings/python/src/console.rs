//! An instance's interactive console as a bidirectional byte stream:
//! [`PyConsole`] blocks (the GIL released while it waits), [`PyAsyncConsole`]
//! awaits. Both hold the two halves of the API's [`ConsoleStream`] as a [`ConsoleSession`].

use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use zixiao_client::ConsoleSession;
use zixiao_core::driver::ConsoleStream;

use crate::convert::Outcome;
use crate::{awaitable_of, wait};

/// Bytes read by default in one call.
const DEFAULT_MAX: usize = 64 * 1024;

/// An instance's console; from `Controller.attach_console(instance)`.
///
/// `write(data)` types bytes into it, `read(max)` returns what the instance
/// wrote (`b""` once the console ended), iterating yields pieces until
/// then, and `close()` ends the input. Use it as a context manager to close
/// it on the way out.
#[pyclass(name = "Console", module = "zixiao", frozen)]
pub(crate) struct PyConsole {
    inner: Arc<ConsoleSession>,
}

impl PyConsole {
    pub(crate) fn new(console: ConsoleStream) -> Self {
        PyConsole {
            inner: Arc::new(ConsoleSession::new(console)),
        }
    }
}

#[pymethods]
impl PyConsole {
    /// Types `data` into the console. Raises `FailedPrecondition` once closed,
    /// `Unavailable` when the console broke.
    fn write(&self, py: Python<'_>, data: Vec<u8>) -> PyResult<()> {
        wait(py, self.inner.write(&data))
    }

    /// Up to `max` bytes the instance wrote, waiting for at least one;
    /// `b""` once the console ended.
    #[pyo3(signature = (max=DEFAULT_MAX))]
    fn read(&self, py: Python<'_>, max: usize) -> PyResult<Vec<u8>> {
        wait(py, self.inner.read(max))
    }

    /// Ends the input; the session ends as the instance's runtime decides.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.inner.close())
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Vec<u8>>> {
        let data = wait(py, self.inner.read(DEFAULT_MAX))?;
        Ok((!data.is_empty()).then_some(data))
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

/// An instance's console with awaitables; from `AsyncController.attach_console(instance)`.
///
/// The same methods as `Console`, each returning an awaitable, `async for`
/// over its output, and `async with` to close it on the way out.
#[pyclass(name = "AsyncConsole", module = "zixiao", frozen)]
pub(crate) struct PyAsyncConsole {
    inner: Arc<ConsoleSession>,
}

impl PyAsyncConsole {
    pub(crate) fn new(console: ConsoleStream) -> Self {
        PyAsyncConsole {
            inner: Arc::new(ConsoleSession::new(console)),
        }
    }
}

#[pymethods]
impl PyAsyncConsole {
    /// Types `data` into the console.
    fn write<'py>(&self, py: Python<'py>, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        let session = self.inner.clone();
        awaitable_of(py, async move { session.write(&data).await })
    }

    /// Up to `max` bytes the instance wrote; `b""` once the console ended.
    #[pyo3(signature = (max=DEFAULT_MAX))]
    fn read<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let session = self.inner.clone();
        awaitable_of(py, async move { session.read(max).await })
    }

    /// Ends the input.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let session = self.inner.clone();
        awaitable_of(py, async move { session.close().await })
    }

    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let session = self.inner.clone();
        crate::bridge::awaitable(py, async move {
            match session.read(DEFAULT_MAX).await {
                Ok(data) if data.is_empty() => Err(PyStopAsyncIteration::new_err(())),
                outcome => Ok(Outcome(outcome)),
            }
        })
    }

    fn __aenter__<'py>(slf: PyRef<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        // Nothing to wait for: an asyncio future that is done already.
        let py = slf.py();
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let entered = event_loop.call_method0("create_future")?;
        entered.call_method1("set_result", (slf,))?;
        Ok(entered)
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let session = self.inner.clone();
        awaitable_of(py, async move { session.close().await.map(|()| false) })
    }
}
