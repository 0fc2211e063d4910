//! Clones (`zixiao instance clone`): the [`CloneOrigin`] a clone's record
//! keeps, the [`SnapshotName`] a clone may start from, and the rules of
//! what can be cloned how, which hold whichever node runs the source.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Instance, InstanceId, InstanceType, NodeId};
use crate::Error;

/// The most bytes of a [`SnapshotName`].
const MAX_SNAPSHOT_NAME: usize = 64;

/// The name of an instance's snapshot: 1 to 64 letters, digits, `.`, `_`
/// or `-`, not starting with `.` (what every runtime's snapshots accept,
/// and safe as a file name on the node). Built by `TryFrom<String>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct SnapshotName(String);

impl SnapshotName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SnapshotName {
    type Error = Error;

    /// Errors: `InvalidArgument` on `snapshot`.
    ///
    /// ```
    /// use zixiao_core::model::SnapshotName;
    /// assert!(SnapshotName::try_from("before-upgrade".to_owned()).is_ok());
    /// assert!(SnapshotName::try_from("../x".to_owned()).is_err());
    /// ```
    fn try_from(name: String) -> Result<Self, Self::Error> {
        let ok = !name.is_empty()
            && name.len() <= MAX_SNAPSHOT_NAME
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(Error::invalid(
                "snapshot",
                format!(
                    "`{}` must be 1 to {MAX_SNAPSHOT_NAME} letters, digits, `.`, `_` or `-`, \
                     not starting with `.`",
                    name.escape_debug()
                ),
            ));
        }
        Ok(SnapshotName(name))
    }
}

impl From<SnapshotName> for String {
    fn from(name: SnapshotName) -> String {
        name.0
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SnapshotName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SnapshotName::try_from(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Where a clone came from, as its record keeps it (`clone_of`): what its
/// node's driver makes the clone's runtime object from, and what keeps a
/// linked clone's source from being deleted under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneOrigin {
    /// The source instance's id.
    pub source: InstanceId,
    /// The source's node when the clone was made: the clone runs there,
    /// where the source's disk and snapshots are (the `clone-source`
    /// scheduler filter).
    pub node: NodeId,
    /// Whether the clone's disk is an overlay on a frozen base of the
    /// source's disk (VMs only), which the source's node keeps as long as
    /// the source exists; else the clone owns a full copy.
    #[serde(default)]
    pub linked: bool,
    /// The source's snapshot the clone starts from: the disk as it was
    /// then (VMs), or the memory too (microVMs, which resume from it).
    /// `None` for a VM: the source's disk now, copied while it is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotName>,
}

impl fmt::Display for CloneOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(snapshot) = &self.snapshot {
            write!(f, " at snapshot {snapshot}")?;
        }
        if self.linked {
            f.write_str(" (linked)")?;
        }
        Ok(())
    }
}

/// Refuses cloning `source` as asked where no node could do it, whatever
/// node it is on: a linked clone of anything but a VM with a disk, and a
/// clone of a microVM whose monitor takes no memory snapshots. Errors:
/// `InvalidArgument` on `linked`, `FailedPrecondition` (the source is not
/// on a node yet), `Unsupported` (the qemu microVM backend).
pub fn check_clone(source: &Instance, linked: bool) -> Result<(), Error> {
    let spec = &source.spec;
    if linked {
        match spec.instance_type {
            InstanceType::Vm if spec.image.is_none() && spec.disk_gib == 0 => {
                return Err(Error::invalid(
                    "linked",
                    format!(
                        "vm `{}` has no disk to share: a linked clone needs one (make a full clone)",
                        source.name
                    ),
                ))
            }
            InstanceType::Vm => {}
            other => {
                return Err(Error::invalid(
                    "linked",
                    format!(
                        "`{}` is a {other}: only a vm's disk can back linked clones \
                         (make a full clone)",
                        source.name
                    ),
                ))
            }
        }
    }
    if source.node.is_none() {
        return Err(Error::FailedPrecondition(format!(
            "instance `{}` is not on a node yet: a clone is made from what its node holds",
            source.name
        )));
    }
    if spec.instance_type == InstanceType::Microvm && source.runtime.as_deref() == Some("qemu") {
        return Err(Error::Unsupported(format!(
            "instance `{}` runs on the qemu microvm backend, which takes no memory snapshots \
             to clone from: clone a microVM of the vmm backend",
            source.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CreateInstance, InstanceSpec};

    fn placed(spec: InstanceSpec) -> Instance {
        let mut i = Instance::new("id-1", CreateInstance::new("src", spec), chrono::Utc::now());
        i.node = Some("n1".to_owned());
        i
    }

    #[test]
    fn only_a_vm_with_a_disk_takes_linked_clones() {
        let field = |e: Error| match e {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("{other}"),
        };
        let diskless = placed(InstanceSpec::empty(InstanceType::Vm, 1, 64));
        assert_eq!(field(check_clone(&diskless, true).unwrap_err()), "linked");
        assert!(check_clone(&diskless, false).is_ok());
        let container = placed(InstanceSpec::container("busybox"));
        assert_eq!(field(check_clone(&container, true).unwrap_err()), "linked");
        assert!(check_clone(&container, false).is_ok());
        let vm = placed(InstanceSpec::vm("/images/base.qcow2"));
        assert!(check_clone(&vm, true).is_ok());
        let mut qemu = placed(InstanceSpec::microvm("/k"));
        qemu.runtime = Some("qemu".to_owned());
        assert_eq!(
            check_clone(&qemu, false).unwrap_err().kind(),
            crate::ErrorKind::Unsupported
        );
    }

    #[test]
    fn snapshot_names_are_checked_when_read_back() {
        let json = serde_json::to_string(&SnapshotName::try_from("s1".to_owned()).unwrap());
        assert_eq!(json.unwrap(), "\"s1\"");
        for bad in ["\"\"", "\".hidden\"", "\"a/b\"", "\"a b\""] {
            assert!(serde_json::from_str::<SnapshotName>(bad).is_err(), "{bad}");
        }
    }
}
