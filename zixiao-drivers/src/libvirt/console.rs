//! The serial console: its output, which virtlogd appends to the
//! instance's console log (so it outlives the guest and the driver), and
//! interactive attach through a libvirt stream (`virDomainOpenConsole`).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use virt::stream::Stream;
use virt::sys;
use zixiao_core::driver::ConsoleStream;
use zixiao_core::{DriverError, Instance};

use super::{error, LibvirtDriver};

impl LibvirtDriver {
    /// Opens the serial console of a running domain as a byte stream. A
    /// console already open elsewhere (`virsh console`) is taken over, since
    /// libvirt allows one at a time.
    pub(crate) async fn attach_console(
        &self,
        instance: &Instance,
    ) -> Result<ConsoleStream, DriverError> {
        let runtime = tokio::runtime::Handle::current();
        let stream = self
            .with_domain(instance, "attach console", |domain, name| {
                if !domain
                    .is_active()
                    .map_err(|e| error::failed(format!("read state of domain {name}"), e))?
                {
                    return Err(DriverError::FailedPrecondition(format!(
                        "domain {name} is not running"
                    )));
                }
                let failed = |e| error::failed(format!("open the console of domain {name}"), e);
                let conn = domain.connect().map_err(failed)?;
                let stream = Stream::new(&conn, 0).map_err(failed)?;
                domain
                    .open_console(None, &stream, sys::VIR_DOMAIN_CONSOLE_FORCE)
                    .map_err(failed)?;
                Ok(ConsoleHandle(stream))
            })
            .await?;
        let stream = Arc::new(stream);
        let (user, guest) = tokio::io::duplex(64 * 1024);
        let (mut from_user, mut to_user) = tokio::io::split(guest);
        let (output, input) = tokio::io::split(user);

        // Guest output to the user, until either side closes.
        let (recv_stream, recv_runtime) = (stream.clone(), runtime.clone());
        spawn("libvirt-console-out", move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match recv_stream.0.recv(&mut buf) {
                    Ok(n) if n > 0 => n as usize,
                    _ => break,
                };
                if recv_runtime.block_on(to_user.write_all(&buf[..n])).is_err() {
                    break;
                }
            }
            finish(recv_stream);
        });
        // What the user types, to the guest.
        spawn("libvirt-console-in", move || {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = match runtime.block_on(from_user.read(&mut buf)) {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                if stream.0.send(&buf[..n]).is_err() {
                    break;
                }
            }
            finish(stream);
        });
        Ok(ConsoleStream {
            output: Box::new(output),
            input: Box::new(input),
        })
    }
}

/// A console stream (`virt::stream::Stream` is not `Debug`).
struct ConsoleHandle(Stream);

impl std::fmt::Debug for ConsoleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleStream")
    }
}

/// The last user of the stream ends it, so the daemon frees the console.
fn finish(stream: Arc<ConsoleHandle>) {
    if let Ok(ConsoleHandle(stream)) = Arc::try_unwrap(stream) {
        let _ = stream.abort();
    }
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) {
    // Without a thread the console is one-way or silent, not broken: the
    // other half still ends when its side closes.
    let _ = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(work);
}
