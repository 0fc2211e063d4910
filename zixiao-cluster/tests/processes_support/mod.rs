//! Support of the multi-process tests: the fake runtime, the roles the test
//! binaries play when re-executed (on the fake runtime or the real ones),
//! the harness that starts and kills them, and the workloads they run.

// Each test binary (processes, faults) uses a part of this support.
#![allow(dead_code)]

pub(crate) mod etcd;
pub(crate) mod file_driver;
pub(crate) mod harness;
pub(crate) mod netns;
pub(crate) mod roles;
pub(crate) mod workloads;
