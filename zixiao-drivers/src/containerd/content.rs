//! containerd's content store: reading small blobs (manifests, configs) and
//! streaming large ones in from an archive, with the garbage-collection
//! labels that tie a manifest to its config and layers.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    AbortRequest, Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::Code;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use zixiao_core::DriverError;

use super::connection::{Connection, Lease};
use super::error::{invalid, io, is_not_found};

/// How much of a blob one write message carries.
const CHUNK: usize = 1 << 20;

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A range of a file (an archive entry).
    File {
        /// The file.
        path: PathBuf,
        /// Offset of the first byte.
        offset: u64,
    },
    /// Bytes in memory (a manifest written by the driver).
    Bytes(Vec<u8>),
}

/// A blob to write, with its garbage-collection labels.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    /// `sha256:...`.
    pub(crate) digest: String,
    /// Length in bytes.
    pub(crate) size: u64,
    /// Its bytes.
    pub(crate) source: Source,
    /// Labels, such as `containerd.io/gc.ref.content.l.0`.
    pub(crate) labels: HashMap<String, String>,
}

/// Whether the content store has `digest`.
pub(crate) async fn exists(conn: &Connection, digest: &str) -> Result<bool, DriverError> {
    let request = conn.request(InfoRequest {
        digest: digest.to_owned(),
    });
    match ContentClient::new(conn.client().channel())
        .info(request)
        .await
    {
        Ok(_) => Ok(true),
        Err(status) if is_not_found(&status) => Ok(false),
        Err(status) => Err(conn.rpc_error(format!("look up content {digest}"), status)),
    }
}

/// The value of label `key` on the blob `digest`, if set.
pub(crate) async fn label(
    conn: &Connection,
    digest: &str,
    key: &str,
) -> Result<Option<String>, DriverError> {
    let request = conn.request(InfoRequest {
        digest: digest.to_owned(),
    });
    match ContentClient::new(conn.client().channel())
        .info(request)
        .await
    {
        Ok(response) => Ok(response
            .into_inner()
            .info
            .and_then(|mut i| i.labels.remove(key))),
        Err(status) if is_not_found(&status) => {
            Err(DriverError::NotFound(format!("content {digest}")))
        }
        Err(status) => Err(conn.rpc_error(format!("look up content {digest}"), status)),
    }
}

/// Reads the blob `digest`, refusing one larger than `limit` bytes.
/// Errors: `NotFound` (not in the store), `InvalidArgument` (too large).
pub(crate) async fn read(
    conn: &Connection,
    digest: &str,
    limit: u64,
) -> Result<Vec<u8>, DriverError> {
    let mut client = ContentClient::new(conn.client().channel());
    let info = client
        .info(conn.request(InfoRequest {
            digest: digest.to_owned(),
        }))
        .await
        .map_err(|status| {
            if is_not_found(&status) {
                DriverError::NotFound(format!("content {digest}"))
            } else {
                conn.rpc_error(format!("look up content {digest}"), status)
            }
        })?
        .into_inner()
        .info
        .unwrap_or_default();
    if u64::try_from(info.size).unwrap_or(u64::MAX) > limit {
        return Err(invalid(
            "image",
            format!("blob {digest} is {} bytes, more than {limit}", info.size),
        ));
    }
    let request = conn.request(ReadContentRequest {
        digest: digest.to_owned(),
        offset: 0,
        size: 0,
    });
    let mut stream = client
        .read(request)
        .await
        .map_err(|s| conn.rpc_error(format!("read content {digest}"), s))?
        .into_inner();
    let mut data = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| conn.rpc_error(format!("read content {digest}"), s))?
    {
        data.extend_from_slice(&chunk.data);
    }
    Ok(data)
}

/// Sets labels on the existing blob `digest`.
pub(crate) async fn set_labels(
    conn: &Connection,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<(), DriverError> {
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let request = conn.request(UpdateRequest {
        info: Some(Info {
            digest: digest.to_owned(),
            labels,
            ..Info::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
    });
    ContentClient::new(conn.client().channel())
        .update(request)
        .await
        .map_err(|s| conn.rpc_error(format!("label content {digest}"), s))?;
    Ok(())
}

/// What the write stream hands back to the caller.
#[derive(Default)]
struct StreamOutcome {
    read_error: Option<std::io::Error>,
}

/// Writes `blob` under `lease`, reporting bytes written so far to
/// `progress`. A blob already in the store only gets its labels. Errors:
/// `InvalidArgument` (the bytes do not match the digest), `Unavailable`.
pub(crate) async fn write(
    conn: &Connection,
    lease: &Lease,
    blob: &Blob,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), DriverError> {
    if exists(conn, &blob.digest).await? {
        if !blob.labels.is_empty() {
            set_labels(conn, &blob.digest, blob.labels.clone()).await?;
        }
        progress(blob.size);
        return Ok(());
    }
    let reference = format!("zixiao-{}", uuid::Uuid::new_v4().simple());
    let total = i64::try_from(blob.size).map_err(|_| invalid("archive", "blob too large"))?;
    let outcome = Arc::new(Mutex::new(StreamOutcome::default()));
    let requests = write_requests(reference.clone(), blob.clone(), total, Arc::clone(&outcome));
    let mut client = ContentClient::new(conn.client().channel());
    let operation = format!("write content {}", blob.digest);
    let result = async {
        let mut responses = client
            .write(conn.leased(requests, lease))
            .await?
            .into_inner();
        while let Some(response) = responses.message().await? {
            progress(u64::try_from(response.offset).unwrap_or(0));
        }
        Ok::<(), containerd_client::tonic::Status>(())
    }
    .await;
    let read_error = outcome.lock().ok().and_then(|mut o| o.read_error.take());
    if let Some(e) = read_error {
        abort(conn, &reference).await;
        return Err(io(format!("read {} from the archive", blob.digest), e));
    }
    match result {
        Ok(()) => Ok(()),
        Err(status) if status.code() == Code::AlreadyExists => Ok(()),
        Err(status) => {
            abort(conn, &reference).await;
            match status.code() {
                Code::FailedPrecondition | Code::InvalidArgument => Err(invalid(
                    "archive",
                    format!("blob {} is corrupt: {}", blob.digest, status.message()),
                )),
                _ => Err(conn.rpc_error(operation, status)),
            }
        }
    }
}

/// Drops a half-written ingest so no partial data stays behind.
async fn abort(conn: &Connection, reference: &str) {
    let request = conn.request(AbortRequest {
        r#ref: reference.to_owned(),
    });
    // The ingest may not exist (the write failed before it began); either
    // way there is nothing more to clean.
    let _ = ContentClient::new(conn.client().channel())
        .abort(request)
        .await;
}

/// The write messages for `blob`: its bytes in chunks, then the commit with
/// the expected digest and labels. Reads lazily, so a large blob is never
/// in memory whole.
fn write_requests(
    reference: String,
    blob: Blob,
    total: i64,
    outcome: Arc<Mutex<StreamOutcome>>,
) -> impl futures::Stream<Item = WriteContentRequest> + Send + 'static {
    enum Reader {
        Unopened(PathBuf, u64),
        Open(tokio::fs::File),
        Bytes(Vec<u8>),
        Done,
    }
    let reader = match &blob.source {
        Source::File { path, offset } => Reader::Unopened(path.clone(), *offset),
        Source::Bytes(bytes) => Reader::Bytes(bytes.clone()),
    };
    let state = (reader, 0i64, blob, reference, outcome);
    futures::stream::unfold(
        state,
        move |(mut reader, offset, blob, reference, outcome)| async move {
            let fail = |outcome: &Arc<Mutex<StreamOutcome>>, e: std::io::Error| {
                if let Ok(mut o) = outcome.lock() {
                    o.read_error = Some(e);
                }
            };
            if matches!(reader, Reader::Done) {
                return None;
            }
            if offset >= total {
                let commit = WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: reference.clone(),
                    total,
                    expected: blob.digest.clone(),
                    offset,
                    data: Vec::new(),
                    labels: blob.labels.clone(),
                };
                return Some((commit, (Reader::Done, offset, blob, reference, outcome)));
            }
            let want = usize::try_from(total - offset).unwrap_or(CHUNK).min(CHUNK);
            let data = match &mut reader {
                Reader::Bytes(bytes) => {
                    let start = usize::try_from(offset).unwrap_or(0);
                    bytes
                        .get(start..start + want)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default()
                }
                Reader::Unopened(..) | Reader::Open(_) => {
                    if let Reader::Unopened(path, start) = &reader {
                        let opened = async {
                            let mut file = tokio::fs::File::open(path).await?;
                            file.seek(SeekFrom::Start(*start)).await?;
                            Ok::<_, std::io::Error>(file)
                        }
                        .await;
                        match opened {
                            Ok(file) => reader = Reader::Open(file),
                            Err(e) => {
                                fail(&outcome, e);
                                return None;
                            }
                        }
                    }
                    let Reader::Open(file) = &mut reader else {
                        return None;
                    };
                    let mut data = vec![0u8; want];
                    if let Err(e) = file.read_exact(&mut data).await {
                        fail(&outcome, e);
                        return None;
                    }
                    data
                }
                Reader::Done => return None,
            };
            let message = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                expected: blob.digest.clone(),
                offset,
                data,
                labels: HashMap::new(),
            };
            let next = offset + want as i64;
            Some((message, (reader, next, blob, reference, outcome)))
        },
    )
    .boxed()
}
