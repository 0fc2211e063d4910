//! Zixiao's core: the domain model, validation, error kinds, the small traits
//! every layer implements, the [`Controller`] that ties them together, and
//! the one user-facing [`Api`] that every frontend calls through a [`Client`].
//!
//! The dependency arrows of the workspace point here: store backends
//! (`zixiao-store`), schedulers (`zixiao-sched`) and runtime drivers
//! (`zixiao-drivers`) implement the traits of this crate; the [`Controller`]
//! implements the [`Api`] in-process and `zixiao-api` over gRPC, and
//! frontends (the CLI, the bindings, the server) hold a [`Client`] of either.
//!
//! ```
//! use zixiao_core::{CreateInstance, InstanceSpec, InstanceType};
//!
//! let request = CreateInstance::new(
//!     "web",
//!     InstanceSpec::container("busybox").with_command(["echo", "hi"]),
//! );
//! request.validate().expect("a valid request");
//! assert_eq!(request.spec.instance_type, InstanceType::Container);
//! ```

pub mod agent;
pub mod api;
pub mod clock;
pub mod controller;
pub mod driver;
pub mod error;
pub mod files;
pub mod host;
pub mod host_usage;
pub mod instance_locks;
pub mod keyed_lock;
pub mod model;
pub mod scheduler;
pub mod store;
pub mod telemetry;

pub use agent::{LocalAgent, NodeAgent, NodeFacts};
pub use api::{Api, Client, Wait};
pub use clock::{Clock, SystemClock};
pub use controller::{
    AddressAllocator, ClusterInfo, Controller, ControllerBuilder, EventKind, InstanceEvent,
    InstanceFilter, NetworkHost, NodeEvent, OperationFilter,
};
pub use driver::{
    Capability, Driver, DriverError, DriverInfo, InstanceStats, LogChunk, RuntimeState,
};
pub use error::{Error, ErrorKind, Result};
pub use instance_locks::{InstanceHold, InstanceLocks};
pub use keyed_lock::{KeyGuard, KeyedLock};
pub use model::{
    AllocationRatio, AllocationRatios, Condition, ConditionType, Cpus, CreateInstance,
    DesiredState, ImageRef, Instance, InstanceId, InstanceSpec, InstanceStatus, InstanceType,
    InstanceUpdate, MicrovmBackend, MigrationMode, Network, NetworkAttachment, Node, NodeId,
    NodeRegistration, NodeRole, NodeStatus, Operation, OperationId, OperationKind, OperationPhase,
    Placement, PublishedPort, Resources, RestartPolicy,
};
pub use scheduler::{Rejection, Scheduler, SchedulingContext, Unschedulable};
pub use store::{Store, StoreError};

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
