//! Every built-in score, table-driven: node state in, score out, always
//! within `0..=100`.

use std::collections::BTreeMap;

use zixiao_core::scheduler::{
    CarbonPolicy, GroupPolicy, GroupScope, Strategy, ZoneSpread as Spread,
};
use zixiao_core::Resources;
use zixiao_sched::scores::{self as plugins, BinPack, CarbonAware, LeastAllocated, ZoneSpread};
use zixiao_sched::{testing, Score, MAX_SCORE};

use crate::{member, node_in, placed_on, request, scores, state, used};

#[test]
fn bin_pack_and_least_allocated_mirror_each_other() {
    // Node: 16 cores, 64 GiB. Instance: 4 cores, 16 GiB.
    let cases: [(&str, Resources, u64, u32); 4] = [
        ("empty node", Resources::default(), 0, 25),
        ("half full", used(8, 32 * 1024), 0, 75),
        ("full after", used(12, 48 * 1024), 0, 100),
        // Disk counts when asked for: 100 of 1024 GiB is 9%.
        ("with disk", Resources::default(), 100, (25 + 25 + 9) / 3),
    ];
    for (name, allocated, disk, expect) in cases {
        let mut node = testing::node("n1", testing::capacity(16, 64 * 1024));
        node.allocated = allocated;
        let state = state(&[node], &[], &[]);
        let mut instance = testing::instance("web", 4, 16 * 1024);
        instance.spec.disk_gib = disk;
        assert_eq!(
            scores(&BinPack, &state, &instance),
            [expect],
            "bin-pack: {name}"
        );
        assert_eq!(
            scores(&LeastAllocated, &state, &instance),
            [MAX_SCORE - expect],
            "least-allocated: {name}"
        );
    }
}

#[test]
fn strategy_decides_which_allocation_score_applies() {
    let state = state(&[testing::node("n1", testing::capacity(4, 4096))], &[], &[]);
    for (strategy, bin_pack, least) in [
        (Strategy::BinPack, true, false),
        (Strategy::Spread, false, true),
    ] {
        let mut instance = testing::instance("web", 1, 64);
        instance.spec.placement.strategy = Some(strategy);
        let request = request(&instance);
        assert_eq!(BinPack.applies(&request, &state), bin_pack, "{strategy:?}");
        assert_eq!(
            LeastAllocated.applies(&request, &state),
            least,
            "{strategy:?}"
        );
    }
}

#[test]
fn zone_spread_prefers_zones_behind_their_share() {
    // Three zones, one node each; 2, 1 and 0 instances placed.
    let mut nodes = vec![node_in("a", "z1"), node_in("b", "z2"), node_in("c", "z3")];
    nodes[0].allocated = Resources {
        instances: 2,
        ..Resources::default()
    };
    nodes[1].allocated = Resources {
        instances: 1,
        ..Resources::default()
    };
    let state = state(&nodes, &[], &[]);
    let targets = |pairs: &[(&str, u8)]| -> BTreeMap<String, u8> {
        pairs.iter().map(|(z, p)| ((*z).to_owned(), *p)).collect()
    };
    let cases: [(&str, Spread, [u32; 3]); 4] = [
        // Even: each zone should hold 4/3 once placed; 50 is on target and
        // every instance behind is 25 points.
        ("even", Spread::default(), [33, 58, 83]),
        // z1 60%, z2 40%: z1 should hold 2.4 (0.4 behind), z2 1.6 (0.6 behind); z3 none.
        (
            "targets",
            Spread {
                group: None,
                targets: targets(&[("z1", 60), ("z2", 40)]),
            },
            [60, 65, 0],
        ),
        // Half each to z2 and z3: each should hold 2 of 4 once placed.
        (
            "two zones",
            Spread {
                group: None,
                targets: targets(&[("z2", 50), ("z3", 50)]),
            },
            [0, 75, 100],
        ),
        // All to z1, which should hold 4 once placed: two behind saturates.
        (
            "saturated",
            Spread {
                group: None,
                targets: targets(&[("z1", 100)]),
            },
            [100, 0, 0],
        ),
    ];
    for (name, spread, expect) in cases {
        let mut instance = testing::instance("web", 1, 64);
        instance.spec.placement.spread = Some(spread);
        assert!(ZoneSpread.applies(&request(&instance), &state));
        assert_eq!(scores(&ZoneSpread, &state, &instance), expect, "{name}");
    }
    assert!(!ZoneSpread.applies(&request(&testing::instance("web", 1, 64)), &state));
}

#[test]
fn zone_spread_counts_group_members_when_named() {
    let nodes = [node_in("a", "z1"), node_in("b", "z2")];
    let placed = [
        placed_on(
            member(
                "db-0",
                "db",
                GroupPolicy::SoftAntiAffinity,
                GroupScope::Zone,
            ),
            "a",
        ),
        placed_on(
            member(
                "db-1",
                "db",
                GroupPolicy::SoftAntiAffinity,
                GroupScope::Zone,
            ),
            "a",
        ),
    ];
    let state = state(&nodes, &placed, &[]);
    let mut instance = testing::instance("db-2", 1, 64);
    instance.spec.placement.spread = Some(Spread {
        group: Some("db".into()),
        targets: BTreeMap::new(),
    });
    // Of 3 members each zone should hold 1.5: z1 is 0.5 ahead, z2 1.5 behind.
    assert_eq!(scores(&ZoneSpread, &state, &instance), [37, 87]);
}

#[test]
fn soft_affinity_counts_members() {
    use GroupPolicy::*;
    let nodes = [node_in("a", "z1"), node_in("b", "z1"), node_in("c", "z2")];
    let placed = [
        placed_on(member("m0", "g", SoftAffinity, GroupScope::Node), "a"),
        placed_on(member("m1", "g", SoftAffinity, GroupScope::Node), "a"),
        placed_on(member("m2", "g", SoftAffinity, GroupScope::Node), "b"),
    ];
    let state = state(&nodes, &placed, &[]);
    let cases: [(GroupPolicy, GroupScope, [u32; 3]); 4] = [
        (SoftAffinity, GroupScope::Node, [50, 25, 0]),
        (SoftAffinity, GroupScope::Zone, [75, 75, 0]),
        (SoftAntiAffinity, GroupScope::Node, [33, 50, 100]),
        (SoftAntiAffinity, GroupScope::Zone, [25, 25, 100]),
    ];
    for (policy, scope, expect) in cases {
        let instance = member("m3", "g", policy, scope);
        assert!(plugins::SoftAffinity.applies(&request(&instance), &state));
        assert_eq!(
            scores(&plugins::SoftAffinity, &state, &instance),
            expect,
            "{policy:?} {scope:?}"
        );
    }
    let hard = member("m3", "g", AntiAffinity, GroupScope::Node);
    assert!(
        !plugins::SoftAffinity.applies(&request(&hard), &state),
        "hard rules are filters, not scores"
    );
}

#[test]
fn carbon_aware_ranks_intensity_among_candidates() {
    type Intensities = [Option<u32>; 3];
    let cases: [(&str, Intensities, [u32; 3]); 4] = [
        (
            "spread out",
            [Some(100), Some(300), Some(200)],
            [100, 0, 50],
        ),
        (
            "unknown is worst",
            [Some(50), None, Some(50)],
            [100, 0, 100],
        ),
        ("all equal", [Some(80), Some(80), Some(80)], [100, 100, 100]),
        ("none known", [None, None, None], [0, 0, 0]),
    ];
    for (name, intensities, expect) in cases {
        let nodes: Vec<_> = intensities
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut n = testing::node(&format!("n{i}"), testing::capacity(4, 4096));
                n.carbon_intensity = *c;
                n
            })
            .collect();
        let state = state(&nodes, &[], &[]);
        let mut instance = testing::instance("web", 1, 64);
        instance.spec.placement.carbon = Some(CarbonPolicy::default());
        assert!(CarbonAware.applies(&request(&instance), &state));
        assert_eq!(scores(&CarbonAware, &state, &instance), expect, "{name}");
    }
}

#[test]
fn balanced_prefers_even_cpu_and_memory_use() {
    // Node: 16 cores, 64 GiB. Instance: 4 cores, 16 GiB (25% of each).
    let cases: [(&str, Resources, u32); 4] = [
        ("empty node stays even", Resources::default(), 100),
        ("cpu-heavy node", used(8, 0), 50),
        ("memory-heavy node", used(0, 48 * 1024), 25),
        ("evenly half full", used(8, 32 * 1024), 100),
    ];
    for (name, allocated, expect) in cases {
        let mut node = testing::node("n1", testing::capacity(16, 64 * 1024));
        node.allocated = allocated;
        let state = state(&[node], &[], &[]);
        let instance = testing::instance("web", 4, 16 * 1024);
        assert_eq!(
            scores(&plugins::Balanced, &state, &instance),
            [expect],
            "{name}"
        );
    }
}

#[test]
fn image_locality_scores_the_share_of_images_a_node_holds() {
    use zixiao_core::InstanceSpec;
    use zixiao_sched::scores::ImageLocality;

    let mut nodes: Vec<_> = (0..4)
        .map(|i| testing::node(&format!("n{i}"), testing::capacity(16, 64 * 1024)))
        .collect();
    // n1 holds the container image by its full name, n2 by the name given.
    nodes[1].images = ["docker.io/library/busybox:latest".to_owned()].into();
    nodes[2].images = ["busybox".to_owned()].into();
    // n3 holds the VM's disk (pulled by reference) but not its kernel.
    nodes[3].images = ["debian-12".to_owned(), "other".to_owned()].into();
    let state = state(&nodes, &[], &[]);

    let container = testing::instance("web", 1, 64);
    assert_eq!(scores(&ImageLocality, &state, &container), [0, 100, 100, 0]);
    assert!(ImageLocality.applies(&request(&container), &state));

    let mut vm = testing::instance("vm", 1, 64);
    vm.spec = InstanceSpec::vm("127.0.0.1:5000/vm/debian:12").with_size(1, 64);
    vm.spec.kernel = Some("vmlinux".into());
    assert_eq!(scores(&ImageLocality, &state, &vm), [0, 0, 0, 50]);

    // Host paths are no images a node holds: no opinion.
    let mut local = vm.clone();
    local.spec.image = Some("/var/lib/disk.qcow2".into());
    local.spec.kernel = Some("/boot/vmlinuz".into());
    assert!(!ImageLocality.applies(&request(&local), &state));
    // Nor when no node holds any of its images.
    let mut unknown = container.clone();
    unknown.spec.image = Some("nginx:1".into());
    assert!(!ImageLocality.applies(&request(&unknown), &state));
}
