//! The controller's network API with the real pieces: StoreIpam on the
//! embedded store, LinuxNetwork in a test-owned network namespace, and a
//! fake container driver (this layer's concern is addresses and bridges).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use common::{in_fresh_netns, on, setup, setup_on, setup_with};
use zixiao_core::model::{
    CreateNetwork, InstallationId, IpConfig, Network, TAP_PREFIX, VETH_PREFIX,
};
use zixiao_core::store::{KeyValue, LeaseId, Listing, Precondition, Revision, Txn, WatchStream};
use zixiao_core::{
    AddressAllocator, Error, ErrorKind, Instance, InstanceSpec, NetworkHost, Result, Store,
    StoreError,
};
use zixiao_net::{nft, LinuxNetwork, StoreIpam};

#[test]
fn networks_are_created_checked_used_and_deleted_without_leftovers() {
    in_fresh_netns(|dir| async move {
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let s = setup(host.clone()).await;
        let c = &s.controller;
        let lan = c
            .create_network(CreateNetwork::new("lan", ["10.70.0.0/24", "fd70::/64"]))
            .await
            .unwrap();
        assert!(
            host.link_index(&lan.bridge).await.unwrap().is_some(),
            "bridge on the node"
        );
        assert!(nft::show_table(&lan.nft_table()).await.unwrap().is_some());

        let dup = c
            .create_network(CreateNetwork::new("lan", ["10.71.0.0/24"]))
            .await
            .unwrap_err();
        assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
        let overlap = c
            .create_network(CreateNetwork::new("other", ["10.70.0.128/25"]))
            .await
            .unwrap_err();
        assert_eq!(overlap.kind(), ErrorKind::InvalidArgument);
        assert!(
            overlap.to_string().contains("subnets[0]") && overlap.to_string().contains("`lan`"),
            "{overlap}"
        );
        let bad = c
            .create_network(CreateNetwork::new("bad", ["10.72.0.0/40"]))
            .await
            .unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
        assert!(bad.to_string().contains("subnets[0]"), "{bad}");
        assert_eq!(
            c.list_networks().await.unwrap().len(),
            1,
            "failed creates stored nothing"
        );

        // An instance gets an address per subnet and a stable MAC.
        let web = c.create_instance(on("web", &["lan"])).await.unwrap();
        let attachment = &web.attachments[0];
        assert_eq!(attachment.network, "lan");
        assert_eq!(attachment.interface, "eth0");
        assert_eq!(attachment.addresses.len(), 2);
        assert!(lan.subnets[0]
            .cidr
            .contains(attachment.addresses[0].address));
        assert!(lan.subnets[1]
            .cidr
            .contains(attachment.addresses[1].address));
        assert_eq!(
            c.get_instance("web").await.unwrap().attachments,
            web.attachments,
            "recorded in the store"
        );
        assert_eq!(s.ipam.owners("lan").await.unwrap(), vec![web.id.clone()]);

        // A VM joins through a TAP device (`zxt…`) where a container has a
        // veth (`zxv…`); its address comes from the same pool.
        let mut vm = on("vm", &["lan"]);
        vm.spec = InstanceSpec::vm("disk.qcow2");
        vm.spec.networks = vec!["lan".into()];
        let vm = c.create_instance(vm).await.unwrap();
        assert!(attachment.host_interface.starts_with(VETH_PREFIX));
        assert!(vm.attachments[0].host_interface.starts_with(TAP_PREFIX));
        assert_ne!(vm.attachments[0].addresses, attachment.addresses);
        c.delete_instance("vm").await.unwrap();
        assert!(c.converge(&vm.id).await.unwrap().is_none());
        assert_eq!(s.ipam.owners("lan").await.unwrap().len(), 1);

        let missing = c
            .create_instance(on("db", &["lan", "nope"]))
            .await
            .unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::InvalidArgument);
        assert!(
            missing.to_string().contains("spec.networks[1]"),
            "{missing}"
        );
        assert_eq!(
            s.ipam.owners("lan").await.unwrap().len(),
            1,
            "the failed create released lan"
        );

        let in_use = c.delete_network("lan").await.unwrap_err();
        assert_eq!(in_use.kind(), ErrorKind::FailedPrecondition);
        assert!(in_use.to_string().contains("web"), "{in_use}");

        c.converge(&web.id).await.unwrap();
        c.delete_instance("web").await.unwrap();
        assert!(c.converge(&web.id).await.unwrap().is_none());
        assert!(
            s.ipam.owners("lan").await.unwrap().is_empty(),
            "addresses released on delete"
        );
        assert!(s.ipam.allocations("lan").await.unwrap().is_empty());

        c.delete_network("lan").await.unwrap();
        assert_eq!(
            host.link_index(&lan.bridge).await.unwrap(),
            None,
            "bridge removed"
        );
        assert!(nft::our_tables().await.unwrap().is_empty(), "rules removed");
        assert_eq!(
            c.get_network("lan").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    });
}

#[test]
fn an_exhausted_pool_refuses_the_instance_and_stores_nothing() {
    in_fresh_netns(|dir| async move {
        let s = setup(Arc::new(LinuxNetwork::connect(dir).unwrap())).await;
        let c = &s.controller;
        c.create_network(CreateNetwork::new("small", ["10.73.0.0/30"]))
            .await
            .unwrap();
        c.create_instance(on("one", &["small"])).await.unwrap();
        let err = c.create_instance(on("two", &["small"])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        assert!(err.to_string().contains("10.73.0.0/30"), "{err}");
        assert_eq!(
            c.get_instance("two").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    });
}

#[test]
fn reconcile_releases_allocations_of_vanished_instances() {
    in_fresh_netns(|dir| async move {
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let s = setup(host.clone()).await;
        let c = &s.controller;
        let net = c
            .create_network(CreateNetwork::new("lan", ["10.74.0.0/24"]))
            .await
            .unwrap();
        // A controller crashed between allocating and storing an instance.
        s.ipam.allocate(&net, "crashed-instance").await.unwrap();
        let kept = c.create_instance(on("kept", &["lan"])).await.unwrap();
        // And the bridge vanished (a reboot).
        host.delete_link(&net.bridge, &net.mark().unwrap())
            .await
            .unwrap();
        let report = c.reconcile_networks().await.unwrap();
        assert_eq!(report.released, vec!["lan/crashed-instance".to_owned()]);
        assert_eq!(s.ipam.owners("lan").await.unwrap(), vec![kept.id]);
        assert!(
            host.link_index(&net.bridge).await.unwrap().is_some(),
            "bridge restored"
        );
    });
}

/// StoreIpam, except that right after its first allocation a network
/// reconcile runs, sees an owner no stored instance names (the instance is
/// not stored yet) and releases it, as a reconcile racing a create would.
#[derive(Debug)]
struct RacedByAReconcile {
    ipam: StoreIpam,
    allocations: AtomicUsize,
}

#[async_trait]
impl AddressAllocator for RacedByAReconcile {
    async fn allocate(&self, network: &Network, owner: &str) -> Result<Vec<IpConfig>> {
        let addresses = self.ipam.allocate(network, owner).await?;
        if self.allocations.fetch_add(1, Ordering::SeqCst) == 0 {
            self.ipam.release(&network.name, owner).await?;
        }
        Ok(addresses)
    }
    async fn release(&self, network: &str, owner: &str) -> Result<()> {
        self.ipam.release(network, owner).await
    }
    async fn owners(&self, network: &str) -> Result<Vec<String>> {
        self.ipam.owners(network).await
    }
    async fn guard(&self, txn: Txn, network: &str, owner: &str) -> Result<Txn> {
        self.ipam.guard(txn, network, owner).await
    }
}

#[test]
fn a_create_whose_addresses_a_reconcile_released_allocates_again() {
    in_fresh_netns(|dir| async move {
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let raced = Arc::new(std::sync::OnceLock::new());
        let s = setup_with(host, {
            let raced = raced.clone();
            move |ipam| {
                let allocator = Arc::new(RacedByAReconcile {
                    ipam,
                    allocations: AtomicUsize::new(0),
                });
                let _ = raced.set(allocator.clone());
                allocator
            }
        })
        .await;
        let c = &s.controller;
        c.create_network(CreateNetwork::new("lan", ["10.75.0.0/24"]))
            .await
            .unwrap();
        let created = c.create_instance(on("web", &["lan"])).await.unwrap();
        let allocator = raced.get().expect("allocator");
        assert_eq!(
            allocator.allocations.load(Ordering::SeqCst),
            2,
            "the released allocation was made again"
        );
        // The stored instance's address is the one its pool says it holds.
        let address = created.attachments[0].addresses[0].address;
        let held = s.ipam.allocations("lan").await.unwrap();
        assert_eq!(held, vec![(address, created.id.clone())]);
        let stored = c.get_instance("web").await.unwrap();
        assert_eq!(stored.attachments, created.attachments);
    });
}

/// A node of another process, as far as the controller sees it: its
/// network set-up fails (`refusing`: after the first of two nodes
/// succeeded) or succeeds without touching anything; its removal fails
/// with `removing` (say, it cannot be reached); it has `underlay`, and
/// records the overlay peers it is told.
#[derive(Debug, Default)]
struct OtherNode {
    refusing: bool,
    removing: Option<fn() -> Error>,
    underlay: Option<std::net::IpAddr>,
    peers: std::sync::Mutex<Vec<Vec<std::net::IpAddr>>>,
}

#[async_trait]
impl NetworkHost for OtherNode {
    async fn ensure_network(&self, _: &Network) -> Result<()> {
        if self.refusing {
            return Err(Error::Unsupported(
                "missing privileges for creating bridges".into(),
            ));
        }
        Ok(())
    }
    async fn remove_network(&self, _: &Network) -> Result<()> {
        self.removing.map_or(Ok(()), |error| Err(error()))
    }
    async fn inventory(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn reconcile(
        &self,
        _: &InstallationId,
        _: &[Network],
        _: &[Instance],
        _: &[String],
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn underlay(&self) -> Result<Option<std::net::IpAddr>> {
        Ok(self.underlay)
    }
    async fn set_overlay(&self, _: &Network, view: &zixiao_core::model::OverlayView) -> Result<()> {
        self.peers.lock().unwrap().push(view.peers().to_vec());
        Ok(())
    }
}

#[test]
fn a_node_that_cannot_set_up_the_network_leaves_nothing_half_created() {
    in_fresh_netns(|dir| async move {
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let s = setup(host.clone()).await;
        s.controller.attach_network_host(
            "node-b",
            Arc::new(OtherNode {
                refusing: true,
                ..OtherNode::default()
            }),
        );
        let err = s
            .controller
            .create_network(CreateNetwork::new("lan", ["10.75.0.0/24"]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(
            err.to_string().contains("node-b") && err.to_string().contains("privileges"),
            "{err}"
        );
        assert!(s.controller.list_networks().await.unwrap().is_empty());
        assert!(
            host.links_with_prefix("zxb").await.unwrap().is_empty(),
            "node-a's bridge undone"
        );
        assert!(nft::our_tables().await.unwrap().is_empty());
    });
}

/// `network delete` while another node is down deletes it (that node
/// removes it when its agent registers again); a node that fails in
/// another way keeps it, usable, not stuck as being deleted.
#[test]
fn a_network_is_deleted_while_a_node_is_unreachable_and_kept_usable_when_one_fails() {
    in_fresh_netns(|dir| async move {
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let s = setup(host.clone()).await;
        let c = &s.controller;
        let node = |removing: fn() -> Error| {
            Arc::new(OtherNode {
                removing: Some(removing),
                ..OtherNode::default()
            })
        };
        c.attach_network_host(
            "node-b",
            node(|| Error::Internal("the bridge is busy".into())),
        );
        c.create_network(CreateNetwork::new("lan", ["10.76.0.0/24"]))
            .await
            .unwrap();
        let err = c.delete_network("lan").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
        assert!(err.to_string().contains("node-b"), "{err}");
        let kept = c.get_network("lan").await.unwrap();
        assert!(!kept.deleting, "left marked as deleting: {kept:?}");
        let web = c.create_instance(on("web", &["lan"])).await;
        let web = web.expect("the network takes instances again");
        c.delete_instance("web").await.unwrap();
        assert!(c.converge(&web.id).await.unwrap().is_none());

        c.attach_network_host(
            "node-b",
            node(|| {
                Error::Driver(zixiao_core::DriverError::Unavailable {
                    runtime: "the agent of node `node-b`".into(),
                    source: "connection refused".into(),
                })
            }),
        );
        c.delete_network("lan")
            .await
            .expect("deleted with node-b down");
        assert!(c.list_networks().await.unwrap().is_empty());
        assert!(
            host.links_with_prefix("zxb").await.unwrap().is_empty(),
            "the reachable node's bridge stays"
        );
    });
}

#[test]
fn a_delete_racing_a_create_never_leaves_an_instance_on_a_deleted_network() {
    in_fresh_netns(|dir| async move {
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let s = setup(host.clone()).await;
        let c = &s.controller;
        let (mut created, mut deleted) = (0, 0);
        for round in 0..18 {
            let net = format!("race{round}");
            c.create_network(CreateNetwork::new(&net, ["10.76.0.0/24"]))
                .await
                .unwrap();
            let name = format!("joiner{round}");
            // Start the create a little later each round, so the delete's
            // steps fall before, between and after the create's.
            let head_start = round % 6;
            let (create, delete) = tokio::join!(
                async {
                    for _ in 0..head_start {
                        tokio::task::yield_now().await;
                    }
                    c.create_instance(on(&name, &[&net])).await
                },
                c.delete_network(&net)
            );
            match (&create, &delete) {
                (Ok(instance), Err(e)) => {
                    // The network stays, usable, with the instance on it.
                    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
                    assert!(!c.get_network(&net).await.unwrap().deleting);
                    assert_eq!(
                        s.ipam.owners(&net).await.unwrap(),
                        vec![instance.id.clone()]
                    );
                    c.delete_instance(&name).await.unwrap();
                    c.converge(&instance.id).await.unwrap();
                    c.delete_network(&net).await.unwrap();
                    created += 1;
                }
                (Err(e), Ok(())) => {
                    assert!(
                        matches!(
                            e.kind(),
                            ErrorKind::FailedPrecondition | ErrorKind::InvalidArgument
                        ),
                        "{e}"
                    );
                    assert_eq!(
                        c.get_instance(&name).await.unwrap_err().kind(),
                        ErrorKind::NotFound
                    );
                    assert!(s.ipam.owners(&net).await.unwrap().is_empty());
                    deleted += 1;
                }
                other => panic!("round {round}: exactly one must win: {other:?}"),
            }
            assert!(
                c.get_network(&net).await.is_err()
                    || c.list_instances(&Default::default())
                        .await
                        .unwrap()
                        .is_empty(),
            );
        }
        eprintln!("create won {created} times, delete won {deleted} times");
        assert!(host.links_with_prefix("zxb").await.unwrap().is_empty());
    });
}

#[test]
fn networks_stored_before_installation_ids_are_listed_refused_and_deletable() {
    in_fresh_netns(|dir| async move {
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let s = setup(host.clone()).await;
        let c = &s.controller;
        // What an older Zixiao stored: no installation, a name-only bridge.
        let old = serde_json::json!({
            "name": "old", "subnets": [{"cidr": "10.77.0.0/24", "gateway": "10.77.0.1"}],
            "bridge": "zxb754a4882", "nat": true, "isolated": true,
            "created_at": "2024-01-01T00:00:00Z"
        });
        c.store()
            .commit(Txn::new().put(
                "/zixiao/networks/old",
                old.to_string().into_bytes(),
                Precondition::Absent,
            ))
            .await
            .unwrap();

        // It reads, and the rest works around it.
        let listed = c.list_networks().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].installation, None);
        let lan = c
            .create_network(CreateNetwork::new("lan", ["10.78.0.0/24"]))
            .await
            .unwrap();
        c.create_instance(on("web", &["lan"])).await.unwrap();

        // Joining it, or setting it up on a node, is refused saying what to do.
        let err = c.create_instance(on("db", &["old"])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(
            err.to_string().contains("older than installation ids"),
            "{err}"
        );
        assert!(s.ipam.owners("old").await.unwrap().is_empty());
        let err = c.reconcile_networks().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("delete the network"), "{err}");
        assert!(host.link_index("zxb754a4882").await.unwrap().is_none());

        // Deleting it goes through while none of its objects is on the node.
        c.delete_network("old").await.unwrap();
        assert_eq!(c.list_networks().await.unwrap(), vec![lan.clone()]);
        assert!(c.reconcile_networks().await.unwrap().removed.is_empty());
    });
}

/// A store that ends the next commit storing an instance with an unknown
/// outcome, as an etcd commit whose answer a dropped connection lost: it
/// applies the commit or not (`applied`), then says `OutcomeUnknown`.
#[derive(Debug)]
struct LosesOneAnswer {
    inner: Arc<dyn Store>,
    applied: bool,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Store for LosesOneAnswer {
    async fn get(&self, key: &str) -> std::result::Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> std::result::Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }
    async fn commit(&self, txn: Txn) -> std::result::Result<Revision, StoreError> {
        let stores_instance = txn.writes.iter().any(|w| match w {
            zixiao_core::store::Write::Put { key, .. } => {
                key.starts_with(zixiao_core::controller::INSTANCES_PREFIX)
            }
            _ => false,
        });
        if !stores_instance || !self.armed.swap(false, Ordering::SeqCst) {
            return self.inner.commit(txn).await;
        }
        if self.applied {
            self.inner.commit(txn).await?;
        }
        Err(StoreError::OutcomeUnknown {
            what: "the commit: connection lost".to_owned(),
        })
    }
    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> std::result::Result<WatchStream, StoreError> {
        self.inner.watch(prefix, after).await
    }
    async fn grant_lease(
        &self,
        ttl: std::time::Duration,
    ) -> std::result::Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> std::result::Result<(), StoreError> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> std::result::Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
}

/// Runs one create whose commit's answer is lost (`applied` or not) and
/// checks what a user would: the error says the outcome is unknown, no
/// address is ever held by two instances, and once a reconcile has seen
/// the truth an address is held exactly while its instance is stored.
fn a_create_with_a_lost_answer(applied: bool) {
    in_fresh_netns(move |dir| async move {
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = setup_on(
            host,
            |ipam| Arc::new(ipam),
            |inner| {
                Arc::new(LosesOneAnswer {
                    inner,
                    applied,
                    armed: armed.clone(),
                })
            },
        )
        .await;
        let c = &s.controller;
        // Room for both instances besides the gateway.
        c.create_network(CreateNetwork::new("tiny", ["10.79.0.0/29"]))
            .await
            .unwrap();
        armed.store(true, Ordering::SeqCst);

        let error = c.create_instance(on("lost", &["tiny"])).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        assert!(error.to_string().contains("outcome unknown"), "{error}");
        let held = s.ipam.allocations("tiny").await.unwrap();
        assert_eq!(
            held.len(),
            1,
            "the address is kept while the outcome is unknown: {held:?}"
        );

        // The next create never gets the address `lost` may hold.
        let next = c.create_instance(on("next", &["tiny"])).await.unwrap();
        assert_ne!(next.attachments[0].addresses[0].address, held[0].0);

        // A reconcile learns the truth: an address for every stored
        // instance, none for one that was never stored.
        c.reconcile_networks().await.unwrap();
        let stored = c.get_instance("lost").await;
        assert_eq!(stored.is_ok(), applied, "{stored:?}");
        let mut owners = s.ipam.owners("tiny").await.unwrap();
        owners.sort();
        let mut expected = vec![next.id.clone()];
        if let Ok(lost) = stored {
            assert_eq!(lost.attachments[0].addresses[0].address, held[0].0);
            expected.push(lost.id);
        }
        expected.sort();
        assert_eq!(owners, expected);
    });
}

#[test]
fn a_create_whose_commit_answer_is_lost_after_it_applied_keeps_its_address() {
    a_create_with_a_lost_answer(true);
}

#[test]
fn a_create_whose_commit_answer_is_lost_before_it_applied_frees_its_address_on_reconcile() {
    a_create_with_a_lost_answer(false);
}

#[test]
fn a_network_cannot_span_a_node_without_an_underlay_address() {
    in_fresh_netns(|dir| async move {
        // node-a: the real host, with no underlay (the embedded default).
        let host = Arc::new(LinuxNetwork::connect(dir).unwrap());
        let s = setup(host.clone()).await;
        let c = &s.controller;
        let b = Arc::new(OtherNode {
            underlay: Some("10.9.9.2".parse().unwrap()),
            ..OtherNode::default()
        });
        let agent = Arc::new(
            zixiao_core::LocalAgent::new(zixiao_core::host::HostFacts {
                hostname: "b".into(),
                capacity: zixiao_core::Resources {
                    cpus: zixiao_core::Cpus::cores(16),
                    memory_mib: 65536,
                    disk_gib: 100,
                    instances: 64,
                },
            })
            .with_driver(Arc::new(zixiao_testing::fake_driver::FakeDriver::new(
                zixiao_core::InstanceType::Container,
            ))),
        );
        let mut registration = agent.registration("node-b");
        registration.zone = "zone-b".into();
        c.attach_agent("node-b", agent);
        c.attach_network_host("node-b", b.clone());
        c.register_node(registration).await.unwrap();
        let lan = c
            .create_network(CreateNetwork::new("lan", ["10.76.0.0/24"]))
            .await
            .unwrap();
        assert!(lan.vni.is_some(), "every new network gets a VNI");

        // Alone on node-a it needs no overlay: it runs, and node-b, which
        // carries nothing, is not even asked.
        let mut one = on("one", &["lan"]);
        one.spec.placement.zone = Some("default".into());
        let one = c.create_instance(one).await.unwrap();
        let one = c.settle(&one.id).await.unwrap().unwrap();
        assert_eq!(one.node.as_deref(), Some("node-a"));
        assert_eq!(one.status, zixiao_core::InstanceStatus::Running, "{one:?}");
        assert_eq!(
            *b.peers.lock().unwrap(),
            Vec::<Vec<std::net::IpAddr>>::new()
        );

        // On node-b too it would span node-a, which has no underlay.
        let mut two = on("two", &["lan"]);
        two.spec.placement.zone = Some("zone-b".into());
        let two = c.create_instance(two).await.unwrap();
        let two = c.settle(&two.id).await.unwrap().unwrap();
        assert_eq!(two.status, zixiao_core::InstanceStatus::Failed, "{two:?}");
        let problem = two.problem().unwrap_or_default().to_owned();
        assert!(
            problem.contains("`node-a`") && problem.contains("--underlay"),
            "{problem}"
        );
    });
}
