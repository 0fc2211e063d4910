//! `VmConfig`: what a microVM boots, and its validation. Checks that need only
//! the files and the host (sizes, formats, memory available) live here so the
//! launcher can reject bad input before any process or file exists.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout;
use crate::tap::{MacAddr, TapName};
use crate::VmmError;

/// Smallest guest: the boot structures, the kernel at 1 MiB and some room.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest guest: guest RAM is one region below the 32-bit PCI hole.
pub const MAX_MEMORY_MIB: u64 = 3 * 1024;
/// Most vCPUs one microVM may have.
pub const MAX_VCPUS: u8 = 32;

/// What to boot: kernel, initrd, command line, vCPUs and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// A bzImage or a 64-bit ELF vmlinux.
    pub kernel: PathBuf,
    /// An initial ramdisk placed at the top of guest memory.
    pub initrd: Option<PathBuf>,
    /// The kernel command line (at most 2047 bytes, no NUL).
    pub cmdline: String,
    /// Number of vCPUs, one host thread each.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// virtio-block disks, in order: disk N is the N-th virtio-mmio device
    /// announced on the kernel command line (`/dev/vdX` in a Linux guest).
    /// Absent in configs written before disks existed (snapshot format 1).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net cards, in order, each on an existing TAP device: card N
    /// is the virtio-mmio device after the disks (`eth<N>` in a Linux
    /// guest). Absent in configs written before network cards existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<NetConfig>,
    /// A virtio-vsock device, the virtio-mmio device after the network
    /// cards. Absent in configs written before vsock existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<crate::VsockConfig>,
    /// A virtio-balloon device, the last virtio-mmio device, through which
    /// the host takes memory back from the running guest
    /// (`VmmClient::set_balloon`). Absent in configs written before the
    /// balloon existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<crate::BalloonConfig>,
}

/// One virtio-net card on a TAP device that already exists in the VMM's
/// network namespace (see [`crate::launch_in_netns`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// The TAP the card's frames go to and come from; the VMM attaches to
    /// it (it never creates one), before it drops its privileges.
    pub tap: TapName,
    /// The card's address, which the guest reads from the config space.
    pub mac: MacAddr,
}

/// One virtio-block disk backed by a raw host file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// A regular file holding the raw disk image; its size in whole 512-byte
    /// sectors is the disk's capacity (a trailing partial sector is not
    /// visible to the guest).
    pub path: PathBuf,
    /// The guest sees a read-only disk (VIRTIO_BLK_F_RO): the file is opened
    /// read-only and every write request is answered with an I/O error.
    #[serde(default)]
    pub read_only: bool,
}

impl DiskConfig {
    /// A writable disk backed by `path`.
    pub fn new(path: impl Into<PathBuf>) -> DiskConfig {
        DiskConfig {
            path: path.into(),
            read_only: false,
        }
    }

    /// Opens the disk file as the guest will use it (read-write unless
    /// `read_only`); errors name `disks[index].path`.
    pub(crate) fn open(&self, index: usize) -> Result<File, VmmError> {
        let field = format!("disks[{index}].path");
        let file = OpenOptions::new()
            .read(true)
            .write(!self.read_only)
            .open(&self.path)
            .map_err(|err| match err.kind() {
                IoKind::NotFound => VmmError::NotFound {
                    message: format!("{field}: {} does not exist", self.path.display()),
                },
                _ => VmmError::invalid(
                    &field,
                    format!(
                        "cannot open {} {}: {err}",
                        self.path.display(),
                        if self.read_only {
                            "for reading"
                        } else {
                            "for reading and writing"
                        }
                    ),
                ),
            })?;
        let meta = file.metadata().map_err(|err| {
            VmmError::invalid(
                &field,
                format!("cannot stat {}: {err}", self.path.display()),
            )
        })?;
        if !meta.is_file() {
            return Err(VmmError::invalid(
                &field,
                format!("{} is not a regular file", self.path.display()),
            ));
        }
        Ok(file)
    }
}

/// The kind of kernel image a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A 64-bit x86 ELF (vmlinux or the test guest).
    Elf,
    /// A Linux bzImage.
    BzImage,
}

impl VmConfig {
    /// A config for `kernel` with 1 vCPU, 128 MiB and a serial-console command line.
    pub fn new(kernel: impl Into<PathBuf>) -> VmConfig {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: "console=ttyS0 reboot=k panic=-1".to_string(),
            vcpus: 1,
            memory_mib: 128,
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            balloon: None,
        }
    }

    /// How many virtio-mmio devices the guest has: the disks, then the
    /// network cards, then the vsock device, then the balloon.
    pub(crate) fn virtio_devices(&self) -> usize {
        self.disks.len()
            + self.nets.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.balloon.is_some())
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }

    /// The command line the guest gets: `cmdline` followed by one
    /// `virtio_mmio.device=4K@ADDR:IRQ` per disk, then per network card,
    /// which is how a Linux guest without ACPI or device tree finds
    /// virtio-mmio devices.
    pub fn kernel_cmdline(&self) -> String {
        let mut line = self.cmdline.trim().to_string();
        for index in 0..self.virtio_devices() {
            let (addr, irq) = (layout::virtio_mmio_addr(index), layout::virtio_irq(index));
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&format!(
                "virtio_mmio.device={}K@{addr:#x}:{irq}",
                layout::VIRTIO_MMIO_SIZE >> 10
            ));
        }
        line
    }

    /// Checks every field against the files and the host; names the field.
    pub fn validate(&self) -> Result<(), VmmError> {
        self.validate_limits()?;
        if let Some(available) = host_available_memory() {
            if self.memory_bytes() > available {
                return Err(VmmError::ResourceExhausted {
                    message: format!(
                        "memory_mib: {} MiB asked, the host has {} MiB available",
                        self.memory_mib,
                        available >> 20
                    ),
                });
            }
        }
        kernel_format(&self.kernel)?;
        for (index, disk) in self.disks.iter().enumerate() {
            disk.open(index)?;
        }
        if let Some(initrd) = &self.initrd {
            let size = file_size("initrd", initrd)?;
            let room = self.memory_bytes().saturating_sub(layout::INITRD_MIN_ADDR);
            if size > room {
                return Err(VmmError::invalid(
                    "initrd",
                    format!(
                        "{} is {size} bytes, larger than the {room} bytes of guest memory it can use \
                         ({} MiB guest)",
                        initrd.display(),
                        self.memory_mib
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The checks that need neither files nor the host: vCPU count, memory
    /// size and command line (what a snapshot's config must also pass).
    pub(crate) fn validate_limits(&self) -> Result<(), VmmError> {
        if self.vcpus == 0 {
            return Err(VmmError::invalid("vcpus", "must be at least 1"));
        }
        if self.vcpus > MAX_VCPUS {
            return Err(VmmError::invalid(
                "vcpus",
                format!(
                    "{} is more than the {MAX_VCPUS} a microVM supports",
                    self.vcpus
                ),
            ));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(VmmError::invalid(
                "memory_mib",
                format!(
                    "{} MiB is less than the minimum of {MIN_MEMORY_MIB} MiB",
                    self.memory_mib
                ),
            ));
        }
        if self.memory_mib > MAX_MEMORY_MIB {
            return Err(VmmError::invalid(
                "memory_mib",
                format!(
                    "{} MiB is more than the maximum of {MAX_MEMORY_MIB} MiB",
                    self.memory_mib
                ),
            ));
        }
        if self.disks.len() > layout::MAX_DISKS {
            return Err(VmmError::invalid(
                "disks",
                format!(
                    "{} disks, a microVM has at most {}",
                    self.disks.len(),
                    layout::MAX_DISKS
                ),
            ));
        }
        if self.virtio_devices() > layout::MAX_DISKS {
            return Err(VmmError::invalid(
                "nets",
                format!(
                    "{} disks and {} network cards, a microVM has at most {} virtio devices \
                     (one interrupt line each)",
                    self.disks.len(),
                    self.nets.len(),
                    layout::MAX_DISKS
                ),
            ));
        }
        if let Some(balloon) = &self.balloon {
            crate::virtio::balloon::target_pages(
                "balloon.amount_mib",
                balloon.amount_mib,
                self.memory_bytes(),
            )?;
        }
        let announced = self.kernel_cmdline().len();
        if announced >= layout::CMDLINE_MAX {
            return Err(VmmError::invalid(
                "cmdline",
                format!(
                    "{announced} bytes with the devices' virtio_mmio.device= entries, at most {} allowed",
                    layout::CMDLINE_MAX - 1
                ),
            ));
        }
        if self.cmdline.contains('\0') {
            return Err(VmmError::invalid("cmdline", "contains a NUL byte"));
        }
        Ok(())
    }
}

/// Opens `path` for reading, mapping failures to errors naming `field`.
pub(crate) fn open_input(field: &str, path: &Path) -> Result<File, VmmError> {
    let file = File::open(path).map_err(|err| match err.kind() {
        IoKind::NotFound => VmmError::NotFound {
            message: format!("{field} {} does not exist", path.display()),
        },
        _ => VmmError::invalid(field, format!("cannot read {}: {err}", path.display())),
    })?;
    let meta = file.metadata().map_err(|err| {
        VmmError::invalid(field, format!("cannot stat {}: {err}", path.display()))
    })?;
    if !meta.is_file() {
        return Err(VmmError::invalid(
            field,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

fn file_size(field: &str, path: &Path) -> Result<u64, VmmError> {
    let file = open_input(field, path)?;
    file.metadata()
        .map(|m| m.len())
        .map_err(|err| VmmError::invalid(field, format!("cannot stat {}: {err}", path.display())))
}

/// Recognizes a 64-bit x86 ELF or a bzImage by its headers.
pub fn kernel_format(path: &Path) -> Result<KernelFormat, VmmError> {
    kernel_format_of(&open_input("kernel", path)?, path)
}

/// [`kernel_format`] of an open kernel file (read from offset 0, the file
/// position is left alone); `path` only names it in errors.
pub(crate) fn kernel_format_of(file: &File, path: &Path) -> Result<KernelFormat, VmmError> {
    let mut head = [0u8; 0x210];
    let mut len = 0;
    while len < head.len() {
        match file.read_at(&mut head[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) => {
                return Err(VmmError::invalid(
                    "kernel",
                    format!("cannot read {}: {err}", path.display()),
                ))
            }
        }
    }
    let head = &head[..len];
    if head.len() >= 20 && head.starts_with(b"\x7fELF") {
        // EI_CLASS 2 = 64-bit, EI_DATA 1 = little endian, e_machine 62 = x86-64.
        if head[4] == 2 && head[5] == 1 && u16::from_le_bytes([head[18], head[19]]) == 62 {
            return Ok(KernelFormat::Elf);
        }
        return Err(VmmError::invalid(
            "kernel",
            format!(
                "{} is an ELF file but not a 64-bit x86 kernel",
                path.display()
            ),
        ));
    }
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" && head[0x1fe..0x200] == [0x55, 0xaa] {
        return Ok(KernelFormat::BzImage);
    }
    Err(VmmError::invalid(
        "kernel",
        format!(
            "{} is not a kernel (neither a 64-bit ELF nor a bzImage)",
            path.display()
        ),
    ))
}

/// MemAvailable from /proc/meminfo, in bytes.
pub(crate) fn host_available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
