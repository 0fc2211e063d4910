//! The simulator's small configuration in the test suite: 60 simulated
//! nodes in 3 zones speaking the real protocol to two real servers on the
//! test etcd (`ZIXIAO_TEST_ETCD_ENDPOINTS`, under a key prefix of its own),
//! 300 instances, then two node deaths, a zone cut off and healed, and the
//! leading server killed. It asserts what must always hold (no node
//! over-committed, no instance on two nodes at once, every instance running
//! or pending with its reason), never how long anything took.

use std::time::Duration;

use zixiao_cluster::Timing;
use zixiao_sim::{run, Servers, SimConfig, StoreTarget};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_cluster_survives_its_fault_schedule() {
    let Some(endpoints) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")
    else {
        return;
    };
    if !cfg!(feature = "etcd") {
        assert!(
            !zixiao_testing::wait::runtimes_required(),
            "etcd is required but zixiao-sim was built without its `etcd` feature"
        );
        return;
    }
    let config = SimConfig {
        nodes: 60,
        zones: 3,
        instances: 300,
        create_concurrency: 16,
        servers: 2,
        server_mode: Servers::InProcess,
        timing: Timing::default(),
        steady_window: Duration::from_secs(2),
        node_kills: 2,
        partition_zone: true,
        kill_leader: true,
        kill_etcd_leader: false,
        ..SimConfig::default()
    };
    let target = StoreTarget::Shared {
        endpoints: endpoints.split(',').map(str::to_owned).collect(),
        prefix: format!("/sim-test-{}", uuid_like()),
    };
    let report = run(config, target).await.expect("the simulation runs");
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    assert!(
        report.violations.is_empty(),
        "what must never happen did: {:#?}",
        report.violations
    );
    assert_eq!(
        report.node_failovers_s.len(),
        2,
        "both deaths were failed over"
    );
    assert!(report.zone_failover_s.is_some(), "the zone was failed over");
    assert!(
        report.zone_rejoin_s.is_some(),
        "the healed zone's nodes were ready again"
    );
    assert!(
        report.leader_kill_s.is_some(),
        "a create ran after the leader died"
    );
    assert!(report.zone_instances > 0, "the cut-off zone ran instances");
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}
