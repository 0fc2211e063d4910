//! Property: whatever the cluster and however many creates, stops and
//! starts race, a node's allocation equals what its placed instances hold
//! (everything while they run, their place and disk while stopped) and
//! never exceeds its capacity, and an instance is pending only when it fits
//! on no node.

use std::sync::Arc;

use proptest::prelude::*;
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, InstanceFilter, InstanceSpec, InstanceStatus, InstanceType,
    LocalAgent, Resources,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

fn check(nodes: Vec<(u32, u64)>, sizes: Vec<(u32, u64)>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).expect("store");
        let mut builder =
            Controller::builder(Arc::new(store), Arc::new(PluginScheduler::default()));
        let mut registrations = Vec::new();
        for (i, (cpus, memory_mib)) in nodes.iter().enumerate() {
            let host = HostFacts {
                hostname: format!("h{i}"),
                capacity: Resources {
                    cpus: zixiao_core::Cpus::cores(*cpus),
                    memory_mib: *memory_mib,
                    disk_gib: 10,
                    instances: 100,
                },
            };
            let agent = Arc::new(
                LocalAgent::new(host)
                    .with_allocation_ratios(zixiao_core::AllocationRatios::EXACT)
                    .with_driver(Arc::new(FakeDriver::new(InstanceType::Container))),
            );
            registrations.push(agent.registration(format!("n{i}")));
            builder = builder.agent(format!("n{i}"), agent);
        }
        let c = builder.build();
        for r in registrations {
            c.register_node(r).await.expect("register");
        }
        let tasks: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, (cpus, memory))| {
                let c = c.clone();
                let request = CreateInstance::new(
                    format!("i{i}"),
                    InstanceSpec::container("busybox").with_size(*cpus, *memory),
                );
                tokio::spawn(async move {
                    let created = c.create_instance(request).await.expect("create");
                    c.converge(&created.id).await.expect("converge");
                    // Every third stops (giving its CPU back), every sixth
                    // starts again (taking it back, or waiting for room).
                    if i % 3 == 0 {
                        c.stop_instance(&created.id).await.expect("stop");
                        c.converge(&created.id).await.expect("converge");
                    }
                    if i % 6 == 0 {
                        c.start_instance(&created.id).await.expect("start");
                        c.converge(&created.id).await.expect("converge");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join");
        }
        // Stops gave capacity back after some creates found none: one pass
        // places what fits now, as a background converger would.
        c.reconcile_all().await.expect("reconcile");
        let nodes = c.list_nodes().await.expect("nodes");
        for node in &nodes {
            let placed = c
                .list_instances(&InstanceFilter {
                    node: Some(node.id.clone()),
                    ..Default::default()
                })
                .await
                .expect("list");
            let sum = placed
                .iter()
                .fold(Resources::default(), |acc, i| acc.saturating_add(&i.held()));
            assert_eq!(node.allocated, sum, "node {} allocation drifted", node.id);
            assert!(node.allocated.cpus <= node.capacity.cpus, "{node:?}");
            assert!(
                node.allocated.memory_mib <= node.capacity.memory_mib,
                "{node:?}"
            );
        }
        let pending = c
            .list_instances(&InstanceFilter {
                status: Some(InstanceStatus::Pending),
                ..Default::default()
            })
            .await
            .expect("list");
        for p in pending {
            let want = p.spec.resources();
            assert!(
                nodes.iter().all(|n| !n.capacity.fits(&n.allocated, &want)),
                "{} is pending but fits somewhere",
                p.name
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn allocation_matches_placements_and_never_over_commits(
        nodes in prop::collection::vec((1u32..8, 256u64..4096), 1..4),
        sizes in prop::collection::vec((1u32..4, 16u64..1024), 1..24),
    ) {
        check(nodes, sizes);
    }
}
