//! The virtio-net device model on a TAP device: a receive queue (0) and a
//! transmit queue (1), no control queue and no multiqueue; features
//! `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC` (the configured address in the
//! config space) and `VIRTIO_NET_F_STATUS` (link always up).
//!
//! Every buffer starts with the 12-byte `virtio_net_hdr` of virtio 1.x.
//! The TAP is opened without `IFF_VNET_HDR` (see `tap.rs`), so no offload
//! is negotiated: on transmit the header is skipped and the rest written to
//! the TAP as one frame; on receive a zero header (`num_buffers` = 1, as
//! the spec asks without `MRG_RXBUF`) is put before the frame.
//!
//! **Where frames move.** Transmit runs on the vCPU that notified the TX
//! queue, like a block request. Receive runs on the devices' I/O thread
//! (`virtio::DeviceIo`, one for every card and the vsock device), which
//! polls each card's TAP and a kick eventfd the device writes
//! when the driver notifies the RX queue. Frames are taken from the TAP only
//! while the guest has posted receive buffers; when it has none, they wait
//! in the TAP's kernel queue (which drops once full, as a NIC ring would),
//! and the thread stops polling the TAP until the guest posts buffers again
//! (the notify wakes it). A frame larger than the buffer it would go into
//! is dropped, and the buffer returned empty; so is a buffer outside guest
//! memory.
//!
//! **A TAP that vanishes** (deleted while the VM runs) makes reads and
//! writes fail with `EBADFD` and poll report an error: the card then passes
//! no frame either way, the guest and the VMM go on, and the VMM logs it
//! once (on stderr, which is `vmm.log`).

use std::fs::File;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::VirtioDevice;
use crate::tap::{MacAddr, TapName};

/// The receive queue's index.
pub(crate) const RX: usize = 0;
/// The transmit queue's index.
pub(crate) const TX: usize = 1;
/// Descriptors in each queue.
pub(crate) const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr` with `num_buffers` (always there with VERSION_1).
const HEADER: usize = 12;
/// The largest frame a TAP gives or takes: 64 KiB of payload (the largest
/// MTU) plus the Ethernet header. Buffers are sized by this, never by what
/// a descriptor claims.
const FRAME_MAX: usize = 65_535 + 14;

/// The feature bits a card offers.
pub(crate) const FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS);

/// What a card's device model and the devices' I/O thread share.
pub(crate) struct NetBackend {
    /// The attached TAP queue (non-blocking).
    pub tap: File,
    /// Written when the driver notifies the RX queue (it posted buffers).
    pub rx_kick: EventFd,
    /// Frames may wait in the TAP but the guest has no buffer for them:
    /// the I/O thread waits for `rx_kick` instead of polling the TAP.
    pub rx_blocked: AtomicBool,
    /// The TAP failed (deleted): nothing more is read or written.
    gone: AtomicBool,
    /// `nets[N].tap`, for the log.
    field: String,
    name: TapName,
}

impl NetBackend {
    /// The backend of card `index` on the attached `tap`.
    pub(crate) fn new(index: usize, name: TapName, tap: File) -> std::io::Result<NetBackend> {
        Ok(NetBackend {
            tap,
            rx_kick: EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?,
            rx_blocked: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            field: format!("nets[{index}].tap"),
            name,
        })
    }

    /// Whether the TAP has failed.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// The TAP failed with `why`: from now on the card passes no frames.
    /// Logged once.
    pub(crate) fn lost(&self, why: &dyn std::fmt::Display) {
        if !self.gone.swap(true, Ordering::Relaxed) {
            eprintln!(
                "zixiao-vmm: {}: TAP {} failed ({why}); the network card passes no more frames",
                self.field, self.name
            );
        }
    }
}

/// Whether a TAP read or write error means the TAP itself is gone (rather
/// than one frame being refused).
fn tap_failed(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADFD | libc::ENODEV | libc::ENXIO | libc::EBADF)
    )
}

/// A virtio-net card.
pub(crate) struct Net {
    backend: Arc<NetBackend>,
    /// The config space: MAC, then the link status.
    config: [u8; 8],
    /// The header before a received frame, then the frame (both
    /// directions). Empty until the first frame; from then on its capacity
    /// is the header and the largest frame, and its length how much of it
    /// was ever written. A TAP read writes only the frame's bytes (see
    /// [`read_frame`]), so a card that passes 1500-byte frames touches one
    /// or two of the buffer's 17 pages, and an idle one none. (Zeroed at
    /// creation, the buffer was ~64 KiB of every such VMM's peak RSS.)
    buffer: Vec<u8>,
}

/// The header a received frame gets: no offload, `num_buffers` = 1 (one
/// buffer per frame, no `MRG_RXBUF`).
const RX_HEADER: [u8; HEADER] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// `buffer` with the receive header in place and room for the largest frame.
fn frame_buffer(buffer: &mut Vec<u8>) -> &mut Vec<u8> {
    if buffer.is_empty() {
        buffer.reserve_exact(HEADER + FRAME_MAX);
        buffer.extend_from_slice(&RX_HEADER);
    }
    buffer
}

/// Reads one frame from `tap` into `buffer` after its header (see
/// [`frame_buffer`]), straight into the spare capacity: only the frame's
/// bytes are written, and the length grows to cover them. Returns the
/// frame's length.
fn read_frame(tap: &File, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    let buffer = frame_buffer(buffer);
    let room = buffer.capacity() - HEADER;
    // SAFETY: the allocation holds `capacity()` bytes and `HEADER <= len()`,
    // so the kernel writes at most `room` bytes from offset HEADER, inside
    // it; nothing else refers to the buffer during the call.
    let read = unsafe {
        libc::read(
            tap.as_raw_fd(),
            buffer.as_mut_ptr().add(HEADER).cast(),
            room,
        )
    };
    let n = usize::try_from(read).map_err(|_| std::io::Error::last_os_error())?;
    if buffer.len() < HEADER + n {
        // SAFETY: the bytes below `len()` were initialised before, and
        // HEADER..HEADER + n (which covers `len()..HEADER + n`, as
        // `len() >= HEADER`) by the read just now.
        unsafe { buffer.set_len(HEADER + n) };
    }
    Ok(n)
}

impl Net {
    /// A card with address `mac` on `backend`'s TAP.
    pub(crate) fn new(mac: MacAddr, backend: Arc<NetBackend>) -> Net {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac.octets());
        config[6..].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        Net {
            backend,
            config,
            buffer: Vec::new(),
        }
    }

    /// Writes every frame the driver made available on the TX queue to
    /// the TAP. Returns whether any buffer was completed.
    fn transmit(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        // The device writes nothing into a transmit chain.
        super::complete_available(queue, mem, |chain| {
            self.send(chain, mem);
            0
        })
    }

    /// One transmit chain: header, then the frame. A chain that is too
    /// short, too long or outside guest memory is dropped.
    fn send(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) {
        let Ok(mut reader) = Reader::<()>::new(mem, chain) else {
            return;
        };
        let Some(len) = reader
            .available_bytes()
            .checked_sub(HEADER)
            .filter(|&n| n <= FRAME_MAX)
        else {
            return;
        };
        let mut header = [0u8; HEADER];
        let buffer = frame_buffer(&mut self.buffer);
        if buffer.len() < HEADER + len {
            buffer.resize(HEADER + len, 0);
        }
        let frame = &mut buffer[HEADER..HEADER + len];
        if reader.read_exact(&mut header).is_err() || reader.read_exact(frame).is_err() {
            return;
        }
        if self.backend.is_gone() {
            return;
        }
        if let Err(e) = (&self.backend.tap).write(frame) {
            if tap_failed(&e) {
                self.backend.lost(&e);
            }
        }
    }

    /// Moves frames waiting on the TAP into the guest's receive buffers,
    /// as long as it has any. Returns whether any buffer was completed.
    /// Called by the devices' I/O thread (through the transport).
    fn receive(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut completed = false;
        // At most one frame per buffer the queue can hold: a flood of
        // frames cannot keep this (and the transport lock) going forever.
        for _ in 0..queue.size() {
            let Ok(avail) = queue.avail_idx(mem, Ordering::Acquire) else {
                break;
            };
            if avail.0 == queue.next_avail() {
                self.backend.rx_blocked.store(true, Ordering::Relaxed);
                break;
            }
            if self.backend.is_gone() {
                break;
            }
            let len = match read_frame(&self.backend.tap, &mut self.buffer) {
                Ok(len) => len,
                Err(e) if e.kind() == IoKind::WouldBlock => {
                    self.backend.rx_blocked.store(false, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    if tap_failed(&e) {
                        self.backend.lost(&e);
                    }
                    break;
                }
            };
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let frame = &self.buffer[..HEADER + len];
            let written = match Writer::<()>::new(mem, chain) {
                Ok(mut writer) if writer.available_bytes() >= frame.len() => {
                    writer.write_all(frame).map_or(0, |()| frame.len())
                }
                // Too small, or outside guest memory: dropped.
                _ => 0,
            };
            if queue.add_used(mem, head, written as u32).is_err() {
                break;
            }
            completed = true;
        }
        completed
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        match index {
            TX => self.transmit(queue, mem),
            // New receive buffers: wake the I/O thread (it fills them).
            RX => {
                self.backend.rx_blocked.store(false, Ordering::Relaxed);
                let _ = self.backend.rx_kick.write(1);
                false
            }
            _ => false,
        }
    }

    fn backend_ready(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        index == RX && self.receive(queue, mem)
    }
}

#[cfg(test)]
mod tests {
    //! The card and its transport driven as a guest driver would, over
    //! plain guest memory and a socketpair standing in for the TAP (no
    //! KVM): both directions, the header, the MAC, dropped frames.

    use super::*;
    use crate::virtio::test_regs::{rd, wr};
    use crate::virtio::MmioTransport;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use virtio_bindings::virtio_mmio::*;
    use vm_memory::{Address, Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const QSIZE: u16 = 4;
    /// Rings of queue q at 0x1000 + q * 0x3000 (desc, avail, used).
    fn ring(q: u64, part: u64) -> u64 {
        0x1000 + q * 0x3000 + part * 0x1000
    }
    const BUF: u64 = 0x10000;

    /// A card on one end of a datagram socketpair (each datagram a frame),
    /// set up by a driver; returns the transport, memory, the other end.
    fn rig() -> (
        MmioTransport,
        GuestMemoryMmap,
        UnixDatagram,
        Arc<NetBackend>,
    ) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let fd: OwnedFd = ours.into();
        let tap = File::from(fd);
        let backend =
            Arc::new(NetBackend::new(0, TapName::try_from("tap0").unwrap(), tap).unwrap());
        let mac = MacAddr::try_from("02:00:00:00:00:07").unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut t =
            MmioTransport::new(Box::new(Net::new(mac, backend.clone())), mem.clone(), irq).unwrap();
        assert_eq!(rd(&t, 8), VIRTIO_ID_NET);
        wr(&mut t, VIRTIO_MMIO_STATUS, 3);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1 << VIRTIO_NET_F_MAC);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, 11);
        for q in 0..2u32 {
            wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, q);
            wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, u32::from(QSIZE));
            wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, ring(q.into(), 0) as u32);
            wr(
                &mut t,
                VIRTIO_MMIO_QUEUE_AVAIL_LOW,
                ring(q.into(), 1) as u32,
            );
            wr(&mut t, VIRTIO_MMIO_QUEUE_USED_LOW, ring(q.into(), 2) as u32);
            wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        }
        wr(&mut t, VIRTIO_MMIO_STATUS, 15);
        (t, mem, theirs, backend)
    }

    /// Puts a one-descriptor chain (`addr`, `len`) in slot `n` of queue `q`
    /// and makes it available as the `n+1`-th entry.
    fn post(mem: &GuestMemoryMmap, q: u64, n: u16, addr: u64, len: u32, write: bool) {
        let at = GuestAddress(ring(q, 0) + u64::from(n) * 16);
        mem.write_obj(addr, at).unwrap();
        mem.write_obj(len, at.unchecked_add(8)).unwrap();
        mem.write_obj(if write { 2u16 } else { 0 }, at.unchecked_add(12))
            .unwrap();
        mem.write_obj(n, GuestAddress(ring(q, 1) + 4 + u64::from(n % QSIZE) * 2))
            .unwrap();
        mem.write_obj(n + 1, GuestAddress(ring(q, 1) + 2)).unwrap();
    }

    fn used(mem: &GuestMemoryMmap, q: u64) -> (u16, u32) {
        let idx: u16 = mem.read_obj(GuestAddress(ring(q, 2) + 2)).unwrap();
        let slot = u64::from(idx.wrapping_sub(1) % QSIZE);
        let len = mem
            .read_obj(GuestAddress(ring(q, 2) + 4 + slot * 8 + 4))
            .unwrap();
        (idx, len)
    }

    #[test]
    fn frames_go_both_ways_with_the_header_handled() {
        let (mut t, mem, peer, backend) = rig();
        assert_eq!(rd(&t, 0x100), 0x0000_0002, "MAC bytes 0-3");
        assert_eq!(rd(&t, 0x104), 0x0001_0700, "MAC bytes 4-5, link up");

        // Transmit: the header is skipped, the frame arrives whole.
        let mut chain = vec![0xaau8; HEADER];
        chain.extend_from_slice(b"frame-from-the-guest");
        mem.write_slice(&chain, GuestAddress(BUF)).unwrap();
        post(&mem, 1, 0, BUF, chain.len() as u32, false);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, TX as u32);
        assert_eq!(used(&mem, 1), (1, 0));
        let mut got = [0u8; 64];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], b"frame-from-the-guest");
        assert!(t.irq().read().unwrap() >= 1, "completion interrupt");

        // Receive: nothing without buffers; a posted buffer gets the frame
        // behind a zero header with num_buffers = 1.
        peer.send(b"frame-to-the-guest").unwrap();
        assert!(!t.backend_ready(RX));
        assert!(backend.rx_blocked.load(Ordering::Relaxed));
        post(&mem, 0, 0, BUF, 2048, true);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, RX as u32);
        assert_eq!(backend.rx_kick.read().unwrap(), 1, "the notify kicks");
        assert!(t.backend_ready(RX));
        let (idx, len) = used(&mem, 0);
        assert_eq!((idx, len as usize), (1, HEADER + 18));
        let mut buf = vec![0u8; HEADER + 18];
        mem.read_slice(&mut buf, GuestAddress(BUF)).unwrap();
        assert_eq!(&buf[..HEADER], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(&buf[HEADER..], b"frame-to-the-guest");

        // A buffer too small for the frame: the frame is dropped and the
        // buffer comes back empty.
        peer.send(&[7u8; 100]).unwrap();
        post(&mem, 0, 1, BUF, 50, true);
        assert!(t.backend_ready(RX));
        assert_eq!(used(&mem, 0), (2, 0));
        // A buffer outside guest memory, and a short TX chain: no panic.
        peer.send(&[8u8; 60]).unwrap();
        post(&mem, 0, 2, 1 << 40, 2048, true);
        assert!(t.backend_ready(RX));
        assert_eq!(used(&mem, 0), (3, 0));
        post(&mem, 1, 1, BUF, 4, false);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, TX as u32);
        assert_eq!(used(&mem, 1).0, 2);
        peer.set_nonblocking(true).unwrap();
        assert_eq!(
            peer.recv(&mut got).unwrap_err().kind(),
            IoKind::WouldBlock,
            "a chain shorter than the header sends nothing"
        );
        assert!(!backend.is_gone());
    }

    #[test]
    fn a_failed_tap_stops_the_card_without_stopping_the_device() {
        let (mut t, mem, _peer, backend) = rig();
        backend.lost(&"test");
        assert!(backend.is_gone());
        mem.write_slice(&[0u8; 40], GuestAddress(BUF)).unwrap();
        post(&mem, 1, 0, BUF, 40, false);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, TX as u32);
        assert_eq!(
            used(&mem, 1),
            (1, 0),
            "the guest still gets its buffer back"
        );
    }
}
