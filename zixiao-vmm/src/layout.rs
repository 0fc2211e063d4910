//! Guest physical memory layout of a microVM (x86-64, Linux boot protocol).
//!
//! ```text
//! 0x0500  GDT            0x0520  IDT (empty)
//! 0x7000  boot_params    0x8ff0  boot stack top
//! 0x9000  PML4           0xa000  PDPT      0xb000..0xf000  4 page directories (identity map 4 GiB, 2 MiB pages)
//! 0x9fc00 MP table (EBDA, reserved in e820)
//! 0xe0000 ACPI: RSDP, then DSDT, FADT, MADT, XSDT (BIOS area, not RAM in e820)
//! 0xffff0 reset vector: writes the ACPI reset register
//! 0x20000 command line   0x100000 kernel   top of RAM: initrd
//! 0xd0000000 + N * 0x1000: virtio-mmio device N (above the 3 GiB RAM limit, below the TSS)
//! ```

/// GDT address.
pub const GDT_ADDR: u64 = 0x500;
/// IDT address.
pub const IDT_ADDR: u64 = 0x520;
/// The boot_params ("zero page").
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Page map level 4.
pub const PML4_ADDR: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of four page directories.
pub const PD_ADDR: u64 = 0xb000;
/// Start of the extended BIOS data area (reserved; holds the MP table).
pub const EBDA_START: u64 = 0x9fc00;
/// The ACPI tables: the RSDP first, the other tables after it, all below
/// [`HIMEM_START`]. Linux finds the RSDP by scanning the BIOS read-only area
/// 0xe0000..0x100000 on 16-byte boundaries (it also scans the EBDA, whose
/// segment pointer at 0x40e is zero here, so the MP table is not in its
/// way). The area is a hole in the e820 map, so the guest never takes it for
/// RAM; it is guest memory all the same, so snapshots and migrations carry
/// the tables with the rest of memory.
pub const ACPI_START: u64 = 0xe0000;
/// The x86 reset vector (F000:FFF0 in real mode), where firmware would
/// reset the platform. Linux jumps there to reboot when its other methods
/// did nothing (see `acpi`), so the VMM puts a stub there that writes the
/// ACPI reset register.
pub const RESET_VECTOR: u64 = 0xffff0;
/// Local APIC base (every vCPU's).
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// I/O APIC base (KVM's in-kernel IOAPIC, 24 pins).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// ACPI sleep control register (hardware-reduced ACPI, one byte): SLP_TYP
/// in bits 2-4 with SLP_EN (bit 5) enters a sleep state; S5 ends the VM.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// ACPI sleep status register (one byte, reads 0: the VM never wakes).
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// ACPI reset register (one byte): the FADT's reset value resets the VM.
pub const ACPI_RESET_PORT: u16 = 0x602;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Command line capacity including the NUL.
pub const CMDLINE_MAX: usize = 2048;
/// Where high memory and the kernel start.
pub const HIMEM_START: u64 = 0x100000;
/// The initrd never goes below this (leaves the first 8 MiB to small kernels).
pub const INITRD_MIN_ADDR: u64 = 0x80_0000;
/// TSS area KVM needs on Intel (above guest RAM).
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// i8042 command port.
pub const I8042_CMD_PORT: u16 = 0x64;
/// Guest-physical base of the first virtio-mmio device: above the largest
/// guest RAM (3 GiB) and below KVM's TSS, so it is never RAM.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Each virtio-mmio device's register window (the registers plus config space).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The first virtio device's interrupt line; device N uses this + N. ISA
/// lines 5 to 12 are free here (COM1 is 4, there is no RTC, mouse or
/// floppy), and the MP table routes every ISA line 0-23 to the same IOAPIC
/// pin, so a Linux guest finds them without ACPI.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Most virtio devices (disks and network cards together) a microVM has
/// (one interrupt line each).
pub const MAX_DISKS: usize = 8;

/// Guest-physical address of virtio-mmio device `index`.
pub const fn virtio_mmio_addr(index: usize) -> u64 {
    VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE
}

/// Interrupt line (GSI) of virtio-mmio device `index`.
pub const fn virtio_irq(index: usize) -> u32 {
    VIRTIO_IRQ_BASE + index as u32
}

/// The I/O APIC's id in the MP table and the MADT: the first after the
/// vCPUs' local APIC ids (0..vcpus).
pub const fn ioapic_id(vcpus: u8) -> u8 {
    vcpus.saturating_add(1)
}
