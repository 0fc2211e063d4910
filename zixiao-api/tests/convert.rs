//! Every object the protocol carries survives core -> pb -> core unchanged
//! (property tests over generated objects), and a message from the wire
//! that is missing a required field or carries an unknown enum value is
//! refused with `InvalidArgument` naming the field, never a panic or a
//! guess. Damaged wire bytes (generated objects encoded, then bytes
//! overwritten and the message cut short) are fuzzed through the same
//! decoders: each is refused, or decodes to an object that survives the
//! round trip; a decoded request or registration is then validated as a
//! server would, which passes it or refuses it as `InvalidArgument`.
//! `PROPTEST_CASES=100000 cargo test -p zixiao-api --test convert damaged`
//! is the longer run; CI runs a fixed budget.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use zixiao_api::pb;
use zixiao_core::agent::NodeFacts;
use zixiao_core::controller::{
    ClusterInfo, DrainReport, EventKind, InstanceEvent, MigratedInstance, NodeEvent,
};
use zixiao_core::driver::{
    Capability, DriverInfo, ImageInfo, InstanceStats, LogChunk, RuntimeState, SnapshotInfo,
};
use zixiao_core::model::{
    Aggregate, AggregateName, BridgeName, CheckOutcome, Cidr, CloneOrigin, Condition,
    ConditionType, CreateInstance, CreateNetwork, DesiredState, ExitStatus, Failure,
    InstallationId, Instance, InstanceSpec, InstanceStatus, InstanceType, InterfaceKind,
    InterfaceName, IpConfig, LabelKey, LabelValue, MicrovmBackend, Network, NetworkAttachment,
    NetworkName, Node, NodeMetadata, NodeRegistration, NodeRole, NodeStatus, Onboarding,
    OnboardingState, OrphanSweep, Placement, PublishedPort, Resources, RestartPolicy, RuntimeCheck,
    ScheduledSnapshot, SmokeStep, SnapshotName, SnapshotSchedule, Subnet, TemplateName,
    TemplateOrigin, Vni, MAX_SNAPSHOT_INTERVAL, MAX_SNAPSHOT_KEEP, MAX_VNI, MIN_SNAPSHOT_INTERVAL,
};
use zixiao_core::scheduler::{
    CarbonPolicy, GroupPolicy, GroupRule, GroupScope, LabelOperator, LabelRequirement,
    LabelSelector, Strategy as Ranking, ZoneSpread,
};
use zixiao_core::{Error, ErrorKind, InstanceFilter, InstanceUpdate};
use zixiao_testing::fuzz::{cases, damage, Damage};

// ---------------------------------------------------------------- strategies

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}"
}

fn text() -> impl Strategy<Value = String> {
    ".{0,16}"
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(name(), text(), 0..3)
}

fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(name(), 0..3)
}

fn name_set() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(name(), 0..3)
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // From 1970 to 2100, to the nanosecond.
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range"))
}

fn one_of<T: Clone + Debug + 'static>(values: &[T]) -> impl Strategy<Value = T> {
    prop::sample::select(values.to_vec())
}

fn instance_type() -> impl Strategy<Value = InstanceType> {
    one_of(&InstanceType::ALL)
}

fn instance_status() -> impl Strategy<Value = InstanceStatus> {
    one_of(&InstanceStatus::ALL)
}

fn node_status() -> impl Strategy<Value = NodeStatus> {
    one_of(&NodeStatus::ALL)
}

fn node_role() -> impl Strategy<Value = NodeRole> {
    one_of(&[NodeRole::Worker, NodeRole::Control, NodeRole::Combined])
}

fn resources() -> impl Strategy<Value = Resources> {
    (any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
        |(cpus, memory_mib, disk_gib, instances)| Resources {
            cpus: zixiao_core::Cpus::cores(cpus),
            memory_mib,
            disk_gib,
            instances,
        },
    )
}

fn requirement() -> impl Strategy<Value = LabelRequirement> {
    let operator = one_of(&[
        LabelOperator::Equals,
        LabelOperator::In,
        LabelOperator::NotIn,
        LabelOperator::Exists,
        LabelOperator::DoesNotExist,
    ]);
    (name(), operator, names()).prop_map(|(key, operator, values)| LabelRequirement {
        key,
        operator,
        values,
    })
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    prop::collection::vec(requirement(), 0..3).prop_map(LabelSelector)
}

fn group_rule() -> impl Strategy<Value = GroupRule> {
    let policy = one_of(&[
        GroupPolicy::Affinity,
        GroupPolicy::AntiAffinity,
        GroupPolicy::SoftAffinity,
        GroupPolicy::SoftAntiAffinity,
    ]);
    let scope = one_of(&[GroupScope::Node, GroupScope::Zone]);
    (name(), policy, scope).prop_map(|(name, policy, scope)| GroupRule {
        name,
        policy,
        scope,
    })
}

fn placement() -> impl Strategy<Value = Placement> {
    let spread = prop::option::of(
        (
            prop::option::of(name()),
            prop::collection::btree_map(name(), any::<u8>(), 0..3),
        )
            .prop_map(|(group, targets)| ZoneSpread { group, targets }),
    );
    let strategy = prop::option::of(one_of(&[Ranking::BinPack, Ranking::Spread]));
    let carbon = prop::option::of(
        prop::option::of(any::<u32>()).prop_map(|max_intensity| CarbonPolicy { max_intensity }),
    );
    (
        (prop::option::of(name()), prop::option::of(name())),
        (selector(), name_set(), name_set(), name_set(), selector()),
        (
            prop::collection::vec(group_rule(), 0..3),
            spread,
            strategy,
            carbon,
        ),
    )
        .prop_map(
            |(
                (region, zone),
                (node_selector, required_traits, forbidden_traits, aggregates, aggregate_selector),
                (groups, spread, strategy, carbon),
            )| Placement {
                region,
                zone,
                node_selector,
                required_traits,
                forbidden_traits,
                aggregates,
                aggregate_selector,
                groups,
                spread,
                strategy,
                carbon,
            },
        )
}

fn path() -> impl Strategy<Value = Option<PathBuf>> {
    prop::option::of("/[a-z]{1,8}/[a-z.]{1,8}".prop_map(PathBuf::from))
}

fn spec() -> impl Strategy<Value = InstanceSpec> {
    let backend = one_of(&[
        MicrovmBackend::Auto,
        MicrovmBackend::Vmm,
        MicrovmBackend::Qemu,
    ]);
    let restart = one_of(&[
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
    ]);
    (
        (instance_type(), prop::option::of(text()), any::<u32>()),
        (any::<u64>(), any::<u64>(), path(), path()),
        (prop::option::of(text()), backend, path(), names()),
        (
            prop::collection::vec(text(), 0..3),
            labels(),
            restart,
            placement(),
            prop::collection::vec(published_port(), 0..3),
        ),
        snapshot_schedule(),
        cloud_init(),
        // A microVM's disks: any text and mode, which the wire must carry
        // exactly (the spec's own check comes after).
        prop::collection::vec(
            (text(), any::<bool>())
                .prop_map(|(image, read_only)| zixiao_core::model::DiskSpec { image, read_only }),
            0..3,
        ),
    )
        .prop_map(
            |(
                (instance_type, image, cpus),
                (memory_mib, disk_gib, kernel, initrd),
                (cmdline, backend, restore_from, networks),
                (command, env, restart, placement, publish),
                snapshot_schedule,
                cloud_init,
                disks,
            )| InstanceSpec {
                instance_type,
                image,
                cpus: zixiao_core::Cpus::cores(cpus),
                memory_mib,
                cpu_limit: None,
                memory_limit_mib: None,
                max_cpus: (cpus % 2 == 0).then(|| zixiao_core::Cpus::cores(cpus / 2)),
                max_memory_mib: (memory_mib % 2 == 0).then_some(memory_mib / 2),
                disk_gib,
                kernel,
                initrd,
                cmdline,
                backend,
                restore_from,
                networks,
                publish,
                command,
                env,
                restart,
                placement,
                snapshot_schedule,
                cloud_init,
                disks,
                pull: zixiao_core::model::PullPolicy::ALL[(cpus % 3) as usize],
                // A vsock device, any CID a guest may have.
                vsock: (memory_mib % 3 != 0).then(|| zixiao_core::model::VsockSpec {
                    cid: (3 + cpus % (u32::MAX - 4)).try_into().expect("a guest CID"),
                }),
            },
        )
}

/// Any cloud-init data, or none: every part as text, so the wire must
/// carry each exactly.
fn cloud_init() -> impl Strategy<Value = Option<zixiao_core::model::CloudInit>> {
    prop::option::of(
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(text()),
            prop::collection::vec(text(), 0..3),
        )
            .prop_map(
                |(user_data, meta_data, network_config, ssh_authorized_keys)| {
                    zixiao_core::model::CloudInit {
                        user_data,
                        meta_data,
                        network_config,
                        ssh_authorized_keys,
                    }
                },
            ),
    )
}

/// Any valid snapshot schedule, or none.
fn snapshot_schedule() -> impl Strategy<Value = Option<SnapshotSchedule>> {
    prop::option::of(
        (
            MIN_SNAPSHOT_INTERVAL.as_secs()..=MAX_SNAPSHOT_INTERVAL.as_secs(),
            1..=MAX_SNAPSHOT_KEEP,
        )
            .prop_map(|(every, keep)| {
                SnapshotSchedule::new(std::time::Duration::from_secs(every), keep)
                    .expect("within the bounds")
            }),
    )
}

/// A published port in any of its forms.
fn published_port() -> impl Strategy<Value = PublishedPort> {
    let host = prop_oneof![
        Just(String::new()),
        any::<[u8; 4]>().prop_map(|a| format!("{}:", std::net::Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| format!("[{}]:", std::net::Ipv6Addr::from(a))),
    ];
    (host, 1..=65535u16, 1..=65535u16, prop::bool::ANY).prop_filter_map(
        "a host address that can be published on",
        |(host, from, to, udp)| {
            let protocol = if udp { "/udp" } else { "" };
            PublishedPort::try_from(format!("{host}{from}:{to}{protocol}")).ok()
        },
    )
}

fn create_instance() -> impl Strategy<Value = CreateInstance> {
    (text(), labels(), spec()).prop_map(|(name, labels, spec)| CreateInstance {
        name,
        labels,
        spec,
    })
}

fn instance_update() -> impl Strategy<Value = InstanceUpdate> {
    (
        labels(),
        name_set(),
        proptest::option::of(one_of(&[
            RestartPolicy::Never,
            RestartPolicy::OnFailure,
            RestartPolicy::Always,
        ])),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        snapshot_schedule(),
        any::<bool>(),
    )
        .prop_map(
            |(
                set_labels,
                remove_labels,
                restart,
                cpus,
                memory_mib,
                restart_if_needed,
                schedule,
                clear_snapshot_schedule,
            )| InstanceUpdate {
                set_labels,
                remove_labels,
                restart,
                cpus: cpus.map(zixiao_core::Cpus::cores),
                memory_mib,
                cpu_limit: None,
                memory_limit_mib: None,
                disk_gib: memory_mib.map(|m| m / 3),
                restart_if_needed,
                snapshot_every: schedule.map(|s| s.every),
                snapshot_keep: schedule.map(|s| s.keep),
                clear_snapshot_schedule,
            },
        )
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

/// A network's name: a DNS label.
fn network_name() -> impl Strategy<Value = NetworkName> {
    "[a-z]([a-z0-9-]{0,11}[a-z0-9])?".prop_map(|n| NetworkName::try_from(n).expect("a DNS label"))
}

/// An installation id, or none (recorded before installation ids).
fn installation() -> impl Strategy<Value = Option<InstallationId>> {
    prop::option::of(
        "[0-9a-f]{16}".prop_map(|i| InstallationId::try_from(i).expect("16 hex digits")),
    )
}

/// The bridge `installation` and `network` derive (what older versions
/// derived from the name alone without an installation).
fn bridge_of(installation: &Option<InstallationId>, network: &NetworkName) -> BridgeName {
    match installation {
        Some(installation) => BridgeName::of(installation, network),
        None => BridgeName::before_installations(network),
    }
}

fn attachment() -> impl Strategy<Value = NetworkAttachment> {
    let ip =
        (address(), any::<u8>(), address()).prop_map(|(address, prefix_len, gateway)| IpConfig {
            address,
            prefix_len,
            gateway,
        });
    (
        (
            network_name(),
            installation(),
            name(),
            name(),
            any::<bool>(),
        ),
        (text(), prop::collection::vec(ip, 0..3)),
    )
        .prop_map(
            |((network, installation, interface, instance, tap), (mac, addresses))| {
                let kind = if tap {
                    InterfaceKind::Tap
                } else {
                    InterfaceKind::Veth
                };
                let id = installation
                    .clone()
                    .unwrap_or_else(|| InstallationId::try_from("0000000000000000").unwrap());
                NetworkAttachment {
                    host_interface: InterfaceName::of(kind, &id, &instance, &network),
                    bridge: bridge_of(&installation, &network),
                    network,
                    installation,
                    interface,
                    mac,
                    addresses,
                }
            },
        )
}

fn condition() -> impl Strategy<Value = Condition> {
    let condition_type = one_of(&[
        ConditionType::Scheduled,
        ConditionType::RuntimeReady,
        ConditionType::Exited,
        ConditionType::SnapshotSchedule,
    ]);
    (condition_type, any::<bool>(), text(), text(), time()).prop_map(
        |(condition_type, status, reason, message, since)| Condition {
            condition_type,
            status,
            reason,
            message,
            since,
        },
    )
}

fn instance() -> impl Strategy<Value = Instance> {
    let desired = one_of(&[
        DesiredState::Running,
        DesiredState::Stopped,
        DesiredState::Deleted,
    ]);
    let exit = prop::option::of((any::<i32>(), any::<bool>(), time()).prop_map(
        |(code, oom_killed, at)| ExitStatus {
            code,
            oom_killed,
            at,
        },
    ));
    let failure = prop::option::of(
        (any::<u32>(), time()).prop_map(|(attempts, at)| Failure { attempts, at }),
    );
    (
        (name(), name(), labels(), spec()),
        (
            desired,
            instance_status(),
            prop::option::of(name()),
            prop::option::of(name()),
        ),
        (
            prop::collection::vec(attachment(), 0..2),
            prop::collection::vec(condition(), 0..3),
            exit,
            failure,
        ),
        (any::<bool>(), any::<bool>(), any::<u64>(), any::<u64>()),
        (time(), time(), prop::option::of(time()), any::<u64>()),
        (
            prop::option::of(template_origin()),
            prop::option::of(clone_origin()),
        ),
        (
            prop::option::of(
                (name(), time()).prop_map(|(name, at)| ScheduledSnapshot { name, at }),
            ),
            prop::option::of("[0-9a-f]{32}".prop_map(|hex| {
                zixiao_core::OperationId::try_from(format!("op-{hex}").as_str())
                    .expect("an operation id")
            })),
        ),
    )
        .prop_map(
            |(
                (id, name, labels, spec),
                (desired, status, node, runtime),
                (attachments, conditions, exit, failure),
                (compute_reserved, reschedule, restarts_requested, restarts_done),
                (created_at, updated_at, started_at, revision),
                (template, clone_of),
                (last_scheduled_snapshot, operation),
            )| Instance {
                id,
                name,
                labels,
                spec,
                desired,
                status,
                node,
                runtime,
                attachments,
                conditions,
                exit,
                failure,
                compute_reserved,
                reschedule,
                // A migration's target rides with `reschedule`.
                migrate_to: reschedule.then(|| "node-target".to_owned()),
                restarts_requested,
                restarts_done,
                created_at,
                updated_at,
                started_at,
                revision,
                template,
                clone_of,
                last_scheduled_snapshot,
                operation,
                // A size read from the runtime, when the spec's is not yet in force.
                runtime_size: (revision % 2 == 0).then_some(zixiao_core::model::RuntimeSize {
                    cpus: zixiao_core::Cpus::cores((revision % 7) as u32),
                    memory_mib: revision / 3,
                }),
                // Where its node put its vsock socket.
                vsock: (revision % 3 == 0).then(|| zixiao_core::model::VsockEndpoint {
                    socket: format!("/var/lib/zixiao/microvm/{revision}/vmm/vsock.sock").into(),
                    cid: zixiao_core::model::GuestCid::DEFAULT,
                }),
            },
        )
}

fn clone_origin() -> impl Strategy<Value = CloneOrigin> {
    (
        name(),
        name(),
        any::<bool>(),
        prop::option::of("[a-z0-9][a-z0-9._-]{0,20}"),
    )
        .prop_map(|(source, node, linked, snapshot)| CloneOrigin {
            source,
            node,
            linked,
            snapshot: snapshot.map(|s| SnapshotName::try_from(s).expect("a snapshot name")),
        })
}

fn template_origin() -> impl Strategy<Value = TemplateOrigin> {
    ("[a-z]([a-z0-9-]{0,11}[a-z0-9])?", 1..u32::MAX).prop_map(|(name, version)| TemplateOrigin {
        name: TemplateName::try_from(name).expect("a DNS label"),
        version,
    })
}

fn orphan_sweep() -> impl Strategy<Value = OrphanSweep> {
    (prop::option::of(time()), names(), names(), names()).prop_map(
        |(at, adopted, removed, errors)| OrphanSweep {
            at,
            adopted,
            removed,
            errors,
        },
    )
}

/// A node's runtimes, missing runtimes and drivers.
type Runtimes = (
    BTreeSet<InstanceType>,
    BTreeMap<InstanceType, String>,
    BTreeMap<InstanceType, DriverInfo>,
);

fn runtimes() -> impl Strategy<Value = Runtimes> {
    let driver = (
        name(),
        prop::collection::btree_set(one_of(&Capability::ALL), 0..4),
    )
        .prop_map(|(name, capabilities)| DriverInfo { name, capabilities });
    (
        prop::collection::btree_set(instance_type(), 0..3),
        prop::collection::btree_map(instance_type(), text(), 0..3),
        prop::collection::btree_map(instance_type(), driver, 0..3),
    )
}

fn node_metadata() -> impl Strategy<Value = NodeMetadata> {
    (labels(), name_set(), proptest::option::of(0..=5000u32)).prop_map(
        |(labels, traits, carbon_intensity)| NodeMetadata {
            labels,
            traits,
            carbon_intensity,
        },
    )
}

fn aggregate() -> impl Strategy<Value = Aggregate> {
    let key = "[a-z][a-z0-9./_-]{0,12}".prop_map(|k| LabelKey::try_from(k).expect("a key"));
    let value = "[ -~]{0,16}".prop_map(|v| LabelValue::try_from(v).expect("a value"));
    (
        "[a-z]([a-z0-9-]{0,10}[a-z0-9])?",
        prop::collection::btree_map(key, value, 0..3),
        name_set(),
        time(),
        time(),
    )
        .prop_map(
            |(name, metadata, nodes, created_at, updated_at)| Aggregate {
                name: AggregateName::try_from(name).expect("a name"),
                metadata,
                nodes,
                created_at,
                updated_at,
                revision: 0,
            },
        )
}

/// Onboardings as an agent reports them: a check per runtime at most, a
/// state its checks bear out.
fn onboarding() -> impl Strategy<Value = Onboarding> {
    let check = (
        instance_type(),
        prop_oneof![
            Just((CheckOutcome::Booted, None)),
            Just((CheckOutcome::Reachable, None)),
            one_of(&[
                SmokeStep::Reach,
                SmokeStep::Pull,
                SmokeStep::Create,
                SmokeStep::Start,
                SmokeStep::Run,
                SmokeStep::Delete,
                SmokeStep::Gone,
            ])
            .prop_map(|step| (CheckOutcome::Failed, Some(step))),
        ],
        any::<u64>(),
        text(),
    )
        .prop_map(
            |(runtime, (outcome, step), duration_ms, detail)| RuntimeCheck {
                runtime,
                outcome,
                duration_ms,
                step,
                detail,
            },
        );
    (
        time(),
        time(),
        prop::collection::btree_map(instance_type(), check, 0..3),
        0u8..4,
    )
        .prop_map(|(started_at, finished, checks, pick)| {
            let checks: Vec<RuntimeCheck> = checks
                .into_iter()
                .map(|(runtime, check)| RuntimeCheck { runtime, ..check })
                .collect();
            let failed = checks.iter().any(|c| c.outcome == CheckOutcome::Failed);
            let (state, checks) = match pick {
                0 => (OnboardingState::Running, Vec::new()),
                1 => (OnboardingState::Skipped, Vec::new()),
                _ if failed => (OnboardingState::Failed, checks),
                _ => (OnboardingState::Passed, checks),
            };
            Onboarding {
                state,
                started_at,
                finished_at: (state != OnboardingState::Running).then_some(finished),
                checks,
            }
        })
}

fn node() -> impl Strategy<Value = Node> {
    (
        (name(), text(), text(), name(), name()),
        (node_role(), node_status(), resources(), resources()),
        (
            labels(),
            name_set(),
            runtimes(),
            prop::option::of(any::<u32>()),
        ),
        (
            prop::option::of(time()),
            prop::option::of(orphan_sweep()),
            time(),
            time(),
            any::<u64>(),
        ),
        (
            node_metadata(),
            node_metadata(),
            prop::option::of(onboarding()),
        ),
    )
        .prop_map(
            |(
                (id, hostname, address, region, zone),
                (role, status, capacity, allocated),
                (labels, traits, (runtimes, missing_runtimes, drivers), carbon_intensity),
                (last_heartbeat, orphan_sweep, created_at, updated_at, revision),
                (reported, operator, onboarding),
            )| Node {
                images: [format!("{id}-image")].into(),
                id,
                hostname,
                address,
                region,
                zone,
                role,
                status,
                capacity,
                allocation_ratios: Default::default(),
                allocated,
                labels,
                traits,
                reported,
                operator,
                runtimes,
                missing_runtimes,
                drivers,
                carbon_intensity,
                last_heartbeat,
                orphan_sweep,
                onboarding,
                created_at,
                updated_at,
                revision,
            },
        )
}

fn registration() -> impl Strategy<Value = NodeRegistration> {
    (
        (text(), text(), text(), name(), name()),
        (node_role(), resources(), labels(), name_set()),
        (
            runtimes(),
            prop::option::of(any::<u32>()),
            prop::option::of(onboarding()),
        ),
    )
        .prop_map(
            |(
                (id, hostname, address, region, zone),
                (role, capacity, labels, traits),
                ((runtimes, missing_runtimes, drivers), carbon_intensity, onboarding),
            )| NodeRegistration {
                id,
                hostname,
                address,
                region,
                zone,
                role,
                capacity,
                allocation_ratios: None,
                labels,
                traits,
                runtimes,
                missing_runtimes,
                drivers,
                carbon_intensity,
                onboarding,
            },
        )
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    one_of(&[EventKind::Added, EventKind::Modified, EventKind::Deleted])
}

fn cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| Cidr::new(IpAddr::from(a), l)),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| Cidr::new(IpAddr::from(a), l)),
    ]
    .prop_map(|c| c.expect("a valid prefix length"))
}

fn network() -> impl Strategy<Value = Network> {
    let subnet = (cidr(), address(), prop::collection::vec(cidr(), 0..3)).prop_map(
        |(cidr, gateway, reserved)| Subnet {
            cidr,
            gateway,
            reserved,
        },
    );
    (
        (
            network_name(),
            prop::collection::vec(subnet, 0..3),
            installation(),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            time(),
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((name, subnets, installation), (nat, isolated, created_at, deleting, revision))| {
                Network {
                    bridge: bridge_of(&installation, &name),
                    name,
                    subnets,
                    installation,
                    // Some networks stored before VNIs, the rest across the range.
                    vni: (revision % 4 != 0).then(|| {
                        Vni::try_from((revision % u64::from(MAX_VNI)) as u32 + 1).unwrap()
                    }),
                    nat,
                    isolated,
                    created_at,
                    deleting,
                    revision,
                }
            },
        )
}

fn cluster_info() -> impl Strategy<Value = ClusterInfo> {
    let count = 0usize..1_000_000;
    (
        (
            count.clone(),
            prop::collection::btree_map(node_status(), count.clone(), 0..4),
        ),
        (
            count.clone(),
            prop::collection::btree_map(
                instance_type(),
                prop::collection::btree_map(instance_status(), count, 1..4),
                0..3,
            ),
        ),
        (
            resources(),
            resources(),
            resources(),
            prop::option::of(name()),
        ),
    )
        .prop_map(
            |(
                (nodes, nodes_by_status),
                (instances, instances_by_type),
                (capacity, allocated, schedulable_free, leader),
            )| ClusterInfo {
                nodes,
                nodes_by_status,
                instances,
                instances_by_type,
                capacity,
                allocated,
                schedulable_free,
                leader,
            },
        )
}

fn runtime_state() -> impl Strategy<Value = RuntimeState> {
    prop_oneof![
        Just(RuntimeState::Missing),
        Just(RuntimeState::Created),
        Just(RuntimeState::Running),
        Just(RuntimeState::Paused),
        (any::<i32>(), any::<bool>(), prop::option::of(time())).prop_map(
            |(code, oom_killed, at)| RuntimeState::Exited {
                code,
                oom_killed,
                at
            }
        ),
    ]
}

// ---------------------------------------------------------------- round trips

/// `value` sent and received again.
fn round_trip<C, P>(value: &C) -> Result<C, Error>
where
    C: Clone,
    P: From<C> + TryInto<C, Error = Error>,
{
    P::from(value.clone()).try_into()
}

fn same<C, P>(value: C) -> Result<(), TestCaseError>
where
    C: Clone + PartialEq + Debug,
    P: From<C> + TryInto<C, Error = Error>,
{
    let back = round_trip::<C, P>(&value).map_err(|e| TestCaseError::fail(e.chain()))?;
    prop_assert_eq!(back, value);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn instances_round_trip(value in instance()) {
        same::<_, pb::Instance>(value)?;
    }

    #[test]
    fn specs_and_create_requests_round_trip(value in create_instance()) {
        same::<_, pb::InstanceSpec>(value.spec.clone())?;
        same::<_, pb::CreateInstance>(value)?;
    }

    #[test]
    fn updates_round_trip(value in instance_update()) {
        same::<_, pb::InstanceUpdate>(value)?;
    }

    #[test]
    fn nodes_registrations_and_facts_round_trip(
        node in node(),
        registration in registration(),
    ) {
        let facts = NodeFacts {
            hostname: node.hostname.clone(),
            capacity: node.capacity,
            runtimes: node.runtimes.clone(),
            missing_runtimes: node.missing_runtimes.clone(),
            drivers: node.drivers.clone(),
        };
        same::<_, pb::NodeFacts>(facts)?;
        same::<_, pb::Node>(node)?;
        same::<_, pb::NodeRegistration>(registration)?;
    }

    #[test]
    fn aggregates_round_trip(value in aggregate()) {
        same::<_, pb::Aggregate>(value)?;
    }

    #[test]
    fn events_round_trip(
        kind in event_kind(),
        revision in any::<u64>(),
        instance in prop::option::of(instance()),
        node in prop::option::of(node()),
        id in name(),
    ) {
        same::<_, pb::InstanceEvent>(InstanceEvent { kind, revision, instance, id: id.clone() })?;
        same::<_, pb::NodeEvent>(NodeEvent { kind, revision, node, id })?;
    }

    #[test]
    fn networks_and_their_requests_round_trip(
        value in network(),
        subnets in names(),
        gateways in names(),
        reserved in names(),
        flags in any::<(bool, bool)>(),
    ) {
        let create = CreateNetwork {
            name: value.name.to_string(),
            subnets,
            gateways,
            reserved,
            nat: flags.0,
            isolated: flags.1,
            vni: value.vni.map(Vni::get),
        };
        same::<_, pb::CreateNetwork>(create)?;
        same::<_, pb::Network>(value)?;
    }

    #[test]
    fn summaries_reports_and_filters_round_trip(
        info in cluster_info(),
        node in name(),
        lists in (names(), names(), names()),
        status in prop::option::of(node_status()),
        migrated in prop::collection::vec(
            (name(), prop::sample::select(vec![zixiao_core::MigrationMode::Live, zixiao_core::MigrationMode::Cold]), name()),
            0..3,
        ),
        not_migrated in prop::collection::btree_map(name(), text(), 0..3),
        filter in (
            prop::option::of(instance_type()),
            prop::option::of(instance_status()),
            prop::option::of(name()),
            labels(),
        ),
    ) {
        same::<_, pb::ClusterInfo>(info)?;
        let (moved, pending, stopped) = lists;
        let migrated = migrated
            .into_iter()
            .map(|(name, mode, to)| MigratedInstance { name, mode, to })
            .collect();
        same::<_, pb::DrainReport>(DrainReport {
            node,
            migrated,
            moved,
            pending,
            stopped,
            status,
            not_migrated,
        })?;
        let (instance_type, status, node, labels) = filter;
        same::<_, pb::InstanceFilter>(InstanceFilter { instance_type, status, node, labels })?;
    }

    #[test]
    fn runtime_objects_round_trip(
        state in runtime_state(),
        sweep in orphan_sweep(),
        snapshot in (name(), prop::option::of(time()), any::<bool>(), any::<bool>()),
        image in (name(), text(), any::<u64>()),
        stats in any::<(u64, u64, [Option<u64>; 6])>(),
        chunk in (prop::collection::vec(any::<u8>(), 0..64), any::<u64>()),
    ) {
        same::<_, pb::RuntimeState>(state)?;
        same::<_, pb::OrphanSweep>(sweep)?;
        let (name, created_at, includes_memory, current) = snapshot;
        same::<_, pb::SnapshotInfo>(SnapshotInfo { name, created_at, includes_memory, current })?;
        let (name, digest, size_bytes) = image;
        same::<_, pb::ImageInfo>(ImageInfo::container(name, digest, size_bytes))?;
        let (cpu_time_ns, memory_bytes, [a, b, c, d, e, f]) = stats;
        let stats = InstanceStats {
            cpu_time_ns,
            memory_bytes,
            memory_limit_bytes: a,
            pids: b,
            disk_read_bytes: c,
            disk_write_bytes: d,
            net_rx_bytes: e,
            net_tx_bytes: f,
        };
        prop_assert_eq!(InstanceStats::from(pb::InstanceStats::from(stats.clone())), stats);
        let chunk = LogChunk { data: chunk.0, next_offset: chunk.1 };
        prop_assert_eq!(LogChunk::from(pb::LogChunk::from(chunk.clone())), chunk);
    }
}

// ---------------------------------------------------------------- damaged bytes

/// `value` encoded as `P`, damaged, and decoded ([`decoded_or_refused`]).
fn damaged<C, P>(value: C, damage: &Damage) -> Result<(), TestCaseError>
where
    C: Clone + PartialEq + Debug,
    P: From<C> + TryInto<C, Error = Error> + prost::Message + Default,
{
    decoded_or_refused::<C, P>(&damage.apply(P::from(value).encode_to_vec()))
}

/// As [`damaged`]; then whatever decodes is checked as a server checks a
/// request before it acts on it (`validate`), which passes it or refuses
/// it with `InvalidArgument`, never a panic or another kind.
fn damaged_then_validated<C, P>(
    value: C,
    damage: &Damage,
    validate: impl Fn(&C) -> Result<(), Error>,
) -> Result<(), TestCaseError>
where
    C: Clone + PartialEq + Debug,
    P: From<C> + TryInto<C, Error = Error> + prost::Message + Default,
{
    let bytes = damage.apply(P::from(value).encode_to_vec());
    decoded_or_refused::<C, P>(&bytes)?;
    let Ok(Ok(decoded)) = P::decode(bytes.as_slice()).map(TryInto::<C>::try_into) else {
        return Ok(());
    };
    if let Err(e) = validate(&decoded) {
        prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.chain());
    }
    Ok(())
}

/// `bytes` from the wire as a `P`: the wire decoder refuses them, or the
/// conversion refuses them with `InvalidArgument`, or what they decode to
/// goes through the protocol unchanged.
fn decoded_or_refused<C, P>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    C: Clone + PartialEq + Debug,
    P: From<C> + TryInto<C, Error = Error> + prost::Message + Default,
{
    let Ok(message) = P::decode(bytes) else {
        return Ok(());
    };
    match message.try_into() {
        Ok(decoded) => same::<C, P>(decoded),
        Err(e) => {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.chain());
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn damaged_instances_and_requests_are_refused_or_decoded_never_a_panic(
        instance in instance(),
        create in create_instance(),
        update in instance_update(),
        hit in damage(6),
    ) {
        damaged::<_, pb::Instance>(instance, &hit)?;
        damaged_then_validated::<_, pb::CreateInstance>(create, &hit, CreateInstance::validate)?;
        damaged_then_validated::<_, pb::InstanceUpdate>(update, &hit, InstanceUpdate::validate)?;
    }

    #[test]
    fn damaged_nodes_and_networks_are_refused_or_decoded_never_a_panic(
        node in node(),
        registration in registration(),
        network in network(),
        aggregate in aggregate(),
        hit in damage(6),
    ) {
        damaged::<_, pb::Aggregate>(aggregate, &hit)?;
        damaged::<_, pb::Node>(node, &hit)?;
        damaged_then_validated::<_, pb::NodeRegistration>(
            registration,
            &hit,
            NodeRegistration::validate,
        )?;
        damaged::<_, pb::Network>(network, &hit)?;
    }

    #[test]
    fn random_bytes_are_refused_or_decoded_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        decoded_or_refused::<Instance, pb::Instance>(&bytes)?;
        decoded_or_refused::<CreateInstance, pb::CreateInstance>(&bytes)?;
        decoded_or_refused::<Network, pb::Network>(&bytes)?;
    }
}

// ---------------------------------------------------------------- refusals

/// The field `result` is refused for, as an invalid argument.
fn refused<T: Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("not refused as an invalid argument: {other:?}"),
    }
}

fn an_instance() -> Instance {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    instance()
        .new_tree(&mut runner)
        .expect("an instance")
        .current()
}

#[test]
fn a_missing_or_unknown_enum_is_refused_naming_the_field() {
    let wire = pb::Instance::from(an_instance());
    let mut unset = wire.clone();
    unset.status = 0;
    assert_eq!(refused(Instance::try_from(unset)), "instance.status");
    let mut unknown = wire.clone();
    unknown.status = 99;
    let error = Instance::try_from(unknown).expect_err("unknown status");
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(
        error.chain().contains("unknown value 99"),
        "{}",
        error.chain()
    );
    let mut untyped = wire.clone();
    if let Some(spec) = untyped.spec.as_mut() {
        spec.r#type = 0;
    }
    assert_eq!(refused(Instance::try_from(untyped)), "instance.spec.type");
    let mut spec = wire.spec.clone().expect("a spec");
    spec.r#type = 0;
    assert_eq!(refused(InstanceSpec::try_from(spec)), "spec.type");
}

#[test]
fn a_missing_required_field_is_refused_not_defaulted() {
    let wire = pb::Instance::from(an_instance());
    let mut no_spec = wire.clone();
    no_spec.spec = None;
    assert_eq!(refused(Instance::try_from(no_spec)), "instance.spec");
    let mut no_time = wire.clone();
    no_time.created_at = None;
    assert_eq!(refused(Instance::try_from(no_time)), "instance.created_at");
    let mut no_id = wire;
    no_id.id.clear();
    assert_eq!(refused(Instance::try_from(no_id)), "instance.id");
    let create = pb::CreateInstance {
        name: "web".into(),
        labels: Default::default(),
        spec: None,
    };
    assert_eq!(refused(CreateInstance::try_from(create)), "spec");
    let registration = pb::NodeRegistration {
        id: "n1".into(),
        ..Default::default()
    };
    assert_eq!(
        refused(NodeRegistration::try_from(registration)),
        "node.capacity"
    );
    assert_eq!(
        refused(RuntimeState::try_from(pb::RuntimeState { state: None })),
        "state"
    );
}

#[test]
fn values_out_of_range_or_unparsable_are_refused_naming_the_field() {
    let mut instance = an_instance();
    let lan = NetworkName::try_from("lan").expect("a name");
    let here = InstallationId::try_from("0123456789abcdef").expect("an id");
    instance.attachments = vec![NetworkAttachment {
        network: lan.clone(),
        installation: Some(here.clone()),
        interface: "eth0".into(),
        host_interface: InterfaceName::of(InterfaceKind::Veth, &here, "x", &lan),
        bridge: BridgeName::of(&here, &lan),
        mac: "02:00:00:00:00:01".into(),
        addresses: vec![IpConfig {
            address: "10.0.0.2".parse().expect("address"),
            prefix_len: 24,
            gateway: "10.0.0.1".parse().expect("address"),
        }],
    }];
    let wire = pb::Instance::from(instance);
    let mut wide = wire.clone();
    wide.attachments[0].addresses[0].prefix_len = 300;
    assert_eq!(
        refused(Instance::try_from(wide)),
        "instance.attachments[0].addresses[0].prefix_len"
    );
    let mut garbage = wire;
    garbage.attachments[0].addresses[0].gateway = "not an address".into();
    assert_eq!(
        refused(Instance::try_from(garbage)),
        "instance.attachments[0].addresses[0].gateway"
    );
    // Names that would reach netlink or nft: refused before anything is made.
    let lan = CreateNetwork::new("lan", ["10.0.0.0/24"])
        .validate(&here, chrono::Utc::now())
        .expect("a network");
    for (spoil, field) in [
        (
            (|n: &mut pb::Network| n.bridge = "zxb12345678\nflush ruleset".into())
                as fn(&mut pb::Network),
            "network.bridge",
        ),
        (|n| n.bridge = "zxb00000001".into(), "network.bridge"),
        (|n| n.name = "lan\nflush ruleset".into(), "network.name"),
        (|n| n.installation = "nope".into(), "network.installation"),
    ] {
        let mut wire = pb::Network::from(lan.clone());
        spoil(&mut wire);
        assert_eq!(refused(Network::try_from(wire)), field);
    }
    let mut bad_time = pb::Instance::from(an_instance());
    if let Some(t) = bad_time.updated_at.as_mut() {
        t.nanos = -1;
    }
    assert_eq!(refused(Instance::try_from(bad_time)), "instance.updated_at");
    // Reserved vsock CIDs, in a spec and where a node put the socket.
    for cid in [0, 2, u32::MAX] {
        let mut spec = pb::InstanceSpec::from(InstanceSpec::microvm("/k"));
        spec.vsock = Some(pb::VsockSpec { cid });
        assert_eq!(refused(InstanceSpec::try_from(spec)), "spec.vsock.cid");
        let mut wire = pb::Instance::from(an_instance());
        wire.vsock = Some(pb::VsockEndpoint {
            socket: "/run/vsock.sock".into(),
            cid,
        });
        assert_eq!(refused(Instance::try_from(wire)), "instance.vsock.cid");
    }
    let mut spread = pb::InstanceSpec::from(InstanceSpec::container("busybox"));
    spread.placement = Some(pb::Placement {
        spread: Some(pb::ZoneSpread {
            group: None,
            targets: [("z1".to_owned(), 1000)].into(),
        }),
        ..Default::default()
    });
    assert_eq!(
        refused(InstanceSpec::try_from(spread)),
        "spec.placement.spread.targets[z1]"
    );
    // A published port is checked by the one parser the spec file uses.
    for bad in [
        "0:80",
        "70000:80",
        "80",
        "a:b",
        "8080:80/sctp",
        "8080:80\nflush ruleset",
    ] {
        let mut wire = pb::InstanceSpec::from(InstanceSpec::container("busybox"));
        wire.publish = vec!["8080:80".into(), bad.into()];
        assert_eq!(
            refused(InstanceSpec::try_from(wire)),
            "spec.publish[1]",
            "{bad}"
        );
    }
}

#[test]
fn unset_optional_fields_take_the_models_defaults() {
    let wire = pb::InstanceSpec {
        r#type: pb::InstanceType::Container.into(),
        ..Default::default()
    };
    let spec = InstanceSpec::try_from(wire).expect("a spec");
    assert_eq!(spec.backend, MicrovmBackend::Auto);
    assert_eq!(spec.restart, RestartPolicy::Never);
    assert_eq!(spec.placement, Placement::default());
    let create = CreateNetwork::try_from(pb::CreateNetwork {
        name: "lan".into(),
        ..Default::default()
    })
    .expect("a request");
    assert!(create.nat && create.isolated, "on unless turned off");
}

/// A schedule from the wire is checked again: below the minimum interval,
/// or keeping none, is refused naming the field.
#[test]
fn snapshot_schedules_from_the_wire_are_checked_again() {
    let mut wire = pb::InstanceSpec::from(InstanceSpec::vm("/images/base.qcow2"));
    for (every_seconds, keep, field) in [
        (59, 2, "spec.snapshot_schedule.every_seconds"),
        (0, 2, "spec.snapshot_schedule.every_seconds"),
        (60, 0, "spec.snapshot_schedule.keep"),
    ] {
        wire.snapshot_schedule = Some(pb::SnapshotSchedule {
            every_seconds,
            keep,
        });
        assert_eq!(refused(InstanceSpec::try_from(wire.clone())), field);
    }
    for (update, field) in [
        (
            pb::InstanceUpdate {
                snapshot_every_seconds: Some(30),
                snapshot_keep: Some(2),
                ..Default::default()
            },
            "snapshot_every",
        ),
        (
            pb::InstanceUpdate {
                snapshot_keep: Some(0),
                ..Default::default()
            },
            "snapshot_keep",
        ),
    ] {
        assert_eq!(refused(InstanceUpdate::try_from(update)), field);
    }
}

/// A node store's image crosses the wire with its kind, format and time,
/// and the receiving side re-checks what could reach a path: its name and
/// its digest.
#[test]
fn a_node_store_image_round_trips_and_its_name_and_digest_are_rechecked() {
    use zixiao_core::model::ImageKind;
    let image = ImageInfo {
        name: "k1".to_owned(),
        digest: format!("sha256:{}", "ab".repeat(32)),
        size_bytes: 4096,
        kind: ImageKind::Kernel,
        format: "bzimage".to_owned(),
        created_at: Some(DateTime::from_timestamp(1_700_000_000, 0).expect("time")),
    };
    let wire = pb::ImageInfo::from(image.clone());
    assert_eq!(ImageInfo::try_from(wire.clone()).expect("back"), image);
    for (damaged, field) in [
        (
            pb::ImageInfo {
                name: "../etc/shadow".into(),
                ..wire.clone()
            },
            "image.name",
        ),
        (
            pb::ImageInfo {
                digest: "sha256:zz".into(),
                ..wire.clone()
            },
            "image.digest",
        ),
        (
            pb::ImageInfo {
                kind: 99,
                ..wire.clone()
            },
            "image.kind",
        ),
    ] {
        let err = ImageInfo::try_from(damaged).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains(field), "{err}");
    }
}
