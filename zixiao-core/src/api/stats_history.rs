//! [`StatsHistory`]: the recent resource usage of running instances, kept
//! by a server in memory so that `zixiao instance stats NAME --history`,
//! the dashboard and scripts can draw trends without an external database.
//!
//! It is a wrapper around the [`Api`] a server serves: it answers
//! [`Request::InstanceStatsHistory`] from its own series and passes every
//! other request through. Its [`StatsHistory::sample`] loop asks the wrapped
//! API for the stats of every running instance at a fixed interval (through
//! the agents, as `instance stats` does). Everything is bounded: at most
//! `keep` samples per instance (an hour at 10 s by default) and at most
//! `max_instances` instances (the ones seen longest stay; later ones are
//! not sampled until a place frees up); an instance that no longer runs
//! keeps its series until it is deleted. Each server replica keeps its own
//! series, starting empty when it starts.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{list_all_instances, Api, Request, Response};
use crate::controller::InstanceFilter;
use crate::driver::InstanceStats;
use crate::model::InstanceStatus;
use crate::{Error, Result};

/// One sample of an instance's resource usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSample {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// What the runtime reported then (counters are totals since start:
    /// a rate is the difference of two samples over their interval).
    #[serde(flatten)]
    pub stats: InstanceStats,
}

/// Per instance id, its samples, oldest first.
type Series = BTreeMap<String, VecDeque<StatsSample>>;

/// The wrapper (see the module documentation). Its clones share the
/// series: one samples while the others answer.
#[derive(Debug)]
pub struct StatsHistory<A> {
    inner: Arc<A>,
    series: Arc<Mutex<Series>>,
    keep: usize,
    max_instances: usize,
}

impl<A> Clone for StatsHistory<A> {
    fn clone(&self) -> Self {
        StatsHistory {
            inner: self.inner.clone(),
            series: self.series.clone(),
            keep: self.keep,
            max_instances: self.max_instances,
        }
    }
}

impl<A: Api + 'static> StatsHistory<A> {
    /// The default sampling interval.
    pub const INTERVAL: Duration = Duration::from_secs(10);
    /// The default number of samples kept per instance (an hour at 10 s).
    pub const KEEP: usize = 360;
    /// The default number of instances sampled.
    pub const MAX_INSTANCES: usize = 500;
    /// How many instances are asked for their stats at once.
    const CONCURRENCY: usize = 16;

    /// Wraps `inner`, keeping [`Self::KEEP`] samples of at most
    /// [`Self::MAX_INSTANCES`] instances.
    pub fn new(inner: A) -> Self {
        StatsHistory {
            inner: Arc::new(inner),
            series: Arc::default(),
            keep: Self::KEEP,
            max_instances: Self::MAX_INSTANCES,
        }
    }

    /// The same wrapper keeping `keep` samples (at least 2) of at most
    /// `max_instances` instances.
    pub fn with_bounds(mut self, keep: usize, max_instances: usize) -> Self {
        self.keep = keep.max(2);
        self.max_instances = max_instances;
        self
    }

    /// The same series, answered in front of `inner`: another API of the
    /// same deployment (the embedded daemon's socket beside its TCP
    /// listener). Only the original should sample.
    pub fn share_with<B>(&self, inner: B) -> StatsHistory<B> {
        StatsHistory {
            inner: Arc::new(inner),
            series: self.series.clone(),
            keep: self.keep,
            max_instances: self.max_instances,
        }
    }

    /// Samples every `interval` until `stop` completes (a server's
    /// shutdown). A round that fails (the store unreachable) is skipped; an
    /// instance whose stats cannot be read (its node down) gets no sample
    /// that round.
    pub async fn sample(self, interval: Duration, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let rounds = async {
            loop {
                ticks.tick().await;
                if let Err(e) = self.sample_once().await {
                    tracing::debug!("stats history: a round was skipped: {}", e.chain());
                }
            }
        };
        tokio::select! {
            () = rounds => {}
            () = stop => {}
        }
    }

    /// One round: a sample of every running instance, up to the bounds.
    pub async fn sample_once(&self) -> Result<()> {
        let all = list_all_instances(self.inner.as_ref(), InstanceFilter::default()).await?;
        let running: Vec<String> = all
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .map(|i| i.id.to_string())
            .collect();
        let chosen = {
            let mut series = self.lock();
            // Deleted instances go; those still there keep their places.
            series.retain(|id, _| all.iter().any(|i| i.id.as_str() == id));
            let mut chosen: Vec<String> = running
                .iter()
                .filter(|id| series.contains_key(*id))
                .cloned()
                .collect();
            let room = self.max_instances.saturating_sub(series.len());
            chosen.extend(
                running
                    .iter()
                    .filter(|id| !series.contains_key(*id))
                    .take(room)
                    .cloned(),
            );
            chosen
        };
        let inner = &self.inner;
        let samples: Vec<(String, StatsSample)> = futures::stream::iter(chosen)
            .map(|id| async move {
                let request = Request::InstanceStats {
                    instance: id.clone(),
                };
                match inner.call(request).await {
                    Ok(Response::Stats(stats)) => Some((
                        id,
                        StatsSample {
                            at: Utc::now(),
                            stats,
                        },
                    )),
                    _ => None,
                }
            })
            .buffer_unordered(Self::CONCURRENCY)
            .filter_map(|sample| async move { sample })
            .collect()
            .await;
        let mut series = self.lock();
        for (id, sample) in samples {
            let samples = series.entry(id).or_default();
            if samples.len() == self.keep {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        // A panic while holding it left whole series behind: still usable.
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl<A: Api + 'static> Api for StatsHistory<A> {
    /// [`Request::InstanceStatsHistory`] from the series (an instance not
    /// sampled yet has none: an empty list); everything else as `inner`
    /// answers. Errors: `inner`'s (`NotFound` for an unknown instance).
    async fn call(&self, request: Request) -> Result<Response> {
        let Request::InstanceStatsHistory { instance } = request else {
            return self.inner.call(request).await;
        };
        let id = match self.inner.call(Request::GetInstance { instance }).await? {
            Response::Instance(found) => found.id.to_string(),
            other => {
                return Err(Error::Internal(format!(
                    "instance.get answered {}",
                    other.kind()
                )))
            }
        };
        let samples = self.lock().get(&id).cloned().unwrap_or_default();
        Ok(Response::StatsHistory(samples.into()))
    }
}
