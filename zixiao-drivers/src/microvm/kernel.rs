//! What a kernel and an initrd file really are, read without trusting
//! them: regular files only (a device, a FIFO or a directory is refused
//! before a byte is read), never empty, and only their headers are read.
//! A kernel is a bzImage or an x86-64 ELF, and says how much memory it
//! needs to start and how long a command line it takes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zixiao_core::DriverError;

use crate::errors::invalid;

const MIB: u64 = 1 << 20;
/// Where a loader puts a bzImage's protected-mode code when its header
/// names no preferred address (boot protocol before 2.10).
const DEFAULT_LOAD: u64 = MIB;
/// The command line of a kernel whose boot protocol predates the
/// `cmdline_size` field (2.06), not counting its NUL.
const OLD_CMDLINE_MAX: usize = 255;
/// x86's `COMMAND_LINE_SIZE` less the NUL: what an ELF kernel takes.
const ELF_CMDLINE_MAX: usize = 2047;
/// The most of an ELF's program headers that is read.
const MAX_PROGRAM_HEADERS: u64 = 64 * 1024;
/// The ELF note type of a PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`),
/// which QEMU needs to boot an uncompressed kernel.
const PVH_NOTE: u32 = 18;

/// A kernel image, as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelImage {
    pub(crate) format: KernelFormat,
    /// The lowest guest memory address its image and early use need,
    /// from 0: where it decompresses and runs until it sets itself up
    /// (`pref_address + init_size` of a bzImage, the end of an ELF's
    /// loaded segments). `None` when its headers do not say.
    pub(crate) end: Option<u64>,
    /// The longest command line it accepts, without the NUL.
    pub(crate) cmdline_max: usize,
    /// Whether an ELF kernel has a PVH entry point.
    pub(crate) pvh: bool,
}

/// A kernel image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelFormat {
    /// A Linux bzImage (`HdrS` setup header).
    BzImage,
    /// A 64-bit x86 ELF (`vmlinux`, zixiao-vmm's test guest).
    Elf,
}

impl KernelImage {
    /// Reads the kernel at `path`, named by `field`. Errors: `NotFound`
    /// naming `field` (no such file on this node); `InvalidArgument` on
    /// `field`: not a regular file, empty, unreadable, or not a kernel (an
    /// initrd given as the kernel is said so).
    pub(crate) fn read(path: &Path, field: &str) -> Result<KernelImage, DriverError> {
        let (mut file, len) = open_regular(path, field)?;
        let mut head = Vec::with_capacity(0x300);
        (&mut file)
            .take(0x300)
            .read_to_end(&mut head)
            .map_err(|e| unreadable(field, path, &e))?;
        if head.len() >= 0x206 && head[0x202..0x206] == *b"HdrS" {
            return Ok(bzimage(&head));
        }
        if head.starts_with(b"\x7fELF") {
            return elf(&mut file, &head, len, path, field);
        }
        let what = archive_kind(&head).map_or_else(
            || "neither a bzImage nor an x86-64 ELF kernel".to_owned(),
            |kind| format!("{kind}, not a kernel (an initrd given as the kernel?)"),
        );
        Err(invalid(field, format!("`{}` is {what}", path.display())))
    }

    /// The least guest memory, in MiB, the kernel needs to start with an
    /// initrd of `initrd_len` bytes (placed at the top of memory, clear
    /// of the kernel); `None` when its headers do not say.
    pub(crate) fn min_memory_mib(&self, initrd_len: u64) -> Option<u64> {
        self.end
            .map(|end| end.saturating_add(initrd_len).div_ceil(MIB))
    }
}

/// The size of the regular, non-empty file at `path` (an initrd), named
/// by `field`. Errors: as [`KernelImage::read`].
pub(crate) fn regular_len(path: &Path, field: &str) -> Result<u64, DriverError> {
    open_regular(path, field).map(|(_, len)| len)
}

/// Opens `path` without blocking (a FIFO opens at once) and checks that it
/// is a regular, non-empty file.
fn open_regular(path: &Path, field: &str) -> Result<(File, u64), DriverError> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                DriverError::NotFound(format!("{field} `{shown}` on this node"))
            }
            _ => invalid(field, format!("cannot open `{shown}`: {e}")),
        })?;
    let meta = file.metadata().map_err(|e| unreadable(field, path, &e))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = zixiao_core::files::kind_of(&kind);
        return Err(invalid(
            field,
            format!("`{shown}` is {what}, not a regular file"),
        ));
    }
    if meta.len() == 0 {
        return Err(invalid(field, format!("`{shown}` is empty")));
    }
    Ok((file, meta.len()))
}

fn unreadable(field: &str, path: &Path, e: &std::io::Error) -> DriverError {
    invalid(field, format!("cannot read `{}`: {e}", path.display()))
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).map_or(0, |b| {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    })
}

/// A bzImage from its setup header (Linux's boot protocol).
fn bzimage(head: &[u8]) -> KernelImage {
    let protocol = u16_at(head, 0x206);
    let cmdline_max = if protocol >= 0x206 {
        // `cmdline_size` excludes the NUL already.
        usize::try_from(u32_at(head, 0x238)).unwrap_or(OLD_CMDLINE_MAX)
    } else {
        OLD_CMDLINE_MAX
    };
    // From 2.10 the header says where the kernel runs and how much room it
    // needs there to decompress and set itself up.
    let end = (protocol >= 0x20a).then(|| {
        let preferred = u64_at(head, 0x258);
        let load = if preferred == 0 {
            DEFAULT_LOAD
        } else {
            preferred
        };
        load.saturating_add(u64::from(u32_at(head, 0x260)))
    });
    KernelImage {
        format: KernelFormat::BzImage,
        end,
        cmdline_max,
        pvh: false,
    }
}

/// A 64-bit x86 ELF: the end of its loaded segments, and whether it has a
/// PVH entry note.
fn elf(
    file: &mut File,
    head: &[u8],
    len: u64,
    path: &Path,
    field: &str,
) -> Result<KernelImage, DriverError> {
    // EI_CLASS 2 (64-bit), EI_DATA 1 (little endian), e_machine 62 (x86-64).
    if head.len() < 64 || head[4] != 2 || head[5] != 1 || u16_at(head, 18) != 62 {
        return Err(invalid(
            field,
            format!(
                "`{}` is an ELF file but not an x86-64 kernel",
                path.display()
            ),
        ));
    }
    let phoff = u64_at(head, 0x20);
    let phentsize = u64::from(u16_at(head, 0x36));
    let phnum = u64::from(u16_at(head, 0x38));
    let table = phentsize.saturating_mul(phnum);
    if phentsize < 56 || table > MAX_PROGRAM_HEADERS || phoff.saturating_add(table) > len {
        return Err(invalid(
            field,
            format!(
                "`{}` has a damaged ELF program header table",
                path.display()
            ),
        ));
    }
    let mut headers = vec![0u8; usize::try_from(table).unwrap_or(0)];
    file.seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut headers))
        .map_err(|e| unreadable(field, path, &e))?;
    let mut end = 0u64;
    let mut pvh = false;
    for header in headers.chunks(usize::try_from(phentsize).unwrap_or(56)) {
        match u32_at(header, 0) {
            // PT_LOAD: p_paddr + p_memsz.
            1 => end = end.max(u64_at(header, 24).saturating_add(u64_at(header, 40))),
            // PT_NOTE: p_offset, p_filesz.
            4 => pvh |= has_pvh_note(file, u64_at(header, 8), u64_at(header, 32), len),
            _ => {}
        }
    }
    Ok(KernelImage {
        format: KernelFormat::Elf,
        end: (end > 0).then_some(end),
        cmdline_max: ELF_CMDLINE_MAX,
        pvh,
    })
}

/// Whether the notes at `offset` (`size` bytes) hold Xen's PVH entry.
fn has_pvh_note(file: &mut File, offset: u64, size: u64, len: u64) -> bool {
    if size > MAX_PROGRAM_HEADERS || offset.saturating_add(size) > len {
        return false;
    }
    let mut notes = vec![0u8; usize::try_from(size).unwrap_or(0)];
    if file
        .seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut notes))
        .is_err()
    {
        return false;
    }
    let align4 = |n: usize| n.div_ceil(4) * 4;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let name_len = u32_at(&notes, at) as usize;
        let desc_len = u32_at(&notes, at + 4) as usize;
        let kind = u32_at(&notes, at + 8);
        let name = notes.get(at + 12..at + 12 + name_len).unwrap_or_default();
        if kind == PVH_NOTE && name.starts_with(b"Xen") {
            return true;
        }
        at += 12 + align4(name_len) + align4(desc_len);
    }
    false
}

/// What an archive (an initrd's usual shape) is, by its magic.
fn archive_kind(head: &[u8]) -> Option<&'static str> {
    let kinds: [(&[u8], &str); 7] = [
        (b"\x1f\x8b", "a gzip file"),
        (b"070701", "a cpio archive"),
        (b"070702", "a cpio archive"),
        (b"\xfd7zXZ\x00", "an xz file"),
        (b"\x28\xb5\x2f\xfd", "a zstd file"),
        (b"BZh", "a bzip2 file"),
        (b"\x02\x21\x4c\x18", "an lz4 file"),
    ];
    kinds
        .into_iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::ErrorKind;

    fn bz(protocol: u16, cmdline_size: u32, preferred: u64, init_size: u32) -> Vec<u8> {
        let mut image = vec![0u8; 0x400];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        image[0x238..0x23c].copy_from_slice(&cmdline_size.to_le_bytes());
        image[0x258..0x260].copy_from_slice(&preferred.to_le_bytes());
        image[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        image
    }

    #[test]
    fn a_bzimage_says_what_it_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bzImage");
        std::fs::write(&path, bz(0x20f, 2047, 16 * MIB, 51 * MIB as u32 + 1)).expect("write");
        let kernel = KernelImage::read(&path, "spec.kernel").expect("kernel");
        assert_eq!(kernel.format, KernelFormat::BzImage);
        assert_eq!(kernel.cmdline_max, 2047);
        // 16 MiB + 51 MiB and a byte, plus a 1 MiB initrd: 69 MiB.
        assert_eq!(kernel.min_memory_mib(MIB), Some(69));
        std::fs::write(&path, bz(0x204, 0, 0, 0)).expect("write");
        let old = KernelImage::read(&path, "spec.kernel").expect("old kernel");
        assert_eq!((old.cmdline_max, old.end), (255, None));
    }

    #[test]
    fn what_is_no_kernel_is_refused_naming_the_field_and_what_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").expect("write");
        let initrd = dir.path().join("initrd.gz");
        std::fs::write(&initrd, b"\x1f\x8b\x08\x00rest").expect("write");
        let loop_a = dir.path().join("a");
        std::os::unix::fs::symlink(dir.path().join("b"), &loop_a).expect("symlink");
        std::os::unix::fs::symlink(&loop_a, dir.path().join("b")).expect("symlink");
        let cases: [(&Path, &str); 5] = [
            (Path::new("/dev/null"), "is a character device"),
            (dir.path(), "is a directory"),
            (&empty, "is empty"),
            (&initrd, "a gzip file, not a kernel"),
            (&loop_a, "cannot open"),
        ];
        for (path, expected) in cases {
            let err = KernelImage::read(path, "spec.kernel").expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with("invalid spec.kernel:") && text.contains(expected),
                "{}: {text}",
                path.display()
            );
        }
        let missing =
            KernelImage::read(&dir.path().join("missing"), "spec.kernel").expect_err("missing");
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(
            missing.to_string().starts_with("spec.kernel `"),
            "{missing}"
        );
        assert!(regular_len(Path::new("/dev/null"), "spec.initrd")
            .expect_err("device")
            .to_string()
            .starts_with("invalid spec.initrd:"));
    }
}
