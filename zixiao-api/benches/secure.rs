//! What TLS, authentication, authorization and audit cost a create made
//! through the API: the same controller (embedded store on disk, fake
//! driver, every create waiting until the instance runs) served twice in
//! one process, once plain (every caller the local admin, no audit) and
//! once as `zixiao server --pki` serves it (TLS 1.3, an operator's bearer
//! token checked on every call, the project judged, an audit record
//! written). Rounds alternate between the two so drift on a shared
//! machine falls on both alike.
//!
//! After the rounds it times, alone and in the same process, what the
//! secure path adds to each create: authenticating the bearer token, and
//! recording the call before it runs and its outcome after (the record
//! staged, written by the next commit; here no create follows, so the
//! log's own writes, one per block of numbers it sets aside, carry them),
//! beside a durable audit record (as a refusal gets) and bare durable and
//! deferred store commits, so the table's difference can be traced to its
//! parts.
//!
//! `cargo bench -p zixiao-api --bench secure` prints a table and writes
//! `target/bench-results/secure-api.json` (`SECURE_CREATES=200` and
//! `SECURE_ROUNDS=8` choose the sizes; an even number of rounds
//! puts each mode first equally often).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zixiao_api::secure::{api_server, serve_routes, ServerTls};
use zixiao_api::ConnectOptions;
use zixiao_auth::{
    AuditEntry, AuditLog, AuthStore, Authenticator, Outcome, Pki, ProjectName, Retention, Role,
    SubjectName, TokenSecret, UserName, PROJECT_LABEL,
};
use zixiao_core::api::Request;
use zixiao_core::host::HostFacts;
use zixiao_core::store::{Precondition, Txn};
use zixiao_core::{
    Client, Controller, CreateInstance, InstanceSpec, InstanceType, LocalAgent, Resources, Store,
    SystemClock, Wait,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A controller over the embedded store in `dir` with 10 nodes of fake
/// containers, converging in its callers.
async fn controller(dir: &Path) -> (Controller, Arc<dyn Store>) {
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.join("state.redb")).expect("open the store"));
    let controller =
        Controller::builder(store.clone(), Arc::new(PluginScheduler::default())).build();
    let driver = Arc::new(FakeDriver::new(InstanceType::Container));
    for i in 0..10 {
        let name = format!("node-{i:02}");
        let agent = LocalAgent::new(HostFacts {
            hostname: name.clone(),
            capacity: Resources {
                cpus: zixiao_core::Cpus::cores(1024),
                memory_mib: 1024 * 1024,
                disk_gib: 100_000,
                instances: 10_000,
            },
        })
        .with_driver(driver.clone());
        controller
            .register_node(agent.registration(name.clone()))
            .await
            .expect("register a node");
        controller.attach_agent(name, Arc::new(agent));
    }
    (controller, store)
}

/// Serves `controller` on a loopback port, with `tls` or without; the
/// server's address.
async fn serve(
    controller: &Controller,
    store: &Arc<dyn Store>,
    tls: Option<ServerTls>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut routes = tonic::service::Routes::builder();
    api_server(
        Arc::new(controller.clone()),
        store.clone(),
        "bench",
        tls.as_ref(),
    )
    .add_to(&mut routes);
    let routes = routes.routes();
    tokio::spawn(async move {
        serve_routes(
            routes,
            listener,
            tls.as_ref(),
            &zixiao_api::Limits::default(),
            std::future::pending(),
        )
        .await
        .expect("serve");
    });
    addr
}

/// One round: `creates` creates through `client` by `concurrency` workers;
/// each create's latency, and the round's wall time.
async fn round(
    client: &Client,
    tag: &str,
    creates: usize,
    concurrency: usize,
) -> (Vec<Duration>, Duration) {
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let tag = tag.to_owned();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..creates).step_by(concurrency) {
                let mut request = CreateInstance::new(
                    format!("{tag}-{i}"),
                    InstanceSpec::container("busybox").with_size(1, 64),
                );
                request
                    .labels
                    .insert(PROJECT_LABEL.to_owned(), "bench".to_owned());
                let t = Instant::now();
                client
                    .create_instance(request, Wait::Settled)
                    .await
                    .expect("create");
                latencies.push(t.elapsed());
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("a worker"));
    }
    (all, began.elapsed())
}

/// The mean time of `times` runs of `op`, in microseconds.
async fn mean_micros<F, Fut>(times: u32, mut op: F) -> f64
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let began = Instant::now();
    for i in 0..times {
        op(i).await;
    }
    began.elapsed().as_secs_f64() * 1e6 / f64::from(times)
}

/// Times, one at a time, the parts the secure path adds to a create (a
/// token authenticated, the call and its outcome recorded) and, to
/// compare them with, a durable audit record and a bare durable commit of
/// the same store.
async fn parts(
    store: &Arc<dyn Store>,
    accounts: &AuthStore,
    token: &TokenSecret,
) -> Vec<(&'static str, f64)> {
    let authenticator = &Authenticator::new(accounts.clone(), None);
    let authenticate = mean_micros(2000, |_| async move {
        authenticator
            .caller(Some(token.expose()), None)
            .await
            .expect("authenticate");
    })
    .await;
    let caller = authenticator
        .caller(Some(token.expose()), None)
        .await
        .expect("authenticate");
    // A replica of its own: the records land in the same log as the
    // server's, numbered after them.
    let log = &AuditLog::new(
        store.clone(),
        Arc::new(SystemClock),
        "bench-parts",
        Retention::default(),
    );
    let stop = &Request::StopInstance {
        instance: "bench".to_owned(),
        wait: Wait::No,
    };
    let caller = &caller;
    let entry = || AuditEntry::new(caller, stop, None, Outcome::Done);
    let audit = mean_micros(200, |_| async move {
        let started = log.start(entry()).await.expect("an audit record");
        log.finish(started, Outcome::Done).await;
    })
    .await;
    let durable = mean_micros(200, |_| async move {
        log.record(entry()).await.expect("an audit record");
    })
    .await;
    // Under `/zixiao/` like the records, so the controller's cache watch
    // sees both alike.
    let commit = mean_micros(200, |i| async move {
        let txn = Txn::new().put(
            format!("/zixiao/bench/commit/{i}"),
            vec![0; 256],
            Precondition::None,
        );
        store.commit(txn).await.expect("a commit");
    })
    .await;
    let deferred = mean_micros(200, |i| async move {
        let txn = Txn::new().put(
            format!("/zixiao/bench/deferred/{i}"),
            vec![0; 256],
            Precondition::None,
        );
        store.commit(txn.deferred()).await.expect("a commit");
    })
    .await;
    vec![
        ("authenticate a token", authenticate),
        ("record a call and its outcome (staged)", audit),
        ("write a durable audit record", durable),
        ("a bare durable commit", commit),
        ("a bare deferred commit", deferred),
    ]
}

#[derive(Default)]
struct Totals {
    latencies: Vec<Duration>,
    wall: Duration,
    /// Bytes the process handed to `write`/`pwrite` during its rounds.
    written: u64,
    /// Each round's creates per second.
    round_rates: Vec<f64>,
}

impl Totals {
    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    fn kib_per_create(&self) -> f64 {
        self.written as f64 / 1024.0 / self.latencies.len() as f64
    }
}

/// The bytes this process has handed to `write` and its kin so far
/// (`wchar` of `/proc/self/io`): the store's file writes, which is where a
/// create's time goes when it waits on the disk. Zero where unknown.
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The median of `values` (not empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

fn results_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench-results").join("secure-api.json")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn run() -> Vec<serde_json::Value> {
    let creates = env_number("SECURE_CREATES", 200);
    let rounds = env_number("SECURE_ROUNDS", 8);
    let dir = tempfile::tempdir().expect("tempdir");
    let (controller, store) = controller(dir.path()).await;

    // The cluster's PKI and an operator of project `bench`, as `zixiao
    // server init` and `zixiao user create` make them.
    let pki = Pki::init(&dir.path().join("pki"), "bench").expect("pki");
    let tls = ServerTls::issue(&pki, &[SubjectName::Ip([127, 0, 0, 1].into())]).expect("tls");
    let accounts = AuthStore::new(store.clone(), Arc::new(SystemClock));
    let bench = ProjectName::try_from("bench").expect("name");
    accounts
        .create_project(bench.clone(), Default::default())
        .await
        .expect("project");
    let operator = UserName::try_from("op").expect("name");
    accounts
        .create_user(operator.clone(), Role::Operator, [bench].into())
        .await
        .expect("user");
    let (_, token) = accounts
        .issue_user_token(&operator, Role::Operator, None, None)
        .await
        .expect("token");

    let plain_addr = serve(&controller, &store, None).await;
    let secure_addr = serve(&controller, &store, Some(tls)).await;
    let plain = zixiao_api::connect_with(ConnectOptions::new(format!("http://{plain_addr}")))
        .expect("plain client");
    let secure = zixiao_api::connect_with(ConnectOptions {
        endpoint: format!("https://{secure_addr}"),
        ca_pem: Some(pki.ca_pem().to_owned()),
        token: Some(token.expose().to_owned()),
        client_identity: None,
    })
    .expect("secure client");
    // Connections up, caches warm, before anything is timed.
    round(&plain, "warm-plain", 20, 4).await;
    round(&secure, "warm-secure", 20, 4).await;

    let mut rows = Vec::new();
    println!("creates through the API, waiting until running; {creates} per round, {rounds} rounds each, alternating");
    println!(
        "{:<16} {:>11} {:>8} {:>10} {:>9} {:>9} {:>9} {:>13}",
        "", "concurrency", "creates", "creates/s", "mean ms", "p50 ms", "p99 ms", "KiB written"
    );
    for concurrency in [1, 8] {
        let (mut plain_totals, mut secure_totals) = (Totals::default(), Totals::default());
        for r in 0..rounds {
            let mut pair = [
                (&plain, &mut plain_totals, "plain"),
                (&secure, &mut secure_totals, "secure"),
            ];
            // Every other round the secure one goes first, so what a round
            // leaves behind (a sync due, pages to write back) and drift on
            // a shared machine fall on both alike.
            if r % 2 == 1 {
                pair.reverse();
            }
            for (client, totals, mode) in pair {
                let tag = format!("{mode}-c{concurrency}-r{r}");
                let before = bytes_written();
                let (latencies, wall) = round(client, &tag, creates, concurrency).await;
                totals.written += bytes_written() - before;
                totals
                    .round_rates
                    .push(latencies.len() as f64 / wall.as_secs_f64());
                totals.latencies.extend(latencies);
                totals.wall += wall;
            }
        }
        let mut summary = Vec::new();
        for (mode, totals) in [
            ("plain", &mut plain_totals),
            ("tls+auth+audit", &mut secure_totals),
        ] {
            let count = totals.latencies.len();
            let mean = totals.latencies.iter().sum::<Duration>() / count as u32;
            let (p50, p99) = (totals.percentile(0.50), totals.percentile(0.99));
            let per_second = totals.per_second();
            let kib = totals.kib_per_create();
            println!(
                "{mode:<16} {concurrency:>11} {count:>8} {per_second:>10.1} {:>9.2} {:>9.2} {:>9.2} {kib:>13.1}",
                ms(mean),
                ms(p50),
                ms(p99)
            );
            summary.push((per_second, p99));
            rows.push(serde_json::json!({
                "mode": mode,
                "concurrency": concurrency,
                "creates": count,
                "creates_per_s": per_second,
                "mean_ms": ms(mean),
                "p50_ms": ms(p50),
                "p99_ms": ms(p99),
                "kib_written_per_create": kib,
            }));
        }
        let slower = 1.0 - summary[1].0 / summary[0].0;
        let p99_more = ms(summary[1].1) / ms(summary[0].1) - 1.0;
        // Each secure round against the plain one beside it: a burst of
        // load from elsewhere moves one pair, not the median.
        let paired = median(
            plain_totals
                .round_rates
                .iter()
                .zip(&secure_totals.round_rates)
                .map(|(plain, secure)| secure / plain - 1.0)
                .collect(),
        );
        println!(
            "{:<16} {concurrency:>11} throughput {:+.1}% (median of the paired rounds {:+.1}%), p99 {:+.1}%",
            "security costs",
            -slower * 100.0,
            paired * 100.0,
            p99_more * 100.0
        );
        rows.push(serde_json::json!({
            "mode": "cost",
            "concurrency": concurrency,
            "throughput_change_pct": -slower * 100.0,
            "paired_rounds_throughput_change_pct": paired * 100.0,
            "p99_change_pct": p99_more * 100.0,
        }));
    }
    println!("what the secure path adds per create, each timed alone:");
    for (part, micros) in parts(&store, &accounts, &token).await {
        println!("{part:<24} {micros:>9.1} us");
        rows.push(serde_json::json!({
            "mode": "part",
            "part": part,
            "mean_us": micros,
        }));
    }
    rows
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let rows = runtime.block_on(run());
    let machine = machine();
    println!("on {machine}");
    let report = serde_json::json!({
        "name": "secure-api",
        "machine": machine,
        "results": rows,
    });
    let path = results_path();
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create bench-results");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("json"))
        .expect("write the results");
    println!("written to {}", path.display());
}
