//! The dashboard over TLS: the server's own certificate (the one its
//! gRPC port presents, so a browser that trusts the cluster CA trusts
//! both), offered for HTTP/1.1, on the API's accept loop (handshakes on
//! their own tasks, bounded in time and in connections at once).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use zixiao_api::tls::TlsConnection;
use zixiao_api::Limits;
use zixiao_core::Result;

use crate::Access;

/// Serves the dashboard on `listener` over TLS with the server
/// configuration `tls` until `shutdown` completes. Only HTTP/1.1 is
/// offered (ALPN), whatever `tls` offers: the gRPC port's configuration
/// offers h2, which the dashboard does not speak. Errors: `Unavailable`
/// (the listener failed).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: &rustls::ServerConfig,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let local = listener
        .local_addr()
        .map_err(|e| crate::unavailable("the dashboard's listener", e))?;
    let mut config = tls.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connections = zixiao_api::tls::incoming(listener, Arc::new(config), &Limits::default());
    let listener = TlsListener {
        connections: Box::pin(connections),
        local,
    };
    crate::serve_on(listener, access, shutdown).await
}

/// Accepted TLS connections as axum takes them.
struct TlsListener {
    connections: Pin<Box<dyn Stream<Item = io::Result<TlsConnection>> + Send>>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.next().await {
                Some(Ok(connection)) => {
                    let peer = connection.peer().remote_addr.unwrap_or(self.local);
                    return (connection, peer);
                }
                // A failed handshake was logged where it happened; the
                // next connection may be fine.
                Some(Err(_)) => continue,
                // The accept loop ended: nothing more comes.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
