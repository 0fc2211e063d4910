//! Streams from the API as JS async iterators (`for await`): instance
//! changes, node changes and a log as it grows. Each is one class over
//! [`ItemStream`].

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use napi::bindgen_prelude::{AsyncGenerator, Buffer, ToNapiValue};
use napi::{sys, Env};
use napi_derive::napi;
use zixiao_core::{InstanceEvent as CoreInstanceEvent, NodeEvent as CoreNodeEvent, Result};

use crate::error;

/// A stream of the API's items. A tokio mutex: the lock is held across the
/// await for the next item.
struct ItemStream<T>(Arc<tokio::sync::Mutex<BoxStream<'static, Result<T>>>>);

impl<T: Send + 'static> ItemStream<T> {
    fn new(stream: BoxStream<'static, Result<T>>) -> Self {
        ItemStream(Arc::new(tokio::sync::Mutex::new(stream)))
    }

    /// The next item, wrapped as it will reach JS; `None` at the end.
    fn next<W: Send + 'static>(
        &self,
        wrap: fn(Result<T>) -> W,
    ) -> impl std::future::Future<Output = napi::Result<Option<W>>> + Send + 'static {
        let stream = self.0.clone();
        async move { Ok(stream.lock().await.next().await.map(wrap)) }
    }
}

/// An item on its way to JS, converted on the JS thread: a value becomes a
/// plain object, an error the rejection of `next()` with its `code`.
///
/// # Safety
/// `env` must be the live env napi passed to the calling `to_napi_value`.
unsafe fn item_to_js<T: serde::Serialize>(
    env: sys::napi_env,
    item: Result<T>,
) -> napi::Result<sys::napi_value> {
    let env = Env::from_raw(env);
    match item {
        Ok(value) => {
            let value = env.to_js_value(&value)?;
            // SAFETY: `env` is live (the caller's promise) and `value` was
            // created in it just now.
            unsafe { ToNapiValue::to_napi_value(env.raw(), value) }
        }
        Err(e) => Err(error::to_js(&env, e)),
    }
}

/// One instance change on its way to JS; named after the `InstanceEvent`
/// of types.d.ts, which the generated types then name.
pub struct InstanceEvent(Result<CoreInstanceEvent>);

impl ToNapiValue for InstanceEvent {
    unsafe fn to_napi_value(env: sys::napi_env, item: Self) -> napi::Result<sys::napi_value> {
        // SAFETY: napi passes its live env.
        unsafe { item_to_js(env, item.0) }
    }
}

/// One node change on its way to JS (`NodeEvent` of types.d.ts).
pub struct NodeEvent(Result<CoreNodeEvent>);

impl ToNapiValue for NodeEvent {
    unsafe fn to_napi_value(env: sys::napi_env, item: Self) -> napi::Result<sys::napi_value> {
        // SAFETY: napi passes its live env.
        unsafe { item_to_js(env, item.0) }
    }
}

/// A piece of a log or of console output on its way to JS: a `Buffer`
/// (`LogPiece` of types.d.ts), or the rejection.
pub struct LogPiece(pub(crate) Result<Vec<u8>>);

impl ToNapiValue for LogPiece {
    unsafe fn to_napi_value(env: sys::napi_env, item: Self) -> napi::Result<sys::napi_value> {
        match item.0 {
            // SAFETY: napi passes its live env.
            Ok(data) => unsafe { Buffer::to_napi_value(env, Buffer::from(data)) },
            Err(e) => Err(error::to_js(&Env::from_raw(env), e)),
        }
    }
}

/// Instance changes in order, then live; from `controller.watchInstances(after)`.
///
/// Use `for await (const event of watch)`; each event has `kind` (`added`,
/// `modified`, `deleted`), `revision`, `id` and `instance`. It ends only
/// when the deployment closes: `break` to stop watching.
#[napi(async_iterator)]
pub struct InstanceWatch(ItemStream<CoreInstanceEvent>);

impl InstanceWatch {
    pub(crate) fn new(stream: BoxStream<'static, Result<CoreInstanceEvent>>) -> Self {
        InstanceWatch(ItemStream::new(stream))
    }
}

#[napi]
impl AsyncGenerator for InstanceWatch {
    type Yield = InstanceEvent;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _value: Option<()>,
    ) -> impl std::future::Future<Output = napi::Result<Option<InstanceEvent>>> + Send + 'static
    {
        self.0.next(InstanceEvent)
    }
}

/// Node changes in order, then live; from `controller.watchNodes(after)`.
/// Each event has `kind`, `revision`, `id` and `node`.
#[napi(async_iterator)]
pub struct NodeWatch(ItemStream<CoreNodeEvent>);

impl NodeWatch {
    pub(crate) fn new(stream: BoxStream<'static, Result<CoreNodeEvent>>) -> Self {
        NodeWatch(ItemStream::new(stream))
    }
}

#[napi]
impl AsyncGenerator for NodeWatch {
    type Yield = NodeEvent;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _value: Option<()>,
    ) -> impl std::future::Future<Output = napi::Result<Option<NodeEvent>>> + Send + 'static {
        self.0.next(NodeEvent)
    }
}

/// An instance's log as it grows, in `Buffer` pieces; from
/// `controller.followLog(instance, offset)`. It ends once the instance
/// stops running and everything it wrote was read.
#[napi(async_iterator)]
pub struct LogStream(ItemStream<Vec<u8>>);

impl LogStream {
    pub(crate) fn new(stream: BoxStream<'static, Result<Vec<u8>>>) -> Self {
        LogStream(ItemStream::new(stream))
    }
}

#[napi]
impl AsyncGenerator for LogStream {
    type Yield = LogPiece;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _value: Option<()>,
    ) -> impl std::future::Future<Output = napi::Result<Option<LogPiece>>> + Send + 'static {
        self.0.next(LogPiece)
    }
}
