//! A tiny HTTP/1.1 server on loopback that answers each GET path with a
//! canned response and records the paths asked for: the hostile or broken
//! remote end (a registry serving bytes that do not match their digest, a
//! redirect to plain HTTP) that real servers will not play.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The most a request head may be.
const MAX_HEAD: usize = 64 * 1024;

/// One canned answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedResponse {
    /// The status code.
    pub status: u16,
    /// Extra headers (`Content-Length` is added).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl CannedResponse {
    /// `200 OK` with `body` of `content_type`.
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        CannedResponse {
            status: 200,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// `307 Temporary Redirect` to `location`.
    pub fn redirect(location: &str) -> Self {
        CannedResponse {
            status: 307,
            headers: vec![("Location".to_owned(), location.to_owned())],
            body: Vec::new(),
        }
    }
}

/// The server; it stops when dropped.
#[derive(Debug)]
pub struct CannedServer {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CannedServer {
    /// Serves `routes` (path, with any query, to answer; others get 404) on
    /// a free loopback port.
    pub async fn start(routes: HashMap<String, CannedResponse>) -> std::io::Result<CannedServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let routes = Arc::new(routes);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let routes = Arc::clone(&routes);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    // A client that hangs up early is its own business.
                    let _ = answer(stream, &routes, &seen).await;
                });
            }
        });
        Ok(CannedServer {
            address,
            requests,
            task,
        })
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The paths asked for so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    mut stream: TcpStream,
    routes: &HashMap<String, CannedResponse>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
        // Not HTTP (a TLS ClientHello, say): hang up, as a plain-HTTP
        // server does, rather than wait for a head that never comes.
        if !head[0].is_ascii_uppercase() {
            return Ok(());
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.clone());
    let not_found = CannedResponse {
        status: 404,
        headers: Vec::new(),
        body: Vec::new(),
    };
    let response = routes.get(&path).unwrap_or(&not_found);
    let mut out = format!(
        "HTTP/1.1 {} Canned\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.body.len()
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}
