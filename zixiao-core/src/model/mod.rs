//! The domain model: nodes, instances, their specs and the resources they
//! count in. Plain serde data; [`CreateInstance::validate`] and
//! [`NodeRegistration::validate`] reject invalid input with the field named.

mod instance;
mod node;
mod resources;
mod spec;
mod validate;

pub use instance::{
    Condition, ConditionType, DesiredState, ExitStatus, Instance, InstanceId, InstanceStatus,
};
pub use node::{Node, NodeId, NodeRegistration, NodeRole, NodeStatus};
pub use resources::Resources;
pub use spec::{
    CreateInstance, InstanceSpec, InstanceType, MicrovmBackend, Placement, RestartPolicy,
};
pub use validate::{validate_label_key, validate_name, MAX_CPUS, MAX_MEMORY_MIB, MIN_MEMORY_MIB};
