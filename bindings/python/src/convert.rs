//! Between Python values and the core's serde data: requests come in as
//! dicts (or the `zixiao` dataclasses, through their `to_dict()`), results go
//! out as dicts shaped like the CLI's JSON output, a log's pieces as
//! [`PyLogChunk`].

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::IntoPyObjectExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zixiao_core::LogChunk;

use crate::error;

/// A core value that becomes a Python dict/list/str/int on the way out.
pub(crate) struct Json<T>(pub(crate) T);

impl<'py, T: Serialize> IntoPyObject<'py> for Json<T> {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pythonize::pythonize(py, &self.0)
            .map_err(|e| error::internal(format!("cannot convert a result to Python: {e}")))
    }
}

/// The outcome of an async API call, converted to Python (a value
/// or the exception) on the event loop's thread (see `bridge`): no runtime
/// thread takes the GIL.
pub(crate) struct Outcome<T>(pub(crate) zixiao_core::Result<T>);

impl<'py, T: IntoPyObject<'py>> IntoPyObject<'py> for Outcome<T> {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            Ok(value) => value.into_bound_py_any(py),
            Err(e) => Err(error::to_py_in(py, e)),
        }
    }
}

/// Reads `value` (a dict, or an object with `to_dict()`) as a `T`; an
/// `InvalidArgument` names the path of the field that does not fit, as the
/// core's validation does (`spec.cpus`), after `prefix` when there is one.
pub(crate) fn from_py<T: DeserializeOwned>(
    prefix: Option<&str>,
    value: &Bound<'_, PyAny>,
) -> PyResult<T> {
    let mapping;
    let value = if value.is_instance_of::<PyDict>() || !value.hasattr("to_dict")? {
        value
    } else {
        mapping = value.call_method0("to_dict")?;
        &mapping
    };
    let mut de = pythonize::Depythonizer::from_object(value);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix, path.as_str()) {
            (Some(prefix), ".") => prefix.to_owned(),
            (Some(prefix), path) => format!("{prefix}.{path}"),
            (None, ".") => "request".to_owned(),
            (None, path) => path.to_owned(),
        };
        error::invalid(field, e.into_inner().to_string())
    })
}

/// A piece of an instance's log; from `read_log(instance, offset, max)`.
#[pyclass(name = "LogChunk", module = "zixiao", frozen)]
pub(crate) struct PyLogChunk {
    inner: LogChunk,
}

impl From<LogChunk> for PyLogChunk {
    fn from(inner: LogChunk) -> Self {
        PyLogChunk { inner }
    }
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
