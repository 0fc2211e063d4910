//! The attacks of the "Secure the cluster" issue against the real
//! Controller on the embedded store, each caller authenticated from what
//! it brought by an `Authenticator`, behind `Authorized<Audited<_>>`: each
//! attack is refused with the right kind, and the store changes by the
//! audit record of the refusal and nothing else.

use std::sync::Arc;
use std::time::Duration;

use zixiao_auth::{
    secure, AuditLog, Authenticator, Caller, Outcome, Retention, Role, TokenSecret, UserName,
    PROJECT_LABEL,
};
use zixiao_core::api::{Api, Request, Response, Wait};
use zixiao_core::controller::Convergence;
use zixiao_core::host::HostFacts;
use zixiao_core::{
    Controller, CreateInstance, DesiredState, ErrorKind, InstanceSpec, InstanceType, LocalAgent,
    NodeRegistration, Resources,
};
use zixiao_sched::PluginScheduler;
use zixiao_testing::fake_driver::FakeDriver;

use crate::support::{changed_keys, only_audit_changed, Harness};

struct Cluster {
    h: Harness,
    controller: Arc<Controller>,
    log: Arc<AuditLog>,
    authenticator: Authenticator,
}

impl Cluster {
    /// One node, `node-a`, converged in the background (as on a server),
    /// so a lookup writes nothing.
    async fn new() -> Self {
        let h = Harness::new();
        let agent = Arc::new(
            LocalAgent::new(HostFacts {
                hostname: "node-a".into(),
                capacity: Resources {
                    cpus: zixiao_core::Cpus::cores(8),
                    memory_mib: 8192,
                    disk_gib: 100,
                    instances: 32,
                },
            })
            .with_driver(Arc::new(FakeDriver::new(InstanceType::Container))),
        );
        let registration = NodeRegistration {
            address: "node-a:50052".into(),
            ..agent.registration("node-a")
        };
        let controller = Controller::builder(h.store.clone(), Arc::new(PluginScheduler::default()))
            .clock(h.clock.clone())
            .convergence(Convergence::Background)
            .agent("node-a", agent)
            .build();
        controller
            .register_node(registration)
            .await
            .expect("register");
        let log = h.audit_log(Retention::default());
        let authenticator = Authenticator::new(h.accounts.clone(), None);
        Cluster {
            h,
            controller: Arc::new(controller),
            log,
            authenticator,
        }
    }

    async fn token(
        &self,
        name: &str,
        role: Role,
        projects: &[&str],
        ttl: Option<Duration>,
    ) -> TokenSecret {
        self.h.user(name, role, projects).await;
        let (_, secret) = self
            .h
            .accounts
            .issue_user_token(&UserName::try_from(name).unwrap(), role, None, ttl)
            .await
            .expect("token");
        secret
    }

    /// The stack for a call that came with `bearer`.
    async fn api(&self, bearer: Option<&str>) -> impl Api {
        let caller = self
            .authenticator
            .caller(bearer, None)
            .await
            .expect("the store answers");
        secure(self.controller.clone(), caller, self.log.clone())
    }
}

fn create(name: &str, project: &str) -> Request {
    let mut request = CreateInstance::new(name, InstanceSpec::container("busybox"));
    request
        .labels
        .insert(PROJECT_LABEL.to_owned(), project.to_owned());
    request
        .spec
        .env
        .insert("SECRET".into(), "do-not-log-me".into());
    Request::CreateInstance {
        request,
        wait: Wait::No,
    }
}

#[tokio::test]
async fn every_attack_is_refused_and_leaves_only_its_audit_record() {
    let c = Cluster::new().await;
    let admin = c.token("root", Role::Admin, &[], None).await;
    let otto = c.token("otto", Role::Operator, &["web"], None).await;
    let vera = c.token("vera", Role::Viewer, &["web"], None).await;
    let ada = c.token("ada", Role::Operator, &["api"], None).await;
    let brief = c
        .token(
            "brief",
            Role::Operator,
            &["web"],
            Some(Duration::from_secs(60)),
        )
        .await;
    let revoked = c.token("gone", Role::Admin, &[], None).await;
    c.h.accounts.revoke_token(revoked.id()).await.unwrap();
    let (_, join) =
        c.h.accounts
            .issue_join_token(&UserName::try_from("root").unwrap(), false, None)
            .await
            .unwrap();
    let foreign = {
        let elsewhere = Harness::new();
        elsewhere.user("root", Role::Admin, &[]).await;
        elsewhere
            .accounts
            .issue_user_token(
                &UserName::try_from("root").unwrap(),
                Role::Admin,
                None,
                None,
            )
            .await
            .unwrap()
            .1
    };

    // What is allowed, first.
    let web = c
        .api(Some(otto.expose()))
        .await
        .call(create("web-1", "web"))
        .await;
    let Ok(Response::Instance(web)) = web else {
        panic!("{web:?}")
    };
    let api = c
        .api(Some(admin.expose()))
        .await
        .call(create("api-1", "api"))
        .await;
    let Ok(Response::Instance(api)) = api else {
        panic!("{api:?}")
    };
    c.h.clock.advance(Duration::from_secs(120)); // `brief` expires

    let expired = brief.expose().to_owned();
    let attacks: Vec<(&str, Option<String>, Request, ErrorKind)> = vec![
        (
            "no identity",
            None,
            create("x", "web"),
            ErrorKind::Unauthenticated,
        ),
        (
            "a malformed token",
            Some("zx_nonsense".into()),
            create("x", "web"),
            ErrorKind::Unauthenticated,
        ),
        (
            "an expired token",
            Some(expired),
            create("x", "web"),
            ErrorKind::Unauthenticated,
        ),
        (
            "a revoked token",
            Some(revoked.expose().into()),
            create("x", "web"),
            ErrorKind::Unauthenticated,
        ),
        (
            "another cluster's token",
            Some(foreign.expose().into()),
            Request::DeleteInstance {
                instance: "web-1".into(),
                wait: Wait::No,
            },
            ErrorKind::Unauthenticated,
        ),
        (
            "a join token as a bearer",
            Some(join.expose().into()),
            Request::ListNodes,
            ErrorKind::Unauthenticated,
        ),
        (
            "a viewer creating",
            Some(vera.expose().into()),
            create("x", "web"),
            ErrorKind::PermissionDenied,
        ),
        (
            "a viewer stopping",
            Some(vera.expose().into()),
            Request::StopInstance {
                instance: "web-1".into(),
                wait: Wait::No,
            },
            ErrorKind::PermissionDenied,
        ),
        (
            "an operator stopping another project's instance",
            Some(ada.expose().into()),
            Request::StopInstance {
                instance: "web-1".into(),
                wait: Wait::No,
            },
            ErrorKind::PermissionDenied,
        ),
        (
            "an operator deleting it by id",
            Some(ada.expose().into()),
            Request::DeleteInstance {
                instance: web.id.clone(),
                wait: Wait::No,
            },
            ErrorKind::PermissionDenied,
        ),
        (
            "an operator creating in another project",
            Some(otto.expose().into()),
            create("x", "api"),
            ErrorKind::PermissionDenied,
        ),
        (
            "an operator draining a node",
            Some(otto.expose().into()),
            Request::DrainNode {
                node: "node-a".into(),
            },
            ErrorKind::PermissionDenied,
        ),
        (
            "an operator cordoning a node",
            Some(otto.expose().into()),
            Request::CordonNode {
                node: "node-a".into(),
            },
            ErrorKind::PermissionDenied,
        ),
        (
            "an operator importing a host file",
            Some(otto.expose().into()),
            Request::ImportImages {
                node: None,
                instance_type: InstanceType::Container,
                archive: "/etc/shadow".into(),
                import_as: zixiao_core::api::ImportAs::Container { name: None },
                progress: Default::default(),
            },
            ErrorKind::PermissionDenied,
        ),
        (
            "a viewer pulling an image",
            Some(vera.expose().into()),
            Request::PullImage {
                node: None,
                instance_type: InstanceType::Container,
                reference: "127.0.0.1:5000/busybox:1".try_into().unwrap(),
                options: Default::default(),
                progress: Default::default(),
            },
            ErrorKind::PermissionDenied,
        ),
    ];
    for (what, bearer, request, kind) in attacks {
        let api = c.api(bearer.as_deref()).await;
        let before = c.h.snapshot().await;
        let records = c.log.list(None, None, None).await.unwrap();
        let err = api.call(request).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{what}: {}", err.chain());
        let changed = changed_keys(&before, &c.h.snapshot().await);
        assert!(only_audit_changed(&changed), "{what} changed {changed:?}");
        let after = c.log.list(None, None, None).await.unwrap();
        // The clock stands still: find the new record by content, not order.
        let new: Vec<_> = after.iter().filter(|r| !records.contains(r)).collect();
        assert_eq!(new.len(), 1, "{what} is recorded once");
        let outcome = &new[0].outcome;
        match kind {
            ErrorKind::Unauthenticated => {
                assert!(
                    matches!(outcome, Outcome::Unauthenticated { .. }),
                    "{what}: {outcome:?}"
                )
            }
            _ => assert!(
                matches!(outcome, Outcome::Denied { .. }),
                "{what}: {outcome:?}"
            ),
        }
    }

    // Nothing happened to the instances or the node.
    let web_now = c.controller.get_instance("web-1").await.unwrap();
    assert_eq!(web_now.desired, DesiredState::Running);
    assert_eq!(c.controller.get_instance("api-1").await.unwrap().id, api.id);
    assert!(c.controller.get_instance("x").await.is_err());
    assert_eq!(
        c.controller.get_node("node-a").await.unwrap().status,
        zixiao_core::NodeStatus::Ready
    );
    // And no record holds the secret of a request's environment.
    for (key, value) in c.h.snapshot().await {
        if key.starts_with("/zixiao/auth/audit/") {
            assert!(
                !String::from_utf8_lossy(&value).contains("do-not-log-me"),
                "{key}"
            );
        }
    }
}

#[tokio::test]
async fn an_operator_works_in_its_project_through_the_whole_stack() {
    let c = Cluster::new().await;
    let otto = c.token("otto", Role::Operator, &["web"], None).await;
    let api = c.api(Some(otto.expose())).await;
    api.call(create("web-1", "web")).await.unwrap();
    api.call(Request::StopInstance {
        instance: "web-1".into(),
        wait: Wait::No,
    })
    .await
    .unwrap();
    assert_eq!(
        c.controller.get_instance("web-1").await.unwrap().desired,
        DesiredState::Stopped
    );
    let Response::Nodes(nodes) = api.call(Request::ListNodes).await.unwrap() else {
        panic!("nodes")
    };
    assert_eq!(nodes.len(), 1, "operators read nodes");
    let records = c.log.list(None, None, None).await.unwrap();
    let ops: Vec<&str> = records.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(ops, ["instance.create", "instance.stop"]);
    assert!(records.iter().all(|r| r.outcome == Outcome::Done));
    assert!(records.iter().all(|r| r.project.as_deref() == Some("web")));

    // The caller is re-judged from the store at each authentication: a
    // deleted user's next call is refused.
    c.h.accounts
        .delete_user(&UserName::try_from("otto").unwrap())
        .await
        .unwrap();
    let caller = c
        .authenticator
        .caller(Some(otto.expose()), None)
        .await
        .unwrap();
    assert!(matches!(caller, Caller::Rejected(_)), "{caller:?}");
}

/// The operations `api` lists, as sorted `(kind, target name)`.
async fn listed_operations(api: &impl Api) -> Vec<(String, String)> {
    let request = Request::ListOperations {
        filter: Default::default(),
        page: Default::default(),
    };
    let Response::Operations(page) = api.call(request).await.expect("operation.list") else {
        panic!("operations")
    };
    let mut listed: Vec<_> = page
        .operations
        .iter()
        .map(|o| (o.kind.to_string(), o.target.name.clone()))
        .collect();
    // In id order, which is random: sorted to compare.
    listed.sort();
    listed
}

#[tokio::test]
async fn operations_are_read_and_cancelled_as_their_targets() {
    let c = Cluster::new().await;
    let otto = c.token("otto", Role::Operator, &["web"], None).await;
    let vera = c.token("vera", Role::Viewer, &["web"], None).await;
    let ann = c.token("ann", Role::Operator, &["api"], None).await;
    let (otto, vera, ann) = (
        c.api(Some(otto.expose())).await,
        c.api(Some(vera.expose())).await,
        c.api(Some(ann.expose())).await,
    );
    // A drain of the empty node first (nothing to wait for), by the
    // controller's own API, which records its operation.
    let drain = Request::DrainNode {
        node: "node-a".into(),
    };
    c.controller.call(drain).await.unwrap();
    otto.call(create("web-1", "web")).await.unwrap();
    ann.call(create("api-1", "api")).await.unwrap();
    let web_op = c
        .controller
        .list_operations(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.target.name == "web-1")
        .expect("web-1's create");

    // Each sees the operations of its projects' instances; an operator
    // sees the node's drain too, a viewer does not read nodes.
    let create_of = |name: &str| ("create".to_owned(), name.to_owned());
    let drain = ("drain".to_owned(), "node-a".to_owned());
    assert_eq!(
        listed_operations(&otto).await,
        [create_of("web-1"), drain.clone()]
    );
    assert_eq!(listed_operations(&vera).await, [create_of("web-1")]);
    assert_eq!(listed_operations(&ann).await, [create_of("api-1"), drain]);

    // Another project's operation is refused by name, as its instance is.
    let get = || Request::GetOperation {
        id: web_op.id.clone(),
    };
    let cancel = || Request::CancelOperation {
        id: web_op.id.clone(),
    };
    let refused = ann.call(get()).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied);
    assert!(refused.to_string().contains("operation.get"), "{refused}");
    assert!(refused.to_string().contains("web"), "{refused}");
    let before = c.h.snapshot().await;
    let refused = ann.call(cancel()).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied);
    let changed = changed_keys(&before, &c.h.snapshot().await);
    assert!(
        only_audit_changed(&changed),
        "a refused cancel changed {changed:?}"
    );
    // Its project's viewer reads it and may not cancel it.
    let Response::Operation(read) = vera.call(get()).await.unwrap() else {
        panic!("operation")
    };
    assert_eq!(read.id, web_op.id);
    let refused = vera.call(cancel()).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied);
    assert!(refused.to_string().contains("viewer"), "{refused}");
}
