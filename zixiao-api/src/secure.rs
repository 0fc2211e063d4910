//! Security at the protocol's edge: who each call comes from, and the
//! `Api` it is served with.
//!
//! - [`AuthScope`]: a [`CallScope`] that authenticates each call (its
//!   bearer token or TLS client certificate, with zixiao-auth's
//!   [`Authenticator`]) and serves it through
//!   `secure(inner, caller, log)`: authorized, then audited. No handler
//!   knows of it; a caller without credentials or with bad ones is refused
//!   by `Authorized` (`Unauthenticated`), and the refusal is recorded.
//! - [`api_server`] and [`serve_routes`]: what a server runs, with
//!   [`ServerTls`] or (on loopback) without.
//! - [`ConnectOptions`] and [`connect_with`]: a client with the cluster CA,
//!   a bearer token and a client certificate.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use zixiao_auth::{
    secure, AccessApi, AuditLog, AuthError, AuthStore, Authenticator, ClientAuth, Credentials,
    ExpectedPeer, Pki, Retention, SubjectName, Trust,
};
use zixiao_core::api::{Api, Client};
use zixiao_core::{Error, Result, Store, SystemClock};

use crate::limits::Limits;
use crate::server::{ApiServer, CallCredentials, CallScope, SameApi};

/// Each call authenticated, then served through `secure(inner, caller, log)`.
pub struct AuthScope {
    inner: Arc<dyn Api>,
    authenticator: Authenticator,
    log: Arc<AuditLog>,
}

impl AuthScope {
    /// Serves `inner` to the callers `authenticator` identifies, recording
    /// in `log` (one per replica).
    pub fn new(inner: Arc<dyn Api>, authenticator: Authenticator, log: Arc<AuditLog>) -> Self {
        AuthScope {
            inner,
            authenticator,
            log,
        }
    }
}

impl fmt::Debug for AuthScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthScope")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CallScope for AuthScope {
    async fn api(&self, credentials: CallCredentials) -> Result<Arc<dyn Api>> {
        let chain = credentials.peer_certificates.as_deref().map(Vec::as_slice);
        let caller = self
            .authenticator
            .caller(credentials.bearer.as_deref(), chain)
            .await?;
        Ok(Arc::new(secure(
            self.inner.clone(),
            caller,
            self.log.clone(),
        )))
    }
}

/// A server's TLS: its configuration (its certificate; client
/// certificates optional, and judged at each call by the authenticator, so
/// one of another CA is refused as `Unauthenticated` and recorded) and the
/// CA it trusts.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    trust: Trust,
    credentials: Credentials,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// How long a server's own certificate is valid: a replica issues a new
/// one at each start, so a year leaves room for long runs.
pub const SERVER_CERT_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);

impl ServerTls {
    /// TLS with a server certificate issued now by `pki` for `names`
    /// (every replica of a cluster shares the PKI directory, and each
    /// issues its own). Errors: `InvalidArgument` (no names), `Internal`.
    pub fn issue(pki: &Pki, names: &[SubjectName]) -> Result<Self> {
        let issued = pki
            .issue_server(names, SERVER_CERT_VALIDITY)
            .map_err(AuthError::from)?;
        let credentials = issued.credentials().map_err(AuthError::from)?;
        let trust = pki.trust().clone();
        let config = trust
            .server_config(&credentials, ClientAuth::PerCall)
            .map_err(AuthError::from)?;
        Ok(ServerTls {
            config,
            trust,
            credentials,
        })
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// The CA it trusts.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The server's certificate and key: what it presents to agents when
    /// it calls them.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A client configuration to call node `node`'s agent: the server's
    /// certificate presented, that node's required. Errors: `Internal`.
    pub fn agent_client_config(&self, node: &str) -> Result<Arc<rustls::ClientConfig>> {
        let node = zixiao_auth::NodeName::try_from(node)
            .map_err(|e| Error::invalid("node", e.to_string()))?;
        Ok(self
            .trust
            .client_config(Some(&self.credentials), ExpectedPeer::Node(node))
            .map_err(AuthError::from)?)
    }
}

/// Who each user-facing call of a server is served as, over `store`:
/// `inner` behind the access layer ([`AccessApi`]: users, tokens,
/// projects, audit). With `tls`, each call is authenticated and served
/// through `secure(..., caller, log)` with an audit log written as
/// `replica`; without, every caller is the implicit local administrator:
/// only for listeners on loopback (or where the operator said
/// `--insecure-no-tls`), and the daemon's Unix socket. One per replica,
/// shared by every transport it serves (gRPC, the web dashboard).
pub fn user_scope(
    inner: Arc<dyn Api>,
    store: Arc<dyn Store>,
    replica: &str,
    tls: Option<&ServerTls>,
) -> Arc<dyn CallScope> {
    let clock: Arc<dyn zixiao_core::Clock> = Arc::new(SystemClock);
    let accounts = AuthStore::new(store.clone(), clock.clone());
    let log = Arc::new(AuditLog::new(store, clock, replica, Retention::default()));
    let api: Arc<dyn Api> = Arc::new(AccessApi::new(inner, accounts.clone(), log.clone()));
    match tls {
        Some(tls) => {
            let authenticator = Authenticator::new(accounts, Some(tls.trust.clone()));
            Arc::new(AuthScope::new(api, authenticator, log))
        }
        None => Arc::new(SameApi(api)),
    }
}

/// The user-facing services a server offers over `store`, served as
/// [`user_scope`] says.
pub fn api_server(
    inner: Arc<dyn Api>,
    store: Arc<dyn Store>,
    replica: &str,
    tls: Option<&ServerTls>,
) -> ApiServer {
    ApiServer::scoped(user_scope(inner, store, replica, tls))
}

/// Serves `routes` on `listener` until `shutdown` completes, within
/// `limits`: over TLS with `tls`, else in plain text. Errors:
/// `Unavailable` (the listener failed).
pub async fn serve_routes(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: Option<&ServerTls>,
    limits: &Limits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    let server = limits.server().add_routes(routes);
    let served = match tls {
        Some(tls) => {
            let incoming = crate::tls::incoming(listener, tls.config.clone(), limits);
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            let incoming = crate::limits::plain_incoming(listener, limits);
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    served.map_err(|e| Error::Unavailable {
        what: "the gRPC listener".to_owned(),
        source: Some(Box::new(e)),
    })
}

/// How a client reaches a server: where, whom to trust, and as whom.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// `https://host:port`, `http://host:port` (loopback only when a
    /// token is sent), or `host:port` (https when a CA is given).
    pub endpoint: String,
    /// The cluster CA certificate, PEM: required for https.
    pub ca_pem: Option<String>,
    /// The bearer token sent with every call.
    pub token: Option<String>,
    /// A client certificate and its key, PEM.
    pub client_identity: Option<(String, String)>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("endpoint", &self.endpoint)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "client_identity",
                &self.client_identity.as_ref().map(|_| "<cert and key>"),
            )
            .finish()
    }
}

/// Whether `host` (of an endpoint's authority) is a loopback host.
fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ConnectOptions {
    /// Options for `endpoint` alone (no CA, no token).
    pub fn new(endpoint: impl Into<String>) -> Self {
        ConnectOptions {
            endpoint: endpoint.into(),
            ..ConnectOptions::default()
        }
    }

    /// The endpoint with its scheme, and whether it is TLS. Errors:
    /// `InvalidArgument`: https without a CA, a CA or client certificate
    /// with http, or a token in clear to another machine.
    pub fn resolved_endpoint(&self) -> Result<(String, bool)> {
        let (scheme, rest) = match self.endpoint.split_once("://") {
            Some((scheme, rest)) => (scheme.to_owned(), rest.to_owned()),
            None if self.ca_pem.is_some() => ("https".to_owned(), self.endpoint.clone()),
            None => ("http".to_owned(), self.endpoint.clone()),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        match scheme.as_str() {
            "https" if self.ca_pem.is_none() => Err(Error::invalid(
                "ca_cert",
                format!(
                    "`{}` is https: give the cluster's CA certificate (a context's ca_file, \
                     or --ca-cert)",
                    self.endpoint
                ),
            )),
            "https" => Ok((format!("https://{rest}"), true)),
            "http" if self.ca_pem.is_some() || self.client_identity.is_some() => {
                Err(Error::invalid(
                    "endpoint",
                    format!(
                        "`{}` is plain http, yet a CA or client certificate is given: use https://",
                        self.endpoint
                    ),
                ))
            }
            "http" if self.token.is_some() && !is_loopback(authority) => Err(Error::invalid(
                "endpoint",
                format!(
                    "`{}` is plain http to another machine: a token would cross the network \
                     in clear; use https://",
                    self.endpoint
                ),
            )),
            "http" => Ok((format!("http://{rest}"), false)),
            other => Err(Error::invalid(
                "endpoint",
                format!("`{other}` is not a scheme zixiao speaks (https, http)"),
            )),
        }
    }
}

/// A client of the server `options` name: TLS with the cluster CA (and the
/// server's certificate pinned to a server identity) for https, the bearer
/// token on every call. Connects lazily, on the first call. Errors:
/// `InvalidArgument` naming the field (`endpoint`, `ca_cert`, `token`,
/// `client_cert`).
pub fn connect_with(options: ConnectOptions) -> Result<Client> {
    Ok(Client::new(Arc::new(crate::GrpcClient::with_options(
        &options,
    )?)))
}

/// The rustls client configuration `options` ask for.
pub(crate) fn client_config(options: &ConnectOptions) -> Result<Option<Arc<rustls::ClientConfig>>> {
    let Some(ca) = &options.ca_pem else {
        return Ok(None);
    };
    let trust = Trust::from_pem(ca).map_err(|e| Error::invalid("ca_cert", e.to_string()))?;
    let credentials = options
        .client_identity
        .as_ref()
        .map(|(cert, key)| Credentials::from_pem(cert, key))
        .transpose()
        .map_err(|e| Error::invalid("client_cert", e.to_string()))?;
    let config = trust
        .client_config(credentials.as_ref(), ExpectedPeer::Server)
        .map_err(|e| Error::invalid("ca_cert", e.to_string()))?;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(endpoint: &str, ca: bool, token: bool) -> ConnectOptions {
        ConnectOptions {
            endpoint: endpoint.to_owned(),
            ca_pem: ca.then(|| "CA".to_owned()),
            token: token.then(|| "zx_t".to_owned()),
            client_identity: None,
        }
    }

    fn field(result: Result<(String, bool)>) -> String {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_endpoint_is_tls_with_a_ca_and_never_sends_a_token_in_clear_off_loopback() {
        let resolved = |e, ca, token| options(e, ca, token).resolved_endpoint().unwrap();
        assert_eq!(
            resolved("https://h:1", true, true),
            ("https://h:1".to_owned(), true)
        );
        assert_eq!(
            resolved("h:1", true, true),
            ("https://h:1".to_owned(), true)
        );
        assert_eq!(
            resolved("h:1", false, false),
            ("http://h:1".to_owned(), false)
        );
        assert_eq!(
            resolved("http://127.0.0.1:1", false, true),
            ("http://127.0.0.1:1".to_owned(), false)
        );
        assert_eq!(
            field(options("https://h:1", false, true).resolved_endpoint()),
            "ca_cert"
        );
        assert_eq!(
            field(options("http://10.0.0.1:1", false, true).resolved_endpoint()),
            "endpoint"
        );
        assert_eq!(
            field(options("http://h:1", true, false).resolved_endpoint()),
            "endpoint"
        );
        assert_eq!(
            field(options("ftp://h:1", false, false).resolved_endpoint()),
            "endpoint"
        );
    }

    #[test]
    fn options_never_show_a_token() {
        let shown = format!("{:?}", options("https://h:1", true, true));
        assert!(!shown.contains("zx_t"), "{shown}");
    }

    #[test]
    fn a_bearer_header_gives_its_token_and_anything_else_whole() {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer zx_abc".parse().unwrap());
        let credentials = CallCredentials::of(&request);
        assert_eq!(credentials.bearer.as_deref(), Some("zx_abc"));
        assert!(!format!("{credentials:?}").contains("zx_abc"));
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Basic dXNlcg==".parse().unwrap());
        let credentials = CallCredentials::of(&request);
        assert_eq!(credentials.bearer.as_deref(), Some("Basic dXNlcg=="));
        assert!(CallCredentials::of(&tonic::Request::new(()))
            .bearer
            .is_none());
    }
}
