//! [`RemoteAgent`]: a [`NodeAgent`] for a node whose agent runs in another
//! process, reached over gRPC. Its drivers ([`RemoteDriver`]) forward every
//! [`Driver`] call, and the stats, console, pause and snapshot capabilities, to the node's
//! AgentService, so the one Controller drives local and remote nodes alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};
use zixiao_core::driver::{Console, ConsoleStream, Pause, SnapshotInfo, Snapshots, Stats};
use zixiao_core::{
    Driver, DriverError, Instance, InstanceStats, InstanceType, LogChunk, NodeAgent, NodeFacts,
    Resources, RuntimeState,
};

use crate::json;
use crate::pb::agent_service_client::AgentServiceClient;
use crate::pb::{
    console_input, AgentInstanceRequest, AgentReadLogRequest, AgentSnapshotRequest, ConsoleInput,
    Empty, StopOnNodeRequest,
};
use crate::status::to_driver_error;

/// How long a call to an agent may take before it counts as unavailable.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting to an agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an idle or busy connection to an agent is pinged, and how long
/// a ping may go unanswered before the connection counts as dead. A node
/// cut off mid-call is found in about two seconds, not when the call's own
/// deadline (long enough for an image pull) runs out.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// A gRPC channel to `address` (`host:port`, or a full `http://` URL),
/// connected on first use. Errors: `InvalidArgument` for a malformed address.
pub fn channel(address: &str, call_timeout: Duration) -> Result<Channel, zixiao_core::Error> {
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
    runtimes: BTreeSet<InstanceType>,
    missing: BTreeMap<InstanceType, String>,
    runtimes_of: Arc<Mutex<HashMap<String, String>>>,
}

impl RemoteAgent {
    /// The agent of node `node` at `address`, offering `runtimes` (as the node
    /// registered them). Connects on first use. Errors: `InvalidArgument`.
    pub fn new(
        node: impl Into<String>,
        address: &str,
        runtimes: BTreeSet<InstanceType>,
        missing: BTreeMap<InstanceType, String>,
    ) -> Result<Self, zixiao_core::Error> {
        let client = AgentServiceClient::new(channel(address, DEFAULT_CALL_TIMEOUT)?)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        Ok(RemoteAgent {
            node: node.into(),
            client,
            runtimes,
            missing,
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
            .list_local_instances(Empty {})
            .await
            .map_err(|s| to_driver_error(&s, &self.what()))?;
        reply
            .into_inner()
            .items
            .iter()
            .map(|bytes| {
                json::decode::<Instance>("items", bytes).map_err(|e| DriverError::Runtime {
                    operation: format!("list instances of {}", self.what()),
                    source: Box::new(e),
                })
            })
            .collect()
    }

    fn what(&self) -> String {
        format!("the agent of node `{}`", self.node)
    }
}

#[async_trait]
impl NodeAgent for RemoteAgent {
    async fn describe(&self) -> Result<NodeFacts, DriverError> {
        let facts = self
            .client
            .clone()
            .get_node_resources(Empty {})
            .await
            .map_err(|s| to_driver_error(&s, &self.what()))?
            .into_inner();
        let parse = |name: &str| name.parse::<InstanceType>().ok();
        Ok(NodeFacts {
            hostname: facts.hostname,
            capacity: Resources {
                cpus: facts.cpus,
                memory_mib: facts.memory_mib,
                disk_gib: facts.disk_gib,
                instances: facts.instances,
            },
            runtimes: facts.runtimes.iter().filter_map(|n| parse(n)).collect(),
            missing_runtimes: facts
                .missing_runtimes
                .iter()
                .filter_map(|(n, why)| Some((parse(n)?, why.clone())))
                .collect(),
        })
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
        Ok(Arc::new(RemoteDriver {
            agent: self.clone(),
            instance_type,
        }))
    }
}

/// One instance type's driver on a remote node.
#[derive(Debug, Clone)]
pub struct RemoteDriver {
    agent: RemoteAgent,
    instance_type: InstanceType,
}

impl RemoteDriver {
    fn client(&self) -> AgentServiceClient<Channel> {
        self.agent.client.clone()
    }

    fn error(&self, status: tonic::Status) -> DriverError {
        to_driver_error(&status, &self.agent.what())
    }

    fn request(instance: &Instance) -> AgentInstanceRequest {
        AgentInstanceRequest {
            instance_json: json::encode(instance),
        }
    }
}

#[async_trait]
impl Driver for RemoteDriver {
    fn instance_type(&self) -> InstanceType {
        self.instance_type
    }

    fn name(&self) -> &str {
        "remote"
    }

    fn runtime_of(&self, instance: &Instance) -> String {
        let known = self
            .agent
            .runtimes_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&instance.id)
            .cloned();
        known
            .or_else(|| instance.runtime.clone())
            .unwrap_or_else(|| "remote".to_owned())
    }

    async fn create(&self, instance: &Instance) -> Result<(), DriverError> {
        let reply = self
            .client()
            .create_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        self.agent
            .runtimes_of
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.id.clone(), reply.into_inner().runtime);
        Ok(())
    }

    async fn start(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .start_instance(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), DriverError> {
        let request = StopOnNodeRequest {
            instance_json: json::encode(instance),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
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
        decode_reply(&reply.into_inner().json, "inspect", &self.agent)
    }

    async fn read_log(
        &self,
        instance: &Instance,
        offset: u64,
        max: usize,
    ) -> Result<LogChunk, DriverError> {
        let request = AgentReadLogRequest {
            instance_json: json::encode(instance),
            offset,
            max: max as u64,
        };
        let chunk = self
            .client()
            .read_log(request)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(LogChunk {
            data: chunk.data,
            next_offset: chunk.next_offset,
        })
    }

    fn stats(&self) -> Option<&dyn Stats> {
        Some(self)
    }

    fn console(&self) -> Option<&dyn Console> {
        Some(self)
    }

    fn snapshots(&self) -> Option<&dyn Snapshots> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn Pause> {
        Some(self)
    }
}

fn decode_reply<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    agent: &RemoteAgent,
) -> Result<T, DriverError> {
    json::decode::<T>("json", bytes).map_err(|e| DriverError::Runtime {
        operation: format!("{what} through {}", agent.what()),
        source: Box::new(e),
    })
}

#[async_trait]
impl Stats for RemoteDriver {
    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError> {
        let reply = self
            .client()
            .get_instance_stats(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        decode_reply(&reply.into_inner().json, "stats", &self.agent)
    }
}

#[async_trait]
impl Console for RemoteDriver {
    async fn attach(&self, instance: &Instance) -> Result<ConsoleStream, DriverError> {
        let first = ConsoleInput {
            input: Some(console_input::Input::InstanceJson(json::encode(instance))),
        };
        let mut client = self.client();
        crate::console::connect(first, |input| async move {
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
            .pause_on_node(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        self.client()
            .resume_on_node(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }
}

impl RemoteDriver {
    fn snapshot_request(instance: &Instance, name: &str) -> AgentSnapshotRequest {
        AgentSnapshotRequest {
            instance_json: json::encode(instance),
            snapshot: name.to_owned(),
        }
    }
}

#[async_trait]
impl Snapshots for RemoteDriver {
    async fn create(&self, instance: &Instance, name: &str) -> Result<SnapshotInfo, DriverError> {
        let reply = self
            .client()
            .create_snapshot(Self::snapshot_request(instance, name))
            .await
            .map_err(|s| self.error(s))?;
        decode_reply(&reply.into_inner().json, "snapshot", &self.agent)
    }

    async fn list(&self, instance: &Instance) -> Result<Vec<SnapshotInfo>, DriverError> {
        let reply = self
            .client()
            .list_snapshots(Self::request(instance))
            .await
            .map_err(|s| self.error(s))?;
        reply
            .into_inner()
            .items
            .iter()
            .map(|bytes| decode_reply(bytes, "list snapshots", &self.agent))
            .collect()
    }

    async fn revert(&self, instance: &Instance, name: &str) -> Result<(), DriverError> {
        self.client()
            .revert_snapshot(Self::snapshot_request(instance, name))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn delete(&self, instance: &Instance, name: &str) -> Result<(), DriverError> {
        self.client()
            .delete_snapshot(Self::snapshot_request(instance, name))
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }
}
