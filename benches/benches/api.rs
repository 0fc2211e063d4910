//! Creates per second through the gRPC API, against raw etcd puts at the
//! same concurrency in the same run: a private 3-member etcd on loopback
//! (`ZIXIAO_TEST_ETCD_BIN` or `etcd` on the `PATH`; ports from 33379), one
//! `zixiao server` in this process on it, and 100 simulated nodes
//! (zixiao-sim: the real MembershipService and AgentService) that the
//! server's reconcilers converge every instance onto meanwhile. With 1 and
//! 64 concurrent clients, each its own connection, `Wait::No` (a create is
//! acknowledged once its one commit is). A raw put is one 512-byte
//! `EtcdStore::commit` of one key.
//!
//! Each client count runs twice: first with convergence after the creates
//! (the benchmark holds the leader key meanwhile, so the server only
//! serves: the creates' own cost), then with the server leading and
//! converging meanwhile (what a cluster does).
//!
//! `cargo bench -p zixiao-benches --bench api` (`API_CLIENTS=1,64`,
//! `API_CREATES=1000,10000` per client count). Prints a table and writes
//! `target/bench-results/api.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zixiao_benches::{machine, quantile, write_results};
use zixiao_cluster::server::{self, ServerOptions};
use zixiao_cluster::Timing;
use zixiao_core::store::{Precondition, Txn};
use zixiao_core::{CreateInstance, InstanceSpec, InstanceStatus, Resources, Store, Wait};
use zixiao_sim::etcd::{etcd_binary, EtcdCluster};
use zixiao_sim::nodes::{Fleet, NodeShape};
use zixiao_store::{EtcdStore, EtcdStoreOptions};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

async fn etcd_store(endpoints: &[String], prefix: &str) -> Arc<dyn Store> {
    Arc::new(
        EtcdStore::connect(EtcdStoreOptions::new(endpoints.to_vec()).key_prefix(prefix))
            .await
            .expect("etcd"),
    )
}

/// `count` raw puts from `clients` tasks: puts per second.
async fn raw_puts(store: &Arc<dyn Store>, clients: usize, count: usize, round: usize) -> f64 {
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let store = store.clone();
        tasks.spawn(async move {
            for i in (c..count).step_by(clients) {
                let txn = Txn::new().put(
                    format!("/raw/{round}/{i}"),
                    vec![b'x'; 512],
                    Precondition::None,
                );
                store.commit(txn).await.expect("put");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a putter");
    }
    count as f64 / began.elapsed().as_secs_f64()
}

/// `count` creates through the API from `clients` connections: creates
/// per second and each create's latency.
async fn creates(addr: &str, clients: usize, count: usize, round: usize) -> (f64, Vec<Duration>) {
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = zixiao_api::connect(addr).expect("client");
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (c..count).step_by(clients) {
                let spec = InstanceSpec::container("busybox").with_size(1, 512);
                let t = Instant::now();
                client
                    .create_instance(
                        CreateInstance::new(format!("api-{round}-{i}"), spec),
                        Wait::No,
                    )
                    .await
                    .expect("create");
                latencies.push(t.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("a client"));
    }
    (count as f64 / began.elapsed().as_secs_f64(), latencies)
}

/// Waits (at most ten minutes) until `made` instances run.
async fn wait_running(client: &zixiao_core::Client, made: usize) {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(600) {
        let info = client.cluster_info().await.expect("info");
        let running: usize = info
            .instances_by_type
            .values()
            .filter_map(|s| s.get(&InstanceStatus::Running))
            .sum();
        if running >= made {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e3 * 100.0).round() / 100.0
}

fn main() {
    let machine = machine();
    let bin =
        etcd_binary().expect("an etcd binary: install etcd-server or set ZIXIAO_TEST_ETCD_BIN");
    let etcd = EtcdCluster::start(&bin, 33379, 3).expect("a private etcd");
    let endpoints = etcd.endpoints();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let client_counts = env_list("API_CLIENTS", &[1, 64]);
    let counts = env_list("API_CREATES", &[1_000, 10_000]);
    println!("# Creates through the gRPC API against raw etcd puts, same concurrency, same run");
    println!("\nMachine: {machine}. A private 3-member etcd, one server in this process, 100 simulated nodes; convergence after the creates (the benchmark holds the lead), then meanwhile.\n");
    println!(
        "| converge | clients | creates | creates/s | p50 ms | p99 ms | raw etcd puts/s | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let rows = runtime.block_on(async {
        zixiao_sim::raise_file_limit();
        let raw = etcd_store(&endpoints, "/bench-raw").await;
        let store = etcd_store(&endpoints, "").await;
        // The benchmark holds the lead first: the server serves, nobody converges.
        let lead = store
            .grant_lease(Duration::from_secs(5))
            .await
            .expect("a lease");
        store
            .commit(Txn::new().put_with_lease(
                zixiao_cluster::election::LEADER_KEY,
                b"the api benchmark".to_vec(),
                Precondition::Absent,
                lead,
            ))
            .await
            .expect("the lead");
        let keeper = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = store.keep_alive(lead).await;
                }
            })
        };
        let timing = Timing::default();
        let handle = server::start(
            server::controller(store.clone()),
            ServerOptions {
                limits: Default::default(),
                id: "bench-0".to_owned(),
                listen: "127.0.0.1:0".parse().expect("addr"),
                timing,
                metrics: None,
            },
        )
        .await
        .expect("server");
        let addr = handle.addr().to_string();
        let fleet = Fleet::start(
            &NodeShape {
                nodes: 100,
                zones: 4,
                capacity: Resources {
                    cpus: zixiao_core::Cpus::cores(512),
                    memory_mib: 512 * 1024,
                    disk_gib: 1024,
                    instances: 1_000,
                },
            },
            timing,
        )
        .await
        .expect("nodes");
        fleet.join(std::slice::from_ref(&addr), timing).await.expect("join");
        let client = zixiao_api::connect(&addr).expect("client");
        let mut rows = Vec::new();
        let mut made = 0usize;
        let mut round = 0usize;
        for converge_after in [true, false] {
            if !converge_after {
                // Hand the lead over: the server converges what was made.
                keeper.abort();
                store.revoke_lease(lead).await.expect("revoke");
                wait_running(&client, made).await;
            }
            for (k, &clients) in client_counts.iter().enumerate() {
                let count = counts.get(k).or(counts.last()).copied().unwrap_or(1_000);
                let puts_per_s = raw_puts(&raw, clients, count, round).await;
                let (creates_per_s, latencies) = creates(&addr, clients, count, round).await;
                made += count;
                round += 1;
                if !converge_after {
                    // The converges finish before the next round.
                    wait_running(&client, made).await;
                }
                let ratio = creates_per_s / puts_per_s.max(f64::MIN_POSITIVE);
                let (p50, p99) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99));
                let mode = if converge_after { "after" } else { "meanwhile" };
                println!(
                    "| {mode} | {clients} | {count} | {creates_per_s:.0} | {} | {} | {puts_per_s:.0} | {ratio:.2} |",
                    ms(p50),
                    ms(p99)
                );
                rows.push(serde_json::json!({
                    "convergence": mode,
                    "clients": clients,
                    "creates": count,
                    "creates_per_s": (creates_per_s * 10.0).round() / 10.0,
                    "p50_ms": ms(p50),
                    "p99_ms": ms(p99),
                    "etcd_puts_per_s": (puts_per_s * 10.0).round() / 10.0,
                    "ratio_to_etcd": (ratio * 100.0).round() / 100.0,
                }));
            }
        }
        drop(fleet);
        handle.shutdown().await;
        rows
    });
    drop(etcd);
    match write_results("api", &machine, rows) {
        Ok(path) => println!("\nWrote {}", path.display()),
        Err(e) => eprintln!("cannot write the results: {e}"),
    }
}
