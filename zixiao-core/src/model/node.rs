//! Nodes: the machines instances run on.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AllocationRatios, Cpus, InstanceType, NodeMetadata, Resources};
use crate::driver::DriverInfo;

/// A node's unique name, also its id (`worker-1`).
pub type NodeId = String;

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Runs instances only.
    #[default]
    Worker,
    /// Runs the control plane only.
    Control,
    /// Runs both: the embedded single-machine deployment.
    Combined,
}

/// A node's lifecycle status. Only [`NodeStatus::Ready`] nodes get new instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Healthy and schedulable.
    Ready,
    /// Its agent stopped heartbeating.
    NotReady,
    /// An operator stopped new placements; running instances stay.
    Cordoned,
    /// Under maintenance: emptied and unschedulable until maintenance ends.
    Maintenance,
    /// Being emptied: instances are moved or stopped.
    Draining,
    /// Retired; kept for the record.
    Decommissioned,
    /// Its agent joined and is proving the node works: a smoke test boots
    /// one small instance of each runtime it offers (see [`Onboarding`]).
    /// Unschedulable until the test passes.
    Onboarding,
    /// Its smoke test failed: unschedulable, [`Node::onboarding`] says which
    /// runtime failed at which step, and why. Restarting its agent retries.
    OnboardingFailed,
}

impl NodeStatus {
    /// Every status, in display order.
    pub const ALL: [NodeStatus; 8] = [
        NodeStatus::Ready,
        NodeStatus::NotReady,
        NodeStatus::Cordoned,
        NodeStatus::Maintenance,
        NodeStatus::Draining,
        NodeStatus::Decommissioned,
        NodeStatus::Onboarding,
        NodeStatus::OnboardingFailed,
    ];

    /// The snake_case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::NotReady => "not_ready",
            NodeStatus::Cordoned => "cordoned",
            NodeStatus::Maintenance => "maintenance",
            NodeStatus::Draining => "draining",
            NodeStatus::Decommissioned => "decommissioned",
            NodeStatus::Onboarding => "onboarding",
            NodeStatus::OnboardingFailed => "onboarding_failed",
        }
    }

    /// Whether a node in this status takes the status its agent's
    /// onboarding gives ([`Onboarding::status`]). An operator's status
    /// (cordoned, in maintenance, draining, decommissioned) stays when the
    /// agent onboards again: it says more than a smoke test does.
    pub fn follows_onboarding(self) -> bool {
        matches!(
            self,
            NodeStatus::Ready
                | NodeStatus::NotReady
                | NodeStatus::Onboarding
                | NodeStatus::OnboardingFailed
        )
    }
}

/// The most image names a [`Node`] records: enough for locality on a
/// working node, bounded so a node with thousands of images does not
/// grow every node record (the rest are left out, in name order).
pub const MAX_NODE_IMAGES: usize = 256;

/// A node as stored: identity, placement domain, capacity and what is allocated on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique name of the node.
    pub id: NodeId,
    /// The machine's hostname.
    pub hostname: String,
    /// Where its agent is reached (`host:port`, or `local` for the in-process agent).
    pub address: String,
    /// Region the node is in.
    pub region: String,
    /// Zone within the region.
    pub zone: String,
    /// What the node does.
    pub role: NodeRole,
    /// Lifecycle status.
    pub status: NodeStatus,
    /// What the node offers in all.
    pub capacity: Resources,
    /// How far its CPU and memory may be promised beyond `capacity`:
    /// placement counts against [`Node::allocatable`].
    #[serde(default)]
    pub allocation_ratios: AllocationRatios,
    /// What instances placed on it hold. Updated in the same transaction as
    /// each placement and release, so it never over-commits.
    pub allocated: Resources,
    /// Labels node selectors match: its agent's and its operators', merged
    /// ([`Node::merge_metadata`]; see [`NodeMetadata`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Capabilities the node declares (`gpu`, `ssd`, `avx512`), for
    /// required traits: its agent's and its operators', merged.
    #[serde(default)]
    pub traits: BTreeSet<String>,
    /// The labels and traits its agent reported when it last registered:
    /// facts about the machine, read-only to operators.
    #[serde(default, skip_serializing_if = "NodeMetadata::is_empty")]
    pub reported: NodeMetadata,
    /// The labels and traits operators declared (`zixiao node label`,
    /// `zixiao node trait`); registrations leave them as they are.
    #[serde(default, skip_serializing_if = "NodeMetadata::is_empty")]
    pub operator: NodeMetadata,
    /// Instance types the node can run now.
    #[serde(default)]
    pub runtimes: BTreeSet<InstanceType>,
    /// Instance types it cannot run, with the reason (a missing daemon, a build without the driver).
    #[serde(default)]
    pub missing_runtimes: BTreeMap<InstanceType, String>,
    /// The driver of each runtime it can run: its name and what it can do.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drivers: BTreeMap<InstanceType, DriverInfo>,
    /// The images it holds, by the name its runtimes list them under
    /// (container images by full reference, disks, kernels and initrds by
    /// their store name), as last listed after a pull, import or removal
    /// through the API or a create that may have pulled; at most
    /// [`MAX_NODE_IMAGES`] of them. The image-locality score prefers nodes
    /// that hold an instance's images.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub images: BTreeSet<String>,
    /// Carbon intensity of its power in grams of CO2-equivalent per kWh,
    /// if known, for carbon-aware placement: its operators' figure
    /// (`zixiao node set --carbon`), else its agent's.
    #[serde(default)]
    pub carbon_intensity: Option<u32>,
    /// How its agent's last onboarding went: the smoke test of each
    /// runtime, or that it was skipped. None for a node that never
    /// onboarded (the embedded deployment's local node, records from
    /// before onboarding existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onboarding: Option<Onboarding>,
    /// When its agent last proved it was alive.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// What the node's last orphan sweep that found something (or the
    /// first after its agent started) did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_sweep: Option<OrphanSweep>,
    /// When it first registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Store revision of this object; updates are compare-and-swap on it.
    #[serde(default)]
    pub revision: u64,
}

impl Node {
    /// What may be reserved on it in all: its capacity, CPU and memory
    /// scaled by its allocation ratios.
    ///
    pub fn allocatable(&self) -> Resources {
        let ratios = self.allocation_ratios;
        let cpu_millis = ratios.cpu.scale(u64::from(self.capacity.cpus.millis()));
        Resources {
            cpus: Cpus::from_millis(u32::try_from(cpu_millis).unwrap_or(u32::MAX)),
            memory_mib: ratios.memory.scale(self.capacity.memory_mib),
            ..self.capacity
        }
    }

    /// What is left for new instances.
    pub fn free(&self) -> Resources {
        self.allocatable().saturating_sub(&self.allocated)
    }

    /// Whether the scheduler may place new instances here.
    pub fn is_schedulable(&self) -> bool {
        self.status == NodeStatus::Ready
    }

    /// Withdraws every runtime the node offers, as a decommissioned node
    /// does: each is listed as missing, saying why, so `node get` and a
    /// placement's explanation tell the same story.
    pub fn retire_runtimes(&mut self) {
        for runtime in std::mem::take(&mut self.runtimes) {
            self.missing_runtimes
                .insert(runtime, RETIRED_RUNTIME.to_owned());
        }
    }
}

/// Why a decommissioned node offers a runtime no more.
const RETIRED_RUNTIME: &str =
    "the node is decommissioned (delete it with `zixiao node delete` to register it anew)";

/// What one orphan sweep of a node found: runtime objects (containers,
/// monitor processes, domains) that the node's records did not explain,
/// and what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanSweep {
    /// When it ran.
    pub at: Option<DateTime<Utc>>,
    /// Ids of instances the cluster places on this node, taken back into
    /// the node's records.
    pub adopted: Vec<String>,
    /// Ids of instances placed elsewhere or deleted, whose runtime objects
    /// were stopped and removed.
    pub removed: Vec<String>,
    /// What could not be decided or removed, with the reason (retried by
    /// the next sweep).
    pub errors: Vec<String>,
}

impl OrphanSweep {
    /// Whether it found nothing.
    pub fn is_empty(&self) -> bool {
        self.adopted.is_empty() && self.removed.is_empty() && self.errors.is_empty()
    }
}

/// What a node says about itself when it joins (or re-joins) the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRegistration {
    /// Unique name of the node (a DNS label).
    pub id: NodeId,
    /// The machine's hostname.
    pub hostname: String,
    /// Where its agent is reached.
    pub address: String,
    /// Region, `default` when not set.
    #[serde(default = "default_domain")]
    pub region: String,
    /// Zone, `default` when not set.
    #[serde(default = "default_domain")]
    pub zone: String,
    /// Role of the node.
    #[serde(default)]
    pub role: NodeRole,
    /// Capacity offered.
    pub capacity: Resources,
    /// The allocation ratios its configuration sets. None keeps what the
    /// node has (the defaults for a new node, or what `node update` set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_ratios: Option<AllocationRatios>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Traits.
    #[serde(default)]
    pub traits: BTreeSet<String>,
    /// Instance types it can run.
    #[serde(default)]
    pub runtimes: BTreeSet<InstanceType>,
    /// Instance types it cannot run, and why.
    #[serde(default)]
    pub missing_runtimes: BTreeMap<InstanceType, String>,
    /// The driver of each runtime it can run: its name and what it can do.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drivers: BTreeMap<InstanceType, DriverInfo>,
    /// Carbon intensity of its power (gCO2e/kWh), if known.
    #[serde(default)]
    pub carbon_intensity: Option<u32>,
    /// Where the agent's onboarding stands: with it the node's status
    /// follows it ([`Onboarding::status`]); without it (the embedded
    /// deployment) the node is ready at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onboarding: Option<Onboarding>,
}

impl NodeRegistration {
    /// The labels and traits it reports, as the node keeps them.
    pub fn reported(&self) -> NodeMetadata {
        NodeMetadata {
            labels: self.labels.clone(),
            traits: self.traits.clone(),
            carbon_intensity: self.carbon_intensity,
        }
    }
}

/// How a joining node proved (or failed to prove) that it can run what it
/// offers, before it took any work: its agent boots one small instance of
/// each runtime, directly through the runtime's driver, and deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onboarding {
    /// Where it stands.
    pub state: OnboardingState,
    /// When the agent started it.
    pub started_at: DateTime<Utc>,
    /// When it ended (None while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// What was checked of each runtime, in runtime order (empty while it
    /// runs, and when skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<RuntimeCheck>,
}

/// Where a node's onboarding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnboardingState {
    /// The smoke test runs.
    Running,
    /// Every runtime passed.
    Passed,
    /// A runtime failed (see its [`RuntimeCheck`]).
    Failed,
    /// Its operator said `--skip-smoke-test`: nothing was checked.
    Skipped,
}

impl OnboardingState {
    /// The snake_case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            OnboardingState::Running => "running",
            OnboardingState::Passed => "passed",
            OnboardingState::Failed => "failed",
            OnboardingState::Skipped => "skipped",
        }
    }
}

/// What the smoke test did with one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeCheck {
    /// The runtime's instance type.
    pub runtime: InstanceType,
    /// How it went.
    pub outcome: CheckOutcome,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The step that failed (`Failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<SmokeStep>,
    /// What was booted, or why nothing was, or the error.
    pub detail: String,
}

impl RuntimeCheck {
    /// The longest detail one runtime's check may carry: room for an
    /// error's chain, not for a log.
    pub const MAX_DETAIL: usize = 2048;
}

/// How one runtime's smoke test went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// An instance was created, seen running, deleted, and seen gone.
    Booted,
    /// The runtime answered, but nothing was booted: no smoke workload is
    /// configured for it. Passes, and never reads as booted.
    Reachable,
    /// A step failed.
    Failed,
}

impl CheckOutcome {
    /// The snake_case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Booted => "booted",
            CheckOutcome::Reachable => "reachable",
            CheckOutcome::Failed => "failed",
        }
    }
}

/// A step of a runtime's smoke test, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmokeStep {
    /// Asking the runtime about an instance it cannot have yet.
    Reach,
    /// Pulling the smoke image from its registry, when the runtime does
    /// not hold it yet.
    Pull,
    /// Creating the instance.
    Create,
    /// Starting it.
    Start,
    /// Waiting until the runtime says it runs (or ran and exited 0).
    Run,
    /// Deleting it.
    Delete,
    /// Checking the runtime has no trace of it left.
    Gone,
}

impl SmokeStep {
    /// The snake_case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            SmokeStep::Reach => "reach",
            SmokeStep::Pull => "pull",
            SmokeStep::Create => "create",
            SmokeStep::Start => "start",
            SmokeStep::Run => "run",
            SmokeStep::Delete => "delete",
            SmokeStep::Gone => "gone",
        }
    }
}

impl Onboarding {
    /// The status a node in this onboarding state has: `Onboarding` while
    /// it runs, `OnboardingFailed` when it failed, `Ready` once passed or
    /// skipped.
    pub fn status(&self) -> NodeStatus {
        match self.state {
            OnboardingState::Running => NodeStatus::Onboarding,
            OnboardingState::Failed => NodeStatus::OnboardingFailed,
            OnboardingState::Passed | OnboardingState::Skipped => NodeStatus::Ready,
        }
    }

    /// Why it failed: the first failed runtime, its step and its error.
    pub fn failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| c.outcome == CheckOutcome::Failed)
            .map(|c| {
                format!(
                    "{} failed at step {}: {}",
                    c.runtime,
                    c.step.map_or("-", SmokeStep::as_str),
                    c.detail
                )
            })
    }
}

pub(crate) fn default_domain() -> String {
    "default".to_owned()
}
