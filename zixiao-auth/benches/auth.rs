//! What security costs per call: verifying a bearer token, and
//! `Authorized<Audited<A>>` around a trivial `Api` (which answers at once
//! from memory, so the figures are the wrappers' own), for reads, changes
//! and refusals. Each store-touching row runs twice: on an in-memory
//! store (this crate's code alone) and on the embedded store on disk
//! (what a single-machine deployment pays, fsync included).
//!
//! `cargo bench -p zixiao-auth --bench auth` prints a table and writes
//! `target/bench-results/auth.json`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zixiao_auth::{
    secure, AuditLog, AuthStore, Credential, Identity, ProjectName, Retention, Role, UserName,
    PROJECT_LABEL,
};
use zixiao_core::api::{Api, InstancePage, Request, Response, Wait};
use zixiao_core::controller::DrainReport;
use zixiao_core::store::WatchStream;
use zixiao_core::store::{KeyValue, LeaseId, Listing, Precondition, Revision, Txn, Write};
use zixiao_core::{CreateInstance, Instance, InstanceSpec, Store, StoreError, SystemClock};
use zixiao_store::EmbeddedStore;

/// The longest a row runs, and the most calls it makes.
const BUDGET: Duration = Duration::from_secs(2);
const MAX_CALLS: usize = 20_000;

/// An `Api` that answers from memory at once.
#[derive(Debug)]
struct TrivialApi {
    instance: Instance,
    listed: Vec<Instance>,
}

impl TrivialApi {
    fn new() -> Self {
        let make = |name: &str, project: &str| {
            let mut request = CreateInstance::new(name, InstanceSpec::container("busybox"));
            request
                .labels
                .insert(PROJECT_LABEL.to_owned(), project.to_owned());
            Instance::new(format!("id-{name}"), request, chrono::DateTime::UNIX_EPOCH)
        };
        TrivialApi {
            instance: make("web", "web"),
            listed: vec![make("web", "web"), make("db", "db"), make("api", "api")],
        }
    }
}

#[async_trait]
impl Api for TrivialApi {
    async fn call(&self, request: Request) -> zixiao_core::Result<Response> {
        Ok(match request {
            Request::GetInstance { .. } | Request::StopInstance { .. } => {
                Response::Instance(self.instance.clone())
            }
            Request::ListInstances { .. } => Response::Instances(InstancePage {
                instances: self.listed.clone(),
                next_page: None,
            }),
            Request::DrainNode { node } => Response::Drain(DrainReport {
                node,
                ..DrainReport::default()
            }),
            _ => Response::Nodes(Vec::new()),
        })
    }
}

/// A revisioned map with compare-and-swap: enough of a `Store` for tokens
/// and the audit log, without I/O.
#[derive(Debug, Default)]
struct MemoryStore {
    state: Mutex<(Revision, BTreeMap<String, KeyValue>)>,
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.state.lock().unwrap().1.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let state = self.state.lock().unwrap();
        Ok(Listing {
            items: state
                .1
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, kv)| kv.clone())
                .collect(),
            revision: state.0,
        })
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        txn.validate()?;
        let mut state = self.state.lock().unwrap();
        for write in &txn.writes {
            let found = state.1.get(write.key()).map_or(0, |kv| kv.mod_revision);
            match write.precondition() {
                Precondition::None => {}
                Precondition::Absent if found != 0 => {
                    return Err(StoreError::AlreadyExists(write.key().to_owned()))
                }
                Precondition::Absent => {}
                Precondition::Revision(_) if found == 0 => {
                    return Err(StoreError::NotFound(write.key().to_owned()))
                }
                Precondition::Revision(expected) if expected != found => {
                    return Err(StoreError::Conflict {
                        key: write.key().to_owned(),
                        expected,
                        found,
                    })
                }
                Precondition::Revision(_) => {}
            }
        }
        state.0 += 1;
        let revision = state.0;
        for write in txn.writes {
            match write {
                Write::Put { key, value, .. } => {
                    let create_revision =
                        state.1.get(&key).map_or(revision, |kv| kv.create_revision);
                    state.1.insert(
                        key.clone(),
                        KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision: revision,
                            lease: None,
                        },
                    );
                }
                Write::Delete { key, .. } => {
                    state.1.remove(&key);
                }
                Write::Check { .. } => {}
            }
        }
        Ok(revision)
    }

    async fn watch(&self, _: &str, _: Revision) -> Result<WatchStream, StoreError> {
        Err(StoreError::InvalidArgument(
            "no watches in the bench store".into(),
        ))
    }

    async fn grant_lease(&self, _: Duration) -> Result<LeaseId, StoreError> {
        Err(StoreError::InvalidArgument(
            "no leases in the bench store".into(),
        ))
    }

    async fn keep_alive(&self, _: LeaseId) -> Result<(), StoreError> {
        Ok(())
    }

    async fn revoke_lease(&self, _: LeaseId) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One row of results.
struct Row {
    name: String,
    store: &'static str,
    calls: usize,
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "store": self.store,
            "calls": self.calls,
            "mean_ns": self.mean.as_nanos() as u64,
            "p50_ns": self.p50.as_nanos() as u64,
            "p99_ns": self.p99.as_nanos() as u64,
            "calls_per_second": (1.0 / self.mean.as_secs_f64()).round(),
        })
    }
}

struct Micros(Duration);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>10.2}", self.0.as_secs_f64() * 1e6)
    }
}

/// Times `call` one call at a time (after a warm-up of a tenth) until
/// the budget or the call limit runs out.
async fn measure<F, Fut>(name: &str, store: &'static str, mut call: F) -> Row
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut warm = 0;
    while warm < MAX_CALLS / 10 && started.elapsed() < BUDGET / 10 {
        call().await;
        warm += 1;
    }
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < MAX_CALLS && started.elapsed() < BUDGET {
        let at = Instant::now();
        call().await;
        times.push(at.elapsed());
    }
    let total: Duration = times.iter().sum();
    times.sort();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Row {
        name: name.to_owned(),
        store,
        calls: times.len(),
        mean: total / times.len() as u32,
        p50: pick(0.5),
        p99: pick(0.99),
    }
}

fn user(name: &str, role: Role, projects: &[&str]) -> Identity {
    Identity::User {
        name: UserName::try_from(name).unwrap(),
        role,
        projects: projects
            .iter()
            .map(|p| ProjectName::try_from(*p).unwrap())
            .collect(),
        via: Credential::Token(zixiao_auth::TokenId::try_from("0123456789abcdef").unwrap()),
    }
}

fn stop() -> Request {
    Request::StopInstance {
        instance: "web".into(),
        wait: Wait::No,
    }
}

/// The rows that touch `store`.
async fn store_rows(store: Arc<dyn Store>, label: &'static str, rows: &mut Vec<Row>) {
    let clock = Arc::new(SystemClock);
    let accounts = AuthStore::new(store.clone(), clock.clone());
    let owner = UserName::try_from("bench").unwrap();
    accounts
        .create_user(owner.clone(), Role::Admin, Default::default())
        .await
        .unwrap();
    let (_, token) = accounts
        .issue_user_token(&owner, Role::Admin, None, None)
        .await
        .unwrap();
    let text = token.expose().to_owned();
    rows.push(
        measure("token verify", label, || async {
            accounts.authenticate_token(&text).await.unwrap();
        })
        .await,
    );

    let log = Arc::new(AuditLog::new(store, clock, "bench", Retention::default()));
    let api = Arc::new(TrivialApi::new());
    let admin = secure(api.clone(), Identity::local_admin(), log.clone());
    let operator = secure(
        api.clone(),
        user("otto", Role::Operator, &["web"]),
        log.clone(),
    );
    rows.push(
        measure(
            "authorized<audited> admin stop (audited)",
            label,
            || async {
                admin.call(stop()).await.unwrap();
            },
        )
        .await,
    );
    rows.push(
        measure(
            "authorized<audited> operator stop (audited)",
            label,
            || async {
                operator.call(stop()).await.unwrap();
            },
        )
        .await,
    );
    rows.push(
        measure(
            "authorized<audited> operator drain (denied)",
            label,
            || async {
                operator
                    .call(Request::DrainNode {
                        node: "worker-1".into(),
                    })
                    .await
                    .unwrap_err();
            },
        )
        .await,
    );
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
    target.join("bench-results").join("auth.json")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        let api = Arc::new(TrivialApi::new());
        rows.push(
            measure("bare api read (baseline)", "-", || async {
                api.call(Request::ListNodes).await.unwrap();
            })
            .await,
        );
        let log = Arc::new(AuditLog::new(
            Arc::new(MemoryStore::default()),
            Arc::new(SystemClock),
            "bench",
            Retention::default(),
        ));
        let admin = secure(api.clone(), Identity::local_admin(), log.clone());
        let operator = secure(
            api.clone(),
            user("otto", Role::Operator, &["web"]),
            log.clone(),
        );
        rows.push(
            measure("authorized<audited> admin read", "-", || async {
                admin.call(Request::ListNodes).await.unwrap();
            })
            .await,
        );
        rows.push(
            measure("authorized<audited> operator get instance", "-", || async {
                operator
                    .call(Request::GetInstance {
                        instance: "web".into(),
                    })
                    .await
                    .unwrap();
            })
            .await,
        );
        rows.push(
            measure(
                "authorized<audited> operator list (filtered)",
                "-",
                || async {
                    operator
                        .call(Request::ListInstances {
                            filter: Default::default(),
                            page: Default::default(),
                        })
                        .await
                        .unwrap();
                },
            )
            .await,
        );
        store_rows(Arc::new(MemoryStore::default()), "memory", &mut rows).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded = EmbeddedStore::open(&dir.path().join("bench.redb")).expect("open");
        store_rows(Arc::new(embedded), "embedded", &mut rows).await;
        rows
    });

    let machine = machine();
    println!("zixiao-auth per call on {machine}");
    println!(
        "{:<46} {:>9} {:>7} {:>10} {:>10} {:>10}",
        "", "store", "calls", "mean µs", "p50 µs", "p99 µs"
    );
    for row in &rows {
        println!(
            "{:<46} {:>9} {:>7} {} {} {}",
            row.name,
            row.store,
            row.calls,
            Micros(row.mean),
            Micros(row.p50),
            Micros(row.p99)
        );
    }
    let report = serde_json::json!({
        "name": "auth",
        "machine": machine,
        "results": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    let path = results_path();
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create bench-results");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("json"))
        .expect("write the results");
    println!("written to {}", path.display());
}
