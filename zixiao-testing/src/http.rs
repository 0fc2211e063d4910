//! A blocking HTTP/1.1 client as small as a test of a JSON endpoint needs
//! (the web dashboard's gateway): one request per connection, the answer
//! read to its end; over TLS, `curl` checking the server's certificate
//! against a given CA, as a browser that trusts that CA would.

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
    parse(&answer)
}

/// [`request`] over HTTPS, trusting only the CA certificate in the PEM file
/// `ca` (with `curl`). Panics if curl cannot be run; a TLS failure (such
/// as a certificate the CA did not issue) is an answer with status 0 and
/// curl's message as the body.
pub fn https_request(
    addr: &str,
    ca: &std::path::Path,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Answer {
    let mut curl = std::process::Command::new("curl");
    curl.args([
        "--silent",
        "--show-error",
        "--include",
        "--http1.1",
        "--cacert",
    ])
    .arg(ca)
    .args(["--request", method, "--data-binary", "@-"]);
    for header in headers {
        curl.args(["--header", header]);
    }
    let mut child = curl
        .arg(format!("https://{addr}{path}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    child
        .stdin
        .take()
        .expect("curl's stdin")
        .write_all(body.as_bytes())
        .expect("send the body to curl");
    let out = child.wait_with_output().expect("wait for curl");
    if !out.status.success() {
        return Answer {
            status: 0,
            head: String::new(),
            body: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// An answer as it came over the connection.
fn parse(answer: &str) -> Answer {
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
