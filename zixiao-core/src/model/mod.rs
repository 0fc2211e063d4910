//! The domain model: nodes, instances, their specs and the resources they
//! count in. Plain serde data; [`CreateInstance::validate`] and
//! [`NodeRegistration::validate`] reject invalid input with the field named.

mod instance;
mod network;
mod node;
mod resources;
mod spec;
mod validate;

pub use instance::{
    Condition, ConditionType, DesiredState, ExitStatus, Failure, Instance, InstanceId,
    InstanceStatus,
};
pub use network::{
    bridge_name, from_u128, host_interface_name, mac_address, to_u128, Cidr, CreateNetwork,
    IpConfig, Network, NetworkAttachment, Subnet, BRIDGE_PREFIX, HOST_NAME_PREFIX,
    MAX_INTERFACE_NAME, TAP_PREFIX, VETH_PREFIX,
};
pub use node::{Node, NodeId, NodeRegistration, NodeRole, NodeStatus, OrphanSweep};
pub use resources::Resources;
pub use spec::{
    CreateInstance, InstanceSpec, InstanceType, MicrovmBackend, Placement, RestartPolicy,
};
pub use validate::{validate_label_key, validate_name, MAX_CPUS, MAX_MEMORY_MIB, MIN_MEMORY_MIB};
