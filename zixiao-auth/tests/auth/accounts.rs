//! Users and projects in the store: creation, compare-and-swap updates,
//! the implicit `default` project, and deletion rules.

use std::collections::BTreeSet;

use zixiao_auth::{ProjectName, Quota, Role, UserName};
use zixiao_core::{ErrorKind, Resources};

use crate::support::Harness;

fn project(name: &str) -> ProjectName {
    ProjectName::try_from(name).unwrap()
}

#[tokio::test]
async fn users_are_created_once_and_updated_by_compare_and_swap() {
    let h = Harness::new();
    let alice = UserName::try_from("alice").unwrap();
    let err = h
        .accounts
        .create_user(
            alice.clone(),
            Role::Viewer,
            BTreeSet::from([project("web")]),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "project web does not exist: {err}"
    );
    h.accounts
        .create_project(project("web"), Quota::default())
        .await
        .unwrap();
    let created = h
        .accounts
        .create_user(
            alice.clone(),
            Role::Viewer,
            BTreeSet::from([project("web")]),
        )
        .await
        .unwrap();
    let err = h
        .accounts
        .create_user(alice.clone(), Role::Admin, BTreeSet::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    let mut first = created.clone();
    let mut second = created;
    first.role = Role::Operator;
    h.accounts.update_user(first).await.unwrap();
    second.role = Role::Admin;
    let err = h.accounts.update_user(second).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "a stale update loses: {err}"
    );
    assert_eq!(
        h.accounts.get_user(&alice).await.unwrap().role,
        Role::Operator
    );
    assert_eq!(h.accounts.list_users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_default_project_always_exists_and_cannot_go() {
    let h = Harness::new();
    let default = ProjectName::default_project();
    let projects = h.accounts.list_projects().await.unwrap();
    assert_eq!(projects.len(), 1);
    assert!(projects[0].name.is_default());
    let err = h
        .accounts
        .create_project(default.clone(), Quota::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let mut stored = h.accounts.get_project(&default).await.unwrap();
    stored.quota.instances = Some(10);
    h.accounts.update_project(stored).await.unwrap();
    assert_eq!(
        h.accounts
            .get_project(&default)
            .await
            .unwrap()
            .quota
            .instances,
        Some(10)
    );
    let err = h.accounts.delete_project(&default).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[tokio::test]
async fn a_project_with_members_cannot_be_deleted() {
    let h = Harness::new();
    h.user("alice", Role::Operator, &["web"]).await;
    let err = h
        .accounts
        .delete_project(&project("web"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("alice"), "{err}");
    h.accounts
        .delete_user(&UserName::try_from("alice").unwrap())
        .await
        .unwrap();
    h.accounts.delete_project(&project("web")).await.unwrap();
    assert_eq!(
        h.accounts
            .get_project(&project("web"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn quotas_admit_up_to_their_limits() {
    let quota = Quota {
        cpus: Some(zixiao_core::Cpus::cores(4)),
        memory_mib: Some(4096),
        instances: Some(2),
        disk_gib: None,
    };
    let web = project("web");
    let used = Resources {
        cpus: zixiao_core::Cpus::cores(2),
        memory_mib: 2048,
        disk_gib: 500,
        instances: 1,
    };
    let fits = Resources {
        cpus: zixiao_core::Cpus::cores(2),
        memory_mib: 2048,
        disk_gib: 10_000,
        instances: 1,
    };
    assert!(quota.admits(&web, &used, &fits).is_ok());
    let too_many = Resources {
        instances: 2,
        ..fits
    };
    let err = quota.admits(&web, &used, &too_many).unwrap_err();
    assert_eq!(err.resource, "instances");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    assert!(
        err.to_string().contains("project `web` allows 2 instances"),
        "{err}"
    );
    assert!(Quota::default().admits(&web, &used, &too_many).is_ok());
}
