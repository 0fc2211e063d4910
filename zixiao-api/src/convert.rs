//! The one place where zixiao-core's model meets the protocol's messages:
//! `From<core> for pb` for what is sent (it never fails), and
//! `TryFrom<pb> for core` for what is received.
//!
//! A conversion from the wire trusts nothing: an enum value it does not
//! know, a required field left unset, a number too large for its Rust type,
//! an address or prefix that does not parse, are each an
//! [`Error::InvalidArgument`] naming the field by its path (`spec.type`,
//! `instance.status`, `node.capacity`, `subnets[0].cidr`). An unset
//! optional field takes the default the model documents (an unset
//! placement is no constraint, an unset restart policy is `never`), the
//! same defaults as the model's serde form. What a well-formed value means
//! (is this name a DNS label, does the memory fit) is checked where the
//! request is carried out, by the model's validation, once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use zixiao_core::agent::NodeFacts;
use zixiao_core::api::OperationFilter;
use zixiao_core::api::{
    AuditRecord, IssuedToken, NodeUsageSample, Outcome, PageToken, ProjectInfo, Quota, Role,
    StatsSample, TokenInfo, TokenPurpose, TokenText, UserInfo,
};
use zixiao_core::controller::{
    ClusterInfo, DrainReport, EventKind, InstanceEvent, MigratedInstance, NodeEvent,
};
use zixiao_core::driver::{
    Capability, DriverInfo, ImageInfo, ImagePlatform, InstanceStats, LogChunk, PullOptions,
    PullProgress, RegistryCa, RegistryCredentials, RuntimeState, SnapshotInfo,
};
use zixiao_core::host_usage::HostUsage;
use zixiao_core::model::{
    typed_metadata, Aggregate, AggregateName, AllocationRatio, AllocationRatios, CheckOutcome,
    Cidr, CloneOrigin, CloudInit, Condition, ConditionType, Cpus, CreateInstance, CreateNetwork,
    DesiredState, DiskSpec, ExitStatus, Failure, FromTemplate, ImageKind, InstallationId, Instance,
    InstanceSpec, InstanceStatus, InstanceType, InstanceUpdate, InvalidName, IpConfig,
    LabelChanges, MicrovmBackend, Network, NetworkAttachment, NetworkPart, NetworkPartKind,
    NetworkStatus, Node, NodeImageName, NodeMetadata, NodeNetworkState, NodeRegistration, NodeRole,
    NodeStatus, Onboarding, OnboardingState, OrphanSweep, PartState, Placement, PublishedPort,
    PullPolicy, Resources, RestartPolicy, RuntimeCheck, ScheduledSnapshot, SmokeStep,
    SnapshotInterval, SnapshotKeep, SnapshotName, SnapshotSchedule, Subnet, TemplateInfo,
    TemplateName, TemplateOrigin, TemplateSpec, TemplateVersion, TemplateVersionInfo, TraitChanges,
    Vni, MAX_NODE_IMAGES,
};
use zixiao_core::model::{GuestCid, VsockEndpoint, VsockSpec};
use zixiao_core::model::{MacAddress, OverlayEndpoint, OverlayView};
use zixiao_core::model::{
    Operation, OperationError, OperationId, OperationKind, OperationPhase, OperationProgress,
    OperationTarget, TargetKind,
};
use zixiao_core::scheduler::{
    CarbonPolicy, GroupPolicy, GroupRule, GroupScope, LabelOperator, LabelRequirement,
    LabelSelector, Strategy, ZoneSpread,
};
use zixiao_core::{Error, ErrorKind, InstanceFilter, Result};

use crate::pb;

// ---------------------------------------------------------------- helpers

/// `field` of the message at `at` (the root when `at` is empty).
fn path(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_owned()
    } else {
        format!("{at}.{field}")
    }
}

/// Element `index` of the repeated field `at`.
fn item(at: &str, index: usize) -> String {
    format!("{at}[{index}]")
}

fn missing(at: &str) -> Error {
    Error::invalid(at, "missing")
}

/// The required message at `at`.
fn required<T>(value: Option<T>, at: &str) -> Result<T> {
    value.ok_or_else(|| missing(at))
}

/// The required, non-empty string at `at`.
fn non_empty(value: String, at: &str) -> Result<String> {
    if value.is_empty() {
        return Err(missing(at));
    }
    Ok(value)
}

fn fits<T: TryFrom<U>, U: Copy + std::fmt::Display>(value: U, at: &str) -> Result<T> {
    T::try_from(value).map_err(|_| Error::invalid(at, format!("{value} is out of range")))
}

fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        // Below 2e9 (a leap second's nanoseconds at most), so it fits.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(i32::MAX),
    }
}

fn time(value: Timestamp, at: &str) -> Result<DateTime<Utc>> {
    u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| Error::invalid(at, "not a valid time"))
}

fn required_time(value: Option<Timestamp>, at: &str) -> Result<DateTime<Utc>> {
    time(required(value, at)?, at)
}

fn optional_time(value: Option<Timestamp>, at: &str) -> Result<Option<DateTime<Utc>>> {
    value.map(|t| time(t, at)).transpose()
}

fn address(value: &str, at: &str) -> Result<IpAddr> {
    if value.is_empty() {
        return Err(missing(at));
    }
    value
        .parse()
        .map_err(|_| Error::invalid(at, format!("`{value}` is not an IP address")))
}

fn cidr(value: &str, at: &str) -> Result<Cidr> {
    if value.is_empty() {
        return Err(missing(at));
    }
    value.parse().map_err(|e: String| Error::invalid(at, e))
}

fn optional_path(value: Option<String>) -> Option<PathBuf> {
    value.map(PathBuf::from)
}

fn path_text(value: Option<PathBuf>) -> Option<String> {
    value.map(|p| p.to_string_lossy().into_owned())
}

fn set(values: Vec<String>) -> BTreeSet<String> {
    values.into_iter().collect()
}

fn list<C, P: TryInto<C, Error = Error>>(values: Vec<P>) -> Result<Vec<C>> {
    values.into_iter().map(TryInto::try_into).collect()
}

/// Maps an enum between the wire and the model: `From` for sending, and a
/// decoding function for receiving that refuses unknown values and, for
/// a required field, the UNSPECIFIED zero value.
macro_rules! wire_enum {
    ($core:ty, $pb:ty, $decode:ident, $optional:ident, { $($c:ident <=> $p:ident),+ $(,)? }) => {
        impl From<$core> for $pb {
            fn from(value: $core) -> Self {
                match value {
                    $(<$core>::$c => <$pb>::$p),+
                }
            }
        }

        /// The required enum value at `at`.
        fn $decode(value: i32, at: &str) -> Result<$core> {
            $optional(value, at)?.ok_or_else(|| missing(at))
        }

        /// The optional enum value at `at` (UNSPECIFIED: none).
        #[allow(dead_code)]
        fn $optional(value: i32, at: &str) -> Result<Option<$core>> {
            match <$pb>::try_from(value) {
                $(Ok(<$pb>::$p) => Ok(Some(<$core>::$c)),)+
                Ok(<$pb>::Unspecified) => Ok(None),
                Err(_) => Err(Error::invalid(at, format!("unknown value {value}"))),
            }
        }
    };
}

wire_enum!(InstanceType, pb::InstanceType, instance_type, optional_instance_type, {
    Vm <=> Vm, Container <=> Container, Microvm <=> Microvm,
});
wire_enum!(MicrovmBackend, pb::MicrovmBackend, _backend, backend, {
    Auto <=> Auto, Vmm <=> Vmm, Qemu <=> Qemu,
});
wire_enum!(RestartPolicy, pb::RestartPolicy, _restart, restart, {
    Never <=> Never, OnFailure <=> OnFailure, Always <=> Always,
});
wire_enum!(PullPolicy, pb::PullPolicy, _pull_policy, pull_policy, {
    Missing <=> Missing, Always <=> Always, Never <=> Never,
});
wire_enum!(DesiredState, pb::DesiredState, desired_state, _desired_state, {
    Running <=> Running, Stopped <=> Stopped, Deleted <=> Deleted,
});
wire_enum!(InstanceStatus, pb::InstanceStatus, instance_status, optional_instance_status, {
    Pending <=> Pending, Scheduled <=> Scheduled, Creating <=> Creating, Running <=> Running,
    Paused <=> Paused, Stopping <=> Stopping, Stopped <=> Stopped, Failed <=> Failed,
    Deleting <=> Deleting,
});
wire_enum!(ConditionType, pb::ConditionType, condition_type, _condition_type, {
    Scheduled <=> Scheduled, RuntimeReady <=> RuntimeReady, Exited <=> Exited,
    SnapshotSchedule <=> SnapshotSchedule,
});
wire_enum!(NodeRole, pb::NodeRole, node_role, optional_node_role, {
    Worker <=> Worker, Control <=> Control, Combined <=> Combined,
});
wire_enum!(NodeStatus, pb::NodeStatus, node_status, optional_node_status, {
    Ready <=> Ready, NotReady <=> NotReady, Cordoned <=> Cordoned,
    Maintenance <=> Maintenance, Draining <=> Draining, Decommissioned <=> Decommissioned,
    Onboarding <=> Onboarding, OnboardingFailed <=> OnboardingFailed,
});
wire_enum!(OnboardingState, pb::OnboardingState, onboarding_state, _onboarding_state, {
    Running <=> Running, Passed <=> Passed, Failed <=> Failed, Skipped <=> Skipped,
});
wire_enum!(CheckOutcome, pb::CheckOutcome, check_outcome, _check_outcome, {
    Booted <=> Booted, Reachable <=> Reachable, Failed <=> Failed,
});
wire_enum!(SmokeStep, pb::SmokeStep, _smoke_step, smoke_step, {
    Reach <=> Reach, Pull <=> Pull, Create <=> Create, Start <=> Start, Run <=> Run,
    Delete <=> Delete, Gone <=> Gone,
});
wire_enum!(LabelOperator, pb::LabelOperator, label_operator, _label_operator, {
    Equals <=> Equals, In <=> In, NotIn <=> NotIn, Exists <=> Exists,
    DoesNotExist <=> DoesNotExist,
});
wire_enum!(GroupPolicy, pb::GroupPolicy, group_policy, _group_policy, {
    Affinity <=> Affinity, AntiAffinity <=> AntiAffinity, SoftAffinity <=> SoftAffinity,
    SoftAntiAffinity <=> SoftAntiAffinity,
});
wire_enum!(GroupScope, pb::GroupScope, _group_scope, group_scope, {
    Node <=> Node, Zone <=> Zone,
});
wire_enum!(Strategy, pb::Strategy, _strategy, strategy, {
    BinPack <=> BinPack, Spread <=> Spread,
});
wire_enum!(EventKind, pb::EventKind, event_kind, _event_kind, {
    Added <=> Added, Modified <=> Modified, Deleted <=> Deleted,
});
wire_enum!(ImageKind, pb::ImageKind, _image_kind, optional_image_kind, {
    Container <=> Container, Disk <=> Disk, Kernel <=> Kernel, Initrd <=> Initrd,
});

/// The image kind at `at`; UNSPECIFIED is a container image.
pub(crate) fn decode_image_kind(value: i32, at: &str) -> Result<ImageKind> {
    Ok(optional_image_kind(value, at)?.unwrap_or_default())
}

/// The wire value of an image kind.
pub(crate) fn encode_image_kind(value: ImageKind) -> i32 {
    wire::<_, pb::ImageKind>(value)
}

wire_enum!(Capability, pb::Capability, capability, _capability, {
    Stats <=> Stats, Console <=> Console, Pause <=> Pause, Snapshots <=> Snapshots,
    Images <=> Images, Inventory <=> Inventory, Resize <=> Resize, Clones <=> Clones,
    LiveMigrate <=> LiveMigrate,
    ColdMigrate <=> ColdMigrate,
});

/// The wire value of a model enum.
fn wire<C, P: From<C> + Into<i32>>(value: C) -> i32 {
    P::from(value).into()
}

/// The required instance type at `at`, for request messages.
pub(crate) fn decode_instance_type(value: i32, at: &str) -> Result<InstanceType> {
    instance_type(value, at)
}

/// The wire value of an instance type.
pub(crate) fn encode_instance_type(value: InstanceType) -> i32 {
    wire::<_, pb::InstanceType>(value)
}

// ---------------------------------------------------------------- resources

impl From<Resources> for pb::Resources {
    fn from(r: Resources) -> Self {
        pb::Resources {
            cpu_millis: r.cpus.millis(),
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
            instances: r.instances,
        }
    }
}

impl From<pb::Resources> for Resources {
    fn from(r: pb::Resources) -> Self {
        Resources {
            cpus: Cpus::from_millis(r.cpu_millis),
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
            instances: r.instances,
        }
    }
}

fn resources(value: Option<pb::Resources>, at: &str) -> Result<Resources> {
    Ok(required(value, at)?.into())
}

// ---------------------------------------------------------------- placement

impl From<LabelRequirement> for pb::LabelRequirement {
    fn from(r: LabelRequirement) -> Self {
        pb::LabelRequirement {
            key: r.key,
            operator: wire::<_, pb::LabelOperator>(r.operator),
            values: r.values,
        }
    }
}

fn label_requirement(r: pb::LabelRequirement, at: &str) -> Result<LabelRequirement> {
    Ok(LabelRequirement {
        key: non_empty(r.key, &path(at, "key"))?,
        operator: label_operator(r.operator, &path(at, "operator"))?,
        values: r.values,
    })
}

fn selector_to_wire(selector: LabelSelector) -> Vec<pb::LabelRequirement> {
    selector.0.into_iter().map(Into::into).collect()
}

fn selector(requirements: Vec<pb::LabelRequirement>, at: &str) -> Result<LabelSelector> {
    requirements
        .into_iter()
        .enumerate()
        .map(|(i, r)| label_requirement(r, &item(at, i)))
        .collect::<Result<Vec<_>>>()
        .map(LabelSelector)
}

impl From<GroupRule> for pb::GroupRule {
    fn from(g: GroupRule) -> Self {
        pb::GroupRule {
            name: g.name,
            policy: wire::<_, pb::GroupPolicy>(g.policy),
            scope: wire::<_, pb::GroupScope>(g.scope),
        }
    }
}

fn group_rule(g: pb::GroupRule, at: &str) -> Result<GroupRule> {
    Ok(GroupRule {
        name: non_empty(g.name, &path(at, "name"))?,
        policy: group_policy(g.policy, &path(at, "policy"))?,
        scope: group_scope(g.scope, &path(at, "scope"))?.unwrap_or_default(),
    })
}

impl From<ZoneSpread> for pb::ZoneSpread {
    fn from(s: ZoneSpread) -> Self {
        pb::ZoneSpread {
            group: s.group,
            targets: s
                .targets
                .into_iter()
                .map(|(zone, share)| (zone, u32::from(share)))
                .collect(),
        }
    }
}

fn zone_spread(s: pb::ZoneSpread, at: &str) -> Result<ZoneSpread> {
    let targets = s
        .targets
        .into_iter()
        .map(|(zone, share)| {
            let share = fits(share, &format!("{}[{zone}]", path(at, "targets")))?;
            Ok((zone, share))
        })
        .collect::<Result<_>>()?;
    Ok(ZoneSpread {
        group: s.group,
        targets,
    })
}

impl From<Placement> for pb::Placement {
    fn from(p: Placement) -> Self {
        pb::Placement {
            region: p.region,
            zone: p.zone,
            node_selector: selector_to_wire(p.node_selector),
            required_traits: p.required_traits.into_iter().collect(),
            forbidden_traits: p.forbidden_traits.into_iter().collect(),
            aggregates: p.aggregates.into_iter().collect(),
            aggregate_selector: selector_to_wire(p.aggregate_selector),
            groups: p.groups.into_iter().map(Into::into).collect(),
            spread: p.spread.map(Into::into),
            strategy: p.strategy.map_or(pb::Strategy::Unspecified.into(), |s| {
                wire::<_, pb::Strategy>(s)
            }),
            carbon: p.carbon.map(|c| pb::CarbonPolicy {
                max_intensity: c.max_intensity,
            }),
        }
    }
}

fn placement(p: pb::Placement, at: &str) -> Result<Placement> {
    Ok(Placement {
        region: p.region,
        zone: p.zone,
        node_selector: selector(p.node_selector, &path(at, "node_selector"))?,
        required_traits: set(p.required_traits),
        forbidden_traits: set(p.forbidden_traits),
        aggregates: set(p.aggregates),
        aggregate_selector: selector(p.aggregate_selector, &path(at, "aggregate_selector"))?,
        groups: p
            .groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| group_rule(g, &item(&path(at, "groups"), i)))
            .collect::<Result<_>>()?,
        spread: p
            .spread
            .map(|s| zone_spread(s, &path(at, "spread")))
            .transpose()?,
        strategy: strategy(p.strategy, &path(at, "strategy"))?,
        carbon: p.carbon.map(|c| CarbonPolicy {
            max_intensity: c.max_intensity,
        }),
    })
}

impl From<AllocationRatios> for pb::AllocationRatios {
    fn from(r: AllocationRatios) -> Self {
        pb::AllocationRatios {
            cpu_millis: r.cpu.millis(),
            memory_millis: r.memory.millis(),
        }
    }
}

/// The ratios, re-checked against their bounds; errors name `at.cpu` or
/// `at.memory`.
fn allocation_ratios(r: pb::AllocationRatios, at: &str) -> Result<AllocationRatios> {
    let ratio = |millis: u32, field: &str| {
        AllocationRatio::from_millis(millis)
            .map_err(|e| Error::invalid(path(at, field), e.to_string()))
    };
    Ok(AllocationRatios {
        cpu: ratio(r.cpu_millis, "cpu")?,
        memory: ratio(r.memory_millis, "memory")?,
    })
}

// ---------------------------------------------------------------- instances

impl From<InstanceSpec> for pb::InstanceSpec {
    fn from(s: InstanceSpec) -> Self {
        pb::InstanceSpec {
            r#type: wire::<_, pb::InstanceType>(s.instance_type),
            image: s.image,
            cpu_millis: s.cpus.millis(),
            cpu_limit_millis: s.cpu_limit.map(Cpus::millis),
            memory_mib: s.memory_mib,
            memory_limit_mib: s.memory_limit_mib,
            max_cpu_millis: s.max_cpus.map(Cpus::millis),
            max_memory_mib: s.max_memory_mib,
            disk_gib: s.disk_gib,
            kernel: path_text(s.kernel),
            initrd: path_text(s.initrd),
            cmdline: s.cmdline,
            backend: wire::<_, pb::MicrovmBackend>(s.backend),
            restore_from: path_text(s.restore_from),
            networks: s.networks,
            command: s.command,
            env: s.env,
            restart: wire::<_, pb::RestartPolicy>(s.restart),
            placement: Some(s.placement.into()),
            publish: s.publish.iter().map(ToString::to_string).collect(),
            snapshot_schedule: s.snapshot_schedule.map(Into::into),
            cloud_init: s.cloud_init.map(Into::into),
            disks: s
                .disks
                .into_iter()
                .map(|d| pb::DiskSpec {
                    image: d.image,
                    read_only: d.read_only,
                })
                .collect(),
            pull: wire::<_, pb::PullPolicy>(s.pull),
            vsock: s.vsock.map(|v| pb::VsockSpec { cid: v.cid.get() }),
        }
    }
}

impl From<VsockEndpoint> for pb::VsockEndpoint {
    fn from(v: VsockEndpoint) -> Self {
        pb::VsockEndpoint {
            socket: v.socket.to_string_lossy().into_owned(),
            cid: v.cid.get(),
        }
    }
}

/// A guest CID, re-checked; errors name `at`.
fn guest_cid(cid: u32, at: &str) -> Result<GuestCid> {
    GuestCid::try_from(cid).map_err(|e| named(e, at))
}

/// Where a node says an instance's vsock socket is; errors name `at`.
pub(crate) fn vsock_endpoint(v: pb::VsockEndpoint, at: &str) -> Result<VsockEndpoint> {
    Ok(VsockEndpoint {
        socket: PathBuf::from(non_empty(v.socket, &path(at, "socket"))?),
        cid: guest_cid(v.cid, &path(at, "cid"))?,
    })
}

impl From<CloudInit> for pb::CloudInit {
    fn from(c: CloudInit) -> Self {
        pb::CloudInit {
            user_data: c.user_data,
            meta_data: c.meta_data,
            network_config: c.network_config,
            ssh_authorized_keys: c.ssh_authorized_keys,
        }
    }
}

/// Cloud-init data as sent; checked again with the rest of the spec.
impl From<pb::CloudInit> for CloudInit {
    fn from(c: pb::CloudInit) -> Self {
        CloudInit {
            user_data: c.user_data,
            meta_data: c.meta_data,
            network_config: c.network_config,
            ssh_authorized_keys: c.ssh_authorized_keys,
        }
    }
}

impl From<SnapshotSchedule> for pb::SnapshotSchedule {
    fn from(s: SnapshotSchedule) -> Self {
        pb::SnapshotSchedule {
            every_seconds: s.every.duration().as_secs(),
            keep: s.keep.get(),
        }
    }
}

/// `error`, naming the field `at` when it names one.
fn named(error: Error, at: &str) -> Error {
    match error {
        Error::InvalidArgument { reason, .. } => Error::invalid(at, reason),
        other => other,
    }
}

/// The interval of `seconds`, re-checked (at least the minimum); errors
/// name `at`.
fn snapshot_every(seconds: u64, at: &str) -> Result<SnapshotInterval> {
    SnapshotInterval::try_from(std::time::Duration::from_secs(seconds)).map_err(|e| named(e, at))
}

/// The count `keep`, re-checked (at least 1); errors name `at`.
fn snapshot_keep(keep: u32, at: &str) -> Result<SnapshotKeep> {
    SnapshotKeep::try_from(keep).map_err(|e| named(e, at))
}

fn snapshot_schedule(s: pb::SnapshotSchedule, at: &str) -> Result<SnapshotSchedule> {
    Ok(SnapshotSchedule {
        every: snapshot_every(s.every_seconds, &path(at, "every_seconds"))?,
        keep: snapshot_keep(s.keep, &path(at, "keep"))?,
    })
}

fn spec(s: pb::InstanceSpec, at: &str) -> Result<InstanceSpec> {
    Ok(InstanceSpec {
        instance_type: instance_type(s.r#type, &path(at, "type"))?,
        image: s.image,
        cpus: Cpus::from_millis(s.cpu_millis),
        cpu_limit: s.cpu_limit_millis.map(Cpus::from_millis),
        memory_mib: s.memory_mib,
        memory_limit_mib: s.memory_limit_mib,
        max_cpus: s.max_cpu_millis.map(Cpus::from_millis),
        max_memory_mib: s.max_memory_mib,
        disk_gib: s.disk_gib,
        kernel: optional_path(s.kernel),
        initrd: optional_path(s.initrd),
        cmdline: s.cmdline,
        backend: backend(s.backend, &path(at, "backend"))?.unwrap_or_default(),
        restore_from: optional_path(s.restore_from),
        networks: s.networks,
        publish: s
            .publish
            .iter()
            .enumerate()
            .map(|(i, text)| {
                PublishedPort::try_from(text.as_str())
                    .map_err(|e| e.at(item(&path(at, "publish"), i)))
            })
            .collect::<Result<_>>()?,
        command: s.command,
        env: s.env,
        restart: restart(s.restart, &path(at, "restart"))?.unwrap_or_default(),
        placement: s
            .placement
            .map(|p| placement(p, &path(at, "placement")))
            .transpose()?
            .unwrap_or_default(),
        snapshot_schedule: s
            .snapshot_schedule
            .map(|s| snapshot_schedule(s, &path(at, "snapshot_schedule")))
            .transpose()?,
        cloud_init: s.cloud_init.map(Into::into),
        // Checked with the rest of the spec (`InstanceSpec::validate`).
        disks: s
            .disks
            .into_iter()
            .map(|d| DiskSpec {
                image: d.image,
                read_only: d.read_only,
            })
            .collect(),
        pull: pull_policy(s.pull, &path(at, "pull"))?.unwrap_or_default(),
        vsock: s
            .vsock
            .map(|v| {
                Ok::<_, Error>(VsockSpec {
                    cid: guest_cid(v.cid, &path(&path(at, "vsock"), "cid"))?,
                })
            })
            .transpose()?,
    })
}

fn required_spec(s: Option<pb::InstanceSpec>, at: &str) -> Result<InstanceSpec> {
    spec(required(s, at)?, at)
}

impl TryFrom<pb::InstanceSpec> for InstanceSpec {
    type Error = Error;

    fn try_from(s: pb::InstanceSpec) -> Result<Self> {
        spec(s, "spec")
    }
}

impl From<CreateInstance> for pb::CreateInstance {
    fn from(c: CreateInstance) -> Self {
        pb::CreateInstance {
            name: c.name,
            labels: c.labels,
            spec: Some(c.spec.into()),
        }
    }
}

impl TryFrom<pb::CreateInstance> for CreateInstance {
    type Error = Error;

    /// Fields are named as the model's validation names them (`name`, `spec.type`).
    fn try_from(c: pb::CreateInstance) -> Result<Self> {
        Ok(CreateInstance {
            name: c.name,
            labels: c.labels,
            spec: required_spec(c.spec, "spec")?,
        })
    }
}

impl From<InstanceUpdate> for pb::InstanceUpdate {
    fn from(u: InstanceUpdate) -> Self {
        pb::InstanceUpdate {
            set_labels: u.set_labels,
            remove_labels: u.remove_labels.into_iter().collect(),
            restart: u.restart.map_or(0, wire::<_, pb::RestartPolicy>),
            cpu_millis: u.cpus.map(Cpus::millis),
            cpu_limit_millis: u.cpu_limit.map(Cpus::millis),
            memory_mib: u.memory_mib,
            memory_limit_mib: u.memory_limit_mib,
            disk_gib: u.disk_gib,
            restart_if_needed: u.restart_if_needed,
            snapshot_every_seconds: u.snapshot_every.map(|e| e.duration().as_secs()),
            snapshot_keep: u.snapshot_keep.map(SnapshotKeep::get),
            clear_snapshot_schedule: u.clear_snapshot_schedule,
        }
    }
}

impl TryFrom<pb::InstanceUpdate> for InstanceUpdate {
    type Error = Error;

    /// Fields are named as the model's validation names them (`restart`).
    fn try_from(u: pb::InstanceUpdate) -> Result<Self> {
        Ok(InstanceUpdate {
            set_labels: u.set_labels,
            remove_labels: set(u.remove_labels),
            restart: restart(u.restart, "restart")?,
            cpus: u.cpu_millis.map(Cpus::from_millis),
            cpu_limit: u.cpu_limit_millis.map(Cpus::from_millis),
            memory_mib: u.memory_mib,
            memory_limit_mib: u.memory_limit_mib,
            disk_gib: u.disk_gib,
            restart_if_needed: u.restart_if_needed,
            snapshot_every: u
                .snapshot_every_seconds
                .map(|s| snapshot_every(s, SnapshotInterval::FIELD))
                .transpose()?,
            snapshot_keep: u
                .snapshot_keep
                .map(|k| snapshot_keep(k, SnapshotKeep::FIELD))
                .transpose()?,
            clear_snapshot_schedule: u.clear_snapshot_schedule,
        })
    }
}

impl From<Condition> for pb::Condition {
    fn from(c: Condition) -> Self {
        pb::Condition {
            r#type: wire::<_, pb::ConditionType>(c.condition_type),
            status: c.status,
            reason: c.reason,
            message: c.message,
            since: Some(timestamp(c.since)),
        }
    }
}

fn condition(c: pb::Condition, at: &str) -> Result<Condition> {
    Ok(Condition {
        condition_type: condition_type(c.r#type, &path(at, "type"))?,
        status: c.status,
        reason: c.reason,
        message: c.message,
        since: required_time(c.since, &path(at, "since"))?,
    })
}

impl From<ExitStatus> for pb::ExitStatus {
    fn from(e: ExitStatus) -> Self {
        pb::ExitStatus {
            code: e.code,
            oom_killed: e.oom_killed,
            at: Some(timestamp(e.at)),
        }
    }
}

impl From<Failure> for pb::Failure {
    fn from(f: Failure) -> Self {
        pb::Failure {
            attempts: f.attempts,
            at: Some(timestamp(f.at)),
        }
    }
}

impl From<IpConfig> for pb::IpConfig {
    fn from(ip: IpConfig) -> Self {
        pb::IpConfig {
            address: ip.address.to_string(),
            prefix_len: u32::from(ip.prefix_len),
            gateway: ip.gateway.to_string(),
        }
    }
}

fn ip_config(ip: pb::IpConfig, at: &str) -> Result<IpConfig> {
    Ok(IpConfig {
        address: address(&ip.address, &path(at, "address"))?,
        prefix_len: fits(ip.prefix_len, &path(at, "prefix_len"))?,
        gateway: address(&ip.gateway, &path(at, "gateway"))?,
    })
}

impl From<NetworkAttachment> for pb::NetworkAttachment {
    fn from(a: NetworkAttachment) -> Self {
        pb::NetworkAttachment {
            network: a.network.into(),
            interface: a.interface,
            host_interface: a.host_interface.into(),
            bridge: a.bridge.into(),
            mac: a.mac,
            addresses: a.addresses.into_iter().map(Into::into).collect(),
            installation: a.installation.map(Into::into).unwrap_or_default(),
        }
    }
}

/// A validated name of type `T` at `at`.
fn name<T: TryFrom<String, Error = InvalidName>>(value: String, at: &str) -> Result<T> {
    T::try_from(value).map_err(|e| e.at(at))
}

/// An installation id at `at`; empty: none (recorded before installation ids).
fn installation(value: String, at: &str) -> Result<Option<InstallationId>> {
    if value.is_empty() {
        return Ok(None);
    }
    name(value, at).map(Some)
}

fn attachment(a: pb::NetworkAttachment, at: &str) -> Result<NetworkAttachment> {
    let addresses = path(at, "addresses");
    let attachment = NetworkAttachment {
        network: name(a.network, &path(at, "network"))?,
        installation: installation(a.installation, &path(at, "installation"))?,
        interface: a.interface,
        host_interface: name(a.host_interface, &path(at, "host_interface"))?,
        bridge: name(a.bridge, &path(at, "bridge"))?,
        mac: a.mac,
        addresses: a
            .addresses
            .into_iter()
            .enumerate()
            .map(|(i, ip)| ip_config(ip, &item(&addresses, i)))
            .collect::<Result<_>>()?,
    };
    attachment
        .check_bridge()
        .map_err(|e| e.at(path(at, "bridge")))?;
    Ok(attachment)
}

/// Attachments from the wire, each checked as an instance's are.
pub(crate) fn decode_attachments(
    values: Vec<pb::NetworkAttachment>,
) -> Result<Vec<NetworkAttachment>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, a)| attachment(a, &format!("attachments[{i}]")))
        .collect()
}

impl From<zixiao_core::model::RuntimeSize> for pb::RuntimeSize {
    fn from(s: zixiao_core::model::RuntimeSize) -> Self {
        pb::RuntimeSize {
            cpu_millis: s.cpus.millis(),
            memory_mib: s.memory_mib,
        }
    }
}

/// A size as a runtime reported it: shown, never acted on, so any value is
/// taken as it came.
impl From<pb::RuntimeSize> for zixiao_core::model::RuntimeSize {
    fn from(s: pb::RuntimeSize) -> Self {
        zixiao_core::model::RuntimeSize {
            cpus: Cpus::from_millis(s.cpu_millis),
            memory_mib: s.memory_mib,
        }
    }
}

impl From<Instance> for pb::Instance {
    fn from(i: Instance) -> Self {
        pb::Instance {
            id: i.id,
            name: i.name,
            labels: i.labels,
            spec: Some(i.spec.into()),
            desired: wire::<_, pb::DesiredState>(i.desired),
            status: wire::<_, pb::InstanceStatus>(i.status),
            node: i.node,
            runtime: i.runtime,
            attachments: i.attachments.into_iter().map(Into::into).collect(),
            conditions: i.conditions.into_iter().map(Into::into).collect(),
            exit: i.exit.map(Into::into),
            failure: i.failure.map(Into::into),
            compute_reserved: Some(i.compute_reserved),
            reschedule: i.reschedule,
            migrate_to: i.migrate_to,
            restarts_requested: i.restarts_requested,
            restarts_done: i.restarts_done,
            created_at: Some(timestamp(i.created_at)),
            updated_at: Some(timestamp(i.updated_at)),
            started_at: i.started_at.map(timestamp),
            revision: i.revision,
            template: i.template.map(Into::into),
            clone_of: i.clone_of.map(|o| pb::CloneOrigin {
                source: o.source,
                node: o.node,
                linked: o.linked,
                snapshot: o.snapshot.map(String::from),
            }),
            last_scheduled_snapshot: i.last_scheduled_snapshot.map(|s| pb::ScheduledSnapshot {
                name: s.name,
                at: Some(timestamp(s.at)),
            }),
            operation: i.operation.map(String::from),
            runtime_size: i.runtime_size.map(Into::into),
            vsock: i.vsock.map(Into::into),
        }
    }
}

fn instance(i: pb::Instance, at: &str) -> Result<Instance> {
    let conditions = path(at, "conditions");
    let attachments = path(at, "attachments");
    Ok(Instance {
        id: non_empty(i.id, &path(at, "id"))?,
        name: non_empty(i.name, &path(at, "name"))?,
        labels: i.labels,
        spec: required_spec(i.spec, &path(at, "spec"))?,
        desired: desired_state(i.desired, &path(at, "desired"))?,
        status: instance_status(i.status, &path(at, "status"))?,
        node: i.node,
        runtime: i.runtime,
        attachments: i
            .attachments
            .into_iter()
            .enumerate()
            .map(|(n, a)| attachment(a, &item(&attachments, n)))
            .collect::<Result<_>>()?,
        conditions: i
            .conditions
            .into_iter()
            .enumerate()
            .map(|(n, c)| condition(c, &item(&conditions, n)))
            .collect::<Result<_>>()?,
        exit: i
            .exit
            .map(|e| {
                let at = path(at, "exit");
                Ok::<_, Error>(ExitStatus {
                    code: e.code,
                    oom_killed: e.oom_killed,
                    at: required_time(e.at, &path(&at, "at"))?,
                })
            })
            .transpose()?,
        failure: i
            .failure
            .map(|f| {
                let at = path(at, "failure");
                Ok::<_, Error>(Failure {
                    attempts: f.attempts,
                    at: required_time(f.at, &path(&at, "at"))?,
                })
            })
            .transpose()?,
        compute_reserved: i.compute_reserved.unwrap_or(true),
        reschedule: i.reschedule,
        migrate_to: i.migrate_to,
        restarts_requested: i.restarts_requested,
        restarts_done: i.restarts_done,
        created_at: required_time(i.created_at, &path(at, "created_at"))?,
        updated_at: required_time(i.updated_at, &path(at, "updated_at"))?,
        started_at: optional_time(i.started_at, &path(at, "started_at"))?,
        revision: i.revision,
        template: i
            .template
            .map(|o| template_origin(o, &path(at, "template")))
            .transpose()?,
        clone_of: i
            .clone_of
            .map(|o| clone_origin(o, &path(at, "clone_of")))
            .transpose()?,
        last_scheduled_snapshot: i
            .last_scheduled_snapshot
            .map(|s| {
                let at = path(at, "last_scheduled_snapshot");
                Ok::<_, Error>(ScheduledSnapshot {
                    name: non_empty(s.name, &path(&at, "name"))?,
                    at: required_time(s.at, &path(&at, "at"))?,
                })
            })
            .transpose()?,
        operation: i
            .operation
            .map(|o| operation_id(&o, &path(at, "operation")))
            .transpose()?,
        runtime_size: i.runtime_size.map(Into::into),
        vsock: i
            .vsock
            .map(|v| vsock_endpoint(v, &path(at, "vsock")))
            .transpose()?,
    })
}

/// `text` as an operation id, the field at fault named `at`.
pub(crate) fn operation_id(text: &str, at: &str) -> Result<OperationId> {
    OperationId::try_from(text).map_err(|e| e.on_field(at))
}

/// The one of `all` whose name (`name`) is `text`. Errors:
/// `InvalidArgument` at `at`, listing the names.
fn named_variant<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    text: &str,
    at: &str,
) -> Result<T> {
    all.iter()
        .copied()
        .find(|v| name(*v) == text)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
            Error::invalid(
                at,
                format!(
                    "`{}` is not one of {}",
                    text.escape_debug(),
                    names.join(", ")
                ),
            )
        })
}

impl From<Operation> for pb::Operation {
    fn from(o: Operation) -> Self {
        pb::Operation {
            id: o.id.into(),
            kind: o.kind.as_str().to_owned(),
            target: Some(pb::OperationTarget {
                kind: o.target.kind.as_str().to_owned(),
                id: o.target.id,
                name: o.target.name,
            }),
            requested_by: o.requested_by,
            phase: o.phase.as_str().to_owned(),
            step: o.step,
            steps: o.steps,
            progress: o.progress.map(|p| pb::OperationProgress {
                done: p.done,
                total: p.total,
                unit: p.unit,
            }),
            started_at: Some(timestamp(o.started_at)),
            finished_at: o.finished_at.map(timestamp),
            error: o.error.map(|e| pb::OperationError {
                kind: e.kind.as_str().to_owned(),
                message: e.message,
            }),
            result: o.result,
            revision: o.revision,
        }
    }
}

impl TryFrom<pb::Operation> for Operation {
    type Error = Error;

    /// Every field re-checked: the id, each name, the times.
    fn try_from(o: pb::Operation) -> Result<Self> {
        let target = required(o.target, "target")?;
        Ok(Operation {
            id: operation_id(&o.id, "id")?,
            kind: named_variant(&OperationKind::ALL, OperationKind::as_str, &o.kind, "kind")?,
            target: OperationTarget {
                kind: named_variant(
                    &TargetKind::ALL,
                    TargetKind::as_str,
                    &target.kind,
                    "target.kind",
                )?,
                id: non_empty(target.id, "target.id")?,
                name: non_empty(target.name, "target.name")?,
                // The access layer reads them on the server; they do not
                // travel.
                labels: Default::default(),
            },
            requested_by: o.requested_by,
            phase: named_variant(
                &OperationPhase::ALL,
                OperationPhase::as_str,
                &o.phase,
                "phase",
            )?,
            step: o.step,
            steps: o.steps,
            progress: o.progress.map(|p| OperationProgress {
                done: p.done,
                total: p.total,
                unit: p.unit,
            }),
            started_at: required_time(o.started_at, "started_at")?,
            finished_at: optional_time(o.finished_at, "finished_at")?,
            error: o
                .error
                .map(|e| {
                    Ok::<_, Error>(OperationError {
                        kind: named_variant(
                            &ErrorKind::ALL,
                            ErrorKind::as_str,
                            &e.kind,
                            "error.kind",
                        )?,
                        message: e.message,
                    })
                })
                .transpose()?,
            result: o.result,
            // Kept by the servers for each other; it does not travel.
            alive_at: None,
            revision: o.revision,
        })
    }
}

impl From<OperationFilter> for pb::OperationFilter {
    fn from(f: OperationFilter) -> Self {
        pb::OperationFilter {
            target: f.target,
            kind: f.kind.map(|k| k.as_str().to_owned()),
            unfinished: f.unfinished,
        }
    }
}

impl TryFrom<pb::OperationFilter> for OperationFilter {
    type Error = Error;

    fn try_from(f: pb::OperationFilter) -> Result<Self> {
        Ok(OperationFilter {
            target: f.target,
            kind: f
                .kind
                .map(|k| {
                    named_variant(
                        &OperationKind::ALL,
                        OperationKind::as_str,
                        &k,
                        "filter.kind",
                    )
                })
                .transpose()?,
            unfinished: f.unfinished,
        })
    }
}

impl TryFrom<pb::Instance> for Instance {
    type Error = Error;

    fn try_from(i: pb::Instance) -> Result<Self> {
        instance(i, "instance")
    }
}

impl From<InstanceFilter> for pb::InstanceFilter {
    fn from(f: InstanceFilter) -> Self {
        pb::InstanceFilter {
            r#type: f.instance_type.map_or(0, wire::<_, pb::InstanceType>),
            status: f.status.map_or(0, wire::<_, pb::InstanceStatus>),
            node: f.node,
            labels: f.labels,
        }
    }
}

impl TryFrom<pb::InstanceFilter> for InstanceFilter {
    type Error = Error;

    fn try_from(f: pb::InstanceFilter) -> Result<Self> {
        Ok(InstanceFilter {
            instance_type: optional_instance_type(f.r#type, "filter.type")?,
            status: optional_instance_status(f.status, "filter.status")?,
            node: f.node,
            labels: f.labels,
        })
    }
}

impl From<InstanceStats> for pb::InstanceStats {
    fn from(s: InstanceStats) -> Self {
        pb::InstanceStats {
            cpu_time_ns: s.cpu_time_ns,
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            pids: s.pids,
            disk_read_bytes: s.disk_read_bytes,
            disk_write_bytes: s.disk_write_bytes,
            net_rx_bytes: s.net_rx_bytes,
            net_tx_bytes: s.net_tx_bytes,
        }
    }
}

impl From<pb::InstanceStats> for InstanceStats {
    fn from(s: pb::InstanceStats) -> Self {
        InstanceStats {
            cpu_time_ns: s.cpu_time_ns,
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            pids: s.pids,
            disk_read_bytes: s.disk_read_bytes,
            disk_write_bytes: s.disk_write_bytes,
            net_rx_bytes: s.net_rx_bytes,
            net_tx_bytes: s.net_tx_bytes,
        }
    }
}

impl From<Vec<StatsSample>> for pb::StatsHistory {
    fn from(samples: Vec<StatsSample>) -> Self {
        pb::StatsHistory {
            samples: samples
                .into_iter()
                .map(|s| pb::StatsSample {
                    at: Some(timestamp(s.at)),
                    stats: Some(s.stats.into()),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::StatsHistory> for Vec<StatsSample> {
    type Error = Error;

    fn try_from(history: pb::StatsHistory) -> Result<Self> {
        history
            .samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(StatsSample {
                    at: required_time(s.at, &format!("samples[{i}].at"))?,
                    stats: required(s.stats, &format!("samples[{i}].stats"))?.into(),
                })
            })
            .collect()
    }
}

impl From<Vec<NodeUsageSample>> for pb::NodeStatsHistory {
    fn from(samples: Vec<NodeUsageSample>) -> Self {
        pb::NodeStatsHistory {
            samples: samples
                .into_iter()
                .map(|s| pb::NodeUsageSample {
                    at: Some(timestamp(s.at)),
                    instances: s.instances,
                    cpu_millicores: s.cpu_millicores,
                    memory_bytes: s.memory_bytes,
                    host: match (
                        s.host_cpu_capacity_millicores,
                        s.host_memory_bytes,
                        s.host_memory_capacity_bytes,
                    ) {
                        (Some(cpu_total), Some(memory_used), Some(memory_total)) => {
                            Some(pb::HostUsage {
                                cpu_millicores_used: s.host_cpu_millicores,
                                cpu_millicores_total: cpu_total,
                                memory_used_bytes: memory_used,
                                memory_total_bytes: memory_total,
                                load1: s.host_load1.unwrap_or_default(),
                            })
                        }
                        _ => None,
                    },
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::NodeStatsHistory> for Vec<NodeUsageSample> {
    type Error = Error;

    fn try_from(history: pb::NodeStatsHistory) -> Result<Self> {
        history
            .samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let at = required_time(s.at, &format!("samples[{i}].at"))?;
                let host = s
                    .host
                    .map(|h| host_usage(h, at, &format!("samples[{i}].host")))
                    .transpose()?;
                Ok(NodeUsageSample {
                    at,
                    instances: s.instances,
                    cpu_millicores: s.cpu_millicores,
                    memory_bytes: s.memory_bytes,
                    host_cpu_millicores: host.as_ref().and_then(|h| h.cpu_millicores_used),
                    host_cpu_capacity_millicores: host.as_ref().map(|h| h.cpu_millicores_total),
                    host_memory_bytes: host.as_ref().map(|h| h.memory_used_bytes),
                    host_memory_capacity_bytes: host.as_ref().map(|h| h.memory_total_bytes),
                    host_load1: host.as_ref().map(|h| h.load1),
                })
            })
            .collect()
    }
}

impl From<&HostUsage> for pb::HostUsage {
    fn from(h: &HostUsage) -> Self {
        pb::HostUsage {
            cpu_millicores_used: h.cpu_millicores_used,
            cpu_millicores_total: h.cpu_millicores_total,
            memory_used_bytes: h.memory_used_bytes,
            memory_total_bytes: h.memory_total_bytes,
            load1: h.load1,
        }
    }
}

/// A host reading from the wire, as of `at` (the receiver's time: the
/// sender's clock may be off), checked as `field`: capacities non-zero,
/// use within them, a finite load. Errors: `InvalidArgument` naming the
/// field.
pub fn host_usage(h: pb::HostUsage, at: DateTime<Utc>, field: &str) -> Result<HostUsage> {
    if h.cpu_millicores_total == 0 {
        return Err(Error::invalid(
            format!("{field}.cpu_millicores_total"),
            "must be more than 0",
        ));
    }
    if h.memory_total_bytes == 0 {
        return Err(Error::invalid(
            format!("{field}.memory_total_bytes"),
            "must be more than 0",
        ));
    }
    if let Some(used) = h.cpu_millicores_used {
        if used > h.cpu_millicores_total {
            return Err(Error::invalid(
                format!("{field}.cpu_millicores_used"),
                format!(
                    "{used} is more than cpu_millicores_total ({})",
                    h.cpu_millicores_total
                ),
            ));
        }
    }
    if h.memory_used_bytes > h.memory_total_bytes {
        return Err(Error::invalid(
            format!("{field}.memory_used_bytes"),
            format!(
                "{} is more than memory_total_bytes ({})",
                h.memory_used_bytes, h.memory_total_bytes
            ),
        ));
    }
    if !h.load1.is_finite() || h.load1 < 0.0 {
        return Err(Error::invalid(
            format!("{field}.load1"),
            format!("{} is not a load average", h.load1),
        ));
    }
    Ok(HostUsage {
        at,
        cpu_millicores_used: h.cpu_millicores_used,
        cpu_millicores_total: h.cpu_millicores_total,
        memory_used_bytes: h.memory_used_bytes,
        memory_total_bytes: h.memory_total_bytes,
        load1: h.load1,
    })
}

impl From<LogChunk> for pb::LogChunk {
    fn from(c: LogChunk) -> Self {
        pb::LogChunk {
            data: c.data,
            next_offset: c.next_offset,
        }
    }
}

impl From<pb::LogChunk> for LogChunk {
    fn from(c: pb::LogChunk) -> Self {
        LogChunk {
            data: c.data,
            next_offset: c.next_offset,
        }
    }
}

impl From<InstanceEvent> for pb::InstanceEvent {
    fn from(e: InstanceEvent) -> Self {
        pb::InstanceEvent {
            kind: wire::<_, pb::EventKind>(e.kind),
            revision: e.revision,
            instance: e.instance.map(Into::into),
            id: e.id,
        }
    }
}

impl TryFrom<pb::InstanceEvent> for InstanceEvent {
    type Error = Error;

    fn try_from(e: pb::InstanceEvent) -> Result<Self> {
        Ok(InstanceEvent {
            kind: event_kind(e.kind, "event.kind")?,
            revision: e.revision,
            instance: e
                .instance
                .map(|i| instance(i, "event.instance"))
                .transpose()?,
            id: non_empty(e.id, "event.id")?,
        })
    }
}

impl From<SnapshotInfo> for pb::SnapshotInfo {
    fn from(s: SnapshotInfo) -> Self {
        pb::SnapshotInfo {
            name: s.name,
            created_at: s.created_at.map(timestamp),
            includes_memory: s.includes_memory,
            current: s.current,
        }
    }
}

impl TryFrom<pb::SnapshotInfo> for SnapshotInfo {
    type Error = Error;

    fn try_from(s: pb::SnapshotInfo) -> Result<Self> {
        Ok(SnapshotInfo {
            name: non_empty(s.name, "snapshot.name")?,
            created_at: optional_time(s.created_at, "snapshot.created_at")?,
            includes_memory: s.includes_memory,
            current: s.current,
        })
    }
}

impl From<ImageInfo> for pb::ImageInfo {
    fn from(i: ImageInfo) -> Self {
        pb::ImageInfo {
            name: i.name,
            digest: i.digest,
            size_bytes: i.size_bytes,
            kind: encode_image_kind(i.kind),
            format: i.format,
            created_at: i.created_at.map(timestamp),
        }
    }
}

impl TryFrom<pb::ImageInfo> for ImageInfo {
    type Error = Error;

    fn try_from(i: pb::ImageInfo) -> Result<Self> {
        let kind = decode_image_kind(i.kind, "image.kind")?;
        let name = non_empty(i.name, "image.name")?;
        // A store image's name and digest reach paths and listings: the
        // same checks as where they were made.
        if kind.in_node_store() {
            NodeImageName::try_from(name.as_str())
                .map_err(|e| Error::invalid("image.name", e.to_string()))?;
            let sha = i.digest.strip_prefix("sha256:").unwrap_or("");
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    "image.digest",
                    "must be sha256:<64 hex digits>",
                ));
            }
        }
        if i.format.len() > 32 || !i.format.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::invalid("image.format", "must be a short word"));
        }
        Ok(ImageInfo {
            name,
            digest: i.digest,
            size_bytes: i.size_bytes,
            kind,
            format: i.format,
            created_at: optional_time(i.created_at, "image.created_at")?,
        })
    }
}

impl From<PullProgress> for pb::PullEvent {
    fn from(p: PullProgress) -> Self {
        use pb::pull_event::Event;
        let event = match p {
            PullProgress::Resolved {
                digest,
                blobs,
                bytes,
            } => Event::Resolved(pb::PullResolved {
                digest,
                blobs: blobs as u64,
                bytes,
            }),
            PullProgress::Fetched {
                digest,
                size,
                index,
                count,
            } => Event::Fetched(pb::PullFetched {
                digest,
                size,
                index: index as u64,
                count: count as u64,
            }),
            PullProgress::Unpacking => Event::Unpacking(()),
        };
        pb::PullEvent { event: Some(event) }
    }
}

/// A pull event from the wire: progress, or (`Err`) the image pulled.
pub(crate) fn decode_pull_event(
    event: pb::pull_event::Event,
) -> Result<std::result::Result<PullProgress, ImageInfo>> {
    use pb::pull_event::Event;
    let count = |n: u64, at: &str| {
        usize::try_from(n).map_err(|_| Error::invalid(at, format!("{n} is out of range")))
    };
    Ok(Ok(match event {
        Event::Resolved(r) => PullProgress::Resolved {
            digest: r.digest,
            blobs: count(r.blobs, "pull.resolved.blobs")?,
            bytes: r.bytes,
        },
        Event::Fetched(f) => PullProgress::Fetched {
            digest: f.digest,
            size: f.size,
            index: count(f.index, "pull.fetched.index")?,
            count: count(f.count, "pull.fetched.count")?,
        },
        Event::Unpacking(()) => PullProgress::Unpacking,
        Event::Image(image) => return Ok(Err(image.try_into()?)),
    }))
}

/// The wire form of pull options, as both pull requests (the API's and
/// the agent's) carry them.
pub(crate) struct WirePullOptions {
    pub(crate) credentials: Option<pb::RegistryCredentials>,
    pub(crate) insecure_registries: Vec<String>,
    pub(crate) registry_cas: Vec<String>,
    pub(crate) platform: Option<String>,
    pub(crate) kind: Option<String>,
}

/// Pull options on the wire.
pub(crate) fn encode_pull_options(options: PullOptions) -> WirePullOptions {
    WirePullOptions {
        credentials: options.credentials.map(|c| pb::RegistryCredentials {
            username: c.username,
            password: c.password,
        }),
        insecure_registries: options.insecure_registries,
        registry_cas: options.registry_cas.into_iter().map(String::from).collect(),
        platform: options.platform.map(String::from),
        kind: options.kind.map(|k| k.as_str().to_owned()),
    }
}

/// Pull options from the wire, the CA certificates and the platform
/// checked again. Errors: `InvalidArgument` on `registry_ca`, `platform`,
/// `kind`.
pub(crate) fn decode_pull_options(wire: WirePullOptions) -> Result<PullOptions, Error> {
    Ok(PullOptions {
        credentials: wire.credentials.map(|c| RegistryCredentials {
            username: c.username,
            password: c.password,
        }),
        insecure_registries: wire.insecure_registries,
        registry_cas: wire
            .registry_cas
            .into_iter()
            .map(RegistryCa::try_from)
            .collect::<Result<_, _>>()?,
        platform: wire
            .platform
            .as_deref()
            .map(ImagePlatform::try_from)
            .transpose()?,
        kind: wire
            .kind
            .as_deref()
            .map(<zixiao_core::model::ImageKind as std::str::FromStr>::from_str)
            .transpose()?,
    })
}

impl From<RuntimeState> for pb::RuntimeState {
    fn from(s: RuntimeState) -> Self {
        use pb::runtime_state::State;
        let state = match s {
            RuntimeState::Missing => State::Missing(()),
            RuntimeState::Created => State::Created(()),
            RuntimeState::Running => State::Running(()),
            RuntimeState::Paused => State::Paused(()),
            RuntimeState::Exited {
                code,
                oom_killed,
                at,
            } => State::Exited(pb::runtime_state::Exited {
                code,
                oom_killed,
                at: at.map(timestamp),
            }),
        };
        pb::RuntimeState { state: Some(state) }
    }
}

impl TryFrom<pb::RuntimeState> for RuntimeState {
    type Error = Error;

    fn try_from(s: pb::RuntimeState) -> Result<Self> {
        use pb::runtime_state::State;
        Ok(match required(s.state, "state")? {
            State::Missing(()) => RuntimeState::Missing,
            State::Created(()) => RuntimeState::Created,
            State::Running(()) => RuntimeState::Running,
            State::Paused(()) => RuntimeState::Paused,
            State::Exited(e) => RuntimeState::Exited {
                code: e.code,
                oom_killed: e.oom_killed,
                at: optional_time(e.at, "state.exited.at")?,
            },
        })
    }
}

// ---------------------------------------------------------------- nodes

impl From<OrphanSweep> for pb::OrphanSweep {
    fn from(s: OrphanSweep) -> Self {
        pb::OrphanSweep {
            at: s.at.map(timestamp),
            adopted: s.adopted,
            removed: s.removed,
            errors: s.errors,
        }
    }
}

fn orphan_sweep(s: pb::OrphanSweep, at: &str) -> Result<OrphanSweep> {
    Ok(OrphanSweep {
        at: optional_time(s.at, &path(at, "at"))?,
        adopted: s.adopted,
        removed: s.removed,
        errors: s.errors,
    })
}

impl TryFrom<pb::OrphanSweep> for OrphanSweep {
    type Error = Error;

    fn try_from(s: pb::OrphanSweep) -> Result<Self> {
        orphan_sweep(s, "sweep")
    }
}

impl From<Onboarding> for pb::Onboarding {
    fn from(o: Onboarding) -> Self {
        pb::Onboarding {
            state: wire::<_, pb::OnboardingState>(o.state),
            started_at: Some(timestamp(o.started_at)),
            finished_at: o.finished_at.map(timestamp),
            checks: o
                .checks
                .into_iter()
                .map(|c| pb::RuntimeCheck {
                    runtime: wire::<_, pb::InstanceType>(c.runtime),
                    outcome: wire::<_, pb::CheckOutcome>(c.outcome),
                    duration_ms: c.duration_ms,
                    step: c.step.map_or(0, wire::<_, pb::SmokeStep>),
                    detail: c.detail,
                })
                .collect(),
        }
    }
}

/// The onboarding at `at`, checked as the model checks what an agent
/// reports ([`Onboarding::validate`]).
fn onboarding(o: pb::Onboarding, at: &str) -> Result<Onboarding> {
    let checks_at = path(at, "checks");
    let onboarding = Onboarding {
        state: onboarding_state(o.state, &path(at, "state"))?,
        started_at: required_time(o.started_at, &path(at, "started_at"))?,
        finished_at: optional_time(o.finished_at, &path(at, "finished_at"))?,
        checks: o
            .checks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let at = item(&checks_at, i);
                Ok(RuntimeCheck {
                    runtime: instance_type(c.runtime, &path(&at, "runtime"))?,
                    outcome: check_outcome(c.outcome, &path(&at, "outcome"))?,
                    duration_ms: c.duration_ms,
                    step: smoke_step(c.step, &path(&at, "step"))?,
                    detail: c.detail,
                })
            })
            .collect::<Result<_>>()?,
    };
    onboarding.validate(at)?;
    Ok(onboarding)
}

/// A node's runtimes, missing runtimes and drivers, on the wire.
type RuntimesOnWire = (Vec<i32>, Vec<pb::MissingRuntime>, Vec<pb::DriverInfo>);

fn runtimes_to_wire(
    runtimes: BTreeSet<InstanceType>,
    missing: BTreeMap<InstanceType, String>,
    drivers: BTreeMap<InstanceType, DriverInfo>,
) -> RuntimesOnWire {
    (
        runtimes
            .into_iter()
            .map(wire::<_, pb::InstanceType>)
            .collect(),
        missing
            .into_iter()
            .map(|(t, reason)| pb::MissingRuntime {
                r#type: wire::<_, pb::InstanceType>(t),
                reason,
            })
            .collect(),
        drivers
            .into_iter()
            .map(|(t, d)| pb::DriverInfo {
                r#type: wire::<_, pb::InstanceType>(t),
                name: d.name,
                capabilities: d
                    .capabilities
                    .into_iter()
                    .map(wire::<_, pb::Capability>)
                    .collect(),
            })
            .collect(),
    )
}

/// What a node can run, as its registration, facts and record all say it.
struct Runtimes {
    runtimes: BTreeSet<InstanceType>,
    missing: BTreeMap<InstanceType, String>,
    drivers: BTreeMap<InstanceType, DriverInfo>,
}

fn runtimes(wire: RuntimesOnWire, at: &str) -> Result<Runtimes> {
    let (runtimes, missing, drivers) = wire;
    let runtimes_at = path(at, "runtimes");
    let missing_at = path(at, "missing_runtimes");
    let drivers_at = path(at, "drivers");
    Ok(Runtimes {
        runtimes: runtimes
            .into_iter()
            .enumerate()
            .map(|(i, t)| instance_type(t, &item(&runtimes_at, i)))
            .collect::<Result<_>>()?,
        missing: missing
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let at = item(&missing_at, i);
                Ok((instance_type(m.r#type, &path(&at, "type"))?, m.reason))
            })
            .collect::<Result<_>>()?,
        drivers: drivers
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let at = item(&drivers_at, i);
                let capabilities_at = path(&at, "capabilities");
                let capabilities = d
                    .capabilities
                    .into_iter()
                    .enumerate()
                    .map(|(n, c)| capability(c, &item(&capabilities_at, n)))
                    .collect::<Result<_>>()?;
                let info = DriverInfo {
                    name: d.name,
                    capabilities,
                };
                Ok((instance_type(d.r#type, &path(&at, "type"))?, info))
            })
            .collect::<Result<_>>()?,
    })
}

impl From<Node> for pb::Node {
    fn from(n: Node) -> Self {
        let (runtimes, missing_runtimes, drivers) =
            runtimes_to_wire(n.runtimes, n.missing_runtimes, n.drivers);
        pb::Node {
            id: n.id,
            hostname: n.hostname,
            address: n.address,
            region: n.region,
            zone: n.zone,
            role: wire::<_, pb::NodeRole>(n.role),
            status: wire::<_, pb::NodeStatus>(n.status),
            capacity: Some(n.capacity.into()),
            allocation_ratios: Some(n.allocation_ratios.into()),
            allocated: Some(n.allocated.into()),
            labels: n.labels,
            traits: n.traits.into_iter().collect(),
            runtimes,
            missing_runtimes,
            images: n.images.into_iter().collect(),
            carbon_intensity: n.carbon_intensity,
            last_heartbeat: n.last_heartbeat.map(timestamp),
            orphan_sweep: n.orphan_sweep.map(Into::into),
            created_at: Some(timestamp(n.created_at)),
            updated_at: Some(timestamp(n.updated_at)),
            revision: n.revision,
            drivers,
            reported: Some(n.reported.into()),
            operator: Some(n.operator.into()),
            onboarding: n.onboarding.map(Into::into),
        }
    }
}

impl From<NodeMetadata> for pb::NodeMetadata {
    fn from(m: NodeMetadata) -> Self {
        pb::NodeMetadata {
            labels: m.labels,
            traits: m.traits.into_iter().collect(),
            carbon_intensity: m.carbon_intensity,
        }
    }
}

/// Unset: none (what a peer from before the split sends).
fn node_metadata(m: Option<pb::NodeMetadata>) -> NodeMetadata {
    m.map(|m| NodeMetadata {
        labels: m.labels,
        traits: set(m.traits),
        carbon_intensity: m.carbon_intensity,
    })
    .unwrap_or_default()
}

fn node(n: pb::Node, at: &str) -> Result<Node> {
    let r = runtimes((n.runtimes, n.missing_runtimes, n.drivers), at)?;
    Ok(Node {
        id: non_empty(n.id, &path(at, "id"))?,
        hostname: n.hostname,
        address: n.address,
        region: n.region,
        zone: n.zone,
        role: node_role(n.role, &path(at, "role"))?,
        status: node_status(n.status, &path(at, "status"))?,
        capacity: resources(n.capacity, &path(at, "capacity"))?,
        allocation_ratios: n
            .allocation_ratios
            .map(|r| allocation_ratios(r, &path(at, "allocation_ratios")))
            .transpose()?
            .unwrap_or_default(),
        allocated: resources(n.allocated, &path(at, "allocated"))?,
        labels: n.labels,
        traits: set(n.traits),
        reported: node_metadata(n.reported),
        operator: node_metadata(n.operator),
        runtimes: r.runtimes,
        missing_runtimes: r.missing,
        drivers: r.drivers,
        images: n.images.into_iter().take(MAX_NODE_IMAGES).collect(),
        carbon_intensity: n.carbon_intensity,
        last_heartbeat: optional_time(n.last_heartbeat, &path(at, "last_heartbeat"))?,
        orphan_sweep: n
            .orphan_sweep
            .map(|s| orphan_sweep(s, &path(at, "orphan_sweep")))
            .transpose()?,
        onboarding: n
            .onboarding
            .map(|o| onboarding(o, &path(at, "onboarding")))
            .transpose()?,
        created_at: required_time(n.created_at, &path(at, "created_at"))?,
        updated_at: required_time(n.updated_at, &path(at, "updated_at"))?,
        revision: n.revision,
    })
}

impl TryFrom<pb::Node> for Node {
    type Error = Error;

    fn try_from(n: pb::Node) -> Result<Self> {
        node(n, "node")
    }
}

impl From<NodeEvent> for pb::NodeEvent {
    fn from(e: NodeEvent) -> Self {
        pb::NodeEvent {
            kind: wire::<_, pb::EventKind>(e.kind),
            revision: e.revision,
            node: e.node.map(Into::into),
            id: e.id,
        }
    }
}

impl TryFrom<pb::NodeEvent> for NodeEvent {
    type Error = Error;

    fn try_from(e: pb::NodeEvent) -> Result<Self> {
        Ok(NodeEvent {
            kind: event_kind(e.kind, "event.kind")?,
            revision: e.revision,
            node: e.node.map(|n| node(n, "event.node")).transpose()?,
            id: non_empty(e.id, "event.id")?,
        })
    }
}

impl From<DrainReport> for pb::DrainReport {
    fn from(r: DrainReport) -> Self {
        pb::DrainReport {
            node: r.node,
            moved: r.moved,
            pending: r.pending,
            stopped: r.stopped,
            status: r.status.map_or(0, wire::<_, pb::NodeStatus>),
            migrated: r
                .migrated
                .into_iter()
                .map(|m| pb::MigratedInstance {
                    name: m.name,
                    mode: m.mode.as_str().to_owned(),
                    to: m.to,
                })
                .collect(),
            not_migrated: r.not_migrated.into_iter().collect(),
        }
    }
}

impl TryFrom<pb::DrainReport> for DrainReport {
    type Error = Error;

    fn try_from(r: pb::DrainReport) -> Result<Self> {
        Ok(DrainReport {
            node: r.node,
            moved: r.moved,
            pending: r.pending,
            stopped: r.stopped,
            status: optional_node_status(r.status, "report.status")?,
            migrated: r
                .migrated
                .into_iter()
                .map(|m| {
                    Ok(MigratedInstance {
                        name: non_empty(m.name, "report.migrated.name")?,
                        mode: named_variant(
                            &zixiao_core::MigrationMode::ALL,
                            zixiao_core::MigrationMode::as_str,
                            &m.mode,
                            "report.migrated.mode",
                        )?,
                        to: non_empty(m.to, "report.migrated.to")?,
                    })
                })
                .collect::<Result<_>>()?,
            not_migrated: r.not_migrated.into_iter().collect(),
        })
    }
}

impl From<NodeRegistration> for pb::NodeRegistration {
    fn from(r: NodeRegistration) -> Self {
        let (runtimes, missing_runtimes, drivers) =
            runtimes_to_wire(r.runtimes, r.missing_runtimes, r.drivers);
        pb::NodeRegistration {
            id: r.id,
            hostname: r.hostname,
            address: r.address,
            region: Some(r.region),
            zone: Some(r.zone),
            role: wire::<_, pb::NodeRole>(r.role),
            capacity: Some(r.capacity.into()),
            allocation_ratios: r.allocation_ratios.map(Into::into),
            labels: r.labels,
            traits: r.traits.into_iter().collect(),
            runtimes,
            missing_runtimes,
            carbon_intensity: r.carbon_intensity,
            drivers,
            onboarding: r.onboarding.map(Into::into),
        }
    }
}

impl TryFrom<pb::NodeRegistration> for NodeRegistration {
    type Error = Error;

    /// Fields are named as the model's validation names them (`node.id`).
    fn try_from(r: pb::NodeRegistration) -> Result<Self> {
        let at = "node";
        let rt = runtimes((r.runtimes, r.missing_runtimes, r.drivers), at)?;
        let default_domain = || "default".to_owned();
        Ok(NodeRegistration {
            id: r.id,
            hostname: r.hostname,
            address: r.address,
            region: r.region.unwrap_or_else(default_domain),
            zone: r.zone.unwrap_or_else(default_domain),
            role: optional_node_role(r.role, &path(at, "role"))?.unwrap_or_default(),
            capacity: resources(r.capacity, &path(at, "capacity"))?,
            allocation_ratios: r
                .allocation_ratios
                .map(|r| allocation_ratios(r, &path(at, "allocation_ratios")))
                .transpose()?,
            labels: r.labels,
            traits: set(r.traits),
            runtimes: rt.runtimes,
            missing_runtimes: rt.missing,
            drivers: rt.drivers,
            carbon_intensity: r.carbon_intensity,
            onboarding: r
                .onboarding
                .map(|o| onboarding(o, &path(at, "onboarding")))
                .transpose()?,
        })
    }
}

impl From<NodeFacts> for pb::NodeFacts {
    fn from(f: NodeFacts) -> Self {
        let (runtimes, missing_runtimes, drivers) =
            runtimes_to_wire(f.runtimes, f.missing_runtimes, f.drivers);
        pb::NodeFacts {
            hostname: f.hostname,
            capacity: Some(f.capacity.into()),
            runtimes,
            missing_runtimes,
            drivers,
        }
    }
}

impl TryFrom<pb::NodeFacts> for NodeFacts {
    type Error = Error;

    fn try_from(f: pb::NodeFacts) -> Result<Self> {
        let rt = runtimes((f.runtimes, f.missing_runtimes, f.drivers), "facts")?;
        Ok(NodeFacts {
            hostname: f.hostname,
            capacity: resources(f.capacity, "facts.capacity")?,
            runtimes: rt.runtimes,
            missing_runtimes: rt.missing,
            drivers: rt.drivers,
        })
    }
}

impl From<ClusterInfo> for pb::ClusterInfo {
    fn from(c: ClusterInfo) -> Self {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        pb::ClusterInfo {
            nodes: count(c.nodes),
            nodes_by_status: c
                .nodes_by_status
                .into_iter()
                .map(|(status, n)| pb::NodeStatusCount {
                    status: wire::<_, pb::NodeStatus>(status),
                    count: count(n),
                })
                .collect(),
            instances: count(c.instances),
            instances_by_type: c
                .instances_by_type
                .into_iter()
                .flat_map(|(t, by_status)| {
                    by_status
                        .into_iter()
                        .map(move |(status, n)| pb::InstanceStatusCount {
                            r#type: wire::<_, pb::InstanceType>(t),
                            status: wire::<_, pb::InstanceStatus>(status),
                            count: count(n),
                        })
                })
                .collect(),
            capacity: Some(c.capacity.into()),
            allocated: Some(c.allocated.into()),
            schedulable_free: Some(c.schedulable_free.into()),
            leader: c.leader,
        }
    }
}

impl TryFrom<pb::ClusterInfo> for ClusterInfo {
    type Error = Error;

    fn try_from(c: pb::ClusterInfo) -> Result<Self> {
        let mut info = ClusterInfo {
            nodes: fits(c.nodes, "info.nodes")?,
            instances: fits(c.instances, "info.instances")?,
            capacity: c.capacity.map(Into::into).unwrap_or_default(),
            allocated: c.allocated.map(Into::into).unwrap_or_default(),
            schedulable_free: c.schedulable_free.map(Into::into).unwrap_or_default(),
            leader: c.leader,
            ..ClusterInfo::default()
        };
        for (i, n) in c.nodes_by_status.into_iter().enumerate() {
            let at = item("info.nodes_by_status", i);
            let status = node_status(n.status, &path(&at, "status"))?;
            info.nodes_by_status
                .insert(status, fits(n.count, &path(&at, "count"))?);
        }
        for (i, n) in c.instances_by_type.into_iter().enumerate() {
            let at = item("info.instances_by_type", i);
            let t = instance_type(n.r#type, &path(&at, "type"))?;
            let status = instance_status(n.status, &path(&at, "status"))?;
            info.instances_by_type
                .entry(t)
                .or_default()
                .insert(status, fits(n.count, &path(&at, "count"))?);
        }
        Ok(info)
    }
}

// ---------------------------------------------------------------- networks

impl From<Subnet> for pb::Subnet {
    fn from(s: Subnet) -> Self {
        pb::Subnet {
            cidr: s.cidr.to_string(),
            gateway: s.gateway.to_string(),
            reserved: s.reserved.iter().map(ToString::to_string).collect(),
        }
    }
}

fn subnet(s: pb::Subnet, at: &str) -> Result<Subnet> {
    let reserved_at = path(at, "reserved");
    Ok(Subnet {
        cidr: cidr(&s.cidr, &path(at, "cidr"))?,
        gateway: address(&s.gateway, &path(at, "gateway"))?,
        reserved: s
            .reserved
            .iter()
            .enumerate()
            .map(|(i, r)| cidr(r, &item(&reserved_at, i)))
            .collect::<Result<_>>()?,
    })
}

impl From<Network> for pb::Network {
    fn from(n: Network) -> Self {
        pb::Network {
            name: n.name.into(),
            subnets: n.subnets.into_iter().map(Into::into).collect(),
            bridge: n.bridge.into(),
            nat: n.nat,
            isolated: n.isolated,
            created_at: Some(timestamp(n.created_at)),
            deleting: n.deleting,
            revision: n.revision,
            installation: n.installation.map(Into::into).unwrap_or_default(),
            vni: n.vni.map_or(0, Vni::get),
        }
    }
}

fn network(n: pb::Network, at: &str) -> Result<Network> {
    let subnets_at = path(at, "subnets");
    let network = Network {
        name: name(non_empty(n.name, &path(at, "name"))?, &path(at, "name"))?,
        subnets: n
            .subnets
            .into_iter()
            .enumerate()
            .map(|(i, s)| subnet(s, &item(&subnets_at, i)))
            .collect::<Result<_>>()?,
        bridge: name(n.bridge, &path(at, "bridge"))?,
        installation: installation(n.installation, &path(at, "installation"))?,
        vni: match n.vni {
            0 => None,
            vni => Some(Vni::parse_at(vni, &path(at, "vni"))?),
        },
        nat: n.nat,
        isolated: n.isolated,
        created_at: required_time(n.created_at, &path(at, "created_at"))?,
        deleting: n.deleting,
        revision: n.revision,
    };
    network
        .check_bridge()
        .map_err(|e| e.at(path(at, "bridge")))?;
    Ok(network)
}

impl TryFrom<pb::Network> for Network {
    type Error = Error;

    fn try_from(n: pb::Network) -> Result<Self> {
        network(n, "network")
    }
}

impl From<&OverlayView> for pb::OverlayView {
    fn from(view: &OverlayView) -> Self {
        pb::OverlayView {
            peers: view.peers().iter().map(ToString::to_string).collect(),
            endpoints: view
                .endpoints()
                .iter()
                .map(|e| pb::OverlayEndpoint {
                    mac: e.mac.to_string(),
                    addresses: e.addresses.iter().map(ToString::to_string).collect(),
                    node: e.node.to_string(),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::OverlayView> for OverlayView {
    type Error = Error;

    /// The counts are checked before anything is parsed; then each
    /// address and MAC, and the view as [`OverlayView::new`] checks it.
    /// Errors: `InvalidArgument` naming the field under `overlay.`.
    fn try_from(view: pb::OverlayView) -> Result<Self> {
        let field = |f: String| format!("overlay.{f}");
        let too_many = |what: &str, n: usize, max: usize| {
            Error::invalid(
                field(what.to_owned()),
                format!("{n} entries; at most {max}"),
            )
        };
        if view.peers.len() > OverlayView::MAX_PEERS {
            return Err(too_many("peers", view.peers.len(), OverlayView::MAX_PEERS));
        }
        if view.endpoints.len() > OverlayView::MAX_ENDPOINTS {
            return Err(too_many(
                "endpoints",
                view.endpoints.len(),
                OverlayView::MAX_ENDPOINTS,
            ));
        }
        let address = |text: &str, at: String| {
            text.parse::<IpAddr>().map_err(|_| {
                Error::invalid(
                    field(at),
                    format!("`{}` is not an IP address", text.escape_debug()),
                )
            })
        };
        let peers = view
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| address(p, format!("peers[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let mut endpoints = Vec::with_capacity(view.endpoints.len());
        for (i, e) in view.endpoints.iter().enumerate() {
            if e.addresses.len() > OverlayView::MAX_ADDRESSES {
                return Err(too_many(
                    &format!("endpoints[{i}].addresses"),
                    e.addresses.len(),
                    OverlayView::MAX_ADDRESSES,
                ));
            }
            let mac = MacAddress::try_from(e.mac.as_str()).map_err(|err| match err {
                Error::InvalidArgument { reason, .. } => {
                    Error::invalid(field(format!("endpoints[{i}].mac")), reason)
                }
                other => other,
            })?;
            let addresses = e
                .addresses
                .iter()
                .enumerate()
                .map(|(j, a)| address(a, format!("endpoints[{i}].addresses[{j}]")))
                .collect::<Result<Vec<_>>>()?;
            let node = address(&e.node, format!("endpoints[{i}].node"))?;
            endpoints.push(OverlayEndpoint {
                mac,
                addresses,
                node,
            });
        }
        OverlayView::new(peers, endpoints).map_err(|err| match err {
            Error::InvalidArgument { field: f, reason } => Error::invalid(field(f), reason),
            other => other,
        })
    }
}

impl From<NetworkPart> for pb::NetworkPart {
    fn from(p: NetworkPart) -> Self {
        pb::NetworkPart {
            kind: p.kind.as_str().to_owned(),
            state: p.state.as_str().to_owned(),
            detail: p.detail,
        }
    }
}

impl TryFrom<pb::NetworkPart> for NetworkPart {
    type Error = Error;

    fn try_from(p: pb::NetworkPart) -> Result<Self> {
        Ok(NetworkPart {
            kind: NetworkPartKind::try_from(p.kind.as_str())
                .map_err(|why| Error::invalid("parts.kind", why))?,
            state: PartState::try_from(p.state.as_str())
                .map_err(|why| Error::invalid("parts.state", why))?,
            detail: p.detail,
        })
    }
}

impl From<NetworkStatus> for pb::NetworkStatusResponse {
    fn from(s: NetworkStatus) -> Self {
        pb::NetworkStatusResponse {
            network: Some(s.network.into()),
            nodes: s
                .nodes
                .into_iter()
                .map(|n| pb::NodeNetworkState {
                    node: n.node,
                    parts: n.parts.into_iter().map(Into::into).collect(),
                    error: n.error.unwrap_or_default(),
                })
                .collect(),
            repaired: s.repaired,
        }
    }
}

impl TryFrom<pb::NetworkStatusResponse> for NetworkStatus {
    type Error = Error;

    fn try_from(s: pb::NetworkStatusResponse) -> Result<Self> {
        let network = s
            .network
            .ok_or_else(|| Error::invalid("network", "missing"))?;
        Ok(NetworkStatus {
            network: network.try_into()?,
            nodes: s
                .nodes
                .into_iter()
                .map(|n| {
                    Ok(NodeNetworkState {
                        node: n.node,
                        parts: decode_all(n.parts)?,
                        error: Some(n.error).filter(|e| !e.is_empty()),
                    })
                })
                .collect::<Result<_>>()?,
            repaired: s.repaired,
        })
    }
}

impl From<CreateNetwork> for pb::CreateNetwork {
    fn from(c: CreateNetwork) -> Self {
        pb::CreateNetwork {
            name: c.name,
            subnets: c.subnets,
            gateways: c.gateways,
            reserved: c.reserved,
            nat: Some(c.nat),
            isolated: Some(c.isolated),
            vni: c.vni,
        }
    }
}

impl TryFrom<pb::CreateNetwork> for CreateNetwork {
    type Error = Error;

    /// The text fields are parsed by the model's validation, which names them.
    fn try_from(c: pb::CreateNetwork) -> Result<Self> {
        Ok(CreateNetwork {
            name: c.name,
            subnets: c.subnets,
            gateways: c.gateways,
            reserved: c.reserved,
            nat: c.nat.unwrap_or(true),
            isolated: c.isolated.unwrap_or(true),
            vni: c.vni,
        })
    }
}

// ---------------------------------------------------------------- aggregates

impl From<Aggregate> for pb::Aggregate {
    fn from(a: Aggregate) -> Self {
        pb::Aggregate {
            name: a.name.into(),
            metadata: a
                .metadata
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            nodes: a.nodes.into_iter().collect(),
            created_at: Some(timestamp(a.created_at)),
            updated_at: Some(timestamp(a.updated_at)),
        }
    }
}

impl TryFrom<pb::Aggregate> for Aggregate {
    type Error = Error;

    fn try_from(a: pb::Aggregate) -> Result<Self> {
        let at = "aggregate";
        Ok(Aggregate {
            name: name(non_empty(a.name, &path(at, "name"))?, &path(at, "name"))?,
            metadata: typed_metadata(&path(at, "metadata"), a.metadata)?,
            nodes: a
                .nodes
                .into_iter()
                .enumerate()
                .map(|(i, n)| non_empty(n, &item(&path(at, "nodes"), i)))
                .collect::<Result<_>>()?,
            created_at: required_time(a.created_at, &path(at, "created_at"))?,
            updated_at: required_time(a.updated_at, &path(at, "updated_at"))?,
            revision: 0,
        })
    }
}

/// An aggregate's name from the wire, re-checked.
pub(crate) fn decode_aggregate_name(text: String) -> Result<AggregateName> {
    name(non_empty(text, "name")?, "name")
}

/// A change of a node's labels as the wire carries it, each key and value
/// re-checked (see [`LabelChanges::from_parts`]).
pub(crate) fn decode_label_changes(
    set: BTreeMap<String, String>,
    remove: Vec<String>,
) -> Result<LabelChanges> {
    LabelChanges::from_parts(set, remove)
}

/// A change of a node's traits as the wire carries it, each re-checked.
pub(crate) fn decode_trait_changes(add: Vec<String>, remove: Vec<String>) -> Result<TraitChanges> {
    TraitChanges::from_parts(add, remove)
}

/// A change of a node's labels as a request sends it.
pub(crate) fn encode_label_changes(node: String, changes: LabelChanges) -> pb::LabelNodeRequest {
    let (set, remove) = encode_changes(changes);
    pb::LabelNodeRequest { node, set, remove }
}

/// A change of an aggregate's metadata as a request sends it.
pub(crate) fn encode_metadata_changes(
    name: String,
    changes: LabelChanges,
) -> pb::SetAggregateMetadataRequest {
    let (set, remove) = encode_changes(changes);
    pb::SetAggregateMetadataRequest { name, set, remove }
}

/// Label changes as the wire carries them: what to set, what to remove.
fn encode_changes(changes: LabelChanges) -> (BTreeMap<String, String>, Vec<String>) {
    let set = changes
        .set
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    (set, changes.remove.into_iter().map(Into::into).collect())
}

/// A change of a node's traits as a request sends it.
pub(crate) fn encode_trait_changes(
    node: String,
    changes: TraitChanges,
) -> pb::ChangeNodeTraitsRequest {
    pb::ChangeNodeTraitsRequest {
        node,
        add: changes.add.into_iter().map(Into::into).collect(),
        remove: changes.remove.into_iter().map(Into::into).collect(),
    }
}

// ---------------------------------------------------------------- templates

impl From<TemplateOrigin> for pb::TemplateOrigin {
    fn from(o: TemplateOrigin) -> Self {
        pb::TemplateOrigin {
            name: o.name.into(),
            version: o.version,
        }
    }
}

/// A template version number at `at`: from 1.
fn template_version(value: u32, at: &str) -> Result<u32> {
    if value == 0 {
        return Err(Error::invalid(at, "versions count from 1"));
    }
    Ok(value)
}

/// A clone's origin from the wire: the ids present, the snapshot's name
/// checked as the API checks it.
fn clone_origin(o: pb::CloneOrigin, at: &str) -> Result<CloneOrigin> {
    Ok(CloneOrigin {
        source: non_empty(o.source, &path(at, "source"))?,
        node: non_empty(o.node, &path(at, "node"))?,
        linked: o.linked,
        snapshot: o
            .snapshot
            .map(|s| snapshot_name(s, &path(at, "snapshot")))
            .transpose()?,
    })
}

/// A migration's mode from the wire: empty is `auto`. Errors:
/// `InvalidArgument` naming `mode`.
pub(crate) fn migration_mode(text: &str) -> Result<zixiao_core::MigrationMode> {
    if text.is_empty() {
        return Ok(zixiao_core::MigrationMode::Auto);
    }
    named_variant(
        &zixiao_core::MigrationMode::ALL,
        zixiao_core::MigrationMode::as_str,
        text,
        "mode",
    )
}

/// A snapshot name at `at`.
pub(crate) fn snapshot_name(value: String, at: &str) -> Result<SnapshotName> {
    SnapshotName::try_from(value).map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => Error::invalid(at, reason),
        other => other,
    })
}

fn template_origin(o: pb::TemplateOrigin, at: &str) -> Result<TemplateOrigin> {
    Ok(TemplateOrigin {
        name: name(o.name, &path(at, "name"))?,
        version: template_version(o.version, &path(at, "version"))?,
    })
}

impl From<TemplateInfo> for pb::Template {
    fn from(t: TemplateInfo) -> Self {
        pb::Template {
            name: t.name.into(),
            versions: t
                .versions
                .into_iter()
                .map(|v| pb::TemplateVersion {
                    version: v.version.version,
                    labels: v.version.labels,
                    spec: Some(v.version.spec.into()),
                    created_at: Some(timestamp(v.version.created_at)),
                    deleting: v.version.deleting,
                    in_use: u32::try_from(v.in_use).unwrap_or(u32::MAX),
                    instances: v.instances,
                })
                .collect(),
        }
    }
}

fn template_version_info(v: pb::TemplateVersion, at: &str) -> Result<TemplateVersionInfo> {
    // The count is of the names sent: one cannot say one thing and the
    // names another.
    if usize::try_from(v.in_use).ok() != Some(v.instances.len()) {
        return Err(Error::invalid(
            path(at, "in_use"),
            format!(
                "{} does not count the {} instances named",
                v.in_use,
                v.instances.len()
            ),
        ));
    }
    Ok(TemplateVersionInfo {
        version: TemplateVersion {
            version: template_version(v.version, &path(at, "version"))?,
            labels: v.labels,
            spec: required_spec(v.spec, &path(at, "spec"))?,
            created_at: required_time(v.created_at, &path(at, "created_at"))?,
            deleting: v.deleting,
        },
        in_use: v.instances.len(),
        instances: v.instances,
    })
}

impl TryFrom<pb::Template> for TemplateInfo {
    type Error = Error;

    fn try_from(t: pb::Template) -> Result<Self> {
        let versions_at = "template.versions";
        Ok(TemplateInfo {
            name: name(t.name, "template.name")?,
            versions: t
                .versions
                .into_iter()
                .enumerate()
                .map(|(i, v)| template_version_info(v, &item(versions_at, i)))
                .collect::<Result<_>>()?,
        })
    }
}

/// A template's name and content as a create or update sends them.
pub(crate) fn encode_template_change(name: TemplateName, spec: TemplateSpec) -> pb::TemplateChange {
    pb::TemplateChange {
        name: name.into(),
        labels: spec.labels,
        spec: Some(spec.spec.into()),
    }
}

/// A template create or update from the wire: the name re-checked, the
/// spec decoded (its values are checked where it is carried out).
pub(crate) fn decode_template_change(
    c: pb::TemplateChange,
) -> Result<(TemplateName, TemplateSpec)> {
    let template = name(non_empty(c.name, "name")?, "name")?;
    let spec = TemplateSpec {
        labels: c.labels,
        spec: required_spec(c.spec, "spec")?,
    };
    Ok((template, spec))
}

/// A template, or one version of it, as the wire names it.
pub(crate) fn decode_template_ref(r: pb::TemplateRef) -> Result<(TemplateName, Option<u32>)> {
    let template = name(non_empty(r.name, "name")?, "name")?;
    let version = r
        .version
        .map(|v| template_version(v, "version"))
        .transpose()?;
    Ok((template, version))
}

impl From<FromTemplate> for pb::CreateFromTemplateRequest {
    fn from(f: FromTemplate) -> Self {
        pb::CreateFromTemplateRequest {
            name: f.name,
            template: f.template.to_string(),
            set: f.set.iter().map(ToString::to_string).collect(),
            wait: false,
        }
    }
}

impl TryFrom<pb::CreateFromTemplateRequest> for FromTemplate {
    type Error = Error;

    /// Parsed as the frontends parse it: the template reference and each
    /// override are checked again.
    fn try_from(r: pb::CreateFromTemplateRequest) -> Result<Self> {
        FromTemplate::parse(r.name, &non_empty(r.template, "template")?, &r.set)
    }
}

// ---------------------------------------------------------------- lists

/// Decodes every element of a repeated field.
pub(crate) fn decode_all<C, P: TryInto<C, Error = Error>>(values: Vec<P>) -> Result<Vec<C>> {
    list(values)
}

/// A page token from the wire: empty is none. Errors: `InvalidArgument`
/// (`page_token`: not one a list answered).
pub(crate) fn page_token(text: &str) -> Result<Option<PageToken>> {
    if text.is_empty() {
        return Ok(None);
    }
    PageToken::try_from(text).map(Some)
}

// ---------------------------------------------------------------- access control

/// The wire value of a role.
pub(crate) fn encode_role(role: Role) -> i32 {
    match role {
        Role::Viewer => pb::Role::Viewer,
        Role::Operator => pb::Role::Operator,
        Role::Admin => pb::Role::Admin,
    }
    .into()
}

/// The role at `at`, `None` when unspecified.
pub(crate) fn decode_role(value: i32, at: &str) -> Result<Option<Role>> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Unspecified) => Ok(None),
        Ok(pb::Role::Viewer) => Ok(Some(Role::Viewer)),
        Ok(pb::Role::Operator) => Ok(Some(Role::Operator)),
        Ok(pb::Role::Admin) => Ok(Some(Role::Admin)),
        Err(_) => Err(Error::invalid(at, format!("unknown role {value}"))),
    }
}

/// The role at `at`, which must be set.
pub(crate) fn required_role(value: i32, at: &str) -> Result<Role> {
    decode_role(value, at)?.ok_or_else(|| missing(at))
}

impl From<Quota> for pb::Quota {
    fn from(q: Quota) -> Self {
        pb::Quota {
            cpu_millis: q.cpus.map(Cpus::millis),
            memory_mib: q.memory_mib,
            instances: q.instances,
            disk_gib: q.disk_gib,
        }
    }
}

impl From<pb::Quota> for Quota {
    fn from(q: pb::Quota) -> Self {
        Quota {
            cpus: q.cpu_millis.map(Cpus::from_millis),
            memory_mib: q.memory_mib,
            instances: q.instances,
            disk_gib: q.disk_gib,
        }
    }
}

impl From<UserInfo> for pb::User {
    fn from(u: UserInfo) -> Self {
        pb::User {
            name: u.name,
            role: encode_role(u.role),
            projects: u.projects.into_iter().collect(),
            created_at: Some(timestamp(u.created_at)),
        }
    }
}

impl TryFrom<pb::User> for UserInfo {
    type Error = Error;

    fn try_from(u: pb::User) -> Result<Self> {
        Ok(UserInfo {
            name: non_empty(u.name, "user.name")?,
            role: required_role(u.role, "user.role")?,
            projects: set(u.projects),
            created_at: required_time(u.created_at, "user.created_at")?,
        })
    }
}

impl From<TokenInfo> for pb::Token {
    fn from(t: TokenInfo) -> Self {
        pb::Token {
            id: t.id,
            purpose: match t.purpose {
                TokenPurpose::User => pb::TokenPurpose::User,
                TokenPurpose::Join => pb::TokenPurpose::Join,
            }
            .into(),
            owner: t.owner,
            role: t.role.map_or(0, encode_role),
            limited_to_projects: t.projects.is_some(),
            projects: t.projects.unwrap_or_default().into_iter().collect(),
            expires_at: t.expires_at.map(timestamp),
            revoked: t.revoked,
            created_at: Some(timestamp(t.created_at)),
        }
    }
}

impl TryFrom<pb::Token> for TokenInfo {
    type Error = Error;

    fn try_from(t: pb::Token) -> Result<Self> {
        let purpose = match pb::TokenPurpose::try_from(t.purpose) {
            Ok(pb::TokenPurpose::User) => TokenPurpose::User,
            Ok(pb::TokenPurpose::Join) => TokenPurpose::Join,
            _ => return Err(Error::invalid("token.purpose", "missing or unknown")),
        };
        Ok(TokenInfo {
            id: non_empty(t.id, "token.id")?,
            purpose,
            owner: non_empty(t.owner, "token.owner")?,
            role: decode_role(t.role, "token.role")?,
            projects: t.limited_to_projects.then(|| set(t.projects)),
            expires_at: optional_time(t.expires_at, "token.expires_at")?,
            revoked: t.revoked,
            created_at: required_time(t.created_at, "token.created_at")?,
        })
    }
}

impl From<IssuedToken> for pb::IssuedToken {
    fn from(t: IssuedToken) -> Self {
        pb::IssuedToken {
            token: Some(t.token.into()),
            secret: t.secret.expose().to_owned(),
        }
    }
}

impl TryFrom<pb::IssuedToken> for IssuedToken {
    type Error = Error;

    fn try_from(t: pb::IssuedToken) -> Result<Self> {
        Ok(IssuedToken {
            token: required(t.token, "token")?.try_into()?,
            secret: TokenText::new(non_empty(t.secret, "secret")?),
        })
    }
}

impl From<ProjectInfo> for pb::Project {
    fn from(p: ProjectInfo) -> Self {
        pb::Project {
            name: p.name,
            quota: Some(p.quota.into()),
            usage: Some(p.usage.into()),
            created_at: p.created_at.map(timestamp),
        }
    }
}

impl TryFrom<pb::Project> for ProjectInfo {
    type Error = Error;

    fn try_from(p: pb::Project) -> Result<Self> {
        Ok(ProjectInfo {
            name: non_empty(p.name, "project.name")?,
            quota: p.quota.map(Into::into).unwrap_or_default(),
            usage: p.usage.map(Into::into).unwrap_or_default(),
            created_at: optional_time(p.created_at, "project.created_at")?,
        })
    }
}

impl From<AuditRecord> for pb::AuditRecord {
    fn from(r: AuditRecord) -> Self {
        let (error_kind, permission, reason) = match &r.outcome {
            Outcome::Started | Outcome::Done => (String::new(), String::new(), String::new()),
            Outcome::Failed { kind } => (kind.as_str().to_owned(), String::new(), String::new()),
            Outcome::Denied { permission, reason } => {
                (String::new(), permission.clone(), reason.clone())
            }
            Outcome::Unauthenticated { reason } => (String::new(), String::new(), reason.clone()),
        };
        pb::AuditRecord {
            seq: r.seq,
            time: Some(timestamp(r.time)),
            replica: r.replica,
            identity: r.identity,
            user: r.user,
            token: r.token,
            project: r.project,
            operation: r.operation,
            target: r.target,
            outcome: r.outcome.as_str().to_owned(),
            error_kind,
            permission,
            reason,
        }
    }
}

impl TryFrom<pb::AuditRecord> for AuditRecord {
    type Error = Error;

    fn try_from(r: pb::AuditRecord) -> Result<Self> {
        let outcome = match r.outcome.as_str() {
            "started" => Outcome::Started,
            "done" => Outcome::Done,
            "failed" => Outcome::Failed {
                kind: ErrorKind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == r.error_kind)
                    .ok_or_else(|| {
                        Error::invalid(
                            "record.error_kind",
                            format!("`{}` is not an error kind", r.error_kind),
                        )
                    })?,
            },
            "denied" => Outcome::Denied {
                permission: r.permission,
                reason: r.reason,
            },
            "unauthenticated" => Outcome::Unauthenticated { reason: r.reason },
            other => {
                return Err(Error::invalid(
                    "record.outcome",
                    format!("`{other}` is not an outcome"),
                ))
            }
        };
        Ok(AuditRecord {
            seq: r.seq,
            time: required_time(r.time, "record.time")?,
            replica: r.replica,
            identity: non_empty(r.identity, "record.identity")?,
            user: r.user,
            token: r.token,
            project: r.project,
            operation: non_empty(r.operation, "record.operation")?,
            target: r.target,
            outcome,
        })
    }
}

/// A time on the wire.
pub(crate) fn wire_time(time: DateTime<Utc>) -> Timestamp {
    timestamp(time)
}

/// The time at `at`, when set.
pub(crate) fn decode_optional_time(
    value: Option<Timestamp>,
    at: &str,
) -> Result<Option<DateTime<Utc>>> {
    optional_time(value, at)
}

impl From<&zixiao_core::driver::MigrationTarget> for pb::MigrationTarget {
    fn from(t: &zixiao_core::driver::MigrationTarget) -> Self {
        pb::MigrationTarget {
            uri: t.uri().to_owned(),
            address: t.address().to_string(),
            state_dir: t.state_dir().to_string_lossy().into_owned(),
            vsock: None,
        }
    }
}

/// A target from the wire, checked as [`MigrationTarget::new`] checks one
/// (an address that is not an IP is `InvalidArgument` on `target.address`),
/// so a caller's URI or directory reaches a runtime only once parsed.
///
/// [`MigrationTarget::new`]: zixiao_core::driver::MigrationTarget::new
impl TryFrom<pb::MigrationTarget> for zixiao_core::driver::MigrationTarget {
    type Error = zixiao_core::DriverError;

    fn try_from(t: pb::MigrationTarget) -> std::result::Result<Self, Self::Error> {
        let address: IpAddr =
            t.address
                .parse()
                .map_err(|_| zixiao_core::DriverError::InvalidArgument {
                    field: "target.address".to_owned(),
                    reason: format!("`{}` is not an IP address", t.address.escape_debug()),
                })?;
        Self::new(&t.uri, address, std::path::Path::new(&t.state_dir))
    }
}

impl From<zixiao_core::driver::MigrationReport> for pb::MigrationReport {
    fn from(r: zixiao_core::driver::MigrationReport) -> Self {
        use crate::membership::wire_duration;
        pb::MigrationReport {
            total: Some(wire_duration(r.total)),
            downtime: r.downtime.map(wire_duration),
            memory_bytes: r.memory_bytes,
            disk_bytes: r.disk_bytes,
            rounds: r.rounds,
        }
    }
}

impl From<pb::MigrationReport> for zixiao_core::driver::MigrationReport {
    fn from(r: pb::MigrationReport) -> Self {
        use crate::membership::duration;
        zixiao_core::driver::MigrationReport {
            total: duration(r.total),
            downtime: r.downtime.map(|d| duration(Some(d))),
            memory_bytes: r.memory_bytes,
            disk_bytes: r.disk_bytes,
            rounds: r.rounds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(registry_cas: Vec<String>, platform: Option<&str>) -> WirePullOptions {
        WirePullOptions {
            credentials: None,
            insecure_registries: Vec::new(),
            registry_cas,
            platform: platform.map(str::to_owned),
            kind: None,
        }
    }

    #[test]
    fn pull_options_from_the_wire_are_checked_again() {
        let decoded = decode_pull_options(wire(Vec::new(), Some("linux/arm64"))).expect("valid");
        assert_eq!(
            decoded.platform.map(String::from).as_deref(),
            Some("linux/arm64")
        );
        let kind = |kind: &str| WirePullOptions {
            kind: Some(kind.to_owned()),
            ..wire(Vec::new(), None)
        };
        assert_eq!(
            decode_pull_options(kind("initrd")).expect("valid").kind,
            Some(zixiao_core::model::ImageKind::Initrd)
        );
        for (bad, field) in [
            (wire(Vec::new(), Some("linux/arm64\nflush")), "platform"),
            (wire(vec!["not pem".to_owned()], None), "registry_ca"),
            (kind("floppy"), "kind"),
        ] {
            let err = decode_pull_options(bad).expect_err("refused");
            assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument);
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    fn sample(host: Option<pb::HostUsage>) -> pb::NodeStatsHistory {
        pb::NodeStatsHistory {
            samples: vec![pb::NodeUsageSample {
                at: Some(timestamp(Utc::now())),
                instances: 1,
                cpu_millicores: 10,
                memory_bytes: 1 << 20,
                host,
            }],
        }
    }

    fn host() -> pb::HostUsage {
        pb::HostUsage {
            cpu_millicores_used: Some(700),
            cpu_millicores_total: 2000,
            memory_used_bytes: 3 << 30,
            memory_total_bytes: 23 << 30,
            load1: 0.42,
        }
    }

    #[test]
    fn host_usage_crosses_the_wire_and_is_checked_again() {
        let decoded = Vec::<NodeUsageSample>::try_from(sample(Some(host()))).expect("valid");
        assert_eq!(decoded[0].host_cpu_millicores, Some(700));
        assert_eq!(decoded[0].host_cpu_capacity_millicores, Some(2000));
        assert_eq!(decoded[0].host_memory_bytes, Some(3 << 30));
        assert_eq!(decoded[0].host_memory_capacity_bytes, Some(23 << 30));
        assert_eq!(decoded[0].host_load1, Some(0.42));
        // And back, unchanged.
        let again = pb::NodeStatsHistory::from(decoded);
        assert_eq!(again.samples[0].host, Some(host()));
        // No reading (an older agent): unknown, not zero.
        let decoded = Vec::<NodeUsageSample>::try_from(sample(None)).expect("valid");
        assert_eq!(decoded[0].host_memory_bytes, None);
        assert_eq!(pb::NodeStatsHistory::from(decoded).samples[0].host, None);
        let bad = [
            (
                pb::HostUsage {
                    cpu_millicores_total: 0,
                    ..host()
                },
                "cpu_millicores_total",
            ),
            (
                pb::HostUsage {
                    memory_total_bytes: 0,
                    ..host()
                },
                "memory_total_bytes",
            ),
            (
                pb::HostUsage {
                    cpu_millicores_used: Some(2001),
                    ..host()
                },
                "cpu_millicores_used",
            ),
            (
                pb::HostUsage {
                    memory_used_bytes: 24 << 30,
                    ..host()
                },
                "memory_used_bytes",
            ),
            (
                pb::HostUsage {
                    load1: f64::NAN,
                    ..host()
                },
                "load1",
            ),
            (
                pb::HostUsage {
                    load1: -1.0,
                    ..host()
                },
                "load1",
            ),
        ];
        for (bad, field) in bad {
            let err = Vec::<NodeUsageSample>::try_from(sample(Some(bad))).expect_err("refused");
            assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument);
            assert!(
                err.to_string()
                    .contains(&format!("samples[0].host.{field}")),
                "{err}"
            );
        }
    }
}
