//! [`KeyedLock`]: mutual exclusion per key (an instance id), so work on one
//! instance is serialized while work on different instances runs in
//! parallel. The controller holds one around each converge, and every
//! node's agent one around each runtime call, so no runtime ever sees two
//! concurrent creates (or a create and a delete) of the same instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

/// A set of async mutexes, one per key, made on first use and dropped when
/// nobody holds or waits for them, so it never grows with keys long gone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let locks = zixiao_core::KeyedLock::default();
/// let first = locks.lock("web").await;
/// assert!(locks.try_lock("web").is_none(), "held");
/// assert!(locks.try_lock("db").is_some(), "another key is free");
/// drop(first);
/// assert!(locks.try_lock("web").is_some());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct KeyedLock {
    keys: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds one key of a [`KeyedLock`] until dropped.
#[derive(Debug)]
pub struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: String,
    keys: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl KeyedLock {
    fn keys(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.keys().entry(key.to_owned()).or_default().clone()
    }

    /// Waits until nobody else holds `key`, then holds it. Fair: waiters
    /// get the key in the order they asked.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = self.entry(key);
        let guard = mutex.lock_owned().await;
        self.guard(key, guard)
    }

    /// Holds `key` if nobody does now.
    pub fn try_lock(&self, key: &str) -> Option<KeyGuard> {
        let mutex = self.entry(key);
        match mutex.try_lock_owned() {
            Ok(guard) => Some(self.guard(key, guard)),
            // The failed try consumed its `Arc`; nothing else to undo.
            Err(_) => None,
        }
    }

    fn guard(&self, key: &str, guard: OwnedMutexGuard<()>) -> KeyGuard {
        KeyGuard {
            guard: Some(guard),
            key: key.to_owned(),
            keys: self.keys.clone(),
        }
    }

    /// How many keys are held or waited for now.
    pub fn len(&self) -> usize {
        self.keys().len()
    }

    /// Whether no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops `key`'s mutex when only the map refers to it: nobody holds it and
/// nobody waits (a waiter clones the `Arc` under the map's lock first).
fn forget_if_unused(keys: &mut HashMap<String, Arc<tokio::sync::Mutex<()>>>, key: &str) {
    if keys.get(key).is_some_and(|m| Arc::strong_count(m) == 1) {
        keys.remove(key);
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        // Released first, so the count below no longer includes this guard.
        drop(self.guard.take());
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        forget_if_unused(&mut keys, &self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_per_key_and_nothing_left_behind() {
        let locks = KeyedLock::default();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside, most) = (locks.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _held = locks.lock("web").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "two holders at once");
        assert!(locks.is_empty(), "{} keys left", locks.len());
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let locks = KeyedLock::default();
        let _web = locks.lock("web").await;
        let db = tokio::time::timeout(Duration::from_secs(5), locks.lock("db")).await;
        assert!(db.is_ok(), "`db` waited for `web`");
        assert!(locks.try_lock("web").is_none());
        assert_eq!(locks.len(), 2);
    }
}
