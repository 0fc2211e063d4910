//! The AgentService server: a node's runtimes, reached through its
//! [`NodeAgent`] (the drivers of `zixiao agent`), for the servers'
//! controllers. Every call carries the whole instance, so this side keeps
//! no state. A gate can refuse calls that would make an instance run (the
//! node agent closes it while it does not hold its liveness lease, so a
//! fenced node never starts what may now run elsewhere). With a
//! [`NetworkHost`] it also sets up the cluster's networks on the node.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};
use zixiao_core::driver::{Pause, Snapshots};
use zixiao_core::model::Network;
use zixiao_core::{DriverError, Error, Instance, NetworkHost, NodeAgent};

use crate::console::{self, OutputStream};
use crate::json;
use crate::pb::agent_service_server::{AgentService, AgentServiceServer};
use crate::pb::{
    console_input, AgentInstanceRequest, AgentReadLogRequest, AgentSnapshotRequest, ConsoleInput,
    CreateOnNodeResponse, Empty, JsonList, JsonObject, LogChunk, NetworkInventoryResponse,
    NodeResources, ReconcileNetworksRequest, ReconcileNetworksResponse, StopOnNodeRequest,
};
use crate::status::{from_driver_error, from_error};

/// Decides whether the node may create or start instances now.
pub type Gate = Arc<dyn Fn() -> Result<(), DriverError> + Send + Sync>;

/// Lists the instances the node holds (as its agent recorded them).
pub type LocalInstances = Arc<dyn Fn() -> Vec<Instance> + Send + Sync>;

/// The AgentService over one node's agent.
#[derive(Clone)]
pub struct AgentServer {
    agent: Arc<dyn NodeAgent>,
    gate: Option<Gate>,
    local: Option<LocalInstances>,
    network: Option<Arc<dyn NetworkHost>>,
}

impl std::fmt::Debug for AgentServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentServer")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl AgentServer {
    /// Serves `agent`'s drivers.
    pub fn new(agent: Arc<dyn NodeAgent>) -> Self {
        AgentServer {
            agent,
            gate: None,
            local: None,
            network: None,
        }
    }

    /// Refuses creates and starts whenever `gate` says no.
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Answers ListLocalInstances with `local`.
    pub fn with_local_instances(mut self, local: LocalInstances) -> Self {
        self.local = Some(local);
        self
    }

    /// Sets up networks on the node through `host` (without one, the network
    /// calls answer `Unsupported`).
    pub fn with_network_host(mut self, host: Arc<dyn NetworkHost>) -> Self {
        self.network = Some(host);
        self
    }

    /// The tonic service, with the protocol's message size limits.
    pub fn into_service(self) -> AgentServiceServer<Self> {
        AgentServiceServer::new(self)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
    }

    fn driver(&self, instance: &Instance) -> Result<Arc<dyn zixiao_core::Driver>, Status> {
        self.agent
            .driver(instance.spec.instance_type)
            .map_err(|e| *from_driver_error(&e))
    }

    fn check_gate(&self) -> Result<(), Status> {
        match &self.gate {
            Some(gate) => gate().map_err(|e| *from_driver_error(&e)),
            None => Ok(()),
        }
    }

    fn network_host(&self) -> Result<&Arc<dyn NetworkHost>, Status> {
        self.network.as_ref().ok_or_else(|| {
            from_error(&Error::Unsupported(
                "this agent sets up no networks (it has no netlink access, or runs with \
                 --no-networks)"
                    .to_owned(),
            ))
        })
    }
}

fn network(field: &str, bytes: &[u8]) -> Result<Network, Status> {
    json::decode::<Network>(field, bytes).map_err(|e| from_error(&e))
}

fn instance(bytes: &[u8]) -> Result<Instance, Status> {
    json::decode::<Instance>("instance_json", bytes).map_err(|e| from_error(&e))
}

fn driver_status(error: DriverError) -> Status {
    *from_driver_error(&error)
}

#[tonic::async_trait]
impl AgentService for AgentServer {
    async fn get_node_resources(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<NodeResources>, Status> {
        let facts = self.agent.describe().await.map_err(driver_status)?;
        Ok(Response::new(NodeResources {
            hostname: facts.hostname,
            cpus: facts.capacity.cpus,
            memory_mib: facts.capacity.memory_mib,
            disk_gib: facts.capacity.disk_gib,
            instances: facts.capacity.instances,
            runtimes: facts
                .runtimes
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            missing_runtimes: facts
                .missing_runtimes
                .iter()
                .map(|(t, why)| (t.as_str().to_owned(), why.clone()))
                .collect(),
        }))
    }

    async fn create_instance(
        &self,
        request: Request<AgentInstanceRequest>,
    ) -> Result<Response<CreateOnNodeResponse>, Status> {
        let instance = instance(&request.get_ref().instance_json)?;
        self.check_gate()?;
        let driver = self.driver(&instance)?;
        driver.create(&instance).await.map_err(driver_status)?;
        Ok(Response::new(CreateOnNodeResponse {
            runtime: driver.runtime_of(&instance),
        }))
    }

    async fn start_instance(
        &self,
        request: Request<AgentInstanceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let instance = instance(&request.get_ref().instance_json)?;
        self.check_gate()?;
        let driver = self.driver(&instance)?;
        driver.start(&instance).await.map_err(driver_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn stop_instance(
        &self,
        request: Request<StopOnNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        let instance = instance(&request.instance_json)?;
        let driver = self.driver(&instance)?;
        let grace = Duration::from_millis(request.grace_ms);
        driver.stop(&instance, grace).await.map_err(driver_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn delete_instance(
        &self,
        request: Request<AgentInstanceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let instance = instance(&request.get_ref().instance_json)?;
        let driver = self.driver(&instance)?;
        driver.delete(&instance).await.map_err(driver_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn inspect_instance(
        &self,
        request: Request<AgentInstanceRequest>,
    ) -> Result<Response<JsonObject>, Status> {
        let instance = instance(&request.get_ref().instance_json)?;
        let driver = self.driver(&instance)?;
        let state = driver.inspect(&instance).await.map_err(driver_status)?;
        Ok(Response::new(JsonObject {
            json: json::encode(&state),
        }))
    }

    async fn read_log(
        &self,
        request: Request<AgentReadLogRequest>,
    ) -> Result<Response<LogChunk>, Status> {
        let request = request.into_inner();
        let instance = instance(&request.instance_json)?;
        let driver = self.driver(&instance)?;
        let max = usize::try_from(request.max)
            .unwrap_or(usize::MAX)
            .min(crate::MAX_MESSAGE_BYTES / 2);
        let chunk = driver
            .read_log(&instance, request.offset, max)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(LogChunk {
            data: chunk.data,
            next_offset: chunk.next_offset,
        }))
    }

    async fn get_instance_stats(
        &self,
        request: Request<AgentInstanceRequest>,
    ) -> Result<Response<JsonObject>, Status> {
        let instance = instance(&request.get_ref().instance_json)?;
        let driver = self.driver(&instance)?;
        let stats = driver.stats().ok_or_else(|| {
            driver_status(DriverError::Unsupported(format!(
                "the {} driver cannot report stats",
                driver.name()
            )))
        })?;
        let stats = stats.stats(&instance).await.map_err(driver_status)?;
        Ok(Response::new(JsonObject {
            json: json::encode(&stats),
        }))
    }

    async fn list_local_instances(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<JsonList>, Status> {
        let items = match &self.local {
            Some(local) => local().iter().map(json::encode).collect(),
            None => Vec::new(),
        };
        Ok(Response::new(JsonList { items }))
    }

    type AttachConsoleStream = OutputStream;

    async fn attach_console(
        &self,
        request: Request<Streaming<ConsoleInput>>,
    ) -> Result<Response<Self::AttachConsoleStream>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the console session sent nothing"))?;
        let Some(console_input::Input::InstanceJson(bytes)) = first.input else {
            return Err(Status::invalid_argument(
                "the first console message must carry instance_json",
            ));
        };
        let instance = instance(&bytes)?;
        let driver = self.driver(&instance)?;
        let console = driver.console().ok_or_else(|| {
            driver_status(DriverError::Unsupported(format!(
                "the {} driver has no interactive console",
                driver.name()
            )))
        })?;
        let stream = console.attach(&instance).await.map_err(driver_status)?;
        Ok(Response::new(console::serve(stream, input)))
    }

    async fn ensure_network(
        &self,
        request: Request<JsonObject>,
    ) -> Result<Response<Empty>, Status> {
        let network = network("json", &request.get_ref().json)?;
        self.network_host()?
            .ensure_network(&network)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(Empty {}))
    }

    async fn remove_network(
        &self,
        request: Request<JsonObject>,
    ) -> Result<Response<Empty>, Status> {
        let network = network("json", &request.get_ref().json)?;
        self.network_host()?
            .remove_network(&network)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(Empty {}))
    }

    async fn reconcile_networks(
        &self,
        request: Request<ReconcileNetworksRequest>,
    ) -> Result<Response<ReconcileNetworksResponse>, Status> {
        let request = request.into_inner();
        let networks = request
            .networks_json
            .iter()
            .map(|bytes| network("networks_json", bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let instances = request
            .instances_json
            .iter()
            .map(|bytes| {
                json::decode::<Instance>("instances_json", bytes).map_err(|e| from_error(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let removed = self
            .network_host()?
            .reconcile(&networks, &instances, &request.seen)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(ReconcileNetworksResponse { removed }))
    }

    async fn network_inventory(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<NetworkInventoryResponse>, Status> {
        let objects = self
            .network_host()?
            .inventory()
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(NetworkInventoryResponse { objects }))
    }

    async fn create_snapshot(
        &self,
        request: Request<AgentSnapshotRequest>,
    ) -> Result<Response<JsonObject>, Status> {
        let request = request.into_inner();
        let instance = instance(&request.instance_json)?;
        let driver = self.driver(&instance)?;
        let taken = snapshots_of(driver.as_ref())?
            .create(&instance, &request.snapshot)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(JsonObject {
            json: json::encode(&taken),
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<AgentInstanceRequest>,
    ) -> Result<Response<JsonList>, Status> {
        let instance = instance(&request.get_ref().instance_json)?;
        let driver = self.driver(&instance)?;
        let all = snapshots_of(driver.as_ref())?
            .list(&instance)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(JsonList {
            items: all.iter().map(json::encode).collect(),
        }))
    }

    async fn revert_snapshot(
        &self,
        request: Request<AgentSnapshotRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        let instance = instance(&request.instance_json)?;
        // A revert can make the instance run again: a fenced node must not.
        self.check_gate()?;
        let driver = self.driver(&instance)?;
        snapshots_of(driver.as_ref())?
            .revert(&instance, &request.snapshot)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn delete_snapshot(
        &self,
        request: Request<AgentSnapshotRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        let instance = instance(&request.instance_json)?;
        let driver = self.driver(&instance)?;
        snapshots_of(driver.as_ref())?
            .delete(&instance, &request.snapshot)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn pause_on_node(
        &self,
        request: Request<AgentInstanceRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.freeze(request.get_ref(), true).await
    }

    async fn resume_on_node(
        &self,
        request: Request<AgentInstanceRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.freeze(request.get_ref(), false).await
    }
}

impl AgentServer {
    /// Pauses (`pause`) or resumes the instance through its driver.
    async fn freeze(
        &self,
        request: &AgentInstanceRequest,
        pause: bool,
    ) -> Result<Response<Empty>, Status> {
        let instance = instance(&request.instance_json)?;
        if !pause {
            // Thawing makes the instance run again: a fenced node must not.
            self.check_gate()?;
        }
        let driver = self.driver(&instance)?;
        let capability = pause_of(driver.as_ref())?;
        let done = if pause {
            capability.pause(&instance).await
        } else {
            capability.resume(&instance).await
        };
        done.map_err(driver_status)?;
        Ok(Response::new(Empty {}))
    }
}

/// The driver's pause capability. Errors: `Unsupported`.
fn pause_of(driver: &dyn zixiao_core::Driver) -> Result<&dyn Pause, Status> {
    driver.pause().ok_or_else(|| {
        driver_status(DriverError::Unsupported(format!(
            "the {} driver cannot pause instances",
            driver.name()
        )))
    })
}

/// The driver's snapshot capability. Errors: `Unsupported`.
fn snapshots_of(driver: &dyn zixiao_core::Driver) -> Result<&dyn Snapshots, Status> {
    driver.snapshots().ok_or_else(|| {
        driver_status(DriverError::Unsupported(format!(
            "the {} driver cannot take snapshots",
            driver.name()
        )))
    })
}
