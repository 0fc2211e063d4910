//! [`Traced`]: an [`Api`] whose every call runs in a `tracing` span named
//! by its operation and target, so whatever the layers below log (the
//! reconcile steps, a runtime's error) carries the request it served. A
//! wrapper, like metrics and audit, never code in a handler.

use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use super::{Api, Request, Response};
use crate::{ErrorKind, Result};

/// Runs each call to `inner` in an `api` span (fields `operation` and
/// `target`) and logs how it ended: at debug level when it answered or
/// was refused for the caller's input, as a warning when it failed on
/// our side (`Internal`, `Unavailable`).
#[derive(Debug)]
pub struct Traced<A> {
    inner: A,
}

impl<A> Traced<A> {
    /// Traces the calls made to `inner`.
    pub fn new(inner: A) -> Self {
        Traced { inner }
    }

    /// The wrapped API.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[async_trait]
impl<A: Api> Api for Traced<A> {
    async fn call(&self, request: Request) -> Result<Response> {
        let span = tracing::info_span!(
            "api",
            operation = request.operation(),
            target = tracing::field::Empty,
        );
        // Lists and watches act on no one thing: no target field at all.
        if let Some(target) = request.target() {
            span.record("target", target);
        }
        let started = Instant::now();
        let result = self.inner.call(request).instrument(span.clone()).await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let _entered = span.enter();
        match &result {
            Ok(_) => tracing::debug!(elapsed_ms, "answered"),
            Err(e) if matches!(e.kind(), ErrorKind::Internal | ErrorKind::Unavailable) => {
                tracing::warn!(elapsed_ms, kind = e.kind().as_str(), error = %e.chain(), "failed")
            }
            Err(e) => {
                tracing::debug!(elapsed_ms, kind = e.kind().as_str(), error = %e.chain(), "refused")
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;
    use crate::Error;

    /// An API that answers every call with `NotFound`.
    #[derive(Debug)]
    struct Missing;

    #[async_trait]
    impl Api for Missing {
        async fn call(&self, _request: Request) -> Result<Response> {
            Err(Error::not_found("instance `web`"))
        }
    }

    /// Records the fields of every span and event as `name=value` text.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }

    impl Subscriber for Recorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut text = format!("span {} ", span.metadata().name());
            span.record(&mut Fields(&mut text));
            self.0.lock().unwrap().push(text);
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, values: &Record<'_>) {
            let mut text = "record ".to_owned();
            values.record(&mut Fields(&mut text));
            self.0.lock().unwrap().push(text);
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut text = format!("event {} ", event.metadata().level());
            event.record(&mut Fields(&mut text));
            self.0.lock().unwrap().push(text);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[tokio::test]
    async fn a_call_runs_in_a_span_naming_it_and_its_outcome_is_logged() {
        let recorder = Arc::new(Recorder::default());
        let _default = tracing::subscriber::set_default(recorder.clone());
        let traced = Traced::new(Missing);
        let request = Request::GetInstance {
            instance: "web".to_owned(),
        };
        let err = traced.call(request).await.expect_err("not found");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let seen = recorder.0.lock().unwrap().join("\n");
        assert!(
            seen.contains("span api operation=\"instance.get\"")
                && seen.contains("record target=\"instance web\""),
            "{seen}"
        );
        assert!(
            seen.contains("event DEBUG") && seen.contains("kind=\"not_found\""),
            "{seen}"
        );
    }
}
