//! The ACPI tables of a microVM and its ACPI power registers, so that a
//! Linux guest's `poweroff` ends the VM with `poweroff` and its `reboot`
//! ends it with `reboot` (a new VMM boots it again; see DESIGN.md).
//!
//! The tables (built with rust-vmm's `acpi_tables`) describe a
//! hardware-reduced ACPI platform, as Firecracker's and Cloud Hypervisor's
//! do: no PM1 blocks and no SCI (Linux then leaves the legacy PIC and PIT
//! alone and uses the local APIC timer), only
//! - the RSDP and an XSDT naming the FADT and the MADT;
//! - the FADT: hardware-reduced, with a sleep control and a sleep status
//!   register and a reset register, each one byte of port I/O
//!   ([`ACPI_SLEEP_CONTROL_PORT`], [`ACPI_SLEEP_STATUS_PORT`],
//!   [`ACPI_RESET_PORT`]); no VGA, MSI, CMOS RTC or 8042 announced;
//! - the DSDT: `\_S5_` (the sleep type Linux writes to power off), COM1
//!   (`PNP0501`, its ports and interrupt), and each virtio-mmio device as
//!   an `LNRO0005` device (its register window and interrupt line, as in
//!   [`crate::layout`]), which Linux's virtio_mmio driver binds over ACPI;
//! - the MADT: one enabled local APIC per vCPU and the I/O APIC, so SMP
//!   works as with the MP table.
//!
//! A reboot needs one more piece. With a hardware-reduced FADT and no EFI,
//! Linux (x86 `reboot_init`) makes EFI its first reboot method, not the
//! ACPI reset register; the EFI call does nothing, and its next method
//! jumps to the BIOS reset vector in real mode. The VMM has no BIOS, so it
//! places a 10-byte stub there ([`RESET_VECTOR`]) that writes the reset
//! value to the reset register, which is what a firmware's reset does on
//! hardware. (`reboot=a` makes Linux write the register directly; `reboot=k`
//! pulses the i8042 reset line, recorded as `guest_reset`.)
//!
//! The virtio-mmio devices are announced twice: in the DSDT, for kernels
//! built without `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` (Debian's cloud
//! kernel), and on the kernel command line (`virtio_mmio.device=`), for
//! guests booted with `acpi=off` and the test guests. A kernel that reads
//! both registers each window twice, and the second probe of a window
//! finds it taken and gives up (one line in its log), so every device is
//! driven once. (Not booted with Linux here: Linux guests do not boot under
//! the VMM on this software-nested machine.) The MP table is written
//! too, for `acpi=off` guests and the test guest; Linux prefers the MADT
//! when ACPI is on.
//!
//! The power registers keep no state (the sleep status always reads 0 and
//! a write either ends the VM or does nothing), so snapshots and
//! migrations need nothing beyond guest memory, which holds the tables.

use acpi_tables::aml::{
    self, Device, EISAName, Interrupt, Memory32Fixed, Name, Package, ResourceTemplate, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::PortAction;
use crate::layout::{
    ioapic_id, virtio_irq, virtio_mmio_addr, ACPI_RESET_PORT, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_STATUS_PORT, ACPI_START, COM1_IRQ, COM1_PORT, IOAPIC_ADDR, LAPIC_ADDR, RESET_VECTOR,
    VIRTIO_MMIO_SIZE,
};
use crate::VmmError;

const OEM_ID: [u8; 6] = *b"ZIXIAO";
const OEM_TABLE_ID: [u8; 8] = *b"MICROVM ";
const OEM_REVISION: u32 = 1;
/// DSDT revision 2 and up: AML integers are 64 bits.
const DSDT_REVISION: u8 = 6;

/// The SLP_TYP of S5 in `\_S5_`. Any value is the platform's to choose; 5
/// is QEMU's and Cloud Hypervisor's.
const S5_SLEEP_TYPE: u8 = 5;
/// Sleep control register: SLP_TYP in bits 2-4, SLP_EN in bit 5 (ACPI 6.5,
/// 4.8.3.7).
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111 << SLP_TYP_SHIFT;
const SLP_EN: u8 = 1 << 5;
/// What the guest writes to the reset register to reset.
const RESET_VALUE: u8 = 1;

/// IA-PC boot architecture flags (FADT): VGA not present (bit 2), MSI not
/// supported (bit 3), no CMOS RTC (bit 5). The 8042 bit (1) stays clear, so
/// Linux does not probe a keyboard controller; its `reboot=k` still pulses
/// the i8042 reset line, which the VMM serves.
const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 3) | (1 << 5);

/// Tables are 16-byte aligned (8 would do; 16 keeps a dump readable).
const ALIGN: usize = 16;

/// The `_HID` Linux's virtio_mmio driver matches over ACPI (Linaro's ID,
/// as QEMU's and Firecracker's virt machines use it).
const VIRTIO_MMIO_HID: &str = "LNRO0005";

/// The bytes to place at [`ACPI_START`] for `vcpus` vCPUs and
/// `virtio_devices` virtio-mmio devices: the RSDP, then the DSDT, FADT,
/// MADT and XSDT (each after the tables it points to).
pub(crate) fn build(vcpus: u8, virtio_devices: usize) -> Vec<u8> {
    let mut image = vec![0u8; Rsdp::len().next_multiple_of(ALIGN)];
    let dsdt = append(&mut image, &dsdt(virtio_devices));
    let fadt = append(&mut image, &fadt(dsdt));
    let madt = append(&mut image, &madt(vcpus));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = append(&mut image, &xsdt);
    let mut rsdp = Vec::new();
    Rsdp::new(OEM_ID, xsdt).to_aml_bytes(&mut rsdp);
    image[..rsdp.len()].copy_from_slice(&rsdp);
    image
}

/// Writes the ACPI tables for `vcpus` and `virtio_devices` into guest
/// memory at [`ACPI_START`], and the reset stub at [`RESET_VECTOR`].
pub(crate) fn write(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    virtio_devices: usize,
) -> Result<(), VmmError> {
    let bytes = build(vcpus, virtio_devices);
    if ACPI_START + bytes.len() as u64 > RESET_VECTOR {
        return Err(VmmError::invalid("vcpus", "too many for the ACPI tables"));
    }
    mem.write_slice(&bytes, GuestAddress(ACPI_START))
        .and_then(|()| mem.write_slice(&reset_stub(), GuestAddress(RESET_VECTOR)))
        .map_err(|e| VmmError::internal("writing the ACPI tables", e))
}

/// The code at the reset vector. Only 8-bit immediates, so the bytes mean
/// the same in real, protected and long mode (the test guest runs them
/// from long mode).
// One instruction a line.
#[rustfmt::skip]
fn reset_stub() -> [u8; 10] {
    let [port_low, port_high] = ACPI_RESET_PORT.to_le_bytes();
    [
        0xb2, port_low,    // mov dl, port & 0xff
        0xb6, port_high,   // mov dh, port >> 8
        0xb0, RESET_VALUE, // mov al, RESET_VALUE
        0xee,              // out dx, al
        0xf4,              // 1: hlt
        0xeb, 0xfd,        // jmp 1b
    ]
}

/// Appends `table` to `image` at the next aligned offset; returns its
/// guest-physical address.
fn append(image: &mut Vec<u8>, table: &dyn Aml) -> u64 {
    image.resize(image.len().next_multiple_of(ALIGN), 0);
    let addr = ACPI_START + image.len() as u64;
    table.to_aml_bytes(image);
    addr
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn fadt(dsdt: u64) -> impl Aml {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // The power and sleep buttons are not fixed-feature buttons.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.reset_reg = io_register(ACPI_RESET_PORT);
    fadt.reset_value = RESET_VALUE;
    fadt.sleep_control_reg = io_register(ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_register(ACPI_SLEEP_STATUS_PORT);
    fadt.finalize()
}

fn dsdt(virtio_devices: usize) -> Sdt {
    let mut body = Vec::new();
    Name::new("_S5_".into(), &Package::new(vec![&S5_SLEEP_TYPE])).to_aml_bytes(&mut body);
    let com1_ports = IO::new(COM1_PORT, COM1_PORT, 1, 8);
    // Edge-triggered, active high, exclusive: an ISA line.
    let com1_irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let com1_resources = ResourceTemplate::new(vec![&com1_ports, &com1_irq]);
    Device::new(
        "_SB_.COM1".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &com1_resources),
        ],
    )
    .to_aml_bytes(&mut body);
    for index in 0..virtio_devices {
        virtio_device(index, &mut body);
    }
    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&body);
    dsdt
}

/// Appends virtio-mmio device `index` (`\_SB_.V000`, ...) to `body` as
/// the DSDT describes it: [`VIRTIO_MMIO_HID`], `_UID` = `index`, and its
/// register window and interrupt line from [`crate::layout`], the same the
/// command line gives.
fn virtio_device(index: usize, body: &mut Vec<u8>) {
    // The windows sit below 4 GiB (layout's VIRTIO_MMIO_BASE).
    let base = u32::try_from(virtio_mmio_addr(index)).unwrap_or(u32::MAX);
    let window = Memory32Fixed::new(true, base, VIRTIO_MMIO_SIZE as u32);
    // Edge-triggered, active high, exclusive: an ISA line, as the MP table
    // routes it (and as Firecracker describes its virtio-mmio devices).
    let irq = Interrupt::new(true, true, false, false, virtio_irq(index));
    let resources = ResourceTemplate::new(vec![&window, &irq]);
    let uid = index as u64;
    Device::new(
        format!("_SB_.V{index:03}").as_str().into(),
        vec![
            &Name::new("_HID".into(), &VIRTIO_MMIO_HID),
            &Name::new("_UID".into(), &uid),
            &Name::new("_CRS".into(), &resources),
        ],
    )
    .to_aml_bytes(body);
}

fn madt(vcpus: u8) -> MADT {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for id in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(ioapic_id(vcpus), IOAPIC_ADDR, 0));
    madt
}

/// Whether `port` is one of the ACPI power registers.
pub(crate) fn owns_port(port: u16) -> bool {
    (ACPI_SLEEP_CONTROL_PORT..=ACPI_RESET_PORT).contains(&port)
}

/// A guest `in` from an ACPI power register: all read 0 (the sleep status
/// has no wake event to report; the others are write-only).
pub(crate) fn port_in(data: &mut [u8]) {
    data.fill(0);
}

/// A guest `out` to an ACPI power register: entering S5 powers off, the
/// reset value resets; anything else (other sleep types, which the DSDT
/// does not offer, clearing the sleep status) does nothing.
pub(crate) fn port_out(port: u16, data: &[u8]) -> PortAction {
    let Some(&value) = data.first() else {
        return PortAction::None;
    };
    match port {
        ACPI_SLEEP_CONTROL_PORT
            if value & SLP_EN != 0 && (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT == S5_SLEEP_TYPE =>
        {
            PortAction::PowerOff
        }
        ACPI_RESET_PORT if value == RESET_VALUE => PortAction::Reboot,
        _ => PortAction::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    /// The table at guest-physical `addr` in `image`, checked: its
    /// signature, a length inside the image and a zero checksum.
    fn table<'a>(image: &'a [u8], addr: u64, signature: &[u8; 4]) -> &'a [u8] {
        let at = usize::try_from(addr - ACPI_START).unwrap();
        assert_eq!(&image[at..at + 4], signature);
        let len = u32_at(image, at + 4) as usize;
        let table = &image[at..at + len];
        assert_eq!(
            sum(table),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        table
    }

    #[test]
    fn tables_chain_from_the_rsdp_with_valid_checksums() {
        assert!(RESET_VECTOR + reset_stub().len() as u64 <= crate::layout::HIMEM_START);
        for vcpus in [1u8, 2, crate::MAX_VCPUS] {
            let image = build(vcpus, crate::layout::MAX_DISKS);
            assert!(ACPI_START + image.len() as u64 <= RESET_VECTOR);
            // RSDP: ACPI 1.0 checksum over 20 bytes, extended over 36.
            assert_eq!(&image[..8], b"RSD PTR ");
            assert_eq!(sum(&image[..20]), 0);
            assert_eq!(sum(&image[..36]), 0);
            assert_eq!(image[15], 2, "revision 2: the XSDT is used");
            let xsdt = table(&image, u64_at(&image, 24), b"XSDT");
            let entries: Vec<u64> = xsdt[36..].chunks(8).map(|e| u64_at(e, 0)).collect();
            assert_eq!(entries.len(), 2);
            let fadt = table(&image, entries[0], b"FACP");
            let madt = table(&image, entries[1], b"APIC");

            // FADT: hardware-reduced, reset register supported.
            let flags = u32_at(fadt, 112);
            assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
            assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
            // Generic addresses: space 1 (I/O), 8 bits, then the port.
            let gas = |at: usize| (fadt[at], fadt[at + 1], u64_at(fadt, at + 4));
            assert_eq!(gas(116), (1, 8, u64::from(ACPI_RESET_PORT)));
            assert_eq!(fadt[128], RESET_VALUE);
            assert_eq!(gas(244), (1, 8, u64::from(ACPI_SLEEP_CONTROL_PORT)));
            assert_eq!(gas(256), (1, 8, u64::from(ACPI_SLEEP_STATUS_PORT)));
            let dsdt = table(&image, u64_at(fadt, 140), b"DSDT");
            // \_S5_ = Package (1) { 5 } (NameOp, name, PackageOp, length, count, BytePrefix 5).
            let s5 = dsdt.windows(4).position(|w| w == b"_S5_").unwrap();
            assert_eq!(dsdt[s5 - 1], 0x08);
            assert_eq!(
                &dsdt[s5 + 4..s5 + 9],
                &[0x12, 0x04, 0x01, 0x0a, S5_SLEEP_TYPE]
            );

            // MADT: one enabled local APIC per vCPU, then the I/O APIC.
            assert_eq!(u32_at(madt, 36), LAPIC_ADDR);
            let (mut at, mut cpus, mut ioapics) = (44, Vec::new(), Vec::new());
            while at < madt.len() {
                match madt[at] {
                    0 => {
                        assert_eq!(u32_at(madt, at + 4) & 1, 1, "enabled");
                        cpus.push(madt[at + 3]);
                    }
                    1 => ioapics.push((madt[at + 2], u32_at(madt, at + 4))),
                    other => panic!("unexpected MADT entry {other}"),
                }
                at += usize::from(madt[at + 1]);
            }
            assert_eq!(at, madt.len());
            assert_eq!(cpus, (0..vcpus).collect::<Vec<_>>());
            assert_eq!(ioapics, vec![(ioapic_id(vcpus), IOAPIC_ADDR)]);
        }
    }

    /// Each virtio-mmio device is an `LNRO0005` device in the DSDT whose
    /// resources are the window and line the command line announces,
    /// with the tables' checksums still right.
    #[test]
    fn the_dsdt_describes_each_virtio_device_as_the_layout_places_it() {
        for devices in [0, 1, 3, crate::layout::MAX_DISKS] {
            let image = build(2, devices);
            let xsdt = table(&image, u64_at(&image, 24), b"XSDT");
            let fadt = table(&image, u64_at(xsdt, 36), b"FACP");
            let dsdt = table(&image, u64_at(fadt, 140), b"DSDT");
            // String "LNRO0005": StringPrefix, the bytes, NUL.
            let hid = b"\x0dLNRO0005\x00";
            let found: Vec<usize> = dsdt
                .windows(hid.len())
                .enumerate()
                .filter(|(_, w)| w == hid)
                .map(|(at, _)| at)
                .collect();
            assert_eq!(found.len(), devices, "{devices} devices");
            for (index, at) in found.into_iter().enumerate() {
                // DeviceOp (ExtOpPrefix 0x5b, 0x82), its package length
                // (1 or 2 bytes), then `\_SB_.V<index>` (DualNamePrefix).
                let name = format!("V{index:03}");
                let device = dsdt[..at]
                    .windows(4)
                    .rposition(|w| w == name.as_bytes())
                    .expect("the device's name");
                assert_eq!(&dsdt[device - 5..device], b"\x2e_SB_");
                assert!(
                    dsdt[device - 9..device - 5]
                        .windows(2)
                        .any(|w| w == [0x5b, 0x82]),
                    "DeviceOp before {name}"
                );
                // Its _UID, then its _CRS: a Memory32Fixed descriptor
                // (0x86, 9 bytes: read-write, base, length) and an
                // extended interrupt descriptor (0x89, 6 bytes: flags
                // consumer|edge, one line).
                let rest = &dsdt[at..];
                let uid = rest.windows(4).position(|w| w == b"_UID").expect("_UID");
                // ZeroOp, OneOp, or BytePrefix and the value.
                let value = match rest[uid + 4] {
                    0x0a => rest[uid + 5],
                    op => op,
                };
                assert_eq!(usize::from(value), index);
                let mem = rest.iter().position(|&b| b == 0x86).expect("Memory32Fixed");
                assert_eq!(&rest[mem + 1..mem + 4], &[9, 0, 1]);
                assert_eq!(
                    u64::from(u32_at(rest, mem + 4)),
                    crate::layout::virtio_mmio_addr(index)
                );
                assert_eq!(u64::from(u32_at(rest, mem + 8)), VIRTIO_MMIO_SIZE);
                let irq = mem + 12;
                assert_eq!(&rest[irq..irq + 5], &[0x89, 6, 0, 0b11, 1]);
                assert_eq!(u32_at(rest, irq + 5), crate::layout::virtio_irq(index));
            }
        }
    }

    #[test]
    fn only_s5_and_the_reset_value_end_the_vm() {
        let s5 = (S5_SLEEP_TYPE << SLP_TYP_SHIFT) | SLP_EN;
        assert_eq!(s5, 0x34);
        assert_eq!(
            port_out(ACPI_SLEEP_CONTROL_PORT, &[s5]),
            PortAction::PowerOff
        );
        // The sleep type without SLP_EN, other sleep types, clearing WAK_STS.
        for (port, value) in [
            (ACPI_SLEEP_CONTROL_PORT, S5_SLEEP_TYPE << SLP_TYP_SHIFT),
            (ACPI_SLEEP_CONTROL_PORT, (3 << SLP_TYP_SHIFT) | SLP_EN),
            (ACPI_SLEEP_STATUS_PORT, 0x80),
            (ACPI_SLEEP_STATUS_PORT, s5),
            (ACPI_RESET_PORT, 0),
            (ACPI_RESET_PORT, 0xfe),
        ] {
            assert_eq!(
                port_out(port, &[value]),
                PortAction::None,
                "{port:#x} {value:#x}"
            );
        }
        assert_eq!(port_out(ACPI_SLEEP_CONTROL_PORT, &[]), PortAction::None);
        assert_eq!(
            port_out(ACPI_RESET_PORT, &[RESET_VALUE]),
            PortAction::Reboot
        );
        let mut data = [0xff; 2];
        port_in(&mut data);
        assert_eq!(data, [0, 0]);
    }
}
