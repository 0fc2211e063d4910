//! `EtcdStore` when etcd fails: members killed under a watch and under
//! writers (on private clusters started from `ZIXIAO_TEST_ETCD_BIN`, so the
//! shared cluster stays up), compaction, and endpoints that never answer.

#![cfg(feature = "etcd")]

mod etcd_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_common::{etcd_bin, free_port, Cluster};
use futures::StreamExt;
use zixiao_core::store::{Precondition, Txn, WatchEvent, WatchStream};
use zixiao_core::{ErrorKind, Store, StoreError};
use zixiao_store::{EtcdStore, EtcdStoreOptions};
use zixiao_testing::store_conformance::{self, StoreUnderTest};

const WAIT: Duration = Duration::from_secs(20);

async fn connect(endpoints: Vec<String>) -> EtcdStore {
    EtcdStore::connect(EtcdStoreOptions::new(endpoints).key_prefix(etcd_common::unique_prefix()))
        .await
        .expect("connect to the private cluster")
}

/// Creates `key` (if absent), retrying through `Unavailable` the way the
/// trait asks: an unknown outcome is settled by trying the create again
/// and reading back what `AlreadyExists` found.
async fn create_retrying(store: &dyn Store, key: &str, value: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let txn = Txn::new().put(key, value.to_vec(), Precondition::Absent);
        match store.commit(txn).await {
            Ok(_) => return,
            // An earlier attempt whose outcome was unknown did land.
            Err(StoreError::AlreadyExists(_)) => {
                let kv = store.get(key).await.expect("read back").expect("exists");
                assert_eq!(kv.value, value, "{key} holds another writer's value");
                return;
            }
            Err(e) if e.kind() == ErrorKind::Unavailable && Instant::now() < deadline => {
                eprintln!("retrying {key}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("creating {key} failed: {e}"),
        }
    }
}

async fn next_put(stream: &mut WatchStream) -> (String, u64) {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(WatchEvent::Put(kv)))) => (kv.key, kv.mod_revision),
        other => panic!("expected a put event, got {other:?}"),
    }
}

/// The compaction case of the conformance suite, on a private member:
/// compaction is cluster-wide and would break the shared cluster's cases.
#[tokio::test]
async fn watch_of_compacted_history_fails() {
    let Some(bin) = etcd_bin() else { return };
    let cluster = Cluster::start(&bin, 1).await;
    let store = connect(cluster.endpoints()).await;
    let compactor = store.clone();
    let under_test = StoreUnderTest::new(Arc::new(store))
        .with_compaction(move |through| {
            let store = compactor.clone();
            async move { store.compact(through).await }
        })
        .with_guard(cluster);
    store_conformance::watch_of_compacted_history_fails(under_test).await;
}

/// A watch whose member is killed goes on from another member: every
/// change committed before and after the kill arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_on_another_member_after_its_member_dies() {
    let Some(bin) = etcd_bin() else { return };
    let mut cluster = Cluster::start(&bin, 3).await;
    // The store prefers the first endpoint: the watch opens on member 0.
    let store = connect(cluster.endpoints()).await;
    let start = store.list("/w/").await.expect("list").revision;
    let mut stream = store.watch("/w/", start).await.expect("watch");
    let mut expected = Vec::new();
    for i in 0..5 {
        let key = format!("/w/{i:02}");
        create_retrying(&store, &key, b"before").await;
        expected.push(key);
    }
    for key in &expected {
        assert_eq!(&next_put(&mut stream).await.0, key);
    }

    cluster.kill(0);
    for i in 5..10 {
        let key = format!("/w/{i:02}");
        create_retrying(&store, &key, b"after").await;
        expected.push(key);
    }
    let mut last = 0;
    for key in &expected[5..] {
        let (got, revision) = next_put(&mut stream).await;
        assert_eq!(&got, key, "an event was lost or repeated across the resume");
        assert!(revision > last);
        last = revision;
    }
    // Nothing more: no replay of the first five after the resume.
    let marker = store
        .commit(Txn::new().put("/w/marker", b"m".to_vec(), Precondition::None))
        .await
        .expect("marker");
    assert_eq!(
        next_put(&mut stream).await,
        ("/w/marker".to_owned(), marker)
    );
}

/// Killing the leader under a writer: commits succeed again within a
/// few seconds, and every acknowledged commit is in the store afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_heals_and_loses_nothing_acknowledged() {
    let Some(bin) = etcd_bin() else { return };
    let mut cluster = Cluster::start(&bin, 3).await;
    // The leader's endpoint first: the store talks to the member that dies.
    let leader = cluster.leader().await.expect("the cluster has a leader");
    let mut endpoints = cluster.endpoints();
    endpoints.swap(0, leader);
    let store = Arc::new(connect(endpoints).await);

    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut i = 0u32;
            while !*stopped.borrow_and_update() {
                let key = format!("/ack/{i:06}");
                create_retrying(store.as_ref(), &key, key.as_bytes()).await;
                acknowledged.push((key, Instant::now()));
                i += 1;
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.leader().await,
        Some(leader),
        "the leader changed by itself"
    );
    cluster.kill(leader);
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.send(true).expect("stop the writer");
    let acknowledged = writer.await.expect("the writer task");

    let after_kill: Vec<_> = acknowledged
        .iter()
        .filter(|(_, at)| *at > killed_at)
        .collect();
    let first_after = after_kill
        .first()
        .expect("no commit was acknowledged after the leader died")
        .1;
    eprintln!(
        "leader m{leader} killed: first commit acknowledged {:?} later; {} before, {} after",
        first_after - killed_at,
        acknowledged.len() - after_kill.len(),
        after_kill.len()
    );
    assert!(
        first_after - killed_at < WAIT,
        "commits did not resume within {WAIT:?}"
    );

    // Read from the survivors only, through a new store.
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.endpoint(i))
        .collect();
    let reader = EtcdStore::connect(
        EtcdStoreOptions::new(survivors).key_prefix(store.key_prefix().to_owned()),
    )
    .await
    .expect("connect to the survivors");
    let stored: BTreeSet<String> = reader
        .list("/ack/")
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    for (key, _) in &acknowledged {
        assert!(stored.contains(key), "acknowledged {key} was lost");
    }
}

/// Endpoints where nothing listens, or that never answer, fail `connect`
/// quickly with `Unavailable` naming every endpoint.
#[tokio::test]
async fn unreachable_endpoints_are_unavailable_without_hanging() {
    let closed = [free_port(), free_port()].map(|p| format!("http://127.0.0.1:{p}"));
    let started = Instant::now();
    let error = tokio::time::timeout(
        WAIT,
        EtcdStore::connect(EtcdStoreOptions::new(closed.clone())),
    )
    .await
    .expect("connect hung")
    .expect_err("connected to closed ports");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    for endpoint in &closed {
        assert!(
            error.to_string().contains(endpoint),
            "{error} does not name {endpoint}"
        );
    }
    eprintln!("closed ports: Unavailable after {:?}", started.elapsed());

    // A blackholed address (TEST-NET-1, never routed): the dial timeout bounds it.
    let silent =
        EtcdStoreOptions::new(["http://192.0.2.1:2379"]).dial_timeout(Duration::from_millis(300));
    let error = tokio::time::timeout(WAIT, EtcdStore::connect(silent))
        .await
        .expect("connect hung")
        .expect_err("connected to a blackholed address");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.to_string().contains("192.0.2.1"), "{error}");
}

/// A store whose whole cluster died answers every call with
/// `Unavailable` instead of hanging, and works again once it is back.
#[tokio::test]
async fn calls_fail_with_unavailable_while_the_cluster_is_down() {
    let Some(bin) = etcd_bin() else { return };
    let mut cluster = Cluster::start(&bin, 1).await;
    let store = EtcdStore::connect(
        EtcdStoreOptions::new(cluster.endpoints())
            .key_prefix(etcd_common::unique_prefix())
            .retry_timeout(Duration::from_secs(2)),
    )
    .await
    .expect("connect");
    let written = store
        .commit(Txn::new().put("/k", b"v".to_vec(), Precondition::Absent))
        .await
        .expect("commit");
    cluster.kill(0);

    let error = tokio::time::timeout(WAIT, store.get("/k"))
        .await
        .expect("get hung")
        .expect_err("read from a dead cluster");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.to_string().contains(&cluster.endpoint(0)), "{error}");
    let error = tokio::time::timeout(
        WAIT,
        store.commit(Txn::new().put("/k2", b"v".to_vec(), Precondition::Absent)),
    )
    .await
    .expect("commit hung")
    .expect_err("commit to a dead cluster");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");

    cluster.restart(0);
    cluster.wait_for_leader(WAIT).await;
    let kv = store
        .get("/k")
        .await
        .expect("read after the restart")
        .expect("/k survived");
    assert_eq!(kv.mod_revision, written);
    assert_eq!(
        store.get("/k2").await.expect("read"),
        None,
        "a failed commit landed"
    );
}

/// A lease renewed every half second outlives the loss of the leader (etcd
/// extends leases when a new leader takes over), and once renewals stop
/// its key goes within the TTL plus an election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_lease_survives_leader_loss_then_expires() {
    let Some(bin) = etcd_bin() else { return };
    let mut cluster = Cluster::start(&bin, 3).await;
    let store = Arc::new(connect(cluster.endpoints()).await);
    let ttl = Duration::from_secs(3);
    let lease = store.grant_lease(ttl).await.expect("grant");
    store
        .commit(Txn::new().put_with_lease("/node", b"alive".to_vec(), Precondition::Absent, lease))
        .await
        .expect("put with the lease");

    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let keeper = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = ticks.tick() => {
                        // A renewal may fail during the election; the next one counts.
                        if let Err(e) = store.keep_alive(lease).await {
                            assert_eq!(e.kind(), ErrorKind::Unavailable, "renewal failed: {e}");
                        }
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = cluster.leader().await.expect("the cluster has a leader");
    cluster.kill(leader);
    tokio::time::sleep(ttl * 2).await;
    assert!(
        store.get("/node").await.expect("get").is_some(),
        "a kept-alive lease expired across the leader change"
    );

    stop.send(true).expect("stop renewing");
    keeper.await.expect("the keeper task");
    let stopped_at = Instant::now();
    zixiao_testing::wait::wait_until("the lease to expire", WAIT, || async {
        store
            .get("/node")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    eprintln!(
        "key gone {:?} after the last renewal (TTL {ttl:?})",
        stopped_at.elapsed()
    );
    let error = store
        .keep_alive(lease)
        .await
        .expect_err("renewed an expired lease");
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
}
