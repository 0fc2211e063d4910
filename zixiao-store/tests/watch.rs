//! Watch behaviour specific to the embedded store: a slow watcher loses
//! nothing, history is bounded by the history limit, and a watch after a
//! future revision waits for it.

use std::time::Duration;

use futures::StreamExt;
use zixiao_core::store::{Precondition, Revision, Txn, WatchEvent, WatchStream};
use zixiao_core::{Store, StoreError};
use zixiao_store::{EmbeddedStore, EmbeddedStoreOptions};

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch goes on")
        .expect("an event, not an error")
}

async fn put(store: &EmbeddedStore, key: &str) -> Revision {
    store
        .commit(Txn::new().put(key, key.as_bytes().to_vec(), Precondition::None))
        .await
        .expect("commit")
}

#[tokio::test]
async fn a_lagging_watcher_rereads_the_changelog_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStoreOptions::new()
        .event_buffer(2)
        .open(&dir.path().join("state.redb"))
        .expect("open");
    let start = put(&store, "/other").await;
    let mut stream = store.watch("/k/", start).await.expect("watch");
    // Not reading while 50 revisions commit overflows the 2-slot buffer.
    for i in 0..50 {
        put(&store, &format!("/k/{i:03}")).await;
    }
    for i in 0..50 {
        assert_eq!(next_event(&mut stream).await.key(), format!("/k/{i:03}"));
    }
    let marker = put(&store, "/k/marker").await;
    assert_eq!(next_event(&mut stream).await.revision(), marker);
}

#[tokio::test]
async fn history_is_compacted_to_the_limit() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStoreOptions::new()
        .history_limit(5)
        .open(&dir.path().join("state.redb"))
        .expect("open");
    let mut revisions = Vec::new();
    for i in 0..20 {
        revisions.push(put(&store, &format!("/k/{i:03}")).await);
    }
    let last = revisions[19];
    match store.watch("/k/", last - 6).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (last - 5, last - 4));
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| "a stream")),
    }
    let mut from_zero = store
        .watch("/k/", 0)
        .await
        .expect("watch from the oldest kept");
    assert_eq!(next_event(&mut from_zero).await.revision(), last - 4);
    let mut oldest = store
        .watch("/k/", last - 5)
        .await
        .expect("watch after the compaction point");
    assert_eq!(next_event(&mut oldest).await.key(), "/k/015");
}

#[tokio::test]
async fn compacting_past_the_current_revision_is_invalid() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("open");
    let revision = put(&store, "/k").await;
    let error = store
        .compact(revision + 1)
        .await
        .expect_err("compacted the future");
    assert!(
        matches!(error, StoreError::InvalidArgument(_)),
        "got {error:?}"
    );
    store
        .compact(revision)
        .await
        .expect("compact through the current revision");
    store
        .compact(revision)
        .await
        .expect("compaction is idempotent");
}

#[tokio::test]
async fn a_watch_after_a_future_revision_waits_for_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("open");
    let now = put(&store, "/k/0").await;
    let mut stream = store.watch("/k/", now + 2).await.expect("watch");
    put(&store, "/k/1").await;
    put(&store, "/k/2").await;
    let third = put(&store, "/k/3").await;
    let event = next_event(&mut stream).await;
    assert_eq!((event.key(), event.revision()), ("/k/3", third));
}

#[tokio::test]
async fn a_watch_ends_with_unavailable_when_the_store_closes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("open");
    let start = put(&store, "/other").await;
    let mut stream = store.watch("/k/", start).await.expect("watch");
    drop(store);
    let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the watch ends within 10 s");
    assert!(
        matches!(item, Some(Err(StoreError::Unavailable { .. }))),
        "got {item:?}"
    );
    assert!(
        stream.next().await.is_none(),
        "the watch went on after its error"
    );
}
