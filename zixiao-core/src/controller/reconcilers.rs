//! [`Reconcilers`]: the background convergence of a controller, for a
//! server's leader (and `zixiao server --embedded`): N workers taking
//! instances from the controller's [`WorkQueue`], under a global rate
//! limit, fed by the cache's changes instead of a store watch of their own.
//!
//! - An instance whose change leaves something to do is queued; one that
//!   waits for a restart back-off is queued for when it ends.
//! - A converge that fails is queued again after its back-off (doubling
//!   per failure); one that succeeds forgets its failures.
//! - When nodes change (one comes back, one frees capacity), the instances
//!   waiting for room are queued, at most once per [`ReconcilerOptions::room_check`].
//! - Every [`ReconcilerOptions::resync`] every instance is queued, so a
//!   workload that exited is observed and its restart policy applied.
//! - Every [`ReconcilerOptions::snapshot_tick`] the snapshot schedules that
//!   are due run (see `snapshot_schedules`).
//! - The unfinished operations are followed (see `operations`): at start,
//!   those a stopped server left are picked up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::cache::Change;
use super::queue::RateLimit;
use super::reconcile::{plan, Step};
use super::{Controller, WorkQueue};
use crate::error::ErrorKind;
use crate::model::{ConditionType, Instance};

/// How a controller's background convergence runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerOptions {
    /// Converges running at once.
    pub workers: usize,
    /// Converges started per second at most, over all workers (0: no limit).
    pub per_second: u32,
    /// How many converges may start at once after a quiet spell.
    pub burst: u32,
    /// How often every instance is queued (to observe exits).
    pub resync: Duration,
    /// How often, at most, node changes queue the instances waiting for room.
    pub room_check: Duration,
    /// How often due snapshot schedules are looked for: how late, at most,
    /// a scheduled snapshot is (tests shorten it, with a manual clock,
    /// rather than the schedules' minimum interval).
    pub snapshot_tick: Duration,
    /// How often the unfinished operations are listed and followed, and
    /// the finished ones pruned (changes of their instances are followed
    /// at once).
    pub operation_tick: Duration,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        ReconcilerOptions {
            workers: 32,
            per_second: 0,
            burst: 100,
            resync: Duration::from_secs(2),
            room_check: Duration::from_millis(250),
            snapshot_tick: Duration::from_secs(10),
            operation_tick: Duration::from_secs(2),
        }
    }
}

/// Running background convergence; stops (abandoning the converges in
/// flight) when stopped or dropped. Abandoning is safe: every step is a
/// compare-and-swap or an idempotent runtime call, as when a server dies.
#[derive(Debug)]
pub struct Reconcilers {
    queue: WorkQueue,
    tasks: Vec<JoinHandle<()>>,
}

impl Reconcilers {
    /// The work queue the workers take from.
    pub fn queue(&self) -> &WorkQueue {
        &self.queue
    }

    /// Abandons the converge of `id` in flight, if any, and queues it
    /// again. For the instances of a node just failed over: a call in
    /// flight to that node may hang until its connection is found dead,
    /// while the instance should already be placed elsewhere.
    pub fn restart(&self, id: &str) {
        self.queue.cancel(id);
        self.queue.add(id);
    }

    /// Stops every worker at once.
    pub fn stop(mut self) {
        self.abort();
    }

    fn abort(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Reconcilers {
    fn drop(&mut self) {
        self.abort();
    }
}

impl Controller {
    /// Starts converging every instance in the background: `options.workers`
    /// workers on the controller's work queue, fed by its cache. Must be
    /// called inside a tokio runtime. Runs until the returned handle is
    /// stopped or dropped.
    pub fn run_reconcilers(&self, options: ReconcilerOptions) -> Reconcilers {
        let queue = self.inner.queue.clone();
        let limit = Arc::new(RateLimit::new(options.per_second, options.burst));
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(self.clone().feed(options.clone())));
        tasks.push(tokio::spawn(
            self.clone().run_snapshot_schedules(options.snapshot_tick),
        ));
        tasks.push(tokio::spawn(
            self.clone().follow_operations(options.operation_tick),
        ));
        for _ in 0..options.workers.max(1) {
            tasks.push(tokio::spawn(self.clone().work(limit.clone())));
        }
        Reconcilers { queue, tasks }
    }

    /// Queues `instance` if something is to be done for it now or later.
    fn consider(&self, instance: &Instance) {
        let opts = self.options();
        let now = self.now();
        match plan(
            instance,
            now,
            opts.restart_backoff,
            opts.max_restart_backoff,
        ) {
            Step::Done => {}
            Step::WaitUntil(at) => {
                let delay = (at - now).to_std().unwrap_or_default();
                self.inner.queue.add_after(&instance.id, delay);
            }
            // Waiting for room: the next node change queues it.
            Step::Schedule | Step::ReserveCompute if waits_for_room(instance) => {}
            _ => self.inner.queue.add(&instance.id),
        }
    }

    /// Queues what the cache's changes call for, and every instance at each resync.
    async fn feed(self, options: ReconcilerOptions) {
        let mut changes = self.inner.cache.subscribe();
        if self.inner.cache.ready().await.is_err() {
            // Listed again when the store answers: a full look then.
        }
        let mut full = true;
        let mut room = false;
        let mut resync = tokio::time::interval(options.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut room_check = tokio::time::interval(options.room_check);
        room_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if full {
                full = false;
                let instances: Vec<Arc<Instance>> =
                    self.inner.cache.read().instances().cloned().collect();
                for instance in &instances {
                    self.consider(instance);
                }
            }
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(Change::Instance(_, Some(instance))) => self.consider(&instance),
                    Ok(Change::Instance(_, None) | Change::Raw) => {}
                    // A node or an aggregate that changed may take
                    // instances no node could take before.
                    Ok(Change::Node | Change::Aggregate) => room = true,
                    Ok(Change::Relisted) | Err(RecvError::Lagged(_)) => full = true,
                    Err(RecvError::Closed) => return,
                },
                _ = resync.tick() => {
                    let ids: Vec<String> =
                        self.inner.cache.read().instances().map(|i| i.id.clone()).collect();
                    for id in ids {
                        self.inner.queue.add(&id);
                    }
                }
                _ = room_check.tick(), if room => {
                    room = false;
                    for id in self.waiting_for_room() {
                        self.inner.queue.add(&id);
                    }
                }
            }
        }
    }

    /// Runs the due snapshot schedules every `tick`.
    async fn run_snapshot_schedules(self, tick: Duration) {
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.run_due_snapshot_schedules().await;
        }
    }

    /// One worker: takes instances from the queue and converges them.
    async fn work(self, limit: Arc<RateLimit>) {
        let queue = self.inner.queue.clone();
        while let Some(lease) = queue.next().await {
            limit.acquire().await;
            let id = lease.key().to_owned();
            let outcome = tokio::select! {
                outcome = self.converge_taken(&id) => Some(outcome),
                _ = lease.cancelled() => None,
            };
            match outcome {
                // Abandoned: it was queued again by whoever cancelled it.
                None => {}
                Some(Ok(Some(after))) => {
                    queue.forget(&id);
                    let opts = self.options();
                    let now = self.now();
                    if let Step::WaitUntil(at) =
                        plan(&after, now, opts.restart_backoff, opts.max_restart_backoff)
                    {
                        queue.add_after(&id, (at - now).to_std().unwrap_or_default());
                    }
                }
                Some(Ok(None)) => queue.forget(&id),
                Some(Err(e)) if e.kind() == ErrorKind::NotFound => queue.forget(&id),
                Some(Err(e)) => {
                    tracing::warn!(instance = %id, "converging: {}", e.chain());
                    queue.add_rate_limited(&id);
                }
            }
            drop(lease);
        }
    }
}

impl Controller {
    /// The ids of the cached instances that wait for room ([`waits_for_room`]).
    pub(super) fn waiting_for_room(&self) -> Vec<String> {
        self.inner
            .cache
            .read()
            .instances()
            .filter(|i| waits_for_room(i))
            .map(|i| i.id.clone())
            .collect()
    }
}

/// Whether `instance` waits for room: no node had any for it, or its own
/// node has none to start it again (the reason is recorded). One made
/// pending by a failover has not been tried yet.
pub(super) fn waits_for_room(instance: &Instance) -> bool {
    instance
        .condition(ConditionType::Scheduled)
        .is_some_and(|c| {
            !c.status && matches!(c.reason.as_str(), "Unschedulable" | "WaitingForCapacity")
        })
}
