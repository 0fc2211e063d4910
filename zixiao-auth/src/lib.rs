//! Zixiao's security: who may reach a cluster, who is calling, what they
//! may do, and the record of what they did.
//!
//! - [`pki`]: the cluster CA in pure Rust; server, node and user
//!   certificates; the `rustls` configurations for servers, agents and
//!   clients; a peer's certificate chain to a [`CertIdentity`].
//! - [`token`]: bearer tokens (`zx_<id>_<secret>`), stored hashed; join
//!   tokens whose single use is a compare-and-swap.
//! - [`accounts`]: users with a [`Role`] and projects; projects with a
//!   [`Quota`]; their CRUD in the store ([`AuthStore`]).
//! - [`identity`]: the [`Identity`] of a caller, established by an
//!   [`Authenticator`] from a token or a certificate.
//! - [`permission`]: [`authorize`], a pure function from an identity and a
//!   [`Request`](zixiao_core::api::Request) to a grant or a [`Denial`].
//! - [`Authorized`] and [`Audited`]: wrappers over any
//!   [`Api`](zixiao_core::Api), tower-style, each usable alone;
//!   [`secure`] stacks them for one caller. [`AuditLog`] keeps the records
//!   with bounded retention.
//! - [`ProjectQuota`]: the admission that charges each create to its
//!   project's quota in the create's own transaction.
//! - [`AccessApi`]: the wrapper that carries out the requests of access
//!   control (users, tokens, projects, the audit log) and passes the rest
//!   on; a server serves `secure(AccessApi<A>, caller, log)`.
//! - [`config`]: the client configuration file (contexts, like a
//!   kubeconfig).
//!
//! ```no_run
//! # async fn example(
//! #     store: std::sync::Arc<dyn zixiao_core::Store>,
//! #     controller: std::sync::Arc<dyn zixiao_core::Api>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use zixiao_auth::{AuditLog, AuthStore, Authenticator, Retention, Role, UserName};
//! use zixiao_core::{Client, SystemClock};
//!
//! let accounts = AuthStore::new(store.clone(), Arc::new(SystemClock));
//! let alice = UserName::try_from("alice")?;
//! accounts.create_user(alice.clone(), Role::Admin, Default::default()).await?;
//! let (_, token) = accounts.issue_user_token(&alice, Role::Admin, None, None).await?;
//!
//! // On a server, per call: authenticate, then wrap the controller.
//! let log = Arc::new(AuditLog::new(store, Arc::new(SystemClock), "server-1", Retention::default()));
//! let caller = Authenticator::new(accounts, None).caller(Some(token.expose()), None).await?;
//! let client = Client::new(Arc::new(zixiao_auth::secure(controller, caller, log)));
//! client.list_nodes().await?;
//! # Ok(()) }
//! ```

mod access;
pub mod accounts;
pub mod audit;
mod authorized;
pub mod config;
mod error;
mod files;
pub mod identity;
mod names;
pub mod permission;
pub mod pki;
mod quota;
pub mod token;

pub use access::{token_info, user_info, AccessApi};
pub use accounts::{AuthStore, Project, Quota, QuotaExceeded, Role, User};
pub use audit::{AuditEntry, AuditLog, AuditRecord, Audited, Outcome, Retention};
pub use authorized::{secure, Authorized};
pub use config::{ClientConfigFile, ConfigError, Context, ResolvedContext};
pub use error::{AuthError, Rejection};
pub use identity::{Authenticator, Caller, Credential, Identity};
pub use names::{InvalidName, NodeName, ProjectName, TokenId, UserName};
pub use permission::{
    authorize, authorize_agent_call, authorize_node_call, in_project, project_of,
    project_of_labels, Denial, Grant, Requirement, Scope, PROJECT_LABEL,
};
pub use pki::{
    CertIdentity, ClientAuth, Credentials, ExpectedPeer, IssuedCertificate, NodeKey, Pki, PkiError,
    SubjectName, Trust,
};
pub use quota::{charge, usage_by_project, ProjectQuota};
pub use token::{JoinUse, Token, TokenKind, TokenSecret};

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
