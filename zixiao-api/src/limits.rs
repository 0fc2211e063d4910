//! What a server or an agent grants the peers that reach its port, so that
//! one peer, careless or hostile, cannot take what the others need:
//!
//! - **connections at once**: each connection holds a slot from the moment
//!   it is accepted (its TLS handshake included) until it closes; with
//!   every slot taken, accepting pauses and new peers wait in the
//!   kernel's backlog, so a flood of idle connections costs the server a
//!   bounded number of descriptors and tasks;
//! - **calls at once on one connection** (HTTP/2 streams; a watch, a
//!   followed log or a console holds one for as long as it runs);
//! - **how long a call may take to answer**: a unary call (a create
//!   waiting for its instance included) or the opening of a stream;
//! - **how long a TLS handshake may take**, so a peer that connects and
//!   says nothing gives its slot back;
//! - **how long a silent peer is kept**: HTTP/2 pings find a peer that
//!   stopped answering (a cut cable, a frozen VM) and close its
//!   connection, which frees its slot and ends its streams.
//!
//! Message sizes are bounded by [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES)
//! on every service, and header lists by hyper's default (16 KiB).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};
use zixiao_core::{Error, Result};

/// What one server or agent grants its peers. [`Limits::default`] suits a
/// cluster of thousands of nodes and their users; `zixiao server` and
/// `zixiao agent` take `--max-connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, handshakes included.
    max_connections: usize,
    /// Calls (HTTP/2 streams) open at once on one connection.
    streams_per_connection: u32,
    /// The longest a call may take to answer (or a stream to open).
    call_timeout: Duration,
    /// The longest a TLS handshake may take.
    handshake_timeout: Duration,
    /// How often a quiet connection is pinged, and how long an answer may
    /// take before the connection is closed.
    keepalive: Duration,
}

impl Default for Limits {
    /// 4096 connections (a large cluster's agents and servers call each
    /// other over a few hundred), 256 calls on each, answers within an
    /// hour (a create that waits for a VM to boot takes minutes), 10 s
    /// for a handshake, pings every 30 s.
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            streams_per_connection: 256,
            call_timeout: Duration::from_secs(3600),
            handshake_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// These limits with at most `max` connections at once. Errors:
    /// `InvalidArgument` (`max_connections`: 0).
    pub fn with_max_connections(self, max: usize) -> Result<Self> {
        if max == 0 {
            return Err(Error::invalid(
                "max_connections",
                "must be at least 1 (0 would serve nobody)",
            ));
        }
        Ok(Limits {
            max_connections: max,
            ..self
        })
    }

    /// These limits with at most `streams` calls open on one connection.
    /// Errors: `InvalidArgument` (`streams_per_connection`: 0).
    pub fn with_streams_per_connection(self, streams: u32) -> Result<Self> {
        if streams == 0 {
            return Err(Error::invalid(
                "streams_per_connection",
                "must be at least 1",
            ));
        }
        Ok(Limits {
            streams_per_connection: streams,
            ..self
        })
    }

    /// These limits with TLS handshakes cut off after `timeout` (at least
    /// 100 ms: a handshake over a slow link takes a few round trips).
    /// Errors: `InvalidArgument` (`handshake_timeout`).
    pub fn with_handshake_timeout(self, timeout: Duration) -> Result<Self> {
        if timeout < Duration::from_millis(100) {
            return Err(Error::invalid(
                "handshake_timeout",
                "must be at least 100 ms",
            ));
        }
        Ok(Limits {
            handshake_timeout: timeout,
            ..self
        })
    }

    /// Connections open at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// How long a TLS handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// A tonic server builder with these limits on every connection it
    /// serves, each call in a `grpc_span`. Connections themselves are
    /// counted by the incoming stream: [`plain_incoming`], or
    /// [`tls::incoming`](crate::tls::incoming).
    pub fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .trace_fn(grpc_span)
            .max_concurrent_streams(self.streams_per_connection)
            .timeout(self.call_timeout)
            .http2_keepalive_interval(Some(self.keepalive))
            .http2_keepalive_timeout(Some(self.keepalive))
    }

    /// The slots connections take, one per connection.
    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.max_connections))
    }
}

/// The span every gRPC call a server or agent serves runs in: its method
/// (`/zixiao.v1.AgentService/StartInstance`), so what the handler and the
/// layers below log says which call it served.
pub(crate) fn grpc_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    tracing::info_span!("grpc", method = %request.uri().path())
}

/// A connection holding one of its listener's slots until it is dropped:
/// its stream `S` and who is at the other end, `P` (what tonic puts in
/// each request's extensions).
#[derive(Debug)]
pub struct Admitted<S, P> {
    io: S,
    peer: P,
    _slot: OwnedSemaphorePermit,
}

impl<S, P> Admitted<S, P> {
    pub(crate) fn new(io: S, peer: P, slot: OwnedSemaphorePermit) -> Self {
        Admitted {
            io,
            peer,
            _slot: slot,
        }
    }

    /// Who is at the other end.
    pub fn peer(&self) -> &P {
        &self.peer
    }
}

impl<S, P: Clone + Send + Sync + 'static> Connected for Admitted<S, P> {
    type ConnectInfo = P;

    fn connect_info(&self) -> P {
        self.peer.clone()
    }
}

impl<S: AsyncRead + Unpin, P: Unpin> AsyncRead for Admitted<S, P> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin, P: Unpin> AsyncWrite for Admitted<S, P> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Takes a slot, then accepts a connection on `listener`: with every slot
/// taken, nothing is accepted until a connection closes. An accept that
/// fails (out of descriptors and the like) is retried after a pause
/// rather than in a spin. `None` once `slots` is closed (nobody closes it
/// today: the listener's owner stops by dropping the stream).
pub(crate) async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, std::net::SocketAddr, OwnedSemaphorePermit)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((tcp, remote)) => {
                // Small request/response messages must not wait for
                // delayed acknowledgements.
                let _ = tcp.set_nodelay(true);
                return Some((tcp, remote, slot));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The plain-text connections of `listener` (loopback, or where the
/// operator said `--insecure-no-tls`), at most `limits.max_connections()`
/// at once, for tonic's `serve_with_incoming`.
pub fn plain_incoming(
    listener: TcpListener,
    limits: &Limits,
) -> impl Stream<Item = io::Result<Admitted<TcpStream, TcpConnectInfo>>> {
    let slots = limits.slots();
    futures::stream::unfold((listener, slots), |(listener, slots)| async move {
        let (tcp, _, slot) = accept(&listener, &slots).await?;
        let peer = tcp.connect_info();
        Some((Ok(Admitted::new(tcp, peer, slot)), (listener, slots)))
    })
}
