//! The [`Scheduler`] trait: choose a node for an instance, or say why none
//! fits; and the vocabulary of placement constraints that instance specs
//! use ([`LabelSelector`], [`GroupRule`], [`ZoneSpread`], [`CarbonPolicy`],
//! [`Strategy`]) and that the context carries ([`HostAggregate`]).
//!
//! Implementations live in `zixiao-sched`. A scheduler is a pure function of
//! its inputs: it never writes; the controller commits the placement together
//! with the node's allocation, so a stale snapshot can never over-commit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{Instance, Node, NodeId};
use crate::Error;

/// How a scheduler ranks the nodes that can take an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Prefer the fullest nodes that fit (most-allocated), leaving whole
    /// nodes free for large instances and idle nodes to power down.
    #[default]
    BinPack,
    /// Prefer the emptiest nodes (least-allocated), spreading load and the
    /// blast radius of a node failure.
    Spread,
}

impl Strategy {
    /// The snake_case name used in specs and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BinPack => "bin_pack",
            Strategy::Spread => "spread",
        }
    }
}

/// How a [`LabelRequirement`] compares a label with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelOperator {
    /// The label is set to the one value.
    Equals,
    /// The label is set to one of the values.
    In,
    /// The label is unset, or set to none of the values.
    NotIn,
    /// The label is set (to anything); no values.
    Exists,
    /// The label is unset; no values.
    DoesNotExist,
}

/// One requirement on a set of labels (a node's labels, or a host
/// aggregate's metadata).
///
/// As YAML: `{key: disk, operator: in, values: [ssd, nvme]}`; on the
/// command line (see [`FromStr`]): `disk=ssd`, `disk in (ssd,nvme)`,
/// `disk notin (hdd)`, `gpu`, `!gpu`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequirement {
    /// The label's key.
    pub key: String,
    /// How the label is compared.
    pub operator: LabelOperator,
    /// The values compared with: one for `equals`, at least one for `in`
    /// and `not_in`, none for `exists` and `does_not_exist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelRequirement {
    fn with(key: impl Into<String>, operator: LabelOperator, values: Vec<String>) -> Self {
        LabelRequirement {
            key: key.into(),
            operator,
            values,
        }
    }

    /// `key` is set to `value`.
    pub fn equals(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::with(key, LabelOperator::Equals, vec![value.into()])
    }

    /// `key` is set to one of `values`.
    pub fn one_of<S: Into<String>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::with(
            key,
            LabelOperator::In,
            values.into_iter().map(Into::into).collect(),
        )
    }

    /// `key` is unset or set to none of `values`.
    pub fn none_of<S: Into<String>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::with(
            key,
            LabelOperator::NotIn,
            values.into_iter().map(Into::into).collect(),
        )
    }

    /// `key` is set.
    pub fn exists(key: impl Into<String>) -> Self {
        Self::with(key, LabelOperator::Exists, Vec::new())
    }

    /// `key` is unset.
    pub fn does_not_exist(key: impl Into<String>) -> Self {
        Self::with(key, LabelOperator::DoesNotExist, Vec::new())
    }

    /// Whether `labels` satisfy the requirement.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use zixiao_core::scheduler::LabelRequirement;
    /// let labels = BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]);
    /// assert!(LabelRequirement::one_of("disk", ["ssd", "nvme"]).matches(&labels));
    /// assert!(LabelRequirement::none_of("gpu", ["a100"]).matches(&labels));
    /// assert!(!LabelRequirement::exists("gpu").matches(&labels));
    /// ```
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::Equals | LabelOperator::In => {
                value.is_some_and(|v| self.values.contains(v))
            }
            LabelOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match self.operator {
            LabelOperator::Equals => write!(f, "{key}={}", self.values.join(",")),
            LabelOperator::In => write!(f, "{key} in ({})", self.values.join(",")),
            LabelOperator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
            LabelOperator::Exists => f.write_str(key),
            LabelOperator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

impl FromStr for LabelRequirement {
    type Err = Error;

    /// Parses the kubectl-like forms `key=value`, `key!=value`, `key in (a,b)`,
    /// `key notin (a,b)`, `key` (exists) and `!key` (does not exist).
    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let bad = || {
            Error::invalid(
                "selector",
                format!(
                    "`{s}` is not `key=value`, `key in (a,b)`, `key notin (a,b)`, `key` or `!key`"
                ),
            )
        };
        if let Some((key, value)) = s.split_once("!=") {
            return Ok(Self::none_of(key.trim(), [value.trim()]));
        }
        if let Some((key, value)) = s.split_once('=') {
            return Ok(Self::equals(key.trim(), value.trim()));
        }
        if let Some(key) = s.strip_prefix('!') {
            return Ok(Self::does_not_exist(key.trim()));
        }
        let mut words = s.splitn(2, char::is_whitespace);
        let key = words.next().unwrap_or_default();
        let Some(rest) = words.next() else {
            return if key.is_empty() {
                Err(bad())
            } else {
                Ok(Self::exists(key))
            };
        };
        let rest = rest.trim_start();
        let (operator, list) = if let Some(list) = rest.strip_prefix("notin") {
            (LabelOperator::NotIn, list)
        } else if let Some(list) = rest.strip_prefix("in") {
            (LabelOperator::In, list)
        } else {
            return Err(bad());
        };
        let list = list
            .trim()
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(bad)?;
        let values = list
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        Ok(Self::with(key, operator, values))
    }
}

/// Requirements on a set of labels, all of which must hold.
///
/// Deserializes from a map of equalities (`{disk: ssd}`, the original
/// form) or from a list of [`LabelRequirement`]s; serializes back to a
/// map when every requirement is an equality on a distinct key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    /// No requirements: matches everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The requirements, in order.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.0
    }

    /// The first requirement `labels` fail, if any.
    pub fn first_unmatched(&self, labels: &BTreeMap<String, String>) -> Option<&LabelRequirement> {
        self.0.iter().find(|r| !r.matches(labels))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.first_unmatched(labels).is_none()
    }

    /// As a map, if every requirement is an equality on a distinct key.
    fn as_equalities(&self) -> Option<BTreeMap<&str, &str>> {
        let mut map = BTreeMap::new();
        for r in &self.0 {
            match (r.operator, r.values.as_slice()) {
                (LabelOperator::Equals, [value]) => {
                    if map.insert(r.key.as_str(), value.as_str()).is_some() {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        Some(map)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl From<BTreeMap<String, String>> for LabelSelector {
    fn from(map: BTreeMap<String, String>) -> Self {
        map.into_iter()
            .map(|(k, v)| LabelRequirement::equals(k, v))
            .collect()
    }
}

impl FromIterator<LabelRequirement> for LabelSelector {
    fn from_iter<I: IntoIterator<Item = LabelRequirement>>(iter: I) -> Self {
        LabelSelector(iter.into_iter().collect())
    }
}

impl Serialize for LabelSelector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.as_equalities() {
            Some(map) => map.serialize(serializer),
            None => self.0.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for LabelSelector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SelectorVisitor;

        impl<'de> Visitor<'de> for SelectorVisitor {
            type Value = LabelSelector;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of label equalities or a list of {key, operator, values}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelSelector, A::Error> {
                let mut requirements = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    requirements.push(LabelRequirement::equals(key, value));
                }
                Ok(LabelSelector(requirements))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LabelSelector, A::Error> {
                let mut requirements = Vec::new();
                while let Some(r) = seq.next_element::<LabelRequirement>()? {
                    requirements.push(r);
                }
                Ok(LabelSelector(requirements))
            }

            fn visit_unit<E: de::Error>(self) -> Result<LabelSelector, E> {
                Ok(LabelSelector::default())
            }
        }

        deserializer.deserialize_any(SelectorVisitor)
    }
}

/// How an instance relates to the other members of a group of instances
/// (like Nova server groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupPolicy {
    /// Must share a node (or zone) with the members already placed.
    Affinity,
    /// Must not share a node (or zone) with any member already placed.
    AntiAffinity,
    /// Prefers to share a node (or zone) with the members.
    SoftAffinity,
    /// Prefers a node (or zone) with the fewest members.
    SoftAntiAffinity,
}

impl GroupPolicy {
    /// Whether the policy is a hard constraint (a filter) rather than a preference.
    pub fn is_hard(self) -> bool {
        matches!(self, GroupPolicy::Affinity | GroupPolicy::AntiAffinity)
    }

    /// Whether it pulls members together rather than apart.
    pub fn is_affinity(self) -> bool {
        matches!(self, GroupPolicy::Affinity | GroupPolicy::SoftAffinity)
    }
}

/// The domain a [`GroupRule`] or spread counts in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum GroupScope {
    /// One node: "no two members on one node".
    #[default]
    Node,
    /// One zone: "no two members in one zone".
    Zone,
}

/// Membership of an instance in a named group, with the policy it places by.
/// Every instance naming the group is a member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    /// The group's name (a DNS label).
    pub name: String,
    /// How this instance relates to the other members.
    pub policy: GroupPolicy,
    /// Whether the policy counts per node or per zone.
    #[serde(default)]
    pub scope: GroupScope,
}

/// Spread instances across zones towards target shares (like Nomad's `spread`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpread {
    /// Count the members of this group; all instances in the zone when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Target share of each zone in percent (at most 100 in all); zones
    /// not listed get none. Empty: an even share for every zone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, u8>,
}

/// Carbon-aware placement: prefer nodes with a lower carbon intensity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonPolicy {
    /// Only nodes whose carbon intensity is known and at most this many
    /// grams of CO2-equivalent per kWh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_intensity: Option<u32>,
}

/// A host aggregate: a named group of nodes with metadata, which instances
/// can require by name or by metadata (like Nova host aggregates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAggregate {
    /// Its name.
    pub name: String,
    /// Key-value metadata (`ssd: "true"`, `tenant: blue`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The ids of its nodes.
    #[serde(default)]
    pub nodes: BTreeSet<NodeId>,
}

/// What a scheduler sees when it places one instance.
///
/// ```
/// # use zixiao_core::SchedulingContext;
/// # let (nodes, placed, aggregates) = (vec![], vec![], vec![]);
/// let cx = SchedulingContext::new(&nodes)
///     .with_instances(&placed)
///     .with_aggregates(&aggregates);
/// # assert!(cx.nodes.is_empty());
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SchedulingContext<'a> {
    /// Every node of the cluster, in id order, with its current allocation.
    pub nodes: &'a [Node],
    /// Instances with a node (for group affinity and zone spread); those
    /// without one are ignored.
    pub instances: &'a [Instance],
    /// The host aggregates.
    pub aggregates: &'a [HostAggregate],
    /// Which of `nodes` changed since an earlier context over the same
    /// table, when the caller keeps track (the controller's node cache
    /// does): a scheduler that keeps an index of the nodes re-reads only
    /// those, instead of comparing every node.
    pub changes: Option<NodeChanges<'a>>,
}

impl<'a> SchedulingContext<'a> {
    /// A context over `nodes`, without instances or aggregates.
    pub fn new(nodes: &'a [Node]) -> Self {
        SchedulingContext {
            nodes,
            instances: &[],
            aggregates: &[],
            changes: None,
        }
    }

    /// The same context, saying which nodes changed since earlier contexts
    /// over the same table.
    pub fn with_changes(mut self, changes: NodeChanges<'a>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// The same context with the placed `instances`.
    pub fn with_instances(mut self, instances: &'a [Instance]) -> Self {
        self.instances = instances;
        self
    }

    /// The same context with the host `aggregates`.
    pub fn with_aggregates(mut self, aggregates: &'a [HostAggregate]) -> Self {
        self.aggregates = aggregates;
        self
    }
}

/// Which nodes of a node table changed, and when: a table is a list of
/// nodes whose positions keep their meaning (the same node at the same
/// position) for as long as its `table` number stays the same; each change
/// of a node bumps the table's `generation` and is logged with it.
///
/// ```
/// # use zixiao_core::scheduler::NodeChanges;
/// let log = [(4, 2), (5, 0), (6, 2)];
/// let changes = NodeChanges { table: 1, generation: 6, since: 3, log: &log };
/// let after_4: Vec<usize> = changes.changed_after(4).expect("covered").collect();
/// assert_eq!(after_4, vec![0, 2]);
/// assert!(changes.changed_after(2).is_none(), "older than the log");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeChanges<'a> {
    /// Names the table: equal numbers mean the same node at each position.
    pub table: u64,
    /// The table's generation now; it grows with every change.
    pub generation: u64,
    /// The oldest generation the log covers: every change after it is in `log`.
    pub since: u64,
    /// `(generation, position)` of each change after `since`, oldest first.
    pub log: &'a [(u64, u32)],
}

impl NodeChanges<'_> {
    /// The positions changed after `generation`, each once, or `None` when
    /// the log no longer reaches back that far (compare every node then).
    pub fn changed_after(&self, generation: u64) -> Option<impl Iterator<Item = usize> + '_> {
        if generation < self.since || generation > self.generation {
            return None;
        }
        let start = self.log.partition_point(|(g, _)| *g <= generation);
        let mut seen = BTreeSet::new();
        Some(
            self.log[start..]
                .iter()
                .map(|(_, position)| *position as usize)
                .filter(move |position| seen.insert(*position)),
        )
    }
}

/// Why some nodes were rejected: one reason and how many nodes it ruled out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The filter that rejected them (`resources`, `node-status`, `zone`).
    pub filter: String,
    /// Why, for people (`insufficient memory (need 4096 MiB, max free 2048 MiB)`).
    pub reason: String,
    /// How many nodes it rejected.
    pub nodes: usize,
}

/// No node can take the instance; the rejections say why, node counts first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unschedulable {
    /// Reasons, most common first.
    pub rejections: Vec<Rejection>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rejections.is_empty() {
            return f.write_str("no nodes are registered");
        }
        for (i, r) in self.rejections.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let noun = if r.nodes == 1 { "node" } else { "nodes" };
            write!(f, "{} {noun}: {}", r.nodes, r.reason)?;
        }
        Ok(())
    }
}

/// Chooses nodes for instances.
pub trait Scheduler: Send + Sync + fmt::Debug {
    /// Picks the node for `instance` among `cx.nodes`, or explains why none
    /// fits. Called by the controller for each pending instance, possibly
    /// concurrently; must be deterministic for the same input. Never fails
    /// otherwise: an empty cluster is an [`Unschedulable`] with no rejections.
    fn place(
        &self,
        instance: &Instance,
        cx: &SchedulingContext<'_>,
    ) -> Result<NodeId, Unschedulable>;

    /// Why nodes of `cx` turn `instance` down, counted per reason, whether
    /// or not some node would take it. Read-only; for `instance get` and
    /// debugging. The default is the rejection of [`Scheduler::place`]
    /// (empty when it places).
    fn explain(&self, instance: &Instance, cx: &SchedulingContext<'_>) -> Unschedulable {
        self.place(instance, cx).err().unwrap_or_default()
    }
}
