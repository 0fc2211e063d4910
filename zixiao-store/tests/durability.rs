//! Durability of the embedded store: what was acknowledged survives a
//! reopen and a `kill -9`, a store held by another process is reported as
//! unavailable, and a corrupt file is an error rather than a panic.
//!
//! The crash tests run a second process: this test binary again, told by
//! an environment variable to act as the writer (or lock holder) instead of
//! running the test, so no helper binary ships with the crate.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use zixiao_core::store::{Precondition, Txn, WatchEvent};
use zixiao_core::{Store, StoreError};
use zixiao_store::{EmbeddedStore, EmbeddedStoreOptions};

/// Set in a child process: commit keys into the store at this path forever.
const WRITER_ENV: &str = "ZIXIAO_KILL9_WRITER";
/// Set in a child process with [`WRITER_ENV`]: the round, for key names.
const ROUND_ENV: &str = "ZIXIAO_KILL9_ROUND";
/// How many deferred commits a writer makes between two syncs.
const SYNC_EVERY: u64 = 5;
/// Set in a child process: hold the store at this path open until stdin closes.
const HOLDER_ENV: &str = "ZIXIAO_STORE_HOLDER";

const ACK: &str = "zixiao-ack ";
const HOLDING: &str = "zixiao-holding";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn kill9_key(round: u32, i: u64) -> String {
    format!("/kill9/round{round}/k{i:06}")
}

fn kill9_value(round: u32, i: u64) -> Vec<u8> {
    format!("value {round} {i}").into_bytes()
}

/// Re-runs this test binary as a child acting out `test` with `env` set.
fn spawn_self(test: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("spawn the child process")
}

/// The number in an ack line, if `line` is one. The test harness may print
/// its own text before it on the same line.
fn parse_ack(line: &str) -> Option<u64> {
    let rest = &line[line.find(ACK)? + ACK.len()..];
    rest.strip_suffix(" ok")?.parse().ok()
}

/// How a writer makes its commits durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Each commit is immediate.
    Immediate,
    /// Commits are deferred; a `sync` follows every few.
    DeferredThenSync,
    /// Commits are deferred; an immediate commit follows every few.
    DeferredThenImmediate,
    /// Transactions are staged; an immediate commit follows every few.
    StagedThenImmediate,
}

/// The child side of the kill -9 tests: commits keys one by one, printing
/// each once it is durable: once its commit returned or, for deferred
/// commits and staged transactions, once the sync or immediate commit
/// after it returned. Bounded,
/// in case the parent is gone.
fn act_as_writer(path: &Path, round: u32, writes: Writes) {
    runtime().block_on(async {
        let store = EmbeddedStore::open(path).expect("the writer opens the store");
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut stdout = std::io::stdout();
        let mut unacked = Vec::new();
        let mut staged = Vec::new();
        for i in 0..100_000 {
            if Instant::now() > deadline {
                break;
            }
            let txn = Txn::new().put(
                kill9_key(round, i),
                kill9_value(round, i),
                Precondition::Absent,
            );
            match writes {
                Writes::Immediate => drop(store.commit(txn).await.expect("the writer's commit")),
                Writes::StagedThenImmediate => {
                    staged.push(store.stage(txn).await.expect("the writer's stage"))
                }
                Writes::DeferredThenSync | Writes::DeferredThenImmediate => drop(
                    store
                        .commit(txn.deferred())
                        .await
                        .expect("the writer's commit"),
                ),
            }
            unacked.push(i);
            if writes != Writes::Immediate && i % SYNC_EVERY != SYNC_EVERY - 1 {
                continue;
            }
            match writes {
                Writes::Immediate => {}
                Writes::DeferredThenSync => store.sync().await.expect("the writer's sync"),
                Writes::DeferredThenImmediate | Writes::StagedThenImmediate => {
                    let marker = format!("/kill9-marker/round{round}");
                    let txn =
                        Txn::new().put(marker, i.to_string().into_bytes(), Precondition::None);
                    store.commit(txn).await.expect("the writer's commit");
                }
            }
            for mut written in staged.drain(..) {
                written
                    .outcome()
                    .expect("a staged transaction goes with the next commit")
                    .expect("the staged put");
            }
            // One write per line: a pipe never splits a write this small.
            let acks: String = unacked
                .drain(..)
                .map(|i| format!("{ACK}{i} ok\n"))
                .collect();
            if stdout.write_all(acks.as_bytes()).is_err() || stdout.flush().is_err() {
                break;
            }
        }
    });
}

fn read_acks(
    lines: &mut std::io::Lines<BufReader<ChildStdout>>,
    want: usize,
    acked: &mut Vec<u64>,
) {
    while acked.len() < want {
        match lines.next() {
            Some(Ok(line)) => acked.extend(parse_ack(&line)),
            Some(Err(e)) => panic!("reading the writer's output failed: {e}"),
            None => panic!(
                "the writer exited after {} acks, before being killed",
                acked.len()
            ),
        }
    }
}

#[test]
fn acknowledged_commits_survive_kill_9() {
    kill_writers_and_check("acknowledged_commits_survive_kill_9", Writes::Immediate);
}

#[test]
fn deferred_commits_survive_kill_9_once_synced() {
    kill_writers_and_check(
        "deferred_commits_survive_kill_9_once_synced",
        Writes::DeferredThenSync,
    );
}

#[test]
fn deferred_commits_survive_kill_9_once_an_immediate_one_follows() {
    kill_writers_and_check(
        "deferred_commits_survive_kill_9_once_an_immediate_one_follows",
        Writes::DeferredThenImmediate,
    );
}

#[test]
fn staged_txns_survive_kill_9_once_an_immediate_commit_follows() {
    kill_writers_and_check(
        "staged_txns_survive_kill_9_once_an_immediate_commit_follows",
        Writes::StagedThenImmediate,
    );
}

/// Runs test `test` (one of those above): in a child, acts as the
/// writer; in the parent, kills writers by SIGKILL after some
/// acknowledgements and checks that every acknowledged key is there.
fn kill_writers_and_check(test: &str, writes: Writes) {
    if let Ok(path) = std::env::var(WRITER_ENV) {
        let round = std::env::var(ROUND_ENV)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        act_as_writer(Path::new(&path), round, writes);
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state").join("state.redb");
    let mut total_acked = 0u64;
    for (round, kill_after) in [(0u32, 150usize), (1, 300), (2, 450)] {
        let mut child = spawn_self(
            test,
            &[
                (WRITER_ENV, path.display().to_string()),
                (ROUND_ENV, round.to_string()),
            ],
        );
        let mut lines = BufReader::new(child.stdout.take().expect("the child's stdout")).lines();
        let mut acked = Vec::new();
        read_acks(&mut lines, kill_after, &mut acked);
        // Child::kill sends SIGKILL: no destructor, no flush, no clean close.
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("reap the writer");
        assert!(
            !status.success(),
            "the writer finished before it was killed"
        );
        // Acks already in the pipe were printed after their commit returned.
        for line in lines.map_while(Result::ok) {
            acked.extend(parse_ack(&line));
        }
        assert!(acked.len() >= kill_after);
        total_acked += acked.len() as u64;

        runtime().block_on(async {
            let store = EmbeddedStore::open(&path).expect("reopen after kill -9");
            let mut last_revision = 0;
            for &i in &acked {
                let key = kill9_key(round, i);
                let kv = store
                    .get(&key)
                    .await
                    .expect("read after kill -9")
                    .unwrap_or_else(|| panic!("round {round}: acknowledged {key} was lost"));
                assert_eq!(
                    kv.value,
                    kill9_value(round, i),
                    "round {round}: {key} has another value"
                );
                assert!(
                    kv.mod_revision > last_revision,
                    "round {round}: {key} went back in revisions"
                );
                last_revision = kv.mod_revision;
            }
            let listing = store.list("/kill9/").await.expect("list after kill -9");
            assert!(listing.items.len() as u64 >= total_acked);
            assert!(listing.revision >= last_revision);
            let after = store
                .commit(Txn::new().put(
                    format!("/after-kill/{round}"),
                    b"usable".to_vec(),
                    Precondition::Absent,
                ))
                .await
                .expect("a commit after kill -9");
            assert!(
                after > listing.revision,
                "the revision did not continue after kill -9"
            );
        });
    }
}

/// The child side of the lock test: holds the store open until stdin closes.
fn act_as_holder(path: &Path) {
    runtime().block_on(async {
        let store = EmbeddedStore::open(path).expect("the holder opens the store");
        store
            .commit(Txn::new().put("/held-by", b"child".to_vec(), Precondition::None))
            .await
            .expect("the holder's commit");
        println!("{HOLDING}");
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
        drop(store);
    });
}

#[test]
fn a_store_held_by_another_process_is_unavailable() {
    if let Ok(path) = std::env::var(HOLDER_ENV) {
        act_as_holder(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    let mut child = spawn_self(
        "a_store_held_by_another_process_is_unavailable",
        &[(HOLDER_ENV, path.display().to_string())],
    );
    let mut lines = BufReader::new(child.stdout.take().expect("the child's stdout")).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(HOLDING) => break,
            Some(Ok(_)) => {}
            other => panic!("the holder did not open the store: {other:?}"),
        }
    }

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = EmbeddedStoreOptions::new()
        .lock_timeout(timeout)
        .open(&path)
        .expect_err("opened a store another process holds");
    let waited = started.elapsed();
    assert!(
        matches!(error, StoreError::Unavailable { .. }),
        "got {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("in use by another zixiao process")
            && message.contains(&dir.path().display().to_string()),
        "unclear message: {message}"
    );
    assert!(
        waited >= timeout,
        "gave up after {waited:?}, before the {timeout:?} timeout"
    );
    assert!(waited < Duration::from_secs(30), "hung for {waited:?}");

    // Release it: the holder exits when its stdin closes, and opening with
    // the default timeout waits for that.
    drop(child.stdin.take());
    runtime().block_on(async {
        let store = EmbeddedStore::open(&path).expect("open once the holder is gone");
        let kv = store
            .get("/held-by")
            .await
            .expect("read")
            .expect("the holder's key");
        assert_eq!(kv.value, b"child");
    });
    assert!(child.wait().expect("reap the holder").success());
}

#[tokio::test]
async fn reopened_store_keeps_keys_history_leases_and_revision() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("nested").join("dirs").join("state.redb");
    let (lease, last) = {
        let store = EmbeddedStore::open(&path).expect("open creates the parent directories");
        let lease = store
            .grant_lease(Duration::from_secs(3600))
            .await
            .expect("grant");
        store
            .commit(
                Txn::new()
                    .put("/p/a", b"a".to_vec(), Precondition::Absent)
                    .put_with_lease("/p/leased", b"l".to_vec(), Precondition::Absent, lease),
            )
            .await
            .expect("commit");
        store
            .commit(Txn::new().put("/p/b", b"b".to_vec(), Precondition::Absent))
            .await
            .expect("commit");
        let last = store
            .commit(Txn::new().delete("/p/a", Precondition::None))
            .await
            .expect("commit");
        (lease, last)
    };

    let store = EmbeddedStore::open(&path).expect("reopen");
    let listing = store.list("/p/").await.expect("list");
    let keys: Vec<_> = listing.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/p/b", "/p/leased"]);
    assert_eq!(listing.revision, last);
    assert_eq!(listing.items[1].lease, Some(lease));
    store
        .keep_alive(lease)
        .await
        .expect("the lease survived the reopen");

    let mut history = store.watch("/p/", 0).await.expect("watch");
    let mut replayed = Vec::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(Duration::from_secs(10), history.next())
            .await
            .expect("a replayed event")
            .expect("the watch goes on")
            .expect("an event");
        replayed.push(event);
    }
    assert!(
        matches!(&replayed[3], WatchEvent::Delete { key, prev: Some(prev), .. } if key == "/p/a" && prev == b"a")
    );

    let next = store
        .commit(Txn::new().put("/p/c", b"c".to_vec(), Precondition::Absent))
        .await
        .expect("commit after reopen");
    assert_eq!(
        next,
        last + 1,
        "the revision did not continue where it stopped"
    );
    let new_lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    assert_ne!(new_lease, lease, "a lease id was reused after reopening");
}

#[test]
fn a_file_that_is_not_a_store_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, garbage).expect("write garbage");
    let error = EmbeddedStore::open(&path).expect_err("opened garbage as a store");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "the error does not name the file: {error}"
    );
}

#[tokio::test]
async fn a_damaged_store_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    {
        let store = EmbeddedStore::open(&path).expect("open");
        for i in 0..200 {
            store
                .commit(Txn::new().put(format!("/t/{i:04}"), vec![7; 512], Precondition::None))
                .await
                .expect("commit");
        }
    }
    let original = std::fs::read(&path).expect("the store file");
    let len = original.len();
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for keep in [len / 2, len / 4, 8192, 4096, 100] {
        damaged.push((
            format!("truncated to {keep} bytes"),
            original[..keep].to_vec(),
        ));
    }
    for at in [0, 512, 4096, len / 3, len / 2, 2 * len / 3] {
        let mut bytes = original.clone();
        let end = (at + 4096).min(len);
        for (i, byte) in bytes[at..end].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(151).wrapping_add(17);
        }
        damaged.push((format!("4 KiB overwritten at {at}"), bytes));
    }
    for (damage, bytes) in damaged {
        std::fs::write(&path, &bytes).expect("write the damaged file");
        // The check never panics, and a truncated file never passes it.
        let checked = EmbeddedStore::check_file(&path);
        if damage.starts_with("truncated") {
            let error = checked.expect_err("a truncated file passed the check");
            assert!(
                error.to_string().contains("zixiao state restore"),
                "{damage}: the error does not say what to do: {error}"
            );
        }
        // Either outcome is fine; a panic is not. If it opens, every call
        // must answer, with data or an error.
        match EmbeddedStore::open(&path) {
            Err(error) => eprintln!("{damage}: open failed: {error}"),
            Ok(store) => {
                eprintln!("{damage}: opened");
                let _ = store.list("/t/").await;
                let _ = store.get("/t/0001").await;
                let _ = store.watch("/t/", 0).await.map(|stream| stream.take(5));
                let _ = store
                    .commit(Txn::new().put("/t/after", b"x".to_vec(), Precondition::None))
                    .await;
            }
        }
    }
}

#[tokio::test]
async fn a_corrupt_value_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    drop(EmbeddedStore::open(&path).expect("create the store"));
    {
        let db = redb::Database::create(&path).expect("open with redb");
        let txn = db.begin_write().expect("write");
        {
            let definition: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
            let mut kv = txn.open_table(definition).expect("the kv table");
            kv.insert("/bad", &b"garbage"[..]).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = EmbeddedStore::open(&path).expect("reopen");
    let error = store.get("/bad").await.expect_err("read a corrupt value");
    assert!(
        matches!(&error, StoreError::Corrupt { key, .. } if key == "/bad"),
        "got {error:?}"
    );
    let error = store.list("/").await.expect_err("listed a corrupt value");
    assert!(matches!(error, StoreError::Corrupt { .. }), "got {error:?}");
}

#[test]
fn invalid_options_are_rejected() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path: PathBuf = dir.path().join("state.redb");
    for options in [
        EmbeddedStoreOptions::new().history_limit(0),
        EmbeddedStoreOptions::new().event_buffer(0),
    ] {
        let error = options.open(&path).expect_err("invalid options accepted");
        assert!(
            matches!(error, StoreError::InvalidArgument(_)),
            "got {error:?}"
        );
    }
    assert!(!path.exists(), "invalid options still created the file");
}

#[tokio::test]
async fn clones_share_one_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).expect("open"));
    let clone = (*store).clone();
    store
        .commit(Txn::new().put("/shared", b"yes".to_vec(), Precondition::Absent))
        .await
        .expect("commit");
    assert_eq!(
        clone.get("/shared").await.expect("get").map(|kv| kv.value),
        Some(b"yes".to_vec())
    );
    assert_eq!(clone.path(), store.path());
}

#[test]
fn an_empty_store_file_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    std::fs::write(&path, b"").expect("an empty file");
    let error = EmbeddedStore::open(&path).expect_err("an empty file became a new store");
    let message = error.to_string();
    assert!(message.contains("empty"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("zixiao state restore"), "{message}");
    assert_eq!(
        std::fs::metadata(&path).expect("still there").len(),
        0,
        "the empty file was written to"
    );
    assert!(EmbeddedStore::check_file(&path).is_err());
}

#[tokio::test]
async fn a_backup_taken_while_writers_run_restores_a_damaged_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    let backup = dir.path().join("backup.redb");
    let store = EmbeddedStore::open(&path).expect("open");
    for i in 0..50 {
        store
            .commit(Txn::new().put(format!("/t/{i:04}"), vec![i as u8; 64], Precondition::None))
            .await
            .expect("commit");
    }
    // A writer keeps committing while the backup is taken: the copy is one
    // consistent revision of the store, whatever it is.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                let txn = Txn::new().put(format!("/w/{i:04}"), vec![1; 16], Precondition::None);
                store.commit(txn).await.expect("commit while backing up");
            }
        })
    };
    let report = store.backup(&backup).expect("backup");
    writer.await.expect("writer");
    assert!(report.keys >= 50, "{report:?}");
    assert!(report.revision >= 50, "{report:?}");
    let error = store
        .backup(&backup)
        .expect_err("a backup overwrote a file");
    assert_eq!(error.kind(), zixiao_core::ErrorKind::InvalidArgument);
    let expected_revision = report.revision;
    drop(store);

    // The live file is damaged; the backup brings the store back.
    let len = std::fs::metadata(&path).expect("file").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(len / 3))
        .expect("truncate");
    EmbeddedStore::open(&path).expect_err("a truncated store opened");
    let restored = EmbeddedStore::restore_file(&backup, &path).expect("restore");
    assert_eq!(restored.revision, expected_revision);
    assert!(
        path.with_extension("redb.before-restore").exists(),
        "the damaged file was not kept"
    );
    let store = EmbeddedStore::open(&path).expect("open the restored store");
    let listed = store.list("/t/").await.expect("list");
    assert_eq!(listed.items.len(), 50);
    assert_eq!(listed.items[7].value, vec![7u8; 64]);
    assert_eq!(listed.revision, expected_revision);

    // Restoring over a store in use is refused and changes nothing.
    let error =
        EmbeddedStore::restore_file(&backup, &path).expect_err("restored over a live store");
    assert_eq!(error.kind(), zixiao_core::ErrorKind::Unavailable);
    assert_eq!(store.list("/t/").await.expect("list").items.len(), 50);
}

#[test]
fn a_damaged_backup_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    let backup = dir.path().join("backup.redb");
    drop(EmbeddedStore::open(&path).expect("open"));
    std::fs::write(&backup, vec![0x5a; 8192]).expect("a damaged backup");
    let before = std::fs::read(&path).expect("store");
    EmbeddedStore::restore_file(&backup, &path).expect_err("restored a damaged backup");
    assert_eq!(
        std::fs::read(&path).expect("store"),
        before,
        "the store changed"
    );
}
