//! [`PluginScheduler`]: the filter-then-score pipeline, its configuration,
//! and the one constructor that fixes the default plugin order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use zixiao_core::scheduler::Strategy;
use zixiao_core::{
    Instance, NodeId, Rejection, Resources, Scheduler, SchedulingContext, Unschedulable,
};

use crate::cluster::{ClusterState, Prunes};
use crate::filters;
use crate::plugin::{Filter, Request, Score, Shortfall, MAX_SCORE};
use crate::scores;
use crate::tiebreak::{SeededTieBreak, TieBreak};

/// Cluster-wide settings of a [`PluginScheduler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// The strategy for instances that do not choose one.
    pub default_strategy: Strategy,
    /// How many feasible nodes to collect per zone before scoring (Nomad's
    /// limit iterator) when every score that applies follows the capacity
    /// order ([`Score::follows_capacity_order`]): nodes are visited
    /// best-first for the strategy, so a short sample loses nothing
    /// measurable (see `DESIGN.md`). `usize::MAX` scores every feasible node.
    pub candidates_per_zone: usize,
    /// The same when some score that applies ranks nodes otherwise (carbon,
    /// soft affinity, user scores), which need a wider sample to matter.
    pub preference_candidates_per_zone: usize,
    /// Seed of the default tie-break rule.
    pub seed: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            default_strategy: Strategy::BinPack,
            candidates_per_zone: 4,
            preference_candidates_per_zone: 32,
            seed: 0,
        }
    }
}

/// A score plugin and its weight in the total.
#[derive(Debug, Clone)]
struct Weighted {
    plugin: Arc<dyn Score>,
    weight: u32,
}

/// A scheduler built from filter and score plugins, in the style of the
/// Kubernetes scheduler framework and Nomad's stack.
///
/// A placement visits candidate nodes best-first from the capacity index
/// of each zone, keeps those that pass every filter (at most
/// [`SchedulerConfig::candidates_per_zone`] per zone), scores them with the
/// plugins that apply, and takes the highest weighted total; ties go to
/// the [`TieBreak`] rule. When no node passes, the result explains how
/// many nodes each filter rejected and why.
///
/// ```
/// use zixiao_core::{Scheduler, SchedulingContext};
/// use zixiao_sched::PluginScheduler;
/// # let nodes = zixiao_sched::testing::nodes(3);
/// # let instance = zixiao_sched::testing::instance("web", 1, 512);
/// let scheduler = PluginScheduler::default();
/// let node = scheduler.place(&instance, &SchedulingContext::new(&nodes)).unwrap();
/// assert!(nodes.iter().any(|n| n.id == node));
/// ```
#[derive(Debug)]
pub struct PluginScheduler {
    filters: Vec<Arc<dyn Filter>>,
    scores: Vec<Weighted>,
    tie_break: Arc<dyn TieBreak>,
    config: SchedulerConfig,
    prunes: Prunes,
    /// The state of the last [`Scheduler::place`], synced to each new
    /// context instead of rebuilt (see [`ClusterState::sync`]).
    cache: Mutex<Option<ClusterState>>,
}

impl Clone for PluginScheduler {
    /// The same pipeline, with an empty cache.
    fn clone(&self) -> Self {
        PluginScheduler {
            filters: self.filters.clone(),
            scores: self.scores.clone(),
            tie_break: self.tie_break.clone(),
            config: self.config,
            prunes: self.prunes,
            cache: Mutex::new(None),
        }
    }
}

impl Default for PluginScheduler {
    fn default() -> Self {
        PluginScheduler::builder().build()
    }
}

/// Builds a [`PluginScheduler`]: the default pipeline plus your plugins.
#[derive(Debug, Clone)]
pub struct PluginSchedulerBuilder {
    filters: Vec<Arc<dyn Filter>>,
    scores: Vec<Weighted>,
    tie_break: Option<Arc<dyn TieBreak>>,
    config: SchedulerConfig,
}

impl PluginSchedulerBuilder {
    /// The default pipeline. The filter order decides which reason a node
    /// is counted under when several filters would reject it: the first.
    fn default_pipeline() -> Self {
        let filters: Vec<Arc<dyn Filter>> = vec![
            // A node that is not Ready is reported as such, whatever else is wrong.
            Arc::new(filters::NodeReady),
            // Then what the node can run at all.
            Arc::new(filters::RuntimeSupport),
            // A clone can only be made where its source's state is.
            Arc::new(filters::CloneSource),
            // Then where the user asked it to run: static constraints.
            Arc::new(filters::Region),
            Arc::new(filters::Zone),
            Arc::new(filters::NodeSelector),
            Arc::new(filters::Traits),
            Arc::new(filters::Aggregates),
            Arc::new(filters::CarbonCap),
            // Then the relations to other instances, which change as they are placed.
            Arc::new(filters::GroupAffinity),
            Arc::new(filters::HostPorts),
            // Last the resources, so "insufficient memory" counts only nodes
            // that would otherwise be acceptable: the ones worth freeing.
            Arc::new(filters::ResourcesFit),
        ];
        let scores = vec![
            // Exactly one of these two applies, by strategy.
            Weighted {
                plugin: Arc::new(scores::BinPack),
                weight: 1,
            },
            Weighted {
                plugin: Arc::new(scores::LeastAllocated),
                weight: 1,
            },
            // Keeps cpu and memory use in step on each node, under either
            // strategy, so neither is stranded (measured in `DESIGN.md`).
            Weighted {
                plugin: Arc::new(scores::Balanced),
                weight: 1,
            },
            // Asked-for preferences weigh more than the strategy. A zone one
            // instance behind its share gains 25 points, times 4: as much as
            // the widest bin-pack difference, so zone shares hold to within
            // one instance and the strategy picks the node within the zone.
            Weighted {
                plugin: Arc::new(scores::ZoneSpread),
                weight: 4,
            },
            // A soft group rule or a carbon policy wins unless the strategy's
            // difference is twice as large.
            Weighted {
                plugin: Arc::new(scores::SoftAffinity),
                weight: 2,
            },
            Weighted {
                plugin: Arc::new(scores::CarbonAware),
                weight: 2,
            },
            // A node holding the instance's images is worth as much as the
            // strategy's widest difference: it wins among nodes the
            // strategy rates alike, but does not pile every instance of
            // one image onto one node.
            Weighted {
                plugin: Arc::new(scores::ImageLocality),
                weight: 1,
            },
        ];
        PluginSchedulerBuilder {
            filters,
            scores,
            tie_break: None,
            config: SchedulerConfig::default(),
        }
    }

    /// Uses `config`.
    pub fn config(mut self, config: SchedulerConfig) -> Self {
        self.config = config;
        self
    }

    /// The strategy for instances that do not choose one.
    pub fn default_strategy(mut self, strategy: Strategy) -> Self {
        self.config.default_strategy = strategy;
        self
    }

    /// How many feasible nodes per zone to score, with capacity-ordered
    /// scores only and with other preferences (`usize::MAX`: all).
    pub fn candidates_per_zone(mut self, limit: usize, with_preferences: usize) -> Self {
        self.config.candidates_per_zone = limit.max(1);
        self.config.preference_candidates_per_zone = with_preferences.max(1);
        self
    }

    /// Seed of the default tie-break rule.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Adds `filter` after the built-in ones.
    pub fn filter(mut self, filter: impl Filter + 'static) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Removes the filters named `name` (to replace a built-in one).
    pub fn without_filter(mut self, name: &str) -> Self {
        self.filters.retain(|f| f.name() != name);
        self
    }

    /// Adds `score` with `weight` in the total.
    pub fn score(mut self, score: impl Score + 'static, weight: u32) -> Self {
        self.scores.push(Weighted {
            plugin: Arc::new(score),
            weight,
        });
        self
    }

    /// Sets the weight of the scores named `name` (0 turns them off).
    pub fn score_weight(mut self, name: &str, weight: u32) -> Self {
        for s in &mut self.scores {
            if s.plugin.name() == name {
                s.weight = weight;
            }
        }
        self
    }

    /// Breaks ties with `rule` instead of the seeded hash.
    pub fn tie_break(mut self, rule: impl TieBreak + 'static) -> Self {
        self.tie_break = Some(Arc::new(rule));
        self
    }

    /// The scheduler.
    pub fn build(self) -> PluginScheduler {
        let prunes = self
            .filters
            .iter()
            .fold(Prunes::default(), |acc, f| acc.union(f.prunes()));
        PluginScheduler {
            tie_break: self
                .tie_break
                .unwrap_or_else(|| Arc::new(SeededTieBreak::new(self.config.seed))),
            filters: self.filters,
            scores: self.scores.into_iter().filter(|s| s.weight > 0).collect(),
            config: self.config,
            prunes,
            cache: Mutex::new(None),
        }
    }
}

impl PluginScheduler {
    /// A builder starting from the default pipeline.
    pub fn builder() -> PluginSchedulerBuilder {
        PluginSchedulerBuilder::default_pipeline()
    }

    /// Its configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The names of its filters, in order.
    pub fn filter_names(&self) -> Vec<&'static str> {
        self.filters.iter().map(|f| f.name()).collect()
    }

    /// The names and weights of its scores, in order.
    pub fn score_names(&self) -> Vec<(&'static str, u32)> {
        self.scores
            .iter()
            .map(|s| (s.plugin.name(), s.weight))
            .collect()
    }

    /// An indexed copy of the cluster in `cx`, for [`PluginScheduler::place_in`].
    pub fn state(&self, cx: &SchedulingContext<'_>) -> ClusterState {
        ClusterState::new(cx, self.prunes)
    }

    fn request<'a>(&self, instance: &'a Instance) -> Request<'a> {
        Request {
            instance,
            resources: instance.spec.resources(),
            strategy: instance
                .spec
                .placement
                .strategy
                .unwrap_or(self.config.default_strategy),
        }
    }

    /// Chooses the node for `instance` in `state` and returns its position,
    /// without changing `state` (see [`PluginScheduler::schedule`]).
    /// Deterministic: the same state and instance give the same node.
    ///
    /// # Errors
    /// [`Unschedulable`] when no node passes every filter, with the reasons.
    pub fn place_in(
        &self,
        state: &ClusterState,
        instance: &Instance,
    ) -> Result<usize, Unschedulable> {
        let request = self.request(instance);
        let min_free = if state.prunes().short_of_resources {
            request.resources
        } else {
            Resources::default()
        };
        let descending = request.strategy == Strategy::Spread;
        let applying: Vec<&Weighted> = self
            .scores
            .iter()
            .filter(|s| s.plugin.applies(&request, state))
            .collect();
        let limit = if applying.iter().all(|s| s.plugin.follows_capacity_order()) {
            self.config.candidates_per_zone
        } else {
            self.config.preference_candidates_per_zone
        };
        let mut candidates = Vec::new();
        for zone in state.zones() {
            if state.zone_indexed_nodes(zone.id) == 0
                || self
                    .filters
                    .iter()
                    .any(|f| f.filter_zone(&request, &zone, state).is_err())
            {
                continue;
            }
            let mut found = 0usize;
            state.walk_zone(zone.id, &min_free, descending, |i| {
                let node = state.node_ref(i);
                if self.filters.iter().all(|f| f.admits(&request, node, state)) {
                    candidates.push(i);
                    found += 1;
                }
                found < limit
            });
        }
        if candidates.is_empty() {
            return Err(self.explain_in(state, instance));
        }
        Ok(self.best(state, &request, &applying, &candidates))
    }

    /// The highest weighted total among `candidates`; ties go to the lowest
    /// tie-break rank, then the lowest position.
    fn best(
        &self,
        state: &ClusterState,
        request: &Request<'_>,
        applying: &[&Weighted],
        candidates: &[usize],
    ) -> usize {
        let mut totals = vec![0u64; candidates.len()];
        let mut scores = vec![0u32; candidates.len()];
        for s in applying {
            s.plugin.score_all(request, state, candidates, &mut scores);
            s.plugin.normalize(request, &mut scores);
            for (total, score) in totals.iter_mut().zip(&scores) {
                *total += u64::from((*score).min(MAX_SCORE)) * u64::from(s.weight);
            }
        }
        let mut best = 0usize;
        let mut best_rank = None;
        for k in 1..candidates.len() {
            if totals[k] > totals[best] {
                best = k;
                best_rank = None;
            } else if totals[k] == totals[best] {
                let rank_best = *best_rank.get_or_insert_with(|| {
                    self.tie_break
                        .rank(request.instance, &state.nodes()[candidates[best]])
                });
                let rank_k = self
                    .tie_break
                    .rank(request.instance, &state.nodes()[candidates[k]]);
                if (rank_k, candidates[k]) < (rank_best, candidates[best]) {
                    best = k;
                    best_rank = Some(rank_k);
                }
            }
        }
        candidates[best]
    }

    /// Places `instance` in `state` and records the placement there, as the
    /// controller records it in the store. Returns the chosen node's id.
    ///
    /// # Errors
    /// [`Unschedulable`] when no node passes every filter; `state` is unchanged.
    pub fn schedule(
        &self,
        state: &mut ClusterState,
        instance: &Instance,
    ) -> Result<NodeId, Unschedulable> {
        let index = self.place_in(state, instance)?;
        state.commit(index, instance);
        Ok(state.nodes()[index].id.clone())
    }

    /// Why nodes of `state` cannot take `instance`: for every node, the first
    /// filter that rejects it, counted per reason, most common first. Runs
    /// every filter on every node, so it is exact but O(n).
    pub fn explain_in(&self, state: &ClusterState, instance: &Instance) -> Unschedulable {
        let request = self.request(instance);
        // Keyed by (filter position, reason) so equal reasons of different
        // filters stay apart and ties in count keep the pipeline order.
        let mut counts: BTreeMap<(usize, String), (usize, Option<Shortfall>)> = BTreeMap::new();
        for i in 0..state.nodes().len() {
            let node = state.node_ref(i);
            for (position, f) in self.filters.iter().enumerate() {
                if let Err(reject) = f.filter(&request, node, state) {
                    let entry = counts
                        .entry((position, reject.reason.into_owned()))
                        .or_insert((0, None));
                    entry.0 += 1;
                    entry.1 = match (entry.1, reject.shortfall) {
                        (Some(a), Some(b)) if b.free > a.free => Some(b),
                        (None, b) => b,
                        (a, _) => a,
                    };
                    break;
                }
            }
        }
        let mut rejections: Vec<(usize, usize, Rejection)> = counts
            .into_iter()
            .map(|((position, reason), (nodes, shortfall))| {
                let reason = match shortfall {
                    Some(s) => format!(
                        "{reason} (need {}, max free {})",
                        s.unit.show(s.need),
                        s.unit.show(s.free)
                    ),
                    None => reason,
                };
                let rejection = Rejection {
                    filter: self.filters[position].name().to_owned(),
                    reason,
                    nodes,
                };
                (nodes, position, rejection)
            })
            .collect();
        rejections.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        Unschedulable {
            rejections: rejections.into_iter().map(|(_, _, r)| r).collect(),
        }
    }
}

impl PluginScheduler {
    /// Runs `f` on the cached state brought in line with `cx`, building it
    /// first when there is none or `cx` holds other nodes. The cache only
    /// saves work: the result is what a fresh state would give.
    fn with_state<T>(&self, cx: &SchedulingContext<'_>, f: impl FnOnce(&ClusterState) -> T) -> T {
        let mut cached = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let synced = cached.as_mut().is_some_and(|state| state.sync(cx));
        if !synced {
            *cached = Some(self.state(cx));
        }
        match cached.as_ref() {
            Some(state) => f(state),
            None => f(&self.state(cx)),
        }
    }
}

impl Scheduler for PluginScheduler {
    /// Places with the pipeline on a cached [`ClusterState`] synced to `cx`.
    fn place(
        &self,
        instance: &Instance,
        cx: &SchedulingContext<'_>,
    ) -> Result<NodeId, Unschedulable> {
        self.with_state(cx, |state| {
            let index = self.place_in(state, instance)?;
            Ok(state.nodes()[index].id.clone())
        })
    }

    fn explain(&self, instance: &Instance, cx: &SchedulingContext<'_>) -> Unschedulable {
        self.with_state(cx, |state| self.explain_in(state, instance))
    }
}
