//! virtio devices of a microVM: the virtio-mmio transport (`mmio.rs`, the
//! register window a guest driver programs, its queues and interrupt) and
//! the device models behind it (`block.rs`). Queues are virtio-queue's split
//! virtqueues over the guest's vm-memory; constants come from
//! virtio-bindings.
//!
//! Requests are processed on the vCPU thread that wrote the queue-notify
//! register, before it re-enters the guest (see DESIGN.md, "virtio").

pub(crate) mod block;
pub(crate) mod mmio;

use std::fs::File;

use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::DiskConfig;
use crate::VmmError;

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
    /// Processes every request the driver made available on queue `index`.
    /// Returns whether any was completed (so the driver must be interrupted).
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool;
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

/// The virtio-mmio devices of a machine: disk N of `disks` (open as
/// `files[N]`) is device N, fresh or, given `states`, as a snapshot left it
/// (states checked by [`validate_block_states`]).
pub(crate) fn block_devices(
    mem: &GuestMemoryMmap,
    disks: &[DiskConfig],
    files: Vec<File>,
    states: Option<&[TransportState]>,
) -> Result<Vec<MmioTransport>, VmmError> {
    disks
        .iter()
        .zip(files)
        .enumerate()
        .map(|(index, (disk, file))| {
            let block = block::Block::new(file, disk.read_only, &format!("zixiao-disk{index}"))
                .map_err(|e| {
                    VmmError::invalid(
                        format!("disks[{index}].path"),
                        format!("cannot stat {}: {e}", disk.path.display()),
                    )
                })?;
            let irq = EventFd::new(EFD_NONBLOCK).map_err(|e| VmmError::internal("eventfd", e))?;
            let device = Box::new(block);
            let transport = match states.and_then(|s| s.get(index)) {
                Some(state) => MmioTransport::restore(device, mem.clone(), irq, state),
                None => MmioTransport::new(device, mem.clone(), irq),
            };
            transport.map_err(|e| VmmError::internal(format!("virtio device {index}"), e))
        })
        .collect()
}

/// Checks a snapshot's device states against its disks: one block device
/// per disk, each consistent with it. Errors name `machine.virtio[N].FIELD`.
pub(crate) fn validate_block_states(
    disks: &[DiskConfig],
    states: &[TransportState],
) -> Result<(), VmmError> {
    if states.len() != disks.len() {
        return Err(VmmError::invalid(
            "machine.virtio",
            format!(
                "{} device states, but config.disks has {} disks",
                states.len(),
                disks.len()
            ),
        ));
    }
    for (i, (state, disk)) in states.iter().zip(disks).enumerate() {
        state
            .validate(
                VIRTIO_ID_BLOCK,
                block::features(disk.read_only),
                &[block::QUEUE_SIZE],
            )
            .map_err(|(field, reason)| {
                VmmError::invalid(format!("machine.virtio[{i}].{field}"), reason)
            })?;
    }
    Ok(())
}
