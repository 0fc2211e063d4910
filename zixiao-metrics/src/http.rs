//! The `/metrics` listener: the smallest HTTP/1.1 that Prometheus and
//! `curl` need (one `GET` per connection, then close), so the metrics
//! endpoint adds no web framework. Requests are bounded: at most 8 KiB of
//! head read within 5 s, one source read per scrape.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{Metrics, Source};

/// The most of a request's head that is read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers `GET /metrics` on `listener` with `metrics` and `source`'s
/// state at that moment, until the task is dropped. Other paths are 404,
/// other methods 405.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, source: Arc<dyn Source>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, source) = (metrics.clone(), source.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &metrics, source.as_ref()).await {
                tracing::debug!(error = %e, "metrics listener: a scrape failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    source: &dyn Source,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return respond(&mut stream, "408 Request Timeout", "text/plain", "").await,
    };
    let mut request_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    if request_line.ends_with(b"\r") {
        request_line = &request_line[..request_line.len() - 1];
    }
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => {
            let snapshot = match source.snapshot().await {
                Ok(snapshot) => Some(snapshot),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: the deployment's state could not be read");
                    None
                }
            };
            let body = metrics.encode(snapshot);
            respond(&mut stream, "200 OK", CONTENT_TYPE, &body).await
        }
        (_, "/metrics") => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET only\n",
            )
            .await
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n").await,
    }
}

/// Reads until the end of the request's head (a blank line), at most
/// [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_HEAD {
            break;
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(head)
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
