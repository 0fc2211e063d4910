//! The virtio-vsock device (virtio device id 19): stream sockets between
//! the guest and host processes without a network, with Firecracker's
//! host side: one Unix socket per microVM in its run directory (see
//! `muxer.rs` for the `CONNECT` protocol, flow control and bounds).
//!
//! Queues: receive (0, device to guest), transmit (1) and event (2).
//! Features: `VIRTIO_F_VERSION_1` only (stream sockets, no
//! `VIRTIO_VSOCK_F_SEQPACKET`). The config space is the guest's CID.
//!
//! **Where packets move.** Everything runs on the devices' I/O thread
//! (`virtio::DeviceIo`, shared with the network cards' receive sides),
//! which polls the host socket, the connections' streams and a kick
//! eventfd; a vCPU's queue notify only writes the kick, so connecting to
//! host sockets (which the thread's seccomp list allows, for `AF_UNIX`
//! only) never happens on a vCPU. The thread follows the VM's pause, so a
//! snapshot sees no packet half moved.
//!
//! **Snapshots** keep the transport and its queues (like every virtio
//! device) and the config; connections are host processes' sockets and do
//! not survive into another VMM. As in Firecracker, a restored device
//! owes the guest a `TRANSPORT_RESET` event, delivered on the event queue
//! as soon as it runs: the guest resets its connections, and new ones work.

mod muxer;
mod packet;
#[cfg(test)]
mod tests;

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{MmioTransport, VirtioDevice};
use crate::VmmError;

/// `VIRTIO_ID_VSOCK` (not in virtio-bindings 0.2's x86 ids).
pub(crate) const DEVICE_ID: u32 = 19;
/// The receive queue's index (device to guest).
pub(crate) const RX: usize = 0;
/// The transmit queue's index (guest to device).
pub(crate) const TX: usize = 1;
/// The event queue's index.
pub(crate) const EVT: usize = 2;
/// Descriptors in each queue.
pub(crate) const QUEUE_SIZE: u16 = 256;
/// The feature bits the device offers.
pub(crate) const FEATURES: u64 = 1 << VIRTIO_F_VERSION_1;
/// The host's CID (`VMADDR_CID_HOST`): where guest connections go.
pub(crate) const HOST_CID: u64 = 2;
/// `sun_path` holds 107 bytes and a NUL.
const SUN_PATH_MAX: usize = 107;
/// The longest suffix a guest connection adds to the socket path.
const PORT_SUFFIX_MAX: usize = "_4294967295".len();

/// A guest's vsock context id: 3 or more (0 to 2 are the hypervisor,
/// local and host addresses) and not `VMADDR_CID_ANY` (`u32::MAX`).
///
/// ```
/// use zixiao_vmm::GuestCid;
/// assert_eq!(GuestCid::try_from(3).unwrap().get(), 3);
/// assert!(GuestCid::try_from(2).is_err());
/// assert!(GuestCid::try_from(u32::MAX).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct GuestCid(u32);

impl GuestCid {
    /// The CID.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for GuestCid {
    type Error = String;
    fn try_from(cid: u32) -> Result<Self, String> {
        match cid {
            0..=2 => Err(format!(
                "{cid} is reserved (0 hypervisor, 1 local, 2 host); a guest's CID is 3 or more"
            )),
            u32::MAX => Err(format!("{cid} is VMADDR_CID_ANY, not a guest's CID")),
            _ => Ok(GuestCid(cid)),
        }
    }
}

impl From<GuestCid> for u32 {
    fn from(cid: GuestCid) -> u32 {
        cid.0
    }
}

/// The name of a vsock device's host socket: one file name (no `/`, not
/// `.` or `..`, no leading `.`), of letters, digits, `-`, `_` and `.`, at
/// most 64 bytes, and none of the run directory's own files. The socket is
/// made in the microVM's run directory, so a config cannot place it (or
/// the `<name>_<port>` sockets it connects to) anywhere else.
///
/// ```
/// use zixiao_vmm::VsockSocketName;
/// assert!(VsockSocketName::try_from("v.sock").is_ok());
/// assert!(VsockSocketName::try_from("/tmp/v.sock").is_err());
/// assert!(VsockSocketName::try_from("../v.sock").is_err());
/// assert!(VsockSocketName::try_from("api.sock").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VsockSocketName(String);

/// The longest socket name.
const SOCKET_NAME_MAX: usize = 64;

impl VsockSocketName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for VsockSocketName {
    type Error = String;
    fn try_from(name: &str) -> Result<Self, String> {
        use crate::api::files;
        if name.is_empty() || name.len() > SOCKET_NAME_MAX {
            return Err(format!("{name:?} is not 1 to {SOCKET_NAME_MAX} bytes long"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "{name:?} contains {c:?}: the socket is a file name in the run directory \
                 (letters, digits, '-', '_', '.')"
            ));
        }
        if name.starts_with('.') {
            return Err(format!("{name:?} starts with '.'"));
        }
        let taken = [
            files::API_SOCK,
            files::CONSOLE_SOCK,
            files::CONSOLE_LOG,
            files::PID,
            files::VMM_LOG,
            files::EXIT,
            files::VM,
            files::MIGRATE_SOCK,
            crate::jail::JAIL_DIR,
        ];
        if taken.contains(&name) {
            return Err(format!("{name:?} is one of the run directory's own files"));
        }
        Ok(VsockSocketName(name.to_string()))
    }
}

impl TryFrom<String> for VsockSocketName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        VsockSocketName::try_from(name.as_str())
    }
}

impl From<VsockSocketName> for String {
    fn from(name: VsockSocketName) -> String {
        name.0
    }
}

impl std::fmt::Display for VsockSocketName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A virtio-vsock device: the guest's CID and its host socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    /// The guest's address (`VMADDR_CID` of its sockets).
    pub guest_cid: GuestCid,
    /// The host socket's name in the run directory: host processes
    /// connect to `RUN_DIR/<socket>` and write `CONNECT <port>\n`; a guest
    /// connection to host port P goes to the Unix socket
    /// `RUN_DIR/<socket>_P`, which must be connectable by the VMM's user
    /// (the jail's user when jailed).
    pub socket: VsockSocketName,
}

impl VsockConfig {
    /// The default socket name, `vsock.sock`.
    pub const DEFAULT_SOCKET: &'static str = "vsock.sock";

    /// A device for `guest_cid` with the socket `vsock.sock`.
    pub fn new(guest_cid: GuestCid) -> VsockConfig {
        VsockConfig {
            guest_cid,
            socket: VsockSocketName(Self::DEFAULT_SOCKET.to_string()),
        }
    }

    /// Where the host socket of a VMM in `run_dir` is.
    pub fn uds_path(&self, run_dir: &Path) -> PathBuf {
        run_dir.join(self.socket.as_str())
    }

    /// The socket a guest connection to host `port` goes to, for a VMM
    /// in `run_dir`.
    pub fn port_path(&self, run_dir: &Path, port: u32) -> PathBuf {
        run_dir.join(format!("{}_{port}", self.socket))
    }
}

/// A device's host socket, bound (by the VMM, in its run directory).
pub(crate) struct HostSocket {
    /// The guest's CID, as the config space gives it.
    pub(crate) guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
}

impl HostSocket {
    /// Binds `config`'s socket in `run_dir` (mode 0600: only the VMM's
    /// user and root reach the guest through it). Errors name
    /// `vsock.socket`.
    pub(crate) fn bind(run_dir: &Path, config: &VsockConfig) -> Result<HostSocket, VmmError> {
        let path = config.uds_path(run_dir);
        let longest = path.as_os_str().len() + PORT_SUFFIX_MAX;
        if longest > SUN_PATH_MAX {
            return Err(VmmError::invalid(
                "vsock.socket",
                format!(
                    "{} with a port suffix is {longest} bytes, more than a Unix socket \
                     path's {SUN_PATH_MAX} (use a shorter run directory or name)",
                    path.display()
                ),
            ));
        }
        let bad = |e: std::io::Error| {
            VmmError::invalid(
                "vsock.socket",
                format!("cannot bind {}: {e}", path.display()),
            )
        };
        // A socket left by an earlier VMM of this run directory (the
        // launcher made sure none serves it any more).
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path).map_err(bad)?;
        listener.set_nonblocking(true).map_err(bad)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(bad)?;
        Ok(HostSocket {
            guest_cid: u64::from(config.guest_cid.get()),
            uds_path: path,
            listener,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a vsock device and its thread share.
pub(crate) struct VsockBackend {
    /// Written when the driver notifies any queue.
    kick: EventFd,
    muxer: Mutex<muxer::Muxer>,
}

impl VsockBackend {
    /// The backend on `socket`; `restored` when the device comes from a
    /// snapshot (its guest is then owed a transport reset).
    pub(crate) fn new(socket: HostSocket, restored: bool) -> std::io::Result<VsockBackend> {
        let kick = EventFd::new(EFD_NONBLOCK)?;
        if restored {
            // The owed event goes out in the thread's first round, not at
            // the guest's next notify (which may never come).
            kick.write(1)?;
        }
        Ok(VsockBackend {
            kick,
            muxer: Mutex::new(muxer::Muxer::new(
                socket.guest_cid,
                socket.uds_path,
                socket.listener,
                restored,
            )),
        })
    }

    /// What the devices' I/O thread (`virtio::DeviceIo`) waits on for
    /// this device: its kick first, then the host socket and the streams;
    /// and how long until its next deadline.
    pub(crate) fn poll_set(&self) -> (Vec<libc::pollfd>, Option<std::time::Duration>) {
        let (fds, timeout) = lock(&self.muxer).poll_set(Instant::now());
        let fds = std::iter::once((self.kick.as_raw_fd(), libc::POLLIN))
            .chain(fds)
            .map(|(fd, events)| libc::pollfd {
                fd,
                events,
                revents: 0,
            })
            .collect();
        (fds, timeout)
    }

    /// After any wake of the I/O thread's poll (`kicked`: this device's
    /// kick was readable): does the host side's work and moves packets
    /// through `transport` (the device's).
    pub(crate) fn service(&self, kicked: bool, transport: &Mutex<MmioTransport>) {
        if kicked {
            let _ = self.kick.read();
            lock(&self.muxer).rx_kicked();
        }
        lock(&self.muxer).service_host(Instant::now());
        let mut transport = lock(transport);
        transport.backend_ready(TX);
        transport.backend_ready(RX);
        transport.backend_ready(EVT);
    }

    /// Open connections.
    #[cfg(test)]
    pub(crate) fn connections(&self) -> usize {
        lock(&self.muxer).connections()
    }
}

/// A virtio-vsock device.
pub(crate) struct Vsock {
    backend: std::sync::Arc<VsockBackend>,
    /// The config space: the guest's CID, le64.
    config: [u8; 8],
}

impl Vsock {
    /// The device for guest `cid` on `backend`.
    pub(crate) fn new(cid: u64, backend: std::sync::Arc<VsockBackend>) -> Vsock {
        Vsock {
            backend,
            config: cid.to_le_bytes(),
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, _index: usize, _queue: &mut Queue, _mem: &GuestMemoryMmap) -> bool {
        // Packets move on the device's thread; it is only woken here.
        let _ = self.backend.kick.write(1);
        false
    }

    fn backend_ready(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut muxer = lock(&self.backend.muxer);
        match index {
            TX => muxer.process_tx(queue, mem),
            RX => muxer.fill_rx(queue, mem),
            EVT => muxer.deliver_event(queue, mem),
            _ => false,
        }
    }
}
