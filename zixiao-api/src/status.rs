//! Error kinds to gRPC statuses and back. The status code follows the kind
//! one-to-one; the kind itself and the error's parts (field and reason,
//! the object that was not found, the runtime that is down) travel in
//! `zixiao-*` metadata, so a client rebuilds an error of the same kind with
//! the same message. A status without that metadata (a transport failure, a
//! foreign server) is classified by its code alone.

use tonic::metadata::{BinaryMetadataValue, MetadataMap, MetadataValue};
use tonic::{Code, Status};
use zixiao_core::{DriverError, Error, ErrorKind};

const KIND: &str = "zixiao-kind";
const FIELD: &str = "zixiao-field-bin";
const REASON: &str = "zixiao-reason-bin";
const WHAT: &str = "zixiao-what-bin";
const RUNTIME: &str = "zixiao-runtime-bin";
const ORIGIN: &str = "zixiao-origin";

/// The gRPC code of an error kind.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The error kind of a gRPC code (the inverse of [`code_of`]; codes zixiao
/// never sends map to the nearest kind).
pub fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Aborted => ErrorKind::Conflict,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Unavailable,
        Code::Unimplemented => ErrorKind::Unsupported,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        _ => ErrorKind::Internal,
    }
}

fn kind_named(name: &str) -> Option<ErrorKind> {
    [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidArgument,
        ErrorKind::FailedPrecondition,
        ErrorKind::Conflict,
        ErrorKind::Unavailable,
        ErrorKind::Unsupported,
        ErrorKind::ResourceExhausted,
        ErrorKind::PermissionDenied,
        ErrorKind::Unauthenticated,
        ErrorKind::Internal,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
}

/// The kind a status carries: from its metadata, else from its code. A
/// zixiao server names the kind of every error it answers, so an `Unknown`
/// or `Internal` status without one was made by the transport (a
/// connection dropped mid-call, a broken stream): `Unavailable`, since a
/// retry may well succeed.
pub fn kind_of_status(status: &Status) -> ErrorKind {
    let named = status
        .metadata()
        .get(KIND)
        .and_then(|v| v.to_str().ok())
        .and_then(kind_named);
    match (named, status.code()) {
        (Some(kind), _) => kind,
        (None, Code::Unknown | Code::Internal) => ErrorKind::Unavailable,
        (None, code) => kind_of(code),
    }
}

fn put(metadata: &mut MetadataMap, key: &'static str, value: &str) {
    metadata.insert_bin(key, BinaryMetadataValue::from_bytes(value.as_bytes()));
}

fn get(metadata: &MetadataMap, key: &str) -> Option<String> {
    let value = metadata.get_bin(key)?.to_bytes().ok()?;
    String::from_utf8(value.to_vec()).ok()
}

fn status(kind: ErrorKind, message: String) -> Status {
    let mut status = Status::new(code_of(kind), message);
    status
        .metadata_mut()
        .insert(KIND, MetadataValue::from_static(kind.as_str()));
    status
}

/// The status a server answers for a controller error.
pub fn from_error(error: &Error) -> Status {
    if let Error::Driver(driver) = error {
        let out = from_driver_error(driver);
        let mut metadata = out.metadata().clone();
        metadata.insert(ORIGIN, MetadataValue::from_static("driver"));
        return Status::with_metadata(out.code(), error.chain(), metadata);
    }
    let mut out = status(error.kind(), error.chain());
    match error {
        Error::InvalidArgument { field, reason } => {
            put(out.metadata_mut(), FIELD, field);
            put(out.metadata_mut(), REASON, reason);
        }
        Error::NotFound { what } | Error::AlreadyExists { what } => {
            put(out.metadata_mut(), WHAT, what);
        }
        _ => {}
    }
    out
}

/// The status an agent answers for a driver error.
pub fn from_driver_error(error: &DriverError) -> Box<Status> {
    let mut out = status(error.kind(), chain(error));
    match error {
        DriverError::InvalidArgument { field, reason } => {
            put(out.metadata_mut(), FIELD, field);
            put(out.metadata_mut(), REASON, reason);
        }
        DriverError::NotFound(what) => put(out.metadata_mut(), WHAT, what),
        DriverError::Unavailable { runtime, .. } => put(out.metadata_mut(), RUNTIME, runtime),
        _ => {}
    }
    Box::new(out)
}

/// An error and its causes, `a: b: c`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[derive(Debug)]
struct Remote(String);

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Remote {}

fn strip<'a>(message: &'a str, prefix: &str) -> &'a str {
    message.strip_prefix(prefix).unwrap_or(message)
}

/// The controller error a client rebuilds from a status: same kind, same message.
pub fn to_error(status: &Status) -> Error {
    let metadata = status.metadata();
    let message = status.message();
    if metadata
        .get(ORIGIN)
        .is_some_and(|v| v.as_bytes() == b"driver")
    {
        let inner =
            Status::with_metadata(status.code(), strip(message, "driver: "), metadata.clone());
        return Error::Driver(to_driver_error(&inner, "the node's runtime"));
    }
    match kind_of_status(status) {
        ErrorKind::InvalidArgument => match (get(metadata, FIELD), get(metadata, REASON)) {
            (Some(field), Some(reason)) => Error::InvalidArgument { field, reason },
            _ => Error::invalid("request", message),
        },
        ErrorKind::NotFound => Error::NotFound {
            what: get(metadata, WHAT)
                .unwrap_or_else(|| message.trim_end_matches(" not found").to_owned()),
        },
        ErrorKind::AlreadyExists => Error::AlreadyExists {
            what: get(metadata, WHAT)
                .unwrap_or_else(|| message.trim_end_matches(" already exists").to_owned()),
        },
        ErrorKind::FailedPrecondition => Error::FailedPrecondition(message.to_owned()),
        ErrorKind::Conflict => Error::Conflict(message.to_owned()),
        ErrorKind::ResourceExhausted => Error::ResourceExhausted(message.to_owned()),
        ErrorKind::Unsupported => Error::Unsupported(strip(message, "unsupported: ").to_owned()),
        ErrorKind::PermissionDenied => {
            Error::permission_denied(strip(message, "permission denied: "))
        }
        ErrorKind::Unauthenticated => Error::unauthenticated(strip(message, "unauthenticated: ")),
        ErrorKind::Internal => Error::Internal(strip(message, "internal error: ").to_owned()),
        ErrorKind::Unavailable => Error::Unavailable {
            what: "the zixiao server".to_owned(),
            source: Some(Box::new(Remote(message.to_owned()))),
        },
    }
}

/// The driver error a client rebuilds from an agent's status. `runtime`
/// names what was called when the status does not (a transport failure).
pub fn to_driver_error(status: &Status, runtime: &str) -> DriverError {
    let metadata = status.metadata();
    let message = status.message().to_owned();
    match kind_of_status(status) {
        ErrorKind::InvalidArgument => match (get(metadata, FIELD), get(metadata, REASON)) {
            (Some(field), Some(reason)) => DriverError::InvalidArgument { field, reason },
            _ => DriverError::InvalidArgument {
                field: "request".to_owned(),
                reason: message,
            },
        },
        ErrorKind::NotFound => DriverError::NotFound(
            get(metadata, WHAT)
                .unwrap_or_else(|| message.trim_end_matches(" not found").to_owned()),
        ),
        ErrorKind::AlreadyExists => DriverError::AlreadyExists(message),
        // An agent that refuses its caller is misconfigured, not busy: a
        // retry will not help, so these read as a precondition.
        ErrorKind::FailedPrecondition
        | ErrorKind::Conflict
        | ErrorKind::PermissionDenied
        | ErrorKind::Unauthenticated => DriverError::FailedPrecondition(message),
        ErrorKind::ResourceExhausted => DriverError::ResourceExhausted(message),
        ErrorKind::Unsupported => DriverError::Unsupported(message),
        ErrorKind::Unavailable => {
            let (runtime, rest) = match get(metadata, RUNTIME) {
                Some(runtime) => {
                    let prefix = format!("{runtime} is unavailable: ");
                    let rest = strip(&message, &prefix).to_owned();
                    (runtime, rest)
                }
                None => (runtime.to_owned(), message),
            };
            DriverError::Unavailable {
                runtime,
                source: Box::new(Remote(rest)),
            }
        }
        ErrorKind::Internal => DriverError::Runtime {
            operation: format!("{runtime} call"),
            source: Box::new(Remote(message)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(error: Error) -> Error {
        to_error(&from_error(&error))
    }

    #[test]
    fn every_controller_error_kind_survives_the_wire_with_its_message() {
        let errors = vec![
            Error::invalid("spec.memory_mib", "must be at least 16"),
            Error::not_found("instance `web`"),
            Error::AlreadyExists {
                what: "instance `web`".into(),
            },
            Error::FailedPrecondition("instance `web` is being deleted".into()),
            Error::Conflict("kept changing".into()),
            Error::Unsupported("no vm runtime".into()),
            Error::ResourceExhausted("no capacity".into()),
            Error::Internal("broken invariant".into()),
            Error::Driver(DriverError::NotFound("image `busybox`".into())),
            Error::permission_denied("node.drain (admin only)"),
            Error::unauthenticated("the token expired"),
        ];
        for error in errors {
            let back = round_trip(error_clone(&error));
            assert_eq!(back.kind(), error.kind(), "{error:?}");
            assert_eq!(back.chain(), error.chain(), "{error:?}");
        }
    }

    fn error_clone(error: &Error) -> Error {
        match error {
            Error::InvalidArgument { field, reason } => Error::invalid(field, reason),
            Error::NotFound { what } => Error::not_found(what),
            Error::AlreadyExists { what } => Error::AlreadyExists { what: what.clone() },
            Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
            Error::Conflict(m) => Error::Conflict(m.clone()),
            Error::Unsupported(m) => Error::Unsupported(m.clone()),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(m.clone()),
            Error::Internal(m) => Error::Internal(m.clone()),
            Error::PermissionDenied { permission } => Error::permission_denied(permission),
            Error::Unauthenticated { reason } => Error::unauthenticated(reason),
            Error::Driver(DriverError::NotFound(w)) => DriverError::NotFound(w.clone()).into(),
            other => Error::Internal(other.chain()),
        }
    }

    #[test]
    fn driver_errors_keep_kind_field_and_runtime() {
        let invalid = DriverError::InvalidArgument {
            field: "spec.image".into(),
            reason: "empty".into(),
        };
        match to_driver_error(&from_driver_error(&invalid), "agent") {
            DriverError::InvalidArgument { field, reason } => {
                assert_eq!((field.as_str(), reason.as_str()), ("spec.image", "empty"))
            }
            other => panic!("{other:?}"),
        }
        let down = DriverError::Unavailable {
            runtime: "containerd".into(),
            source: "connection refused".into(),
        };
        let back = to_driver_error(&from_driver_error(&down), "agent");
        assert_eq!(back.kind(), ErrorKind::Unavailable);
        assert_eq!(chain(&back), chain(&down));
    }

    #[test]
    fn a_connection_dropped_mid_call_is_unavailable() {
        // What tonic's client makes of a server killed mid-request.
        for status in [
            Status::unknown("transport error"),
            Status::internal("h2 protocol error"),
        ] {
            assert_eq!(
                to_error(&status).kind(),
                ErrorKind::Unavailable,
                "{status:?}"
            );
        }
        // The same codes from a zixiao server keep the kind it named.
        let internal = from_error(&Error::Internal("broken invariant".into()));
        assert_eq!(to_error(&internal).kind(), ErrorKind::Internal);
    }

    #[test]
    fn a_transport_failure_is_unavailable() {
        let status = Status::unavailable("tcp connect error");
        let error = to_error(&status);
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert_eq!(
            error.chain(),
            "the zixiao server is unavailable: tcp connect error"
        );
        assert_eq!(
            to_driver_error(&status, "the agent of node `a`").kind(),
            ErrorKind::Unavailable
        );
    }
}
