//! What `EtcdStore` costs over the raw `etcd-client`, in one run against
//! the same cluster and the same endpoint:
//!
//! - single-key commit latency: sequential compare-and-swap updates of one
//!   key through `EtcdStore::commit`, against raw `put`s and raw CAS txns;
//! - concurrent create throughput: many tasks creating distinct keys with
//!   `Precondition::Absent`, against raw create-if-absent txns and raw puts.
//!
//! `eval "$(scripts/services/etcd.sh start)"; cargo bench -p zixiao-store
//! --features etcd --bench etcd_commit` (`ETCD_BENCH_OPS=5000` and
//! `ETCD_BENCH_TASKS=64` choose the sizes). Without `--bench` (as under
//! `cargo test --all-targets`) it runs a few operations as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, PutOptions, TxnOp};
use zixiao_core::store::{Precondition, Txn};
use zixiao_core::Store;
use zixiao_store::{EtcdStore, EtcdStoreOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50, p99 and mean of `samples`, in microseconds.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e6 / samples.len() as f64;
    format!(
        "p50 {:>7.0} us  p99 {:>7.0} us  mean {:>7.0} us  (n={})",
        at(0.5),
        at(0.99),
        mean,
        samples.len()
    )
}

/// How many operations each side runs before the other takes a turn, so
/// that a change in the machine's load hits every side alike.
const ROUND: usize = 100;

async fn latency(store: &EtcdStore, raw: &Client, prefix: &str, ops: usize) {
    let key = "/bench/latency";
    let mut revision = store
        .commit(Txn::new().put(key, b"0".to_vec(), Precondition::None))
        .await
        .expect("seed the key");
    let raw_key = format!("{prefix}/bench/raw-latency");
    let mut kv = raw.kv_client();
    let mut raw_revision = kv
        .put(raw_key.clone(), "seed", None)
        .await
        .expect("raw put")
        .header()
        .map_or(0, |h| h.revision());
    let (mut through_store, mut raw_puts, mut raw_cas) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ops.div_ceil(ROUND) {
        let ops = (round * ROUND..ops.min((round + 1) * ROUND)).collect::<Vec<_>>();
        for i in &ops {
            let started = Instant::now();
            revision = store
                .commit(Txn::new().put(
                    key,
                    i.to_string().into_bytes(),
                    Precondition::Revision(revision),
                ))
                .await
                .expect("EtcdStore CAS update");
            through_store.push(started.elapsed());
        }
        for i in &ops {
            let started = Instant::now();
            kv.put(raw_key.clone(), i.to_string(), None)
                .await
                .expect("raw put");
            raw_puts.push(started.elapsed());
        }
        raw_revision = kv
            .get(raw_key.clone(), None)
            .await
            .expect("raw get")
            .kvs()
            .first()
            .map_or(raw_revision, |kv| kv.mod_revision());
        for i in &ops {
            let started = Instant::now();
            let txn = etcd_client::Txn::new()
                .when([Compare::mod_revision(
                    raw_key.clone(),
                    CompareOp::Equal,
                    raw_revision,
                )])
                .and_then([TxnOp::put(raw_key.clone(), i.to_string(), None)]);
            let response = kv.txn(txn).await.expect("raw CAS txn");
            assert!(response.succeeded(), "raw CAS lost a race it cannot lose");
            raw_revision = response.header().map_or(0, |h| h.revision());
            raw_cas.push(started.elapsed());
        }
    }
    println!("EtcdStore CAS update   {}", summary(&mut through_store));
    println!("raw etcd put           {}", summary(&mut raw_puts));
    println!("raw etcd CAS txn       {}", summary(&mut raw_cas));
}

/// Runs `ops` creates over `tasks` tasks; returns creates per second.
async fn throughput<F, Fut>(ops: usize, tasks: usize, create: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let create = Arc::new(create);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let create = Arc::clone(&create);
            tokio::spawn(async move {
                for i in (t..ops).step_by(tasks) {
                    create(i).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("a create task");
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// One turn of each side's concurrent creates (the bench runs three).
async fn creates(store: EtcdStore, raw: Client, prefix: String, ops: usize, tasks: usize) {
    let run = format!("{:x}", rand_suffix());
    let through_store = {
        let (store, run) = (store.clone(), run.clone());
        throughput(ops, tasks, move |i| {
            let (store, key) = (store.clone(), format!("/bench/{run}/store/{i:08}"));
            async move {
                store
                    .commit(Txn::new().put(key, b"{}".to_vec(), Precondition::Absent))
                    .await
                    .expect("EtcdStore create");
            }
        })
        .await
    };
    println!("EtcdStore creates      {through_store:>8.0}/s  ({ops} creates, {tasks} tasks)");

    let raw_txn = {
        let (raw, prefix, run) = (raw.clone(), prefix.clone(), run.clone());
        throughput(ops, tasks, move |i| {
            let mut kv = raw.kv_client();
            let key = format!("{prefix}/bench/{run}/raw-txn/{i:08}");
            async move {
                let txn = etcd_client::Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, "{}", Some(PutOptions::new()))]);
                let response = kv.txn(txn).await.expect("raw create txn");
                assert!(response.succeeded());
            }
        })
        .await
    };
    println!("raw create-if-absent   {raw_txn:>8.0}/s");

    let raw_put = throughput(ops, tasks, move |i| {
        let mut kv = raw.kv_client();
        let key = format!("{prefix}/bench/{run}/raw-put/{i:08}");
        async move {
            kv.put(key, "{}", None).await.expect("raw put");
        }
    })
    .await;
    println!("raw etcd puts          {raw_put:>8.0}/s");
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn main() {
    let Ok(endpoints) = std::env::var("ZIXIAO_TEST_ETCD_ENDPOINTS") else {
        println!(
            "skipped: ZIXIAO_TEST_ETCD_ENDPOINTS is not set (run scripts/services/etcd.sh start)"
        );
        return;
    };
    let full = std::env::args().any(|a| a == "--bench");
    let ops = if full {
        env_usize("ETCD_BENCH_OPS", 2000)
    } else {
        20
    };
    let tasks = if full {
        env_usize("ETCD_BENCH_TASKS", 64)
    } else {
        4
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        // Both sides talk to the same single endpoint, as EtcdStore prefers one.
        let first = endpoints.split(',').next().unwrap_or_default().to_owned();
        let prefix = format!("/zixiao-bench/{:x}", rand_suffix());
        let store = EtcdStore::connect(EtcdStoreOptions::new([first.clone()]).key_prefix(&prefix))
            .await
            .expect("connect EtcdStore");
        let mut raw = Client::connect([first.clone()], None)
            .await
            .expect("connect etcd-client");
        let status = raw.status().await.expect("member status");
        let role = match status.header() {
            Some(h) if h.member_id() == status.leader() => "the leader",
            _ => "a follower",
        };
        println!("etcd {} at {first} ({role}); {ops} ops", status.version());
        latency(&store, &raw, &prefix, ops).await;
        for _ in 0..3 {
            creates(store.clone(), raw.clone(), prefix.clone(), ops, tasks).await;
        }
        raw.delete(
            prefix,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .expect("clean up the bench keys");
    });
}
