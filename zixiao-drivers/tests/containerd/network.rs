//! Containers on networks, end to end through the controller: IPAM on the
//! embedded store, the bridge and rules from zixiao-net, and containers on
//! the real containerd joining their namespaces. Everything runs inside a
//! network namespace the test creates (containerd itself stays in the host's:
//! runc joins each container's namespace by path), so the host's network is
//! never touched.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zixiao_core::driver::{Driver, Inventory};
use zixiao_core::host::HostFacts;
use zixiao_core::model::CreateNetwork;
use zixiao_core::{Controller, CreateInstance, Instance, InstanceSpec, InstanceStatus, LocalAgent};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};
use zixiao_net::{nft, LinuxNetwork, StoreIpam};
use zixiao_store::EmbeddedStore;
use zixiao_testing::wait::{runtime_endpoint, wait_until, wait_until_ok};

use super::{fixture, TIMEOUT};

/// A controller whose one node runs containers on containerd with `network`.
pub(crate) async fn controller(
    dir: &Path,
    options: ContainerdOptions,
    network: LinuxNetwork,
) -> Controller {
    let driver = ContainerdDriver::connect(options)
        .await
        .expect("connect")
        .with_network(network.clone());
    let agent =
        LocalAgent::new(HostFacts::probe(dir).expect("host facts")).with_driver(Arc::new(driver));
    let mut registration = agent.registration("local");
    registration.capacity.cpus = registration.capacity.cpus.max(zixiao_core::Cpus::cores(16));
    let store = Arc::new(EmbeddedStore::open(&dir.join("store.redb")).expect("open store"));
    let controller = Controller::builder(
        store.clone(),
        Arc::new(zixiao_sched::PluginScheduler::default()),
    )
    .agent("local", Arc::new(agent))
    .address_allocator(Arc::new(StoreIpam::new(store)))
    .network_host("local", Arc::new(network))
    .build();
    controller
        .register_node(registration)
        .await
        .expect("register");
    controller
}

pub(crate) fn on_network(name: &str, network: &str, script: &str) -> CreateInstance {
    let mut spec = InstanceSpec::container("busybox").with_command(["sh", "-c", script]);
    spec.networks = vec![network.to_owned()];
    CreateInstance::new(name, spec)
}

pub(crate) async fn until_status(c: &Controller, name: &str, want: InstanceStatus) -> Instance {
    wait_until(
        &format!("{name} to be {}", want.as_str()),
        TIMEOUT,
        || async {
            let i = c.converge(name).await.expect("converge").expect("exists");
            (i.status == want).then_some(i)
        },
    )
    .await
}

pub(crate) fn address(i: &Instance) -> IpAddr {
    i.attachments[0].addresses[0].address
}

fn ping(address: IpAddr) -> bool {
    std::process::Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "3", &address.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("busybox ping")
        .success()
}

/// Runs `body` in a fresh network namespace on a current-thread runtime.
pub(crate) fn isolated<F, Fut>(body: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let Some(base) = runtime_endpoint("ZIXIAO_TEST_NETNS_DIR", "netlink and nftables") else {
        return;
    };
    std::fs::create_dir_all(&base).expect("netns base");
    let dir = tempfile::tempdir_in(&base).expect("netns dir");
    let netns_dir = dir.path().to_path_buf();
    let outcome = zixiao_net::netns::run_isolated(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body(netns_dir))
    });
    // A DHCP responder left running would keep the namespace alive.
    let _ = zixiao_net::dhcp::stop_responders(dir.path());
    for entry in std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = zixiao_net::netns::remove(&entry.path());
    }
    match outcome {
        Ok(entered) => entered.expect("unshare(CLONE_NEWNET): networking tests run as root"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[test]
fn containers_on_one_network_reach_each_other_and_delete_leaves_nothing() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture("network").await else {
            return;
        };
        let host = LinuxNetwork::connect(&netns_dir).expect("netlink");
        let c = controller(fx.dir.path(), fx.driver.options().clone(), host.clone()).await;
        let net = c
            .create_network(CreateNetwork::new("ctr", ["10.66.0.0/24"]))
            .await
            .expect("create network");

        // `a` prints its address, then prints what each TCP connection
        // brings, and stays up: a task that exits may lose what it printed
        // last if the shim has not copied it yet (seen in CI), one that lives
        // may not. It listens again after each connection, so a client that
        // gave up half-way (below) can try again.
        c.create_instance(on_network(
            "a",
            "ctr",
            "ip -o -4 addr show eth0; while true; do nc -l -p 7000; sleep 0.2; done",
        ))
        .await
        .expect("create a");
        let a = until_status(&c, "a", InstanceStatus::Running).await;
        let a_ip = address(&a);
        assert!(ping(a_ip), "the host reaches a at {a_ip}");

        // `b` pings a, then sends it a message, then stays up. It keeps
        // trying for as long as the test waits: with the whole binary's
        // tests starting containers at once on 2 cores, ten tries (seen
        // in CI) could all come before a's listener answered. `-w 2` bounds
        // each try: once (in CI) a connection that never completed held b's
        // only try for the whole wait.
        let script = format!(
            "i=0; while [ $i -lt 120 ]; do ping -c 1 -W 1 {a_ip} >/dev/null && echo reached-a && \
             echo hello-from-b | nc -w 2 {a_ip} 7000 && echo sent && break; i=$((i+1)); sleep 0.5; \
             done; sleep 600"
        );
        let b = c
            .create_instance(on_network("b", "ctr", &script))
            .await
            .expect("create b");
        until_status(&c, "b", InstanceStatus::Running).await;
        let b = c.get_instance(&b.id).await.unwrap();
        assert_ne!(address(&b), a_ip);
        assert!(ping(address(&b)), "the host reaches b");

        // b's message in a's output: proof that b reached a by address. On
        // a timeout both logs and what the host reaches say which step
        // failed (it has, rarely, in CI).
        let fx_ref = &fx;
        let (a_ref, b_ref) = (&a, &b);
        let log = wait_until_ok("a's log to show b's message", TIMEOUT, || async move {
            let log = fx_ref.log(a_ref).await;
            if log.contains("hello-from-b") {
                return Ok(log);
            }
            let b_log = fx_ref.log(b_ref).await;
            Err(format!(
                "a's log: {log:?}\nb's log: {b_log:?}\nthe host reaches a: {}, b: {}",
                ping(a_ip),
                ping(address(b_ref))
            ))
        })
        .await;
        assert!(
            log.contains(&format!("{a_ip}/24")),
            "a saw its own address: {log}"
        );
        assert!(log.contains("hello-from-b"), "a got b's message: {log}");
        let b_log = fx.log(&b).await;
        assert!(b_log.contains("reached-a"), "b pinged a: {b_log}");
        // a's traffic, as `instance stats` reports it: what it received
        // (pings, b's message) and sent (the replies), its loopback aside.
        let stats = Driver::stats(fx.driver.as_ref()).expect("stats capability");
        let used = stats.stats(&a).await.expect("stats of a");
        assert!(
            used.net_rx_bytes.is_some_and(|rx| rx > 0)
                && used.net_tx_bytes.is_some_and(|tx| tx > 0),
            "{used:?}"
        );

        // Delete: no container, namespace, veth or allocation left, then the network.
        for name in ["a", "b"] {
            c.delete_instance(name).await.expect("delete");
            assert!(c.converge(name).await.expect("converge delete").is_none());
        }
        assert!(fx.leftovers().await.is_empty());
        assert!(
            !host.netns_path(&a.id, &a.attachments).unwrap().exists()
                && !host.netns_path(&b.id, &b.attachments).unwrap().exists()
        );
        assert!(
            host.links_with_prefix("zxv").await.unwrap().is_empty(),
            "no veth left"
        );
        assert!(!ping(a_ip));
        c.delete_network("ctr").await.expect("delete network");
        assert_eq!(host.link_index(&net.bridge).await.unwrap(), None);
        assert!(nft::our_tables().await.unwrap().is_empty());
    });
}

#[test]
fn a_container_on_a_network_missing_on_the_node_fails_and_leaves_nothing() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture("network-missing").await else {
            return;
        };
        let host = LinuxNetwork::connect(&netns_dir).expect("netlink");
        let c = controller(fx.dir.path(), fx.driver.options().clone(), host.clone()).await;
        let net = c
            .create_network(CreateNetwork::new("gone", ["10.67.0.0/24"]))
            .await
            .expect("create network");
        // The node lost the bridge (someone removed it by hand).
        host.delete_link(&net.bridge, &net.mark().unwrap())
            .await
            .unwrap();
        c.create_instance(on_network("x", "gone", "sleep 600"))
            .await
            .expect("create");
        let x = until_status(&c, "x", InstanceStatus::Failed).await;
        let problem = x.problem().unwrap_or_default().to_owned();
        assert!(problem.contains("not set up on this node"), "{problem}");
        assert!(
            fx.leftovers().await.is_empty(),
            "no container or snapshot left"
        );
        assert!(
            !host.netns_path(&x.id, &x.attachments).unwrap().exists(),
            "no namespace left"
        );
        assert!(host.links_with_prefix("zxv").await.unwrap().is_empty());
    });
}

#[test]
fn remove_orphan_removes_a_containers_namespace_and_veth_knowing_only_its_id() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture("network-orphan").await else {
            return;
        };
        let host = LinuxNetwork::connect(&netns_dir).expect("netlink");
        let c = controller(fx.dir.path(), fx.driver.options().clone(), host.clone()).await;
        let net = c
            .create_network(CreateNetwork::new("orphans", ["10.69.0.0/24"]))
            .await
            .expect("create network");
        c.create_instance(on_network("lost", "orphans", "sleep 600"))
            .await
            .expect("create");
        let lost = until_status(&c, "lost", InstanceStatus::Running).await;
        let veth = lost.attachments[0].host_interface.clone();
        assert!(host.link_index(&veth).await.unwrap().is_some());
        assert!(host
            .netns_path(&lost.id, &lost.attachments)
            .unwrap()
            .exists());

        // A node that lost its record of the instance knows only its id.
        let driver = ContainerdDriver::connect(fx.driver.options().clone())
            .await
            .expect("connect")
            .with_network(host.clone());
        assert!(driver.instance_ids().await.unwrap().contains(&lost.id));
        driver
            .remove_orphan(&lost.id)
            .await
            .expect("remove the orphan");
        assert!(
            fx.leftovers().await.is_empty(),
            "{:?}",
            fx.leftovers().await
        );
        assert!(
            !host
                .netns_path(&lost.id, &lost.attachments)
                .unwrap()
                .exists(),
            "no namespace left"
        );
        assert_eq!(host.link_index(&veth).await.unwrap(), None, "no veth left");
        assert!(!ping(address(&lost)));
        assert!(driver.instance_ids().await.unwrap().is_empty());

        // The controller's delete then finds nothing left to remove.
        c.delete_instance("lost").await.expect("delete");
        assert!(c.converge("lost").await.expect("converge delete").is_none());
        c.delete_network("orphans").await.expect("delete network");
        assert_eq!(host.link_index(&net.bridge).await.unwrap(), None);
        fx.finish().await;
    });
}
