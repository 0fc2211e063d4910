//! A small QMP client (QEMU's JSON machine protocol) over the instance's
//! Unix socket: the greeting, `qmp_capabilities`, then one command at a
//! time. Asynchronous events that arrive between replies are skipped: the
//! driver reads state with `query-status` rather than following events, so
//! a controller restart loses nothing.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How long one QMP exchange may take before QEMU counts as hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QmpError {
    /// The socket could not be reached or broke.
    #[error("QMP socket {path}")]
    Io {
        /// The socket.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU answered with an error.
    #[error("QEMU refused `{command}`: {class}: {desc}")]
    Refused {
        /// The command sent.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// QEMU sent something that is not QMP.
    #[error("unexpected QMP reply: {0}")]
    Protocol(String),
    /// QEMU did not answer in time.
    #[error("QEMU did not answer `{0}` within 10 s")]
    Timeout(String),
}

/// A negotiated QMP connection.
pub(crate) struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    path: String,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub(crate) async fn connect(socket: &Path) -> Result<Qmp, QmpError> {
        let path = socket.display().to_string();
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| QmpError::Io {
                path: path.clone(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(read),
            writer,
            path,
        };
        let greeting = qmp.read_message("greeting").await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub(crate) async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|source| self.io(source))?;
        loop {
            let mut reply = self.read_message(command).await?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(value) = reply.get_mut("return") {
                return Ok(value.take());
            }
            if let Some(error) = reply.get("error") {
                let text = |key: &str| {
                    error
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                return Err(QmpError::Refused {
                    command: command.to_owned(),
                    class: text("class"),
                    desc: text("desc"),
                });
            }
            return Err(QmpError::Protocol(reply.to_string()));
        }
    }

    /// QEMU's run state (`prelaunch`, `running`, `paused`, `shutdown`, ...).
    pub(crate) async fn status(&mut self) -> Result<String, QmpError> {
        let reply = self.execute("query-status", None).await?;
        reply
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Protocol(format!("query-status returned {reply}")))
    }

    /// The host thread ids of the vCPUs.
    pub(crate) async fn vcpu_threads(&mut self) -> Result<Vec<u32>, QmpError> {
        let reply = self.execute("query-cpus-fast", None).await?;
        let cpus = reply
            .as_array()
            .ok_or_else(|| QmpError::Protocol(format!("query-cpus-fast returned {reply}")))?;
        Ok(cpus
            .iter()
            .filter_map(|cpu| cpu.get("thread-id").and_then(Value::as_u64))
            .filter_map(|tid| u32::try_from(tid).ok())
            .collect())
    }

    async fn read_message(&mut self, waiting_for: &str) -> Result<Value, QmpError> {
        let mut line = String::new();
        let read = tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| QmpError::Timeout(waiting_for.to_owned()))?
            .map_err(|source| self.io(source))?;
        if read == 0 {
            return Err(self.io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QEMU closed the connection",
            )));
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
    }

    fn io(&self, source: std::io::Error) -> QmpError {
        QmpError::Io {
            path: self.path.clone(),
            source,
        }
    }
}
