//! [`ConsoleSession`]: an instance's console as the bindings hand it out,
//! a bidirectional byte stream that several calls share: read what the
//! instance wrote, type into it, close the input.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use zixiao_core::driver::ConsoleStream;
use zixiao_core::{Error, Result};

type Output = Box<dyn AsyncRead + Send + Unpin>;
type Input = Box<dyn AsyncWrite + Send + Unpin>;

/// The two halves of one console, each behind its own lock so a read that
/// waits never holds up a write. The input is `None` once closed.
pub struct ConsoleSession {
    output: Mutex<Output>,
    input: Mutex<Option<Input>>,
}

impl ConsoleSession {
    /// A session over what `Client::attach_console` answered.
    pub fn new(console: ConsoleStream) -> Self {
        ConsoleSession {
            output: Mutex::new(console.output),
            input: Mutex::new(Some(console.input)),
        }
    }

    /// Up to `max` bytes the instance wrote, waiting for at least one;
    /// empty once the console ended. Errors: `Unavailable` (it broke).
    pub async fn read(&self, max: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; max.max(1)];
        let n = self
            .output
            .lock()
            .await
            .read(&mut buf)
            .await
            .map_err(|e| broken("read from", e))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Types `data` into the console. Errors: `FailedPrecondition` once
    /// closed, `Unavailable` (it broke).
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        let mut input = self.input.lock().await;
        let input = input
            .as_mut()
            .ok_or_else(|| Error::FailedPrecondition("the console is closed".to_owned()))?;
        input
            .write_all(data)
            .await
            .map_err(|e| broken("write to", e))?;
        input.flush().await.map_err(|e| broken("write to", e))
    }

    /// Ends the input (the instance reads end of file). Idempotent. Errors:
    /// `Unavailable` (it broke).
    pub async fn close(&self) -> Result<()> {
        if let Some(mut input) = self.input.lock().await.take() {
            input.shutdown().await.map_err(|e| broken("close", e))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleSession")
    }
}

fn broken(what: &str, e: std::io::Error) -> Error {
    Error::Unavailable {
        what: format!("the console (cannot {what} it)"),
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_go_both_ways_and_a_closed_input_refuses_writes() {
        // The instance's side: what it reads is what it echoes back.
        let (ours, theirs) = tokio::io::duplex(64);
        let (output, input) = tokio::io::split(ours);
        let session = ConsoleSession::new(ConsoleStream {
            output: Box::new(output),
            input: Box::new(input),
        });
        let echo = tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(theirs);
            tokio::io::copy(&mut read, &mut write).await
        });
        session.write(b"hi\n").await.expect("write");
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(session.read(64).await.expect("read"));
        }
        assert_eq!(got, b"hi\n");
        session.close().await.expect("close");
        session.close().await.expect("closing again is fine");
        let err = session.write(b"more").await.expect_err("closed");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::FailedPrecondition);
        echo.await.expect("echo task").expect("echo");
        assert!(session.read(64).await.expect("read").is_empty(), "the end");
    }
}
