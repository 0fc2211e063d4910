//! Catching redb's panics without printing them. redb answers some damaged
//! files with a panic (an assertion on the file's length, say) instead of an
//! error; the store turns those into errors, and a CLI with `-o json` must
//! then print one JSON error, not a panic message and a backtrace. The
//! process-wide panic hook is wrapped once: it stays silent only on a thread
//! inside [`catch_quietly`], and calls the hook it replaced everywhere else.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static WRAP_HOOK: Once = Once::new();

/// Runs `op`, returning its panic's payload instead of unwinding further,
/// and without the panic hook's report.
pub(crate) fn catch_quietly<T>(op: impl FnOnce() -> T) -> Result<T, Box<dyn Any + Send>> {
    WRAP_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = QUIET.with(|quiet| quiet.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(op));
    QUIET.with(|quiet| quiet.set(outer));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_payload_and_the_thread_goes_on() {
        let caught = catch_quietly(|| -> u32 { panic!("damaged page") });
        let payload = caught.expect_err("it panicked");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"damaged page"));
        assert_eq!(catch_quietly(|| 7).expect("no panic"), 7);
        assert!(!QUIET.with(Cell::get), "quiet outside catch_quietly");
    }
}
