//! What the namespace benches (`publish`, `overlay`) share: running a
//! measure in a fresh network namespace and writing its results, and
//! timing short TCP connections.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zixiao_net::netns;

/// Opens `count` connections to `to`, one after the other, each reading
/// the server's answer (`ok\n`) to its end; the time they took.
pub(crate) fn connect_many(to: SocketAddr, count: usize) -> Duration {
    let started = Instant::now();
    let mut answer = Vec::with_capacity(16);
    for _ in 0..count {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        answer.clear();
        stream.read_to_end(&mut answer).expect("read the answer");
        assert_eq!(answer, b"ok\n");
    }
    started.elapsed()
}

/// The bench `name`'s `main`: runs `measure` on a thread in a fresh
/// network namespace, with a directory under `ZIXIAO_TEST_NETNS_DIR` for
/// pinned namespaces (removed after, with every namespace pinned up to
/// one level below it), and writes its rows to
/// `target/bench-results/NAME.json`. Skipped, saying why, without
/// `--bench` (`cargo test --benches`), the directory or root.
pub(crate) fn run(name: &str, measure: fn(PathBuf) -> Vec<serde_json::Value>) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(base) = std::env::var_os("ZIXIAO_TEST_NETNS_DIR").map(PathBuf::from) else {
        println!("{name}: skipped (set ZIXIAO_TEST_NETNS_DIR: scripts/services/net.sh start)");
        return;
    };
    std::fs::create_dir_all(&base).expect("netns base");
    let dir = tempfile::tempdir_in(&base).expect("netns dir");
    let path = dir.path().to_path_buf();
    let rows = match netns::run_isolated(move || measure(path)) {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            println!("{name}: skipped (a network namespace needs root: {e})");
            return;
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    remove_pinned(dir.path());
    let written = zixiao_benches::write_results(name, &zixiao_benches::machine(), rows)
        .expect("write the results");
    println!("{name}: results in {}", written.display());
}

/// Unpins every namespace file in `dir` and its subdirectories' (one level).
fn remove_pinned(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let _ = netns::remove(&inner.path());
            }
        } else {
            let _ = netns::remove(&path);
        }
    }
}
