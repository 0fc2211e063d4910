//! The shared Store conformance suite, run on the embedded store with a
//! fresh temporary directory per case.

use std::sync::Arc;

use zixiao_store::EmbeddedStore;
use zixiao_testing::store_conformance::StoreUnderTest;

async fn fresh_embedded_store() -> StoreUnderTest {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("open the store");
    let compactor = store.clone();
    StoreUnderTest::new(Arc::new(store))
        .with_guard(dir)
        .with_compaction(move |through| {
            let store = compactor.clone();
            async move { store.compact(through).await }
        })
}

zixiao_testing::store_conformance_tests!(fresh_embedded_store);
