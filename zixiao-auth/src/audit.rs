//! The audit log: one [`AuditRecord`] per changing call and per refusal,
//! kept in the [`Store`] with bounded retention, and [`Audited`], the
//! wrapper over an [`Api`] that writes them.
//!
//! A record says when, who (identity, user, token id), in which project,
//! which operation on which target, and how it ended (done, the error's
//! kind, or the denial), and which server replica answered. It never holds
//! a request's body: no environment values, no token, no error message
//! (which may quote input), only the error's kind.
//!
//! # Layout and retention
//!
//! Records are numbered by one sequence and stored at
//! `/zixiao/auth/audit/records/<seq, 20 digits>`; `/zixiao/auth/audit/state`
//! holds the next number and the oldest kept. A write of the log is one
//! transaction: its records, the state (compare-and-swap, so replicas
//! writing at once take turns), and the deletion of what falls out of
//! retention. Retention is a count (the oldest beyond it is deleted by
//! number, without reading it) and an age (the oldest record's time is
//! remembered, so it is read again only once it may have expired). A write
//! deletes at most [`PRUNE_BATCH`] more numbers than it takes, so
//! shrinking the retention spreads the clean-up over the next writes;
//! [`AuditLog::list`] hides records past their age meanwhile.
//!
//! Writes of one replica are group-committed: calls that finish while a
//! write is in flight queue their entries, and the next write takes up to
//! [`GROUP_MAX`] of them in one transaction, numbered in queue order.
//!
//! # When a record is durable
//!
//! [`Audited`] records a changing call *before* the call runs, as
//! [`Outcome::Started`], and sets its outcome when the call ends. The
//! first record is [staged](zixiao_core::Store::stage): the store writes it
//! in the same atomic write as the call's own commit, before the call's
//! writes, so a change is never in the store (or durable) without its
//! record, and the record costs no write of its own. On a store that
//! commits at once (etcd) it is a commit before the call runs. A staged
//! record cannot wait for the state's compare-and-swap (only a written
//! commit knows the state's revision), so each replica numbers its staged
//! records from a block it set aside in the state beforehand (at most
//! [`GROUP_MAX`] numbers, one write per block, made in the background
//! while the block before lasts): no other writer takes them. Numbers are
//! unique and increase in each replica's order; a block a replica did not
//! use up leaves a gap. A retention scan that meets a missing number
//! first has the store write what is staged, so it never takes a record
//! another replica staged for a gap.
//!
//! A call that cannot be recorded is not made (`Unavailable`). A
//! failure's outcome is written durably before the caller hears of it. A
//! success's is kept in memory and written with the ring's next write (the
//! next block set aside, usually) or, at the latest, [`SYNC_DELAY`] later,
//! then synced. A crash in between leaves that record `started`, next to
//! the change it describes; [`AuditLog::list`] writes the replica's staged
//! records and waiting outcomes before it reads. Refusals
//! ([`AuditLog::record`]) are durable before the caller hears of them.
//!
//! Refusals of unauthenticated callers go to a ring of their own
//! (`/zixiao/auth/audit/anonymous/`), with the same retention: anyone can
//! make those, and a flood of them must not push the records of
//! identified callers out.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zixiao_core::api::{as_requested_by, Api, Request, Response};
use zixiao_core::store::{Durability, Precondition, Revision, Staged, Txn};
use zixiao_core::{Clock, ErrorKind, Store};

use crate::accounts::lost_race;
use crate::error::{chain, AuthError};
use crate::identity::{Caller, Identity};
use crate::names::{ProjectName, TokenId, UserName};
use crate::permission::{project_of, project_ref, Denial, ProjectRef};

/// The most records one write deletes beyond as many as it adds.
pub const PRUNE_BATCH: u64 = 16;

/// The most records one write adds (queued entries of concurrent calls).
pub const GROUP_MAX: usize = 64;

/// How often a write retries after losing the state's compare-and-swap
/// to another replica.
const WRITE_ATTEMPTS: usize = 32;

/// The longest a deferred write waits for a sync of the store.
pub const SYNC_DELAY: Duration = Duration::from_secs(1);

/// How long and how many records are kept, in each of the two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The most records kept (at least 1).
    pub max_records: u64,
    /// The oldest a record may be.
    pub max_age: Duration,
}

impl Default for Retention {
    /// 100 000 records, 90 days.
    fn default() -> Self {
        Retention {
            max_records: 100_000,
            max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

pub use zixiao_core::api::{AuditRecord, Outcome};

/// The outcome of a refusal by authorization.
pub(crate) fn denied(denial: &Denial) -> Outcome {
    Outcome::Denied {
        permission: denial.permission(),
        reason: denial.reason.clone(),
    }
}

/// What a record says about a call, before the log numbers and times it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who: `user alice`, `node worker-1`, `server`, `anonymous`.
    pub identity: String,
    /// The user, for users.
    pub user: Option<UserName>,
    /// The token the user came with (its id).
    pub token: Option<TokenId>,
    /// The project of the object, when it has one.
    pub project: Option<ProjectName>,
    /// The operation (`instance.create`).
    pub operation: String,
    /// What it acted on (`instance web`).
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

impl AuditEntry {
    /// An entry for `request` made by `caller`. Takes from the request
    /// only its operation and target, never its body.
    pub fn new(
        caller: &Caller,
        request: &Request,
        project: Option<ProjectName>,
        outcome: Outcome,
    ) -> Self {
        Summary::of(request).entry(caller, project, outcome)
    }
}

/// The sequence state of one ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RingState {
    /// The number the next record gets.
    next: u64,
    /// The oldest number not yet deleted.
    oldest: u64,
}

/// What a replica remembers of a ring between writes.
#[derive(Debug, Default)]
struct Cursor {
    /// The state as last written or read, and its revision.
    state: Option<(RingState, Revision)>,
    /// The time of the record at `state.oldest`, when known.
    oldest_time: Option<DateTime<Utc>>,
    /// Numbers the state has set aside for this replica's staged records
    /// (see [`Log::stage`]): no other writer takes them.
    reserved: std::ops::Range<u64>,
    /// The next block set aside, taken when `reserved` runs out: set aside
    /// in the background while the current one lasts, so no call waits for
    /// that write.
    spare: Option<std::ops::Range<u64>>,
}

/// An entry waiting for the next write, how durable its write must be, and
/// where its record goes.
#[derive(Debug)]
struct Queued {
    entry: AuditEntry,
    durability: Durability,
    answer: tokio::sync::oneshot::Sender<Result<AuditRecord, AuthError>>,
}

/// A changing call's record, written before the call runs: see
/// [`AuditLog::start`] and [`AuditLog::finish`].
#[derive(Debug)]
#[must_use = "a started record is finished with the call's outcome"]
pub struct Started {
    record: AuditRecord,
}

/// One numbered ring of records under a prefix.
#[derive(Debug)]
struct Ring {
    records: String,
    state_key: String,
    /// Writes of one replica take turns here rather than in retries.
    cursor: Mutex<Cursor>,
    /// Entries waiting for a write, in the order their calls finished.
    queue: std::sync::Mutex<Vec<Queued>>,
    /// Records of this replica whose outcome changed, waiting for a write.
    outcomes: std::sync::Mutex<Vec<AuditRecord>>,
    /// Staged records, by number, whose write is still to be made (or to be
    /// heard of).
    staged: std::sync::Mutex<Vec<(u64, Staged)>>,
    /// Numbers taken for records not yet written: retention leaves them
    /// alone, for a delete could come before the record, and a read cannot
    /// tell them from gaps.
    numbering: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

impl Ring {
    fn new(prefix: &str) -> Self {
        Ring {
            records: format!("{prefix}records/"),
            state_key: format!("{prefix}state"),
            cursor: Mutex::new(Cursor::default()),
            queue: std::sync::Mutex::new(Vec::new()),
            outcomes: std::sync::Mutex::new(Vec::new()),
            staged: std::sync::Mutex::new(Vec::new()),
            numbering: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    fn numbering(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u64>> {
        self.numbering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn outcomes(&self) -> std::sync::MutexGuard<'_, Vec<AuditRecord>> {
        self.outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn outcomes_pending(&self) -> bool {
        !self.outcomes().is_empty()
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Staged)>> {
        self.staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the staged records that were written and reports those that
    /// were not; whether any is still to be written.
    fn settle_staged(&self) -> bool {
        let mut staged = self.staged();
        let mut settled = Vec::new();
        staged.retain_mut(|(seq, written)| {
            let Some(outcome) = written.outcome() else {
                return true;
            };
            if let Err(e) = outcome {
                // Only the write that carried it failing (the store's
                // trouble) loses one: its number was this replica's alone.
                tracing::error!(seq = *seq, error = %chain(&AuthError::from(e)), "a staged audit record was not written");
            }
            settled.push(*seq);
            false
        });
        let mut numbering = self.numbering();
        for seq in settled {
            numbering.remove(&seq);
        }
        !staged.is_empty()
    }

    /// Up to `max` of the queued entries, oldest first.
    fn take(&self, max: usize) -> Vec<Queued> {
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    fn key(&self, seq: u64) -> String {
        format!("{}{seq:020}", self.records)
    }
}

/// The audit log of a deployment, written by every replica. Share one per
/// replica (`Arc`).
#[derive(Debug)]
pub struct AuditLog {
    log: Arc<Log>,
}

/// What an [`AuditLog`] shares with the task that syncs its deferred writes.
#[derive(Debug)]
struct Log {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    replica: String,
    retention: Retention,
    identified: Ring,
    anonymous: Ring,
    /// Whether a sync of the store is due for deferred writes.
    sync_scheduled: AtomicBool,
    /// Whether a task is setting the next block of numbers aside.
    setting_aside: AtomicBool,
}

impl AuditLog {
    /// The log in `store`, written as replica `replica`, keeping
    /// `retention` (a `max_records` of 0 counts as 1). Deferred writes are
    /// synced on the tokio runtime of the call that made them.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        replica: impl Into<String>,
        retention: Retention,
    ) -> Self {
        AuditLog {
            log: Arc::new(Log {
                store,
                clock,
                replica: replica.into(),
                retention: Retention {
                    max_records: retention.max_records.max(1),
                    ..retention
                },
                identified: Ring::new("/zixiao/auth/audit/"),
                anonymous: Ring::new("/zixiao/auth/audit/anonymous/"),
                sync_scheduled: AtomicBool::new(false),
                setting_aside: AtomicBool::new(false),
            }),
        }
    }

    /// Records that a changing call is about to run ([`Outcome::Started`],
    /// `entry`'s outcome is ignored), [staged](Store::stage): written by
    /// the call's own commit, before its writes. Errors as
    /// [`AuditLog::record`]; the call must then not run, for it could not
    /// be recorded.
    pub async fn start(&self, entry: AuditEntry) -> Result<Started, AuthError> {
        let entry = AuditEntry {
            outcome: Outcome::Started,
            ..entry
        };
        let (record, running_low) = self.log.stage(entry).await?;
        if running_low {
            self.set_aside_spare();
        }
        self.schedule_sync();
        Ok(Started { record })
    }

    /// Sets the outcome of a started record. A failure's is written at
    /// once, durably, before this returns. A success's rides along with the
    /// ring's next write, or the sync at most [`SYNC_DELAY`] later, deferred
    /// (see the module's docs): no write of its own. A
    /// record retention has deleted meanwhile stays deleted. A failure to
    /// write is logged as an error: the call it describes has happened.
    pub async fn finish(&self, started: Started, outcome: Outcome) {
        let Started { mut record } = started;
        let done = outcome == Outcome::Done;
        record.outcome = outcome;
        let ring = &self.log.identified;
        ring.outcomes().push(record);
        if done {
            self.schedule_sync();
        } else {
            self.log.write_outcomes(ring, Durability::Immediate).await;
        }
    }

    /// Sets the next block of numbers aside in the background, unless that
    /// is under way or done. A failure is logged: the next call that runs
    /// out sets a block aside itself, and fails if it cannot.
    fn set_aside_spare(&self) {
        if self.log.setting_aside.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let log = Arc::clone(&self.log);
        tokio::spawn(async move {
            let ring = &log.identified;
            let mut cursor = ring.cursor.lock().await;
            if let Err(e) = log.set_aside(ring, &mut cursor).await {
                tracing::warn!(error = %chain(&e), "audit numbers not set aside ahead");
            }
            drop(cursor);
            log.setting_aside.store(false, AtomicOrdering::Release);
        });
    }

    /// Writes pending outcomes and syncs the store [`SYNC_DELAY`] from now
    /// unless that is due already, so no deferred write waits longer.
    fn schedule_sync(&self) {
        if self.log.sync_scheduled.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let log = Arc::clone(&self.log);
        tokio::spawn(async move {
            tokio::time::sleep(SYNC_DELAY).await;
            // Writes from here on need a sync of their own.
            log.sync_scheduled.store(false, AtomicOrdering::Release);
            log.write_outcomes(&log.identified, Durability::Deferred)
                .await;
            if let Err(e) = log.store.sync().await {
                tracing::error!(error = %chain(&AuthError::from(e)), "audit records not synced");
            }
        });
    }

    /// Writes `entry` and deletes what falls out of retention, in one
    /// transaction (shared with the entries of concurrent calls), and
    /// returns once it is durable. Not idempotent. Errors: `Conflict`
    /// (other replicas kept winning), `Unavailable`, `Internal`.
    pub async fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuthError> {
        self.log.write_queued(entry, Durability::Immediate).await
    }

    /// The records kept, oldest first, written at or after `since`, by
    /// `user`, in `project` (each filter only when given). Writes this
    /// replica's pending outcomes first, so its own calls show how they
    /// ended. Errors: `Unavailable`, `Internal`.
    pub async fn list(
        &self,
        since: Option<DateTime<Utc>>,
        user: Option<&UserName>,
        project: Option<&ProjectName>,
    ) -> Result<Vec<AuditRecord>, AuthError> {
        let ring = &self.log.identified;
        if ring.settle_staged() {
            self.log.store.sync().await?;
        }
        self.log.write_outcomes(ring, Durability::Deferred).await;
        self.log.list(since, user, project).await
    }

    /// Writes `entry`, or says why it could not: a failed audit write does
    /// not undo or fail the call it describes (that has happened), but it
    /// is logged as an error for operators to act on.
    pub(crate) async fn record_or_log(&self, entry: AuditEntry) {
        let operation = entry.operation.clone();
        if let Err(e) = self.record(entry).await {
            tracing::error!(op = %operation, error = %chain(&e), "audit record not written");
        }
    }
}

impl Log {
    /// Writes the outcomes waiting in `ring` (with no new record) as
    /// durably as `durability` asks, or logs why it could not; they wait
    /// for the next write then.
    async fn write_outcomes(&self, ring: &Ring, durability: Durability) {
        // Taken first even when none wait: a write in flight may hold them,
        // and a caller that lists must see them written.
        let mut cursor = ring.cursor.lock().await;
        let written = if ring.outcomes_pending() {
            self.write(ring, &mut cursor, &[], durability, 0)
                .await
                .map(drop)
        } else if durability == Durability::Immediate {
            // A write that held the cursor took them, perhaps deferred.
            self.store.sync().await.map_err(AuthError::from)
        } else {
            Ok(())
        };
        if let Err(e) = written {
            tracing::error!(error = %chain(&e), "audit outcomes not written");
        }
    }

    /// Queues `entry` for the next group write of its ring and returns its
    /// record once written as durably as `durability` asks.
    async fn write_queued(
        &self,
        entry: AuditEntry,
        durability: Durability,
    ) -> Result<AuditRecord, AuthError> {
        let ring = match entry.outcome {
            Outcome::Unauthenticated { .. } => &self.anonymous,
            _ => &self.identified,
        };
        let (sender, mut answer) = tokio::sync::oneshot::channel();
        ring.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Queued {
                entry,
                durability,
                answer: sender,
            });
        loop {
            let mut cursor = ring.cursor.lock().await;
            // A write that held the cursor meanwhile may have taken it.
            match answer.try_recv() {
                Ok(done) => return done,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(AuthError::Store(zixiao_core::StoreError::backend(
                        "the audit write",
                        std::io::Error::other("the write that took this entry was cancelled"),
                    )))
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            // At most as many as retention keeps, so a write never deletes
            // a record it adds.
            let max = usize::try_from(self.retention.max_records)
                .unwrap_or(usize::MAX)
                .min(GROUP_MAX);
            let group = ring.take(max);
            if group.is_empty() {
                // Taken by a write still answering: its answer comes.
                drop(cursor);
                tokio::task::yield_now().await;
                continue;
            }
            // Durable when any member needs it to be.
            let durability = Durability::of_all(group.iter().map(|q| q.durability));
            let (entries, senders): (Vec<_>, Vec<_>) =
                group.into_iter().map(|q| (q.entry, q.answer)).unzip();
            match self.write(ring, &mut cursor, &entries, durability, 0).await {
                Ok(records) => {
                    for (sender, record) in senders.into_iter().zip(records) {
                        let _ = sender.send(Ok(record));
                    }
                }
                Err(e) => {
                    for sender in senders {
                        let _ = sender.send(Err(copy_of(&e)));
                    }
                }
            }
            drop(cursor);
            if let Ok(done) = answer.try_recv() {
                return done;
            }
            // Ours was beyond this write's group: go again.
        }
    }

    /// Writes `entries` as the next records of `ring`, numbered in order,
    /// the outcomes waiting in `ring`, sets `reserve` more numbers aside
    /// for this replica ([`Cursor::reserved`]), and deletes what falls out
    /// of retention, in one transaction; the new records.
    async fn write(
        &self,
        ring: &Ring,
        cursor: &mut Cursor,
        entries: &[AuditEntry],
        durability: Durability,
        reserve: u64,
    ) -> Result<Vec<AuditRecord>, AuthError> {
        let outcomes = std::mem::take(&mut *ring.outcomes());
        let written = self
            .write_with(ring, cursor, entries, &outcomes, durability, reserve)
            .await;
        if written.is_err() {
            // They wait for the next write.
            ring.outcomes().extend(outcomes);
        }
        written
    }

    /// [`Log::write`], with the outcomes taken.
    async fn write_with(
        &self,
        ring: &Ring,
        cursor: &mut Cursor,
        entries: &[AuditEntry],
        outcomes: &[AuditRecord],
        durability: Durability,
        reserve: u64,
    ) -> Result<Vec<AuditRecord>, AuthError> {
        let count = entries.len() as u64;
        ring.settle_staged();
        for _ in 0..WRITE_ATTEMPTS {
            let (state, revision) = match cursor.state {
                Some(known) => known,
                None => {
                    cursor.oldest_time = None;
                    self.read_state(ring).await?
                }
            };
            let now = self.clock.now();
            let seq = state.next;
            let mut txn = Txn::new();
            let mut oldest = state.oldest;
            let mut deleted = 0;
            // The numbers this write deletes: a missing record the age
            // scan steps over (a gap, or another replica's record staged
            // but not yet written) is not one of them.
            let mut deleting = Vec::new();
            // A write deletes as many numbers as it takes and PRUNE_BATCH
            // more, so the count holds however large the groups.
            let prune = PRUNE_BATCH + count + reserve;
            // Count: after this write, keep `max_records` at most. Numbers
            // this replica set aside and has not used are not records;
            // another replica's are not known here and count as records.
            let unused = cursor.reserved.end - cursor.reserved.start
                + cursor
                    .spare
                    .as_ref()
                    .map_or(0, |spare| spare.end - spare.start);
            let unwritten = ring.numbering().first().copied().unwrap_or(u64::MAX);
            let keep_from = (seq + count)
                .saturating_sub(unused)
                .saturating_sub(self.retention.max_records)
                .min(unwritten);
            while oldest < keep_from && deleted < prune {
                txn = txn.delete(ring.key(oldest), Precondition::None);
                deleting.push(oldest);
                oldest += 1;
                deleted += 1;
            }
            if oldest > state.oldest {
                cursor.oldest_time = None;
            }
            // Age: read the oldest record only when it may have expired.
            let horizon = now
                - chrono::Duration::from_std(self.retention.max_age)
                    .unwrap_or(chrono::TimeDelta::MAX);
            if cursor.oldest_time.is_none_or(|t| t < horizon) {
                cursor.oldest_time = None;
                let mut synced = false;
                while oldest < seq.min(unwritten) && deleted < prune {
                    match self.store.get(&ring.key(oldest)).await? {
                        // A gap (numbers set aside and never used), or a
                        // record another replica staged and the store has
                        // not written yet: writing what is staged tells.
                        None if !synced => {
                            self.store.sync().await?;
                            synced = true;
                        }
                        None => oldest += 1,
                        Some(kv) => {
                            let time = serde_json::from_slice::<AuditRecord>(&kv.value)
                                .map(|r| r.time)
                                .unwrap_or(DateTime::<Utc>::MIN_UTC);
                            if time >= horizon {
                                cursor.oldest_time = Some(time);
                                break;
                            }
                            txn = txn.delete(kv.key, Precondition::None);
                            deleting.push(oldest);
                            oldest += 1;
                            deleted += 1;
                        }
                    }
                }
            }
            let records: Vec<AuditRecord> = entries
                .iter()
                .zip(seq..)
                .map(|(entry, seq)| self.record_of(entry, seq, now))
                .collect();
            let next = RingState {
                next: seq + count + reserve,
                oldest,
            };
            let state_precondition = match revision {
                0 => Precondition::Absent,
                revision => Precondition::Revision(revision),
            };
            for record in &records {
                txn = txn.put(ring.key(record.seq), to_json(record), Precondition::Absent);
            }
            // Updates of this replica's own records, which only it writes:
            // the state's compare-and-swap below keeps another replica's
            // pruning from racing them, so none recreates a deleted record.
            let kept = |r: &&AuditRecord| {
                (state.oldest..seq).contains(&r.seq) && !deleting.contains(&r.seq)
            };
            for record in outcomes.iter().filter(kept) {
                txn = txn.put(ring.key(record.seq), to_json(record), Precondition::None);
            }
            txn = txn.put(ring.state_key.clone(), to_json(&next), state_precondition);
            txn.durability = durability;
            match self.store.commit(txn).await {
                Ok(revision) => {
                    cursor.state = Some((next, revision));
                    if reserve > 0 {
                        cursor.spare = Some(seq + count..next.next);
                    }
                    if oldest == seq {
                        cursor.oldest_time = Some(now);
                    }
                    return Ok(records);
                }
                // Another replica wrote first: read its state and go again.
                Err(e) if lost_race(&e) => cursor.state = None,
                Err(e) => {
                    cursor.state = None;
                    return Err(e.into());
                }
            }
        }
        Err(AuthError::Conflict {
            what: "the audit log".to_owned(),
        })
    }

    /// The record of `entry`, numbered `seq`, written at `now`.
    fn record_of(&self, entry: &AuditEntry, seq: u64, now: DateTime<Utc>) -> AuditRecord {
        AuditRecord {
            seq,
            time: now,
            replica: self.replica.clone(),
            identity: entry.identity.clone(),
            user: entry.user.as_ref().map(|u| u.to_string()),
            token: entry.token.as_ref().map(|t| t.to_string()),
            project: entry.project.as_ref().map(|p| p.to_string()),
            operation: entry.operation.clone(),
            target: entry.target.clone(),
            outcome: entry.outcome.clone(),
        }
    }

    /// How many numbers a replica sets aside at once for staged records: a
    /// write of the ring's state per that many calls. Small beside the
    /// retention, whose count they are part of.
    fn reserve_block(&self) -> u64 {
        (self.retention.max_records / 64).clamp(1, GROUP_MAX as u64)
    }

    /// Sets a block of numbers aside as `cursor`'s spare, unless it has one.
    async fn set_aside(&self, ring: &Ring, cursor: &mut Cursor) -> Result<(), AuthError> {
        if cursor.spare.is_none() {
            let block = self.reserve_block();
            self.write(ring, cursor, &[], Durability::Deferred, block)
                .await?;
        }
        Ok(())
    }

    /// Stages `entry` as a record of the identified ring, numbered from
    /// this replica's reserved numbers (the spare block when they ran out,
    /// or one set aside now when there is none): the store writes it with
    /// its next commit. A number no other writer takes is what lets it go
    /// without the state's compare-and-swap, whose revision only a written
    /// commit knows. Also says whether the numbers run low with no spare
    /// block: time to set one aside.
    async fn stage(&self, entry: AuditEntry) -> Result<(AuditRecord, bool), AuthError> {
        let ring = &self.identified;
        let block = self.reserve_block();
        let (seq, running_low) = {
            let mut cursor = ring.cursor.lock().await;
            if cursor.reserved.is_empty() {
                self.set_aside(ring, &mut cursor).await?;
                // The spare: there already, or just set aside.
                cursor.reserved = cursor.spare.take().ok_or_else(|| AuthError::Conflict {
                    what: "the audit log's numbers (none set aside)".to_owned(),
                })?;
            }
            let seq = cursor.reserved.start;
            cursor.reserved.start += 1;
            ring.numbering().insert(seq);
            let left = cursor.reserved.end - cursor.reserved.start;
            (seq, cursor.spare.is_none() && left <= block / 2)
        };
        // The cursor is not held while the store stages: a store that
        // commits at once (etcd) would otherwise take the calls in turns.
        let record = self.record_of(&entry, seq, self.clock.now());
        let txn = Txn::new().put(ring.key(seq), to_json(&record), Precondition::Absent);
        let mut staged = match self.store.stage(txn).await {
            Ok(staged) => staged,
            Err(e) => {
                ring.numbering().remove(&seq);
                return Err(e.into());
            }
        };
        match staged.outcome() {
            Some(written) => {
                ring.numbering().remove(&seq);
                written?;
            }
            None => {
                ring.settle_staged();
                ring.staged().push((seq, staged));
            }
        }
        Ok((record, running_low))
    }

    async fn read_state(&self, ring: &Ring) -> Result<(RingState, Revision), AuthError> {
        Ok(match self.store.get(&ring.state_key).await? {
            Some(kv) => (
                serde_json::from_slice(&kv.value).map_err(|e| {
                    AuthError::Store(zixiao_core::StoreError::Corrupt {
                        key: kv.key.clone(),
                        source: Box::new(e),
                    })
                })?,
                kv.mod_revision,
            ),
            None => (RingState { next: 1, oldest: 1 }, 0),
        })
    }

    /// The records kept, oldest first, written at or after `since`, by
    /// `user`, in `project` (each filter only when given). Read-only.
    async fn list(
        &self,
        since: Option<DateTime<Utc>>,
        user: Option<&UserName>,
        project: Option<&ProjectName>,
    ) -> Result<Vec<AuditRecord>, AuthError> {
        let horizon = self.clock.now()
            - chrono::Duration::from_std(self.retention.max_age).unwrap_or(chrono::TimeDelta::MAX);
        let mut out = Vec::new();
        for ring in [&self.identified, &self.anonymous] {
            let listing = self.store.list(&ring.records).await?;
            for kv in &listing.items {
                let record: AuditRecord = serde_json::from_slice(&kv.value).map_err(|e| {
                    AuthError::Store(zixiao_core::StoreError::Corrupt {
                        key: kv.key.clone(),
                        source: Box::new(e),
                    })
                })?;
                let keep = record.time >= horizon
                    && since.is_none_or(|since| record.time >= since)
                    && user.is_none_or(|user| record.user.as_deref() == Some(user.as_str()))
                    && project
                        .is_none_or(|project| record.project.as_deref() == Some(project.as_str()));
                if keep {
                    out.push(record);
                }
            }
        }
        // Two rings: merge by time (a stable sort keeps each ring's order).
        out.sort_by_key(|r| r.time);
        Ok(out)
    }
}

/// `e` again, for each caller whose entry a failed write carried: the
/// same kind (conflict, unavailable, or internal) and message.
fn copy_of(e: &AuthError) -> AuthError {
    let what = chain(e);
    match e.kind() {
        ErrorKind::Conflict => AuthError::Conflict { what },
        ErrorKind::Unavailable => {
            AuthError::Store(zixiao_core::StoreError::Unavailable { what, source: None })
        }
        _ => AuthError::Store(zixiao_core::StoreError::backend(
            "the audit write",
            std::io::Error::other(what),
        )),
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("audit records always encode as JSON")
}

/// The project `request` acts in: said by the request, or looked up on
/// the instance it names through `api` (`None` if it names none or is not
/// found). One owner of this lookup for [`Audited`] and
/// [`Authorized`](crate::Authorized).
pub(crate) async fn resolve_project(
    api: &dyn Api,
    request: &Request,
) -> zixiao_core::Result<Option<ProjectName>> {
    match project_ref(request) {
        Ok(ProjectRef::Known(project)) => Ok(Some(project)),
        Ok(ProjectRef::None) | Err(_) => Ok(None),
        Ok(ProjectRef::Instance(instance)) => {
            match api
                .call(Request::GetInstance {
                    instance: instance.to_owned(),
                })
                .await
            {
                Ok(Response::Instance(instance)) => Ok(project_of(&instance).ok()),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

/// An [`Api`] that records every changing call, and every call refused
/// further in (`PermissionDenied`, `Unauthenticated`), in an [`AuditLog`].
/// Built per caller. Reads that succeed are not recorded. A changing call
/// is recorded before it runs and its outcome when it ends (see the
/// module's docs); one that cannot be recorded fails `Unavailable` and
/// changes nothing.
///
/// Placed inside [`Authorized`](crate::Authorized) (the usual stack, see
/// [`secure`](crate::secure)) it records what was allowed, and
/// `Authorized` records its own refusals in the same log.
pub struct Audited<A> {
    inner: A,
    log: Arc<AuditLog>,
    caller: Caller,
}

impl<A> Audited<A> {
    /// Records `caller`'s calls to `inner` in `log`.
    pub fn new(inner: A, log: Arc<AuditLog>, caller: impl Into<Caller>) -> Self {
        Audited {
            inner,
            log,
            caller: caller.into(),
        }
    }

    /// The wrapped `Api`.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The wrapped `Api`, unwrapped.
    pub fn into_inner(self) -> A {
        self.inner
    }
}

impl<A: fmt::Debug> fmt::Debug for Audited<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audited")
            .field("inner", &self.inner)
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<A: Api> Api for Audited<A> {
    async fn call(&self, request: Request) -> zixiao_core::Result<Response> {
        if !request.is_mutating() {
            // Only what the summary needs is kept: the request moves on.
            let summary = Summary::of(&request);
            let result = self.inner.call(request).await;
            if let Err(e) = &result {
                if matches!(
                    e.kind(),
                    ErrorKind::PermissionDenied | ErrorKind::Unauthenticated
                ) {
                    self.log
                        .record_or_log(summary.entry(&self.caller, None, Outcome::of(&result)))
                        .await;
                }
            }
            return result;
        }
        let project = resolve_project(&self.inner, &request)
            .await
            .unwrap_or_default();
        let entry = Summary::of(&request).entry(&self.caller, project, Outcome::Started);
        // A change that cannot be recorded is not made.
        let started = self
            .log
            .start(entry)
            .await
            .map_err(|e| zixiao_core::Error::Unavailable {
                what: "the audit log (the call was not made)".to_owned(),
                source: Some(Box::new(e)),
            })?;
        // The operation the call may record names who asked, as this
        // record does.
        let caller = self.caller.to_string();
        let result = as_requested_by(caller, self.inner.call(request)).await;
        self.log.finish(started, Outcome::of(&result)).await;
        result
    }
}

/// What a record takes from a request, taken before the request moves.
struct Summary {
    operation: &'static str,
    target: Option<String>,
}

impl Summary {
    fn of(request: &Request) -> Self {
        Summary {
            operation: request.operation(),
            target: request.target(),
        }
    }

    fn entry(self, caller: &Caller, project: Option<ProjectName>, outcome: Outcome) -> AuditEntry {
        let identity = caller.identity();
        AuditEntry {
            identity: caller.to_string(),
            user: identity.and_then(Identity::user).cloned(),
            token: identity.and_then(Identity::token).cloned(),
            project,
            operation: self.operation.to_owned(),
            target: self.target,
            outcome,
        }
    }
}
