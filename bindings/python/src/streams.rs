//! Streams from the API as Python iterators (blocking, the GIL released
//! while they wait) and async iterators: instance changes, node changes and
//! a log as it grows. Each is one class over [`ItemStream`].

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use zixiao_core::{InstanceEvent, NodeEvent, Result};

use crate::convert::{Json, Outcome};
use crate::{error, wait};

/// A stream whose items become Python values as `T` converts. A tokio
/// mutex: the lock is held across the await for the next item.
pub(crate) struct ItemStream<T>(Arc<tokio::sync::Mutex<BoxStream<'static, Result<T>>>>);

impl<T: Send + 'static> ItemStream<T> {
    pub(crate) fn new(stream: BoxStream<'static, Result<T>>) -> Self {
        ItemStream(Arc::new(tokio::sync::Mutex::new(stream)))
    }

    /// The next item, blocking with the GIL released; `None` at the end.
    fn next_blocking(&self, py: Python<'_>) -> PyResult<Option<T>> {
        let stream = &self.0;
        let next = wait(py, async { Ok(stream.lock().await.next().await) })?;
        next.transpose().map_err(error::to_py)
    }

    /// An awaitable of the next item; `StopAsyncIteration` at the end.
    fn next_awaitable<'py, W>(
        &self,
        py: Python<'py>,
        wrap: fn(T) -> W,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        W: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let stream = self.0.clone();
        crate::bridge::awaitable(py, async move {
            match stream.lock().await.next().await {
                Some(item) => Ok(Outcome(item.map(wrap))),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}

/// Defines a Python class iterating an [`ItemStream`] of `$item`, each item
/// wrapped by `$wrap` into what Python gets.
macro_rules! stream_class {
    ($(#[$doc:meta])* $class:ident, $name:literal, $item:ty, $wrap:expr) => {
        $(#[$doc])*
        #[pyclass(name = $name, module = "zixiao", frozen)]
        pub(crate) struct $class(ItemStream<$item>);

        impl $class {
            pub(crate) fn new(stream: BoxStream<'static, Result<$item>>) -> Self {
                $class(ItemStream::new(stream))
            }
        }

        #[pymethods]
        impl $class {
            fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
                slf
            }

            fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
                self.0
                    .next_blocking(py)?
                    .map(|item| $wrap(item).into_py_any(py))
                    .transpose()
            }

            fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
                slf
            }

            fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                self.0.next_awaitable(py, $wrap)
            }
        }
    };
}

stream_class!(
    /// Instance changes in order, then live; from `watch_instances(after)`.
    ///
    /// Iterate it with `for event in watch` (blocks) or `async for event in
    /// watch`. Each event is a dict with `kind` (`added`, `modified`,
    /// `deleted`), `revision`, `id` and `instance`. It ends only when the
    /// deployment closes; break out of the loop to stop watching.
    PyInstanceWatch,
    "InstanceWatch",
    InstanceEvent,
    Json
);

stream_class!(
    /// Node changes in order, then live; from `watch_nodes(after)`.
    ///
    /// Iterate it with `for` or `async for`. Each event is a dict with
    /// `kind`, `revision`, `id` and `node`.
    PyNodeWatch,
    "NodeWatch",
    NodeEvent,
    Json
);

stream_class!(
    /// An instance's log as it grows, in pieces of bytes; from
    /// `follow_log(instance, offset)`. It ends once the instance stops
    /// running and everything it wrote was read.
    PyLogStream,
    "LogStream",
    Vec<u8>,
    bytes
);

/// A piece of a log as Python `bytes`.
fn bytes(data: Vec<u8>) -> Vec<u8> {
    data
}
