//! Failover of a node that stopped proving it is alive: the hook the
//! distributed server's failure detector calls once a node's liveness lease
//! has expired. By then the node has fenced itself (its watchdog stopped its
//! instances before the lease could expire), so its instances are released
//! here without asking the node: the movable ones are made pending again to
//! be placed elsewhere, the others are marked failed with the reason.

use serde::{Deserialize, Serialize};

use super::Controller;
use crate::model::{
    ConditionType, DesiredState, Instance, InstanceStatus, Node, NodeStatus, RestartPolicy,
};
use crate::store::{encode, put_object, Precondition, StoreError, StoreExt, StoredObject, Txn};
use crate::Result;

/// What [`Controller::fail_node`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// The node.
    pub node: String,
    /// Instances made pending to run elsewhere (restart policy `always`/`on_failure`).
    pub moved: Vec<String>,
    /// Instances marked failed in place (restart policy `never`).
    pub failed: Vec<String>,
    /// Instances being deleted whose records were released without the node.
    pub released: Vec<String>,
}

impl FailoverReport {
    /// Whether it changed nothing.
    pub fn is_empty(&self) -> bool {
        self.moved.is_empty() && self.failed.is_empty() && self.released.is_empty()
    }
}

impl Controller {
    /// Declares node `node` lost: a `Ready` node becomes `NotReady`, and each
    /// of its instances that should run is released from it — made pending
    /// for another node when its restart policy restarts it, marked failed
    /// (reason `NodeLost`) otherwise; instances being deleted are deleted
    /// without the node. Never calls the node: the caller guarantees the node
    /// fenced itself (its lease expired after its fencing deadline).
    ///
    /// Idempotent. Errors: `NotFound`, `Conflict`, the store's errors.
    pub async fn fail_node(&self, node: &str, reason: &str) -> Result<FailoverReport> {
        let started = std::time::Instant::now();
        let report = self.release_node(node, reason).await?;
        let instances = report.moved.len() + report.failed.len() + report.released.len();
        self.telemetry().failover(instances, started.elapsed());
        Ok(report)
    }

    /// The work of [`Controller::fail_node`].
    async fn release_node(&self, node: &str, reason: &str) -> Result<FailoverReport> {
        let now = self.now();
        let node = self
            .update_object::<Node, _>(node, |n| {
                if n.status != NodeStatus::Ready {
                    return Ok(false);
                }
                n.status = NodeStatus::NotReady;
                n.updated_at = now;
                Ok(true)
            })
            .await?;
        let mut report = FailoverReport {
            node: node.id.clone(),
            ..FailoverReport::default()
        };
        let mut instances = self.instances_on(&node.id).await?;
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        // As few transactions as the store takes (a lost node of a lost zone
        // may hold dozens); a chunk that meets a concurrent change goes
        // instance by instance, each read again.
        let per_chunk = (self.options().max_batch_writes / 2)
            .saturating_sub(1)
            .max(1);
        for chunk in instances.chunks(per_chunk) {
            let outcomes = match self.release_all_lost(&node.id, chunk, reason).await? {
                Some(outcomes) => outcomes,
                None => {
                    let mut outcomes = Vec::new();
                    for instance in chunk {
                        if let Some(outcome) =
                            self.release_lost(&node.id, &instance.id, reason).await?
                        {
                            outcomes.push((instance.name.clone(), outcome));
                        }
                    }
                    outcomes
                }
            };
            for (name, outcome) in outcomes {
                match outcome {
                    Outcome::Moved => report.moved.push(name),
                    Outcome::Failed => report.failed.push(name),
                    Outcome::Released => report.released.push(name),
                }
            }
        }
        Ok(report)
    }

    /// Releases `chunk` (as cached) from lost node `node` in one
    /// transaction with the node's allocation; `None` when a concurrent
    /// change got in the way.
    async fn release_all_lost(
        &self,
        node: &str,
        chunk: &[Instance],
        reason: &str,
    ) -> Result<Option<Vec<(String, Outcome)>>> {
        let Some(mut lost) = self.inner.store.get_object::<Node>(node).await? else {
            return Ok(None);
        };
        let mut txn = Txn::new();
        let mut outcomes = Vec::new();
        let mut gives_back = false;
        for instance in chunk.iter().filter(|i| i.node.as_deref() == Some(node)) {
            let Some((part, outcome)) = self.release_parts(node, instance, reason) else {
                continue;
            };
            if outcome != Outcome::Failed {
                lost.allocated = lost.allocated.saturating_sub(&instance.held());
                gives_back = true;
            }
            txn.writes.extend(part.writes);
            outcomes.push((instance.name.clone(), outcome));
        }
        if outcomes.is_empty() {
            return Ok(Some(outcomes));
        }
        if gives_back {
            lost.updated_at = self.now();
            txn = put_object(txn, &lost);
        }
        match self.inner.store.commit(txn).await {
            Ok(revision) => {
                self.wrote(revision);
                Ok(Some(outcomes))
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Declares node `node` back: a `NotReady` node whose agent holds a live
    /// lease again becomes `Ready`; a node in any other status is left as it
    /// is. Only the status changes, read and written in one compare-and-swap,
    /// so what the agent registered meanwhile (a new address) is kept.
    ///
    /// Idempotent. Errors: `NotFound`, `Conflict`, the store's errors.
    pub async fn node_returned(&self, node: &str) -> Result<Node> {
        let now = self.now();
        self.update_object::<Node, _>(node, |n| {
            if n.status != NodeStatus::NotReady {
                return Ok(false);
            }
            n.status = NodeStatus::Ready;
            n.updated_at = now;
            Ok(true)
        })
        .await
    }

    async fn release_lost(&self, node: &str, id: &str, reason: &str) -> Result<Option<Outcome>> {
        let store = &self.inner.store;
        for _ in 0..self.options().max_conflict_retries {
            let Some(instance) = store.get_object::<Instance>(id).await? else {
                return Ok(None);
            };
            if instance.node.as_deref() != Some(node) {
                return Ok(None);
            }
            let Some((txn, outcome)) = self.release_txn(node, &instance, reason).await? else {
                return Ok(None);
            };
            match self.commit(txn).await {
                Ok(_) => return Ok(Some(outcome)),
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {
                    tokio::task::yield_now().await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(self.too_many_conflicts("instance", id))
    }

    /// The transaction that takes `instance` off lost node `node`, if any is needed.
    async fn release_txn(
        &self,
        node: &str,
        instance: &Instance,
        reason: &str,
    ) -> Result<Option<(Txn, Outcome)>> {
        let Some((mut txn, outcome)) = self.release_parts(node, instance, reason) else {
            return Ok(None);
        };
        if outcome != Outcome::Failed {
            // Moving and deleting both give the node's allocation back.
            let lost: Option<Node> = self.inner.store.get_object(node).await?;
            if let Some(mut lost) = lost {
                lost.allocated = lost.allocated.saturating_sub(&instance.held());
                lost.updated_at = self.now();
                txn = put_object(txn, &lost);
            }
        }
        Ok(Some((txn, outcome)))
    }

    /// The writes that take `instance` off lost node `node`, without the
    /// node's allocation, if any are needed.
    fn release_parts(
        &self,
        node: &str,
        instance: &Instance,
        reason: &str,
    ) -> Option<(Txn, Outcome)> {
        let now = self.now();
        let message = format!("node `{node}` was lost: {reason}");
        let movable = instance.desired == DesiredState::Running
            && instance.spec.restart != RestartPolicy::Never;
        let outcome = match instance.desired {
            DesiredState::Deleted => Outcome::Released,
            DesiredState::Running if movable => Outcome::Moved,
            DesiredState::Running if instance.status != InstanceStatus::Failed => Outcome::Failed,
            _ => return None,
        };
        if outcome == Outcome::Failed {
            let mut failed = instance.clone();
            failed.status = InstanceStatus::Failed;
            failed.exit = None;
            failed.updated_at = now;
            failed.set_condition(ConditionType::RuntimeReady, false, "NodeLost", message, now);
            return Some((put_object(Txn::new(), &failed), outcome));
        }
        let mut txn = Txn::new();
        if outcome == Outcome::Released {
            txn = txn
                .delete(
                    Instance::key_for(&instance.id),
                    Precondition::Revision(instance.revision),
                )
                .delete(Self::name_key(&instance.name), Precondition::None);
        } else {
            let mut moved = instance.clone();
            moved.node = None;
            moved.reschedule = false;
            moved.migrate_to = None;
            moved.status = InstanceStatus::Pending;
            moved.exit = None;
            moved.updated_at = now;
            moved.set_condition(ConditionType::Scheduled, false, "NodeLost", message, now);
            txn = txn.put(
                Instance::key_for(&moved.id),
                encode(&moved),
                Precondition::Revision(instance.revision),
            );
        }
        Some((txn, outcome))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Moved,
    Failed,
    Released,
}
