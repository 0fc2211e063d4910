//! `ProjectQuota`: a project's quota charged in the create's own
//! transaction, against the real Controller on the embedded store, through
//! the access layer as a user reaches it. Creates within the quota are
//! stored, the next is `ResourceExhausted` naming the project, the
//! resource, the usage, the request and the limit, with nothing stored;
//! a delete gives the share back; concurrent creates through two
//! controllers on one store (two servers) never exceed it.

use std::sync::Arc;

use zixiao_auth::{AccessApi, ProjectQuota, Retention, PROJECT_LABEL};
use zixiao_core::api::{Client, Quota, Wait};
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, Error, ErrorKind, InstanceFilter, InstanceSpec, InstanceType,
    LocalAgent, Resources, Store,
};
use zixiao_sched::PluginScheduler;
use zixiao_testing::fake_driver::FakeDriver;

use crate::support::Harness;

/// Room for everything the tests ask: the node never refuses, the quota does.
const NODE: Resources = Resources {
    cpus: zixiao_core::Cpus::cores(64),
    memory_mib: 65_536,
    disk_gib: 1_000,
    instances: 64,
};

/// A controller with the quota admission on `h`'s store, its node
/// `node`, behind the access layer as the embedded deployment's local
/// administrator reaches it.
async fn client(h: &Harness, node: &str) -> Client {
    let agent = Arc::new(
        LocalAgent::new(HostFacts {
            hostname: node.into(),
            capacity: NODE,
        })
        .with_driver(Arc::new(FakeDriver::new(InstanceType::Container))),
    );
    let store: Arc<dyn Store> = h.store.clone();
    let controller = Controller::builder(store.clone(), Arc::new(PluginScheduler::default()))
        .clock(h.clock.clone())
        .agent(node, agent.clone())
        .admission(Arc::new(ProjectQuota::new(store)))
        .build();
    controller
        .register_node(agent.registration(node))
        .await
        .expect("register");
    let access = AccessApi::new(
        Arc::new(controller),
        h.accounts.clone(),
        h.audit_log(Retention::default()),
    );
    Client::new(Arc::new(access))
}

fn request(name: &str, project: &str, cpus: u32, memory_mib: u64) -> CreateInstance {
    let mut spec = InstanceSpec::container("busybox").with_size(cpus, memory_mib);
    spec.disk_gib = 1;
    let mut request = CreateInstance::new(name, spec);
    request
        .labels
        .insert(PROJECT_LABEL.to_owned(), project.to_owned());
    request
}

async fn names(client: &Client) -> Vec<String> {
    client
        .list_instances(InstanceFilter::default())
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect()
}

fn assert_exhausted(
    error: &Error,
    project: &str,
    resource: &str,
    used: u64,
    asked: u64,
    limit: u64,
) {
    assert_eq!(
        error.kind(),
        ErrorKind::ResourceExhausted,
        "{}",
        error.chain()
    );
    let message = error.to_string();
    for part in [
        format!("project `{project}`"),
        format!("allows {limit} {resource}"),
        format!("{used} are used"),
        format!("{asked} more were asked for"),
    ] {
        assert!(message.contains(&part), "`{message}` lacks `{part}`");
    }
}

#[tokio::test]
async fn creates_within_the_quota_are_stored_and_the_next_is_refused_storing_nothing() {
    let h = Harness::new();
    let client = client(&h, "node-a").await;
    let quota = "cpus=5,memory=1024,instances=3,disk=10"
        .parse::<Quota>()
        .unwrap();
    client.create_project("web", quota).await.unwrap();

    client
        .create_instance(request("a", "web", 2, 256), Wait::No)
        .await
        .unwrap();
    client
        .create_instance(request("b", "web", 1, 256), Wait::No)
        .await
        .unwrap();
    let before = h.snapshot().await;

    // Each dimension on its own: cpus, then memory, then instances.
    let err = client
        .create_instance(request("c", "web", 3, 256), Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "cpus", 3, 3, 5);
    let err = client
        .create_instance(request("c", "web", 1, 600), Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "memory_mib", 512, 600, 1024);
    let mut big_disk = request("c", "web", 1, 256);
    big_disk.spec.disk_gib = 9;
    let err = client
        .create_instance(big_disk, Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "disk_gib", 2, 9, 10);
    assert_eq!(
        h.snapshot().await,
        before,
        "a refused create stores nothing"
    );

    client
        .create_instance(request("c", "web", 1, 256), Wait::No)
        .await
        .unwrap();
    let err = client
        .create_instance(request("d", "web", 1, 64), Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "instances", 3, 1, 3);
    assert_eq!(names(&client).await, ["a", "b", "c"]);

    // Another project, and `default` (no quota), are not charged.
    client
        .create_instance(
            CreateInstance::new(
                "free",
                InstanceSpec::container("busybox").with_size(8, 4096),
            ),
            Wait::No,
        )
        .await
        .unwrap();
    let web = client.get_project("web").await.unwrap();
    assert_eq!(
        web.usage,
        Resources {
            cpus: zixiao_core::Cpus::cores(4),
            memory_mib: 768,
            disk_gib: 3,
            instances: 3
        }
    );
}

#[tokio::test]
async fn a_delete_gives_the_share_back_and_a_stopped_instance_keeps_it() {
    let h = Harness::new();
    let client = client(&h, "node-a").await;
    let quota = "instances=2,cpus=2".parse::<Quota>().unwrap();
    client.create_project("web", quota).await.unwrap();
    for name in ["a", "b"] {
        client
            .create_instance(request(name, "web", 1, 64), Wait::Settled)
            .await
            .unwrap();
    }

    // A stopped instance gives its node the compute back, not its project.
    client.stop_instance("a", Wait::Settled).await.unwrap();
    let err = client
        .create_instance(request("c", "web", 1, 64), Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "cpus", 2, 1, 2);

    client.delete_instance("a", Wait::Settled).await.unwrap();
    assert_eq!(names(&client).await, ["b"]);
    assert_eq!(client.get_project("web").await.unwrap().usage.instances, 1);
    client
        .create_instance(request("c", "web", 1, 64), Wait::No)
        .await
        .unwrap();
    assert_eq!(names(&client).await, ["b", "c"]);
}

#[tokio::test]
async fn lowering_a_quota_below_the_usage_is_allowed_and_refuses_new_creates() {
    let h = Harness::new();
    let client = client(&h, "node-a").await;
    client
        .create_project("web", "instances=3".parse().unwrap())
        .await
        .unwrap();
    for name in ["a", "b", "c"] {
        client
            .create_instance(request(name, "web", 1, 64), Wait::No)
            .await
            .unwrap();
    }
    let lowered = client
        .update_project("web", "instances=1".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(lowered.quota.instances, Some(1));
    assert_eq!(lowered.usage.instances, 3, "nothing running is touched");
    let err = client
        .create_instance(request("d", "web", 1, 64), Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "instances", 3, 1, 1);

    // `default` gets a quota the same way, once it is stored.
    client
        .update_project("default", "instances=0".parse().unwrap())
        .await
        .unwrap();
    let err = client
        .create_instance(
            CreateInstance::new("plain", InstanceSpec::container("busybox")),
            Wait::No,
        )
        .await
        .unwrap_err();
    assert_exhausted(&err, "default", "instances", 0, 1, 0);
}

/// Creates placed on a node write its allocation, which alone orders
/// creates racing for one node; creates that no node can take are stored
/// pending and write no node, so only the quota's own serial orders them.
#[tokio::test]
async fn concurrent_creates_through_two_controllers_on_one_store_never_exceed_the_quota() {
    for placed in [true, false] {
        concurrent_creates_never_exceed_the_quota(placed).await;
    }
}

async fn concurrent_creates_never_exceed_the_quota(placed: bool) {
    let h = Harness::new();
    let one = client(&h, "node-a").await;
    let two = client(&h, "node-b").await;
    one.create_project("web", "instances=5,cpus=64".parse().unwrap())
        .await
        .unwrap();

    let creates = (0..24).map(|i| {
        let client = if i % 2 == 0 { one.clone() } else { two.clone() };
        let mut request = request(&format!("i{i:02}"), "web", 1, 64);
        if !placed {
            request
                .spec
                .placement
                .required_traits
                .insert("example.com/nowhere".to_owned());
        }
        async move { client.create_instance(request, Wait::No).await }
    });
    let results = futures::future::join_all(creates).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 5, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{}", err.chain());
    }
    assert_eq!(names(&one).await.len(), 5);
    assert_eq!(one.get_project("web").await.unwrap().usage.instances, 5);
}

#[tokio::test]
async fn a_create_in_a_project_that_does_not_exist_is_refused_in_its_transaction() {
    // The access layer checks first; the admission checks again in the
    // transaction, for callers of the controller alone.
    let h = Harness::new();
    let agent = Arc::new(
        LocalAgent::new(HostFacts {
            hostname: "node-a".into(),
            capacity: NODE,
        })
        .with_driver(Arc::new(FakeDriver::new(InstanceType::Container))),
    );
    let store: Arc<dyn Store> = h.store.clone();
    let controller = Controller::builder(store.clone(), Arc::new(PluginScheduler::default()))
        .agent("node-a", agent.clone())
        .admission(Arc::new(ProjectQuota::new(store)))
        .build();
    controller
        .register_node(agent.registration("node-a"))
        .await
        .unwrap();
    let err = controller
        .create_instance(request("a", "nope", 1, 64))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { field, .. } if field == "labels.zixiao.io/project"),
        "{}",
        err.chain()
    );
    let mut bad = request("a", "web", 1, 64);
    bad.labels
        .insert(PROJECT_LABEL.to_owned(), "Not A Name".to_owned());
    let err = controller.create_instance(bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.chain());
    assert!(controller
        .list_instances(&InstanceFilter::default())
        .await
        .unwrap()
        .is_empty());
}

/// An update goes through the same admission as a create: growth is
/// charged against the quota with the instance's own share counted as
/// used, a refusal stores nothing, a shrink or a label change passes even
/// over a lowered quota, and no update moves an instance to another project.
#[tokio::test]
async fn an_update_that_grows_an_instance_is_charged_like_a_create() {
    use zixiao_core::InstanceUpdate;

    let h = Harness::new();
    let client = client(&h, "node-a").await;
    let quota = "cpus=4,memory=1024".parse::<Quota>().unwrap();
    client.create_project("web", quota).await.unwrap();
    client
        .create_instance(request("a", "web", 1, 256), Wait::No)
        .await
        .unwrap();
    client
        .create_instance(request("b", "web", 1, 256), Wait::No)
        .await
        .unwrap();
    let grow = |cpus: Option<u32>, memory_mib: Option<u64>| InstanceUpdate {
        cpus: cpus.map(zixiao_core::Cpus::cores),
        memory_mib,
        ..InstanceUpdate::default()
    };

    // Within the quota: 2 + 1 more cpus of 4.
    let a = client
        .update_instance("a", grow(Some(2), None), Wait::No)
        .await
        .unwrap();
    assert_eq!(a.spec.cpus, zixiao_core::Cpus::cores(2));
    let before = h.snapshot().await;
    // 3 cpus used (a's 2 included), 2 more asked: over 4.
    let err = client
        .update_instance("a", grow(Some(4), None), Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "cpus", 3, 2, 4);
    // 512 MiB used, 768 more asked: over 1024.
    let err = client
        .update_instance("b", grow(None, Some(1024)), Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "memory_mib", 512, 768, 1024);
    assert_eq!(
        h.snapshot().await,
        before,
        "a refused update stores nothing"
    );

    // Lowered below the usage: growth is refused, a shrink and labels pass.
    client
        .update_project("web", "cpus=1,memory=1024".parse().unwrap())
        .await
        .unwrap();
    let err = client
        .update_instance("b", grow(Some(2), None), Wait::No)
        .await
        .unwrap_err();
    assert_exhausted(&err, "web", "cpus", 3, 1, 1);
    let shrunk = client
        .update_instance("a", grow(Some(1), Some(128)), Wait::No)
        .await
        .unwrap();
    assert_eq!(
        (shrunk.spec.cpus, shrunk.spec.memory_mib),
        (zixiao_core::Cpus::cores(1), 128)
    );
    // Memory may still grow while the cpu quota is exceeded: only what
    // grows is checked.
    client
        .update_instance("a", grow(None, Some(512)), Wait::No)
        .await
        .unwrap();
    let labelled = InstanceUpdate {
        set_labels: [("tier".to_owned(), "front".to_owned())].into(),
        ..InstanceUpdate::default()
    };
    client
        .update_instance("b", labelled, Wait::No)
        .await
        .unwrap();

    // Another project's label: refused, naming the label.
    client
        .create_project("api", Quota::default())
        .await
        .unwrap();
    let before = h.snapshot().await;
    let mv = InstanceUpdate {
        set_labels: [(PROJECT_LABEL.to_owned(), "api".to_owned())].into(),
        ..InstanceUpdate::default()
    };
    let err = client.update_instance("b", mv, Wait::No).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.chain());
    assert!(
        err.to_string()
            .contains("invalid labels.zixiao.io/project: instance `b` is in project `web`"),
        "{err}"
    );
    let remove = InstanceUpdate {
        remove_labels: [PROJECT_LABEL.to_owned()].into(),
        ..InstanceUpdate::default()
    };
    let err = client
        .update_instance("b", remove, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.chain());
    assert_eq!(h.snapshot().await, before, "nothing moved");
    let web = client.get_project("web").await.unwrap();
    assert_eq!(
        (web.usage.cpus, web.usage.memory_mib),
        (zixiao_core::Cpus::cores(2), 768)
    );
}
