//! Node liveness held by the servers, in memory, with one lease per server
//! in the store (Nomad's shape; `DESIGN.md` says why).
//!
//! - Each server holds one store lease of its own (`ServerLease`) and the
//!   key `/zixiao/servers/<server>` on it.
//! - An agent registers through any server and heartbeats to it. The
//!   server keeps each node's last heartbeat in memory; a heartbeat costs
//!   no store write and no lease renewal.
//! - The key `/zixiao/leases/nodes/<node>` (value: the agent's session) is
//!   written only when a node comes to a server (registration, or a
//!   heartbeat after its server changed), attached to that server's lease,
//!   and deleted when the node's heartbeats stop for the node TTL: a write
//!   per change, not per heartbeat. The leader fails over a node without
//!   that key.
//! - A server acks a heartbeat only while its own lease is fresh (renewed
//!   within [`Timing::ack_window`]), so its keys vanishing with its lease
//!   always comes after its nodes fenced themselves (see [`Timing::validate`]).
//!
//! One live session per node name: another agent claiming the name is
//! refused while the key lives; the same agent coming back (same session,
//! kept in its state directory) takes it over, from any server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use zixiao_core::store::{LeaseId, Precondition, Revision, Store, StoreError, Txn};
use zixiao_core::{Controller, Error, Result};

use crate::election::wait;
use crate::timing::{monotonic_ms, Timing};

/// Key prefix of node liveness keys.
pub const NODE_LEASES_PREFIX: &str = "/zixiao/leases/nodes/";

/// Key prefix of the servers' own keys, each on its server's lease.
pub const SERVERS_PREFIX: &str = "/zixiao/servers/";

/// The liveness key of node `node`.
pub fn lease_key(node: &str) -> String {
    format!("{NODE_LEASES_PREFIX}{node}")
}

/// A node this server holds: whose heartbeats it answers.
#[derive(Debug, Clone)]
struct Held {
    session: String,
    /// The revision of this server's put of the node's key.
    revision: Revision,
    /// The server's lease the key is on.
    lease: LeaseId,
    /// When this server last answered its heartbeat (monotonic ms).
    acked_ms: u64,
}

/// This server's own lease: its id, and when a renewal that succeeded was
/// last sent.
#[derive(Debug, Default)]
struct ServerLease {
    id: AtomicU64,
    renewed_ms: AtomicU64,
}

/// Node liveness on one server; see the module documentation. Cheap to
/// clone; clones share the nodes held.
#[derive(Debug, Clone)]
pub struct Membership {
    store: Arc<dyn Store>,
    server: String,
    timing: Timing,
    lease: Arc<ServerLease>,
    nodes: Arc<Mutex<HashMap<String, Held>>>,
    /// A controller whose cache keeps the liveness keys (a server's), to
    /// see a node that moved away before its heartbeat is answered here.
    view: Option<Controller>,
}

impl Membership {
    /// Liveness held by server `server` in `store`, with `timing`'s TTLs.
    /// Nothing is held until [`Membership::run`] holds the server's lease.
    pub fn new(store: Arc<dyn Store>, server: impl Into<String>, timing: Timing) -> Self {
        Membership {
            store,
            server: server.into(),
            timing,
            lease: Arc::default(),
            nodes: Arc::default(),
            view: None,
        }
    }

    /// Checks each heartbeat answered from memory against `controller`'s
    /// cache of the liveness keys (when it keeps them: a server's does).
    /// Without it a node whose registration reached another server while
    /// its heartbeats still came here (a client that gave up on a slow
    /// answer and tried the next server) was answered from memory by both:
    /// the other server, hearing nothing, expired the key, and this one
    /// kept telling a node the leader had failed over that it was alive.
    pub fn watching(mut self, controller: Controller) -> Self {
        if controller.caches(NODE_LEASES_PREFIX) {
            self.view = Some(controller);
        }
        self
    }

    /// Whether the cache shows `node`'s liveness key no longer the put
    /// this server made at `revision`: another server put it since, or it
    /// is gone. A cache behind that put shows nothing moved.
    fn moved(&self, node: &str, revision: Revision) -> bool {
        let Some(view) = &self.view else {
            return false;
        };
        match view.cached_key(&lease_key(node)) {
            (Some(kv), _) => kv.mod_revision > revision,
            (None, applied) => applied >= revision,
        }
    }

    /// How long a node lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.timing.lease_ttl()
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most `timeout`) until this server holds a fresh lease of
    /// its own and so can take nodes.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.fresh_lease().is_err() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// The nodes whose heartbeats this server answers now.
    pub fn held_nodes(&self) -> usize {
        self.held().len()
    }

    /// The server's lease, if it is fresh enough to vouch for nodes.
    fn fresh_lease(&self) -> Result<LeaseId> {
        let id = self.lease.id.load(Ordering::SeqCst);
        let renewed = self.lease.renewed_ms.load(Ordering::SeqCst);
        let window = self.timing.ack_window().as_millis() as u64;
        if id == 0 || renewed == 0 || monotonic_ms().saturating_sub(renewed) > window {
            return Err(Error::Unavailable {
                what: format!("the zixiao server `{}`", self.server),
                source: Some("it cannot renew its own lease in the store".into()),
            });
        }
        Ok(id)
    }

    /// Holds `node` for `session` on this server: puts its liveness key on
    /// this server's lease (taking it over from another server if the same
    /// session held it there). Answers the server's lease.
    /// Errors: `AlreadyExists` (another session holds the node),
    /// `InvalidArgument` (an empty session), `Unavailable` (this server
    /// cannot vouch for nodes now), the store's errors.
    pub async fn acquire(&self, node: &str, session: &str) -> Result<LeaseId> {
        if session.is_empty() {
            return Err(Error::invalid("session", "missing"));
        }
        let key = lease_key(node);
        for _ in 0..16 {
            let lease = self.fresh_lease()?;
            let precondition = match self.store.get(&key).await? {
                Some(kv) if kv.value == session.as_bytes() && kv.lease == Some(lease) => {
                    self.hold(node, session, kv.mod_revision, lease);
                    return Ok(lease);
                }
                Some(kv) if kv.value == session.as_bytes() => {
                    Precondition::Revision(kv.mod_revision)
                }
                Some(_) => {
                    return Err(Error::AlreadyExists {
                        what: format!(
                            "a live agent for node `{node}` (another session holds it; it is \
                             released when that agent stops heartbeating)"
                        ),
                    })
                }
                None => Precondition::Absent,
            };
            let txn =
                Txn::new().put_with_lease(&key, session.as_bytes().to_vec(), precondition, lease);
            match self.store.commit(txn).await {
                Ok(revision) => {
                    self.hold(node, session, revision, lease);
                    return Ok(lease);
                }
                Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => continue,
                // The lease expired under us: the next look refuses.
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "the liveness key of node `{node}` kept changing; try again"
        )))
    }

    fn hold(&self, node: &str, session: &str, revision: Revision, lease: LeaseId) {
        self.held().insert(
            node.to_owned(),
            Held {
                session: session.to_owned(),
                revision,
                lease,
                acked_ms: monotonic_ms(),
            },
        );
    }

    /// Answers a heartbeat of `node` from `session`: in memory when this
    /// server holds the node; a node that comes from another server is
    /// taken over (one write). Errors: `NotFound` (the node's key is gone:
    /// it was expired, register again), `Unavailable` (this server cannot
    /// vouch for nodes now: try another), the store's errors.
    pub async fn renew(&self, node: &str, session: &str) -> Result<()> {
        let lease = self.fresh_lease()?;
        {
            let mut held = self.held();
            if let Some(h) = held.get_mut(node) {
                if h.session == session && h.lease == lease {
                    if !self.moved(node, h.revision) {
                        h.acked_ms = monotonic_ms();
                        return Ok(());
                    }
                    // Moved: the store says where the node is now.
                    held.remove(node);
                }
            }
        }
        match self.store.get(&lease_key(node)).await? {
            Some(kv) if kv.value == session.as_bytes() => {
                self.acquire(node, session).await.map(|_| ())
            }
            _ => Err(Error::not_found(format!(
                "the liveness of node `{node}` (it expired; register again)"
            ))),
        }
    }

    /// Whether `session` holds `node` now (its key, on any server's lease).
    pub async fn held_by(&self, node: &str, session: &str) -> Result<Option<LeaseId>> {
        Ok(self
            .store
            .get(&lease_key(node))
            .await?
            .filter(|kv| kv.value == session.as_bytes())
            .and_then(|kv| kv.lease))
    }

    /// Ends `node`'s liveness (its agent left the cluster).
    pub async fn release(&self, node: &str) -> Result<()> {
        self.held().remove(node);
        let txn = Txn::new().delete(lease_key(node), Precondition::None);
        self.store.commit(txn).await?;
        Ok(())
    }

    /// Holds this server's lease and expires the nodes whose heartbeats
    /// stopped, until `shutdown`; then stops answering heartbeats (the
    /// nodes it held move to other servers with their next one) and lets
    /// the lease expire rather than revoking it, which would drop their
    /// keys before they could have fenced.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let renew_every = self.timing.server_renewal();
        while !*shutdown.borrow() {
            let lease = match self.store.grant_lease(self.timing.server_lease_ttl()).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(server = %self.server, "granting its lease: {e}");
                    wait(&mut shutdown, renew_every).await;
                    continue;
                }
            };
            let key = format!("{SERVERS_PREFIX}{}", self.server);
            let sent = monotonic_ms();
            let txn = Txn::new().put_with_lease(
                &key,
                self.server.as_bytes().to_vec(),
                Precondition::None,
                lease,
            );
            if let Err(e) = self.store.commit(txn).await {
                tracing::warn!(server = %self.server, "registering itself: {e}");
                let _ = self.store.revoke_lease(lease).await;
                wait(&mut shutdown, renew_every).await;
                continue;
            }
            // Whatever was held on an earlier lease went with it.
            self.held().clear();
            self.lease.id.store(lease, Ordering::SeqCst);
            self.lease.renewed_ms.store(sent, Ordering::SeqCst);
            loop {
                wait(&mut shutdown, renew_every).await;
                if *shutdown.borrow() {
                    // Not revoked: the nodes' keys must outlive their
                    // fencing deadline. They move to other servers with
                    // the nodes' next heartbeats, or expire with the lease.
                    self.lease.id.store(0, Ordering::SeqCst);
                    return;
                }
                let sent = monotonic_ms();
                let renewal =
                    tokio::time::timeout(self.timing.ack_window(), self.store.keep_alive(lease))
                        .await;
                match renewal {
                    Ok(Ok(())) => self.lease.renewed_ms.store(sent, Ordering::SeqCst),
                    Ok(Err(StoreError::NotFound(_))) => {
                        tracing::warn!(server = %self.server, "its lease expired");
                        self.lease.id.store(0, Ordering::SeqCst);
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(server = %self.server, "renewing its lease: {e}")
                    }
                    Err(_) => {
                        tracing::warn!(server = %self.server, "renewing its lease timed out")
                    }
                }
                self.expire().await;
            }
        }
    }

    /// Deletes the keys of the nodes held here whose last heartbeat is
    /// older than the node TTL: they fenced themselves by now. A node is
    /// let go first, so a heartbeat that arrives meanwhile puts its key
    /// back (the node returns) instead of being answered without one.
    async fn expire(&self) {
        let ttl = self.timing.lease_ttl_ms;
        let now = monotonic_ms();
        let expired: Vec<(String, Held)> = {
            let mut held = self.held();
            let gone: Vec<String> = held
                .iter()
                .filter(|(_, h)| now.saturating_sub(h.acked_ms) > ttl)
                .map(|(n, _)| n.clone())
                .collect();
            gone.into_iter()
                .filter_map(|n| held.remove(&n).map(|h| (n, h)))
                .collect()
        };
        for (node, h) in expired {
            // Only the put this server made: a node that moved to another
            // server (or came back) keeps the key put since.
            let txn = Txn::new().delete(lease_key(&node), Precondition::Revision(h.revision));
            match self.store.commit(txn).await {
                Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(server = %self.server, "expiring node `{node}`: {e}");
                    // Tried again at the next round.
                    self.held().entry(node).or_insert(h);
                }
            }
        }
    }
}
