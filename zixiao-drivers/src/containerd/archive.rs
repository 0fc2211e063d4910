//! Reading image archives (an OCI image layout tar, or a docker-archive tar
//! from `docker save`) in place: one pass records where each file lies, then
//! blobs are streamed from those offsets, so a large archive is never
//! unpacked to disk or held in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zixiao_core::DriverError;

use super::error::{invalid, io};

/// The largest JSON file (index, manifest, config) read into memory.
pub(crate) const MAX_JSON_BYTES: u64 = 8 * 1024 * 1024;

/// The most entries an image archive may have. An image layout holds a few
/// files per layer (an image has at most a few hundred layers); a tar of
/// millions of empty entries would otherwise grow the index without bound.
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// Where one file's bytes lie in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Offset of the first byte.
    pub(crate) offset: u64,
    /// Length in bytes.
    pub(crate) size: u64,
}

/// An indexed tar archive.
#[derive(Debug)]
pub(crate) struct Archive {
    path: PathBuf,
    len: u64,
    entries: HashMap<String, Entry>,
}

/// A name inside the archive without `./` or `/` in front.
fn clean(name: &str) -> String {
    let mut name = name;
    loop {
        if let Some(rest) = name.strip_prefix("./") {
            name = rest;
        } else if let Some(rest) = name.strip_prefix('/') {
            name = rest;
        } else {
            return name.to_owned();
        }
    }
}

/// `target` of a symlink at `link`, relative to the archive's root.
fn resolve_link(link: &str, target: &str) -> String {
    if let Some(absolute) = target.strip_prefix('/') {
        return clean(absolute);
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

impl Archive {
    /// Indexes the tar at `path`. Blocking: call it off the async runtime.
    /// Errors: `NotFound` (no such file), `InvalidArgument` (not a tar, compressed, truncated).
    pub(crate) fn open(path: &Path) -> Result<Archive, DriverError> {
        let shown = path.display();
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DriverError::NotFound(format!("image archive {shown}")))
            }
            Err(e) => return Err(io(format!("open image archive {shown}"), e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| io(format!("stat {shown}"), e))?;
        if !meta.is_file() {
            return Err(invalid("archive", format!("{shown} is not a regular file")));
        }
        let len = meta.len();
        let mut magic = [0u8; 2];
        if file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
            return Err(invalid(
                "archive",
                format!(
                    "{shown} is gzip-compressed; decompress it first (gunzip) and import the tar"
                ),
            ));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io(format!("read {shown}"), e))?;
        let not_tar = |e: std::io::Error| {
            invalid(
                "archive",
                format!("{shown} is not a valid tar archive: {e}"),
            )
        };
        let mut tar = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let mut links = Vec::new();
        for (count, entry) in tar.entries_with_seek().map_err(not_tar)?.enumerate() {
            if count >= MAX_ENTRIES {
                return Err(invalid(
                    "archive",
                    format!(
                        "{shown} has more than {MAX_ENTRIES} entries; an image archive has a few per layer"
                    ),
                ));
            }
            let entry = entry.map_err(not_tar)?;
            let name = clean(&entry.path().map_err(not_tar)?.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let found = Entry {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                };
                if found.offset.saturating_add(found.size) > len {
                    return Err(invalid(
                        "archive",
                        format!("{shown} is truncated inside `{name}`"),
                    ));
                }
                entries.insert(name, found);
            } else if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name().map_err(not_tar)? {
                    let target = target.to_string_lossy();
                    let target = if kind.is_hard_link() {
                        clean(&target)
                    } else {
                        resolve_link(&name, &target)
                    };
                    links.push((name, target));
                }
            }
        }
        // docker save links duplicate layers to one copy.
        for (name, target) in links {
            if let Some(found) = entries.get(&target).copied() {
                entries.insert(name, found);
            }
        }
        Ok(Archive {
            path: path.to_path_buf(),
            len,
            entries,
        })
    }

    /// The archive's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The archive's size in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Where `name` lies, if the archive has it.
    pub(crate) fn entry(&self, name: &str) -> Option<Entry> {
        self.entries.get(&clean(name)).copied()
    }

    /// Reads the small file `name` (JSON). Blocking.
    pub(crate) fn read(&self, name: &str) -> Result<Vec<u8>, DriverError> {
        let entry = self.entry(name).ok_or_else(|| {
            invalid(
                "archive",
                format!("{} has no `{name}`", self.path.display()),
            )
        })?;
        if entry.size > MAX_JSON_BYTES {
            return Err(invalid(
                "archive",
                format!(
                    "`{name}` in {} is {} bytes, too large for JSON",
                    self.path.display(),
                    entry.size
                ),
            ));
        }
        let mut file =
            File::open(&self.path).map_err(|e| io(format!("open {}", self.path.display()), e))?;
        file.seek(SeekFrom::Start(entry.offset))
            .map_err(|e| io(format!("read {}", self.path.display()), e))?;
        let mut data = Vec::with_capacity(entry.size as usize);
        file.take(entry.size)
            .read_to_end(&mut data)
            .map_err(|e| io(format!("read {}", self.path.display()), e))?;
        Ok(data)
    }

    /// The sha256 digest (`sha256:...`) of `entry` and whether it starts
    /// with gzip's magic. Blocking; reads the whole entry.
    pub(crate) fn digest(&self, entry: Entry) -> Result<(String, bool), DriverError> {
        let mut file =
            File::open(&self.path).map_err(|e| io(format!("open {}", self.path.display()), e))?;
        file.seek(SeekFrom::Start(entry.offset))
            .map_err(|e| io(format!("read {}", self.path.display()), e))?;
        let mut reader = file.take(entry.size);
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        let mut first = true;
        let mut gzip = false;
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(|e| io(format!("read {}", self.path.display()), e))?;
            if n == 0 {
                break;
            }
            if first {
                gzip = n >= 2 && buffer[0] == 0x1f && buffer[1] == 0x8b;
                first = false;
            }
            hasher.update(&buffer[..n]);
        }
        Ok((sha256_hex(hasher.finalize().as_slice()), gzip))
    }
}

/// `sha256:` and the lowercase hex of `digest`.
pub(crate) fn sha256_hex(digest: &[u8]) -> String {
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The sha256 digest of `data`.
pub(crate) fn sha256_of(data: &[u8]) -> String {
    sha256_hex(Sha256::digest(data).as_slice())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_and_links_resolve() {
        assert_eq!(clean("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean("/index.json"), "index.json");
        assert_eq!(resolve_link("a/layer.tar", "../b/layer.tar"), "b/layer.tar");
        assert_eq!(resolve_link("a/layer.tar", "/b/layer.tar"), "b/layer.tar");
    }

    #[test]
    fn an_archive_of_too_many_entries_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        for i in 0..=MAX_ENTRIES {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("f{i}"), std::io::empty())
                .unwrap();
        }
        builder.finish().unwrap();
        drop(builder);
        let err = Archive::open(&path).unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("more than 10000 entries"), "{err}");
    }

    /// One entry of a generated archive: a file with content, or a
    /// symbolic or hard link to a name that may not exist (or climb out).
    #[derive(Debug, Clone)]
    enum Generated {
        File(String, Vec<u8>),
        Symlink(String, String),
        HardLink(String, String),
    }

    fn entry_name() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "index.json",
            "oci-layout",
            "manifest.json",
            "blobs/sha256/aa",
            "./blobs/sha256/bb",
            "/abs/path",
            "../../etc/passwd",
            "a/../../b",
            "layer.tar",
            "x/layer.tar",
        ])
        .prop_map(str::to_owned)
    }

    fn generated() -> impl Strategy<Value = Generated> {
        prop_oneof![
            (entry_name(), prop::collection::vec(any::<u8>(), 0..600))
                .prop_map(|(name, data)| Generated::File(name, data)),
            (entry_name(), entry_name()).prop_map(|(name, to)| Generated::Symlink(name, to)),
            (entry_name(), entry_name()).prop_map(|(name, to)| Generated::HardLink(name, to)),
        ]
    }

    /// `entries` as a tar's bytes (names the tar crate would refuse to
    /// write are written raw into the header, as a hostile archive would).
    fn tar_of(entries: &[Generated]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            let (name, data, link): (&str, &[u8], Option<&str>) = match entry {
                Generated::File(name, data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    (name, data, None)
                }
                Generated::Symlink(name, to) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    (name, &[], Some(to))
                }
                Generated::HardLink(name, to) => {
                    header.set_entry_type(tar::EntryType::Link);
                    (name, &[], Some(to))
                }
            };
            header.set_size(data.len() as u64);
            let raw = header.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(to) = link {
                raw.linkname[..to.len()].copy_from_slice(to.as_bytes());
            }
            header.set_cksum();
            builder.append(&header, data).expect("append to memory");
        }
        builder.into_inner().expect("finish in memory")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(zixiao_testing::fuzz::cases(128)))]

        /// A damaged or hostile archive is refused with `InvalidArgument`,
        /// or indexed with every entry inside the file and readable.
        #[test]
        fn a_damaged_archive_is_refused_or_indexed_inside_the_file(
            entries in prop::collection::vec(generated(), 0..8),
            hit in zixiao_testing::fuzz::damage(8),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("image.tar");
            std::fs::write(&path, hit.apply(tar_of(&entries))).expect("write the archive");
            match Archive::open(&path) {
                Err(e) => prop_assert_eq!(e.kind(), zixiao_core::ErrorKind::InvalidArgument, "{}", e),
                Ok(archive) => {
                    for (name, entry) in &archive.entries {
                        prop_assert!(
                            entry.offset + entry.size <= archive.len(),
                            "{name} at {entry:?} beyond {}", archive.len()
                        );
                        prop_assert!(!name.starts_with('/') && !name.starts_with("./"), "{name}");
                        let read = archive.read(name).expect("an indexed entry reads");
                        prop_assert_eq!(read.len() as u64, entry.size);
                    }
                }
            }
        }
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            sha256_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
