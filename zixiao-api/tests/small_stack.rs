//! The gRPC client on a small stack: a create that waits, a list and a
//! node's decommission that evacuates, made through a [`GrpcClient`]'s
//! `Api::call` in a debug build on a thread with a stack far smaller than
//! a tokio worker's 2 MiB. The client's call was once one `match` whose
//! poll frame held every request's temporaries (674,808 bytes in a debug
//! build); now each request's handling is a future of its own. The server
//! (a controller over fake runtimes, nodes n1 and n2) runs on an ordinary
//! runtime of its own: what is measured here is the client's side. An
//! overflow kills the test process (SIGSEGV), which fails the test.
//!
//! `ZIXIAO_TEST_STACK_KIB` overrides the stack size, to measure the
//! smallest one that suffices (bisect it); the default is what the calls
//! must fit in.
//!
//! [`GrpcClient`]: zixiao_api::GrpcClient

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use zixiao_core::api::Client;
use zixiao_core::{
    Controller, CreateInstance, InstanceFilter, InstanceSpec, InstanceStatus, LocalAgent, Node,
    NodeStatus, RestartPolicy, Wait,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::{fake_agent, fake_host};
use zixiao_testing::small_stack::run_on_small_stack;

/// What the client's calls must fit in: an eighth of a tokio worker's
/// default, and less than the old call's poll frame alone (659 KiB), so
/// that the old dispatch cannot pass.
const STACK_KIB: usize = 256;

#[test]
fn grpc_calls_and_a_decommission_fit_a_small_stack() {
    let server = tokio::runtime::Runtime::new().expect("the server's runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, agents, controller) = server.block_on(serve(&dir));
    let n2 = agents[1].registration("n2");
    let server = server.handle().clone();
    run_on_small_stack(STACK_KIB, move || async move {
        let client = zixiao_api::connect(&format!("http://{addr}")).expect("client");
        // n2 joins on the server's runtime: only the client's calls are
        // polled on the small stack.
        let n2_joins = move || server.spawn(async move { controller.register_node(n2).await });
        calls_and_decommission(client, n2_joins).await;
    });
}

/// A controller over fake runtimes with node n1 registered (n2's agent
/// known, not yet registered, so that creates land on n1), served on
/// loopback by the runtime this is polled on.
async fn serve(dir: &tempfile::TempDir) -> (SocketAddr, Vec<Arc<LocalAgent>>, Controller) {
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let agents: Vec<Arc<LocalAgent>> = ["n1", "n2"]
        .into_iter()
        .map(|n| Arc::new(fake_agent(fake_host(n))))
        .collect();
    let mut builder = Controller::builder(store, Arc::new(PluginScheduler::default()));
    for (node, agent) in ["n1", "n2"].into_iter().zip(&agents) {
        builder = builder.agent(node, agent.clone());
    }
    let controller = builder.build();
    controller
        .register_node(agents[0].registration("n1"))
        .await
        .expect("register n1");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(zixiao_api::server::serve(
        Arc::new(controller.clone()),
        listener,
        std::future::pending(),
    ));
    (addr, agents, controller)
}

/// A VM and a container created (waiting until they run) and listed over
/// gRPC; then n2 joins and n1 is decommissioned: both end up running on n2.
async fn calls_and_decommission(
    client: Client,
    n2_joins: impl FnOnce() -> tokio::task::JoinHandle<zixiao_core::Result<Node>>,
) {
    let mut names = Vec::new();
    for (name, spec) in [
        ("small-stack-vm", InstanceSpec::vm("debian")),
        ("small-stack-ct", InstanceSpec::container("busybox")),
    ] {
        let mut request = CreateInstance::new(name, spec.with_size(1, 64));
        request.spec.restart = RestartPolicy::Always;
        let created = client
            .create_instance(request, Wait::Settled)
            .await
            .expect("create");
        assert_eq!(created.status, InstanceStatus::Running, "{created:?}");
        assert_eq!(created.node.as_deref(), Some("n1"));
        names.push(name);
    }
    let listed = client
        .list_instances(InstanceFilter::default())
        .await
        .expect("list");
    let mut listed: Vec<_> = listed.into_iter().map(|i| i.name).collect();
    listed.sort();
    let mut created = names.clone();
    created.sort();
    assert_eq!(listed, created);

    n2_joins().await.expect("joined").expect("register n2");
    let report = client.decommission_node("n1").await.expect("decommission");
    assert_eq!(report.status, Some(NodeStatus::Decommissioned));
    assert_eq!(report.moved, created, "{report:?}");
    for name in names {
        let moved = client.get_instance(name).await.expect("get");
        assert_eq!(moved.node.as_deref(), Some("n2"), "{moved:?}");
        assert_eq!(moved.status, InstanceStatus::Running, "{moved:?}");
    }
}
