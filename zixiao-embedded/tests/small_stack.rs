//! The embedded deployment's API on a small stack: a decommission of its
//! node, whose evacuation settles the node's instance (a reconcile nested
//! in the controller's call, nested in the embedded one), made through
//! [`Api::call`] in a debug build on a thread with far less stack than
//! tokio's default worker (2 MiB). It overflowed such a worker once (the
//! Node binding's tests, by SIGSEGV) when each dispatch's poll frame held
//! every request's temporaries; an overflow kills the test process, which
//! fails the test. Fake runtimes: this is the layer above the drivers.
//!
//! `ZIXIAO_TEST_STACK_KIB` overrides the stack size, to measure the
//! smallest one that suffices (bisect it).

use zixiao_core::api::{Api, Request, Response, Wait};
use zixiao_core::{CreateInstance, InstanceSpec, InstanceStatus, NodeStatus, RestartPolicy};
use zixiao_embedded::EmbeddedConfig;
use zixiao_testing::fake_driver::{fake_agent, fake_host};
use zixiao_testing::small_stack::run_on_small_stack;

/// What the calls must fit in: half a tokio worker's default.
const STACK_KIB: usize = 1024;

#[test]
fn decommissioning_the_embedded_node_fits_a_small_stack() {
    run_on_small_stack(STACK_KIB, decommission_evacuating);
}

/// The embedded node runs a container that restarts; decommissioned, the
/// node has nowhere to move it, so it waits for a node.
async fn decommission_evacuating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EmbeddedConfig::new(dir.path());
    config.node_id = Some("small-stack".to_owned());
    let agent = fake_agent(fake_host("small-stack"));
    let embedded = zixiao_embedded::open_with_agent(config, agent)
        .await
        .expect("open");

    let mut request = CreateInstance::new(
        "small-stack-ct",
        InstanceSpec::container("busybox").with_size(1, 64),
    );
    request.spec.restart = RestartPolicy::Always;
    let created = embedded
        .call(Request::CreateInstance {
            request,
            wait: Wait::Settled,
        })
        .await
        .expect("create");
    let Response::Instance(created) = created else {
        panic!("create answered {}", created.kind());
    };
    assert_eq!(created.status, InstanceStatus::Running, "{created:?}");

    let decommissioned = embedded
        .call(Request::DecommissionNode {
            node: "small-stack".to_owned(),
        })
        .await
        .expect("decommission");
    let Response::Drain(report) = decommissioned else {
        panic!("decommission answered {}", decommissioned.kind());
    };
    assert_eq!(report.status, Some(NodeStatus::Decommissioned));
    assert_eq!(report.pending, ["small-stack-ct"], "{report:?}");
    let waiting = embedded
        .client()
        .get_instance("small-stack-ct")
        .await
        .expect("get");
    assert_eq!(waiting.status, InstanceStatus::Pending, "{waiting:?}");
    assert_eq!(waiting.node, None, "{waiting:?}");
}
