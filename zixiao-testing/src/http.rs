//! A blocking HTTP/1.1 client as small as a test of a JSON endpoint needs
//! (the web dashboard's gateway): one request per connection, the answer
//! read to its end.

use std::io::{Read, Write};

/// An HTTP answer: its status, its head (lower-cased) and its body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The status line and headers, lower-cased for matching.
    pub head: String,
    /// The body as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `kind` and `message` of a `{"error": {...}}` body.
    pub fn error(&self) -> (String, String) {
        let json = self.json();
        let text = |key: &str| json["error"][key].as_str().unwrap_or_default().to_owned();
        (text("kind"), text("message"))
    }
}

/// `METHOD PATH` to `addr` (`host:port`) with `headers` (each `Name:
/// value`; `Host: addr` and `Connection: close` unless given: a given
/// `Connection` must say `close` too) and `body`. Panics if the
/// server cannot be reached or answers something that is not HTTP.
pub fn request(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the HTTP listener");
    let given = |name: &str| {
        headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with(name))
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    // The answer is read to the end of the connection.
    if !given("connection:") {
        head.push_str("Connection: close\r\n");
    }
    if !given("host:") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(head.as_bytes()).expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {head}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}
