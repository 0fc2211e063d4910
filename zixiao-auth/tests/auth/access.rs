//! `AccessApi`: users, tokens, projects and the audit log as `Api`
//! requests over the store, behind the same `secure` stack as every other
//! request; and the project rules it owns (no instance in a project that
//! does not exist, no project deleted under its instances).

use std::sync::Arc;

use zixiao_auth::{secure, AccessApi, Authenticator, Identity, Retention, Role};
use zixiao_core::api::{AuditQuery, Client, Quota, Request, TokenTerms};
use zixiao_core::{ErrorKind, Wait};

use crate::support::{instance, FakeApi, Harness};

fn create(name: &str, project: &str) -> zixiao_core::CreateInstance {
    let mut request = zixiao_core::CreateInstance::new(
        name,
        zixiao_core::InstanceSpec::container("busybox").with_size(2, 256),
    );
    request
        .labels
        .insert(zixiao_auth::PROJECT_LABEL.to_owned(), project.to_owned());
    request
}

#[tokio::test]
async fn an_admin_manages_users_tokens_and_projects_through_the_api() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = FakeApi::with([]);
    let access = Arc::new(AccessApi::new(
        fake.clone(),
        h.accounts.clone(),
        log.clone(),
    ));
    let admin = h.user("root", Role::Admin, &[]).await;
    let client = Client::new(Arc::new(secure(access.clone(), admin, log.clone())));

    let web = client
        .create_project(
            "web",
            Quota {
                cpus: Some(zixiao_core::Cpus::cores(4)),
                ..Quota::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(web.quota.cpus, Some(zixiao_core::Cpus::cores(4)));
    let err = client
        .create_project("Web", Quota::default())
        .await
        .unwrap_err();
    assert!(matches!(&err, zixiao_core::Error::InvalidArgument { field, .. } if field == "name"));

    let (alice, first) = client
        .create_user("alice", Role::Operator, vec!["web".into()], None)
        .await
        .unwrap();
    assert_eq!(alice.role, Role::Operator);
    assert_eq!(first.token.owner, "alice");
    assert!(first.secret.expose().starts_with("zx_"));
    assert!(!format!("{first:?}").contains(first.secret.expose()));
    let err = client
        .create_user("bob", Role::Viewer, vec!["nope".into()], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.chain());

    // The first token works, and says who is calling.
    let authenticator = Authenticator::new(h.accounts.clone(), None);
    let caller = authenticator
        .caller(Some(first.secret.expose()), None)
        .await
        .unwrap();
    assert_eq!(
        caller.identity().and_then(Identity::user).unwrap().as_str(),
        "alice"
    );

    // Her own token, without naming her: `Authorized` fills the owner.
    let as_alice = Client::new(Arc::new(secure(access.clone(), caller, log.clone())));
    let err = as_alice
        .create_token(None, TokenTerms::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::PermissionDenied,
        "only admins make tokens"
    );
    let mine = client
        .create_token(None, TokenTerms::default())
        .await
        .unwrap();
    assert_eq!(
        mine.token.owner, "root",
        "a token without an owner is the caller's"
    );
    assert_eq!(mine.token.role, Some(Role::Admin), "with the owner's role");
    let local = Client::new(Arc::new(secure(
        access.clone(),
        Identity::local_admin(),
        log.clone(),
    )));
    let err = local
        .create_token(None, TokenTerms::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidArgument,
        "the local admin is no stored user: name the owner"
    );
    let viewer = client
        .create_token(
            Some("alice"),
            TokenTerms {
                role: Some(Role::Viewer),
                projects: Some(vec!["web".into()]),
                ttl: Some(std::time::Duration::from_secs(60)),
                ..TokenTerms::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(viewer.token.role, Some(Role::Viewer));
    assert!(viewer.token.expires_at.is_some());
    let tokens = client.list_tokens(Some("alice")).await.unwrap();
    assert_eq!(tokens.len(), 2);
    let revoked = client.revoke_token(&viewer.token.id).await.unwrap();
    assert!(revoked.revoked);
    assert_eq!(
        client.revoke_token("not-an-id").await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    // Instances only in projects that exist; projects keep their instances.
    let err = client
        .create_instance(create("a", "ghost"), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.chain());
    assert!(err.chain().contains("ghost"), "{}", err.chain());
    client
        .create_instance(create("a", "web"), Wait::No)
        .await
        .unwrap();
    let web = client.get_project("web").await.unwrap();
    assert_eq!(web.usage.cpus, zixiao_core::Cpus::cores(2));
    assert_eq!(web.usage.instances, 1);
    client.delete_user("alice").await.unwrap();
    let err = client.delete_project("web").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.chain().contains("instance"), "{}", err.chain());
    let projects = client.list_projects().await.unwrap();
    let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "web"]);

    // Every change above is in the audit log, by its operation.
    let records = client.list_audit(AuditQuery::default()).await.unwrap();
    for operation in [
        "project.create",
        "user.create",
        "token.create",
        "token.revoke",
        "user.delete",
    ] {
        assert!(
            records.iter().any(|r| r.operation == operation),
            "no {operation} in {records:#?}"
        );
    }
    let by_root = client
        .list_audit(AuditQuery {
            user: Some("root".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(by_root.iter().all(|r| r.user.as_deref() == Some("root")));
}

#[tokio::test]
async fn only_admins_reach_access_control_and_refusals_change_nothing_but_the_log() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = FakeApi::with([instance("db-1", "db")]);
    let access = Arc::new(AccessApi::new(
        fake.clone(),
        h.accounts.clone(),
        log.clone(),
    ));
    let otto = h.user("otto", Role::Operator, &["web"]).await;
    let client = Client::new(Arc::new(secure(access, otto, log.clone())));
    let before = h.snapshot().await;
    for request in [
        Request::ListUsers,
        Request::CreateUser {
            name: "eve".into(),
            role: Role::Admin,
            projects: Vec::new(),
            token_ttl: None,
        },
        Request::CreateProject {
            name: "mine".into(),
            quota: Quota::default(),
        },
        Request::ListAudit {
            query: AuditQuery::default(),
        },
    ] {
        let operation = request.operation();
        let err = client.call(request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{operation}");
        assert!(err.chain().contains("(admin only)"), "{}", err.chain());
    }
    let changed = crate::support::changed_keys(&before, &h.snapshot().await);
    assert!(crate::support::only_audit_changed(&changed), "{changed:?}");
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}
