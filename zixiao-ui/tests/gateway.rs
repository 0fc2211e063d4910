//! The JSON gateway over HTTP on a real listener, in front of a real
//! embedded deployment (its state directory in a temporary directory):
//! what a browser or `curl` gets for good and bad requests.

use std::net::SocketAddr;

use zixiao_testing::http::{self, Answer};

/// A dashboard of a fresh embedded deployment, on loopback.
struct Dashboard {
    addr: SocketAddr,
    _state: tempfile::TempDir,
}

async fn dashboard() -> Dashboard {
    let state = tempfile::tempdir().unwrap();
    let options = zixiao_client::OpenOptions::new(Some(state.path().to_owned()));
    let client = zixiao_client::open(options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let access = zixiao_ui::Access::Local(client);
    tokio::spawn(zixiao_ui::serve(listener, access, std::future::pending()));
    Dashboard {
        addr,
        _state: state,
    }
}

impl Dashboard {
    /// One HTTP/1.1 request with `headers` (each `Name: value`), made off
    /// the runtime's thread since the client blocks.
    async fn request(&self, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
        let addr = self.addr.to_string();
        let (method, path, body) = (method.to_owned(), path.to_owned(), body.to_owned());
        let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            http::request(&addr, &method, &path, &headers, &body)
        })
        .await
        .unwrap()
    }

    async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], "").await
    }

    async fn post_json(&self, path: &str, body: &str) -> Answer {
        let json = "Content-Type: application/json";
        self.request("POST", path, &[json], body).await
    }
}

#[tokio::test]
async fn lists_this_machine_as_the_node_and_no_instances() {
    let ui = dashboard().await;
    let session = ui.get("/api/session").await;
    assert_eq!(session.status, 200, "{}", session.body);
    assert_eq!(session.json()["token_required"], false);
    let nodes = ui.get("/api/nodes").await;
    assert_eq!(nodes.status, 200, "{}", nodes.body);
    let nodes = nodes.json();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["status"], "ready", "{nodes}");
    let hostname = nodes[0]["hostname"].as_str().unwrap().to_owned();
    let node = ui.get(&format!("/api/nodes/{hostname}")).await;
    assert_eq!(node.status, 200, "{}", node.body);
    assert_eq!(node.json()["hostname"], hostname.as_str());
    let instances = ui.get("/api/instances?type=container&status=").await;
    assert_eq!(instances.status, 200, "{}", instances.body);
    assert_eq!(instances.json(), serde_json::json!([]));
    for empty in [
        "/api/templates",
        "/api/operations",
        "/api/operations?target=web",
    ] {
        let answer = ui.get(empty).await;
        assert_eq!(answer.status, 200, "{empty}: {}", answer.body);
        assert_eq!(answer.json(), serde_json::json!([]), "{empty}");
    }
}

#[tokio::test]
async fn a_bad_request_is_a_400_naming_the_field_and_creates_nothing() {
    let ui = dashboard().await;
    let spec = r#"{"type":"container","image":"busybox","cpus":1,"memory_mib":64}"#;

    let missing = ui
        .post_json("/api/instances", &format!(r#"{{"spec":{spec}}}"#))
        .await;
    assert_eq!(missing.status, 400, "{}", missing.body);
    let (kind, message) = missing.error();
    assert_eq!(kind, "invalid_argument");
    assert!(message.contains("missing field `name`"), "{message}");

    let wrong_type = r#"{"name":"a","spec":{"type":"container","image":"busybox","cpus":"many","memory_mib":64}}"#;
    let (_, message) = ui.post_json("/api/instances", wrong_type).await.error();
    assert!(message.starts_with("invalid spec.cpus:"), "{message}");

    let bad_name = ui
        .post_json(
            "/api/instances",
            &format!(r#"{{"name":"Not A Name!","spec":{spec}}}"#),
        )
        .await;
    assert_eq!(bad_name.status, 400, "{}", bad_name.body);
    assert!(
        bad_name.error().1.starts_with("invalid name"),
        "{}",
        bad_name.body
    );

    let not_json = ui
        .request(
            "POST",
            "/api/instances",
            &["Content-Type: text/plain"],
            "{}",
        )
        .await;
    assert_eq!(not_json.status, 400, "{}", not_json.body);
    assert!(
        not_json.error().1.contains("Content-Type"),
        "{}",
        not_json.body
    );

    let filter = ui.get("/api/instances?status=sleepy").await;
    assert_eq!(filter.status, 400, "{}", filter.body);
    assert!(
        filter.error().1.starts_with("invalid status"),
        "{}",
        filter.body
    );

    let filter = ui.get("/api/operations?kind=create").await;
    assert_eq!(filter.status, 400, "{}", filter.body);
    assert!(
        filter.error().1.starts_with("invalid kind"),
        "{}",
        filter.body
    );

    assert_eq!(ui.get("/api/instances").await.json(), serde_json::json!([]));
}

#[tokio::test]
async fn an_unknown_instance_or_route_is_a_404() {
    let ui = dashboard().await;
    for answer in [
        ui.get("/api/instances/nobody").await,
        ui.post_json("/api/instances/nobody/stop", "").await,
        ui.request("DELETE", "/api/instances/nobody", &[], "").await,
        ui.get("/api/instances/nobody/stats/history").await,
    ] {
        assert_eq!(answer.status, 404, "{}", answer.body);
        let (kind, message) = answer.error();
        assert_eq!(kind, "not_found");
        assert!(message.contains("nobody"), "{message}");
    }
    let route = ui.get("/api/no-such-thing").await;
    assert_eq!(route.status, 404, "{}", route.body);
    assert_eq!(route.error().0, "not_found");
}

#[tokio::test]
async fn another_site_or_host_name_is_refused() {
    let ui = dashboard().await;
    let forged = ui
        .request(
            "POST",
            "/api/instances/any/stop",
            &["Origin: http://evil.example"],
            "",
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.error().1.contains("evil.example"), "{}", forged.body);
    let rebound = ui
        .request("GET", "/api/nodes", &["Host: evil.example:80"], "")
        .await;
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    let own = format!("Origin: http://{}", ui.addr);
    let allowed = ui
        .request("POST", "/api/instances/any/stop", &[&own], "")
        .await;
    assert_eq!(allowed.status, 404, "{}", allowed.body);
}

#[tokio::test]
async fn the_pages_are_embedded_with_a_strict_content_policy() {
    let ui = dashboard().await;
    let index = ui.get("/").await;
    assert_eq!(index.status, 200);
    assert!(
        index.head.contains("content-type: text/html"),
        "{}",
        index.head
    );
    assert!(
        index
            .head
            .contains("content-security-policy: default-src 'self'"),
        "{}",
        index.head
    );
    assert!(index
        .body
        .contains("<script type=\"module\" src=\"/app.js\">"));
    let script = ui.get("/app.js").await;
    assert!(
        script.head.contains("content-type: text/javascript"),
        "{}",
        script.head
    );
    assert!(script.body.contains("/api/session"));
    // The vendored terminal is served from the binary too, and the policy
    // still refuses inline styles and scripts.
    assert!(!index.head.contains("unsafe-inline"), "{}", index.head);
    for (path, kind, content) in [
        ("/vendor/xterm.js", "text/javascript", "e.Terminal="),
        ("/vendor/addon-fit.js", "text/javascript", "FitAddon"),
        ("/vendor/xterm.css", "text/css", ".xterm-helper-textarea"),
        (
            "/vendor/xterm.LICENSE",
            "text/plain",
            "Permission is hereby granted",
        ),
    ] {
        let file = ui.get(path).await;
        assert_eq!(file.status, 200, "{path}");
        assert!(
            file.head.contains(&format!("content-type: {kind}")),
            "{path}: {}",
            file.head
        );
        assert!(file.body.contains(content), "{path}");
    }
}

#[tokio::test]
async fn a_console_websocket_is_refused_to_another_site_and_for_a_missing_instance() {
    let ui = dashboard().await;
    let upgrade = [
        "Upgrade: websocket",
        // Close, so the answer can be read to its end.
        "Connection: Upgrade, close",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol: zixiao.console",
    ];
    let path = "/api/instances/nobody/console";
    let foreign: Vec<&str> = upgrade
        .iter()
        .copied()
        .chain(["Origin: http://evil.example"])
        .collect();
    let hijack = ui.request("GET", path, &foreign, "").await;
    assert_eq!(hijack.status, 403, "{}", hijack.body);
    let missing = ui.request("GET", path, &upgrade, "").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.error().1.contains("nobody"), "{}", missing.body);
}

#[tokio::test]
async fn images_and_snapshots_answer_lists_and_refuse_bad_parameters() {
    let ui = dashboard().await;
    // A fresh node's image store holds nothing (a microvm lists it alone).
    let images = ui.get("/api/images?type=microvm").await;
    assert_eq!(images.status, 200, "{}", images.body);
    assert_eq!(images.json(), serde_json::json!([]));
    let node = ui.get("/api/nodes").await.json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_node = ui
        .get(&format!("/api/images?type=microvm&node={node}"))
        .await;
    assert_eq!(on_node.status, 200, "{}", on_node.body);
    assert_eq!(on_node.json(), serde_json::json!([]));

    for (path, field) in [
        ("/api/images?type=floppy", "invalid type"),
        ("/api/images?tag=latest", "invalid tag"),
    ] {
        let refused = ui.get(path).await;
        assert_eq!(refused.status, 400, "{path}: {}", refused.body);
        let (kind, message) = refused.error();
        assert_eq!(kind, "invalid_argument", "{path}");
        assert!(message.starts_with(field), "{path}: {message}");
    }
    let elsewhere = ui.get("/api/images?node=nowhere").await;
    assert_eq!(elsewhere.status, 404, "{}", elsewhere.body);
    assert!(
        elsewhere.error().1.contains("nowhere"),
        "{}",
        elsewhere.body
    );

    // A bad snapshot name is refused at the edge, before the instance is
    // looked up; a good one of a missing instance is a 404.
    let path = "/api/instances/nobody/snapshots";
    for (body, expected) in [
        (r#"{"name":"../up"}"#, "invalid snapshot"),
        (r#"{"name":""}"#, "invalid snapshot"),
        (r#"{"nam":"s1"}"#, "unknown field `nam`"),
    ] {
        let refused = ui.post_json(path, body).await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.body);
        let (kind, message) = refused.error();
        assert_eq!(kind, "invalid_argument", "{body}");
        assert!(message.contains(expected), "{body}: {message}");
    }
    let bad = ui.request("DELETE", &format!("{path}/..up"), &[], "").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.error().1.starts_with("invalid snapshot"),
        "{}",
        bad.body
    );
    for answer in [
        ui.get(path).await,
        ui.post_json(path, r#"{"name":"s1"}"#).await,
        ui.request("DELETE", &format!("{path}/s1"), &[], "").await,
    ] {
        assert_eq!(answer.status, 404, "{}", answer.body);
        assert!(answer.error().1.contains("nobody"), "{}", answer.body);
    }
    let forged = ui
        .request(
            "POST",
            path,
            &[
                "Origin: http://evil.example",
                "Content-Type: application/json",
            ],
            r#"{"name":"s1"}"#,
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
}
