//! `zixiao-sim`: runs one simulation and prints its report as JSON.
//!
//! ```sh
//! cargo run --release -p zixiao-sim --features etcd -- \
//!     --nodes 2000 --instances 20000 --zones 4 --servers 2
//! ```
//!
//! It starts a private 3-member etcd (`ZIXIAO_TEST_ETCD_BIN` or `etcd` on
//! the `PATH`) on ports from 32379, two server processes (this binary in
//! the server role) and the simulated nodes in this process. Flags:
//! `--nodes N`, `--zones N`, `--instances N`, `--servers N`,
//! `--concurrency N` (create clients), `--heartbeat-ms N`, `--steady-s N`,
//! `--node-kills N`, `--no-partition`, `--no-leader-kill`,
//! `--no-etcd-kill`, `--in-process` (servers in this process).

use std::time::Duration;

use zixiao_sim::etcd::{etcd_binary, EtcdCluster};
use zixiao_sim::{run, Servers, SimConfig, StoreTarget};

fn main() {
    zixiao_sim::run::serve_if_asked();
    let mut config = SimConfig {
        server_mode: Servers::Processes,
        kill_etcd_leader: true,
        progress: |what| eprintln!("zixiao-sim: {what}"),
        ..SimConfig::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--nodes" => config.nodes = number("--nodes") as usize,
            "--zones" => config.zones = number("--zones") as usize,
            "--instances" => config.instances = number("--instances") as usize,
            "--servers" => config.servers = number("--servers") as usize,
            "--concurrency" => config.create_concurrency = number("--concurrency") as usize,
            "--heartbeat-ms" => config.timing.heartbeat_ms = number("--heartbeat-ms"),
            "--steady-s" => config.steady_window = Duration::from_secs(number("--steady-s")),
            "--node-kills" => config.node_kills = number("--node-kills") as usize,
            "--no-partition" => config.partition_zone = false,
            "--no-leader-kill" => config.kill_leader = false,
            "--no-etcd-kill" => config.kill_etcd_leader = false,
            "--in-process" => config.server_mode = Servers::InProcess,
            other => panic!("unknown flag `{other}` (see the source's documentation)"),
        }
    }
    let bin =
        etcd_binary().expect("an etcd binary: install etcd-server or set ZIXIAO_TEST_ETCD_BIN");
    let etcd = EtcdCluster::start(&bin, 32379, 3).expect("a private etcd");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime
        .block_on(run(config, StoreTarget::Owned(etcd)))
        .expect("the simulation runs");
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}
