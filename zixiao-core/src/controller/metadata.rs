//! What operators declare for placement, on the controller: labels and
//! traits of nodes (kept apart from what agents report: see
//! [`NodeMetadata`](crate::model::NodeMetadata)) and host aggregates
//! ([`Aggregate`]), each a compare-and-swap write of its one store object.
//!
//! Placement sees them through the cache: a node's merged labels and
//! traits are in its record, aggregates are decoded from their keys and
//! handed to the scheduler with every placement (see `placer`). A change
//! can give a waiting instance a node: background reconcilers notice the
//! write (a node or aggregate change) and try the waiting instances again;
//! a controller that converges in its callers (the embedded deployment
//! without a daemon) has no one to notice, so the call that made the
//! change tries them before it answers ([`Controller::place_waiting`]).
//! Either way the reason a still-waiting instance records follows the
//! change (an aggregate that now exists, but not with its node).

use std::collections::BTreeMap;

use super::reconcile::Convergence;
use super::Controller;
use crate::model::{
    Aggregate, AggregateName, AllocationRatio, CarbonIntensity, LabelChanges, LabelKey, LabelValue,
    Node, TraitChanges,
};
use crate::store::{put_object, Precondition, StoreError, StoreExt, StoredObject, Txn};
use crate::{Error, ErrorKind, Result};

impl Controller {
    /// Sets and removes the operator labels of node `node` (id or
    /// hostname). Errors: `NotFound`, `FailedPrecondition` (a label its
    /// agent reports), `InvalidArgument` on `labels`, `Conflict`.
    pub async fn label_node(&self, node: &str, changes: &LabelChanges) -> Result<Node> {
        let id = self.get_node(node).await?.id;
        let now = self.now();
        self.update_object::<Node, _>(&id, |n| {
            let changed = n.change_labels(changes)?;
            if changed {
                n.updated_at = now;
            }
            Ok(changed)
        })
        .await
    }

    /// Adds and removes the operator traits of node `node` (id or
    /// hostname). Errors: `NotFound`, `FailedPrecondition` (a trait its
    /// agent reports), `InvalidArgument` on `traits`, `Conflict`.
    pub async fn change_node_traits(&self, node: &str, changes: &TraitChanges) -> Result<Node> {
        let id = self.get_node(node).await?.id;
        let now = self.now();
        self.update_object::<Node, _>(&id, |n| {
            let changed = n.change_traits(changes)?;
            if changed {
                n.updated_at = now;
            }
            Ok(changed)
        })
        .await
    }

    /// Sets (or clears) the operator's carbon intensity of node `node` (id
    /// or hostname). Errors: `NotFound`, `Conflict`.
    pub async fn set_node_carbon(
        &self,
        node: &str,
        intensity: Option<CarbonIntensity>,
    ) -> Result<Node> {
        let id = self.get_node(node).await?.id;
        let now = self.now();
        self.update_object::<Node, _>(&id, |n| {
            let changed = n.set_carbon_intensity(intensity);
            if changed {
                n.updated_at = now;
            }
            Ok(changed)
        })
        .await
    }

    /// Sets the allocation ratios given of node `node` (id or hostname).
    /// Errors: `InvalidArgument` (neither given), `NotFound`, `Conflict`.
    pub async fn set_allocation_ratios(
        &self,
        node: &str,
        cpu: Option<AllocationRatio>,
        memory: Option<AllocationRatio>,
    ) -> Result<Node> {
        if cpu.is_none() && memory.is_none() {
            return Err(Error::invalid(
                "allocation_ratios",
                "nothing to change: give a cpu or memory ratio",
            ));
        }
        let id = self.get_node(node).await?.id;
        let now = self.now();
        self.update_object::<Node, _>(&id, |n| {
            let before = n.allocation_ratios;
            n.allocation_ratios.cpu = cpu.unwrap_or(before.cpu);
            n.allocation_ratios.memory = memory.unwrap_or(before.memory);
            let changed = n.allocation_ratios != before;
            if changed {
                n.updated_at = now;
            }
            Ok(changed)
        })
        .await
    }

    /// Stores aggregate `name` with `metadata` and no nodes. Errors:
    /// `AlreadyExists`, the store's.
    pub async fn create_aggregate(
        &self,
        name: &AggregateName,
        metadata: BTreeMap<LabelKey, LabelValue>,
    ) -> Result<Aggregate> {
        let mut aggregate = Aggregate::new(name.clone(), metadata, self.now());
        match self.commit(put_object(Txn::new(), &aggregate)).await {
            Ok(revision) => {
                aggregate.revision = revision;
                Ok(aggregate)
            }
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_)) => {
                Err(Error::AlreadyExists {
                    what: format!("aggregate `{name}`"),
                })
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Deletes aggregate `name`, which must have no nodes. Errors:
    /// `NotFound`, `FailedPrecondition` (it has nodes: they are named),
    /// `Conflict`.
    pub async fn delete_aggregate(&self, name: &AggregateName) -> Result<()> {
        for _ in 0..self.options().max_conflict_retries {
            let aggregate = self.get_aggregate(name).await?;
            if !aggregate.nodes.is_empty() {
                let nodes: Vec<&str> = aggregate.nodes.iter().map(String::as_str).collect();
                return Err(Error::FailedPrecondition(format!(
                    "aggregate `{name}` has nodes {}; remove them first",
                    nodes.join(", ")
                )));
            }
            let txn = Txn::new().delete(
                Aggregate::key_for(name),
                Precondition::Revision(aggregate.revision),
            );
            match self.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => {
                    return Err(Error::not_found(format!("aggregate `{name}`")))
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts(Aggregate::KIND, name))
    }

    /// Every aggregate, in name order, as stored now.
    pub async fn list_aggregates(&self) -> Result<Vec<Aggregate>> {
        let (aggregates, _) = self
            .inner
            .store
            .list_objects::<Aggregate, _>(|_| true)
            .await?;
        Ok(aggregates)
    }

    /// Aggregate `name` as stored now. Errors: `NotFound`.
    pub async fn get_aggregate(&self, name: &AggregateName) -> Result<Aggregate> {
        self.inner
            .store
            .get_object::<Aggregate>(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("aggregate `{name}`")))
    }

    /// Sets and removes metadata of aggregate `name`. Idempotent. Errors:
    /// `NotFound`, `InvalidArgument` on `metadata`, `Conflict`.
    pub async fn set_aggregate_metadata(
        &self,
        name: &AggregateName,
        changes: &LabelChanges,
    ) -> Result<Aggregate> {
        self.get_aggregate(name).await?;
        let now = self.now();
        self.update_object::<Aggregate, _>(name, |a| {
            let changed = a.change_metadata(changes)?;
            if changed {
                a.updated_at = now;
            }
            Ok(changed)
        })
        .await
    }

    /// Makes node `node` (id or hostname) a member of aggregate `name`.
    /// Idempotent. Errors: `NotFound` (the aggregate or the node), `Conflict`.
    pub async fn add_aggregate_node(&self, name: &AggregateName, node: &str) -> Result<Aggregate> {
        self.get_aggregate(name).await?;
        let id = self.get_node(node).await?.id;
        let now = self.now();
        self.update_object::<Aggregate, _>(name, |a| {
            let added = a.nodes.insert(id.clone());
            if added {
                a.updated_at = now;
            }
            Ok(added)
        })
        .await
    }

    /// Takes node `node` out of aggregate `name`: a member is named by its
    /// id (a node since deregistered too) or by the id or hostname of a
    /// node that exists. Idempotent. Errors: `NotFound` (the aggregate, or
    /// a node that neither exists nor is a member), `Conflict`.
    pub async fn remove_aggregate_node(
        &self,
        name: &AggregateName,
        node: &str,
    ) -> Result<Aggregate> {
        let aggregate = self.get_aggregate(name).await?;
        let id = if aggregate.nodes.contains(node) {
            node.to_owned()
        } else {
            self.get_node(node).await?.id
        };
        let now = self.now();
        self.update_object::<Aggregate, _>(name, |a| {
            let removed = a.nodes.remove(&id);
            if removed {
                a.updated_at = now;
            }
            Ok(removed)
        })
        .await
    }

    /// Places the instances that wait for a node, when this controller
    /// converges in its callers (background reconcilers do it on their
    /// own when a node or an aggregate changes). What becomes of each is
    /// recorded in it; a failure to converge one is logged, not returned:
    /// the change that called this is stored either way.
    pub(crate) async fn place_waiting(&self) -> Result<()> {
        if self.convergence() != Convergence::InCaller {
            return Ok(());
        }
        self.caught_up().await?;
        for id in self.waiting_for_room() {
            match self.settle(&id).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    instance = %id,
                    "placing an instance that waited for a node: {}",
                    e.chain()
                ),
            }
        }
        Ok(())
    }
}
