//! The virtio-mmio transport, version 2 ("modern") register layout of the
//! virtio 1.x specification, section 4.2.2: one 4 KiB window per device,
//! registers at 0x000-0x0fc and the device configuration space from 0x100.
//! It owns the device's queues, the feature negotiation and status
//! handshake, and the interrupt: a used-buffer notification sets bit 0 of
//! InterruptStatus and writes the device's irqfd (its GSI in the in-kernel
//! IOAPIC), whether or not the driver polls instead.

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::VirtioDevice;

/// "virt", little endian.
const MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) transport.
const VERSION: u32 = 2;
/// "ZXVM": who made the device.
const VENDOR_ID: u32 = 0x4d56_585a;
/// Where the device configuration space starts in the window.
const CONFIG_SPACE: u64 = 0x100;
/// Every status bit a driver may set.
const STATUS_BITS: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_DRIVER_OK
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_NEEDS_RESET
    | VIRTIO_CONFIG_S_FAILED;
/// The interrupt causes: used buffer (bit 0) and configuration change (bit 1).
const INTERRUPT_BITS: u32 = VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG;

/// One virtio-mmio device: registers, queues and interrupt of `device`.
pub(crate) struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    irq: EventFd,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
}

/// A queue's state in a snapshot (virtio-queue's `QueueState`, which has no
/// serde of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueSnapshot {
    max_size: u16,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    next_avail: u16,
    next_used: u16,
    event_idx: bool,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        QueueSnapshot {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
        }
    }
}

impl From<&QueueSnapshot> for QueueState {
    fn from(q: &QueueSnapshot) -> Self {
        QueueState {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
        }
    }
}

/// A virtio-mmio device's state in a snapshot: the transport registers and
/// every queue (the device model itself keeps no state across requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TransportState {
    device_type: u32,
    status: u32,
    driver_features: u64,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    interrupt_status: u32,
    config_generation: u32,
    queues: Vec<QueueSnapshot>,
}

impl TransportState {
    /// Checks a decoded state against the device it will be restored into
    /// (`device_type`, `features` offered, `queue_max_sizes`): the error is
    /// `(field, reason)` with the field relative to this state.
    pub(crate) fn validate(
        &self,
        device_type: u32,
        features: u64,
        queue_max_sizes: &[u16],
    ) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: String| Err((field.to_string(), reason));
        if self.device_type != device_type {
            return bad(
                "device_type",
                format!("{}, the device is {device_type}", self.device_type),
            );
        }
        if self.status & !STATUS_BITS != 0 {
            return bad("status", format!("{:#x} has unknown bits", self.status));
        }
        if self.driver_features & !features != 0 {
            return bad(
                "driver_features",
                format!(
                    "{:#x} has bits the device does not offer ({features:#x})",
                    self.driver_features
                ),
            );
        }
        if self.interrupt_status & !INTERRUPT_BITS != 0 {
            return bad(
                "interrupt_status",
                format!("{:#x} has unknown bits", self.interrupt_status),
            );
        }
        if self.queues.len() != queue_max_sizes.len() {
            return bad(
                "queues",
                format!(
                    "{} queues, the device has {}",
                    self.queues.len(),
                    queue_max_sizes.len()
                ),
            );
        }
        for (i, (q, &max)) in self.queues.iter().zip(queue_max_sizes).enumerate() {
            if q.max_size != max {
                return bad(
                    &format!("queues[{i}].max_size"),
                    format!("{}, the device's queue has {max}", q.max_size),
                );
            }
            // virtio-queue's own checks: size a power of two within
            // max_size, ring addresses aligned.
            Queue::try_from(QueueState::from(q))
                .map_err(|e| (format!("queues[{i}]"), e.to_string()))?;
        }
        Ok(())
    }
}

impl MmioTransport {
    /// A freshly reset transport for `device`, interrupting through `irq`
    /// (an irqfd registered on the device's GSI).
    pub(crate) fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: EventFd,
    ) -> Result<MmioTransport, virtio_queue::Error> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max))
            .collect::<Result<_, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            irq,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
        })
    }

    /// `device` as it was in `state`, which [`TransportState::validate`]
    /// accepted for it.
    pub(crate) fn restore(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: EventFd,
        state: &TransportState,
    ) -> Result<MmioTransport, virtio_queue::Error> {
        let queues = state
            .queues
            .iter()
            .map(|q| Queue::try_from(QueueState::from(q)))
            .collect::<Result<_, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            irq,
            queues,
            queue_select: state.queue_select,
            device_features_select: state.device_features_select,
            driver_features_select: state.driver_features_select,
            driver_features: state.driver_features,
            status: state.status,
            interrupt_status: state.interrupt_status,
            config_generation: state.config_generation,
        })
    }

    /// The state a snapshot keeps.
    pub(crate) fn save(&self) -> TransportState {
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            driver_features: self.driver_features,
            queue_select: self.queue_select,
            device_features_select: self.device_features_select,
            driver_features_select: self.driver_features_select,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
        }
    }

    /// The device changed its configuration space (a balloon's new
    /// target): a new generation, and a driver that is up hears of it by
    /// the configuration-change interrupt (InterruptStatus bit 1).
    pub(crate) fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.interrupt_status |= VIRTIO_MMIO_INT_CONFIG;
            // As for a used buffer: a lost interrupt only delays a driver
            // that waits for it; the configuration space already changed.
            let _ = self.irq.write(1);
        }
    }

    /// The irqfd to register on the device's GSI.
    pub(crate) fn irq(&self) -> &EventFd {
        &self.irq
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub(crate) fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        // Registers are 32-bit and only read as such (spec 4.2.2.2).
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let selected = usize::try_from(self.queue_select)
            .ok()
            .and_then(|i| self.queues.get(i));
        let value = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => selected.map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => selected.map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write of `data` at `offset` in the window.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) {
        // The device decides what of its configuration space a driver may
        // write (only the balloon's `actual`); registers are written 32
        // bits at a time.
        if offset >= CONFIG_SPACE {
            self.device.write_config(offset - CONFIG_SPACE, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let value = u32::from_le_bytes(bytes);
        let configuring = self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                let shift = match self.driver_features_select {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let mask = 0xffff_ffffu64 << shift;
                // Only what the device offers can be acknowledged.
                let acked = (u64::from(value) << shift) & self.device.features();
                self.driver_features = (self.driver_features & !mask) | acked;
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_select = value,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH
                if configuring =>
            {
                self.configure_queue(offset as u32, value)
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            VIRTIO_MMIO_STATUS => self.set_status(value),
            _ => {}
        }
    }

    /// A write to one of the selected queue's registers (size, ready, ring
    /// addresses). Only called before DRIVER_OK: later writes are ignored,
    /// as the spec allows, so a running queue cannot be moved under the
    /// device.
    fn configure_queue(&mut self, register: u32, value: u32) {
        let Some(q) = usize::try_from(self.queue_select)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
        else {
            return;
        };
        // Each address is two registers: this half is set, the other kept.
        let (this, keep) = (Some(value), None);
        match register {
            VIRTIO_MMIO_QUEUE_NUM => q.set_size(value as u16),
            VIRTIO_MMIO_QUEUE_READY => q.set_ready(value == 1),
            VIRTIO_MMIO_QUEUE_DESC_LOW => q.set_desc_table_address(this, keep),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => q.set_desc_table_address(keep, this),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.set_avail_ring_address(this, keep),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(keep, this),
            VIRTIO_MMIO_QUEUE_USED_LOW => q.set_used_ring_address(this, keep),
            VIRTIO_MMIO_QUEUE_USED_HIGH => q.set_used_ring_address(keep, this),
            _ => {}
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value & STATUS_BITS;
        // This is a modern-only device: a driver that did not accept
        // VIRTIO_F_VERSION_1 is refused by leaving FEATURES_OK clear, which
        // the driver reads back (spec 3.1.1).
        if value & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0
        {
            value &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        self.status = value;
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt_status = 0;
    }

    /// The driver made buffers available on queue `index`: process them now,
    /// on the notifying vCPU, and interrupt if any completed.
    fn notify(&mut self, index: u32) {
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        self.run_queue(index, |device, queue, mem| {
            device.process_queue(index, queue, mem)
        });
    }

    /// The device's backend has work for queue `index` (a network card's
    /// TAP has frames): called by the device's own I/O thread, which holds
    /// the transport's lock like a notifying vCPU. Returns whether a buffer
    /// was completed (and the driver interrupted).
    pub(crate) fn backend_ready(&mut self, index: usize) -> bool {
        self.run_queue(index, |device, queue, mem| {
            device.backend_ready(index, queue, mem)
        })
    }

    /// Runs `work` on live queue `index` (after DRIVER_OK, ready, rings in
    /// guest memory; otherwise nothing happens) and raises the interrupt
    /// when it completed buffers and the driver wants to hear of it.
    fn run_queue(
        &mut self,
        index: usize,
        work: impl FnOnce(&mut dyn VirtioDevice, &mut Queue, &GuestMemoryMmap) -> bool,
    ) -> bool {
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0 {
            return false;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            return false;
        };
        if !queue.ready() || !queue.is_valid(&self.mem) {
            return false;
        }
        let completed = work(self.device.as_mut(), queue, &self.mem);
        if completed && queue.needs_notification(&self.mem).unwrap_or(true) {
            self.interrupt_status |= VIRTIO_MMIO_INT_VRING;
            // An interrupt that cannot be raised only delays a driver that
            // waits for it; the used ring already holds the completion.
            let _ = self.irq.write(1);
        }
        completed
    }
}
