//! Maps the API's errors onto the `zixiao` exception hierarchy: one class
//! per [`ErrorKind`], all under `zixiao.ZixiaoError`. The message is the
//! error itself; each `#[source]` becomes the exception's `__cause__`, so
//! tracebacks show the chain as Python's `raise ... from ...` would.
//!
//! The class is chosen by the kind's stable name ([`ErrorKind::as_str`]),
//! the same name as `e.kind` and the Node binding's `code`: a kind the core
//! adds later reaches Python as its own class once it is named here, and as
//! `ZixiaoError` with the right `kind` before that.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use zixiao_core::Error;

// The macro generates public items without docs; their docs are the
// docstrings given here, which Python shows.
#[allow(missing_docs, unreachable_pub)]
mod classes {
    use super::*;

    pyo3::create_exception!(
        zixiao,
        ZixiaoError,
        PyException,
        "Base class of every error the controller raises; `kind` is its snake_case error kind."
    );
    pyo3::create_exception!(
        zixiao,
        NotFound,
        ZixiaoError,
        "The named object does not exist."
    );
    pyo3::create_exception!(
        zixiao,
        AlreadyExists,
        ZixiaoError,
        "An object with that name or id exists already."
    );
    pyo3::create_exception!(
        zixiao,
        InvalidArgument,
        ZixiaoError,
        "The request is malformed; the message names the field (also in `field`)."
    );
    pyo3::create_exception!(
        zixiao,
        FailedPrecondition,
        ZixiaoError,
        "The request is valid but the system is not in a state that allows it."
    );
    pyo3::create_exception!(
        zixiao,
        Conflict,
        ZixiaoError,
        "A concurrent change won: re-read and retry."
    );
    pyo3::create_exception!(
        zixiao,
        Unavailable,
        ZixiaoError,
        "A dependency (store, runtime, daemon) cannot be reached right now."
    );
    pyo3::create_exception!(
        zixiao,
        Unsupported,
        ZixiaoError,
        "This build or this machine cannot do that; the message says what is missing."
    );
    pyo3::create_exception!(
        zixiao,
        ResourceExhausted,
        ZixiaoError,
        "Capacity, a pool or a quota is exhausted."
    );
    pyo3::create_exception!(
        zixiao,
        PermissionDenied,
        ZixiaoError,
        "The caller is known but may not do that; the message names the missing permission."
    );
    pyo3::create_exception!(
        zixiao,
        Unauthenticated,
        ZixiaoError,
        "The caller could not be identified (no, or an invalid, token or certificate)."
    );
    pyo3::create_exception!(zixiao, Internal, ZixiaoError, "A bug or a corrupted state.");
}

pub(crate) use classes::*;

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ZixiaoError", py.get_type::<ZixiaoError>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("FailedPrecondition", py.get_type::<FailedPrecondition>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("Unsupported", py.get_type::<Unsupported>())?;
    m.add("ResourceExhausted", py.get_type::<ResourceExhausted>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("Unauthenticated", py.get_type::<Unauthenticated>())?;
    m.add("Internal", py.get_type::<Internal>())?;
    Ok(())
}

/// An exception of the class of the kind named `kind`, with `message`.
fn exception(kind: &str, message: String) -> PyErr {
    match kind {
        "not_found" => NotFound::new_err(message),
        "already_exists" => AlreadyExists::new_err(message),
        "invalid_argument" => InvalidArgument::new_err(message),
        "failed_precondition" => FailedPrecondition::new_err(message),
        "conflict" => Conflict::new_err(message),
        "unavailable" => Unavailable::new_err(message),
        "unsupported" => Unsupported::new_err(message),
        "resource_exhausted" => ResourceExhausted::new_err(message),
        "permission_denied" => PermissionDenied::new_err(message),
        "unauthenticated" => Unauthenticated::new_err(message),
        "internal" => Internal::new_err(message),
        _ => ZixiaoError::new_err(message),
    }
}

/// The Python exception for an API error, its causes chained. Only on
/// a Python thread: runtime threads never take the GIL (see `bridge`).
pub(crate) fn to_py(error: Error) -> PyErr {
    Python::attach(|py| to_py_in(py, error))
}

/// [`to_py`] with the GIL held.
pub(crate) fn to_py_in(py: Python<'_>, error: Error) -> PyErr {
    let raised = exception(error.kind().as_str(), error.to_string());
    let value = raised.value(py);
    // Attribute writes on a fresh exception instance cannot fail.
    let _ = value.setattr("kind", error.kind().as_str());
    if let Error::InvalidArgument { field, .. } = &error {
        let _ = value.setattr("field", field.as_str());
    }
    raised.set_cause(py, causes(py, std::error::Error::source(&error)));
    raised
}

/// The chain of `source` as plain exceptions, outermost first.
fn causes(py: Python<'_>, source: Option<&(dyn std::error::Error + 'static)>) -> Option<PyErr> {
    let source = source?;
    let cause = PyException::new_err(source.to_string());
    cause.set_cause(py, causes(py, source.source()));
    Some(cause)
}

/// An `InvalidArgument` for `field`, as the core would raise it.
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PyErr {
    to_py(Error::invalid(field, reason))
}

/// An `Internal` error for a value the binding could not convert.
pub(crate) fn internal(message: impl Into<String>) -> PyErr {
    to_py(Error::Internal(message.into()))
}
