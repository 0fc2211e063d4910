//! Container networking: before a container with network attachments is
//! created, zixiao-net pins a network namespace for it with one veth per
//! attachment (address, MAC and default route inside), and the OCI spec's
//! network namespace points at that path, which runc joins. Delete removes
//! the namespace and the host-side veths.

use std::path::Path;

use serde_json::{json, Value};
use zixiao_core::{DriverError, ErrorKind, Instance};

use super::ContainerdDriver;

/// A zixiao-net error as a driver error of the same kind.
pub(super) fn driver_error(operation: &str, error: zixiao_core::Error) -> DriverError {
    let message = format!("{operation}: {}", error.chain());
    match error.kind() {
        ErrorKind::Unsupported => DriverError::Unsupported(message),
        ErrorKind::FailedPrecondition => DriverError::FailedPrecondition(message),
        ErrorKind::InvalidArgument => crate::errors::invalid("attachments", message),
        _ => DriverError::Runtime {
            operation: operation.to_owned(),
            source: Box::new(error),
        },
    }
}

/// Points the spec's network namespace at `path` instead of a new empty one.
pub(crate) fn join_netns(spec: &mut Value, path: &Path) {
    let entry = json!({ "type": "network", "path": path.to_string_lossy() });
    match spec["linux"]["namespaces"].as_array_mut() {
        Some(namespaces) => {
            namespaces.retain(|ns| ns["type"] != "network");
            namespaces.push(entry);
        }
        None => spec["linux"]["namespaces"] = json!([entry]),
    }
}

impl ContainerdDriver {
    /// Plumbs `instance`'s attachments and points `spec` at its namespace;
    /// nothing to do without attachments. Errors: `Unsupported` (this driver
    /// has no host network, or no privileges), `FailedPrecondition` (a
    /// network is not set up on this node).
    pub(super) async fn attach_network(
        &self,
        instance: &Instance,
        spec: &mut Value,
    ) -> Result<(), DriverError> {
        if instance.attachments.is_empty() {
            return Ok(());
        }
        let network = self.network.as_ref().ok_or_else(|| {
            DriverError::Unsupported(format!(
                "instance `{}` joins networks, but this node's container driver has no host network",
                instance.name
            ))
        })?;
        let path = network
            .attach_container(&instance.id, &instance.attachments)
            .await
            .map_err(|e| driver_error("attach the container's network", e))?;
        join_netns(spec, &path);
        Ok(())
    }

    /// Removes what [`ContainerdDriver::attach_network`] made. Idempotent.
    pub(super) async fn detach_network(&self, instance: &Instance) -> Result<(), DriverError> {
        match &self.network {
            Some(network) if !instance.attachments.is_empty() => network
                .detach_container(&instance.id, &instance.attachments)
                .await
                .map_err(|e| driver_error("detach the container's network", e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_netns_replaces_the_new_network_namespace() {
        let mut spec =
            json!({ "linux": { "namespaces": [{ "type": "pid" }, { "type": "network" }] } });
        join_netns(&mut spec, Path::new("/run/zixiao/netns/zx-1"));
        assert_eq!(
            spec["linux"]["namespaces"],
            json!([{ "type": "pid" }, { "type": "network", "path": "/run/zixiao/netns/zx-1" }])
        );
    }
}
