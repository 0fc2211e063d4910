//! The [`NodeAgent`] trait: what the controller asks of a node. The
//! [`LocalAgent`] owns a node's drivers (in the embedded deployment, and
//! inside `zixiao agent`), each wrapped in a [`SerializedDriver`] so the
//! runtime sees one change of an instance at a time; the distributed
//! deployment adds one that speaks gRPC to `zixiao agent`.

mod serialized;

pub use serialized::SerializedDriver;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use crate::driver::{Driver, DriverError, DriverInfo};
use crate::host::HostFacts;
use crate::keyed_lock::KeyedLock;
use crate::model::{AllocationRatios, InstanceType, NodeRegistration, NodeRole, Resources};

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The machine's hostname.
    pub hostname: String,
    /// What it offers in all.
    pub capacity: Resources,
    /// Instance types it can run.
    pub runtimes: BTreeSet<InstanceType>,
    /// Instance types it cannot run, and why.
    pub missing_runtimes: BTreeMap<InstanceType, String>,
    /// The driver of each runtime it can run: its name and what it can do.
    pub drivers: BTreeMap<InstanceType, DriverInfo>,
}

/// What the controller asks of one node.
#[async_trait]
pub trait NodeAgent: Send + Sync + std::fmt::Debug {
    /// Facts about the node, for registration. Called when the node joins
    /// and when it re-registers. Read-only. Errors: `Unavailable`.
    async fn describe(&self) -> Result<NodeFacts, DriverError>;

    /// The driver for `instance_type` on this node. Errors: `Unsupported`
    /// naming what is missing (no such runtime here, or this build lacks it).
    fn driver(&self, instance_type: InstanceType) -> Result<Arc<dyn Driver>, DriverError>;
}

/// An agent in this process that owns the node's drivers.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    facts: NodeFacts,
    /// Labels and traits found on the machine, reported at registration.
    reported: (BTreeMap<String, String>, BTreeSet<String>),
    /// Allocation ratios from the node's configuration, if it sets them.
    allocation_ratios: Option<AllocationRatios>,
    drivers: BTreeMap<InstanceType, Arc<dyn Driver>>,
    /// Shared by every driver's [`SerializedDriver`].
    locks: KeyedLock,
}

impl LocalAgent {
    /// An agent for this machine, described by `host`, with no drivers yet.
    pub fn new(host: HostFacts) -> Self {
        let missing = InstanceType::ALL
            .into_iter()
            .map(|t| (t, format!("no {t} runtime was configured on this node")))
            .collect();
        LocalAgent {
            facts: NodeFacts {
                hostname: host.hostname,
                capacity: host.capacity,
                runtimes: BTreeSet::new(),
                missing_runtimes: missing,
                drivers: BTreeMap::new(),
            },
            reported: (BTreeMap::new(), BTreeSet::new()),
            allocation_ratios: None,
            drivers: BTreeMap::new(),
            locks: KeyedLock::default(),
        }
    }

    /// Adds the driver for its instance type, replacing any before it. Its
    /// calls that change an instance run one at a time per instance.
    pub fn with_driver(mut self, driver: Arc<dyn Driver>) -> Self {
        let ty = driver.instance_type();
        self.facts.runtimes.insert(ty);
        self.facts.missing_runtimes.remove(&ty);
        self.facts
            .drivers
            .insert(ty, DriverInfo::of(driver.as_ref()));
        let serialized = SerializedDriver::new(driver, self.locks.clone());
        self.drivers.insert(ty, Arc::new(serialized));
        self
    }

    /// Reports `labels` and `traits` found on the machine (its CPU, NUMA
    /// cells, KVM) with every registration: facts, read-only to operators.
    pub fn with_reported(
        mut self,
        labels: BTreeMap<String, String>,
        traits: BTreeSet<String>,
    ) -> Self {
        self.reported = (labels, traits);
        self
    }

    /// Registers the node with these allocation ratios (from its
    /// configuration) every time, instead of leaving the node's own (the
    /// defaults, or what `zixiao node update` set).
    pub fn with_allocation_ratios(mut self, ratios: AllocationRatios) -> Self {
        self.allocation_ratios = Some(ratios);
        self
    }

    /// Records why `instance_type` cannot run here (shown to users who ask for it).
    pub fn with_missing_runtime(
        mut self,
        instance_type: InstanceType,
        reason: impl Into<String>,
    ) -> Self {
        if !self.drivers.contains_key(&instance_type) {
            self.facts
                .missing_runtimes
                .insert(instance_type, reason.into());
        }
        self
    }

    /// The facts this agent reports, without waiting.
    pub fn describe_now(&self) -> &NodeFacts {
        &self.facts
    }

    /// A registration for this node under `id`, in the default region and
    /// zone, without onboarding: a node registered with it is ready at once
    /// (a joining agent adds its onboarding).
    pub fn registration(&self, id: impl Into<String>) -> NodeRegistration {
        NodeRegistration {
            id: id.into(),
            hostname: self.facts.hostname.clone(),
            address: "local".to_owned(),
            region: "default".to_owned(),
            zone: "default".to_owned(),
            role: NodeRole::Combined,
            capacity: self.facts.capacity,
            allocation_ratios: self.allocation_ratios,
            labels: self.reported.0.clone(),
            traits: self.reported.1.clone(),
            runtimes: self.facts.runtimes.clone(),
            missing_runtimes: self.facts.missing_runtimes.clone(),
            drivers: self.facts.drivers.clone(),
            carbon_intensity: None,
            onboarding: None,
        }
    }
}

#[async_trait]
impl NodeAgent for LocalAgent {
    async fn describe(&self) -> Result<NodeFacts, DriverError> {
        Ok(self.facts.clone())
    }

    fn driver(&self, instance_type: InstanceType) -> Result<Arc<dyn Driver>, DriverError> {
        self.drivers.get(&instance_type).cloned().ok_or_else(|| {
            let why = self
                .facts
                .missing_runtimes
                .get(&instance_type)
                .cloned()
                .unwrap_or_else(|| format!("no {instance_type} runtime on this node"));
            DriverError::Unsupported(why)
        })
    }
}
