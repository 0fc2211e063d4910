//! Running a test's calls on a thread with a small stack, to show that
//! they fit: a debug build gives every temporary of an async function's
//! poll its own stack slot, so a deep call can overflow a tokio worker's
//! 2 MiB where a release build needs a fraction of it.

use std::future::Future;

/// Environment variable that overrides the stack size (in KiB) given to
/// [`run_on_small_stack`]: to measure the smallest stack a test's calls
/// need, by bisecting it.
pub const STACK_KIB_ENV: &str = "ZIXIAO_TEST_STACK_KIB";

/// Runs the future `make` returns to completion on a current-thread tokio
/// runtime on a new thread whose stack is `kib` KiB (or what
/// [`STACK_KIB_ENV`] says). A stack overflow aborts the whole test
/// process, which fails the test; a panic of the future is re-raised here.
pub fn run_on_small_stack<F>(kib: usize, make: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()>,
{
    let kib = match std::env::var(STACK_KIB_ENV) {
        Ok(v) => v
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("{STACK_KIB_ENV}={v}: not a number of KiB")),
        Err(_) => kib,
    };
    let ran = std::thread::Builder::new()
        .name("small-stack".to_owned())
        .stack_size(kib * 1024)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread tokio runtime");
            // Boxed: the test's own future stays off the small stack.
            runtime.block_on(Box::pin(make()));
        })
        .expect("a thread with a small stack")
        .join();
    if let Err(panic) = ran {
        std::panic::resume_unwind(panic);
    }
}
