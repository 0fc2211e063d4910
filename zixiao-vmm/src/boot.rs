//! Fresh boot: guest memory, kernel (ELF vmlinux or bzImage via linux-loader),
//! command line, initrd, boot_params with an e820 map, and the long-mode
//! structures (identity page tables, GDT) plus the boot vCPU's registers.

use std::fs::File;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::{self, BzImage, Cmdline, Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::config::{kernel_format_of, open_input, KernelFormat, VmConfig};
use crate::layout::*;
use crate::VmmError;

/// Where the boot vCPU starts and where the loaded images ended up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BootInfo {
    /// 64-bit entry point.
    pub entry: u64,
}

/// Allocates anonymous guest memory of `bytes`.
pub(crate) fn guest_memory(bytes: u64) -> Result<GuestMemoryMmap, VmmError> {
    let size = usize::try_from(bytes).map_err(|_| VmmError::invalid("memory_mib", "too large"))?;
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).map_err(|err| {
        VmmError::ResourceExhausted {
            message: format!(
                "memory_mib: cannot map {} MiB of guest memory: {err}",
                bytes >> 20
            ),
        }
    })
}

/// The open files a fresh boot loads (opened before the VMM drops root).
pub(crate) struct BootFiles {
    pub kernel: File,
    pub initrd: Option<File>,
    /// `config.disks[N]`, open as the disk will be used.
    pub disks: Vec<File>,
}

impl BootFiles {
    /// Opens `config`'s kernel and initrd.
    pub(crate) fn open(config: &VmConfig) -> Result<BootFiles, VmmError> {
        Ok(BootFiles {
            kernel: open_input("kernel", &config.kernel)?,
            initrd: config
                .initrd
                .as_deref()
                .map(|p| open_input("initrd", p))
                .transpose()?,
            disks: open_disks(&config.disks)?,
        })
    }
}

/// Opens every disk of a config (errors name `disks[N].path`).
pub(crate) fn open_disks(disks: &[crate::config::DiskConfig]) -> Result<Vec<File>, VmmError> {
    disks
        .iter()
        .enumerate()
        .map(|(index, disk)| disk.open(index))
        .collect()
}

/// Loads kernel, command line and initrd and writes boot_params and the
/// long-mode tables. Returns the entry point. `config` names the files in
/// errors and gives the command line and sizes; `files` are read.
pub(crate) fn load(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    files: BootFiles,
) -> Result<BootInfo, VmmError> {
    let BootFiles {
        mut kernel, initrd, ..
    } = files;
    let format = kernel_format_of(&kernel, &config.kernel)?;
    let bad_kernel = |err: loader::Error| {
        VmmError::invalid(
            "kernel",
            format!("{} cannot be loaded: {err}", config.kernel.display()),
        )
    };
    let (loaded, entry) = match format {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut kernel, Some(GuestAddress(HIMEM_START)))
                .map_err(bad_kernel)?;
            (r, r.kernel_load.raw_value())
        }
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut kernel, Some(GuestAddress(HIMEM_START)))
                .map_err(bad_kernel)?;
            // The 64-bit entry of a bzImage is 0x200 past its protected-mode code.
            (r, r.kernel_load.raw_value() + 0x200)
        }
    };
    crate::timeline::mark("kernel");

    let mut cmdline = Cmdline::new(CMDLINE_MAX).map_err(|e| VmmError::internal("cmdline", e))?;
    let line = config.kernel_cmdline();
    if !line.is_empty() {
        cmdline
            .insert_str(&line)
            .map_err(|err| VmmError::invalid("cmdline", err.to_string()))?;
    }
    loader::load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline)
        .map_err(|err| VmmError::invalid("cmdline", err.to_string()))?;

    let mem_end = config.memory_bytes();
    let mut params = boot_params::default();
    if let Some(header) = loaded.setup_header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"
    params.hdr.kernel_alignment = 0x0100_0000;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0) as u32;

    if let (Some(path), Some(file)) = (&config.initrd, initrd) {
        let (addr, size) = load_initrd(mem, path, file, loaded.kernel_end, mem_end)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    add_e820(&mut params, 0, EBDA_START);
    add_e820(&mut params, HIMEM_START, mem_end - HIMEM_START);
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(|e| VmmError::internal("writing boot_params", e))?;

    write_page_tables(mem)?;
    write_gdt(mem)?;
    crate::timeline::mark("boot-params");
    crate::mptable::write(mem, config.vcpus)?;
    crate::acpi::write(mem, config.vcpus, config.virtio_devices())?;
    crate::timeline::mark("acpi");
    Ok(BootInfo { entry })
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &std::path::Path,
    mut file: File,
    kernel_end: u64,
    mem_end: u64,
) -> Result<(u64, u64), VmmError> {
    let size = file
        .metadata()
        .map_err(|e| VmmError::invalid("initrd", e.to_string()))?
        .len();
    let too_big = || {
        VmmError::invalid(
            "initrd",
            format!(
                "{} is {size} bytes, larger than the guest memory left above the kernel",
                path.display()
            ),
        )
    };
    let addr = mem_end.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if addr < kernel_end.max(INITRD_MIN_ADDR.min(mem_end / 2)) {
        return Err(too_big());
    }
    let count = usize::try_from(size).map_err(|_| too_big())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, count)
        .map_err(|err| {
            VmmError::invalid("initrd", format!("cannot read {}: {err}", path.display()))
        })?;
    Ok((addr, size))
}

fn add_e820(params: &mut boot_params, addr: u64, size: u64) {
    let i = params.e820_entries as usize;
    if i < params.e820_table.len() {
        params.e820_table[i].addr = addr;
        params.e820_table[i].size = size;
        params.e820_table[i].r#type = 1; // E820_RAM
        params.e820_entries += 1;
    }
}

/// Identity-maps the first 4 GiB with 2 MiB pages.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), VmmError> {
    let w = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|e| VmmError::internal("writing page tables", e))
    };
    w(PML4_ADDR, PDPT_ADDR | 0x3)?;
    for gib in 0..4u64 {
        let pd = PD_ADDR + gib * 0x1000;
        w(PDPT_ADDR + gib * 8, pd | 0x3)?;
        for i in 0..512u64 {
            // Present | writable | page size (2 MiB).
            w(pd + i * 8, ((gib << 30) + (i << 21)) | 0x83)?;
        }
    }
    Ok(())
}

/// GDT entries: null, 64-bit code, data, TSS.
const GDT: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn segment(index: u16, entry: u64) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    kvm_segment {
        base: 0,
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), VmmError> {
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(|e| VmmError::internal("writing GDT", e))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|e| VmmError::internal("writing IDT", e))
}

/// Special registers for 64-bit entry: flat segments, paging on, long mode.
pub(crate) fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment(1, GDT[1]);
    let data = segment(2, GDT[2]);
    let tss = segment(3, GDT[3]);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= 0x20; // PAE
    sregs.cr0 |= 0x1 | 0x8000_0000; // PE | PG
    sregs.efer |= 0x100 | 0x400; // LME | LMA
    sregs
}

/// General registers of the boot vCPU: entry point, stack, %rsi = boot_params.
pub(crate) fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE,
        ..Default::default()
    }
}

/// x87/SSE defaults Linux expects.
pub(crate) fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Loads `image` as the kernel of a 16 MiB guest with `initrd`.
    fn load_image(image: &[u8], initrd: Option<&[u8]>) -> Result<BootInfo, VmmError> {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("kernel");
        std::fs::write(&kernel, image).unwrap();
        let mut config = VmConfig::new(&kernel);
        config.memory_mib = 16;
        if let Some(data) = initrd {
            let path = dir.path().join("initrd");
            std::fs::write(&path, data).unwrap();
            config.initrd = Some(path);
        }
        let mem = guest_memory(config.memory_bytes()).unwrap();
        load(&mem, &config, BootFiles::open(&config).unwrap())
    }

    fn acceptable(result: Result<BootInfo, VmmError>) -> bool {
        matches!(result, Ok(_) | Err(VmmError::InvalidArgument { .. }))
    }

    /// A minimal ELF64 x86-64 header claiming `phnum` program headers at `phoff`.
    fn elf_header(entry: u64, phoff: u64, phnum: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2; // 64-bit
        h[5] = 1; // little endian
        h[6] = 1; // version
        h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        h[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&entry.to_le_bytes());
        h[32..40].copy_from_slice(&phoff.to_le_bytes());
        h[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        h[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        h[56..58].copy_from_slice(&phnum.to_le_bytes());
        h
    }

    #[test]
    fn the_test_guest_loads() {
        let Some(path) = crate::test_guest::kernel_path() else {
            return;
        };
        let image = std::fs::read(path).unwrap();
        assert!(load_image(&image, Some(b"initrd")).is_ok());
    }

    /// Real kernels to damage: the test guest's ELF, and the Debian
    /// bzImage the microVM tests boot when the environment names it.
    fn real_kernels() -> &'static [Vec<u8>] {
        static KERNELS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        KERNELS.get_or_init(|| {
            let debian =
                std::env::var_os("ZIXIAO_TEST_MICROVM_KERNEL").map(std::path::PathBuf::from);
            crate::test_guest::kernel_path()
                .into_iter()
                .chain(debian)
                .filter_map(|path| std::fs::read(path).ok())
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: zixiao_testing::fuzz::cases(32),
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_726f),
            ..ProptestConfig::default()
        })]

        /// Real kernels with bytes overwritten (headers included: the
        /// writes land anywhere, and the first 4 KiB get their own) or cut
        /// short either load or are refused as invalid; the loader never
        /// panics or writes outside the guest's memory.
        #[test]
        fn damaged_real_kernels_load_or_are_invalid(
            hit in zixiao_testing::fuzz::damage(16),
            header_hit in proptest::collection::vec((0usize..4096, any::<u8>()), 0..8),
        ) {
            for kernel in real_kernels() {
                let mut image = kernel.clone();
                for (at, byte) in &header_hit {
                    if let Some(b) = image.get_mut(*at) {
                        *b = *byte;
                    }
                }
                let image = hit.apply(image);
                prop_assert!(acceptable(load_image(&image, None)));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: zixiao_testing::fuzz::cases(128),
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_726e),
            ..ProptestConfig::default()
        })]

        /// ELF headers with arbitrary entry points, program header tables
        /// and segment contents never crash the loader.
        #[test]
        fn arbitrary_elf_images_load_or_are_invalid(
            entry in any::<u64>(),
            phoff in prop_oneof![Just(64u64), any::<u64>()],
            phnum in 0u16..16,
            body in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let mut image = elf_header(entry, phoff, phnum);
            image.extend_from_slice(&body);
            prop_assert!(acceptable(load_image(&image, None)));
        }

        /// bzImage setup headers with arbitrary fields and sizes.
        #[test]
        fn arbitrary_bzimages_load_or_are_invalid(
            setup_sects in any::<u8>(),
            version in any::<u16>(),
            loadflags in any::<u8>(),
            syssize in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..8192),
        ) {
            let mut image = vec![0u8; 0x1000];
            image[0x1f1] = setup_sects;
            image[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
            image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
            image[0x202..0x206].copy_from_slice(b"HdrS");
            image[0x206..0x208].copy_from_slice(&version.to_le_bytes());
            image[0x211] = loadflags;
            image.extend_from_slice(&body);
            prop_assert!(acceptable(load_image(&image, None)));
        }

        /// Any initrd either fits above the kernel or is refused by size.
        #[test]
        fn initrds_of_any_size_load_or_are_invalid(len in 0usize..(20 << 20)) {
            let Some(path) = crate::test_guest::kernel_path() else {
                return Ok(());
            };
            let image = std::fs::read(path).unwrap();
            let initrd = vec![0xa5u8; len];
            prop_assert!(acceptable(load_image(&image, Some(&initrd))));
        }
    }
}
