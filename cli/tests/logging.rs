//! Diagnostic logs as an operator reads them: quiet by default, `-v` shows
//! each API call in a span naming the operation and its target, `-o json`
//! makes every stderr line JSON (logs and the final error alike), and
//! `ZIXIAO_LOG` takes filter directives. Results stay on stdout either way.

use std::path::Path;
use std::process::{Command, Output};

use zixiao_testing::output::text;

fn zixiao(state: &Path, args: &[&str], log: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zixiao"));
    command
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("ZIXIAO_STATE_DIR")
        .env_remove("ZIXIAO_ENDPOINT")
        .env_remove("ZIXIAO_LOG");
    if let Some(directives) = log {
        command.env("ZIXIAO_LOG", directives);
    }
    command.output().expect("run zixiao")
}

#[test]
fn commands_are_quiet_until_asked_and_verbose_logs_name_each_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quiet = zixiao(dir.path(), &["node", "list"], None);
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert_eq!(text(&quiet.stderr), "", "no logs without -v");

    let verbose = zixiao(dir.path(), &["node", "list", "-vv"], None);
    assert!(verbose.status.success(), "{}", text(&verbose.stderr));
    let logs = text(&verbose.stderr);
    assert!(
        logs.contains("api{operation=\"node.list\"") && logs.contains("answered"),
        "{logs}"
    );
    // The table is on stdout, untouched by the logs.
    assert!(
        text(&verbose.stdout).starts_with("ID "),
        "{}",
        text(&verbose.stdout)
    );
}

#[test]
fn with_json_output_every_stderr_line_is_json_errors_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = zixiao(
        dir.path(),
        &["instance", "get", "nope", "-o", "json", "-vv"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let call = lines
        .iter()
        .find(|l| l["span"]["name"] == "api")
        .expect("a log line of the call");
    assert_eq!(call["span"]["operation"], "instance.get");
    assert_eq!(call["fields"]["kind"], "not_found");
    let last = lines.last().expect("the error");
    assert_eq!(last["error"]["kind"], "not_found");
}

#[test]
fn zixiao_log_chooses_what_is_logged_and_a_bad_filter_is_said_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let traced = zixiao(dir.path(), &["node", "list"], Some("zixiao_core=debug"));
    assert!(traced.status.success());
    assert!(
        text(&traced.stderr).contains("node.list"),
        "{}",
        text(&traced.stderr)
    );

    let bad = zixiao(dir.path(), &["node", "list"], Some("zixiao_core=loud"));
    assert!(bad.status.success(), "{}", text(&bad.stderr));
    let logs = text(&bad.stderr);
    assert!(
        logs.contains("ignoring the log filter") && logs.contains("ZIXIAO_LOG"),
        "{logs}"
    );
}
