//! Polling with a deadline instead of sleeping "a bit", and the switch that
//! decides whether a test skips or fails when a real runtime is missing.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every few milliseconds until it returns `Some`, or panics
/// with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `check` every 200 ms until it returns `Ok`, or panics after
/// `timeout` with `what` and the error it returned last (what was still
/// wrong, for the person reading the failure).
pub async fn wait_until_ok<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last:\n{last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether tests must fail, not skip, when a runtime they need is missing.
/// The README's test command sets `ZIXIAO_REQUIRE_RUNTIMES=1`, so CI can never
/// pass by skipping the real-runtime tests.
pub fn runtimes_required() -> bool {
    std::env::var("ZIXIAO_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1")
}

/// Returns the value of `var` naming a runtime's endpoint (a socket, a URL),
/// or `None` after printing why the calling test skips. Panics instead when
/// [`runtimes_required`].
pub fn runtime_endpoint(var: &str, runtime: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            assert!(
                !runtimes_required(),
                "{runtime} is required (ZIXIAO_REQUIRE_RUNTIMES=1) but {var} is not set"
            );
            eprintln!(
                "skipped: {runtime} is not available ({var} is not set; run scripts/test.sh)"
            );
            None
        }
    }
}
