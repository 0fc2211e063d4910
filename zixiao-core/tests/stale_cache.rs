//! Property: a controller whose cache lags far behind the store (its
//! watch delivers every event late), racing another controller's creates
//! and a failover of one of the nodes, never over-commits a node, never
//! leaves an instance on the failed node, and never runs an instance on two
//! nodes: a stale view costs retries, never a wrong placement. Checked
//! against the store itself and the fake runtimes, not against a cache.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use zixiao_core::host::HostFacts;
use zixiao_core::store::{KeyValue, LeaseId, Listing, Revision, StoreExt, Txn, WatchStream};
use zixiao_core::{
    Controller, CreateInstance, Instance, InstanceSpec, InstanceStatus, InstanceType, LocalAgent,
    Node, NodeStatus, Resources, RestartPolicy, RuntimeState, Store, StoreError,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

/// A store whose watch streams deliver each event `delay` late, so the
/// cache fed by them is always behind.
struct LaggingStore {
    inner: Arc<EmbeddedStore>,
    delay: Duration,
}

impl fmt::Debug for LaggingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LaggingStore")
    }
}

#[async_trait]
impl Store for LaggingStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        self.inner.commit(txn).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let delay = self.delay;
        let events = self.inner.watch(prefix, after).await?;
        Ok(events
            .then(move |event| async move {
                tokio::time::sleep(delay).await;
                event
            })
            .boxed())
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

const NODES: usize = 4;

fn controller(store: Arc<dyn Store>, agents: &[Arc<LocalAgent>]) -> Controller {
    let mut builder = Controller::builder(store, Arc::new(PluginScheduler::default()));
    for (i, agent) in agents.iter().enumerate() {
        builder = builder.agent(format!("n{i}"), agent.clone());
    }
    builder.build()
}

async fn race(round: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).expect("store"));
    let drivers: Vec<Arc<FakeDriver>> = (0..NODES)
        .map(|_| Arc::new(FakeDriver::new(InstanceType::Container)))
        .collect();
    let agents: Vec<Arc<LocalAgent>> = drivers
        .iter()
        .enumerate()
        .map(|(i, driver)| {
            Arc::new(
                LocalAgent::new(HostFacts {
                    hostname: format!("h{i}"),
                    capacity: Resources {
                        cpus: zixiao_core::Cpus::cores(6),
                        memory_mib: 6 * 1024,
                        disk_gib: 10,
                        instances: 100,
                    },
                })
                .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
                .with_driver(driver.clone()),
            )
        })
        .collect();
    // `fresh` sees the store at once; `stale` through a watch 2 ms late per event.
    let fresh = controller(store.clone(), &agents);
    let stale = controller(
        Arc::new(LaggingStore {
            inner: store.clone(),
            delay: Duration::from_millis(2),
        }),
        &agents,
    );
    for (i, agent) in agents.iter().enumerate() {
        fresh
            .register_node(agent.registration(format!("n{i}")))
            .await
            .expect("register");
    }
    // Both see the nodes before the race (the stale one late, as it goes).
    stale.list_nodes().await.expect("nodes");

    let creates = 36;
    let mut tasks = Vec::new();
    for i in 0..creates {
        let c = if i % 2 == 0 {
            stale.clone()
        } else {
            fresh.clone()
        };
        let mut spec = InstanceSpec::container("busybox").with_size(1, 256 * (1 + (i % 3) as u64));
        spec.restart = RestartPolicy::Always;
        tasks.push(tokio::spawn(async move {
            let created = c
                .create_instance(CreateInstance::new(format!("r{round}-i{i}"), spec))
                .await
                .expect("create");
            c.converge(&created.id).await.expect("converge");
            created.id
        }));
        if i == creates / 3 {
            let f = fresh.clone();
            tasks.push(tokio::spawn(async move {
                f.fail_node("n0", "the test failed it").await.expect("fail");
                String::new()
            }));
        }
    }
    let mut ids = Vec::new();
    for task in tasks {
        let id = task.await.expect("task");
        if !id.is_empty() {
            ids.push(id);
        }
    }
    // Whatever waits (moved off n0, or for room) is converged once more.
    for id in &ids {
        fresh.converge(id).await.expect("converge");
    }

    // The store itself, not a cache, is the judge.
    let (nodes, _) = store
        .list_objects::<Node, _>(|_| true)
        .await
        .expect("nodes");
    let (instances, _) = store
        .list_objects::<Instance, _>(|_| true)
        .await
        .expect("instances");
    assert_eq!(instances.len(), creates, "every create is stored once");
    let mut held: BTreeMap<String, Resources> = BTreeMap::new();
    for instance in &instances {
        if let Some(node) = &instance.node {
            let sum = held.entry(node.clone()).or_default();
            *sum = sum.saturating_add(&instance.held());
        }
    }
    for node in &nodes {
        let sum = held.get(&node.id).copied().unwrap_or_default();
        assert_eq!(
            node.allocated, sum,
            "round {round}: node {} drifted",
            node.id
        );
        assert!(
            node.capacity.fits(&Resources::default(), &node.allocated),
            "round {round}: node {} over-committed: {:?} of {:?}",
            node.id,
            node.allocated,
            node.capacity
        );
    }
    let failed = nodes.iter().find(|n| n.id == "n0").expect("n0");
    assert_eq!(failed.status, NodeStatus::NotReady);
    for instance in &instances {
        assert_ne!(
            instance.node.as_deref(),
            Some("n0"),
            "round {round}: `{}` is on the failed node",
            instance.name
        );
        match instance.status {
            InstanceStatus::Running => {
                let node = instance.node.as_deref().expect("placed");
                let position: usize = node[1..].parse().expect("n<i>");
                assert_eq!(
                    drivers[position].state_of(&instance.id),
                    RuntimeState::Running,
                    "round {round}: `{}` runs where the store says",
                    instance.name
                );
            }
            InstanceStatus::Pending => assert!(
                instance.problem().is_some(),
                "round {round}: `{}` is pending without a reason",
                instance.name
            ),
            other => panic!("round {round}: `{}` is {other:?}", instance.name),
        }
        // Never running on two nodes: the failed node's runtime was not
        // stopped by anyone (the test has no watchdog), so only count the
        // live nodes.
        let running = drivers[1..]
            .iter()
            .filter(|d| d.state_of(&instance.id) == RuntimeState::Running)
            .count();
        assert!(
            running <= 1,
            "round {round}: `{}` runs {running} times",
            instance.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_cache_racing_creates_and_a_failover_never_over_commits() {
    for round in 0..3 {
        race(round).await;
    }
}
