//! Container networking: before a container with network attachments is
//! created, zixiao-net pins a network namespace for it with one veth per
//! attachment (address, MAC and default route inside), and the OCI spec's
//! network namespace points at that path, which runc joins. Delete removes
//! the namespace and the host-side veths.
//!
//! Published ports (see `crate::net`) are checked free when the container
//! is created, forwarded at each start before its task runs, and removed
//! at stop and delete.

use std::path::Path;

use serde_json::{json, Value};
use zixiao_core::{DriverError, Instance, NetworkAttachment};

use crate::net;

use super::ContainerdDriver;

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
            .map_err(|e| net::net_error("attach the container's network", e))?;
        join_netns(spec, &path);
        Ok(())
    }

    /// Removes what [`ContainerdDriver::attach_network`] and
    /// [`ContainerdDriver::publish_ports`] made. Idempotent.
    pub(super) async fn detach_network(&self, instance: &Instance) -> Result<(), DriverError> {
        self.unpublish_ports(&instance.id, &instance.attachments)
            .await?;
        match &self.network {
            Some(network) if !instance.attachments.is_empty() => network
                .detach_container(&instance.id, &instance.attachments)
                .await
                .map_err(|e| net::net_error("detach the container's network", e)),
            _ => Ok(()),
        }
    }

    /// See `crate::net::check_ports`: what a create checks before it
    /// writes anything.
    pub(super) async fn check_ports(&self, instance: &Instance) -> Result<(), DriverError> {
        net::check_ports(self.network.as_ref(), instance, DRIVER).await
    }

    /// See `crate::net::publish_ports`: at each start, before the task runs.
    pub(super) async fn publish_ports(&self, instance: &Instance) -> Result<(), DriverError> {
        net::publish_ports(self.network.as_ref(), instance, DRIVER).await
    }

    /// See `crate::net::unpublish_ports`: at a stop, a delete, an
    /// orphan's removal.
    pub(super) async fn unpublish_ports(
        &self,
        id: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<(), DriverError> {
        net::unpublish_ports(self.network.as_ref(), id, attachments).await
    }
}

/// The driver, as messages name it.
const DRIVER: &str = "container driver";
