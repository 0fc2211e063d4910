//! What a file holds, read from its first bytes: the checks an import into
//! the node's image store makes before copying anything, so that a disk is
//! a qcow2 (without a backing or external data file, which would make the
//! node read another file) or a raw image, a kernel is a bzImage or an ELF
//! file, and an initrd is a cpio archive or a compressed one.

use std::fmt;

use zixiao_core::model::ImageKind;
use zixiao_core::DriverError;

use crate::errors::invalid;

/// How many leading bytes the checks read (a bzImage's setup header sits
/// at 0x202, a qcow2's header fields within the first 104 bytes).
pub(crate) const HEADER_BYTES: usize = 4096;

/// The format of an image's content, as the checks recognised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageFormat {
    /// A qcow2 disk without a backing file.
    Qcow2,
    /// A raw disk.
    Raw,
    /// A Linux bzImage kernel.
    BzImage,
    /// An ELF kernel (`vmlinux`).
    Elf,
    /// An uncompressed cpio (newc) archive.
    Cpio,
    /// A compressed initramfs, by its compressor.
    Compressed(Compressor),
}

/// The compressors the Linux kernel unpacks an initramfs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compressor {
    Gzip,
    Xz,
    Zstd,
    Lz4,
    Bzip2,
    Lzma,
    Lzo,
}

impl ImageFormat {
    /// The lowercase name shown in listings.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
            ImageFormat::BzImage => "bzimage",
            ImageFormat::Elf => "elf",
            ImageFormat::Cpio => "cpio",
            ImageFormat::Compressed(c) => match c {
                Compressor::Gzip => "gzip",
                Compressor::Xz => "xz",
                Compressor::Zstd => "zstd",
                Compressor::Lz4 => "lz4",
                Compressor::Bzip2 => "bzip2",
                Compressor::Lzma => "lzma",
                Compressor::Lzo => "lzo",
            },
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const QCOW_MAGIC: &[u8] = b"QFI\xfb";
/// qcow2 v3 incompatible feature bit 2: the guest data lives in another file.
const QCOW_EXTERNAL_DATA_FILE: u64 = 1 << 2;

/// Disk formats that are not qcow2 and must not pass for raw: QEMU would
/// open them as raw bytes, and the guest would see a container format.
const OTHER_DISK_FORMATS: &[(&[u8], &str)] = &[
    (b"QED\0", "QED"),
    (b"KDMV", "VMDK"),
    (b"# Disk DescriptorFile", "VMDK descriptor"),
    (b"vhdxfile", "VHDX"),
    (b"conectix", "VHD"),
    (b"LUKS\xba\xbe", "LUKS"),
];

const COMPRESSORS: &[(&[u8], Compressor)] = &[
    (b"\x1f\x8b", Compressor::Gzip),
    (b"\xfd7zXZ\0", Compressor::Xz),
    (b"\x28\xb5\x2f\xfd", Compressor::Zstd),
    (b"\x02\x21\x4c\x18", Compressor::Lz4),
    (b"\x04\x22\x4d\x18", Compressor::Lz4),
    (b"BZh", Compressor::Bzip2),
    (b"\x5d\x00\x00", Compressor::Lzma),
    (b"\x89LZO", Compressor::Lzo),
];

/// Checks that `header` (a file's first [`HEADER_BYTES`] bytes, fewer if
/// it is shorter) starts a file of `kind`, and says its format. Errors:
/// `InvalidArgument` on `file`, saying what the content is not.
pub(crate) fn check(kind: ImageKind, header: &[u8]) -> Result<ImageFormat, DriverError> {
    if header.is_empty() {
        return Err(invalid("file", format!("is empty, not a {kind} image")));
    }
    match kind {
        ImageKind::Disk => check_disk(header),
        ImageKind::Kernel => check_kernel(header),
        ImageKind::Initrd => check_initrd(header),
        ImageKind::Container => Err(invalid(
            "kind",
            "container images are imported from archives, not checked as files",
        )),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn check_disk(header: &[u8]) -> Result<ImageFormat, DriverError> {
    if header.starts_with(QCOW_MAGIC) {
        let truncated = || invalid("file", "is a truncated qcow2 header");
        let version = be_u32(header, 4).ok_or_else(truncated)?;
        if version != 2 && version != 3 {
            return Err(invalid(
                "file",
                format!("is qcow version {version}; only qcow2 versions 2 and 3 are taken"),
            ));
        }
        if be_u64(header, 8).ok_or_else(truncated)? != 0 {
            return Err(invalid(
                "file",
                "is a qcow2 image with a backing file; images must stand alone \
                 (flatten it first: `qemu-img convert -O qcow2 IN OUT`)",
            ));
        }
        if version == 3 && be_u64(header, 72).ok_or_else(truncated)? & QCOW_EXTERNAL_DATA_FILE != 0
        {
            return Err(invalid(
                "file",
                "is a qcow2 image with an external data file; images must stand alone",
            ));
        }
        return Ok(ImageFormat::Qcow2);
    }
    if let Some((_, name)) = OTHER_DISK_FORMATS
        .iter()
        .find(|(magic, _)| header.starts_with(magic))
    {
        return Err(invalid(
            "file",
            format!(
                "is a {name} disk; only qcow2 and raw disks are taken (convert it with qemu-img)"
            ),
        ));
    }
    // VDI keeps its signature at 0x40.
    if header.get(0x40..0x44) == Some(b"\x7f\x10\xda\xbe") {
        return Err(invalid(
            "file",
            "is a VDI disk; only qcow2 and raw disks are taken (convert it with qemu-img)",
        ));
    }
    Ok(ImageFormat::Raw)
}

fn check_kernel(header: &[u8]) -> Result<ImageFormat, DriverError> {
    if header.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(ImageFormat::BzImage);
    }
    if header.starts_with(b"\x7fELF") {
        return Ok(ImageFormat::Elf);
    }
    Err(invalid(
        "file",
        "is not a kernel: neither a bzImage (no `HdrS` setup header at 0x202) nor an ELF file",
    ))
}

fn check_initrd(header: &[u8]) -> Result<ImageFormat, DriverError> {
    if header.starts_with(b"070701") || header.starts_with(b"070702") {
        return Ok(ImageFormat::Cpio);
    }
    if let Some((_, c)) = COMPRESSORS
        .iter()
        .find(|(magic, _)| header.starts_with(magic))
    {
        return Ok(ImageFormat::Compressed(*c));
    }
    Err(invalid(
        "file",
        "is not an initrd: neither a cpio (newc) archive nor gzip, xz, zstd, lz4, bzip2, \
         lzma or lzo compressed",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2(version: u32, backing: u64, incompatible: u64) -> Vec<u8> {
        let mut h = vec![0u8; 112];
        h[..4].copy_from_slice(QCOW_MAGIC);
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[72..80].copy_from_slice(&incompatible.to_be_bytes());
        h
    }

    fn refused(kind: ImageKind, header: &[u8], reason: &str) {
        let err = check(kind, header).expect_err("refused");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains(reason), "{err}");
    }

    #[test]
    fn a_disk_is_a_standalone_qcow2_or_raw() {
        assert_eq!(
            check(ImageKind::Disk, &qcow2(3, 0, 0)).unwrap(),
            ImageFormat::Qcow2
        );
        assert_eq!(
            check(ImageKind::Disk, &qcow2(2, 0, 0)).unwrap(),
            ImageFormat::Qcow2
        );
        assert_eq!(
            check(ImageKind::Disk, &[0u8; 512]).unwrap(),
            ImageFormat::Raw
        );
        refused(ImageKind::Disk, &qcow2(3, 0x200, 0), "backing file");
        refused(
            ImageKind::Disk,
            &qcow2(3, 0, QCOW_EXTERNAL_DATA_FILE),
            "external data file",
        );
        refused(ImageKind::Disk, &qcow2(1, 0, 0), "qcow version 1");
        refused(ImageKind::Disk, QCOW_MAGIC, "truncated");
        refused(ImageKind::Disk, b"KDMV\x01\0\0\0", "VMDK");
        refused(ImageKind::Disk, b"", "empty");
    }

    #[test]
    fn a_kernel_is_a_bzimage_or_elf() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(check(ImageKind::Kernel, &bz).unwrap(), ImageFormat::BzImage);
        assert_eq!(
            check(ImageKind::Kernel, b"\x7fELF\x02\x01\x01").unwrap(),
            ImageFormat::Elf
        );
        refused(
            ImageKind::Kernel,
            b"#!/bin/sh\necho not a kernel\n",
            "is not a kernel",
        );
        refused(ImageKind::Kernel, &[0u8; 0x203], "is not a kernel");
    }

    #[test]
    fn an_initrd_is_a_cpio_or_compressed() {
        for (header, format) in [
            (&b"070701000000"[..], "cpio"),
            (b"\x1f\x8b\x08\0", "gzip"),
            (b"\xfd7zXZ\0\0", "xz"),
            (b"\x28\xb5\x2f\xfd\0", "zstd"),
            (b"\x02\x21\x4c\x18", "lz4"),
            (b"BZh91AY", "bzip2"),
        ] {
            assert_eq!(check(ImageKind::Initrd, header).unwrap().as_str(), format);
        }
        refused(ImageKind::Initrd, b"hello world", "is not an initrd");
    }
}
