//! The AgentService server: a node's runtimes, reached through its
//! [`NodeAgent`] (the drivers of `zixiao agent`), for the servers'
//! controllers. Only what a node must do: each RPC is one driver call.
//! A call names its instance by id; with [`StoredInstances`] (what a
//! cluster's agent has) the driver gets the cluster's stored copy of it,
//! never the caller's, so a forged or buggy caller cannot make the node
//! run another image, command or host file, nor touch an instance the
//! cluster did not place here (or, for the target of a migration's
//! PrepareIncoming, AbortIncoming, ImportDisk, AbortImport, CreateInstance,
//! StartInstance and InspectInstance, is not migrating here); with [`StoredNetworks`] the same holds for
//! the networks it sets up or removes (GetRunningSize, which servers ask
//! while they answer a read, runs on the node's own record of the instance
//! instead). Whatever is still read from the
//! wire (the id, names) is parsed into the model's validated types first. A
//! capability the runtime lacks is the driver's own `Unsupported`
//! ([`Capability::missing`](zixiao_core::Capability::missing)). A gate can
//! refuse calls that would make an instance run (the node agent closes it
//! while it does not hold its liveness lease, so a fenced node never starts
//! what may now run elsewhere). With a [`NetworkHost`] it also sets up the
//! cluster's networks on the node.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};
use zixiao_core::model::{InstallationId, InstanceUuid, Network, NetworkName, OverlayView};
use zixiao_core::{
    Driver, DriverError, Error, ErrorKind, Instance, InstanceType, NetworkHost, NodeAgent,
};

use crate::console::{self, OutputStream};
use crate::convert::{
    decode_all, decode_attachments, decode_instance_type, decode_pull_options, snapshot_name,
    WirePullOptions,
};
use crate::membership::duration;
use crate::pb;
use crate::pb::agent_service_server::{AgentService, AgentServiceServer};
use crate::status::{from_driver_error, from_error};

/// Decides whether the node may create or start instances now.
pub type Gate = Arc<dyn Fn() -> Result<(), DriverError> + Send + Sync>;

/// Lists the instances the node holds (as its agent recorded them).
pub type LocalInstances = Arc<dyn Fn() -> Vec<Instance> + Send + Sync>;

/// Where the agent reads the cluster's stored copy of an instance (the one
/// the controller validated when it stored it): every call that names an
/// instance runs on that copy, found by the id the caller sends.
#[async_trait::async_trait]
pub trait StoredInstances: Send + Sync + std::fmt::Debug {
    /// The cluster's copy of instance `id`, when the cluster places it on
    /// this node now. Called before every instance call reaches a driver
    /// (and before an orphan is removed); it only reads, so it is
    /// idempotent. Errors: `NotFound` (the cluster holds no instance `id`
    /// that this node may see), `FailedPrecondition` (placed on another
    /// node, or on none), `Unavailable` (no server could say: nothing is
    /// done on a guess).
    async fn placed_here(&self, id: &InstanceUuid) -> Result<Instance, DriverError>;

    /// The cluster's copy of instance `id`, when the cluster records a
    /// live migration of it to this node now (placed on another node, its
    /// `migrate_to` naming this one, not being rescheduled): what the
    /// target of a live migration prepares for and aborts. Read-only and
    /// idempotent. Errors: `NotFound`, `FailedPrecondition` (no live
    /// migration to this node), `Unavailable`.
    async fn incoming_here(&self, id: &InstanceUuid) -> Result<Instance, DriverError>;
}

/// Where the agent reads the cluster's stored copy of a network: what it
/// sets up or removes, found by the name the caller sends.
#[async_trait::async_trait]
pub trait StoredNetworks: Send + Sync + std::fmt::Debug {
    /// The cluster's copy of network `name`. Called before EnsureNetwork
    /// and RemoveNetwork touch the host; it only reads, so it is
    /// idempotent. Errors: `NotFound` (the cluster holds no such network),
    /// `Unavailable` (no server could say).
    async fn stored_network(&self, name: &NetworkName) -> zixiao_core::Result<Network>;
}

/// The full name of the AgentService, for the health service.
pub const SERVICE: &str = "zixiao.v1.AgentService";

/// The AgentService over one node's agent.
#[derive(Clone)]
pub struct AgentServer {
    agent: Arc<dyn NodeAgent>,
    gate: Option<Gate>,
    local: Option<LocalInstances>,
    network: Option<Arc<dyn NetworkHost>>,
    stored: Option<Arc<dyn StoredInstances>>,
    stored_networks: Option<Arc<dyn StoredNetworks>>,
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
            stored: None,
            stored_networks: None,
        }
    }

    /// Runs every instance call on `stored`'s copy of the instance the
    /// caller names, and refuses the ones `stored` does not place on this
    /// node. Without it the caller's copy is used (in-process tests and
    /// simulations, whose caller is the controller itself).
    pub fn with_stored_instances(mut self, stored: Arc<dyn StoredInstances>) -> Self {
        self.stored = Some(stored);
        self
    }

    /// Sets up and removes `stored`'s copy of the network a caller names,
    /// refusing a network the cluster does not hold, or one whose bridge
    /// or installation differ from the stored copy's. Without it the
    /// caller's copy is used (in-process tests, whose caller is the
    /// controller itself).
    pub fn with_stored_networks(mut self, stored: Arc<dyn StoredNetworks>) -> Self {
        self.stored_networks = Some(stored);
        self
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

    fn driver(&self, instance_type: InstanceType) -> Result<Arc<dyn Driver>, Status> {
        self.agent.driver(instance_type).map_err(driver_status)
    }

    fn check_gate(&self) -> Result<(), Status> {
        match &self.gate {
            Some(gate) => gate().map_err(driver_status),
            None => Ok(()),
        }
    }

    /// Refuses to treat `id` as an orphan while the cluster places it on
    /// this node or migrates it here live (an orphan removal stops and
    /// removes whatever a runtime holds of it), or when no server can say.
    async fn check_orphan(&self, id: &InstanceUuid) -> Result<(), Status> {
        let Some(stored) = &self.stored else {
            return Ok(());
        };
        for (held, how) in [
            (stored.placed_here(id).await, "is placed on this node"),
            (stored.incoming_here(id).await, "is migrating to this node"),
        ] {
            match held {
                Ok(instance) => {
                    return Err(driver_status(DriverError::FailedPrecondition(format!(
                        "instance `{}` ({id}) {how}: it is no orphan",
                        instance.name
                    ))))
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::NotFound | ErrorKind::FailedPrecondition
                    ) => {}
                Err(e) => return Err(driver_status(e)),
            }
        }
        Ok(())
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

fn driver_status(error: DriverError) -> Status {
    from_driver_error(&error)
}

fn invalid(error: Error) -> Status {
    from_error(&error)
}

/// The required instance of a request, checked.
fn instance(value: Option<pb::Instance>) -> Result<Instance, Status> {
    value
        .ok_or_else(|| Error::invalid("instance", "missing"))
        .and_then(Instance::try_from)
        .map_err(invalid)
}

/// The network a request names, as the call sets it up or removes it:
/// decoded (names, bridge and installation checked), then the stored copy
/// when the server has [`StoredNetworks`].
async fn network(server: &AgentServer, value: pb::Network) -> Result<Network, Status> {
    let claimed = Network::try_from(value).map_err(invalid)?;
    let Some(stored) = &server.stored_networks else {
        return Ok(claimed);
    };
    let network = stored
        .stored_network(&claimed.name)
        .await
        .map_err(|e| from_error(&e))?;
    // A caller naming the cluster's network with another installation's
    // mark would reach that installation's objects on this host.
    if (&network.installation, &network.bridge) != (&claimed.installation, &claimed.bridge) {
        return Err(from_error(&Error::FailedPrecondition(format!(
            "network `{}` is not the cluster's (its bridge or installation differ): this node \
             does nothing to it",
            claimed.name
        ))));
    }
    Ok(network)
}

/// `id` as an instance id (a UUID), or `InvalidArgument` on `field`.
fn instance_id(id: &str, field: &str) -> Result<InstanceUuid, Status> {
    InstanceUuid::try_from(id).map_err(|e| invalid(e.at(field)))
}

/// How the node holds the instance a call names, as the cluster records it.
#[derive(Debug, Clone, Copy)]
enum Held {
    /// Placed on this node ([`StoredInstances::placed_here`]).
    Placed,
    /// Migrating live to this node ([`StoredInstances::incoming_here`]):
    /// what the target of a live migration prepares for and aborts.
    Incoming,
    /// Either: what a read may look at (a live migration's caller asks
    /// its target whether the instance arrived), and what the target of a
    /// cold migration creates and starts from the copied disk before the
    /// cluster moves the instance there.
    PlacedOrIncoming,
}

/// The instance a request names, as the call runs on it, and the driver of
/// its type: the stored copy when the server has [`StoredInstances`]
/// (then of the caller's copy only the id counts, and its type, image,
/// command and paths are ignored), else the caller's.
async fn target(
    server: &AgentServer,
    value: Option<pb::Instance>,
) -> Result<(Instance, Arc<dyn Driver>), Status> {
    held_target(server, value, Held::Placed).await
}

/// [`target`], the stored copy found as `held` says the node holds it.
async fn held_target(
    server: &AgentServer,
    value: Option<pb::Instance>,
    held: Held,
) -> Result<(Instance, Arc<dyn Driver>), Status> {
    let claimed = instance(value)?;
    let id = instance_id(&claimed.id, "instance.id")?;
    let instance = match (&server.stored, held) {
        (Some(stored), Held::Placed) => stored.placed_here(&id).await.map_err(driver_status)?,
        (Some(stored), Held::Incoming) => stored.incoming_here(&id).await.map_err(driver_status)?,
        (Some(stored), Held::PlacedOrIncoming) => match stored.placed_here(&id).await {
            Ok(placed) => placed,
            Err(elsewhere) if elsewhere.kind() == ErrorKind::FailedPrecondition => {
                match stored.incoming_here(&id).await {
                    Ok(incoming) => incoming,
                    // Neither placed nor arriving here: where it is placed
                    // says why nothing runs (not a second copy).
                    Err(e) if e.kind() == ErrorKind::FailedPrecondition => {
                        return Err(driver_status(elsewhere))
                    }
                    Err(e) => return Err(driver_status(e)),
                }
            }
            Err(e) => return Err(driver_status(e)),
        },
        (None, _) => claimed,
    };
    let driver = server.driver(instance.spec.instance_type)?;
    Ok((instance, driver))
}

/// [`target`] for a read the servers make while they answer a read: the
/// node's own record of the instance (what it created here from the
/// cluster's copy) when the server has [`StoredInstances`] and local
/// records ([`AgentServer::with_local_instances`]). A server asks
/// GetRunningSize while it answers GetInstance, which is how
/// [`StoredInstances`] reads the cluster's copy: asking it back would make
/// each answer wait on another, without end. An id the node holds no
/// record of is `NotFound`, as there.
async fn recorded_target(
    server: &AgentServer,
    value: Option<pb::Instance>,
) -> Result<(Instance, Arc<dyn Driver>), Status> {
    let local = match (&server.stored, &server.local) {
        // Nothing to ask back: the usual checks.
        (None, _) => return target(server, value).await,
        // Asking the servers would be the loop above.
        (Some(_), None) => {
            return Err(Status::failed_precondition(
                "this agent keeps no records of its own to answer a running size from",
            ))
        }
        (Some(_), Some(local)) => local.clone(),
    };
    let claimed = instance(value)?;
    let id = instance_id(&claimed.id, "instance.id")?;
    // The records are files: read off the async workers.
    let records = tokio::task::spawn_blocking(move || local())
        .await
        .map_err(|e| Status::internal(format!("reading this node's records: {e}")))?;
    let instance = records
        .into_iter()
        .find(|i| i.id == id.as_str())
        .ok_or_else(|| {
            driver_status(DriverError::NotFound(format!(
                "instance `{id}` on this node"
            )))
        })?;
    let driver = server.driver(instance.spec.instance_type)?;
    Ok((instance, driver))
}

fn done() -> Result<Response<()>, Status> {
    Ok(Response::new(()))
}

#[tonic::async_trait]
impl AgentService for AgentServer {
    async fn describe_node(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::NodeFacts>, Status> {
        let facts = self.agent.describe().await.map_err(driver_status)?;
        Ok(Response::new(facts.into()))
    }

    async fn create_instance(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<pb::CreateOnNodeResponse>, Status> {
        // The target of a cold migration creates it from the imported disk
        // before the cluster moves it here.
        let value = request.into_inner().instance;
        let (instance, driver) = held_target(self, value, Held::PlacedOrIncoming).await?;
        // An agent is reached over the network: it boots only the images
        // of its node's store, never a host path a caller names.
        zixiao_core::model::refuse_host_paths(&instance.spec).map_err(invalid)?;
        self.check_gate()?;
        driver.create(&instance).await.map_err(driver_status)?;
        Ok(Response::new(pb::CreateOnNodeResponse {
            runtime: driver.runtime_of(&instance),
            vsock: driver.vsock_of(&instance).map(Into::into),
        }))
    }

    async fn start_instance(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<()>, Status> {
        let value = request.into_inner().instance;
        let (instance, driver) = held_target(self, value, Held::PlacedOrIncoming).await?;
        self.check_gate()?;
        driver.start(&instance).await.map_err(driver_status)?;
        done()
    }

    async fn stop_instance(
        &self,
        request: Request<pb::StopOnNodeRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let (instance, driver) = target(self, request.instance).await?;
        let grace = duration(request.grace);
        driver.stop(&instance, grace).await.map_err(driver_status)?;
        done()
    }

    async fn delete_instance(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<()>, Status> {
        let (instance, driver) = target(self, request.into_inner().instance).await?;
        driver.delete(&instance).await.map_err(driver_status)?;
        done()
    }

    async fn inspect_instance(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<pb::RuntimeState>, Status> {
        let value = request.into_inner().instance;
        let (instance, driver) = held_target(self, value, Held::PlacedOrIncoming).await?;
        let state = driver.inspect(&instance).await.map_err(driver_status)?;
        Ok(Response::new(state.into()))
    }

    async fn read_log(
        &self,
        request: Request<pb::AgentReadLogRequest>,
    ) -> Result<Response<pb::LogChunk>, Status> {
        let request = request.into_inner();
        let (instance, driver) = target(self, request.instance).await?;
        let max = usize::try_from(request.max)
            .unwrap_or(usize::MAX)
            .min(crate::MAX_LOG_CHUNK);
        let chunk = driver
            .read_log(&instance, request.offset, max)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(chunk.into()))
    }

    async fn get_instance_stats(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<pb::InstanceStats>, Status> {
        let (instance, driver) = target(self, request.into_inner().instance).await?;
        let stats = driver.require_stats().map_err(driver_status)?;
        let stats = stats.stats(&instance).await.map_err(driver_status)?;
        Ok(Response::new(stats.into()))
    }

    type AttachConsoleStream = OutputStream;

    async fn attach_console(
        &self,
        request: Request<Streaming<pb::AgentConsoleInput>>,
    ) -> Result<Response<Self::AttachConsoleStream>, Status> {
        use pb::agent_console_input::Input;
        let mut input = request.into_inner();
        let first = input.message().await?.and_then(|m| m.input);
        let Some(Input::Instance(first)) = first else {
            return Err(invalid(Error::invalid(
                "instance",
                "the first console message must carry the instance",
            )));
        };
        let (instance, driver) = target(self, Some(first)).await?;
        let console = driver.require_console().map_err(driver_status)?;
        let stream = console.attach(&instance).await.map_err(driver_status)?;
        let data = |message: pb::AgentConsoleInput| match message.input {
            Some(Input::Data(data)) => Some(data),
            _ => None,
        };
        Ok(Response::new(console::serve(stream, input, data)))
    }

    async fn pause_instance(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<()>, Status> {
        let (instance, driver) = target(self, request.into_inner().instance).await?;
        let pause = driver.require_pause().map_err(driver_status)?;
        pause.pause(&instance).await.map_err(driver_status)?;
        done()
    }

    async fn resume_instance(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<()>, Status> {
        let (instance, driver) = target(self, request.into_inner().instance).await?;
        // Thawing makes the instance run again: a fenced node must not.
        self.check_gate()?;
        let pause = driver.require_pause().map_err(driver_status)?;
        pause.resume(&instance).await.map_err(driver_status)?;
        done()
    }

    async fn resize_instance(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<()>, Status> {
        let (instance, driver) = target(self, request.into_inner().instance).await?;
        let resize = driver.require_resize().map_err(driver_status)?;
        resize.resize(&instance).await.map_err(driver_status)?;
        done()
    }

    async fn get_running_size(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<pb::RunningSizeResponse>, Status> {
        let (instance, driver) = recorded_target(self, request.into_inner().instance).await?;
        let resize = driver.require_resize().map_err(driver_status)?;
        let size = resize
            .running_size(&instance)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(pb::RunningSizeResponse {
            size: size.map(Into::into),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::AgentSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let request = request.into_inner();
        let name = snapshot_name(request.snapshot, "snapshot").map_err(invalid)?;
        let (instance, driver) = target(self, request.instance).await?;
        let snapshots = driver.require_snapshots().map_err(driver_status)?;
        let taken = snapshots
            .create(&instance, &name)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(taken.into()))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let (instance, driver) = target(self, request.into_inner().instance).await?;
        let snapshots = driver.require_snapshots().map_err(driver_status)?;
        let all = snapshots.list(&instance).await.map_err(driver_status)?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: all.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revert_snapshot(
        &self,
        request: Request<pb::AgentSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let name = snapshot_name(request.snapshot, "snapshot").map_err(invalid)?;
        let (instance, driver) = target(self, request.instance).await?;
        // A revert can make the instance run again: a fenced node must not.
        self.check_gate()?;
        let snapshots = driver.require_snapshots().map_err(driver_status)?;
        snapshots
            .revert(&instance, &name)
            .await
            .map_err(driver_status)?;
        done()
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::AgentSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let name = snapshot_name(request.snapshot, "snapshot").map_err(invalid)?;
        let (instance, driver) = target(self, request.instance).await?;
        let snapshots = driver.require_snapshots().map_err(driver_status)?;
        snapshots
            .delete(&instance, &name)
            .await
            .map_err(driver_status)?;
        done()
    }

    async fn list_images(
        &self,
        request: Request<pb::AgentRuntimeRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let instance_type = decode_instance_type(request.into_inner().r#type, "type");
        let driver = self.driver(instance_type.map_err(invalid)?)?;
        let images = driver.require_images().map_err(driver_status)?;
        let all = images.list().await.map_err(driver_status)?;
        Ok(Response::new(pb::ListImagesResponse {
            images: all.into_iter().map(Into::into).collect(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<pb::AgentImageRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let instance_type = decode_instance_type(request.r#type, "type");
        let driver = self.driver(instance_type.map_err(invalid)?)?;
        let images = driver.require_images().map_err(driver_status)?;
        images.remove(&request.name).await.map_err(driver_status)?;
        done()
    }

    type PullImageStream = crate::server::MessageStream<pb::PullEvent>;

    async fn pull_image(
        &self,
        request: Request<pb::AgentPullRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        let request = request.into_inner();
        let instance_type = decode_instance_type(request.r#type, "type");
        let driver = self.driver(instance_type.map_err(invalid)?)?;
        driver.require_images().map_err(driver_status)?;
        let reference = zixiao_core::ImageRef::try_from(request.reference.as_str())
            .map_err(|e| invalid(e.into()))?;
        let options = decode_pull_options(WirePullOptions {
            credentials: request.credentials,
            insecure_registries: request.insecure_registries,
            registry_cas: request.registry_cas,
            platform: request.platform,
            kind: request.kind,
        })
        .map_err(invalid)?;
        Ok(Response::new(crate::server::pull_events(
            move |report| async move {
                let images = driver.require_images().map_err(driver_status)?;
                images
                    .pull(&reference, &options, &*report)
                    .await
                    .map_err(driver_status)
            },
        )))
    }

    async fn list_runtime_instances(
        &self,
        request: Request<pb::AgentRuntimeRequest>,
    ) -> Result<Response<pb::RuntimeInstances>, Status> {
        let instance_type = decode_instance_type(request.into_inner().r#type, "type");
        let driver = self.driver(instance_type.map_err(invalid)?)?;
        let inventory = driver.require_inventory().map_err(driver_status)?;
        let ids = inventory.instance_ids().await.map_err(driver_status)?;
        Ok(Response::new(pb::RuntimeInstances {
            ids: ids.into_iter().collect(),
        }))
    }

    async fn remove_orphan(
        &self,
        request: Request<pb::AgentOrphanRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let id = instance_id(&request.id, "id")?;
        let instance_type = decode_instance_type(request.r#type, "type");
        let driver = self.driver(instance_type.map_err(invalid)?)?;
        let inventory = driver.require_inventory().map_err(driver_status)?;
        self.check_orphan(&id).await?;
        inventory
            .remove_orphan(id.as_str())
            .await
            .map_err(driver_status)?;
        done()
    }

    async fn list_local_instances(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let instances = match &self.local {
            Some(local) => local().into_iter().map(Into::into).collect(),
            None => Vec::new(),
        };
        // One node's records: bounded by what the node can hold, one page.
        Ok(Response::new(pb::ListInstancesResponse {
            instances,
            next_page_token: String::new(),
        }))
    }

    async fn ensure_network(&self, request: Request<pb::Network>) -> Result<Response<()>, Status> {
        let network = network(self, request.into_inner()).await?;
        self.network_host()?
            .ensure_network(&network)
            .await
            .map_err(|e| from_error(&e))?;
        done()
    }

    async fn remove_network(&self, request: Request<pb::Network>) -> Result<Response<()>, Status> {
        let network = network(self, request.into_inner()).await?;
        self.network_host()?
            .remove_network(&network)
            .await
            .map_err(|e| from_error(&e))?;
        done()
    }

    async fn network_inventory(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::NetworkInventoryResponse>, Status> {
        let objects = self
            .network_host()?
            .inventory()
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(pb::NetworkInventoryResponse { objects }))
    }

    async fn reconcile_networks(
        &self,
        request: Request<pb::ReconcileNetworksRequest>,
    ) -> Result<Response<pb::ReconcileNetworksResponse>, Status> {
        let request = request.into_inner();
        let installation = InstallationId::try_from(request.installation)
            .map_err(|e| invalid(e.at("installation")))?;
        let networks: Vec<Network> = decode_all(request.networks).map_err(invalid)?;
        let instances: Vec<Instance> = decode_all(request.instances).map_err(invalid)?;
        let removed = self
            .network_host()?
            .reconcile(&installation, &networks, &instances, &request.seen)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(pb::ReconcileNetworksResponse { removed }))
    }

    async fn network_underlay(
        &self,
        _request: Request<()>,
    ) -> Result<Response<pb::NetworkUnderlayResponse>, Status> {
        let address = self
            .network_host()?
            .underlay()
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(pb::NetworkUnderlayResponse {
            address: address.map(|a| a.to_string()).unwrap_or_default(),
        }))
    }

    async fn set_overlay(
        &self,
        request: Request<pb::SetOverlayRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let network = required_network(self, request.network).await?;
        let view = overlay_view(request.overlay)?;
        self.network_host()?
            .set_overlay(&network, &view)
            .await
            .map_err(|e| from_error(&e))?;
        done()
    }

    async fn inspect_network(
        &self,
        request: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::InspectNetworkResponse>, Status> {
        let request = request.into_inner();
        let network = required_network(self, request.network).await?;
        let view = overlay_view(request.overlay)?;
        let attachments = attachments_of(&network, request.attachments)?;
        let parts = self
            .network_host()?
            .inspect(&network, &view, &attachments)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(pb::InspectNetworkResponse {
            parts: parts.into_iter().map(Into::into).collect(),
        }))
    }

    async fn repair_network(
        &self,
        request: Request<pb::RepairNetworkRequest>,
    ) -> Result<Response<pb::RepairNetworkResponse>, Status> {
        let request = request.into_inner();
        let network = required_network(self, request.network).await?;
        let attachments = attachments_of(&network, request.attachments)?;
        let repaired = self
            .network_host()?
            .repair(&network, &attachments)
            .await
            .map_err(|e| from_error(&e))?;
        Ok(Response::new(pb::RepairNetworkResponse { repaired }))
    }

    async fn prepare_incoming(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<pb::MigrationTarget>, Status> {
        let (instance, driver) =
            held_target(self, request.into_inner().instance, Held::Incoming).await?;
        // The instance will run here once it arrives: a fenced node must not
        // take it, and it boots only what this node's store holds.
        zixiao_core::model::refuse_host_paths(&instance.spec).map_err(invalid)?;
        self.check_gate()?;
        let live = driver.require_live_migrate().map_err(driver_status)?;
        let target = live
            .prepare_incoming(&instance)
            .await
            .map_err(driver_status)?;
        // Where the instance's vsock will be here, as a create answers it.
        let vsock = driver.vsock_of(&instance).map(Into::into);
        Ok(Response::new(pb::MigrationTarget {
            vsock,
            ..(&target).into()
        }))
    }

    async fn migrate_live(
        &self,
        request: Request<pb::MigrateLiveRequest>,
    ) -> Result<Response<pb::MigrationReport>, Status> {
        let request = request.into_inner();
        let wire = request
            .target
            .ok_or_else(|| invalid(Error::invalid("target", "missing")))?;
        let destination =
            zixiao_core::driver::MigrationTarget::try_from(wire).map_err(driver_status)?;
        let (instance, driver) = target(self, request.instance).await?;
        require_migration(&instance)?;
        let live = driver.require_live_migrate().map_err(driver_status)?;
        let report = live
            .migrate_live(&instance, &destination)
            .await
            .map_err(driver_status)?;
        Ok(Response::new(report.into()))
    }

    async fn abort_incoming(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<()>, Status> {
        let (instance, driver) =
            held_target(self, request.into_inner().instance, Held::Incoming).await?;
        let live = driver.require_live_migrate().map_err(driver_status)?;
        live.abort_incoming(&instance)
            .await
            .map_err(driver_status)?;
        done()
    }

    type ExportDiskStream = crate::server::MessageStream<pb::DiskPiece>;

    async fn export_disk(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<Self::ExportDiskStream>, Status> {
        use futures::StreamExt;
        let (instance, driver) = target(self, request.into_inner().instance).await?;
        require_migration(&instance)?;
        let cold = driver.require_cold_migrate().map_err(driver_status)?;
        let export = cold.export_disk(&instance).await.map_err(driver_status)?;
        let sizes: Vec<Result<pb::DiskPiece, Status>> = export
            .sizes
            .iter()
            .map(|&size| {
                Ok(pb::DiskPiece {
                    piece: Some(pb::disk_piece::Piece::Size(size)),
                })
            })
            .collect();
        let pieces = export
            .chunks
            .map(|chunk| chunk.map(crate::remote::disk_piece).map_err(driver_status));
        Ok(Response::new(Box::pin(
            futures::stream::iter(sizes).chain(pieces),
        )))
    }

    async fn import_disk(
        &self,
        request: Request<Streaming<pb::ImportDiskRequest>>,
    ) -> Result<Response<pb::ImportDiskResponse>, Status> {
        use futures::StreamExt;
        let mut pieces = request.into_inner();
        let first = pieces
            .message()
            .await?
            .ok_or_else(|| invalid(Error::invalid("instance", "missing")))?;
        // The disks' sizes, one a message from the first on (none without
        // a disk to copy); the first other piece begins their bytes.
        let mut sizes = Vec::new();
        let mut next = first.piece;
        let held = loop {
            match next {
                Some(pb::DiskPiece {
                    piece: Some(pb::disk_piece::Piece::Size(size)),
                }) => sizes.push(size),
                other => break other,
            }
            // No instance has more disks than that: a longer list is not
            // kept growing before the instance is even looked at.
            if sizes.len() > zixiao_core::model::MAX_DISKS {
                return Err(invalid(Error::invalid(
                    "piece",
                    format!(
                        "more than {} disk sizes: no instance has that many disks",
                        zixiao_core::model::MAX_DISKS
                    ),
                )));
            }
            next = match pieces.message().await? {
                Some(message) => Some(message.piece.unwrap_or_default()),
                None => None,
            };
        };
        if sizes.is_empty() && held.is_some() {
            return Err(invalid(Error::invalid(
                "piece",
                "the first message carries the first disk's size",
            )));
        }
        let (instance, driver) = held_target(self, first.instance, Held::Incoming).await?;
        // The instance will run here from this disk: a fenced node must
        // not take it, and it boots only what this node's store holds.
        zixiao_core::model::refuse_host_paths(&instance.spec).map_err(invalid)?;
        self.check_gate()?;
        let cold = driver.require_cold_migrate().map_err(driver_status)?;
        let rest = pieces.map(|message| {
            message
                .map(|m| m.piece.unwrap_or_default())
                .map_err(|s| crate::status::to_driver_error(&s, "the server sending the disk"))
        });
        let chunks = futures::stream::iter(held.map(Ok))
            .chain(rest)
            .map(|piece| crate::remote::disk_chunk(piece?, "the server sending the disk"));
        let bytes = cold
            .import_disk(&instance, &sizes, chunks.boxed())
            .await
            .map_err(driver_status)?;
        Ok(Response::new(pb::ImportDiskResponse { bytes }))
    }

    async fn abort_import(
        &self,
        request: Request<pb::AgentInstanceRequest>,
    ) -> Result<Response<()>, Status> {
        let (instance, driver) =
            held_target(self, request.into_inner().instance, Held::Incoming).await?;
        let cold = driver.require_cold_migrate().map_err(driver_status)?;
        cold.abort_import(&instance).await.map_err(driver_status)?;
        done()
    }
}

/// Refuses a migration call on an instance whose migration the cluster
/// does not record (`migrate_to` set by the migration's caller): a caller
/// cannot take an instance's disk away or move it on its own say-so.
fn require_migration(instance: &Instance) -> Result<(), Status> {
    if instance.live_migration_target().is_none() {
        return Err(driver_status(DriverError::FailedPrecondition(format!(
            "the cluster records no migration of instance `{}`: it stays on this node",
            instance.name
        ))));
    }
    Ok(())
}

/// The network a request names (required), checked as [`network`] does.
async fn required_network(
    server: &AgentServer,
    value: Option<pb::Network>,
) -> Result<Network, Status> {
    let claimed = value.ok_or_else(|| invalid(Error::invalid("network", "missing")))?;
    network(server, claimed).await
}

/// A network's overlay view from the wire (absent: empty), bounded and
/// parsed entry by entry (see [`OverlayView`]'s conversion).
fn overlay_view(view: Option<pb::OverlayView>) -> Result<OverlayView, Status> {
    match view {
        None => Ok(OverlayView::empty()),
        Some(view) => OverlayView::try_from(view).map_err(invalid),
    }
}

/// How many attachments one network call may name: one per instance a
/// node can hold on one network, with room to spare.
const MAX_ATTACHMENTS: usize = 10_000;

/// Attachments from the wire for `network`: each checked as an instance's
/// are, and each of this very network (bridge and installation), so a
/// call about one network cannot reach another's links.
fn attachments_of(
    network: &Network,
    values: Vec<pb::NetworkAttachment>,
) -> Result<Vec<zixiao_core::model::NetworkAttachment>, Status> {
    if values.len() > MAX_ATTACHMENTS {
        return Err(invalid(Error::invalid(
            "attachments",
            format!("{} attachments; at most {MAX_ATTACHMENTS}", values.len()),
        )));
    }
    let attachments = decode_attachments(values).map_err(invalid)?;
    for (i, a) in attachments.iter().enumerate() {
        if a.network != network.name
            || a.bridge != network.bridge
            || a.installation != network.installation
        {
            return Err(invalid(Error::invalid(
                format!("attachments[{i}]"),
                format!("is not an attachment to network `{}`", network.name),
            )));
        }
    }
    Ok(attachments)
}
