//! What a test reads from a finished `zixiao` command: its output as text,
//! its stdout once it is known to have exited 0, that stdout as JSON, and
//! the JSON error a refused `-o json` command prints. One copy for every
//! CLI test that runs the binary.

use std::process::Output;

/// `bytes` as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Its stdout, after checking that it exited 0 (else panics with both streams).
pub fn ok(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// [`ok`]'s stdout as JSON (panics when it is not).
pub fn json(out: Output) -> serde_json::Value {
    let stdout = ok(out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Checks that a command (`what`, for messages) run with `-o json` was
/// refused with exit `code` and error `kind`, its message containing `part`.
pub fn assert_refused(out: Output, what: &str, code: i32, kind: &str, part: &str) {
    let (got_code, got_kind, message) = refused(out);
    assert_eq!(
        (got_code, got_kind.as_str()),
        (code, kind),
        "{what}: {message}"
    );
    assert!(message.contains(part), "{what}: `{message}` lacks `{part}`");
}

/// A command refused with `-o json`: its exit code and the kind and message
/// of the one JSON error on its stderr (panics when it succeeded, or when
/// stderr is not that object).
pub fn refused(out: Output) -> (i32, String, String) {
    assert!(
        !out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let error: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("not one JSON error ({e}): {}", text(&out.stderr)));
    let field = |name: &str| -> String {
        error["error"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no error.{name}: {error}"))
            .to_owned()
    };
    (
        out.status.code().expect("an exit code"),
        field("kind"),
        field("message"),
    )
}
