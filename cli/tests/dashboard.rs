//! `zixiao server --embedded --ui-listen`: the web dashboard of a server
//! with TLS is HTTPS with the server's certificate, asks every call for a
//! bearer token and serves it through the server's own authentication,
//! authorization and audit, as gRPC does. Needs no runtime: it reads nodes
//! and is refused what it may not do.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use zixiao_testing::http::{https_request, request, Answer};
use zixiao_testing::output::json;

/// `zixiao server --embedded --ui-listen 127.0.0.1:0` on a state
/// directory, until dropped.
struct Server {
    child: Child,
    /// The dashboard's `host:port`.
    dashboard: String,
    /// The admin's client configuration, which the server wrote.
    admin: String,
    /// The cluster CA's certificate, which the browser trusts.
    ca: std::path::PathBuf,
}

/// `zixiao ARGS` running, and the `host:port` its announcement line
/// (among its first four) gives after `marker` (`... on http://`).
fn spawn_announcing(args: &[&str], marker: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ENDPOINT")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run zixiao");
    let lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = lines
        .take(4)
        .map_while(Result::ok)
        .find_map(|line| {
            let (_, rest) = line.split_once(marker)?;
            Some(rest.trim_end_matches('/').to_owned())
        })
        .unwrap_or_else(|| panic!("zixiao {args:?} did not announce `{marker}`"));
    (child, addr)
}

/// Ends a process this test started.
fn terminate(child: &mut Child) {
    // SAFETY: kill(2) of a process this test started; no memory is touched.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

impl Server {
    fn start(state: &Path) -> Self {
        let state_dir = state.display().to_string();
        let (child, dashboard) = spawn_announcing(
            &[
                "--state-dir",
                &state_dir,
                "server",
                "--embedded",
                "--listen",
                "127.0.0.1:0",
                "--ui-listen",
                "127.0.0.1:0",
            ],
            " dashboard on https://",
        );
        let admin = state.join("pki/admin.yaml").display().to_string();
        Server {
            child,
            dashboard,
            admin,
            ca: state.join("pki/ca.pem"),
        }
    }

    /// `GET path` with `token` as the bearer, if any.
    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let header = token.map(|token| format!("Authorization: Bearer {token}"));
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        self.request("GET", path, &headers, "")
    }

    /// `METHOD path` over HTTPS, trusting the cluster CA.
    fn request(&self, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
        https_request(&self.dashboard, &self.ca, method, path, headers, body)
    }

    /// `zixiao --config admin.yaml ARGS -o json`.
    fn admin(&self, args: &[&str]) -> serde_json::Value {
        json(
            Command::new(env!("CARGO_BIN_EXE_zixiao"))
                .args(["--config", &self.admin])
                .args(args)
                .args(["-o", "json"])
                .output()
                .expect("run zixiao"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The first token in a client configuration file (`token: zx_...`).
fn token_in(config: &str) -> String {
    let text = std::fs::read_to_string(config).expect("read the admin configuration");
    text.lines()
        .find_map(|line| line.trim().strip_prefix("token: "))
        .expect("a token in the admin configuration")
        .trim_matches('"')
        .to_owned()
}

#[test]
fn a_secure_server_dashboard_wants_a_token_and_applies_roles_and_audit() {
    let state = tempfile::tempdir().expect("tempdir");
    let server = Server::start(state.path());
    let session = server.get("/api/session", None);
    assert_eq!(session.status, 200, "{}", session.body);
    assert_eq!(session.json()["token_required"], true);

    let anonymous = server.get("/api/nodes", None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(anonymous.error().0, "unauthenticated");
    let forged = server.get("/api/nodes", Some("zx_not_a_token"));
    assert_eq!(forged.status, 401, "{}", forged.body);

    let admin = token_in(&server.admin);
    let nodes = server.get("/api/nodes", Some(&admin));
    assert_eq!(nodes.status, 200, "{}", nodes.body);
    assert_eq!(
        nodes.json().as_array().map(Vec::len),
        Some(1),
        "{}",
        nodes.body
    );

    // A viewer reads, and is refused a create, which changes nothing.
    let viewer = server.admin(&["user", "create", "ui-viewer", "--role", "viewer"]);
    let viewer = viewer["token"]["secret"]
        .as_str()
        .expect("the viewer's token");
    assert_eq!(server.get("/api/instances", Some(viewer)).status, 200);
    let auth = format!("Authorization: Bearer {viewer}");
    let headers = [auth.as_str(), "Content-Type: application/json"];
    let body = r#"{"name":"ui-denied","spec":{"type":"container","image":"busybox","cpus":1,"memory_mib":64}}"#;
    let refused = server.request("POST", "/api/instances", &headers, body);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.error().0, "permission_denied");
    assert_eq!(server.admin(&["instance", "list"]), serde_json::json!([]));

    // The refusal is in the audit log, as the viewer's, like a gRPC call's.
    let audit = server.admin(&["audit", "list", "--user", "ui-viewer"]);
    let records = audit.as_array().expect("audit records");
    let denied = records.iter().find(|r| r["operation"] == "instance.create");
    let denied = denied.unwrap_or_else(|| panic!("no instance.create in {audit:#}"));
    assert_eq!(denied["user"], "ui-viewer", "{denied:#}");
    assert!(
        denied["outcome"].to_string().contains("denied"),
        "{denied:#}"
    );
}

/// The dashboard's certificate is the server's, from the cluster CA:
/// another CA does not vouch for it, and plain HTTP gets no page.
#[test]
fn a_secure_server_dashboard_is_https_from_the_cluster_ca() {
    let state = tempfile::tempdir().expect("tempdir");
    let server = Server::start(state.path());
    assert_eq!(server.get("/", None).status, 200);

    // Another cluster's CA.
    let other = tempfile::tempdir().expect("tempdir");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=another cluster"])
        .arg("-keyout")
        .arg(other.path().join("ca-key.pem"))
        .arg("-out")
        .arg(other.path().join("ca.pem"))
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let stranger = https_request(
        &server.dashboard,
        &other.path().join("ca.pem"),
        "GET",
        "/",
        &[],
        "",
    );
    assert_eq!(
        stranger.status, 0,
        "another CA vouched for it: {}",
        stranger.head
    );
    assert!(stranger.body.contains("certificate"), "{}", stranger.body);

    let mut plain = std::net::TcpStream::connect(&server.dashboard).expect("connect");
    use std::io::{Read, Write};
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .expect("timeout");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("<html"),
        "plain HTTP got a page"
    );
}

#[test]
fn zixiao_ui_of_a_context_acts_as_its_user_on_the_server() {
    let state = tempfile::tempdir().expect("tempdir");
    let server = Server::start(state.path());
    // `zixiao --config admin.yaml ui`: a client of the server, not of a state directory.
    let (mut ui, addr) = spawn_announcing(
        &["--config", &server.admin, "ui", "--listen", "127.0.0.1:0"],
        "zixiao ui on http://",
    );
    let session = request(&addr, "GET", "/api/session", &[], "");
    assert_eq!(session.json()["token_required"], false, "{}", session.body);
    let nodes = request(&addr, "GET", "/api/nodes", &[], "");
    assert_eq!(nodes.status, 200, "{}", nodes.body);
    // The same nodes as the CLI lists (their heartbeats move on meanwhile).
    let ids = |nodes: serde_json::Value| -> Vec<serde_json::Value> {
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n["id"].clone())
            .collect()
    };
    let listed = ids(nodes.json());
    assert_eq!(listed.len(), 1, "{}", nodes.body);
    assert_eq!(listed, ids(server.admin(&["node", "list"])));
    terminate(&mut ui);
}
