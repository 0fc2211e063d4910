//! The carbon source file a server reloads: a YAML (or JSON) map of the
//! carbon intensity of nodes' power, by node (id or hostname) or by zone,
//!
//! ```yaml
//! nodes:
//!   node-a: 120
//! zones:
//!   eu-west-1a: 300
//! ```
//!
//! in gCO2e/kWh. Its values feed the operator's carbon intensity of each
//! node it names (what `zixiao node set --carbon` sets, and the
//! carbon-aware score reads), a node's own entry before its zone's; nodes
//! it does not name keep theirs. The server checks the file's modification
//! time on its failure detector's tick and reads it again when it
//! changed. A file that cannot be read or parsed, or an entry that is not
//! a carbon intensity, is refused whole, with an error naming the entry:
//! the last good values stay (and still go to nodes that join), and the
//! error is logged once per change of the file and kept in
//! [`CarbonSource::problem`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use zixiao_core::model::CarbonIntensity;
use zixiao_core::{Controller, Error, Node, Result};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarbonFile {
    #[serde(default)]
    nodes: BTreeMap<String, u32>,
    #[serde(default)]
    zones: BTreeMap<String, u32>,
}

/// A carbon source file's values, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CarbonTable {
    nodes: BTreeMap<String, CarbonIntensity>,
    zones: BTreeMap<String, CarbonIntensity>,
}

impl CarbonTable {
    /// The table of a file's text. Errors: `InvalidArgument` naming the
    /// entry (`nodes.NAME`, `zones.NAME`) or saying why the text is not
    /// such a map.
    pub fn parse(text: &str) -> Result<Self> {
        let file: CarbonFile = match text.trim() {
            "" => CarbonFile::default(),
            _ => serde_yaml::from_str(text).map_err(|e| {
                Error::invalid(
                    "carbon_file",
                    format!("not a map of `nodes` and `zones` to gCO2e/kWh: {e}"),
                )
            })?,
        };
        let checked = |section: &str, entries: BTreeMap<String, u32>| {
            entries
                .into_iter()
                .map(|(name, grams)| {
                    let entry = format!("{section}.{name}");
                    if name.trim().is_empty() {
                        return Err(Error::invalid(&entry, "names no node or zone"));
                    }
                    let intensity = CarbonIntensity::try_from(grams).map_err(|e| match e {
                        Error::InvalidArgument { reason, .. } => Error::invalid(&entry, reason),
                        other => other,
                    })?;
                    Ok((name, intensity))
                })
                .collect::<Result<BTreeMap<_, _>>>()
        };
        Ok(CarbonTable {
            nodes: checked("nodes", file.nodes)?,
            zones: checked("zones", file.zones)?,
        })
    }

    /// The carbon intensity the table gives `node`: its own entry (by id or
    /// hostname), else its zone's, else none.
    pub fn intensity_of(&self, node: &Node) -> Option<CarbonIntensity> {
        self.nodes
            .get(node.id.as_str())
            .or_else(|| self.nodes.get(&node.hostname))
            .or_else(|| self.zones.get(&node.zone))
            .copied()
    }
}

/// A carbon source file as a server follows it: its last good table, and
/// what is wrong with it now, if anything.
#[derive(Debug)]
pub struct CarbonSource {
    path: PathBuf,
    seen: Option<SystemTime>,
    table: CarbonTable,
    problem: Option<String>,
}

impl CarbonSource {
    /// Follows the file at `path` (read at the first [`CarbonSource::tick`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CarbonSource {
            path: path.into(),
            seen: None,
            table: CarbonTable::default(),
            problem: None,
        }
    }

    /// The file it follows.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the file's current content is not in use (the last good values
    /// are), or `None` when it is.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Reads the file again if its modification time changed, then gives
    /// every node the table names its value where it differs. Errors: the
    /// controller's (the file's own are kept in
    /// [`CarbonSource::problem`] and logged).
    pub async fn tick(&mut self, controller: &Controller) -> Result<()> {
        self.reload();
        let table = &self.table;
        let stale = controller
            .nodes_matching(|node, _| {
                table.intensity_of(node).is_some_and(|wanted| {
                    node.operator.carbon_intensity != Some(wanted.grams_per_kwh())
                })
            })
            .await?;
        for node in stale {
            let intensity = self.table.intensity_of(&node);
            controller
                .set_node_carbon(node.id.as_str(), intensity)
                .await?;
            tracing::info!(
                node = %node.id,
                carbon_intensity = intensity.map(|i| i.grams_per_kwh()),
                file = %self.path.display(),
                "carbon intensity from the carbon source file"
            );
        }
        Ok(())
    }

    /// Reads the file when its modification time is not the one last read.
    fn reload(&mut self) {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified());
        let stamp = modified.as_ref().ok().copied();
        if stamp.is_some() && stamp == self.seen {
            return;
        }
        let read = modified
            .and_then(|_| std::fs::read_to_string(&self.path))
            .map_err(|e| {
                Error::invalid(
                    "carbon_file",
                    format!("cannot read {}: {e}", self.path.display()),
                )
            })
            .and_then(|text| CarbonTable::parse(&text));
        let problem = match read {
            Ok(table) => {
                self.table = table;
                None
            }
            Err(e) => Some(e.to_string()),
        };
        if problem.is_some() && (problem != self.problem || stamp != self.seen) {
            tracing::warn!(
                file = %self.path.display(),
                error = problem.as_deref().unwrap_or_default(),
                "the carbon source file is refused; its last good values stay"
            );
        }
        self.seen = stamp;
        self.problem = problem;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_and_named() {
        let table = CarbonTable::parse("nodes:\n  a: 120\nzones:\n  z1: 300\n").expect("parse");
        assert_eq!(table.nodes["a"].grams_per_kwh(), 120);
        assert_eq!(table.zones["z1"].grams_per_kwh(), 300);
        let err = CarbonTable::parse("zones:\n  z1: 6000\n").expect_err("too much");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("zones.z1"), "{err}");
        let err = CarbonTable::parse("nodes:\n  a: lots\n").expect_err("not a number");
        assert!(err.to_string().contains("carbon_file"), "{err}");
        let err = CarbonTable::parse("regions: {}\n").expect_err("unknown section");
        assert!(err.to_string().contains("regions"), "{err}");
        assert_eq!(
            CarbonTable::parse("").expect("empty"),
            CarbonTable::default()
        );
    }
}
