//! A stream of instance changes, as a Python iterator (blocking, the GIL
//! released while it waits) and an async iterator.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use zixiao_core::{InstanceEvent, Result};

use crate::convert::{Json, Outcome};
use crate::{error, wait};

type EventStream = Pin<Box<dyn Stream<Item = Result<InstanceEvent>> + Send>>;

/// Instance changes in order, then live; from `watch_instances(after)`.
///
/// Iterate it with `for event in watch` (blocks) or `async for event in
/// watch`. Each event is a dict with `kind` (`added`, `modified`,
/// `deleted`), `revision`, `id` and `instance`. It ends only when the
/// controller closes; break out of the loop to stop watching.
#[pyclass(name = "InstanceWatch", module = "zixiao", frozen)]
pub(crate) struct PyInstanceWatch {
    // A tokio mutex: the lock is held across the await for the next event.
    stream: Arc<tokio::sync::Mutex<EventStream>>,
}

impl PyInstanceWatch {
    pub(crate) fn new(stream: impl Stream<Item = Result<InstanceEvent>> + Send + 'static) -> Self {
        PyInstanceWatch {
            stream: Arc::new(tokio::sync::Mutex::new(Box::pin(stream))),
        }
    }
}

#[pymethods]
impl PyInstanceWatch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Json<InstanceEvent>>> {
        let stream = &self.stream;
        let next = wait(py, async { Ok(stream.lock().await.next().await) })?;
        next.transpose().map(|e| e.map(Json)).map_err(error::to_py)
    }

    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = self.stream.clone();
        crate::bridge::awaitable(py, async move {
            match stream.lock().await.next().await {
                Some(event) => Ok(Outcome(event.map(Json))),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}
