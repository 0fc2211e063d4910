//! Zixiao's web dashboard: the pages, embedded in the binary, and a small
//! JSON gateway over the one [`Api`](zixiao_core::api::Api), served on one
//! listener by [`serve`].
//!
//! The dashboard is a frontend like the CLI: each gateway route parses its
//! request, makes one [`Client`] call and renders the answer as JSON; the
//! pages (hand-written HTML, CSS and ES modules in `assets/`, no bundler,
//! so the sources are the embedded build; xterm.js, the console's terminal,
//! is vendored there as its npm packages distribute it) do the rest in the
//! browser.
//! Every call goes through the `Api` that [`Access`] gives its caller, so
//! authorization, quotas and audit apply exactly as they do over gRPC.
//!
//! # Why a JSON gateway and not gRPC-Web
//!
//! gRPC-Web (`tonic-web`) would let the browser call the server's own
//! services, but the browser would then need protobuf code generated from
//! the `.proto` files and a gRPC-Web runtime: an npm build step whose output
//! must be checked against its sources, for a handful of calls. The
//! gateway's JSON is the model's own serde form (what `zixiao ... -o json`
//! prints), so the pages read the same documents a script does, plain
//! `fetch` is the whole client, and errors arrive as the API's error kinds
//! mapped onto HTTP statuses ([`error`]). Live status is a Server-Sent
//! Events stream of the API's watch calls (`WatchInstances`,
//! `WatchNodes`), not polling; an instance's console is a WebSocket bridged
//! to `AttachConsole`.
//!
//! # Security
//!
//! [`Access::Local`] serves the implicit local administrator, like the
//! state directory's socket: only for loopback listeners (the frontends
//! refuse others), and requests must name a loopback host (no DNS
//! rebinding). [`Access::Authenticated`] asks every request for a bearer
//! token and authenticates it through the same [`CallScope`] the gRPC
//! server uses. In both, a request that changes something must come from
//! the dashboard's own origin, so another web site cannot forge one.

mod assets;
mod console;
pub mod error;
mod gateway;
mod tls;

pub use tls::serve_tls;

use std::future::Future;
use std::sync::Arc;

use zixiao_api::server::{CallCredentials, CallScope};
use zixiao_core::api::Client;
use zixiao_core::Result;

/// Who the dashboard's callers are.
#[derive(Debug, Clone)]
pub enum Access {
    /// Every request is this client's caller (the local administrator of
    /// an embedded deployment). Loopback listeners only.
    Local(Client),
    /// Every request carries `Authorization: Bearer TOKEN`, which `scope`
    /// turns into that caller's `Api` (authorized and audited).
    Authenticated(Arc<dyn CallScope>),
}

impl Access {
    /// Whether the pages must ask for a token.
    pub fn needs_token(&self) -> bool {
        matches!(self, Access::Authenticated(_))
    }

    /// The client of a request that came with `bearer`. Errors: those of
    /// the scope (`Unavailable`); a missing or bad token gives a client
    /// whose calls are refused as `Unauthenticated`.
    pub async fn client(&self, bearer: Option<String>) -> Result<Client> {
        match self {
            Access::Local(client) => Ok(client.clone()),
            Access::Authenticated(scope) => {
                let credentials = CallCredentials {
                    bearer,
                    peer_certificates: None,
                };
                Ok(Client::new(scope.api(credentials).await?))
            }
        }
    }
}

/// The dashboard's routes (pages and `/api/...`) for `access`'s callers,
/// to serve or to nest in another router.
pub fn router(access: Access) -> axum::Router {
    let access = Arc::new(access);
    gateway::router(access.clone())
        .merge(assets::router())
        .layer(axum::middleware::from_fn_with_state(access, gateway::guard))
}

/// Serves the dashboard on `listener` until `shutdown` completes.
/// Errors: `Unavailable` (the listener failed).
pub async fn serve(
    listener: tokio::net::TcpListener,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_on(listener, access, shutdown).await
}

/// [`serve`] on any listener axum takes (plain TCP, or TLS).
async fn serve_on<L>(
    listener: L,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(access))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| unavailable("the dashboard's listener", e))
}

fn unavailable(what: &str, e: std::io::Error) -> zixiao_core::Error {
    zixiao_core::Error::Unavailable {
        what: what.to_owned(),
        source: Some(Box::new(e)),
    }
}
