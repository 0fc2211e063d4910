//! [`RemoteAgent`]: a [`NodeAgent`] for a node whose agent runs in another
//! process, reached over gRPC. Its drivers ([`RemoteDriver`]) forward every
//! [`Driver`] call to the node's AgentService, and offer exactly the
//! capabilities the node reported for that runtime (its [`DriverInfo`]),
//! under the runtime's own name, so the one Controller drives local and
//! remote nodes alike and answers a missing capability the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};
use zixiao_core::driver::{
    Capability, Clones, ColdMigrate, Console, ConsoleStream, DiskChunk, DiskChunks, DiskExport,
    DriverInfo, ImageInfo, Images, ImportProgress, Inventory, LiveMigrate, MigrationReport,
    MigrationTarget, Pause, Resize, SnapshotInfo, Snapshots, Stats,
};
use zixiao_core::model::{CloneOrigin, RuntimeSize, SnapshotName, VsockEndpoint};
use zixiao_core::{
    Driver, DriverError, Instance, InstanceStats, InstanceType, LogChunk, Node, NodeAgent,
    NodeFacts, NodeRegistration, RuntimeState,
};

use crate::convert::{decode_all, decode_pull_event, encode_instance_type, encode_pull_options};
use crate::membership::wire_duration;
use crate::pb;
use crate::pb::agent_service_client::AgentServiceClient;
use crate::status::to_driver_error;

/// How long a call to an agent may take before it counts as unavailable.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a call that moves a guest may take: a live migration, or the
/// upload of a disk in a cold one, which grow with the guest's size. A
/// peer that dies mid-way is still found within seconds ([`KEEP_ALIVE`]);
/// this bounds one that stays alive and stalls. The agent's own server
/// bounds every call it serves to the same (`limits::Limits`).
pub const LONG_CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long connecting to an agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an idle or busy connection to an agent is pinged, and how long
/// a ping may go unanswered before the connection counts as dead. A node
/// cut off mid-call is found in about two seconds, not when the call's own
/// deadline (long enough for an image pull) runs out.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// A gRPC channel to `address` (`host:port`, or a full `http://` URL),
/// connected on first use. Errors: `InvalidArgument` for a malformed address.
pub fn channel(address: &str, call_timeout: Duration) -> Result<Channel, zixiao_core::Error> {
    channel_with(address, call_timeout, None)
}

/// [`channel`], over TLS with `tls` when given (`https://host:port`, the
/// host checked against the peer's certificate).
pub fn channel_with(
    address: &str,
    call_timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Channel, zixiao_core::Error> {
    if let Some(config) = tls {
        let url = match address.split_once("://") {
            Some((_, rest)) => format!("https://{rest}"),
            None => format!("https://{address}"),
        };
        return crate::tls::channel(&url, config, call_timeout);
    }
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|e| zixiao_core::Error::invalid("address", format!("`{address}`: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(call_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// A node reached through its agent's AgentService.
#[derive(Debug, Clone)]
pub struct RemoteAgent {
    node: String,
    client: AgentServiceClient<Channel>,
    /// For the calls [`LONG_CALL_TIMEOUT`] bounds: a channel of its own,
    /// since a channel's deadline applies to each of its calls.
    long_client: AgentServiceClient<Channel>,
    runtimes: BTreeSet<InstanceType>,
    missing: BTreeMap<InstanceType, String>,
    drivers: BTreeMap<InstanceType, DriverInfo>,
    runtimes_of: Arc<Mutex<HashMap<String, CreatedOn>>>,
}

/// What a node's agent answered a create with: the runtime that runs the
/// instance and where its vsock socket is on the node.
#[derive(Debug, Clone)]
struct CreatedOn {
    runtime: String,
    vsock: Option<VsockEndpoint>,
}

impl RemoteAgent {
    /// The agent of `node`, at its address, offering the runtimes and
    /// driver capabilities it registered. Connects on first use. Errors:
    /// `InvalidArgument` (a malformed address).
    pub fn new(node: &Node) -> Result<Self, zixiao_core::Error> {
        Self::new_tls(node, None)
    }

    /// [`RemoteAgent::new`], over TLS with `tls` when given (a server's
    /// certificate presented, the node's expected).
    pub fn new_tls(
        node: &Node,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, zixiao_core::Error> {
        Self::with(
            &node.id,
            &node.address,
            node.runtimes.clone(),
            node.missing_runtimes.clone(),
            node.drivers.clone(),
            tls,
        )
    }

    /// The agent of the node `registration` describes, as [`RemoteAgent::new`].
    pub fn registered(registration: &NodeRegistration) -> Result<Self, zixiao_core::Error> {
        Self::with(
            &registration.id,
            &registration.address,
            registration.runtimes.clone(),
            registration.missing_runtimes.clone(),
            registration.drivers.clone(),
            None,
        )
    }

    fn with(
        node: &str,
        address: &str,
        runtimes: BTreeSet<InstanceType>,
        missing: BTreeMap<InstanceType, String>,
        drivers: BTreeMap<InstanceType, DriverInfo>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, zixiao_core::Error> {
        let client = |timeout| {
            Ok::<_, zixiao_core::Error>(
                AgentServiceClient::new(channel_with(address, timeout, tls.clone())?)
                    .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(crate::MAX_MESSAGE_BYTES),
            )
        };
        Ok(RemoteAgent {
            node: node.to_owned(),
            client: client(DEFAULT_CALL_TIMEOUT)?,
            long_client: client(LONG_CALL_TIMEOUT)?,
            runtimes,
            missing,
            drivers,
            runtimes_of: Arc::default(),
        })
    }

    /// The node it reaches.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The instances the node's agent recorded as its own.
    /// Errors: `Unavailable`, `Internal`.
    pub async fn list_local_instances(&self) -> Result<Vec<Instance>, DriverError> {
        let reply = self
            .client
            .clone()
            .list_local_instances(())
            .await
            .map_err(|s| to_driver_error(&s, &self.what()))?;
        decode_all(reply.into_inner().instances).map_err(|e| self.bad_reply("list instances", e))
    }

    fn what(&self) -> String {
        format!("the agent of node `{}`", self.node)
    }

    /// A reply of the agent that does not decode.
    fn bad_reply(&self, what: &str, error: zixiao_core::Error) -> DriverError {
        DriverError::Runtime {
            operation: format!("{what} through {}", self.what()),
            source: Box::new(error),
        }
    }
}

#[async_trait]
impl NodeAgent for RemoteAgent {
    async fn describe(&self) -> Result<NodeFacts, DriverError> {
        let facts = self
            .client
            .clone()
            .describe_node(())
            .await
            .map_err(|s| to_driver_error(&s, &self.what()))?
            .into_inner();
        NodeFacts::try_from(facts).map_err(|e| self.bad_reply("describe the node", e))
    }

    fn driver(&self, instance_type: InstanceType) -> Result<Arc<dyn Driver>, DriverError> {
        if !self.runtimes.contains(&instance_type) {
            let why = self
                .missing
                .get(&instance_type)
                .cloned()
                .unwrap_or_else(|| format!("node `{}` has no {instance_type} runtime", self.node));
            return Err(DriverError::Unsupported(why));
        }
        let info = self
            .drivers
            .get(&instance_type)
            .cloned()
            .unwrap_or_else(|| DriverInfo {
                name: "remote".to_owned(),
                capabilities: BTreeSet::new(),
            });
        Ok(Arc::new(RemoteDriver {
            agent: self.clone(),
            instance_type,
            info,
        }))
    }
}

/// One instance type's driver on a remote node.
#[derive(Debug, Clone)]
pub struct RemoteDriver {
    agent: RemoteAgent,
    instance_type: InstanceType,
    info: DriverInfo,
}

impl RemoteDriver {
    fn client(&self) -> AgentServiceClient<Channel> {
        self.agent.client.clone()
    }

    /// The client for calls that move a guest ([`LONG_CALL_TIMEOUT`]).
    fn long_client(&self) -> AgentServiceClient<Channel> {
        self.agent.long_client.clone()
    }

    fn error(&self, status: tonic::Status) -> DriverError {
        to_driver_error(&status, &self.agent.what())
    }

    /// Keeps what the node answered `call` of `instance` with: its
    /// runtime and where its vsock is (checked), for `runtime_of` and
    /// `vsock_of`. Errors: a runtime error naming `call` (a vsock the
    /// node answered badly).
    fn remember(
        &self,
        instance: &Instance,
        runtime: String,
        vsock: Option<pb::VsockEndpoint>,
        call: &str,
    ) -> Result<(), DriverError> {
        let vsock = vsock
            .map(|v| crate::convert::vsock_endpoint(v, "vsock"))
            .transpose()
            .map_err(|e| self.agent.bad_reply(call, e))?;
        self.agent
            .runtimes_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.id.clone(), CreatedOn { runtime, vsock });
        Ok(())
    }

    /// What the node answered this process's create of `instance` with.
    fn created_on(&self, instance: &Instance) -> Option<CreatedOn> {
        self.agent
            .runtimes_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&instance.id)
            .cloned()
    }

    fn request(instance: &Instance) -> pb::AgentInstanceRequest {
        pb::AgentInstanceRequest {
            instance: Some(instance.clone().into()),
        }
    }

    fn has(&self, capability: Capability) -> bool {
        self.info.capabilities.contains(&capability)
    }

    fn runtime(&self) -> pb::AgentRuntimeRequest {
        pb::AgentRuntimeRequest {
            r#type: encode_instance_type(self.instance_type),
        }
    }
}

#[async_trait]
impl Driver for RemoteDriver {
    fn instance_type(&self) -> InstanceType {
        self.instance_type
    }

    fn name(&self) -> &str {
        &self.info.name
    }

    fn runtime_of(&self, instance: &Instance) -> String {
        self.created_on(instance)
            .map(|c| c.runtime)
            .or_else(|| instance.runtime.clone())
            .unwrap_or_else(|| self.info.name.clone())
    }

    fn vsock_of(&self, instance: &Instance) -> Option<VsockEndpoint> {
        match self.created_on(instance) {
            Some(created) => created.vsock,
            None => instance.vsock.clone(),
        }
    }

    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        let reply = self
            .client()
            .create_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        self.remember(instance, reply.runtime, reply.vsock, "create")
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .start_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError> {
        let request = pb::StopOnNodeRequest {
            instance: Some(instance.clone().into()),
            grace: Some(wire_duration(grace)),
        };
        self.client()
            .stop_instance(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn delete(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .delete_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        self.agent
            .runtimes_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&instance.id);
        Ok(())
    }

    async fn inspect(&self, instance: &Instance) -> Result<RuntimeState, DriverError> {
        let reply = self
            .client()
            .inspect_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        RuntimeState::try_from(reply.into_inner()).map_err(|e| self.agent.bad_reply("inspect", e))
    }

    async fn read_log(
        &self,
        instance: &Instance,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        let request = pb::AgentReadLogRequest {
            instance: Some(instance.clone().into()),
            offset,
            max: max as u64,
        };
        let chunk = self
            .client()
            .read_log(request)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(chunk.into())
    }

    fn stats(&self) -> Option<&dyn Stats> {
        self.has(Capability::Stats).then_some(self as &dyn Stats)
    }

    fn console(&self) -> Option<&dyn Console> {
        self.has(Capability::Console)
            .then_some(self as &dyn Console)
    }

    fn pause(&self) -> Option<&dyn Pause> {
        self.has(Capability::Pause).then_some(self as &dyn Pause)
    }

    fn resize(&self) -> Option<&dyn Resize> {
        self.has(Capability::Resize).then_some(self as &dyn Resize)
    }

    fn images(&self) -> Option<&dyn Images> {
        self.has(Capability::Images).then_some(self as &dyn Images)
    }

    fn snapshots(&self) -> Option<&dyn Snapshots> {
        self.has(Capability::Snapshots)
            .then_some(self as &dyn Snapshots)
    }

    fn inventory(&self) -> Option<&dyn Inventory> {
        self.has(Capability::Inventory)
            .then_some(self as &dyn Inventory)
    }

    fn clones(&self) -> Option<&dyn Clones> {
        self.has(Capability::Clones).then_some(self as &dyn Clones)
    }

    fn live_migrate(&self) -> Option<&dyn LiveMigrate> {
        self.has(Capability::LiveMigrate)
            .then_some(self as &dyn LiveMigrate)
    }

    fn cold_migrate(&self) -> Option<&dyn ColdMigrate> {
        self.has(Capability::ColdMigrate)
            .then_some(self as &dyn ColdMigrate)
    }
}

/// Each call is the node's agent's: `ExportDisk` on the source node's,
/// `ImportDisk` and `AbortImport` on the target's. The disk goes through
/// the caller (a server), which only agents reach: the pieces stream from
/// one call into the other as they come, one at a time (each stream's own
/// flow control bounds what is in flight), never a whole disk in memory.
#[async_trait]
impl ColdMigrate for RemoteDriver {
    async fn export_disk(&self, instance: &Instance) -> Result<DiskExport, DriverError> {
        use futures::StreamExt;
        let mut pieces = self
            .client()
            .export_disk(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        // The sizes first, one per disk (none: nothing to copy); the first
        // other piece begins the bytes and goes back in front of them.
        let mut sizes = Vec::new();
        let first = loop {
            match pieces.message().await.map_err(|s| self.error(s))? {
                Some(pb::DiskPiece {
                    piece: Some(pb::disk_piece::Piece::Size(size)),
                }) => sizes.push(size),
                other => break other,
            }
        };
        if sizes.is_empty() && first.is_some() {
            return Err(self.bad_piece("the disks' sizes first"));
        }
        let what = self.agent.what();
        let chunks =
            futures::stream::iter(first.map(Ok))
                .chain(pieces)
                .map(move |piece| match piece {
                    Ok(piece) => disk_chunk(piece, &what),
                    Err(status) => Err(to_driver_error(&status, &what)),
                });
        Ok(DiskExport {
            sizes,
            chunks: chunks.boxed(),
        })
    }

    async fn import_disk(
        &self,
        instance: &Instance,
        sizes: &[u64],
        chunks: DiskChunks,
    ) -> Result<u64, DriverError> {
        use futures::StreamExt;
        // The first message names the instance and carries the first size
        // (none without a disk), the next ones the other sizes.
        let mut sizes = sizes.iter().map(|&size| pb::DiskPiece {
            piece: Some(pb::disk_piece::Piece::Size(size)),
        });
        let first = pb::ImportDiskRequest {
            instance: Some(instance.clone().into()),
            piece: sizes.next(),
        };
        let sizes: Vec<pb::ImportDiskRequest> = sizes
            .map(|piece| pb::ImportDiskRequest {
                instance: None,
                piece: Some(piece),
            })
            .collect();
        // A task feeds the upload one piece ahead (the channel bounds
        // what is in flight). A failed read ends the upload early (the
        // agent then refuses a copy without its digest): the read's error
        // is the one to tell.
        let (pieces, upload) = tokio::sync::mpsc::channel(2);
        let feeder = tokio::spawn(async move {
            let mut chunks = chunks;
            for message in std::iter::once(first).chain(sizes) {
                if pieces.send(message).await.is_err() {
                    return None;
                }
            }
            while let Some(chunk) = chunks.next().await {
                let piece = match chunk {
                    Ok(chunk) => pb::ImportDiskRequest {
                        instance: None,
                        piece: Some(disk_piece(chunk)),
                    },
                    Err(e) => return Some(e),
                };
                if pieces.send(piece).await.is_err() {
                    break;
                }
            }
            None
        });
        // Answered once the whole disk is in: bounded by LONG_CALL_TIMEOUT.
        let reply = self
            .long_client()
            .import_disk(tokio_stream::wrappers::ReceiverStream::new(upload))
            .await;
        if let Ok(Some(e)) = feeder.await {
            return Err(e);
        }
        Ok(reply.map_err(|s| self.error(s))?.into_inner().bytes)
    }

    async fn abort_import(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .abort_import(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }
}

impl RemoteDriver {
    /// An agent's answer that is not a disk's copy as the protocol has it.
    fn bad_piece(&self, wanted: &str) -> DriverError {
        bad_piece(&self.agent.what(), wanted)
    }
}

fn bad_piece(agent: &str, wanted: &str) -> DriverError {
    DriverError::Runtime {
        operation: format!("read a disk's copy from {agent}"),
        source: format!("the agent did not send {wanted}").into(),
    }
}

/// A piece of a disk's copy as it goes on the wire.
pub(crate) fn disk_piece(chunk: DiskChunk) -> pb::DiskPiece {
    pb::DiskPiece {
        piece: Some(match chunk {
            DiskChunk::Data(data) => pb::disk_piece::Piece::Data(data),
            DiskChunk::End { sha256 } => pb::disk_piece::Piece::Sha256(sha256.to_vec()),
        }),
    }
}

/// A piece of a disk's copy from the wire, after its size: bytes or the
/// 32-byte digest. Errors: `Internal` naming `from` for anything else.
pub(crate) fn disk_chunk(piece: pb::DiskPiece, from: &str) -> Result<DiskChunk, DriverError> {
    match piece.piece {
        Some(pb::disk_piece::Piece::Data(data)) => Ok(DiskChunk::Data(data)),
        Some(pb::disk_piece::Piece::Sha256(digest)) => <[u8; 32]>::try_from(digest.as_slice())
            .map(|sha256| DiskChunk::End { sha256 })
            .map_err(|_| bad_piece(from, "a 32-byte SHA-256")),
        _ => Err(bad_piece(from, "disk bytes or their digest after the size")),
    }
}

/// Each call is the node's agent's: `PrepareIncoming` and `AbortIncoming`
/// on the target node's agent, `MigrateLive` on the source's, whose
/// runtime then reaches the target's runtime itself (libvirt
/// peer-to-peer). The target's answer is checked again here as it
/// decodes ([`MigrationTarget::new`]).
#[async_trait]
impl LiveMigrate for RemoteDriver {
    async fn prepare_incoming(&self, instance: &Instance) -> Result<MigrationTarget, DriverError> {
        let mut reply = self
            .client()
            .prepare_incoming(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        let vsock = reply.vsock.take();
        let target = MigrationTarget::try_from(reply).map_err(|e| DriverError::Runtime {
            operation: format!("prepare a live migration through {}", self.agent.what()),
            source: Box::new(e),
        })?;
        // What `vsock_of` answers once the instance runs here, as after a
        // create on this node.
        let runtime = self.runtime_of(instance);
        self.remember(instance, runtime, vsock, "prepare a live migration")?;
        Ok(target)
    }

    async fn migrate_live(
        &self,
        instance: &Instance,
        target: &MigrationTarget,
    ) -> Result<MigrationReport, DriverError> {
        let request = pb::MigrateLiveRequest {
            instance: Some(instance.clone().into()),
            target: Some(target.into()),
        };
        // Bounded by LONG_CALL_TIMEOUT: a migration that takes longer is
        // reported failed here while libvirt finishes or rolls it back by
        // itself (peer-to-peer).
        let reply = self
            .long_client()
            .migrate_live(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(reply.into_inner().into())
    }

    async fn abort_incoming(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .abort_incoming(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }
}

/// The node's driver makes a clone in its create, so a clone is created
/// as any instance is: the agent's `CreateInstance`, the record carrying
/// `clone_of`.
#[async_trait]
impl Clones for RemoteDriver {
    async fn create_clone(&self, clone: &Instance, _: &CloneOrigin) -> Result<(), DriverError> {
        Driver::create(self, clone).await
    }
}

#[async_trait]
impl Stats for RemoteDriver {
    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError> {
        let reply = self
            .client()
            .get_instance_stats(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(reply.into_inner().into())
    }
}

#[async_trait]
impl Console for RemoteDriver {
    async fn attach(&self, instance: &Instance) -> Result<ConsoleStream, DriverError> {
        use pb::agent_console_input::Input;
        let first = pb::AgentConsoleInput {
            input: Some(Input::Instance(instance.clone().into())),
        };
        let data = |data| pb::AgentConsoleInput {
            input: Some(Input::Data(data)),
        };
        let mut client = self.client();
        crate::console::connect(first, data, |input| async move {
            Ok(client.attach_console(input).await?.into_inner())
        })
        .await
        .map_err(|s| self.error(s))
    }
}

#[async_trait]
impl Pause for RemoteDriver {
    async fn pause(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .pause_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .resume_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }
}

#[async_trait]
impl Resize for RemoteDriver {
    async fn resize(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .resize_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// The rule is the spec's own, so the server needs not ask the agent:
    /// an agent's VMs (libvirt) resize in place within their maximums,
    /// its containers whatever the size.
    fn restart_needed(
        &self,
        running: &zixiao_core::InstanceSpec,
        next: &zixiao_core::InstanceSpec,
    ) -> Option<String> {
        match self.instance_type {
            InstanceType::Vm => running.vm_restart_needed(next),
            _ => None,
        }
    }

    /// The agent's `GetRunningSize`. An agent older than that call answers
    /// `Unimplemented`, read as "the spec's size" (`None`) rather than an
    /// error, so a server newer than some of its agents (a rolling upgrade)
    /// keeps reading their instances, only without `runtime_size`. (A
    /// runtime without resize answers the same, and `None` is its answer.)
    ///
    /// Only a VM is asked: an agent's containers take a new size at once
    /// (the rule [`Resize::restart_needed`] follows too), and the server
    /// asks while it answers every read of a running instance.
    async fn running_size(&self, instance: &Instance) -> Result<Option<RuntimeSize>, DriverError> {
        if self.instance_type != InstanceType::Vm {
            return Ok(None);
        }
        let reply = match self
            .client()
            .get_running_size(Self::request(instance))
            .await
        {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(None),
            Err(status) => return Err(self.error(status)),
        };
        Ok(reply.size.map(Into::into))
    }
}

impl RemoteDriver {
    fn snapshot_request(instance: &Instance, name: &SnapshotName) -> pb::AgentSnapshotRequest {
        pb::AgentSnapshotRequest {
            instance: Some(instance.clone().into()),
            snapshot: name.as_str().to_owned(),
        }
    }
}

#[async_trait]
impl Snapshots for RemoteDriver {
    async fn create(
        &self,
        instance: &Instance,
        name: &SnapshotName,
    ) -> Result<SnapshotInfo, DriverError> {
        let reply = self
            .client()
            .create_snapshot(Self::snapshot_request(instance, name))
            .await
            .map_err(|s| self.error(s))?;
        SnapshotInfo::try_from(reply.into_inner()).map_err(|e| self.agent.bad_reply("snapshot", e))
    }

    async fn list(&self, instance: &Instance) -> Result<Vec<SnapshotInfo>, DriverError> {
        let reply = self
            .client()
            .list_snapshots(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        decode_all(reply.into_inner().snapshots)
            .map_err(|e| self.agent.bad_reply("list snapshots", e))
    }

    async fn revert(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        self.client()
            .revert_snapshot(Self::snapshot_request(instance, name))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn delete(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        self.client()
            .delete_snapshot(Self::snapshot_request(instance, name))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }
}

#[async_trait]
impl Images for RemoteDriver {
    /// An archive is a file of this machine, which the node cannot read.
    async fn import(
        &self,
        archive: &Path,
        _name: Option<&zixiao_core::model::ImageName>,
        _progress: &(dyn Fn(ImportProgress) + Send + Sync),
    ) -> Result<Vec<ImageInfo>, DriverError> {
        Err(DriverError::Unsupported(format!(
            "`{}` is a file of this machine, which node `{}` cannot read: import it on the node",
            archive.display(),
            self.agent.node
        )))
    }

    /// The file is one of this machine, which the node cannot read.
    async fn import_file(
        &self,
        file: &Path,
        _name: &zixiao_core::model::NodeImageName,
        kind: zixiao_core::model::ImageKind,
    ) -> Result<ImageInfo, DriverError> {
        Err(DriverError::Unsupported(format!(
            "`{}` is a file of this machine, which node `{}` cannot read: import the {kind} \
             on the node (`zixiao image import` on its state directory)",
            file.display(),
            self.agent.node
        )))
    }

    /// The node pulls from the registry itself; its events cross back.
    async fn pull(
        &self,
        reference: &zixiao_core::ImageRef,
        options: &zixiao_core::driver::PullOptions,
        progress: &(dyn Fn(zixiao_core::driver::PullProgress) + Send + Sync),
    ) -> Result<ImageInfo, DriverError> {
        let wire = encode_pull_options(options.clone());
        let request = pb::AgentPullRequest {
            r#type: encode_instance_type(self.instance_type),
            reference: reference.to_string(),
            credentials: wire.credentials,
            insecure_registries: wire.insecure_registries,
            registry_cas: wire.registry_cas,
            platform: wire.platform,
            kind: wire.kind,
        };
        let mut events = self
            .client()
            .pull_image(request)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        while let Some(event) = events.message().await.map_err(|s| self.error(s))? {
            let Some(event) = event.event else {
                continue;
            };
            match decode_pull_event(event).map_err(|e| self.agent.bad_reply("pull image", e))? {
                Ok(p) => progress(p),
                Err(image) => return Ok(image),
            }
        }
        Err(self.agent.bad_reply(
            "pull image",
            zixiao_core::Error::Internal("the agent ended the pull without the image".to_owned()),
        ))
    }

    async fn list(&self) -> Result<Vec<ImageInfo>, DriverError> {
        let reply = self
            .client()
            .list_images(self.runtime())
            .await
            .map_err(|s| self.error(s))?;
        decode_all(reply.into_inner().images).map_err(|e| self.agent.bad_reply("list images", e))
    }

    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        let request = pb::AgentImageRequest {
            r#type: encode_instance_type(self.instance_type),
            name: name.to_owned(),
        };
        self.client()
            .remove_image(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }
}

#[async_trait]
impl Inventory for RemoteDriver {
    async fn instance_ids(&self) -> Result<BTreeSet<String>, DriverError> {
        let reply = self
            .client()
            .list_runtime_instances(self.runtime())
            .await
            .map_err(|s| self.error(s))?;
        Ok(reply.into_inner().ids.into_iter().collect())
    }

    async fn remove_orphan(&self, id: &str) -> Result<(), DriverError> {
        let request = pb::AgentOrphanRequest {
            r#type: encode_instance_type(self.instance_type),
            id: id.to_owned(),
        };
        self.client()
            .remove_orphan(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }
}
