//! [`Admission`]: how another crate adds its checks and writes to the one
//! transaction that creates an instance (a project's quota, say), and to
//! the one that updates it ([`Admission::admit_update`]).
//!
//! A create is one durable commit: the instance's record and name, its
//! placement and the node's allocation, and whatever each admission adds,
//! all compare-and-swap, all or nothing. Concurrent creates are gathered
//! into one transaction where their keys allow (see the placer), so an
//! admission reads what earlier creates of the same transaction wrote
//! through its [`StoreView`], and its writes to a key another create of
//! the transaction writes too are merged: the last value wins, the first
//! precondition stays. Written against the view, the natural code, "read
//! the usage, check it, put usage plus mine, expecting the revision I
//! read", is right alone and in a batch.
//!
//! ```
//! use async_trait::async_trait;
//! use zixiao_core::controller::{Admission, StoreView};
//! use zixiao_core::store::{Precondition, Txn};
//! use zixiao_core::{Error, Instance, Result};
//!
//! /// At most `limit` millicores per project (label `project`), counted at `/zixiao/usage/<project>`.
//! #[derive(Debug)]
//! struct CoreQuota { limit: u64 }
//!
//! #[async_trait]
//! impl Admission for CoreQuota {
//!     fn prefixes(&self) -> Vec<String> {
//!         vec!["/zixiao/usage/".to_owned()]
//!     }
//!
//!     async fn admit(&self, instance: &Instance, view: &dyn StoreView, txn: Txn) -> Result<Txn> {
//!         let project = instance.labels.get("project").cloned().unwrap_or_default();
//!         let key = format!("/zixiao/usage/{project}");
//!         let (used, precondition) = match view.get(&key) {
//!             Some(kv) => (
//!                 String::from_utf8_lossy(&kv.value).parse::<u64>().unwrap_or(0),
//!                 Precondition::Revision(kv.mod_revision),
//!             ),
//!             None => (0, Precondition::Absent),
//!         };
//!         let after = used + u64::from(instance.spec.cpus.millis());
//!         if after > self.limit {
//!             return Err(Error::ResourceExhausted(format!(
//!                 "project `{project}` would use {after} of its {} millicores", self.limit
//!             )));
//!         }
//!         Ok(txn.put(key, after.to_string().into_bytes(), precondition))
//!     }
//! }
//! ```

use std::fmt::Debug;

use async_trait::async_trait;

use crate::model::Instance;
use crate::store::{KeyValue, Txn};
use crate::Result;

/// What an [`Admission`] reads: the controller's cache of the keys under
/// its [`Admission::prefixes`], with the writes of the transaction being
/// built on top. Stale by at most the cache's lag; the writes' revisions
/// catch any change since.
pub trait StoreView: Send + Sync {
    /// The key as the transaction will find it: its pending value if an
    /// earlier create of the transaction writes it (with the revision its
    /// write expects), else as cached; `None` when absent. Only keys under
    /// the admissions' prefixes are cached.
    fn get(&self, key: &str) -> Option<KeyValue>;

    /// Calls `visit` with each instance the transaction will find: the
    /// cached ones, with the earlier creates (and placements) of the
    /// transaction in place of or besides them; never the instance being
    /// admitted. One pass over every cached instance, under the cache's
    /// read lock: keep `visit` short and do not call the view from it.
    ///
    /// The cache only moves forward, so read the keys your writes expect
    /// with [`StoreView::get`] first and visit after: the instances are
    /// then at least as new as those keys, and an instance committed after
    /// them changed a key your writes expect (if every create of the kind
    /// you count writes it) and fails the transaction. Read the other way
    /// round, an instance committed in between would be missed and still
    /// pass.
    fn for_each_instance(&self, visit: &mut dyn FnMut(&Instance));
}

/// A check and writes added to every create's transaction; set on the
/// [`ControllerBuilder`](crate::ControllerBuilder) with `admission`.
#[async_trait]
pub trait Admission: Send + Sync + Debug {
    /// The key prefixes (under `/zixiao/`) whose keys [`Admission::admit`]
    /// reads from its view; the controller's cache keeps them. Called once,
    /// when the controller is built. None by default.
    fn prefixes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Checks the create of `instance` (validated, placed or pending with
    /// the reason, not stored yet) and returns `txn`, the create's
    /// transaction so far, with this admission's writes added. Called once
    /// per attempt of a create, in the order admissions were added, on the
    /// placer's task: keep it short, and read what it needs from `view`.
    ///
    /// Must have no effect but its writes: a create is attempted again
    /// (with a fresh view) when its transaction loses a race, so `admit`
    /// may run several times for one create. Its writes should expect the
    /// revision they read ([`Precondition::Revision`](crate::store::Precondition)
    /// or `Absent`), so a stale view costs a retry, never a wrong count.
    ///
    /// Errors: any; the create fails with it (its kind reaches the caller:
    /// `ResourceExhausted` for a quota, `FailedPrecondition`,
    /// `InvalidArgument`), and only that create. One exception: a view
    /// found behind the store (a key the admission needs is in the store at
    /// a revision the cache has not shown yet) is
    /// [`StoreError::Conflict`](crate::store::StoreError) with `found` that
    /// revision; the create then waits for the cache to reach it and is
    /// admitted again.
    async fn admit(&self, instance: &Instance, view: &dyn StoreView, txn: Txn) -> Result<Txn>;

    /// Checks an update of a stored instance from `before` (as stored) to
    /// `after` (its new labels and spec, not stored yet; same id) and
    /// returns `txn`, the update's transaction so far, with this
    /// admission's writes added. Called once per attempt of an update
    /// (`instance update`), like [`Admission::admit`] and with the same
    /// rules; the view never visits the instance itself, in either
    /// version. The default admits every update unchanged: an admission
    /// that counts what instances hold overrides it, so that growth is
    /// counted through the same check as a create.
    ///
    /// Errors: as [`Admission::admit`]; the update fails with it and
    /// nothing is changed.
    async fn admit_update(
        &self,
        before: &Instance,
        after: &Instance,
        view: &dyn StoreView,
        txn: Txn,
    ) -> Result<Txn> {
        let _ = (before, after, view);
        Ok(txn)
    }
}
