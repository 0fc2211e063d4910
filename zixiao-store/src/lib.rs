//! Zixiao's [`Store`](zixiao_core::Store) backends.
//!
//! [`EmbeddedStore`] keeps the whole store in one redb file (the default for
//! a single machine: no daemon to run). Every backend passes the shared
//! conformance suite in `zixiao-testing`; see `DESIGN.md` for how the
//! embedded store lays out its tables, revisions, watch history and leases.

mod embedded;
#[cfg(feature = "etcd")]
mod etcd;

pub use embedded::{
    EmbeddedStore, EmbeddedStoreOptions, FileHold, DEFAULT_EVENT_BUFFER, DEFAULT_HISTORY_LIMIT,
    DEFAULT_LOCK_TIMEOUT, DEFAULT_SWEEP_INTERVAL,
};
#[cfg(feature = "etcd")]
pub use etcd::{
    EtcdStore, EtcdStoreOptions, DEFAULT_DIAL_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY_TIMEOUT,
};

// The README's examples are compiled (and run, unless `no_run`) as doctests,
// so what crates.io shows keeps matching the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
