//! The cap on what one image layer unpacks to. A layer's compressed size is
//! bounded where it is read (an archive, a registry pull), but a gzip layer
//! of a few MiB can unpack to terabytes, and containerd would write them
//! all to the node's disk before anything noticed. So before containerd
//! unpacks a layer, the driver reads it through a gzip decoder, counting,
//! and refuses the image once the count passes the cap. An uncompressed tar
//! layer is its own size. Layers in other compressions (zstd) are left to
//! containerd: the build has no decoder for them.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use flate2::read::MultiGzDecoder;
use zixiao_core::DriverError;

use super::content::{Blob, Source};
use super::error::{invalid, io};

/// The default cap: more than any real image's largest layer, less than a
/// node's disk.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = crate::DEFAULT_MAX_LAYER_BYTES;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Checks that `blob` (an archive entry) unpacks to at most `max` bytes.
/// Blobs in memory (manifests and configs the driver wrote) are JSON and
/// pass. Errors: `ResourceExhausted` naming the cap, `InvalidArgument` on
/// `archive` (a gzip stream that does not decode), `Internal` (reading).
pub(crate) fn check(blob: &Blob, max: u64) -> Result<(), DriverError> {
    let Source::File { path, offset } = &blob.source else {
        return Ok(());
    };
    let read = |e: io::Error| io(format!("read {} from the archive", blob.digest), e);
    let mut file = File::open(path).map_err(read)?;
    file.seek(SeekFrom::Start(*offset)).map_err(read)?;
    let mut entry = BufReader::new(file.take(blob.size));
    let mut magic = [0u8; 2];
    let starts_gzip = blob.size >= 2 && {
        entry.read_exact(&mut magic).map_err(read)?;
        magic == GZIP_MAGIC
    };
    let unpacked = if starts_gzip {
        let mut counter = Counter { bytes: 0, max };
        let decoded = MultiGzDecoder::new(io::Cursor::new(magic).chain(entry));
        match io::copy(&mut { decoded }, &mut counter) {
            Ok(_) => counter.bytes,
            Err(_) if counter.bytes > max => counter.bytes,
            Err(e) => {
                return Err(invalid(
                    "archive",
                    format!("layer {} is not a valid gzip stream: {e}", blob.digest),
                ))
            }
        }
    } else {
        blob.size
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
}
