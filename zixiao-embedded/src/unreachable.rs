//! A runtime this node's instances use but that cannot be reached now
//! (containerd stopped, `--containerd-socket` pointing elsewhere, libvirtd
//! down). Without a driver for their type, the controller would take such
//! instances for never created: a delete would drop the record and leave
//! the container running. [`UnreachableRuntime`] stands in for the driver
//! and answers every call `Unavailable`, so intents are recorded and wait
//! for the runtime; the node still offers no such runtime for new
//! instances (see `open_with_agent`).

use std::time::Duration;

use async_trait::async_trait;
use zixiao_core::{Driver, DriverError, Instance, InstanceType, LogChunk, RuntimeState};

/// The stand-in driver of one instance type whose runtime is unreachable.
#[derive(Debug)]
pub(crate) struct UnreachableRuntime {
    instance_type: InstanceType,
    /// Why it is unreachable, as discovery said.
    reason: String,
}

impl UnreachableRuntime {
    pub(crate) fn new(instance_type: InstanceType, reason: impl Into<String>) -> Self {
        UnreachableRuntime {
            instance_type,
            reason: reason.into(),
        }
    }

    fn unavailable(&self) -> DriverError {
        DriverError::Unavailable {
            runtime: self.name().to_owned(),
            source: self.reason.clone().into(),
        }
    }
}

#[async_trait]
impl Driver for UnreachableRuntime {
    fn instance_type(&self) -> InstanceType {
        self.instance_type
    }

    fn name(&self) -> &str {
        match self.instance_type {
            InstanceType::Container => "containerd",
            InstanceType::Vm => "libvirt",
            InstanceType::Microvm => "the microVM monitor",
        }
    }

    async fn create(&self, _: &Instance) -> Result<(), DriverError> {
        Err(self.unavailable())
    }

    async fn start(&self, _: &Instance) -> Result<(), DriverError> {
        Err(self.unavailable())
    }

    async fn stop(&self, _: &Instance, _: Duration) -> Result<(), DriverError> {
        Err(self.unavailable())
    }

    async fn delete(&self, _: &Instance) -> Result<(), DriverError> {
        Err(self.unavailable())
    }

    async fn inspect(&self, _: &Instance) -> Result<RuntimeState, DriverError> {
        Err(self.unavailable())
    }

    async fn read_log(&self, _: &Instance, _: u64, _: usize) -> Result<LogChunk, DriverError> {
        Err(self.unavailable())
    }
}
