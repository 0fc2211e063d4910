//! A secured cluster as a user meets it, over real TLS: `zixiao server
//! init` makes the CA and the first admin in etcd, `zixiao server --pki`
//! serves TLS, and the `zixiao` CLI and `zixiao_client` call it. Every
//! attack of the issue is refused with its kind and reaches nothing: no
//! token, a malformed, expired, revoked or other cluster's token, plain
//! text to the TLS port, a client certificate of another CA, a viewer
//! creating, an operator acting in another project or draining a node.
//! Afterwards the store differs only by audit records, and `zixiao audit
//! list` shows the refusals. A quota holds against concurrent creates
//! through two server replicas on one etcd, with real containers.
//!
//! Needs the etcd of `scripts/services/etcd.sh`; skips with a reason
//! elsewhere (and fails in CI, where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(feature = "etcd")]

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use zixiao_client::ConnectOptions;
use zixiao_core::ErrorKind;
use zixiao_testing::wait::wait_until;

use support::{
    agent, cluster, containerd, import_busybox, init, serve, start_agent, wait_ready, zixiao,
    Cluster, Running,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Its stdout as JSON, after checking that it exited 0.
fn ok(out: Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

/// The kind and message of a command that failed with exit code 1.
fn refused(out: Output) -> (String, String) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let error: Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stderr)));
    (
        error["error"]["kind"].as_str().expect("kind").to_owned(),
        error["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned(),
    )
}

/// A client configuration with one context: the cluster's CA and `token`
/// (written as given, even when it is not a token).
fn config_with_token(cluster: &Cluster, name: &str, token: Option<&str>) -> PathBuf {
    let path = cluster.dir.join(format!("{name}.yaml"));
    let token = match token {
        Some(token) => format!("    token: '{token}'\n"),
        None => String::new(),
    };
    let ca = cluster.pki.join("ca.pem");
    let text = format!(
        "current_context: {name}\ncontexts:\n  - name: {name}\n    endpoint: {}\n    ca_file: {}\n{token}",
        cluster.endpoint,
        ca.display()
    );
    std::fs::write(&path, text).expect("write");
    path
}

fn create_in(project: &str, name: &str) -> Vec<String> {
    [
        "instance",
        "create",
        "--no-wait",
        "--name",
        name,
        "--type",
        "container",
        "--image",
        "busybox",
        "--project",
        project,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_refused_with_its_kind_recorded_and_changes_nothing() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let admin = cluster.admin();

    // The admin sets up: two projects, a viewer and an operator of `web`,
    // each with a client configuration of its own.
    ok(cluster.run(
        &admin,
        &["project", "create", "web", "--quota", "cpus=4,instances=10"],
    ));
    ok(cluster.run(&admin, &["project", "create", "db"]));
    let vera = cluster.dir.join("vera.yaml");
    let otto = cluster.dir.join("otto.yaml");
    for (name, role, out) in [("vera", "viewer", &vera), ("otto", "operator", &otto)] {
        let made = ok(cluster.run(
            &admin,
            &[
                "user",
                "create",
                name,
                "--role",
                role,
                "--project",
                "web",
                "--out",
                out.to_str().expect("utf-8"),
            ],
        ));
        assert_eq!(made["user"]["role"], role, "{made}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out).expect("out").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The written configuration works by itself, through its own context.
    let who = zixiao(&cluster.dir)
        .arg("--config")
        .arg(&otto)
        .args(["-o", "json", "node", "list"])
        .output()
        .expect("run");
    ok(who);

    // Tokens that must not work: expired, revoked, of another cluster.
    let short = ok(cluster.run(&admin, &["token", "create", "--ttl", "1s"]));
    let expired = short["secret"].as_str().expect("secret").to_owned();
    let revoked = ok(cluster.run(&admin, &["token", "create"]));
    let revoked_id = revoked["token"]["id"].as_str().expect("id").to_owned();
    let revoked = revoked["secret"].as_str().expect("secret").to_owned();
    ok(cluster.run(&admin, &["token", "revoke", &revoked_id]));
    let other_pki = cluster.dir.join("other-pki");
    let other_prefix = format!("{}-other", cluster.prefix);
    init(&cluster.dir, &cluster.etcd, &other_prefix, &other_pki);
    let other_admin = std::fs::read_to_string(other_pki.join("admin.yaml")).expect("read");
    let foreign = other_admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token")
        .trim_matches('\'')
        .to_owned();

    let before = cluster.snapshot().await;

    // Unauthenticated: no token, a malformed one, expired, revoked, foreign.
    let expired_config = config_with_token(&cluster, "expired", Some(&expired));
    wait_until("the short token to expire", Duration::from_secs(10), || {
        let out = cluster.run(&expired_config, &["node", "list"]);
        async move { (out.status.code() == Some(1)).then_some(()) }
    })
    .await;
    let cases = [
        ("anonymous", None, "no credentials"),
        ("malformed", Some("zx_not_a_token"), "malformed"),
        ("expired", Some(expired.as_str()), "expired"),
        ("revoked", Some(revoked.as_str()), "revoked"),
        ("foreign", Some(foreign.as_str()), "not valid"),
    ];
    for (name, token, says) in cases {
        let config = config_with_token(&cluster, name, token);
        let (kind, message) = refused(cluster.run(&config, &args(&create_in("web", name))));
        assert_eq!(kind, "unauthenticated", "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
    }

    // Plain text to the TLS port: no answer a client could take for one.
    let plain = cluster.endpoint.replace("https://", "http://");
    let out = zixiao(&cluster.dir)
        .args(["--endpoint", &plain, "-o", "json", "node", "list"])
        .output()
        .expect("run");
    let (kind, message) = refused(out);
    assert_eq!(kind, "unavailable", "{message}");

    // A client certificate of another CA: the handshake lets it show it,
    // the call refuses it (and records the refusal).
    let other = zixiao_auth::Pki::load(&other_pki).expect("other CA");
    let stranger = other
        .issue_user(
            &zixiao_auth::UserName::try_from("admin").expect("name"),
            Duration::from_secs(3600),
        )
        .expect("certificate");
    let ca = std::fs::read_to_string(cluster.pki.join("ca.pem")).expect("ca");
    let client = zixiao_client::connect(ConnectOptions {
        endpoint: cluster.endpoint.clone(),
        ca_pem: Some(ca.clone()),
        token: None,
        client_identity: Some((
            stranger.cert_pem().to_owned(),
            stranger.key_pem().to_owned(),
        )),
    })
    .await
    .expect("client");
    let err = client.list_nodes().await.expect_err("a stranger");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{}", err.chain());
    assert!(err.chain().contains("not trusted"), "{}", err.chain());

    // Permission denied, naming the permission: a viewer creating, an
    // operator creating in another project, draining a node, adding users.
    let denials = [
        (
            &vera,
            create_in("web", "v1"),
            "instance.create in project web",
        ),
        (
            &otto,
            create_in("db", "o1"),
            "instance.create in project db",
        ),
        (
            &otto,
            vec!["node".into(), "drain".into(), "worker-1".into()],
            "node.drain (admin only)",
        ),
        (
            &otto,
            vec!["user".into(), "list".into()],
            "user.list (admin only)",
        ),
    ];
    for (config, command, permission) in &denials {
        let (kind, message) = refused(cluster.run(config, &args(command)));
        assert_eq!(kind, "permission_denied", "{message}");
        assert!(message.contains(permission), "{permission}: {message}");
    }
    // The same refusal reaches a Rust client as its kind.
    let token = std::fs::read_to_string(&vera).expect("vera");
    let token = token
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token")
        .trim_matches('\'')
        .to_owned();
    let client = zixiao_client::connect(ConnectOptions {
        endpoint: cluster.endpoint.clone(),
        ca_pem: Some(ca),
        token: Some(token),
        client_identity: None,
    })
    .await
    .expect("client");
    let err = client
        .drain_node("worker-1")
        .await
        .expect_err("a viewer draining");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{}", err.chain());

    // Nothing changed but the audit log...
    let after = cluster.snapshot().await;
    assert_eq!(before, after, "only audit records were written");

    // ...which shows every refusal.
    let records = ok(cluster.run(&admin, &["audit", "list"]));
    let records = records.as_array().expect("records");
    let outcome = |r: &Value| {
        r["outcome"]["result"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let unauthenticated = records
        .iter()
        .filter(|r| outcome(r) == "unauthenticated")
        .count();
    assert!(unauthenticated >= 6, "{records:#?}");
    for (_, _, permission) in &denials {
        assert!(
            records
                .iter()
                .any(|r| outcome(r) == "denied" && r["outcome"]["permission"] == *permission),
            "no denial of {permission}: {records:#?}"
        );
    }
    let by_vera = ok(cluster.run(
        &admin,
        &["audit", "list", "--user", "vera", "--since", "1h"],
    ));
    assert!(
        by_vera
            .as_array()
            .expect("records")
            .iter()
            .all(|r| r["user"] == "vera"),
        "{by_vera}"
    );
    // No record holds a token.
    let all = serde_json::to_string(records).expect("json");
    for secret in [&expired, &revoked, &foreign] {
        let secret_part = secret.rsplit('_').next().expect("secret");
        assert!(!all.contains(secret_part), "a token in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_tokens_and_projects_and_contexts_choose_the_server() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let admin = cluster.admin();
    let made = ok(cluster.run(
        &admin,
        &["project", "create", "web", "--quota", "cpus=8,memory=4096"],
    ));
    assert_eq!(made["quota"]["cpus"], 8);
    let (kind, message) = refused(cluster.run(&admin, &["project", "create", "web"]));
    assert_eq!(kind, "already_exists", "{message}");
    let out = cluster.run(&admin, &["project", "create", "x", "--quota", "cpus=lots"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--quota.cpus"),
        "{}",
        text(&out.stderr)
    );
    let updated = ok(cluster.run(
        &admin,
        &["project", "update", "web", "--quota", "instances=3"],
    ));
    assert_eq!(updated["quota"]["instances"], 3);
    assert_eq!(updated["quota"]["cpus"], Value::Null);
    let listed = ok(cluster.run(&admin, &["project", "list"]));
    let names: Vec<&str> = listed
        .as_array()
        .expect("projects")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["default", "web"]);

    ok(cluster.run(
        &admin,
        &[
            "user",
            "create",
            "ann",
            "--role",
            "operator",
            "--project",
            "web",
        ],
    ));
    let (kind, message) = refused(cluster.run(&admin, &["project", "delete", "web"]));
    assert_eq!(kind, "failed_precondition", "{message}");
    assert!(message.contains("ann"), "{message}");
    let (kind, _) = refused(cluster.run(&admin, &["project", "delete", "default"]));
    assert_eq!(kind, "failed_precondition");

    let issued = ok(cluster.run(
        &admin,
        &[
            "token", "create", "--user", "ann", "--role", "viewer", "--ttl", "1h",
        ],
    ));
    assert_eq!(issued["token"]["owner"], "ann");
    assert_eq!(issued["token"]["role"], "viewer");
    let out = cluster.run(
        &admin,
        &["token", "create", "--user", "ann", "--role", "admin"],
    );
    assert_eq!(out.status.code(), Some(2), "more than its owner has");
    let tokens = ok(cluster.run(&admin, &["token", "list", "--user", "ann"]));
    assert_eq!(tokens.as_array().expect("tokens").len(), 2, "{tokens}");
    assert!(
        !tokens.to_string().contains("zx_"),
        "no secret in a listing"
    );

    ok(cluster.run(&admin, &["user", "delete", "ann"]));
    let users = ok(cluster.run(&admin, &["user", "list"]));
    let users: Vec<&str> = users
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(users, ["admin"]);
    ok(cluster.run(&admin, &["project", "delete", "web"]));

    // Contexts: added with the CA and a token file, chosen, listed.
    let config = cluster.dir.join("contexts.yaml");
    let token_file = cluster.dir.join("token");
    let token = ok(cluster.run(&admin, &["token", "create"]));
    std::fs::write(&token_file, token["secret"].as_str().expect("secret")).expect("write");
    let context = |args: &[&str]| {
        zixiao(&cluster.dir)
            .arg("--config")
            .arg(&config)
            .args(["-o", "json", "context"])
            .args(args)
            .output()
            .expect("run")
    };
    ok(context(&[
        "add",
        "lab",
        "--endpoint",
        &cluster.endpoint,
        "--ca-cert",
        cluster.pki.join("ca.pem").to_str().expect("utf-8"),
        "--token-file",
        token_file.to_str().expect("utf-8"),
    ]));
    ok(context(&[
        "add",
        "elsewhere",
        "--endpoint",
        "https://127.0.0.1:1",
    ]));
    let listed = ok(context(&["list"]));
    assert_eq!(listed[0]["name"], "lab");
    assert_eq!(listed[0]["current"], true);
    let (kind, _) = refused(context(&["use", "nope"]));
    assert_eq!(kind, "not_found");
    let out = context(&["add", "bad", "--endpoint", "http://10.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2), "plain http off loopback");
    // ZIXIAO_CONFIG finds it; the current context is the server.
    let nodes = zixiao(&cluster.dir)
        .env("ZIXIAO_CONFIG", &config)
        .args(["-o", "json", "user", "list"])
        .output()
        .expect("run");
    ok(nodes);
    ok(context(&["use", "elsewhere"]));
    let out = zixiao(&cluster.dir)
        .env("ZIXIAO_CONFIG", &config)
        .args(["-o", "json", "user", "list"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "https without the CA");
    assert!(
        text(&out.stderr).contains("ca_cert"),
        "{}",
        text(&out.stderr)
    );
}

/// [`start_agent`] for an agent started with `--metrics-listen`: also
/// where it serves its metrics, from the line announcing them.
fn start_agent_with_metrics(mut command: Command) -> (Running, String) {
    let mut child = command.spawn().expect("run zixiao agent");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut line = || lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let first = line();
    assert!(
        first.contains(" listening on "),
        "the agent did not start: {first:?}"
    );
    let announced = line();
    let metrics = announced
        .trim()
        .rsplit_once(" metrics on http://")
        .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("the agent announces its metrics: {announced:?}"))
        .to_owned();
    (Running(child), metrics)
}

/// An agent joins a TLS cluster with a single-use join token, then speaks
/// mutual TLS with its node certificate: it registers, the server runs a
/// real container on it, and a restart reuses the certificate without a
/// token. The token cannot be used twice, an agent without certificate or
/// token cannot start, and a node certificate acts only for its own node:
/// registering, heartbeating or leaving as another node is refused as
/// `PermissionDenied`, recorded, and changes nothing in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_with_a_token_runs_a_container_over_mtls_and_acts_only_as_its_node() {
    use zixiao_api::membership::MembershipClient;
    use zixiao_auth::{Credentials, ExpectedPeer, NodeKey, NodeName, Trust};

    let Some((socket, busybox)) = containerd() else {
        return;
    };
    let Some(cluster) = cluster().await else {
        return;
    };
    let admin = cluster.admin();
    let issued = ok(cluster.run(
        &admin,
        &["token", "create", "--role", "agent", "--ttl", "1h"],
    ));
    assert_eq!(issued["token"]["purpose"], "join", "{issued}");
    let token = issued["secret"].as_str().expect("secret").to_owned();

    // Without a node certificate and without a token there is nothing to
    // show the server: the agent says what it needs.
    let out = agent(&cluster, &socket, "worker-x", None)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("join token"),
        "{}",
        text(&out.stderr)
    );

    // The first start joins: key and CSR made here, certificate signed by
    // the cluster CA, both kept 0600.
    let started = std::time::Instant::now();
    let mut joining = agent(&cluster, &socket, "worker-1", Some(&token));
    joining.args(["--metrics-listen", "127.0.0.1:0"]);
    let (mut worker, metrics) = start_agent_with_metrics(joining);
    let listening = started.elapsed();
    wait_ready(&cluster, "worker-1").await;
    eprintln!(
        "join: agent process started, joined and listening after {listening:?}; \
         node ready after {:?}",
        started.elapsed()
    );
    use std::os::unix::fs::PermissionsExt;
    let state = cluster.dir.join("agent-worker-1");
    for file in ["node.pem", "node-key.pem"] {
        let mode = std::fs::metadata(state.join(file))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is {mode:o}");
    }

    // The token was single-use.
    let out = agent(&cluster, &socket, "worker-2", Some(&token))
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unauthenticated") && stderr.contains("already used"),
        "{stderr}"
    );

    // A real container, placed by the server on the joined node, over
    // mutual TLS both ways.
    import_busybox(&cluster, &socket, &busybox);
    let created = ok(cluster.run(
        &admin,
        &[
            "instance",
            "create",
            "--name",
            "joined",
            "--type",
            "container",
            "--image",
            "busybox",
            "--memory",
            "32",
            "--",
            "sh",
            "-c",
            "echo hi; exec sleep 300",
        ],
    ));
    assert_eq!(created["status"], "running", "{created}");
    assert_eq!(created["node"], "worker-1", "{created}");
    // The node's metrics show it running, with what it uses.
    let scraped = zixiao_testing::scrape::scrape(&metrics);
    let running = r#"zixiao_instances{type="container",status="running"}"#;
    assert_eq!(scraped.get(running), Some(&1.0), "{scraped:?}");
    let memory = r#"zixiao_instance_memory_bytes{instance="joined",type="container"}"#;
    assert!(scraped.get(memory).is_some_and(|m| *m > 0.0), "{scraped:?}");
    let cpu = r#"zixiao_instance_cpu_seconds_total{instance="joined",type="container"}"#;
    assert!(scraped.get(cpu).is_some_and(|c| *c >= 0.0), "{scraped:?}");
    // The cgroup counts its disk I/O (zero or more: a counter, there).
    let read = r#"zixiao_instance_disk_read_bytes_total{instance="joined",type="container"}"#;
    assert!(scraped.get(read).is_some_and(|b| *b >= 0.0), "{scraped:?}");
    // Nothing fenced on this healthy node.
    let fenced = "zixiao_fenced_instances_total";
    assert_eq!(scraped.get(fenced), Some(&0.0), "{scraped:?}");
    let id = created["id"].as_str().expect("id").to_owned();
    let tasks = zixiao_testing::runtimes::ContainerdNamespace::new(&socket, "zixiao")
        .only([id.clone()])
        .tasks()
        .expect("tasks");
    assert_eq!(tasks.len(), 1, "{tasks:?}");

    // A clone through the server, made by the agent on the source's node:
    // a new container of the same spec.
    let cloned = ok(cluster.run(
        &admin,
        &["instance", "clone", "joined", "--name", "joined-copy"],
    ));
    assert_eq!(cloned["status"], "running", "{cloned}");
    assert_eq!(cloned["node"], "worker-1", "{cloned}");
    assert_eq!(cloned["clone_of"]["source"], id.as_str(), "{cloned}");
    let copy_id = cloned["id"].as_str().expect("id").to_owned();
    assert_ne!(copy_id, id);
    let tasks = zixiao_testing::runtimes::ContainerdNamespace::new(&socket, "zixiao")
        .only([copy_id])
        .tasks()
        .expect("tasks");
    assert_eq!(tasks.len(), 1, "the clone's own task: {tasks:?}");
    ok(cluster.run(&admin, &["instance", "delete", "joined-copy"]));

    // Another node joins (a reusable token serves twice) and tries to act
    // as worker-1 with its own certificate.
    let reusable = ok(cluster.run(
        &admin,
        &["token", "create", "--role", "agent", "--reusable"],
    ));
    let reusable = reusable["secret"].as_str().expect("secret").to_owned();
    let ca_pem = std::fs::read_to_string(cluster.pki.join("ca.pem")).expect("ca");
    let trust = Trust::from_pem(&ca_pem).expect("trust");
    let anonymous = trust
        .client_config(None, ExpectedPeer::Server)
        .expect("config");
    let joiner =
        MembershipClient::new_tls(&cluster.endpoint, Duration::from_secs(10), Some(anonymous))
            .expect("client");
    let mut rogue_cert = None;
    let rogue_key = NodeKey::generate(&NodeName::try_from("rogue").expect("name")).expect("key");
    for name in ["rogue", "rogue-twin"] {
        let (cert, ca) = joiner
            .join_cluster(
                &reusable,
                name,
                rogue_key.csr_pem(),
                vec!["127.0.0.1".into()],
            )
            .await
            .expect("a reusable token serves again");
        assert_eq!(ca, ca_pem);
        rogue_cert.get_or_insert(cert);
    }
    let credentials =
        Credentials::from_pem(&rogue_cert.expect("cert"), rogue_key.key_pem()).expect("creds");
    let rogue = MembershipClient::new_tls(
        &cluster.endpoint,
        Duration::from_secs(10),
        Some(
            trust
                .client_config(Some(&credentials), ExpectedPeer::Server)
                .expect("config"),
        ),
    )
    .expect("client");
    // What a rogue would claim: worker-1's name with made-up capacity.
    let registration = zixiao_core::NodeRegistration {
        id: "worker-1".into(),
        hostname: "rogue".into(),
        address: "127.0.0.1:1".into(),
        region: "default".into(),
        zone: "default".into(),
        role: Default::default(),
        capacity: zixiao_core::Resources {
            cpus: zixiao_core::Cpus::cores(4096),
            memory_mib: 1 << 30,
            disk_gib: 1 << 20,
            instances: 10_000,
        },
        allocation_ratios: None,
        labels: Default::default(),
        traits: Default::default(),
        runtimes: Default::default(),
        missing_runtimes: Default::default(),
        drivers: Default::default(),
        carbon_intensity: None,
        onboarding: None,
    };
    let before = cluster.snapshot().await;
    let refused = rogue
        .register_node(&registration, "rogue-session")
        .await
        .expect_err("registering as another node");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
    let refused = rogue
        .heartbeat("worker-1", "rogue-session", 1)
        .await
        .expect_err("heartbeating as another node");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
    let refused = rogue
        .leave_cluster("worker-1", "rogue-session")
        .await
        .expect_err("leaving as another node");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
    // Its own name, not registered: nothing to renew.
    let refused = rogue
        .heartbeat("rogue", "rogue-session", 1)
        .await
        .expect_err("a lease it does not hold");
    assert_eq!(refused.kind(), ErrorKind::NotFound, "{refused}");
    assert_eq!(cluster.snapshot().await, before, "the store changed");
    let audit = ok(cluster.run(&admin, &["audit", "list"]));
    let denied: Vec<&Value> = audit
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["identity"] == "node rogue" && r["outcome"]["result"] == "denied")
        .collect();
    assert_eq!(denied.len(), 3, "{audit}");
    let joins = audit
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["operation"] == "node.join")
        .count();
    assert!(
        joins >= 4,
        "the joins and the refused reuse are recorded: {audit}"
    );

    // As itself it may register and heartbeat. A heartbeat renews only its
    // own node's liveness under the session that holds it (the lease id it
    // carries names nothing another node could renew), so a session that
    // does not hold the node renews nothing.
    let (_, own) = rogue
        .register_node(
            &zixiao_core::NodeRegistration {
                id: "rogue".into(),
                ..registration.clone()
            },
            "rogue-session",
        )
        .await
        .expect("a node registers itself");
    rogue
        .heartbeat("rogue", "rogue-session", own.id)
        .await
        .expect("its own liveness");
    let refused = rogue
        .heartbeat("rogue", "another-session", own.id)
        .await
        .expect_err("a session that does not hold the node");
    assert_eq!(refused.kind(), ErrorKind::NotFound, "{refused}");

    // The agent takes calls only from servers: a node certificate of this
    // cluster is refused, and no certificate at all fails the handshake.
    let worker_node = ok(cluster.run(&admin, &["node", "get", "worker-1"]));
    let worker_node: zixiao_core::Node = serde_json::from_value(worker_node).expect("a node");
    let as_node = trust
        .client_config(
            Some(&credentials),
            ExpectedPeer::Node(NodeName::try_from("worker-1").expect("name")),
        )
        .expect("config");
    let refused = zixiao_api::remote::RemoteAgent::new_tls(&worker_node, Some(as_node))
        .expect("client")
        .list_local_instances()
        .await
        .expect_err("a node calling an agent");
    assert!(
        refused.to_string().contains("permission denied")
            || refused.to_string().contains("only a zixiao server"),
        "{refused}"
    );
    let anonymous = trust
        .client_config(
            None,
            ExpectedPeer::Node(NodeName::try_from("worker-1").expect("name")),
        )
        .expect("config");
    zixiao_api::remote::RemoteAgent::new_tls(&worker_node, Some(anonymous))
        .expect("client")
        .list_local_instances()
        .await
        .expect_err("no client certificate");

    // A restart reuses the node certificate: no token needed.
    let first_cert = std::fs::read_to_string(state.join("node.pem")).expect("cert");
    drop(worker);
    worker = start_agent(agent(&cluster, &socket, "worker-1", None));
    wait_ready(&cluster, "worker-1").await;
    let cert = std::fs::read_to_string(state.join("node.pem")).expect("cert");
    assert_eq!(cert, first_cert, "renewed too early");

    // A start within --renew-cert-before of the expiry (a year away here,
    // so every start) renews with the current certificate, no token.
    drop(worker);
    let mut renewing = agent(&cluster, &socket, "worker-1", None);
    renewing.args(["--renew-cert-before", "400d"]);
    worker = start_agent(renewing);
    wait_ready(&cluster, "worker-1").await;
    let cert = std::fs::read_to_string(state.join("node.pem")).expect("cert");
    assert_ne!(cert, first_cert, "not renewed");
    // And a node renews only its own certificate.
    let other_key = NodeKey::generate(&NodeName::try_from("worker-1").expect("name")).expect("key");
    let refused = rogue
        .renew_node_certificate("worker-1", other_key.csr_pem(), vec![])
        .await
        .expect_err("renewing another node's certificate");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
    ok(cluster.run(&admin, &["instance", "delete", "joined"]));
    drop(worker);
}

/// Runs `CREATES` commands `args(i)` at once as `config`, alternately
/// through the cluster's first server and `second`, and returns what the
/// ones that succeeded printed and the kind and message of the others.
fn burst(
    cluster: &Cluster,
    second: &str,
    config: &Path,
    args: impl Fn(usize) -> Vec<String>,
) -> (Vec<Value>, Vec<(String, String)>) {
    let children: Vec<Child> = (0..CREATES)
        .map(|i| {
            let endpoint = if i % 2 == 0 {
                &cluster.endpoint
            } else {
                second
            };
            zixiao(&cluster.dir)
                .arg("--config")
                .arg(config)
                .args(["--endpoint", endpoint, "-o", "json"])
                .args(args(i))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run zixiao")
        })
        .collect();
    let mut done = Vec::new();
    let mut refusals = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        if out.status.success() {
            done.push(ok(out));
        } else {
            refusals.push(refused(out));
        }
    }
    (done, refusals)
}

/// How many creates each burst of the quota attack fires at once.
const CREATES: usize = 12;

/// The attack of the issue on quotas: an operator fires many creates at
/// once into a project with a small quota, through two server replicas on
/// the same etcd. Exactly as many are stored as the quota allows, the
/// rest are refused as `resource_exhausted` naming the project, the
/// admitted ones run as real containers on a joined node, `project get`
/// on either replica shows the usage at the limit, and deleting one makes
/// room for exactly one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_through_two_servers_never_exceed_a_quota() {
    let Some((socket, busybox)) = containerd() else {
        return;
    };
    let Some(cluster) = cluster().await else {
        return;
    };
    let (_second, second) = serve(
        &cluster.dir,
        &cluster.etcd,
        &cluster.prefix,
        &cluster.pki,
        "secure-2",
    );
    let admin = cluster.admin();
    let token = ok(cluster.run(&admin, &["token", "create", "--role", "agent"]));
    let token = token["secret"].as_str().expect("secret").to_owned();
    let _worker = start_agent(agent(&cluster, &socket, "quota-worker", Some(&token)));
    wait_ready(&cluster, "quota-worker").await;
    import_busybox(&cluster, &socket, &busybox);

    const QUOTA: usize = 2;
    ok(cluster.run(
        &admin,
        &[
            "project",
            "create",
            "web",
            "--quota",
            &format!("instances={QUOTA}"),
        ],
    ));
    let otto = cluster.dir.join("otto.yaml");
    let mut create_user = zixiao(&cluster.dir);
    create_user
        .arg("--config")
        .arg(&admin)
        .args(["--endpoint", &cluster.endpoint, "-o", "json"])
        .args([
            "user",
            "create",
            "otto",
            "--role",
            "operator",
            "--project",
            "web",
            "--out",
        ])
        .arg(&otto);
    ok(create_user.output().expect("run zixiao"));

    // Every create at once, half through each replica.
    let (admitted, refusals) = burst(&cluster, &second, &otto, |i| {
        let mut args = create_in("web", &format!("burst-{i:02}"));
        args.extend(["--memory", "32", "--", "sleep", "300"].map(String::from));
        args
    });
    let mut admitted: Vec<String> = admitted
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(
        admitted.len(),
        QUOTA,
        "admitted {admitted:?}, refused {refusals:?}"
    );
    assert_eq!(refusals.len(), CREATES - QUOTA);
    for (kind, message) in &refusals {
        assert_eq!(kind, "resource_exhausted", "{message}");
        assert!(
            message.contains(&format!("project `web` allows {QUOTA} instances")),
            "{message}"
        );
    }

    // What was admitted is what exists, runs, and is counted.
    let listed = ok(cluster.run(&otto, &["instance", "list"]));
    let mut names: Vec<String> = listed
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    admitted.sort();
    assert_eq!(names, admitted);
    wait_until(
        "the admitted instances to run",
        Duration::from_secs(60),
        || async {
            let listed = ok(cluster.run(&otto, &["instance", "list"]));
            listed
                .as_array()
                .expect("instances")
                .iter()
                .all(|i| i["status"] == "running")
                .then_some(())
        },
    )
    .await;
    let ids: Vec<String> = ok(cluster.run(&otto, &["instance", "list"]))
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect();
    let tasks = zixiao_testing::runtimes::ContainerdNamespace::new(&socket, "zixiao")
        .only(ids)
        .tasks()
        .expect("tasks");
    assert_eq!(tasks.len(), QUOTA, "{tasks:?}");
    for endpoint in [&cluster.endpoint, &second] {
        let web = ok(zixiao(&cluster.dir)
            .arg("--config")
            .arg(&admin)
            .args([
                "--endpoint",
                endpoint,
                "-o",
                "json",
                "project",
                "get",
                "web",
            ])
            .output()
            .expect("run zixiao"));
        assert_eq!(web["usage"]["instances"], QUOTA, "{web}");
    }

    // Creates that no node can take are stored pending and write no
    // node's allocation: only the quota's own serial orders them.
    ok(cluster.run(
        &admin,
        &[
            "project",
            "create",
            "db",
            "--quota",
            &format!("instances={QUOTA}"),
        ],
    ));
    let (stored, refusals) = burst(&cluster, &second, &admin, |i| {
        let mut args = create_in("db", &format!("pending-{i:02}"));
        args.extend(["--trait", "example.com/nowhere"].map(String::from));
        args
    });
    for (kind, message) in &refusals {
        assert_eq!(kind, "resource_exhausted", "{message}");
    }
    let stored: Vec<String> = stored
        .iter()
        .map(|i| {
            assert_eq!(i["status"], "pending", "{i}");
            i["name"].as_str().expect("name").to_owned()
        })
        .collect();
    assert_eq!(stored.len(), QUOTA, "{stored:?}");
    for name in &stored {
        ok(cluster.run(&admin, &["instance", "delete", name]));
    }

    // A delete through one replica makes room for one create through the other.
    ok(cluster.run(&otto, &["instance", "delete", &admitted[0]]));
    let again = |name: &str| {
        zixiao(&cluster.dir)
            .arg("--config")
            .arg(&otto)
            .args(["--endpoint", &second, "-o", "json"])
            .args(create_in("web", name).iter().map(String::as_str))
            .output()
            .expect("run zixiao")
    };
    wait_until(
        "the delete to give room back",
        Duration::from_secs(30),
        || async { again("after-delete").status.success().then_some(()) },
    )
    .await;
    let (kind, message) = refused(again("one-too-many"));
    assert_eq!(kind, "resource_exhausted", "{message}");
    for name in [admitted[1].as_str(), "after-delete"] {
        ok(cluster.run(&otto, &["instance", "delete", name]));
    }
}
