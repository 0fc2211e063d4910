//! The cluster simulator at scale: 10,000 simulated nodes in 10 zones
//! (zixiao-sim: in this process, speaking the real MembershipService and
//! AgentService) joining two `zixiao server` processes (this executable in
//! the server role) on a private 3-member etcd, 100,000 instances created
//! through the gRPC API by 64 clients, then a steady spell, single node
//! deaths one after another, a zone of 1,000 nodes cut off, the leading
//! server killed and the etcd leader killed. It prints a table and writes
//! `target/bench-results/sim.json`; it fails if the cluster breaks what
//! must always hold (over-commit, an instance on two nodes at once, an
//! instance neither running nor pending with a reason).
//!
//! `cargo bench -p zixiao-benches --bench sim`; `SIM_NODES`, `SIM_ZONES`,
//! `SIM_INSTANCES`, `SIM_KILLS`, `SIM_HEARTBEAT_MS`, `SIM_STEADY_S`
//! choose the sizes (a comma-separated `SIM_NODES` and `SIM_INSTANCES` run
//! several configurations, one row each).

use std::time::Duration;

use zixiao_benches::{machine, write_results};
use zixiao_sim::etcd::{etcd_binary, EtcdCluster};
use zixiao_sim::{run, Servers, SimConfig, StoreTarget};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    zixiao_sim::run::serve_if_asked();
    let machine = machine();
    let nodes = env_list("SIM_NODES", &[10_000]);
    let instances = env_list("SIM_INSTANCES", &[100_000]);
    let zones = env_list("SIM_ZONES", &[10])[0];
    let kills = env_list("SIM_KILLS", &[10])[0];
    let steady = env_list("SIM_STEADY_S", &[30])[0];
    let heartbeat = env_list("SIM_HEARTBEAT_MS", &[1_000])[0];
    let bin =
        etcd_binary().expect("an etcd binary: install etcd-server or set ZIXIAO_TEST_ETCD_BIN");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("# The cluster simulator");
    println!("\nMachine: {machine}. Every figure below is from this machine, shared with the simulated nodes, both servers and the three etcd members.\n");
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for (k, &n) in nodes.iter().enumerate() {
        let count = instances
            .get(k)
            .or(instances.last())
            .copied()
            .unwrap_or(100_000);
        let mut config = SimConfig {
            nodes: n,
            zones,
            instances: count,
            create_concurrency: 64,
            servers: 2,
            server_mode: Servers::Processes,
            steady_window: Duration::from_secs(steady as u64),
            node_kills: kills,
            partition_zone: true,
            kill_leader: true,
            kill_etcd_leader: true,
            progress: |what| eprintln!("zixiao-sim: {what}"),
            ..SimConfig::default()
        };
        config.timing.heartbeat_ms = heartbeat as u64;
        let etcd = EtcdCluster::start(&bin, 32379, 3).expect("a private etcd");
        let report = runtime
            .block_on(run(config, StoreTarget::Owned(etcd)))
            .expect("the simulation runs");
        let failovers: Vec<Duration> = report
            .node_failovers_s
            .iter()
            .map(|s| Duration::from_secs_f64(*s))
            .collect();
        let p50 = zixiao_benches::quantile(&failovers, 0.5).as_secs_f64();
        let p99 = zixiao_benches::quantile(&failovers, 0.99).as_secs_f64();
        println!("| figure | value |\n|---|---|");
        println!(
            "| nodes / zones / instances | {} / {zones} / {} |",
            report.nodes, report.instances
        );
        println!("| join (all nodes ready) | {:.1} s |", report.join_s);
        println!(
            "| creates acknowledged | {:.1} s ({:.0}/s, p50 {:.1} ms, p99 {:.1} ms) |",
            report.create_ack_s, report.creates_per_s, report.create_p50_ms, report.create_p99_ms
        );
        println!("| all running | {:.1} s |", report.all_running_s);
        println!(
            "| steady: heartbeats/s | {:.0} |",
            report.steady.heartbeats_per_s
        );
        println!(
            "| steady: store writes/s | {:.1} |",
            report.steady.writes_per_s
        );
        println!(
            "| steady: server CPU (both) | {:?} % of a core |",
            report.steady.server_cpu_pct.map(|c| c.round())
        );
        println!(
            "| steady: etcd CPU (3 members) | {:?} % of a core |",
            report.steady.etcd_cpu_pct.map(|c| c.round())
        );
        println!(
            "| steady: server RSS (both) | {:?} MiB |",
            report.steady.server_rss_mib.map(|c| c.round())
        );
        println!(
            "| node failover p50 / p99 ({} kills) | {p50:.2} s / {p99:.2} s |",
            failovers.len()
        );
        println!(
            "| zone failover ({} nodes, {} instances) | {:?} s |",
            report.zone_nodes, report.zone_instances, report.zone_failover_s
        );
        println!(
            "| leader server killed: a create runs again | {:?} s |",
            report.leader_kill_s
        );
        println!(
            "| etcd leader killed: a create runs again | {:?} s ({} nodes fenced) |",
            report.etcd_leader_kill_s, report.fences_during_etcd_kill
        );
        println!(
            "| server RSS at the end (both) | {:?} MiB |",
            report.server_rss_mib.map(|c| c.round())
        );
        println!("| fences (all causes) | {} |", report.fences);
        println!("| violations | {} |", report.violations.len());
        broken.extend(report.violations.iter().cloned());
        let mut row = serde_json::to_value(&report).unwrap_or_default();
        row["zones"] = serde_json::json!(zones);
        row["node_failover_p50_s"] = serde_json::json!(p50);
        row["node_failover_p99_s"] = serde_json::json!(p99);
        row["heartbeat_ms"] = serde_json::json!(heartbeat);
        rows.push(row);
    }
    match write_results("sim", &machine, rows) {
        Ok(path) => println!("\nWrote {}", path.display()),
        Err(e) => eprintln!("cannot write the results: {e}"),
    }
    assert!(broken.is_empty(), "what must never happen did: {broken:#?}");
}
