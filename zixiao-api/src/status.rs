//! Errors to gRPC statuses and back, at the edge and nowhere else. The
//! status code follows the error's kind one-to-one; the kind itself and the
//! error's parts travel in the standard status details
//! (`grpc-status-details-bin`), which grpcurl, Python and Go clients read
//! as they are:
//!
//! - a `google.rpc.ErrorInfo` with reason the kind in upper case
//!   (`INVALID_ARGUMENT`), domain [`DOMAIN`], and metadata `field` (an
//!   invalid argument's field), `what` (the object not found or already
//!   there), `runtime` (the runtime that is unavailable) and `origin`
//!   (`driver` when a node's runtime failed);
//! - a `google.rpc.BadRequest` with one field violation for an invalid
//!   argument.
//!
//! A Rust client rebuilds the same error: kind, field and message. A status
//! without an ErrorInfo of [`DOMAIN`] (a transport failure, a foreign
//! server) is classified by its code alone.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use zixiao_core::{DriverError, Error, ErrorKind};

/// The ErrorInfo domain of Zixiao's errors.
pub const DOMAIN: &str = "zixiao.io";

const FIELD: &str = "field";
const WHAT: &str = "what";
const RUNTIME: &str = "runtime";
const ORIGIN: &str = "origin";
const DRIVER: &str = "driver";

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

/// The ErrorInfo reason of a kind: its name in upper case.
pub fn reason_of(kind: ErrorKind) -> String {
    kind.as_str().to_ascii_uppercase()
}

/// What a zixiao server said of an error in the status details.
struct Said {
    kind: ErrorKind,
    metadata: HashMap<String, String>,
}

impl Said {
    fn get(&self, key: &str) -> Option<String> {
        self.metadata.get(key).cloned()
    }
}

fn said(status: &Status) -> Option<Said> {
    let details = status.get_error_details();
    let info = details.error_info()?;
    if info.domain != DOMAIN {
        return None;
    }
    let kind = ErrorKind::ALL
        .into_iter()
        .find(|k| reason_of(*k) == info.reason)?;
    Some(Said {
        kind,
        metadata: info.metadata.clone(),
    })
}

/// The kind a status carries: from its details, else from its code. A
/// zixiao server names the kind of every error it answers, so an `Unknown`
/// or `Internal` status without one was made by the transport (a
/// connection dropped mid-call, a broken stream): `Unavailable`, since a
/// retry may well succeed.
pub fn kind_of_status(status: &Status) -> ErrorKind {
    match (said(status), status.code()) {
        (Some(said), _) => said.kind,
        (None, Code::Unknown | Code::Internal) => ErrorKind::Unavailable,
        (None, code) => kind_of(code),
    }
}

/// A status of `kind` with `message` and the details of `metadata`; an
/// invalid argument's `field` also becomes a BadRequest field violation.
fn status(
    kind: ErrorKind,
    message: String,
    metadata: HashMap<String, String>,
    reason: Option<&str>,
) -> Status {
    let mut details = ErrorDetails::new();
    if let (Some(field), Some(reason)) = (metadata.get(FIELD), reason) {
        details.add_bad_request_violation(field.clone(), reason);
    }
    details.set_error_info(reason_of(kind), DOMAIN, metadata);
    Status::with_error_details(code_of(kind), message, details)
}

/// The status a server answers for an error.
pub fn from_error(error: &Error) -> Status {
    if let Error::Driver(driver) = error {
        return driver_status(driver, error.chain(), true);
    }
    let mut metadata = HashMap::new();
    let mut reason = None;
    match error {
        Error::InvalidArgument { field, reason: why } => {
            metadata.insert(FIELD.to_owned(), field.clone());
            reason = Some(why.as_str());
        }
        Error::NotFound { what } | Error::AlreadyExists { what } => {
            metadata.insert(WHAT.to_owned(), what.clone());
        }
        _ => {}
    }
    status(error.kind(), error.chain(), metadata, reason)
}

/// The status an agent answers for a driver error.
pub fn from_driver_error(error: &DriverError) -> Status {
    driver_status(error, chain(error), false)
}

fn driver_status(error: &DriverError, message: String, from_controller: bool) -> Status {
    let mut metadata = HashMap::new();
    let mut reason = None;
    if from_controller {
        metadata.insert(ORIGIN.to_owned(), DRIVER.to_owned());
    }
    match error {
        DriverError::InvalidArgument { field, reason: why } => {
            metadata.insert(FIELD.to_owned(), field.clone());
            reason = Some(why.as_str());
        }
        DriverError::NotFound(what) => {
            metadata.insert(WHAT.to_owned(), what.clone());
        }
        DriverError::Unavailable { runtime, .. } => {
            metadata.insert(RUNTIME.to_owned(), runtime.clone());
        }
        _ => {}
    }
    status(error.kind(), message, metadata, reason)
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

/// An error a peer reported, as its message.
#[derive(Debug)]
struct Remote(String);

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Remote {}

/// A failure the transport reported: its message, and the causes under it
/// (down to the operating system's error).
#[derive(Debug)]
struct Transport(Status);

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message())
    }
}

impl std::error::Error for Transport {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

fn strip<'a>(message: &'a str, prefix: &str) -> &'a str {
    message.strip_prefix(prefix).unwrap_or(message)
}

/// The error a client rebuilds from a status of the server `server` (its
/// name for people, such as ``the zixiao server `10.0.0.1:50051` ``): the
/// same kind, field and message. A status the transport made (the server
/// cannot be reached) is `Unavailable` naming `server`, with the status
/// and its causes (down to the operating system's error) as its source.
pub fn to_error(status: Status, server: &str) -> Error {
    let message = status.message();
    let Some(said) = said(&status) else {
        return match kind_of_status(&status) {
            ErrorKind::Unavailable => Error::Unavailable {
                what: server.to_owned(),
                source: Some(Box::new(Transport(status))),
            },
            kind => by_kind(kind, message.to_owned(), None, None),
        };
    };
    if said.get(ORIGIN).as_deref() == Some(DRIVER) {
        let inner = strip(message, "driver: ");
        return Error::Driver(driver_error(&said, inner.to_owned(), "the node's runtime"));
    }
    if said.kind == ErrorKind::Unavailable {
        return Error::Unavailable {
            what: server.to_owned(),
            source: Some(Box::new(Remote(message.to_owned()))),
        };
    }
    by_kind(
        said.kind,
        message.to_owned(),
        said.get(FIELD),
        said.get(WHAT),
    )
}

fn by_kind(kind: ErrorKind, message: String, field: Option<String>, what: Option<String>) -> Error {
    match kind {
        ErrorKind::InvalidArgument => match field {
            Some(field) => {
                let prefix = format!("invalid {field}: ");
                let reason = strip(&message, &prefix).to_owned();
                Error::InvalidArgument { field, reason }
            }
            None => Error::invalid("request", message),
        },
        ErrorKind::NotFound => Error::NotFound {
            what: what.unwrap_or_else(|| message.trim_end_matches(" not found").to_owned()),
        },
        ErrorKind::AlreadyExists => Error::AlreadyExists {
            what: what.unwrap_or_else(|| message.trim_end_matches(" already exists").to_owned()),
        },
        ErrorKind::FailedPrecondition => Error::FailedPrecondition(message),
        ErrorKind::Conflict => Error::Conflict(message),
        ErrorKind::ResourceExhausted => Error::ResourceExhausted(message),
        ErrorKind::Unsupported => Error::Unsupported(strip(&message, "unsupported: ").to_owned()),
        ErrorKind::PermissionDenied => {
            Error::permission_denied(strip(&message, "permission denied: "))
        }
        ErrorKind::Unauthenticated => Error::unauthenticated(strip(&message, "unauthenticated: ")),
        ErrorKind::Internal => Error::Internal(strip(&message, "internal error: ").to_owned()),
        ErrorKind::Unavailable => Error::Unavailable {
            what: "the zixiao server".to_owned(),
            source: Some(Box::new(Remote(message))),
        },
    }
}

/// The driver error a server rebuilds from an agent's status. `runtime`
/// names what was called when the status does not (a transport failure).
pub fn to_driver_error(status: &Status, runtime: &str) -> DriverError {
    let said = said(status).unwrap_or(Said {
        kind: kind_of_status(status),
        metadata: HashMap::new(),
    });
    driver_error(&said, status.message().to_owned(), runtime)
}

fn driver_error(said: &Said, message: String, runtime: &str) -> DriverError {
    match said.kind {
        ErrorKind::InvalidArgument => match said.get(FIELD) {
            Some(field) => {
                let prefix = format!("invalid {field}: ");
                let reason = strip(&message, &prefix).to_owned();
                DriverError::InvalidArgument { field, reason }
            }
            None => DriverError::InvalidArgument {
                field: "request".to_owned(),
                reason: message,
            },
        },
        ErrorKind::NotFound => DriverError::NotFound(
            said.get(WHAT)
                .unwrap_or_else(|| message.trim_end_matches(" not found").to_owned()),
        ),
        ErrorKind::AlreadyExists => DriverError::AlreadyExists(message),
        // A node refusing a caller is a precondition the caller cannot meet.
        ErrorKind::FailedPrecondition
        | ErrorKind::Conflict
        | ErrorKind::PermissionDenied
        | ErrorKind::Unauthenticated => DriverError::FailedPrecondition(message),
        ErrorKind::ResourceExhausted => DriverError::ResourceExhausted(message),
        ErrorKind::Unsupported => DriverError::Unsupported(message),
        ErrorKind::Unavailable => {
            let (runtime, rest) = match said.get(RUNTIME) {
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

    const SERVER: &str = "the zixiao server `10.0.0.1:50051`";

    fn round_trip(error: Error) -> Error {
        to_error(from_error(&error), SERVER)
    }

    #[test]
    fn every_error_kind_survives_the_wire_with_its_message() {
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
        ];
        for error in errors {
            let expected = (error.kind(), error.chain());
            let back = round_trip(error);
            assert_eq!((back.kind(), back.chain()), expected);
        }
    }

    #[test]
    fn an_invalid_argument_keeps_its_field_in_standard_details() {
        let status = from_error(&Error::invalid("spec.memory_mib", "must be at least 16"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let info = details.error_info().expect("an ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_ARGUMENT", DOMAIN)
        );
        assert_eq!(info.metadata["field"], "spec.memory_mib");
        let violation = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations[0];
        assert_eq!(violation.field, "spec.memory_mib");
        assert_eq!(violation.description, "must be at least 16");
        match to_error(status, SERVER) {
            Error::InvalidArgument { field, reason } => {
                assert_eq!(
                    (field.as_str(), reason.as_str()),
                    ("spec.memory_mib", "must be at least 16")
                )
            }
            other => panic!("{other:?}"),
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
            let error = to_error(status, SERVER);
            assert_eq!(error.kind(), ErrorKind::Unavailable, "{error:?}");
            assert!(error.chain().starts_with(SERVER), "{}", error.chain());
        }
        // The same codes from a zixiao server keep the kind it named.
        let internal = from_error(&Error::Internal("broken invariant".into()));
        assert_eq!(to_error(internal, SERVER).kind(), ErrorKind::Internal);
    }

    #[test]
    fn a_transport_failure_is_unavailable_naming_the_server() {
        let error = to_error(Status::unavailable("tcp connect error"), SERVER);
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert_eq!(
            error.chain(),
            format!("{SERVER} is unavailable: tcp connect error")
        );
        assert_eq!(
            to_driver_error(&Status::unavailable("x"), "the agent of node `a`").kind(),
            ErrorKind::Unavailable
        );
    }
}
