//! What a test reads from a finished `zixiao` command: its output as text,
//! its stdout once it is known to have exited 0, and that stdout as JSON.
//! One copy for every CLI test that runs the binary.

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
