//! [`WorkQueue`]: the work queue of convergence, keyed by instance id, in
//! the shape of client-go's workqueue.
//!
//! - **No duplicates**: a key waits in the queue at most once; adding it
//!   again while it waits changes nothing.
//! - **One at a time per key**: a key taken by a worker ([`WorkQueue::next`])
//!   or claimed by a caller ([`WorkQueue::claim`]) is not handed out again
//!   until its [`Lease`] is dropped; adding it meanwhile marks it to run
//!   once more afterwards, so no change is lost and nothing runs twice at once.
//! - **Per-key back-off**: [`WorkQueue::add_rate_limited`] delays a key
//!   that keeps failing (`base * 2^failures`, capped) until
//!   [`WorkQueue::forget`] resets it.
//! - **Delays**: [`WorkQueue::add_after`] (a restart back-off) keeps the
//!   earliest of the times asked for.
//!
//! The global rate limit of the workers is [`RateLimit`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Tunables of a [`WorkQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// The first delay of a failing key.
    pub base_delay: Duration,
    /// The longest delay of a failing key.
    pub max_delay: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// A key being worked on.
#[derive(Debug)]
struct Active {
    /// When to run it again once its lease is dropped (added meanwhile).
    again: Option<Instant>,
    /// Wakes a worker that should abandon it.
    cancel: Arc<Notify>,
    /// Wakes callers waiting to claim it.
    freed: Arc<Notify>,
    cancelled: bool,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<String>,
    waiting: HashSet<String>,
    delayed: BTreeMap<(Instant, u64), String>,
    due: HashMap<String, (Instant, u64)>,
    seq: u64,
    active: HashMap<String, Active>,
    failures: HashMap<String, u32>,
    closed: bool,
}

impl State {
    /// Queues `key` to run at `at` (now or later), unless it waits already
    /// for an earlier time.
    fn enqueue(&mut self, key: &str, at: Instant) -> bool {
        if let Some(active) = self.active.get_mut(key) {
            active.again = Some(active.again.map_or(at, |a| a.min(at)));
            return false;
        }
        if self.waiting.contains(key) {
            return false;
        }
        if let Some(&(due, seq)) = self.due.get(key) {
            if due <= at {
                return false;
            }
            self.delayed.remove(&(due, seq));
            self.due.remove(key);
        }
        if at <= Instant::now() {
            self.waiting.insert(key.to_owned());
            self.ready.push_back(key.to_owned());
        } else {
            self.seq += 1;
            self.delayed.insert((at, self.seq), key.to_owned());
            self.due.insert(key.to_owned(), (at, self.seq));
        }
        true
    }

    /// Moves delayed keys that are due to the ready queue; returns when the
    /// next one is due.
    fn promote(&mut self) -> Option<Instant> {
        let now = Instant::now();
        while let Some((&(at, seq), _)) = self.delayed.iter().next() {
            if at > now {
                return Some(at);
            }
            if let Some(key) = self.delayed.remove(&(at, seq)) {
                self.due.remove(&key);
                if self.waiting.insert(key.clone()) {
                    self.ready.push_back(key);
                }
            }
        }
        None
    }

    fn take(&mut self, key: &str) -> Active {
        if self.waiting.remove(key) {
            self.ready.retain(|k| k != key);
        }
        if let Some(at) = self.due.remove(key) {
            self.delayed.remove(&at);
        }
        Active {
            again: None,
            cancel: Arc::new(Notify::new()),
            freed: Arc::new(Notify::new()),
            cancelled: false,
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Notify,
    options: QueueOptions,
}

/// The convergence work queue; see the module documentation. Cheap to
/// clone; clones share the queue.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use zixiao_core::controller::WorkQueue;
///
/// let queue = WorkQueue::default();
/// queue.add("web");
/// queue.add("web"); // waits once
/// let lease = queue.next().await.expect("open");
/// assert_eq!(lease.key(), "web");
/// queue.add("web"); // taken: runs once more after this lease
/// assert_eq!(queue.len(), 0);
/// drop(lease);
/// assert_eq!(queue.len(), 1);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WorkQueue {
    shared: Arc<Shared>,
}

impl Default for WorkQueue {
    fn default() -> Self {
        WorkQueue::new(QueueOptions::default())
    }
}

impl WorkQueue {
    /// An empty queue.
    pub fn new(options: QueueOptions) -> Self {
        WorkQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                options,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` now. Idempotent while it waits; a key being worked on
    /// runs once more afterwards.
    pub fn add(&self, key: &str) {
        if self.lock().enqueue(key, Instant::now()) {
            self.shared.wake.notify_one();
        }
    }

    /// Queues `key` to run after `delay`, unless it is due earlier already.
    pub fn add_after(&self, key: &str, delay: Duration) {
        let at = Instant::now() + delay;
        if self.lock().enqueue(key, at) {
            // A worker sleeping until a later key must look again.
            self.shared.wake.notify_one();
        }
    }

    /// Queues `key` after its back-off, which doubles with each failure
    /// since the last [`WorkQueue::forget`].
    pub fn add_rate_limited(&self, key: &str) {
        let delay = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.to_owned()).or_insert(0);
            let delay = backoff(*failures, &self.shared.options);
            *failures = failures.saturating_add(1);
            delay
        };
        self.add_after(key, delay);
    }

    /// Forgets the failures of `key`: its next back-off starts again at the base.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// How many times `key` failed since it was last forgotten.
    pub fn failures(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Keys waiting and due now.
    pub fn len(&self) -> usize {
        let mut state = self.lock();
        state.promote();
        state.ready.len()
    }

    /// Whether no key is due now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys waiting, due now or later.
    pub fn queued(&self) -> usize {
        let state = self.lock();
        state.ready.len() + state.delayed.len()
    }

    /// Asks whoever works on `key` now to abandon it; it runs again
    /// afterwards. Nothing happens when nobody works on it.
    pub fn cancel(&self, key: &str) {
        let mut state = self.lock();
        if let Some(active) = state.active.get_mut(key) {
            active.cancelled = true;
            active.again = Some(Instant::now());
            active.cancel.notify_waiters();
        }
    }

    /// Stops handing out keys: [`WorkQueue::next`] returns `None` from now
    /// on (claims still work, for callers that converge themselves).
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.wake.notify_waiters();
    }

    /// The next due key, taken until its lease is dropped; `None` once the
    /// queue is closed. Waits while nothing is due.
    pub async fn next(&self) -> Option<Lease> {
        loop {
            let notified = self.shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_due = {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                let next_due = state.promote();
                if let Some(key) = state.ready.pop_front() {
                    state.waiting.remove(&key);
                    let active = state.take(&key);
                    let cancel = active.cancel.clone();
                    state.active.insert(key.clone(), active);
                    // More may be due: let another worker look.
                    if !state.ready.is_empty() {
                        self.shared.wake.notify_one();
                    }
                    return Some(Lease {
                        queue: self.clone(),
                        key,
                        cancel,
                    });
                }
                next_due
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Takes `key` for the caller, waiting while someone else has it; a
    /// queued run of it is taken along (the caller does that work now).
    pub async fn claim(&self, key: &str) -> Lease {
        loop {
            let freed = {
                let mut state = self.lock();
                match state.active.get(key) {
                    Some(active) => active.freed.clone(),
                    None => {
                        let active = state.take(key);
                        let cancel = active.cancel.clone();
                        state.active.insert(key.to_owned(), active);
                        return Lease {
                            queue: self.clone(),
                            key: key.to_owned(),
                            cancel,
                        };
                    }
                }
            };
            let notified = freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Freed between the look and the wait: look again.
            if !self.lock().active.contains_key(key) {
                continue;
            }
            notified.await;
        }
    }

    fn done(&self, key: &str) {
        let mut state = self.lock();
        let Some(active) = state.active.remove(key) else {
            return;
        };
        active.freed.notify_waiters();
        if let Some(at) = active.again {
            if state.enqueue(key, at) {
                self.shared.wake.notify_one();
            }
        }
    }
}

fn backoff(failures: u32, options: &QueueOptions) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    options
        .base_delay
        .saturating_mul(factor)
        .min(options.max_delay)
}

/// A key taken from a [`WorkQueue`]; dropping it gives the key back (and
/// queues it again if it was added meanwhile).
#[derive(Debug)]
pub struct Lease {
    queue: WorkQueue,
    key: String,
    cancel: Arc<Notify>,
}

impl Lease {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Resolves when someone asks for this key's work to be abandoned
    /// ([`WorkQueue::cancel`]).
    pub async fn cancelled(&self) {
        let notified = self.cancel.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let cancelled = self
            .queue
            .lock()
            .active
            .get(&self.key)
            .is_some_and(|a| a.cancelled);
        if !cancelled {
            notified.await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.queue.done(&self.key);
    }
}

/// A global rate limit: at most `per_second` permits a second, with bursts
/// of up to `burst` after a quiet spell (a token bucket).
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    burst: u32,
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// `per_second` permits a second (0: unlimited), bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let interval = if per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / per_second
        };
        RateLimit {
            interval,
            burst: burst.max(1),
            next: Mutex::new(None),
        }
    }

    /// Waits for a permit.
    pub async fn acquire(&self) {
        if self.interval.is_zero() {
            return;
        }
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let earliest = now
                .checked_sub(self.interval * (self.burst - 1))
                .unwrap_or(now);
            let at = next.map_or(now, |n| n.max(earliest));
            *next = Some(at + self.interval);
            at
        };
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn keys_wait_once_and_run_once_at_a_time() {
        let queue = WorkQueue::default();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(queue.len(), 2);
        let a = queue.next().await.expect("a");
        assert_eq!(a.key(), "a");
        queue.add("a");
        let b = queue.next().await.expect("b");
        assert_eq!(b.key(), "b");
        assert!(queue.is_empty(), "a is taken: it waits for its lease");
        drop(a);
        let again = queue.next().await.expect("a again");
        assert_eq!(again.key(), "a");
        drop(again);
        drop(b);
        assert!(queue.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn failing_keys_back_off_and_forgetting_resets() {
        let queue = WorkQueue::new(QueueOptions {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        });
        let began = Instant::now();
        for expected in [10, 20, 40, 40] {
            queue.add_rate_limited("a");
            let lease = queue.next().await.expect("a");
            assert_eq!(
                lease.key(),
                "a",
                "after {expected} ms: {:?}",
                began.elapsed()
            );
            drop(lease);
        }
        assert!(began.elapsed() >= Duration::from_millis(110));
        queue.forget("a");
        assert_eq!(queue.failures("a"), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_claim_waits_for_the_worker_and_takes_a_queued_run_along() {
        let queue = WorkQueue::default();
        queue.add("a");
        let worker = queue.next().await.expect("a");
        let claiming = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.claim("a").await })
        };
        tokio::task::yield_now().await;
        assert!(!claiming.is_finished(), "the worker holds it");
        queue.add("a");
        drop(worker);
        let claimed = claiming.await.expect("task");
        assert_eq!(claimed.key(), "a");
        drop(claimed);
        // The run added while the worker held it was the claimer's to do.
        assert_eq!(queue.queued(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_key_is_abandoned_and_runs_again() {
        let queue = WorkQueue::default();
        queue.add("a");
        let lease = queue.next().await.expect("a");
        queue.cancel("a");
        tokio::time::timeout(Duration::from_secs(1), lease.cancelled())
            .await
            .expect("cancelled");
        drop(lease);
        assert_eq!(queue.len(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_rate_limit_spaces_permits() {
        let limit = RateLimit::new(100, 1);
        let began = Instant::now();
        for _ in 0..11 {
            limit.acquire().await;
        }
        assert!(began.elapsed() >= Duration::from_millis(100));
    }
}
