//! The connections of an [`EtcdStore`](super::EtcdStore) to its endpoints,
//! and the retry rule every call goes through.
//!
//! Each endpoint gets its own eagerly dialled tonic channel (no load
//! balancer): a call that fails to dial provably never reached etcd, so it
//! may move to the next endpoint even when it is a non-idempotent commit.
//! Failures are sorted into three classes ([`Failure`]): not sent (retry
//! anywhere), outcome unknown (retry only idempotent calls) and etcd's own
//! answer (map to a [`StoreError`], never retry).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::time::Instant;
use zixiao_core::StoreError;

/// The longest pause between two rounds over the endpoints.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// How often an idle connection is pinged; etcd's default minimum is 5 s.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a call may be sent again after an attempt whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, keep-alives, revokes: sending twice is harmless.
    Idempotent,
    /// Commits: retried only when the earlier attempt provably never reached etcd.
    OnlyIfNotSent,
}

/// Why one attempt failed, by what it means for a retry.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The request never reached a member that could apply it (dial
    /// refused, the member has no leader, it is overloaded).
    NotSent(String),
    /// The request may or may not have been applied (a timeout, a
    /// connection lost mid-call).
    Unknown(String),
    /// etcd answered; the caller maps the answer.
    Answer(etcd_client::Error),
}

impl Failure {
    /// Sorts an etcd-client error.
    pub(crate) fn classify(error: etcd_client::Error) -> Failure {
        match error {
            etcd_client::Error::GRpcStatus(status) => {
                use tonic::Code;
                let message = status.message().to_owned();
                // tonic puts the transport's cause (a refused connection)
                // in the status's source, not in its message.
                let lower = status_text(&status).to_ascii_lowercase();
                match status.code() {
                    // etcd rejects these before proposing anything.
                    Code::Unavailable
                        if lower.contains("no leader") || lower.contains("not capable") =>
                    {
                        Failure::NotSent(message)
                    }
                    Code::ResourceExhausted if lower.contains("too many requests") => {
                        Failure::NotSent(message)
                    }
                    // tonic reconnecting a dropped connection and failing to:
                    // nothing was sent on it.
                    Code::Unavailable | Code::Unknown
                        if lower.contains("tcp connect error")
                            || lower.contains("error trying to connect")
                            || lower.contains("connection refused") =>
                    {
                        Failure::NotSent(status_text(&status))
                    }
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::Internal
                    | Code::Aborted => Failure::Unknown(status_text(&status)),
                    _ => Failure::Answer(etcd_client::Error::GRpcStatus(status)),
                }
            }
            etcd_client::Error::TransportError(e) => Failure::Unknown(e.to_string()),
            etcd_client::Error::IoError(e) => Failure::Unknown(e.to_string()),
            etcd_client::Error::WatchError(e) => Failure::Unknown(format!("watch failed: {e}")),
            other => Failure::Answer(other),
        }
    }
}

/// Timeouts of a [`Pool`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) dial: Duration,
    pub(crate) request: Duration,
    pub(crate) retry: Duration,
}

/// One client per endpoint, dialled on first use and dropped when its
/// connection fails, and the endpoint that answered last.
pub(crate) struct Pool {
    endpoints: Vec<String>,
    clients: Vec<Mutex<Option<Client>>>,
    preferred: AtomicUsize,
    pub(crate) timeouts: Timeouts,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("endpoints", &self.endpoints)
            .field("preferred", &self.preferred.load(Ordering::Relaxed))
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(endpoints: Vec<String>, timeouts: Timeouts) -> Pool {
        let clients = endpoints.iter().map(|_| Mutex::new(None)).collect();
        Pool {
            endpoints,
            clients,
            preferred: AtomicUsize::new(0),
            timeouts,
        }
    }

    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The client of endpoint `index`, dialling it if needed.
    async fn client(&self, index: usize) -> Result<Client, Failure> {
        if let Some(client) = self.slot(index).clone() {
            return Ok(client);
        }
        let url = &self.endpoints[index];
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| Failure::NotSent(format!("invalid endpoint: {e}")))?
            .connect_timeout(self.timeouts.dial)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(self.timeouts.request)
            .keep_alive_while_idle(true);
        let channel = match tokio::time::timeout(self.timeouts.dial, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(Failure::NotSent(format!("cannot connect: {}", chain(&e)))),
            Err(_) => {
                return Err(Failure::NotSent(format!(
                    "no connection within the dial timeout of {:?}",
                    self.timeouts.dial
                )))
            }
        };
        // require_leader: a member cut off from its leader refuses requests
        // at once ("no leader") instead of holding them, and ends watches,
        // so calls move to a member that can serve them.
        let options = ConnectOptions::new().with_require_leader(true);
        let client = Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options))
            .await
            .map_err(|e| Failure::NotSent(format!("cannot set up the client: {e}")))?;
        *self.slot(index) = Some(client.clone());
        Ok(client)
    }

    fn slot(&self, index: usize) -> std::sync::MutexGuard<'_, Option<Client>> {
        self.clients[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets endpoint `index`'s connection (the next call dials again)
    /// and prefers the next endpoint.
    fn drop_client(&self, index: usize) {
        *self.slot(index) = None;
        let next = (index + 1) % self.endpoints.len();
        let _ = self
            .preferred
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs `op` against the preferred endpoint, moving on to the others on
    /// failure as `retry` allows, for up to the retry timeout. `what` names
    /// the call in errors.
    ///
    /// A round in which no endpoint could even be dialled ends the call at
    /// once with `Unavailable` naming every endpoint: the cluster is down
    /// or the list is wrong, and waiting would only hang the caller.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &str,
        retry: Retry,
        mut op: F,
    ) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeouts.retry;
        let count = self.endpoints.len();
        let mut backoff = Duration::from_millis(25);
        loop {
            let start = self.preferred.load(Ordering::Relaxed) % count;
            let mut errors = Vec::with_capacity(count);
            let mut dialled_any = false;
            for offset in 0..count {
                let index = (start + offset) % count;
                let url = &self.endpoints[index];
                let client = match self.client(index).await {
                    Ok(client) => client,
                    Err(failure) => {
                        errors.push(format!("{url}: {}", describe(&failure)));
                        continue;
                    }
                };
                dialled_any = true;
                let outcome = tokio::time::timeout(self.timeouts.request, op(client)).await;
                let failure = match outcome {
                    Ok(Ok(value)) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Ok(Err(error)) => Failure::classify(error),
                    Err(_) => Failure::Unknown(format!(
                        "no answer within the request timeout of {:?}",
                        self.timeouts.request
                    )),
                };
                match failure {
                    Failure::Answer(_) => return Err(failure),
                    Failure::Unknown(reason) if retry == Retry::OnlyIfNotSent => {
                        self.drop_client(index);
                        return Err(Failure::Unknown(format!(
                            "{what} via {url}: {reason}; it may or may not have been applied"
                        )));
                    }
                    Failure::NotSent(reason) | Failure::Unknown(reason) => {
                        self.drop_client(index);
                        errors.push(format!("{url}: {reason}"));
                    }
                }
            }
            let now = Instant::now();
            if !dialled_any || now + backoff >= deadline {
                let why = if dialled_any {
                    format!("no endpoint served it within {:?}", self.timeouts.retry)
                } else {
                    "no endpoint could be reached".to_owned()
                };
                return Err(Failure::NotSent(format!(
                    "{what} failed: {why} (etcd endpoints {}): {}",
                    self.endpoints.join(", "),
                    errors.join("; ")
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// A failure's reason, for messages.
fn describe(failure: &Failure) -> String {
    match failure {
        Failure::NotSent(reason) | Failure::Unknown(reason) => reason.clone(),
        Failure::Answer(error) => error.to_string(),
    }
}

/// A gRPC status's message and its causes, as one line.
fn status_text(status: &tonic::Status) -> String {
    use std::error::Error as _;
    match status.source() {
        Some(source) => format!("{}: {}", status.message(), chain(source)),
        None => status.message().to_owned(),
    }
}

/// An error and its causes, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// `Unavailable` for a failure that is not etcd's answer.
pub(crate) fn unavailable(failure: Failure) -> StoreError {
    match failure {
        Failure::NotSent(what) | Failure::Unknown(what) => {
            StoreError::Unavailable { what, source: None }
        }
        Failure::Answer(error) => StoreError::Unavailable {
            what: "etcd refused the request".to_owned(),
            source: Some(Box::new(error)),
        },
    }
}
