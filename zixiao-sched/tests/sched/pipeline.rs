//! The pipeline: default order, strategies and overrides, determinism and
//! the tie-break rule, user plugins, the cache, and whole-placement
//! behaviour of spreads and group rules.

use std::collections::BTreeMap;

use zixiao_core::scheduler::{CarbonPolicy, GroupPolicy, GroupScope, Strategy, ZoneSpread};
use zixiao_core::{NodeStatus, Scheduler, SchedulingContext};
use zixiao_sched::{
    testing, ClusterState, Filter, FirstNode, NodeRef, PluginScheduler, Reject, Request, Score,
    TieBreak, Verdict,
};

use crate::{member, node_in, used};

#[test]
fn default_pipeline_order() {
    let scheduler = PluginScheduler::default();
    assert_eq!(
        scheduler.filter_names(),
        [
            "node-status",
            "runtime",
            "clone-source",
            "region",
            "zone",
            "node-selector",
            "traits",
            "aggregates",
            "carbon",
            "group-affinity",
            "host-ports",
            "resources"
        ]
    );
    assert_eq!(
        scheduler.score_names(),
        [
            ("bin-pack", 1),
            ("least-allocated", 1),
            ("balanced", 1),
            ("zone-spread", 4),
            ("soft-affinity", 2),
            ("carbon-aware", 2),
            ("image-locality", 1)
        ]
    );
}

/// Three nodes: n0 nearly full, n1 half full, n2 empty.
fn graded() -> Vec<zixiao_core::Node> {
    let mut nodes = testing::nodes(3);
    nodes[0].allocated = used(12, 48 * 1024);
    nodes[1].allocated = used(8, 32 * 1024);
    nodes
}

#[test]
fn bin_pack_takes_the_fullest_node_that_fits_and_spread_the_emptiest() {
    let nodes = graded();
    let cx = SchedulingContext::new(&nodes);
    let small = testing::instance("small", 2, 8192);
    let big = testing::instance("big", 6, 8192);
    let bin_pack = PluginScheduler::default();
    assert_eq!(bin_pack.place(&small, &cx).unwrap(), "node-000");
    assert_eq!(
        bin_pack.place(&big, &cx).unwrap(),
        "node-001",
        "node-000 has only 4 cores left"
    );
    let spread = PluginScheduler::builder()
        .default_strategy(Strategy::Spread)
        .build();
    assert_eq!(spread.place(&small, &cx).unwrap(), "node-002");
    // An instance can override the cluster's strategy.
    let mut packed = small.clone();
    packed.spec.placement.strategy = Some(Strategy::BinPack);
    assert_eq!(spread.place(&packed, &cx).unwrap(), "node-000");
}

#[test]
fn same_input_same_placement_and_seeds_break_ties() {
    let nodes = testing::nodes(64);
    let cx = SchedulingContext::new(&nodes);
    let exhaustive = |seed| {
        PluginScheduler::builder()
            .candidates_per_zone(usize::MAX, usize::MAX)
            .seed(seed)
            .build()
    };
    let mut chosen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let instance = testing::instance(&format!("web-{i}"), 1, 512);
        let first = exhaustive(7).place(&instance, &cx).unwrap();
        assert_eq!(exhaustive(7).place(&instance, &cx).unwrap(), first);
        chosen.insert(first);
    }
    // All 64 nodes tie; the seeded hash spreads the choices among them.
    assert!(chosen.len() > 10, "{chosen:?}");
    let first_node = PluginScheduler::builder().tie_break(FirstNode).build();
    assert_eq!(
        first_node
            .place(&testing::instance("web", 1, 512), &cx)
            .unwrap(),
        "node-000"
    );
}

#[derive(Debug)]
struct ByName;

impl TieBreak for ByName {
    fn rank(&self, _: &zixiao_core::Instance, node: &zixiao_core::Node) -> u64 {
        u64::MAX - node.id.len() as u64 - u64::from(node.id.as_bytes()[node.id.len() - 1])
    }
}

#[test]
fn tie_break_rule_is_injectable() {
    let nodes = testing::nodes(5);
    let scheduler = PluginScheduler::builder()
        .tie_break(ByName)
        .candidates_per_zone(usize::MAX, usize::MAX)
        .build();
    // Highest last byte ranks lowest.
    let chosen = scheduler
        .place(
            &testing::instance("web", 1, 512),
            &SchedulingContext::new(&nodes),
        )
        .unwrap();
    assert_eq!(chosen, "node-004");
}

/// A user filter: only nodes whose hostname starts with `rack-a`.
#[derive(Debug)]
struct RackA;

impl Filter for RackA {
    fn name(&self) -> &'static str {
        "rack"
    }
    fn filter(&self, _: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> Verdict {
        if node.node.hostname.starts_with("rack-a") {
            Ok(())
        } else {
            Err(Reject::new("not in rack a"))
        }
    }
}

/// A user score: prefers higher node numbers.
#[derive(Debug)]
struct Newest;

impl Score for Newest {
    fn name(&self) -> &'static str {
        "newest"
    }
    fn score(&self, _: &Request<'_>, node: NodeRef<'_>, _: &ClusterState) -> u32 {
        node.index as u32 * 1000
    }
}

#[test]
fn user_plugins_join_the_pipeline() {
    let mut nodes = testing::nodes(4);
    nodes[1].hostname = "rack-a-1".into();
    nodes[2].hostname = "rack-a-2".into();
    let cx = SchedulingContext::new(&nodes);
    let scheduler = PluginScheduler::builder()
        .filter(RackA)
        .score(Newest, 5)
        .build();
    assert_eq!(scheduler.filter_names().last(), Some(&"rack"));
    // Out-of-range scores are clamped, so `Newest` gives both 100: a tie.
    let chosen = scheduler
        .place(&testing::instance("web", 1, 512), &cx)
        .unwrap();
    assert!(chosen == "node-001" || chosen == "node-002", "{chosen}");
    let mut big = testing::instance("big", 1, 512);
    big.spec.cpus = zixiao_core::Cpus::cores(64);
    let err = scheduler.place(&big, &cx).unwrap_err();
    assert_eq!(
        err.to_string(),
        "4 nodes: insufficient cpu (need 64 cores, max free 16 cores)"
    );
    let err = scheduler.explain(&testing::instance("web", 1, 512), &cx);
    assert_eq!(err.to_string(), "2 nodes: not in rack a");
    let without = PluginScheduler::builder()
        .without_filter("node-status")
        .build();
    assert!(!without.filter_names().contains(&"node-status"));
}

#[test]
fn without_the_status_filter_unready_nodes_are_candidates() {
    let mut nodes = testing::nodes(1);
    nodes[0].status = NodeStatus::Cordoned;
    let cx = SchedulingContext::new(&nodes);
    assert!(PluginScheduler::default()
        .place(&testing::instance("w", 1, 64), &cx)
        .is_err());
    let lax = PluginScheduler::builder()
        .without_filter("node-status")
        .build();
    assert_eq!(
        lax.place(&testing::instance("w", 1, 64), &cx).unwrap(),
        "node-000"
    );
}

#[test]
fn cached_state_follows_the_context() {
    let scheduler = PluginScheduler::default();
    let mut nodes = graded();
    let small = testing::instance("small", 2, 8192);
    assert_eq!(
        scheduler
            .place(&small, &SchedulingContext::new(&nodes))
            .unwrap(),
        "node-000"
    );
    // node-000 fills up and node-001 is cordoned: the cache must see both.
    nodes[0].allocated = used(16, 64 * 1024);
    nodes[1].status = NodeStatus::Cordoned;
    assert_eq!(
        scheduler
            .place(&small, &SchedulingContext::new(&nodes))
            .unwrap(),
        "node-002"
    );
    // A stored node whose revision moved is re-read even if only labels changed.
    nodes[2].revision = 5;
    let mut selective = small.clone();
    selective.spec.placement.node_selector =
        BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]).into();
    assert!(scheduler
        .place(&selective, &SchedulingContext::new(&nodes))
        .is_err());
    nodes[2].labels.insert("disk".into(), "ssd".into());
    nodes[2].revision = 6;
    assert_eq!(
        scheduler
            .place(&selective, &SchedulingContext::new(&nodes))
            .unwrap(),
        "node-002"
    );
    // A node joins: the state is rebuilt.
    nodes.push(testing::node("node-003", testing::capacity(16, 64 * 1024)));
    nodes[3].labels.insert("disk".into(), "ssd".into());
    nodes[3].allocated = used(15, 60 * 1024);
    assert_eq!(
        scheduler
            .place(
                &testing::instance("tiny", 1, 64),
                &SchedulingContext::new(&nodes)
            )
            .unwrap(),
        "node-003"
    );
}

#[test]
fn zone_spread_balances_and_follows_targets() {
    let nodes: Vec<_> = (0..9)
        .map(|i| node_in(&format!("n{i}"), ["z1", "z2", "z3"][i % 3]))
        .collect();
    let scheduler = PluginScheduler::default();
    for (targets, expect) in [
        (BTreeMap::new(), [10, 10, 10]),
        (
            BTreeMap::from([("z1".to_owned(), 60), ("z2".to_owned(), 40)]),
            [18, 12, 0],
        ),
    ] {
        let mut state = scheduler.state(&SchedulingContext::new(&nodes));
        for i in 0..30 {
            let mut instance = testing::instance(&format!("w{i}"), 1, 1024);
            instance.spec.placement.spread = Some(ZoneSpread {
                group: None,
                targets: targets.clone(),
            });
            scheduler.schedule(&mut state, &instance).unwrap();
        }
        let per_zone: Vec<u64> = state.zones().map(|z| state.zone_instances(z.id)).collect();
        assert_eq!(per_zone, expect, "{targets:?}");
    }
}

#[test]
fn anti_affinity_no_two_members_on_one_node_or_zone() {
    let nodes: Vec<_> = (0..6)
        .map(|i| node_in(&format!("n{i}"), ["z1", "z2"][i % 2]))
        .collect();
    let scheduler = PluginScheduler::default();
    for (scope, fits, expect) in [
        (
            GroupScope::Node,
            6,
            "6 nodes: hosts a member of group `db` (anti-affinity)",
        ),
        (
            GroupScope::Zone,
            2,
            "6 nodes: zone holds a member of group `db` (anti-affinity)",
        ),
    ] {
        let mut state = scheduler.state(&SchedulingContext::new(&nodes));
        let mut hosts = std::collections::BTreeSet::new();
        for i in 0..fits {
            let node = scheduler
                .schedule(
                    &mut state,
                    &member(&format!("db-{i}"), "db", GroupPolicy::AntiAffinity, scope),
                )
                .unwrap();
            let domain = match scope {
                GroupScope::Node => node,
                GroupScope::Zone => state.nodes()[state.index_of(&node).unwrap()].zone.clone(),
            };
            assert!(
                hosts.insert(domain),
                "{scope:?}: two members share a domain"
            );
        }
        let err = scheduler
            .schedule(
                &mut state,
                &member("db-x", "db", GroupPolicy::AntiAffinity, scope),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), expect);
    }
}

#[test]
fn affinity_keeps_members_together() {
    let nodes: Vec<_> = (0..6)
        .map(|i| node_in(&format!("n{i}"), ["z1", "z2"][i % 2]))
        .collect();
    let scheduler = PluginScheduler::builder()
        .default_strategy(Strategy::Spread)
        .build();
    let mut state = scheduler.state(&SchedulingContext::new(&nodes));
    let first = scheduler
        .schedule(
            &mut state,
            &member("c-0", "cache", GroupPolicy::Affinity, GroupScope::Node),
        )
        .unwrap();
    for i in 1..5 {
        let next = scheduler
            .schedule(
                &mut state,
                &member(
                    &format!("c-{i}"),
                    "cache",
                    GroupPolicy::Affinity,
                    GroupScope::Node,
                ),
            )
            .unwrap();
        assert_eq!(next, first, "spread would move it; hard affinity must not");
    }
    // Soft anti-affinity spreads under bin-pack.
    let packer = PluginScheduler::default();
    let mut state = packer.state(&SchedulingContext::new(&nodes));
    let mut hosts = std::collections::BTreeSet::new();
    for i in 0..6 {
        hosts.insert(
            packer
                .schedule(
                    &mut state,
                    &member(
                        &format!("s-{i}"),
                        "s",
                        GroupPolicy::SoftAntiAffinity,
                        GroupScope::Node,
                    ),
                )
                .unwrap(),
        );
    }
    assert_eq!(hosts.len(), 6);
}

#[test]
fn carbon_aware_prefers_clean_nodes_within_the_cap() {
    let mut nodes = testing::nodes(3);
    for (node, c) in nodes.iter_mut().zip([Some(400), Some(150), None]) {
        node.carbon_intensity = c;
    }
    let cx = SchedulingContext::new(&nodes);
    let mut instance = testing::instance("green", 1, 512);
    instance.spec.placement.carbon = Some(CarbonPolicy {
        max_intensity: None,
    });
    assert_eq!(
        PluginScheduler::default().place(&instance, &cx).unwrap(),
        "node-001"
    );
    instance.spec.placement.carbon = Some(CarbonPolicy {
        max_intensity: Some(100),
    });
    let err = PluginScheduler::default()
        .place(&instance, &cx)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 nodes: carbon intensity above 100 gCO2e/kWh; 1 node: carbon intensity unknown"
    );
}

#[test]
fn sampling_limit_never_hides_a_feasible_node() {
    // 200 nodes, only the last one has room: a limit of 1 must still find it.
    let mut nodes = testing::nodes(200);
    for node in &mut nodes[..199] {
        node.allocated = used(16, 0);
    }
    let scheduler = PluginScheduler::builder().candidates_per_zone(1, 1).build();
    assert_eq!(
        scheduler
            .place(
                &testing::instance("w", 1, 64),
                &SchedulingContext::new(&nodes)
            )
            .unwrap(),
        "node-199"
    );
}

#[test]
fn a_context_that_logs_its_changes_is_synced_by_the_log_alone() {
    use zixiao_core::scheduler::NodeChanges;
    let scheduler = PluginScheduler::default();
    let small = testing::instance("small", 2, 8192);
    let place = |nodes: &[zixiao_core::Node], table: u64, generation: u64, log: &[(u64, u32)]| {
        let changes = NodeChanges {
            table,
            generation,
            since: 0,
            log,
        };
        scheduler
            .place(&small, &SchedulingContext::new(nodes).with_changes(changes))
            .unwrap()
    };
    let mut nodes = graded();
    assert_eq!(place(&nodes, 7, 0, &[]), "node-000");
    // node-000 fills up, and the log says so: the next placement sees it.
    nodes[0].allocated = used(16, 64 * 1024);
    assert_eq!(place(&nodes, 7, 1, &[(1, 0)]), "node-001");
    // The log is the contract: a change it does not name (node-001 filled
    // behind its back) is not looked at, which is what makes a sync O(k).
    nodes[1].allocated = used(16, 64 * 1024);
    assert_eq!(place(&nodes, 7, 1, &[(1, 0)]), "node-001");
    // Another table compares every node.
    assert_eq!(place(&nodes, 8, 0, &[]), "node-002");
}

/// Two nodes the strategies rate alike: whichever holds the instance's
/// image takes it, under either strategy.
#[test]
fn a_node_holding_the_image_wins_among_equals() {
    let instance = testing::instance("web", 1, 1024);
    for holder in [0, 1] {
        let mut nodes = testing::nodes(2);
        nodes[holder].images = ["docker.io/library/busybox:latest".to_owned()].into();
        let cx = SchedulingContext::new(&nodes);
        for strategy in [Strategy::BinPack, Strategy::Spread] {
            let scheduler = PluginScheduler::builder()
                .default_strategy(strategy)
                .build();
            assert_eq!(
                scheduler.place(&instance, &cx).unwrap(),
                nodes[holder].id,
                "{strategy:?}"
            );
        }
    }
}
