//! Keeps a server's controller connected to every registered node's agent:
//! each node with a network address gets a [`RemoteAgent`], replaced when
//! the node re-registers from another address or with other runtimes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use zixiao_api::remote::RemoteAgent;
use zixiao_core::controller::NODES_PREFIX;
use zixiao_core::store::{decode, StoreExt, WatchEvent};
use zixiao_core::{Controller, InstanceType, Node};

use crate::election::wait;

type Known = BTreeMap<String, (String, Vec<InstanceType>)>;

/// The agents a controller reaches, kept in step with the registered nodes.
#[derive(Debug, Clone)]
pub struct NodeSync {
    controller: Controller,
    known: Arc<Mutex<Known>>,
}

impl NodeSync {
    /// Connects `controller` to the nodes' agents.
    pub fn new(controller: Controller) -> Self {
        NodeSync {
            controller,
            known: Arc::default(),
        }
    }

    /// Reaches `node` through its agent, unless it is already reached at that address.
    pub fn attach(&self, node: &Node) {
        if node.address == "local" || node.address.is_empty() {
            return;
        }
        let runtimes: Vec<InstanceType> = node.runtimes.iter().copied().collect();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.get(&node.id) == Some(&(node.address.clone(), runtimes.clone())) {
            return;
        }
        match RemoteAgent::new(
            node.id.clone(),
            &node.address,
            node.runtimes.clone(),
            node.missing_runtimes.clone(),
        ) {
            Ok(agent) => {
                self.controller
                    .attach_agent(node.id.clone(), Arc::new(agent));
                known.insert(node.id.clone(), (node.address.clone(), runtimes));
            }
            Err(e) => eprintln!("zixiao server: node `{}`: {}", node.id, e.chain()),
        }
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
                    eprintln!("zixiao server: listing nodes: {}", e.chain());
                    wait(&mut shutdown, period).await;
                    continue;
                }
            };
            let mut events = match self.controller.store().watch(NODES_PREFIX, revision).await {
                Ok(events) => events,
                Err(e) => {
                    eprintln!("zixiao server: watching nodes: {e}");
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
                            eprintln!("zixiao server: watching nodes: {e}");
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
