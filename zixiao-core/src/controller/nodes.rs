//! Node operations: register, deregister, look up, cordon, drain,
//! maintenance, decommission.
//!
//! **Evacuation** (drain, maintenance, decommission) moves what runs on
//! the node, a few instances at a time
//! ([`ControllerOptions::evacuation_concurrency`](super::ControllerOptions)):
//! a running VM or microVM migrates live when both nodes' drivers can,
//! else cold (stopped, its disk copied, started on the target), so its
//! guest and its disk survive; only when neither works (why is in the
//! report) does it restart elsewhere as a container does, from its image.
//! An instance whose restart policy is `never` is moved only live (cold
//! and restart both restart its workload) and otherwise stopped in place.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Controller;
use crate::model::{
    DesiredState, Instance, InstanceStatus, InstanceType, MigrationMode, Node, NodeMetadata,
    NodeRegistration, NodeStatus, OrphanSweep, Resources, RestartPolicy,
};
use crate::store::{put_object, StoreError, StoreExt, Txn};
use crate::{Error, Result};

/// What a drain or a maintenance did to the node's instances: each one is
/// in exactly one of `migrated`, `moved`, `pending` and `stopped`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// The node.
    pub node: String,
    /// Instances migrated to other nodes, live or cold: their disks came
    /// along (and, live, their guests kept running).
    #[serde(default)]
    pub migrated: Vec<MigratedInstance>,
    /// Instances restarted on other nodes from their images (restart
    /// policy `always` or `on_failure`): containers, and VMs that could
    /// not migrate (see `not_migrated`).
    pub moved: Vec<String>,
    /// Instances that could not move and wait for a node (see their `scheduled` condition).
    pub pending: Vec<String>,
    /// Instances stopped in place (restart policy `never`).
    pub stopped: Vec<String>,
    /// The node's status afterwards.
    pub status: Option<NodeStatus>,
    /// Why a VM or microVM was not migrated, by instance name: each
    /// migration tried, with its error (the instance is then in `moved`,
    /// `pending` or `stopped`).
    #[serde(default)]
    pub not_migrated: BTreeMap<String, String>,
}

/// An instance an evacuation migrated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigratedInstance {
    /// The instance's name.
    pub name: String,
    /// How it moved: `live` or `cold`.
    pub mode: MigrationMode,
    /// The node it runs on now.
    pub to: String,
}

/// Where one instance ended up after an evacuation.
enum Evacuated {
    Migrated(MigratedInstance),
    Moved(String),
    Pending(String),
    Stopped(String),
    Gone,
}

impl Controller {
    /// Registers a node, or refreshes the facts of a known one (its capacity,
    /// reported labels and traits, runtimes) keeping its status, its
    /// allocation and what operators declared of it (see
    /// [`NodeMetadata`]). A `NotReady` node that registers again becomes
    /// `Ready`. A registration carrying its agent's onboarding sets the
    /// node's status from it instead ([`apply_onboarding`]), so a joining
    /// agent's node is `Onboarding` until its smoke test passes; one
    /// without (the embedded deployment's local node) is `Ready` at once.
    ///
    /// Idempotent. Errors: `InvalidArgument`, `Conflict`, the store's errors.
    pub async fn register_node(&self, registration: NodeRegistration) -> Result<Node> {
        registration.validate()?;
        let now = self.now();
        let store = &self.inner.store;
        for _ in 0..self.options().max_conflict_retries {
            let existing: Option<Node> = store.get_object(&registration.id).await?;
            let node = match existing {
                Some(mut node) => {
                    let before = node.clone();
                    node.hostname = registration.hostname.clone();
                    node.address = registration.address.clone();
                    node.region = registration.region.clone();
                    node.zone = registration.zone.clone();
                    node.role = registration.role;
                    node.capacity = registration.capacity;
                    if let Some(ratios) = registration.allocation_ratios {
                        node.allocation_ratios = ratios;
                    }
                    // What operators declared stays (see `NodeMetadata`).
                    node.reported = registration.reported();
                    node.merge_metadata();
                    node.runtimes = registration.runtimes.clone();
                    node.missing_runtimes = registration.missing_runtimes.clone();
                    node.drivers = registration.drivers.clone();
                    if node.status == NodeStatus::NotReady {
                        node.status = NodeStatus::Ready;
                    }
                    apply_onboarding(&mut node, &registration);
                    // A retired node's agent (or the embedded deployment
                    // opening its local node) still registers; it stays
                    // retired, offering nothing, until it is deleted.
                    if node.status == NodeStatus::Decommissioned {
                        node.retire_runtimes();
                    }
                    if node == before {
                        return Ok(node);
                    }
                    node.updated_at = now;
                    node
                }
                None => {
                    let mut node = Node {
                        id: registration.id.clone(),
                        hostname: registration.hostname.clone(),
                        address: registration.address.clone(),
                        region: registration.region.clone(),
                        zone: registration.zone.clone(),
                        role: registration.role,
                        status: NodeStatus::Ready,
                        capacity: registration.capacity,
                        allocation_ratios: registration.allocation_ratios.unwrap_or_default(),
                        allocated: Resources::default(),
                        labels: BTreeMap::new(),
                        traits: BTreeSet::new(),
                        reported: registration.reported(),
                        operator: NodeMetadata::default(),
                        runtimes: registration.runtimes.clone(),
                        missing_runtimes: registration.missing_runtimes.clone(),
                        drivers: registration.drivers.clone(),
                        // Listed after the first pull, import or create.
                        images: BTreeSet::new(),
                        // Merged from what the agent reported.
                        carbon_intensity: None,
                        last_heartbeat: Some(now),
                        orphan_sweep: None,
                        onboarding: None,
                        created_at: now,
                        updated_at: now,
                        revision: 0,
                    };
                    node.merge_metadata();
                    apply_onboarding(&mut node, &registration);
                    node
                }
            };
            match self.commit(put_object(Txn::new(), &node)).await {
                Ok(revision) => {
                    let mut node = node;
                    node.revision = revision;
                    return Ok(node);
                }
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("node", &registration.id))
    }

    /// Removes a node that holds no instances. Errors: `NotFound`,
    /// `FailedPrecondition` (instances are placed on it: drain or
    /// decommission it, then delete those that stayed).
    pub async fn deregister_node(&self, node: &str) -> Result<()> {
        let node = self.get_node(node).await?;
        let placed = self.instances_on(&node.id).await?;
        if !placed.is_empty() {
            let mut names: Vec<&str> = placed.iter().map(|i| i.name.as_str()).collect();
            names.sort_unstable();
            let shown = names.len().min(5);
            let more = match names.len() - shown {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            return Err(Error::FailedPrecondition(format!(
                "node `{}` still holds {} instance(s) ({}{more}); drain or decommission it, \
                 then delete those that stayed",
                node.id,
                placed.len(),
                names[..shown].join(", ")
            )));
        }
        let txn = Txn::new().delete(
            Node::key_for_id(&node.id),
            crate::store::Precondition::Revision(node.revision),
        );
        self.commit(txn).await?;
        Ok(())
    }

    /// The node with id (or hostname) `node`, as stored now (a hostname is
    /// looked up in the cache). Errors: `NotFound`.
    pub async fn get_node(&self, node: &str) -> Result<Node> {
        if let Some(found) = self.inner.store.get_object::<Node>(node).await? {
            return Ok(found);
        }
        self.caught_up().await?;
        let by_hostname: Vec<String> = self
            .inner
            .cache
            .read()
            .nodes
            .nodes()
            .iter()
            .filter(|n| n.hostname == node)
            .map(|n| n.id.clone())
            .collect();
        match by_hostname.as_slice() {
            [id] => match self.inner.store.get_object::<Node>(id).await? {
                Some(found) => Ok(found),
                None => Err(Error::not_found(format!("node `{node}`"))),
            },
            [] => Err(Error::not_found(format!("node `{node}`"))),
            many => Err(Error::invalid(
                "node",
                format!(
                    "hostname `{node}` matches {} nodes; use the node id",
                    many.len()
                ),
            )),
        }
    }

    /// Every node, in id order, from the cache: as of at least this
    /// controller's last write.
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.caught_up().await?;
        let mut nodes = self.inner.cache.read().nodes.nodes().to_vec();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Stops new placements on a ready node; its instances keep running.
    /// Idempotent. Errors: `NotFound`, `FailedPrecondition` (in maintenance,
    /// draining or decommissioned).
    pub async fn cordon_node(&self, node: &str) -> Result<Node> {
        self.set_node_status(
            node,
            NodeStatus::Cordoned,
            &[NodeStatus::Ready, NodeStatus::NotReady],
        )
        .await
    }

    /// Allows placements on a cordoned node again. Idempotent. Errors:
    /// `NotFound`, `FailedPrecondition` (in maintenance: end it instead).
    pub async fn uncordon_node(&self, node: &str) -> Result<Node> {
        self.set_node_status(node, NodeStatus::Ready, &[NodeStatus::Cordoned])
            .await
    }

    /// Empties a node: no new placements, instances with restart policy
    /// `always`/`on_failure` move to other nodes (or wait pending when none
    /// fits), others are stopped in place. The node ends `Cordoned`.
    /// Errors: `NotFound`, `FailedPrecondition` (in maintenance or
    /// decommissioned), and the first error evicting an instance.
    pub async fn drain_node(&self, node: &str) -> Result<DrainReport> {
        let node = self
            .set_node_status(
                node,
                NodeStatus::Draining,
                &[
                    NodeStatus::Ready,
                    NodeStatus::Cordoned,
                    NodeStatus::NotReady,
                ],
            )
            .await?;
        let mut report = self.evict_all(&node.id).await?;
        let node = self
            .set_node_status(&node.id, NodeStatus::Cordoned, &[NodeStatus::Draining])
            .await?;
        report.status = Some(node.status);
        Ok(report)
    }

    /// Takes a node out of service for good: empties it as
    /// [`Controller::drain_node`] does (from any status, maintenance
    /// included), then marks it `Decommissioned` with its runtimes withdrawn
    /// ([`Node::retire_runtimes`]), so no placement considers it again and
    /// its agent's registrations do not bring it back. Instances that could
    /// not move stay on it, stopped, until they are deleted; then
    /// [`Controller::deregister_node`] removes the record. Idempotent: a
    /// second call finds nothing to move. Errors: `NotFound`, and the first
    /// error evicting an instance (the node is left `Draining`, and a
    /// second call carries on).
    pub async fn decommission_node(&self, node: &str) -> Result<DrainReport> {
        let found = self.get_node(node).await?;
        if found.status != NodeStatus::Decommissioned {
            self.set_node_status(
                &found.id,
                NodeStatus::Draining,
                &[
                    NodeStatus::Ready,
                    NodeStatus::Cordoned,
                    NodeStatus::NotReady,
                    NodeStatus::Maintenance,
                    NodeStatus::Onboarding,
                    NodeStatus::OnboardingFailed,
                ],
            )
            .await?;
        }
        let mut report = self.evict_all(&found.id).await?;
        let now = self.now();
        let node = self
            .update_object::<Node, _>(&found.id, |n| {
                if n.status == NodeStatus::Decommissioned && n.runtimes.is_empty() {
                    return Ok(false);
                }
                n.status = NodeStatus::Decommissioned;
                n.retire_runtimes();
                n.updated_at = now;
                Ok(true)
            })
            .await?;
        report.status = Some(node.status);
        Ok(report)
    }

    /// Records what node `node`'s orphan sweep did (shown on the node).
    /// Errors: `NotFound`, `Conflict`, the store's errors.
    pub async fn record_orphan_sweep(&self, node: &str, sweep: OrphanSweep) -> Result<Node> {
        self.update_object::<Node, _>(node, |n| {
            n.orphan_sweep = Some(sweep.clone());
            Ok(true)
        })
        .await
    }

    /// Puts a node in maintenance (emptied as by a drain, unschedulable until
    /// maintenance ends) or takes it out (`Ready` again). Idempotent.
    /// Errors: `NotFound`, `FailedPrecondition` (decommissioned).
    pub async fn set_maintenance(&self, node: &str, on: bool) -> Result<DrainReport> {
        if on {
            let node = self
                .set_node_status(
                    node,
                    NodeStatus::Maintenance,
                    &[
                        NodeStatus::Ready,
                        NodeStatus::Cordoned,
                        NodeStatus::NotReady,
                        NodeStatus::Draining,
                    ],
                )
                .await?;
            let mut report = self.evict_all(&node.id).await?;
            report.status = Some(node.status);
            Ok(report)
        } else {
            let node = self
                .set_node_status(node, NodeStatus::Ready, &[NodeStatus::Maintenance])
                .await?;
            Ok(DrainReport {
                node: node.id,
                status: Some(node.status),
                ..DrainReport::default()
            })
        }
    }

    async fn set_node_status(
        &self,
        node: &str,
        to: NodeStatus,
        from: &[NodeStatus],
    ) -> Result<Node> {
        let id = self.get_node(node).await?.id;
        let now = self.now();
        self.update_object::<Node, _>(&id, |node| {
            // Back to work means back to what its onboarding left it: a
            // node whose smoke test failed (or still runs) while it was
            // cordoned or in maintenance does not become ready.
            let to = match (to, &node.onboarding) {
                (NodeStatus::Ready, Some(onboarding)) => onboarding.status(),
                _ => to,
            };
            if node.status == to {
                return Ok(false);
            }
            if !from.contains(&node.status) {
                return Err(Error::FailedPrecondition(format!(
                    "node `{}` is {}; it cannot become {} from there",
                    node.id,
                    node.status.as_str(),
                    to.as_str()
                )));
            }
            node.status = to;
            node.updated_at = now;
            Ok(true)
        })
        .await
    }

    /// The instances placed on `node`, from the cache caught up with this
    /// controller's writes: a caller that just changed the node (made it
    /// draining, not ready) sees every instance placed before that change,
    /// and any placement after it fails on the node's changed revision.
    pub(super) async fn instances_on(&self, node: &str) -> Result<Vec<Instance>> {
        self.caught_up().await?;
        Ok(self
            .inner
            .cache
            .read()
            .instances_on(node)
            .into_iter()
            .map(|i| Instance::clone(&i))
            .collect())
    }

    /// Empties node `node` (see the module doc): every instance on it is
    /// migrated, moved, left pending or stopped, a few at a time. Errors:
    /// the first error evicting an instance (the others carry on first).
    async fn evict_all(&self, node: &str) -> Result<DrainReport> {
        let mut report = DrainReport {
            node: node.to_owned(),
            ..DrainReport::default()
        };
        let instances = self.instances_on(node).await?;
        let limit = self.options().evacuation_concurrency.max(1);
        let results: Vec<(String, Result<Evacuated>, Vec<String>)> =
            futures::stream::iter(instances)
                .map(|instance| async move {
                    let mut tried = Vec::new();
                    let name = instance.name.clone();
                    let result = self.evacuate(node, instance, &mut tried).await;
                    (name, result, tried)
                })
                .buffer_unordered(limit)
                .collect()
                .await;
        let mut first_error = None;
        for (name, result, tried) in results {
            if !tried.is_empty() {
                report.not_migrated.insert(name.clone(), tried.join("; "));
            }
            match result {
                Ok(Evacuated::Migrated(m)) => report.migrated.push(m),
                Ok(Evacuated::Moved(n)) => report.moved.push(n),
                Ok(Evacuated::Pending(n)) => report.pending.push(n),
                Ok(Evacuated::Stopped(n)) => report.stopped.push(n),
                Ok(Evacuated::Gone) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        report.migrated.sort_by(|a, b| a.name.cmp(&b.name));
        for list in [&mut report.moved, &mut report.pending, &mut report.stopped] {
            list.sort();
        }
        Ok(report)
    }

    /// Moves one instance off node `node`: migrated when it can be (each
    /// failed try's reason pushed on `tried`), else restarted elsewhere or
    /// stopped in place by its restart policy.
    async fn evacuate(
        &self,
        node: &str,
        instance: Instance,
        tried: &mut Vec<String>,
    ) -> Result<Evacuated> {
        let restartable = instance.spec.restart != RestartPolicy::Never;
        if instance.desired == DesiredState::Running
            && instance.status == InstanceStatus::Running
            && instance.spec.instance_type != InstanceType::Container
        {
            // Cold migration restarts the workload, as a restart would.
            let modes: &[MigrationMode] = if restartable {
                &[MigrationMode::Live, MigrationMode::Cold]
            } else {
                &[MigrationMode::Live]
            };
            for &mode in modes {
                match self.migrate_instance(&instance.id, None, mode).await {
                    Ok(moved) => {
                        return Ok(Evacuated::Migrated(MigratedInstance {
                            name: moved.name,
                            mode,
                            to: moved.node.unwrap_or_default(),
                        }))
                    }
                    Err(e) => tried.push(format!("{mode}: {e}")),
                }
            }
        }
        let id = instance.id.clone();
        if instance.desired == DesiredState::Running && restartable {
            self.update_object::<Instance, _>(&id, |i| {
                if i.node.as_deref() != Some(node) || i.reschedule {
                    return Ok(false);
                }
                i.reschedule = true;
                Ok(true)
            })
            .await?;
        } else if instance.desired == DesiredState::Running {
            self.update_object::<Instance, _>(&id, |i| {
                if i.desired != DesiredState::Running {
                    return Ok(false);
                }
                i.desired = DesiredState::Stopped;
                Ok(true)
            })
            .await?;
        }
        Ok(match self.settle(&id).await? {
            Some(after) if after.node.as_deref() == Some(node) => Evacuated::Stopped(after.name),
            Some(after) if after.node.is_none() => Evacuated::Pending(after.name),
            Some(after) => Evacuated::Moved(after.name),
            None => Evacuated::Gone,
        })
    }
}

/// Takes the agent's onboarding from `registration` onto `node`, and with
/// it the node's status while its agent decides that status
/// ([`NodeStatus::follows_onboarding`]): a status operators set stays, and
/// a retired node stays retired. Without onboarding in the registration nothing changes.
fn apply_onboarding(node: &mut Node, registration: &NodeRegistration) {
    let Some(onboarding) = &registration.onboarding else {
        return;
    };
    if node.status.follows_onboarding() {
        node.status = onboarding.status();
    }
    node.onboarding = Some(onboarding.clone());
}

impl Node {
    /// The store key of node `id`.
    pub fn key_for_id(id: &str) -> String {
        <Node as crate::store::StoredObject>::key_for(id)
    }
}
