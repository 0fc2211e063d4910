//! The redb tables of the embedded store and every read and write of them:
//! keys with their revisions, the store's counters, the changelog that
//! watches replay, and leases with their expiry index and attached keys.
//!
//! [`ReadState`] is one consistent snapshot; [`WriteState`] is one write
//! transaction, which checks a [`Txn`]'s preconditions before it changes
//! anything and collects the events to broadcast once redb has committed.

use std::collections::BTreeSet;

use redb::{
    Database, MultimapTable, MultimapTableDefinition, ReadOnlyTable, ReadableMultimapTable,
    ReadableTable, Table, TableDefinition, WriteTransaction,
};
use zixiao_core::store::{
    KeyValue, LeaseId, Precondition, Revision, StoreSummary, Txn, WatchEvent, Write,
};
use zixiao_core::StoreError;

use super::codec::{decode_events, encode_events, CodecError, KeyRecord};

/// Key -> [`KeyRecord`] bytes.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Counter name -> value (see the `META_*` names).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Revision -> the events of that revision ([`encode_events`]). Revisions
/// that changed nothing (a delete of a missing key) have no entry.
const CHANGELOG: TableDefinition<u64, &[u8]> = TableDefinition::new("changelog");
/// Lease -> (TTL in ms, expiry in ms since the Unix epoch).
const LEASES: TableDefinition<u64, (u64, i64)> = TableDefinition::new("leases");
/// (expiry in ms, lease): finds the expired leases without scanning them all.
const LEASE_EXPIRY: TableDefinition<(i64, u64), ()> = TableDefinition::new("lease_expiry");
/// Lease -> the keys attached to it.
const LEASE_KEYS: MultimapTableDefinition<u64, &str> = MultimapTableDefinition::new("lease_keys");

/// The layout version of this file; bumped on any incompatible change.
const META_FORMAT: &str = "format";
/// The store's revision: that of the last committed change.
const META_REVISION: &str = "revision";
/// History up to and including this revision is gone from the changelog.
const META_COMPACTED: &str = "compacted";
/// The id the next granted lease gets.
const META_NEXT_LEASE: &str = "next_lease";

const FORMAT_VERSION: u64 = 1;

/// The events of one committed revision, as broadcast to live watchers.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) revision: Revision,
    pub(crate) events: Vec<WatchEvent>,
}

#[derive(Debug, thiserror::Error)]
#[error("the store file has format {found}; this version of zixiao reads format {FORMAT_VERSION}")]
struct UnknownFormat {
    found: u64,
}

fn backend<E>(what: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| StoreError::backend(what, source)
}

fn corrupt(key: impl Into<String>) -> impl FnOnce(CodecError) -> StoreError {
    let key = key.into();
    move |source| StoreError::Corrupt {
        key,
        source: Box::new(source),
    }
}

/// Creates the tables of a new store file, or checks an existing file's format.
pub(crate) fn initialise(db: &Database, path: &str) -> Result<(), StoreError> {
    let txn = db
        .begin_write()
        .map_err(backend("cannot start a write transaction"))?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(backend("cannot open the meta table"))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(backend("cannot read the store format"))?
            .map(|guard| guard.value());
        match format {
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION)
                    .map_err(backend("cannot write the store format"))?;
            }
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(StoreError::Backend {
                    what: format!("cannot use the store file `{path}`"),
                    source: Box::new(UnknownFormat { found }),
                })
            }
        }
        txn.open_table(KV)
            .map_err(backend("cannot open the kv table"))?;
        txn.open_table(CHANGELOG)
            .map_err(backend("cannot open the changelog table"))?;
        txn.open_table(LEASES)
            .map_err(backend("cannot open the leases table"))?;
        txn.open_table(LEASE_EXPIRY)
            .map_err(backend("cannot open the lease expiry table"))?;
        txn.open_multimap_table(LEASE_KEYS)
            .map_err(backend("cannot open the lease keys table"))?;
    }
    txn.commit()
        .map_err(backend("cannot commit the store's tables"))
}

fn meta_value(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<u64, StoreError> {
    Ok(meta
        .get(name)
        .map_err(backend("cannot read the store's counters"))?
        .map(|guard| guard.value())
        .unwrap_or(0))
}

fn read_record(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    match kv.get(key).map_err(backend("cannot read a key"))? {
        Some(guard) => KeyRecord::decode(guard.value())
            .map(Some)
            .map_err(corrupt(key)),
        None => Ok(None),
    }
}

/// Whether `lease` exists and has not expired at `now_ms`.
fn lease_alive(
    leases: &impl ReadableTable<u64, (u64, i64)>,
    lease: LeaseId,
    now_ms: i64,
) -> Result<bool, StoreError> {
    Ok(leases
        .get(lease)
        .map_err(backend("cannot read a lease"))?
        .is_some_and(|guard| guard.value().1 > now_ms))
}

/// One consistent snapshot of the store.
pub(crate) struct ReadState {
    kv: ReadOnlyTable<&'static str, &'static [u8]>,
    meta: ReadOnlyTable<&'static str, u64>,
    changelog: ReadOnlyTable<u64, &'static [u8]>,
    leases: ReadOnlyTable<u64, (u64, i64)>,
    lease_expiry: ReadOnlyTable<(i64, u64), ()>,
}

impl ReadState {
    pub(crate) fn begin(db: &Database) -> Result<ReadState, StoreError> {
        let txn = db
            .begin_read()
            .map_err(backend("cannot start a read transaction"))?;
        Ok(ReadState {
            kv: txn
                .open_table(KV)
                .map_err(backend("cannot open the kv table"))?,
            meta: txn
                .open_table(META)
                .map_err(backend("cannot open the meta table"))?,
            changelog: txn
                .open_table(CHANGELOG)
                .map_err(backend("cannot open the changelog table"))?,
            leases: txn
                .open_table(LEASES)
                .map_err(backend("cannot open the leases table"))?,
            lease_expiry: txn
                .open_table(LEASE_EXPIRY)
                .map_err(backend("cannot open the lease expiry table"))?,
        })
    }

    pub(crate) fn revision(&self) -> Result<Revision, StoreError> {
        meta_value(&self.meta, META_REVISION)
    }

    pub(crate) fn compacted(&self) -> Result<Revision, StoreError> {
        meta_value(&self.meta, META_COMPACTED)
    }

    /// `key`, unless it is missing or its lease expired by `now_ms`.
    pub(crate) fn get(&self, key: &str, now_ms: i64) -> Result<Option<KeyValue>, StoreError> {
        let Some(record) = read_record(&self.kv, key)? else {
            return Ok(None);
        };
        if let Some(lease) = record.lease {
            if !lease_alive(&self.leases, lease, now_ms)? {
                return Ok(None);
            }
        }
        Ok(Some(record.into_key_value(key.to_owned())))
    }

    /// The keys under `prefix` in key order, without those whose lease expired.
    pub(crate) fn list(&self, prefix: &str, now_ms: i64) -> Result<Vec<KeyValue>, StoreError> {
        let mut items = Vec::new();
        let mut expired = BTreeSet::new();
        let range = self
            .kv
            .range::<&str>(prefix..)
            .map_err(backend("cannot list keys"))?;
        for entry in range {
            let (key, value) = entry.map_err(backend("cannot list keys"))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            let record = KeyRecord::decode(value.value()).map_err(corrupt(key))?;
            if let Some(lease) = record.lease {
                if expired.contains(&lease) {
                    continue;
                }
                if !lease_alive(&self.leases, lease, now_ms)? {
                    expired.insert(lease);
                    continue;
                }
            }
            items.push(record.into_key_value(key.to_owned()));
        }
        Ok(items)
    }

    /// The events of the revisions in `after + 1 ..= through`, in order.
    pub(crate) fn changes(
        &self,
        after: Revision,
        through: Revision,
    ) -> Result<Vec<Committed>, StoreError> {
        let mut out = Vec::new();
        if after >= through {
            return Ok(out);
        }
        let range = self
            .changelog
            .range(after + 1..=through)
            .map_err(backend("cannot read the changelog"))?;
        for entry in range {
            let (revision, bytes) = entry.map_err(backend("cannot read the changelog"))?;
            let revision = revision.value();
            let events = decode_events(revision, bytes.value())
                .map_err(corrupt(format!("changelog revision {revision}")))?;
            out.push(Committed { revision, events });
        }
        Ok(out)
    }

    /// Whether some lease has expired by `now_ms` (and so needs a sweep).
    pub(crate) fn any_expired(&self, now_ms: i64) -> Result<bool, StoreError> {
        let mut range = self
            .lease_expiry
            .range(..=(now_ms, u64::MAX))
            .map_err(backend("cannot read the lease expiry index"))?;
        Ok(range.next().is_some())
    }
}

/// One redb write transaction over every table.
pub(crate) struct WriteState<'txn> {
    kv: Table<'txn, &'static str, &'static [u8]>,
    meta: Table<'txn, &'static str, u64>,
    changelog: Table<'txn, u64, &'static [u8]>,
    leases: Table<'txn, u64, (u64, i64)>,
    lease_expiry: Table<'txn, (i64, u64), ()>,
    lease_keys: MultimapTable<'txn, u64, &'static str>,
    revision: Revision,
    compacted: Revision,
    next_lease: LeaseId,
    committed: Vec<Committed>,
    swept: Option<Revision>,
}

impl<'txn> WriteState<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<WriteState<'txn>, StoreError> {
        let meta = txn
            .open_table(META)
            .map_err(backend("cannot open the meta table"))?;
        let revision = meta_value(&meta, META_REVISION)?;
        let compacted = meta_value(&meta, META_COMPACTED)?;
        let next_lease = meta_value(&meta, META_NEXT_LEASE)?.max(1);
        Ok(WriteState {
            kv: txn
                .open_table(KV)
                .map_err(backend("cannot open the kv table"))?,
            meta,
            changelog: txn
                .open_table(CHANGELOG)
                .map_err(backend("cannot open the changelog table"))?,
            leases: txn
                .open_table(LEASES)
                .map_err(backend("cannot open the leases table"))?,
            lease_expiry: txn
                .open_table(LEASE_EXPIRY)
                .map_err(backend("cannot open the lease expiry table"))?,
            lease_keys: txn
                .open_multimap_table(LEASE_KEYS)
                .map_err(backend("cannot open the lease keys table"))?,
            revision,
            compacted,
            next_lease,
            committed: Vec::new(),
            swept: None,
        })
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// The revision at which [`WriteState::sweep`] deleted expired keys, if it did.
    pub(crate) fn swept(&self) -> Option<Revision> {
        self.swept
    }

    fn next_revision(&self) -> Result<Revision, StoreError> {
        self.revision
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt {
                key: META_REVISION.to_owned(),
                source: Box::new(CodecError::new("the store revision is at its maximum")),
            })
    }

    /// Records `events` as the changes of `revision`, the new store revision.
    fn record(&mut self, revision: Revision, events: Vec<WatchEvent>) -> Result<(), StoreError> {
        if !events.is_empty() {
            self.changelog
                .insert(revision, encode_events(&events).as_slice())
                .map_err(backend("cannot append to the changelog"))?;
        }
        self.revision = revision;
        self.committed.push(Committed { revision, events });
        Ok(())
    }

    /// Deletes the leases that expired by `now_ms` and their keys, as one
    /// revision (only if some key goes).
    pub(crate) fn sweep(&mut self, now_ms: i64) -> Result<(), StoreError> {
        let mut expired = Vec::new();
        for entry in self
            .lease_expiry
            .range(..=(now_ms, u64::MAX))
            .map_err(backend("cannot read the lease expiry index"))?
        {
            let (key, _) = entry.map_err(backend("cannot read the lease expiry index"))?;
            expired.push(key.value().1);
        }
        if expired.is_empty() {
            return Ok(());
        }
        let revision = self.next_revision()?;
        let mut events = Vec::new();
        for lease in expired {
            self.drop_lease(lease, revision, &mut events)?;
        }
        if !events.is_empty() {
            self.record(revision, events)?;
            self.swept = Some(revision);
        }
        Ok(())
    }

    /// Applies `txn` if every precondition holds; changes nothing otherwise.
    pub(crate) fn apply(&mut self, txn: &Txn) -> Result<Revision, StoreError> {
        // Check everything first: an error below this loop would leave
        // half a transaction in the write (the caller aborts it anyway).
        let mut current = Vec::with_capacity(txn.writes.len());
        for write in &txn.writes {
            let key = write.key();
            let record = read_record(&self.kv, key)?;
            check_precondition(key, write.precondition(), record.as_ref())?;
            if let Write::Put {
                lease: Some(lease), ..
            } = write
            {
                let known = self
                    .leases
                    .get(*lease)
                    .map_err(backend("cannot read a lease"))?
                    .is_some();
                if !known {
                    return Err(StoreError::NotFound(format!("lease {lease}")));
                }
            }
            current.push(record);
        }

        let revision = self.next_revision()?;
        let mut events = Vec::new();
        for (write, record) in txn.writes.iter().zip(current) {
            match write {
                Write::Put {
                    key, value, lease, ..
                } => {
                    let old_lease = record.as_ref().and_then(|record| record.lease);
                    let new = KeyRecord {
                        create_revision: record.map_or(revision, |record| record.create_revision),
                        mod_revision: revision,
                        lease: *lease,
                        value: value.clone(),
                    };
                    self.kv
                        .insert(key.as_str(), new.encode().as_slice())
                        .map_err(backend("cannot write a key"))?;
                    if old_lease != *lease {
                        if let Some(old) = old_lease {
                            self.lease_keys
                                .remove(old, key.as_str())
                                .map_err(backend("cannot detach a key from its lease"))?;
                        }
                        if let Some(new) = lease {
                            self.lease_keys
                                .insert(*new, key.as_str())
                                .map_err(backend("cannot attach a key to its lease"))?;
                        }
                    }
                    events.push(WatchEvent::Put(new.into_key_value(key.clone())));
                }
                Write::Delete { key, .. } => {
                    let Some(record) = record else { continue };
                    self.kv
                        .remove(key.as_str())
                        .map_err(backend("cannot delete a key"))?;
                    if let Some(lease) = record.lease {
                        self.lease_keys
                            .remove(lease, key.as_str())
                            .map_err(backend("cannot detach a key from its lease"))?;
                    }
                    events.push(WatchEvent::Delete {
                        key: key.clone(),
                        revision,
                        prev: Some(record.value),
                    });
                }
                // Checked above, nothing to write.
                Write::Check { .. } => {}
            }
        }
        self.record(revision, events)?;
        Ok(revision)
    }

    /// Grants a lease of `ttl_ms` from `now_ms`.
    pub(crate) fn grant(&mut self, ttl_ms: u64, now_ms: i64) -> Result<LeaseId, StoreError> {
        let lease = self.next_lease;
        self.next_lease = lease.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            key: META_NEXT_LEASE.to_owned(),
            source: Box::new(CodecError::new("the lease counter is at its maximum")),
        })?;
        self.set_expiry(lease, ttl_ms, None, now_ms)?;
        Ok(lease)
    }

    /// Renews `lease` for another TTL from `now_ms`.
    pub(crate) fn keep_alive(&mut self, lease: LeaseId, now_ms: i64) -> Result<(), StoreError> {
        let found = self
            .leases
            .get(lease)
            .map_err(backend("cannot read a lease"))?
            .map(|guard| guard.value());
        match found {
            Some((ttl_ms, expires_ms)) => self.set_expiry(lease, ttl_ms, Some(expires_ms), now_ms),
            None => Err(StoreError::NotFound(format!("lease {lease}"))),
        }
    }

    fn set_expiry(
        &mut self,
        lease: LeaseId,
        ttl_ms: u64,
        old_expiry: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let expires_ms = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        if let Some(old) = old_expiry {
            self.lease_expiry
                .remove((old, lease))
                .map_err(backend("cannot update the lease expiry index"))?;
        }
        self.lease_expiry
            .insert((expires_ms, lease), ())
            .map_err(backend("cannot update the lease expiry index"))?;
        self.leases
            .insert(lease, (ttl_ms, expires_ms))
            .map_err(backend("cannot write a lease"))?;
        Ok(())
    }

    /// Revokes `lease` and deletes its keys as one revision, if it has any.
    pub(crate) fn revoke(&mut self, lease: LeaseId) -> Result<Option<Revision>, StoreError> {
        let revision = self.next_revision()?;
        let mut events = Vec::new();
        self.drop_lease(lease, revision, &mut events)?;
        if events.is_empty() {
            return Ok(None);
        }
        self.record(revision, events)?;
        Ok(Some(revision))
    }

    /// Removes `lease` and deletes its keys, adding their delete events.
    fn drop_lease(
        &mut self,
        lease: LeaseId,
        revision: Revision,
        events: &mut Vec<WatchEvent>,
    ) -> Result<(), StoreError> {
        let removed = self
            .leases
            .remove(lease)
            .map_err(backend("cannot remove a lease"))?
            .map(|guard| guard.value());
        if let Some((_, expires_ms)) = removed {
            self.lease_expiry
                .remove((expires_ms, lease))
                .map_err(backend("cannot update the lease expiry index"))?;
        }
        let mut keys = Vec::new();
        for key in self
            .lease_keys
            .remove_all(lease)
            .map_err(backend("cannot read a lease's keys"))?
        {
            keys.push(
                key.map_err(backend("cannot read a lease's keys"))?
                    .value()
                    .to_owned(),
            );
        }
        for key in keys {
            // The index only lists keys put with this lease and not changed
            // since, but check the record itself rather than trust that.
            let Some(record) = read_record(&self.kv, &key)? else {
                continue;
            };
            if record.lease != Some(lease) {
                continue;
            }
            self.kv
                .remove(key.as_str())
                .map_err(backend("cannot delete a key"))?;
            events.push(WatchEvent::Delete {
                key,
                revision,
                prev: Some(record.value),
            });
        }
        Ok(())
    }

    /// Drops the changelog up to and including `through` (at most the
    /// current revision); watching after an older revision then fails.
    pub(crate) fn compact(&mut self, through: Revision) -> Result<(), StoreError> {
        let through = through.min(self.revision);
        if through <= self.compacted {
            return Ok(());
        }
        self.changelog
            .retain_in(..=through, |_, _| false)
            .map_err(backend("cannot compact the changelog"))?;
        self.compacted = through;
        Ok(())
    }

    /// Compacts history beyond `history_limit` revisions, saves the
    /// counters, and returns the revisions to broadcast once committed.
    pub(crate) fn finish(mut self, history_limit: u64) -> Result<Vec<Committed>, StoreError> {
        if self.revision.saturating_sub(self.compacted) > history_limit {
            self.compact(self.revision - history_limit)?;
        }
        for (name, value) in [
            (META_REVISION, self.revision),
            (META_COMPACTED, self.compacted),
            (META_NEXT_LEASE, self.next_lease),
        ] {
            self.meta
                .insert(name, value)
                .map_err(backend("cannot write the store's counters"))?;
        }
        Ok(self.committed)
    }
}

fn check_precondition(
    key: &str,
    precondition: Precondition,
    record: Option<&KeyRecord>,
) -> Result<(), StoreError> {
    match (precondition, record) {
        (Precondition::None, _) | (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists(key.to_owned())),
        (Precondition::Revision(_), None) => Err(StoreError::NotFound(key.to_owned())),
        (Precondition::Revision(expected), Some(record)) if record.mod_revision == expected => {
            Ok(())
        }
        (Precondition::Revision(expected), Some(record)) => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            found: record.mod_revision,
        }),
    }
}

/// Reads every record of every table in one snapshot and decodes it, so a
/// damaged page or an undecodable value is found now rather than by the
/// call that happens to touch it. Errors: `Internal` naming what is damaged.
pub(crate) fn verify(db: &Database) -> Result<StoreSummary, StoreError> {
    let txn = db
        .begin_read()
        .map_err(backend("cannot start a read transaction"))?;
    let meta = txn
        .open_table(META)
        .map_err(backend("cannot open the meta table"))?;
    let format = meta_value(&meta, META_FORMAT)?;
    if format != FORMAT_VERSION {
        return Err(StoreError::Backend {
            what: "the store's format".to_owned(),
            source: Box::new(UnknownFormat { found: format }),
        });
    }
    let mut report = StoreSummary {
        revision: meta_value(&meta, META_REVISION)?,
        ..StoreSummary::default()
    };
    let kv = txn
        .open_table(KV)
        .map_err(backend("cannot open the kv table"))?;
    for entry in kv.iter().map_err(backend("cannot read the kv table"))? {
        let (key, value) = entry.map_err(backend("cannot read the kv table"))?;
        let record = KeyRecord::decode(value.value()).map_err(corrupt(key.value()))?;
        if record.mod_revision > report.revision {
            return Err(StoreError::Corrupt {
                key: key.value().to_owned(),
                source: format!(
                    "changed at revision {}, after the store's revision {}",
                    record.mod_revision, report.revision
                )
                .into(),
            });
        }
        report.keys += 1;
    }
    let changelog = txn
        .open_table(CHANGELOG)
        .map_err(backend("cannot open the changelog table"))?;
    for entry in changelog
        .iter()
        .map_err(backend("cannot read the changelog"))?
    {
        let (revision, events) = entry.map_err(backend("cannot read the changelog"))?;
        decode_events(revision.value(), events.value())
            .map_err(corrupt(format!("changelog revision {}", revision.value())))?;
        report.history += 1;
    }
    let leases = txn
        .open_table(LEASES)
        .map_err(backend("cannot open the leases table"))?;
    for entry in leases.iter().map_err(backend("cannot read the leases"))? {
        entry.map_err(backend("cannot read the leases"))?;
        report.leases += 1;
    }
    let expiry = txn
        .open_table(LEASE_EXPIRY)
        .map_err(backend("cannot open the lease expiry table"))?;
    for entry in expiry
        .iter()
        .map_err(backend("cannot read the lease expiries"))?
    {
        entry.map_err(backend("cannot read the lease expiries"))?;
    }
    let lease_keys = txn
        .open_multimap_table(LEASE_KEYS)
        .map_err(backend("cannot open the lease keys table"))?;
    for entry in lease_keys
        .iter()
        .map_err(backend("cannot read the lease keys"))?
    {
        let (_, keys) = entry.map_err(backend("cannot read the lease keys"))?;
        for key in keys {
            key.map_err(backend("cannot read the lease keys"))?;
        }
    }
    Ok(report)
}

/// Copies every table of `from` into `to` (a new, empty store file): one
/// read transaction of `from`, so the copy is one consistent revision
/// however many writers run meanwhile, and one write transaction of `to`.
pub(crate) fn copy_all(from: &Database, to: &Database) -> Result<(), StoreError> {
    let read = from
        .begin_read()
        .map_err(backend("cannot start a read transaction"))?;
    let write = to
        .begin_write()
        .map_err(backend("cannot start the copy's write transaction"))?;
    {
        let src = read.open_table(META).map_err(backend("cannot open meta"))?;
        let mut dst = write
            .open_table(META)
            .map_err(backend("cannot open meta"))?;
        for entry in src.iter().map_err(backend("cannot read meta"))? {
            let (k, v) = entry.map_err(backend("cannot read meta"))?;
            dst.insert(k.value(), v.value())
                .map_err(backend("cannot write meta"))?;
        }
        let src = read.open_table(KV).map_err(backend("cannot open kv"))?;
        let mut dst = write.open_table(KV).map_err(backend("cannot open kv"))?;
        for entry in src.iter().map_err(backend("cannot read kv"))? {
            let (k, v) = entry.map_err(backend("cannot read kv"))?;
            dst.insert(k.value(), v.value())
                .map_err(backend("cannot write kv"))?;
        }
        let src = read
            .open_table(CHANGELOG)
            .map_err(backend("cannot open the changelog"))?;
        let mut dst = write
            .open_table(CHANGELOG)
            .map_err(backend("cannot open the changelog"))?;
        for entry in src.iter().map_err(backend("cannot read the changelog"))? {
            let (k, v) = entry.map_err(backend("cannot read the changelog"))?;
            dst.insert(k.value(), v.value())
                .map_err(backend("cannot write the changelog"))?;
        }
        let src = read
            .open_table(LEASES)
            .map_err(backend("cannot open the leases"))?;
        let mut dst = write
            .open_table(LEASES)
            .map_err(backend("cannot open the leases"))?;
        for entry in src.iter().map_err(backend("cannot read the leases"))? {
            let (k, v) = entry.map_err(backend("cannot read the leases"))?;
            dst.insert(k.value(), v.value())
                .map_err(backend("cannot write the leases"))?;
        }
        let src = read
            .open_table(LEASE_EXPIRY)
            .map_err(backend("cannot open the lease expiries"))?;
        let mut dst = write
            .open_table(LEASE_EXPIRY)
            .map_err(backend("cannot open the lease expiries"))?;
        for entry in src
            .iter()
            .map_err(backend("cannot read the lease expiries"))?
        {
            // The value is `()`: the key says everything.
            let (k, _) = entry.map_err(backend("cannot read the lease expiries"))?;
            dst.insert(k.value(), ())
                .map_err(backend("cannot write the lease expiries"))?;
        }
        let src = read
            .open_multimap_table(LEASE_KEYS)
            .map_err(backend("cannot open the lease keys"))?;
        let mut dst = write
            .open_multimap_table(LEASE_KEYS)
            .map_err(backend("cannot open the lease keys"))?;
        for entry in src.iter().map_err(backend("cannot read the lease keys"))? {
            let (lease, keys) = entry.map_err(backend("cannot read the lease keys"))?;
            for key in keys {
                let key = key.map_err(backend("cannot read the lease keys"))?;
                dst.insert(lease.value(), key.value())
                    .map_err(backend("cannot write the lease keys"))?;
            }
        }
    }
    write.commit().map_err(backend("cannot commit the copy"))
}
