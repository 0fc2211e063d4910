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
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
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
        let mut completed = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = self.execute(chain, mem);
            if queue.add_used(mem, head, len).is_err() {
                break;
            }
            completed = true;
        }
        completed
    }
}
