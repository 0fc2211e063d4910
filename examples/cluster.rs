//! A one-machine cluster from a Rust program: a server over the embedded
//! store and an agent for this machine, both in this process, then a client
//! that lists the nodes and the cluster's totals over gRPC as `zixiao
//! --endpoint` would, and the agent leaving again.
//!
//! ```text
//! cargo run -p zixiao-examples --example cluster -- /tmp/zixiao-cluster-example
//! ```
//!
//! A real deployment runs `zixiao server --etcd URL` replicas and one
//! `zixiao agent` (with its fencing watchdog) per node; see
//! `zixiao-cluster/README.md`. This example starts no watchdog: nothing is
//! fenced if it is killed.

use std::time::Duration;

use zixiao_cluster::{agent, server, AgentOptions, ServerOptions, Timing};
use zixiao_core::{LocalAgent, NodeStatus};
use zixiao_embedded::zixiao_drivers::{discover, DriverConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("zixiao-cluster-example")
            .display()
            .to_string()
    }));
    std::fs::create_dir_all(&dir)?;

    // The server: the Controller over a store, the gRPC API, the leader's loops.
    let store = std::sync::Arc::new(zixiao_store::EmbeddedStore::open(&dir.join("state.redb"))?);
    let server = server::start(
        server::controller(store),
        ServerOptions {
            limits: Default::default(),
            id: "server-1".to_owned(),
            listen: "127.0.0.1:0".parse()?,
            timing: Timing::default(),
            metrics: None,
        },
    )
    .await?;
    println!("server-1 serves on {}", server.addr());

    // The agent: this machine's runtimes, as `zixiao agent` finds them.
    let agent_dir = dir.join("agent");
    let runtimes = discover(&DriverConfig::new(agent_dir.join("runtime"))).await;
    let mut local = LocalAgent::new(zixiao_embedded::probe(&agent_dir)?);
    for driver in runtimes.drivers {
        local = local.with_driver(driver);
    }
    for (instance_type, reason) in runtimes.missing {
        local = local.with_missing_runtime(instance_type, reason);
    }
    let worker = agent::start(
        AgentOptions {
            limits: Default::default(),
            onboarding: Default::default(),
            name: "worker-1".to_owned(),
            servers: vec![server.addr().to_string()],
            region: "default".to_owned(),
            zone: "default".to_owned(),
            labels: Default::default(),
            listen: "127.0.0.1:0".parse()?,
            advertise: None,
            state_dir: agent_dir,
            timing: Timing::default(),
            tls: None,
        },
        local,
    )
    .await?;

    // A client, as any other process would be.
    let client = zixiao_api::connect(&server.addr().to_string())?;
    let node = loop {
        match client.get_node("worker-1").await {
            Ok(node) if node.status == NodeStatus::Ready => break node,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    println!(
        "node {} is {}: {} cpus, {} MiB; runs {:?}",
        node.id,
        node.status.as_str(),
        node.capacity.cpus,
        node.capacity.memory_mib,
        node.runtimes
    );
    let info = client.cluster_info().await?;
    println!(
        "cluster: {} node(s), {} instance(s), leader {}",
        info.nodes,
        info.instances,
        info.leader.as_deref().unwrap_or("-")
    );

    // Leaving drains the node and deregisters it.
    worker.leave().await?;
    println!(
        "worker-1 left: {} node(s)",
        client.list_nodes().await?.len()
    );
    server.shutdown().await;
    Ok(())
}
