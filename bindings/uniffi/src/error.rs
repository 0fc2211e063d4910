//! [`ZixiaoError`]: one variant per error kind, as every binding has
//! (Python's exception classes, Node's `code`), chosen by the kind's stable
//! name ([`zixiao_core::ErrorKind::as_str`]) so a kind the core adds later
//! maps as soon as it is named here, and to `Internal` (saying which kind)
//! before that. The message is the error and its causes, `a: b: c`.

use zixiao_core::Error;

/// Why a call failed. Kotlin: `ZixiaoException.NotFound`, ...; Swift:
/// `ZixiaoError.NotFound`, ...
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ZixiaoError {
    /// The named object does not exist.
    #[error("{detail}")]
    NotFound {
        /// What failed, and why.
        detail: String,
    },
    /// An object with that name or id exists already.
    #[error("{detail}")]
    AlreadyExists {
        /// What failed, and why.
        detail: String,
    },
    /// The request is malformed; `field` is the path of the field (`spec.memory_mib`).
    #[error("{detail}")]
    InvalidArgument {
        /// The field's path.
        field: String,
        /// What failed, and why.
        detail: String,
    },
    /// The request is valid but the system is not in a state that allows it.
    #[error("{detail}")]
    FailedPrecondition {
        /// What failed, and why.
        detail: String,
    },
    /// A concurrent change won: re-read and retry.
    #[error("{detail}")]
    Conflict {
        /// What failed, and why.
        detail: String,
    },
    /// A dependency (store, runtime, server) cannot be reached right now.
    #[error("{detail}")]
    Unavailable {
        /// What failed, and why.
        detail: String,
    },
    /// This build or this machine cannot do that; the message says what is missing.
    #[error("{detail}")]
    Unsupported {
        /// What failed, and why.
        detail: String,
    },
    /// Capacity, a pool or a quota is exhausted.
    #[error("{detail}")]
    ResourceExhausted {
        /// What failed, and why.
        detail: String,
    },
    /// The caller is known but may not do that.
    #[error("{detail}")]
    PermissionDenied {
        /// What failed, and why.
        detail: String,
    },
    /// The caller could not be identified.
    #[error("{detail}")]
    Unauthenticated {
        /// What failed, and why.
        detail: String,
    },
    /// A bug or a corrupted state.
    #[error("{detail}")]
    Internal {
        /// What failed, and why.
        detail: String,
    },
}

impl From<Error> for ZixiaoError {
    fn from(error: Error) -> Self {
        let message = error.chain();
        let kind = error.kind().as_str();
        match kind {
            "not_found" => ZixiaoError::NotFound { detail: message },
            "already_exists" => ZixiaoError::AlreadyExists { detail: message },
            "invalid_argument" => ZixiaoError::InvalidArgument {
                field: match &error {
                    Error::InvalidArgument { field, .. } => field.clone(),
                    _ => String::new(),
                },
                detail: message,
            },
            "failed_precondition" => ZixiaoError::FailedPrecondition { detail: message },
            "conflict" => ZixiaoError::Conflict { detail: message },
            "unavailable" => ZixiaoError::Unavailable { detail: message },
            "unsupported" => ZixiaoError::Unsupported { detail: message },
            "resource_exhausted" => ZixiaoError::ResourceExhausted { detail: message },
            "permission_denied" => ZixiaoError::PermissionDenied { detail: message },
            "unauthenticated" => ZixiaoError::Unauthenticated { detail: message },
            "internal" => ZixiaoError::Internal { detail: message },
            other => ZixiaoError::Internal {
                detail: format!("{other}: {message}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_keeps_its_class_and_an_invalid_argument_its_field() {
        let invalid = ZixiaoError::from(Error::invalid("spec.cpus", "0 is too few"));
        assert!(
            matches!(&invalid, ZixiaoError::InvalidArgument { field, detail }
                if field == "spec.cpus" && detail.contains("0 is too few")),
            "{invalid:?}"
        );
        let missing = ZixiaoError::from(Error::not_found("instance `web`"));
        assert!(matches!(missing, ZixiaoError::NotFound { .. }));
        let unsupported = ZixiaoError::from(Error::Unsupported("no".into()));
        assert!(matches!(unsupported, ZixiaoError::Unsupported { .. }));
    }
}
