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

/// `error` with `field` named in front of its message where the kind has
/// room for one.
pub(crate) fn at_field(field: &str, error: DriverError) -> DriverError {
    match error {
        DriverError::InvalidArgument { reason, .. } => invalid(field, reason),
        DriverError::NotFound(what) => DriverError::NotFound(format!("{field}: {what}")),
        DriverError::FailedPrecondition(why) => {
            DriverError::FailedPrecondition(format!("{field}: {why}"))
        }
        DriverError::Unsupported(why) => DriverError::Unsupported(format!("{field}: {why}")),
        other => other,
    }
}

/// Maps a failed pull onto the driver's error kinds, keeping the cause
/// where the kind has room for one.
#[cfg(any(feature = "containerd", feature = "libvirt", feature = "microvm"))]
pub(crate) fn registry(error: zixiao_registry::RegistryError) -> DriverError {
    match error {
        zixiao_registry::RegistryError::NotFound { registry, what } => {
            DriverError::NotFound(format!("{what} in registry {registry}"))
        }
        zixiao_registry::RegistryError::NoPlatform {
            reference,
            platform,
            available,
        } => DriverError::NotFound(format!(
            "a {platform} manifest of image `{reference}` (it has: {available})"
        )),
        zixiao_registry::RegistryError::Unavailable {
            registry,
            operation,
            source,
        } => DriverError::Unavailable {
            runtime: format!("registry {registry} ({operation})"),
            source,
        },
        e @ zixiao_registry::RegistryError::Corrupt { .. } => invalid("image", e.to_string()),
        e @ zixiao_registry::RegistryError::KindMismatch { .. } => invalid("kind", e.to_string()),
        zixiao_registry::RegistryError::BadCa(reason) => invalid("registry_ca", reason),
        e @ (zixiao_registry::RegistryError::InsecureRefused { .. }
        | zixiao_registry::RegistryError::Unauthorized { .. }
        | zixiao_registry::RegistryError::Untrusted { .. }) => {
            DriverError::FailedPrecondition(e.to_string())
        }
        e @ zixiao_registry::RegistryError::Unsupported(_) => {
            DriverError::Unsupported(e.to_string())
        }
        e
        @ (zixiao_registry::RegistryError::Io { .. } | zixiao_registry::RegistryError::Tls(_)) => {
            DriverError::Runtime {
                operation: "pull image".to_owned(),
                source: Box::new(e),
            }
        }
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
