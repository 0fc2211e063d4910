//! A server's node usage history with its hosts' own usage, on the real
//! embedded store and scheduler with fake runtimes: a heartbeat's host
//! reading goes into the node's next sample only, a node without one has
//! unknown host figures (not zeros), the local node's host is this machine
//! read from `/proc`, and a deregistered node's reading is forgotten.

use std::sync::Arc;

use chrono::Utc;
use zixiao_core::api::{Api, Client, StatsHistory};
use zixiao_core::host_usage::HostUsage;
use zixiao_core::Controller;
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::{fake_agent, fake_host};

fn reading(used_millicores: Option<u64>) -> HostUsage {
    HostUsage {
        at: Utc::now(),
        cpu_millicores_used: used_millicores,
        cpu_millicores_total: 8000,
        memory_used_bytes: 3 << 30,
        memory_total_bytes: 8 << 30,
        load1: 0.42,
    }
}

#[tokio::test]
async fn host_readings_go_into_the_next_sample_of_their_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let agents: Vec<_> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|n| (n, Arc::new(fake_agent(fake_host(n)))))
        .collect();
    let mut builder = Controller::builder(store, Arc::new(PluginScheduler::default()));
    for (name, agent) in &agents {
        builder = builder.agent(*name, agent.clone());
    }
    let controller = builder.build();
    for (name, agent) in &agents {
        controller
            .register_node(agent.registration(*name))
            .await
            .expect("register");
    }
    let api: Arc<dyn Api> = Arc::new(controller.clone());
    let history = StatsHistory::new(api);
    let client = Client::new(Arc::new(history.clone()));
    // n1 heartbeats with its host's usage; n2 is an older agent; n3 is
    // the server's own node, read from this machine.
    history.sample_local_host("n3");
    history.host_reports().record("n1", reading(Some(1500)));
    history.sample_once().await.expect("a round");

    let n1 = client.node_stats_history("n1").await.expect("n1");
    assert_eq!(n1.len(), 1, "{n1:?}");
    assert_eq!(n1[0].host_cpu_millicores, Some(1500));
    assert_eq!(n1[0].host_cpu_capacity_millicores, Some(8000));
    assert_eq!(n1[0].host_memory_bytes, Some(3 << 30));
    assert_eq!(n1[0].host_memory_capacity_bytes, Some(8 << 30));
    assert_eq!(n1[0].host_load1, Some(0.42));
    let n2 = client.node_stats_history("n2").await.expect("n2");
    assert_eq!(n2[0].host_memory_bytes, None, "unknown, not zero: {n2:?}");
    assert_eq!(n2[0].host_cpu_capacity_millicores, None);
    let n3 = client.node_stats_history("n3").await.expect("n3");
    let mem_total = zixiao_testing::host::mem_total_bytes();
    assert_eq!(n3[0].host_memory_capacity_bytes, Some(mem_total), "{n3:?}");
    assert_eq!(
        n3[0].host_cpu_capacity_millicores,
        Some(zixiao_testing::host::online_cpus() * 1000)
    );
    // A first reading has no CPU figure rather than a made-up one.
    assert_eq!(n3[0].host_cpu_millicores, None, "{n3:?}");

    // A round with no new reading from n1: unknown again, not the old one.
    // A first reading without CPU keeps the rest.
    history.host_reports().record("n2", reading(None));
    history.sample_once().await.expect("a round");
    let n1 = client.node_stats_history("n1").await.expect("n1");
    assert_eq!(n1.len(), 2);
    assert_eq!(n1[1].host_memory_bytes, None, "{n1:?}");
    let n2 = client.node_stats_history("n2").await.expect("n2");
    assert_eq!(n2[1].host_cpu_millicores, None);
    assert_eq!(n2[1].host_memory_bytes, Some(3 << 30));
    // The local node's second reading has the CPU used between the two.
    let n3 = client.node_stats_history("n3").await.expect("n3");
    let cpu = n3[1].host_cpu_millicores;
    assert!(
        cpu.is_none_or(|c| c <= zixiao_testing::host::online_cpus() * 1000),
        "{n3:?}"
    );

    // A node deregistered between a heartbeat and the round: its reading
    // is dropped with it.
    history.host_reports().record("n1", reading(Some(10)));
    controller.deregister_node("n1").await.expect("deregister");
    history.sample_once().await.expect("a round");
    let gone = client
        .node_stats_history("n1")
        .await
        .expect_err("n1 is gone");
    assert_eq!(gone.kind(), zixiao_core::ErrorKind::NotFound);
    // Back again, it starts a new series without that old reading.
    controller
        .register_node(agents[0].1.registration("n1"))
        .await
        .expect("register again");
    history.sample_once().await.expect("a round");
    let n1 = client.node_stats_history("n1").await.expect("n1");
    assert_eq!(n1.len(), 1, "{n1:?}");
    assert_eq!(n1[0].host_memory_bytes, None, "{n1:?}");
}
