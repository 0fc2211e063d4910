//! Timestamps of the steps of a VMM's start (launcher, jail, seccomp
//! installs, thread starts), for finding where a boot's time goes. Off
//! unless the environment has `ZIXIAO_VMM_TIMELINE=1` (a VMM inherits its
//! launcher's environment): then each step records a `CLOCK_MONOTONIC`
//! time, the VMM writes its steps as one `timeline:` line on stderr
//! (`vmm.log`) when it is ready, and a launcher's own steps are read with
//! [`take`] (they pile up until then: a debugging aid, not for a
//! long-running launcher). The benchmark's start section prints them per
//! confinement.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// The environment variable that turns the timeline on.
pub const ENV: &str = "ZIXIAO_VMM_TIMELINE";

/// The prefix of the VMM's line in `vmm.log`.
pub const LINE_PREFIX: &str = "timeline:";

/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
static MARKS: Mutex<Vec<(Cow<'static, str>, u64)>> = Mutex::new(Vec::new());

/// Whether the timeline is recorded in this process.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os(ENV).is_some_and(|v| v == "1");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Now on `CLOCK_MONOTONIC`, in microseconds (comparable between the
/// launcher and its VMM).
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes to the live local (a vDSO call: no
    // system call, so no seccomp list needs it).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Records step `label` now, if the timeline is on.
pub fn mark(label: impl Into<Cow<'static, str>>) {
    if enabled() {
        let at = now_us();
        if let Ok(mut marks) = MARKS.lock() {
            marks.push((label.into(), at));
        }
    }
}

/// The steps recorded so far in this process, in the order recorded;
/// empties the record.
pub fn take() -> Vec<(String, u64)> {
    MARKS
        .lock()
        .map(|mut m| m.drain(..).map(|(l, t)| (l.into_owned(), t)).collect())
        .unwrap_or_default()
}

/// The recorded steps as one line (`timeline: label=us ...`), if on.
pub(crate) fn line() -> Option<String> {
    enabled().then(|| {
        let mut out = String::from(LINE_PREFIX);
        for (label, at) in take() {
            out.push_str(&format!(" {label}={at}"));
        }
        out
    })
}

/// Parses a `timeline:` line of `vmm.log` back into its steps.
pub fn parse(line: &str) -> Option<Vec<(String, u64)>> {
    line.strip_prefix(LINE_PREFIX)?
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.rsplit_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_parses_back() {
        assert_eq!(
            parse("timeline: main=10 vcpu0:filter=25"),
            Some(vec![("main".into(), 10), ("vcpu0:filter".into(), 25)])
        );
        assert_eq!(parse("other"), None);
    }
}
