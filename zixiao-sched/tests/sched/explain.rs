//! Explanations: every node counted once, under the first filter that
//! rejects it, most common reason first, with the largest free amount.

use zixiao_core::{NodeStatus, Resources, Scheduler, SchedulingContext, Unschedulable};
use zixiao_sched::{testing, PluginScheduler};

use crate::used;

#[test]
fn explains_the_issue_example() {
    // 3 nodes short of memory (at most 2048 MiB free), 2 cordoned.
    let mut nodes = testing::nodes(5);
    for (node, free) in nodes.iter_mut().zip([1024u64, 2048, 512]) {
        node.allocated = used(0, 64 * 1024 - free);
    }
    nodes[3].status = NodeStatus::Cordoned;
    nodes[4].status = NodeStatus::Cordoned;
    let scheduler = PluginScheduler::default();
    let instance = testing::instance("big", 1, 4096);
    let err = scheduler
        .place(&instance, &SchedulingContext::new(&nodes))
        .expect_err("no node has 4096 MiB free");
    assert_eq!(
        err.to_string(),
        "3 nodes: insufficient memory (need 4096 MiB, max free 2048 MiB); 2 nodes: cordoned"
    );
    assert_eq!(err.rejections[0].filter, "resources");
    assert_eq!(err.rejections[1].filter, "node-status");
    assert_eq!(
        scheduler.explain(&instance, &SchedulingContext::new(&nodes)),
        err
    );
}

#[test]
fn counts_each_node_under_its_first_rejecting_filter() {
    // A cordoned node in the wrong zone is reported as cordoned only.
    let mut nodes = testing::nodes(4);
    nodes[0].status = NodeStatus::Cordoned;
    nodes[0].zone = "z2".into();
    nodes[1].zone = "z2".into();
    nodes[2].zone = "z2".into();
    nodes[3].allocated = Resources {
        instances: 110,
        ..Resources::default()
    };
    let mut instance = testing::instance("web", 1, 64);
    instance.spec.placement.zone = Some("z1".into());
    let err = PluginScheduler::default()
        .place(&instance, &SchedulingContext::new(&nodes))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 nodes: not in zone `z1`; 1 node: cordoned; 1 node: instance limit reached"
    );
    assert_eq!(
        err.rejections.iter().map(|r| r.nodes).sum::<usize>(),
        nodes.len()
    );
}

#[test]
fn empty_cluster_has_no_rejections() {
    let err = PluginScheduler::default()
        .place(
            &testing::instance("web", 1, 64),
            &SchedulingContext::new(&[]),
        )
        .unwrap_err();
    assert_eq!(err, Unschedulable::default());
    assert_eq!(err.to_string(), "no nodes are registered");
}

#[test]
fn explains_a_schedulable_instance_too() {
    let mut nodes = testing::nodes(3);
    nodes[1].status = NodeStatus::Draining;
    let scheduler = PluginScheduler::default();
    let cx = SchedulingContext::new(&nodes);
    let instance = testing::instance("web", 1, 64);
    assert!(scheduler.place(&instance, &cx).is_ok());
    assert_eq!(
        scheduler.explain(&instance, &cx).to_string(),
        "1 node: draining"
    );
}

#[test]
fn serializes_for_the_pending_condition() {
    let mut nodes = testing::nodes(1);
    nodes[0].status = NodeStatus::Maintenance;
    let err = PluginScheduler::default()
        .place(
            &testing::instance("web", 1, 64),
            &SchedulingContext::new(&nodes),
        )
        .unwrap_err();
    let json = serde_json::to_value(&err).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"rejections": [{"filter": "node-status", "reason": "in maintenance", "nodes": 1}]})
    );
}
