//! [`EmbeddedStore`]: the [`Store`] kept in one redb file on this machine,
//! and [`EmbeddedStoreOptions`], how it is opened.
//!
//! Reads run inline on a redb snapshot; every write (commit, lease call,
//! sweep, compaction) runs on tokio's blocking pool, because a durable redb
//! commit waits for `fsync`. Writes are serialised by one mutex, which also
//! keeps the broadcast of committed revisions in revision order. Commits
//! that queue up while a write is running are applied together in the next
//! redb transaction (group commit), each at its own revision, so concurrent
//! writers share one `fsync`.

mod codec;
mod file;
mod quiet;
mod tables;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, DatabaseError, StorageError};
use tokio::sync::{broadcast, oneshot};
use zixiao_core::store::{
    Durability, KeyValue, LeaseId, Listing, Revision, Staged, StoreSummary, Txn, WatchStream,
};
use zixiao_core::{Clock, Store, StoreError, SystemClock};

pub use file::FileHold;
use file::StoreFile;
use tables::{Committed, ReadState, WriteState};

/// How long [`EmbeddedStore::open`] waits for another process to release the file.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How many revisions of history watches can replay by default.
pub const DEFAULT_HISTORY_LIMIT: u64 = 10_000;

/// How often expired leases are deleted in the background by default.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How many committed revisions a live watcher may fall behind by default
/// before it re-reads them from the changelog.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// The largest accepted [`EmbeddedStoreOptions::event_buffer`].
const MAX_EVENT_BUFFER: usize = 1 << 20;

/// The longest pause between two attempts to lock a busy store file.
const MAX_LOCK_BACKOFF: Duration = Duration::from_millis(100);

/// How to open an [`EmbeddedStore`]: clock, lock timeout, history kept.
///
/// ```
/// use std::time::Duration;
/// use zixiao_store::EmbeddedStoreOptions;
///
/// let dir = tempfile::tempdir()?;
/// let store = EmbeddedStoreOptions::new()
///     .lock_timeout(Duration::from_millis(500))
///     .history_limit(100)
///     .open(&dir.path().join("state.redb"))?;
/// # drop(store);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct EmbeddedStoreOptions {
    clock: Arc<dyn Clock>,
    lock_timeout: Duration,
    history_limit: u64,
    sweep_interval: Option<Duration>,
    event_buffer: usize,
    hold: FileHold,
}

impl Default for EmbeddedStoreOptions {
    fn default() -> Self {
        EmbeddedStoreOptions {
            clock: Arc::new(SystemClock),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            history_limit: DEFAULT_HISTORY_LIMIT,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
            event_buffer: DEFAULT_EVENT_BUFFER,
            hold: FileHold::WhileOpen,
        }
    }
}

impl EmbeddedStoreOptions {
    /// The defaults: the system clock, a 5 s lock timeout, 10,000 revisions
    /// of history, a background lease sweep every second, the file held
    /// open while the store is.
    pub fn new() -> Self {
        EmbeddedStoreOptions::default()
    }

    /// The clock lease expiry is measured with.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long to keep trying when another process holds the store file
    /// before failing with `Unavailable` (zero: try once).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How many of the latest revisions watches can replay; older history is
    /// dropped as new revisions commit. At least 1.
    pub fn history_limit(mut self, revisions: u64) -> Self {
        self.history_limit = revisions;
        self
    }

    /// How often a background thread deletes the keys of expired leases (and
    /// emits their delete events); `None` leaves that to the next write and
    /// to [`EmbeddedStore::sweep_expired`]. Expired keys are never visible
    /// to reads either way.
    pub fn sweep_interval(mut self, interval: Option<Duration>) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// How many committed revisions a live watcher may fall behind before it
    /// re-reads them from the changelog instead (1 to 1,048,576).
    pub fn event_buffer(mut self, revisions: usize) -> Self {
        self.event_buffer = revisions;
        self
    }

    /// How long the store keeps its file (and so redb's lock on it) open:
    /// while the store is, or only during each operation, so that other
    /// processes can use the store between them.
    pub fn hold(mut self, hold: FileHold) -> Self {
        self.hold = hold;
        self
    }

    /// Opens the store file at `path`, creating it and its parent directory
    /// if needed. Blocks for up to the lock timeout while another process
    /// holds the file.
    ///
    /// Errors: `InvalidArgument` (a zero history limit or event buffer),
    /// `Unavailable` (the file stays locked by another process, or cannot be
    /// created or read), `Internal` (the file is not a store of this format,
    /// or is corrupt).
    pub fn open(&self, path: &Path) -> Result<EmbeddedStore, StoreError> {
        if self.history_limit == 0 {
            return Err(StoreError::InvalidArgument(
                "the embedded store's history limit must be at least 1 revision".to_owned(),
            ));
        }
        if !(1..=MAX_EVENT_BUFFER).contains(&self.event_buffer) {
            return Err(StoreError::InvalidArgument(format!(
                "the embedded store's event buffer must hold 1 to {MAX_EVENT_BUFFER} revisions, not {}",
                self.event_buffer
            )));
        }
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Unavailable {
                what: format!("cannot create the state directory `{}`", parent.display()),
                source: Some(Box::new(source)),
            })?;
        }
        refuse_empty_file(path)?;
        let (events, _) = broadcast::channel(self.event_buffer);
        let foreign_events = events.clone();
        // Another process's commits reach this one's watchers through the
        // changelog, when a watcher learns that it is behind.
        let on_foreign = Box::new(move |revision| {
            let _ = foreign_events.send(Live::Behind(revision));
        });
        let file = StoreFile::open(path, self.hold, self.lock_timeout, on_foreign)?;
        let (stop_sweeper, sweeper_stopped) = mpsc::channel();
        let inner = Arc::new(Inner {
            file,
            clock: Arc::clone(&self.clock),
            history_limit: self.history_limit,
            writer: Mutex::new(()),
            queued: Mutex::new(Vec::new()),
            undurable: AtomicBool::new(false),
            events,
            _stop_sweeper: stop_sweeper,
        });
        if let Some(interval) = self.sweep_interval {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("zixiao-store-sweep".to_owned())
                .spawn(move || sweep_in_background(weak, interval, sweeper_stopped))
                .map_err(|source| {
                    StoreError::backend("cannot start the lease sweeper thread", source)
                })?;
        }
        Ok(EmbeddedStore { inner })
    }
}

/// Opens (or creates) the redb file, retrying with backoff while another process holds it.
fn open_database(path: &Path, lock_timeout: Duration) -> Result<Database, StoreError> {
    open_with(path, lock_timeout, |p: &Path| Database::create(p))
}

/// Opens the redb file with `open`, retrying with backoff while another
/// process (or a closing handle of this one) holds it.
fn open_with(
    path: &Path,
    lock_timeout: Duration,
    open: impl Fn(&Path) -> Result<Database, DatabaseError>,
) -> Result<Database, StoreError> {
    let deadline = Instant::now() + lock_timeout;
    let mut backoff = Duration::from_millis(10);
    loop {
        let opened = quiet::catch_quietly(|| open(path))
            .map_err(|payload| corrupt_file(path, payload.as_ref()))?;
        match opened {
            Ok(db) => return Ok(db),
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                let now = Instant::now();
                if now >= deadline {
                    let dir = path.parent().unwrap_or(path);
                    return Err(StoreError::Unavailable {
                        what: format!(
                            "the state directory `{}` is in use by another zixiao process \
                             (its store file `{}` stayed locked for {lock_timeout:?})",
                            dir.display(),
                            path.display()
                        ),
                        source: Some(Box::new(DatabaseError::DatabaseAlreadyOpen)),
                    });
                }
                std::thread::sleep(backoff.min(deadline - now));
                backoff = (backoff * 2).min(MAX_LOCK_BACKOFF);
            }
            // Short or malformed content is a damaged file, not an
            // unreachable one.
            Err(DatabaseError::Storage(StorageError::Io(source)))
                if !matches!(
                    source.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) =>
            {
                return Err(StoreError::Unavailable {
                    what: format!("cannot open the store file `{}`", path.display()),
                    source: Some(Box::new(source)),
                })
            }
            Err(source) => {
                return Err(damaged(path, "it is damaged or not a zixiao store", source))
            }
        }
    }
}

/// What to do about a damaged store file, for the messages that name one.
const DAMAGED_HELP: &str = "restore a backup with `zixiao state restore BACKUP`, or move the \
                            file away to start over with an empty store (everything it held \
                            is then forgotten)";

/// The error for a store file that cannot be used as it is.
fn damaged(
    path: &Path,
    why: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Backend {
        what: format!(
            "cannot open the store file `{}`: {why}; {DAMAGED_HELP}",
            path.display()
        ),
        source: source.into(),
    }
}

/// The error for a store file on which redb panicked while opening it.
fn corrupt_file(path: &Path, payload: &(dyn std::any::Any + Send)) -> StoreError {
    damaged(path, "it is damaged", RedbPanicked(panic_message(payload)))
}

/// Refuses a store file that exists but holds nothing: redb would silently
/// make it a new, empty store, and every stored intent would be lost
/// without a word. A missing file is a new store; an empty one is damage
/// (a truncation, a copy that failed).
fn refuse_empty_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(damaged(
            path,
            "it is not a regular file",
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )),
        Ok(meta) if meta.len() == 0 => Err(damaged(
            path,
            "it is empty (0 bytes), so what it held is lost",
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        )),
        _ => Ok(()),
    }
}

impl EmbeddedStore {
    /// Copies the store, as of one revision, into a new store file at `to`
    /// while it stays in use (writers carry on meanwhile), then checks the
    /// copy. `to` must not exist. Errors: `InvalidArgument` (`to` exists, or
    /// its directory does not), `Internal`.
    pub fn backup(&self, to: &Path) -> Result<StoreSummary, StoreError> {
        if to.exists() {
            return Err(StoreError::InvalidArgument(format!(
                "the backup file `{}` exists already; choose a new path",
                to.display()
            )));
        }
        let tmp = temporary_path(to)?;
        let copied = (|| {
            let copy = Database::create(&tmp).map_err(|e| {
                StoreError::backend(format!("cannot create `{}`", tmp.display()), e)
            })?;
            self.inner
                .file
                .with(|db| quiet::catch_quietly(|| tables::copy_all(db, &copy)))?
                .map_err(|payload| corrupt_file(self.inner.file.path(), payload.as_ref()))??;
            drop(copy);
            std::fs::rename(&tmp, to).map_err(|e| {
                StoreError::backend(format!("cannot move the backup to `{}`", to.display()), e)
            })?;
            sync_parent(to)
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied?;
        EmbeddedStore::check_file(to)
    }

    /// Checks the store file at `path` without changing it: redb's own
    /// integrity check, then every record of every table read and decoded.
    /// The file must not be in use. Errors: `NotFound` (no file),
    /// `Unavailable` (in use), `Internal` (damaged, naming what and what to do).
    pub fn check_file(path: &Path) -> Result<StoreSummary, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound(path.display().to_string()));
        }
        refuse_empty_file(path)?;
        let mut db = open_with(path, DEFAULT_LOCK_TIMEOUT, |p: &Path| Database::open(p))?;
        let intact = quiet::catch_quietly(|| db.check_integrity())
            .map_err(|payload| corrupt_file(path, payload.as_ref()))?
            .map_err(|e| damaged(path, "its pages fail redb's integrity check", e))?;
        if !intact {
            return Err(damaged(
                path,
                "its pages failed redb's integrity check (redb repaired what it could; \
                 check again, and compare with a backup)",
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            ));
        }
        quiet::catch_quietly(|| tables::verify(&db))
            .map_err(|payload| corrupt_file(path, payload.as_ref()))?
            .map_err(|e| damaged(path, "a record in it cannot be read", e))
    }

    /// Replaces the store file at `path` with the backup `from`, after
    /// checking the backup; the old file is kept beside it as
    /// `<path>.before-restore`. The store must not be in use. Errors:
    /// `NotFound` (no backup), `Unavailable` (the store is in use),
    /// `Internal` (the backup is damaged; nothing is changed then).
    pub fn restore_file(from: &Path, path: &Path) -> Result<StoreSummary, StoreError> {
        let report = EmbeddedStore::check_file(from)?;
        // Held while the file is swapped: nobody opens the old one meanwhile.
        // Waits out other processes' short holds of the file.
        let _lock = if path.exists() {
            match open_with(path, DEFAULT_LOCK_TIMEOUT, |p: &Path| Database::open(p)) {
                Err(StoreError::Unavailable {
                    source: Some(source),
                    ..
                }) if source.downcast_ref::<DatabaseError>().is_some_and(|e| {
                    matches!(e, DatabaseError::DatabaseAlreadyOpen)
                }) =>
                {
                    return Err(StoreError::Unavailable {
                        what: format!(
                            "the store file `{}` is in use by another zixiao process: stop it first",
                            path.display()
                        ),
                        source: Some(source),
                    })
                }
                Ok(db) => Some(db),
                // A damaged store is what a restore is for.
                Err(_) => None,
            }
        } else {
            None
        };
        let tmp = temporary_path(path)?;
        let swapped = (|| {
            std::fs::copy(from, &tmp)
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .map_err(|e| StoreError::backend(format!("cannot copy `{}`", from.display()), e))?;
            if path.exists() {
                let kept = path.with_extension("redb.before-restore");
                std::fs::rename(path, &kept).map_err(|e| {
                    StoreError::backend(format!("cannot keep `{}`", path.display()), e)
                })?;
            }
            std::fs::rename(&tmp, path).map_err(|e| {
                StoreError::backend(format!("cannot replace `{}`", path.display()), e)
            })?;
            sync_parent(path)
        })();
        if swapped.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        swapped.map(|()| report)
    }
}

/// A new path beside `path` for a file that is renamed over it when complete.
fn temporary_path(path: &Path) -> Result<PathBuf, StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(StoreError::InvalidArgument(format!(
            "the directory `{}` does not exist",
            dir.display()
        )));
    }
    let name = path
        .file_name()
        .map_or_else(|| "store".to_owned(), |n| n.to_string_lossy().into_owned());
    Ok(dir.join(format!(".{name}.{}.tmp", std::process::id())))
}

/// Makes a rename in `path`'s directory durable.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::backend(format!("cannot sync `{}`", dir.display()), e))
}

/// Deletes expired leases' keys every `interval` until the store is dropped
/// (which drops the sender of `stop`).
fn sweep_in_background(store: Weak<Inner>, interval: Duration, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        let Some(inner) = store.upgrade() else { return };
        // A failed sweep has nobody to report to; the next write sweeps
        // again and returns the error to its caller.
        let _ = catch_panic("the lease sweep", || inner.sweep_expired());
    }
}

/// A [`Txn`] waiting for the writer, and where to send its outcome.
struct QueuedCommit {
    txn: Txn,
    reply: oneshot::Sender<Result<Revision, StoreError>>,
}

/// Why a commit failed together with the others of its group.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct GroupAborted(String);

/// What the commit broadcast tells live watchers.
#[derive(Debug, Clone)]
pub(crate) enum Live {
    /// This process committed a revision.
    Committed(Arc<Committed>),
    /// Another process has committed up to this revision: the changelog has it.
    Behind(Revision),
}

/// The state shared by every clone of an [`EmbeddedStore`].
pub(crate) struct Inner {
    file: StoreFile,
    clock: Arc<dyn Clock>,
    history_limit: u64,
    /// Held for a whole write, from redb's `begin_write` to the broadcast.
    writer: Mutex<()>,
    /// Transactions waiting to be committed together by the next writer:
    /// those of [`Store::commit`] calls, and [staged](Store::stage) ones,
    /// which wait for the next commit or sync.
    queued: Mutex<Vec<QueuedCommit>>,
    /// Whether the last commit was deferred (not yet durable).
    undurable: AtomicBool,
    events: broadcast::Sender<Live>,
    /// Dropped with the store, which tells the sweeper thread to stop.
    _stop_sweeper: mpsc::Sender<()>,
}

impl Inner {
    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Runs `op` in one durable write transaction, after deleting expired
    /// leases. If `op` fails, nothing of the transaction is kept.
    fn write<T>(
        &self,
        op: impl FnOnce(&mut WriteState<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.write_locked(Durability::Immediate, op)
    }

    /// [`Inner::write`] with the given durability, for a caller that holds
    /// the writer mutex. A deferred write is made durable only by a file
    /// held open: one opened per operation may be closed before the next
    /// durable commit, so its writes are all durable.
    fn write_locked<T>(
        &self,
        durability: Durability,
        op: impl FnOnce(&mut WriteState<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deferred =
            durability == Durability::Deferred && self.file.hold() == FileHold::WhileOpen;
        let (outcome, committed) = self.file.with(|db| {
            let mut txn = db
                .begin_write()
                .map_err(|e| StoreError::backend("cannot start a write transaction", e))?;
            if deferred {
                txn.set_durability(redb::Durability::None);
            }
            let (outcome, committed) = {
                let mut state = WriteState::open(&txn)?;
                state.sweep(self.now_ms())?;
                let outcome = op(&mut state)?;
                (outcome, state.finish(self.history_limit)?)
            };
            txn.commit()
                .map_err(|e| StoreError::backend("cannot commit a write transaction", e))?;
            // A durable commit carries every deferred one before it.
            self.undurable.store(deferred, Ordering::Release);
            if let Some(last) = committed.last() {
                self.file.committed(last.revision);
            }
            Ok::<_, StoreError>((outcome, committed))
        })??;
        for revision in committed {
            // No receiver is not an error: nobody is watching.
            let _ = self.events.send(Live::Committed(Arc::new(revision)));
        }
        Ok(outcome)
    }

    /// Commits every queued [`Txn`] in one redb write transaction (so one
    /// `fsync` for the group), each at its own revision, and answers each.
    /// Called once per queued commit; later calls find the queue empty.
    fn commit_queued(&self) {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let queued = self.take_queued();
        if queued.is_empty() {
            return;
        }
        // One durable commit for the group unless every member may wait.
        let durability = Durability::of_all(queued.iter().map(|commit| commit.txn.durability));
        self.commit_group(queued, durability);
    }

    fn take_queued(&self) -> Vec<QueuedCommit> {
        std::mem::take(&mut *self.queued.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// [`Inner::commit_queued`]'s write of `queued`, for a caller that holds
    /// the writer mutex.
    fn commit_group(&self, queued: Vec<QueuedCommit>, durability: Durability) {
        let outcome = self.write_locked(durability, |state| {
            let mut results = Vec::with_capacity(queued.len());
            for commit in &queued {
                match state.apply(&commit.txn) {
                    Ok(revision) => results.push(Ok(revision)),
                    // A failed precondition is found before `apply` changes
                    // anything: that transaction alone fails.
                    Err(
                        error @ (StoreError::AlreadyExists(_)
                        | StoreError::NotFound(_)
                        | StoreError::Conflict { .. }),
                    ) => results.push(Err(error)),
                    // Anything else may leave a half-applied transaction:
                    // abort the whole group.
                    Err(error) => return Err(error),
                }
            }
            Ok(results)
        });
        match outcome {
            Ok(results) => {
                for (commit, result) in queued.into_iter().zip(results) {
                    // The caller may have stopped waiting; the commit stands.
                    let _ = commit.reply.send(result);
                }
            }
            Err(error) => {
                let cause = error.to_string();
                for commit in queued {
                    let _ = commit.reply.send(Err(StoreError::Backend {
                        what: "the commit was aborted with the group it was written in".to_owned(),
                        source: Box::new(GroupAborted(cause.clone())),
                    }));
                }
            }
        }
    }

    /// Writes what is staged and makes the deferred commits durable, in one
    /// durable commit (an empty one when nothing is staged), when there
    /// is anything to do.
    fn sync(&self) -> Result<(), StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let staged = self.take_queued();
        if !staged.is_empty() {
            self.commit_group(staged, Durability::Immediate);
            // A failed group answered its members; the file is as it was.
            return if self.undurable.load(Ordering::Acquire) {
                self.sync_file()
            } else {
                Ok(())
            };
        }
        if !self.undurable.load(Ordering::Acquire) {
            return Ok(());
        }
        self.sync_file()
    }

    /// An empty durable commit, which makes every deferred one durable.
    /// The caller holds the writer mutex.
    fn sync_file(&self) -> Result<(), StoreError> {
        self.file.with(|db| {
            db.begin_write()
                .map_err(|e| StoreError::backend("cannot sync the store", e))?
                .commit()
                .map_err(|e| StoreError::backend("cannot sync the store", e))
        })??;
        self.undurable.store(false, Ordering::Release);
        Ok(())
    }

    fn sweep_expired(&self) -> Result<Option<Revision>, StoreError> {
        if !self
            .file
            .with(|db| ReadState::begin(db)?.any_expired(self.now_ms()))??
        {
            return Ok(None);
        }
        self.write(|state| Ok(state.swept()))
    }
}

impl Drop for Inner {
    /// A store closed in order leaves nothing deferred behind.
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "deferred commits not synced as the store closed");
        }
    }
}

/// The embedded [`Store`]: one redb file, durable on every acknowledged
/// commit (but [deferred](zixiao_core::store::Durability::Deferred) ones),
/// with etcd-style revisions, watch history and leases.
///
/// Cloning is cheap and every clone is the same store. Its methods need a
/// tokio runtime (any flavour): writes run on the blocking pool.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.file.path())
            .field("history_limit", &self.inner.history_limit)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path` with the default
    /// [`EmbeddedStoreOptions`], creating its parent directory. Blocks for up
    /// to 5 s while another process holds the file.
    ///
    /// Errors: `Unavailable` (the state directory is in use by another
    /// zixiao process, or the file cannot be created), `Internal` (the file is
    /// corrupt or not a zixiao store).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use zixiao_core::store::{Precondition, Txn};
    /// use zixiao_core::Store;
    /// use zixiao_store::EmbeddedStore;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = EmbeddedStore::open(&dir.path().join("state.redb"))?;
    /// let revision = store
    ///     .commit(Txn::new().put("/greeting", b"hello".to_vec(), Precondition::Absent))
    ///     .await?;
    /// let kv = store.get("/greeting").await?.expect("just written");
    /// assert_eq!(kv.value, b"hello");
    /// assert_eq!(kv.mod_revision, revision);
    /// # Ok(()) }
    /// ```
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStoreOptions::new().open(path)
    }

    /// Opens the store at `path` measuring lease expiry with `clock`, for
    /// tests that move time by hand. Errors as [`EmbeddedStore::open`].
    pub fn open_with_clock(
        path: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStoreOptions::new().clock(clock).open(path)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        self.inner.file.path()
    }

    /// Deletes the keys of every expired lease now, with their delete events,
    /// and returns the revision of that deletion (`None`: nothing expired,
    /// or no expired lease had keys). Idempotent. Also done by every write
    /// and by the background sweep. Errors: `Internal`.
    pub async fn sweep_expired(&self) -> Result<Option<Revision>, StoreError> {
        self.blocking(|inner| inner.sweep_expired()).await
    }

    /// Drops watch history up to and including `through`: watching after an
    /// older revision then fails with [`StoreError::Compacted`]. Idempotent;
    /// the store also compacts itself to its history limit.
    ///
    /// Errors: `InvalidArgument` (`through` is past the current revision),
    /// `Internal`.
    pub async fn compact(&self, through: Revision) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|state| {
                if through > state.revision() {
                    return Err(StoreError::InvalidArgument(format!(
                        "cannot compact through revision {through}: the store is at revision {}",
                        state.revision()
                    )));
                }
                state.compact(through)
            })
        })
        .await
    }

    /// Runs `op` on tokio's blocking pool, where waiting for `fsync` stalls
    /// no async task.
    async fn blocking<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|e| StoreError::backend("a store write task failed", e))?
    }
}

/// redb panicked (on a corrupt file; it asserts some invariants of the
/// file rather than returning errors for them).
#[derive(Debug, thiserror::Error)]
#[error("redb found the file inconsistent ({0})")]
struct RedbPanicked(String);

/// Runs `op`, turning a panic inside redb into [`StoreError::Corrupt`] about
/// `what`, so a damaged file fails the call instead of the caller's thread.
/// (Writes run on the blocking pool, where a panic already becomes an error.)
pub(crate) fn catch_panic<T>(what: &str, op: impl FnOnce() -> T) -> Result<T, StoreError> {
    quiet::catch_quietly(op).map_err(|payload| StoreError::Corrupt {
        key: what.to_owned(),
        source: Box::new(RedbPanicked(panic_message(payload.as_ref()))),
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner
            .file
            .with(|db| catch_panic(key, || ReadState::begin(db)?.get(key, self.inner.now_ms()))?)?
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.file.with(|db| {
            catch_panic(prefix, || {
                let read = ReadState::begin(db)?;
                Ok(Listing {
                    items: read.list(prefix, self.inner.now_ms())?,
                    revision: read.revision()?,
                })
            })?
        })?
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        txn.validate()?;
        let (reply, outcome) = oneshot::channel();
        self.inner
            .queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(QueuedCommit { txn, reply });
        // This task may find its transaction already committed by another's
        // group; then it just returns. It runs even if this future is dropped.
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.commit_queued());
        outcome.await.map_err(|_| StoreError::Backend {
            what: "the store's writer stopped before answering".to_owned(),
            source: Box::new(GroupAborted("the writer task panicked".to_owned())),
        })?
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        watch::watch(&self.inner, prefix, after)
    }

    /// Queued with the commits, without a writer to commit it: the next
    /// commit's group (or a sync) takes it, in queue order, so before the
    /// writes of any commit made after this returns. A store file opened
    /// per operation commits it at once (every commit of one is durable,
    /// and the process may end before another).
    async fn stage(&self, txn: Txn) -> Result<Staged, StoreError> {
        txn.validate()?;
        if self.inner.file.hold() != FileHold::WhileOpen {
            return Ok(Staged::committed(self.commit(txn).await?));
        }
        let (reply, outcome) = oneshot::channel();
        self.inner
            .queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(QueuedCommit {
                txn: txn.deferred(),
                reply,
            });
        Ok(Staged::waiting(outcome))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidArgument(
                "a lease's TTL must be longer than zero".to_owned(),
            ));
        }
        // Round up, so a TTL under a millisecond does not expire at once.
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.blocking(move |inner| {
            let now = inner.now_ms();
            inner.write(|state| state.grant(ttl_ms, now))
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            let now = inner.now_ms();
            inner.write(|state| state.keep_alive(lease, now))
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.write(|state| state.revoke(lease).map(drop)))
            .await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.blocking(Inner::sync).await
    }
}
