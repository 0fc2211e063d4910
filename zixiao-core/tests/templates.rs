//! Templates through the one API (a [`Client`] over the controller), over
//! the real embedded store and scheduler with a fake container runtime:
//! versions stay as they were stored, usage counts come from the
//! instances, a version in use is not deleted, bad input changes nothing,
//! and creates racing a delete never leave an instance whose version is
//! gone. The real runtime is exercised by the CLI's tests.

use std::sync::Arc;

use zixiao_core::api::{Client, Wait};
use zixiao_core::host::HostFacts;
use zixiao_core::model::{FromTemplate, TemplateSpec};
use zixiao_core::{Controller, ErrorKind, InstanceFilter, InstanceSpec, Resources};
use zixiao_sched::PluginScheduler;
use zixiao_store::EmbeddedStore;
use zixiao_testing::clock::ManualClock;
use zixiao_testing::fake_driver::fake_agent;

struct Node {
    client: Client,
    _dir: tempfile::TempDir,
}

/// One node with room for 64 small containers.
async fn node() -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("store"));
    let agent = Arc::new(fake_agent(HostFacts {
        hostname: "n1".into(),
        capacity: Resources {
            cpus: zixiao_core::Cpus::cores(64),
            memory_mib: 64 * 1024,
            disk_gib: 100,
            instances: 64,
        },
    }));
    let controller = Controller::builder(store, Arc::new(PluginScheduler::default()))
        .clock(Arc::new(ManualClock::default()))
        .agent("n1", agent.clone())
        .build();
    controller
        .register_node(agent.registration("n1"))
        .await
        .expect("register");
    Node {
        client: Client::new(Arc::new(controller)),
        _dir: dir,
    }
}

fn spec(memory_mib: u64) -> TemplateSpec {
    TemplateSpec {
        labels: [("app".to_owned(), "web".to_owned())].into(),
        spec: InstanceSpec::container("busybox").with_size(1, memory_mib),
    }
}

fn from(name: &str, template: &str, set: &[&str]) -> FromTemplate {
    FromTemplate::parse(name, template, set).expect("parse")
}

#[tokio::test]
async fn versions_stay_as_stored_and_usage_is_counted_per_version() {
    let n = node().await;
    let c = &n.client;
    let v1 = c.create_template("web", spec(64)).await.expect("create");
    assert_eq!(v1.versions.len(), 1);
    let both = c.update_template("web", spec(96)).await.expect("update");
    let sizes: Vec<(u32, u64)> = both
        .versions
        .iter()
        .map(|v| (v.version.version, v.version.spec.memory_mib))
        .collect();
    assert_eq!(sizes, [(1, 64), (2, 96)], "version 1 is unchanged");

    let a = c
        .create_from_template(from("a", "web@1", &["labels.k=v"]), Wait::Settled)
        .await
        .expect("a from version 1");
    let b = c
        .create_from_template(from("b", "web", &["memory_mib=128"]), Wait::Settled)
        .await
        .expect("b from the latest");
    let c2 = c
        .create_from_template(from("c", "web@2", &[]), Wait::Settled)
        .await
        .expect("c from version 2");
    assert_eq!(
        a.template.as_ref().map(ToString::to_string).as_deref(),
        Some("web@1")
    );
    assert_eq!(
        b.template.as_ref().map(ToString::to_string).as_deref(),
        Some("web@2")
    );
    assert_eq!(
        (a.spec.memory_mib, b.spec.memory_mib, c2.spec.memory_mib),
        (64, 128, 96)
    );
    assert_eq!(a.labels["k"], "v");
    assert_eq!(a.labels["app"], "web");
    // What a read shows is what is stored.
    let stored = c.get_instance("a").await.expect("get");
    assert_eq!(stored.template, a.template);

    let info = c.get_template("web", None).await.expect("get");
    let counts: Vec<(usize, Vec<String>)> = info
        .versions
        .iter()
        .map(|v| (v.in_use, v.instances.clone()))
        .collect();
    assert_eq!(
        counts,
        [
            (1, vec!["a".to_owned()]),
            (2, vec!["b".to_owned(), "c".to_owned()])
        ]
    );
    let only = c.get_template("web", Some(2)).await.expect("get v2");
    assert_eq!(only.versions.len(), 1);
    assert_eq!(only.versions[0].in_use, 2);
    let listed = c.list_templates().await.expect("list");
    assert_eq!(listed, [info]);
}

#[tokio::test]
async fn a_version_in_use_is_not_deleted_and_numbers_are_not_reused() {
    let n = node().await;
    let c = &n.client;
    c.create_template("web", spec(64)).await.expect("create");
    c.update_template("web", spec(96)).await.expect("v2");
    c.create_from_template(from("a", "web@1", &[]), Wait::Settled)
        .await
        .expect("a");

    let before = c.get_template("web", None).await.expect("get");
    let refused = c.delete_template("web", Some(1)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        refused.to_string(),
        "template `web` version 1 is in use by a; delete them first"
    );
    let whole = c.delete_template("web", None).await.unwrap_err();
    assert!(whole.to_string().contains("a (version 1)"), "{whole}");
    assert_eq!(
        c.get_template("web", None).await.expect("get"),
        before,
        "nothing changed, the delete's mark is cleared"
    );

    // Version 2 is unused: it goes, and the next version is 3, not 2.
    c.delete_template("web", Some(2)).await.expect("delete v2");
    let next = c.update_template("web", spec(128)).await.expect("v3");
    let numbers: Vec<u32> = next.versions.iter().map(|v| v.version.version).collect();
    assert_eq!(numbers, [1, 3]);
    let gone = c
        .create_from_template(from("b", "web@2", &[]), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(gone.to_string(), "template `web` version 2 not found");

    c.delete_instance("a", Wait::Settled)
        .await
        .expect("delete a");
    c.delete_template("web", None).await.expect("delete all");
    let missing = c.get_template("web", None).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let n = node().await;
    let c = &n.client;
    let mut invalid = spec(64);
    invalid.spec.cpus = zixiao_core::Cpus::cores(0);
    let err = c.create_template("web", invalid).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid spec.cpus: must be more than 0 (a container may ask for as little as 1m)"
    );
    let err = c.create_template("Web!", spec(64)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().starts_with("invalid name:"), "{err}");
    assert!(c.list_templates().await.expect("list").is_empty());

    c.create_template("web", spec(64)).await.expect("create");
    let twice = c.create_template("web", spec(96)).await.unwrap_err();
    assert_eq!(twice.kind(), ErrorKind::AlreadyExists);
    let mut invalid = spec(64);
    invalid.spec.memory_mib = 0;
    let err = c.update_template("web", invalid).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let info = c.get_template("web", None).await.expect("get");
    assert_eq!(info.versions.len(), 1, "no version was added");

    let unknown = FromTemplate::parse("a", "web", &["colour=red"]).unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::InvalidArgument);
    let zero = c
        .create_from_template(from("a", "web", &["cpus=0"]), Wait::Settled)
        .await
        .unwrap_err();
    assert_eq!(
        zero.to_string(),
        "invalid spec.cpus: must be more than 0 (a container may ask for as little as 1m)"
    );
    let nope = c
        .create_from_template(from("a", "nope", &[]), Wait::Settled)
        .await
        .unwrap_err();
    assert_eq!(nope.to_string(), "template `nope` not found");
    let all = c
        .list_instances(InstanceFilter::default())
        .await
        .expect("list");
    assert!(all.is_empty(), "nothing was created: {all:?}");
}

/// Creates from a template racing its delete: either the create commits
/// first and the delete is refused naming it, or the delete wins and the
/// create fails; never an instance whose version is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_racing_a_delete_never_leave_an_orphaned_instance() {
    let n = node().await;
    let c = &n.client;
    for round in 0..8 {
        c.create_template("web", spec(64)).await.expect("create");
        let creates = (0..4).map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.create_from_template(from(&format!("r{round}-{i}"), "web", &[]), Wait::No)
                    .await
            })
        });
        let creates: Vec<_> = creates.collect();
        let deleted = c.delete_template("web", None).await;
        for create in creates {
            let _ = create.await.expect("join");
        }
        let users = c
            .list_instances(InstanceFilter::default())
            .await
            .expect("list")
            .into_iter()
            .filter(|i| i.template.is_some())
            .count();
        match deleted {
            Ok(()) => assert_eq!(users, 0, "round {round}: deleted under its users"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
                assert!(users > 0, "round {round}: refused without users");
                assert_eq!(
                    c.get_template("web", None).await.expect("kept").versions[0].in_use,
                    users
                );
            }
        }
        for i in c
            .list_instances(InstanceFilter::default())
            .await
            .expect("list")
        {
            c.delete_instance(&i.id, Wait::Settled)
                .await
                .expect("delete");
        }
        let _ = c.delete_template("web", None).await;
    }
}

/// A template version carries a snapshot schedule to the instances made
/// from it (the template spec is the instance spec); one for a runtime
/// that takes no snapshots is refused before anything is stored.
#[tokio::test]
async fn a_snapshot_schedule_in_a_version_goes_to_its_instances() {
    let n = node().await;
    let c = &n.client;
    let schedule: zixiao_core::model::SnapshotSchedule =
        serde_yaml::from_str("{every: 1h, keep: 24}").expect("a schedule");
    let mut vm = InstanceSpec::vm("/images/base.qcow2");
    vm.snapshot_schedule = Some(schedule);
    c.create_template(
        "db",
        TemplateSpec {
            labels: Default::default(),
            spec: vm,
        },
    )
    .await
    .expect("create");
    let db = c
        .create_from_template(from("db1", "db", &[]), Wait::No)
        .await
        .expect("an instance");
    assert_eq!(db.spec.snapshot_schedule, Some(schedule));

    let mut web = spec(64);
    web.spec.snapshot_schedule = Some(schedule);
    let err = c.create_template("web", web).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let err = c.get_template("web", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
