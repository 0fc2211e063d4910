//! Leader election on the store: the leader is whoever created
//! `/zixiao/leader` (compare-and-swap on absence) with a lease it keeps
//! alive. A leader that cannot renew steps down before its lease can
//! expire; the others poll and take over once the key is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zixiao_core::store::{Precondition, Store, StoreError, Txn};

/// The leader key; its value is the leading server's id.
pub const LEADER_KEY: &str = "/zixiao/leader";

/// How often a follower tries to become leader.
const POLL: Duration = Duration::from_millis(200);

/// Runs the election for server `id` until `shutdown` turns true,
/// publishing whether it leads on `leading`. Gives the lead up on shutdown.
pub async fn run(
    store: Arc<dyn Store>,
    id: String,
    ttl: Duration,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let lease = match store.grant_lease(ttl).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(server = %id, "election: {e}");
                wait(&mut shutdown, POLL).await;
                continue;
            }
        };
        let txn = Txn::new().put_with_lease(
            LEADER_KEY,
            id.as_bytes().to_vec(),
            Precondition::Absent,
            lease,
        );
        match store.commit(txn).await {
            Ok(_) => {
                tracing::info!(server = %id, "leading");
                let _ = leading.send(true);
                hold(&store, lease, ttl, &mut shutdown).await;
                let _ = leading.send(false);
                let _ = store.revoke_lease(lease).await;
                tracing::info!(server = %id, "no longer leading");
            }
            Err(StoreError::AlreadyExists(_)) => {
                let _ = store.revoke_lease(lease).await;
                wait(&mut shutdown, POLL).await;
            }
            Err(e) => {
                tracing::warn!(server = %id, "election: {e}");
                let _ = store.revoke_lease(lease).await;
                wait(&mut shutdown, POLL).await;
            }
        }
    }
}

/// Keeps the leader lease alive until a renewal fails for good or shutdown.
async fn hold(
    store: &Arc<dyn Store>,
    lease: u64,
    ttl: Duration,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut renewed = Instant::now();
    // Step down with a third of the TTL to spare, so two leaders never act
    // at once for longer than a request in flight.
    let give_up = ttl.mul_f64(2.0 / 3.0);
    loop {
        wait(shutdown, ttl / 4).await;
        if *shutdown.borrow() {
            return;
        }
        let renewal = tokio::time::timeout(ttl / 3, store.keep_alive(lease)).await;
        match renewal {
            Ok(Ok(())) => renewed = Instant::now(),
            Ok(Err(StoreError::NotFound(_))) => return,
            Ok(Err(e)) => {
                tracing::warn!("renewing the leader lease: {e}");
                if renewed.elapsed() >= give_up {
                    return;
                }
            }
            Err(_) => {
                tracing::warn!("renewing the leader lease timed out");
                if renewed.elapsed() >= give_up {
                    return;
                }
            }
        }
    }
}

/// Sleeps `period`, or less when shutdown is asked for.
pub(crate) async fn wait(shutdown: &mut watch::Receiver<bool>, period: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        changed = shutdown.changed() => {
            if changed.is_err() {
                tokio::time::sleep(period).await;
            }
        }
    }
}

/// The id of the leading server, if any.
pub async fn leader(store: &dyn Store) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(LEADER_KEY)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}
