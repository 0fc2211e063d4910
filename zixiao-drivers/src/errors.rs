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

/// A VM's or microVM's vCPUs from its spec: whole and at least one. The
/// core checks this at create; a driver checks again what it is handed.
pub(crate) fn vcpus(spec: &zixiao_core::InstanceSpec) -> Result<u32, DriverError> {
    match spec.cpus.whole_cores() {
        n if n >= 1 && spec.cpus.is_whole() => Ok(n),
        _ => Err(invalid(
            "spec.cpus",
            format!("{} is not a whole number of vCPUs (at least 1)", spec.cpus),
        )),
    }
}
