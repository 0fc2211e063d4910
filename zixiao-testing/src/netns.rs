//! A fresh network namespace for a test: a thread moved into it, where the
//! bridges, TAPs and processes the test makes live and die with it, so the
//! host's network is never touched.

use std::path::PathBuf;

/// Runs `body` on a new thread in a fresh network namespace with loopback
/// up (the processes it starts inherit the namespace), passing it the
/// `ZIXIAO_TEST_NETNS_DIR` base for files the test pins there; a panic in
/// `body` is the caller's. Skips (`None`, saying why) when
/// `scripts/services/net.sh` has not run; panics when the namespace cannot
/// be made (networking tests run as root).
pub fn in_fresh_netns<T: Send + 'static>(
    body: impl FnOnce(PathBuf) -> T + Send + 'static,
) -> Option<T> {
    let base = crate::wait::runtime_endpoint("ZIXIAO_TEST_NETNS_DIR", "netlink and nftables")?;
    let outcome = std::thread::spawn(move || {
        // SAFETY: unshare only moves this new thread (and the threads and
        // processes it starts) into a new network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): networking tests run as root: {}",
            std::io::Error::last_os_error()
        );
        let lo = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(lo.success(), "ip link set lo up");
        body(PathBuf::from(base))
    })
    .join();
    match outcome {
        Ok(value) => Some(value),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
