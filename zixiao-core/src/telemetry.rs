//! What a controller tells a metrics backend about its own work:
//! placements and why they failed, converges, failovers and store commits.
//!
//! zixiao-core knows nothing of Prometheus. A [`Telemetry`] receives
//! events as they happen; zixiao-metrics' `Metrics` turns them into
//! counters and histograms, and anything else (a test, another backend)
//! may implement it too. A controller starts with [`NoTelemetry`] and a
//! server attaches its metrics once it has them
//! ([`crate::Controller::set_telemetry`]): the controller is often built
//! before the metrics listener (the embedded deployment opens first).
//!
//! Every method has an empty default, so a backend implements the events
//! it wants, and each call is cheap: the hot path (a burst of creates)
//! pays one read lock and a virtual call per event.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::scheduler::Rejection;
use crate::store::KeyValue;
use crate::store::{LeaseId, Listing, Revision, Staged, Store, StoreError, Txn, WatchStream};

/// How one placement ended.
#[derive(Debug, Clone, Copy)]
pub enum PlacementOutcome<'a> {
    /// The scheduler chose a node.
    Placed,
    /// No node fits; the scheduler's filters said why (their `filter` names
    /// are a small fixed set, fit for labels).
    Unschedulable(&'a [Rejection]),
}

/// The receiver of a controller's events (see the module documentation).
pub trait Telemetry: Send + Sync + fmt::Debug {
    /// The scheduler answered for one instance after `elapsed`.
    fn placement(&self, _outcome: PlacementOutcome<'_>, _elapsed: Duration) {}

    /// One converge of an instance ended after `elapsed`: `ok` when it
    /// reached what the instance's spec asks or waits for it, not when it
    /// failed (a runtime error, a store error).
    fn converge(&self, _ok: bool, _elapsed: Duration) {}

    /// A lost node's instances were released (moved, failed or deleted)
    /// after `elapsed`; `instances` is how many.
    fn failover(&self, _instances: usize, _elapsed: Duration) {}

    /// A store commit ended after `elapsed`; `ok` when it was applied.
    fn store_commit(&self, _ok: bool, _elapsed: Duration) {}
}

/// Telemetry that records nothing: a controller's until one is attached.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTelemetry;

impl Telemetry for NoTelemetry {}

/// Where a controller reads its current [`Telemetry`]: shared by the
/// controller and the store wrapper it times commits with.
#[derive(Debug, Clone)]
pub(crate) struct TelemetrySlot(Arc<RwLock<Arc<dyn Telemetry>>>);

impl Default for TelemetrySlot {
    fn default() -> Self {
        TelemetrySlot(Arc::new(RwLock::new(Arc::new(NoTelemetry))))
    }
}

impl TelemetrySlot {
    /// The telemetry attached now.
    pub(crate) fn get(&self) -> Arc<dyn Telemetry> {
        // A panic while replacing it left either one: both are usable.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Attaches `telemetry` from now on.
    pub(crate) fn set(&self, telemetry: Arc<dyn Telemetry>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = telemetry;
    }
}

/// A [`Store`] whose commits are timed into a [`TelemetrySlot`]: the
/// controller's own store, so every write it makes (placements, converges,
/// batches) is measured at one place rather than at each call site.
#[derive(Debug)]
pub(crate) struct TimedStore {
    inner: Arc<dyn Store>,
    telemetry: TelemetrySlot,
}

impl TimedStore {
    pub(crate) fn new(inner: Arc<dyn Store>, telemetry: TelemetrySlot) -> Self {
        TimedStore { inner, telemetry }
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let result = self.inner.commit(txn).await;
        self.telemetry
            .get()
            .store_commit(result.is_ok(), started.elapsed());
        result
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, after).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync().await
    }

    async fn stage(&self, txn: Txn) -> Result<Staged, StoreError> {
        self.inner.stage(txn).await
    }
}
