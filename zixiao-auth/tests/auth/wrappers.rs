//! `Authorized` and `Audited` around a fake `Api`, each alone and stacked:
//! refusals reach nothing and leave only their audit record; records hold
//! no secrets; retention holds.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use zixiao_auth::{
    secure, AuditLog, Audited, Authorized, Caller, Identity, Outcome, ProjectName, Rejection,
    Retention, Role, UserName, PROJECT_LABEL,
};
use zixiao_core::api::{Api, Request, Response, Wait};
use zixiao_core::{CreateInstance, ErrorKind, InstanceSpec};

use crate::support::{changed_keys, days, instance, only_audit_changed, FakeApi, Harness};

fn stop(instance: &str) -> Request {
    Request::StopInstance {
        instance: instance.to_owned(),
        wait: Wait::No,
    }
}

fn create(name: &str, project: &str) -> Request {
    let mut request = CreateInstance::new(name, InstanceSpec::container("busybox"));
    request
        .labels
        .insert(PROJECT_LABEL.to_owned(), project.to_owned());
    Request::CreateInstance {
        request,
        wait: Wait::No,
    }
}

fn web_and_db() -> Arc<FakeApi> {
    FakeApi::with([instance("web", "web"), instance("db", "db")])
}

/// Calls `request` through `api` and checks it was refused with `kind`,
/// reached nothing of the fake but lookups, and changed nothing in the
/// store but one audit record, which it returns.
async fn refused(
    h: &Harness,
    log: &AuditLog,
    fake: &FakeApi,
    api: &dyn Api,
    request: Request,
    kind: ErrorKind,
) -> zixiao_auth::AuditRecord {
    let calls_before = fake.calls_but_lookups();
    let names_before = fake.names();
    let records_before = log.list(None, None, None).await.unwrap();
    let store_before = h.snapshot().await;
    let err = api.call(request).await.unwrap_err();
    assert_eq!(err.kind(), kind, "{}", err.chain());
    assert_eq!(
        fake.calls_but_lookups(),
        calls_before,
        "the call reached the Api"
    );
    assert_eq!(fake.names(), names_before);
    let changed = changed_keys(&store_before, &h.snapshot().await);
    assert!(only_audit_changed(&changed), "{changed:?}");
    let records = log.list(None, None, None).await.unwrap();
    // The clock stands still: find the new record by content, not order.
    let new: Vec<_> = records
        .into_iter()
        .filter(|r| !records_before.contains(r))
        .collect();
    assert_eq!(new.len(), 1, "one record of the refusal");
    new[0].clone()
}

#[tokio::test]
async fn callers_without_an_identity_are_refused_and_recorded() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = web_and_db();
    for (caller, reason) in [
        (Caller::Anonymous, "no credentials"),
        (
            Caller::Rejected(Rejection::MalformedToken),
            "the token is malformed",
        ),
        (Caller::Rejected(Rejection::Expired), "the token expired"),
        (
            Caller::Rejected(Rejection::Revoked),
            "the token was revoked",
        ),
        (
            Caller::Rejected(Rejection::InvalidToken),
            "the token is not valid",
        ),
    ] {
        let api = secure(fake.clone(), caller, log.clone());
        // Reads as much as writes.
        for request in [Request::ListNodes, stop("web")] {
            let record = refused(&h, &log, &fake, &api, request, ErrorKind::Unauthenticated).await;
            assert_eq!(record.identity, "anonymous");
            assert_eq!(
                record.outcome,
                Outcome::Unauthenticated {
                    reason: reason.to_owned()
                }
            );
        }
    }
    assert!(
        fake.calls().is_empty(),
        "not even a lookup: {:?}",
        fake.calls()
    );
}

#[tokio::test]
async fn a_viewer_cannot_create_and_an_operator_cannot_leave_its_projects() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = web_and_db();
    let viewer = h.user("vera", Role::Viewer, &["web"]).await;
    let operator = h.user("otto", Role::Operator, &["web"]).await;

    let as_viewer = secure(fake.clone(), viewer, log.clone());
    let record = refused(
        &h,
        &log,
        &fake,
        &as_viewer,
        create("new", "web"),
        ErrorKind::PermissionDenied,
    )
    .await;
    assert_eq!(record.user.as_deref(), Some("vera"));
    assert_eq!(record.project.as_deref(), Some("web"));
    assert_eq!(record.operation, "instance.create");
    assert!(matches!(
        record.outcome,
        Outcome::Denied { ref permission, .. } if permission == "instance.create in project web"
    ));
    // The viewer reads its project's instance.
    assert!(as_viewer
        .call(Request::GetInstance {
            instance: "web".into()
        })
        .await
        .is_ok());

    let as_operator = secure(fake.clone(), operator, log.clone());
    for request in [
        stop("db"),
        stop("id-db"),
        Request::DeleteInstance {
            instance: "db".into(),
            wait: Wait::No,
        },
        Request::GetInstance {
            instance: "db".into(),
        },
        create("sneaky", "db"),
    ] {
        refused(
            &h,
            &log,
            &fake,
            &as_operator,
            request,
            ErrorKind::PermissionDenied,
        )
        .await;
    }
    let record = refused(
        &h,
        &log,
        &fake,
        &as_operator,
        Request::DrainNode {
            node: "worker-1".into(),
        },
        ErrorKind::PermissionDenied,
    )
    .await;
    assert!(matches!(
        record.outcome,
        Outcome::Denied { ref permission, .. } if permission == "node.drain (admin only)"
    ));
    assert_eq!(record.target.as_deref(), Some("node worker-1"));
}

#[tokio::test]
async fn an_allowed_call_names_the_instance_by_id_and_is_recorded() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = web_and_db();
    let operator = h.user("otto", Role::Operator, &["web"]).await;
    let api = secure(fake.clone(), operator, log.clone());
    let stopped = api.call(stop("web")).await.unwrap();
    assert!(matches!(stopped, Response::Instance(ref i) if i.name == "web"));
    assert_eq!(
        fake.calls_but_lookups(),
        vec!["instance.stop instance id-web".to_owned()],
        "after the lookup, the call names the instance by id"
    );
    let records = log.list(None, None, None).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Done);
    assert_eq!(records[0].project.as_deref(), Some("web"));
    assert_eq!(records[0].replica, "replica-1");
    assert_eq!(records[0].identity, "user otto");

    // A read is answered from the lookup alone, and not recorded.
    let calls = fake.calls().len();
    api.call(Request::GetInstance {
        instance: "web".into(),
    })
    .await
    .unwrap();
    assert_eq!(fake.calls().len(), calls + 1);
    assert_eq!(log.list(None, None, None).await.unwrap().len(), 1);
    // So is a read of an image's operation, which has no project to judge.
    let calls = fake.calls().len();
    let id = zixiao_core::model::OperationId::new();
    let read = api.call(Request::GetOperation { id: id.clone() }).await;
    assert!(
        matches!(read, Ok(Response::Operation(ref o)) if o.id == id),
        "{read:?}"
    );
    assert_eq!(fake.calls().len(), calls + 1, "{:?}", fake.calls());

    // A changing call on a missing instance ends in the lookup: recorded.
    let err = api.call(stop("ghost")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let records = log.list(None, None, None).await.unwrap();
    assert_eq!(
        records.last().unwrap().outcome,
        Outcome::Failed {
            kind: ErrorKind::NotFound
        }
    );
}

#[tokio::test]
async fn lists_and_watches_show_only_the_callers_projects() {
    let h = Harness::new();
    let fake = FakeApi::with([
        instance("web", "web"),
        instance("db", "db"),
        instance("plain", "default"),
    ]);
    let operator = h.user("otto", Role::Operator, &["web", "default"]).await;
    let api = Authorized::new(fake.clone(), operator);
    let Response::Instances(listed) = api
        .call(Request::ListInstances {
            filter: Default::default(),
            page: Default::default(),
        })
        .await
        .unwrap()
    else {
        panic!("instances")
    };
    let names: Vec<_> = listed.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["plain", "web"]);
    let Response::InstanceEvents(events) = api
        .call(Request::WatchInstances { after: 0 })
        .await
        .unwrap()
    else {
        panic!("events")
    };
    let seen: Vec<String> = events
        .map(|e| e.unwrap().instance.unwrap().name)
        .collect()
        .await;
    assert_eq!(seen, ["plain", "web"]);
    let admin = Authorized::new(fake, Identity::local_admin());
    let Response::Instances(all) = admin
        .call(Request::ListInstances {
            filter: Default::default(),
            page: Default::default(),
        })
        .await
        .unwrap()
    else {
        panic!("instances")
    };
    assert_eq!(all.instances.len(), 3);
}

#[tokio::test]
async fn each_wrapper_works_alone_and_unwraps() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = web_and_db();
    let authorized = Authorized::new(fake.clone(), Caller::Anonymous);
    let err = authorized.call(Request::ListNodes).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(Arc::ptr_eq(&authorized.into_inner(), &fake));
    assert!(
        log.list(None, None, None).await.unwrap().is_empty(),
        "no log given"
    );

    let audited = Audited::new(fake.clone(), log.clone(), Identity::local_admin());
    audited.call(stop("db")).await.unwrap();
    audited.call(Request::ListNodes).await.unwrap();
    let records = log.list(None, None, None).await.unwrap();
    assert_eq!(records.len(), 1, "only the change");
    assert_eq!(records[0].project.as_deref(), Some("db"));
    assert_eq!(records[0].identity, "user local");
    assert!(Arc::ptr_eq(&audited.into_inner(), &fake));

    // Outside Authorized, Audited records the refusals it sees pass by.
    let outer = Audited::new(
        Authorized::new(fake.clone(), Caller::Anonymous),
        log.clone(),
        Caller::Anonymous,
    );
    outer.call(Request::ListNodes).await.unwrap_err();
    let last = log.list(None, None, None).await.unwrap().pop().unwrap();
    assert_eq!(
        last.outcome,
        Outcome::Failed {
            kind: ErrorKind::Unauthenticated
        }
    );
}

#[tokio::test]
async fn audit_records_never_hold_secrets() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = FakeApi::with([]);
    let admin = h.user("root", Role::Admin, &[]).await;
    let (_, token) = h
        .accounts
        .issue_user_token(
            &UserName::try_from("root").unwrap(),
            Role::Admin,
            None,
            None,
        )
        .await
        .unwrap();
    let caller = zixiao_auth::Authenticator::new(h.accounts.clone(), None)
        .caller(Some(token.expose()), None)
        .await
        .unwrap();
    assert!(matches!(caller, Caller::Identified(Identity::User { .. })));
    let api = secure(fake.clone(), caller, log.clone());
    let mut request = CreateInstance::new("app", InstanceSpec::container("busybox"));
    request
        .spec
        .env
        .insert("DATABASE_PASSWORD".into(), "hunter2-s3cr3t".into());
    api.call(Request::CreateInstance {
        request,
        wait: Wait::No,
    })
    .await
    .unwrap();
    // A refused call carrying a secret too.
    let viewer = h.user("vera", Role::Viewer, &["default"]).await;
    let mut request = CreateInstance::new("app2", InstanceSpec::container("busybox"));
    request
        .spec
        .env
        .insert("API_KEY".into(), "hunter2-s3cr3t".into());
    secure(fake, viewer, log.clone())
        .call(Request::CreateInstance {
            request,
            wait: Wait::No,
        })
        .await
        .unwrap_err();

    let records = log.list(None, None, None).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0].token.as_deref(),
        Some(token.id().as_str()),
        "the token's id is recorded"
    );
    let secret = token.expose().rsplit('_').next().unwrap().to_owned();
    for (key, value) in h.snapshot().await {
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains("hunter2"), "{key}: {text}");
        assert!(!text.contains(&secret), "{key} holds the token");
    }
    drop(admin);
}

#[tokio::test]
async fn retention_keeps_the_newest_records_by_count() {
    let h = Harness::new();
    let log = h.audit_log(Retention {
        max_records: 10,
        max_age: days(365),
    });
    let fake = FakeApi::with([instance("web", "web")]);
    let api = Audited::new(fake, log.clone(), Identity::local_admin());
    for _ in 0..45 {
        api.call(stop("web")).await.unwrap();
    }
    let records = log.list(None, None, None).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (36..=45).collect::<Vec<_>>());
    let stored = h.snapshot().await;
    let kept = stored
        .keys()
        .filter(|k| k.starts_with("/zixiao/auth/audit/records/"))
        .count();
    assert_eq!(kept, 10, "old records are deleted, not only hidden");
}

/// Concurrent calls share the log's writes: every call still gets its own
/// record, numbered without gaps or duplicates, staged before its call
/// runs, while the log's own writes (setting numbers aside, carrying the
/// outcomes) are one per reserved block, not one per call; retention holds
/// across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_writes_and_each_gets_its_record() {
    let h = Harness::new();
    let log = h.audit_log(Retention {
        max_records: 150,
        max_age: days(365),
    });
    let fake = FakeApi::with([instance("web", "web")]);
    let api = Arc::new(Audited::new(fake, log.clone(), Identity::local_admin()));
    // Each commit takes the next revision: count them between two markers.
    let marker = || {
        zixiao_core::store::Txn::new().put(
            "/test/marker".to_owned(),
            b"m".to_vec(),
            zixiao_core::store::Precondition::None,
        )
    };
    let before = zixiao_core::Store::commit(h.store.as_ref(), marker())
        .await
        .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let api = api.clone();
        calls.spawn(async move { api.call(stop("web")).await.map(|_| ()) });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap().unwrap();
    }
    // Each staged record has a revision of its own; the rest are the
    // log's writes.
    let log_writes = zixiao_core::Store::commit(h.store.as_ref(), marker())
        .await
        .unwrap()
        - before
        - 1
        - 200;
    let records = log.list(None, None, None).await.unwrap();
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (51..=200).collect::<Vec<_>>(),
        "the newest 150, no gap"
    );
    // 150 kept: numbers are set aside two at a time (and a sync may write
    // outcomes once).
    assert!(
        log_writes <= 200 / 2 + 2,
        "{log_writes} writes of the log for 200 calls and their outcomes"
    );
    assert!(records.iter().all(|r| r.outcome == Outcome::Done));
    let kept = h
        .snapshot()
        .await
        .keys()
        .filter(|k| k.starts_with("/zixiao/auth/audit/records/"))
        .count();
    assert_eq!(kept, 150);
}

#[tokio::test]
async fn retention_drops_records_past_their_age_as_new_ones_come() {
    let h = Harness::new();
    let log = h.audit_log(Retention {
        max_records: 1000,
        max_age: days(30),
    });
    let fake = FakeApi::with([instance("web", "web")]);
    let api = Audited::new(fake, log.clone(), Identity::local_admin());
    for _ in 0..5 {
        api.call(stop("web")).await.unwrap();
    }
    h.clock.advance(days(20));
    for _ in 0..3 {
        api.call(stop("web")).await.unwrap();
    }
    h.clock.advance(days(15));
    // The first five are now 35 days old: hidden at once...
    assert_eq!(log.list(None, None, None).await.unwrap().len(), 3);
    // ...and deleted by the log's next write (the listing writes the
    // waiting outcome of this call).
    api.call(stop("web")).await.unwrap();
    assert_eq!(log.list(None, None, None).await.unwrap().len(), 4);
    let stored = h.snapshot().await;
    let kept = stored
        .keys()
        .filter(|k| k.starts_with("/zixiao/auth/audit/records/"))
        .count();
    assert_eq!(kept, 4);
}

#[tokio::test]
async fn a_flood_of_anonymous_calls_cannot_push_out_identified_records() {
    let h = Harness::new();
    let log = h.audit_log(Retention {
        max_records: 5,
        max_age: days(30),
    });
    let fake = FakeApi::with([instance("web", "web")]);
    secure(fake.clone(), Identity::local_admin(), log.clone())
        .call(stop("web"))
        .await
        .unwrap();
    let anonymous = secure(fake, Caller::Anonymous, log.clone());
    for _ in 0..20 {
        anonymous.call(Request::ListNodes).await.unwrap_err();
    }
    let records = log.list(None, None, None).await.unwrap();
    assert_eq!(records.len(), 6, "5 anonymous, and the identified one");
    assert!(records.iter().any(|r| r.identity == "user local"));
}

#[tokio::test]
async fn the_log_lists_by_time_user_and_project() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = FakeApi::with([instance("web", "web"), instance("db", "db")]);
    let otto = h.user("otto", Role::Operator, &["web", "db"]).await;
    let vera = h.user("vera", Role::Operator, &["web"]).await;
    secure(fake.clone(), otto.clone(), log.clone())
        .call(stop("db"))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(60));
    let since = zixiao_core::Clock::now(h.clock.as_ref());
    secure(fake.clone(), vera, log.clone())
        .call(stop("web"))
        .await
        .unwrap();
    secure(fake, otto, log.clone())
        .call(stop("web"))
        .await
        .unwrap();

    let otto_name = UserName::try_from("otto").unwrap();
    let web = ProjectName::try_from("web").unwrap();
    assert_eq!(log.list(None, None, None).await.unwrap().len(), 3);
    assert_eq!(
        log.list(None, Some(&otto_name), None).await.unwrap().len(),
        2
    );
    assert_eq!(log.list(None, None, Some(&web)).await.unwrap().len(), 2);
    assert_eq!(log.list(Some(since), None, None).await.unwrap().len(), 2);
    assert_eq!(
        log.list(Some(since), Some(&otto_name), Some(&web))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_writing_at_once_lose_no_record() {
    let h = Harness::new();
    let retention = Retention {
        max_records: 1000,
        max_age: days(30),
    };
    let logs: Vec<Arc<AuditLog>> = (0..3)
        .map(|i| {
            Arc::new(AuditLog::new(
                h.store.clone(),
                h.clock.clone(),
                format!("replica-{i}"),
                retention,
            ))
        })
        .collect();
    let fake = FakeApi::with([instance("web", "web")]);
    let mut tasks = Vec::new();
    for log in &logs {
        for _ in 0..4 {
            let api = Audited::new(fake.clone(), log.clone(), Identity::local_admin());
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    api.call(stop("web")).await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    // The others' outcomes are written when they list or sync.
    for log in &logs[1..] {
        log.list(None, None, None).await.unwrap();
    }
    let records = logs[0].list(None, None, None).await.unwrap();
    assert_eq!(records.len(), 60, "every record");
    // Every outcome, the first of each replica's too (once lost when
    // another replica's retention scan took records staged but not yet
    // written for gaps).
    let undone: Vec<(u64, &str)> = records
        .iter()
        .filter(|r| r.outcome != Outcome::Done)
        .map(|r| (r.seq, r.replica.as_str()))
        .collect();
    assert!(undone.is_empty(), "still started: {undone:?}");
    // Each replica numbers from blocks set aside for it: numbers are
    // unique, with gaps where a block was not used up.
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 60, "each number once");
    for replica in 0..3 {
        let name = format!("replica-{replica}");
        assert_eq!(records.iter().filter(|r| r.replica == name).count(), 20);
    }
}

/// An `Api` that reports the audit records it can see while it runs.
#[derive(Debug)]
struct SeesTheLog(Arc<AuditLog>);

#[async_trait::async_trait]
impl Api for SeesTheLog {
    async fn call(&self, _request: Request) -> zixiao_core::Result<Response> {
        let records = self.0.list(None, None, None).await.expect("list");
        let seen = records
            .iter()
            .map(|r| format!("{} {}", r.operation, r.outcome.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        Err(zixiao_core::Error::FailedPrecondition(seen))
    }
}

/// A changing call's record is there, `started`, while the call runs, and
/// holds its outcome once the call has returned.
#[tokio::test]
async fn a_changing_call_is_recorded_before_it_runs_and_its_outcome_after() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let api = Audited::new(
        SeesTheLog(log.clone()),
        log.clone(),
        Identity::local_admin(),
    );
    let err = api.call(stop("web")).await.expect_err("the fake fails");
    assert_eq!(err.to_string(), "instance.stop started");
    let records = log.list(None, None, None).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].outcome,
        Outcome::Failed {
            kind: ErrorKind::FailedPrecondition
        }
    );
}

/// An `Api` whose call commits a change to the store, then reports the
/// audit records the store holds (read raw, not through the log, which
/// would write what waits).
#[derive(Debug)]
struct CommitsAndLooks(Arc<dyn zixiao_core::Store>);

#[async_trait::async_trait]
impl Api for CommitsAndLooks {
    async fn call(&self, _request: Request) -> zixiao_core::Result<Response> {
        let before = self.0.list("/zixiao/auth/audit/records/").await.unwrap();
        let change = zixiao_core::store::Txn::new().put(
            "/test/change",
            b"made".to_vec(),
            zixiao_core::store::Precondition::None,
        );
        self.0.commit(change).await.unwrap();
        let after = self.0.list("/zixiao/auth/audit/records/").await.unwrap();
        let records = |listing: zixiao_core::store::Listing| {
            listing
                .items
                .iter()
                .map(|kv| {
                    let record: zixiao_auth::AuditRecord =
                        serde_json::from_slice(&kv.value).unwrap();
                    format!("{} {}", record.operation, record.outcome.as_str())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(zixiao_core::Error::FailedPrecondition(format!(
            "before: [{}] after: [{}]",
            records(before),
            records(after)
        )))
    }
}

/// The record of a changing call is written by the call's own commit, no
/// later: once the change is in the store (and durable when it is), so
/// is the record, without a write of the log's own.
#[tokio::test]
async fn the_calls_own_commit_writes_its_record() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let api = Audited::new(
        CommitsAndLooks(h.store.clone()),
        log.clone(),
        Identity::local_admin(),
    );
    // The first call sets numbers aside; the second stages its record in
    // one of them and finds it written with its change.
    for expected in [
        "before: [] after: [instance.stop started]",
        "before: [instance.stop failed] after: [instance.stop failed, instance.stop started]",
    ] {
        let err = api.call(stop("web")).await.expect_err("reports");
        assert_eq!(err.to_string(), expected);
    }
}

/// A store that refuses every write to the audit log, and passes the rest.
#[derive(Debug)]
struct AuditRefused(Arc<dyn zixiao_core::Store>);

#[async_trait::async_trait]
impl zixiao_core::Store for AuditRefused {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<zixiao_core::store::KeyValue>, zixiao_core::StoreError> {
        self.0.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<zixiao_core::store::Listing, zixiao_core::StoreError> {
        self.0.list(prefix).await
    }
    async fn commit(
        &self,
        txn: zixiao_core::store::Txn,
    ) -> Result<zixiao_core::store::Revision, zixiao_core::StoreError> {
        if txn
            .writes
            .iter()
            .any(|w| w.key().starts_with("/zixiao/auth/audit/"))
        {
            return Err(zixiao_core::StoreError::Unavailable {
                what: "the test's store".to_owned(),
                source: None,
            });
        }
        self.0.commit(txn).await
    }
    async fn watch(
        &self,
        prefix: &str,
        after: zixiao_core::store::Revision,
    ) -> Result<zixiao_core::store::WatchStream, zixiao_core::StoreError> {
        self.0.watch(prefix, after).await
    }
    async fn grant_lease(
        &self,
        ttl: Duration,
    ) -> Result<zixiao_core::store::LeaseId, zixiao_core::StoreError> {
        self.0.grant_lease(ttl).await
    }
    async fn keep_alive(
        &self,
        lease: zixiao_core::store::LeaseId,
    ) -> Result<(), zixiao_core::StoreError> {
        self.0.keep_alive(lease).await
    }
    async fn revoke_lease(
        &self,
        lease: zixiao_core::store::LeaseId,
    ) -> Result<(), zixiao_core::StoreError> {
        self.0.revoke_lease(lease).await
    }
}

/// A change that cannot be recorded is not made: the caller hears
/// `Unavailable` naming the audit log, and the call never reaches the API.
#[tokio::test]
async fn a_change_the_audit_log_cannot_record_is_not_made() {
    let h = Harness::new();
    let store: Arc<dyn zixiao_core::Store> = Arc::new(AuditRefused(h.store.clone()));
    let log = Arc::new(AuditLog::new(
        store,
        h.clock.clone(),
        "replica-1",
        Retention::default(),
    ));
    let fake = FakeApi::with([instance("web", "web")]);
    let api = Audited::new(fake.clone(), log, Identity::local_admin());
    let err = api.call(stop("web")).await.expect_err("not recorded");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("audit log"), "{err}");
    assert_eq!(fake.calls_but_lookups(), Vec::<String>::new());
}

/// A success's outcome reaches the store without anyone listing through
/// the replica that wrote it: another replica sees it within the sync delay.
#[tokio::test]
async fn another_replica_sees_a_success_within_the_sync_delay() {
    let h = Harness::new();
    let writer = h.audit_log(Retention::default());
    let reader = Arc::new(AuditLog::new(
        h.store.clone(),
        h.clock.clone(),
        "replica-2",
        Retention::default(),
    ));
    let fake = FakeApi::with([instance("web", "web")]);
    let api = Audited::new(fake, writer, Identity::local_admin());
    api.call(stop("web")).await.expect("stop");
    let outcome = zixiao_testing::wait::wait_until(
        "the other replica to see the outcome",
        zixiao_auth::audit::SYNC_DELAY * 5,
        || async {
            let records = reader.list(None, None, None).await.unwrap();
            let record = records.first()?;
            (record.outcome != Outcome::Started).then(|| record.outcome.clone())
        },
    )
    .await;
    assert_eq!(outcome, Outcome::Done);
}

/// A node's agent reads a network (to set up the cluster's copy, never its
/// caller's) and nothing more of the networks: listing, creating or
/// deleting one stays refused.
#[tokio::test]
async fn a_node_reads_a_network_and_changes_none() {
    let h = Harness::new();
    let log = h.audit_log(Retention::default());
    let fake = web_and_db();
    let node = Identity::Node(zixiao_auth::NodeName::try_from("worker-1").unwrap());
    let api = secure(fake.clone(), node, log.clone());
    api.call(Request::GetNetwork { name: "lan".into() })
        .await
        .expect("a node reads a network");
    assert_eq!(
        fake.calls_but_lookups(),
        vec!["network.get network lan".to_owned()]
    );
    for request in [
        Request::ListNetworks,
        Request::RepairNetwork { name: "lan".into() },
        Request::DeleteNetwork { name: "lan".into() },
    ] {
        refused(&h, &log, &fake, &api, request, ErrorKind::PermissionDenied).await;
    }
}
