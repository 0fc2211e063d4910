//! Who is calling: an [`Identity`] established from a token or a client
//! certificate by an [`Authenticator`], and the [`Caller`] a transport
//! hands to [`Authorized`](crate::Authorized), which also covers callers
//! that brought no credentials or bad ones.

use std::collections::BTreeSet;
use std::fmt;

use rustls_pki_types::{CertificateDer, UnixTime};

use crate::accounts::{AuthStore, Role};
use crate::error::{AuthError, Rejection};
use crate::names::{NodeName, ProjectName, TokenId, UserName};
use crate::pki::{CertIdentity, Trust};

/// How a user proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token (its id; never its secret).
    Token(TokenId),
    /// A client certificate signed by the cluster CA.
    Certificate,
    /// The embedded deployment's implicit local administrator: whoever runs
    /// the process already holds the machine.
    Local,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A user, with the role and projects in force for this call (for a
    /// token: the token's own, capped by its owner's current ones).
    User {
        /// The user.
        name: UserName,
        /// What they may do.
        role: Role,
        /// Where they may do it (ignored for admins).
        projects: BTreeSet<ProjectName>,
        /// How they proved it.
        via: Credential,
    },
    /// A node's agent, by its certificate (`zixiao://node/<name>`).
    Node(NodeName),
    /// A server replica, by its certificate (`zixiao://server`).
    Server,
}

impl Identity {
    /// The embedded deployment's one implicit administrator.
    pub fn local_admin() -> Self {
        Identity::User {
            name: UserName::try_from("local").expect("a valid user name"),
            role: Role::Admin,
            projects: BTreeSet::new(),
            via: Credential::Local,
        }
    }

    /// The user's name, for users.
    pub fn user(&self) -> Option<&UserName> {
        match self {
            Identity::User { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The token it came with, if any.
    pub fn token(&self) -> Option<&TokenId> {
        match self {
            Identity::User {
                via: Credential::Token(id),
                ..
            } => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    /// `user alice`, `node worker-1`, `server`, as audit records name them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::User { name, .. } => write!(f, "user {name}"),
            Identity::Node(name) => write!(f, "node {name}"),
            Identity::Server => f.write_str("server"),
        }
    }
}

/// The caller of one call, as a transport established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Identified.
    Identified(Identity),
    /// Brought no credentials.
    Anonymous,
    /// Brought credentials that were refused.
    Rejected(Rejection),
}

impl Caller {
    /// The identity, when identified.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Identified(identity) => Some(identity),
            _ => None,
        }
    }
}

impl From<Identity> for Caller {
    fn from(identity: Identity) -> Self {
        Caller::Identified(identity)
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Identified(identity) => identity.fmt(f),
            Caller::Anonymous | Caller::Rejected(_) => f.write_str("anonymous"),
        }
    }
}

/// Turns what a call came with (a bearer token, a verified TLS peer
/// chain) into an [`Identity`]. One per server; cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticator {
    accounts: AuthStore,
    trust: Option<Trust>,
}

impl Authenticator {
    /// Authenticates tokens against `accounts`, and certificates against
    /// `trust` when given (without it, every certificate is refused).
    pub fn new(accounts: AuthStore, trust: Option<Trust>) -> Self {
        Authenticator { accounts, trust }
    }

    /// The caller of a call that came with `bearer` (the token text of an
    /// `authorization: Bearer` header) and/or a TLS `peer_chain`. A token
    /// wins over a certificate: a user may call through a connection whose
    /// certificate is a machine's. Errors other than a refusal (the store
    /// is down: `Unavailable`) are returned, not turned into a
    /// [`Caller::Rejected`].
    pub async fn caller(
        &self,
        bearer: Option<&str>,
        peer_chain: Option<&[CertificateDer<'_>]>,
    ) -> Result<Caller, AuthError> {
        let result = match (bearer, peer_chain) {
            (Some(token), _) => self.token(token).await,
            (None, Some(chain)) if !chain.is_empty() => self.certificate(chain).await,
            _ => return Ok(Caller::Anonymous),
        };
        match result {
            Ok(identity) => Ok(Caller::Identified(identity)),
            Err(AuthError::Unauthenticated(rejection)) => Ok(Caller::Rejected(rejection)),
            Err(other) => Err(other),
        }
    }

    /// The user a bearer token names. Errors: `Unauthenticated` (malformed,
    /// unknown, expired, revoked, a join token, its owner gone),
    /// `Unavailable`.
    pub async fn token(&self, presented: &str) -> Result<Identity, AuthError> {
        self.accounts.authenticate_token(presented).await
    }

    /// The identity a verified-or-not TLS peer chain names (leaf first):
    /// it must chain to the cluster CA and carry a `zixiao://` identity; a
    /// user certificate's user must exist, and brings its current role and
    /// projects. Errors: `Unauthenticated`, `Unavailable`.
    pub async fn certificate(&self, chain: &[CertificateDer<'_>]) -> Result<Identity, AuthError> {
        let trust = self.trust.as_ref().ok_or_else(|| {
            AuthError::Unauthenticated(Rejection::UntrustedCertificate(
                "this server trusts no certificate authority".to_owned(),
            ))
        })?;
        let now = UnixTime::since_unix_epoch(
            self.accounts
                .clock
                .now()
                .signed_duration_since(chrono::DateTime::UNIX_EPOCH)
                .to_std()
                .unwrap_or_default(),
        );
        match trust.identify(chain, now)? {
            CertIdentity::Server => Ok(Identity::Server),
            CertIdentity::Node(name) => Ok(Identity::Node(name)),
            CertIdentity::User(name) => {
                let user = self
                    .accounts
                    .user_with_incarnation(&name)
                    .await?
                    .map(|(user, _)| user)
                    .ok_or_else(|| Rejection::UnknownUser(name.to_string()))?;
                Ok(Identity::User {
                    name: user.name,
                    role: user.role,
                    projects: user.projects,
                    via: Credential::Certificate,
                })
            }
        }
    }
}
