//! Keeps a server's controller connected to every registered node's agent:
//! each node with a network address gets a [`RemoteAgent`], replaced when
//! the node re-registers from another address or with other runtimes or
//! drivers, and a [`RemoteNetworkHost`] when it declares the
//! [`NETWORKS_TRAIT`]. When a node registers, its network devices are
//! reconciled against the store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use zixiao_api::network::{RemoteNetworkHost, NETWORKS_TRAIT};
use zixiao_api::remote::RemoteAgent;
use zixiao_api::secure::ServerTls;
use zixiao_core::controller::NODES_PREFIX;
use zixiao_core::store::{decode, StoreExt, WatchEvent};
use zixiao_core::{Controller, DriverInfo, InstanceFilter, InstanceType, NetworkHost, Node};

use crate::election::wait;

/// What a node was attached with: address, runtimes and their drivers,
/// whether it sets up networks.
type Known = BTreeMap<String, (String, Vec<InstanceType>, Vec<DriverInfo>, bool)>;

/// The agents a controller reaches, kept in step with the registered nodes.
#[derive(Debug, Clone)]
pub struct NodeSync {
    controller: Controller,
    known: Arc<Mutex<Known>>,
    hosts: Arc<Mutex<BTreeMap<String, Arc<RemoteNetworkHost>>>>,
    tls: Option<ServerTls>,
}

impl NodeSync {
    /// Connects `controller` to the nodes' agents.
    pub fn new(controller: Controller) -> Self {
        NodeSync {
            controller,
            known: Arc::default(),
            hosts: Arc::default(),
            tls: None,
        }
    }

    /// Calls agents over TLS with `tls` (the server's certificate
    /// presented, each node's own required), when given.
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Reaches `node` through its agent, unless it is already reached at that address.
    pub fn attach(&self, node: &Node) {
        if node.address == "local" || node.address.is_empty() {
            return;
        }
        let runtimes: Vec<InstanceType> = node.runtimes.iter().copied().collect();
        let drivers: Vec<DriverInfo> = node.drivers.values().cloned().collect();
        // What its agent reported: an operator cannot declare a network host.
        let networks = node.reported_traits().contains(NETWORKS_TRAIT);
        let seen = (node.address.clone(), runtimes, drivers, networks);
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.get(&node.id) == Some(&seen) {
            return;
        }
        let tls = match &self.tls {
            Some(tls) => match tls.agent_client_config(&node.id) {
                Ok(config) => Some(config),
                Err(e) => {
                    tracing::warn!("node `{}`: {}", node.id, e.chain());
                    return;
                }
            },
            None => None,
        };
        let agent = RemoteAgent::new_tls(node, tls.clone());
        let host = if networks {
            RemoteNetworkHost::new_tls(node.id.clone(), &node.address, tls).map(Some)
        } else {
            Ok(None)
        };
        match (agent, host) {
            (Ok(agent), Ok(host)) => {
                self.controller
                    .attach_agent(node.id.clone(), Arc::new(agent));
                let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
                match host {
                    Some(host) => {
                        let host = Arc::new(host);
                        self.controller
                            .attach_network_host(node.id.clone(), host.clone());
                        hosts.insert(node.id.clone(), host);
                    }
                    // Re-registered without networks: leave it out of them.
                    None => {
                        self.controller.detach_network_host(&node.id);
                        hosts.remove(&node.id);
                    }
                }
                known.insert(node.id.clone(), seen);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("node `{}`: {}", node.id, e.chain())
            }
        }
    }

    /// In the background: ensures every network on `node`, removes the
    /// Zixiao devices, rules and namespaces there that neither the networks
    /// nor the instances placed on it name, and sets its overlay peers
    /// again (after an agent's restart). A node without a network host is
    /// left alone.
    pub fn reconcile_networks_of(&self, node: &Node) {
        let host = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node.id)
            .cloned();
        let Some(host) = host else { return };
        let controller = self.controller.clone();
        let node = node.id.clone();
        tokio::spawn(async move {
            let reconciled = async {
                // What the node holds, before the store is read (see `inventory`).
                let installation = controller.installation().await?;
                let seen = host.inventory().await?;
                let networks = controller.list_networks().await?;
                let filter = InstanceFilter {
                    node: Some(node.clone()),
                    ..InstanceFilter::default()
                };
                let instances = controller.list_instances(&filter).await?;
                let removed = host
                    .reconcile(&installation, &networks, &instances, &seen)
                    .await?;
                // Its overlays' forwarding entries, which a restarted node lost.
                controller.sync_overlays_on(&node).await?;
                Ok::<_, zixiao_core::Error>(removed)
            };
            match reconciled.await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(
                        node = %node,
                        "removed stale network objects: {}",
                        removed.join(", ")
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(
                        node = %node,
                        "reconciling its networks: {}",
                        e.chain()
                    )
                }
            }
        });
    }

    /// Attaches every registered node now. Errors: the store's.
    pub async fn sync_once(&self) -> zixiao_core::Result<zixiao_core::store::Revision> {
        let (nodes, revision) = self
            .controller
            .store()
            .list_objects::<Node, _>(|_| true)
            .await?;
        nodes.iter().for_each(|n| self.attach(n));
        Ok(revision)
    }

    /// Attaches every node as it registers (watching the store), until
    /// `shutdown`; after a watch failure, lists again after `period`.
    pub async fn run(self, period: Duration, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let revision = match self.sync_once().await {
                Ok(revision) => revision,
                Err(e) => {
                    tracing::warn!("listing nodes: {}", e.chain());
                    wait(&mut shutdown, period).await;
                    continue;
                }
            };
            let mut events = match self.controller.store().watch(NODES_PREFIX, revision).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!("watching nodes: {e}");
                    wait(&mut shutdown, period).await;
                    continue;
                }
            };
            loop {
                let mut stop = shutdown.clone();
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(WatchEvent::Put(kv))) => {
                            if let Ok(node) = decode::<Node>(&kv) {
                                self.attach(&node);
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::warn!("watching nodes: {e}");
                            break;
                        }
                        None => break,
                    },
                    _ = stop.changed() => return,
                }
            }
            wait(&mut shutdown, period).await;
        }
    }
}
