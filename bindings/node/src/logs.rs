//! An instance's log (its console output, or stdout and stderr), read in
//! chunks from an offset.

use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, PromiseRaw};
use napi::Env;
use napi_derive::napi;
use zixiao_core::controller::LogReader as CoreLogReader;

use crate::convert::promise_with;

/// Bytes read by default in one call.
const DEFAULT_MAX: u32 = 64 * 1024;

/// A piece of an instance's log.
#[napi(object)]
pub struct LogChunk {
    /// The bytes read.
    pub data: Buffer,
    /// The offset to read from next to follow the log.
    pub next_offset: i64,
}

/// Reads one instance's log; from `controller.logs(instance)`.
#[napi]
pub struct LogReader {
    inner: Arc<CoreLogReader>,
}

impl LogReader {
    pub(crate) fn new(inner: CoreLogReader) -> Self {
        LogReader {
            inner: Arc::new(inner),
        }
    }
}

#[napi]
impl LogReader {
    /// Up to `max` bytes (default 64 KiB) from `offset` (default 0); read
    /// again from `nextOffset` to follow. Rejects with `not_found` (no log
    /// yet), `unavailable`.
    #[napi]
    pub fn read<'env>(
        &self,
        env: &'env Env,
        offset: Option<i64>,
        max: Option<u32>,
    ) -> napi::Result<PromiseRaw<'env, LogChunk>> {
        let reader = self.inner.clone();
        let offset = u64::try_from(offset.unwrap_or(0)).unwrap_or(0);
        let max = max.unwrap_or(DEFAULT_MAX) as usize;
        promise_with(
            env,
            async move { reader.read(offset, max).await },
            |_, chunk| {
                Ok(LogChunk {
                    data: chunk.data.into(),
                    next_offset: i64::try_from(chunk.next_offset).unwrap_or(i64::MAX),
                })
            },
        )
    }

    /// Whether the instance still runs, so more may be written.
    #[napi]
    pub fn is_running<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, bool>> {
        let reader = self.inner.clone();
        promise_with(env, async move { reader.is_running().await }, |_, b| Ok(b))
    }
}
