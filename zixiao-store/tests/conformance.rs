//! The shared Store conformance suite, run on the embedded store with a
//! fresh temporary directory per case: holding its file while open, and
//! (in `per_operation`) opening it only for each operation.

use std::sync::Arc;

use zixiao_store::EmbeddedStoreOptions;
use zixiao_testing::store_conformance::StoreUnderTest;

/// A new store in a temporary directory, opened with `options`.
fn fresh_store(options: EmbeddedStoreOptions) -> StoreUnderTest {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = options
        .open(&dir.path().join("state.redb"))
        .expect("open the store");
    let compactor = store.clone();
    StoreUnderTest::new(Arc::new(store))
        .with_guard(dir)
        .with_compaction(move |through| {
            let store = compactor.clone();
            async move { store.compact(through).await }
        })
}

async fn fresh_embedded_store() -> StoreUnderTest {
    fresh_store(EmbeddedStoreOptions::new())
}

zixiao_testing::store_conformance_tests!(fresh_embedded_store);

/// The same suite on a store that opens its file only for each operation,
/// as the embedded deployment's commands do.
mod per_operation {
    use zixiao_store::{EmbeddedStoreOptions, FileHold};
    use zixiao_testing::store_conformance::StoreUnderTest;

    async fn fresh_store_held_per_operation() -> StoreUnderTest {
        super::fresh_store(EmbeddedStoreOptions::new().hold(FileHold::PerOperation))
    }

    zixiao_testing::store_conformance_tests!(fresh_store_held_per_operation);
}
