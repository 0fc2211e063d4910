//! Instances: a workload's intent (desired state, spec) and what was observed of it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Cpus, CreateInstance, InstanceSpec, NetworkAttachment, NodeId, Resources, ScheduledSnapshot,
};

/// An instance's unique id (a UUID), fixed for its whole life.
pub type InstanceId = String;

/// What the user wants the instance to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Running on a node.
    Running,
    /// Created on a node but not running.
    Stopped,
    /// Gone: removed from its node, its resources released, its record deleted.
    Deleted,
}

/// What was last observed of the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Waiting for a node (see the `scheduled` condition for why).
    Pending,
    /// A node was chosen and its resources reserved.
    Scheduled,
    /// Its node is creating (and starting) it.
    Creating,
    /// Running.
    Running,
    /// Frozen on its node by a pause; resumes where it was.
    Paused,
    /// Its node is stopping it.
    Stopping,
    /// Exists on its node, not running.
    Stopped,
    /// Creating, starting or running it failed (see the conditions and `exit`).
    Failed,
    /// Being removed from its node.
    Deleting,
}

impl InstanceStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [InstanceStatus; 9] = [
        InstanceStatus::Pending,
        InstanceStatus::Scheduled,
        InstanceStatus::Creating,
        InstanceStatus::Running,
        InstanceStatus::Paused,
        InstanceStatus::Stopping,
        InstanceStatus::Stopped,
        InstanceStatus::Failed,
        InstanceStatus::Deleting,
    ];

    /// The snake_case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Pending => "pending",
            InstanceStatus::Scheduled => "scheduled",
            InstanceStatus::Creating => "creating",
            InstanceStatus::Running => "running",
            InstanceStatus::Paused => "paused",
            InstanceStatus::Stopping => "stopping",
            InstanceStatus::Stopped => "stopped",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Deleting => "deleting",
        }
    }
}

/// What a condition is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionType {
    /// Whether a node was found; when false, the message says why not.
    Scheduled,
    /// Whether the runtime accepted the last create/start/stop/delete.
    RuntimeReady,
    /// Whether the workload exited by itself (see `exit`).
    Exited,
    /// Whether the snapshot schedule's last attempt (a snapshot, or the
    /// pruning after it) succeeded; when false, the message says what
    /// failed, and the next tick tries again.
    SnapshotSchedule,
}

/// One observation about an instance, with a machine-readable reason and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// What it is about.
    #[serde(rename = "type")]
    pub condition_type: ConditionType,
    /// Whether it holds.
    pub status: bool,
    /// A CamelCase reason (`Unschedulable`, `CreateFailed`, `OomKilled`).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
    /// When `status` last changed.
    pub since: DateTime<Utc>,
}

/// How the workload last exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code (128 + signal when killed by a signal).
    pub code: i32,
    /// Whether the kernel's OOM killer ended it.
    #[serde(default)]
    pub oom_killed: bool,
    /// When it exited.
    pub at: DateTime<Utc>,
}

/// Create or start attempts that failed in a row, for the restart policy's
/// back-off (an instance that never ran has no [`ExitStatus`] to go by).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// How many attempts failed since it last ran.
    pub attempts: u32,
    /// When the last one failed.
    pub at: DateTime<Utc>,
}

/// The CPUs and memory a runtime gives a running instance, as it reports
/// them (a VM's vCPUs, and the memory its balloon leaves the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeSize {
    /// CPUs (a VM's vCPUs, whole cores).
    pub cpus: Cpus,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// An instance as stored: identity, intent, observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique id.
    pub id: InstanceId,
    /// Unique name.
    pub name: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What to run.
    pub spec: InstanceSpec,
    /// What the user wants.
    pub desired: DesiredState,
    /// What was last observed.
    pub status: InstanceStatus,
    /// The node it is placed on, once scheduled.
    pub node: Option<NodeId>,
    /// The runtime on its node that runs it (`containerd`, `libvirt`,
    /// `vmm`, `qemu`), recorded when it was created there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The template version it was created from, if any (what
    /// `template get` counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<super::TemplateOrigin>,
    /// The instance it was cloned from, if any (`instance clone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_of: Option<super::CloneOrigin>,
    /// Its place on each network of `spec.networks`, in the same order:
    /// addresses and MAC allocated when it was created, released when it is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<NetworkAttachment>,
    /// Observations with reasons; at most one per [`ConditionType`].
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// How the workload last exited by itself, if it did.
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    /// Failed create or start attempts since it last ran; the restart
    /// policy retries them with a back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Whether its CPU and memory are counted in its node's allocation. They
    /// are given back while it is stopped or has failed for good (its disk
    /// and its place on the node stay), and reserved again, if the node
    /// still has room, before it starts.
    #[serde(default = "reserved_by_default")]
    pub compute_reserved: bool,
    /// Set when the instance must leave its node (a drain): the reconciler
    /// removes it there, releases the node's resources and schedules it anew.
    #[serde(default)]
    pub reschedule: bool,
    /// Set with `reschedule` by `instance migrate`: the node the
    /// reconciler assigns it to in the same transaction that releases it
    /// from its node (once its runtime there is gone), instead of making
    /// it pending for the scheduler. Cleared by that transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_to: Option<NodeId>,
    /// Restarts the user asked for; the reconciler restarts until `restarts_done` catches up.
    #[serde(default)]
    pub restarts_requested: u64,
    /// Restarts carried out, by request or by restart policy.
    #[serde(default)]
    pub restarts_done: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it last started running.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// The last snapshot its schedule took (`spec.snapshot_schedule`):
    /// stored, so the next is due an interval later whichever controller
    /// runs the schedule then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_snapshot: Option<ScheduledSnapshot>,
    /// The last operation started on it: set in the answers of the calls
    /// that start one (create, start, stop, restart, delete, clone, an
    /// update that restarts it) and of a get, so `--no-wait` can print it.
    /// Not kept in the instance's record (the operations' own index is the
    /// one owner of "last operation"), so no write of the instance by a
    /// reconciler can lose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<super::OperationId>,
    /// The size its runtime really gives it now, when that is not yet the
    /// spec's (a VM's balloon still moving to a new memory size): set in
    /// the answers of reads that ask the runtime, until the two agree.
    /// Never kept in the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_size: Option<RuntimeSize>,
    /// Where the host side of its vsock device is (`spec.vsock`), as its
    /// node's driver reported when it created it there: a path on that
    /// node. None without a vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<super::VsockEndpoint>,
    /// Store revision of this object; updates are compare-and-swap on it.
    #[serde(default)]
    pub revision: u64,
}

/// Records written before compute could be released held everything.
fn reserved_by_default() -> bool {
    true
}

impl Instance {
    /// The node a live migration is moving it to now, if one is:
    /// `migrate_to` without `reschedule` (a restart migration sets both).
    /// The one owner of that reading: until the migration ends, the
    /// instance belongs to its target as much as to its source, so neither
    /// node removes it as a stray, and no reconciler acts on it (the
    /// migration's caller does).
    pub fn live_migration_target(&self) -> Option<&str> {
        self.migrate_to
            .as_deref()
            .filter(|_| !self.reschedule && self.node.is_some())
    }

    /// A new instance from a validated request: wanted running, pending,
    /// on no node, revision 0 (not stored yet).
    pub fn new(id: impl Into<InstanceId>, request: CreateInstance, now: DateTime<Utc>) -> Self {
        Instance {
            id: id.into(),
            name: request.name,
            labels: request.labels,
            spec: request.spec,
            desired: DesiredState::Running,
            status: InstanceStatus::Pending,
            node: None,
            runtime: None,
            template: None,
            clone_of: None,
            attachments: Vec::new(),
            conditions: Vec::new(),
            exit: None,
            failure: None,
            compute_reserved: true,
            reschedule: false,
            migrate_to: None,
            restarts_requested: 0,
            restarts_done: 0,
            created_at: now,
            updated_at: now,
            started_at: None,
            last_scheduled_snapshot: None,
            operation: None,
            runtime_size: None,
            vsock: None,
            revision: 0,
        }
    }

    /// What it holds on its node: everything it asks for while its compute
    /// is reserved, else its disk and its place.
    pub fn held(&self) -> Resources {
        let all = self.spec.resources();
        if self.compute_reserved {
            all
        } else {
            Resources {
                cpus: Cpus::ZERO,
                memory_mib: 0,
                ..all
            }
        }
    }

    /// The condition of `condition_type`, if recorded.
    pub fn condition(&self, condition_type: ConditionType) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.condition_type == condition_type)
    }

    /// Records a condition, replacing the previous one of its type. `since`
    /// only moves when `status` flips, as in Kubernetes.
    pub fn set_condition(
        &mut self,
        condition_type: ConditionType,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
        now: DateTime<Utc>,
    ) {
        let reason = reason.into();
        let message = message.into();
        match self
            .conditions
            .iter_mut()
            .find(|c| c.condition_type == condition_type)
        {
            Some(existing) => {
                if existing.status != status {
                    existing.since = now;
                }
                existing.status = status;
                existing.reason = reason;
                existing.message = message;
            }
            None => {
                self.conditions.push(Condition {
                    condition_type,
                    status,
                    reason,
                    message,
                    since: now,
                });
                self.conditions.sort_by_key(|c| c.condition_type);
            }
        }
    }

    /// Whether what was observed matches what is wanted, so the reconcilers
    /// have nothing left to do (a failed instance has converged as far as it can).
    pub fn has_converged(&self) -> bool {
        match self.desired {
            DesiredState::Running => {
                matches!(
                    self.status,
                    InstanceStatus::Running | InstanceStatus::Paused
                ) && !self.reschedule
                    && self.restarts_done >= self.restarts_requested
            }
            DesiredState::Stopped => self.status == InstanceStatus::Stopped && !self.reschedule,
            DesiredState::Deleted => false,
        }
    }

    /// The message of the first false condition: why the instance is not
    /// where it was asked to be.
    pub fn problem(&self) -> Option<&str> {
        self.conditions
            .iter()
            .find(|c| {
                !c.status
                    && !matches!(
                        c.condition_type,
                        ConditionType::Exited | ConditionType::SnapshotSchedule
                    )
            })
            .map(|c| c.message.as_str())
    }
}
