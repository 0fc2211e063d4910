//! The cap on what one image layer unpacks to. A layer's compressed size is
//! bounded where it is read (an archive, a registry pull), but a gzip layer
//! of a few MiB can unpack to terabytes, and containerd would write them
//! all to the node's disk before anything noticed. So before containerd
//! unpacks a layer, the driver reads it through a decoder, counting, and
//! refuses the image once the count passes the cap. The decoder is the one
//! containerd would pick, by the same magic numbers: gzip, or zstd (every
//! frame, skippable frames skipped, as containerd's decoder reads them). An
//! uncompressed tar layer is its own size.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};

use flate2::read::MultiGzDecoder;
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{FrameDecoder, StreamingDecoder};
use zixiao_core::DriverError;

use super::content::{Blob, Source};
use super::error::{invalid, io};

/// The default cap: more than any real image's largest layer, less than a
/// node's disk.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = crate::DEFAULT_MAX_LAYER_BYTES;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// A zstd frame's magic number, 0xFD2FB528 little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a layer is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    fn of(head: &[u8]) -> Self {
        // Skippable frames (0x184D2A50..=0x184D2A5F) may open a zstd stream.
        let skippable =
            |h: &[u8]| h.len() >= 4 && h[0] & 0xf0 == 0x50 && h[1..4] == [0x2a, 0x4d, 0x18];
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) || skippable(head) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Checks that `blob` (an archive entry) unpacks to at most `max` bytes.
/// Blobs in memory (manifests and configs the driver wrote) are JSON and
/// pass. Errors: `ResourceExhausted` naming the cap, `InvalidArgument` on
/// `archive` (a gzip or zstd stream that does not decode), `Internal`
/// (reading).
pub(crate) fn check(blob: &Blob, max: u64) -> Result<(), DriverError> {
    let Source::File { path, offset } = &blob.source else {
        return Ok(());
    };
    let read = |e: io::Error| io(format!("read {} from the archive", blob.digest), e);
    let mut file = File::open(path).map_err(read)?;
    file.seek(SeekFrom::Start(*offset)).map_err(read)?;
    let mut entry = BufReader::new(file.take(blob.size));
    let mut head = [0u8; 4];
    let head_len = (blob.size as usize).min(head.len());
    entry.read_exact(&mut head[..head_len]).map_err(read)?;
    let head = &head[..head_len];
    let compression = Compression::of(head);
    let unpacked = if compression == Compression::None {
        blob.size
    } else {
        let mut counter = Counter { bytes: 0, max };
        let stream = io::Cursor::new(head.to_vec()).chain(entry);
        let decoded = match compression {
            Compression::Gzip => io::copy(&mut MultiGzDecoder::new(stream), &mut counter).map(drop),
            _ => unzstd(BufReader::new(stream), &mut counter),
        };
        match decoded {
            Ok(()) => counter.bytes,
            Err(_) if counter.bytes > max => counter.bytes,
            Err(e) => {
                let name = if compression == Compression::Gzip {
                    "gzip"
                } else {
                    "zstd"
                };
                return Err(invalid(
                    "archive",
                    format!("layer {} is not a valid {name} stream: {e}", blob.digest),
                ));
            }
        }
    };
    if unpacked > max {
        return Err(DriverError::ResourceExhausted(format!(
            "layer {} unpacks to more than {}, this node's cap on one layer \
             (max_layer_bytes); nothing of the image was kept",
            blob.digest,
            human(max)
        )));
    }
    Ok(())
}

/// Decodes the zstd stream `source` into `sink`: every frame in turn,
/// skippable frames skipped wherever they stand, up to the end of the
/// source. Bytes that are not a frame are an error.
fn unzstd(mut source: impl BufRead, sink: &mut impl Write) -> io::Result<()> {
    let mut frames = FrameDecoder::new();
    while !source.fill_buf()?.is_empty() {
        match StreamingDecoder::new_with_decoder(&mut source, &mut frames) {
            Ok(mut frame) => {
                io::copy(&mut frame, sink)?;
            }
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                let length = u64::from(length);
                let skipped = io::copy(&mut (&mut source).take(length), &mut io::sink())?;
                if skipped < length {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a skippable frame is cut short",
                    ));
                }
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
    Ok(())
}

/// `bytes` for people: whole GiB or MiB where exact, else bytes.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

/// A sink that counts what is written and fails once it passes `max`, so
/// a bomb is stopped a little past the cap, never decoded to its end.
struct Counter {
    bytes: u64,
    max: u64,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len() as u64;
        if self.bytes > self.max {
            return Err(io::Error::other("over the cap"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::collections::HashMap;

    fn blob_of(dir: &tempfile::TempDir, data: &[u8]) -> Blob {
        let path = dir.path().join("archive");
        // The entry sits after other bytes, as in a tar.
        let mut file = b"leading bytes".to_vec();
        file.extend_from_slice(data);
        std::fs::write(&path, file).expect("write");
        Blob {
            digest: "sha256:test".into(),
            size: data.len() as u64,
            source: Source::File { path, offset: 13 },
            labels: HashMap::new(),
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).expect("gzip");
        encoder.finish().expect("gzip")
    }

    #[test]
    fn gzip_layers_are_measured_unpacked_and_plain_ones_as_they_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert!(bomb.len() < 64 << 10, "{} compressed bytes", bomb.len());
        check(&blob_of(&dir, &bomb), 4 << 20).expect("exactly at the cap");
        let err = check(&blob_of(&dir, &bomb), 1 << 20).expect_err("over the cap");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::ResourceExhausted);
        assert!(err.to_string().contains("more than 1 MiB"), "{err}");
        let plain = vec![7u8; 3 << 20];
        check(&blob_of(&dir, &plain), 3 << 20).expect("plain at the cap");
        assert!(check(&blob_of(&dir, &plain), 2 << 20).is_err());
        let mut broken = gzip(b"some layer");
        broken.truncate(broken.len() - 4);
        let err = check(&blob_of(&dir, &broken), 1 << 20).expect_err("broken gzip");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{err}");
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// A skippable frame of `len` bytes, magic 0x184D2A53.
    fn skippable(len: u32) -> Vec<u8> {
        let mut frame = vec![0x53, 0x2a, 0x4d, 0x18];
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend(std::iter::repeat_n(9u8, len as usize));
        frame
    }

    #[test]
    fn zstd_layers_are_measured_unpacked_across_every_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bomb = zstd(&vec![0u8; 4 << 20]);
        assert!(bomb.len() < 64 << 10, "{} compressed bytes", bomb.len());
        check(&blob_of(&dir, &bomb), 4 << 20).expect("exactly at the cap");
        let err = check(&blob_of(&dir, &bomb), 1 << 20).expect_err("over the cap");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::ResourceExhausted);
        assert!(err.to_string().contains("more than 1 MiB"), "{err}");

        // Frames after the first, and skippable frames anywhere (the first
        // included), count: a decoder that stopped at the first frame would
        // let a bomb through behind a small one.
        let half = zstd(&vec![0u8; 2 << 20]);
        let mut stream = skippable(16);
        stream.extend_from_slice(&half);
        stream.extend(skippable(0));
        stream.extend_from_slice(&half);
        check(&blob_of(&dir, &stream), 4 << 20).expect("both frames fit");
        let err = check(&blob_of(&dir, &stream), 3 << 20).expect_err("two frames over the cap");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::ResourceExhausted);

        let mut broken = zstd(b"some layer");
        broken.truncate(broken.len() - 3);
        let err = check(&blob_of(&dir, &broken), 1 << 20).expect_err("broken zstd");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("not a valid zstd stream"), "{err}");
        let mut trailing = zstd(b"some layer");
        trailing.extend_from_slice(b"not a frame");
        let err = check(&blob_of(&dir, &trailing), 1 << 20).expect_err("trailing bytes");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{err}");
        let mut cut = skippable(100);
        cut.truncate(50);
        let err = check(&blob_of(&dir, &cut), 1 << 20).expect_err("cut skippable frame");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{err}");
    }
}
