//! What operators declare for placement, through the one API (a [`Client`]
//! over the controller), on the real embedded store and scheduler with fake
//! runtimes: node labels and traits and host aggregates change where
//! instances go, a waiting instance is placed once a change gives it a node
//! (by the caller without a daemon, by the background reconcilers with one),
//! the reason it waits names the trait or aggregate, and what operators set
//! survives the agent registering again; and a joining agent's onboarding,
//! which keeps its node unschedulable until its smoke test passed. The
//! real runtime is exercised by the CLI's tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use zixiao_core::api::{Client, Wait};
use zixiao_core::controller::{Convergence, ReconcilerOptions};
use zixiao_core::model::{CheckOutcome, Onboarding, OnboardingState, RuntimeCheck, SmokeStep};
use zixiao_core::{
    Controller, CreateInstance, ErrorKind, Instance, InstanceSpec, InstanceStatus, InstanceType,
    LocalAgent, NodeStatus,
};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::fake_driver::{fake_agent, fake_host};
use zixiao_testing::wait::wait_until;

struct Cluster {
    client: Client,
    controller: Controller,
    agents: Vec<Arc<LocalAgent>>,
    _dir: tempfile::TempDir,
}

/// Nodes n1 and n2 with fake runtimes; n1's agent reports `arch=x86_64`
/// and the trait `kvm`.
async fn cluster(convergence: Convergence) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let agents: Vec<Arc<LocalAgent>> = ["n1", "n2"]
        .into_iter()
        .map(|n| Arc::new(fake_agent(fake_host(n))))
        .collect();
    let mut builder =
        Controller::builder(store, Arc::new(PluginScheduler::default())).convergence(convergence);
    for (i, agent) in agents.iter().enumerate() {
        builder = builder.agent(format!("n{}", i + 1), agent.clone());
    }
    let controller = builder.build();
    let cluster = Cluster {
        client: Client::new(Arc::new(controller.clone())),
        controller,
        agents,
        _dir: dir,
    };
    cluster.register(0).await;
    cluster.register(1).await;
    cluster
}

impl Cluster {
    /// Registers node `i` again, as its agent does at every start.
    async fn register(&self, i: usize) -> zixiao_core::Node {
        let mut registration = self.agents[i].registration(format!("n{}", i + 1));
        if i == 0 {
            registration.labels.insert("arch".into(), "x86_64".into());
            registration.traits.insert("kvm".into());
        }
        self.controller
            .register_node(registration)
            .await
            .expect("register")
    }
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn container(name: &str) -> CreateInstance {
    CreateInstance::new(name, InstanceSpec::container("busybox").with_size(1, 64))
}

fn waiting_because(instance: &Instance) -> String {
    assert_eq!(instance.status, InstanceStatus::Pending, "{instance:?}");
    instance.problem().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_trait_declared_on_a_node_places_the_instance_that_waited_for_it() {
    let c = cluster(Convergence::InCaller).await;
    let mut request = container("db");
    request.spec.placement.required_traits.insert("ssd".into());
    let db = c
        .client
        .create_instance(request, Wait::Settled)
        .await
        .expect("create");
    let why = waiting_because(&db);
    assert!(why.contains("2 nodes: missing trait `ssd`"), "{why}");

    let n2 = c.client.add_node_traits("n2", &["ssd"]).await.expect("add");
    assert!(n2.traits.contains("ssd") && n2.operator.traits.contains("ssd"));
    // No daemon: the call placed it before answering.
    let db = c.client.get_instance("db").await.expect("get");
    assert_eq!(db.status, InstanceStatus::Running, "{db:?}");
    assert_eq!(db.node.as_deref(), Some("n2"));
    assert_eq!(n2.allocated.instances, 1, "the node as it is after");

    // Taken back: the next instance that needs it waits again, and a
    // forbidden trait keeps instances off the nodes that declare it.
    c.client
        .remove_node_traits("n2", &["ssd"])
        .await
        .expect("remove");
    let mut again = container("db-2");
    again.spec.placement.required_traits.insert("ssd".into());
    let pending = c
        .client
        .create_instance(again, Wait::Settled)
        .await
        .expect("create");
    assert!(waiting_because(&pending).contains("missing trait `ssd`"));
    let mut not_kvm = container("plain");
    not_kvm.spec.placement.forbidden_traits.insert("kvm".into());
    let plain = c
        .client
        .create_instance(not_kvm, Wait::Settled)
        .await
        .expect("create");
    assert_eq!(plain.node.as_deref(), Some("n2"), "n1's agent reports kvm");
}

#[tokio::test]
async fn node_labels_steer_selectors_and_what_agents_report_is_read_only() {
    let c = cluster(Convergence::InCaller).await;
    let mut request = container("web");
    request.spec.placement.node_selector = "tier=front"
        .parse::<zixiao_core::scheduler::LabelRequirement>()
        .map(|r| std::iter::once(r).collect())
        .expect("selector");
    let web = c
        .client
        .create_instance(request, Wait::Settled)
        .await
        .expect("create");
    assert!(waiting_because(&web).contains("labels do not match `tier=front`"));

    let n1 = c
        .client
        .label_node("n1", &["tier=front", "team=db"])
        .await
        .expect("label");
    assert_eq!(n1.labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(n1.labels.get("arch").map(String::as_str), Some("x86_64"));
    let web = c.client.get_instance("web").await.expect("get");
    assert_eq!(web.node.as_deref(), Some("n1"), "{web:?}");

    // What the agent reports cannot be set, overridden or removed.
    for args in [["arch=arm64"], ["arch-"]] {
        let err = c.client.label_node("n1", &args).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("label `arch`"), "{err}");
    }
    let err = c
        .client
        .remove_node_traits("n1", &["kvm"])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    // Bad input names the field; unknown nodes are not found.
    let err = c.client.label_node("n1", &["tier"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().starts_with("invalid labels:"), "{err}");
    let err = c.client.add_node_traits("n1", &["a b"]).await.unwrap_err();
    assert!(err.to_string().starts_with("invalid traits:"), "{err}");
    let err = c.client.label_node("n9", &["a=b"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // Removing a label that is not there is no error and changes nothing.
    let same = c
        .client
        .label_node("n1", &["absent-"])
        .await
        .expect("no-op");
    assert_eq!(
        same.revision,
        c.client.get_node("n1").await.unwrap().revision
    );

    c.client.label_node("n1", &["team-"]).await.expect("remove");
    assert!(!c
        .client
        .get_node("n1")
        .await
        .unwrap()
        .labels
        .contains_key("team"));
}

#[tokio::test]
async fn what_operators_declare_survives_the_agent_registering_again() {
    let c = cluster(Convergence::InCaller).await;
    c.client
        .label_node("n1", &["disk=ssd"])
        .await
        .expect("label");
    c.client
        .add_node_traits("n1", &["gpu"])
        .await
        .expect("trait");
    // The agent restarts, reporting facts that changed meanwhile.
    let mut registration = c.agents[0].registration("n1");
    registration.labels.insert("arch".into(), "aarch64".into());
    let again = c
        .controller
        .register_node(registration)
        .await
        .expect("register");
    assert_eq!(again.labels.get("disk").map(String::as_str), Some("ssd"));
    assert_eq!(
        again.labels.get("arch").map(String::as_str),
        Some("aarch64")
    );
    assert!(again.traits.contains("gpu"), "{:?}", again.traits);
    assert!(!again.traits.contains("kvm"), "no longer reported");
    assert!(again.operator.labels.contains_key("disk"));
    assert!(!again.reported.labels.contains_key("disk"));
    // And an instance that needs them still finds the node.
    let mut request = container("train");
    request.spec.placement.required_traits.insert("gpu".into());
    let train = c
        .client
        .create_instance(request, Wait::Settled)
        .await
        .expect("create");
    assert_eq!(train.node.as_deref(), Some("n1"));
}

#[tokio::test]
async fn aggregates_are_objects_placement_honours_by_name_and_by_metadata() {
    let c = cluster(Convergence::InCaller).await;
    let mut by_name = container("a");
    by_name.spec.placement.aggregates.insert("gpu".into());
    let a = c
        .client
        .create_instance(by_name, Wait::Settled)
        .await
        .expect("create");
    assert!(
        waiting_because(&a).contains("2 nodes: aggregate `gpu` does not exist"),
        "{a:?}"
    );

    let gpu = c
        .client
        .create_aggregate("gpu", metadata(&[("tier", "gold")]))
        .await
        .expect("create aggregate");
    assert!(gpu.nodes.is_empty());
    let err = c
        .client
        .create_aggregate("gpu", BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let a = c.client.get_instance("a").await.expect("get");
    assert!(waiting_because(&a).contains("2 nodes: not in aggregate `gpu`"));

    let gpu = c
        .client
        .add_aggregate_node("gpu", "n2")
        .await
        .expect("add node");
    assert_eq!(gpu.nodes.iter().collect::<Vec<_>>(), ["n2"]);
    let a = c.client.get_instance("a").await.expect("get");
    assert_eq!(a.node.as_deref(), Some("n2"), "{a:?}");
    assert_eq!(a.status, InstanceStatus::Running);

    // By metadata.
    let mut by_metadata = container("b");
    by_metadata.spec.placement.aggregate_selector =
        std::iter::once("tier=gold".parse().expect("selector")).collect();
    let b = c
        .client
        .create_instance(by_metadata, Wait::Settled)
        .await
        .expect("create");
    assert_eq!(b.node.as_deref(), Some("n2"));

    // Metadata edited in place: what waited for it is placed at once.
    let mut silver = container("s");
    silver.spec.placement.aggregate_selector =
        std::iter::once("tier=silver".parse().expect("selector")).collect();
    let s = c
        .client
        .create_instance(silver, Wait::Settled)
        .await
        .expect("create");
    assert_eq!(s.node, None, "{s:?}");
    let gpu = c
        .client
        .set_aggregate_metadata("gpu", &["tier=silver", "zone-"])
        .await
        .expect("set metadata");
    assert_eq!(gpu.metadata.len(), 1);
    assert_eq!(
        gpu.metadata.values().next().map(|v| v.as_str()),
        Some("silver")
    );
    let s = c.client.get_instance("s").await.expect("get");
    assert_eq!(s.node.as_deref(), Some("n2"), "{s:?}");
    for (bad, field) in [(&["no key=v"][..], "metadata"), (&["tier"][..], "metadata")] {
        let err = c
            .client
            .set_aggregate_metadata("gpu", bad)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = c
        .client
        .set_aggregate_metadata("gone", &["a=b"])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    c.client
        .set_aggregate_metadata("gpu", &["tier=gold"])
        .await
        .expect("back to gold");
    c.client
        .delete_instance("s", Wait::Settled)
        .await
        .expect("delete s");

    // Listed and read back; a non-empty aggregate is not deleted.
    let listed = c.client.list_aggregates().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].metadata.len(), 1);
    let err = c.client.delete_aggregate("gpu").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("n2"), "{err}");
    // Adding twice changes nothing; removing takes it out; then it goes.
    c.client
        .add_aggregate_node("gpu", "n2")
        .await
        .expect("again");
    let gpu = c
        .client
        .remove_aggregate_node("gpu", "n2")
        .await
        .expect("remove");
    assert!(gpu.nodes.is_empty());
    c.client.delete_aggregate("gpu").await.expect("delete");
    let err = c.client.get_aggregate("gpu").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Unknown things are not found; bad names name the field.
    let err = c.client.add_aggregate_node("gone", "n1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    c.client
        .create_aggregate("ssd", BTreeMap::new())
        .await
        .expect("create");
    let err = c.client.add_aggregate_node("ssd", "n9").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("node `n9`"), "{err}");
    let err = c
        .client
        .create_aggregate("GPU", BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().starts_with("invalid name:"), "{err}");
    let err = c
        .client
        .create_aggregate("x", metadata(&[("no key", "v")]))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("invalid metadata:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_reconcilers_place_a_waiting_instance_when_a_node_or_aggregate_changes() {
    let c = cluster(Convergence::Background).await;
    let _reconcilers = c.controller.run_reconcilers(ReconcilerOptions {
        room_check: Duration::from_millis(20),
        ..ReconcilerOptions::default()
    });
    let mut request = container("db");
    request.spec.placement.required_traits.insert("ssd".into());
    request.spec.placement.aggregates.insert("fast".into());
    let db = c
        .client
        .create_instance(request, Wait::Settled)
        .await
        .expect("create");
    assert_eq!(db.status, InstanceStatus::Pending);

    c.client
        .add_node_traits("n1", &["ssd"])
        .await
        .expect("trait");
    c.client
        .create_aggregate("fast", BTreeMap::new())
        .await
        .expect("aggregate");
    c.client
        .add_aggregate_node("fast", "n1")
        .await
        .expect("add");
    let placed = wait_until("db placed on n1", Duration::from_secs(10), || async {
        let db = c.client.get_instance("db").await.ok()?;
        (db.status == InstanceStatus::Running).then_some(db)
    })
    .await;
    assert_eq!(placed.node.as_deref(), Some("n1"));
}

/// An onboarding as a joining agent reports it: `state`, with one check of
/// the container runtime when it ended.
fn onboarding(state: OnboardingState) -> Onboarding {
    let check = |outcome, step| RuntimeCheck {
        runtime: InstanceType::Container,
        outcome,
        duration_ms: 12,
        step,
        detail: "containerd: image `nope` not found".into(),
    };
    let checks = match state {
        OnboardingState::Running | OnboardingState::Skipped => Vec::new(),
        OnboardingState::Passed => vec![check(CheckOutcome::Booted, None)],
        OnboardingState::Failed => vec![check(CheckOutcome::Failed, Some(SmokeStep::Create))],
    };
    Onboarding {
        state,
        started_at: chrono::Utc::now(),
        finished_at: (state != OnboardingState::Running).then(chrono::Utc::now),
        checks,
    }
}

#[tokio::test]
async fn a_node_takes_instances_only_once_its_onboarding_passed() {
    let c = cluster(Convergence::InCaller).await;
    let onboard = |i: usize, state| {
        let mut registration = c.agents[i].registration(format!("n{}", i + 1));
        registration.onboarding = Some(onboarding(state));
        c.controller.register_node(registration)
    };
    for i in 0..2 {
        let node = onboard(i, OnboardingState::Running)
            .await
            .expect("register");
        assert_eq!(node.status, NodeStatus::Onboarding, "{node:?}");
    }
    let web = c
        .client
        .create_instance(container("web"), Wait::Settled)
        .await
        .expect("create");
    let why = waiting_because(&web);
    assert!(why.contains("2 nodes: onboarding"), "{why}");

    let n2 = onboard(1, OnboardingState::Failed).await.expect("register");
    assert_eq!(n2.status, NodeStatus::OnboardingFailed);
    let failure = n2.onboarding.as_ref().and_then(Onboarding::failure);
    assert_eq!(
        failure.as_deref(),
        Some("container failed at step create: containerd: image `nope` not found")
    );
    let db = c
        .client
        .create_instance(container("db"), Wait::Settled)
        .await
        .expect("create");
    let why = waiting_because(&db);
    assert!(why.contains("onboarding failed"), "{why}");

    let n1 = onboard(0, OnboardingState::Passed).await.expect("register");
    assert_eq!(n1.status, NodeStatus::Ready);
    let cache = c
        .client
        .create_instance(container("cache"), Wait::Settled)
        .await
        .expect("create");
    assert_eq!(cache.node.as_deref(), Some("n1"), "{cache:?}");

    // A report its checks do not bear out is refused, naming the field,
    // and changes nothing.
    let mut registration = c.agents[0].registration("n1");
    let mut lying = onboarding(OnboardingState::Failed);
    lying.checks.clear();
    registration.onboarding = Some(lying);
    let refused = c
        .controller
        .register_node(registration)
        .await
        .expect_err("a failure without a failed check");
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
    assert!(
        refused.to_string().contains("node.onboarding.state"),
        "{refused}"
    );
    assert_eq!(
        c.client.get_node("n1").await.expect("get").status,
        NodeStatus::Ready
    );

    // What operators set outranks a smoke test: a cordoned node whose
    // agent onboards again stays cordoned; a failed node can be retired.
    c.client.cordon_node("n1").await.expect("cordon");
    let n1 = onboard(0, OnboardingState::Running)
        .await
        .expect("register");
    assert_eq!(n1.status, NodeStatus::Cordoned);
    assert_eq!(
        n1.onboarding.map(|o| o.state),
        Some(OnboardingState::Running)
    );
    let report = c
        .client
        .decommission_node("n2")
        .await
        .expect("decommission");
    assert_eq!(report.status, Some(NodeStatus::Decommissioned));

    // A registration without onboarding (the embedded deployment's)
    // leaves the status as it is.
    let again = c.register(0).await;
    assert_eq!(again.status, NodeStatus::Cordoned, "still the operator's");

    // A smoke test that failed while it was cordoned keeps it from work
    // when it is uncordoned.
    let n1 = onboard(0, OnboardingState::Failed).await.expect("register");
    assert_eq!(n1.status, NodeStatus::Cordoned);
    let n1 = c.client.uncordon_node("n1").await.expect("uncordon");
    assert_eq!(n1.status, NodeStatus::OnboardingFailed, "{n1:?}");
}
