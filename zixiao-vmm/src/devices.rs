//! The legacy devices of a microVM: the COM1 8250 UART (vm-superio, its
//! interrupt on GSI 4 through an irqfd into the in-kernel irqchip), the i8042
//! reset line, the ACPI power registers (see `acpi`), the MMIO dispatch to
//! the virtio devices, and the console sink that fans serial output out to
//! console.log and to every attached console reader.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::layout::{COM1_PORT, I8042_CMD_PORT, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use crate::virtio::MmioTransport;

/// Raises the serial interrupt by writing the irqfd.
pub(crate) struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where serial output goes: the log file and the live readers.
#[derive(Clone)]
pub(crate) struct ConsoleSink {
    log: Arc<Mutex<File>>,
    readers: Arc<Mutex<Vec<UnixStream>>>,
}

impl ConsoleSink {
    pub(crate) fn new(log: File) -> Self {
        ConsoleSink {
            log: Arc::new(Mutex::new(log)),
            readers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Adds a live reader; output from now on is copied to it.
    pub(crate) fn attach(&self, reader: UnixStream) {
        // A reader that does not keep up is dropped rather than stalling the
        // vCPU for long. (Not O_NONBLOCK: the same socket is read for input.)
        if reader
            .set_write_timeout(Some(std::time::Duration::from_millis(100)))
            .is_ok()
        {
            lock(&self.readers).push(reader);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The log is best effort: a full disk must not stop the guest.
        let _ = lock(&self.log).write_all(buf);
        lock(&self.readers).retain_mut(|r| r.write_all(buf).is_ok());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The serial port type of a microVM.
pub(crate) type ComPort = Serial<IrqTrigger, NoEvents, ConsoleSink>;

/// Serializable copy of the UART registers and its receive FIFO.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SerialSnapshot {
    baud_divisor_low: u8,
    baud_divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    in_buffer: Vec<u8>,
}

impl SerialSnapshot {
    /// Bytes waiting in the receive FIFO.
    pub(crate) fn in_buffer_len(&self) -> usize {
        self.in_buffer.len()
    }
}

impl From<SerialState> for SerialSnapshot {
    fn from(s: SerialState) -> Self {
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialSnapshot> for SerialState {
    fn from(s: &SerialSnapshot) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// What a port write asked the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortAction {
    /// Nothing beyond the device model.
    None,
    /// The guest pulsed the i8042 reset line.
    Reset,
    /// The guest entered ACPI S5 (powered off).
    PowerOff,
    /// The guest wrote the ACPI reset register.
    Reboot,
}

/// The port-I/O and MMIO buses of a microVM.
pub(crate) struct Devices {
    /// COM1.
    pub serial: Mutex<ComPort>,
    /// virtio-mmio device N at `layout::virtio_mmio_addr(N)`.
    pub virtio: Vec<Mutex<MmioTransport>>,
}

impl Devices {
    /// Handles a guest `in`.
    pub(crate) fn io_in(&self, port: u16, data: &mut [u8]) {
        match port {
            p if (COM1_PORT..COM1_PORT + 8).contains(&p) && data.len() == 1 => {
                data[0] = lock(&self.serial).read((p - COM1_PORT) as u8);
            }
            // i8042 status / data: nothing pending.
            0x60 | I8042_CMD_PORT => data.fill(0),
            p if crate::acpi::owns_port(p) => crate::acpi::port_in(data),
            // Absent devices float high.
            _ => data.fill(0xff),
        }
    }

    /// Handles a guest `out`.
    pub(crate) fn io_out(&self, port: u16, data: &[u8]) -> PortAction {
        match port {
            p if (COM1_PORT..COM1_PORT + 8).contains(&p) && data.len() == 1 => {
                // An interrupt that cannot be raised only delays the guest's
                // view of the UART; the output itself has been taken.
                let _ = lock(&self.serial).write((p - COM1_PORT) as u8, data[0]);
                PortAction::None
            }
            I8042_CMD_PORT if data.first() == Some(&0xfe) => PortAction::Reset,
            p if crate::acpi::owns_port(p) => crate::acpi::port_out(p, data),
            _ => PortAction::None,
        }
    }

    /// The virtio device whose window holds guest-physical `addr`, and the
    /// offset in it.
    fn virtio_at(&self, addr: u64) -> Option<(&Mutex<MmioTransport>, u64)> {
        let offset = addr.checked_sub(VIRTIO_MMIO_BASE)?;
        let index = usize::try_from(offset / VIRTIO_MMIO_SIZE).ok()?;
        Some((self.virtio.get(index)?, offset % VIRTIO_MMIO_SIZE))
    }

    /// Handles a guest MMIO read; absent devices read as all ones.
    pub(crate) fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.virtio_at(addr) {
            Some((device, offset)) => lock(device).read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Handles a guest MMIO write (ignored where no device is).
    pub(crate) fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((device, offset)) = self.virtio_at(addr) {
            lock(device).write(offset, data);
        }
    }

    /// Queues console input for the guest; returns how much was taken.
    pub(crate) fn serial_input(&self, bytes: &[u8]) -> usize {
        lock(&self.serial).enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}
