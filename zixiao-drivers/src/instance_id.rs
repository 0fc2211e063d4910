//! [`InstanceId`]: an instance id as the drivers accept it where nothing
//! else vouches for it (an orphan sweep's `remove_orphan(id)`, a name found
//! on the runtime). The controller makes ids with `Uuid::new_v4()`, so an
//! id is a UUID in its hyphenated form; anything else is refused before it
//! can become a path, a containerd id or a libvirt lookup.

use std::fmt;

use zixiao_core::DriverError;

use crate::errors::invalid;

/// The length of a hyphenated UUID (`8-4-4-4-12` hex digits).
const HYPHENATED_LEN: usize = 36;

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
        // `Uuid::try_parse` also reads the simple, braced and URN forms;
        // only the hyphenated one is an id the controller makes.
        if id.len() == HYPHENATED_LEN && uuid::Uuid::try_parse(id).is_ok() {
            Ok(InstanceId(id.to_owned()))
        } else {
            Err(invalid(
                "id",
                format!("`{}` is not an instance id (a UUID)", id.escape_debug()),
            ))
        }
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

    #[test]
    fn only_hyphenated_uuids_are_instance_ids() {
        let id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        assert_eq!(InstanceId::try_from(id).expect("a UUID").as_str(), id);
        for hostile in [
            "",
            "/",
            ".",
            "..",
            "../../etc",
            "a/b",
            "1b4e28ba2fa111d2883f0016d3cca427",
            "{1b4e28ba-2fa1-11d2-883f-0016d3cca427}",
            "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427/..",
            "../4e28ba-2fa1-11d2-883f-0016d3cca427",
        ] {
            let err = InstanceId::try_from(hostile).expect_err(hostile);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{hostile}");
            assert!(err.to_string().starts_with("invalid id:"), "{err}");
        }
    }
}
