//! [`InstanceLocks`]: keeping other processes off an instance while this one
//! changes it. Within a process the controller's work queue and the agents'
//! [`KeyedLock`](crate::KeyedLock)s serialize the work on one instance; a
//! deployment in which several processes converge instances of one store
//! with no daemon (the embedded deployment's commands) also needs that
//! across processes, or two of them could carry out one instance's create
//! at once and start two monitors for it. The controller takes an
//! instance's lock around every converge it does in the caller, and a
//! frontend takes it before it stores a change of an existing instance, so
//! a change refused because another process is busy with the instance has
//! changed nothing.

use std::fmt;

use async_trait::async_trait;

use crate::Result;

/// Locks on instances, shared by the processes that converge one store's
/// instances in their callers.
#[async_trait]
pub trait InstanceLocks: Send + Sync + fmt::Debug {
    /// Holds instance `id` (called `name` in messages) for `operation` (such
    /// as `instance.stop`, named to other processes that find it held) if no
    /// other process holds it now; re-entrant within this process (a second hold of an
    /// instance this process holds succeeds at once). Called before a
    /// change of an existing instance is stored. Errors: `Conflict` (another
    /// process holds it; the message names the instance and what that
    /// process runs), `Unavailable` (the lock cannot be taken at all).
    fn try_hold(&self, id: &str, name: &str, operation: &str) -> Result<InstanceHold>;

    /// Holds instance `id`, waiting (for a bounded time) while another
    /// process does; re-entrant like [`InstanceLocks::try_hold`]. Called
    /// around each converge in the caller. Errors: `Unavailable` (another
    /// process held it for the whole bound; named as for `try_hold`; or the
    /// lock cannot be taken at all).
    async fn hold(&self, id: &str, name: &str, operation: &str) -> Result<InstanceHold>;
}

/// Keeps an instance held (see [`InstanceLocks`]) until dropped.
pub struct InstanceHold {
    /// Only ever dropped: dropping it releases the instance.
    _guard: Box<dyn Send + Sync>,
}

impl InstanceHold {
    /// A hold kept by `guard`: the instance is released when it is dropped.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        InstanceHold {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for InstanceHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceHold").finish_non_exhaustive()
    }
}
