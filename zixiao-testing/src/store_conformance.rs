//! The conformance suite every [`Store`] backend must pass: reads, writes
//! with preconditions, all-or-nothing transactions, revisions, watches,
//! compaction and leases, plus a concurrent compare-and-swap workload.
//!
//! A backend's test file gives a factory of fresh, empty stores and expands
//! [`store_conformance_tests!`](crate::store_conformance_tests), which makes
//! one `#[tokio::test]` per case so each case passes or fails by name:
//!
//! ```ignore
//! async fn fresh_store() -> zixiao_testing::store_conformance::StoreUnderTest {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = MyStore::open(dir.path()).unwrap();
//!     StoreUnderTest::new(Arc::new(store)).with_guard(dir)
//! }
//! zixiao_testing::store_conformance_tests!(fresh_store);
//! ```
//!
//! The cases assume only what the [`Store`] trait promises: they compare
//! revisions with each other (never with fixed numbers), so a backend on a
//! shared server (etcd, with a key namespace per store) passes them too.

use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use zixiao_core::store::{KeyValue, Precondition, Revision, Txn, WatchEvent, WatchStream};
use zixiao_core::{Store, StoreError};

use crate::wait::wait_until;

/// Drops a store's watch history through a revision (see
/// [`StoreUnderTest::with_compaction`]).
pub type CompactFn =
    Box<dyn Fn(Revision) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

/// A fresh, empty store for one conformance case, with what keeps it alive.
pub struct StoreUnderTest {
    /// The store under test.
    pub store: Arc<dyn Store>,
    compact: Option<CompactFn>,
    /// Dropped after `store` (fields drop in declaration order).
    _guard: Box<dyn Any + Send>,
}

impl StoreUnderTest {
    /// A store whose backend needs nothing else kept alive and cannot be
    /// compacted on demand (the compaction case then skips).
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreUnderTest {
            store,
            compact: None,
            _guard: Box::new(()),
        }
    }

    /// Keeps `guard` (a temporary directory, a server process) until the case
    /// ends; it is dropped after the store.
    pub fn with_guard(mut self, guard: impl Any + Send) -> Self {
        self._guard = Box::new(guard);
        self
    }

    /// Lets the compaction case run: `compact(r)` must drop history so that
    /// a watch after any revision below `r` fails with
    /// [`StoreError::Compacted`], while a watch after `r` still works.
    pub fn with_compaction<F, Fut>(mut self, compact: F) -> Self
    where
        F: Fn(Revision) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        self.compact = Some(Box::new(move |revision| Box::pin(compact(revision))));
        self
    }
}

impl From<Arc<dyn Store>> for StoreUnderTest {
    fn from(store: Arc<dyn Store>) -> Self {
        StoreUnderTest::new(store)
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each calling
/// `$factory().await` for a fresh store (a [`StoreUnderTest`], or anything
/// that converts into one such as an `Arc<dyn Store>`).
///
/// `$factory` is a path to an `async fn` or a closure returning a future.
/// The calling crate needs `tokio` (features `macros`, `rt`,
/// `rt-multi-thread`) as a dev-dependency. Wrap the call in a `mod` to group
/// the test names.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::store_conformance_tests!(@current_thread $factory;
            get_of_missing_key_is_none,
            put_then_get_returns_value_and_revisions,
            deferred_commits_are_seen_at_once_and_ordered_with_the_rest,
            a_staged_txn_is_written_before_the_next_commit,
            list_is_in_key_order_and_stays_in_its_prefix,
            create_if_absent_rejects_an_existing_key,
            update_with_current_revision_succeeds,
            update_with_stale_revision_conflicts,
            update_of_missing_key_is_not_found,
            delete_removes_the_key_and_missing_delete_is_fine,
            delete_with_revision_precondition,
            failed_precondition_applies_no_write_of_the_txn,
            checks_guard_a_txn_and_write_nothing,
            multi_write_txn_applies_at_one_revision,
            revisions_increase_and_create_revision_is_kept,
            invalid_txns_are_rejected_and_change_nothing,
            put_with_unknown_lease_is_not_found,
            watch_from_zero_replays_kept_history,
            watch_after_listing_revision_misses_nothing,
            watch_sees_only_its_prefix,
            delete_events_carry_previous_value,
            watch_of_compacted_history_fails,
            lease_with_zero_ttl_is_rejected,
            keys_put_with_a_lease_carry_it,
            keep_alive_of_unknown_lease_is_not_found,
            revoking_a_lease_deletes_its_keys_with_events,
            expired_lease_deletes_its_keys,
        );
        $crate::store_conformance_tests!(@multi_thread $factory;
            watch_delivers_history_then_live_without_gap_or_duplicate,
            concurrent_cas_increments_lose_nothing,
        );
    };
    (@current_thread $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store: $crate::store_conformance::StoreUnderTest = ($factory)().await.into();
                $crate::store_conformance::$case(store).await;
            }
        )+
    };
    (@multi_thread $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store: $crate::store_conformance::StoreUnderTest = ($factory)().await.into();
                $crate::store_conformance::$case(store).await;
            }
        )+
    };
}

/// How long a case waits for a watch event or a lease expiry before failing.
const WAIT: Duration = Duration::from_secs(10);

async fn commit(store: &dyn Store, txn: Txn) -> Revision {
    let what = format!("{txn:?}");
    store
        .commit(txn)
        .await
        .unwrap_or_else(|e| panic!("commit of {what} failed: {e}"))
}

async fn put(store: &dyn Store, key: &str, value: &[u8]) -> Revision {
    commit(
        store,
        Txn::new().put(key, value.to_vec(), Precondition::None),
    )
    .await
}

async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key} failed: {e}"))
}

async fn must_get(store: &dyn Store, key: &str) -> KeyValue {
    get(store, key)
        .await
        .unwrap_or_else(|| panic!("{key} is missing from the store"))
}

async fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
    list(store, prefix)
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

async fn list(store: &dyn Store, prefix: &str) -> Vec<KeyValue> {
    store
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("list {prefix} failed: {e}"))
        .items
}

async fn commit_error(store: &dyn Store, txn: Txn) -> StoreError {
    let what = format!("{txn:?}");
    match store.commit(txn).await {
        Ok(revision) => {
            panic!("commit of {what} succeeded at revision {revision}, expected an error")
        }
        Err(e) => e,
    }
}

async fn watch(store: &dyn Store, prefix: &str, after: Revision) -> WatchStream {
    store
        .watch(prefix, after)
        .await
        .unwrap_or_else(|e| panic!("watch {prefix} after {after} failed: {e}"))
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
        Ok(None) => panic!("the watch ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

/// The error of a watch, whether the backend returns it from `watch` or as
/// the stream's first item.
async fn watch_error(store: &dyn Store, prefix: &str, after: Revision) -> StoreError {
    let mut stream = match store.watch(prefix, after).await {
        Err(e) => return e,
        Ok(stream) => stream,
    };
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Err(e))) => e,
        Ok(Some(Ok(event))) => panic!("watch after {after} gave {event:?}, expected an error"),
        Ok(None) => panic!("watch after {after} ended without an error"),
        Err(_) => panic!("watch after {after} gave no error within {WAIT:?}"),
    }
}

#[track_caller]
fn assert_put(event: &WatchEvent, key: &str, value: &[u8], revision: Revision) {
    match event {
        WatchEvent::Put(kv) => {
            assert_eq!(kv.key, key, "put event for the wrong key: {event:?}");
            assert_eq!(kv.value, value, "put event of {key} with the wrong value");
            assert_eq!(
                kv.mod_revision, revision,
                "put event of {key} at the wrong revision"
            );
        }
        WatchEvent::Delete { .. } => panic!("expected a put of {key}, got {event:?}"),
    }
}

#[track_caller]
fn assert_delete(event: &WatchEvent, key: &str, prev: &[u8], revision: Revision) {
    match event {
        WatchEvent::Delete {
            key: deleted,
            revision: at,
            prev: previous,
        } => {
            assert_eq!(deleted, key, "delete event for the wrong key: {event:?}");
            assert_eq!(*at, revision, "delete event of {key} at the wrong revision");
            assert_eq!(
                previous.as_deref(),
                Some(prev),
                "delete event of {key} without its last value"
            );
        }
        WatchEvent::Put(_) => panic!("expected a delete of {key}, got {event:?}"),
    }
}

/// A missing key reads as `None` and a prefix without keys lists nothing.
pub async fn get_of_missing_key_is_none(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    assert_eq!(get(store, "/missing/key").await, None);
    put(store, "/missing/other", b"x").await;
    assert_eq!(get(store, "/missing/key").await, None);
    assert_eq!(
        get(store, "/missing").await,
        None,
        "a prefix of a key is not a key"
    );
    assert!(list(store, "/nothing/").await.is_empty());
}

/// A put is read back byte for byte, with its revisions and no lease.
pub async fn put_then_get_returns_value_and_revisions(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let binary = [0u8, 255, 0, 10, 13, 0];
    let revision = commit(
        store,
        Txn::new()
            .put("/objects/a", b"alpha".to_vec(), Precondition::Absent)
            .put("/objects/binary", binary.to_vec(), Precondition::Absent)
            .put("/objects/empty", Vec::new(), Precondition::Absent),
    )
    .await;
    let a = must_get(store, "/objects/a").await;
    assert_eq!(
        a,
        KeyValue {
            key: "/objects/a".to_owned(),
            value: b"alpha".to_vec(),
            create_revision: revision,
            mod_revision: revision,
            lease: None,
        }
    );
    assert_eq!(must_get(store, "/objects/binary").await.value, binary);
    assert_eq!(
        must_get(store, "/objects/empty").await.value,
        Vec::<u8>::new()
    );
}

/// A deferred commit is seen by reads and watches as soon as it returns,
/// at its place in the revision order, and `sync` is idempotent.
pub async fn deferred_commits_are_seen_at_once_and_ordered_with_the_rest(
    under_test: StoreUnderTest,
) {
    let store = under_test.store.as_ref();
    let first = put(store, "/deferred/a", b"immediate").await;
    let mut events = watch(store, "/deferred/", first).await;
    let deferred = commit(
        store,
        Txn::new()
            .put("/deferred/b", b"deferred".to_vec(), Precondition::Absent)
            .deferred(),
    )
    .await;
    assert!(deferred > first);
    assert_eq!(must_get(store, "/deferred/b").await.mod_revision, deferred);
    assert_eq!(
        keys(store, "/deferred/").await,
        ["/deferred/a", "/deferred/b"]
    );
    let event = next_event(&mut events).await;
    assert_eq!((event.key(), event.revision()), ("/deferred/b", deferred));
    store.sync().await.expect("sync");
    store.sync().await.expect("a second sync");
    let after = put(store, "/deferred/c", b"immediate").await;
    assert!(after > deferred);
}

/// A staged transaction is in the store, before it, once the next commit
/// returns, and once a sync returns when no commit comes; a bad one is
/// refused as a commit would be.
pub async fn a_staged_txn_is_written_before_the_next_commit(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let staged_txn = |key: &str| {
        Txn::new().put(
            format!("/staged/{key}"),
            b"staged".to_vec(),
            Precondition::Absent,
        )
    };
    let mut staged = store.stage(staged_txn("a")).await.expect("stage");
    let after = put(store, "/staged/b", b"committed").await;
    let revision = staged
        .outcome()
        .expect("written with the next commit")
        .expect("staged put");
    assert!(
        revision <= after,
        "staged at {revision}, the commit at {after}"
    );
    assert_eq!(must_get(store, "/staged/a").await.value, b"staged");
    assert!(staged.outcome().is_none(), "the outcome is taken once");

    let mut alone = store.stage(staged_txn("c")).await.expect("stage");
    store.sync().await.expect("sync");
    alone
        .outcome()
        .expect("written by the sync")
        .expect("staged put");
    assert_eq!(
        keys(store, "/staged/").await,
        ["/staged/a", "/staged/b", "/staged/c"]
    );

    let refused = store
        .stage(Txn::new().put("", Vec::new(), Precondition::None))
        .await;
    assert!(matches!(refused, Err(StoreError::InvalidArgument(_))));
    // A store that commits at once fails the stage; one that waits, the
    // staged transaction.
    let taken = match store.stage(staged_txn("a")).await {
        Err(refused) => Err(refused),
        Ok(mut staged) => {
            store.sync().await.expect("sync");
            staged.outcome().expect("written by the sync")
        }
    };
    assert!(
        matches!(taken, Err(StoreError::AlreadyExists(_))),
        "a staged put of an existing key fails alone: {taken:?}"
    );
    assert_eq!(must_get(store, "/staged/a").await.value, b"staged");
}

/// `list` returns exactly the keys starting with the prefix, in key order,
/// with a revision at least that of the last commit.
pub async fn list_is_in_key_order_and_stays_in_its_prefix(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let mut last = 0;
    for key in [
        "/app/b", "/apple", "/app/c/d", "/ap", "/other/a", "/app/a", "/app",
    ] {
        last = put(store, key, key.as_bytes()).await;
    }
    assert_eq!(keys(store, "/app/").await, ["/app/a", "/app/b", "/app/c/d"]);
    assert_eq!(
        keys(store, "/app").await,
        ["/app", "/app/a", "/app/b", "/app/c/d", "/apple"]
    );
    assert_eq!(keys(store, "/other/").await, ["/other/a"]);
    assert!(keys(store, "/zzz/").await.is_empty());
    let listing = store.list("/app/").await.expect("list");
    assert!(
        listing.revision >= last,
        "listing revision {} is older than the last commit {last}",
        listing.revision
    );
    for kv in &listing.items {
        assert_eq!(
            kv.value,
            kv.key.as_bytes(),
            "{} listed with another key's value",
            kv.key
        );
    }
}

/// `Precondition::Absent` on an existing key fails with `AlreadyExists`
/// and leaves the key as it was.
pub async fn create_if_absent_rejects_an_existing_key(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let create = || Txn::new().put("/nodes/n1", b"first".to_vec(), Precondition::Absent);
    commit(store, create()).await;
    let before = must_get(store, "/nodes/n1").await;
    let error = commit_error(
        store,
        Txn::new().put("/nodes/n1", b"second".to_vec(), Precondition::Absent),
    )
    .await;
    assert!(
        matches!(&error, StoreError::AlreadyExists(key) if key == "/nodes/n1"),
        "expected AlreadyExists(/nodes/n1), got {error:?}"
    );
    assert_eq!(must_get(store, "/nodes/n1").await, before);
}

/// A put expecting the key's current revision succeeds and moves only the
/// mod revision.
pub async fn update_with_current_revision_succeeds(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let created = commit(
        store,
        Txn::new().put("/k", b"v1".to_vec(), Precondition::Absent),
    )
    .await;
    let updated = commit(
        store,
        Txn::new().put("/k", b"v2".to_vec(), Precondition::Revision(created)),
    )
    .await;
    assert!(
        updated > created,
        "update revision {updated} is not after {created}"
    );
    let kv = must_get(store, "/k").await;
    assert_eq!(kv.value, b"v2");
    assert_eq!(kv.create_revision, created);
    assert_eq!(kv.mod_revision, updated);
}

/// A put expecting an older revision fails with `Conflict`, naming the
/// revision expected and the one found, and changes nothing.
pub async fn update_with_stale_revision_conflicts(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let created = commit(
        store,
        Txn::new().put("/k", b"v1".to_vec(), Precondition::Absent),
    )
    .await;
    let updated = commit(
        store,
        Txn::new().put("/k", b"v2".to_vec(), Precondition::Revision(created)),
    )
    .await;
    let error = commit_error(
        store,
        Txn::new().put("/k", b"stale".to_vec(), Precondition::Revision(created)),
    )
    .await;
    match error {
        StoreError::Conflict {
            key,
            expected,
            found,
        } => {
            assert_eq!(key, "/k");
            assert_eq!(expected, created);
            assert_eq!(found, updated);
        }
        other => panic!("expected a Conflict, got {other:?}"),
    }
    let kv = must_get(store, "/k").await;
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"v2"[..], updated)
    );
}

/// A put expecting a revision of a missing key fails with `NotFound` and
/// does not create it.
pub async fn update_of_missing_key_is_not_found(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let revision = put(store, "/other", b"x").await;
    let error = commit_error(
        store,
        Txn::new().put("/missing", b"v".to_vec(), Precondition::Revision(revision)),
    )
    .await;
    assert!(
        matches!(&error, StoreError::NotFound(key) if key == "/missing"),
        "expected NotFound(/missing), got {error:?}"
    );
    assert_eq!(get(store, "/missing").await, None);
}

/// A delete without precondition removes the key; deleting a missing key
/// that way is not an error.
pub async fn delete_removes_the_key_and_missing_delete_is_fine(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    put(store, "/d/a", b"a").await;
    put(store, "/d/b", b"b").await;
    commit(store, Txn::new().delete("/d/a", Precondition::None)).await;
    assert_eq!(get(store, "/d/a").await, None);
    assert_eq!(keys(store, "/d/").await, ["/d/b"]);
    commit(store, Txn::new().delete("/d/a", Precondition::None)).await;
    commit(store, Txn::new().delete("/d/never", Precondition::None)).await;
    assert_eq!(keys(store, "/d/").await, ["/d/b"]);
}

/// A delete expecting a revision fails with `Conflict` on a newer key and
/// `NotFound` on a missing one, and succeeds on the current revision.
pub async fn delete_with_revision_precondition(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let created = put(store, "/d/k", b"v1").await;
    let updated = put(store, "/d/k", b"v2").await;
    let error = commit_error(
        store,
        Txn::new().delete("/d/k", Precondition::Revision(created)),
    )
    .await;
    assert!(
        matches!(&error, StoreError::Conflict { key, expected, found }
            if key == "/d/k" && *expected == created && *found == updated),
        "expected Conflict(/d/k, {created}, {updated}), got {error:?}"
    );
    assert_eq!(must_get(store, "/d/k").await.value, b"v2");
    commit(
        store,
        Txn::new().delete("/d/k", Precondition::Revision(updated)),
    )
    .await;
    assert_eq!(get(store, "/d/k").await, None);
    let error = commit_error(
        store,
        Txn::new().delete("/d/k", Precondition::Revision(updated)),
    )
    .await;
    assert!(
        matches!(&error, StoreError::NotFound(key) if key == "/d/k"),
        "expected NotFound(/d/k), got {error:?}"
    );
}

/// When one precondition of a transaction fails, none of its writes is
/// applied, wherever the failing write stands.
pub async fn failed_precondition_applies_no_write_of_the_txn(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let a = commit(
        store,
        Txn::new().put("/t/a", b"a".to_vec(), Precondition::Absent),
    )
    .await;
    put(store, "/t/b", b"b").await;
    let before = list(store, "/t/").await;

    let failing_last = Txn::new()
        .put("/t/new", b"new".to_vec(), Precondition::Absent)
        .delete("/t/b", Precondition::None)
        .put(
            "/t/a",
            b"changed".to_vec(),
            Precondition::Revision(a + 1000),
        );
    assert!(matches!(
        commit_error(store, failing_last).await,
        StoreError::Conflict { .. }
    ));
    assert_eq!(
        list(store, "/t/").await,
        before,
        "a failed transaction changed the store"
    );

    let failing_first = Txn::new()
        .put("/t/a", b"again".to_vec(), Precondition::Absent)
        .put("/t/new", b"new".to_vec(), Precondition::None)
        .delete("/t/b", Precondition::None);
    assert!(matches!(
        commit_error(store, failing_first).await,
        StoreError::AlreadyExists(_)
    ));
    assert_eq!(
        list(store, "/t/").await,
        before,
        "a failed transaction changed the store"
    );

    let failing_middle = Txn::new()
        .delete("/t/b", Precondition::None)
        .delete("/t/missing", Precondition::Revision(a))
        .put("/t/new", b"new".to_vec(), Precondition::Absent);
    assert!(matches!(
        commit_error(store, failing_middle).await,
        StoreError::NotFound(_)
    ));
    assert_eq!(
        list(store, "/t/").await,
        before,
        "a failed transaction changed the store"
    );
}

/// A check makes a transaction depend on a key it does not write: the
/// transaction fails with the check's error when the key changed, and the
/// checked key keeps its revision when it applies.
pub async fn checks_guard_a_txn_and_write_nothing(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let guard = put(store, "/c/guard", b"g").await;
    let applied = commit(
        store,
        Txn::new()
            .check("/c/guard", Precondition::Revision(guard))
            .check("/c/missing", Precondition::Absent)
            .put("/c/a", b"a".to_vec(), Precondition::Absent),
    )
    .await;
    assert!(applied > guard);
    let kept = must_get(store, "/c/guard").await;
    assert_eq!(
        (kept.mod_revision, kept.value.as_slice()),
        (guard, &b"g"[..])
    );
    assert_eq!(must_get(store, "/c/a").await.mod_revision, applied);

    let changed = put(store, "/c/guard", b"h").await;
    let before = list(store, "/c/").await;
    let stale = Txn::new()
        .check("/c/guard", Precondition::Revision(guard))
        .put("/c/b", b"b".to_vec(), Precondition::Absent);
    let error = commit_error(store, stale).await;
    assert!(
        matches!(error, StoreError::Conflict { ref key, expected, found } if key == "/c/guard" && expected == guard && found == changed),
        "expected a conflict on /c/guard, got {error:?}"
    );
    let present = Txn::new()
        .check("/c/a", Precondition::Absent)
        .delete("/c/guard", Precondition::None);
    assert!(matches!(
        commit_error(store, present).await,
        StoreError::AlreadyExists(key) if key == "/c/a"
    ));
    assert_eq!(
        list(store, "/c/").await,
        before,
        "a failed transaction changed the store"
    );
}

/// Every write of one transaction lands at the same revision, which
/// `commit` returns, and a watcher sees them all at it.
pub async fn multi_write_txn_applies_at_one_revision(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let start = put(store, "/m/c", b"c").await;
    let revision = commit(
        store,
        Txn::new()
            .put("/m/a", b"a".to_vec(), Precondition::Absent)
            .put("/m/b", b"b".to_vec(), Precondition::None)
            .delete("/m/c", Precondition::Revision(start)),
    )
    .await;
    assert!(revision > start);
    assert_eq!(must_get(store, "/m/a").await.mod_revision, revision);
    assert_eq!(must_get(store, "/m/b").await.mod_revision, revision);
    assert_eq!(get(store, "/m/c").await, None);

    let mut stream = watch(store, "/m/", start).await;
    let mut events = [
        next_event(&mut stream).await,
        next_event(&mut stream).await,
        next_event(&mut stream).await,
    ];
    events.sort_by(|x, y| x.key().cmp(y.key()));
    assert_put(&events[0], "/m/a", b"a", revision);
    assert_put(&events[1], "/m/b", b"b", revision);
    assert_delete(&events[2], "/m/c", b"c", revision);
}

/// Each commit returns a larger revision; a key keeps its create revision
/// across updates and gets a new one when created again after a delete.
pub async fn revisions_increase_and_create_revision_is_kept(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let r1 = put(store, "/r/a", b"1").await;
    let r2 = put(store, "/r/b", b"2").await;
    let r3 = put(store, "/r/a", b"3").await;
    assert!(
        r1 < r2 && r2 < r3,
        "revisions {r1}, {r2}, {r3} do not increase"
    );
    let a = must_get(store, "/r/a").await;
    assert_eq!((a.create_revision, a.mod_revision), (r1, r3));
    let b = must_get(store, "/r/b").await;
    assert_eq!((b.create_revision, b.mod_revision), (r2, r2));

    let r4 = commit(store, Txn::new().delete("/r/a", Precondition::None)).await;
    let r5 = put(store, "/r/a", b"5").await;
    assert!(
        r3 < r4 && r4 < r5,
        "revisions {r3}, {r4}, {r5} do not increase"
    );
    let a = must_get(store, "/r/a").await;
    assert_eq!((a.create_revision, a.mod_revision), (r5, r5));
    assert!(store.list("/r/").await.expect("list").revision >= r5);
}

/// An empty transaction, one of checks only, a check without a
/// precondition, an empty key and a key written twice are
/// `InvalidArgument`, and apply nothing.
pub async fn invalid_txns_are_rejected_and_change_nothing(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    put(store, "/i/existing", b"x").await;
    let before = list(store, "/").await;
    let invalid = [
        Txn::new(),
        Txn::new().put("", b"v".to_vec(), Precondition::None),
        Txn::new()
            .put("/i/ok", b"v".to_vec(), Precondition::None)
            .delete("", Precondition::None),
        Txn::new()
            .put("/i/twice", b"1".to_vec(), Precondition::None)
            .put("/i/twice", b"2".to_vec(), Precondition::None),
        Txn::new()
            .put("/i/existing", b"y".to_vec(), Precondition::None)
            .delete("/i/existing", Precondition::None),
        Txn::new().check("/i/existing", Precondition::Absent),
        Txn::new()
            .put("/i/ok", b"v".to_vec(), Precondition::None)
            .check("/i/existing", Precondition::None),
    ];
    for txn in invalid {
        let what = format!("{txn:?}");
        let error = commit_error(store, txn).await;
        assert!(
            matches!(error, StoreError::InvalidArgument(_)),
            "{what}: expected InvalidArgument, got {error:?}"
        );
    }
    assert_eq!(
        list(store, "/").await,
        before,
        "an invalid transaction changed the store"
    );
}

/// A put attached to a lease the store never granted fails with `NotFound`.
pub async fn put_with_unknown_lease_is_not_found(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let error = commit_error(
        store,
        Txn::new().put_with_lease("/l/k", b"v".to_vec(), Precondition::None, 987_654_321),
    )
    .await;
    assert!(
        matches!(error, StoreError::NotFound(_)),
        "expected NotFound, got {error:?}"
    );
    assert_eq!(get(store, "/l/k").await, None);
}

/// A watch after revision 0 replays every change still kept, in order,
/// with full key values.
pub async fn watch_from_zero_replays_kept_history(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let r1 = put(store, "/w/a", b"a1").await;
    let r2 = put(store, "/w/b", b"b1").await;
    let r3 = put(store, "/w/a", b"a2").await;
    let r4 = commit(store, Txn::new().delete("/w/b", Precondition::None)).await;

    let mut stream = watch(store, "/w/", 0).await;
    let first = next_event(&mut stream).await;
    assert_eq!(
        first,
        WatchEvent::Put(KeyValue {
            key: "/w/a".to_owned(),
            value: b"a1".to_vec(),
            create_revision: r1,
            mod_revision: r1,
            lease: None,
        })
    );
    assert_put(&next_event(&mut stream).await, "/w/b", b"b1", r2);
    let third = next_event(&mut stream).await;
    assert_put(&third, "/w/a", b"a2", r3);
    assert!(matches!(&third, WatchEvent::Put(kv) if kv.create_revision == r1));
    assert_delete(&next_event(&mut stream).await, "/w/b", b"b1", r4);

    let r5 = put(store, "/w/c", b"c").await;
    assert_put(&next_event(&mut stream).await, "/w/c", b"c", r5);
}

/// A watch after a listing's revision gets every later change and nothing
/// the listing already showed.
pub async fn watch_after_listing_revision_misses_nothing(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    put(store, "/w/a", b"a").await;
    put(store, "/w/b", b"b").await;
    let listing = store.list("/w/").await.expect("list");
    assert_eq!(listing.items.len(), 2);
    let rc = put(store, "/w/c", b"c").await;

    let mut stream = watch(store, "/w/", listing.revision).await;
    assert_put(&next_event(&mut stream).await, "/w/c", b"c", rc);
    let rd = put(store, "/w/d", b"d").await;
    assert_put(&next_event(&mut stream).await, "/w/d", b"d", rd);
}

/// While writers commit, a watch from 0 delivers the history and then the
/// live changes exactly once each, in revision order.
pub async fn watch_delivers_history_then_live_without_gap_or_duplicate(under_test: StoreUnderTest) {
    const BEFORE: usize = 40;
    const DURING: usize = 60;
    let store = Arc::clone(&under_test.store);
    for i in 0..BEFORE {
        put(store.as_ref(), &format!("/live/k{i:03}"), b"before").await;
    }
    // Open the watch, then let a writer commit while it is not read yet and
    // while it replays, so commits land on both sides of the switch from
    // history to live events.
    let mut stream = watch(store.as_ref(), "/live/", 0).await;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in BEFORE..BEFORE + DURING {
                put(store.as_ref(), &format!("/live/k{i:03}"), b"during").await;
            }
        })
    };
    let halfway = format!("/live/k{:03}", BEFORE + DURING / 2);
    wait_until("the writer to be halfway", WAIT, || async {
        get(store.as_ref(), &halfway).await.map(drop)
    })
    .await;
    let mut last_revision = 0;
    for i in 0..BEFORE + DURING {
        let event = next_event(&mut stream).await;
        assert_eq!(
            event.key(),
            format!("/live/k{i:03}"),
            "event {i} is out of order or repeated"
        );
        assert!(
            event.revision() > last_revision,
            "event {i} went back in revisions"
        );
        last_revision = event.revision();
    }
    writer.await.expect("the writer task");
    let marker = put(store.as_ref(), "/live/marker", b"end").await;
    assert_put(
        &next_event(&mut stream).await,
        "/live/marker",
        b"end",
        marker,
    );
}

/// A watch gets changes of keys under its prefix and of no other key.
pub async fn watch_sees_only_its_prefix(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let start = store.list("/a/").await.expect("list").revision;
    let mut stream = watch(store, "/a/", start).await;
    put(store, "/b/x", b"b").await;
    put(store, "/ab", b"ab").await;
    put(store, "/a", b"a").await;
    let ax = put(store, "/a/x", b"ax").await;
    assert_put(&next_event(&mut stream).await, "/a/x", b"ax", ax);
    commit(store, Txn::new().delete("/b/x", Precondition::None)).await;
    let ay = put(store, "/a/y", b"ay").await;
    assert_put(&next_event(&mut stream).await, "/a/y", b"ay", ay);
}

/// A delete event carries the key's last value, replayed or live.
pub async fn delete_events_carry_previous_value(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let start = put(store, "/p/k", b"first").await;
    put(store, "/p/k", b"last").await;
    let deleted = commit(store, Txn::new().delete("/p/k", Precondition::None)).await;
    let mut replay = watch(store, "/p/", start).await;
    next_event(&mut replay).await;
    assert_delete(&next_event(&mut replay).await, "/p/k", b"last", deleted);

    let mut live = watch(store, "/p/", deleted).await;
    put(store, "/p/j", b"value").await;
    let gone = commit(store, Txn::new().delete("/p/j", Precondition::None)).await;
    next_event(&mut live).await;
    assert_delete(&next_event(&mut live).await, "/p/j", b"value", gone);
}

/// After compaction, a watch from before it fails with `Compacted` and a
/// watch from after it (or from 0) starts at the oldest kept change.
/// Skipped for backends without a compaction hook.
pub async fn watch_of_compacted_history_fails(under_test: StoreUnderTest) {
    let Some(compact) = under_test.compact.as_ref() else {
        eprintln!("skipped: this backend gave no compaction hook");
        return;
    };
    let store = under_test.store.as_ref();
    let mut revisions = Vec::new();
    for i in 1..=5 {
        revisions.push(put(store, &format!("/c/k{i}"), b"v").await);
    }
    let kept_from = revisions[3];
    compact(revisions[2])
        .await
        .unwrap_or_else(|e| panic!("compaction failed: {e}"));

    match watch_error(store, "/c/", revisions[0]).await {
        StoreError::Compacted { requested, oldest } => {
            assert!(
                requested <= revisions[2],
                "requested {requested} was not compacted"
            );
            assert!(
                oldest > revisions[2] && oldest <= kept_from,
                "oldest kept {oldest} is not right after the compaction at {}",
                revisions[2]
            );
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut after = watch(store, "/c/", revisions[2]).await;
    assert_put(&next_event(&mut after).await, "/c/k4", b"v", kept_from);
    let mut from_zero = watch(store, "/c/", 0).await;
    assert_put(&next_event(&mut from_zero).await, "/c/k4", b"v", kept_from);
}

/// A lease with a zero TTL is `InvalidArgument`.
pub async fn lease_with_zero_ttl_is_rejected(under_test: StoreUnderTest) {
    let error = under_test
        .store
        .grant_lease(Duration::ZERO)
        .await
        .expect_err("a zero TTL was granted");
    assert!(
        matches!(error, StoreError::InvalidArgument(_)),
        "got {error:?}"
    );
}

/// A key put with a lease reads back with it; keep-alive of a live lease
/// succeeds and is idempotent.
pub async fn keys_put_with_a_lease_carry_it(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let other = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    assert_ne!(lease, other, "two grants gave the same lease");
    commit(
        store,
        Txn::new()
            .put_with_lease("/l/a", b"a".to_vec(), Precondition::Absent, lease)
            .put("/l/b", b"b".to_vec(), Precondition::Absent),
    )
    .await;
    assert_eq!(must_get(store, "/l/a").await.lease, Some(lease));
    assert_eq!(must_get(store, "/l/b").await.lease, None);
    let leases: Vec<_> = list(store, "/l/")
        .await
        .into_iter()
        .map(|kv| kv.lease)
        .collect();
    assert_eq!(leases, [Some(lease), None]);
    store.keep_alive(lease).await.expect("keep-alive");
    store.keep_alive(lease).await.expect("a second keep-alive");

    // Putting the key again without the lease detaches it: revoking the
    // lease then leaves the key alone.
    put(store, "/l/a", b"a2").await;
    assert_eq!(must_get(store, "/l/a").await.lease, None);
    store.revoke_lease(lease).await.expect("revoke");
    assert_eq!(must_get(store, "/l/a").await.value, b"a2");
}

/// Keep-alive of a lease never granted, or revoked, is `NotFound`.
pub async fn keep_alive_of_unknown_lease_is_not_found(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let error = store
        .keep_alive(123_456_789)
        .await
        .expect_err("unknown lease kept alive");
    assert!(matches!(error, StoreError::NotFound(_)), "got {error:?}");
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    store.revoke_lease(lease).await.expect("revoke");
    let error = store
        .keep_alive(lease)
        .await
        .expect_err("revoked lease kept alive");
    assert!(matches!(error, StoreError::NotFound(_)), "got {error:?}");
    store
        .revoke_lease(123_456_789)
        .await
        .expect("revoking an unknown lease is not an error");
}

/// Revoking a lease deletes its keys, with delete events carrying their
/// values, and leaves other keys; revoking again is fine.
pub async fn revoking_a_lease_deletes_its_keys_with_events(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let start = commit(
        store,
        Txn::new()
            .put_with_lease("/l/a", b"a".to_vec(), Precondition::Absent, lease)
            .put_with_lease("/l/b", b"b".to_vec(), Precondition::Absent, lease)
            .put("/l/c", b"c".to_vec(), Precondition::Absent),
    )
    .await;
    let mut stream = watch(store, "/l/", start).await;
    store.revoke_lease(lease).await.expect("revoke");
    assert_eq!(keys(store, "/l/").await, ["/l/c"]);

    let mut events = [next_event(&mut stream).await, next_event(&mut stream).await];
    events.sort_by(|x, y| x.key().cmp(y.key()));
    let revision = events[0].revision();
    assert!(revision > start);
    assert_delete(&events[0], "/l/a", b"a", revision);
    assert_delete(&events[1], "/l/b", b"b", revision);

    store.revoke_lease(lease).await.expect("a second revoke");
    let error = commit_error(
        store,
        Txn::new().put_with_lease("/l/d", b"d".to_vec(), Precondition::None, lease),
    )
    .await;
    assert!(
        matches!(error, StoreError::NotFound(_)),
        "put with a revoked lease: {error:?}"
    );
    let marker = put(store, "/l/marker", b"m").await;
    assert_put(&next_event(&mut stream).await, "/l/marker", b"m", marker);
}

/// Keys of a lease kept alive outlive its TTL; once keep-alives stop, the
/// keys disappear from reads and watchers get their delete events. Takes
/// a few seconds of real time.
pub async fn expired_lease_deletes_its_keys(under_test: StoreUnderTest) {
    let store = under_test.store.as_ref();
    let ttl = Duration::from_secs(2);
    let lease = store.grant_lease(ttl).await.expect("grant");
    let start = commit(
        store,
        Txn::new()
            .put_with_lease("/e/leased", b"alive".to_vec(), Precondition::Absent, lease)
            .put("/e/plain", b"stays".to_vec(), Precondition::Absent),
    )
    .await;
    let mut stream = watch(store, "/e/", start).await;

    // Renew every eighth of the TTL for one and a half TTLs: the key must
    // stay (and a stalled machine still has most of a TTL of slack).
    let mut ticks = tokio::time::interval(ttl / 8);
    for _ in 0..12 {
        ticks.tick().await;
        store
            .keep_alive(lease)
            .await
            .expect("keep-alive of a live lease");
        assert!(
            get(store, "/e/leased").await.is_some(),
            "a kept-alive key expired"
        );
    }

    wait_until("the leased key to expire", WAIT, || async {
        get(store, "/e/leased").await.is_none().then_some(())
    })
    .await;
    assert_eq!(keys(store, "/e/").await, ["/e/plain"]);
    let event = next_event(&mut stream).await;
    assert_delete(&event, "/e/leased", b"alive", event.revision());
    assert!(event.revision() > start);
    let error = store
        .keep_alive(lease)
        .await
        .expect_err("an expired lease was kept alive");
    assert!(matches!(error, StoreError::NotFound(_)), "got {error:?}");
    assert_eq!(must_get(store, "/e/plain").await.value, b"stays");
}

/// Tasks incrementing one counter with compare-and-swap retry loops lose
/// no increment, and every successful commit has its own revision.
pub async fn concurrent_cas_increments_lose_nothing(under_test: StoreUnderTest) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 10;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&under_test.store);
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for _ in 0..INCREMENTS {
                revisions.push(increment(store.as_ref(), "/counter").await);
            }
            revisions
        }));
    }
    let mut revisions = HashSet::new();
    for task in tasks {
        for revision in task.await.expect("an incrementing task") {
            assert!(
                revisions.insert(revision),
                "two commits at revision {revision}"
            );
        }
    }
    let counter = must_get(under_test.store.as_ref(), "/counter").await;
    let value: u64 = String::from_utf8_lossy(&counter.value)
        .parse()
        .expect("the counter holds a number");
    assert_eq!(value, TASKS * INCREMENTS, "increments were lost");
    assert_eq!(revisions.len() as u64, TASKS * INCREMENTS);
    assert_eq!(Some(&counter.mod_revision), revisions.iter().max());
}

/// Adds one to the number at `key` by compare-and-swap, retrying on races.
async fn increment(store: &dyn Store, key: &str) -> Revision {
    loop {
        let (value, precondition) = match get(store, key).await {
            None => (0, Precondition::Absent),
            Some(kv) => {
                let value: u64 = String::from_utf8_lossy(&kv.value)
                    .parse()
                    .expect("the counter holds a number");
                (value, Precondition::Revision(kv.mod_revision))
            }
        };
        let txn = Txn::new().put(key, (value + 1).to_string().into_bytes(), precondition);
        match store.commit(txn).await {
            Ok(revision) => return revision,
            Err(
                StoreError::Conflict { .. }
                | StoreError::AlreadyExists(_)
                | StoreError::NotFound(_),
            ) => {}
            Err(e) => panic!("increment of {key} failed: {e}"),
        }
    }
}
