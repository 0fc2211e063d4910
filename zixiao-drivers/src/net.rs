//! What the drivers whose instances sit on zixiao-net's devices
//! (containers' veths, QEMU microVMs' TAPs) share: zixiao-net errors as
//! driver errors, and published ports (see `zixiao_net::ports`): checked
//! free at create, before anything is written; forwarded at each start,
//! before the workload runs (a port may have been taken since the create);
//! removed at stop, delete and orphan removal, so a stopped instance holds
//! no rule on its node (the controller still counts its host ports as
//! taken, so it can start again).

use zixiao_core::{DriverError, ErrorKind, Instance, NetworkAttachment};
use zixiao_net::LinuxNetwork;

/// A zixiao-net error as a driver error of the same kind. An invalid
/// argument keeps its field when it names one of the spec's
/// (`spec.publish[1]`), and is on `attachments` otherwise.
pub(crate) fn net_error(operation: &str, error: zixiao_core::Error) -> DriverError {
    if let zixiao_core::Error::InvalidArgument { field, reason } = &error {
        if field.starts_with("spec.") {
            return crate::errors::invalid(field, reason.clone());
        }
    }
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

/// The host network that publishes `instance`'s ports (`driver` names the
/// node's driver, for the message); `None` when it publishes none.
/// Errors: `Unsupported` (the driver has no host network).
fn publishing<'a>(
    network: Option<&'a LinuxNetwork>,
    instance: &Instance,
    driver: &str,
) -> Result<Option<&'a LinuxNetwork>, DriverError> {
    if instance.spec.publish.is_empty() {
        return Ok(None);
    }
    network.map(Some).ok_or_else(|| {
        DriverError::Unsupported(format!(
            "spec.publish: instance `{}` publishes ports, but this node's {driver} has no host \
             network",
            instance.name
        ))
    })
}

/// Checks, changing nothing, that `instance`'s ports can be published on
/// this node. Errors: as [`publish_ports`].
pub(crate) async fn check_ports(
    network: Option<&LinuxNetwork>,
    instance: &Instance,
    driver: &str,
) -> Result<(), DriverError> {
    let Some(network) = publishing(network, instance, driver)? else {
        return Ok(());
    };
    network
        .check_ports(&instance.id, &instance.attachments, &instance.spec.publish)
        .await
        .map(|_| ())
        .map_err(|e| net_error("check the published ports", e))
}

/// Forwards `instance`'s published ports to its address on its first
/// network, replacing what it published before. Nothing to do without
/// published ports. Errors: `FailedPrecondition` naming what holds a host
/// port (another instance's published port, a process's socket),
/// `InvalidArgument` (`spec.publish[i]` has no address of its family to
/// lead to), `Unsupported` (no host network, no `nft`, no privileges).
pub(crate) async fn publish_ports(
    network: Option<&LinuxNetwork>,
    instance: &Instance,
    driver: &str,
) -> Result<(), DriverError> {
    let Some(network) = publishing(network, instance, driver)? else {
        return Ok(());
    };
    network
        .publish_ports(&instance.id, &instance.attachments, &instance.spec.publish)
        .await
        .map_err(|e| net_error("publish the ports", e))
}

/// Removes the published ports of instance `id` (with `attachments`).
/// Idempotent.
pub(crate) async fn unpublish_ports(
    network: Option<&LinuxNetwork>,
    id: &str,
    attachments: &[NetworkAttachment],
) -> Result<(), DriverError> {
    match network {
        Some(network) => network
            .unpublish_ports(id, attachments)
            .await
            .map_err(|e| net_error("remove the published ports", e)),
        None => Ok(()),
    }
}

/// [`unpublish_ports`] of `instance` at a stop: nothing to do (no `nft`
/// run) when its spec publishes nothing, as it then never published.
pub(crate) async fn unpublish_instance(
    network: Option<&LinuxNetwork>,
    instance: &Instance,
) -> Result<(), DriverError> {
    if instance.spec.publish.is_empty() {
        return Ok(());
    }
    unpublish_ports(network, &instance.id, &instance.attachments).await
}
