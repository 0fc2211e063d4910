//! End-to-end creates per second through the [`Controller`]: validate,
//! persist, schedule, persist the placement, create and start on the node
//! (a fake driver), with the embedded store on disk. The store and the
//! scheduler are wrapped in timers (tower style: wrappers, not flags) to
//! say where the time goes.
//!
//! `cargo bench -p zixiao-benches --bench e2e` (set `E2E_NODES=100,1000`
//! and `E2E_CREATES=1000` to choose the sizes).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zixiao_core::host::HostFacts;
use zixiao_core::store::{KeyValue, LeaseId, Listing, Revision, Txn, WatchStream};
use zixiao_core::{
    Controller, CreateInstance, Instance, InstanceSpec, InstanceStatus, InstanceType, LocalAgent,
    NodeId, Resources, Scheduler, SchedulingContext, Store, StoreError, Unschedulable,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

/// Time spent in, and calls of, one kind of operation.
#[derive(Debug, Default)]
struct Meter {
    nanos: AtomicU64,
    calls: AtomicU64,
}

impl Meter {
    fn record(&self, since: Instant) {
        self.nanos
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> (Duration, u64) {
        (
            Duration::from_nanos(self.nanos.swap(0, Ordering::Relaxed)),
            self.calls.swap(0, Ordering::Relaxed),
        )
    }
}

/// A [`Store`] that times each call of the store it wraps.
#[derive(Debug, Default)]
struct Meters {
    get: Meter,
    list: Meter,
    commit: Meter,
    place: Meter,
}

struct TimedStore<S> {
    inner: S,
    meters: Arc<Meters>,
}

impl<S> fmt::Debug for TimedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TimedStore")
    }
}

#[async_trait]
impl<S: Store> Store for TimedStore<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let began = Instant::now();
        let out = self.inner.get(key).await;
        self.meters.get.record(began);
        out
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let began = Instant::now();
        let out = self.inner.list(prefix).await;
        self.meters.list.record(began);
        out
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let began = Instant::now();
        let out = self.inner.commit(txn).await;
        self.meters.commit.record(began);
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

/// A [`Scheduler`] that times each placement of the scheduler it wraps.
#[derive(Debug)]
struct TimedScheduler {
    inner: PluginScheduler,
    meters: Arc<Meters>,
}

impl Scheduler for TimedScheduler {
    fn place(
        &self,
        instance: &Instance,
        cx: &SchedulingContext<'_>,
    ) -> Result<NodeId, Unschedulable> {
        let began = Instant::now();
        let out = self.inner.place(instance, cx);
        self.meters.place.record(began);
        out
    }
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

async fn controller(nodes: usize, dir: &std::path::Path) -> (Controller, Arc<Meters>) {
    let meters = Arc::new(Meters::default());
    let store = EmbeddedStore::open(&dir.join("state.redb")).expect("open the embedded store");
    let store = Arc::new(TimedStore {
        inner: store,
        meters: meters.clone(),
    });
    let scheduler = Arc::new(TimedScheduler {
        inner: PluginScheduler::default(),
        meters: meters.clone(),
    });
    let controller = Controller::builder(store, scheduler).build();
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    for i in 0..nodes {
        let agent = LocalAgent::new(HostFacts {
            hostname: format!("node-{i:04}"),
            capacity: Resources {
                cpus: 64,
                memory_mib: 256 * 1024,
                disk_gib: 2048,
                instances: 250,
            },
        })
        .with_driver(driver.clone());
        let registration = agent.registration(format!("node-{i:04}"));
        controller
            .register_node(registration)
            .await
            .expect("register a node");
        controller.attach_agent(format!("node-{i:04}"), Arc::new(agent));
    }
    (controller, meters)
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

async fn run(nodes: usize, creates: usize, concurrency: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (controller, meters) = controller(nodes, dir.path()).await;
    for m in [&meters.get, &meters.list, &meters.commit, &meters.place] {
        m.take();
    }
    let create_time = Arc::new(Meter::default());
    let converge_time = Arc::new(Meter::default());
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let controller = controller.clone();
        let (create_time, converge_time) = (create_time.clone(), converge_time.clone());
        tasks.spawn(async move {
            let mut running = 0usize;
            for i in (worker..creates).step_by(concurrency) {
                let spec = InstanceSpec::container("busybox")
                    .with_size(1 + (i % 4) as u32, 512 * (1 + (i % 8) as u64));
                let t = Instant::now();
                let created = controller
                    .create_instance(CreateInstance::new(format!("web-{i}"), spec))
                    .await
                    .expect("create");
                create_time.record(t);
                let t = Instant::now();
                let done = controller.converge(&created.id).await.expect("converge");
                converge_time.record(t);
                if done.is_some_and(|i| i.status == InstanceStatus::Running) {
                    running += 1;
                }
            }
            running
        });
    }
    let mut running = 0;
    while let Some(done) = tasks.join_next().await {
        running += done.expect("a worker");
    }
    let elapsed = began.elapsed();
    let (create, _) = create_time.take();
    let (converge, _) = converge_time.take();
    let (get, gets) = meters.get.take();
    let (list, lists) = meters.list.take();
    let (commit, commits) = meters.commit.take();
    let (place, places) = meters.place.take();
    let per = |calls: u64| calls as f64 / creates as f64;
    println!(
        "| {nodes} | {concurrency} | {creates} | {running} | {:.0} | {} | {} | {} ({:.1}/create) | {} ({:.1}) | {} ({:.1}) | {} ({:.1}) |",
        creates as f64 / elapsed.as_secs_f64(),
        ms(create),
        ms(converge),
        ms(commit),
        per(commits),
        ms(list),
        per(lists),
        ms(get),
        per(gets),
        ms(place),
        per(places),
    );
}

fn main() {
    let creates = env_list("E2E_CREATES", &[1_000])[0];
    println!(
        "# Creates through the Controller: embedded store on disk, fake driver, PluginScheduler"
    );
    println!("\nTimes are sums over all creates in ms; with concurrency they overlap, so they can exceed the wall time.\n");
    println!("| nodes | concurrency | creates | running | creates/s | create_instance ms | converge ms | store commit ms (calls) | store list ms | store get ms | scheduler place ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for nodes in env_list("E2E_NODES", &[100, 1_000]) {
        for concurrency in [1, 16] {
            runtime.block_on(run(nodes, creates, concurrency));
        }
    }
}
