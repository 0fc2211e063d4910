//! A store held per operation ([`FileHold::PerOperation`]) shares its file:
//! between its operations another handle (in another process, or here a
//! second handle of this one, which redb locks out just the same) opens
//! the file, both write with compare-and-swap on one revision sequence, and
//! each one's watchers see the other's commits.

use futures::StreamExt;
use zixiao_core::store::{Precondition, Txn, WatchEvent};
use zixiao_core::{Store, StoreError};
use zixiao_store::{EmbeddedStore, EmbeddedStoreOptions, FileHold};

fn per_operation(path: &std::path::Path) -> EmbeddedStore {
    EmbeddedStoreOptions::new()
        .hold(FileHold::PerOperation)
        .sweep_interval(None)
        .open(path)
        .expect("open the store per operation")
}

#[tokio::test]
async fn two_handles_held_per_operation_share_revisions_and_compare_and_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let first = per_operation(&path);
    let second = per_operation(&path);

    let created = first
        .commit(Txn::new().put("/k", b"1".to_vec(), Precondition::Absent))
        .await
        .expect("the first handle writes");
    let seen = second.get("/k").await.expect("read").expect("the key");
    assert_eq!(seen.mod_revision, created, "one revision sequence");

    let updated = second
        .commit(Txn::new().put("/k", b"2".to_vec(), Precondition::Revision(created)))
        .await
        .expect("the second handle swaps");
    assert!(updated > created);
    let stale = first
        .commit(Txn::new().put("/k", b"3".to_vec(), Precondition::Revision(created)))
        .await
        .expect_err("a swap on a stale revision");
    assert!(
        matches!(stale, StoreError::Conflict { .. }),
        "got {stale:?}"
    );
    assert_eq!(
        first.get("/k").await.expect("read").expect("key").value,
        b"2"
    );
}

#[tokio::test]
async fn a_store_held_per_operation_leaves_the_file_free_between_operations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let shared = per_operation(&path);
    shared
        .commit(Txn::new().put("/k", b"1".to_vec(), Precondition::Absent))
        .await
        .expect("write");

    // `shared` stays open: a store holding its file while open would keep
    // this one out for good; one held per operation lets it in after a
    // moment's linger.
    let holder = EmbeddedStoreOptions::new()
        .lock_timeout(std::time::Duration::from_secs(5))
        .open(&path)
        .expect("the file is free between operations");
    assert_eq!(
        holder.get("/k").await.expect("read").expect("key").value,
        b"1"
    );
    drop(holder);
    assert!(shared.get("/k").await.expect("read again").is_some());
}

#[tokio::test]
async fn a_watch_sees_the_commits_of_another_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let watcher = per_operation(&path);
    let writer = per_operation(&path);
    let mut events = watcher.watch("/w/", 0).await.expect("watch");

    let theirs = writer
        .commit(Txn::new().put("/w/theirs", b"x".to_vec(), Precondition::Absent))
        .await
        .expect("the other handle writes");
    // The watcher's process learns of it the next time it opens the file,
    // before it commits anything itself.
    watcher.get("/w/theirs").await.expect("read");
    assert_eq!(
        next_put(&mut events).await,
        ("/w/theirs".to_owned(), theirs)
    );

    let ours = watcher
        .commit(Txn::new().put("/w/ours", b"y".to_vec(), Precondition::Absent))
        .await
        .expect("this handle writes");
    assert_eq!(next_put(&mut events).await, ("/w/ours".to_owned(), ours));
}

/// The next event of `events`, a put, as its key and revision. Bounded, so
/// a missed event fails the test instead of hanging it.
async fn next_put(events: &mut zixiao_core::store::WatchStream) -> (String, u64) {
    let next = tokio::time::timeout(std::time::Duration::from_secs(30), events.next())
        .await
        .expect("an event within 30 s");
    match next {
        Some(Ok(WatchEvent::Put(kv))) => (kv.key, kv.mod_revision),
        other => panic!("unexpected {other:?}"),
    }
}
