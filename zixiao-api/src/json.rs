//! JSON documents in `bytes` fields: encoding never fails for the model's
//! plain structs; decoding names the field and the reason.

use serde::de::DeserializeOwned;
use serde::Serialize;
use zixiao_core::Error;

/// Encodes a model object for a `*_json` field.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Model objects are plain structs with string map keys, which always encode.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes the `*_json` field `field`. Errors: `InvalidArgument` naming the
/// field, and an empty field is reported as missing.
pub fn decode<T: DeserializeOwned>(field: &str, bytes: &[u8]) -> Result<T, Error> {
    if bytes.is_empty() {
        return Err(Error::invalid(field, "missing"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(field, format!("not a valid document: {e}")))
}
