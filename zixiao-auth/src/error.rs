//! The errors of this crate: [`AuthError`] for the store-backed calls
//! (users, tokens, projects, authentication), [`Rejection`] for why a
//! caller was not identified. Each answers a [`zixiao_core::ErrorKind`], and
//! converts into [`zixiao_core::Error`] where an [`Api`](zixiao_core::Api)
//! call returns it.
//!
//! No error of this crate holds a credential: a rejected token is described
//! by what was wrong with it, never by its text.

use zixiao_core::{ErrorKind, StoreError};

use crate::config::ConfigError;
use crate::names::InvalidName;
use crate::permission::Denial;
use crate::pki::PkiError;

/// Why a caller could not be identified. The messages are the same for
/// an unknown token id and a wrong secret, so a caller cannot probe which
/// ids exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Neither a token nor a client certificate came with the call.
    #[error("no credentials")]
    NoCredentials,
    /// The text is not a token (`zx_<id>_<secret>`).
    #[error("the token is malformed")]
    MalformedToken,
    /// No token has that id, or its secret differs.
    #[error("the token is not valid")]
    InvalidToken,
    /// The token's expiry has passed.
    #[error("the token expired")]
    Expired,
    /// The token was revoked.
    #[error("the token was revoked")]
    Revoked,
    /// A single-use join token was used already.
    #[error("the join token was already used")]
    AlreadyUsed,
    /// A token of one kind was used for another kind's purpose (a join
    /// token as a user's bearer token, or the reverse).
    #[error("a {kind} token cannot {purpose}")]
    WrongKind {
        /// The token's kind (`join`).
        kind: &'static str,
        /// What it was used for (`call the API`).
        purpose: &'static str,
    },
    /// The user a token or certificate names does not exist (any more).
    #[error("user `{0}` does not exist")]
    UnknownUser(String),
    /// The peer's certificate does not chain to the cluster CA, has
    /// expired, or is not meant for this use.
    #[error("the certificate is not trusted: {0}")]
    UntrustedCertificate(String),
    /// The certificate chains to the cluster CA but names no Zixiao
    /// identity (`zixiao://...`).
    #[error("the certificate names no zixiao identity")]
    NoCertificateIdentity,
}

/// The error of this crate's store-backed calls.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A field of a request is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field, such as `projects[1]`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The object does not exist.
    #[error("{what} not found")]
    NotFound {
        /// The object, such as ``user `alice` ``.
        what: String,
    },
    /// An object of that name exists already.
    #[error("{what} already exists")]
    AlreadyExists {
        /// The object.
        what: String,
    },
    /// The objects are not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Concurrent writers kept winning; nothing was changed.
    #[error("{what} kept changing concurrently")]
    Conflict {
        /// The object.
        what: String,
    },
    /// The caller could not be identified.
    #[error("unauthenticated")]
    Unauthenticated(#[source] Rejection),
    /// The caller may not do that.
    #[error("permission denied")]
    PermissionDenied(#[source] Denial),
    /// The store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// A certificate could not be made or read.
    #[error("pki")]
    Pki(#[from] PkiError),
    /// The client configuration file could not be used.
    #[error("client configuration")]
    Config(#[from] ConfigError),
}

impl AuthError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            AuthError::NotFound { .. } => ErrorKind::NotFound,
            AuthError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            AuthError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            AuthError::Conflict { .. } => ErrorKind::Conflict,
            AuthError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            AuthError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            AuthError::Store(e) => e.kind(),
            AuthError::Pki(e) => e.kind(),
            AuthError::Config(e) => e.kind(),
        }
    }

    /// An [`AuthError::InvalidArgument`] for `field` from a refused name.
    pub fn invalid_name(field: impl Into<String>, error: InvalidName) -> Self {
        AuthError::InvalidArgument {
            field: field.into(),
            reason: error.reason,
        }
    }

    /// An [`AuthError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AuthError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<Rejection> for AuthError {
    fn from(rejection: Rejection) -> Self {
        AuthError::Unauthenticated(rejection)
    }
}

impl From<Denial> for AuthError {
    fn from(denial: Denial) -> Self {
        AuthError::PermissionDenied(denial)
    }
}

/// The error and its causes on one line, `a: b: c`.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

impl From<AuthError> for zixiao_core::Error {
    fn from(error: AuthError) -> Self {
        use zixiao_core::Error;
        match error {
            AuthError::InvalidArgument { field, reason } => Error::invalid(field, reason),
            AuthError::NotFound { what } => Error::not_found(what),
            AuthError::AlreadyExists { what } => Error::AlreadyExists { what },
            AuthError::FailedPrecondition(message) => Error::FailedPrecondition(message),
            AuthError::Conflict { what } => {
                Error::Conflict(format!("{what} kept changing concurrently"))
            }
            AuthError::Unauthenticated(rejection) => Error::unauthenticated(rejection.to_string()),
            AuthError::PermissionDenied(denial) => Error::permission_denied(denial.to_string()),
            AuthError::Store(e) => Error::Store(e),
            AuthError::Config(ConfigError::Invalid { field, reason }) => {
                Error::invalid(field, reason)
            }
            AuthError::Config(ConfigError::NoContext(name)) => {
                Error::not_found(format!("context `{name}`"))
            }
            AuthError::Config(ConfigError::ContextExists(name)) => Error::AlreadyExists {
                what: format!("context `{name}`"),
            },
            AuthError::Config(e @ ConfigError::Parse { .. }) => {
                let field = match &e {
                    ConfigError::Parse { field, .. } => field.clone(),
                    _ => String::new(),
                };
                Error::invalid(field, chain(&e))
            }
            AuthError::Config(e @ (ConfigError::NoCurrentContext | ConfigError::NoConfigDir)) => {
                Error::FailedPrecondition(chain(&e))
            }
            other => match other.kind() {
                ErrorKind::Unauthenticated => Error::unauthenticated(chain(&other)),
                ErrorKind::NotFound => Error::not_found(chain(&other)),
                ErrorKind::InvalidArgument => Error::invalid("credentials", chain(&other)),
                _ => Error::Internal(chain(&other)),
            },
        }
    }
}
