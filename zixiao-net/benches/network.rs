//! Networking benchmarks (criterion):
//!
//! - `ipam/allocate`: one allocation from one pool on the embedded store
//!   (1 task, and 8 tasks on two allocators sharing the store);
//! - `container/attach` and `container/detach`: a container endpoint
//!   (namespace, veth on the bridge, address, route) made and removed,
//!   inside a network namespace the benchmark creates;
//! - `tap/attach` and `tap/detach`: a VM's persistent TAP device made and
//!   plugged into the bridge (up), and removed, in the same namespace.
//!
//! ```text
//! eval "$(scripts/services/net.sh start)"
//! cargo bench -p zixiao-net --bench network
//! ```
//! The container and TAP parts need root and `ZIXIAO_TEST_NETNS_DIR`; without them it
//! prints why and is skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use zixiao_core::model::{
    mac_address, CreateNetwork, InstallationId, InterfaceKind, InterfaceName, IpConfig, Network,
    NetworkAttachment,
};
use zixiao_core::store::{put_object, Txn};
use zixiao_core::{AddressAllocator, NetworkHost, Store};
use zixiao_net::{LinuxNetwork, StoreIpam};
use zixiao_store::EmbeddedStore;

fn network(name: &str, subnet: &str) -> Network {
    CreateNetwork::new(name, [subnet])
        .validate(&InstallationId::generate(), chrono::Utc::now())
        .expect("valid network")
}

fn bench_ipam(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).expect("store"));
    // A /12 (about a million addresses): the pool never runs out here.
    let mut net = network("bench", "10.0.0.0/12");
    // Allocations need the stored network.
    net.revision = runtime
        .block_on(store.commit(put_object(Txn::new(), &net)))
        .expect("store the network");
    let allocators = [StoreIpam::new(store.clone()), StoreIpam::new(store)];
    let next = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("ipam");
    group.sample_size(20);
    for tasks in [1u64, 8] {
        group.bench_function(format!("allocate/{tasks}-tasks"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    let mut handles = Vec::new();
                    for t in 0..tasks {
                        let ipam = allocators[(t % 2) as usize].clone();
                        let (net, next) = (net.clone(), next.clone());
                        let share = iters / tasks + u64::from(t < iters % tasks);
                        handles.push(tokio::spawn(async move {
                            for _ in 0..share {
                                let owner = format!("o{}", next.fetch_add(1, Ordering::Relaxed));
                                ipam.allocate(&net, &owner).await.expect("allocate");
                            }
                        }));
                    }
                    for h in handles {
                        h.await.expect("task");
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn attachment(instance: &str, net: &Network, n: u64) -> NetworkAttachment {
    let subnet = &net.subnets[0];
    let installation = net.installation.clone().expect("a current network");
    NetworkAttachment {
        network: net.name.clone(),
        interface: "eth0".into(),
        host_interface: InterfaceName::of(InterfaceKind::Veth, &installation, instance, &net.name),
        installation: Some(installation),
        bridge: net.bridge.clone(),
        mac: mac_address(instance, &net.name),
        addresses: vec![IpConfig {
            address: zixiao_core::model::from_u128(
                subnet.cidr.first() + 2 + u128::from(n % 60_000),
                true,
            ),
            prefix_len: subnet.cidr.prefix_len(),
            gateway: subnet.gateway,
        }],
    }
}

fn bench_attach(c: &mut Criterion, netns_dir: std::path::PathBuf) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let host = runtime.block_on(async { LinuxNetwork::connect(&netns_dir).expect("netlink") });
    let net = network("attach", "10.80.0.0/16");
    runtime
        .block_on(host.ensure_network(&net))
        .expect("ensure network");
    let mut group = c.benchmark_group("container");
    group.sample_size(20);
    let mut n = 0u64;
    group.bench_function("attach", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let id = format!("b{n}");
                    let attachments = [attachment(&id, &net, n)];
                    let started = Instant::now();
                    host.attach_container(&id, &attachments)
                        .await
                        .expect("attach");
                    spent += started.elapsed();
                    host.detach_container(&id, &attachments)
                        .await
                        .expect("detach");
                }
                spent
            })
        })
    });
    group.bench_function("detach", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let id = format!("b{n}");
                    let attachments = [attachment(&id, &net, n)];
                    host.attach_container(&id, &attachments)
                        .await
                        .expect("attach");
                    let started = Instant::now();
                    host.detach_container(&id, &attachments)
                        .await
                        .expect("detach");
                    spent += started.elapsed();
                }
                spent
            })
        })
    });
    group.finish();
    bench_tap(c, &runtime, &host, &net);
}

fn bench_tap(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    host: &LinuxNetwork,
    net: &Network,
) {
    let installation = net.installation.clone().expect("a current network");
    let tap = |id: &str, n: u64| NetworkAttachment {
        host_interface: InterfaceName::of(InterfaceKind::Tap, &installation, id, &net.name),
        ..attachment(id, net, n)
    };
    let mut group = c.benchmark_group("tap");
    group.sample_size(20);
    let mut n = 0u64;
    for measured in ["attach", "detach"] {
        group.bench_function(measured, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let id = format!("t{n}");
                        let attachments = [tap(&id, n)];
                        let started = Instant::now();
                        host.attach_tap(&id, &attachments).await.expect("attach");
                        if measured == "attach" {
                            spent += started.elapsed();
                        }
                        let started = Instant::now();
                        host.detach_tap(&id, &attachments).await.expect("detach");
                        if measured == "detach" {
                            spent += started.elapsed();
                        }
                    }
                    spent
                })
            })
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_ipam(&mut criterion);
    criterion.final_summary();
    let base = match std::env::var("ZIXIAO_TEST_NETNS_DIR") {
        Ok(base) if !base.is_empty() => base,
        _ => {
            eprintln!(
                "skipped container attach: ZIXIAO_TEST_NETNS_DIR is not set (scripts/services/net.sh start)"
            );
            return;
        }
    };
    std::fs::create_dir_all(&base).expect("netns base dir");
    let dir = tempfile::tempdir_in(&base).expect("netns dir");
    let path = dir.path().to_path_buf();
    // Criterion is not Send: the attach part gets its own, on the isolated thread.
    let outcome = zixiao_net::netns::run_isolated(move || {
        let mut criterion = Criterion::default().configure_from_args();
        bench_attach(&mut criterion, path);
        criterion.final_summary();
    });
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("skipped container attach: cannot unshare ({e})"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
