//! The [`Store`] trait: a small revisioned key-value store with
//! all-or-nothing transactions, watches and leases, in the shape of etcd.
//!
//! Backends live in `zixiao-store` (the embedded on-disk store, and etcd) and
//! pass one conformance suite (`zixiao-testing`). The required core is five
//! calls ([`Store::get`], [`Store::list`], [`Store::commit`], [`Store::watch`]
//! and the lease calls); typed helpers over JSON objects are provided methods
//! of [`StoreExt`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ErrorKind;

/// A store revision. Every committed transaction bumps the store's revision
/// by one; each key remembers the revision of its last change.
pub type Revision = u64;

/// A lease's id.
pub type LeaseId = u64;

/// One key and its value, with the revisions that changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: Revision,
    /// The revision that last changed it; compare-and-swap compares this.
    pub mod_revision: Revision,
    /// The lease the key is attached to; the key goes when the lease expires.
    pub lease: Option<LeaseId>,
}

/// The keys under a prefix, as of one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The keys, in key order.
    pub items: Vec<KeyValue>,
    /// The store's revision when the listing was read; watch from here to miss nothing.
    pub revision: Revision,
}

/// What a write in a transaction expects of its key first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing.
    None,
    /// The key must not exist.
    Absent,
    /// The key must exist, last changed at exactly this revision.
    Revision(Revision),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`, attached to `lease` if given.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// What the key must be first.
        precondition: Precondition,
        /// Lease to attach the key to.
        lease: Option<LeaseId>,
    },
    /// Remove `key`; removing a missing key with [`Precondition::None`] is not an error.
    Delete {
        /// The key.
        key: String,
        /// What the key must be first.
        precondition: Precondition,
    },
    /// Change nothing at `key`, but fail the transaction unless
    /// `precondition` holds: a write elsewhere that is only valid while
    /// `key` is as it was read.
    Check {
        /// The key.
        key: String,
        /// What the key must be.
        precondition: Precondition,
    },
}

impl Write {
    /// The key this write touches.
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } | Write::Check { key, .. } => key,
        }
    }

    /// What the key must be before the transaction applies.
    pub fn precondition(&self) -> Precondition {
        match self {
            Write::Put { precondition, .. }
            | Write::Delete { precondition, .. }
            | Write::Check { precondition, .. } => *precondition,
        }
    }
}

/// When a committed transaction must be on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Before [`Store::commit`] returns.
    #[default]
    Immediate,
    /// With the store's next immediate commit or [`Store::sync`], whichever
    /// comes first; until then a crash (of the process or the host) may
    /// lose it, with the deferred commits after it, but never an earlier
    /// immediate one.
    /// Reads and watches see it at once all the same. For records of
    /// something a durable commit usually follows at once, such as the
    /// audit record of a change: one `fsync` then makes both durable.
    /// A store that makes every commit durable anyway (etcd) ignores it.
    Deferred,
}

impl Durability {
    /// The durability of one commit that carries several: deferred only
    /// when every one of them may be (an empty group is deferred).
    pub fn of_all(members: impl IntoIterator<Item = Durability>) -> Durability {
        if members.into_iter().all(|d| d == Durability::Deferred) {
            Durability::Deferred
        } else {
            Durability::Immediate
        }
    }
}

/// A transaction handed to [`Store::stage`], and how it ended once the
/// write that carried it is made.
#[derive(Debug)]
pub struct Staged(StagedState);

#[derive(Debug)]
enum StagedState {
    Known(Option<Result<Revision, StoreError>>),
    Waiting(tokio::sync::oneshot::Receiver<Result<Revision, StoreError>>),
}

impl Staged {
    /// A transaction already committed, at `revision`.
    pub fn committed(revision: Revision) -> Self {
        Staged(StagedState::Known(Some(Ok(revision))))
    }

    /// A transaction whose outcome `answer` brings: for stores that
    /// implement [`Store::stage`] themselves.
    pub fn waiting(answer: tokio::sync::oneshot::Receiver<Result<Revision, StoreError>>) -> Self {
        Staged(StagedState::Waiting(answer))
    }

    /// How it ended, once: `None` while the write that carries it is still
    /// to be made (and after the outcome was taken). A store dropped before
    /// making it answers `Unavailable`.
    pub fn outcome(&mut self) -> Option<Result<Revision, StoreError>> {
        match &mut self.0 {
            StagedState::Known(outcome) => outcome.take(),
            StagedState::Waiting(answer) => match answer.try_recv() {
                Ok(outcome) => {
                    self.0 = StagedState::Known(None);
                    Some(outcome)
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    self.0 = StagedState::Known(None);
                    Some(Err(StoreError::Unavailable {
                        what: "the store closed before it wrote a staged transaction".to_owned(),
                        source: None,
                    }))
                }
            },
        }
    }
}

/// Writes applied all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The writes, each with its precondition.
    pub writes: Vec<Write>,
    /// When the writes must be on disk.
    pub durability: Durability,
}

impl Txn {
    /// Checks what every store refuses the same way: no put or delete, an
    /// empty key, a key written twice, or a check without a precondition.
    /// Errors: `InvalidArgument`.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self
            .writes
            .iter()
            .all(|write| matches!(write, Write::Check { .. }))
        {
            return Err(StoreError::InvalidArgument(
                "a transaction needs at least one put or delete".to_owned(),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.writes.len());
        for write in &self.writes {
            let key = write.key();
            if key.is_empty() {
                return Err(StoreError::InvalidArgument(
                    "a key must not be empty".to_owned(),
                ));
            }
            if !seen.insert(key) {
                return Err(StoreError::InvalidArgument(format!(
                    "key `{key}` is written twice in one transaction"
                )));
            }
            if matches!(write, Write::Check { .. }) && write.precondition() == Precondition::None {
                return Err(StoreError::InvalidArgument(format!(
                    "the check of key `{key}` needs a precondition"
                )));
            }
        }
        Ok(())
    }

    /// An empty transaction.
    pub fn new() -> Self {
        Txn::default()
    }

    /// This transaction, made durable only with a later commit or sync
    /// (see [`Durability::Deferred`]).
    pub fn deferred(mut self) -> Self {
        self.durability = Durability::Deferred;
        self
    }

    /// Adds a put of `value` at `key` if `precondition` holds.
    pub fn put(
        mut self,
        key: impl Into<String>,
        value: Vec<u8>,
        precondition: Precondition,
    ) -> Self {
        self.writes.push(Write::Put {
            key: key.into(),
            value,
            precondition,
            lease: None,
        });
        self
    }

    /// Adds a put attached to `lease`.
    pub fn put_with_lease(
        mut self,
        key: impl Into<String>,
        value: Vec<u8>,
        precondition: Precondition,
        lease: LeaseId,
    ) -> Self {
        self.writes.push(Write::Put {
            key: key.into(),
            value,
            precondition,
            lease: Some(lease),
        });
        self
    }

    /// Adds a delete of `key` if `precondition` holds.
    pub fn delete(mut self, key: impl Into<String>, precondition: Precondition) -> Self {
        self.writes.push(Write::Delete {
            key: key.into(),
            precondition,
        });
        self
    }

    /// Makes the transaction fail unless `precondition` holds for `key`,
    /// which it leaves as it is.
    pub fn check(mut self, key: impl Into<String>, precondition: Precondition) -> Self {
        self.writes.push(Write::Check {
            key: key.into(),
            precondition,
        });
        self
    }
}

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (explicitly or by lease expiry); `prev` is its last value.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
        /// The value it had before, when the backend still has it.
        prev: Option<Vec<u8>>,
    },
}

impl WatchEvent {
    /// The revision at which the event happened.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The key it is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// What a whole-store check or backup found: the figures a person compares
/// with what they expect to be there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreSummary {
    /// The store's revision.
    pub revision: Revision,
    /// Keys stored.
    pub keys: u64,
    /// Revisions of history kept for watches.
    pub history: u64,
    /// Leases granted and not yet revoked or expired.
    pub leases: u64,
}

/// A stream of changes under a prefix, in revision order.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such key (or lease).
    #[error("`{0}` not found in the store")]
    NotFound(String),
    /// The key exists already.
    #[error("`{0}` already exists in the store")]
    AlreadyExists(String),
    /// A precondition failed: someone else changed the key first.
    #[error("`{key}` changed concurrently (expected revision {expected}, found {found})")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the writer expected.
        expected: Revision,
        /// The revision found (0: absent).
        found: Revision,
    },
    /// A watch asked for history the store no longer keeps.
    #[error("revision {requested} was compacted; the oldest kept is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still kept.
        oldest: Revision,
    },
    /// The request itself is invalid (an empty key, a zero TTL, a duplicate key in one txn).
    #[error("invalid store request: {0}")]
    InvalidArgument(String),
    /// The backend cannot be reached or is busy.
    #[error("store unavailable: {what}")]
    Unavailable {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A commit may or may not have been applied: the backend was reached
    /// but its answer was lost (a timeout, a connection dropped mid-call).
    /// Whatever the commit would have made must be kept until a later read
    /// tells whether it was applied; undoing it now could hand out twice
    /// what the commit recorded as taken.
    #[error("store outcome unknown: {what}")]
    OutcomeUnknown {
        /// What was tried, and what was lost.
        what: String,
    },
    /// A stored value cannot be decoded.
    #[error("stored value at `{key}` is corrupt")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoding error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend failed in a way the caller cannot fix.
    #[error("store backend failed: {what}")]
    Backend {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            StoreError::Conflict { .. } => ErrorKind::Conflict,
            StoreError::Compacted { .. } => ErrorKind::FailedPrecondition,
            StoreError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            StoreError::Unavailable { .. } | StoreError::OutcomeUnknown { .. } => {
                ErrorKind::Unavailable
            }
            StoreError::Corrupt { .. } | StoreError::Backend { .. } => ErrorKind::Internal,
        }
    }

    /// A [`StoreError::Backend`] wrapping `source`.
    pub fn backend(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// A revisioned key-value store with transactions, watches and leases.
///
/// Keys are UTF-8 paths such as `/zixiao/instances/<id>`. Implementations must
/// be safe to share between threads and tasks, and durable: a transaction
/// whose `commit` returned `Ok` survives a crash, unless it asked for
/// [`Durability::Deferred`] and no immediate commit or sync followed.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Reads one key. Called on every lookup; never changes anything.
    ///
    /// Returns `Ok(None)` for a missing key. Errors: `Unavailable`, `Internal`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key starting with `prefix`, in key order, with the revision
    /// the listing reflects. Errors: `Unavailable`, `Internal`.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Applies every write of `txn` if all their preconditions hold, and none
    /// of them otherwise. Returns the new store revision.
    ///
    /// Not idempotent: retrying a commit whose outcome is unknown must re-read
    /// first. Errors: `AlreadyExists` (an [`Precondition::Absent`] key exists),
    /// `NotFound` (a [`Precondition::Revision`] key is missing, or a lease is
    /// unknown), `Conflict` (a revision differs), `InvalidArgument` (empty
    /// transaction, empty key, the same key twice), `Unavailable`, `Internal`.
    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError>;

    /// Streams every change under `prefix` after revision `after`, in order,
    /// then live changes as they commit. Pass a [`Listing::revision`] to
    /// continue from a listing without a gap.
    ///
    /// Errors: `FailedPrecondition` ([`StoreError::Compacted`]) when that
    /// history is gone, `Unavailable`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// Grants a lease that expires `ttl` after its last renewal. Keys put with
    /// it are deleted when it expires or is revoked. Errors: `InvalidArgument`
    /// (a zero TTL), `Unavailable`.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease for another TTL. Idempotent. Errors: `NotFound` once the
    /// lease has expired or was revoked, `Unavailable`.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Revokes a lease and deletes its keys. Idempotent: an unknown lease is not an error.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Makes every commit acknowledged so far durable, deferred ones too,
    /// and writes what was [staged](Store::stage). Idempotent. The default
    /// does nothing: for a store whose every commit is durable when
    /// acknowledged and that stages nothing. Errors: `Unavailable`,
    /// `Internal`.
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Hands `txn` to the store to be written in the same atomic write as
    /// the next [`Store::commit`] or [`Store::sync`] that starts after this
    /// returns (or as the store closes), before that commit's own writes:
    /// no commit made later can be durable without it. Nothing of it is
    /// visible before; [`Staged::outcome`] says how it ended. It is as
    /// durable as the write that carried it.
    ///
    /// For a record that must be stored before the change it describes (an
    /// audit record) without a write of its own: the change's commit
    /// carries it. Its preconditions should be ones no other writer can
    /// break (a key only its writer uses), for a failure comes to light
    /// only after the change was made.
    ///
    /// The default commits `txn` at once, [deferred](Durability::Deferred),
    /// and fails as [`Store::commit`] does. Errors: `InvalidArgument` (an
    /// empty transaction, an empty key, the same key twice).
    async fn stage(&self, txn: Txn) -> Result<Staged, StoreError> {
        let revision = self.commit(txn.deferred()).await?;
        Ok(Staged::committed(revision))
    }
}

/// A JSON object kept in the store under a fixed prefix, with its revision.
pub trait StoredObject: Serialize + DeserializeOwned + Send + Sync {
    /// The prefix of every key of this kind, ending in `/`.
    const PREFIX: &'static str;
    /// What people call this kind of object in messages (`instance`).
    const KIND: &'static str;

    /// The object's id, the last part of its key.
    fn id(&self) -> &str;

    /// Records the store revision the object was read at.
    fn set_revision(&mut self, revision: Revision);

    /// The revision the object was read at (0 for a new object).
    fn revision(&self) -> Revision;

    /// The key for `id`.
    fn key_for(id: &str) -> String {
        format!("{}{id}", Self::PREFIX)
    }
}

/// Typed helpers over any [`Store`]: decode, encode, filter.
#[async_trait]
pub trait StoreExt: Store {
    /// Reads and decodes the object `id`. Errors as [`Store::get`], plus
    /// `Internal` for an undecodable value.
    async fn get_object<T: StoredObject>(&self, id: &str) -> Result<Option<T>, StoreError> {
        match self.get(&T::key_for(id)).await? {
            Some(kv) => decode::<T>(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// Reads and decodes every object of the kind that `filter` accepts, in
    /// id order, with the listing's revision.
    async fn list_objects<T, F>(&self, filter: F) -> Result<(Vec<T>, Revision), StoreError>
    where
        T: StoredObject,
        F: Fn(&T) -> bool + Send,
    {
        let listing = self.list(T::PREFIX).await?;
        let mut out = Vec::with_capacity(listing.items.len());
        for kv in &listing.items {
            let object = decode::<T>(kv)?;
            if filter(&object) {
                out.push(object);
            }
        }
        Ok((out, listing.revision))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Decodes a stored object and records its revision.
pub fn decode<T: StoredObject>(kv: &KeyValue) -> Result<T, StoreError> {
    let mut object: T = serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
        key: kv.key.clone(),
        source: Box::new(e),
    })?;
    object.set_revision(kv.mod_revision);
    Ok(object)
}

/// Encodes an object for the store.
pub fn encode<T: StoredObject>(object: &T) -> Vec<u8> {
    // Stored objects are plain structs whose map keys are strings or unit
    // enum variants, which serde_json always encodes.
    serde_json::to_vec(object).expect("stored objects always encode as JSON")
}

/// Puts `object` at its key, expecting the revision it was read at (or
/// absence, for a new object with revision 0).
pub fn put_object<T: StoredObject>(txn: Txn, object: &T) -> Txn {
    let precondition = match object.revision() {
        0 => Precondition::Absent,
        revision => Precondition::Revision(revision),
    };
    txn.put(T::key_for(object.id()), encode(object), precondition)
}
