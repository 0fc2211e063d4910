//! A stream of instance changes as a JS async iterator (`for await`).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use napi::bindgen_prelude::{AsyncGenerator, ToNapiValue};
use napi::{sys, Env};
use napi_derive::napi;
use zixiao_core::{InstanceEvent as CoreEvent, Result};

use crate::error;

type EventStream = Pin<Box<dyn Stream<Item = Result<CoreEvent>> + Send>>;

/// Instance changes in order, then live; from `controller.watchInstances(after)`.
///
/// Use `for await (const event of watch)`; each event has `kind` (`added`,
/// `modified`, `deleted`), `revision`, `id` and `instance`. It ends only
/// when the controller closes: `break` to stop watching.
#[napi(async_iterator)]
pub struct InstanceWatch {
    // A tokio mutex: the lock is held across the await for the next event.
    stream: Arc<tokio::sync::Mutex<EventStream>>,
}

impl InstanceWatch {
    pub(crate) fn new(stream: impl Stream<Item = Result<CoreEvent>> + Send + 'static) -> Self {
        InstanceWatch {
            stream: Arc::new(tokio::sync::Mutex::new(Box::pin(stream))),
        }
    }
}

/// One item of the watch: converted on the JS thread, where an error
/// becomes the rejection of `next()` with its `code`. Named after the event
/// it becomes, so the generated types say `InstanceEvent` (of types.d.ts).
pub struct InstanceEvent(Result<CoreEvent>);

impl ToNapiValue for InstanceEvent {
    unsafe fn to_napi_value(env: sys::napi_env, item: Self) -> napi::Result<sys::napi_value> {
        let env = Env::from_raw(env);
        match item.0 {
            Ok(event) => {
                let value = env.to_js_value(&event)?;
                // SAFETY: `env` is the live env napi passed to this call and
                // `value` was created in it just now.
                unsafe { ToNapiValue::to_napi_value(env.raw(), value) }
            }
            Err(e) => Err(error::to_js(&env, e)),
        }
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
        let stream = self.stream.clone();
        async move { Ok(stream.lock().await.next().await.map(InstanceEvent)) }
    }
}
