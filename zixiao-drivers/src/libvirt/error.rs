//! How libvirt's errors become [`DriverError`]s: the one place that knows
//! libvirt error codes, so the rest of the driver speaks error kinds.

use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};
use zixiao_core::DriverError;

pub(crate) use crate::errors::{invalid, io};

/// The runtime name used in `Unavailable` errors, naming the URI so the user
/// sees which libvirt was tried.
pub(crate) fn runtime_name(uri: &str) -> String {
    format!("libvirt at {uri}")
}

/// libvirt at `uri` could not be reached.
pub(crate) fn unavailable(uri: &str, error: VirtError) -> DriverError {
    DriverError::Unavailable {
        runtime: runtime_name(uri),
        source: Box::new(error),
    }
}

/// libvirt failed `operation`.
pub(crate) fn failed(operation: impl Into<String>, error: VirtError) -> DriverError {
    DriverError::Runtime {
        operation: operation.into(),
        source: Box::new(error),
    }
}

/// Whether libvirt answered with `code`.
pub(crate) fn is(error: &VirtError, code: ErrorNumber) -> bool {
    matches!(error.code(), Enum::Known(c) if c == code)
}

/// A failure with no other cause than its message (a tool's stderr).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Message(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::ErrorKind;

    #[test]
    fn an_unreachable_daemon_names_the_uri() {
        let open = virt::connect::Connect::open(Some("test:///nonexistent/file.xml"));
        let Err(error) = open else {
            panic!("opened a missing test file");
        };
        let err = unavailable("qemu:///system", error);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(err.to_string(), "libvirt at qemu:///system is unavailable");
    }
}
