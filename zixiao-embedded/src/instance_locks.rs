//! [`InstanceLockFiles`]: the embedded deployment's [`InstanceLocks`], one
//! file per instance under `<state dir>/locks/`, locked with `flock`. The
//! kernel drops a process's locks when it ends, however it ends (`kill -9`
//! included), so no lock outlives its holder and nothing needs cleaning up
//! after a crash. The holder writes its pid and operation into the file, for
//! the message of a process that finds the instance held.
//!
//! A lock file stays when its instance is deleted (removing it safely would
//! need every taker to re-check the path after locking); each is a few bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zixiao_core::{Error, InstanceHold, InstanceLocks, Result};

/// How long [`InstanceLockFiles::hold`] waits by default for another
/// process to finish with an instance: longer than a stop's default grace
/// period and a boot's wait, short enough that a stuck process is reported.
pub const DEFAULT_INSTANCE_LOCK_WAIT: Duration = Duration::from_secs(120);

/// The longest pause between two looks at a held instance's lock.
const MAX_POLL: Duration = Duration::from_millis(200);

/// The instances this process holds: their locked files and how many holds
/// of this process share each.
type Held = Arc<Mutex<HashMap<String, (File, usize)>>>;

/// [`InstanceLocks`] kept as `flock`ed files in a state directory.
#[derive(Debug, Clone)]
pub struct InstanceLockFiles {
    dir: PathBuf,
    wait: Duration,
    held: Held,
}

/// What one attempt to lock an instance found.
enum Attempt {
    Held(InstanceHold),
    /// Another process holds it; what it wrote about itself.
    Busy(String),
}

impl InstanceLockFiles {
    /// Locks in `<state_dir>/locks/`, waiting up to
    /// [`DEFAULT_INSTANCE_LOCK_WAIT`] in [`InstanceLocks::hold`].
    pub fn new(state_dir: &Path) -> Self {
        InstanceLockFiles {
            dir: state_dir.join("locks"),
            wait: DEFAULT_INSTANCE_LOCK_WAIT,
            held: Held::default(),
        }
    }

    /// Waits up to `wait` in [`InstanceLocks::hold`] (zero: try once).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, (File, usize)>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks instance `id` if no other process holds it.
    fn attempt(&self, id: &str, operation: &str) -> Result<Attempt> {
        let mut held = self.held();
        if let Some((_, holds)) = held.get_mut(id) {
            *holds += 1;
            return Ok(Attempt::Held(self.release_later(id)));
        }
        let path = self.path(id)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        // SAFETY: the descriptor belongs to `file`, which is open for the
        // whole call; the lock lives as long as the open file description.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io_error(&path, error));
            }
            let mut holder = String::new();
            // What it wrote about itself; it may be writing just now.
            let _ = file.take(256).read_to_string(&mut holder);
            let holder = holder.trim();
            return Ok(Attempt::Busy(if holder.is_empty() {
                "a process that has not said what it does yet".to_owned()
            } else {
                holder.to_owned()
            }));
        }
        let about = format!("pid {}, {operation}", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(about.as_bytes()))
            .map_err(|e| io_error(&path, e))?;
        held.insert(id.to_owned(), (file, 1));
        Ok(Attempt::Held(self.release_later(id)))
    }

    /// The hold of `id` that gives one of this process's holds back when dropped.
    fn release_later(&self, id: &str) -> InstanceHold {
        InstanceHold::new(Release {
            id: id.to_owned(),
            held: Arc::clone(&self.held),
        })
    }

    /// The lock file of instance `id`. Ids are made by the controller; one
    /// that could leave the directory or name a hidden file is refused.
    fn path(&self, id: &str) -> Result<PathBuf> {
        let safe = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !safe {
            return Err(Error::Internal(format!(
                "the instance id `{id}` cannot name a lock file"
            )));
        }
        Ok(self.dir.join(format!("instance-{id}.lock")))
    }
}

/// Gives one hold of an instance back; the last one closes its lock file,
/// which releases the lock.
struct Release {
    id: String,
    held: Held,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, holds)) = held.get_mut(&self.id) {
            *holds -= 1;
            if *holds == 0 {
                held.remove(&self.id);
            }
        }
    }
}

#[async_trait]
impl InstanceLocks for InstanceLockFiles {
    fn try_hold(&self, id: &str, name: &str, operation: &str) -> Result<InstanceHold> {
        match self.attempt(id, operation)? {
            Attempt::Held(hold) => Ok(hold),
            Attempt::Busy(holder) => Err(Error::Conflict(format!(
                "instance `{name}` is being changed by another zixiao process ({holder}); \
                 nothing was changed: try again once that has finished"
            ))),
        }
    }

    async fn hold(&self, id: &str, name: &str, operation: &str) -> Result<InstanceHold> {
        let deadline = Instant::now() + self.wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let holder = match self.attempt(id, operation)? {
                Attempt::Held(hold) => return Ok(hold),
                Attempt::Busy(holder) => holder,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable {
                    what: format!(
                        "instance `{name}` (another zixiao process, {holder}, kept it busy \
                         for {:?})",
                        self.wait
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

/// A lock file that cannot be made or locked: nothing else can stand in
/// for it, so the operation fails, keeping the cause.
fn io_error(path: &Path, error: std::io::Error) -> Error {
    Error::Unavailable {
        what: format!("the instance lock file `{}`", path.display()),
        source: Some(Box::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::ErrorKind;

    // Two `InstanceLockFiles` of one directory stand for two processes:
    // `flock` locks belong to open files, so they exclude each other just
    // as two processes' would.

    #[tokio::test]
    async fn another_process_is_refused_naming_the_instance_and_the_operation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = InstanceLockFiles::new(dir.path());
        let theirs = InstanceLockFiles::new(dir.path()).wait(Duration::ZERO);

        let held = ours.try_hold("id-1", "web", "instance.stop").expect("free");
        let again = ours
            .try_hold("id-1", "web", "instance.start")
            .expect("re-entrant within a process");
        let refused = theirs
            .try_hold("id-1", "web", "instance.start")
            .expect_err("held by the other");
        assert_eq!(refused.kind(), ErrorKind::Conflict);
        let message = refused.to_string();
        assert!(
            message.contains("instance `web`")
                && message.contains(&format!("pid {}, instance.stop", std::process::id()))
                && message.contains("nothing was changed"),
            "{message}"
        );
        let waited = theirs
            .hold("id-1", "web", "a converge")
            .await
            .expect_err("still held after the wait");
        assert_eq!(waited.kind(), ErrorKind::Unavailable, "{waited}");
        assert!(
            theirs.try_hold("id-2", "db", "instance.stop").is_ok(),
            "another instance is free"
        );

        drop(held);
        assert!(
            theirs.try_hold("id-1", "web", "instance.start").is_err(),
            "one hold of this process is left"
        );
        drop(again);
        let taken = theirs
            .hold("id-1", "web", "instance.start")
            .await
            .expect("free once every hold is dropped");
        drop(taken);
    }

    #[test]
    fn an_id_that_cannot_name_a_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let locks = InstanceLockFiles::new(dir.path());
        for id in ["", "../x", ".hidden", "a/b"] {
            assert!(locks.try_hold(id, "x", "instance.stop").is_err(), "{id:?}");
        }
        assert!(!dir.path().join("x").exists());
    }
}
