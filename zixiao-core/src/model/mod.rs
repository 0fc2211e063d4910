//! The domain model: nodes, instances, their specs and the resources they
//! count in. Plain serde data; [`CreateInstance::validate`] and
//! [`NodeRegistration::validate`] reject invalid input with the field named.

mod clone;
mod cloud_init;
mod cpus;
mod disk;
mod image_ref;
mod instance;
mod instance_uuid;
mod metadata;
mod migration;
mod network;
mod node;
mod node_image;
mod operation;
mod publish;
mod pull_policy;
mod resources;
mod snapshot_schedule;
mod spec;
mod template;
mod update;
mod validate;
mod vsock;

pub use clone::{check_clone, CloneOrigin, SnapshotName};
pub use cloud_init::{CloudInit, MAX_CLOUD_INIT_BYTES, MAX_SSH_KEYS};
pub use cpus::{AllocationRatio, AllocationRatios, Cpus, InvalidAmount};
pub use disk::{disk_field, DiskSpec, MAX_DISKS};
pub use image_ref::{
    is_loopback_host, is_sha256_digest, ImageName, ImageRef, ImageRefPart, InvalidImageRef,
    DEFAULT_REGISTRY, DEFAULT_TAG,
};
pub use instance::{
    Condition, ConditionType, DesiredState, ExitStatus, Failure, Instance, InstanceId,
    InstanceStatus, RuntimeSize,
};
pub use instance_uuid::InstanceUuid;
pub use metadata::{
    typed_metadata, Aggregate, AggregateName, CarbonIntensity, LabelChanges, LabelKey, LabelValue,
    NodeMetadata, TraitChanges, TraitName, AGGREGATES_PREFIX, MAX_CARBON_INTENSITY,
};
pub use migration::MigrationMode;
pub use network::{
    from_u128, is_underlay_address, mac_address, mac_octets, to_u128, BridgeName, Cidr,
    CreateNetwork, HostMark, InstallationId, InterfaceKind, InterfaceName, InvalidName, IpConfig,
    MacAddress, Network, NetworkAttachment, NetworkName, NetworkPart, NetworkPartKind,
    NetworkStatus, NodeNetworkState, OverlayEndpoint, OverlayView, PartState, Subnet, TemplateName,
    Vni, BRIDGE_PREFIX, HOST_NAME_PREFIX, MAX_INTERFACE_NAME, MAX_VNI, SLAAC_PREFIX_LEN,
    TAP_PREFIX, VETH_PREFIX,
};
pub use node::{
    CheckOutcome, Node, NodeId, NodeRegistration, NodeRole, NodeStatus, Onboarding,
    OnboardingState, OrphanSweep, RuntimeCheck, SmokeStep, MAX_NODE_IMAGES,
};
pub use node_image::{
    held_image_names, node_files, refuse_host_paths, refuse_host_paths_because, uses_node_image,
    HostPathRefusal, ImageKind, NodeFile, NodeImageName, SpecFile, MAX_NODE_IMAGE_NAME,
};
pub use operation::{
    Operation, OperationError, OperationId, OperationKind, OperationPhase, OperationProgress,
    OperationTarget, TargetKind, MAX_OPERATION_STEPS,
};
pub use publish::{check_targets, PortProtocol, PublishedPort};
pub use pull_policy::PullPolicy;
pub use resources::Resources;
pub use snapshot_schedule::{
    check_hand_made_name, parse_duration, scheduled_at, scheduled_name, to_prune,
    ScheduledSnapshot, SnapshotInterval, SnapshotKeep, SnapshotSchedule, MAX_SNAPSHOT_INTERVAL,
    MAX_SNAPSHOT_KEEP, MIN_SNAPSHOT_INTERVAL, SCHEDULED_PREFIX,
};
pub use spec::{
    CreateInstance, InstanceSpec, InstanceType, MicrovmBackend, Placement, RestartPolicy,
};
pub use template::{
    FromTemplate, SpecOverride, Template, TemplateInfo, TemplateOrigin, TemplateRef, TemplateSpec,
    TemplateVersion, TemplateVersionInfo, TEMPLATES_PREFIX,
};
pub use update::InstanceUpdate;
pub use validate::{validate_label_key, validate_name, MAX_CPUS, MAX_MEMORY_MIB, MIN_MEMORY_MIB};
pub use vsock::{GuestCid, VsockEndpoint, VsockSpec};
