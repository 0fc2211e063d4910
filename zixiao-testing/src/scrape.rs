//! Scraping a `/metrics` endpoint as Prometheus does, for tests that check
//! what a server or an agent reports.

use std::collections::BTreeMap;
use std::io::{Read, Write};

/// `GET /metrics` from `addr` (`host:port`): the value of each sample by
/// its name and labels (`zixiao_nodes{status="ready"}`). Panics unless
/// the answer is a 200 in the OpenMetrics text format.
pub fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            Some((sample.to_owned(), value.parse().ok()?))
        })
        .collect()
}
