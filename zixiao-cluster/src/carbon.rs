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
//! it does not name keep theirs, except that a node this server gave a
//! value from the file and that the file no longer names loses it again
//! (unless an operator changed it since). The server checks the file's modification
//! time on its failure detector's tick and reads it again when it
//! changed. A file that cannot be read or parsed, or an entry that is not
//! a carbon intensity, is refused whole, with an error naming the entry:
//! the last good values stay (and still go to nodes that join), and the
//! error is logged once per change of the file and kept in
//! [`CarbonSource::problem`]. At start-up there are no good values to keep:
//! a server whose file is missing or refused does not start
//! ([`CarbonSource::open`]).
//!
//! What this server gave from the file is remembered in memory only: a
//! server that takes over the lead does not know which values came from
//! the file, so it does not clear those of nodes the file stopped naming
//! before it led.

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
    /// The nodes (by id) this source gave a value, and that value.
    given: BTreeMap<String, u32>,
}

impl CarbonSource {
    /// Follows the file at `path` (read at the first [`CarbonSource::tick`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CarbonSource {
            path: path.into(),
            seen: None,
            table: CarbonTable::default(),
            problem: None,
            given: BTreeMap::new(),
        }
    }

    /// Follows the file at `path`, read now: what a server does at
    /// start-up, where a mistake in the file is the operator's to fix
    /// before anything runs. Errors: `InvalidArgument` naming the file or
    /// the entry (it cannot be read, it is not such a map, an entry is not
    /// a carbon intensity).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let mut source = CarbonSource::new(path);
        source.seen = source.modified();
        source.table = source.read()?;
        Ok(source)
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
    /// every node the table names its value where it differs, and takes
    /// back the value of a node it gave one that the table no longer
    /// names. Errors: the controller's (the file's own are kept in
    /// [`CarbonSource::problem`] and logged).
    pub async fn tick(&mut self, controller: &Controller) -> Result<()> {
        self.reload();
        let (table, given) = (&self.table, &self.given);
        let stale = controller
            .nodes_matching(|node, _| {
                let now = node.operator.carbon_intensity;
                match table.intensity_of(node) {
                    Some(wanted) => now != Some(wanted.grams_per_kwh()),
                    // Only the value this source gave, still as it gave
                    // it: an operator's own `node set --carbon` stays.
                    None => now.is_some() && given.get(node.id.as_str()).copied() == now,
                }
            })
            .await?;
        for node in stale {
            let intensity = self.table.intensity_of(&node);
            controller
                .set_node_carbon(node.id.as_str(), intensity)
                .await?;
            match intensity {
                Some(i) => self.given.insert(node.id.to_string(), i.grams_per_kwh()),
                None => self.given.remove(node.id.as_str()),
            };
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
        let stamp = self.modified();
        if stamp.is_some() && stamp == self.seen {
            return;
        }
        let problem = match self.read() {
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

    /// The file's modification time, when it can be read.
    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    /// The file's table, checked.
    fn read(&self) -> Result<CarbonTable> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            Error::invalid(
                "carbon_file",
                format!("cannot read {}: {e}", self.path.display()),
            )
        })?;
        CarbonTable::parse(&text)
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
