//! The registry client's errors, each with the containerd class a caller
//! acts on.

use zixiao_core::ErrorKind;

/// A pull that failed: what failed and, where there is one, the cause.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The repository, tag, digest or blob does not exist in the registry.
    #[error("{what} not found in registry {registry}")]
    NotFound {
        /// The registry's `host[:port]`.
        registry: String,
        /// What was asked for, such as ``manifest `busybox:1` ``.
        what: String,
    },
    /// The image has no manifest for the platform asked for.
    #[error("image `{reference}` has no {platform} manifest (it has: {available})")]
    NoPlatform {
        /// The image.
        reference: String,
        /// The platform wanted, `os/arch`.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },
    /// Plain HTTP to a registry that is neither loopback nor marked insecure.
    #[error(
        "refusing plain HTTP to {host}: only loopback registries and those given as \
         `--insecure-registry {host}` may be reached without TLS"
    )]
    InsecureRefused {
        /// The `host[:port]` asked for over HTTP.
        host: String,
    },
    /// The registry served something that is not what its digest, its
    /// descriptor or the distribution spec says it is.
    #[error("registry {registry} served a bad {what}: {reason}; nothing of it was stored")]
    Corrupt {
        /// The registry's `host[:port]`.
        registry: String,
        /// What, such as `layer sha256:…`.
        what: String,
        /// How it is bad.
        reason: String,
    },
    /// The manifest holds another kind of image than the caller asked for.
    #[error(
        "image `{reference}` is {found}, but a {wanted} image was asked for (--kind {wanted})"
    )]
    KindMismatch {
        /// The image.
        reference: String,
        /// The kind asked for.
        wanted: zixiao_core::model::ImageKind,
        /// What the manifest's media types say it is, such as `a kernel artifact`.
        found: String,
    },
    /// The image uses a format this client does not pull.
    #[error("{0}")]
    Unsupported(String),
    /// The registry refused the credentials, or wants some and none were given.
    #[error("registry {registry} refused the pull: {reason}")]
    Unauthorized {
        /// The registry's `host[:port]`.
        registry: String,
        /// Why, without any credential.
        reason: String,
    },
    /// The registry could not be reached, or answered with a server error.
    #[error("registry {registry} is unavailable ({operation})")]
    Unavailable {
        /// The registry's (or a redirect target's) `host[:port]`.
        registry: String,
        /// What was attempted.
        operation: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file could not be written or read.
    #[error("{operation} failed")]
    Io {
        /// What was attempted.
        operation: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built (no usable root certificates).
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// A CA certificate the caller gave cannot be used.
    #[error("registry_ca: cannot use the CA certificate: {0}")]
    BadCa(String),
    /// The registry's certificate is not one the pull trusts.
    #[error(
        "registry {registry} has a certificate this node does not trust ({reason}); if a \
         private CA issued it, give that CA's certificate (`--registry-ca FILE`)"
    )]
    Untrusted {
        /// The registry's `host[:port]`.
        registry: String,
        /// What was wrong with the certificate.
        reason: String,
    },
}

impl RegistryError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::NotFound { .. } | RegistryError::NoPlatform { .. } => {
                ErrorKind::NotFound
            }
            RegistryError::InsecureRefused { .. }
            | RegistryError::Unauthorized { .. }
            | RegistryError::Untrusted { .. } => ErrorKind::FailedPrecondition,
            RegistryError::BadCa(_) => ErrorKind::InvalidArgument,
            RegistryError::Corrupt { .. } | RegistryError::KindMismatch { .. } => {
                ErrorKind::InvalidArgument
            }
            RegistryError::Unsupported(_) => ErrorKind::Unsupported,
            RegistryError::Unavailable { .. } => ErrorKind::Unavailable,
            RegistryError::Io { .. } | RegistryError::Tls(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn corrupt(
        registry: &str,
        what: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        RegistryError::Corrupt {
            registry: registry.to_owned(),
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(operation: impl Into<String>, source: std::io::Error) -> Self {
        RegistryError::Io {
            operation: operation.into(),
            source,
        }
    }
}
