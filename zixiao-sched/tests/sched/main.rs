//! Tests of the scheduler through its public API: every filter and score
//! table-driven, the pipeline, explanations, the model's placement
//! vocabulary, and properties over random clusters.

mod explain;
mod filters;
mod model;
mod pipeline;
mod properties;
mod scores;

use zixiao_core::scheduler::{GroupPolicy, GroupRule, GroupScope, HostAggregate};
use zixiao_core::{Instance, Node, Resources, SchedulingContext};
use zixiao_sched::testing;
use zixiao_sched::{ClusterState, Filter, Prunes, Request, Score};

/// A node of 16 cores and 64 GiB in `zone` of region `r1`.
pub fn node_in(id: &str, zone: &str) -> Node {
    let mut node = testing::node(id, testing::capacity(16, 64 * 1024));
    node.zone = zone.to_owned();
    node
}

/// `instance` placed on `node`.
pub fn placed_on(mut instance: Instance, node: &str) -> Instance {
    instance.node = Some(node.to_owned());
    instance
}

/// An instance that is a member of `group` with `policy` per `scope`.
pub fn member(name: &str, group: &str, policy: GroupPolicy, scope: GroupScope) -> Instance {
    let mut instance = testing::instance(name, 1, 1024);
    instance.spec.placement.groups.push(GroupRule {
        name: group.to_owned(),
        policy,
        scope,
    });
    instance
}

/// The request the default pipeline would make for `instance`.
pub fn request(instance: &Instance) -> Request<'_> {
    Request {
        instance,
        resources: instance.spec.resources(),
        strategy: instance.spec.placement.strategy.unwrap_or_default(),
    }
}

/// A state over `nodes`, `placed` instances and `aggregates`, without pruning.
pub fn state(nodes: &[Node], placed: &[Instance], aggregates: &[HostAggregate]) -> ClusterState {
    let cx = SchedulingContext::new(nodes)
        .with_instances(placed)
        .with_aggregates(aggregates);
    ClusterState::new(&cx, Prunes::default())
}

/// What `filter` says of node `index` of `state` for `instance`, as text.
pub fn verdict(
    filter: &dyn Filter,
    state: &ClusterState,
    index: usize,
    instance: &Instance,
) -> Result<(), String> {
    filter
        .filter(&request(instance), state.node_ref(index), state)
        .map_err(|r| r.to_string())
}

/// The scores `score` gives every node of `state` for `instance`, normalised and clamped.
pub fn scores(score: &dyn Score, state: &ClusterState, instance: &Instance) -> Vec<u32> {
    let request = request(instance);
    let mut scores: Vec<u32> = (0..state.nodes().len())
        .map(|i| score.score(&request, state.node_ref(i), state))
        .collect();
    score.normalize(&request, &mut scores);
    scores
        .iter()
        .map(|s| (*s).min(zixiao_sched::MAX_SCORE))
        .collect()
}

/// Resources of `cpus` cores and `memory_mib` MiB, no disk, one instance.
pub fn used(cpus: u32, memory_mib: u64) -> Resources {
    Resources {
        cpus: zixiao_core::Cpus::cores(cpus),
        memory_mib,
        disk_gib: 0,
        instances: 1,
    }
}
