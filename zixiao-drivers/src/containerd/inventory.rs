//! What the container driver holds on this node, by instance id, for the
//! orphan sweep: in the driver's containerd namespace the containers, their
//! tasks, the active rootfs snapshots (key = id) and the leases of creates
//! cut off (labelled with the id); and the instance directories under
//! `<state_dir>/containerd/<namespace>/`, written before any of those and
//! removed after them. Only names with such a directory are this
//! installation's: another state directory sharing the namespace keeps its
//! own. Nothing outside that namespace and that directory is listed or
//! touched.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::{Kind, ListSnapshotsRequest};
use containerd_client::services::v1::{ListContainersRequest, ListTasksRequest};
use zixiao_core::driver::Inventory;
use zixiao_core::DriverError;

use super::error::io;
use super::{logs, record, tasks, ContainerdDriver};
use crate::instance_id::InstanceId;

impl ContainerdDriver {
    /// Every name in the namespace that may be an instance's (container
    /// and task ids, active snapshot keys, the ids on leases), and the
    /// names of this driver's instance directories.
    async fn names_held(&self) -> Result<(BTreeSet<String>, BTreeSet<String>), DriverError> {
        let mut names = BTreeSet::new();
        let containers = ContainersClient::new(self.conn.client().channel())
            .list(self.conn.request(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| self.conn.rpc_error("list containers", s))?
            .into_inner()
            .containers;
        names.extend(containers.into_iter().map(|c| c.id));
        let tasks = self
            .tasks()
            .list(self.conn.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| self.conn.rpc_error("list tasks", s))?
            .into_inner()
            .tasks;
        names.extend(tasks.into_iter().map(|t| t.id));
        let mut snapshots = self
            .snapshots()
            .list(self.conn.request(ListSnapshotsRequest {
                snapshotter: self.options.snapshotter.clone(),
                filters: vec![],
            }))
            .await
            .map_err(|s| self.conn.rpc_error("list snapshots", s))?
            .into_inner();
        while let Some(page) = snapshots
            .message()
            .await
            .map_err(|s| self.conn.rpc_error("list snapshots", s))?
        {
            // Committed snapshots are image layers, named by chain id.
            names.extend(
                page.info
                    .into_iter()
                    .filter(|s| s.kind == Kind::Active as i32)
                    .map(|s| s.name),
            );
        }
        names.extend(
            self.conn
                .instance_leases(None)
                .await?
                .into_iter()
                .map(|(_, id)| id),
        );
        let dir = logs::namespace_dir(&self.options.state_dir, &self.options.namespace);
        let mut dirs = BTreeSet::new();
        match tokio::fs::read_dir(&dir).await {
            Ok(mut entries) => {
                while let Some(entry) = entries
                    .next_entry()
                    .await
                    .map_err(|e| io(format!("list {}", dir.display()), e))?
                {
                    dirs.extend(entry.file_name().into_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("list {}", dir.display()), e)),
        }
        Ok((names, dirs))
    }
}

#[async_trait]
impl Inventory for ContainerdDriver {
    async fn instance_ids(&self) -> Result<BTreeSet<String>, DriverError> {
        let (mut ids, ours) = self.names_held().await?;
        // Only this installation's: the instance directory under its state
        // directory is written before any containerd object and removed
        // after the last, so a name without one is another installation's
        // (another state directory, or a cluster's agent, sharing the
        // namespace) and is never taken for an orphan here.
        ids.retain(|name| ours.contains(name));
        ids.extend(ours);
        // Only instances' ids: `remove_orphan` acts on nothing else.
        ids.retain(|name| InstanceId::try_from(name.as_str()).is_ok());
        Ok(ids)
    }

    async fn remove_orphan(&self, id: &str) -> Result<(), DriverError> {
        let id = InstanceId::try_from(id)?;
        let dir = self.instance_dir(id.as_str());
        let record = record::read(&dir).await;
        let name = record.as_ref().map_or(id.as_str(), |r| r.name.as_str());
        // At once: no grace for a container nobody wants.
        self.remove_objects(id.as_str(), name, Duration::ZERO)
            .await?;
        if let (Some(network), Some(record)) = (&self.network, &record) {
            self.unpublish_ports(id.as_str(), &record.attachments)
                .await?;
            if !record.attachments.is_empty() {
                network
                    .detach_container(id.as_str(), &record.attachments)
                    .await
                    .map_err(|e| crate::net::net_error("detach the container's network", e))?;
            }
        }
        tasks::remove_dir(&dir).await
    }
}
