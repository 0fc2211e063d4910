//! The carbon source file of `server.yaml` (`server.carbon_file`), as a
//! user runs it: a real server reads it, again whenever it changes, and
//! its values show as the node's carbon intensity; a bad file is logged,
//! naming the entry, and the last good values stay; a node it stops naming
//! loses its value; a server whose file is bad at start-up does not start.

use std::path::Path;
use std::time::Duration;

use zixiao_testing::output::json;
use zixiao_testing::wait::wait_until;

mod processes;
use processes::{command, start_logging, Running};

/// The arguments of `zixiao server --embedded --config CONFIG` on loopback.
fn server_args(config: &Path) -> [&str; 7] {
    let config = config.to_str().expect("a UTF-8 path");
    [
        "server",
        "--config",
        config,
        "--embedded",
        "--insecure-no-tls",
        "--listen",
        "127.0.0.1:0",
    ]
}

/// A server with `config`, its log in `log`.
fn server(state: &Path, config: &Path, log: &Path) -> Running {
    start_logging(
        state,
        &server_args(config),
        std::fs::File::create(log).expect("the log"),
    )
}

/// The server's config naming `carbon` as its carbon source file.
fn config_naming(dir: &Path, carbon: &Path) -> std::path::PathBuf {
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        format!("server:\n  carbon_file: {}\n", carbon.display()),
    )
    .expect("server.yaml");
    config
}

#[tokio::test]
async fn a_server_follows_its_carbon_source_file_and_keeps_the_last_good_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let carbon = dir.path().join("carbon.yaml");
    let config = config_naming(dir.path(), &carbon);
    // Empty at first: a file that names nothing is a good one.
    std::fs::write(&carbon, "").expect("write");
    let log = dir.path().join("server.log");
    let server = server(&dir.path().join("server"), &config, &log);
    let run = |args: &[&str]| {
        command(&dir.path().join("client"))
            .args(["--endpoint", &server.addr, "-o", "json"])
            .args(args)
            .output()
            .expect("run zixiao")
    };
    let nodes = json(run(&["node", "list"]));
    let node = &nodes[0];
    let (id, zone) = (
        node["id"].as_str().expect("id").to_owned(),
        node["zone"].as_str().expect("zone").to_owned(),
    );
    let carbon_is = |wanted: u64| {
        let id = id.clone();
        async move {
            wait_until(
                &format!("node {id}'s carbon intensity to be {wanted}"),
                Duration::from_secs(30),
                || {
                    let shown = json(run(&["node", "get", &id]));
                    async move { (shown["carbon_intensity"] == wanted).then_some(shown) }
                },
            )
            .await
        }
    };

    // Its zone's value; then its own, which wins over the zone's.
    std::fs::write(&carbon, format!("zones:\n  {zone}: 300\n")).expect("write");
    carbon_is(300).await;
    std::fs::write(
        &carbon,
        format!("nodes:\n  {id}: 120\nzones:\n  {zone}: 300\n"),
    )
    .expect("write");
    carbon_is(120).await;

    // A bad entry: refused whole, logged naming it; the node keeps 120.
    std::fs::write(
        &carbon,
        format!("nodes:\n  {id}: 9000\nzones:\n  {zone}: 50\n"),
    )
    .expect("write");
    wait_until(
        "the server to log the bad entry",
        Duration::from_secs(30),
        || {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            let named = logged.lines().any(|l| {
                l.contains("carbon source file is refused") && l.contains(&format!("nodes.{id}"))
            });
            async move { named.then_some(()) }
        },
    )
    .await;
    let shown = json(run(&["node", "get", &id]));
    assert_eq!(shown["carbon_intensity"], 120, "{shown}");

    // Fixed, it is read again.
    std::fs::write(&carbon, format!("nodes:\n  {id}: 80\n")).expect("write");
    carbon_is(80).await;

    // No longer named: the value the file gave goes with it.
    std::fs::write(&carbon, "zones: {}\n").expect("write");
    wait_until(
        &format!("node {id} to lose its carbon intensity"),
        Duration::from_secs(30),
        || {
            let shown = json(run(&["node", "get", &id]));
            async move { shown["carbon_intensity"].is_null().then_some(shown) }
        },
    )
    .await;
}

#[test]
fn a_server_does_not_start_with_a_bad_carbon_source_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let carbon = dir.path().join("carbon.yaml");
    let config = config_naming(dir.path(), &carbon);
    let start = |what: &str| {
        let out = command(&dir.path().join("server"))
            .args(server_args(&config))
            .output()
            .expect("run zixiao server");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{what}: the server started\n{stderr}"
        );
        stderr
    };
    let stderr = start("a missing file");
    assert!(
        stderr.contains("carbon_file") && stderr.contains("cannot read"),
        "{stderr}"
    );
    std::fs::write(&carbon, "nodes:\n  a: 9000\n").expect("write");
    let stderr = start("a bad entry");
    assert!(stderr.contains("nodes.a"), "{stderr}");
}
