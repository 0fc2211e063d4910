//! [`EtcdStore`]: the [`Store`] on an etcd v3 cluster, and
//! [`EtcdStoreOptions`], how it connects.
//!
//! Store revisions are etcd revisions; a key's create and mod revisions are
//! etcd's; leases are etcd leases. Every key is stored under the options'
//! key prefix, which reads strip again, so several stores (or test cases)
//! share one cluster without seeing each other. Connections, retries and
//! error classes live in `conn`, resuming watches in `watch`.

mod conn;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    CompactionOptions, Compare, CompareOp, GetOptions, PutOptions, TxnOp, TxnOpResponse,
};
use zixiao_core::store::{
    KeyValue, LeaseId, Listing, Precondition, Revision, Txn, WatchStream, Write,
};
use zixiao_core::{Store, StoreError};

use conn::{unavailable, Failure, Pool, Retry, Timeouts};

/// How long [`EtcdStore::connect`] waits for one endpoint's TCP connection by default.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one request to one endpoint may take by default. A commit
/// that reached a follower just as the leader died waits this long (etcd 3.4
/// does not fail it when the new leader is elected), so it is kept short:
/// etcd answers in milliseconds when it is healthy.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a call keeps trying other endpoints (and waits out a leader
/// election) by default before it fails with `Unavailable`.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many keys one page of a listing reads.
const LIST_PAGE: i64 = 1000;

/// How to reach etcd: its endpoints, the key prefix, timeouts.
///
/// ```
/// use std::time::Duration;
/// use zixiao_store::EtcdStoreOptions;
///
/// let options = EtcdStoreOptions::new(["http://127.0.0.1:2379", "http://127.0.0.1:22379"])
///     .key_prefix("/tenant-a")
///     .request_timeout(Duration::from_secs(3));
/// assert_eq!(options.endpoints.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStoreOptions {
    /// The members' client URLs (`http://host:port`), tried in order; at least one.
    pub endpoints: Vec<String>,
    /// Prepended to every key (empty: none). Keys read back without it.
    pub key_prefix: String,
    /// How long dialling one endpoint may take.
    pub dial_timeout: Duration,
    /// How long one request to one endpoint may take.
    pub request_timeout: Duration,
    /// How long a call keeps retrying across endpoints before `Unavailable`.
    pub retry_timeout: Duration,
}

impl Default for EtcdStoreOptions {
    fn default() -> Self {
        EtcdStoreOptions {
            endpoints: Vec::new(),
            key_prefix: String::new(),
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
        }
    }
}

impl EtcdStoreOptions {
    /// Options for `endpoints` with no key prefix and the default timeouts
    /// (2 s dial, 2 s per request, 10 s of retries).
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdStoreOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdStoreOptions::default()
        }
    }

    /// Sets the prefix prepended to every key.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets how long dialling one endpoint may take.
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Sets how long one request to one endpoint may take.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long a call keeps retrying across endpoints.
    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout = timeout;
        self
    }

    /// Checks the options, naming the field at fault.
    fn validate(&self) -> Result<(), StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::InvalidArgument(
                "etcd endpoints: at least one endpoint URL is needed".to_owned(),
            ));
        }
        for (i, url) in self.endpoints.iter().enumerate() {
            let Some(rest) = url.strip_prefix("http://") else {
                return Err(StoreError::InvalidArgument(format!(
                    "etcd endpoints[{i}] `{url}`: must be an http://host:port URL \
                     (TLS endpoints are not supported yet)"
                )));
            };
            if rest.is_empty() || url.parse::<tonic::transport::Uri>().is_err() {
                return Err(StoreError::InvalidArgument(format!(
                    "etcd endpoints[{i}] `{url}`: not a valid http://host:port URL"
                )));
            }
        }
        for (name, value) in [
            ("dial_timeout", self.dial_timeout),
            ("request_timeout", self.request_timeout),
            ("retry_timeout", self.retry_timeout),
        ] {
            if value.is_zero() {
                return Err(StoreError::InvalidArgument(format!(
                    "etcd {name}: must be longer than zero"
                )));
            }
        }
        Ok(())
    }
}

/// The [`Store`] on an etcd v3 cluster (etcd 3.4 or later).
///
/// Cloning is cheap and every clone shares the connections. Calls go to the
/// endpoint that answered last and move to the others when it fails:
/// reads, watches and lease calls retry until the retry timeout; a commit
/// is sent again only when the earlier attempt provably never reached etcd
/// (the endpoint refused the connection, or had no leader). A commit whose
/// outcome is unknown (a timeout, a connection lost mid-call) fails with
/// `Unavailable` saying so: re-read before retrying it.
#[derive(Clone)]
pub struct EtcdStore {
    pool: Arc<Pool>,
    prefix: Arc<str>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.pool.endpoints())
            .field("key_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster and checks that one endpoint answers.
    ///
    /// Errors: `InvalidArgument` (no endpoint, an endpoint that is not an
    /// `http://` URL, a zero timeout), `Unavailable` naming every endpoint
    /// and why it failed, when none answers within the retry timeout.
    pub async fn connect(options: EtcdStoreOptions) -> Result<EtcdStore, StoreError> {
        options.validate()?;
        let pool = Pool::new(
            options.endpoints,
            Timeouts {
                dial: options.dial_timeout,
                request: options.request_timeout,
                retry: options.retry_timeout,
            },
        );
        let store = EtcdStore {
            pool: Arc::new(pool),
            prefix: options.key_prefix.into(),
        };
        store.current_revision().await?;
        Ok(store)
    }

    /// The endpoints this store uses.
    pub fn endpoints(&self) -> &[String] {
        self.pool.endpoints()
    }

    /// The prefix of every key this store writes.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster's current revision. Errors: `Unavailable`.
    pub async fn current_revision(&self) -> Result<Revision, StoreError> {
        // Any read returns the revision in its header; this key need not exist.
        let key = self.full_key("/");
        let response = self
            .pool
            .run("reading the revision", Retry::Idempotent, |mut client| {
                let key = key.clone();
                async move {
                    client
                        .get(key, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await
            .map_err(|f| answer_error(f, "reading the revision"))?;
        Ok(header_revision(response.header()))
    }

    /// Drops watch history up to and including `through`: watching after an
    /// older revision then fails with [`StoreError::Compacted`]. etcd keeps
    /// the values as of its compaction revision, so when `through` is the
    /// current revision the compaction happens at `through` itself.
    ///
    /// Compaction is cluster-wide: it drops the history of every key, not
    /// only this store's prefix. Idempotent. Errors: `InvalidArgument`
    /// (`through` is past the current revision), `Unavailable`.
    pub async fn compact(&self, through: Revision) -> Result<(), StoreError> {
        let current = self.current_revision().await?;
        if through > current {
            return Err(StoreError::InvalidArgument(format!(
                "cannot compact through revision {through}: the store is at revision {current}"
            )));
        }
        let at = to_i64(through.saturating_add(1).min(current), "revision")?;
        let outcome = self
            .pool
            .run("compacting", Retry::Idempotent, |mut client| async move {
                client
                    .compact(at, Some(CompactionOptions::new().with_physical()))
                    .await
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            // Compacted already, by this call's earlier attempt or another.
            Err(Failure::Answer(error)) if is_compacted(&error) => Ok(()),
            Err(failure) => Err(answer_error(failure, "compacting")),
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Turns an etcd key-value into the store's, without the prefix.
    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        key_value(&self.prefix, kv)
    }
}

/// Turns an etcd key-value under `prefix` into the store's.
fn key_value(prefix: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let full = String::from_utf8_lossy(kv.key());
    let key = full
        .strip_prefix(prefix)
        .filter(|_| std::str::from_utf8(kv.key()).is_ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: full.clone().into_owned(),
            source: "etcd returned a key outside the store's prefix, or not UTF-8".into(),
        })?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: to_revision(kv.create_revision()),
        mod_revision: to_revision(kv.mod_revision()),
        lease: (kv.lease() > 0).then(|| kv.lease() as u64),
    })
}

/// etcd revisions are positive `i64`s.
fn to_revision(revision: i64) -> Revision {
    u64::try_from(revision).unwrap_or(0)
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::InvalidArgument(format!("{what} {value} is out of etcd's range")))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| to_revision(h.revision()))
}

/// Whether etcd said a revision was compacted.
fn is_compacted(error: &etcd_client::Error) -> bool {
    error
        .to_string()
        .contains("required revision has been compacted")
}

/// Maps a failure of `what` to a [`StoreError`]: etcd's answers by their
/// gRPC code, everything else to `Unavailable`.
fn answer_error(failure: Failure, what: &str) -> StoreError {
    match failure {
        Failure::Answer(etcd_client::Error::GRpcStatus(status)) => {
            let message = format!("{what}: {}", status.message());
            match status.code() {
                tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                    StoreError::InvalidArgument(message)
                }
                tonic::Code::NotFound => StoreError::NotFound(message),
                tonic::Code::AlreadyExists => StoreError::AlreadyExists(message),
                _ => StoreError::Backend {
                    what: message,
                    source: Box::new(status),
                },
            }
        }
        Failure::Answer(etcd_client::Error::InvalidArgs(message)) => {
            StoreError::InvalidArgument(format!("{what}: {message}"))
        }
        Failure::Answer(error) => StoreError::backend(what.to_owned(), error),
        other => unavailable(other),
    }
}

/// A write's precondition.
fn precondition(write: &Write) -> Precondition {
    write.precondition()
}

/// The etcd transaction for `txn`: its compares, its writes when they
/// hold, and reads of every checked key when they do not (to say which
/// precondition failed and what was found, at the same revision).
fn etcd_txn(prefix: &str, txn: &Txn) -> Result<etcd_client::Txn, StoreError> {
    let mut compares = Vec::new();
    let mut writes = Vec::with_capacity(txn.writes.len());
    let mut reads = Vec::new();
    for write in &txn.writes {
        let key = format!("{prefix}{}", write.key());
        match precondition(write) {
            Precondition::None => {}
            Precondition::Absent => {
                compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
            }
            Precondition::Revision(revision) => {
                let revision = to_i64(revision, "precondition revision")?;
                compares.push(Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    revision,
                ));
                if revision == 0 {
                    // A missing key has mod revision 0 too; revision 0 must fail.
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Greater, 0));
                }
            }
        }
        if precondition(write) != Precondition::None {
            reads.push(TxnOp::get(key.clone(), None));
        }
        match write {
            Write::Put { value, lease, .. } => {
                let options = match lease {
                    Some(lease) => PutOptions::new().with_lease(to_i64(*lease, "lease")?),
                    None => PutOptions::new(),
                };
                writes.push(TxnOp::put(key, value.clone(), Some(options)));
            }
            Write::Delete { .. } => writes.push(TxnOp::delete(key, None)),
            // Compared above, nothing to write.
            Write::Check { .. } => {}
        }
    }
    Ok(etcd_client::Txn::new()
        .when(compares)
        .and_then(writes)
        .or_else(reads))
}

/// The error for a transaction whose compares failed, from the reads of
/// its failure branch: the first write, in order, whose precondition the
/// read contradicts.
fn failed_precondition(txn: &Txn, reads: &[TxnOpResponse]) -> StoreError {
    let checked = txn
        .writes
        .iter()
        .filter(|write| precondition(write) != Precondition::None);
    for (write, read) in checked.zip(reads) {
        let found = match read {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| to_revision(kv.mod_revision())),
            _ => continue,
        };
        let key = write.key().to_owned();
        match (precondition(write), found) {
            (Precondition::Absent, Some(_)) => return StoreError::AlreadyExists(key),
            (Precondition::Revision(_), None) => return StoreError::NotFound(key),
            (Precondition::Revision(expected), Some(found))
                if found != expected || expected == 0 =>
            {
                return StoreError::Conflict {
                    key,
                    expected,
                    found,
                }
            }
            _ => {}
        }
    }
    StoreError::Backend {
        what: "etcd rejected the transaction's compares, but its reads show every precondition holding".to_owned(),
        source: "inconsistent etcd transaction response".into(),
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if key.is_empty() {
            return Ok(None);
        }
        let full = self.full_key(key);
        let response = self
            .pool
            .run(
                &format!("reading `{key}`"),
                Retry::Idempotent,
                |mut client| {
                    let full = full.clone();
                    async move { client.get(full, None).await }
                },
            )
            .await
            .map_err(|f| answer_error(f, &format!("reading `{key}`")))?;
        response
            .kvs()
            .first()
            .map(|kv| self.key_value(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let what = format!("listing `{prefix}`");
        let full = self.full_key(prefix);
        // The end of the range: every key starting with `full` (all keys if empty).
        let end = range_end(full.as_bytes());
        let mut items = Vec::new();
        let mut start = full.clone().into_bytes();
        let mut revision = 0i64;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                // Later pages read the first page's revision: one snapshot.
                options = options.with_revision(revision);
            }
            let key = if start.is_empty() {
                vec![0]
            } else {
                start.clone()
            };
            let response = self
                .pool
                .run(&what, Retry::Idempotent, |mut client| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { client.get(key, Some(options)).await }
                })
                .await
                .map_err(|f| answer_error(f, &what))?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            for kv in response.kvs() {
                items.push(self.key_value(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing {
            items,
            revision: to_revision(revision),
        })
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        txn.validate()?;
        let request = etcd_txn(&self.prefix, &txn)?;
        let response = self
            .pool
            .run("the commit", Retry::OnlyIfNotSent, |mut client| {
                let request = request.clone();
                async move { client.txn(request).await }
            })
            .await
            .map_err(|failure| match failure {
                Failure::Answer(etcd_client::Error::GRpcStatus(status))
                    if status.code() == tonic::Code::NotFound =>
                {
                    let leases: Vec<String> = txn
                        .writes
                        .iter()
                        .filter_map(|w| match w {
                            Write::Put { lease: Some(l), .. } => Some(l.to_string()),
                            _ => None,
                        })
                        .collect();
                    StoreError::NotFound(format!(
                        "lease {} ({})",
                        leases.join(", "),
                        status.message()
                    ))
                }
                // Sent, and its answer lost: the commit may have been applied.
                Failure::Unknown(what) => StoreError::OutcomeUnknown { what },
                other => answer_error(other, "the commit"),
            })?;
        if !response.succeeded() {
            return Err(failed_precondition(&txn, &response.op_responses()));
        }
        Ok(header_revision(response.header()))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        watch::watch(
            Arc::clone(&self.pool),
            Arc::clone(&self.prefix),
            prefix,
            after,
        )
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidArgument(
                "a lease's TTL must be longer than zero".to_owned(),
            ));
        }
        // etcd counts whole seconds: round up, so a lease never expires early.
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let seconds = to_i64(seconds, "lease TTL (seconds)")?;
        // Granting twice after an unknown outcome leaks a lease without
        // keys, which expires by itself: retrying is safe.
        let response = self
            .pool
            .run(
                "granting a lease",
                Retry::Idempotent,
                |mut client| async move { client.lease_grant(seconds, None).await },
            )
            .await
            .map_err(|f| answer_error(f, "granting a lease"))?;
        Ok(u64::try_from(response.id()).unwrap_or(0))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let id = to_i64(lease, "lease")?;
        let outcome = self
            .pool
            .run("renewing a lease", Retry::Idempotent, |client| async move {
                let (_keeper, _responses) = client.lease_client().keep_alive(id).await?;
                Ok(())
            })
            .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Answer(etcd_client::Error::LeaseKeepAliveError(_))) => {
                Err(StoreError::NotFound(format!("lease {lease}")))
            }
            Err(failure) => Err(answer_error(failure, &format!("renewing lease {lease}"))),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let Ok(id) = i64::try_from(lease) else {
            return Ok(()); // etcd never grants such an id: nothing to revoke.
        };
        let outcome = self
            .pool
            .run(
                "revoking a lease",
                Retry::Idempotent,
                |mut client| async move { client.lease_revoke(id).await },
            )
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(Failure::Answer(etcd_client::Error::GRpcStatus(status)))
                if status.code() == tonic::Code::NotFound =>
            {
                Ok(())
            }
            Err(failure) => Err(answer_error(failure, &format!("revoking lease {lease}"))),
        }
    }
}

/// The end of etcd's range for every key starting with `prefix`: the
/// prefix with its last byte below 0xff incremented (`\0`: every key).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_covers_exactly_the_prefix() {
        assert_eq!(range_end(b"/a/"), b"/a0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b""), [0]);
        assert_eq!(range_end(b"\xff\xff"), [0]);
    }

    #[test]
    fn options_name_the_field_at_fault() {
        let error = EtcdStoreOptions::new(Vec::<String>::new())
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("endpoints"), "{error}");
        let error = EtcdStoreOptions::new(["127.0.0.1:2379"])
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("endpoints[0]"), "{error}");
        let error = EtcdStoreOptions::new(["http://127.0.0.1:2379", "https://x:1"])
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("endpoints[1]"), "{error}");
        let error = EtcdStoreOptions::new(["http://127.0.0.1:2379"])
            .request_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("request_timeout"), "{error}");
        assert!(EtcdStoreOptions::new(["http://127.0.0.1:2379"])
            .validate()
            .is_ok());
    }
}
