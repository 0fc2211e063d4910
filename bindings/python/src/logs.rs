//! An instance's log (its console output, or stdout and stderr), read in
//! chunks from an offset: [`PyLogReader`] blocks, [`PyAsyncLogReader`] awaits.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zixiao_core::controller::LogReader;
use zixiao_core::LogChunk;

use crate::{awaitable_of, wait};

/// Bytes read by default in one call.
const DEFAULT_MAX: usize = 64 * 1024;

/// A piece of an instance's log.
#[pyclass(name = "LogChunk", module = "zixiao", frozen)]
pub(crate) struct PyLogChunk {
    inner: LogChunk,
}

#[pymethods]
impl PyLogChunk {
    /// The bytes read.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.data)
    }

    /// The offset to read from next to follow the log.
    #[getter]
    fn next_offset(&self) -> u64 {
        self.inner.next_offset
    }

    fn __repr__(&self) -> String {
        format!(
            "LogChunk(data=<{} bytes>, next_offset={})",
            self.inner.data.len(),
            self.inner.next_offset
        )
    }
}

/// Reads one instance's log; from `Controller.logs(instance)`.
#[pyclass(name = "LogReader", module = "zixiao", frozen)]
pub(crate) struct PyLogReader {
    inner: Arc<LogReader>,
}

impl PyLogReader {
    pub(crate) fn new(inner: LogReader) -> Self {
        PyLogReader {
            inner: Arc::new(inner),
        }
    }
}

#[pymethods]
impl PyLogReader {
    /// Up to `max` bytes from `offset`; read again from `next_offset` to follow.
    /// Raises `NotFound` (no log yet), `Unavailable`.
    #[pyo3(signature = (offset=0, max=DEFAULT_MAX))]
    fn read(&self, py: Python<'_>, offset: u64, max: usize) -> PyResult<PyLogChunk> {
        wait(py, self.inner.read(offset, max)).map(|inner| PyLogChunk { inner })
    }

    /// Whether the instance still runs, so more may be written.
    fn is_running(&self, py: Python<'_>) -> PyResult<bool> {
        wait(py, self.inner.is_running())
    }
}

/// Reads one instance's log with awaitables; from `AsyncController.logs(instance)`.
#[pyclass(name = "AsyncLogReader", module = "zixiao", frozen)]
pub(crate) struct PyAsyncLogReader {
    inner: Arc<LogReader>,
}

impl PyAsyncLogReader {
    pub(crate) fn new(inner: LogReader) -> Self {
        PyAsyncLogReader {
            inner: Arc::new(inner),
        }
    }
}

#[pymethods]
impl PyAsyncLogReader {
    /// Up to `max` bytes from `offset`; read again from `next_offset` to follow.
    /// Raises `NotFound` (no log yet), `Unavailable`.
    #[pyo3(signature = (offset=0, max=DEFAULT_MAX))]
    fn read<'py>(&self, py: Python<'py>, offset: u64, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.inner.clone();
        awaitable_of(py, async move {
            let inner = reader.read(offset, max).await?;
            Ok(PyLogChunk { inner })
        })
    }

    /// Whether the instance still runs, so more may be written.
    fn is_running<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.inner.clone();
        awaitable_of(py, async move { reader.is_running().await })
    }
}
