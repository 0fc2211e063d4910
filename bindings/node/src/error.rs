//! Maps the API's errors onto JS errors: an `Error` whose `code` is the
//! snake_case error kind (`not_found`, `invalid_argument`, ...,
//! `permission_denied`, `unauthenticated`: [`zixiao_core::ErrorKind::as_str`],
//! so every kind the core has reaches JS by its name), whose message is the
//! error itself and whose `cause` chain holds its sources. An invalid
//! argument also carries the field's path in `field`.

use napi::bindgen_prelude::{JsObjectValue, Object};
use napi::{Env, JsError};
use zixiao_core::Error;

/// The JS error for an API error, as a napi error that rejects or
/// throws that very object.
pub(crate) fn to_js(env: &Env, error: Error) -> napi::Error {
    let mut js = napi::Error::new(error.kind().as_str().to_owned(), error.to_string());
    if let Some(cause) = causes(std::error::Error::source(&error)) {
        js.cause = Some(Box::new(cause));
    }
    let value = JsError::from(js).into_unknown(*env);
    if let Error::InvalidArgument { field, .. } = &error {
        // SAFETY: `value` was just created by napi_create_error, so it is an object.
        if let Ok(mut object) = unsafe { value.cast::<Object>() } {
            // A property write on a fresh error object cannot fail.
            let _ = object.set_named_property("field", field.as_str());
        }
    }
    napi::Error::from(value)
}

/// The chain of `source` as plain JS errors, outermost first.
fn causes(source: Option<&(dyn std::error::Error + 'static)>) -> Option<napi::Error> {
    let source = source?;
    let mut cause = napi::Error::from_reason(source.to_string());
    if let Some(next) = causes(source.source()) {
        cause.set_cause(next);
    }
    Some(cause)
}

/// An `invalid_argument` error for `field`, as the core would raise it.
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::invalid(field, reason)
}
