//! An instance's interactive console as a bidirectional byte stream: write
//! bytes, read or `for await` its output, close. Holds the two halves of
//! the API's [`ConsoleStream`] as a [`ConsoleSession`].

use std::sync::Arc;

use napi::bindgen_prelude::{AsyncGenerator, Buffer, PromiseRaw};
use napi::Env;
use napi_derive::napi;
use zixiao_client::ConsoleSession;
use zixiao_core::driver::ConsoleStream;

use crate::convert::promise_with;
use crate::streams::LogPiece;

/// Bytes read by default in one call.
const DEFAULT_MAX: u32 = 64 * 1024;

/// An instance's console; from `controller.attachConsole(instance)`.
///
/// `write(data)` types bytes (a Buffer or a string) into it, `read(max)`
/// resolves to what the instance wrote (an empty Buffer once the console
/// ended), `for await (const piece of console)` reads until then, and
/// `close()` ends the input.
#[napi(async_iterator)]
pub struct Console {
    inner: Arc<ConsoleSession>,
}

impl Console {
    pub(crate) fn new(console: ConsoleStream) -> Self {
        Console {
            inner: Arc::new(ConsoleSession::new(console)),
        }
    }
}

#[napi]
impl Console {
    /// Types `data` into the console. Rejects with `failed_precondition`
    /// once closed, `unavailable` when the console broke.
    #[napi(ts_args_type = "data: Buffer | string")]
    pub fn write<'env>(
        &self,
        env: &'env Env,
        data: napi::Either<Buffer, String>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let data = match data {
            napi::Either::A(buffer) => buffer.to_vec(),
            napi::Either::B(text) => text.into_bytes(),
        };
        let session = self.inner.clone();
        promise_with(env, async move { session.write(&data).await }, |_, ()| {
            Ok(())
        })
    }

    /// Up to `max` bytes (default 64 KiB) the instance wrote, waiting for
    /// at least one; an empty Buffer once the console ended.
    #[napi]
    pub fn read<'env>(
        &self,
        env: &'env Env,
        max: Option<u32>,
    ) -> napi::Result<PromiseRaw<'env, Buffer>> {
        let session = self.inner.clone();
        let max = max.unwrap_or(DEFAULT_MAX) as usize;
        promise_with(env, async move { session.read(max).await }, |_, data| {
            Ok(Buffer::from(data))
        })
    }

    /// Ends the input; the session ends as the instance's runtime decides.
    #[napi]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let session = self.inner.clone();
        promise_with(env, async move { session.close().await }, |_, ()| Ok(()))
    }
}

#[napi]
impl AsyncGenerator for Console {
    type Yield = LogPiece;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _value: Option<()>,
    ) -> impl std::future::Future<Output = napi::Result<Option<LogPiece>>> + Send + 'static {
        let session = self.inner.clone();
        async move {
            Ok(match session.read(DEFAULT_MAX as usize).await {
                Ok(data) if data.is_empty() => None,
                outcome => Some(LogPiece(outcome)),
            })
        }
    }
}
