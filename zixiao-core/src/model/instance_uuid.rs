//! [`InstanceUuid`]: an instance id as it may reach a path, a runtime id or
//! a store key when nothing else vouches for it (what an agent receives,
//! a name found on a runtime). The controller makes ids with
//! `Uuid::new_v4()`, so an id is a UUID in its hyphenated form; anything
//! else (`/etc`, `../..`, a name) is refused at the edge.

use std::fmt;
use std::ops::Deref;

use super::network::{name_type, InvalidName};

/// The length of a hyphenated UUID (`8-4-4-4-12` hex digits).
const HYPHENATED_LEN: usize = 36;

/// An instance id known to be a hyphenated UUID: one plain path component
/// (no `/`, never `.` or `..`), a valid containerd id and a libvirt domain
/// UUID.
///
/// ```
/// use zixiao_core::model::InstanceUuid;
/// let id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
/// assert_eq!(InstanceUuid::try_from(id).unwrap().as_str(), id);
/// for hostile in ["/etc", "../..", "web", "1b4e28ba2fa111d2883f0016d3cca427"] {
///     assert!(InstanceUuid::try_from(hostile).is_err(), "{hostile}");
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceUuid(String);
name_type!(InstanceUuid);

impl InstanceUuid {
    fn parse(text: &str) -> Result<(), InvalidName> {
        // `Uuid::try_parse` also reads the simple, braced and URN forms;
        // only the hyphenated one is an id the controller makes.
        if text.len() == HYPHENATED_LEN && uuid::Uuid::try_parse(text).is_ok() {
            Ok(())
        } else {
            Err(InvalidName::new(
                "an instance id",
                text,
                "an instance id is a UUID (8-4-4-4-12 hex digits)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn only_hyphenated_uuids_are_instance_ids() {
        let id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        assert_eq!(InstanceUuid::try_from(id).expect("a UUID").as_str(), id);
        for hostile in [
            "",
            "/",
            ".",
            "..",
            "/etc",
            "../..",
            "a/b",
            "1b4e28ba2fa111d2883f0016d3cca427",
            "{1b4e28ba-2fa1-11d2-883f-0016d3cca427}",
            "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427/..",
            "../4e28ba-2fa1-11d2-883f-0016d3cca427",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca42\n",
        ] {
            let err = InstanceUuid::try_from(hostile).expect_err(hostile);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{hostile}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
}
