//! Error kinds shared by every layer, and the Controller's error type.
//!
//! Every error in the workspace answers [`ErrorKind`] through a `kind()`
//! method. The kinds follow containerd's classes and map one-to-one onto gRPC
//! status codes, CLI exit codes, Python exceptions and JS error codes at the
//! edges, and nowhere else.

use std::fmt;

use crate::driver::DriverError;
use crate::store::StoreError;

/// The class of an error: what a caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The named object does not exist.
    NotFound,
    /// An object with that name or id exists already.
    AlreadyExists,
    /// The request is malformed; the message names the field and the reason.
    InvalidArgument,
    /// The request is valid but the system is not in a state that allows it.
    FailedPrecondition,
    /// A concurrent change won: re-read and retry.
    Conflict,
    /// A dependency (store, runtime, daemon) cannot be reached right now.
    Unavailable,
    /// This build or this machine cannot do that; the message says what is missing.
    Unsupported,
    /// Capacity, a pool or a quota is exhausted.
    ResourceExhausted,
    /// The caller is known but may not do that; the message names the
    /// missing permission.
    PermissionDenied,
    /// The caller could not be identified: no credentials, or credentials
    /// that are malformed, unknown, expired or revoked.
    Unauthenticated,
    /// A bug or a corrupted state.
    Internal,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 11] = [
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
    ];

    /// A stable snake_case name, as used in JSON output and binding error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every [`Controller`](crate::Controller) call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of a request is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The path of the field, such as `spec.memory_mib`.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An object that was asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// The object, such as ``instance `web` ``.
        what: String,
    },
    /// An object of that name or id exists already.
    #[error("{what} already exists")]
    AlreadyExists {
        /// The object, such as ``instance `web` ``.
        what: String,
    },
    /// The object is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// This build or this machine cannot do what was asked.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No capacity is left for the request.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Concurrent writers kept winning; the request was not applied.
    #[error("{0}")]
    Conflict(String),
    /// The store failed (its message says what failed; no prefix, so a
    /// person reads the cause first).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A node's runtime driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A service the call goes through (a zixiao server, an agent) could
    /// not be reached or could not serve it now; retrying may succeed.
    #[error("{what} is unavailable")]
    Unavailable {
        /// The service, such as ``the zixiao server `10.0.0.1:50051` ``.
        what: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The caller may not do that.
    #[error("permission denied: {permission}")]
    PermissionDenied {
        /// The missing permission and why it is missing, such as
        /// ``instance.create in project `web` `` or `node.drain (admin only)`.
        permission: String,
    },
    /// The caller could not be identified. The reason never holds a
    /// credential, only what was wrong with it.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// What was wrong, such as `no credentials` or `the token expired`.
        reason: String,
    },
    /// A stored object could not be decoded or an invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::model::InvalidImageRef> for Error {
    fn from(e: crate::model::InvalidImageRef) -> Self {
        e.on("image")
    }
}

impl crate::model::InvalidImageRef {
    /// `InvalidArgument` on `field.part` (`name.tag`): for a reference given
    /// in a field other than `image`.
    pub fn on(self, field: &str) -> Error {
        Error::InvalidArgument {
            field: format!("{field}.{}", self.part.as_str()),
            reason: self.to_string(),
        }
    }
}

impl Error {
    /// The same error, an `InvalidArgument` now naming `field`: a value
    /// checked by a parser shared with another field (metadata parsed as
    /// labels are). Other kinds are returned as they are.
    pub fn on_field(self, field: &str) -> Error {
        match self {
            Error::InvalidArgument { reason, .. } => Error::InvalidArgument {
                field: field.to_owned(),
                reason,
            },
            other => other,
        }
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Store(e) => e.kind(),
            Error::Driver(e) => e.kind(),
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An [`Error::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] for `what`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// An [`Error::PermissionDenied`] naming the missing `permission`.
    ///
    /// ```
    /// use zixiao_core::{Error, ErrorKind};
    /// let err = Error::permission_denied("node.drain (admin only)");
    /// assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    /// assert_eq!(err.to_string(), "permission denied: node.drain (admin only)");
    /// ```
    pub fn permission_denied(permission: impl Into<String>) -> Self {
        Error::PermissionDenied {
            permission: permission.into(),
        }
    }

    /// An [`Error::Unauthenticated`] saying what was wrong with the
    /// caller's credentials (never the credentials themselves).
    ///
    /// ```
    /// use zixiao_core::{Error, ErrorKind};
    /// let err = Error::unauthenticated("the token expired");
    /// assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    /// assert_eq!(err.kind().as_str(), "unauthenticated");
    /// ```
    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        Error::Unauthenticated {
            reason: reason.into(),
        }
    }

    /// The error and all its causes on one line, `a: b: c`, for people.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            source = cause.source();
        }
        out
    }
}

/// A [`Result`](std::result::Result) with the Controller's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
