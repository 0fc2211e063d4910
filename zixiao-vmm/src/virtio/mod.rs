//! virtio devices of a microVM: the virtio-mmio transport (`mmio.rs`, the
//! register window a guest driver programs, its queues and interrupt) and
//! the device models behind it (`block.rs`, `net.rs`, `vsock/`,
//! `balloon.rs`). Queues are virtio-queue's split
//! virtqueues over the guest's vm-memory; constants come from
//! virtio-bindings.
//!
//! Requests are processed on the vCPU thread that wrote the queue-notify
//! register, before it re-enters the guest (see DESIGN.md, "virtio").

pub(crate) mod balloon;
pub(crate) mod block;
pub(crate) mod mmio;
pub(crate) mod net;
pub(crate) mod vsock;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK, VIRTIO_ID_NET};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::{DiskConfig, NetConfig};
use crate::VmmError;
use balloon::BalloonConfig;
use vsock::{HostSocket, VsockBackend};

pub(crate) use mmio::{MmioTransport, TransportState};

/// A device model behind the virtio-mmio transport.
pub(crate) trait VirtioDevice: Send {
    /// The virtio device id (2 = block).
    fn device_type(&self) -> u32;
    /// The feature bits the device offers (VIRTIO_F_VERSION_1 included).
    fn features(&self) -> u64;
    /// The largest size of each of the device's queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space at `offset`; bytes
    /// past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver's write into the configuration space at `offset`; read-only
    /// for every device but the balloon (its `actual`).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Processes every request the driver made available on queue `index`.
    /// Returns whether any was completed (so the driver must be interrupted).
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool;
    /// The device's backend has work for queue `index` (frames arrived on
    /// a network card's TAP); called from the device's own I/O thread.
    /// Returns whether any buffer was completed. Devices without such a
    /// thread (block) have nothing to do.
    fn backend_ready(&mut self, _index: usize, _queue: &mut Queue, _mem: &GuestMemoryMmap) -> bool {
        false
    }
}

/// Runs `handle` on each chain the driver had made available on `queue`
/// when it notified, and puts each on the used ring with the length
/// `handle` returns (bytes the device wrote). Only what was available then:
/// another vCPU that keeps adding requests cannot hold this one (and with
/// it a pause or snapshot) here forever. Drivers notify after every
/// addition (the device never asks them not to), so nothing is left
/// waiting. Returns whether any chain was completed.
pub(crate) fn complete_available(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut handle: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) -> bool {
    let Ok(end) = queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire) else {
        return false;
    };
    let mut completed = false;
    while queue.next_avail() != end.0 {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let len = handle(chain);
        if queue.add_used(mem, head, len).is_err() {
            break;
        }
        completed = true;
    }
    completed
}

/// Copies the little-endian `config` bytes at `offset` into `data`
/// (zero past the end), the config-space read of most devices.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// The device models and backends of a machine, for its threads: each
/// network card's and the vsock device's; and what the host keeps of the
/// balloon.
pub(crate) type DeviceSet = (
    Vec<MmioTransport>,
    Vec<Arc<net::NetBackend>>,
    Option<Arc<VsockBackend>>,
    Option<Arc<balloon::BalloonShared>>,
);

/// The work of the devices' one I/O thread: every network card's receive
/// side and the vsock device's host side, on one poll (as Firecracker's
/// one event loop serves all its devices). A thread per device cost a
/// thread start and a seccomp install each at every boot, on the boot's
/// critical path (the VMM reads its first request only once every thread
/// is filtered).
pub(crate) struct DeviceIo {
    /// Each network card's backend and its device index.
    pub nets: Vec<(Arc<net::NetBackend>, usize)>,
    /// The vsock device's backend and its device index.
    pub vsock: Option<(Arc<VsockBackend>, usize)>,
}

impl DeviceIo {
    /// Whether no device needs the thread.
    pub(crate) fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.vsock.is_none()
    }

    /// The thread's loop, while `runnable` (which parks while the VM is
    /// paused, so that pause and snapshot see no frame or packet half
    /// delivered) says to go on. It waits for: each card's kick (the guest
    /// posted receive buffers) and its TAP (only while the guest has
    /// buffers and the TAP is there); the vsock device's kick, host socket,
    /// streams and next deadline. Then it moves frames into the cards'
    /// receive buffers and packets through the vsock queues, under each
    /// device's transport lock (`transports[index]`). A pause or stop
    /// interrupts its poll with the vCPU kick signal.
    pub(crate) fn run(&self, runnable: impl Fn() -> bool, transports: &[Mutex<MmioTransport>]) {
        let poll = |fd: i32, events: i16| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        while runnable() {
            let mut fds = Vec::with_capacity(self.nets.len() * 2 + 4);
            let mut watched = Vec::with_capacity(self.nets.len());
            for (card, _) in &self.nets {
                let watch_tap = !card.is_gone() && !card.rx_blocked.load(Ordering::Relaxed);
                fds.push(poll(card.rx_kick.as_raw_fd(), libc::POLLIN));
                // A negative fd is skipped by poll: an unwatched TAP
                // reports nothing, not even an error.
                let tap = if watch_tap { card.tap.as_raw_fd() } else { -1 };
                fds.push(poll(tap, libc::POLLIN));
                watched.push(watch_tap);
            }
            let first_vsock = fds.len();
            let mut timeout_ms = -1;
            let mut deadline = None;
            if let Some((vsock, _)) = &self.vsock {
                let (vsock_fds, timeout) = vsock.poll_set();
                fds.extend(vsock_fds);
                deadline = timeout.map(|d| Instant::now() + d);
                // Rounded up, so a deadline is past when poll returns.
                timeout_ms = timeout.map_or(-1, |d| {
                    i32::try_from(d.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
                });
            }
            // SAFETY: `fds` is a live array of exactly its length.
            let ready =
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if ready < 0 {
                continue; // EINTR: a pause or stop kick; the loop checks.
            }
            for (n, ((card, index), watch_tap)) in self.nets.iter().zip(watched).enumerate() {
                let (kick, tap) = (fds[2 * n].revents, fds[2 * n + 1].revents);
                if kick & libc::POLLIN != 0 {
                    let _ = card.rx_kick.read();
                }
                if watch_tap && tap & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    card.lost(&"the TAP device is gone");
                    continue;
                }
                if kick == 0 && tap == 0 {
                    continue;
                }
                // Until the device says it drained the TAP, assume the
                // guest had no buffer (so an unready queue is not polled
                // in a loop).
                card.rx_blocked.store(true, Ordering::Relaxed);
                if let Some(transport) = transports.get(*index) {
                    lock(transport).backend_ready(net::RX);
                }
            }
            // The vsock device's work when one of its descriptors woke the
            // poll or its deadline passed, not at every frame of a card.
            let vsock_woke = fds[first_vsock..].iter().any(|f| f.revents != 0)
                || deadline.is_some_and(|d| Instant::now() >= d);
            if let (Some((vsock, index)), true) = (&self.vsock, vsock_woke) {
                if let Some(transport) = transports.get(*index) {
                    vsock.service(fds[first_vsock].revents & libc::POLLIN != 0, transport);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A machine's balloon: its config and, restoring, its saved state.
pub(crate) type BalloonSetup<'a> = (&'a BalloonConfig, Option<&'a balloon::BalloonState>);

/// The virtio-mmio devices of a machine: disk N of `disks` (open as
/// `files[N]`) is device N, then network card N of `nets` (attached to its
/// TAP as `taps[N]`) is device `disks.len() + N`, then the vsock device on
/// its bound host socket, if any, then the balloon, if any, is the last;
/// fresh or, given `states`,
/// as a snapshot left them (states checked by [`validate_states`]).
/// Returns the devices, each card's backend (for the devices' I/O thread) and
/// the vsock device's (for its thread).
#[allow(clippy::too_many_arguments)] // one per kind of device
pub(crate) fn devices(
    mem: &GuestMemoryMmap,
    disks: &[DiskConfig],
    files: Vec<File>,
    nets: &[NetConfig],
    taps: Vec<File>,
    vsock: Option<HostSocket>,
    balloon: Option<BalloonSetup<'_>>,
    states: Option<&[TransportState]>,
) -> Result<DeviceSet, VmmError> {
    let mut models: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for (index, (disk, file)) in disks.iter().zip(files).enumerate() {
        let block = block::Block::new(file, disk.read_only, &format!("zixiao-disk{index}"))
            .map_err(|e| {
                VmmError::invalid(
                    format!("disks[{index}].path"),
                    format!("cannot stat {}: {e}", disk.path.display()),
                )
            })?;
        models.push(Box::new(block));
        crate::timeline::mark(format!("disk{index}"));
    }
    let mut backends = Vec::new();
    for (index, (card, tap)) in nets.iter().zip(taps).enumerate() {
        let backend = Arc::new(
            net::NetBackend::new(index, card.tap.clone(), tap)
                .map_err(|e| VmmError::internal("eventfd", e))?,
        );
        models.push(Box::new(net::Net::new(card.mac, backend.clone())));
        backends.push(backend);
        crate::timeline::mark(format!("net{index}"));
    }
    let vsock = match vsock {
        Some(socket) => {
            let cid = socket.guest_cid;
            let backend = Arc::new(
                VsockBackend::new(socket, states.is_some())
                    .map_err(|e| VmmError::internal("eventfd", e))?,
            );
            models.push(Box::new(vsock::Vsock::new(cid, backend.clone())));
            crate::timeline::mark("vsock");
            Some(backend)
        }
        None => None,
    };
    let balloon = match balloon {
        Some((config, state)) => {
            let memory_bytes = mem.iter().map(|r| r.len()).sum();
            let (device, shared) = balloon::Balloon::new(config, memory_bytes, state)?;
            models.push(Box::new(device));
            Some(shared)
        }
        None => None,
    };
    let transports = models
        .into_iter()
        .enumerate()
        .map(|(index, device)| {
            let irq = EventFd::new(EFD_NONBLOCK).map_err(|e| VmmError::internal("eventfd", e))?;
            let transport = match states.and_then(|s| s.get(index)) {
                Some(state) => MmioTransport::restore(device, mem.clone(), irq, state),
                None => MmioTransport::new(device, mem.clone(), irq),
            };
            transport.map_err(|e| VmmError::internal(format!("virtio device {index}"), e))
        })
        .collect::<Result<_, _>>()?;
    crate::timeline::mark("transports");
    Ok((transports, backends, vsock, balloon))
}

/// Checks a snapshot's device states against its devices: one block
/// device per disk, then one network card per `nets` entry, then the vsock
/// device if `vsock`, then the balloon if `balloon` (with the features
/// it offers), each consistent with it. Errors name
/// `machine.virtio[N].FIELD`.
pub(crate) fn validate_states(
    disks: &[DiskConfig],
    nets: &[NetConfig],
    vsock: bool,
    balloon: Option<&BalloonConfig>,
    states: &[TransportState],
) -> Result<(), VmmError> {
    let expected_len =
        disks.len() + nets.len() + usize::from(vsock) + usize::from(balloon.is_some());
    if states.len() != expected_len {
        return Err(VmmError::invalid(
            "machine.virtio",
            format!(
                "{} device states, but config has {} disks, {} network cards, {} vsock devices \
                 and {} balloons",
                states.len(),
                disks.len(),
                nets.len(),
                usize::from(vsock),
                usize::from(balloon.is_some())
            ),
        ));
    }
    let expected = disks
        .iter()
        .map(|disk| {
            (
                VIRTIO_ID_BLOCK,
                block::features(disk.read_only),
                &[block::QUEUE_SIZE][..],
            )
        })
        .chain(nets.iter().map(|_| {
            (
                VIRTIO_ID_NET,
                net::FEATURES,
                &[net::QUEUE_SIZE, net::QUEUE_SIZE][..],
            )
        }))
        .chain(vsock.then_some((
            vsock::DEVICE_ID,
            vsock::FEATURES,
            &[vsock::QUEUE_SIZE; 3][..],
        )))
        .chain(balloon.map(|config| {
            (
                balloon::DEVICE_ID,
                balloon::features(config),
                &[balloon::QUEUE_SIZE; 2][..],
            )
        }));
    for (i, (state, (device_type, features, queues))) in states.iter().zip(expected).enumerate() {
        state
            .validate(device_type, features, queues)
            .map_err(|(field, reason)| {
                VmmError::invalid(format!("machine.virtio[{i}].{field}"), reason)
            })?;
    }
    Ok(())
}

/// Register access of a driver to a transport, for the devices' unit tests.
#[cfg(test)]
pub(crate) mod test_regs {
    use super::MmioTransport;

    /// Writes 32-bit register `reg`.
    pub(crate) fn wr(t: &mut MmioTransport, reg: u32, value: u32) {
        t.write(u64::from(reg), &value.to_le_bytes());
    }

    /// Reads the 32 bits at `offset` (a register or the config space).
    pub(crate) fn rd(t: &MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }
}
