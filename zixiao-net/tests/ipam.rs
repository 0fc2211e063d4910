//! StoreIpam on the embedded store: allocation, idempotency, release,
//! exhaustion, and concurrent allocation from many tasks and two allocators
//! (two controllers) never handing out one address twice.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use zixiao_core::model::{mac_octets, CreateNetwork, InstallationId, Network};
use zixiao_core::store::{put_object, Precondition, Txn};
use zixiao_core::{AddressAllocator, ErrorKind, Store};
use zixiao_net::ipam::IPAM_PREFIX;
use zixiao_net::StoreIpam;
use zixiao_store::EmbeddedStore;

fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).expect("store");
    (dir, Arc::new(store))
}

/// Network `name` as stored: allocations need the stored network.
async fn network(store: &dyn Store, name: &str, subnets: &[&str]) -> Network {
    let net = CreateNetwork::new(name, subnets.iter().copied())
        .validate(&InstallationId::generate(), chrono::Utc::now())
        .expect("valid network");
    stored(store, net).await
}

async fn stored(store: &dyn Store, mut net: Network) -> Network {
    net.revision = store
        .commit(put_object(Txn::new(), &net))
        .await
        .expect("store the network");
    net
}

#[tokio::test]
async fn allocation_is_in_the_subnet_idempotent_and_released() {
    let (_dir, store) = store();
    let ipam = StoreIpam::new(store.clone());
    let net = network(store.as_ref(), "lan", &["10.20.0.0/24", "fd20::/64"]).await;
    let first = ipam.allocate(&net, "a").await.unwrap();
    assert_eq!(first.len(), 2);
    for (ip, subnet) in first.iter().zip(&net.subnets) {
        assert!(
            subnet.cidr.contains(ip.address),
            "{ip} outside {}",
            subnet.cidr
        );
        assert!(subnet.is_assignable(ip.address), "{ip} is special");
        assert_eq!(ip.gateway, subnet.gateway);
        assert_eq!(ip.prefix_len, subnet.cidr.prefix_len());
    }
    assert_eq!(
        ipam.allocate(&net, "a").await.unwrap(),
        first,
        "same owner, same addresses"
    );
    let second = ipam.allocate(&net, "b").await.unwrap();
    assert_ne!(second[0].address, first[0].address);
    assert_eq!(ipam.owners("lan").await.unwrap(), vec!["a", "b"]);

    ipam.release("lan", "a").await.unwrap();
    ipam.release("lan", "a").await.unwrap();
    assert_eq!(ipam.owners("lan").await.unwrap(), vec!["b"]);
    let held: Vec<IpAddr> = ipam
        .allocations("lan")
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(held.len(), 2, "only b's two addresses remain: {held:?}");
    assert!(!held.contains(&first[0].address));
}

#[tokio::test]
async fn on_a_slaac_subnet_the_address_is_the_one_the_mac_forms_and_never_twice() {
    let (_dir, store) = store();
    let ipam = StoreIpam::new(store.clone());
    let net = network(store.as_ref(), "dual", &["10.93.0.0/24", "fd00:9e36::/64"]).await;
    let a = ipam.allocate(&net, "a").await.unwrap();
    // What a's NIC (MAC `mac_address("a", "dual")`) forms from the RAs.
    let formed = net.subnets[1]
        .slaac_address(mac_octets("a", "dual"))
        .unwrap();
    assert_eq!(a[1].address, formed);
    assert_eq!(
        (a[1].prefix_len, a[1].gateway.to_string().as_str()),
        (64, "fd00:9e36::1")
    );
    assert!(net.subnets[0].cidr.contains(a[0].address), "IPv4 as before");

    // Another MAC forming an address already held (a hash collision, here
    // made by hand): refused naming the holder, nothing allocated.
    let clash = net.subnets[1]
        .slaac_address(mac_octets("b", "dual"))
        .unwrap();
    store
        .commit(Txn::new().put(
            format!("{IPAM_PREFIX}dual/addresses/{clash}"),
            b"squatter".to_vec(),
            Precondition::Absent,
        ))
        .await
        .unwrap();
    let err = ipam.allocate(&net, "b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains(&clash.to_string()) && err.to_string().contains("`squatter`"),
        "{err}"
    );
    assert_eq!(ipam.owners("dual").await.unwrap(), vec!["a"]);
}

#[tokio::test]
async fn an_exhausted_pool_is_named_and_frees_up_on_release() {
    let (_dir, store) = store();
    let ipam = StoreIpam::new(store.clone());
    // /29: 8 addresses minus network, broadcast, gateway and a reserved pair = 3.
    let mut req = CreateNetwork::new("tiny", ["10.30.0.0/29"]);
    req.reserved = vec!["10.30.0.4/31".into()];
    let net = stored(
        store.as_ref(),
        req.validate(&InstallationId::generate(), chrono::Utc::now())
            .unwrap(),
    )
    .await;
    let mut got = BTreeSet::new();
    for owner in ["a", "b", "c"] {
        got.insert(
            ipam.allocate(&net, owner).await.unwrap()[0]
                .address
                .to_string(),
        );
    }
    let expected: BTreeSet<String> = ["10.30.0.2", "10.30.0.3", "10.30.0.6"]
        .map(String::from)
        .into();
    assert_eq!(got, expected);
    let err = ipam.allocate(&net, "d").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    assert!(
        err.to_string().contains("10.30.0.0/29") && err.to_string().contains("`tiny`"),
        "{err}"
    );
    assert_eq!(
        ipam.owners("tiny").await.unwrap().len(),
        3,
        "the failure allocated nothing"
    );
    ipam.release("tiny", "b").await.unwrap();
    assert!(ipam.allocate(&net, "d").await.is_ok());
}

/// Allocates for `owners` owners from `net` on `tasks` tasks spread over two
/// allocators sharing `store`; returns the addresses handed out and the
/// number of exhausted errors.
async fn allocate_concurrently(
    store: Arc<dyn Store>,
    net: &Network,
    owners: usize,
) -> (Vec<IpAddr>, usize) {
    let allocators = [StoreIpam::new(store.clone()), StoreIpam::new(store)];
    let mut tasks = Vec::new();
    for i in 0..owners {
        let ipam = allocators[i % 2].clone();
        let net = net.clone();
        tasks.push(tokio::spawn(async move {
            ipam.allocate(&net, &format!("owner-{i}")).await
        }));
    }
    let mut addresses = Vec::new();
    let mut exhausted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(ips) => addresses.extend(ips.into_iter().map(|ip| ip.address)),
            Err(e) if e.kind() == ErrorKind::ResourceExhausted => exhausted += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    (addresses, exhausted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_and_two_allocators_never_duplicate_an_address() {
    let (_dir, store) = store();
    // 64 addresses minus network, broadcast, gateway: 61 for 80 owners.
    let net = network(store.as_ref(), "busy", &["10.40.0.0/26"]).await;
    let (addresses, exhausted) = allocate_concurrently(store.clone(), &net, 80).await;
    let unique: BTreeSet<_> = addresses.iter().collect();
    assert_eq!(
        unique.len(),
        addresses.len(),
        "duplicate address handed out"
    );
    assert_eq!(addresses.len(), 61, "the whole pool is used");
    assert_eq!(exhausted, 19);
    let stored = StoreIpam::new(store).allocations("busy").await.unwrap();
    assert_eq!(
        stored.len(),
        61,
        "what the store records matches what was returned"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn concurrent_allocation_never_duplicates(prefix in 26u8..=29, owners in 1usize..40, v6 in any::<bool>()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(3).enable_all().build().unwrap();
        runtime.block_on(async {
            let (_dir, store) = store();
            let v4 = format!("10.50.0.0/{prefix}");
            let subnets: Vec<&str> = if v6 { vec![&v4, "fd50::/120"] } else { vec![&v4] };
            let net = network(store.as_ref(), "prop", &subnets).await;
            let capacity = (1usize << (32 - prefix)) - 3;
            let (addresses, exhausted) = allocate_concurrently(store, &net, owners).await;
            let unique: BTreeSet<_> = addresses.iter().collect();
            prop_assert_eq!(unique.len(), addresses.len());
            let granted = owners.min(capacity);
            let per_owner = if v6 { 2 } else { 1 };
            prop_assert_eq!(addresses.len(), granted * per_owner);
            prop_assert_eq!(exhausted, owners - granted);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn nothing_is_allocated_on_a_network_being_deleted_or_never_stored() {
    let (_dir, store) = store();
    let ipam = StoreIpam::new(store.clone());
    let unstored = CreateNetwork::new("ghost", ["10.45.0.0/24"])
        .validate(&InstallationId::generate(), chrono::Utc::now())
        .unwrap();
    let err = ipam.allocate(&unstored, "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");

    // A delete marks the network after this allocator read it: the
    // allocation must not land behind the delete's check for users.
    let read = network(store.as_ref(), "lan", &["10.46.0.0/24"]).await;
    let mut marked = read.clone();
    marked.deleting = true;
    stored(store.as_ref(), marked.clone()).await;
    let err = ipam.allocate(&read, "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("`lan`"), "{err}");
    let err = ipam.allocate(&marked, "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(ipam.owners("lan").await.unwrap().is_empty());
    assert!(ipam.allocations("lan").await.unwrap().is_empty());
}
