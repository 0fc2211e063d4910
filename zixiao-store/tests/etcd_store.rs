//! `EtcdStore` behaviour beyond the conformance suite, on the shared test
//! cluster: key prefixes keep stores apart, and bad options are refused.

#![cfg(feature = "etcd")]

mod etcd_common;

use std::time::Duration;

use futures::StreamExt;
use zixiao_core::store::{Precondition, Txn, WatchEvent};
use zixiao_core::{ErrorKind, Store};
use zixiao_store::{EtcdStore, EtcdStoreOptions};

/// Two stores with different prefixes on one cluster write the same key
/// without seeing each other's value, listing or events.
#[tokio::test]
async fn key_prefixes_keep_stores_apart() {
    let Some(a) = etcd_common::shared_store().await else {
        return;
    };
    let Some(b) = etcd_common::shared_store().await else {
        return;
    };
    assert_ne!(a.key_prefix(), b.key_prefix());
    let start = b.list("/").await.expect("list").revision;
    let mut b_events = b.watch("/", start).await.expect("watch");

    a.commit(Txn::new().put("/zixiao/nodes/n1", b"from a".to_vec(), Precondition::Absent))
        .await
        .expect("a creates n1");
    // The same key is absent for b: its own create succeeds.
    let b_rev = b
        .commit(Txn::new().put("/zixiao/nodes/n1", b"from b".to_vec(), Precondition::Absent))
        .await
        .expect("b creates n1");
    assert_eq!(
        a.get("/zixiao/nodes/n1")
            .await
            .expect("get")
            .expect("a's")
            .value,
        b"from a"
    );
    assert_eq!(
        b.get("/zixiao/nodes/n1")
            .await
            .expect("get")
            .expect("b's")
            .value,
        b"from b"
    );
    let listed: Vec<_> = a.list("/").await.expect("list").items;
    assert_eq!(listed.len(), 1, "a lists another store's keys: {listed:?}");
    assert_eq!(
        listed[0].key, "/zixiao/nodes/n1",
        "keys read back without the prefix"
    );

    match tokio::time::timeout(Duration::from_secs(10), b_events.next()).await {
        Ok(Some(Ok(WatchEvent::Put(kv)))) => {
            assert_eq!(
                (kv.value.as_slice(), kv.mod_revision),
                (&b"from b"[..], b_rev)
            );
        }
        other => panic!("expected b's own put first, got {other:?}"),
    }
}

/// Malformed options fail with `InvalidArgument` naming the field, before
/// any connection is tried.
#[tokio::test]
async fn bad_options_are_invalid_arguments() {
    for (options, field) in [
        (EtcdStoreOptions::new(Vec::<String>::new()), "endpoints"),
        (EtcdStoreOptions::new(["localhost:2379"]), "endpoints[0]"),
        (
            EtcdStoreOptions::new(["https://127.0.0.1:2379"]),
            "endpoints[0]",
        ),
        (
            EtcdStoreOptions::new(["http://127.0.0.1:2379"]).dial_timeout(Duration::ZERO),
            "dial_timeout",
        ),
    ] {
        let error = EtcdStore::connect(options)
            .await
            .expect_err("bad options accepted");
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
        assert!(
            error.to_string().contains(field),
            "{error} does not name {field}"
        );
    }
}
