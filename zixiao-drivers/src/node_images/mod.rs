//! The node's image store: the disks, kernels and initrds its VMs and
//! microVMs boot, kept as files named by their content's sha256 under
//! `<state_dir>/images/<kind>/<hex digest>`, with an index
//! (`<state_dir>/images/index.json`) from each image's name to its kind,
//! digest, format, size and import time. The vm and microvm drivers share
//! one store per state directory and resolve a spec's image names through
//! it ([`NodeImageStore::resolve`]).
//!
//! An import opens its source as a regular file only (`O_NOFOLLOW`),
//! checks its content ([`content`]), copies it into a temporary file while
//! hashing it, and renames it into place before the index names it: a
//! crash part-way leaves at most an unnamed temporary file, which nothing
//! lists or boots. A pull ([`Images::pull`] here) streams an OCI artifact's
//! one file into a `pull-*` directory under `<state_dir>/images/tmp`, its
//! digest verified as it comes (zixiao-registry), then makes the same
//! content check and the same rename: a pull killed half way leaves only
//! such a directory, which nothing names, lists or boots, and a later pull
//! starts afresh. The index is rewritten whole (temporary file, rename)
//! under an exclusive `flock`, so two drivers or processes never lose each
//! other's entries.

mod content;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zixiao_core::driver::{ImageInfo, Images, ImportProgress, PullOptions, PullProgress};
use zixiao_core::model::{ImageKind, ImageName, ImageRef, NodeFile, NodeImageName, PullPolicy};
use zixiao_core::DriverError;

use crate::errors::{at_field, invalid, io};
use content::HEADER_BYTES;

/// The largest disk an import takes.
pub const MAX_DISK_BYTES: u64 = 256 << 30;
/// The largest kernel an import takes.
pub const MAX_KERNEL_BYTES: u64 = 256 << 20;
/// The largest initrd an import takes.
pub const MAX_INITRD_BYTES: u64 = 4 << 30;

/// One entry of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    kind: ImageKind,
    /// The content's sha256, in hex.
    sha256: String,
    size: u64,
    format: String,
    created: DateTime<Utc>,
}

type Index = BTreeMap<NodeImageName, Entry>;

/// A node's image store, rooted at `<state_dir>/images`. Cheap to make: it
/// touches the disk only when used.
#[derive(Debug, Clone)]
pub struct NodeImageStore {
    root: PathBuf,
}

/// The index's lock, held (an exclusive `flock`) while it lives.
struct Locked {
    _file: File,
}

impl NodeImageStore {
    /// The store of the drivers whose files live under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        NodeImageStore {
            root: state_dir.join("images"),
        }
    }

    /// Where the store keeps its files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn file_path(&self, kind: ImageKind, sha256: &str) -> PathBuf {
        self.root.join(kind.as_str()).join(sha256)
    }

    fn lock(&self) -> Result<Locked, DriverError> {
        make_dir(&self.root)?;
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(format!("open {}", path.display()), e))?;
        use std::os::fd::AsRawFd;
        // SAFETY: `file` owns a valid descriptor for the call's duration;
        // flock has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(
                format!("lock {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Locked { _file: file })
    }

    fn read_index(&self) -> Result<Index, DriverError> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DriverError::Runtime {
                operation: format!("read the image index {}", path.display()),
                source: Box::new(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::new()),
            Err(e) => Err(io(format!("read {}", path.display()), e)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), DriverError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| DriverError::Runtime {
            operation: "encode the image index".to_owned(),
            source: Box::new(e),
        })?;
        let temp = self.root.join(format!(".index.{}", uuid::Uuid::new_v4()));
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &path)
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&temp);
            io(format!("write {}", path.display()), e)
        })
    }

    /// Copies `file` into the store as image `name` of `kind`, after
    /// checking that its content is one (see the module's doc). Importing
    /// the same content under the same name again changes nothing.
    /// Errors: `NotFound` (no such file), `InvalidArgument` (not a regular
    /// file, too large, or not a `kind` image, saying why), `AlreadyExists`
    /// (`name` holds other content), `Runtime` (the store's disk failed).
    pub fn import(
        &self,
        file: &Path,
        name: &NodeImageName,
        kind: ImageKind,
    ) -> Result<ImageInfo, DriverError> {
        let (mut source, size) = open_source(file, kind)?;
        let mut header = Vec::with_capacity(HEADER_BYTES);
        (&mut source)
            .take(HEADER_BYTES as u64)
            .read_to_end(&mut header)
            .map_err(|e| io(format!("read {}", file.display()), e))?;
        let format = content::check(kind, &header)?;
        let temp_dir = self.temp_dir()?;
        let temp = temp_dir.join(uuid::Uuid::new_v4().to_string());
        let copied = copy_hashing(&header, &mut source, &temp, size);
        let sha256 = match copied {
            Ok(sha256) => sha256,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(io(
                    format!("copy {} into the image store", file.display()),
                    e,
                ));
            }
        };
        self.install(&temp, sha256, size, format, name, kind)
    }

    /// The store's directory of files on their way in (imports' copies,
    /// pulls' downloads), on the store's filesystem so they can be renamed
    /// into place.
    pub fn temp_dir(&self) -> Result<PathBuf, DriverError> {
        let dir = self.root.join("tmp");
        make_dir(&dir)?;
        Ok(dir)
    }

    /// Takes `file`, a pulled artifact's file under [`Self::temp_dir`] whose
    /// content hashes to `sha256` (hex; the pull verified it as it
    /// streamed), into the store as image `name` of `kind` after the same
    /// content check as [`Self::import`], by renaming it. Errors: those of
    /// [`Self::import`]; on failure `file` is removed.
    pub fn adopt(
        &self,
        file: &Path,
        sha256: &str,
        name: &NodeImageName,
        kind: ImageKind,
    ) -> Result<ImageInfo, DriverError> {
        let checked = (|| {
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "digest",
                    format!("`{sha256}` is not a sha256 in hex"),
                ));
            }
            let (source, size) = open_source(file, kind)?;
            let mut header = Vec::with_capacity(HEADER_BYTES);
            source
                .take(HEADER_BYTES as u64)
                .read_to_end(&mut header)
                .map_err(|e| io(format!("read {}", file.display()), e))?;
            Ok((content::check(kind, &header)?, size))
        })();
        match checked {
            Ok((format, size)) => self.install(file, sha256.to_owned(), size, format, name, kind),
            Err(e) => {
                let _ = fs::remove_file(file);
                Err(e)
            }
        }
    }

    /// [`Self::adopt`] for a pull under the `always` policy: `file`, pulled
    /// from `reference`, becomes the content of the reference's name even
    /// when that name held other content (a tag that moved). The old
    /// content is not dropped, since instances may boot from it: it stays
    /// listed as `REPOSITORY-sha256-HEX` (the last part of the repository,
    /// the first 12 hex digits of the digest `image list` shows for it),
    /// for `image rm` once nothing uses it. The name is free for the
    /// moment between the two index writes (the lock is not reentrant).
    /// Errors: those of [`Self::adopt`].
    pub fn adopt_replacing(
        &self,
        file: &Path,
        sha256: &str,
        reference: &ImageRef,
        kind: ImageKind,
    ) -> Result<ImageInfo, DriverError> {
        let name = NodeImageName::for_reference(reference);
        let moved = {
            let _lock = self.lock()?;
            let mut index = self.read_index()?;
            let moved = index
                .get(&name)
                .is_some_and(|held| held.sha256 != sha256 || held.kind != kind);
            match index.remove(&name).filter(|_| moved) {
                Some(old) => {
                    let pinned = ImageRef::try_from(
                        format!(
                            "{}/{}@sha256:{}",
                            reference.registry(),
                            reference.repository(),
                            old.sha256
                        )
                        .as_str(),
                    )
                    .map(|r| NodeImageName::for_reference(&r));
                    if let Ok(pinned) = pinned {
                        index.entry(pinned).or_insert_with(|| old.clone());
                    }
                    self.write_index(&index)?;
                    Some(old)
                }
                _ => None,
            }
        };
        if let Some(old) = &moved {
            tracing::info!(image = %name, old = %old.sha256, new = %sha256,
                "the pulled tag moved; the old content keeps its digest's name");
        }
        self.adopt(file, sha256, &name, kind)
    }

    /// Renames `temp` (checked content of `kind`, `size` bytes hashing to
    /// `sha256`) into place and names it `name` in the index, under the
    /// index's lock; the same content under the same name is no change.
    /// `temp` is gone afterwards either way.
    fn install(
        &self,
        temp: &Path,
        sha256: String,
        size: u64,
        format: content::ImageFormat,
        name: &NodeImageName,
        kind: ImageKind,
    ) -> Result<ImageInfo, DriverError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        if let Some(held) = index.get(name) {
            let _ = fs::remove_file(temp);
            if held.kind == kind && held.sha256 == sha256 {
                return Ok(info(name, held));
            }
            return Err(DriverError::AlreadyExists(format!(
                "image `{name}` exists already (a {} image, sha256:{}); remove it first or \
                 choose another name",
                held.kind, held.sha256
            )));
        }
        let target = self.file_path(kind, &sha256);
        make_dir(target.parent().unwrap_or(&self.root))?;
        fs::rename(temp, &target).map_err(|e| {
            let _ = fs::remove_file(temp);
            io(format!("store {}", target.display()), e)
        })?;
        let entry = Entry {
            kind,
            sha256,
            size,
            format: format.as_str().to_owned(),
            created: Utc::now(),
        };
        index.insert(name.clone(), entry.clone());
        if let Err(e) = self.write_index(&index) {
            index.remove(name);
            self.remove_unused(&index, kind, &entry.sha256);
            return Err(e);
        }
        tracing::info!(image = %name, %kind, digest = %entry.sha256, size, "stored node image");
        Ok(info(name, &entry))
    }

    /// Every image of the index whose file is in place, by name.
    pub fn list(&self) -> Result<Vec<ImageInfo>, DriverError> {
        let index = self.read_index()?;
        Ok(index
            .iter()
            .filter(|(_, e)| self.file_path(e.kind, &e.sha256).is_file())
            .map(|(name, e)| info(name, e))
            .collect())
    }

    /// Removes image `name` from the index, and its file when no other
    /// name holds the same content. Errors: `NotFound`, `InvalidArgument`
    /// (not an image name), `Runtime`. The callers check first that no
    /// instance uses it.
    pub fn remove(&self, name: &str) -> Result<(), DriverError> {
        let name = NodeImageName::try_from(name).map_err(|e| invalid("name", e.to_string()))?;
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let Some(entry) = index.remove(&name) else {
            return Err(DriverError::NotFound(format!("image `{name}`")));
        };
        self.write_index(&index)?;
        self.remove_unused(&index, entry.kind, &entry.sha256);
        Ok(())
    }

    fn remove_unused(&self, index: &Index, kind: ImageKind, sha256: &str) {
        if !index.values().any(|e| e.kind == kind && e.sha256 == sha256) {
            let _ = fs::remove_file(self.file_path(kind, sha256));
        }
    }

    /// The file spec field `field` names with `value`: a host path as it
    /// is (the edges that take specs from the network refuse those; see
    /// `zixiao_core::model::refuse_host_paths`), an image name as the
    /// store's file of that image, which must be of `kind`, a registry
    /// reference as the file of the image it was pulled as
    /// ([`NodeImageStore::pull_for`] pulls it first). Errors:
    /// `InvalidArgument` (neither a name, a reference nor an absolute
    /// path), `NotFound` naming `field` (no image of that name and kind on
    /// this node).
    pub fn resolve(
        &self,
        field: &str,
        kind: ImageKind,
        value: &Path,
    ) -> Result<PathBuf, DriverError> {
        let file = NodeFile::parse(field, value).map_err(|e| invalid(field, e.to_string()))?;
        let name = match &file {
            NodeFile::HostPath(path) => return Ok(path.clone()),
            NodeFile::Image(name) => name.clone(),
            NodeFile::Reference(reference) => NodeImageName::for_reference(reference),
        };
        let index = self.read_index()?;
        let missing = || match &file {
            NodeFile::Reference(reference) => DriverError::NotFound(format!(
                "{field}: {kind} image `{name}` (pulled from `{reference}`) in this node's \
                 image store (pull it with `zixiao image pull {reference} --kind {kind}`)"
            )),
            _ => DriverError::NotFound(format!(
                "{field}: {kind} image `{name}` in this node's image store (import it with \
                 `zixiao image import FILE --name {name} --kind {kind}`)"
            )),
        };
        let entry = index
            .get(&name)
            .filter(|e| e.kind == kind)
            .ok_or_else(missing)?;
        let path = self.file_path(kind, &entry.sha256);
        if !path.is_file() {
            return Err(missing());
        }
        Ok(path)
    }
}

impl NodeImageStore {
    /// Pulls the registry artifacts `spec` names (its disk, kernel,
    /// initrd) as its pull policy says, each as the kind its field takes,
    /// with `options` (anonymous, HTTPS except to loopback, by default):
    /// under `missing` only those the store does not hold under the
    /// reference's name; under `always` every one, a moved tag's new
    /// content replacing the old under that name (see
    /// [`NodeImageStore::adopt`]); under `never` none. Called by the vm
    /// and microvm drivers before they create, so the node an instance
    /// lands on pulls what it boots. Errors: those of [`Images::pull`],
    /// naming the field; `FailedPrecondition` naming the field and the
    /// reference under `never` when the store lacks it, before anything
    /// is pulled.
    pub async fn pull_for(
        &self,
        spec: &zixiao_core::InstanceSpec,
        options: &PullOptions,
    ) -> Result<(), DriverError> {
        let mut wanted = Vec::new();
        for zixiao_core::model::SpecFile { field, kind, value } in
            zixiao_core::model::node_files(spec)
        {
            let Ok(NodeFile::Reference(reference)) = NodeFile::parse(&field, value) else {
                continue;
            };
            let held = {
                let store = self.clone();
                let value = value.to_owned();
                let field = field.clone();
                blocking(move || Ok(store.resolve(&field, kind, &value).is_ok())).await?
            };
            // Every field is checked before the first pull, so `never`
            // refuses a spec without having pulled any of it.
            if spec.pull.wants_pull(held, &field, &reference.to_string())? {
                wanted.push((field, kind, reference));
            }
        }
        for (field, kind, reference) in wanted {
            let options = PullOptions {
                kind: Some(kind),
                ..options.clone()
            };
            tracing::info!(%reference, %kind, policy = %spec.pull, "pulling a node image");
            let replace = spec.pull == PullPolicy::Always;
            self.pull_as(&reference, &options, &|_| {}, replace)
                .await
                .map_err(|e| at_field(&field, e))?;
        }
        Ok(())
    }

    /// [`Images::pull`], with `replace` as for [`NodeImageStore::adopt`].
    async fn pull_as(
        &self,
        reference: &ImageRef,
        options: &PullOptions,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
        replace: bool,
    ) -> Result<ImageInfo, DriverError> {
        if options.kind == Some(ImageKind::Container) {
            return Err(invalid(
                "kind",
                format!(
                    "`{reference}`: container images go to the container runtime, not the \
                     node's image store of disks, kernels and initrds"
                ),
            ));
        }
        let name = NodeImageName::for_reference(reference);
        let work_dir = {
            let store = self.clone();
            blocking(move || store.temp_dir()).await?
        };
        let pulled = zixiao_registry::pull_artifact(
            reference,
            options,
            options.kind,
            &max_bytes,
            &work_dir,
            progress,
        )
        .await
        .map_err(crate::errors::registry)?;
        progress(PullProgress::Unpacking);
        let sha256 = pulled
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&pulled.digest)
            .to_owned();
        let store = self.clone();
        let reference = reference.clone();
        blocking(move || {
            let kind = pulled.kind;
            let stored = if replace {
                store.adopt_replacing(pulled.file(), &sha256, &reference, kind)
            } else {
                store.adopt(pulled.file(), &sha256, &name, kind)
            };
            // Best effort: the directory is temporary, and dropping removes it too.
            let _ = pulled.close();
            stored
        })
        .await
    }
}

/// The smallest disk a guest can use: one 512-byte sector.
const SECTOR_BYTES: u64 = 512;

/// Checks that `path`, the file spec field `field` resolved to, holds a
/// raw disk a microVM can use as it is: a regular file (not a symbolic
/// link), of at least one 512-byte sector, whose content is not qcow2 or
/// another disk format (the VMM reads the bytes as the guest's disk);
/// returns its size in bytes. Reads its first 4 KiB. Errors: `NotFound`
/// naming `field` (no such file), `InvalidArgument` naming `field`,
/// saying what is wrong.
pub fn check_raw_disk(field: &str, path: &Path) -> Result<u64, DriverError> {
    let (source, size) = open_source(path, ImageKind::Disk).map_err(|e| at_field(field, e))?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    source
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut header)
        .map_err(|e| invalid(field, format!("cannot read `{}`: {e}", path.display())))?;
    let format = content::check(ImageKind::Disk, &header).map_err(|e| at_field(field, e))?;
    if format != content::ImageFormat::Raw {
        return Err(invalid(
            field,
            format!(
                "`{}` is a {format} disk; a microVM takes raw disks only (convert it: \
                 `qemu-img convert -O raw IN OUT`)",
                path.display()
            ),
        ));
    }
    if size < SECTOR_BYTES {
        return Err(invalid(
            field,
            format!(
                "`{}` is {size} bytes, less than one {SECTOR_BYTES}-byte sector",
                path.display()
            ),
        ));
    }
    Ok(size)
}

fn info(name: &NodeImageName, entry: &Entry) -> ImageInfo {
    ImageInfo {
        name: name.to_string(),
        digest: format!("sha256:{}", entry.sha256),
        size_bytes: entry.size,
        kind: entry.kind,
        format: entry.format.clone(),
        created_at: Some(entry.created),
    }
}

fn make_dir(dir: &Path) -> Result<(), DriverError> {
    fs::create_dir_all(dir).map_err(|e| io(format!("create {}", dir.display()), e))?;
    // QEMU, which libvirt may run as another user, reads the images.
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    Ok(())
}

/// The largest image of `kind` the store takes.
fn max_bytes(kind: ImageKind) -> u64 {
    match kind {
        ImageKind::Kernel => MAX_KERNEL_BYTES,
        ImageKind::Initrd => MAX_INITRD_BYTES,
        ImageKind::Disk | ImageKind::Container => MAX_DISK_BYTES,
    }
}

/// Opens `file` for reading as a regular file, not following a symbolic
/// link at its end, with its size checked against `kind`'s cap.
fn open_source(file: &Path, kind: ImageKind) -> Result<(File, u64), DriverError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
    let source = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(file)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                DriverError::NotFound(format!("file `{}`", file.display()))
            }
            _ if e.raw_os_error() == Some(libc::ELOOP) => invalid(
                "file",
                format!(
                    "`{}` is a symbolic link; name the file itself",
                    file.display()
                ),
            ),
            _ => invalid("file", format!("cannot open `{}`: {e}", file.display())),
        })?;
    let meta = source
        .metadata()
        .map_err(|e| io(format!("stat {}", file.display()), e))?;
    if !meta.file_type().is_file() {
        return Err(invalid(
            "file",
            format!("`{}` is not a regular file", file.display()),
        ));
    }
    let cap = max_bytes(kind);
    if meta.len() > cap {
        return Err(invalid(
            "file",
            format!(
                "`{}` is {} bytes; a {kind} image may be at most {cap} bytes",
                file.display(),
                meta.len()
            ),
        ));
    }
    Ok((source, meta.len()))
}

/// Writes `header` then the rest of `source` to a new file `temp`, synced,
/// and returns the sha256 of what it wrote (hex). Refuses a source that
/// grew or shrank from `size` while it was read.
fn copy_hashing(
    header: &[u8],
    source: &mut File,
    temp: &Path,
    size: u64,
) -> std::io::Result<String> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp)?;
    let mut hash = Sha256::new();
    hash.update(header);
    out.write_all(header)?;
    let mut copied = header.len() as u64;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > size {
            break;
        }
        hash.update(&buffer[..n]);
        out.write_all(&buffer[..n])?;
    }
    if copied != size {
        return Err(std::io::Error::other(
            "the file changed size while it was copied",
        ));
    }
    out.sync_all()?;
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The store as a driver's [`Images`] capability: the vm and microvm
/// drivers each answer with their node's store.
#[async_trait]
impl Images for NodeImageStore {
    /// Archives of container images are the container runtime's.
    async fn import(
        &self,
        archive: &Path,
        _name: Option<&ImageName>,
        _progress: &(dyn Fn(ImportProgress) + Send + Sync),
    ) -> Result<Vec<ImageInfo>, DriverError> {
        Err(DriverError::Unsupported(format!(
            "`{}`: the node's image store takes disk, kernel and initrd files, one at a time \
             (`--kind disk|kernel|initrd`), not container archives",
            archive.display()
        )))
    }

    /// Pulls a disk, kernel or initrd OCI artifact (zixiao-registry's
    /// media types) into the store under the name its reference gives
    /// ([`NodeImageName::for_reference`]), its kind from its media types
    /// (which must say `options.kind` when given). Pulled again, the same
    /// content is no change; other content under that name (a moved tag)
    /// is `AlreadyExists`, as for an import, since instances may boot from
    /// the file it names: remove the image first.
    async fn pull(
        &self,
        reference: &ImageRef,
        options: &PullOptions,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<ImageInfo, DriverError> {
        self.pull_as(reference, options, progress, false).await
    }

    async fn import_file(
        &self,
        file: &Path,
        name: &NodeImageName,
        kind: ImageKind,
    ) -> Result<ImageInfo, DriverError> {
        let (store, file, name) = (self.clone(), file.to_owned(), name.clone());
        blocking(move || store.import(&file, &name, kind)).await
    }

    async fn list(&self) -> Result<Vec<ImageInfo>, DriverError> {
        let store = self.clone();
        blocking(move || store.list()).await
    }

    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        let (store, name) = (self.clone(), name.to_owned());
        blocking(move || store.remove(&name)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DriverError::Runtime {
            operation: "the image store's work".to_owned(),
            source: Box::new(e),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> NodeImageName {
        NodeImageName::try_from(n).unwrap()
    }

    fn elf(dir: &Path, file: &str, body: &[u8]) -> PathBuf {
        let path = dir.join(file);
        let mut bytes = b"\x7fELF\x02\x01\x01\0".to_vec();
        bytes.extend_from_slice(body);
        fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn an_import_is_listed_resolved_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeImageStore::new(&dir.path().join("state"));
        let kernel = elf(dir.path(), "vmlinux", b"kernel");
        let image = store
            .import(&kernel, &name("k1"), ImageKind::Kernel)
            .unwrap();
        assert_eq!(image.kind, ImageKind::Kernel);
        assert_eq!(image.format, "elf");
        assert_eq!(image.size_bytes, 14);
        let expected: String = Sha256::digest(fs::read(&kernel).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(image.digest, format!("sha256:{expected}"));
        assert_eq!(store.list().unwrap(), vec![image.clone()]);
        // The same content again is no change; other content is refused.
        assert_eq!(
            store
                .import(&kernel, &name("k1"), ImageKind::Kernel)
                .unwrap(),
            image
        );
        let other = elf(dir.path(), "other", b"another kernel");
        let err = store
            .import(&other, &name("k1"), ImageKind::Kernel)
            .unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::AlreadyExists, "{err}");

        let path = store
            .resolve("spec.kernel", ImageKind::Kernel, Path::new("k1"))
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), fs::read(&kernel).unwrap());
        let err = store
            .resolve("spec.initrd", ImageKind::Initrd, Path::new("k1"))
            .unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::NotFound);
        assert!(err.to_string().contains("spec.initrd"), "{err}");
        let host = store
            .resolve("spec.kernel", ImageKind::Kernel, Path::new("/boot/vmlinuz"))
            .unwrap();
        assert_eq!(host, Path::new("/boot/vmlinuz"));

        store.remove("k1").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!path.exists(), "the file goes with its last name");
        let err = store.remove("k1").unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::NotFound);
    }

    #[test]
    fn a_refused_or_half_written_import_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeImageStore::new(&dir.path().join("state"));
        let garbage = dir.path().join("garbage");
        fs::write(&garbage, b"not a kernel at all").unwrap();
        let err = store
            .import(&garbage, &name("bad"), ImageKind::Kernel)
            .unwrap_err();
        assert!(err.to_string().contains("is not a kernel"), "{err}");
        assert!(store.list().unwrap().is_empty());

        // What a crash mid-copy leaves: a temporary file and no entry.
        fs::create_dir_all(store.root().join("tmp")).unwrap();
        fs::write(store.root().join("tmp").join("partial"), b"\x7fELF").unwrap();
        assert!(store.list().unwrap().is_empty());
        // An entry whose file is gone is not listed either.
        let kernel = elf(dir.path(), "vmlinux", b"k");
        store
            .import(&kernel, &name("k"), ImageKind::Kernel)
            .unwrap();
        for file in fs::read_dir(store.root().join("kernel")).unwrap() {
            fs::remove_file(file.unwrap().path()).unwrap();
        }
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn only_a_regular_file_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeImageStore::new(&dir.path().join("state"));
        let kernel = elf(dir.path(), "vmlinux", b"k");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&kernel, &link).unwrap();
        let err = store
            .import(&link, &name("k"), ImageKind::Kernel)
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = store
            .import(dir.path(), &name("k"), ImageKind::Kernel)
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = store
            .import(&dir.path().join("missing"), &name("k"), ImageKind::Kernel)
            .unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::NotFound);
        assert!(store.list().unwrap().is_empty());
    }
}
