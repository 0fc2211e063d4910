//! Zixiao's scheduler: a pipeline of small [`Filter`] and [`Score`] plugins
//! behind [`zixiao_core::Scheduler`], in the style of the Kubernetes
//! scheduler framework and Nomad's scheduler stack.
//!
//! - Filters are hard constraints. A rejection carries a reason, not an
//!   error, and [`PluginScheduler::explain_in`] counts nodes per reason
//!   ("3 nodes: insufficient memory (need 4096 MiB, max free 2048 MiB)").
//! - Scores are soft preferences bounded to `0..=100`, normalised and weighted.
//! - [`ClusterState`] indexes the nodes by zone and free memory, so a
//!   placement visits few nodes, best candidates first.
//! - Deterministic: ties go to a seeded, injectable [`TieBreak`] rule.
//!
//! ```
//! use zixiao_core::{Scheduler, SchedulingContext};
//! use zixiao_sched::{testing, PluginScheduler};
//!
//! let nodes = testing::nodes(4);
//! let scheduler = PluginScheduler::default();
//! let web = testing::instance("web", 2, 4096);
//! let node = scheduler.place(&web, &SchedulingContext::new(&nodes)).unwrap();
//! // Deterministic: the same input gives the same node.
//! assert_eq!(scheduler.place(&web, &SchedulingContext::new(&nodes)).unwrap(), node);
//! ```

mod cluster;
pub mod filters;
mod pipeline;
mod plugin;
pub mod scores;
pub mod testing;
mod tiebreak;

pub use cluster::{ClusterState, Prunes, ZoneId, ZoneView};
pub use pipeline::{PluginScheduler, PluginSchedulerBuilder, SchedulerConfig};
pub use plugin::{Filter, NodeRef, Reject, Request, Score, Shortfall, Unit, Verdict, MAX_SCORE};
pub use tiebreak::{FirstNode, SeededTieBreak, TieBreak};

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
