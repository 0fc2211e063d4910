//! How containerd's gRPC statuses become [`DriverError`]s: the one place
//! that knows gRPC codes, so the rest of the driver speaks error kinds.

use std::path::Path;

use containerd_client::tonic::{Code, Status};
use zixiao_core::DriverError;

pub(crate) use crate::errors::{invalid, io, registry};

/// The runtime name used in `Unavailable` errors, naming the socket so the
/// user sees which containerd was tried.
pub(crate) fn runtime_name(socket: &Path) -> String {
    format!("containerd at {}", socket.display())
}

/// Maps a failed call: an unreachable daemon is `Unavailable` (the
/// controller retries those), everything else is a `Runtime` failure of
/// `operation`, keeping the status as the source.
pub(crate) fn rpc(socket: &Path, operation: impl Into<String>, status: Status) -> DriverError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => DriverError::Unavailable {
            runtime: runtime_name(socket),
            source: Box::new(status),
        },
        _ => DriverError::Runtime {
            operation: operation.into(),
            source: Box::new(status),
        },
    }
}

/// Whether the call failed because the object does not exist.
pub(crate) fn is_not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

/// Whether the call failed because the object exists already.
pub(crate) fn is_already_exists(status: &Status) -> bool {
    status.code() == Code::AlreadyExists
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::ErrorKind;

    #[test]
    fn unreachable_daemon_is_unavailable_and_names_the_socket() {
        let err = rpc(
            Path::new("/run/x.sock"),
            "list images",
            Status::unavailable("connection refused"),
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(err.to_string(), "containerd at /run/x.sock is unavailable");
    }

    #[test]
    fn other_failures_name_the_operation() {
        let err = rpc(
            Path::new("/s"),
            "create container web",
            Status::internal("boom"),
        );
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert_eq!(err.to_string(), "create container web failed");
    }
}
