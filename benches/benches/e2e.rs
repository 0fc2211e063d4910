//! End-to-end creates through the [`Controller`] on the embedded store on
//! disk with the fake driver: how many creates a second it acknowledges
//! (each one durable commit: record, name, placement and allocation), and
//! the latency of each, at 1,000 and 10,000 nodes, with 1 and 64
//! concurrent creators. The controller's reconcilers converge every
//! instance in the background meanwhile (claim, create and start on the
//! fake runtime, running), as a server's would; the time until every one
//! runs is reported too, with the store's commits and the share of time in
//! them, to say where the time goes.
//!
//! Each configuration runs twice: with the convergence meanwhile (what a
//! server does), and with it started once every create is acknowledged
//! (the creates' own cost).
//!
//! `cargo bench -p zixiao-benches --bench e2e` (`E2E_NODES=1000,10000`,
//! `E2E_CONCURRENCY=1,64`, `E2E_CREATES=2000,20000` (per concurrency),
//! `E2E_CONVERGE=meanwhile|after` choose). Prints a table and writes
//! `target/bench-results/e2e.json`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zixiao_benches::{machine, quantile, write_results};
use zixiao_core::controller::{Convergence, ReconcilerOptions};
use zixiao_core::host::HostFacts;
use zixiao_core::store::{KeyValue, LeaseId, Listing, Revision, Txn, WatchStream};
use zixiao_core::{
    Controller, CreateInstance, InstanceSpec, InstanceStatus, InstanceType, LocalAgent, Resources,
    Store, StoreError,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

/// Counts the commits of the store it wraps and the time spent in them.
#[derive(Default)]
struct Meter {
    commits: AtomicU64,
    writes: AtomicU64,
    nanos: AtomicU64,
}

struct CountingStore {
    inner: EmbeddedStore,
    meter: Arc<Meter>,
}

impl fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CountingStore")
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let began = Instant::now();
        self.meter
            .writes
            .fetch_add(txn.writes.len() as u64, Ordering::Relaxed);
        let out = self.inner.commit(txn).await;
        self.meter.commits.fetch_add(1, Ordering::Relaxed);
        self.meter
            .nanos
            .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, after).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

async fn controller(nodes: usize, dir: &std::path::Path) -> (Controller, Arc<Meter>) {
    let meter = Arc::new(Meter::default());
    let store = EmbeddedStore::open(&dir.join("state.redb")).expect("open the embedded store");
    let store = Arc::new(CountingStore {
        inner: store,
        meter: meter.clone(),
    });
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    let mut builder = Controller::builder(store, Arc::new(PluginScheduler::default()))
        .convergence(Convergence::Background);
    let mut registrations = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let agent = LocalAgent::new(HostFacts {
            hostname: format!("node-{i:05}"),
            capacity: Resources {
                cpus: zixiao_core::Cpus::cores(64),
                memory_mib: 256 * 1024,
                disk_gib: 2048,
                instances: 250,
            },
        })
        .with_driver(driver.clone());
        registrations.push(agent.registration(format!("node-{i:05}")));
        builder = builder.agent(format!("node-{i:05}"), Arc::new(agent));
    }
    let controller = builder.build();
    // Registered 64 at a time: they share the store's commits.
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in registrations.chunks(nodes.div_ceil(64).max(1)) {
        let (c, chunk) = (controller.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for r in chunk {
                c.register_node(r).await.expect("register a node");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("registration");
    }
    // The cache holds every node before the clock starts.
    assert_eq!(controller.list_nodes().await.expect("nodes").len(), nodes);
    (controller, meter)
}

/// One row of results.
struct Row {
    converge_after: bool,
    nodes: usize,
    concurrency: usize,
    creates: usize,
    creates_per_s: f64,
    p50: Duration,
    p99: Duration,
    all_running: Duration,
    commits_per_create: f64,
    writes_per_commit: f64,
    commit_share: f64,
}

async fn run(nodes: usize, creates: usize, concurrency: usize, converge_after: bool) -> Row {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (controller, meter) = controller(nodes, dir.path()).await;
    // Converging after every create is acknowledged tells the creates' own
    // cost from the background's.
    let start_reconcilers = || {
        controller.run_reconcilers(ReconcilerOptions {
            workers: 64,
            resync: Duration::from_secs(3600),
            ..ReconcilerOptions::default()
        })
    };
    let mut reconcilers = (!converge_after).then(start_reconcilers);
    let before = (
        meter.commits.load(Ordering::Relaxed),
        meter.writes.load(Ordering::Relaxed),
        meter.nanos.load(Ordering::Relaxed),
    );
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let controller = controller.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..creates).step_by(concurrency) {
                let spec = InstanceSpec::container("busybox")
                    .with_size(1 + (i % 4) as u32, 512 * (1 + (i % 8) as u64));
                let t = Instant::now();
                controller
                    .create_instance(CreateInstance::new(format!("web-{i}"), spec))
                    .await
                    .expect("create");
                latencies.push(t.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(creates);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("a creator"));
    }
    let acknowledged = began.elapsed();
    if reconcilers.is_none() {
        reconcilers = Some(start_reconcilers());
    }
    // Then until the background converges have every instance running
    // (counted, not copied: the count is cheap next to what it measures).
    loop {
        let info = controller.cluster_info().await.expect("info");
        let n = info
            .instances_by_type
            .values()
            .filter_map(|by_status| by_status.get(&InstanceStatus::Running))
            .sum::<usize>();
        if n >= creates {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(600),
            "only {n} of {creates} run after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_running = began.elapsed();
    if let Some(reconcilers) = reconcilers {
        reconcilers.stop();
    }
    let commits = meter.commits.load(Ordering::Relaxed) - before.0;
    let writes = meter.writes.load(Ordering::Relaxed) - before.1;
    let in_commits = Duration::from_nanos(meter.nanos.load(Ordering::Relaxed) - before.2);
    Row {
        converge_after,
        nodes,
        concurrency,
        creates,
        creates_per_s: creates as f64 / acknowledged.as_secs_f64(),
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        all_running,
        commits_per_create: commits as f64 / creates as f64,
        writes_per_commit: writes as f64 / commits.max(1) as f64,
        // Commit time per create over create latency: how much of a create
        // is waiting for the disk.
        commit_share: in_commits.as_secs_f64()
            / latencies
                .iter()
                .sum::<Duration>()
                .as_secs_f64()
                .max(f64::MIN_POSITIVE),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e3 * 100.0).round() / 100.0
}

fn main() {
    let machine = machine();
    let node_counts = env_list("E2E_NODES", &[1_000, 10_000]);
    let concurrencies = env_list("E2E_CONCURRENCY", &[1, 64]);
    let creates = env_list("E2E_CREATES", &[2_000, 20_000]);
    // E2E_CONVERGE=meanwhile or after picks one way (both by default).
    let modes: Vec<bool> = match std::env::var("E2E_CONVERGE").as_deref() {
        Ok("meanwhile") => vec![false],
        Ok("after") => vec![true],
        _ => vec![false, true],
    };
    println!(
        "# Creates through the Controller: embedded store on disk, fake driver, PluginScheduler"
    );
    println!("\nMachine: {machine}. Reconcilers (64 workers) converge every instance in the background, meanwhile or once every create is acknowledged.\n");
    println!("| converge | nodes | concurrency | creates | creates/s | p50 ms | p99 ms | all running s | commits/create | writes/commit |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut rows = Vec::new();
    for &converge_after in &modes {
        for &nodes in &node_counts {
            for (k, &concurrency) in concurrencies.iter().enumerate() {
                let count = creates.get(k).or(creates.last()).copied().unwrap_or(2_000);
                let row = runtime.block_on(run(nodes, count, concurrency, converge_after));
                let mode = if row.converge_after {
                    "after"
                } else {
                    "meanwhile"
                };
                println!(
                    "| {mode} | {} | {} | {} | {:.0} | {} | {} | {:.1} | {:.2} | {:.1} |",
                    row.nodes,
                    row.concurrency,
                    row.creates,
                    row.creates_per_s,
                    ms(row.p50),
                    ms(row.p99),
                    row.all_running.as_secs_f64(),
                    row.commits_per_create,
                    row.writes_per_commit,
                );
                rows.push(serde_json::json!({
                    "convergence": mode,
                    "nodes": row.nodes,
                    "concurrency": row.concurrency,
                    "creates": row.creates,
                    "creates_per_s": (row.creates_per_s * 10.0).round() / 10.0,
                    "p50_ms": ms(row.p50),
                    "p99_ms": ms(row.p99),
                    "all_running_s": (row.all_running.as_secs_f64() * 100.0).round() / 100.0,
                    "commits_per_create": (row.commits_per_create * 100.0).round() / 100.0,
                    "writes_per_commit": (row.writes_per_commit * 10.0).round() / 10.0,
                    "commit_share_of_create_latency": (row.commit_share * 100.0).round() / 100.0,
                }));
            }
        }
    }
    match write_results("e2e", &machine, rows) {
        Ok(path) => println!("\nWrote {}", path.display()),
        Err(e) => eprintln!("cannot write the results: {e}"),
    }
}
