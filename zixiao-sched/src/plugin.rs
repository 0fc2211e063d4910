//! The plugin interfaces: [`Filter`] (may this node take the instance? if
//! not, why) and [`Score`] (how good is this node, bounded `0..=100`), and
//! what both see: the [`Request`] and a [`NodeRef`] into the [`ClusterState`].

use std::borrow::Cow;
use std::fmt;

use zixiao_core::scheduler::Strategy;
use zixiao_core::{Instance, Node, Resources};

use crate::cluster::{ClusterState, Prunes, ZoneId, ZoneView};

/// The highest score a [`Score`] plugin may give; higher values are clamped.
pub const MAX_SCORE: u32 = 100;

/// One placement request as plugins see it: the instance and what the
/// pipeline derived from it once, so plugins need not derive it per node.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The instance being placed.
    pub instance: &'a Instance,
    /// What it takes from its node.
    pub resources: Resources,
    /// The strategy in force: the instance's override, else the cluster default.
    pub strategy: Strategy,
}

/// A node as a plugin sees it: the stored node, its position in the
/// [`ClusterState`] and its zone.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    /// Position of the node in the cluster state (stable for its life).
    pub index: usize,
    /// The node, with its current allocation.
    pub node: &'a Node,
    /// The (region, zone) it is in.
    pub zone: ZoneId,
}

/// How much of a countable resource was needed and how much a node had.
/// Explanations report the largest `free` among the rejected nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    /// What the instance needs.
    pub need: u64,
    /// What the node has free.
    pub free: u64,
    /// What `need` and `free` count.
    pub unit: Unit,
}

/// The unit of a [`Shortfall`]: how its amounts are shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Thousandths of a core, shown in cores (`0.5 cores`).
    Millicores,
    /// Mebibytes.
    Mib,
    /// Gibibytes.
    Gib,
}

impl Unit {
    /// `amount` in this unit, for people.
    pub fn show(self, amount: u64) -> String {
        match self {
            Unit::Millicores => {
                let cpus =
                    zixiao_core::Cpus::from_millis(u32::try_from(amount).unwrap_or(u32::MAX));
                format!("{cpus} cores")
            }
            Unit::Mib => format!("{amount} MiB"),
            Unit::Gib => format!("{amount} GiB"),
        }
    }
}

/// Why a filter turned a node down. Not an error: an expected outcome that
/// [`explain`](crate::PluginScheduler::explain_in) counts per reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Why, for people; nodes with equal reasons are counted together, so a
    /// reason names the requirement, not the node (`cordoned`, `insufficient memory`).
    pub reason: Cow<'static, str>,
    /// For a countable shortfall, what was needed and what this node had.
    pub shortfall: Option<Shortfall>,
}

impl Reject {
    /// A rejection for `reason`.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Reject {
            reason: reason.into(),
            shortfall: None,
        }
    }

    /// A rejection for lack of a countable resource (`insufficient memory`,
    /// need 4096 MiB, this node has 2048 MiB free).
    pub fn shortfall(reason: &'static str, need: u64, free: u64, unit: Unit) -> Self {
        Reject {
            reason: Cow::Borrowed(reason),
            shortfall: Some(Shortfall { need, free, unit }),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shortfall {
            Some(s) => write!(
                f,
                "{} (need {}, free {})",
                self.reason,
                s.unit.show(s.need),
                s.unit.show(s.free)
            ),
            None => f.write_str(&self.reason),
        }
    }
}

/// A filter's verdict on one node.
pub type Verdict = Result<(), Reject>;

/// A hard constraint: says whether a node may take the instance and, if not, why.
///
/// Filters must be pure functions of their arguments, so placement is
/// deterministic and explanations match placements.
pub trait Filter: Send + Sync + fmt::Debug {
    /// A short kebab-case name reported in explanations (`resources`, `node-status`).
    fn name(&self) -> &'static str;

    /// Whether `node` may take the instance of `request`. Called for each
    /// candidate node during placement and for every node by `explain`.
    fn filter(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> Verdict;

    /// Whether `node` passes, without saying why not: what placement asks
    /// for each candidate, so a rejection costs no allocation. Must agree
    /// with [`Filter::filter`]; the default calls it.
    fn admits(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> bool {
        self.filter(request, node, cluster).is_ok()
    }

    /// Whether any node of `zone` could pass. Called once per zone before
    /// its nodes are visited, so a zone that cannot pass is skipped whole.
    /// Must reject only when [`Filter::filter`] would reject every node of
    /// the zone. The default passes.
    fn filter_zone(
        &self,
        request: &Request<'_>,
        zone: &ZoneView<'_>,
        cluster: &ClusterState,
    ) -> Verdict {
        let _ = (request, zone, cluster);
        Ok(())
    }

    /// Which nodes this filter rejects whatever the request, so the capacity
    /// index may leave them out without visiting them. Claim only what
    /// [`Filter::filter`] really rejects. The default claims nothing.
    fn prunes(&self) -> Prunes {
        Prunes::default()
    }
}

/// A soft preference: rates a node that passed every filter.
pub trait Score: Send + Sync + fmt::Debug {
    /// A short kebab-case name (`bin-pack`, `zone-spread`).
    fn name(&self) -> &'static str;

    /// Whether this plugin has an opinion on `request` at all (bin-pack only
    /// under the bin-pack strategy, zone spread only when asked for). Called
    /// once per placement. The default is yes.
    fn applies(&self, request: &Request<'_>, cluster: &ClusterState) -> bool {
        let _ = (request, cluster);
        true
    }

    /// Whether the score ranks the nodes of one zone the way the capacity
    /// index yields them (fullest or emptiest first), or is the same for
    /// the whole zone. When every score that applies does, a short sample
    /// per zone loses nothing, and the pipeline takes
    /// [`SchedulerConfig::candidates_per_zone`](crate::SchedulerConfig);
    /// otherwise the wider `preference_candidates_per_zone`. The default is no.
    fn follows_capacity_order(&self) -> bool {
        false
    }

    /// Scores every node of `candidates` into `scores` (the same length).
    /// Called once per placement; the default calls [`Score::score`] per
    /// node. Override it to compute what all candidates share only once.
    fn score_all(
        &self,
        request: &Request<'_>,
        cluster: &ClusterState,
        candidates: &[usize],
        scores: &mut [u32],
    ) {
        for (score, &i) in scores.iter_mut().zip(candidates) {
            *score = self.score(request, cluster.node_ref(i), cluster);
        }
    }

    /// The node's score: `0..=`[`MAX_SCORE`], or a raw value that
    /// [`Score::normalize`] maps there. Called for each candidate node.
    fn score(&self, request: &Request<'_>, node: NodeRef<'_>, cluster: &ClusterState) -> u32;

    /// Maps the raw scores of all candidates of one placement into
    /// `0..=`[`MAX_SCORE`] in place (for scores only meaningful relative to
    /// each other, like carbon intensity). The pipeline clamps whatever is
    /// still above. The default keeps the scores.
    fn normalize(&self, request: &Request<'_>, scores: &mut [u32]) {
        let _ = (request, scores);
    }
}
