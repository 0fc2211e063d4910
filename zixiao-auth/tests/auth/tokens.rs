//! Tokens: issue, verify, refuse, and the single use of join tokens, on
//! the embedded store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use zixiao_auth::{
    AuthError, AuthStore, Identity, NodeName, ProjectName, Rejection, Role, TokenKind, UserName,
};
use zixiao_core::{ErrorKind, Store};

use crate::support::{changed_keys, days, Harness};

fn user(name: &str) -> UserName {
    UserName::try_from(name).unwrap()
}

fn project(name: &str) -> ProjectName {
    ProjectName::try_from(name).unwrap()
}

fn rejection(err: AuthError) -> Rejection {
    match err {
        AuthError::Unauthenticated(rejection) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_user_token_authenticates_its_owner_and_is_stored_hashed() {
    let h = Harness::new();
    h.user("alice", Role::Operator, &["web"]).await;
    let (token, secret) = h
        .accounts
        .issue_user_token(&user("alice"), Role::Operator, None, Some(days(30)))
        .await
        .unwrap();
    let text = secret.expose().to_owned();
    assert!(text.starts_with(&format!("zx_{}_", token.id)), "{text}");
    assert_eq!(text.len(), 3 + 16 + 1 + 64, "256 bits of secret");

    let identity = h.accounts.authenticate_token(&text).await.unwrap();
    assert_eq!(identity.user(), Some(&user("alice")));
    assert_eq!(identity.token(), Some(&token.id));

    // The secret is nowhere in the store, in Debug output or in errors.
    let secret_part = text.rsplit('_').next().unwrap().to_owned();
    for (key, value) in h.snapshot().await {
        let value = String::from_utf8_lossy(&value);
        assert!(!value.contains(&secret_part), "{key} holds the secret");
    }
    for debug in [
        format!("{secret:?}"),
        format!("{token:?}"),
        format!("{identity:?}"),
    ] {
        assert!(!debug.contains(&secret_part), "{debug}");
    }
    let wrong = format!(
        "{}{}",
        &text[..text.len() - 1],
        if text.ends_with('0') { '1' } else { '0' }
    );
    let err = h.accounts.authenticate_token(&wrong).await.unwrap_err();
    for shown in [
        err.to_string(),
        format!("{err:?}"),
        zixiao_core::Error::from(err).chain(),
    ] {
        assert!(!shown.contains(&secret_part[..60]), "{shown}");
    }
}

#[tokio::test]
async fn malformed_unknown_wrong_expired_and_revoked_tokens_are_refused() {
    let h = Harness::new();
    h.user("alice", Role::Admin, &[]).await;
    let (token, secret) = h
        .accounts
        .issue_user_token(
            &user("alice"),
            Role::Admin,
            None,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let text = secret.expose();

    for malformed in ["", "Bearer x", "zx_", "zx_abc_def", &text[..text.len() - 2]] {
        let err = h.accounts.authenticate_token(malformed).await.unwrap_err();
        assert_eq!(rejection(err), Rejection::MalformedToken, "{malformed:?}");
    }
    // Same id, another secret; and an id this store never issued.
    let other_secret = format!("zx_{}_{}", token.id, "ab".repeat(32));
    let unknown_id = format!("zx_0123456789abcdef_{}", "ab".repeat(32));
    for bad in [other_secret, unknown_id] {
        let err = h.accounts.authenticate_token(&bad).await.unwrap_err();
        assert_eq!(rejection(err), Rejection::InvalidToken);
    }
    // A token of another cluster: a valid token of its own store, unknown here.
    let elsewhere = Harness::new();
    elsewhere.user("alice", Role::Admin, &[]).await;
    let (_, foreign) = elsewhere
        .accounts
        .issue_user_token(&user("alice"), Role::Admin, None, None)
        .await
        .unwrap();
    let err = h
        .accounts
        .authenticate_token(foreign.expose())
        .await
        .unwrap_err();
    assert_eq!(rejection(err), Rejection::InvalidToken);

    h.clock.advance(Duration::from_secs(61));
    let err = h.accounts.authenticate_token(text).await.unwrap_err();
    assert_eq!(rejection(err), Rejection::Expired);

    let (revoked, secret) = h
        .accounts
        .issue_user_token(&user("alice"), Role::Admin, None, None)
        .await
        .unwrap();
    h.accounts
        .authenticate_token(secret.expose())
        .await
        .unwrap();
    h.accounts.revoke_token(&revoked.id).await.unwrap();
    h.accounts.revoke_token(&revoked.id).await.unwrap(); // idempotent
    let err = h
        .accounts
        .authenticate_token(secret.expose())
        .await
        .unwrap_err();
    assert_eq!(rejection(err), Rejection::Revoked);
    let err = zixiao_core::Error::from(
        h.accounts
            .authenticate_token(secret.expose())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
}

#[tokio::test]
async fn a_token_grants_at_most_its_owners_current_role_and_projects() {
    let h = Harness::new();
    h.user("bob", Role::Operator, &["web", "api"]).await;
    let err = h
        .accounts
        .issue_user_token(&user("bob"), Role::Admin, None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let err = h
        .accounts
        .issue_user_token(
            &user("bob"),
            Role::Viewer,
            Some(BTreeSet::from([project("db")])),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    let (_, narrow) = h
        .accounts
        .issue_user_token(
            &user("bob"),
            Role::Operator,
            Some(BTreeSet::from([project("web")])),
            None,
        )
        .await
        .unwrap();
    let Identity::User { role, projects, .. } = h
        .accounts
        .authenticate_token(narrow.expose())
        .await
        .unwrap()
    else {
        panic!("a user")
    };
    assert_eq!(role, Role::Operator);
    assert_eq!(projects, BTreeSet::from([project("web")]));

    // Demote bob: his token follows at once.
    let mut bob = h.accounts.get_user(&user("bob")).await.unwrap();
    bob.role = Role::Viewer;
    bob.projects = BTreeSet::from([project("api")]);
    h.accounts.update_user(bob).await.unwrap();
    let Identity::User { role, projects, .. } = h
        .accounts
        .authenticate_token(narrow.expose())
        .await
        .unwrap()
    else {
        panic!("a user")
    };
    assert_eq!(role, Role::Viewer);
    assert!(projects.is_empty(), "web is no longer bob's: {projects:?}");
}

#[tokio::test]
async fn deleting_a_user_kills_its_tokens_even_if_the_name_comes_back() {
    let h = Harness::new();
    h.user("carol", Role::Admin, &[]).await;
    let (_, secret) = h
        .accounts
        .issue_user_token(&user("carol"), Role::Admin, None, None)
        .await
        .unwrap();
    h.accounts.delete_user(&user("carol")).await.unwrap();
    let err = h
        .accounts
        .authenticate_token(secret.expose())
        .await
        .unwrap_err();
    assert!(matches!(rejection(err), Rejection::UnknownUser(_)));
    h.user("carol", Role::Admin, &[]).await;
    let err = h
        .accounts
        .authenticate_token(secret.expose())
        .await
        .unwrap_err();
    assert!(matches!(rejection(err), Rejection::UnknownUser(_)));
}

#[tokio::test]
async fn a_join_token_is_not_a_user_token_and_the_reverse() {
    let h = Harness::new();
    h.user("admin", Role::Admin, &[]).await;
    let (_, join) = h
        .accounts
        .issue_join_token(&user("admin"), false, None)
        .await
        .unwrap();
    let err = h
        .accounts
        .authenticate_token(join.expose())
        .await
        .unwrap_err();
    assert!(matches!(
        rejection(err),
        Rejection::WrongKind { kind: "join", .. }
    ));
    let (_, bearer) = h
        .accounts
        .issue_user_token(&user("admin"), Role::Admin, None, None)
        .await
        .unwrap();
    let node = NodeName::try_from("worker-1").unwrap();
    let err = h
        .accounts
        .consume_join_token(bearer.expose(), &node)
        .await
        .unwrap_err();
    assert!(matches!(
        rejection(err),
        Rejection::WrongKind { kind: "user", .. }
    ));
}

#[tokio::test]
async fn a_join_token_joins_once_and_its_second_use_changes_nothing() {
    let h = Harness::new();
    h.user("admin", Role::Admin, &[]).await;
    let (token, join) = h
        .accounts
        .issue_join_token(&user("admin"), false, Some(days(1)))
        .await
        .unwrap();
    let a = NodeName::try_from("node-a").unwrap();
    let b = NodeName::try_from("node-b").unwrap();
    let used = h
        .accounts
        .consume_join_token(join.expose(), &a)
        .await
        .unwrap();
    match used.kind {
        TokenKind::Join {
            used: Some(ref u), ..
        } => assert_eq!(u.node, a),
        ref other => panic!("{other:?}"),
    }
    let before = h.snapshot().await;
    let err = h
        .accounts
        .consume_join_token(join.expose(), &b)
        .await
        .unwrap_err();
    assert_eq!(rejection(err), Rejection::AlreadyUsed);
    assert!(changed_keys(&before, &h.snapshot().await).is_empty());
    assert_eq!(
        h.accounts.get_token(&token.id).await.unwrap().kind,
        used.kind,
        "still marked used by node-a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_uses_of_a_join_token_exactly_one_wins() {
    for round in 0..5 {
        let h = Harness::new();
        h.user("admin", Role::Admin, &[]).await;
        let (_, join) = h
            .accounts
            .issue_join_token(&user("admin"), false, None)
            .await
            .unwrap();
        let accounts: Arc<AuthStore> = Arc::new(h.accounts.clone());
        let start = Arc::new(tokio::sync::Barrier::new(8));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let accounts = accounts.clone();
            let start = start.clone();
            let text = join.expose().to_owned();
            tasks.push(tokio::spawn(async move {
                let node = NodeName::try_from(format!("node-{i}")).unwrap();
                start.wait().await;
                accounts.consume_join_token(&text, &node).await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(
                    rejection(e),
                    Rejection::AlreadyUsed,
                    "round {round}: a loser learns it was used"
                ),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

#[tokio::test]
async fn a_reusable_join_token_joins_many_until_revoked_or_expired() {
    let h = Harness::new();
    h.user("admin", Role::Admin, &[]).await;
    let (token, join) = h
        .accounts
        .issue_join_token(&user("admin"), true, Some(days(1)))
        .await
        .unwrap();
    for i in 0..3 {
        let node = NodeName::try_from(format!("node-{i}")).unwrap();
        h.accounts
            .consume_join_token(join.expose(), &node)
            .await
            .unwrap();
    }
    let node = NodeName::try_from("late").unwrap();
    h.clock.advance(days(2));
    let err = h
        .accounts
        .consume_join_token(join.expose(), &node)
        .await
        .unwrap_err();
    assert_eq!(rejection(err), Rejection::Expired);
    h.accounts.revoke_token(&token.id).await.unwrap();
    let err = h
        .accounts
        .consume_join_token(join.expose(), &node)
        .await
        .unwrap_err();
    assert_eq!(rejection(err), Rejection::Revoked);
}

#[tokio::test]
async fn tokens_list_and_delete_without_secrets() {
    let h = Harness::new();
    h.user("admin", Role::Admin, &[]).await;
    let (a, _) = h
        .accounts
        .issue_user_token(&user("admin"), Role::Viewer, None, None)
        .await
        .unwrap();
    let (b, _) = h
        .accounts
        .issue_join_token(&user("admin"), false, None)
        .await
        .unwrap();
    let mut ids: Vec<_> = h
        .accounts
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    h.accounts.delete_token(&a.id).await.unwrap();
    assert_eq!(
        h.accounts.get_token(&a.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(h
        .store
        .get(&format!("/zixiao/auth/tokens/{}", b.id))
        .await
        .unwrap()
        .is_some());
}
