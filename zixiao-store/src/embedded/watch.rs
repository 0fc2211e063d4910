//! Watch streams of the embedded store: replay of the changelog, then live
//! events from the commit broadcast, with no gap and no duplicate.
//!
//! A watcher subscribes to the broadcast *before* it reads history, so every
//! revision committed after its snapshot is in its channel; revisions it has
//! already delivered are skipped by number. Whenever the channel lagged or a
//! revision is missing, it goes back to the changelog, which holds every kept
//! revision, so a slow consumer loses nothing (or gets
//! [`StoreError::Compacted`] once that history is gone). Commits of other
//! processes (a store held per operation shares its file) arrive as a note
//! that the file is ahead, which sends the watcher to the changelog too.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};
use zixiao_core::store::{Revision, WatchEvent, WatchStream};
use zixiao_core::StoreError;

use super::tables::{Committed, ReadState};
use super::{catch_panic, Inner, Live};

/// How many revisions one catch-up read of the changelog covers, so a
/// replay of long history is read (and held in memory) a piece at a time.
const CATCH_UP_REVISIONS: u64 = 256;

/// Opens a watch of `prefix` after revision `after` (0: the oldest kept).
pub(crate) fn watch(
    inner: &Arc<Inner>,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream, StoreError> {
    let live = inner.events.subscribe();
    let compacted = inner
        .file
        .with(|db| catch_panic(prefix, || ReadState::begin(db)?.compacted()))???;
    if after != 0 && after < compacted {
        return Err(StoreError::Compacted {
            requested: after + 1,
            oldest: compacted + 1,
        });
    }
    let watcher = Watcher {
        inner: Arc::downgrade(inner),
        prefix: prefix.to_owned(),
        delivered: after.max(compacted),
        live,
        catching_up: true,
        queue: VecDeque::new(),
        finished: false,
    };
    Ok(futures::stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next().await?;
        Some((item, watcher))
    })
    .boxed())
}

struct Watcher {
    /// Weak, so an open watch does not keep the database file open.
    inner: Weak<Inner>,
    prefix: String,
    /// Every revision up to this one has been examined (and its matching
    /// events queued).
    delivered: Revision,
    live: broadcast::Receiver<Live>,
    /// Whether the next events come from the changelog rather than `live`.
    catching_up: bool,
    queue: VecDeque<WatchEvent>,
    finished: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            if self.catching_up {
                let caught_up =
                    catch_panic(&self.prefix.clone(), || self.catch_up()).and_then(|result| result);
                if let Err(error) = caught_up {
                    self.finished = true;
                    return Some(Err(error));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(Live::Committed(committed)) if committed.revision <= self.delivered => {}
                Ok(Live::Committed(committed)) if committed.revision == self.delivered + 1 => {
                    self.take(&committed);
                }
                Ok(Live::Behind(revision)) if revision <= self.delivered => {}
                // A revision is missing between what was delivered and this
                // one, or another process committed: the changelog has it.
                Ok(_) | Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => {
                    self.finished = true;
                    return Some(Err(closed()));
                }
            }
        }
    }

    /// Reads the next piece of the changelog after `delivered`.
    fn catch_up(&mut self) -> Result<(), StoreError> {
        let inner = self.inner.upgrade().ok_or_else(closed)?;
        inner.file.with(|db| self.catch_up_in(db))?
    }

    /// [`Watcher::catch_up`] on the open database.
    fn catch_up_in(&mut self, db: &redb::Database) -> Result<(), StoreError> {
        let read = ReadState::begin(db)?;
        let current = read.revision()?;
        let compacted = read.compacted()?;
        if self.delivered < compacted {
            return Err(StoreError::Compacted {
                requested: self.delivered + 1,
                oldest: compacted + 1,
            });
        }
        let through = current.min(self.delivered.saturating_add(CATCH_UP_REVISIONS));
        for committed in read.changes(self.delivered, through)? {
            self.take(&committed);
        }
        self.delivered = self.delivered.max(through);
        if self.delivered >= current {
            self.catching_up = false;
        }
        Ok(())
    }

    fn take(&mut self, committed: &Committed) {
        self.queue.extend(
            committed
                .events
                .iter()
                .filter(|event| event.key().starts_with(&self.prefix))
                .cloned(),
        );
        self.delivered = committed.revision;
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable {
        what: "the embedded store was closed while a watch was open".to_owned(),
        source: None,
    }
}
