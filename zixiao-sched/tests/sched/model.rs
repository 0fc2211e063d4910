//! The placement vocabulary in zixiao-core: old YAML keeps working, new
//! fields round-trip, selectors parse, and validation names the field.

use zixiao_core::scheduler::{
    GroupPolicy, GroupScope, LabelOperator, LabelRequirement, LabelSelector, Strategy,
};
use zixiao_core::{CreateInstance, ErrorKind, InstanceSpec, Node, NodeRegistration, Placement};
use zixiao_sched::testing;

#[test]
fn original_map_selector_still_parses_and_round_trips() {
    let yaml = "name: web\nspec:\n  type: container\n  image: busybox\n  cpus: 1\n  memory_mib: 64\n  placement:\n    zone: z1\n    node_selector: {disk: ssd}\n    required_traits: [gpu]\n";
    let request: CreateInstance = serde_yaml::from_str(yaml).unwrap();
    request.validate().unwrap();
    let placement = &request.spec.placement;
    assert_eq!(
        placement.node_selector,
        LabelSelector(vec![LabelRequirement::equals("disk", "ssd")])
    );
    // Equalities serialize back to the map form; empty fields are left out.
    let json = serde_json::to_value(placement).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"zone": "z1", "node_selector": {"disk": "ssd"}, "required_traits": ["gpu"]})
    );
    assert_eq!(
        serde_json::to_value(Placement::default()).unwrap(),
        serde_json::json!({})
    );
}

#[test]
fn rich_placement_round_trips() {
    let yaml = r#"
node_selector:
  - {key: disk, operator: in, values: [ssd, nvme]}
  - {key: gpu, operator: does_not_exist}
forbidden_traits: [spot]
aggregates: [fast]
aggregate_selector: {tenant: blue}
groups: [{name: db, policy: soft_anti_affinity, scope: zone}, {name: web, policy: affinity}]
spread: {group: db, targets: {z1: 50, z2: 50}}
strategy: spread
carbon: {max_intensity: 200}
"#;
    let placement: Placement = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(placement.node_selector.0[0].operator, LabelOperator::In);
    assert_eq!(placement.groups[0].policy, GroupPolicy::SoftAntiAffinity);
    assert_eq!(placement.groups[1].scope, GroupScope::Node);
    assert_eq!(placement.strategy, Some(Strategy::Spread));
    let back: Placement =
        serde_json::from_value(serde_json::to_value(&placement).unwrap()).unwrap();
    assert_eq!(back, placement);
    let mut spec = InstanceSpec::container("busybox");
    spec.placement = placement;
    spec.validate().unwrap();
}

#[test]
fn unknown_fields_are_rejected() {
    for yaml in [
        "zone: z1\nnode_selektor: {a: b}\n",
        "node_selector: [{key: a, operator: exists, value: x}]\n",
        "groups: [{name: db, policy: affinity, scop: zone}]\n",
        "node_selector: [{key: a, operator: near}]\n",
    ] {
        assert!(serde_yaml::from_str::<Placement>(yaml).is_err(), "{yaml}");
    }
}

#[test]
fn node_carbon_intensity_defaults_to_unknown() {
    let node = testing::node("n1", testing::capacity(1, 64));
    let mut json = serde_json::to_value(&node).unwrap();
    json.as_object_mut().unwrap().remove("carbon_intensity");
    let back: Node = serde_json::from_value(json).unwrap();
    assert_eq!(back.carbon_intensity, None);
    let registration: NodeRegistration = serde_json::from_value(serde_json::json!({
        "id": "n1", "hostname": "n1", "address": "local",
        "capacity": {"cpus": 1, "memory_mib": 64, "disk_gib": 0, "instances": 1},
        "carbon_intensity": 120
    }))
    .unwrap();
    assert_eq!(registration.carbon_intensity, Some(120));
}

#[test]
fn requirements_parse_from_the_command_line() {
    let cases = [
        ("disk=ssd", LabelRequirement::equals("disk", "ssd")),
        ("disk!=hdd", LabelRequirement::none_of("disk", ["hdd"])),
        (
            "disk in (ssd, nvme)",
            LabelRequirement::one_of("disk", ["ssd", "nvme"]),
        ),
        (
            "disk notin (hdd)",
            LabelRequirement::none_of("disk", ["hdd"]),
        ),
        ("gpu", LabelRequirement::exists("gpu")),
        ("!gpu", LabelRequirement::does_not_exist("gpu")),
    ];
    for (text, expect) in cases {
        let parsed: LabelRequirement = text.parse().unwrap();
        assert_eq!(parsed, expect, "{text}");
        // Display gives a form that parses back to the same requirement.
        assert_eq!(
            parsed.to_string().parse::<LabelRequirement>().unwrap(),
            expect,
            "{text}"
        );
    }
    for bad in ["", "disk in ssd", "disk like (a)"] {
        assert!(bad.parse::<LabelRequirement>().is_err(), "{bad:?}");
    }
}

#[test]
fn validation_names_the_field() {
    type Edit = fn(&mut Placement);
    let cases: [(&str, Edit); 12] = [
        ("spec.placement.node_selector[1].key", |p| {
            p.node_selector = LabelSelector(vec![
                LabelRequirement::exists("ok"),
                LabelRequirement::exists("bad key"),
            ])
        }),
        ("spec.placement.node_selector[0].values", |p| {
            p.node_selector =
                LabelSelector(vec![LabelRequirement::one_of("disk", Vec::<String>::new())])
        }),
        ("spec.placement.node_selector[0].values", |p| {
            p.node_selector = LabelSelector(vec![LabelRequirement {
                key: "disk".into(),
                operator: LabelOperator::Exists,
                values: vec!["x".into()],
            }])
        }),
        ("spec.placement.node_selector[0].values", |p| {
            p.node_selector = LabelSelector(vec![LabelRequirement::one_of("disk", ["a", "b"])]);
            p.node_selector.0[0].operator = LabelOperator::Equals;
        }),
        ("spec.placement.node_selector[0].values", |p| {
            p.node_selector = LabelSelector(vec![LabelRequirement::equals("disk", "a\nb")])
        }),
        ("spec.placement.forbidden_traits", |p| {
            p.required_traits.insert("gpu".into());
            p.forbidden_traits.insert("gpu".into());
        }),
        ("spec.placement.aggregates", |p| {
            p.aggregates.insert("no spaces".into());
        }),
        ("spec.placement.aggregate_selector[0].key", |p| {
            p.aggregate_selector = LabelSelector(vec![LabelRequirement::exists("")])
        }),
        ("spec.placement.groups[0].name", |p| {
            p.groups.push(zixiao_core::scheduler::GroupRule {
                name: "Not_A_Label".into(),
                policy: GroupPolicy::Affinity,
                scope: GroupScope::Node,
            })
        }),
        ("spec.placement.groups[1].name", |p| {
            for _ in 0..2 {
                p.groups.push(zixiao_core::scheduler::GroupRule {
                    name: "db".into(),
                    policy: GroupPolicy::Affinity,
                    scope: GroupScope::Node,
                });
            }
        }),
        ("spec.placement.spread.targets.z1", |p| {
            p.spread = Some(zixiao_core::scheduler::ZoneSpread {
                group: None,
                targets: [("z1".to_owned(), 101)].into(),
            })
        }),
        ("spec.placement.spread.targets", |p| {
            p.spread = Some(zixiao_core::scheduler::ZoneSpread {
                group: None,
                targets: [("z1".to_owned(), 60), ("z2".to_owned(), 60)].into(),
            })
        }),
    ];
    for (field, edit) in cases {
        let mut spec = InstanceSpec::container("busybox");
        edit(&mut spec.placement);
        let err = spec.validate().expect_err(field);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{field}");
        assert!(
            err.to_string().starts_with(&format!("invalid {field}:")),
            "{field}: {err}"
        );
    }
}
