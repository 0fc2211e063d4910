//! The model objects the uniffi bindings expose, as uniffi records and
//! enums, and their conversions from and to the core's types. Times are
//! RFC 3339 strings, addresses and prefixes their usual text; what a
//! foreign caller rarely needs (placement rules, conditions' history) is
//! left out and stays reachable through the other bindings.

use std::collections::HashMap;
use std::path::PathBuf;

use zixiao_core::model::{self as core, CreateNetwork as CoreCreateNetwork};
use zixiao_core::{InstanceStatus as CoreStatus, InstanceType as CoreType};

/// What kind of workload an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum InstanceType {
    /// A full virtual machine (libvirt).
    Vm,
    /// An OCI container (containerd).
    Container,
    /// A microVM booted from a kernel.
    Microvm,
}

impl From<CoreType> for InstanceType {
    fn from(t: CoreType) -> Self {
        match t {
            CoreType::Vm => InstanceType::Vm,
            CoreType::Container => InstanceType::Container,
            CoreType::Microvm => InstanceType::Microvm,
        }
    }
}

impl From<InstanceType> for CoreType {
    fn from(t: InstanceType) -> Self {
        match t {
            InstanceType::Vm => CoreType::Vm,
            InstanceType::Container => CoreType::Container,
            InstanceType::Microvm => CoreType::Microvm,
        }
    }
}

/// What was last observed of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum InstanceStatus {
    /// Waiting for a node.
    Pending,
    /// A node was chosen.
    Scheduled,
    /// Its node is creating it.
    Creating,
    /// Running.
    Running,
    /// Frozen by a pause.
    Paused,
    /// Its node is stopping it.
    Stopping,
    /// Exists on its node, not running.
    Stopped,
    /// Creating, starting or running it failed (see `problem`).
    Failed,
    /// Being removed from its node.
    Deleting,
}

impl From<CoreStatus> for InstanceStatus {
    fn from(s: CoreStatus) -> Self {
        match s {
            CoreStatus::Pending => InstanceStatus::Pending,
            CoreStatus::Scheduled => InstanceStatus::Scheduled,
            CoreStatus::Creating => InstanceStatus::Creating,
            CoreStatus::Running => InstanceStatus::Running,
            CoreStatus::Paused => InstanceStatus::Paused,
            CoreStatus::Stopping => InstanceStatus::Stopping,
            CoreStatus::Stopped => InstanceStatus::Stopped,
            CoreStatus::Failed => InstanceStatus::Failed,
            CoreStatus::Deleting => InstanceStatus::Deleting,
        }
    }
}

impl From<InstanceStatus> for CoreStatus {
    fn from(s: InstanceStatus) -> Self {
        match s {
            InstanceStatus::Pending => CoreStatus::Pending,
            InstanceStatus::Scheduled => CoreStatus::Scheduled,
            InstanceStatus::Creating => CoreStatus::Creating,
            InstanceStatus::Running => CoreStatus::Running,
            InstanceStatus::Paused => CoreStatus::Paused,
            InstanceStatus::Stopping => CoreStatus::Stopping,
            InstanceStatus::Stopped => CoreStatus::Stopped,
            InstanceStatus::Failed => CoreStatus::Failed,
            InstanceStatus::Deleting => CoreStatus::Deleting,
        }
    }
}

/// What the user wants an instance to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DesiredState {
    /// Running on a node.
    Running,
    /// Created on a node, not running.
    Stopped,
    /// Gone.
    Deleted,
}

impl From<core::DesiredState> for DesiredState {
    fn from(d: core::DesiredState) -> Self {
        match d {
            core::DesiredState::Running => DesiredState::Running,
            core::DesiredState::Stopped => DesiredState::Stopped,
            core::DesiredState::Deleted => DesiredState::Deleted,
        }
    }
}

/// Whether a node takes instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum NodeStatus {
    /// Takes new instances.
    Ready,
    /// Its agent stopped reporting.
    NotReady,
    /// Takes no new instances.
    Cordoned,
    /// Emptied for maintenance.
    Maintenance,
    /// Being emptied.
    Draining,
    /// Gone for good.
    Decommissioned,
    /// Joined; its smoke test has not passed yet. Takes no instances.
    Onboarding,
    /// Its smoke test failed (see the node's onboarding). Takes no instances.
    OnboardingFailed,
}

impl From<core::NodeStatus> for NodeStatus {
    fn from(s: core::NodeStatus) -> Self {
        match s {
            core::NodeStatus::Ready => NodeStatus::Ready,
            core::NodeStatus::NotReady => NodeStatus::NotReady,
            core::NodeStatus::Cordoned => NodeStatus::Cordoned,
            core::NodeStatus::Maintenance => NodeStatus::Maintenance,
            core::NodeStatus::Draining => NodeStatus::Draining,
            core::NodeStatus::Decommissioned => NodeStatus::Decommissioned,
            core::NodeStatus::Onboarding => NodeStatus::Onboarding,
            core::NodeStatus::OnboardingFailed => NodeStatus::OnboardingFailed,
        }
    }
}

/// When a create pulls the images its spec names by registry reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PullPolicy {
    /// Only what the node does not hold yet.
    Missing,
    /// On every create: a tag that moved gives its new digest.
    Always,
    /// Never: an image the node lacks fails the create (`FailedPrecondition`).
    Never,
}

impl From<core::PullPolicy> for PullPolicy {
    fn from(p: core::PullPolicy) -> Self {
        match p {
            core::PullPolicy::Missing => PullPolicy::Missing,
            core::PullPolicy::Always => PullPolicy::Always,
            core::PullPolicy::Never => PullPolicy::Never,
        }
    }
}

impl From<PullPolicy> for core::PullPolicy {
    fn from(p: PullPolicy) -> Self {
        match p {
            PullPolicy::Missing => core::PullPolicy::Missing,
            PullPolicy::Always => core::PullPolicy::Always,
            PullPolicy::Never => core::PullPolicy::Never,
        }
    }
}

/// What to run and with how much. A microVM names its `kernel` (an
/// absolute path on the node); a container its `image` and `command`.
#[derive(Debug, Clone, uniffi::Record)]
pub struct InstanceSpec {
    /// Which runtime runs it.
    pub instance_type: InstanceType,
    /// CPU in thousandths of a core (`250` is a quarter): a container's
    /// request, a VM's vCPUs (whole cores: a multiple of 1000).
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// An OCI image reference (containers) or a disk image (VMs).
    #[uniffi(default = None)]
    pub image: Option<String>,
    /// Disk in GiB.
    #[uniffi(default = 0)]
    pub disk_gib: u64,
    /// VMs only: the most vCPUs a live resize may give it, in thousandths
    /// of a core (whole cores); placement reserves `cpu_millis` only.
    #[uniffi(default = None)]
    pub max_cpu_millis: Option<u32>,
    /// VMs only: the most memory in MiB a live resize may give it;
    /// placement reserves `memory_mib` only.
    #[uniffi(default = None)]
    pub max_memory_mib: Option<u64>,
    /// The kernel to boot (VMs, microVMs).
    #[uniffi(default = None)]
    pub kernel: Option<String>,
    /// The initrd to boot with.
    #[uniffi(default = None)]
    pub initrd: Option<String>,
    /// The kernel command line.
    #[uniffi(default = None)]
    pub cmdline: Option<String>,
    /// Command and arguments (containers).
    #[uniffi(default = [])]
    pub command: Vec<String>,
    /// Names of the networks it joins, in interface order.
    #[uniffi(default = [])]
    pub networks: Vec<String>,
    /// Environment variables (containers).
    pub env: HashMap<String, String>,
    /// Only nodes declaring all these traits (`placement.required_traits`).
    #[uniffi(default = [])]
    pub required_traits: Vec<String>,
    /// Only nodes in every one of these host aggregates (`placement.aggregates`).
    #[uniffi(default = [])]
    pub aggregates: Vec<String>,
    /// When the create pulls `image`, `kernel` and `initrd` registry
    /// references; unset: `Missing`.
    #[uniffi(default = None)]
    pub pull: Option<PullPolicy>,
}

impl From<core::InstanceSpec> for InstanceSpec {
    fn from(s: core::InstanceSpec) -> Self {
        InstanceSpec {
            instance_type: s.instance_type.into(),
            cpu_millis: s.cpus.millis(),
            memory_mib: s.memory_mib,
            image: s.image,
            disk_gib: s.disk_gib,
            max_cpu_millis: s.max_cpus.map(core::Cpus::millis),
            max_memory_mib: s.max_memory_mib,
            kernel: s.kernel.map(|k| k.display().to_string()),
            initrd: s.initrd.map(|i| i.display().to_string()),
            cmdline: s.cmdline,
            command: s.command,
            networks: s.networks,
            env: s.env.into_iter().collect(),
            required_traits: s.placement.required_traits.into_iter().collect(),
            aggregates: s.placement.aggregates.into_iter().collect(),
            pull: Some(s.pull.into()),
        }
    }
}

/// A request to create an instance.
#[derive(Debug, Clone, uniffi::Record)]
pub struct CreateInstance {
    /// Unique name, a DNS label.
    pub name: String,
    /// What to run.
    pub spec: InstanceSpec,
    /// Labels to select it by.
    pub labels: HashMap<String, String>,
}

impl From<InstanceSpec> for core::InstanceSpec {
    /// The core's spec; the API validates it where it is used.
    fn from(s: InstanceSpec) -> Self {
        let mut spec = core::InstanceSpec::empty(s.instance_type.into(), 0, s.memory_mib);
        spec.cpus = core::Cpus::from_millis(s.cpu_millis);
        spec.image = s.image;
        spec.disk_gib = s.disk_gib;
        spec.max_cpus = s.max_cpu_millis.map(core::Cpus::from_millis);
        spec.max_memory_mib = s.max_memory_mib;
        spec.kernel = s.kernel.map(PathBuf::from);
        spec.initrd = s.initrd.map(PathBuf::from);
        spec.cmdline = s.cmdline;
        spec.command = s.command;
        spec.networks = s.networks;
        spec.env = s.env.into_iter().collect();
        spec.placement.required_traits = s.required_traits.into_iter().collect();
        spec.placement.aggregates = s.aggregates.into_iter().collect();
        spec.pull = s.pull.map(Into::into).unwrap_or_default();
        spec
    }
}

impl From<CreateInstance> for core::CreateInstance {
    /// The core's request; the API validates it when it is created.
    fn from(r: CreateInstance) -> Self {
        core::CreateInstance {
            name: r.name,
            labels: r.labels.into_iter().collect(),
            spec: r.spec.into(),
        }
    }
}

/// What one version of a template gives every instance made from it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct TemplateSpec {
    /// Labels every instance of the version gets.
    pub labels: HashMap<String, String>,
    /// What every instance of the version runs.
    pub spec: InstanceSpec,
}

impl From<TemplateSpec> for core::TemplateSpec {
    fn from(t: TemplateSpec) -> Self {
        core::TemplateSpec {
            labels: t.labels.into_iter().collect(),
            spec: t.spec.into(),
        }
    }
}

/// One version of a template and the instances made from it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct TemplateVersion {
    /// Its number: 1 for the first; never given out again.
    pub version: u32,
    /// Labels every instance of it gets.
    pub labels: HashMap<String, String>,
    /// What every instance of it runs.
    pub spec: InstanceSpec,
    /// When it was stored (RFC 3339).
    pub created_at: String,
    /// The instances made from it, in name order.
    pub instances: Vec<String>,
}

/// A template: its name and versions (or the one asked for), oldest first.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Template {
    /// Its name.
    pub name: String,
    /// Its versions, oldest first.
    pub versions: Vec<TemplateVersion>,
}

impl From<core::TemplateInfo> for Template {
    fn from(t: core::TemplateInfo) -> Self {
        Template {
            name: t.name.to_string(),
            versions: t
                .versions
                .into_iter()
                .map(|v| TemplateVersion {
                    version: v.version.version,
                    labels: v.version.labels.into_iter().collect(),
                    spec: v.version.spec.into(),
                    created_at: v.version.created_at.to_rfc3339(),
                    instances: v.instances,
                })
                .collect(),
        }
    }
}

pub(crate) fn templates(all: Vec<core::TemplateInfo>) -> Vec<Template> {
    all.into_iter().map(Into::into).collect()
}

/// Which instances `list_instances` returns; `None` and empty match everything.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct InstanceFilter {
    /// Only this type.
    #[uniffi(default = None)]
    pub instance_type: Option<InstanceType>,
    /// Only this status.
    #[uniffi(default = None)]
    pub status: Option<InstanceStatus>,
    /// Only instances on this node.
    #[uniffi(default = None)]
    pub node: Option<String>,
    /// Only instances carrying all these labels.
    pub labels: HashMap<String, String>,
}

impl From<InstanceFilter> for zixiao_core::InstanceFilter {
    fn from(f: InstanceFilter) -> Self {
        zixiao_core::InstanceFilter {
            instance_type: f.instance_type.map(Into::into),
            status: f.status.map(Into::into),
            node: f.node,
            labels: f.labels.into_iter().collect(),
        }
    }
}

/// An instance's place on one network.
#[derive(Debug, Clone, uniffi::Record)]
pub struct NetworkAttachment {
    /// The network.
    pub network: String,
    /// The interface inside the instance (`eth0`, ...).
    pub interface: String,
    /// Its MAC address.
    pub mac: String,
    /// Its addresses with their prefix length (`10.10.0.2/24`).
    pub addresses: Vec<String>,
    /// The gateway of each address, in the same order.
    pub gateways: Vec<String>,
}

impl From<core::NetworkAttachment> for NetworkAttachment {
    fn from(a: core::NetworkAttachment) -> Self {
        NetworkAttachment {
            addresses: a
                .addresses
                .iter()
                .map(|ip| format!("{}/{}", ip.address, ip.prefix_len))
                .collect(),
            gateways: a
                .addresses
                .iter()
                .map(|ip| ip.gateway.to_string())
                .collect(),
            network: a.network.into(),
            interface: a.interface,
            mac: a.mac,
        }
    }
}

/// An instance: identity, intent and what was observed.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Instance {
    /// Its id, fixed for its life.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// What it runs.
    pub spec: InstanceSpec,
    /// What is wanted of it.
    pub desired: DesiredState,
    /// What was last observed.
    pub status: InstanceStatus,
    /// The node it is placed on.
    pub node: Option<String>,
    /// The runtime (backend) running it on its node.
    pub runtime: Option<String>,
    /// Its network attachments, in interface order.
    pub attachments: Vec<NetworkAttachment>,
    /// The exit code when it ran to an end.
    pub exit_code: Option<i32>,
    /// Why it has not reached what is wanted, when something holds it up.
    pub problem: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The template version it was made from (`web@1`), if any.
    pub template: Option<String>,
    /// The id of the instance it was cloned from (`clone_instance`), if any.
    pub clone_of: Option<String>,
    /// The store revision of its last change.
    pub revision: u64,
}

impl From<core::Instance> for Instance {
    fn from(i: core::Instance) -> Self {
        Instance {
            problem: i.problem().map(str::to_owned),
            exit_code: i.exit.as_ref().map(|e| e.code),
            created_at: i.created_at.to_rfc3339(),
            id: i.id,
            name: i.name,
            labels: i.labels.into_iter().collect(),
            spec: i.spec.into(),
            desired: i.desired.into(),
            status: i.status.into(),
            node: i.node,
            runtime: i.runtime,
            attachments: i.attachments.into_iter().map(Into::into).collect(),
            template: i.template.as_ref().map(ToString::to_string),
            clone_of: i.clone_of.map(|o| o.source.to_string()),
            revision: i.revision,
        }
    }
}

pub(crate) fn instances(all: Vec<core::Instance>) -> Vec<Instance> {
    all.into_iter().map(Into::into).collect()
}

/// One page of instances and where the next starts.
#[derive(Debug, Clone, uniffi::Record)]
pub struct InstancePage {
    /// The instances, in name order.
    pub instances: Vec<Instance>,
    /// Pass to `list_instances_page` for the next page; `None` after the last.
    pub next_page_token: Option<String>,
}

impl From<zixiao_core::api::InstancePage> for InstancePage {
    fn from(page: zixiao_core::api::InstancePage) -> Self {
        InstancePage {
            instances: instances(page.instances),
            next_page_token: page.next_page.map(String::from),
        }
    }
}

/// What to do when an instance's workload exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RestartPolicy {
    /// Leave it stopped.
    Never,
    /// Restart it when it exits with a failure.
    OnFailure,
    /// Always restart it.
    Always,
}

impl From<RestartPolicy> for core::RestartPolicy {
    fn from(p: RestartPolicy) -> Self {
        match p {
            RestartPolicy::Never => core::RestartPolicy::Never,
            RestartPolicy::OnFailure => core::RestartPolicy::OnFailure,
            RestartPolicy::Always => core::RestartPolicy::Always,
        }
    }
}

/// A change to an instance: labels, restart policy, size. What is `None`
/// or empty stays as it is.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct InstanceUpdate {
    /// Labels to add or replace.
    pub set_labels: HashMap<String, String>,
    /// Label keys to remove.
    #[uniffi(default = [])]
    pub remove_labels: Vec<String>,
    /// The new restart policy.
    #[uniffi(default = None)]
    pub restart: Option<RestartPolicy>,
    /// The new CPU in thousandths of a core.
    #[uniffi(default = None)]
    pub cpu_millis: Option<u32>,
    /// The new memory in MiB.
    #[uniffi(default = None)]
    pub memory_mib: Option<u64>,
    /// A VM's new disk size in GiB (disks only grow).
    #[uniffi(default = None)]
    pub disk_gib: Option<u64>,
    /// Whether a running instance whose runtime cannot resize live may be
    /// restarted to take the new size (otherwise `FailedPrecondition`).
    #[uniffi(default = false)]
    pub restart_if_needed: bool,
    /// How often the snapshot schedule snapshots, in seconds (at least 60).
    #[uniffi(default = None)]
    pub snapshot_every_seconds: Option<u64>,
    /// How many scheduled snapshots stay (at least 1).
    #[uniffi(default = None)]
    pub snapshot_keep: Option<u32>,
    /// Removes the snapshot schedule (its snapshots stay).
    #[uniffi(default = false)]
    pub clear_snapshot_schedule: bool,
}

impl TryFrom<InstanceUpdate> for zixiao_core::InstanceUpdate {
    type Error = zixiao_core::Error;

    /// Errors: `InvalidArgument` naming `snapshot_every` or `snapshot_keep`.
    fn try_from(u: InstanceUpdate) -> Result<Self, zixiao_core::Error> {
        Ok(zixiao_core::InstanceUpdate {
            set_labels: u.set_labels.into_iter().collect(),
            remove_labels: u.remove_labels.into_iter().collect(),
            restart: u.restart.map(Into::into),
            cpus: u.cpu_millis.map(zixiao_core::Cpus::from_millis),
            cpu_limit: None,
            memory_mib: u.memory_mib,
            memory_limit_mib: None,
            disk_gib: u.disk_gib,
            restart_if_needed: u.restart_if_needed,
            snapshot_every: u
                .snapshot_every_seconds
                .map(|s| std::time::Duration::from_secs(s).try_into())
                .transpose()?,
            snapshot_keep: u.snapshot_keep.map(TryInto::try_into).transpose()?,
            clear_snapshot_schedule: u.clear_snapshot_schedule,
        })
    }
}

/// Amounts of what nodes offer and instances take.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
    /// Instances.
    pub instances: u32,
}

impl From<core::Resources> for Resources {
    fn from(r: core::Resources) -> Self {
        Resources {
            cpu_millis: r.cpus.millis(),
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
            instances: r.instances,
        }
    }
}

/// A machine that runs instances.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Node {
    /// Its id.
    pub id: String,
    /// Its hostname.
    pub hostname: String,
    /// Where its agent is reached.
    pub address: String,
    /// Its region.
    pub region: String,
    /// Its zone.
    pub zone: String,
    /// Whether it takes instances.
    pub status: NodeStatus,
    /// What it offers.
    pub capacity: Resources,
    /// What its instances take.
    pub allocated: Resources,
    /// The labels placement matches: `reported` and `operator` merged.
    pub labels: HashMap<String, String>,
    /// The traits placement matches: `reported` and `operator` merged.
    pub traits: Vec<String>,
    /// What its agent reported: read-only.
    pub reported: NodeMetadata,
    /// What operators declared (`label_node`, `add_node_traits`); kept
    /// when its agent registers again.
    pub operator: NodeMetadata,
    /// The instance types it runs.
    pub runtimes: Vec<InstanceType>,
    /// Why it runs none of the other types, by type name.
    pub missing_runtimes: HashMap<String, String>,
}

impl From<core::Node> for Node {
    fn from(n: core::Node) -> Self {
        Node {
            id: n.id,
            hostname: n.hostname,
            address: n.address,
            region: n.region,
            zone: n.zone,
            status: n.status.into(),
            capacity: n.capacity.into(),
            allocated: n.allocated.into(),
            labels: n.labels.into_iter().collect(),
            traits: n.traits.into_iter().collect(),
            reported: n.reported.into(),
            operator: n.operator.into(),
            runtimes: n.runtimes.into_iter().map(Into::into).collect(),
            missing_runtimes: n
                .missing_runtimes
                .into_iter()
                .map(|(t, why)| (t.as_str().to_owned(), why))
                .collect(),
        }
    }
}

pub(crate) fn nodes(all: Vec<core::Node>) -> Vec<Node> {
    all.into_iter().map(Into::into).collect()
}

/// Labels and traits from one source: a node's agent, or its operators.
#[derive(Debug, Clone, uniffi::Record)]
pub struct NodeMetadata {
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Traits, in name order.
    pub traits: Vec<String>,
}

impl From<core::NodeMetadata> for NodeMetadata {
    fn from(m: core::NodeMetadata) -> Self {
        NodeMetadata {
            labels: m.labels.into_iter().collect(),
            traits: m.traits.into_iter().collect(),
        }
    }
}

/// A host aggregate: a named group of nodes with metadata, which instances
/// require by name or by metadata.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Aggregate {
    /// Its name.
    pub name: String,
    /// Its metadata.
    pub metadata: HashMap<String, String>,
    /// The ids of its nodes, in order.
    pub nodes: Vec<String>,
}

impl From<core::Aggregate> for Aggregate {
    fn from(a: core::Aggregate) -> Self {
        Aggregate {
            name: a.name.into(),
            metadata: a
                .metadata
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            nodes: a.nodes.into_iter().collect(),
        }
    }
}

pub(crate) fn aggregates(all: Vec<core::Aggregate>) -> Vec<Aggregate> {
    all.into_iter().map(Into::into).collect()
}

/// A request to create a network.
#[derive(Debug, Clone, uniffi::Record)]
pub struct CreateNetwork {
    /// Unique name, a DNS label.
    pub name: String,
    /// CIDR prefixes, at most one IPv4 and one IPv6 (`10.10.0.0/24`).
    pub subnets: Vec<String>,
    /// At most one per subnet; default: each subnet's first usable address.
    #[uniffi(default = [])]
    pub gateways: Vec<String>,
    /// Addresses or prefixes never handed out.
    #[uniffi(default = [])]
    pub reserved: Vec<String>,
    /// Masquerade traffic leaving the subnets.
    #[uniffi(default = true)]
    pub nat: bool,
    /// Drop traffic to and from other Zixiao networks.
    #[uniffi(default = true)]
    pub isolated: bool,
    /// Its VXLAN network identifier between nodes (derived when absent).
    #[uniffi(default = None)]
    pub vni: Option<u32>,
}

impl From<CreateNetwork> for CoreCreateNetwork {
    fn from(r: CreateNetwork) -> Self {
        CoreCreateNetwork {
            name: r.name,
            subnets: r.subnets,
            gateways: r.gateways,
            reserved: r.reserved,
            nat: r.nat,
            isolated: r.isolated,
            vni: r.vni,
        }
    }
}

/// One subnet of a network.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Subnet {
    /// Its prefix (`10.10.0.0/24`).
    pub cidr: String,
    /// Its gateway.
    pub gateway: String,
    /// Prefixes never handed out.
    pub reserved: Vec<String>,
}

/// A network: a bridge on every node with its subnets.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// Its subnets.
    pub subnets: Vec<Subnet>,
    /// The bridge's name on every node.
    pub bridge: String,
    /// Whether traffic leaving the subnets is masqueraded.
    pub nat: bool,
    /// Whether traffic to other networks is dropped.
    pub isolated: bool,
    /// Its VXLAN network identifier between nodes; none for a network
    /// stored before VNIs.
    pub vni: Option<u32>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl From<core::Network> for Network {
    fn from(n: core::Network) -> Self {
        Network {
            name: n.name.into(),
            subnets: n
                .subnets
                .into_iter()
                .map(|s| Subnet {
                    cidr: s.cidr.to_string(),
                    gateway: s.gateway.to_string(),
                    reserved: s.reserved.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            bridge: n.bridge.into(),
            nat: n.nat,
            isolated: n.isolated,
            vni: n.vni.map(|v| v.get()),
            created_at: n.created_at.to_rfc3339(),
        }
    }
}

pub(crate) fn networks(all: Vec<core::Network>) -> Vec<Network> {
    all.into_iter().map(Into::into).collect()
}

/// One part of a network on a node.
#[derive(Debug, Clone, uniffi::Record)]
pub struct NetworkPart {
    /// `bridge`, `vxlan`, `peers`, `rules`, `dhcp` or `links`.
    pub kind: String,
    /// `ok`, `missing`, `drifted` or `not_needed`.
    pub state: String,
    /// What is there, or what is missing or wrong.
    pub detail: String,
}

/// A network on one node.
#[derive(Debug, Clone, uniffi::Record)]
pub struct NodeNetworkState {
    /// The node's id.
    pub node: String,
    /// Its parts; empty when `error` is set.
    pub parts: Vec<NetworkPart>,
    /// Why the node could not be asked, if it could not.
    pub error: Option<String>,
}

/// A network and its state on every node that sets up networks.
#[derive(Debug, Clone, uniffi::Record)]
pub struct NetworkStatus {
    /// The network.
    pub network: Network,
    /// Its state per node.
    pub nodes: Vec<NodeNetworkState>,
    /// What a repair mended, per node (`node: what`).
    pub repaired: Vec<String>,
}

impl From<core::NetworkStatus> for NetworkStatus {
    fn from(s: core::NetworkStatus) -> Self {
        NetworkStatus {
            network: s.network.into(),
            nodes: s
                .nodes
                .into_iter()
                .map(|n| NodeNetworkState {
                    node: n.node,
                    parts: n
                        .parts
                        .into_iter()
                        .map(|p| NetworkPart {
                            kind: p.kind.as_str().to_owned(),
                            state: p.state.as_str().to_owned(),
                            detail: p.detail,
                        })
                        .collect(),
                    error: n.error,
                })
                .collect(),
            repaired: s.repaired,
        }
    }
}

/// Resource usage of one instance.
#[derive(Debug, Clone, uniffi::Record)]
pub struct InstanceStats {
    /// CPU time used, in nanoseconds.
    pub cpu_time_ns: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// The memory limit, in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Processes (containers) or vCPUs (VMs).
    pub pids: Option<u64>,
    /// Bytes read from disk.
    pub disk_read_bytes: Option<u64>,
    /// Bytes written to disk.
    pub disk_write_bytes: Option<u64>,
    /// Bytes received on the network.
    pub net_rx_bytes: Option<u64>,
    /// Bytes sent on the network.
    pub net_tx_bytes: Option<u64>,
}

impl From<zixiao_core::InstanceStats> for InstanceStats {
    fn from(s: zixiao_core::InstanceStats) -> Self {
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

/// A piece of an instance's log.
#[derive(Debug, Clone, uniffi::Record)]
pub struct LogChunk {
    /// The bytes read.
    pub data: Vec<u8>,
    /// Where the next read continues.
    pub next_offset: u64,
}

/// One sample of a server's stats history of an instance.
#[derive(Debug, Clone, uniffi::Record)]
pub struct StatsSample {
    /// When it was taken (RFC 3339).
    pub at: String,
    /// The usage then; counters are totals since the instance started.
    pub stats: InstanceStats,
}

/// Samples as the binding shows them.
pub(crate) fn samples(samples: Vec<zixiao_core::api::StatsSample>) -> Vec<StatsSample> {
    samples
        .into_iter()
        .map(|s| StatsSample {
            at: s.at.to_rfc3339(),
            stats: s.stats.into(),
        })
        .collect()
}

/// One sample of what a node's instances used together, and of what its
/// whole host used.
#[derive(Debug, Clone, uniffi::Record)]
pub struct NodeUsageSample {
    /// When it was taken (RFC 3339).
    pub at: String,
    /// How many of its instances were sampled.
    pub instances: u32,
    /// CPU used since the sample before, in thousandths of a core.
    pub cpu_millicores: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// CPU the whole host used, in thousandths of a core; `None`: unknown.
    pub host_cpu_millicores: Option<u64>,
    /// The host's online CPUs, in thousandths of a core; `None`: unknown.
    pub host_cpu_capacity_millicores: Option<u64>,
    /// Memory the whole host uses, in bytes; `None`: unknown.
    pub host_memory_bytes: Option<u64>,
    /// The host's memory, in bytes; `None`: unknown.
    pub host_memory_capacity_bytes: Option<u64>,
    /// The host's one-minute load average; `None`: unknown.
    pub host_load1: Option<f64>,
}

/// Node samples as the binding shows them.
pub(crate) fn node_samples(
    samples: Vec<zixiao_core::api::NodeUsageSample>,
) -> Vec<NodeUsageSample> {
    samples
        .into_iter()
        .map(|s| NodeUsageSample {
            at: s.at.to_rfc3339(),
            instances: s.instances,
            cpu_millicores: s.cpu_millicores,
            memory_bytes: s.memory_bytes,
            host_cpu_millicores: s.host_cpu_millicores,
            host_cpu_capacity_millicores: s.host_cpu_capacity_millicores,
            host_memory_bytes: s.host_memory_bytes,
            host_memory_capacity_bytes: s.host_memory_capacity_bytes,
            host_load1: s.host_load1,
        })
        .collect()
}

impl From<zixiao_core::LogChunk> for LogChunk {
    fn from(c: zixiao_core::LogChunk) -> Self {
        LogChunk {
            data: c.data,
            next_offset: c.next_offset,
        }
    }
}

/// An image a node's runtime holds.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Image {
    /// Its name, as instances refer to it.
    pub name: String,
    /// The digest of its manifest or index.
    pub digest: String,
    /// Its size in bytes.
    pub size_bytes: u64,
}

impl From<zixiao_core::driver::ImageInfo> for Image {
    fn from(i: zixiao_core::driver::ImageInfo) -> Self {
        Image {
            name: i.name,
            digest: i.digest,
            size_bytes: i.size_bytes,
        }
    }
}

pub(crate) fn images(all: Vec<zixiao_core::driver::ImageInfo>) -> Vec<Image> {
    all.into_iter().map(Image::from).collect()
}
