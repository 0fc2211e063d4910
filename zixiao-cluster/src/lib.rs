//! Zixiao's distributed deployment: stateless [`server`] replicas over a
//! shared store (etcd, or the embedded store for one replica), one
//! [`agent`] per compute node, and the liveness machinery between them.
//!
//! - Liveness: an agent registers its node and keeps the node's lease
//!   (`/zixiao/leases/nodes/<node>`, see [`membership`]) alive with
//!   heartbeats through any server.
//! - Failover: the leading server ([`election`], [`leader`]) fails over a
//!   node whose lease expired: its movable instances are placed elsewhere,
//!   the others are marked failed with the reason.
//! - Fencing: a per-node [`watchdog`] process that outlives the agent stops
//!   the node's instances ([`records`]) when the agent stops renewing, a
//!   full second before the lease can expire ([`timing`]), so an instance
//!   never runs on two nodes at once.
//! - Onboarding: a joining agent's node is `onboarding` until its
//!   [`onboarding`] smoke test boots one small instance of each runtime it
//!   offers; only then `ready` (or `onboarding_failed`, saying why).

pub mod agent;
pub mod carbon;
pub mod config;
pub mod election;
pub mod leader;
pub mod membership;
pub mod membership_service;
pub mod node_metrics;
pub mod nodes;
pub mod onboarding;
pub mod records;
pub mod server;
pub mod timing;
pub mod watchdog;
pub mod with_leader;

pub use agent::{AgentHandle, AgentOptions};
pub use server::{ServerHandle, ServerOptions};
pub use timing::Timing;
pub use with_leader::WithLeader;
