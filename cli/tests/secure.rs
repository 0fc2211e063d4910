//! A secured cluster as a user meets it, over real TLS: `zixiao server
//! init` makes the CA and the first admin in etcd, `zixiao server --pki`
//! serves TLS, and the `zixiao` CLI and `zixiao_client` call it. Every
//! attack of the issue is refused with its kind and reaches nothing: no
//! token, a malformed, expired, revoked or other cluster's token, plain
//! text to the TLS port, a client certificate of another CA, a viewer
//! creating, an operator acting in another project or draining a node.
//! Afterwards the store differs only by audit records, and `zixiao audit
//! list` shows the refusals.
//!
//! Needs the etcd of `scripts/services/etcd.sh`; skips with a reason
//! elsewhere (and fails in CI, where ZIXIAO_REQUIRE_RUNTIMES=1).
#![cfg(feature = "etcd")]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use zixiao_client::ConnectOptions;
use zixiao_core::{ErrorKind, Store};
use zixiao_testing::wait::{runtime_endpoint, wait_until};

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn zixiao(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ENDPOINT")
        .env_remove("ZIXIAO_CONFIG")
        .env_remove("ZIXIAO_CONTEXT")
        .env_remove("ZIXIAO_ETCD_ENDPOINTS")
        // No user configuration of this machine's: only what a test names.
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("HOME", dir);
    command
}

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

/// A cluster: a PKI directory, its first admin's configuration, and a
/// server on etcd under a key prefix of its own.
struct Cluster {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    pki: PathBuf,
    endpoint: String,
    prefix: String,
    etcd: String,
    _server: Running,
}

impl Cluster {
    /// `zixiao --config CONFIG --endpoint <the server> -o json ARGS...`.
    fn run(&self, config: &Path, args: &[&str]) -> Output {
        zixiao(&self.dir)
            .arg("--config")
            .arg(config)
            .args(["--endpoint", &self.endpoint, "-o", "json"])
            .args(args)
            .output()
            .expect("run zixiao")
    }

    fn admin(&self) -> PathBuf {
        self.pki.join("admin.yaml")
    }

    async fn store(&self) -> Box<dyn Store> {
        let options = zixiao_store::EtcdStoreOptions::new(self.etcd.split(','))
            .key_prefix(self.prefix.clone());
        Box::new(
            zixiao_store::EtcdStore::connect(options)
                .await
                .expect("etcd"),
        )
    }

    /// Every key of the cluster but the audit log's and the leader's
    /// (renewed as time passes), with its revision.
    async fn snapshot(&self) -> BTreeMap<String, u64> {
        let listing = self.store().await.list("/").await.expect("list");
        listing
            .items
            .into_iter()
            .filter(|kv| !kv.key.starts_with("/zixiao/auth/audit/") && kv.key != "/zixiao/leader")
            .map(|kv| (kv.key, kv.mod_revision))
            .collect()
    }
}

/// `zixiao server init` on etcd under `prefix`, into `pki`.
fn init(dir: &Path, etcd: &str, prefix: &str, pki: &Path) {
    let out = zixiao(dir)
        .args(["-o", "json", "server", "init", "--dir"])
        .arg(pki)
        .args(["--etcd", etcd, "--etcd-prefix", prefix])
        .output()
        .expect("run");
    let made = ok(out);
    assert!(made["admin_config"].as_str().is_some(), "{made}");
    use std::os::unix::fs::PermissionsExt;
    for file in ["ca-key.pem", "admin.yaml"] {
        let mode = std::fs::metadata(pki.join(file))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is {mode:o}");
    }
}

async fn cluster() -> Option<Cluster> {
    let etcd = runtime_endpoint("ZIXIAO_TEST_ETCD_ENDPOINTS", "etcd")?;
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_owned();
    let prefix = format!(
        "/zixiao-secure-test-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let pki = dir.join("pki");
    init(&dir, &etcd, &prefix, &pki);
    let mut child = zixiao(&dir)
        .args(["server", "--etcd", &etcd, "--etcd-prefix", &prefix])
        .arg("--pki")
        .arg(&pki)
        .args(["--listen", "127.0.0.1:0", "--id", "secure-1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run zixiao server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let endpoint = line
        .trim()
        .rsplit_once(" listening on ")
        .map(|(_, addr)| addr.to_owned())
        .unwrap_or_else(|| panic!("zixiao server did not start: {line:?}"));
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    Some(Cluster {
        _temp: temp,
        dir,
        pki,
        endpoint,
        prefix,
        etcd,
        _server: Running(child),
    })
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
