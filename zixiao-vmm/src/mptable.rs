//! The Intel MultiProcessor Specification 1.4 table Linux reads to find the
//! application processors, the I/O APIC and the ISA interrupt routing when a
//! microVM has no ACPI: a floating pointer and a configuration table, both in
//! the (e820-reserved) EBDA at 0x9fc00.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{ioapic_id, EBDA_START, IOAPIC_ADDR, LAPIC_ADDR};
use crate::VmmError;

/// ISA IRQs routed through the I/O APIC (the in-kernel IOAPIC has 24 pins).
const IRQS: u8 = 24;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The bytes of the floating pointer followed by the configuration table.
pub(crate) fn build(vcpus: u8) -> Vec<u8> {
    let ioapic = ioapic_id(vcpus);
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..vcpus {
        // Processor: type 0, APIC id, APIC version, flags (enabled, boot CPU).
        entries.extend_from_slice(&[0, id, 0x14, if id == 0 { 0x3 } else { 0x1 }]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // CPU signature
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU | APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // Bus 0: ISA.
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    // I/O APIC: enabled.
    entries.extend_from_slice(&[2, ioapic, 0x11, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..IRQS {
        // I/O interrupt: INT, default polarity/trigger, ISA bus irq -> IOAPIC pin.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic, irq]);
        count += 1;
    }
    // Local interrupts on every LAPIC: LINT0 = ExtINT, LINT1 = NMI.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = EBDA_START as u32 + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"ZIXIAO  ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&table_addr.to_le_bytes());
    floating.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // 16 bytes, rev 1.4
    floating[10] = checksum(&floating);
    floating.extend_from_slice(&table);
    floating
}

/// Writes the MP table for `vcpus` into guest memory.
pub(crate) fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), VmmError> {
    let bytes = build(vcpus);
    if bytes.len() > 1024 {
        return Err(VmmError::invalid("vcpus", "too many for the MP table"));
    }
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|e| VmmError::internal("writing the MP table", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_valid_checksums_and_one_entry_per_cpu() {
        for vcpus in [1u8, 2, crate::MAX_VCPUS] {
            let bytes = build(vcpus);
            assert!(bytes.len() <= 1024);
            let (floating, table) = bytes.split_at(16);
            assert_eq!(&floating[..4], b"_MP_");
            assert_eq!(floating.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            assert_eq!(
                u32::from_le_bytes(floating[4..8].try_into().unwrap()),
                EBDA_START as u32 + 16
            );
            assert_eq!(&table[..4], b"PCMP");
            assert_eq!(
                u16::from_le_bytes([table[4], table[5]]) as usize,
                table.len()
            );
            assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            // Walk the entries: processors are 20 bytes, the rest 8.
            let count = u16::from_le_bytes([table[34], table[35]]);
            let (mut at, mut cpus, mut boot) = (44, 0, 0);
            for _ in 0..count {
                if table[at] == 0 {
                    cpus += 1;
                    boot += usize::from(table[at + 3] & 2 != 0);
                    at += 20;
                } else {
                    at += 8;
                }
            }
            assert_eq!(at, table.len());
            assert_eq!((cpus, boot), (usize::from(vcpus), 1));
        }
    }
}
