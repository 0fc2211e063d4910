//! TLS for the protocol, on rustls through tokio-rustls (no OpenSSL, and
//! none of tonic's own TLS, which cannot pin the server's identity):
//!
//! - a server accepts connections with [`incoming`]: each handshake runs
//!   on its own task, bounded in time (and each connection holds one of
//!   the server's slots, see [`Limits`]), so a slow or plaintext client
//!   holds up nobody; a connection whose handshake fails is dropped and logged,
//!   never handed to the server. Each accepted connection carries its
//!   [`TlsPeer`] (address and client certificate chain), which tonic puts
//!   in every request's extensions for the per-call identity;
//! - a client dials through [`channel`]: a TLS connector with the cluster
//!   CA and the server identity to expect (zixiao-auth's
//!   `Trust::client_config`), and a bearer token added to every call by
//!   [`Bearer`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};
use zixiao_core::{Error, Result};

use crate::limits::{Admitted, Limits};

/// Handshakes waiting to be served: beyond this many, accepting pauses.
const ACCEPT_BACKLOG: usize = 64;

/// Who is at the other end of a server's TLS connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// Its address.
    pub remote_addr: Option<SocketAddr>,
    /// The client certificate chain it presented, leaf first (already
    /// checked in the handshake as the server's configuration demands).
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// A server's accepted TLS connection: the stream, who is at the other
/// end (what tonic puts in each request's extensions), and its slot.
pub type TlsConnection = Admitted<tokio_rustls::server::TlsStream<TcpStream>, TlsPeer>;

/// The TLS connections of `listener` under `config`, within `limits`
/// (connections at once, handshake time), for tonic's
/// `serve_with_incoming`. The accept loop ends when the stream is dropped
/// (the server stopped).
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: &Limits,
) -> impl Stream<Item = io::Result<TlsConnection>> {
    incoming_reloading(listener, tokio::sync::watch::channel(config).1, limits)
}

/// [`incoming`] under the configuration `configs` holds when each
/// connection arrives: a server whose certificate is renewed while it runs
/// (an agent's node certificate) presents the new one to every connection
/// made after the renewal, without a restart.
pub fn incoming_reloading(
    listener: TcpListener,
    configs: tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>,
    limits: &Limits,
) -> impl Stream<Item = io::Result<TlsConnection>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_BACKLOG);
    let slots = limits.slots();
    let handshake_timeout = limits.handshake_timeout();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = crate::limits::accept(&listener, &slots) => accepted,
                () = tx.closed() => return,
            };
            let Some((tcp, remote, slot)) = accepted else {
                return;
            };
            let acceptor = TlsAcceptor::from(configs.borrow().clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certificates = stream.get_ref().1.peer_certificates().map(|chain| {
                            Arc::new(chain.iter().map(|c| c.clone().into_owned()).collect())
                        });
                        let peer = TlsPeer {
                            remote_addr: Some(remote),
                            certificates,
                        };
                        let _ = tx.send(Ok(Admitted::new(stream, peer, slot))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(peer = %remote, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::info!(peer = %remote, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Adds `authorization: Bearer <token>` to every call, when it has a token.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Sends `token` with every call (`None`: no header). Errors:
    /// `InvalidArgument` (`token`: not printable ASCII).
    pub fn new(token: Option<&str>) -> Result<Self> {
        let Some(token) = token else {
            return Ok(Bearer(None));
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::invalid("token", "must be printable ASCII"))?;
        // Kept out of HTTP/2 header compression tables and debug output.
        value.set_sensitive(true);
        Ok(Bearer(Some(value)))
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A lazily connecting channel to `https://host:port` over TLS with
/// `config`, checking the server's certificate for `host`. Errors:
/// `InvalidArgument` (`endpoint`).
pub fn channel(
    endpoint: &str,
    config: Arc<rustls::ClientConfig>,
    call_timeout: Duration,
) -> Result<Channel> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| Error::invalid("endpoint", format!("`{endpoint}`: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| Error::invalid("endpoint", format!("`{endpoint}` names no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::invalid("endpoint", format!("`{host}`: {e}")))?;
    let port = uri.port_u16().unwrap_or(443);
    let address = match uri.authority() {
        Some(authority) if authority.port().is_some() => authority.to_string(),
        _ => format!("{}:{port}", uri.host().unwrap_or(host)),
    };
    let endpoint = Endpoint::from(uri)
        .connect_timeout(crate::remote::CONNECT_TIMEOUT)
        .timeout(call_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(crate::remote::KEEP_ALIVE)
        .keep_alive_timeout(crate::remote::KEEP_ALIVE)
        .keep_alive_while_idle(true);
    let connector = TlsConnector::from(config);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let (connector, server_name, address) =
                (connector.clone(), server_name.clone(), address.clone());
            async move {
                let tcp = TcpStream::connect(&address).await?;
                let _ = tcp.set_nodelay(true);
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        })),
    )
}
