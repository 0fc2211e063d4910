//! `zixiao state` and a damaged store as a user meets them: a damaged or
//! emptied state file is an error naming the file and what to do (one JSON
//! object on stderr with `-o json`, no panic), and a backup taken earlier
//! brings the state back.

use std::path::Path;
use std::process::{Command, Output};

fn zixiao(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("ZIXIAO_STATE_DIR")
        .output()
        .expect("run zixiao")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The one JSON error `-o json` prints on stderr for a failed command.
fn json_error(out: &Output) -> serde_json::Value {
    assert!(!out.status.success(), "it succeeded");
    let err = json(&out.stderr);
    err["error"].clone()
}

#[test]
fn a_damaged_or_empty_state_file_is_a_clear_error_and_a_backup_brings_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let backup = dir.path().join("backup.redb");
    let store = state.join("state.redb");
    // A change of the store's own (a cordon touches nothing on the host),
    // to see come back with the backup.
    let listed = json(&zixiao(&state, &["node", "list", "-o", "json"]).stdout);
    let node = listed[0]["id"].as_str().expect("the local node").to_owned();
    let cordoned = zixiao(&state, &["node", "cordon", &node, "-o", "json"]);
    assert!(cordoned.status.success(), "{}", stderr(&cordoned));
    let before = json(&zixiao(&state, &["node", "list", "-o", "json"]).stdout);
    assert_eq!(before[0]["status"], "cordoned");

    let check = zixiao(&state, &["state", "check", "-o", "json"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(json(&check.stdout)["keys"].as_u64().expect("keys") >= 1);
    let backed_up = zixiao(
        &state,
        &[
            "state",
            "backup",
            backup.to_str().expect("path"),
            "-o",
            "json",
        ],
    );
    assert!(backed_up.status.success(), "{}", stderr(&backed_up));
    let summary = json(&backed_up.stdout);
    assert!(backup.is_file());
    // A second backup to the same file is refused: nothing is overwritten.
    let again = zixiao(
        &state,
        &[
            "state",
            "backup",
            backup.to_str().expect("path"),
            "-o",
            "json",
        ],
    );
    assert_eq!(json_error(&again)["kind"], "invalid_argument");
    assert_eq!(again.status.code(), Some(2));

    // Truncated: every command says the file is damaged and how to recover.
    let len = std::fs::metadata(&store).expect("store").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&store)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");
    for args in [
        &["node", "list", "-o", "json"][..],
        &["state", "check", "-o", "json"],
    ] {
        let out = zixiao(&state, args);
        let error = json_error(&out);
        let message = error["message"].as_str().expect("message");
        assert!(message.contains(&store.display().to_string()), "{message}");
        assert!(message.contains("zixiao state restore"), "{message}");
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }

    // Empty: refused, and not silently made a new store.
    std::fs::write(&store, b"").expect("empty the file");
    let out = zixiao(&state, &["node", "list", "-o", "json"]);
    let message = json_error(&out)["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.contains("empty"), "{message}");
    assert_eq!(std::fs::metadata(&store).expect("store").len(), 0);

    // The backup brings everything back.
    let restored = zixiao(
        &state,
        &[
            "state",
            "restore",
            backup.to_str().expect("path"),
            "-o",
            "json",
        ],
    );
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(json(&restored.stdout)["revision"], summary["revision"]);
    let after = json(&zixiao(&state, &["node", "list", "-o", "json"]).stdout);
    assert_eq!(after[0]["id"], before[0]["id"]);
    assert_eq!(
        after[0]["status"], "cordoned",
        "the backup's cordon is back"
    );
}

#[test]
fn a_damaged_backup_is_refused_and_the_store_is_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let bad = dir.path().join("bad.redb");
    assert!(zixiao(&state, &["node", "list"]).status.success());
    std::fs::write(&bad, vec![0x42; 16 * 1024]).expect("a damaged backup");
    let store = state.join("state.redb");
    let before = std::fs::read(&store).expect("store");
    let out = zixiao(
        &state,
        &[
            "state",
            "restore",
            bad.to_str().expect("path"),
            "-o",
            "json",
        ],
    );
    let error = json_error(&out);
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("bad.redb"),
        "{error}"
    );
    assert_eq!(std::fs::read(&store).expect("store"), before);
}
