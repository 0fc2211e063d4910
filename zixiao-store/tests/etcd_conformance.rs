//! The shared Store conformance suite on `EtcdStore`, against the shared
//! test cluster (`scripts/services/etcd.sh start`), each case under a key
//! prefix of its own so the cases run in parallel without meeting.
//!
//! `zixiao_testing::store_conformance_tests!` cannot skip when etcd is
//! absent (its factory must return a store), so the cases are expanded here
//! with a skip first. Compaction drops the whole cluster's history, which
//! would break the other cases running beside it on the shared cluster:
//! that case runs on a private member in `etcd_faults.rs` instead.

#![cfg(feature = "etcd")]

mod etcd_common;

use std::sync::Arc;

use zixiao_testing::store_conformance::StoreUnderTest;

async fn fresh_store() -> Option<StoreUnderTest> {
    let store = etcd_common::shared_store().await?;
    Some(StoreUnderTest::new(Arc::new(store)))
}

macro_rules! etcd_conformance {
    ($flavor:tt; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = $flavor)]
            async fn $case() {
                if let Some(store) = fresh_store().await {
                    zixiao_testing::store_conformance::$case(store).await;
                }
            }
        )+
    };
}

etcd_conformance!("current_thread";
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
    multi_write_txn_applies_at_one_revision,
    revisions_increase_and_create_revision_is_kept,
    invalid_txns_are_rejected_and_change_nothing,
    checks_guard_a_txn_and_write_nothing,
    put_with_unknown_lease_is_not_found,
    watch_from_zero_replays_kept_history,
    watch_after_listing_revision_misses_nothing,
    watch_sees_only_its_prefix,
    delete_events_carry_previous_value,
    lease_with_zero_ttl_is_rejected,
    keys_put_with_a_lease_carry_it,
    keep_alive_of_unknown_lease_is_not_found,
    revoking_a_lease_deletes_its_keys_with_events,
    expired_lease_deletes_its_keys,
);

etcd_conformance!("multi_thread";
    watch_delivers_history_then_live_without_gap_or_duplicate,
    concurrent_cas_increments_lose_nothing,
);
