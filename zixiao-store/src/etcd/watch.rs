//! Watch streams on etcd that survive a lost connection: a task reads
//! etcd's watch and forwards its events, and when the stream breaks (the
//! member died, lost its leader, the connection dropped) it watches again
//! from the revision after the last one it delivered, on whichever endpoint
//! answers. Each etcd watch response holds whole revisions, so resuming
//! after the last delivered revision neither repeats nor skips an event.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use zixiao_core::store::{Revision, WatchEvent, WatchStream};
use zixiao_core::StoreError;

use super::conn::{unavailable, Failure, Pool, Retry};
use super::{answer_error, key_value, range_end, to_i64, to_revision};

/// How many events may wait for a slow consumer before the task stops
/// reading etcd (etcd then buffers, or cancels a hopeless watcher).
const BUFFER: usize = 1024;

/// The longest pause between two attempts to watch again.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The state of one watch: where it is, and where it sends.
struct Watcher {
    pool: Arc<Pool>,
    store_prefix: Arc<str>,
    /// The prefix asked for, without the store's.
    prefix: String,
    /// The next revision to deliver (etcd's start revision on a re-watch).
    next: Revision,
    /// Whether the caller asked for everything still kept (after 0).
    from_oldest: bool,
    out: mpsc::Sender<Result<WatchEvent, StoreError>>,
}

/// Opens a watch of `prefix` after revision `after`. The first watch is
/// opened before returning, so an unreachable cluster fails the call.
pub(crate) async fn watch(
    pool: Arc<Pool>,
    store_prefix: Arc<str>,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream, StoreError> {
    let (out, events) = mpsc::channel(BUFFER);
    let watcher = Watcher {
        pool,
        store_prefix,
        prefix: prefix.to_owned(),
        next: after.saturating_add(1),
        from_oldest: after == 0,
        out,
    };
    let stream = watcher.open().await.map_err(|f| watch_error(f, prefix))?;
    tokio::spawn(async move { watcher.run(stream).await });
    Ok(futures::stream::unfold(events, |mut events| async move {
        events.recv().await.map(|item| (item, events))
    })
    .boxed())
}

fn watch_error(failure: Failure, prefix: &str) -> StoreError {
    match failure {
        Failure::Answer(error) => {
            answer_error(Failure::Answer(error), &format!("watching `{prefix}`"))
        }
        other => unavailable(other),
    }
}

/// What ended one etcd watch stream.
enum Ended {
    /// The consumer dropped the stream: stop.
    Consumer,
    /// The history asked for is gone.
    Compacted(Revision),
    /// The stream broke (the reason is not kept: the re-watch reports its own).
    Broken,
}

impl Watcher {
    /// Opens an etcd watch from `self.next`, trying every endpoint.
    async fn open(&self) -> Result<etcd_client::WatchStream, Failure> {
        let key = format!("{}{}", self.store_prefix, self.prefix);
        let start = to_i64(self.next, "revision").map_err(|e| Failure::NotSent(e.to_string()))?;
        let options = WatchOptions::new()
            .with_range(range_end(key.as_bytes()))
            .with_start_revision(start)
            .with_prev_key()
            .with_progress_notify();
        let key = if key.is_empty() {
            vec![0]
        } else {
            key.into_bytes()
        };
        self.pool
            .run("watching", Retry::Idempotent, |client| {
                let (key, options) = (key.clone(), options.clone());
                async move {
                    let mut stream = client.watch_client().watch(key, Some(options)).await?;
                    // Wait for etcd to confirm the watch, so that a member
                    // that cannot serve it fails here and the next is tried.
                    match stream.message().await? {
                        Some(response) if response.created() => Ok(stream),
                        Some(_) | None => Err(etcd_client::Error::WatchError(
                            "etcd did not confirm the watch".to_owned(),
                        )),
                    }
                }
            })
            .await
    }

    /// Forwards events until the consumer leaves or the history is gone,
    /// watching again whenever the stream breaks.
    async fn run(mut self, mut stream: etcd_client::WatchStream) {
        loop {
            match self.forward(&mut stream).await {
                Ended::Consumer => return,
                Ended::Compacted(oldest) if self.from_oldest => {
                    // "Everything still kept" starts at the oldest kept revision.
                    self.next = oldest;
                    self.from_oldest = false;
                }
                Ended::Compacted(oldest) => {
                    let _ = self
                        .out
                        .send(Err(StoreError::Compacted {
                            requested: self.next,
                            oldest,
                        }))
                        .await;
                    return;
                }
                Ended::Broken => {}
            }
            stream = match self.reopen().await {
                Some(stream) => stream,
                None => return,
            };
        }
    }

    /// Watches again, with backoff, until it works, the consumer leaves,
    /// or the pool's retry timeout passes without an endpoint serving it.
    async fn reopen(&mut self) -> Option<etcd_client::WatchStream> {
        let deadline = Instant::now() + self.pool.timeouts.retry;
        let mut backoff = Duration::from_millis(25);
        loop {
            let failure = tokio::select! {
                _ = self.out.closed() => return None,
                opened = self.open() => match opened {
                    Ok(stream) => return Some(stream),
                    Err(failure) => failure,
                },
            };
            if Instant::now() + backoff >= deadline {
                let error = match failure {
                    Failure::Answer(error) => answer_error(
                        Failure::Answer(error),
                        &format!("watching `{}` again", self.prefix),
                    ),
                    other => unavailable(other),
                };
                let _ = self.out.send(Err(error)).await;
                return None;
            }
            tokio::select! {
                _ = self.out.closed() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Forwards one etcd watch stream's events.
    async fn forward(&mut self, stream: &mut etcd_client::WatchStream) -> Ended {
        loop {
            let message = tokio::select! {
                _ = self.out.closed() => return Ended::Consumer,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) => return Ended::Broken,
            };
            if response.compact_revision() > 0 {
                return Ended::Compacted(to_revision(response.compact_revision()));
            }
            if response.canceled() {
                // Not for compaction: the member gave up on it (lost its
                // leader, shut down). Watch again elsewhere.
                return Ended::Broken;
            }
            if let Err(ended) = self.deliver(&response).await {
                return ended;
            }
        }
    }

    /// Sends one response's events on, and moves `next` past them.
    async fn deliver(&mut self, response: &WatchResponse) -> Result<(), Ended> {
        if response.events().is_empty() {
            // A progress notification: every change up to its header
            // revision has been sent, so a re-watch may start after it.
            if !response.created() {
                if let Some(header) = response.header() {
                    self.next = self.next.max(to_revision(header.revision()) + 1);
                }
            }
            return Ok(());
        }
        let mut items = Vec::with_capacity(response.events().len());
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = to_revision(kv.mod_revision());
            if revision < self.next {
                continue; // Already delivered before a re-watch.
            }
            items.push(match event.event_type() {
                EventType::Put => key_value(&self.store_prefix, kv).map(WatchEvent::Put),
                EventType::Delete => {
                    key_value(&self.store_prefix, kv).map(|deleted| WatchEvent::Delete {
                        key: deleted.key,
                        revision,
                        prev: event.prev_kv().map(|prev| prev.value().to_vec()),
                    })
                }
            });
        }
        // A response holds whole revisions: hand them over at once, so a
        // consumer that reads what is ready never sees half a revision.
        if !items.is_empty() && items.len() <= BUFFER {
            let Ok(permits) = self.out.reserve_many(items.len()).await else {
                return Err(Ended::Consumer);
            };
            for (permit, item) in permits.zip(items) {
                permit.send(item);
            }
        } else {
            for item in items {
                if self.out.send(item).await.is_err() {
                    return Err(Ended::Consumer);
                }
            }
        }
        if let Some(last) = response.events().last().and_then(|e| e.kv()) {
            self.next = self.next.max(to_revision(last.mod_revision()) + 1);
        }
        Ok(())
    }
}
