//! How an instance moves to another node ([`MigrationMode`]): the one
//! choice a user makes for `instance migrate`, as plain data every
//! frontend parses the same way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How `instance migrate` moves an instance to another node.
///
/// ```
/// use zixiao_core::model::MigrationMode;
///
/// assert_eq!("restart".parse::<MigrationMode>().unwrap(), MigrationMode::Restart);
/// assert_eq!(MigrationMode::default(), MigrationMode::Auto);
/// assert!("teleport".parse::<MigrationMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationMode {
    /// The best the instance's runtime offers: live when both nodes'
    /// drivers can migrate it live (VMs on libvirt), else cold for VMs and
    /// microVMs with a disk when both nodes' drivers can copy it (else
    /// refused rather than losing the disk), a restart for containers and
    /// diskless microVMs.
    #[default]
    Auto,
    /// Stopped on the source, its disk copied, started on the target from
    /// the copy (VMs and microVMs with a disk).
    Cold,
    /// Moved while it runs.
    Live,
    /// Stopped and removed on the source, created afresh on the target:
    /// the workload restarts, and a VM's disk starts again from its image.
    Restart,
}

impl MigrationMode {
    /// Every mode.
    pub const ALL: [MigrationMode; 4] = [
        MigrationMode::Auto,
        MigrationMode::Cold,
        MigrationMode::Live,
        MigrationMode::Restart,
    ];

    /// The name used in output, flags and the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationMode::Auto => "auto",
            MigrationMode::Cold => "cold",
            MigrationMode::Live => "live",
            MigrationMode::Restart => "restart",
        }
    }
}

impl fmt::Display for MigrationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MigrationMode {
    type Err = Error;

    /// Errors: `InvalidArgument` naming `mode`, with the modes there are.
    fn from_str(text: &str) -> Result<Self, Error> {
        MigrationMode::ALL
            .into_iter()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| {
                let all: Vec<&str> = MigrationMode::ALL.iter().map(|m| m.as_str()).collect();
                Error::invalid(
                    "mode",
                    format!("`{}` is not one of {}", text.escape_debug(), all.join(", ")),
                )
            })
    }
}
