//! [`StatsHistory`]: the recent resource usage of running instances, and
//! of each node's instances together, kept by a server in memory so that
//! `zixiao instance stats NAME --history`, `zixiao node stats NODE`, the
//! dashboard and scripts can draw trends without an external database.
//!
//! It is a wrapper around the [`Api`] a server serves: it answers
//! [`Request::InstanceStatsHistory`] and [`Request::NodeStatsHistory`] from
//! its own series and passes every other request through. Its
//! [`StatsHistory::sample`] loop asks the wrapped API for the stats of
//! every running instance at a fixed interval (through the agents, as
//! `instance stats` does). Everything is bounded: at most
//! `keep` samples per instance (an hour at 10 s by default) and at most
//! `max_instances` instances (the ones seen longest stay; later ones are
//! not sampled until a place frees up); an instance that no longer runs
//! keeps its series until it is deleted. Each server replica keeps its own
//! series, starting empty when it starts.
//!
//! A node's series is what its sampled instances used together, each round
//! ([`NodeUsageSample`]): the usage the node's work adds. Beside it, each
//! sample carries what the host uses as a whole (its system processes,
//! the agent, everything) and its capacity, when known: an agent sends its
//! host's reading with every heartbeat ([`HostReports::record`], kept in
//! memory, never in the store), and the server reads its own local node's
//! host itself each round ([`StatsHistory::sample_local_host`], the
//! embedded deployment). A round uses the newest reading that arrived
//! since the previous round: a node whose agent sent none (an older agent,
//! or heartbeats to another replica) has unknown host figures, not zeros.
//! At most `max_nodes` nodes have a series, `keep` samples each; a node
//! gets a sample every round, with nothing running on it too, so its chart
//! has no gaps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
use crate::host_usage::{HostSampler, HostUsage};
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

/// One sample of what a node's instances use together, and of what its
/// host uses as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeUsageSample {
    /// When the round that took it ended.
    pub at: DateTime<Utc>,
    /// How many of the node's instances were sampled (running, within the
    /// history's bounds): the others are not in the figures.
    pub instances: u32,
    /// The CPU they used since the previous round, in thousandths of a
    /// core (1000 is one core busy). An instance's first sample, or one
    /// after a restart reset its counter, adds nothing.
    pub cpu_millicores: u64,
    /// The memory they use, in bytes.
    pub memory_bytes: u64,
    /// The CPU the whole host used, in thousandths of a core, over the
    /// reading's interval (the agent's heartbeat, or the server's round
    /// for its local node); `None`: unknown (no reading this round, or a
    /// first reading).
    #[serde(default)]
    pub host_cpu_millicores: Option<u64>,
    /// The host's online CPUs, in thousandths of a core; `None`: unknown.
    #[serde(default)]
    pub host_cpu_capacity_millicores: Option<u64>,
    /// The memory the whole host uses (total less available), in bytes;
    /// `None`: unknown.
    #[serde(default)]
    pub host_memory_bytes: Option<u64>,
    /// The host's memory, in bytes; `None`: unknown.
    #[serde(default)]
    pub host_memory_capacity_bytes: Option<u64>,
    /// The host's one-minute load average; `None`: unknown.
    #[serde(default)]
    pub host_load1: Option<f64>,
}

impl NodeUsageSample {
    /// A sample at `at` of a node with nothing sampled on it.
    fn idle(at: DateTime<Utc>) -> Self {
        NodeUsageSample {
            at,
            instances: 0,
            cpu_millicores: 0,
            memory_bytes: 0,
            host_cpu_millicores: None,
            host_cpu_capacity_millicores: None,
            host_memory_bytes: None,
            host_memory_capacity_bytes: None,
            host_load1: None,
        }
    }

    /// The same sample with the host's figures from `host`.
    fn with_host(mut self, host: &HostUsage) -> Self {
        self.host_cpu_millicores = host.cpu_millicores_used;
        self.host_cpu_capacity_millicores = Some(host.cpu_millicores_total);
        self.host_memory_bytes = Some(host.memory_used_bytes);
        self.host_memory_capacity_bytes = Some(host.memory_total_bytes);
        self.host_load1 = Some(host.load1);
        self
    }
}

/// Per instance id, its samples, oldest first.
type Series = BTreeMap<String, VecDeque<StatsSample>>;

/// Per node id, its samples, oldest first.
type NodeSeries = BTreeMap<String, VecDeque<NodeUsageSample>>;

/// Both kinds of series, behind one lock so a round updates them together,
/// and the host readings the next round takes.
#[derive(Debug, Default)]
struct Kept {
    instances: Series,
    nodes: NodeSeries,
    /// Per node id, the newest host reading since the previous round.
    hosts: BTreeMap<String, HostUsage>,
    /// The node this server runs on, whose host it reads itself.
    local: Option<(String, HostSampler)>,
}

/// Where a server puts the host readings its agents send with their
/// heartbeats, for the next round of the [`StatsHistory`] it came from.
/// Only the newest reading per node is kept, in memory.
#[derive(Debug, Clone)]
pub struct HostReports {
    series: Arc<Mutex<Kept>>,
}

impl HostReports {
    /// Keeps `usage` as node `node`'s newest host reading (called on each
    /// heartbeat the server answered; replaces the previous one). A node
    /// that is not registered at the next round is forgotten then.
    pub fn record(&self, node: &str, usage: HostUsage) {
        lock(&self.series).hosts.insert(node.to_owned(), usage);
    }
}

/// The newest [`NodeUsageSample`] of every node with a series: what a
/// `/metrics` scrape reports per node, read from the series a
/// [`StatsHistory`] keeps rather than by asking for whole histories.
#[derive(Debug, Clone)]
pub struct LatestNodeUsage {
    series: Arc<Mutex<Kept>>,
}

impl LatestNodeUsage {
    /// Each node's newest sample, by node id; a node not sampled yet is
    /// absent.
    pub fn per_node(&self) -> BTreeMap<String, NodeUsageSample> {
        lock(&self.series)
            .nodes
            .iter()
            .filter_map(|(node, samples)| Some((node.clone(), samples.back()?.clone())))
            .collect()
    }
}

fn lock(series: &Mutex<Kept>) -> std::sync::MutexGuard<'_, Kept> {
    // A panic while holding it left whole series behind: still usable.
    series.lock().unwrap_or_else(|e| e.into_inner())
}

/// Appends `sample` to `samples`, dropping the oldest beyond `keep`.
fn push_bounded<T>(samples: &mut VecDeque<T>, keep: usize, sample: T) {
    if samples.len() >= keep {
        samples.pop_front();
    }
    samples.push_back(sample);
}

/// The CPU `instance` used between its samples `before` and `now`, in
/// thousandths of a core; nothing for a counter that went back (a restart).
fn millicores(before: &StatsSample, now: &StatsSample) -> u64 {
    let elapsed = (now.at - before.at).num_nanoseconds().unwrap_or(0);
    let used = now.stats.cpu_time_ns.checked_sub(before.stats.cpu_time_ns);
    match (u64::try_from(elapsed), used) {
        (Ok(elapsed @ 1..), Some(used)) => {
            u64::try_from(u128::from(used) * 1000 / u128::from(elapsed)).unwrap_or(u64::MAX)
        }
        _ => 0,
    }
}

/// The wrapper (see the module documentation). Its clones share the
/// series: one samples while the others answer.
#[derive(Debug)]
pub struct StatsHistory<A> {
    inner: Arc<A>,
    series: Arc<Mutex<Kept>>,
    keep: usize,
    max_instances: usize,
    max_nodes: usize,
}

impl<A> Clone for StatsHistory<A> {
    fn clone(&self) -> Self {
        StatsHistory {
            inner: self.inner.clone(),
            series: self.series.clone(),
            keep: self.keep,
            max_instances: self.max_instances,
            max_nodes: self.max_nodes,
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
    /// The default number of nodes with a series.
    pub const MAX_NODES: usize = 1000;
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
            max_nodes: Self::MAX_NODES,
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
            max_nodes: self.max_nodes,
        }
    }

    /// Where heartbeats put their host readings for these series.
    pub fn host_reports(&self) -> HostReports {
        HostReports {
            series: self.series.clone(),
        }
    }

    /// Where a metrics scrape reads each node's newest sample.
    pub fn latest_node_usage(&self) -> LatestNodeUsage {
        LatestNodeUsage {
            series: self.series.clone(),
        }
    }

    /// Reads this machine's host usage each round as node `node`'s: the
    /// node this server runs in (the embedded deployment's), which has no
    /// agent heartbeating. Replaces an earlier call's node.
    pub fn sample_local_host(&self, node: &str) {
        self.lock().local = Some((node.to_owned(), HostSampler::new()));
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

    /// One round: a sample of every running instance, up to the bounds,
    /// and one of every node's instances together.
    pub async fn sample_once(&self) -> Result<()> {
        let all = list_all_instances(self.inner.as_ref(), InstanceFilter::default()).await?;
        let nodes = match self.inner.call(Request::ListNodes).await? {
            Response::Nodes(nodes) => nodes,
            other => return Err(unexpected("node.list", &other)),
        };
        let running: Vec<String> = all
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .map(|i| i.id.to_string())
            .collect();
        let chosen = {
            let mut kept = self.lock();
            // Deleted instances go; those still there keep their places.
            let stored: BTreeSet<&str> = all.iter().map(|i| i.id.as_str()).collect();
            kept.instances.retain(|id, _| stored.contains(id.as_str()));
            let mut chosen: Vec<String> = running
                .iter()
                .filter(|id| kept.instances.contains_key(*id))
                .cloned()
                .collect();
            let room = self.max_instances.saturating_sub(kept.instances.len());
            chosen.extend(
                running
                    .iter()
                    .filter(|id| !kept.instances.contains_key(*id))
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

        let at = Utc::now();
        let node_of: BTreeMap<&str, &str> = all
            .iter()
            .filter_map(|i| Some((i.id.as_str(), i.node.as_ref()?.as_str())))
            .collect();
        let mut kept = self.lock();
        if let Some((node, sampler)) = &mut kept.local {
            match sampler.read() {
                Ok(reading) => {
                    let node = node.clone();
                    kept.hosts.insert(node, reading);
                }
                Err(e) => tracing::debug!(error = %e, "stats history: the host was not read"),
            }
        }
        let mut usage: BTreeMap<String, NodeUsageSample> = BTreeMap::new();
        for (id, sample) in samples {
            let samples = kept.instances.entry(id.clone()).or_default();
            let cpu = samples
                .back()
                .map_or(0, |before| millicores(before, &sample));
            let memory = sample.stats.memory_bytes;
            push_bounded(samples, self.keep, sample);
            if let Some(node) = node_of.get(id.as_str()) {
                let node = usage
                    .entry((*node).to_owned())
                    .or_insert_with(|| NodeUsageSample::idle(at));
                node.instances += 1;
                node.cpu_millicores = node.cpu_millicores.saturating_add(cpu);
                node.memory_bytes = node.memory_bytes.saturating_add(memory);
            }
        }
        // Deleted nodes go; the rest keep their places, and new ones take
        // what room is left.
        let registered: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        kept.nodes.retain(|id, _| registered.contains(id.as_str()));
        let room = self.max_nodes.saturating_sub(kept.nodes.len());
        let newcomers: Vec<String> = nodes
            .iter()
            .filter(|n| !kept.nodes.contains_key(n.id.as_str()))
            .take(room)
            .map(|n| n.id.to_string())
            .collect();
        for name in newcomers {
            kept.nodes.insert(name, VecDeque::new());
        }
        let keep = self.keep;
        // Each reading is used by one round: the next has only newer ones.
        let mut hosts = std::mem::take(&mut kept.hosts);
        for (id, samples) in &mut kept.nodes {
            let mut sample = usage
                .remove(id)
                .unwrap_or_else(|| NodeUsageSample::idle(at));
            if let Some(host) = hosts.remove(id) {
                sample = sample.with_host(&host);
            }
            push_bounded(samples, keep, sample);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        lock(&self.series)
    }
}

#[async_trait]
impl<A: Api + 'static> Api for StatsHistory<A> {
    /// [`Request::InstanceStatsHistory`] and [`Request::NodeStatsHistory`]
    /// from the series (an instance or node not sampled yet has none: an
    /// empty list); everything else as `inner` answers. Errors: `inner`'s
    /// (`NotFound` for an unknown instance or node).
    async fn call(&self, request: Request) -> Result<Response> {
        match request {
            Request::InstanceStatsHistory { instance } => {
                let id = match self.inner.call(Request::GetInstance { instance }).await? {
                    Response::Instance(found) => found.id.to_string(),
                    other => return Err(unexpected("instance.get", &other)),
                };
                let samples = self.lock().instances.get(&id).cloned().unwrap_or_default();
                Ok(Response::StatsHistory(samples.into()))
            }
            Request::NodeStatsHistory { node } => {
                let id = match self.inner.call(Request::GetNode { node }).await? {
                    Response::Node(found) => found.id.to_string(),
                    other => return Err(unexpected("node.get", &other)),
                };
                let samples = self.lock().nodes.get(&id).cloned().unwrap_or_default();
                Ok(Response::NodeStatsHistory(samples.into()))
            }
            request => self.inner.call(request).await,
        }
    }
}

/// The error for an answer of the wrong kind to `operation`.
fn unexpected(operation: &str, answer: &Response) -> Error {
    Error::Internal(format!("{operation} answered {}", answer.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, cpu_time_ns: u64) -> StatsSample {
        StatsSample {
            at: DateTime::from_timestamp_millis(at_ms).expect("a time"),
            stats: InstanceStats {
                cpu_time_ns,
                ..InstanceStats::default()
            },
        }
    }

    #[test]
    fn millicores_are_cpu_time_over_wall_time() {
        // Half a core for two seconds.
        assert_eq!(
            millicores(&sample(0, 0), &sample(2_000, 1_000_000_000)),
            500
        );
        // Two cores busy.
        assert_eq!(
            millicores(&sample(0, 0), &sample(1_000, 2_000_000_000)),
            2000
        );
        // A restart reset the counter: nothing, not a wrap-around.
        assert_eq!(millicores(&sample(0, 5_000), &sample(1_000, 10)), 0);
        // Two samples at the same instant: nothing, not a division by zero.
        assert_eq!(millicores(&sample(0, 0), &sample(0, 10)), 0);
    }

    #[test]
    fn a_series_keeps_the_newest_samples() {
        let mut samples = VecDeque::new();
        for k in 0..5 {
            push_bounded(&mut samples, 3, k);
        }
        assert_eq!(samples, [2, 3, 4]);
    }
}
