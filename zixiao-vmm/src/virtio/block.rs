//! The virtio-block device model over a raw host file: one request queue,
//! reads (`VIRTIO_BLK_T_IN`), writes (`T_OUT`), flushes (`T_FLUSH`, an
//! `fdatasync`) and the device id (`T_GET_ID`); capacity in the
//! configuration space; `VIRTIO_BLK_F_RO` for a read-only disk, whose write
//! requests are answered `VIRTIO_BLK_S_IOERR` without touching the file.
//!
//! Requests run synchronously (`pread`/`pwrite` through a bounce buffer) on
//! the vCPU that notified the queue; DESIGN.md says why.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{DescriptorChain, Queue, Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap};

use super::VirtioDevice;

/// Bytes per sector, the unit of `capacity` and of request offsets.
pub(crate) const SECTOR: u64 = 512;
/// Descriptors in the request queue.
pub(crate) const QUEUE_SIZE: u16 = 256;
/// Bounce buffer: a request is copied between file and guest in chunks of
/// this size, so a request's length never sizes an allocation.
const CHUNK: usize = 128 << 10;

/// The request header a driver puts first in every chain (virtio 1.x 5.2.6).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct RequestHeader {
    request_type: u32,
    reserved: u32,
    sector: u64,
}

// SAFETY: plain integers with no padding (4 + 4 + 8 bytes, 8-aligned): any
// byte pattern is a valid value.
unsafe impl ByteValued for RequestHeader {}

/// A virtio-block disk.
pub(crate) struct Block {
    file: File,
    read_only: bool,
    /// Size in sectors.
    capacity: u64,
    /// What GET_ID answers (NUL-padded to 20 bytes).
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    buffer: Vec<u8>,
}

/// Why a request failed (becomes its status byte).
enum Failure {
    Io,
    Unsupported,
}

impl Block {
    /// A disk over `file` (opened read-write unless `read_only`), its size
    /// in whole sectors; `id` names it to GET_ID (truncated to 20 bytes).
    pub(crate) fn new(file: File, read_only: bool, id: &str) -> std::io::Result<Block> {
        let capacity = file.metadata()?.len() / SECTOR;
        let mut id_bytes = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = id.len().min(id_bytes.len());
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Block {
            file,
            read_only,
            capacity,
            id: id_bytes,
            buffer: Vec::new(),
        })
    }

    /// The byte offset of a request of `len` bytes at `sector`, if it lies
    /// within the disk.
    fn span(&self, sector: u64, len: usize) -> Result<u64, Failure> {
        let start = sector.checked_mul(SECTOR).ok_or(Failure::Io)?;
        let end = start.checked_add(len as u64).ok_or(Failure::Io)?;
        if end > self.capacity * SECTOR {
            return Err(Failure::Io);
        }
        Ok(start)
    }

    /// Moves `len` bytes at file offset `at` through the bounce buffer,
    /// `step(file, chunk, offset)` at a time.
    fn in_chunks(
        &mut self,
        mut at: u64,
        len: usize,
        mut step: impl FnMut(&File, &mut [u8], u64) -> std::io::Result<()>,
    ) -> Result<(), Failure> {
        self.buffer.resize(CHUNK.min(len), 0);
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK);
            step(&self.file, &mut self.buffer[..n], at).map_err(|_| Failure::Io)?;
            at += n as u64;
            left -= n;
        }
        Ok(())
    }

    /// Runs one request; returns the bytes written into the guest's buffers
    /// (data plus the status byte), what the used ring reports.
    fn execute(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) -> u32 {
        let (Ok(mut reader), Ok(mut writer)) = (
            Reader::<()>::new(mem, chain.clone()),
            Writer::<()>::new(mem, chain),
        ) else {
            return 0; // descriptors outside guest memory: nothing to answer into
        };
        let Some(status_at) = writer.available_bytes().checked_sub(1) else {
            return 0; // no room for the status byte
        };
        let Ok(mut status) = writer.split_at(status_at) else {
            return 0;
        };
        let result = match reader.read_obj::<RequestHeader>() {
            Ok(header) => self.dispatch(header, &mut reader, &mut writer),
            Err(_) => Err(Failure::Io),
        };
        let code = match result {
            Ok(()) => VIRTIO_BLK_S_OK,
            Err(Failure::Io) => VIRTIO_BLK_S_IOERR,
            Err(Failure::Unsupported) => VIRTIO_BLK_S_UNSUPP,
        };
        let _ = status.write_all(&[code as u8]);
        (writer.bytes_written() + status.bytes_written()) as u32
    }

    fn dispatch(
        &mut self,
        header: RequestHeader,
        reader: &mut Reader<'_>,
        writer: &mut Writer<'_>,
    ) -> Result<(), Failure> {
        match header.request_type {
            VIRTIO_BLK_T_IN => {
                let len = writer.available_bytes();
                let at = self.span(header.sector, len)?;
                self.in_chunks(at, len, |file, buf, at| {
                    file.read_exact_at(buf, at)?;
                    writer.write_all(buf)
                })
            }
            VIRTIO_BLK_T_OUT => {
                // Refused before anything is read: the file is not even open
                // for writing.
                if self.read_only {
                    return Err(Failure::Io);
                }
                let len = reader.available_bytes();
                let at = self.span(header.sector, len)?;
                self.in_chunks(at, len, |file, buf, at| {
                    reader.read_exact(buf)?;
                    file.write_all_at(buf, at)
                })
            }
            VIRTIO_BLK_T_FLUSH if self.read_only => Ok(()),
            VIRTIO_BLK_T_FLUSH => self.file.sync_data().map_err(|_| Failure::Io),
            VIRTIO_BLK_T_GET_ID => {
                let n = writer.available_bytes().min(self.id.len());
                writer.write_all(&self.id[..n]).map_err(|_| Failure::Io)
            }
            _ => Err(Failure::Unsupported),
        }
    }
}

/// The feature bits a disk offers.
pub(crate) fn features(read_only: bool) -> u64 {
    let mut features = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_BLK_F_FLUSH);
    if read_only {
        features |= 1 << VIRTIO_BLK_F_RO;
    }
    features
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        features(self.read_only)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config starts with `le64 capacity`; nothing else
        // is offered (no SIZE_MAX, SEG_MAX, BLK_SIZE... features).
        super::read_config_bytes(&self.capacity.to_le_bytes(), offset, data);
    }

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        super::complete_available(queue, mem, |chain| self.execute(chain, mem))
    }
}

#[cfg(test)]
mod tests {
    //! The device and its transport driven as a guest driver would, over
    //! plain guest memory (no KVM): every request type and status, the
    //! read-only refusal, the interrupt, and arbitrary descriptor tables.

    use super::*;
    use crate::virtio::test_regs::{rd, wr};
    use crate::virtio::MmioTransport;
    use proptest::prelude::*;
    use virtio_bindings::virtio_mmio::*;
    use vm_memory::{Address, Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const HEADER: u64 = 0x4000;
    const STATUS: u64 = 0x4100;
    const DATA: u64 = 0x5000;
    const QSIZE: u16 = 8;

    /// A disk of `sectors` sectors (byte i = i % 251) behind a transport a
    /// driver has set up: one queue of 8 at DESC/AVAIL/USED, DRIVER_OK.
    struct Rig {
        transport: MmioTransport,
        mem: GuestMemoryMmap,
        file: tempfile::NamedTempFile,
        submitted: u16,
    }

    fn rig(sectors: usize, read_only: bool) -> Rig {
        let file = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..sectors * SECTOR as usize)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(file.path(), data).unwrap();
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(file.path())
            .unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let block = Block::new(handle, read_only, "test-disk").unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(Box::new(block), mem.clone(), irq).unwrap();
        assert_eq!(rd(&t, 0), 0x7472_6976);
        assert_eq!(rd(&t, 8), VIRTIO_ID_BLOCK);
        wr(&mut t, VIRTIO_MMIO_STATUS, 3);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, 11);
        assert_eq!(
            rd(&t, u64::from(VIRTIO_MMIO_STATUS)),
            11,
            "FEATURES_OK kept"
        );
        wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, u32::from(QSIZE));
        wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, DESC as u32);
        wr(&mut t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL as u32);
        wr(&mut t, VIRTIO_MMIO_QUEUE_USED_LOW, USED as u32);
        wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, 15);
        Rig {
            transport: t,
            mem,
            file,
            submitted: 0,
        }
    }

    impl Rig {
        /// Puts descriptor `i` in the table.
        fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let at = GuestAddress(DESC + u64::from(i) * 16);
            self.mem.write_obj(addr, at).unwrap();
            self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
            self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
            self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
        }

        /// Makes chain `head` available and notifies.
        fn submit(&mut self, head: u16) {
            let slot = u64::from(self.submitted % QSIZE);
            self.mem
                .write_obj(head, GuestAddress(AVAIL + 4 + slot * 2))
                .unwrap();
            self.submitted = self.submitted.wrapping_add(1);
            self.mem
                .write_obj(self.submitted, GuestAddress(AVAIL + 2))
                .unwrap();
            wr(&mut self.transport, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        }

        /// One request: header, `len` data bytes at DATA (device-written
        /// for reads and GET_ID), status. Returns (status, used length).
        fn request(&mut self, request_type: u32, sector: u64, len: u32) -> (u8, u32) {
            let header = RequestHeader {
                request_type,
                reserved: 0,
                sector,
            };
            self.mem.write_obj(header, GuestAddress(HEADER)).unwrap();
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            let device_writes = matches!(request_type, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID);
            let (next, write) = (1, 2);
            if len > 0 {
                self.desc(0, HEADER, 16, next, 1);
                self.desc(
                    1,
                    DATA,
                    len,
                    next | if device_writes { write } else { 0 },
                    2,
                );
                self.desc(2, STATUS, 1, write, 0);
            } else {
                self.desc(0, HEADER, 16, next, 2);
                self.desc(2, STATUS, 1, write, 0);
            }
            self.submit(0);
            let used: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
            assert_eq!(used, self.submitted, "completed at notify");
            let slot = u64::from((used - 1) % QSIZE);
            let len: u32 = self
                .mem
                .read_obj(GuestAddress(USED + 4 + slot * 8 + 4))
                .unwrap();
            (self.mem.read_obj(GuestAddress(STATUS)).unwrap(), len)
        }
    }

    #[test]
    fn requests_read_write_flush_identify_and_refuse_what_they_must() {
        let mut r = rig(16, false);
        assert_eq!(rd(&r.transport, 0x100), 16, "capacity in the config space");
        let (status, len) = r.request(VIRTIO_BLK_T_IN, 2, 1024);
        assert_eq!((status, len), (0, 1025));
        let mut got = vec![0u8; 1024];
        r.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        let want: Vec<u8> = (1024..2048).map(|i| (i % 251) as u8).collect();
        assert_eq!(got, want);
        // The completion raised the interrupt: status bit 0 and the irqfd.
        assert_eq!(rd(&r.transport, u64::from(VIRTIO_MMIO_INTERRUPT_STATUS)), 1);
        assert!(r.transport.irq().read().unwrap() >= 1);
        wr(&mut r.transport, VIRTIO_MMIO_INTERRUPT_ACK, 1);
        assert_eq!(rd(&r.transport, u64::from(VIRTIO_MMIO_INTERRUPT_STATUS)), 0);

        r.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(r.request(VIRTIO_BLK_T_OUT, 15, 512), (0, 1));
        assert_eq!(r.request(VIRTIO_BLK_T_FLUSH, 0, 0), (0, 1));
        let file = std::fs::read(r.file.path()).unwrap();
        assert_eq!(&file[15 * 512..], &[0xab; 512][..]);

        assert_eq!(r.request(VIRTIO_BLK_T_GET_ID, 0, 20), (0, 21));
        let mut id = [0u8; 9];
        r.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"test-disk");

        // Past the end (by one sector, or by an overflowing offset): I/O error.
        assert_eq!(r.request(VIRTIO_BLK_T_IN, 16, 512).0, 1);
        assert_eq!(r.request(VIRTIO_BLK_T_OUT, 15, 1024).0, 1);
        assert_eq!(r.request(VIRTIO_BLK_T_IN, u64::MAX / 256, 512).0, 1);
        assert_eq!(r.request(99, 0, 0).0, 2, "unsupported type");
        assert_eq!(std::fs::read(r.file.path()).unwrap().len(), 16 * 512);
    }

    #[test]
    fn a_read_only_disk_offers_ro_and_refuses_writes() {
        let mut r = rig(4, true);
        let before = std::fs::read(r.file.path()).unwrap();
        wr(&mut r.transport, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let features = rd(&r.transport, u64::from(VIRTIO_MMIO_DEVICE_FEATURES));
        assert_ne!(features & (1 << VIRTIO_BLK_F_RO), 0);
        r.mem.write_slice(&[0xcd; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(r.request(VIRTIO_BLK_T_OUT, 0, 512).0, 1);
        assert_eq!(r.request(VIRTIO_BLK_T_FLUSH, 0, 0).0, 0);
        assert_eq!(r.request(VIRTIO_BLK_T_IN, 0, 512).0, 0);
        assert_eq!(std::fs::read(r.file.path()).unwrap(), before);
    }

    #[test]
    fn a_live_queue_cannot_be_moved_and_a_legacy_driver_is_refused() {
        let mut r = rig(4, false);
        wr(&mut r.transport, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x8000);
        assert_eq!(r.request(VIRTIO_BLK_T_IN, 0, 512).0, 0, "still at DESC");
        let saved = r.transport.save();
        assert_eq!(
            saved.validate(VIRTIO_ID_BLOCK, features(false), &[QUEUE_SIZE]),
            Ok(())
        );

        // Reset, then a driver that does not accept VERSION_1.
        wr(&mut r.transport, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(rd(&r.transport, u64::from(VIRTIO_MMIO_QUEUE_READY)), 0);
        wr(&mut r.transport, VIRTIO_MMIO_STATUS, 3);
        wr(&mut r.transport, VIRTIO_MMIO_STATUS, 11);
        assert_eq!(rd(&r.transport, u64::from(VIRTIO_MMIO_STATUS)) & 8, 0);
    }

    proptest! {
        // A fixed budget and seed: the same cases on every run.
        #![proptest_config(ProptestConfig {
            cases: zixiao_testing::fuzz::cases(256),
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x626c_6b21),
            ..ProptestConfig::default()
        })]

        /// Whatever a guest puts in the descriptor table and the header,
        /// the device answers without panicking, never grows the file and
        /// never completes more than was made available.
        #[test]
        fn arbitrary_descriptor_chains_never_panic(
            descs in proptest::collection::vec(
                (prop_oneof![Just(HEADER), Just(DATA), Just(STATUS), any::<u64>()],
                 prop_oneof![Just(1u32), Just(16), Just(512), any::<u32>()],
                 0u16..8, 0u16..12),
                8),
            request_type in prop_oneof![Just(0u32), Just(1), Just(4), Just(8), any::<u32>()],
            sector in prop_oneof![Just(0u64), Just(3), any::<u64>()],
            heads in proptest::collection::vec(0u16..12, 1..4),
        ) {
            let mut r = rig(4, false);
            r.mem.write_obj(RequestHeader { request_type, reserved: 0, sector }, GuestAddress(HEADER)).unwrap();
            for (i, (addr, len, flags, next)) in descs.into_iter().enumerate() {
                r.desc(i as u16, addr, len, flags, next);
            }
            for head in &heads {
                r.submit(*head);
            }
            let used: u16 = r.mem.read_obj(GuestAddress(USED + 2)).unwrap();
            prop_assert!(usize::from(used) <= heads.len());
            prop_assert_eq!(std::fs::metadata(r.file.path()).unwrap().len(), 4 * 512);
        }
    }
}
