//! When a create pulls the images its spec names by registry reference
//! (a container's image; a VM's or microVM's disk, kernel and initrd):
//! [`PullPolicy`], and the one rule every driver applies with it
//! ([`PullPolicy::wants_pull`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DriverError, Error};

/// Whether a create pulls an image named by registry reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull only what the node does not hold yet (the default).
    #[default]
    Missing,
    /// Ask the registry again on every create, so a tag that moved gives
    /// its new digest; what the node holds under the old one is replaced.
    Always,
    /// Never reach a registry: an image the node lacks fails the create
    /// as `FailedPrecondition`, before anything is made.
    Never,
}

impl PullPolicy {
    /// Every policy, in display order.
    pub const ALL: [PullPolicy; 3] = [PullPolicy::Missing, PullPolicy::Always, PullPolicy::Never];

    /// The lowercase name used on the command line, in specs and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }

    /// Whether this is the default, [`PullPolicy::Missing`] (specs leave it out).
    pub fn is_missing(&self) -> bool {
        *self == PullPolicy::Missing
    }

    /// Whether a create pulls `image`, which spec field `field` names by
    /// registry reference and which the node holds (`held`) or not.
    /// Errors: `FailedPrecondition` naming the field and the image, under
    /// [`PullPolicy::Never`] when the node lacks it.
    ///
    /// ```
    /// use zixiao_core::model::PullPolicy;
    /// assert!(!PullPolicy::Missing.wants_pull(true, "spec.image", "r/a:1").unwrap());
    /// assert!(PullPolicy::Always.wants_pull(true, "spec.image", "r/a:1").unwrap());
    /// assert!(PullPolicy::Never.wants_pull(false, "spec.image", "r/a:1").is_err());
    /// ```
    pub fn wants_pull(self, held: bool, field: &str, image: &str) -> Result<bool, DriverError> {
        match (self, held) {
            (PullPolicy::Always, _) | (PullPolicy::Missing, false) => Ok(true),
            (PullPolicy::Missing | PullPolicy::Never, true) => Ok(false),
            (PullPolicy::Never, false) => Err(DriverError::FailedPrecondition(format!(
                "{field}: image `{image}` is not on this node and the pull policy is `never` \
                 (pull it with `zixiao image pull {image}`, or create with `--pull missing`)"
            ))),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PullPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        PullPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "pull",
                    format!("unknown pull policy `{s}`: expected missing, always or never"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn policies_parse_by_name_and_bad_ones_name_the_field() {
        for policy in PullPolicy::ALL {
            assert_eq!(policy.as_str().parse::<PullPolicy>().unwrap(), policy);
        }
        let err = "sometimes".parse::<PullPolicy>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("pull"), "{err}");
        assert!(err.to_string().contains("sometimes"), "{err}");
        assert_eq!(PullPolicy::default(), PullPolicy::Missing);
    }

    #[test]
    fn never_refuses_a_missing_image_naming_it() {
        let err = PullPolicy::Never
            .wants_pull(false, "spec.kernel", "r:5000/k:1")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("spec.kernel"), "{err}");
        assert!(err.to_string().contains("r:5000/k:1"), "{err}");
        assert!(!PullPolicy::Never
            .wants_pull(true, "spec.image", "x")
            .unwrap());
        assert!(PullPolicy::Missing
            .wants_pull(false, "spec.image", "x")
            .unwrap());
    }
}
