//! Careless and hostile input on the embedded default, as a user types it:
//! every mistake is exit 2 with a message naming what is wrong, `-o json`
//! errors are one JSON object, and nothing is stored.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn zixiao(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("ZIXIAO_STATE_DIR")
        .output()
        .expect("run zixiao")
}

/// The message of the one JSON error a failed `-o json` command prints.
fn json_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "exit code");
    let body: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
        panic!(
            "stderr is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(body["error"]["kind"], "invalid_argument", "{body}");
    body["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned()
}

fn nothing_stored(state: &Path) {
    let out = zixiao(state, &["instance", "list", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list, serde_json::json!([]), "something was stored");
}

#[test]
fn spec_files_that_never_end_never_open_or_do_not_parse_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let fifo = dir.path().join("spec.fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let trailing = dir.path().join("trailing.json");
    std::fs::write(
        &trailing,
        r#"{"name": "w", "spec": {"type": "container", "image": "busybox",}}"#,
    )
    .expect("write");
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(&wrong, "name: w\nspec:\n  type: container\n  cpus: many\n").expect("write");
    let cases: [(&str, &str); 5] = [
        ("/dev/zero", "character device"),
        (fifo.to_str().expect("utf-8"), "FIFO"),
        (dir.path().to_str().expect("utf-8"), "directory"),
        (
            trailing.to_str().expect("utf-8"),
            "trailing comma at line 1",
        ),
        (wrong.to_str().expect("utf-8"), "spec.cpus"),
    ];
    for (file, expected) in cases {
        let started = Instant::now();
        let out = zixiao(&state, &["instance", "create", "-f", file, "-o", "json"]);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{file} took {:?}",
            started.elapsed()
        );
        let message = json_error(&out);
        assert!(
            message.contains("--file") && message.contains(expected),
            "{file}: {message}"
        );
    }
    nothing_stored(&state);
}

#[test]
fn a_name_that_reads_as_an_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = zixiao(
        dir.path(),
        &[
            "instance",
            "create",
            "--name",
            "0d2f5b3e-4c1a-4e8b-9f6d-2a7c1e9b8d40",
            "--type",
            "container",
            "--image",
            "busybox",
            "-o",
            "json",
        ],
    );
    let message = json_error(&out);
    assert!(
        message.starts_with("invalid name:") && message.contains("UUID"),
        "{message}"
    );
    nothing_stored(dir.path());
}

#[test]
fn command_line_mistakes_are_json_with_json_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = zixiao(
        dir.path(),
        &[
            "instance",
            "create",
            "--name",
            "x",
            "--type",
            "container",
            "--cpus",
            "-1",
            "-o",
            "json",
        ],
    );
    let message = json_error(&out);
    assert!(message.contains("--cpus"), "{message}");
    assert!(
        !message.contains("-- -1"),
        "the tip would make it a command: {message}"
    );
    let out = zixiao(dir.path(), &["--bogus", "--output=json"]);
    assert!(json_error(&out).contains("--bogus"));
    let out = zixiao(dir.path(), &["version", "-o", "json"]);
    assert!(out.status.success());
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}
