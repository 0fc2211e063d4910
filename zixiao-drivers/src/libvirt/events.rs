//! Lifecycle events from libvirt's event loop: a guest that powers itself
//! off is seen when it happens, with the time, instead of by polling. The
//! driver records when each domain stopped (for `RuntimeState::Exited`'s
//! `at`) and broadcasts every event to subscribers.
//!
//! Events arrive on the connection opened first; after the daemon restarts
//! they stop until the driver is connected again, and states are still read
//! from libvirt on every `inspect`.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use virt::connect::Connect;
use virt::sys;

use super::connection::Connection;

/// What happened to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    /// Defined or updated.
    Defined,
    /// Undefined.
    Undefined,
    /// Started (booted, restored, reverted to a running snapshot).
    Started,
    /// Paused.
    Suspended,
    /// Unpaused.
    Resumed,
    /// Stopped: shut down, destroyed, crashed or failed.
    Stopped,
    /// The guest is shutting down (it may still stop).
    ShuttingDown,
    /// The guest crashed (panicked).
    Crashed,
    /// Another event (a libvirt event number).
    Other(i32),
}

impl LifecycleKind {
    fn from_raw(event: c_int) -> LifecycleKind {
        match u32::try_from(event) {
            Ok(sys::VIR_DOMAIN_EVENT_DEFINED) => LifecycleKind::Defined,
            Ok(sys::VIR_DOMAIN_EVENT_UNDEFINED) => LifecycleKind::Undefined,
            Ok(sys::VIR_DOMAIN_EVENT_STARTED) => LifecycleKind::Started,
            Ok(sys::VIR_DOMAIN_EVENT_SUSPENDED) => LifecycleKind::Suspended,
            Ok(sys::VIR_DOMAIN_EVENT_RESUMED) => LifecycleKind::Resumed,
            Ok(sys::VIR_DOMAIN_EVENT_STOPPED) => LifecycleKind::Stopped,
            Ok(sys::VIR_DOMAIN_EVENT_SHUTDOWN) => LifecycleKind::ShuttingDown,
            Ok(sys::VIR_DOMAIN_EVENT_CRASHED) => LifecycleKind::Crashed,
            _ => LifecycleKind::Other(event),
        }
    }
}

/// One lifecycle event of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The domain's name.
    pub domain: String,
    /// What happened.
    pub kind: LifecycleKind,
    /// When the driver received it.
    pub at: DateTime<Utc>,
}

struct Shared {
    stopped: Mutex<HashMap<String, DateTime<Utc>>>,
    sender: broadcast::Sender<LifecycleEvent>,
}

/// The driver's event subscription; cheap to clone.
#[derive(Clone)]
pub(crate) struct Events {
    shared: Arc<Shared>,
    /// The connection the callback is registered on, kept open by this.
    _registered: Arc<Option<Registration>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("registered", &self._registered.is_some())
            .finish()
    }
}

struct Registration {
    conn: Connect,
    id: c_int,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: `conn` is the live connection `id` was registered on.
        unsafe { sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), self.id) };
    }
}

impl Events {
    /// Registers for lifecycle events on `conn`. Without an event loop or
    /// with a driver that has no events, the driver works without them.
    pub(crate) async fn register(conn: &Connection) -> Events {
        let (sender, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            stopped: Mutex::new(HashMap::new()),
            sender,
        });
        let for_callback = shared.clone();
        let registered = conn
            .run("register for domain events", move |conn| {
                Ok(register_lifecycle(conn, for_callback))
            })
            .await
            .ok()
            .flatten();
        Events {
            shared,
            _registered: Arc::new(registered),
        }
    }

    /// When `domain` was last seen to stop, if since the driver connected.
    pub(crate) fn stopped_at(&self, domain: &str) -> Option<DateTime<Utc>> {
        self.shared
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .copied()
    }

    /// A receiver of every event from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.shared.sender.subscribe()
    }
}

fn register_lifecycle(conn: &Connect, shared: Arc<Shared>) -> Option<Registration> {
    let opaque = Arc::into_raw(shared) as *mut c_void;
    let callback: sys::virConnectDomainEventCallback = Some(on_lifecycle);
    // SAFETY: libvirt calls a lifecycle callback with the lifecycle
    // signature; the generic type only erases it (VIR_DOMAIN_EVENT_CALLBACK
    // in C is this same cast). Both are optional `extern "C"` fn pointers.
    let generic: sys::virConnectDomainEventGenericCallback =
        unsafe { std::mem::transmute(callback) };
    // SAFETY: `conn` is live; `opaque` is an `Arc<Shared>` that `free_shared`
    // releases exactly once, when libvirt drops the callback.
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            generic,
            opaque,
            Some(free_shared),
        )
    };
    if id < 0 {
        // SAFETY: registration failed, so libvirt did not take `opaque`.
        drop(unsafe { Arc::from_raw(opaque as *const Shared) });
        return None;
    }
    Some(Registration {
        conn: conn.clone(),
        id,
    })
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    if opaque.is_null() || dom.is_null() {
        return 0;
    }
    // SAFETY: `opaque` is the `Arc<Shared>` registered with this callback,
    // alive until `free_shared`; we only borrow it.
    let shared = unsafe { &*(opaque as *const Shared) };
    // SAFETY: `dom` is valid for the callback; the name it returns belongs
    // to the domain and is not freed by us.
    let name = unsafe { sys::virDomainGetName(dom) };
    if name.is_null() {
        return 0;
    }
    // SAFETY: a non-NULL, NUL-terminated string owned by `dom`.
    let name = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    let kind = LifecycleKind::from_raw(event);
    let at = Utc::now();
    {
        let mut stopped = shared.stopped.lock().unwrap_or_else(|p| p.into_inner());
        match kind {
            LifecycleKind::Stopped => {
                stopped.insert(name.clone(), at);
            }
            LifecycleKind::Started | LifecycleKind::Undefined => {
                stopped.remove(&name);
            }
            _ => {}
        }
    }
    // No subscriber is fine.
    let _ = shared.sender.send(LifecycleEvent {
        domain: name,
        kind,
        at,
    });
    0
}

unsafe extern "C" fn free_shared(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: `opaque` came from `Arc::into_raw` in `register_lifecycle`,
        // and libvirt calls this once when the callback is deregistered.
        drop(unsafe { Arc::from_raw(opaque as *const Shared) });
    }
}
