//! The API's errors at the HTTP edge: each [`ErrorKind`] has one status,
//! and the body is `{"error": {"kind": ..., "message": ...}}` with the
//! message and its causes, so the page can show what failed and why.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use zixiao_core::{Error, ErrorKind};

/// The HTTP status of an error of `kind`, as the HTTP mapping of gRPC's
/// codes has it (a precondition that fails is a conflict with the
/// object's state: 409).
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition | ErrorKind::Conflict => {
            StatusCode::CONFLICT
        }
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An API error as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

/// `error`'s message followed by its causes.
pub fn message(error: &Error) -> String {
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(source) = cause {
        let text = source.to_string();
        // Transparent variants repeat their source's message.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = source.source();
    }
    message
}

/// The JSON body of an error of `kind` with `message`.
pub(crate) fn body(kind: ErrorKind, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "kind": kind.as_str(), "message": message } })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        if kind == ErrorKind::Internal {
            tracing::warn!(error = %message(&self.0), "dashboard: a call failed");
        }
        crate::gateway::json(status(kind), &body(kind, &message(&self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_the_status_a_browser_expects() {
        assert_eq!(status(Error::invalid("name", "empty").kind()), 400);
        assert_eq!(status(Error::not_found("instance `x`").kind()), 404);
        assert_eq!(status(ErrorKind::AlreadyExists), 409);
        assert_eq!(status(ErrorKind::Unauthenticated), 401);
        assert_eq!(status(ErrorKind::PermissionDenied), 403);
    }

    #[test]
    fn a_message_keeps_its_causes() {
        let error = Error::Unavailable {
            what: "the store".to_owned(),
            source: Some("locked by pid 7".into()),
        };
        assert_eq!(message(&error), "the store is unavailable: locked by pid 7");
    }
}
