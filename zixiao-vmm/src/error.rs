//! `VmmError`: every failure of the VMM library and process, with the
//! `zixiao_core::ErrorKind` it maps to. Serializable, so the VMM process can
//! hand an error to its launcher and API clients unchanged.

use serde::{Deserialize, Serialize};
use zixiao_core::ErrorKind;

/// What went wrong, classified the way the rest of Zixiao classifies errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VmmError {
    /// A configuration field is wrong; names the field and why.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field (`kernel`, `initrd`, `cmdline`, `vcpus`, `memory_mib`, ...).
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A file or VMM that was named does not exist.
    #[error("not found: {message}")]
    NotFound {
        /// What is missing.
        message: String,
    },
    /// A VMM already runs in that run directory.
    #[error("already exists: {message}")]
    AlreadyExists {
        /// What exists.
        message: String,
    },
    /// The VM is not in a state that allows the call.
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        /// Which state and why it does not allow the call.
        message: String,
    },
    /// This machine or build cannot do it (e.g. no /dev/kvm).
    #[error("unsupported: {message}")]
    Unsupported {
        /// What is missing.
        message: String,
    },
    /// A dependency exists but cannot be used right now (e.g. /dev/kvm permissions).
    #[error("unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// The host cannot give the memory or vCPUs asked for.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// What ran out.
        message: String,
    },
    /// A bug, a failed KVM call or a corrupted snapshot.
    #[error("internal: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}

impl VmmError {
    /// The error kind shared by all of Zixiao.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VmmError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            VmmError::NotFound { .. } => ErrorKind::NotFound,
            VmmError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            VmmError::FailedPrecondition { .. } => ErrorKind::FailedPrecondition,
            VmmError::Unsupported { .. } => ErrorKind::Unsupported,
            VmmError::Unavailable { .. } => ErrorKind::Unavailable,
            VmmError::ResourceExhausted { .. } => ErrorKind::ResourceExhausted,
            VmmError::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// An `InvalidArgument` naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        VmmError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An `Internal` error: `what` failed with `err`.
    pub fn internal(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        VmmError::Internal {
            message: format!("{what}: {err}"),
        }
    }

    /// A `FailedPrecondition` with `message`.
    pub fn precondition(message: impl Into<String>) -> Self {
        VmmError::FailedPrecondition {
            message: message.into(),
        }
    }
}
