//! The connection to one libvirt daemon: opened lazily, reopened when the
//! daemon went away, and every call run on the blocking pool (libvirt's API
//! is synchronous).

use std::sync::{Arc, Mutex, Once};

use virt::connect::Connect;
use zixiao_core::DriverError;

use super::error;

/// A shared, self-healing connection to the libvirt at `uri`.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    uri: Arc<str>,
    current: Arc<Mutex<Option<ConnectHandle>>>,
}

/// `virt::connect::Connect` has no `Debug`.
struct ConnectHandle(Connect);

impl std::fmt::Debug for ConnectHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connect")
    }
}

impl Connection {
    /// Opens the connection and checks that the daemon answers. Errors:
    /// `Unavailable` naming the URI.
    pub(crate) async fn open(uri: &str) -> Result<Connection, DriverError> {
        let connection = Connection {
            uri: Arc::from(uri),
            current: Arc::new(Mutex::new(None)),
        };
        connection.run("connect", |_| Ok(())).await?;
        Ok(connection)
    }

    /// Runs `call` with a live connection on the blocking pool. A failure
    /// that leaves the connection dead is `Unavailable` (and the next call
    /// reconnects); other failures are what `call` made of them.
    pub(crate) async fn run<T, F>(&self, operation: &str, call: F) -> Result<T, DriverError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, DriverError> + Send + 'static,
    {
        let this = self.clone();
        let operation = operation.to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = this.connect()?;
            let result = call(&conn);
            if result.is_err() && !conn.is_alive().unwrap_or(false) {
                this.forget();
                // The call's own error is less useful than "the daemon is gone".
                return Err(this.open_error_or_lost(&operation));
            }
            result
        })
        .await
        .map_err(|e| DriverError::Runtime {
            operation: format!("libvirt call `{}`", self.uri),
            source: Box::new(e),
        })?
    }

    /// A live connection: the cached one if it still answers, else a new one.
    fn connect(&self) -> Result<Connect, DriverError> {
        init_libvirt();
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(ConnectHandle(conn)) = current.as_ref() {
            if conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
        }
        *current = None;
        let conn = Connect::open(Some(&self.uri)).map_err(|e| error::unavailable(&self.uri, e))?;
        // Notice a dead daemon within ~15 s even when idle (remote URIs only;
        // local ones fail fast on the closed socket). Unsupported on some
        // drivers (test://), which is fine.
        let _ = conn.set_keep_alive(5, 3);
        *current = Some(ConnectHandle(conn.clone()));
        Ok(conn)
    }

    fn forget(&self) {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = None;
    }

    fn open_error_or_lost(&self, operation: &str) -> DriverError {
        match Connect::open(Some(&self.uri)) {
            Err(e) => error::unavailable(&self.uri, e),
            Ok(conn) => {
                drop(conn);
                DriverError::Unavailable {
                    runtime: error::runtime_name(&self.uri),
                    source: Box::new(error::Message(format!(
                        "the connection was lost during `{operation}`"
                    ))),
                }
            }
        }
    }
}

/// Process-wide libvirt set-up, once: no error printing to stderr (errors
/// are returned), and the default event loop, which keepalives and
/// lifecycle events need, registered before the first connection opens.
pub(crate) fn init_libvirt() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        virt::error::clear_error_callback();
        if virt::event::event_register_default_impl().is_ok() {
            let spawned = std::thread::Builder::new()
                .name("libvirt-events".to_owned())
                .spawn(|| loop {
                    if virt::event::event_run_default_impl().is_err() {
                        // A failing iteration (EINTR) must not spin.
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                });
            // Without the thread, keepalives and events are off; calls work.
            drop(spawned);
        }
    });
}
