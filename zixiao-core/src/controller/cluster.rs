//! Cluster-wide summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Controller;
use crate::model::{InstanceStatus, InstanceType, NodeStatus, Resources};
use crate::Result;

/// A summary of the whole cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Number of nodes.
    pub nodes: usize,
    /// Nodes per status.
    pub nodes_by_status: BTreeMap<NodeStatus, usize>,
    /// Number of instances.
    pub instances: usize,
    /// Instances per type, then per status.
    pub instances_by_type: BTreeMap<InstanceType, BTreeMap<InstanceStatus, usize>>,
    /// Capacity of all nodes together.
    pub capacity: Resources,
    /// Allocated on all nodes together.
    pub allocated: Resources,
    /// Capacity of the nodes that take new instances (ready), minus their allocation.
    pub schedulable_free: Resources,
    /// The id of the server that runs the reconcilers (a distributed
    /// deployment's leader); `None` in-process, or while no server leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

impl Controller {
    /// Counts nodes and instances and adds up capacity and allocation, from
    /// the cache (as of at least this controller's last write).
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        self.caught_up().await?;
        let state = self.inner.cache.read();
        let nodes = state.nodes.nodes();
        let mut info = ClusterInfo {
            nodes: nodes.len(),
            ..ClusterInfo::default()
        };
        for node in nodes {
            *info.nodes_by_status.entry(node.status).or_default() += 1;
            info.capacity = info.capacity.saturating_add(&node.capacity);
            info.allocated = info.allocated.saturating_add(&node.allocated);
            if node.is_schedulable() {
                info.schedulable_free = info.schedulable_free.saturating_add(&node.free());
            }
        }
        for instance in state.instances() {
            info.instances += 1;
            *info
                .instances_by_type
                .entry(instance.spec.instance_type)
                .or_default()
                .entry(instance.status)
                .or_default() += 1;
        }
        Ok(info)
    }
}
