//! Lease expiry of the embedded store on a hand-moved clock: keys vanish
//! from reads exactly at expiry and are deleted, with events, by the next
//! write or by `sweep_expired`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use zixiao_core::store::{Precondition, Revision, Txn, WatchEvent, WatchStream};
use zixiao_core::{Store, StoreError};
use zixiao_store::{EmbeddedStore, EmbeddedStoreOptions};
use zixiao_testing::clock::ManualClock;

struct Fixture {
    store: EmbeddedStore,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
}

fn options(clock: &Arc<ManualClock>) -> EmbeddedStoreOptions {
    // No background sweep: the tests decide when expired keys are deleted.
    EmbeddedStoreOptions::new()
        .clock(clock.clone())
        .sweep_interval(None)
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock::default());
    let store = options(&clock)
        .open(&dir.path().join("state.redb"))
        .expect("open");
    Fixture { store, clock, dir }
}

/// Grants a 10 s lease with `/l/leased` on it, and `/l/plain` without.
async fn leased_key(store: &EmbeddedStore) -> (u64, Revision) {
    let lease = store
        .grant_lease(Duration::from_secs(10))
        .await
        .expect("grant");
    let revision = store
        .commit(
            Txn::new()
                .put_with_lease("/l/leased", b"leased".to_vec(), Precondition::Absent, lease)
                .put("/l/plain", b"plain".to_vec(), Precondition::Absent),
        )
        .await
        .expect("commit");
    (lease, revision)
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch goes on")
        .expect("an event, not an error")
}

async fn keys(store: &EmbeddedStore) -> Vec<String> {
    store
        .list("/l/")
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

#[tokio::test]
async fn expired_keys_vanish_from_reads_at_the_ttl() {
    let f = fixture();
    leased_key(&f.store).await;
    f.clock.advance(Duration::from_millis(9_999));
    assert!(f.store.get("/l/leased").await.expect("get").is_some());
    assert_eq!(keys(&f.store).await, ["/l/leased", "/l/plain"]);
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(f.store.get("/l/leased").await.expect("get"), None);
    assert_eq!(keys(&f.store).await, ["/l/plain"]);
}

#[tokio::test]
async fn sweep_deletes_expired_keys_with_delete_events() {
    let f = fixture();
    let (lease, start) = leased_key(&f.store).await;
    let mut stream = f.store.watch("/l/", start).await.expect("watch");
    assert_eq!(
        f.store.sweep_expired().await.expect("sweep"),
        None,
        "swept a live lease"
    );

    f.clock.advance(Duration::from_secs(11));
    let swept = f
        .store
        .sweep_expired()
        .await
        .expect("sweep")
        .expect("a sweep revision");
    assert_eq!(swept, start + 1);
    assert_eq!(
        next_event(&mut stream).await,
        WatchEvent::Delete {
            key: "/l/leased".to_owned(),
            revision: swept,
            prev: Some(b"leased".to_vec()),
        }
    );
    assert_eq!(
        f.store.sweep_expired().await.expect("sweep"),
        None,
        "swept twice"
    );
    let error = f
        .store
        .keep_alive(lease)
        .await
        .expect_err("kept an expired lease alive");
    assert!(matches!(error, StoreError::NotFound(_)), "got {error:?}");
    assert_eq!(keys(&f.store).await, ["/l/plain"]);
}

#[tokio::test]
async fn the_next_write_deletes_expired_keys_first() {
    let f = fixture();
    let (_, start) = leased_key(&f.store).await;
    let mut stream = f.store.watch("/l/", start).await.expect("watch");
    f.clock.advance(Duration::from_secs(10));
    let revision = f
        .store
        .commit(Txn::new().put("/l/new", b"new".to_vec(), Precondition::Absent))
        .await
        .expect("commit");
    let deleted = next_event(&mut stream).await;
    assert!(
        matches!(&deleted, WatchEvent::Delete { key, revision: at, .. } if key == "/l/leased" && *at == revision - 1),
        "expected the expired key's delete just before the commit, got {deleted:?}"
    );
    let put = next_event(&mut stream).await;
    assert_eq!((put.key(), put.revision()), ("/l/new", revision));
}

#[tokio::test]
async fn keep_alive_extends_the_lease_from_now() {
    let f = fixture();
    let (lease, _) = leased_key(&f.store).await;
    f.clock.advance(Duration::from_secs(8));
    f.store.keep_alive(lease).await.expect("keep-alive");
    f.clock.advance(Duration::from_secs(8));
    assert!(
        f.store.get("/l/leased").await.expect("get").is_some(),
        "expired despite keep-alive"
    );
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(f.store.get("/l/leased").await.expect("get"), None);
}

#[tokio::test]
async fn a_put_with_an_expired_lease_is_not_found() {
    let f = fixture();
    let (lease, _) = leased_key(&f.store).await;
    f.clock.advance(Duration::from_secs(60));
    let error = f
        .store
        .commit(Txn::new().put_with_lease("/l/late", b"x".to_vec(), Precondition::None, lease))
        .await
        .expect_err("put with an expired lease");
    assert!(matches!(error, StoreError::NotFound(_)), "got {error:?}");
    f.store
        .revoke_lease(lease)
        .await
        .expect("revoking an expired lease is fine");
}

#[tokio::test]
async fn leases_and_their_expiry_survive_a_reopen() {
    let f = fixture();
    let path = f.store.path().to_owned();
    leased_key(&f.store).await;
    drop(f.store);
    let store = options(&f.clock).open(&path).expect("reopen");
    assert!(store.get("/l/leased").await.expect("get").is_some());
    f.clock.advance(Duration::from_secs(10));
    assert_eq!(store.get("/l/leased").await.expect("get"), None);
    assert!(store.sweep_expired().await.expect("sweep").is_some());
    drop(f.dir);
}

#[tokio::test]
async fn the_background_sweep_emits_delete_events_without_writes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock::default());
    let store = EmbeddedStoreOptions::new()
        .clock(clock.clone())
        .sweep_interval(Some(Duration::from_millis(20)))
        .open(&dir.path().join("state.redb"))
        .expect("open");
    let (_, start) = leased_key(&store).await;
    let mut stream = store.watch("/l/", start).await.expect("watch");
    clock.advance(Duration::from_secs(10));
    let event = next_event(&mut stream).await;
    assert!(
        matches!(&event, WatchEvent::Delete { key, .. } if key == "/l/leased"),
        "got {event:?}"
    );
}
