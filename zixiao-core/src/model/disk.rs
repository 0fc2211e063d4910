//! [`DiskSpec`]: a disk a microVM gets besides its kernel and initrd, named
//! in its spec (`spec.disks`, the CLI's `--disk NAME[:ro]`) by an image of
//! the node's store, a registry reference, or (local administrator only)
//! a host path: the same [`NodeFile`] forms as a VM's `spec.image`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::NodeFile;
use crate::Error;

/// The most disks one microVM may have: the VMM gives each virtio device
/// an interrupt line of its own, and has eight.
pub const MAX_DISKS: usize = 8;

/// One disk of a microVM, in spec order (`/dev/vda`, `/dev/vdb`, ... in a
/// Linux guest). A writable disk is the instance's own copy of the image,
/// made at create; a read-only one is the image itself, opened read-only.
///
/// ```
/// use zixiao_core::model::DiskSpec;
/// let disk: DiskSpec = "data:ro".parse().unwrap();
/// assert_eq!((disk.image.as_str(), disk.read_only), ("data", true));
/// assert_eq!(disk.to_string(), "data:ro");
/// let disk: DiskSpec = "/srv/scratch.img".parse().unwrap();
/// assert!(!disk.read_only);
/// assert!("data:rx".parse::<DiskSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// A raw disk image: its name in the node's image store, a registry
    /// reference, or (local administrator only) an absolute path on the node.
    pub image: String,
    /// The guest sees a read-only disk, and the image is used as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl DiskSpec {
    /// A writable disk made from `image`.
    pub fn new(image: impl Into<String>) -> Self {
        DiskSpec {
            image: image.into(),
            read_only: false,
        }
    }

    /// Checks that its image is a name, a reference or an absolute path
    /// (see [`NodeFile::parse`]); errors name `field`.
    pub fn node_file(&self, field: &str) -> Result<NodeFile, Error> {
        NodeFile::parse(field, Path::new(&self.image))
    }
}

/// `NAME`, `NAME:ro` or `NAME:rw`: a `:ro` or `:rw` at the end is the
/// mode, so a registry reference's tag (`host:5000/disk:1`) stays in the
/// name. Errors: `InvalidArgument` on `disk` (empty, or another mode).
impl FromStr for DiskSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let (image, read_only) = match text.rsplit_once(':') {
            Some((image, "ro")) => (image, true),
            Some((image, "rw")) => (image, false),
            Some((_, mode)) if ["r", "w", "rx", "wo", "readonly"].contains(&mode) => {
                return Err(Error::invalid(
                    "disk",
                    format!("`{text}`: the mode after `:` is `ro` or `rw`, not `{mode}`"),
                ))
            }
            _ => (text, false),
        };
        if image.is_empty() {
            return Err(Error::invalid(
                "disk",
                format!("`{text}` names no image (NAME[:ro])"),
            ));
        }
        Ok(DiskSpec {
            image: image.to_owned(),
            read_only,
        })
    }
}

impl fmt::Display for DiskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.image)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// Checks a spec's disks: only microVMs take them, at most [`MAX_DISKS`],
/// each a name, reference or absolute path. Errors: `InvalidArgument`
/// naming the field.
pub(crate) fn validate_disks(
    disks: &[DiskSpec],
    instance_type: super::InstanceType,
) -> Result<(), Error> {
    if disks.is_empty() {
        return Ok(());
    }
    if instance_type != super::InstanceType::Microvm {
        return Err(Error::invalid(
            "spec.disks",
            format!("extra disks are for microVMs; a {instance_type} has its disk in spec.image"),
        ));
    }
    if disks.len() > MAX_DISKS {
        return Err(Error::invalid(
            "spec.disks",
            format!("{} disks; a microVM has at most {MAX_DISKS}", disks.len()),
        ));
    }
    for (i, disk) in disks.iter().enumerate() {
        let field = disk_field(i);
        if disk.image.contains('\0') {
            return Err(Error::invalid(field, "contains a NUL byte"));
        }
        disk.node_file(&field)?;
    }
    Ok(())
}

/// The spec field of disk `index`'s image.
pub fn disk_field(index: usize) -> String {
    format!("spec.disks[{index}].image")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceType;

    #[test]
    fn modes_and_references_parse_and_bad_ones_name_the_field() {
        let reference: DiskSpec = "127.0.0.1:5000/vm/data:1".parse().unwrap();
        assert_eq!(reference.image, "127.0.0.1:5000/vm/data:1");
        let rw: DiskSpec = "data:rw".parse().unwrap();
        assert_eq!(rw, DiskSpec::new("data"));
        for bad in [":ro", "", "data:r"] {
            let err = bad.parse::<DiskSpec>().expect_err(bad);
            assert!(err.to_string().contains("invalid disk"), "{err}");
        }
    }

    #[test]
    fn only_microvms_take_a_bounded_number_of_named_disks() {
        let one = [DiskSpec::new("data")];
        validate_disks(&one, InstanceType::Microvm).unwrap();
        let err = validate_disks(&one, InstanceType::Vm).unwrap_err();
        assert!(err.to_string().contains("spec.disks"), "{err}");
        let many = vec![DiskSpec::new("data"); MAX_DISKS + 1];
        let err = validate_disks(&many, InstanceType::Microvm).unwrap_err();
        assert!(err.to_string().contains("at most 8"), "{err}");
        let err = validate_disks(
            &[one[0].clone(), DiskSpec::new("a/b")],
            InstanceType::Microvm,
        )
        .unwrap_err();
        assert!(err.to_string().contains("spec.disks[1].image"), "{err}");
    }
}
