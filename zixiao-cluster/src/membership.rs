//! Node liveness leases in the store, held on behalf of agents: the key
//! `/zixiao/leases/nodes/<node>` holds the agent's session and is attached
//! to a lease the agent's heartbeats renew. One live session per node name:
//! another agent claiming the name is refused until that lease expires; the
//! same agent coming back (same session, kept in its state directory) takes
//! its lease back.

use std::sync::Arc;
use std::time::Duration;

use zixiao_core::store::{LeaseId, Precondition, Store, StoreError, Txn};
use zixiao_core::{Error, Result};

/// Key prefix of node liveness leases.
pub const NODE_LEASES_PREFIX: &str = "/zixiao/leases/nodes/";

/// The lease key of node `node`.
pub fn lease_key(node: &str) -> String {
    format!("{NODE_LEASES_PREFIX}{node}")
}

/// Grants, finds and renews node leases.
#[derive(Debug, Clone)]
pub struct Membership {
    store: Arc<dyn Store>,
    ttl: Duration,
}

impl Membership {
    /// Leases of `ttl` in `store`.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Membership { store, ttl }
    }

    /// The TTL it grants.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease of `node` for `session`: its live lease again when the
    /// session already holds the node, a new one when nobody does.
    /// Errors: `AlreadyExists` (another live session holds the node),
    /// `InvalidArgument` (an empty session), the store's errors.
    pub async fn acquire(&self, node: &str, session: &str) -> Result<LeaseId> {
        if session.is_empty() {
            return Err(Error::invalid("session", "missing"));
        }
        let key = lease_key(node);
        for _ in 0..16 {
            match self.store.get(&key).await? {
                Some(kv) if kv.value == session.as_bytes() => {
                    let Some(lease) = kv.lease else {
                        return Err(Error::Internal(format!("`{key}` has no lease")));
                    };
                    match self.store.keep_alive(lease).await {
                        Ok(()) => return Ok(lease),
                        // Expired between the read and the renewal: start over.
                        Err(StoreError::NotFound(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(_) => {
                    return Err(Error::AlreadyExists {
                        what: format!(
                            "a live agent for node `{node}` (another session holds its lease; \
                             it is released when that agent stops heartbeating)"
                        ),
                    })
                }
                None => {
                    let lease = self.store.grant_lease(self.ttl).await?;
                    let txn = Txn::new().put_with_lease(
                        &key,
                        session.as_bytes().to_vec(),
                        Precondition::Absent,
                        lease,
                    );
                    match self.store.commit(txn).await {
                        Ok(_) => return Ok(lease),
                        Err(StoreError::AlreadyExists(_)) => {
                            let _ = self.store.revoke_lease(lease).await;
                            continue;
                        }
                        Err(e) => {
                            let _ = self.store.revoke_lease(lease).await;
                            return Err(e.into());
                        }
                    }
                }
            }
        }
        Err(Error::Conflict(format!(
            "the lease of node `{node}` kept changing; try again"
        )))
    }

    /// Renews `lease`. Errors: `NotFound` once it expired (register again).
    pub async fn renew(&self, node: &str, lease: LeaseId) -> Result<()> {
        match self.store.keep_alive(lease).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound(_)) => Err(Error::not_found(format!(
                "the lease of node `{node}` (it expired; register again)"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `session` holds `node`'s lease now.
    pub async fn held_by(&self, node: &str, session: &str) -> Result<Option<LeaseId>> {
        Ok(self
            .store
            .get(&lease_key(node))
            .await?
            .filter(|kv| kv.value == session.as_bytes())
            .and_then(|kv| kv.lease))
    }

    /// Ends the lease of `node` (the agent left).
    pub async fn release(&self, lease: LeaseId) -> Result<()> {
        Ok(self.store.revoke_lease(lease).await?)
    }

    /// The nodes that hold a live lease now.
    pub async fn live_nodes(&self) -> Result<std::collections::BTreeSet<String>> {
        let listing = self.store.list(NODE_LEASES_PREFIX).await?;
        Ok(listing
            .items
            .into_iter()
            .filter_map(|kv| kv.key.strip_prefix(NODE_LEASES_PREFIX).map(str::to_owned))
            .collect())
    }
}
