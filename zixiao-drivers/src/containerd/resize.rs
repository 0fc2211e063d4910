//! Live resize: a container's CPU and memory limits changed in place. The
//! running task's cgroup through the Tasks `Update` call (what `runc
//! update` does: the new `memory.limit_in_bytes` and `cpu.cfs_quota_us`
//! are in force when it answers), then the container record's runtime
//! spec, which every later task of the container starts from, so a stop
//! and start or a restart keeps the new size.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::{Container, UpdateContainerRequest, UpdateTaskRequest};
use containerd_client::types::v1::Status as TaskStatus;
use serde_json::Value;
use zixiao_core::{DriverError, Instance};

use super::error::invalid;
use super::spec::{self, SpecDefaults};
use super::tasks::{status_of, SPEC_TYPE_URL};
use super::ContainerdDriver;

/// The type URL the runc shim expects on a task update's resources: the
/// OCI runtime spec's `LinuxResources`, as JSON (containerd's typeurl
/// registration of it).
const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

impl ContainerdDriver {
    /// See [`Resize::resize`](zixiao_core::driver::Resize::resize).
    pub(super) async fn resize_container(&self, instance: &Instance) -> Result<(), DriverError> {
        let id = Self::container_id(instance)?;
        let defaults = SpecDefaults {
            pids_limit: self.options.pids_limit,
            cgroups_path: self.cgroups_path(instance),
        };
        let limits = spec::limits(instance, &defaults)?;
        let Some(container) = self.container(id).await? else {
            return Err(DriverError::NotFound(format!(
                "container of instance `{}`",
                instance.name
            )));
        };
        let resources = limits.resources();
        // The task first: a size the kernel refuses (memory below what the
        // workload uses and cannot reclaim) leaves the record as it was.
        let live = matches!(
            self.task(id).await?.map(|p| status_of(&p)),
            Some(
                TaskStatus::Running
                    | TaskStatus::Paused
                    | TaskStatus::Pausing
                    | TaskStatus::Created
            )
        );
        if live {
            let request = self.conn.request(UpdateTaskRequest {
                container_id: id.to_owned(),
                resources: Some(prost_types::Any {
                    type_url: LINUX_RESOURCES_TYPE_URL.to_owned(),
                    value: encode(&resources)?,
                }),
                annotations: Default::default(),
            });
            self.tasks().update(request).await.map_err(|s| {
                self.conn
                    .rpc_error(format!("resize the task of {}", instance.name), s)
            })?;
        }
        self.update_record(instance, container, &resources).await
    }

    /// Writes `resources` (memory and cpu) into the container record's
    /// runtime spec, unless it has them already.
    async fn update_record(
        &self,
        instance: &Instance,
        container: Container,
        resources: &Value,
    ) -> Result<(), DriverError> {
        let Some(any) = container.spec else {
            return Err(invalid(
                "spec",
                format!("the container of `{}` has no runtime spec", instance.name),
            ));
        };
        let mut runtime_spec: Value = serde_json::from_slice(&any.value).map_err(|e| {
            invalid(
                "spec",
                format!(
                    "the container of `{}` has an unreadable spec: {e}",
                    instance.name
                ),
            )
        })?;
        let Some(current) = runtime_spec.pointer_mut("/linux/resources") else {
            return Err(invalid(
                "spec",
                format!(
                    "the container of `{}` has no linux resources in its spec",
                    instance.name
                ),
            ));
        };
        if current.get("memory") == resources.get("memory")
            && current.get("cpu") == resources.get("cpu")
        {
            return Ok(());
        }
        current["memory"] = resources["memory"].clone();
        current["cpu"] = resources["cpu"].clone();
        let update = Container {
            id: container.id.clone(),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_owned(),
                value: encode(&runtime_spec)?,
            }),
            ..Container::default()
        };
        let request = self.conn.request(UpdateContainerRequest {
            container: Some(update),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec".to_owned()],
            }),
        });
        ContainersClient::new(self.conn.client().channel())
            .update(request)
            .await
            .map_err(|s| {
                self.conn
                    .rpc_error(format!("record the new size of {}", instance.name), s)
            })?;
        Ok(())
    }
}

fn encode(value: &Value) -> Result<Vec<u8>, DriverError> {
    serde_json::to_vec(value).map_err(|e| invalid("spec", format!("cannot encode {value}: {e}")))
}
