//! The host's end of a microVM's vsock device, as a user reaches it: a
//! Unix socket speaking Firecracker's `CONNECT <port>` protocol, to the
//! test guest (`zixiao-vmm/guest/blk.c`) that echoes every connection to
//! its port 1234.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a test waits for the guest's answer or echo.
const PATIENCE: Duration = Duration::from_secs(60);

/// A host connection through the vsock socket `socket` to the guest's
/// port `port`: `CONNECT`, then the `OK <host port>` line. Panics with
/// what came back if the guest did not accept.
pub fn connect_to_guest(socket: impl AsRef<Path>, port: u32) -> UnixStream {
    let socket = socket.as_ref();
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .expect("CONNECT");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        assert_eq!(stream.read(&mut byte).expect("the answer"), 1, "closed");
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    assert!(line.starts_with("OK "), "not an OK line: {line:?}");
    stream
}

/// Sends `len` patterned bytes on `stream` while reading them back (the
/// test guest echoes every vsock connection) and checks they came back
/// as sent; `what` names the connection in the failure.
pub fn echoes(stream: UnixStream, len: usize, what: &str) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let sent = data.clone();
    let sender = std::thread::spawn(move || writer.write_all(&sent));
    let mut back = vec![0u8; len];
    (&stream).read_exact(&mut back).expect("the echo, in full");
    sender.join().expect("sender").expect("write");
    assert!(back == data, "{what}: the echo differs from what was sent");
}
