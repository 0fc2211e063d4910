//! Networks across the wire: a controller (StoreIpam over the embedded
//! store) served as the ComputeService, and a node's agent served as the
//! AgentService with the real LinuxNetwork, reached through a
//! [`RemoteNetworkHost`]. Each test runs in a network namespace of its own
//! (loopback up for gRPC), so bridges and nftables tables land there and
//! never on the host. Instances use a fake driver: the layer under test is
//! the protocol and the node's network devices, not a container runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use zixiao_api::agent::AgentServer;
use zixiao_api::network::RemoteNetworkHost;
use zixiao_api::pb;
use zixiao_api::remote::RemoteAgent;
use zixiao_core::host::HostFacts;
use zixiao_core::model::{
    CreateNetwork, MacAddress, NetworkPartKind, NetworkStatus, OverlayEndpoint, OverlayView,
    PartState,
};
use zixiao_core::{
    Client, Controller, CreateInstance, ErrorKind, InstanceSpec, InstanceType, LocalAgent,
    NetworkHost, NodeRegistration, Resources, Wait,
};
use zixiao_net::{nft, LinuxNetwork, StoreIpam};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::FakeDriver;

/// Runs `body` on a thread in a fresh network namespace with loopback up,
/// on a current-thread runtime (so the `nft` processes LinuxNetwork runs
/// are in that namespace too). `body` gets a directory for container
/// namespaces. Skips when `scripts/services/net.sh` has not run.
fn in_fresh_netns<F, Fut>(body: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let Some(base) =
        zixiao_testing::wait::runtime_endpoint("ZIXIAO_TEST_NETNS_DIR", "netlink and nftables")
    else {
        return;
    };
    std::fs::create_dir_all(&base).expect("netns base dir");
    let dir = tempfile::tempdir_in(&base).expect("netns dir");
    let path = dir.path().to_path_buf();
    let outcome = zixiao_net::netns::run_isolated(move || {
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(up.success(), "loopback up in the test's namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body(path));
    });
    // A DHCP responder left running would keep the namespace alive.
    let _ = zixiao_net::dhcp::stop_responders(dir.path());
    match outcome {
        Ok(entered) => entered.expect("unshare(CLONE_NEWNET): networking tests run as root"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn host_facts() -> HostFacts {
    HostFacts {
        hostname: "node-a-host".into(),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(8),
            memory_mib: 8192,
            disk_gib: 100,
            instances: 32,
        },
    }
}

async fn serve_agent(server: AgentServer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = server.into_service();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    addr
}

async fn serve_compute(controller: Controller) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api = Arc::new(controller);
    tokio::spawn(zixiao_api::server::serve(
        api,
        listener,
        std::future::pending(),
    ));
    addr
}

/// A server's controller with node `node-a` reached only over gRPC.
struct Rig {
    controller: Controller,
    client: Client,
    _dir: tempfile::TempDir,
}

/// The server side over an agent that sets networks up with `network` (or
/// none), the controller seeing only the remote agent and network host.
async fn rig(network: Option<Arc<dyn NetworkHost>>) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let local = LocalAgent::new(host_facts())
        .with_driver(Arc::new(FakeDriver::new(InstanceType::Container)));
    let registration = local.registration("node-a");
    let mut server = AgentServer::new(Arc::new(local));
    if let Some(network) = network {
        server = server.with_network_host(network);
    }
    let agent_addr = serve_agent(server).await.to_string();
    let remote = RemoteAgent::registered(&NodeRegistration {
        address: agent_addr.to_string(),
        ..registration.clone()
    })
    .expect("remote agent");
    let controller = Controller::builder(store.clone(), Arc::new(PluginScheduler::default()))
        .address_allocator(Arc::new(StoreIpam::new(store)))
        .build();
    controller.attach_agent("node-a", Arc::new(remote));
    controller.attach_network_host(
        "node-a",
        Arc::new(RemoteNetworkHost::new("node-a", &agent_addr).expect("network host")),
    );
    controller
        .register_node(zixiao_core::NodeRegistration {
            address: agent_addr,
            ..registration
        })
        .await
        .expect("register");
    let client =
        zixiao_api::connect(&serve_compute(controller.clone()).await.to_string()).expect("client");
    Rig {
        controller,
        client,
        _dir: dir,
    }
}

#[test]
fn a_network_created_through_the_server_is_set_up_on_the_agents_node_and_deleted() {
    in_fresh_netns(|netns| async move {
        let linux = LinuxNetwork::connect(netns).expect("netlink");
        let rig = rig(Some(Arc::new(linux.clone()))).await;

        let lan = rig
            .client
            .create_network(CreateNetwork::new("lan", ["10.71.0.0/24", "fd71::/64"]))
            .await
            .expect("create");
        assert_eq!(lan.name, "lan");
        assert!(
            linux
                .link_index(&lan.bridge)
                .await
                .expect("links")
                .is_some(),
            "bridge {} made on the agent's node",
            lan.bridge
        );
        let table = nft::show_table(&lan.nft_table()).await.expect("nft");
        let table = table.expect("the network's nftables table exists on the node");
        assert!(table.contains("masquerade"), "{table}");
        let addresses = std::process::Command::new("ip")
            .args(["-o", "addr", "show", "dev", &lan.bridge])
            .output()
            .expect("ip");
        let addresses = String::from_utf8_lossy(&addresses.stdout);
        assert!(addresses.contains("10.71.0.1/24"), "{addresses}");
        assert!(addresses.contains("fd71::1/64"), "{addresses}");

        let got = rig.client.get_network("lan").await.expect("get");
        assert_eq!(got, rig.controller.get_network("lan").await.expect("get"));
        let listed = rig.client.list_networks().await.expect("list");
        assert_eq!(
            listed.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["lan"]
        );

        rig.client.delete_network("lan").await.expect("delete");
        assert!(
            linux
                .link_index(&lan.bridge)
                .await
                .expect("links")
                .is_none(),
            "bridge removed from the node"
        );
        assert!(
            nft::show_table(&lan.nft_table())
                .await
                .expect("nft")
                .is_none(),
            "rules removed from the node"
        );
        let gone = rig.client.get_network("lan").await.expect_err("deleted");
        assert_eq!(gone.kind(), ErrorKind::NotFound);
        assert!(rig.client.list_networks().await.expect("list").is_empty());
    });
}

#[test]
fn network_errors_cross_the_wire_with_their_kind_and_change_nothing() {
    in_fresh_netns(|netns| async move {
        let linux = LinuxNetwork::connect(netns).expect("netlink");
        let rig = rig(Some(Arc::new(linux.clone()))).await;

        // A bad subnet: the same error, field and all, as the controller's.
        let bad = CreateNetwork::new("bad", ["10.72.0.0/33"]);
        let remote = rig
            .client
            .create_network(bad.clone())
            .await
            .expect_err("bad cidr");
        let local = rig
            .controller
            .create_network(bad)
            .await
            .expect_err("bad cidr");
        assert_eq!(remote.kind(), ErrorKind::InvalidArgument);
        assert_eq!(remote.chain(), local.chain());
        assert!(remote.chain().contains("subnets[0]"), "{}", remote.chain());
        assert!(linux
            .links_with_prefix(zixiao_core::model::BRIDGE_PREFIX)
            .await
            .expect("links")
            .is_empty());

        let lan = rig
            .client
            .create_network(CreateNetwork::new("lan", ["10.72.0.0/24"]))
            .await
            .expect("create");
        let again = rig
            .client
            .create_network(CreateNetwork::new("lan", ["10.73.0.0/24"]))
            .await
            .expect_err("taken");
        assert_eq!(again.kind(), ErrorKind::AlreadyExists);
        let overlap = rig
            .client
            .create_network(CreateNetwork::new("lan2", ["10.72.0.128/25"]))
            .await
            .expect_err("overlaps");
        assert_eq!(overlap.kind(), ErrorKind::InvalidArgument);
        assert!(overlap.chain().contains("overlaps"), "{}", overlap.chain());

        // An instance on it holds it.
        let mut spec = InstanceSpec::container("busybox");
        spec.networks = vec!["lan".into()];
        rig.client
            .create_instance(CreateInstance::new("web", spec), Wait::Settled)
            .await
            .expect("create instance");
        let busy = rig.client.delete_network("lan").await.expect_err("in use");
        assert_eq!(busy.kind(), ErrorKind::FailedPrecondition);
        assert!(busy.chain().contains("web"), "{}", busy.chain());
        assert!(
            linux
                .link_index(&lan.bridge)
                .await
                .expect("links")
                .is_some(),
            "a refused delete leaves the bridge"
        );

        let missing = rig
            .client
            .delete_network("nope")
            .await
            .expect_err("unknown");
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        let empty = rig.client.get_network("").await.expect_err("no name");
        assert_eq!(empty.kind(), ErrorKind::InvalidArgument);
    });
}

#[test]
fn reconciling_through_the_agent_restores_bridges_and_removes_orphans() {
    in_fresh_netns(|netns| async move {
        let linux = LinuxNetwork::connect(netns).expect("netlink");
        let rig = rig(Some(Arc::new(linux.clone()))).await;
        let lan = rig
            .client
            .create_network(CreateNetwork::new("lan", ["10.74.0.0/24"]))
            .await
            .expect("create");
        // What a crash leaves behind: a network the store no longer has, and
        // the store's network missing on the node.
        let installation = rig.controller.installation().await.expect("installation");
        let orphan = CreateNetwork::new("orphan", ["10.75.0.0/24"])
            .validate(&installation, chrono::Utc::now())
            .expect("valid");
        linux.ensure_network(&orphan).await.expect("orphan bridge");
        linux.remove_network(&lan).await.expect("lose the bridge");

        let report = rig
            .controller
            .reconcile_networks()
            .await
            .expect("reconcile");
        assert!(
            report
                .removed
                .contains(&format!("node-a: link {}", orphan.bridge)),
            "{report:?}"
        );
        assert!(linux
            .link_index(&orphan.bridge)
            .await
            .expect("links")
            .is_none());
        assert!(nft::show_table(&orphan.nft_table())
            .await
            .expect("nft")
            .is_none());
        assert!(
            linux
                .link_index(&lan.bridge)
                .await
                .expect("links")
                .is_some(),
            "the store's network is back on the node"
        );
    });
}

#[tokio::test]
async fn an_agent_without_networks_refuses_and_the_server_keeps_nothing() {
    let rig = rig(None).await;
    let error = rig
        .client
        .create_network(CreateNetwork::new("lan", ["10.76.0.0/24"]))
        .await
        .expect_err("no network host on the node");
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{}", error.chain());
    assert!(error.chain().contains("node-a"), "{}", error.chain());
    assert!(
        error.chain().contains("sets up no networks"),
        "{}",
        error.chain()
    );
    assert!(
        rig.client.list_networks().await.expect("list").is_empty(),
        "a network no node could set up is not stored"
    );
}

#[test]
fn overlay_views_are_set_on_the_agents_node_through_the_agent_service() {
    in_fresh_netns(|netns| async move {
        // The node's underlay: an address of its own, on a veth.
        for args in [
            &["link", "add", "ul", "type", "veth", "peer", "name", "ulp"][..],
            &["addr", "add", "10.93.0.1/24", "dev", "ul"],
            &["link", "set", "ulp", "up"],
            &["link", "set", "ul", "up"],
        ] {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("ip");
            assert!(status.success(), "ip {args:?}");
        }
        let linux = LinuxNetwork::connect(netns)
            .expect("netlink")
            .with_underlay("10.93.0.1".parse().expect("underlay"));
        let rig = rig(Some(Arc::new(linux.clone()))).await;
        let lan = rig
            .client
            .create_network(CreateNetwork::new("lan", ["10.73.0.0/24"]))
            .await
            .expect("create");
        let vxlan = zixiao_net::overlay::VxlanName::of(&lan.bridge).to_string();
        assert!(linux.link_index(&vxlan).await.expect("links").is_some());

        let remote =
            RemoteNetworkHost::new("node-a", &rig_agent_address(&rig).await).expect("network host");
        assert_eq!(
            remote.underlay().await.expect("underlay"),
            Some("10.93.0.1".parse().unwrap())
        );
        let peer: std::net::IpAddr = "10.93.0.2".parse().unwrap();
        let mac = MacAddress::try_from("02:00:00:00:93:02").unwrap();
        let view = OverlayView::new(
            vec![peer],
            vec![OverlayEndpoint {
                mac,
                addresses: vec!["10.73.0.9".parse().unwrap()],
                node: peer,
            }],
        )
        .unwrap();
        remote.set_overlay(&lan, &view).await.expect("set overlay");
        assert_eq!(linux.overlay_peers(&lan).await.expect("peers"), vec![peer]);
        let fdb = shown("bridge", &["fdb", "show", "dev", &vxlan]);
        assert!(
            fdb.lines()
                .any(|l| l.starts_with(&format!("{mac} dst {peer}")) && l.contains("static")),
            "a static tunnel entry: {fdb}"
        );
        let neigh = shown("ip", &["neigh", "show", "dev", lan.bridge.as_str()]);
        assert!(
            neigh.contains(&format!("10.73.0.9 lladdr {mac} PERMANENT")),
            "{neigh}"
        );
        // `network get`: the VXLAN device is in place; the peer and the
        // entries set by hand are ones the store does not call for (no
        // instance anywhere).
        let status = rig.client.network_status("lan").await.expect("status");
        let (vxlan_state, detail) = part(&status, NetworkPartKind::Vxlan);
        assert_eq!(vxlan_state, PartState::Ok, "{detail}");
        let (peers, detail) = part(&status, NetworkPartKind::Peers);
        assert_eq!(peers, PartState::Drifted);
        assert_eq!(detail, "extra 10.93.0.2");
        let (forwarding, detail) = part(&status, NetworkPartKind::Forwarding);
        assert_eq!(forwarding, PartState::Drifted, "{detail}");
        assert!(detail.ends_with("0 missing, 3 stale"), "{detail}");
        let repaired = rig.client.repair_network("lan").await.expect("repair");
        assert_eq!(part(&repaired, NetworkPartKind::Peers).0, PartState::Ok);
        assert_eq!(
            part(&repaired, NetworkPartKind::Forwarding).0,
            PartState::Ok
        );
        assert!(linux.overlay_peers(&lan).await.expect("peers").is_empty());
        let fdb = shown("bridge", &["fdb", "show", "dev", &vxlan]);
        assert!(!fdb.contains(&mac.to_string()), "{fdb}");
        let own = OverlayView::new(vec!["10.93.0.1".parse().unwrap()], Vec::new()).unwrap();
        let own = remote.set_overlay(&lan, &own).await.unwrap_err();
        assert_eq!(own.kind(), ErrorKind::InvalidArgument, "{own}");
        assert!(own.to_string().contains("own underlay"), "{own}");

        // Bad views straight over the wire: refused by the agent, naming
        // the field, before anything is programmed.
        let address = rig_agent_address(&rig).await;
        let address = if address.contains("://") {
            address
        } else {
            format!("http://{address}")
        };
        let mut client = zixiao_api::pb::agent_service_client::AgentServiceClient::new(
            tonic::transport::Channel::from_shared(address)
                .expect("uri")
                .connect()
                .await
                .expect("agent"),
        );
        let endpoint = |mac: &str, address: &str, node: &str| pb::OverlayEndpoint {
            mac: mac.to_owned(),
            addresses: vec![address.to_owned()],
            node: node.to_owned(),
        };
        let good = endpoint("02:00:00:00:93:02", "10.73.0.9", "10.93.0.2");
        let cases = [
            (
                vec![endpoint("ff:ff:ff:ff:ff:ff", "10.73.0.9", "10.93.0.2")],
                "overlay.endpoints[0].mac",
            ),
            (
                vec![endpoint("02:00:00:00:93:02", "10.73.0.9/24", "10.93.0.2")],
                "overlay.endpoints[0].addresses[0]",
            ),
            (
                vec![endpoint("02:00:00:00:93:02", "10.73.0.9", "10.93.0.7")],
                "overlay.endpoints[0].node",
            ),
            (
                vec![good.clone(); OverlayView::MAX_ENDPOINTS + 1],
                "overlay.endpoints",
            ),
        ];
        for (endpoints, field) in cases {
            let request = pb::SetOverlayRequest {
                network: Some(lan.clone().into()),
                overlay: Some(pb::OverlayView {
                    peers: vec!["10.93.0.2".to_owned()],
                    endpoints,
                }),
            };
            let refused = client.set_overlay(request).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
            assert!(refused.message().contains(field), "{field}: {refused:?}");
        }
        assert!(linux.overlay_peers(&lan).await.expect("peers").is_empty());
        let fdb = shown("bridge", &["fdb", "show", "dev", &vxlan]);
        assert!(!fdb.contains("02:00:00:00:93:02"), "{fdb}");

        rig.client.delete_network("lan").await.expect("delete");
        assert!(linux.link_index(&vxlan).await.expect("links").is_none());
    });
}

/// The address node-a's agent was registered with.
/// What `program ARGS` prints, in this thread's namespace.
fn shown(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .expect(program);
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn rig_agent_address(rig: &Rig) -> String {
    rig.controller
        .get_node("node-a")
        .await
        .expect("node-a")
        .address
}

/// `state` of part `kind` on node `node-a` of `status`.
fn part(status: &NetworkStatus, kind: NetworkPartKind) -> (PartState, String) {
    let node = status
        .nodes
        .iter()
        .find(|n| n.node == "node-a")
        .unwrap_or_else(|| panic!("node-a in {status:?}"));
    assert!(node.error.is_none(), "{node:?}");
    let part = node
        .part(kind)
        .unwrap_or_else(|| panic!("{kind} in {node:?}"));
    (part.state, part.detail.clone())
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("ip");
    assert!(status.success(), "ip {args:?}");
}

#[test]
fn network_get_shows_each_part_on_the_node_and_repair_mends_drift() {
    in_fresh_netns(|netns| async move {
        let linux = LinuxNetwork::connect(netns).expect("netlink");
        let rig = rig(Some(Arc::new(linux.clone()))).await;
        let lan = rig
            .client
            .create_network(CreateNetwork::new("lan", ["10.76.0.0/24"]))
            .await
            .expect("create");
        let mut spec = InstanceSpec::container("busybox");
        spec.networks = vec!["lan".into()];
        let web = rig
            .client
            .create_instance(CreateInstance::new("web", spec), Wait::Settled)
            .await
            .expect("create web");
        // What the container runtime does on a real node (the fake driver
        // does not): the instance's veth on the network's bridge.
        linux
            .attach_container(&web.id, &web.attachments)
            .await
            .expect("plumb web");
        let veth = web.attachments[0].host_interface.to_string();

        let status = rig.client.network_status("lan").await.expect("status");
        assert_eq!(status.network, lan);
        assert!(status.is_healthy(), "{status:#?}");
        assert_eq!(part(&status, NetworkPartKind::Bridge).0, PartState::Ok);
        assert_eq!(part(&status, NetworkPartKind::Rules).0, PartState::Ok);
        assert_eq!(
            part(&status, NetworkPartKind::Links),
            (PartState::Ok, "1 on the bridge".to_owned())
        );
        // No underlay address on this node: no overlay to judge.
        assert_eq!(
            part(&status, NetworkPartKind::Vxlan).0,
            PartState::NotNeeded
        );

        // Drift made by hand: the rules flushed away, the gateway address
        // and the veth taken off the bridge.
        let table = lan.nft_table();
        let flushed = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &table])
            .status()
            .expect("nft");
        assert!(flushed.success());
        ip(&["addr", "flush", "dev", lan.bridge.as_str()]);
        ip(&["link", "set", &veth, "nomaster"]);

        let status = rig.client.network_status("lan").await.expect("status");
        assert!(!status.is_healthy());
        assert_eq!(part(&status, NetworkPartKind::Rules).0, PartState::Missing);
        let (bridge, detail) = part(&status, NetworkPartKind::Bridge);
        assert_eq!(bridge, PartState::Drifted);
        assert!(detail.contains("lacks gateway 10.76.0.1"), "{detail}");
        let (links, detail) = part(&status, NetworkPartKind::Links);
        assert_eq!(links, PartState::Drifted);
        assert!(detail.contains(&veth), "{detail}");
        assert_eq!(
            rig.controller.network_status("lan").await.expect("status"),
            status,
            "the wire carries the status as the controller sees it"
        );

        let repaired = rig.client.repair_network("lan").await.expect("repair");
        assert!(repaired.is_healthy(), "{repaired:#?}");
        for mended in ["node-a: bridge (drifted)", "node-a: rules (missing)"] {
            assert!(
                repaired.repaired.iter().any(|r| r == mended),
                "{mended} in {:?}",
                repaired.repaired
            );
        }
        assert!(
            repaired
                .repaired
                .iter()
                .any(|r| r.contains(&veth) && r.contains(lan.bridge.as_str())),
            "{:?}",
            repaired.repaired
        );
        assert!(nft::show_table(&table).await.expect("nft").is_some());
        let master = std::process::Command::new("ip")
            .args(["-o", "link", "show", &veth])
            .output()
            .expect("ip");
        let master = String::from_utf8_lossy(&master.stdout);
        assert!(
            master.contains(&format!("master {}", lan.bridge)),
            "{master}"
        );

        // A second repair finds nothing to mend.
        let again = rig.client.repair_network("lan").await.expect("repair");
        assert!(again.repaired.is_empty(), "{:?}", again.repaired);

        // The bridge itself deleted: back, with the veth on it again.
        ip(&["link", "del", lan.bridge.as_str()]);
        let status = rig.client.network_status("lan").await.expect("status");
        assert_eq!(part(&status, NetworkPartKind::Bridge).0, PartState::Missing);
        let repaired = rig.client.repair_network("lan").await.expect("repair");
        assert!(repaired.is_healthy(), "{repaired:#?}");

        let unknown = rig
            .client
            .network_status("nope")
            .await
            .expect_err("unknown");
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        linux
            .detach_container(&web.id, &web.attachments)
            .await
            .expect("unplumb web");
    });
}
