//! What operators declare about nodes for placement: labels and traits of
//! a node ([`LabelChanges`], [`TraitChanges`], kept in [`Node::operator`]),
//! and host aggregates ([`Aggregate`]), named groups of nodes with
//! metadata that instances require by name (`placement.aggregates`) or by
//! metadata (`placement.aggregate_selector`).
//!
//! # Operator metadata is kept apart from what agents report
//!
//! A node's agent reports labels and traits whenever it registers, which
//! is at every start of the agent (and, in the embedded deployment, at
//! every command). Had operators written into the same maps, the next
//! registration would have put back the agent's view and lost what they
//! set. So a node record holds the two apart:
//!
//! - [`Node::reported`]: what the agent reported at its last registration.
//!   Facts about the machine; only a registration changes them, and an
//!   operator cannot set, override or remove them (a label key or trait the
//!   agent reports is refused with `FailedPrecondition`).
//! - [`Node::operator`]: what operators declared (`zixiao node label`,
//!   `zixiao node trait`). A registration never touches it.
//!
//! [`Node::labels`] and [`Node::traits`] are the two merged (the agent's
//! value wins a key both have, as a fact beats a declaration) and are what
//! placement matches. They are derived by one function,
//! [`Node::merge_metadata`], whenever either side changes, and stored with
//! the node, so schedulers read one map as before and a change of either
//! side is a write of the node that bumps its revision (what the
//! scheduler's index and the reconcilers' "a node changed" watch rely on).
//! The alternative, a separate store object per node for operator
//! metadata, would have made every placement merge two objects and left
//! the node's revision unchanged by a label change.
//!
//! Aggregates are store objects of their own ([`AGGREGATES_PREFIX`]) that
//! list their members by node id, as Nova's do: membership is the
//! aggregate's, not the node's, so registrations cannot touch it either.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Deref;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::network::{dns_label, name_type};
use super::validate::{validate_label_key, validate_label_value, MAX_LABELS};
use super::{InvalidName, Node, NodeId};
use crate::scheduler::HostAggregate;
use crate::store::{Revision, StoredObject};
use crate::Error;

/// Key prefix of aggregate objects.
pub const AGGREGATES_PREFIX: &str = "/zixiao/aggregates/";

/// The most traits operators may declare on one node.
const MAX_TRAITS: usize = 64;

/// The reason an [`Error::InvalidArgument`] gave, or the error as text.
fn reason(error: Error) -> String {
    match error {
        Error::InvalidArgument { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// A label key (of a node, or of an aggregate's metadata): 1 to 253
/// letters, digits, `-`, `_`, `.` and `/`, as instance labels and node
/// selectors have them.
///
/// ```
/// use zixiao_core::model::LabelKey;
/// assert!(LabelKey::try_from("zixiao.io/disk").is_ok());
/// let err = LabelKey::try_from("disk type").unwrap_err();
/// assert!(err.to_string().contains("not a label key"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabelKey(String);
name_type!(LabelKey);

impl LabelKey {
    fn parse(text: &str) -> Result<(), InvalidName> {
        validate_label_key("key", text)
            .map_err(|e| InvalidName::new("a label key", text, reason(e)))
    }
}

/// A label value: at most 253 characters, without control characters
/// (empty is a value).
///
/// ```
/// use zixiao_core::model::LabelValue;
/// assert!(LabelValue::try_from("ssd").is_ok());
/// assert!(LabelValue::try_from("a\nb").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabelValue(String);
name_type!(LabelValue);

impl LabelValue {
    fn parse(text: &str) -> Result<(), InvalidName> {
        validate_label_value("value", text)
            .map_err(|e| InvalidName::new("a label value", text, reason(e)))
    }
}

/// A trait a node declares (`ssd`, `gpu.a100`), as instances require it in
/// `placement.required_traits`: a label key's characters.
///
/// ```
/// use zixiao_core::model::TraitName;
/// assert!(TraitName::try_from("avx512").is_ok());
/// assert!(TraitName::try_from("").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraitName(String);
name_type!(TraitName);

impl TraitName {
    fn parse(text: &str) -> Result<(), InvalidName> {
        validate_label_key("trait", text)
            .map_err(|e| InvalidName::new("a trait", text, reason(e).replace("label key", "trait")))
    }
}

/// The name of a host aggregate (a DNS label).
///
/// ```
/// use zixiao_core::model::AggregateName;
/// assert!(AggregateName::try_from("gpu-hosts").is_ok());
/// let err = AggregateName::try_from("GPU").unwrap_err();
/// assert!(err.to_string().contains("not an aggregate name"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AggregateName(String);
name_type!(AggregateName);

impl AggregateName {
    fn parse(text: &str) -> Result<(), InvalidName> {
        dns_label("an aggregate name", text)
    }
}

/// `pairs` as typed metadata (of an aggregate), each key and value
/// checked, refused on `field`.
///
/// ```
/// use std::collections::BTreeMap;
/// use zixiao_core::model::typed_metadata;
/// let pairs = BTreeMap::from([("ssd".to_owned(), "true".to_owned())]);
/// assert_eq!(typed_metadata("metadata", pairs).unwrap().len(), 1);
/// let bad = BTreeMap::from([("no key".to_owned(), String::new())]);
/// let err = typed_metadata("metadata", bad).unwrap_err();
/// assert!(err.to_string().starts_with("invalid metadata: `no key` is not a label key"), "{err}");
/// ```
pub fn typed_metadata(
    field: &str,
    pairs: BTreeMap<String, String>,
) -> Result<BTreeMap<LabelKey, LabelValue>, Error> {
    pairs
        .into_iter()
        .map(|(key, value)| key_value(field, &key, &value))
        .collect()
}

/// One key and value, each checked, refused on `field`.
fn key_value(field: &str, key: &str, value: &str) -> Result<(LabelKey, LabelValue), Error> {
    Ok((
        LabelKey::try_from(key).map_err(|e| e.at(field))?,
        LabelValue::try_from(value).map_err(|e| e.at(field))?,
    ))
}

/// A change of a node's operator labels, as `kubectl label` takes it:
/// `KEY=VALUE` sets (or replaces) a label, `KEY-` removes one. Removing a
/// label the node does not have is no error.
///
/// ```
/// use zixiao_core::model::LabelChanges;
/// let changes = LabelChanges::parse(&["disk=ssd", "old-"]).unwrap();
/// assert_eq!(changes.set.len(), 1);
/// assert_eq!(changes.remove.len(), 1);
/// let err = LabelChanges::parse(&["disk"]).unwrap_err();
/// assert_eq!(err.to_string(), "invalid labels: `disk` is neither KEY=VALUE nor KEY-");
/// assert!(LabelChanges::parse(&["a=1", "a-"]).is_err(), "set and removed");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelChanges {
    /// Labels to set.
    pub set: BTreeMap<LabelKey, LabelValue>,
    /// Label keys to remove.
    pub remove: BTreeSet<LabelKey>,
}

impl LabelChanges {
    /// Parses `KEY=VALUE` and `KEY-` arguments. Errors: `InvalidArgument`
    /// on `labels` (neither form, an invalid key or value, a key given
    /// twice, no argument at all).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, Error> {
        let mut set = BTreeMap::new();
        let mut remove = Vec::new();
        for arg in args {
            let arg = arg.as_ref();
            if let Some((key, value)) = arg.split_once('=') {
                if set.insert(key.to_owned(), value.to_owned()).is_some() {
                    return Err(Error::invalid("labels", format!("`{key}` is given twice")));
                }
            } else if let Some(key) = arg.strip_suffix('-') {
                remove.push(key.to_owned());
            } else {
                return Err(Error::invalid(
                    "labels",
                    format!("`{arg}` is neither KEY=VALUE nor KEY-"),
                ));
            }
        }
        Self::from_parts(set, remove)
    }

    /// The change setting `set` and removing `remove`, each checked.
    /// Errors: `InvalidArgument` on `labels` (an invalid key or value, a key
    /// both set and removed, nothing to change).
    pub fn from_parts(
        set: BTreeMap<String, String>,
        remove: impl IntoIterator<Item = String>,
    ) -> Result<Self, Error> {
        let mut changes = LabelChanges::default();
        for (key, value) in set {
            let (key, value) = key_value("labels", &key, &value)?;
            changes.set.insert(key, value);
        }
        for key in remove {
            let key = LabelKey::try_from(key).map_err(|e| e.at("labels"))?;
            if changes.set.contains_key(&key) {
                return Err(Error::invalid(
                    "labels",
                    format!("`{key}` is both set and removed; give it once"),
                ));
            }
            changes.remove.insert(key);
        }
        if changes.set.is_empty() && changes.remove.is_empty() {
            return Err(Error::invalid(
                "labels",
                "nothing to change: give KEY=VALUE to set a label or KEY- to remove one",
            ));
        }
        Ok(changes)
    }
}

/// A change of a node's operator traits: traits to add, traits to remove.
/// Removing a trait the node does not have is no error.
///
/// ```
/// use zixiao_core::model::TraitChanges;
/// let add = TraitChanges::adding(&["ssd", "gpu"]).unwrap();
/// assert_eq!(add.add.len(), 2);
/// let err = TraitChanges::removing(&["no good"]).unwrap_err();
/// assert!(err.to_string().starts_with("invalid traits: `no good` is not a trait"), "{err}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraitChanges {
    /// Traits to declare.
    pub add: BTreeSet<TraitName>,
    /// Traits to take back.
    pub remove: BTreeSet<TraitName>,
}

impl TraitChanges {
    /// Adds `traits`. Errors: those of [`TraitChanges::from_parts`].
    pub fn adding<S: AsRef<str>>(traits: &[S]) -> Result<Self, Error> {
        Self::from_parts(traits.iter().map(|t| t.as_ref().to_owned()), [])
    }

    /// Removes `traits`. Errors: those of [`TraitChanges::from_parts`].
    pub fn removing<S: AsRef<str>>(traits: &[S]) -> Result<Self, Error> {
        Self::from_parts([], traits.iter().map(|t| t.as_ref().to_owned()))
    }

    /// The change adding `add` and removing `remove`, each checked.
    /// Errors: `InvalidArgument` on `traits` (an invalid trait, one both
    /// added and removed, nothing to change).
    pub fn from_parts(
        add: impl IntoIterator<Item = String>,
        remove: impl IntoIterator<Item = String>,
    ) -> Result<Self, Error> {
        let parse = |t: String| TraitName::try_from(t).map_err(|e| e.at("traits"));
        let mut changes = TraitChanges::default();
        for t in add {
            changes.add.insert(parse(t)?);
        }
        for t in remove {
            let t = parse(t)?;
            if changes.add.contains(&t) {
                return Err(Error::invalid(
                    "traits",
                    format!("`{t}` is both added and removed; give it once"),
                ));
            }
            changes.remove.insert(t);
        }
        if changes.add.is_empty() && changes.remove.is_empty() {
            return Err(Error::invalid(
                "traits",
                "nothing to change: name at least one trait",
            ));
        }
        Ok(changes)
    }
}

/// Labels and traits from one source: a node's agent, or its operators
/// (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMetadata {
    /// Labels, for node selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Traits, for required and forbidden traits.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub traits: BTreeSet<String>,
    /// Carbon intensity of the node's power, gCO2e/kWh, for carbon-aware
    /// placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carbon_intensity: Option<u32>,
}

impl NodeMetadata {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.traits.is_empty() && self.carbon_intensity.is_none()
    }
}

/// The most gCO2e/kWh a node's power may be said to emit: well above any
/// grid's (coal is about 1,000).
pub const MAX_CARBON_INTENSITY: u32 = 5_000;

/// A carbon intensity an operator declares for a node, in grams of CO2
/// equivalent per kWh: at most [`MAX_CARBON_INTENSITY`]. Built by
/// `TryFrom<u32>` (or `FromStr` of the decimal number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "u32")]
pub struct CarbonIntensity(u32);

impl CarbonIntensity {
    /// Grams of CO2 equivalent per kWh.
    pub fn grams_per_kwh(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for CarbonIntensity {
    type Error = Error;

    /// Errors: `InvalidArgument` on `carbon_intensity`.
    fn try_from(grams: u32) -> Result<Self, Error> {
        if grams > MAX_CARBON_INTENSITY {
            return Err(Error::invalid(
                "carbon_intensity",
                format!("{grams} gCO2e/kWh is more than the {MAX_CARBON_INTENSITY} any power source emits"),
            ));
        }
        Ok(CarbonIntensity(grams))
    }
}

impl TryFrom<i64> for CarbonIntensity {
    type Error = Error;

    /// For frontends whose numbers are signed (Python, JavaScript).
    /// Errors: `InvalidArgument` on `carbon_intensity`.
    fn try_from(grams: i64) -> Result<Self, Error> {
        let grams = u32::try_from(grams).map_err(|_| {
            Error::invalid(
                "carbon_intensity",
                format!("{grams} gCO2e/kWh is not between 0 and {MAX_CARBON_INTENSITY}"),
            )
        })?;
        CarbonIntensity::try_from(grams)
    }
}

impl std::str::FromStr for CarbonIntensity {
    type Err = Error;

    /// Errors: `InvalidArgument` on `carbon_intensity`.
    fn from_str(text: &str) -> Result<Self, Error> {
        let grams = text.trim().parse::<u32>().map_err(|_| {
            Error::invalid(
                "carbon_intensity",
                format!(
                    "`{}` is not a whole number of gCO2e/kWh",
                    text.escape_debug()
                ),
            )
        })?;
        CarbonIntensity::try_from(grams)
    }
}

impl From<CarbonIntensity> for u32 {
    fn from(intensity: CarbonIntensity) -> u32 {
        intensity.0
    }
}

impl<'de> Deserialize<'de> for CarbonIntensity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        CarbonIntensity::try_from(u32::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl Node {
    /// Derives [`Node::labels`] and [`Node::traits`], what placement
    /// matches, from what the agent reported and what operators declared;
    /// the agent's value wins a label key both have. The one owner of that
    /// rule: every change of either side ends here.
    pub fn merge_metadata(&mut self) {
        let mut labels = self.operator.labels.clone();
        labels.extend(
            self.reported
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        self.labels = labels;
        self.traits = self
            .operator
            .traits
            .union(&self.reported.traits)
            .cloned()
            .collect();
        // An operator's figure wins: it is the one given on purpose, for
        // this node (an agent's comes from its config file).
        self.carbon_intensity = self
            .operator
            .carbon_intensity
            .or(self.reported.carbon_intensity);
    }

    /// The traits its agent reported. A record stored before reported and
    /// declared metadata were kept apart holds its agent's in `traits`.
    pub fn reported_traits(&self) -> &BTreeSet<String> {
        if self.is_unsplit() {
            &self.traits
        } else {
            &self.reported.traits
        }
    }

    /// Whether the record comes from before reported and declared metadata
    /// were kept apart: then all it has came from its agent.
    fn is_unsplit(&self) -> bool {
        self.reported.is_empty()
            && self.operator.is_empty()
            && !(self.labels.is_empty() && self.traits.is_empty())
    }

    /// Takes what such a record holds as its agent's, before a change.
    fn split_metadata(&mut self) {
        if self.is_unsplit() {
            self.reported = NodeMetadata {
                labels: self.labels.clone(),
                traits: self.traits.clone(),
                carbon_intensity: self.carbon_intensity,
            };
        }
    }

    /// Sets (or, with `None`, clears) the operator's carbon intensity and
    /// merges; says whether anything changed.
    pub fn set_carbon_intensity(&mut self, intensity: Option<CarbonIntensity>) -> bool {
        self.split_metadata();
        let before = self.operator.carbon_intensity;
        self.operator.carbon_intensity = intensity.map(u32::from);
        self.merge_metadata();
        before != self.operator.carbon_intensity
    }

    /// Applies `changes` to the operator labels and merges; says whether
    /// anything changed. Errors: `FailedPrecondition` (a label its agent
    /// reports: read-only), `InvalidArgument` on `labels` (more than 64).
    pub fn change_labels(&mut self, changes: &LabelChanges) -> Result<bool, Error> {
        self.split_metadata();
        for key in changes.set.keys() {
            if let Some(value) = self.reported.labels.get(key.as_str()) {
                return Err(self.read_only(&format!("label `{key}` (`{key}={value}`)")));
            }
        }
        for key in &changes.remove {
            let key = key.as_str();
            if !self.operator.labels.contains_key(key) {
                if let Some(value) = self.reported.labels.get(key) {
                    return Err(self.read_only(&format!("label `{key}` (`{key}={value}`)")));
                }
            }
        }
        let before = self.operator.labels.clone();
        for key in &changes.remove {
            self.operator.labels.remove(key.as_str());
        }
        for (key, value) in &changes.set {
            self.operator
                .labels
                .insert(key.to_string(), value.to_string());
        }
        if self.operator.labels.len() > MAX_LABELS {
            return Err(Error::invalid(
                "labels",
                format!(
                    "node `{}` would have {} labels set by operators; at most {MAX_LABELS} are allowed",
                    self.id,
                    self.operator.labels.len()
                ),
            ));
        }
        self.merge_metadata();
        Ok(before != self.operator.labels)
    }

    /// Applies `changes` to the operator traits and merges; says whether
    /// anything changed. Errors: `FailedPrecondition` (a trait its agent
    /// reports: read-only), `InvalidArgument` on `traits` (more than 64).
    pub fn change_traits(&mut self, changes: &TraitChanges) -> Result<bool, Error> {
        self.split_metadata();
        for t in &changes.add {
            if self.reported.traits.contains(t.as_str())
                && !self.operator.traits.contains(t.as_str())
            {
                return Err(self.read_only(&format!("trait `{t}`")));
            }
        }
        for t in &changes.remove {
            if self.reported.traits.contains(t.as_str())
                && !self.operator.traits.contains(t.as_str())
            {
                return Err(self.read_only(&format!("trait `{t}`")));
            }
        }
        let before = self.operator.traits.clone();
        for t in &changes.remove {
            self.operator.traits.remove(t.as_str());
        }
        self.operator
            .traits
            .extend(changes.add.iter().map(ToString::to_string));
        if self.operator.traits.len() > MAX_TRAITS {
            return Err(Error::invalid(
                "traits",
                format!(
                    "node `{}` would have {} traits declared by operators; at most {MAX_TRAITS} are allowed",
                    self.id,
                    self.operator.traits.len()
                ),
            ));
        }
        self.merge_metadata();
        Ok(before != self.operator.traits)
    }

    fn read_only(&self, what: &str) -> Error {
        Error::FailedPrecondition(format!(
            "{what} of node `{}` is reported by its agent, and what an agent reports is \
             read-only: it changes only when the agent reports otherwise",
            self.id
        ))
    }
}

/// A host aggregate as stored: a named group of nodes with metadata.
/// Instances require aggregates by name (`placement.aggregates`) or by
/// metadata (`placement.aggregate_selector`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// Its name.
    pub name: AggregateName,
    /// Key-value metadata (`ssd: "true"`, `tenant: blue`).
    #[serde(default)]
    pub metadata: BTreeMap<LabelKey, LabelValue>,
    /// The ids of its nodes.
    #[serde(default)]
    pub nodes: BTreeSet<NodeId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Store revision; updates are compare-and-swap on it.
    #[serde(skip)]
    pub revision: Revision,
}

impl Aggregate {
    /// A new aggregate without nodes.
    pub fn new(
        name: AggregateName,
        metadata: BTreeMap<LabelKey, LabelValue>,
        now: DateTime<Utc>,
    ) -> Self {
        Aggregate {
            name,
            metadata,
            nodes: BTreeSet::new(),
            created_at: now,
            updated_at: now,
            revision: 0,
        }
    }

    /// Applies `changes` to the metadata; says whether anything changed.
    /// Errors: `InvalidArgument` on `metadata` (more than the labels an
    /// object may have).
    pub fn change_metadata(&mut self, changes: &LabelChanges) -> Result<bool, Error> {
        let before = self.metadata.clone();
        for key in &changes.remove {
            self.metadata.remove(key);
        }
        for (key, value) in &changes.set {
            self.metadata.insert(key.clone(), value.clone());
        }
        if self.metadata.len() > MAX_LABELS {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "aggregate `{}` would have {} metadata keys; at most {MAX_LABELS} are allowed",
                    self.name,
                    self.metadata.len()
                ),
            ));
        }
        Ok(before != self.metadata)
    }

    /// The store key of aggregate `name`.
    pub fn key_for(name: &AggregateName) -> String {
        <Aggregate as StoredObject>::key_for(name.as_str())
    }

    /// What the scheduler sees of it.
    pub fn host_aggregate(&self) -> HostAggregate {
        HostAggregate {
            name: self.name.to_string(),
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nodes: self.nodes.clone(),
        }
    }
}

impl StoredObject for Aggregate {
    const PREFIX: &'static str = AGGREGATES_PREFIX;
    const KIND: &'static str = "aggregate";

    fn id(&self) -> &str {
        self.name.as_str()
    }
    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }
    fn revision(&self) -> Revision {
        self.revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeRole, NodeStatus, Resources};

    fn node() -> Node {
        let now = Utc::now();
        let mut node = Node {
            id: "n1".into(),
            hostname: "n1".into(),
            address: "local".into(),
            region: "default".into(),
            zone: "default".into(),
            role: NodeRole::Combined,
            status: NodeStatus::Ready,
            capacity: Resources::default(),
            allocation_ratios: Default::default(),
            allocated: Resources::default(),
            labels: BTreeMap::new(),
            traits: BTreeSet::new(),
            reported: NodeMetadata {
                labels: BTreeMap::from([("arch".into(), "x86_64".into())]),
                traits: BTreeSet::from(["networks".into()]),
                carbon_intensity: None,
            },
            operator: NodeMetadata::default(),
            runtimes: BTreeSet::new(),
            missing_runtimes: BTreeMap::new(),
            drivers: BTreeMap::new(),
            images: BTreeSet::new(),
            carbon_intensity: None,
            last_heartbeat: None,
            orphan_sweep: None,
            onboarding: None,
            created_at: now,
            updated_at: now,
            revision: 0,
        };
        node.merge_metadata();
        node
    }

    #[test]
    fn operator_labels_merge_with_reported_ones_which_stay_read_only() {
        let mut n = node();
        assert!(n
            .change_labels(&LabelChanges::parse(&["disk=ssd"]).unwrap())
            .unwrap());
        assert_eq!(n.labels.get("disk").map(String::as_str), Some("ssd"));
        assert_eq!(n.labels.get("arch").map(String::as_str), Some("x86_64"));
        for args in [["arch=arm64"], ["arch-"]] {
            let err = n
                .change_labels(&LabelChanges::parse(&args).unwrap())
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition, "{err}");
            assert!(err.to_string().contains("label `arch`"), "{err}");
        }
        // Removing what is not there changes nothing.
        assert!(!n
            .change_labels(&LabelChanges::parse(&["absent-"]).unwrap())
            .unwrap());
        assert!(n
            .change_labels(&LabelChanges::parse(&["disk-"]).unwrap())
            .unwrap());
        assert!(!n.labels.contains_key("disk"));
    }

    #[test]
    fn an_operators_carbon_intensity_wins_over_the_agents_until_cleared() {
        let mut n = node();
        n.reported.carbon_intensity = Some(400);
        n.merge_metadata();
        assert_eq!(n.carbon_intensity, Some(400));
        let clean = CarbonIntensity::try_from(90u32).unwrap();
        assert!(n.set_carbon_intensity(Some(clean)));
        assert_eq!(n.carbon_intensity, Some(90));
        assert!(
            !n.set_carbon_intensity(Some(clean)),
            "the same again changes nothing"
        );
        // The agent registering again with its own figure changes nothing.
        n.reported.carbon_intensity = Some(500);
        n.merge_metadata();
        assert_eq!(n.carbon_intensity, Some(90));
        assert!(n.set_carbon_intensity(None));
        assert_eq!(n.carbon_intensity, Some(500));
        assert!(n.operator.is_empty());
    }

    #[test]
    fn a_carbon_intensity_is_a_whole_figure_within_reason() {
        assert_eq!(
            "120".parse::<CarbonIntensity>().unwrap().grams_per_kwh(),
            120
        );
        assert_eq!(CarbonIntensity::try_from(0i64).unwrap().grams_per_kwh(), 0);
        for bad in ["-1", "12.5", "", "5001", "dirty"] {
            let err = bad.parse::<CarbonIntensity>().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().contains("carbon_intensity"), "{err}");
        }
        for bad in [-1i64, 5001, i64::MAX] {
            assert!(CarbonIntensity::try_from(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<CarbonIntensity>("9000").is_err());
    }

    #[test]
    fn operator_traits_merge_and_reported_ones_cannot_be_taken_back() {
        let mut n = node();
        assert!(n
            .change_traits(&TraitChanges::adding(&["ssd"]).unwrap())
            .unwrap());
        assert!(n.traits.contains("ssd") && n.traits.contains("networks"));
        let err = n
            .change_traits(&TraitChanges::removing(&["networks"]).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("trait `networks`"), "{err}");
        assert!(n
            .change_traits(&TraitChanges::removing(&["ssd"]).unwrap())
            .unwrap());
        assert!(!n.traits.contains("ssd"));
    }

    #[test]
    fn a_record_from_before_the_split_keeps_its_agents_metadata() {
        let mut n = node();
        n.reported = NodeMetadata::default();
        n.labels = BTreeMap::from([("arch".into(), "x86_64".into())]);
        n.traits = BTreeSet::from(["networks".into()]);
        assert!(n.reported_traits().contains("networks"));
        n.change_labels(&LabelChanges::parse(&["disk=ssd"]).unwrap())
            .unwrap();
        assert_eq!(n.labels.len(), 2, "{:?}", n.labels);
        assert!(n.traits.contains("networks"));
        assert!(n.reported.labels.contains_key("arch"));
    }

    #[test]
    fn changes_name_their_field() {
        for (args, want) in [
            (vec![], "invalid labels: nothing to change"),
            (
                vec!["Bad Key=1"],
                "invalid labels: `Bad Key` is not a label key",
            ),
            (
                vec!["k=a\nb"],
                "invalid labels: `a\\nb` is not a label value",
            ),
            (vec!["k=1", "k=2"], "invalid labels: `k` is given twice"),
        ] {
            let err = LabelChanges::parse(&args).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
        let err = TraitChanges::from_parts(["a".into()], ["a".into()]).unwrap_err();
        assert!(err.to_string().contains("both added and removed"), "{err}");
    }
}
