//! The API on a small stack: the deepest call we know, a decommission
//! whose evacuation tries to migrate a VM and restarts it and a container
//! elsewhere (each settled by a reconcile nested in the call), made
//! through [`Api::call`](zixiao_core::api::Api::call) in a debug build on a
//! thread with far less stack than tokio's default worker (2 MiB). It
//! overflowed such a worker once, when the dispatch's poll frame held
//! every request's temporaries (about 1 MiB); now each request's handling
//! is a future of its own. An overflow kills the test process (SIGSEGV),
//! which fails the test as surely as an assertion.
//!
//! `ZIXIAO_TEST_STACK_KIB` overrides the stack size, to measure the
//! smallest one that suffices (bisect it); the default is what the calls
//! must fit in.

use std::sync::Arc;

use zixiao_core::api::{Client, Wait};
use zixiao_core::controller::Convergence;
use zixiao_core::{
    Controller, CreateInstance, InstanceSpec, InstanceStatus, LocalAgent, NodeStatus, RestartPolicy,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::{fake_agent, fake_host};
use zixiao_testing::small_stack::run_on_small_stack;

/// What the calls must fit in: half a tokio worker's default.
const STACK_KIB: usize = 1024;

#[test]
fn a_decommission_that_evacuates_fits_a_small_stack() {
    run_on_small_stack(STACK_KIB, decommission_evacuating);
}

/// Nodes n1 and n2 with fake runtimes, a VM and a container that restart
/// on n1; n1 decommissioned: both end up running on n2.
async fn decommission_evacuating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let agents: Vec<Arc<LocalAgent>> = ["n1", "n2"]
        .into_iter()
        .map(|n| Arc::new(fake_agent(fake_host(n))))
        .collect();
    let mut builder = Controller::builder(store, Arc::new(PluginScheduler::default()))
        .convergence(Convergence::InCaller);
    for (node, agent) in ["n1", "n2"].into_iter().zip(&agents) {
        builder = builder.agent(node, agent.clone());
    }
    let controller = builder.build();
    let client = Client::new(Arc::new(controller.clone()));
    // Only n1 first, so that both instances are placed there.
    controller
        .register_node(agents[0].registration("n1"))
        .await
        .expect("register n1");
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
    controller
        .register_node(agents[1].registration("n2"))
        .await
        .expect("register n2");

    let report = client.decommission_node("n1").await.expect("decommission");
    assert_eq!(report.status, Some(NodeStatus::Decommissioned));
    let mut evacuated = names.clone();
    evacuated.sort();
    assert_eq!(report.moved, evacuated, "{report:?}");
    for name in names {
        let moved = client.get_instance(name).await.expect("get");
        assert_eq!(moved.node.as_deref(), Some("n2"), "{moved:?}");
        assert_eq!(moved.status, InstanceStatus::Running, "{moved:?}");
    }
}
