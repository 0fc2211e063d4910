//! [`InstanceId`]: an instance id as the drivers accept it where nothing
//! else vouches for it (an orphan sweep's `remove_orphan(id)`, a name found
//! on the runtime): zixiao-core's [`InstanceUuid`] (a hyphenated UUID, what
//! the controller makes), with the drivers' error, so anything else is
//! refused before it can become a path, a containerd id or a libvirt lookup.

use std::fmt;

use zixiao_core::model::InstanceUuid;
use zixiao_core::DriverError;

use crate::errors::invalid;

/// An instance id known to be a hyphenated UUID: one plain path component
/// (no `/`, never `.` or `..`), a valid containerd id and a libvirt domain
/// UUID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct InstanceId(String);

impl InstanceId {
    /// The id as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for InstanceId {
    type Error = DriverError;

    /// Errors: `InvalidArgument` on `id` for anything but a hyphenated UUID.
    fn try_from(id: &str) -> Result<Self, DriverError> {
        InstanceUuid::try_from(id)
            .map(|id| InstanceId(id.into()))
            .map_err(|e| invalid("id", e.to_string()))
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::ErrorKind;

    /// Which ids are refused is zixiao-core's `InstanceUuid`'s to test;
    /// here, that the drivers' error names the field.
    #[test]
    fn a_path_is_refused_as_an_invalid_id() {
        let id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        assert_eq!(InstanceId::try_from(id).expect("a UUID").as_str(), id);
        let err = InstanceId::try_from("../../etc").expect_err("a path");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().starts_with("invalid id:"), "{err}");
    }
}
