//! Every built-in filter, table-driven: a node and a placement in, the
//! verdict (with its reason) out.

use std::collections::{BTreeMap, BTreeSet};

use zixiao_core::scheduler::{
    CarbonPolicy, GroupPolicy, GroupScope, HostAggregate, LabelRequirement, LabelSelector,
};
use zixiao_core::{Instance, InstanceType, Node, NodeStatus, Placement, Resources};
use zixiao_sched::filters::{
    Aggregates, CarbonCap, CloneSource, GroupAffinity, HostPorts, NodeReady, NodeSelector, Region,
    ResourcesFit, RuntimeSupport, Traits, Zone,
};
use zixiao_sched::{testing, Filter};

use crate::{member, node_in, placed_on, state, used, verdict};

/// An edit of a placement.
type Edit = fn(&mut Placement);
/// An expected verdict: passes, or the rejection's text.
type Expect = Result<(), &'static str>;

/// One case: a node edit, a placement, and the expected verdict.
struct Case {
    name: &'static str,
    node: fn(&mut Node),
    placement: fn(&mut Placement),
    expect: Result<(), &'static str>,
}

fn run(filter: &dyn Filter, cases: &[Case]) {
    for case in cases {
        let mut node = testing::node("n1", testing::capacity(16, 64 * 1024));
        (case.node)(&mut node);
        let mut instance = testing::instance("web", 4, 4096);
        (case.placement)(&mut instance.spec.placement);
        let state = state(&[node], &[], &[]);
        let got = verdict(filter, &state, 0, &instance);
        assert_eq!(
            got,
            case.expect.map_err(str::to_owned),
            "{}: {}",
            filter.name(),
            case.name
        );
    }
}

fn keep(_: &mut Node) {}
fn anywhere(_: &mut Placement) {}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn names(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn node_ready_rejects_every_status_but_ready() {
    let cases = [
        (NodeStatus::Ready, Ok(())),
        (NodeStatus::NotReady, Err("not ready")),
        (NodeStatus::Cordoned, Err("cordoned")),
        (NodeStatus::Maintenance, Err("in maintenance")),
        (NodeStatus::Draining, Err("draining")),
        (NodeStatus::Decommissioned, Err("decommissioned")),
        (NodeStatus::Onboarding, Err("onboarding")),
        (NodeStatus::OnboardingFailed, Err("onboarding failed")),
    ];
    assert_eq!(cases.len(), NodeStatus::ALL.len());
    for (status, expect) in cases {
        let mut node = testing::node("n1", testing::capacity(4, 4096));
        node.status = status;
        let state = state(&[node], &[], &[]);
        let got = verdict(&NodeReady, &state, 0, &testing::instance("web", 1, 64));
        assert_eq!(got, expect.map_err(str::to_owned), "{status:?}");
    }
    assert!(NodeReady.prunes().unready);
}

#[test]
fn runtime_support_needs_the_instance_type() {
    run(
        &RuntimeSupport,
        &[
            Case {
                name: "offers containers",
                node: keep,
                placement: anywhere,
                expect: Ok(()),
            },
            Case {
                name: "missing, with the agent's reason",
                node: |n| {
                    n.runtimes.remove(&InstanceType::Container);
                    n.missing_runtimes
                        .insert(InstanceType::Container, "containerd is not running".into());
                },
                placement: anywhere,
                expect: Err("no container runtime (containerd is not running)"),
            },
            Case {
                name: "missing, no reason",
                node: |n| n.runtimes.clear(),
                placement: anywhere,
                expect: Err("no container runtime"),
            },
        ],
    );
}

#[test]
fn clone_source_keeps_a_clone_on_its_source_node() {
    let n1 = testing::node("n1", testing::capacity(4, 4096));
    let n2 = testing::node("n2", testing::capacity(4, 4096));
    let state = state(&[n1, n2], &[], &[]);
    let plain = testing::instance("web", 1, 64);
    assert_eq!(verdict(&CloneSource, &state, 1, &plain), Ok(()));
    let mut clone = testing::instance("web-2", 1, 64);
    clone.clone_of = Some(zixiao_core::model::CloneOrigin {
        source: "src-id".to_owned(),
        node: "n1".to_owned(),
        linked: true,
        snapshot: None,
    });
    assert_eq!(verdict(&CloneSource, &state, 0, &clone), Ok(()));
    let refused = verdict(&CloneSource, &state, 1, &clone).unwrap_err();
    assert!(refused.contains("clone's source"), "{refused}");
}

#[test]
fn region_and_zone_match_by_name() {
    run(
        &Region,
        &[
            Case {
                name: "none asked",
                node: keep,
                placement: anywhere,
                expect: Ok(()),
            },
            Case {
                name: "same",
                node: keep,
                placement: |p| p.region = Some("r1".into()),
                expect: Ok(()),
            },
            Case {
                name: "other",
                node: keep,
                placement: |p| p.region = Some("r2".into()),
                expect: Err("not in region `r2`"),
            },
        ],
    );
    run(
        &Zone,
        &[
            Case {
                name: "none asked",
                node: keep,
                placement: anywhere,
                expect: Ok(()),
            },
            Case {
                name: "same",
                node: keep,
                placement: |p| p.zone = Some("z1".into()),
                expect: Ok(()),
            },
            Case {
                name: "other",
                node: keep,
                placement: |p| p.zone = Some("z9".into()),
                expect: Err("not in zone `z9`"),
            },
        ],
    );
}

#[test]
fn zone_level_checks_agree_with_node_checks() {
    let nodes = [node_in("a", "z1"), node_in("b", "z2")];
    let state = state(&nodes, &[], &[]);
    let mut instance = testing::instance("web", 1, 64);
    instance.spec.placement.zone = Some("z2".into());
    let request = crate::request(&instance);
    for zone in state.zones() {
        let zone_verdict = Zone.filter_zone(&request, &zone, &state).is_ok();
        let node = state
            .nodes()
            .iter()
            .position(|n| n.zone == zone.name)
            .unwrap();
        assert_eq!(
            zone_verdict,
            verdict(&Zone, &state, node, &instance).is_ok(),
            "{}",
            zone.name
        );
    }
}

#[test]
fn node_selector_supports_every_operator() {
    fn with(p: &mut Placement, r: LabelRequirement) {
        p.node_selector = LabelSelector(vec![r]);
    }
    let ssd = |n: &mut Node| n.labels = labels(&[("disk", "ssd"), ("tier", "web")]);
    run(
        &NodeSelector,
        &[
            Case {
                name: "empty selector",
                node: keep,
                placement: anywhere,
                expect: Ok(()),
            },
            Case {
                name: "equals, from the map form",
                node: ssd,
                placement: |p| p.node_selector = labels(&[("disk", "ssd"), ("tier", "web")]).into(),
                expect: Ok(()),
            },
            Case {
                name: "equals, other value",
                node: ssd,
                placement: |p| with(p, LabelRequirement::equals("disk", "hdd")),
                expect: Err("labels do not match `disk=hdd`"),
            },
            Case {
                name: "equals, label missing",
                node: keep,
                placement: |p| with(p, LabelRequirement::equals("disk", "ssd")),
                expect: Err("labels do not match `disk=ssd`"),
            },
            Case {
                name: "in",
                node: ssd,
                placement: |p| with(p, LabelRequirement::one_of("disk", ["nvme", "ssd"])),
                expect: Ok(()),
            },
            Case {
                name: "in, no value matches",
                node: ssd,
                placement: |p| with(p, LabelRequirement::one_of("disk", ["nvme", "hdd"])),
                expect: Err("labels do not match `disk in (nvme,hdd)`"),
            },
            Case {
                name: "not in, label missing",
                node: keep,
                placement: |p| with(p, LabelRequirement::none_of("disk", ["ssd"])),
                expect: Ok(()),
            },
            Case {
                name: "not in, value listed",
                node: ssd,
                placement: |p| with(p, LabelRequirement::none_of("disk", ["ssd"])),
                expect: Err("labels do not match `disk notin (ssd)`"),
            },
            Case {
                name: "exists",
                node: ssd,
                placement: |p| with(p, LabelRequirement::exists("tier")),
                expect: Ok(()),
            },
            Case {
                name: "exists, missing",
                node: keep,
                placement: |p| with(p, LabelRequirement::exists("tier")),
                expect: Err("labels do not match `tier`"),
            },
            Case {
                name: "does not exist",
                node: ssd,
                placement: |p| with(p, LabelRequirement::does_not_exist("tier")),
                expect: Err("labels do not match `!tier`"),
            },
            Case {
                name: "the first unmet requirement is named",
                node: ssd,
                placement: |p| {
                    p.node_selector = LabelSelector(vec![
                        LabelRequirement::exists("disk"),
                        LabelRequirement::equals("tier", "db"),
                        LabelRequirement::exists("gpu"),
                    ])
                },
                expect: Err("labels do not match `tier=db`"),
            },
        ],
    );
}

#[test]
fn traits_required_and_forbidden() {
    let gpu = |n: &mut Node| n.traits = names(&["gpu", "spot"]);
    run(
        &Traits,
        &[
            Case {
                name: "nothing asked",
                node: gpu,
                placement: anywhere,
                expect: Ok(()),
            },
            Case {
                name: "required present",
                node: gpu,
                placement: |p| p.required_traits = names(&["gpu"]),
                expect: Ok(()),
            },
            Case {
                name: "required missing",
                node: gpu,
                placement: |p| p.required_traits = names(&["gpu", "ssd"]),
                expect: Err("missing trait `ssd`"),
            },
            Case {
                name: "forbidden absent",
                node: keep,
                placement: |p| p.forbidden_traits = names(&["spot"]),
                expect: Ok(()),
            },
            Case {
                name: "forbidden present",
                node: gpu,
                placement: |p| p.forbidden_traits = names(&["spot"]),
                expect: Err("has forbidden trait `spot`"),
            },
        ],
    );
}

#[test]
fn aggregates_by_name_and_by_metadata() {
    let aggregates = [
        HostAggregate {
            name: "fast".into(),
            metadata: labels(&[("ssd", "true")]),
            nodes: names(&["n1"]),
        },
        HostAggregate {
            name: "blue".into(),
            metadata: labels(&[("tenant", "blue")]),
            nodes: names(&["n2"]),
        },
    ];
    let nodes = [
        testing::node("n1", testing::capacity(4, 4096)),
        testing::node("n2", testing::capacity(4, 4096)),
    ];
    let state = state(&nodes, &[], &aggregates);
    let cases: [(&str, Edit, usize, Expect); 6] = [
        ("nothing asked", |_| {}, 1, Ok(())),
        (
            "named, member",
            |p| p.aggregates = names(&["fast"]),
            0,
            Ok(()),
        ),
        (
            "named, not a member",
            |p| p.aggregates = names(&["fast"]),
            1,
            Err("not in aggregate `fast`"),
        ),
        (
            "named, unknown aggregate",
            |p| p.aggregates = names(&["gone"]),
            0,
            Err("aggregate `gone` does not exist"),
        ),
        (
            "metadata matches",
            |p| p.aggregate_selector = labels(&[("ssd", "true")]).into(),
            0,
            Ok(()),
        ),
        (
            "metadata of its aggregate does not match",
            |p| p.aggregate_selector = labels(&[("ssd", "true")]).into(),
            1,
            Err("in no aggregate matching `ssd=true`"),
        ),
    ];
    for (name, placement, node, expect) in cases {
        let mut instance = testing::instance("web", 1, 64);
        placement(&mut instance.spec.placement);
        assert_eq!(
            verdict(&Aggregates, &state, node, &instance),
            expect.map_err(str::to_owned),
            "{name}"
        );
    }
}

/// An instance `name` publishing `ports`.
fn publishing(name: &str, ports: &[&str]) -> Instance {
    let mut instance = testing::instance(name, 1, 1024);
    instance.spec.publish = ports
        .iter()
        .map(|p| zixiao_core::PublishedPort::try_from(*p).unwrap())
        .collect();
    instance
}

#[test]
fn host_ports_are_held_per_node_and_the_holder_is_named() {
    let nodes = [node_in("n1", "z1"), node_in("n2", "z1")];
    let placed = [
        placed_on(publishing("web", &["8080:80", "192.0.2.7:53:53/udp"]), "n1"),
        // Not placed: holds nothing.
        publishing("pending", &["9090:90"]),
    ];
    let mut state = state(&nodes, &placed, &[]);
    let cases: [(&[&str], usize, Expect); 8] = [
        (
            &["8080:80"],
            0,
            Err("host port 8080/tcp is published by instance `web`"),
        ),
        (&["8080:81"], 1, Ok(())),
        (
            &["192.0.2.9:8080:80"],
            0,
            Err("host port 192.0.2.9:8080/tcp is published by instance `web`"),
        ),
        (&["8080:80/udp", "8081:80"], 0, Ok(())),
        (
            &["53:53/udp"],
            0,
            Err("host port 53/udp is published by instance `web`"),
        ),
        (&["192.0.2.8:53:53/udp"], 0, Ok(())),
        (&["9090:90"], 0, Ok(())),
        (&[], 0, Ok(())),
    ];
    for (ports, node, expect) in cases {
        let instance = publishing("api", ports);
        assert_eq!(
            verdict(&HostPorts, &state, node, &instance),
            expect.map_err(str::to_owned),
            "{ports:?} on {}",
            nodes[node].id
        );
        let request = crate::request(&instance);
        assert_eq!(
            HostPorts.admits(&request, state.node_ref(node), &state),
            expect.is_ok()
        );
    }
    // An instance never conflicts with itself (placed again: same id).
    let again = publishing("web", &["8080:80"]);
    assert_eq!(again.id, placed[0].id);
    assert_eq!(verdict(&HostPorts, &state, 0, &again), Ok(()));
    // A commit holds the ports; a release gives them back.
    let api = publishing("api", &["7000:70"]);
    state.commit(1, &api);
    assert_eq!(
        verdict(&HostPorts, &state, 1, &publishing("other", &["7000:71"])),
        Err("host port 7000/tcp is published by instance `api`".to_owned())
    );
    state.release(1, &api);
    assert_eq!(
        verdict(&HostPorts, &state, 1, &publishing("other", &["7000:71"])),
        Ok(())
    );
}

#[test]
fn group_affinity_hard_rules() {
    use GroupPolicy::*;
    use GroupScope::*;
    // n1 and n2 in z1, n3 in z2; one member of `db` is on n1.
    let nodes = [
        node_in("n1", "z1"),
        node_in("n2", "z1"),
        node_in("n3", "z2"),
    ];
    let placed = [placed_on(member("db-0", "db", AntiAffinity, Node), "n1")];
    let state = state(&nodes, &placed, &[]);
    let cases: [(GroupPolicy, GroupScope, &str, usize, Expect); 12] = [
        (
            AntiAffinity,
            Node,
            "db",
            0,
            Err("hosts a member of group `db` (anti-affinity)"),
        ),
        (AntiAffinity, Node, "db", 1, Ok(())),
        (
            AntiAffinity,
            Zone,
            "db",
            1,
            Err("zone holds a member of group `db` (anti-affinity)"),
        ),
        (AntiAffinity, Zone, "db", 2, Ok(())),
        (Affinity, Node, "db", 0, Ok(())),
        (
            Affinity,
            Node,
            "db",
            1,
            Err("hosts no member of group `db` (affinity)"),
        ),
        (
            Affinity,
            Node,
            "db",
            2,
            Err("hosts no member of group `db` (affinity)"),
        ),
        (Affinity, Zone, "db", 1, Ok(())),
        (
            Affinity,
            Zone,
            "db",
            2,
            Err("zone holds no member of group `db` (affinity)"),
        ),
        // The first member of a group may go anywhere.
        (Affinity, Node, "cache", 2, Ok(())),
        // Soft rules never reject.
        (SoftAntiAffinity, Node, "db", 0, Ok(())),
        (SoftAffinity, Zone, "db", 2, Ok(())),
    ];
    for (policy, scope, group, node, expect) in cases {
        let instance = member("db-1", group, policy, scope);
        assert_eq!(
            verdict(&GroupAffinity, &state, node, &instance),
            expect.map_err(str::to_owned),
            "{policy:?} {scope:?} {group} on {}",
            nodes[node].id
        );
        // A zone turned down whole is turned down node by node too.
        let request = crate::request(&instance);
        let zone = state.zone(state.node_ref(node).zone);
        if GroupAffinity.filter_zone(&request, &zone, &state).is_err() {
            assert!(
                expect.is_err(),
                "{policy:?} {scope:?}: zone check stricter than node check"
            );
        }
    }
}

#[test]
fn carbon_cap_needs_a_known_low_intensity() {
    run(
        &CarbonCap,
        &[
            Case {
                name: "no policy",
                node: keep,
                placement: anywhere,
                expect: Ok(()),
            },
            Case {
                name: "policy without maximum",
                node: keep,
                placement: |p| p.carbon = Some(CarbonPolicy::default()),
                expect: Ok(()),
            },
            Case {
                name: "unknown intensity",
                node: keep,
                placement: |p| {
                    p.carbon = Some(CarbonPolicy {
                        max_intensity: Some(200),
                    })
                },
                expect: Err("carbon intensity unknown"),
            },
            Case {
                name: "at the maximum",
                node: |n| n.carbon_intensity = Some(200),
                placement: |p| {
                    p.carbon = Some(CarbonPolicy {
                        max_intensity: Some(200),
                    })
                },
                expect: Ok(()),
            },
            Case {
                name: "above",
                node: |n| n.carbon_intensity = Some(450),
                placement: |p| {
                    p.carbon = Some(CarbonPolicy {
                        max_intensity: Some(200),
                    })
                },
                expect: Err("carbon intensity above 200 gCO2e/kWh"),
            },
        ],
    );
}

#[test]
fn resources_fit_every_dimension() {
    // The node has 16 cores, 64 GiB, 1024 GiB disk, 110 instances; the
    // instance asks for 4 cores and 4096 MiB.
    let cases: [(&str, Resources, u64, Result<(), &str>); 6] = [
        ("empty node", Resources::default(), 0, Ok(())),
        ("exactly full after", used(12, 60 * 1024), 0, Ok(())),
        (
            "cpu",
            used(13, 0),
            0,
            Err("insufficient cpu (need 4 cores, free 3 cores)"),
        ),
        (
            "memory",
            used(0, 62 * 1024),
            0,
            Err("insufficient memory (need 4096 MiB, free 2048 MiB)"),
        ),
        (
            "disk",
            Resources {
                disk_gib: 1000,
                ..Resources::default()
            },
            100,
            Err("insufficient disk (need 100 GiB, free 24 GiB)"),
        ),
        (
            "instances",
            Resources {
                instances: 110,
                ..Resources::default()
            },
            0,
            Err("instance limit reached"),
        ),
    ];
    for (name, allocated, disk, expect) in cases {
        let mut node = testing::node("n1", testing::capacity(16, 64 * 1024));
        node.allocated = allocated;
        let mut instance: Instance = testing::instance("web", 4, 4096);
        instance.spec.disk_gib = disk;
        let state = state(&[node], &[], &[]);
        assert_eq!(
            verdict(&ResourcesFit, &state, 0, &instance),
            expect.map_err(str::to_owned),
            "{name}"
        );
    }
    assert!(ResourcesFit.prunes().short_of_resources);
}
