//! Between JS values and the core's serde data: requests come in as plain
//! objects, results go out as objects shaped like the CLI's JSON output, and
//! every Controller future becomes a Promise that rejects with [`error::to_js`].

use std::future::Future;

use napi::bindgen_prelude::{PromiseRaw, ToNapiValue, Unknown};
use napi::Env;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error;

/// Reads `value` as a `T`; an `invalid_argument` error names the path of the
/// field that does not fit, as the core's validation does (`spec.cpus`),
/// after `prefix` when there is one.
pub(crate) fn from_js<T: DeserializeOwned>(
    prefix: Option<&str>,
    value: serde_json::Value,
) -> zixiao_core::Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix, path.as_str()) {
            (Some(prefix), ".") => prefix.to_owned(),
            (Some(prefix), path) => format!("{prefix}.{path}"),
            (None, ".") => "request".to_owned(),
            (None, path) => path.to_owned(),
        };
        error::invalid(field, e.into_inner().to_string())
    })
}

/// A Promise of `future`'s value, converted to a JS value by `convert` on
/// the JS thread; it rejects with the error's JS form.
pub(crate) fn promise_with<'env, T, V, F, C>(
    env: &'env Env,
    future: F,
    convert: C,
) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
    F: Future<Output = zixiao_core::Result<T>> + Send + 'static,
    C: FnOnce(&'env Env, T) -> napi::Result<V> + 'static,
{
    env.spawn_future_with_callback(
        async move { Ok(future.await) },
        move |env, result| match result {
            Ok(value) => convert(env, value),
            Err(e) => Err(error::to_js(env, e)),
        },
    )
}

/// A Promise of `future`'s value as a plain JS object.
pub(crate) fn promise<'env, T, F>(
    env: &'env Env,
    future: F,
) -> napi::Result<PromiseRaw<'env, Unknown<'env>>>
where
    T: Serialize + Send + 'static,
    F: Future<Output = zixiao_core::Result<T>> + Send + 'static,
{
    promise_with(env, future, |env, value| env.to_js_value(&value))
}
