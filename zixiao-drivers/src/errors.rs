//! Error constructors every driver uses alike.

use zixiao_core::DriverError;

/// An `InvalidArgument` error on `field`.
pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> DriverError {
    DriverError::InvalidArgument {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A local I/O failure of `operation` (log files, FIFOs, overlays, archives).
pub(crate) fn io(operation: impl Into<String>, error: std::io::Error) -> DriverError {
    DriverError::Runtime {
        operation: operation.into(),
        source: Box::new(error),
    }
}
