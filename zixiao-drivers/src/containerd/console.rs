//! The console capability: a container's output as it is written, and its
//! stdin through a FIFO the shim reads.
//!
//! Output follows the instance's log file (the shim writes it, so there is
//! nothing else to read from). Input needs a stdin FIFO, made at task start
//! only for instances labelled [`STDIN_LABEL`]`=true`: without that label a
//! container gets no stdin at all, as `docker run` without `-i`, so a `cat`
//! does not wait forever. The shim holds the FIFO open for reading and
//! writing, so a console detaching does not close the workload's stdin, and
//! a later console types into the same stdin (as `docker attach` does).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use zixiao_core::driver::{Console, ConsoleStream};
use zixiao_core::{DriverError, Instance, RuntimeState};

use super::error::io as io_error;
use super::{logs, ContainerdDriver};

/// Label that, set to `true`, gives a container a stdin the console writes to.
pub const STDIN_LABEL: &str = "zixiao.io/stdin";

/// The file name of an instance's stdin FIFO.
const STDIN_FIFO: &str = "stdin";

/// How often the output follower looks for new bytes. The log is a plain
/// file the shim appends to; polling it keeps the driver free of an inotify
/// dependency, and 20 ms is below what a person notices.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(20);

/// Whether `instance` asks for a stdin.
pub(crate) fn wants_stdin(instance: &Instance) -> Result<bool, DriverError> {
    match instance.labels.get(STDIN_LABEL).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(super::error::invalid(
            &format!("labels.{STDIN_LABEL}"),
            format!("`{other}` is not true or false"),
        )),
    }
}

/// The stdin FIFO of the instance whose files are in `dir`.
pub(crate) fn stdin_path(dir: &Path) -> PathBuf {
    dir.join(STDIN_FIFO)
}

/// Makes the FIFO at `path` unless it exists.
pub(crate) fn make_fifo(path: &Path) -> Result<(), DriverError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_error(
            "make stdin FIFO",
            io::Error::new(io::ErrorKind::InvalidInput, "path has NUL"),
        )
    })?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the
    // call; mkfifo only reads it.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::AlreadyExists {
        return Ok(());
    }
    Err(io_error(
        format!("make stdin FIFO {}", path.display()),
        error,
    ))
}

/// The input of a console to an instance without a stdin: every write fails,
/// saying why.
struct NoStdin {
    instance: String,
}

impl AsyncWrite for NoStdin {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!(
                "instance `{}` has no stdin (create it with the label {STDIN_LABEL}=true)",
                self.instance
            ),
        )))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ContainerdDriver {
    /// Copies what is appended to `log` from `offset` into `sink` until the
    /// console is closed, or the task has stopped and everything is copied.
    async fn follow(
        self,
        instance: Instance,
        log: PathBuf,
        mut offset: u64,
        mut sink: tokio::io::DuplexStream,
    ) {
        let what = format!("log of instance `{}`", instance.name);
        loop {
            let running = matches!(
                self.inspect_container(&instance).await,
                Ok(RuntimeState::Running | RuntimeState::Paused)
            );
            loop {
                match crate::log_file::read(&log, &what, offset, 64 * 1024).await {
                    Ok(chunk) if !chunk.data.is_empty() => {
                        if sink.write_all(&chunk.data).await.is_err() {
                            return; // the console was closed
                        }
                        offset = chunk.next_offset;
                    }
                    _ => break,
                }
            }
            if !running {
                // Read after the state, so output written before the exit is in.
                return;
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }
}

#[async_trait]
impl Console for ContainerdDriver {
    async fn attach(&self, instance: &Instance) -> Result<ConsoleStream, DriverError> {
        let id = Self::container_id(instance)?;
        match self.inspect_container(instance).await? {
            RuntimeState::Running | RuntimeState::Paused => {}
            _ => {
                return Err(DriverError::FailedPrecondition(format!(
                    "instance `{}` is not running",
                    instance.name
                )))
            }
        }
        let dir = self.instance_dir(id);
        let log = logs::log_path(&dir);
        let offset = tokio::fs::metadata(&log)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let input: Box<dyn AsyncWrite + Send + Unpin> = if wants_stdin(instance)? {
            let fifo = stdin_path(&dir);
            match tokio::net::unix::pipe::OpenOptions::new().open_sender(&fifo) {
                Ok(sender) => Box::new(sender),
                // No reader: the task's shim is gone.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    return Err(DriverError::FailedPrecondition(format!(
                        "nothing reads the stdin of instance `{}` (its shim is gone)",
                        instance.name
                    )))
                }
                Err(e) => return Err(io_error(format!("open {}", fifo.display()), e)),
            }
        } else {
            Box::new(NoStdin {
                instance: instance.name.clone(),
            })
        };
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(self.clone().follow(instance.clone(), log, offset, ours));
        Ok(ConsoleStream {
            output: Box::new(theirs),
            input,
        })
    }
}
