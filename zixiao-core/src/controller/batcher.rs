//! Group commit for the controller's small writes: the state changes of
//! convergence (claim, running, failed, released) are one or two keys each,
//! and many converges write at once. Writes that arrive while a commit is
//! in flight are merged into the next one, a single store transaction
//! (one etcd request, one embedded `fsync`), as long as their keys do not
//! meet and the transaction stays within the store's size limit.
//!
//! A merged transaction holds or fails as a whole, so when it fails each of
//! its writes is committed again on its own: every caller gets the answer
//! its own transaction would have had (its own `Conflict`, say), at the
//! price of one more round trip, which only happens on a failure.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, oneshot};

use crate::store::{Durability, Revision, Store, StoreError, Txn};

type Reply = oneshot::Sender<Result<Revision, StoreError>>;

/// Merges concurrent small commits; see the module documentation.
#[derive(Debug)]
pub(crate) struct Batcher {
    store: Weak<dyn Store>,
    max_writes: usize,
    tx: Mutex<Option<mpsc::UnboundedSender<(Txn, Reply)>>>,
}

impl Batcher {
    /// Commits to `store`, merging up to `max_writes` writes into one transaction.
    pub(crate) fn new(store: &Arc<dyn Store>, max_writes: usize) -> Self {
        Batcher {
            store: Arc::downgrade(store),
            max_writes: max_writes.max(1),
            tx: Mutex::new(None),
        }
    }

    fn sender(&self) -> mpsc::UnboundedSender<(Txn, Reply)> {
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref() {
            return tx.clone();
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(self.store.clone(), self.max_writes, receiver));
        *tx = Some(sender.clone());
        sender
    }

    /// Commits `txn`, possibly merged with others; answers as
    /// [`Store::commit`] would for `txn` alone.
    pub(crate) async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        txn.validate()?;
        let (reply, answer) = oneshot::channel();
        if self.sender().send((txn, reply)).is_err() {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable {
        what: "the store (closed)".to_owned(),
        source: None,
    }
}

async fn run(
    store: Weak<dyn Store>,
    max_writes: usize,
    mut receiver: mpsc::UnboundedReceiver<(Txn, Reply)>,
) {
    let mut carry: VecDeque<(Txn, Reply)> = VecDeque::new();
    loop {
        let first = match carry.pop_front() {
            Some(job) => job,
            None => match receiver.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut keys: HashSet<String> = first.0.writes.iter().map(|w| w.key().to_owned()).collect();
        let mut writes = first.0.writes.len();
        let mut batch = vec![first];
        loop {
            let next = match carry.pop_front() {
                Some(job) => job,
                None => match receiver.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            let fits = writes + next.0.writes.len() <= max_writes
                && next.0.writes.iter().all(|w| !keys.contains(w.key()));
            if !fits {
                carry.push_front(next);
                break;
            }
            writes += next.0.writes.len();
            keys.extend(next.0.writes.iter().map(|w| w.key().to_owned()));
            batch.push(next);
        }
        let Some(store) = store.upgrade() else {
            for (_, reply) in batch.into_iter().chain(carry.drain(..)) {
                let _ = reply.send(Err(gone()));
            }
            return;
        };
        commit(store.as_ref(), batch).await;
    }
}

/// Commits `batch` as one transaction, or each on its own when that fails.
async fn commit(store: &dyn Store, mut batch: Vec<(Txn, Reply)>) {
    if batch.len() == 1 {
        let (txn, reply) = batch.remove(0);
        let _ = reply.send(store.commit(txn).await);
        return;
    }
    let durability = Durability::of_all(batch.iter().map(|(txn, _)| txn.durability));
    let merged = Txn {
        writes: batch
            .iter()
            .flat_map(|(txn, _)| txn.writes.iter().cloned())
            .collect(),
        durability,
    };
    match store.commit(merged).await {
        Ok(revision) => {
            for (_, reply) in batch {
                let _ = reply.send(Ok(revision));
            }
        }
        Err(_) => {
            let alone = batch.into_iter().map(|(txn, reply)| async move {
                let _ = reply.send(store.commit(txn).await);
            });
            futures::future::join_all(alone).await;
        }
    }
}
