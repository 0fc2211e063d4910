//! A cluster simulator: thousands of in-process fake agents ([`nodes`])
//! speaking the real MembershipService and AgentService to real `zixiao
//! server`s (in this process, or as processes of their own so their CPU
//! and memory can be measured) on a real etcd (a private cluster it starts,
//! [`etcd`], or a shared one under a key prefix), with a fake runtime, a
//! configurable number of nodes, zones and instances, and a fault schedule:
//! kill nodes one at a time, partition a zone, kill the leading server,
//! kill the etcd leader. It reports throughput, latencies, failover times,
//! the servers' and etcd's CPU and memory, and checks what must always
//! hold: no node over-committed, no instance running on two nodes at once,
//! every instance running or pending with a reason ([`run::SimReport::violations`]).
//!
//! `cargo bench -p zixiao-benches --bench sim` runs the large
//! configuration; `tests/small.rs` a small one in the test suite.

pub mod etcd;
pub mod nodes;
pub mod run;

pub use run::{run, Servers, SimConfig, SimReport, StoreTarget};

/// What went wrong setting a simulation up (what it finds wrong in the
/// cluster is a [`SimReport::violations`] entry instead).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file, socket or process could not be set up.
    #[error("{what}")]
    Io {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The private etcd cluster failed.
    #[error("etcd: {0}")]
    Etcd(String),
    /// A Zixiao call failed.
    #[error(transparent)]
    Zixiao(#[from] zixiao_core::Error),
    /// A server process did not start.
    #[error("server: {0}")]
    Server(String),
}

impl SimError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        SimError::Io {
            what: what.to_owned(),
            source,
        }
    }
}

/// Raises this process's open file limit to its hard limit: thousands of
/// simulated nodes hold thousands of connections.
pub fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the rlimit it is given; raising the soft
        // limit to the hard one needs no privilege.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
