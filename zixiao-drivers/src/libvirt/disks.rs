//! Disks: each instance gets its own qcow2 overlay on top of its image (a
//! base qcow2 or raw file that is never written), or a blank qcow2 when it
//! has no image, made with `qemu-img` on the hypervisor host.

use std::path::{Path, PathBuf};
use std::process::Command;

use zixiao_core::DriverError;

use super::error;

/// Bytes in a GiB.
pub(crate) const GIB: u64 = 1024 * 1024 * 1024;

/// What `qemu-img info` says of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageInfo {
    /// `qcow2`, `raw`, ...
    pub(crate) format: String,
    /// The size the guest sees, in bytes.
    pub(crate) virtual_size: u64,
}

/// Reads the format and virtual size of `image`, whatever it is backed
/// by (an instance's own overlay). Errors: `NotFound` (no such file),
/// `InvalidArgument` on `spec.image` (not an image qemu-img can read),
/// `Internal` (qemu-img missing).
pub(crate) fn inspect(image: &Path) -> Result<ImageInfo, DriverError> {
    let chain = info(image, false)?;
    let [json, ..] = chain.as_slice() else {
        return Err(not_an_image(image));
    };
    image_info(image, json)
}

/// Reads the format and virtual size of the base `image`, which must stand
/// alone: a raw or qcow2 file with no backing file and no external data
/// file (`qemu-img info --backing-chain` shows one image). A base that
/// names another file would make the node read that file into a guest's
/// disk, whatever the caller may read. Errors: as [`inspect`], and
/// `InvalidArgument` on `spec.image` (a format other than raw or qcow2, a
/// backing or data file).
pub(crate) fn inspect_base(image: &Path) -> Result<ImageInfo, DriverError> {
    let refused = |why: &str| error::invalid("spec.image", format!("{} {why}", image.display()));
    let chain = info(image, true)?;
    let [json] = chain.as_slice() else {
        return Err(refused(
            "has a backing file; a base must stand alone (flatten it first: \
             `qemu-img convert -O qcow2 IN OUT`)",
        ));
    };
    let info = image_info(image, json)?;
    if json.get("backing-filename").is_some() {
        return Err(refused(
            "names a backing file; a base must stand alone (flatten it first: \
             `qemu-img convert -O qcow2 IN OUT`)",
        ));
    }
    if json["format-specific"]["data"].get("data-file").is_some() {
        return Err(refused(
            "keeps its data in an external file; a base must stand alone",
        ));
    }
    if info.format != "raw" && info.format != "qcow2" {
        return Err(refused(&format!(
            "is a {} image; bases are raw or qcow2 (convert it with qemu-img)",
            info.format
        )));
    }
    Ok(info)
}

/// `qemu-img info` of `image` as a list of images: the whole backing chain
/// with `chain` (one that cannot be followed is the image's fault), else
/// the image alone.
fn info(image: &Path, chain: bool) -> Result<Vec<serde_json::Value>, DriverError> {
    if !image.is_file() {
        return Err(DriverError::NotFound(format!("image {}", image.display())));
    }
    let mut args: Vec<&std::ffi::OsStr> = vec!["info".as_ref(), "--output=json".as_ref()];
    if chain {
        args.push("--backing-chain".as_ref());
    }
    // Reading a base that a running instance uses needs no lock.
    args.extend::<[&std::ffi::OsStr; 2]>(["--force-share".as_ref(), image.as_os_str()]);
    let refused = |why: String| error::invalid("spec.image", format!("{} {why}", image.display()));
    let output = qemu_img(&args).map_err(|e| match e {
        DriverError::Runtime { source, .. } => {
            refused(format!("cannot be read by qemu-img: {source}"))
        }
        other => other,
    })?;
    let json: serde_json::Value = serde_json::from_slice(&output)
        .map_err(|e| refused(format!("gave qemu-img info output that is not JSON: {e}")))?;
    Ok(match json {
        serde_json::Value::Array(chain) => chain,
        one => vec![one],
    })
}

fn not_an_image(image: &Path) -> DriverError {
    error::invalid(
        "spec.image",
        format!("{} is not a disk image qemu-img can read", image.display()),
    )
}

/// The format and virtual size `json` (one image of `qemu-img info`) gives.
fn image_info(image: &Path, json: &serde_json::Value) -> Result<ImageInfo, DriverError> {
    let format = json["format"].as_str().unwrap_or_default().to_owned();
    let virtual_size = json["virtual-size"].as_u64().unwrap_or_default();
    if format.is_empty() || virtual_size == 0 {
        return Err(not_an_image(image));
    }
    Ok(ImageInfo {
        format,
        virtual_size,
    })
}

/// Creates the qcow2 `overlay` of `size` bytes backed by `base`
/// (`qemu-img create -b`), or a blank one without a base. The caller
/// removes the file when a later step fails.
pub(crate) fn create_overlay(
    overlay: &Path,
    base: Option<(&Path, &ImageInfo)>,
    size: u64,
) -> Result<(), DriverError> {
    let size = size.to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec!["create".as_ref(), "-q".as_ref()];
    args.extend::<[&std::ffi::OsStr; 2]>(["-f".as_ref(), "qcow2".as_ref()]);
    if let Some((base, info)) = base {
        args.extend::<[&std::ffi::OsStr; 4]>([
            "-b".as_ref(),
            base.as_os_str(),
            "-F".as_ref(),
            info.format.as_ref(),
        ]);
    }
    args.extend::<[&std::ffi::OsStr; 2]>([overlay.as_os_str(), size.as_ref()]);
    qemu_img(&args).map(drop)
}

/// Removes `path` if it exists.
pub(crate) fn remove_file(path: &Path) -> Result<(), DriverError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(error::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

/// The overlay of an instance under its directory.
pub(crate) fn overlay_path(instance_dir: &Path) -> PathBuf {
    instance_dir.join("disk.qcow2")
}

pub(crate) fn qemu_img(args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, DriverError> {
    let operation = || {
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        format!("qemu-img {}", shown.join(" "))
    };
    let output = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| error::io(operation(), e))?;
    if !output.status.success() {
        return Err(DriverError::Runtime {
            operation: operation(),
            source: Box::new(error::Message(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            )),
        });
    }
    Ok(output.stdout)
}
