//! [`StoreFile`]: when the embedded store's redb file is open, and so when
//! redb's lock on it keeps every other process out of the store.
//!
//! redb lets one process at a time open a database file. A daemon holds the
//! file for its whole life ([`FileHold::WhileOpen`]). A command with no
//! daemon holds it only while a read, a write or a watch's catch-up runs
//! ([`FileHold::PerOperation`]): a command that waits for a runtime (a stop's
//! grace period, a boot, an image import) holds nothing meanwhile, and other
//! commands on the same state directory open the file between its
//! transactions. Revisions and compare-and-swap live in the file, so
//! interleaved writers of two processes stay as safe as two writers of one.
//!
//! Opening and closing a redb file costs a few `fsync`s, so a file held per
//! operation stays open for a moment ([`LINGER`]) after its last operation,
//! for the next one of the same burst (a command's writes come in bursts
//! between runtime calls), and never lingers once it has been open for
//! [`MAX_OPEN_STRETCH`], so a busy process cannot keep others out for long.
//!
//! What such a process cannot get from its own commit broadcast is the other
//! processes' commits: so each time the file is opened, a revision newer
//! than any this process knows is reported to the store (which wakes its
//! watchers to read the changelog).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redb::Database;
use zixiao_core::store::Revision;
use zixiao_core::StoreError;

use super::tables::{self, ReadState};
use super::{catch_panic, corrupt_file, open_database, quiet};

/// How long an [`EmbeddedStore`](super::EmbeddedStore) keeps its file, and
/// with it redb's exclusive lock, open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileHold {
    /// From open until the store is dropped: other processes cannot open the
    /// store meanwhile (they wait for the lock timeout, then fail
    /// `Unavailable`). For a daemon, which is then the store's only writer.
    #[default]
    WhileOpen,
    /// Only while one of its reads, writes or watch catch-ups runs: other
    /// processes open the store between them. For commands that share a
    /// state directory with no daemon. Each operation then opens the file
    /// (waiting up to the lock timeout while another process holds it for
    /// its own short operation), and the file is closed when no operation
    /// of this process is left.
    PerOperation,
}

/// How long a file held per operation stays open after its last operation.
pub(crate) const LINGER: Duration = Duration::from_millis(20);

/// After being open this long, a file held per operation is closed as soon
/// as no operation uses it, however soon the next one comes.
pub(crate) const MAX_OPEN_STRETCH: Duration = Duration::from_millis(200);

/// Called with a revision another process committed, found on opening the file.
pub(crate) type OnForeignRevision = Box<dyn Fn(Revision) + Send + Sync>;

/// The store's redb file, opened as its [`FileHold`] says.
pub(crate) struct StoreFile {
    path: PathBuf,
    hold: FileHold,
    lock_timeout: Duration,
    shared: Arc<Shared>,
    /// The newest revision this process knows the file to hold: its own
    /// last commit, or the file's revision when it last opened it.
    known: AtomicU64,
    on_foreign: OnForeignRevision,
}

/// What the store and the thread that closes an idle file share.
#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    /// Signalled when the file becomes idle, and when the store is dropped.
    idle: Condvar,
}

/// The open database, if any, and how many operations of this process use it.
#[derive(Default)]
struct Slot {
    db: Option<Arc<Database>>,
    users: usize,
    /// When the file was opened.
    opened: Option<Instant>,
    /// When its last operation finished (while no other uses it).
    idle_since: Option<Instant>,
    /// The store is dropped: close the file and stop.
    closing: bool,
}

impl Slot {
    /// Closes the file if it is open and no operation uses it. Done with
    /// the slot locked, so this process opens it again only once it is
    /// closed. Dropping redb's handle writes its allocator state and
    /// releases the file lock.
    fn close_idle(&mut self) {
        if self.users == 0 {
            self.db = None;
            self.opened = None;
            self.idle_since = None;
        }
    }
}

/// Closes the file held per operation once it has been idle for [`LINGER`]
/// (at once past [`MAX_OPEN_STRETCH`]), until the store is dropped.
fn close_when_idle(shared: Arc<Shared>) {
    let mut slot = shared.slot.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if slot.closing {
            slot.close_idle();
            return;
        }
        let deadline = match (&slot.db, slot.users, slot.idle_since, slot.opened) {
            (Some(_), 0, Some(idle), Some(opened)) => {
                (idle + LINGER).min((opened + MAX_OPEN_STRETCH).max(idle))
            }
            _ => {
                slot = shared
                    .idle
                    .wait(slot)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
        };
        let now = Instant::now();
        if now >= deadline {
            slot.close_idle();
            continue;
        }
        slot = shared
            .idle
            .wait_timeout(slot, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

impl StoreFile {
    /// Opens the file at `path` (creating it), creates or checks its tables,
    /// and keeps it open or closes it again as `hold` says. Errors as
    /// [`EmbeddedStoreOptions::open`](super::EmbeddedStoreOptions::open).
    pub(crate) fn open(
        path: &Path,
        hold: FileHold,
        lock_timeout: Duration,
        on_foreign: OnForeignRevision,
    ) -> Result<StoreFile, StoreError> {
        let db = open_database(path, lock_timeout)?;
        quiet::catch_quietly(|| tables::initialise(&db, &path.display().to_string()))
            .map_err(|payload| corrupt_file(path, payload.as_ref()))??;
        let known = catch_panic("the store's revision", || ReadState::begin(&db)?.revision())??;
        let shared = Arc::new(Shared::default());
        match hold {
            FileHold::WhileOpen => {
                let mut slot = shared.slot.lock().unwrap_or_else(PoisonError::into_inner);
                slot.db = Some(Arc::new(db));
            }
            FileHold::PerOperation => {
                drop(db);
                let closer = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("zixiao-store-close".to_owned())
                    .spawn(move || close_when_idle(closer))
                    .map_err(|source| {
                        StoreError::backend("cannot start the store file's closer thread", source)
                    })?;
            }
        }
        Ok(StoreFile {
            path: path.to_owned(),
            hold,
            lock_timeout,
            shared,
            known: AtomicU64::new(known),
            on_foreign,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// How long the file is held open.
    pub(crate) fn hold(&self) -> FileHold {
        self.hold
    }

    /// Runs `op` on the open database, opening the file first if no other
    /// operation of this process has it open. With
    /// [`FileHold::PerOperation`] it is closed once no operation of this
    /// process has used it for a moment.
    /// Errors: opening the file's (`Unavailable` while another process
    /// keeps it locked past the lock timeout).
    pub(crate) fn with<T>(&self, op: impl FnOnce(&Database) -> T) -> Result<T, StoreError> {
        let user = self.enter()?;
        Ok(op(&user.db))
    }

    /// Records that this process committed `revision`.
    pub(crate) fn committed(&self, revision: Revision) {
        self.known.fetch_max(revision, Ordering::AcqRel);
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.shared
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more user of the database, opening it if needed. The slot
    /// stays locked while the file is opened, so this process never opens
    /// it twice (redb would refuse the second open).
    fn enter(&self) -> Result<User<'_>, StoreError> {
        let mut slot = self.slot();
        let db = match &slot.db {
            Some(db) => Arc::clone(db),
            None => {
                let db = Arc::new(open_database(&self.path, self.lock_timeout)?);
                slot.db = Some(Arc::clone(&db));
                slot.opened = Some(Instant::now());
                self.check_foreign(&db);
                db
            }
        };
        slot.users += 1;
        slot.idle_since = None;
        Ok(User {
            file: self,
            db: std::mem::ManuallyDrop::new(db),
        })
    }

    /// Reports the file's revision if another process committed past what
    /// this one knows. A file that cannot be read here fails the operation
    /// that opened it instead, with its own error.
    fn check_foreign(&self, db: &Database) {
        let Ok(Ok(revision)) =
            catch_panic("the store's revision", || ReadState::begin(db)?.revision())
        else {
            return;
        };
        if self.known.fetch_max(revision, Ordering::AcqRel) < revision {
            (self.on_foreign)(revision);
        }
    }
}

/// One operation's use of the open database, given back when dropped
/// (also when the operation panics).
struct User<'a> {
    file: &'a StoreFile,
    /// Dropped first on leaving, so that the slot's handle is then the last
    /// one and closing it closes the file.
    db: std::mem::ManuallyDrop<Arc<Database>>,
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        // SAFETY: `db` is not used again: this is the end of `self`.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.db) };
        let mut slot = self.file.slot();
        slot.users = slot.users.saturating_sub(1);
        if slot.users == 0 && self.file.hold == FileHold::PerOperation {
            slot.idle_since = Some(Instant::now());
            self.file.shared.idle.notify_all();
        }
    }
}

impl Drop for StoreFile {
    fn drop(&mut self) {
        let mut slot = self.slot();
        slot.closing = true;
        slot.close_idle();
        self.shared.idle.notify_all();
    }
}
