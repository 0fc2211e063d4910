//! Builders of nodes and instances for tests, examples and benchmarks:
//! fixed timestamps and ids, so whatever uses them is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use zixiao_core::{
    AllocationRatios, Cpus, CreateInstance, Instance, InstanceSpec, InstanceType, Node, NodeRole,
    NodeStatus, Resources,
};

/// The fixed time every fixture is stamped with.
pub fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// A Ready node `id` in region `r1`, zone `z1`, with `capacity`, nothing
/// allocated, every runtime, and revision 0 (never stored). Its allocation
/// ratios are 1, so `capacity` is exactly what placement may reserve.
pub fn node(id: &str, capacity: Resources) -> Node {
    Node {
        id: id.to_owned(),
        hostname: id.to_owned(),
        address: "local".to_owned(),
        region: "r1".to_owned(),
        zone: "z1".to_owned(),
        role: NodeRole::Worker,
        status: NodeStatus::Ready,
        capacity,
        allocation_ratios: AllocationRatios::EXACT,
        allocated: Resources::default(),
        labels: BTreeMap::new(),
        traits: BTreeSet::new(),
        reported: Default::default(),
        operator: Default::default(),
        runtimes: InstanceType::ALL.into_iter().collect(),
        missing_runtimes: BTreeMap::new(),
        drivers: BTreeMap::new(),
        images: BTreeSet::new(),
        carbon_intensity: None,
        last_heartbeat: Some(epoch()),
        orphan_sweep: None,
        onboarding: None,
        created_at: epoch(),
        updated_at: epoch(),
        revision: 0,
    }
}

/// `count` nodes `node-000`, `node-001`, ... of 16 cores, 64 GiB memory,
/// 1 TiB disk and 110 instances each, as [`node`] makes them.
pub fn nodes(count: usize) -> Vec<Node> {
    (0..count)
        .map(|i| node(&format!("node-{i:03}"), capacity(16, 64 * 1024)))
        .collect()
}

/// A capacity of `cpus` cores and `memory_mib` MiB, 1 TiB of disk and 110 instances.
pub fn capacity(cpus: u32, memory_mib: u64) -> Resources {
    Resources {
        cpus: Cpus::cores(cpus),
        memory_mib,
        disk_gib: 1024,
        instances: 110,
    }
}

/// A pending container instance `name` (also its id) of `cpus` cores and `memory_mib` MiB.
pub fn instance(name: &str, cpus: u32, memory_mib: u64) -> Instance {
    let spec = InstanceSpec::container("busybox").with_size(cpus, memory_mib);
    let mut instance = Instance::new(name, CreateInstance::new(name, spec), epoch());
    instance.revision = 1;
    instance
}
